#!/usr/bin/env python3
"""Gateway throughput and added latency against the mock and a lean aiohttp pass-through, in one run.

    python bench/throughput.py --quick                 # 1 repeat, 3 s + 1 s warm-up, c=1,16
    python bench/throughput.py                         # 3 repeats, 5 s + 2 s warm-up, c=1,16,64
    GATEWAY_BIN_OLD=/path/to/other/checkout python bench/throughput.py --peers direct,ref-aiohttp,ours,ours-old

Peers (all against one mock upstream, bench/mock_openai.py):
  direct       the load generator straight at the mock: the floor every "added" figure is measured from;
  ref-aiohttp  bench/ref_proxy.py, an aiohttp server + client passing bytes through;
  ours         `python -m gateway serve` of this repository's tree with policies/bench.yaml pointed at the
               mock (GATEWAY_BIN = another executable or source tree to measure instead);
  ours-old     the same from GATEWAY_BIN_OLD (an executable or a source tree), to A/B two builds;
  ours-w2, ref-aiohttp-w2   the same with two worker processes (use with --no-pin);
  --extra-peer NAME=CMD     anything else (bench/run_peers.py adds LiteLLM Proxy and Portkey this way).
Every repeat runs mode × concurrency × peer with the peers innermost (order rotated per repeat), so paired
cells are seconds apart and `ours ÷ ref-aiohttp` is taken per repeat before the median. With 2+ cores the
load generator and the mock run on CPU 0 and each peer alone on CPU 1; --nice (default -10 as root) is
applied to exactly those measured processes.
Output: a markdown table on stdout and $BENCH_TMP/throughput/<run-id>/{table.md,raw.csv,logs/}.
The load generator (bench/loadgen.c) is compiled with `cc -O2` into $BENCH_TMP/bin on first use.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import statistics
import sys
import time

from harness import (MARKERS, Server, build_loadgen, busy_cpu_s, free_port, run_loadgen, start_server,
                     tree_cpu_s, write_bodies)
from locate import BENCH, REPO, bench_tmp, find_python, gateway_command

BUILTIN = ("direct", "ref-aiohttp", "ref-aiohttp-w2", "ours", "ours-w2", "ours-old")
OFFLINE_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_MODE": "PRODUCTION", "HF_HUB_OFFLINE": "1"}
FIELDS = ["rep", "mode", "conc", "peer", "rps", "requests", "errors", "lat_p50_us", "lat_p90_us", "lat_p99_us",
          "ttfb_p50_us", "ttfb_p99_us", "cpu_ms_per_req", "rss_mb", "foreign_cpu", "load1"]


def start_peers(peers: dict[str, Server], names: list[str], py: str, mock: Server, mock_base: str, policy: str,
                log_requests: bool, cpus: set[int] | None, nice: int, logs: str, extra: dict[str, str],
                headers: dict[str, list[str]], ready_timeout: float) -> None:
    """Starts every peer into `peers` (so the caller can stop them even when one fails) and waits for all."""
    for name in names:
        if name == "direct":
            peers[name] = mock
            continue
        port = free_port()
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        workers = ["--workers", "2"] if name.endswith("-w2") else []
        env: dict[str, str] = {}
        if name in extra:  # an external peer: a shell command with {port} and {upstream_base}
            cmd = ["/bin/sh", "-c", extra[name].format(port=port, upstream_base=mock_base)]
        elif name in ("ref-aiohttp", "ref-aiohttp-w2"):
            cmd = [py, os.path.join(BENCH, "ref_proxy.py"), "--port", str(port), "--upstream", mock_base] + workers
        elif name in ("ours", "ours-w2", "ours-old"):
            source = os.environ.get("GATEWAY_BIN") if name != "ours-old" else os.environ.get("GATEWAY_BIN_OLD")
            if name == "ours-old" and not source:
                sys.exit("ours-old needs GATEWAY_BIN_OLD (a gateway executable or a source tree)")
            base, env = gateway_command(source, py)
            cmd = base + ["serve", "--port", str(port)] + workers
            env.update(OFFLINE_ENV, GATEWAY_POLICY=policy, BENCH_UPSTREAM_URL=mock_base,
                       GATEWAY_LOG_REQUESTS="true" if log_requests else "false")
        else:
            sys.exit(f"unknown peer {name!r}: {', '.join(BUILTIN)} or one given with --extra-peer")
        peers[name] = start_server(name, cmd, url, logs, env=env, cpus=cpus, nice=nice,
                                   headers=[h.replace("{upstream_base}", mock_base) for h in headers.get(name, [])])
    for server in peers.values():
        server.wait_ready(ready_timeout)
        server.sample_rss()


def measure(peer: Server, loadgen: str, body: str, mode: str, conc: int, a: argparse.Namespace,
            load_cpus: set[int] | None, mock: Server) -> dict:
    """One cell: load on the peer; its CPU per request (whole tree, warm-up included) and the foreign load."""
    cpu0, busy0, t0 = tree_cpu_s(peer.pid), busy_cpu_s(), time.monotonic()
    mock0 = tree_cpu_s(mock.pid) if peer is not mock else 0.0
    res = run_loadgen(loadgen, peer.url, body, MARKERS[mode], conc, a.duration, a.warmup, load_cpus, a.nice,
                      headers=peer.headers)
    wall = time.monotonic() - t0
    cpu = tree_cpu_s(peer.pid) - cpu0
    mock_cpu = tree_cpu_s(mock.pid) - mock0 if peer is not mock else 0.0
    own = cpu + mock_cpu + res["loadgen_cpu_s"]  # CPU of the benchmark itself
    return {"rps": res["rps"], "requests": res["requests"], "errors": res["errors"],
            "lat_p50_us": res["lat_p50_us"], "lat_p90_us": res["lat_p90_us"], "lat_p99_us": res["lat_p99_us"],
            "ttfb_p50_us": res["ttfb_p50_us"], "ttfb_p99_us": res["ttfb_p99_us"],
            "cpu_ms_per_req": round(1000 * cpu / max(res["completed_total"], 1), 4),
            "rss_mb": round(peer.sample_rss(), 1),
            "foreign_cpu": round(max(busy_cpu_s() - busy0 - own, 0.0) / wall, 2),
            "load1": round(os.getloadavg()[0], 2)}


def _med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def table(rows: list[dict], peers: list[str], modes: list[str], concs: list[int], head: str) -> str:
    by = {(r["rep"], r["mode"], r["conc"], r["peer"]): r for r in rows}
    reps = sorted({r["rep"] for r in rows})
    lo, hi = min(concs), max(concs)

    def col(peer: str, mode: str, conc: int, key: str) -> float | None:
        return _med([by[k][key] for rep in reps if (k := (rep, mode, conc, peer)) in by])

    def added(peer: str, mode: str, key: str) -> float | None:
        return _med([by[(rep, mode, lo, peer)][key] - by[(rep, mode, lo, "direct")][key] for rep in reps
                     if (rep, mode, lo, peer) in by and (rep, mode, lo, "direct") in by])

    def ratios(p: str, q: str, mode: str, conc: int) -> list[float]:
        return [by[(rep, mode, conc, p)]["rps"] / by[(rep, mode, conc, q)]["rps"] for rep in reps
                if (rep, mode, conc, p) in by and (rep, mode, conc, q) in by and by[(rep, mode, conc, q)]["rps"]]

    def n0(v: float | None) -> str:
        return "–" if v is None else f"{v:,.0f}"

    def ms(v: float | None) -> str:
        return "–" if v is None else f"{v / 1000:.2f}"

    cells = [(m, c) for m in modes for c in concs]
    out = [head, "",
           "| peer | " + " | ".join(f"req/s {m} c={c}" for m, c in cells)
           + f" | added p50 / p99 JSON c={lo} (ms) | added TTFB p50 / p99 stream c={lo} (ms) "
           f"| CPU ms/req c={hi} JSON / stream | RSS MB | errors |",
           "|---|" + "---:|" * (len(cells) + 5)]
    for p in peers:
        errors = sum(r["errors"] for r in rows if r["peer"] == p)
        rss = max((r["rss_mb"] for r in rows if r["peer"] == p), default=None)
        if p == "direct":
            lat = f"*{ms(col(p, 'json', lo, 'lat_p50_us'))} / {ms(col(p, 'json', lo, 'lat_p99_us'))} abs*"
            ttfb = f"*{ms(col(p, 'stream', lo, 'ttfb_p50_us'))} / {ms(col(p, 'stream', lo, 'ttfb_p99_us'))} abs*"
        else:
            lat = f"{ms(added(p, 'json', 'lat_p50_us'))} / {ms(added(p, 'json', 'lat_p99_us'))}"
            ttfb = f"{ms(added(p, 'stream', 'ttfb_p50_us'))} / {ms(added(p, 'stream', 'ttfb_p99_us'))}"
        cpu = " / ".join("–" if (v := col(p, m, hi, "cpu_ms_per_req")) is None else f"{v:.3f}"
                         for m in ("json", "stream"))
        out.append(f"| {p}{' (mock)' if p == 'direct' else ''} | "
                   + " | ".join(n0(col(p, m, c, "rps")) for m, c in cells)
                   + f" | {lat} | {ttfb} | {cpu} | {n0(rss)} | {errors} |")
    pairs = [("ours", q) for q in peers if q not in ("direct", "ours")] if "ours" in peers else []
    pairs += [(p, q) for p, q in (("ours-w2", "ref-aiohttp-w2"),) if p in peers and q in peers]
    for p, q in pairs:
        out += ["", f"`{p} ÷ {q}`, throughput, per-repeat paired ratio (median; the repeats in brackets):", "",
                "| " + " | ".join(f"{m} c={c}" for m, c in cells) + " |", "|" + "---:|" * len(cells)]
        vals = []
        for m, c in cells:
            xs = ratios(p, q, m, c)
            med = _med(xs)
            vals.append("–" if med is None else f"**{med:.2f}**" + (
                f" ({', '.join(f'{x:.2f}' for x in xs)})" if len(xs) > 1 else ""))
        out.append("| " + " | ".join(vals) + " |")
    foreign = [r["foreign_cpu"] for r in rows]
    loads = [r["load1"] for r in rows]
    out += ["", f"Foreign CPU load during the cells (other processes on the machine): median "
                f"{statistics.median(foreign):.2f}, max {max(foreign):.2f} CPU-s/s; load average (1 min) "
                f"{min(loads):.2f}–{max(loads):.2f}."]
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", default="direct,ref-aiohttp,ours",
                    help=f"any of {', '.join(BUILTIN)} and the --extra-peer names")
    ap.add_argument("--modes", default="json,stream")
    ap.add_argument("--conc", default="1,16,64")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="--repeats 1 --duration 3 --warmup 1 --conc 1,16")
    ap.add_argument("--nice", type=int, default=-10 if os.geteuid() == 0 else 0,
                    help="nice (and autogroup nice) of the measured processes; default -10 as root, else 0")
    ap.add_argument("--no-pin", action="store_true", help="do not pin (load + mock on CPU 0, peer on CPU 1)")
    ap.add_argument("--chunks", type=int, default=20, help="stream events the mock sends")
    ap.add_argument("--policy", default=os.path.join(REPO, "policies", "bench.yaml"))
    ap.add_argument("--log-requests", action="store_true", help="keep the gateway's per-request log line on")
    ap.add_argument("--extra-peer", action="append", default=[], metavar="NAME=CMD",
                    help="another peer started by a shell command with {port} and {upstream_base} placeholders")
    ap.add_argument("--header", action="append", default=[], metavar="NAME=Header: value",
                    help="a request header for one peer (its load and its readiness check)")
    ap.add_argument("--ready-timeout", type=float, default=120)
    ap.add_argument("--run-id", default=None)
    a = ap.parse_args()
    extra = dict(x.split("=", 1) for x in a.extra_peer)
    headers: dict[str, list[str]] = {}
    for h in a.header:
        name, _, value = h.partition("=")
        headers.setdefault(name, []).append(value)
    if a.quick:
        a.repeats, a.duration, a.warmup, a.conc = 1, 3.0, 1.0, "1,16"
    peers = [p for p in a.peers.split(",") if p]
    peers += [name for name in extra if name not in peers]
    if "direct" not in peers:
        peers.insert(0, "direct")  # every "added" figure is relative to it
    modes = [m for m in a.modes.split(",") if m]
    concs = sorted(int(c) for c in a.conc.split(","))
    pin = not a.no_pin and len(os.sched_getaffinity(0)) >= 2
    load_cpus, peer_cpus = ({0}, {1}) if pin else (None, None)

    run_id = a.run_id or "tp-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = os.path.join(bench_tmp(), "throughput", run_id)
    logs = os.path.join(out, "logs")
    os.makedirs(logs, exist_ok=True)
    loadgen = build_loadgen()
    bodies = write_bodies(out)
    py = find_python()

    mock_port = free_port()
    mock_base = f"http://127.0.0.1:{mock_port}/v1"
    mock = start_server("direct", [py, os.path.join(BENCH, "mock_openai.py"), "--port", str(mock_port),
                                   "--chunks", str(a.chunks)], f"{mock_base}/chat/completions", logs,
                        cpus=load_cpus, nice=a.nice)
    servers: dict[str, Server] = {"direct": mock}
    rows: list[dict] = []
    started = dt.datetime.now(dt.timezone.utc)
    load_start = os.getloadavg()
    try:
        start_peers(servers, peers, py, mock, mock_base, os.path.abspath(a.policy), a.log_requests,
                    peer_cpus, a.nice, logs, extra, headers, a.ready_timeout)
        for rep in range(1, a.repeats + 1):
            order = peers[(rep - 1) % len(peers):] + peers[:(rep - 1) % len(peers)]
            for mode in modes:
                for conc in concs:
                    for p in order:
                        row = {"rep": rep, "mode": mode, "conc": conc, "peer": p}
                        row.update(measure(servers[p], loadgen, bodies[mode], mode, conc, a, load_cpus, mock))
                        rows.append(row)
                        print(f"rep {rep} {mode:6} c={conc:<3} {p:12} {row['rps']:9,.0f} req/s  "
                              f"p50 {row['lat_p50_us'] / 1000:6.2f} ms  p99 {row['lat_p99_us'] / 1000:6.2f} ms  "
                              f"errors {row['errors']}", flush=True)
    finally:
        for s in servers.values():
            s.stop()
        mock.stop()
    with open(os.path.join(out, "raw.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    head = (f"Run `{run_id}` ({started:%Y-%m-%d %H:%M} UTC): {a.repeats} repeat(s) × ({a.warmup:g} s warm-up + "
            f"{a.duration:g} s) per cell, medians over repeats; "
            + ("load generator + mock on CPU 0, each peer on CPU 1" if pin else "nothing pinned")
            + f", nice {a.nice}; {os.cpu_count()} CPUs, load average at start "
            + " / ".join(f"{x:.2f}" for x in load_start) + f". Added = peer − direct in the same repeat; "
            f"CPU ms/req = the peer's process tree; RSS = max seen. Stream = {a.chunks} events + [DONE].")
    text = table(rows, peers, modes, concs, head)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(text)
    print("\n" + text)
    print(f"table: {os.path.join(out, 'table.md')}\nraw:   {os.path.join(out, 'raw.csv')}")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
