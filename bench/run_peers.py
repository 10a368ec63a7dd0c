#!/usr/bin/env python3
"""Benchmark the gateway against its peers with the shared harness, in ONE run.

    python3 bench/run_peers.py                  # 1 core: ours vs direct, ref-aiohttp, LiteLLM Proxy, Portkey
    python3 bench/run_peers.py --mode 2core     # 1 vs 2 workers, nothing pinned (both cores shared)
    python3 bench/run_peers.py --quick          # --repeats 1 --duration 3 --warmup 1, c=1,16

What it does:
  1. sets the harness up in temp dirs (its setup.sh with BENCH_VENV / PORTKEY_DIR / LOADGEN under
     $BENCH_TMP, default ${TMPDIR:-/tmp}/gw-bench; skipped when everything is already there);
  2. runs the harness's run_bench.py with the gateway as extra peers (`--target-cmd`), JSON and stream,
     peers interleaved, everything at `--nice -10` (needs root; use --nice 0 otherwise);
       1core: load generator + mock pinned to CPU 0, every peer alone on CPU 1 (figures per gateway core);
              peers direct, ref-aiohttp, litellm (LiteLLM Proxy), portkey, ours (request log off) and
              ours-log (the same with the per-request JSON log line on; --no-log-peer leaves it out);
       2core: nothing pinned (CPUs 0,1 for everything), c=16,64: direct, ref-aiohttp, ref-aiohttp-w2,
              ours (1 worker), ours-w2 (`gateway serve --workers 2`);
  3. calls the harness's summarize.py with `--ref ref-aiohttp` and prints where summary.md is, then a
     headline table (req/s at 16 clients, added latency at 1 client, TTFB, CPU, RSS) with per-repeat
     paired ratios of `ours` to every other peer (written to headline.md next to summary.md).

Raw results go to $BENCH_TMP/results/<run-id>/ (never into the repo).
Only the standard library is needed to run this file; the harness runs with its own venv.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import shlex
import statistics
import subprocess
import sys

from locate import REPO, find_gateway, find_harness  # bench/ is on sys.path when run as a script


def gateway_cmd(gw: str, policy: str, log_requests: bool, workers: int = 1, extra_env: str = "") -> str:
    env = (f"env GATEWAY_POLICY={shlex.quote(policy)} BENCH_UPSTREAM_URL={{upstream_base}} "
           f"GATEWAY_LOG_REQUESTS={'true' if log_requests else 'false'} {extra_env}").strip()
    w = f" --workers {workers}" if workers > 1 else ""
    return f"{env} {shlex.quote(gw)} serve{w} --port {{port}}"


def setup(harness: str, env: dict, skip_portkey: bool, skip_litellm: bool) -> None:
    need = (not os.access(env["LOADGEN"], os.X_OK)
            or not os.path.exists(os.path.join(env["BENCH_VENV"], "bin", "py-spy"))
            or (not skip_litellm and not os.path.exists(os.path.join(env["BENCH_VENV"], "bin", "litellm")))
            or (not skip_portkey and not os.path.exists(os.path.join(
                env["PORTKEY_DIR"], "node_modules", "@portkey-ai", "gateway", "build", "start-server.js"))))
    if not need:
        print(f"harness already set up in {env['BENCH_TMP']}", flush=True)
        return
    e = dict(os.environ, **env)
    e.setdefault("SKIP_APT", "1")  # wrk/hey are optional cross-checks only
    if skip_portkey:
        e["SKIP_PORTKEY"] = "1"
    if skip_litellm:
        e["SKIP_LITELLM"] = "1"
    os.makedirs(env["BENCH_TMP"], exist_ok=True)
    log = os.path.join(env["BENCH_TMP"], "setup.log")
    print(f"setting up the harness (log: {log}) ...", flush=True)
    with open(log, "ab") as fh:
        subprocess.run(["bash", os.path.join(harness, "setup.sh")], env=e, stdout=fh, stderr=subprocess.STDOUT,
                       check=True)


def fnum(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def headline(run_dir: str, ours: str = "ours") -> str:
    """The issue's table: one row per peer, medians over repeats, paired per-repeat differences/ratios."""
    with open(os.path.join(run_dir, "raw.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["rep"] != "0"]
    by = {(r["rep"], r["mode"], int(r["conc"]), r["peer"]): r for r in rows}
    peers = []
    for r in rows:
        if r["peer"] not in peers:
            peers.append(r["peer"])
    reps = sorted({r["rep"] for r in rows})
    concs = sorted({int(r["conc"]) for r in rows})
    hi = 16 if 16 in concs else max(concs)

    def col(peer, mode, conc, key):
        return med([fnum(by[(rep, mode, conc, peer)][key]) for rep in reps if (rep, mode, conc, peer) in by])

    def added(peer, mode, key):
        if 1 not in concs:
            return None
        d = []
        for rep in reps:
            a, b = by.get((rep, mode, 1, peer)), by.get((rep, mode, 1, "direct"))
            if a and b:
                d.append(fnum(a[key]) - fnum(b[key]))
        return med(d)

    def ratio(p, q, mode, conc):
        x = []
        for rep in reps:
            a, b = by.get((rep, mode, conc, p)), by.get((rep, mode, conc, q))
            if a and b and fnum(b["rps"]):
                x.append(fnum(a["rps"]) / fnum(b["rps"]))
        return med(x)

    def ms(us):
        return "–" if us is None else f"{us / 1000:.2f}"

    def absolute(us):
        return "–" if us is None else f"*{us / 1000:.2f} abs*"

    def n0(v):
        return "–" if v is None else f"{v:,.0f}"

    def n2(v):
        return "–" if v is None else f"{v:.2f}"

    out = [f"Run `{os.path.basename(run_dir)}`: medians over {len(reps)} repeat(s); added = peer − direct in the "
           f"same repeat (median); CPU ms/req at c={hi}; RSS = max of the process tree over the run.", "",
           f"| peer | req/s c={hi} JSON | req/s c={hi} stream | added p50 c=1 (ms) | added p99 c=1 (ms) "
           f"| added stream TTFB p50 / p99 c=1 (ms) | added stream p50 / p99 c=1 (ms) | CPU ms/req JSON / stream "
           f"| RSS MB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in peers:
        rss = max([fnum(r["peer_rss_mb"]) or 0 for r in rows if r["peer"] == p] or [0]) or None
        if p == "direct":
            out.append(f"| direct (floor) | {n0(col(p, 'json', hi, 'rps'))} | {n0(col(p, 'stream', hi, 'rps'))} "
                       f"| {absolute(col(p, 'json', 1, 'lat_p50_us') if 1 in concs else None)} "
                       f"| {absolute(col(p, 'json', 1, 'lat_p99_us') if 1 in concs else None)} "
                       f"| {absolute(col(p, 'stream', 1, 'ttfb_p50_us') if 1 in concs else None)} | – | – | – |")
            continue
        out.append(
            f"| {p} | {n0(col(p, 'json', hi, 'rps'))} | {n0(col(p, 'stream', hi, 'rps'))} "
            f"| {ms(added(p, 'json', 'lat_p50_us'))} | {ms(added(p, 'json', 'lat_p99_us'))} "
            f"| {ms(added(p, 'stream', 'ttfb_p50_us'))} / {ms(added(p, 'stream', 'ttfb_p99_us'))} "
            f"| {ms(added(p, 'stream', 'lat_p50_us'))} / {ms(added(p, 'stream', 'lat_p99_us'))} "
            f"| {n2(col(p, 'json', hi, 'peer_cpu_ms_per_req'))} / {n2(col(p, 'stream', hi, 'peer_cpu_ms_per_req'))} "
            f"| {n0(rss)} |")
    if ours in peers:
        out += ["", f"Throughput of `{ours}` ÷ peer (per-repeat paired ratio, median):", "",
                "| vs | " + " | ".join(f"{m} c={c}" for m in ("json", "stream") for c in concs) + " |",
                "|---|" + "---:|" * (2 * len(concs))]
        for p in peers:
            if p == ours:
                continue
            out.append(f"| {p} | " + " | ".join(n2(ratio(ours, p, m, c)) for m in ("json", "stream")
                                                for c in concs) + " |")
    oc = [fnum(r.get("other_cpu_util")) for r in rows]
    oc = [x for x in oc if x is not None]
    if oc:
        out += ["", f"Foreign CPU load during the runs: median {statistics.median(oc):.2f}, max {max(oc):.2f} "
                    f"CPU-s/s; errors: {sum(int(float(r['errors'])) for r in rows)}."]
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("1core", "2core"), default="1core")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--conc", default=None, help="default 1,16 (1core) / 16,64 (2core); add 64 if time allows")
    ap.add_argument("--nice", type=int, default=-10, help="nice + autogroup nice for every bench process (root)")
    ap.add_argument("--peers", default=None, help="builtin harness peers (default per mode)")
    ap.add_argument("--no-log-peer", action="store_true", help="1core: leave out ours-log (request log on)")
    ap.add_argument("--quick", action="store_true", help="--repeats 1 --duration 3 --warmup 1")
    ap.add_argument("--policy", default=os.path.join(REPO, "policies", "bench.yaml"))
    ap.add_argument("--gateway", default=None, help="the gateway command (default: $GATEWAY_BIN or the venv's)")
    ap.add_argument("--mock-port", type=int, default=int(os.environ.get("MOCK_PORT", 19000)))
    ap.add_argument("--base-port", type=int, default=int(os.environ.get("BASE_PORT", 19100)))
    ap.add_argument("--run-id", default=None)
    ap.add_argument("--skip-setup", action="store_true")
    ap.add_argument("--summary-only", metavar="RUN_DIR", help="only (re)summarize an existing run folder")
    ap.add_argument("extra", nargs="*", help="passed to run_bench.py after `--`")
    a = ap.parse_args()

    harness = find_harness()
    tmp = os.environ.get("BENCH_TMP") or os.path.join(os.environ.get("TMPDIR", "/tmp"), "gw-bench")
    env = {"BENCH_TMP": tmp,
           "BENCH_VENV": os.environ.get("BENCH_VENV") or os.path.join(tmp, "venv"),
           "PORTKEY_DIR": os.environ.get("PORTKEY_DIR") or os.path.join(tmp, "portkey"),
           "LOADGEN": os.environ.get("LOADGEN") or os.path.join(tmp, "loadgen")}
    py = os.path.join(env["BENCH_VENV"], "bin", "python")

    if a.summary_only:
        run_dir = os.path.abspath(a.summary_only)
    else:
        if a.quick:
            a.repeats, a.duration, a.warmup = 1, 3.0, 1.0
        if a.mode == "1core":
            peers = a.peers or "direct,ref-aiohttp,litellm,portkey"
            conc = a.conc or "1,16"
            cpus = ["--load-cpus", "0", "--proxy-cpus", "1"]
        else:
            peers = a.peers or "direct,ref-aiohttp"
            conc = a.conc or "16,64"
            cpus = ["--load-cpus", "0,1", "--proxy-cpus", "0,1"]
        if not a.skip_setup:
            setup(harness, env, skip_portkey="portkey" not in peers, skip_litellm="litellm" not in peers)
        gw = a.gateway or find_gateway()
        policy = os.path.abspath(a.policy)
        targets = [f"ours={gateway_cmd(gw, policy, False)}"]
        if a.mode == "1core" and not a.no_log_peer:
            targets.append(f"ours-log={gateway_cmd(gw, policy, True)}")
        if a.mode == "2core":
            targets.append(f"ours-w2={gateway_cmd(gw, policy, False, workers=2)}")
            ref = (f"env REF_CLIENT=aiohttp UPSTREAM_BASE={{upstream_base}} {shlex.quote(py)} -m uvicorn "
                   f"--app-dir {shlex.quote(os.path.join(harness, 'peers'))} --loop uvloop --http httptools "
                   f"--no-access-log --log-level warning --host 127.0.0.1 --workers 2 --port {{port}} ref_proxy:app")
            targets.append(f"ref-aiohttp-w2={ref}")
        run_id = a.run_id or f"gw-{a.mode}-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = os.path.join(tmp, "results")
        cmd = [py, os.path.join(harness, "run_bench.py"), "--peers", peers, "--modes", "json,stream",
               "--conc", conc, "--repeats", str(a.repeats), "--duration", str(a.duration), "--warmup", str(a.warmup),
               "--nice", str(a.nice), "--mock-port", str(a.mock_port), "--base-port", str(a.base_port),
               "--venv", env["BENCH_VENV"], "--portkey-dir", env["PORTKEY_DIR"], "--loadgen", env["LOADGEN"],
               "--out", out, "--run-id", run_id] + cpus
        for t in targets:
            cmd += ["--target-cmd", t]
        cmd += a.extra
        print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
        subprocess.run(cmd, env=dict(os.environ, **env), cwd=harness, check=True)
        run_dir = os.path.join(out, run_id)

    subprocess.run([py, os.path.join(harness, "summarize.py"), run_dir, "--ref", "ref-aiohttp"],
                   stdout=subprocess.DEVNULL, check=True)
    text = headline(run_dir)
    with open(os.path.join(run_dir, "headline.md"), "w") as f:
        f.write(text)
    print("\n" + text)
    print(f"summary:  {os.path.join(run_dir, 'summary.md')}")
    print(f"headline: {os.path.join(run_dir, 'headline.md')}")
    print(f"raw:      {os.path.join(run_dir, 'raw.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
