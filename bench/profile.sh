#!/usr/bin/env bash
# Profile the gateway's hot path under load with py-spy (non-streaming and streaming).
#
#   bench/profile.sh                  # both modes, c=16, 8 s of samples at 100 Hz each
#   MODES=json CONC=64 bench/profile.sh
#
# Layout like the harness's 1-core runs: mock + load generator + py-spy on CPU 0, the gateway alone on
# CPU 1, everything at nice -10 including its autogroup (needs root; NICE=0 otherwise).
# Needs the harness set up (bench/run_peers.py does it; or the harness's setup.sh) in $BENCH_TMP:
#   $BENCH_VENV/bin/py-spy, $BENCH_VENV/bin/python (mock), $LOADGEN.
# Output (never in the repo): $OUT/prof_<mode>.txt (raw collapsed stacks) and $OUT/prof_<mode>.agg.txt
# (the harness's tools/pyspy_agg.py: top self + inclusive filtered to gateway,starlette,uvicorn,aiohttp),
# plus $OUT/prof_<mode>.own.txt (inclusive, the gateway's own modules only) and $OUT/prof_<mode>.attr.txt
# (each sample charged to the innermost gateway function on its stack).
#
# Env: BENCH_TMP (default ${TMPDIR:-/tmp}/gw-bench), BENCH_VENV, LOADGEN, BENCH_HARNESS, GATEWAY_BIN,
#      POLICY (default policies/bench.yaml), LOG_REQUESTS (default false), MODES (json,stream), CONC (16),
#      DURATION (8), RATE (100), TOP (15), MOCK_PORT (19500), GW_PORT (19550), NICE (-10), OUT.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
BENCH_TMP="${BENCH_TMP:-${TMPDIR:-/tmp}/gw-bench}"
BENCH_VENV="${BENCH_VENV:-$BENCH_TMP/venv}"
LOADGEN="${LOADGEN:-$BENCH_TMP/loadgen}"
if [ -z "${BENCH_HARNESS:-}" ]; then
  for d in "$REPO/../shared/bench"; do [ -f "$d/run_bench.py" ] && { BENCH_HARNESS="$(cd "$d" && pwd)"; break; }; done
fi
if [ -z "${GATEWAY_BIN:-}" ]; then
  GATEWAY_BIN="$(command -v gateway)"
fi
POLICY="${POLICY:-$REPO/policies/bench.yaml}"
LOG_REQUESTS="${LOG_REQUESTS:-false}"
MODES="${MODES:-json,stream}"
CONC="${CONC:-16}"
DURATION="${DURATION:-8}"
RATE="${RATE:-100}"
TOP="${TOP:-15}"
MOCK_PORT="${MOCK_PORT:-19500}"
GW_PORT="${GW_PORT:-19550}"
NICE="${NICE:--10}"
OUT="${OUT:-$BENCH_TMP/profiles/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
for f in "$BENCH_VENV/bin/py-spy" "$LOADGEN" "$BENCH_HARNESS/mock_upstream.py"; do
  [ -e "$f" ] || { echo "missing $f: set the harness up first (python3 bench/run_peers.py sets it up)" >&2; exit 2; }
done

# start CMD... on CPUS with nice/autogroup nice in a new session; prints the pid
boosted() {  # boosted CPUS LOGFILE CMD...
  local cpus="$1" logf="$2"; shift 2
  setsid bash -c 'echo "$0" > /proc/self/autogroup 2>/dev/null || true; exec nice -n "$0" taskset -c "$1" "${@:2}"' \
    "$NICE" "$cpus" "$@" >"$logf" 2>&1 </dev/null &
  echo $!
}

MOCK_PID=$(boosted 0 "$OUT/mock.log" "$BENCH_VENV/bin/python" "$BENCH_HARNESS/mock_upstream.py" --port "$MOCK_PORT")
GW_PID=$(boosted 1 "$OUT/gateway.log" env GATEWAY_POLICY="$POLICY" BENCH_UPSTREAM_URL="http://127.0.0.1:$MOCK_PORT/v1" \
  GATEWAY_LOG_REQUESTS="$LOG_REQUESTS" "$GATEWAY_BIN" serve --port "$GW_PORT")
cleanup() { kill "$GW_PID" "$MOCK_PID" 2>/dev/null || true; wait "$GW_PID" "$MOCK_PID" 2>/dev/null || true; }
trap cleanup EXIT

