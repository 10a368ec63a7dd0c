#!/usr/bin/env bash
# Profile the gateway's hot path under load with py-spy (non-streaming and streaming).
#
#   bench/profile.sh                  # both modes, c=16, 8 s of samples at 100 Hz each
#   MODES=json CONC=64 bench/profile.sh
#
# Layout like bench/throughput.py: mock (bench/mock_openai.py) + load generator (bench/loadgen.c, built on
# first use into $BENCH_TMP/bin) + py-spy on CPU 0, the gateway alone on CPU 1, the measured processes at
# nice $NICE with their autogroup (default -10 as root, else 0). The gateway is this repository's tree
# (`python -m gateway serve` with the repo first on PYTHONPATH) unless GATEWAY_BIN names an executable.
# py-spy comes from the Python's environment (`pip install py-spy`, in the project's `bench` extra).
# Output (never in the repo): $OUT/prof_<mode>.txt (raw collapsed stacks), prof_<mode>.agg.txt (top self +
# inclusive, frames of gateway/starlette/uvicorn/aiohttp), prof_<mode>.own.txt (the gateway's own frames
# only) and prof_<mode>.attr.txt (each sample charged to the innermost gateway function on its stack).
#
# Env: BENCH_TMP (default ${TMPDIR:-/tmp}/gw-bench), BENCH_PYTHON (default <repo>/.venv/bin/python, else
#      python3), GATEWAY_BIN, POLICY (default policies/bench.yaml), LOG_REQUESTS (false), MODES (json,stream),
#      CONC (16), DURATION (8), RATE (100), TOP (15), MOCK_PORT (19500), GW_PORT (19550), NICE, OUT.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
BENCH_TMP="${BENCH_TMP:-${TMPDIR:-/tmp}/gw-bench}"
if [ -z "${BENCH_PYTHON:-}" ]; then
  BENCH_PYTHON="$REPO/.venv/bin/python"
  [ -x "$BENCH_PYTHON" ] || BENCH_PYTHON="$(command -v python3)"
fi
PY="$BENCH_PYTHON"
PYSPY="$(dirname "$PY")/py-spy"
[ -x "$PYSPY" ] || PYSPY="$(command -v py-spy || true)"
[ -n "$PYSPY" ] || { echo "py-spy not found: $PY -m pip install py-spy" >&2; exit 2; }
"$PY" -c 'import aiohttp, uvicorn' 2>/dev/null || { echo "$PY lacks aiohttp/uvicorn: set BENCH_PYTHON" >&2; exit 2; }
POLICY="${POLICY:-$REPO/policies/bench.yaml}"
LOG_REQUESTS="${LOG_REQUESTS:-false}"
MODES="${MODES:-json,stream}"
CONC="${CONC:-16}"
DURATION="${DURATION:-8}"
RATE="${RATE:-100}"
TOP="${TOP:-15}"
MOCK_PORT="${MOCK_PORT:-19500}"
GW_PORT="${GW_PORT:-19550}"
if [ -z "${NICE:-}" ]; then
  if [ "$(id -u)" = 0 ]; then NICE=-10; else NICE=0; fi
fi
OUT="${OUT:-$BENCH_TMP/profiles/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
LOADGEN="$(BENCH_TMP="$BENCH_TMP" "$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import harness; print(harness.build_loadgen())' "$REPO/bench")"

# start CMD... on CPUS at nice $NICE (and its autogroup) in a new session; prints the pid
boosted() {  # boosted CPUS LOGFILE CMD...
  local cpus="$1" logf="$2"; shift 2
  setsid bash -c 'echo "$0" > /proc/self/autogroup 2>/dev/null || true; exec nice -n "$0" taskset -c "$1" "${@:2}"' \
    "$NICE" "$cpus" "$@" >"$logf" 2>&1 </dev/null &
  echo $!
}

if [ -n "${GATEWAY_BIN:-}" ]; then GW=("$GATEWAY_BIN"); else GW=(env "PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PY" -P -m gateway); fi
MOCK_PID=$(boosted 0 "$OUT/mock.log" "$PY" "$REPO/bench/mock_openai.py" --port "$MOCK_PORT")
GW_PID=$(boosted 1 "$OUT/gateway.log" env GATEWAY_POLICY="$POLICY" BENCH_UPSTREAM_URL="http://127.0.0.1:$MOCK_PORT/v1" \
  GATEWAY_LOG_REQUESTS="$LOG_REQUESTS" LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 "${GW[@]}" serve --port "$GW_PORT")
cleanup() { kill "$GW_PID" "$MOCK_PID" 2>/dev/null || true; wait "$GW_PID" "$MOCK_PID" 2>/dev/null || true; }
trap cleanup EXIT

URL="http://127.0.0.1:$GW_PORT/v1/chat/completions"
BODIES="$("$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import harness; b = harness.write_bodies(sys.argv[2]); print(b["json"], b["stream"])' "$REPO/bench" "$OUT")"
read -r BODY_J BODY_S <<<"$BODIES"
for _ in $(seq 60); do
  curl -sf -o /dev/null -d @"$BODY_J" "$URL" && break
  sleep 1
done
curl -sf -o /dev/null -d @"$BODY_J" "$URL" || { echo "gateway did not start; see $OUT/gateway.log" >&2; exit 1; }
# py-spy samples the process that runs the event loop: the gateway itself, or its one child under a wrapper
TARGET="$GW_PID"
while case "$(cat "/proc/$TARGET/comm" 2>/dev/null)" in setsid|bash|sh|nice|taskset|env) true;; *) false;; esac; do
  kid="$(pgrep -P "$TARGET" | head -1 || true)"
  [ -n "$kid" ] && TARGET="$kid" || break
done
echo "gateway pid $TARGET on :$GW_PORT (policy $POLICY, request log $LOG_REQUESTS); output in $OUT"

IFS=, read -r -a modes <<<"$MODES"
for mode in "${modes[@]}"; do
  if [ "$mode" = stream ]; then body="$BODY_S"; marker='[DONE]'; else body="$BODY_J"; marker='chat.completion'; fi
  # load for warm-up (3 s) + the sampled window + 2 s slack
  taskset -c 0 nice -n "$NICE" "$LOADGEN" -c "$CONC" -d "$((DURATION + 2))" -w 3 -b "$body" -m "$marker" "$URL" \
    >"$OUT/loadgen_$mode.json" &
  LG=$!
  sleep 3
  taskset -c 0 nice -n "$NICE" "$PYSPY" record -p "$TARGET" -d "$DURATION" -r "$RATE" --format raw \
    -o "$OUT/prof_$mode.txt" >"$OUT/pyspy_$mode.log" 2>&1
  wait "$LG"
  "$PY" "$REPO/bench/pyspy_report.py" "$OUT/prof_$mode.txt" --filter gateway/,starlette,uvicorn,aiohttp \
    --top "$TOP" >"$OUT/prof_$mode.agg.txt"
  "$PY" "$REPO/bench/pyspy_report.py" "$OUT/prof_$mode.txt" --filter own --top 60 >"$OUT/prof_$mode.own.txt"
  "$PY" "$REPO/bench/pyspy_report.py" "$OUT/prof_$mode.txt" --attribute --top 25 >"$OUT/prof_$mode.attr.txt"
  rps=$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.0f req/s under py-spy, %d/%d ok, %d errors" % (d["rps"], d["ok"], d["requests"], d["errors"]))' "$OUT/loadgen_$mode.json")
  echo "== $mode c=$CONC: $rps"
  cat "$OUT/prof_$mode.agg.txt"
  echo "-- charged to the innermost gateway frame"
  cat "$OUT/prof_$mode.attr.txt"
  echo
done
echo "profiles: $OUT"