URL="http://127.0.0.1:$GW_PORT/v1/chat/completions"
BODY_J="$OUT/body_json.json"; BODY_S="$OUT/body_stream.json"
echo '{"model":"mock","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}' >"$BODY_J"
echo '{"model":"mock","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16,"stream":true}' >"$BODY_S"
for _ in $(seq 60); do
  curl -sf -o /dev/null -d @"$BODY_J" "$URL" && break
  sleep 1
done
curl -sf -o /dev/null -d @"$BODY_J" "$URL" || { echo "gateway did not start; see $OUT/gateway.log" >&2; exit 1; }
echo "gateway pid $GW_PID on :$GW_PORT (policy $POLICY, request log $LOG_REQUESTS); output in $OUT"

# Every busy sample charged to the innermost frame of the gateway's own code (that function plus the library
# code it calls directly; "(no own frame)" = uvicorn/starlette/event loop outside any gateway frame).
ATTR_PY=$(cat <<'PYEOF'
"""Attribute every busy sample to the innermost frame of the gateway's own code (that function + the library
code it calls directly), or to the framework (uvicorn/starlette/asyncio loop) when no own frame is on the stack."""
import collections, re, sys
IDLE = ("thread.py:81", "thread.py:83", "select (selectors", "_worker (concurrent/futures/thread.py",
        "Condition.wait (threading.py", "Event.wait (threading.py")
OWN = ("gateway/api/", "gateway/routing/", "gateway/execution/", "gateway/providers/", "gateway/classify/",
       "gateway/observability/", "gateway/admission/", "gateway/state/", "gateway/policy/", "gateway/app.py")
c = collections.Counter(); busy = 0
for line in open(sys.argv[1]):
    st, _, n = line.rstrip("\n").rpartition(" "); n = int(n)
    fr = st.split(";")
    if any(s in fr[-1] for s in IDLE): continue
    busy += n
    key = None
    for f in reversed(fr):
        if any(o in f for o in OWN):
            key = re.sub(r":\d+\)$", ")", f); break
    if key is None:
        leaf = fr[-1]
        key = "(no own frame) " + ("event loop / IO (Runner.run)" if "Runner.run" in leaf else re.sub(r":\d+\)$", ")", leaf).split(" (")[1].split("/")[0] + ": " + leaf.split(" (")[0])
    c[key] += n
top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
print(f"busy samples: {busy}")
for k, v in c.most_common(top):
    print(f"{100*v/busy:5.1f}%  {k}")
PYEOF
)
OWN="gateway/api/,gateway/routing/,gateway/execution/,gateway/providers/,gateway/classify/,gateway/observability/,gateway/admission/,gateway/state/,gateway/policy/,gateway/app.py"
IFS=, read -r -a modes <<<"$MODES"
for mode in "${modes[@]}"; do
  if [ "$mode" = stream ]; then body="$BODY_S"; marker='[DONE]'; else body="$BODY_J"; marker='chat.completion'; fi
  # load for warm-up (3 s) + the sampled window + 2 s slack
  taskset -c 0 nice -n "$NICE" "$LOADGEN" -c "$CONC" -d "$((DURATION + 5))" -w 3 -b "$body" -m "$marker" "$URL" \
    >"$OUT/loadgen_$mode.json" &
  LG=$!
  sleep 3
  taskset -c 0 nice -n "$NICE" "$BENCH_VENV/bin/py-spy" record -p "$GW_PID" -d "$DURATION" -r "$RATE" --format raw \
    -o "$OUT/prof_$mode.txt" >"$OUT/pyspy_$mode.log" 2>&1
  wait "$LG"
  "$BENCH_VENV/bin/python" "$BENCH_HARNESS/tools/pyspy_agg.py" "$OUT/prof_$mode.txt" \
    --filter gateway,starlette,uvicorn,aiohttp --top "$TOP" >"$OUT/prof_$mode.agg.txt"
  # the gateway's own code only (its sub-packages; cli/app are just the wrapping frames), self + inclusive
  "$BENCH_VENV/bin/python" "$BENCH_HARNESS/tools/pyspy_agg.py" "$OUT/prof_$mode.txt" --top 60 \
    --filter "$OWN" >"$OUT/prof_$mode.own.txt"
  "$BENCH_VENV/bin/python" -c "$ATTR_PY" "$OUT/prof_$mode.txt" 25 >"$OUT/prof_$mode.attr.txt"
  rps=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.0f req/s under py-spy, %d/%d ok" % (d["rps"], d["ok"], d["requests"]))' "$OUT/loadgen_$mode.json")
  echo "== $mode c=$CONC: $rps"
  cat "$OUT/prof_$mode.agg.txt"
  echo "-- charged to the innermost gateway frame"
  cat "$OUT/prof_$mode.attr.txt"
  echo
done
echo "profiles: $OUT"
