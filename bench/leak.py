#!/usr/bin/env python3
"""Leak test: drive the gateway with N requests at concurrency 16 and watch its RSS.

    python3 bench/leak.py                                  # 1,000,000 requests, bench policy, JSON+stream
    python3 bench/leak.py --requests 200000                # a quicker run
    python3 bench/leak.py --policy bench/policies-litellm.yaml --requests 50000 --every 5000   # litellm loaded

Starts bench/mock_openai.py and `gateway serve` (this repository's tree, one worker unless --workers), then
sends the requests in batches of --every (default 50,000) with bench/loadgen.c (`loadgen -n`; an
in-process aiohttp client with --client aiohttp or when no loadgen is found), alternating the --modes
(JSON / stream) batch by batch. After every batch it reads VmRSS (and VmHWM) from /proc/<pid>/status of the
gateway (summed over its worker processes). Reports RSS after a 2,000-request warm-up, after the run, the
growth over the last half (RSS at the end − RSS at the sample nearest N/2) and the least-squares slope over
the last half (MB per 100k requests); a table of every sample; JSON + CSV in --out.

Layout: the gateway on CPU 1, mock + load generator on CPU 0, nice -10 with autogroup (root; --nice 0 to
skip, --no-pin to not pin). Everything it starts it stops. Raw output goes to $BENCH_TMP/leak/<run>/.
Env: BENCH_TMP (default ${TMPDIR:-/tmp}/gw-bench), BENCH_PYTHON, LOADGEN, GATEWAY_BIN (an executable or a
source tree instead of this repository's).
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from harness import build_loadgen
from locate import BENCH, REPO, bench_tmp, find_python, gateway_command  # bench/ is on sys.path as a script

BODY = {"model": "mock", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
MARKERS = {"json": "chat.completion", "stream": "[DONE]"}


def preexec(cpus, nice):
    def fn():
        os.setsid()
        if cpus:
            os.sched_setaffinity(0, cpus)
        if nice is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
                with open("/proc/self/autogroup", "w") as f:  # the scheduler weighs the autogroup first
                    f.write(str(nice))
            except OSError:
                pass
    return fn


def tree_pids(pid: int) -> list[int]:
    """pid and all its descendants (from /proc/*/stat ppid)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB summed over the process tree (uvicorn workers included)."""
    rss = hwm = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
        except OSError:
            pass
    return rss / 1024, hwm / 1024


def cpu_s(pid: int) -> float:
    tot = 0.0
    hz = os.sysconf("SC_CLK_TCK")
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            tot += (int(fields[11]) + int(fields[12])) / hz
        except (OSError, IndexError, ValueError):
            pass
    return tot


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    data = json.dumps(BODY).encode()
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                if r.status == 200:
                    return
        except Exception as e:  # noqa: BLE001
            last = e
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout}s: {last}")


def run_loadgen(loadgen, url, body_file, marker, n, conc, cpus, nice) -> dict:
    cmd = [loadgen, "-c", str(conc), "-n", str(n), "-d", "100000", "-w", "0", "-b", body_file, "-m", marker,
           "-t", "60", url]
    p = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=preexec(cpus, nice))
    try:
        res = json.loads(p.stdout.strip().splitlines()[-1])
    except Exception as e:  # noqa: BLE001
        raise RuntimeError(f"loadgen failed: {p.stderr[-500:]} {p.stdout[-500:]}") from e
    res["errors"] = sum(res[k] for k in ("err_connect", "err_read", "err_status", "err_invalid", "err_timeout"))
    return res


async def _aiohttp_batch(url, body: bytes, marker: bytes, n: int, conc: int) -> dict:
    import aiohttp

    done = ok = 0
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as s:
        async def worker():
            nonlocal done, ok
            while done < n:
                done += 1
                try:
                    async with s.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                        data = await r.read()
                        ok += r.status == 200 and marker in data
                except aiohttp.ClientError:
                    pass
        await asyncio.gather(*(worker() for _ in range(conc)))
    wall = time.perf_counter() - started
    return {"requests": done, "ok": ok, "errors": done - ok, "rps": done / wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--every", type=int, default=50_000, help="requests per batch = RSS sampling interval")
    ap.add_argument("--warmup", type=int, default=2_000, help="requests before the baseline RSS sample")
    ap.add_argument("--conc", type=int, default=16)
    ap.add_argument("--modes", default="json,stream", help="batches alternate over these (json, stream)")
    ap.add_argument("--policy", default=os.path.join(REPO, "policies", "bench.yaml"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--log-requests", action="store_true", help="keep the per-request JSON log line on")
    ap.add_argument("--client", choices=("loadgen", "aiohttp"), default="loadgen")
    ap.add_argument("--nice", type=int, default=-10)
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--mock-port", type=int, default=19600)
    ap.add_argument("--port", type=int, default=19650)
    ap.add_argument("--out", default=None)
    ap.add_argument("--label", default=None, help="name of this run (default from the policy file)")
    a = ap.parse_args()

    tmp = bench_tmp()
    loadgen = ""
    if a.client == "loadgen":
        try:
            loadgen = build_loadgen()
        except (RuntimeError, subprocess.CalledProcessError) as e:
            print(f"no load generator ({e}): using the aiohttp client", file=sys.stderr)
            a.client = "aiohttp"
    py = find_python()  # the mock and the gateway need the project's dependencies
    gw, gw_env = gateway_command(os.environ.get("GATEWAY_BIN"), py)
    label = a.label or os.path.splitext(os.path.basename(a.policy))[0]
    out = a.out or os.path.join(tmp, "leak", f"{label}-{dt.datetime.now():%Y%m%d-%H%M%S}")
    os.makedirs(out, exist_ok=True)
    gw_cpus, load_cpus = (None, None) if a.no_pin else ({1}, {0})
    nice = None if a.nice == 0 else a.nice

    modes = [m for m in a.modes.split(",") if m]
    bodies = {}
    for m in modes:
        b = dict(BODY, stream=True) if m == "stream" else BODY
        bodies[m] = os.path.join(out, f"body_{m}.json")
        with open(bodies[m], "w") as f:
            json.dump(b, f)

    mock_log = open(os.path.join(out, "mock.log"), "wb")
    gw_log = open(os.path.join(out, "gateway.log"), "wb")
    mock = subprocess.Popen([py, os.path.join(BENCH, "mock_openai.py"), "--port", str(a.mock_port)],
                            stdout=mock_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=preexec(load_cpus, nice))
    env = dict(os.environ, **gw_env, GATEWAY_POLICY=os.path.abspath(a.policy),
               BENCH_UPSTREAM_URL=f"http://127.0.0.1:{a.mock_port}/v1",
               GATEWAY_LOG_REQUESTS="true" if a.log_requests else "false")
    cmd = gw + ["serve", "--port", str(a.port)] + (["--workers", str(a.workers)] if a.workers > 1 else [])
    gateway = subprocess.Popen(cmd, env=env, stdout=gw_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               preexec_fn=preexec(gw_cpus, nice))
    url = f"http://127.0.0.1:{a.port}/v1/chat/completions"
    samples = []
    meta = {"requests_target": a.requests, "every": a.every, "conc": a.conc, "modes": modes, "policy": a.policy,
            "workers": a.workers, "log_requests": a.log_requests, "client": a.client, "nice": a.nice,
            "pinned": not a.no_pin, "started": dt.datetime.now().isoformat(timespec="seconds")}
    try:
        time.sleep(0.5)
        wait_ready(url, gateway)
        idle = rss_mb(gateway.pid)
        print(f"gateway pid {gateway.pid} ready; idle RSS {idle[0]:.1f} MB; output in {out}", flush=True)

        def batch(mode, n):
            if a.client == "loadgen":
                return run_loadgen(loadgen, url, bodies[mode], MARKERS[mode], n, a.conc, load_cpus, nice)
            with open(bodies[mode], "rb") as f:
                body = f.read()
            return asyncio.run(_aiohttp_batch(url, body, MARKERS[mode].encode(), n, a.conc))

        for m in modes:
            batch(m, max(1, a.warmup // len(modes)))
        base = rss_mb(gateway.pid)
        samples.append({"requests": 0, "mode": "warm-up", "rss_mb": round(base[0], 1), "hwm_mb": round(base[1], 1),
                        "rps": None, "errors": 0, "cpu_ms_per_req": None, "t": 0.0})
        print(f"after {a.warmup:,} warm-up requests: RSS {base[0]:.1f} MB", flush=True)
        total, k, t0 = 0, 0, time.time()
        errors = 0
        while total < a.requests:
            n = min(a.every, a.requests - total)
            mode = modes[k % len(modes)]
            c0 = cpu_s(gateway.pid)
            res = batch(mode, n)
            c1 = cpu_s(gateway.pid)
            if gateway.poll() is not None:
                raise RuntimeError(f"the gateway exited with {gateway.returncode}")
            total += res["requests"]
            errors += res["errors"]
            rss, hwm = rss_mb(gateway.pid)
            row = {"requests": total, "mode": mode, "rss_mb": round(rss, 1), "hwm_mb": round(hwm, 1),
                   "rps": round(res["rps"], 1), "errors": res["errors"],
                   "cpu_ms_per_req": round((c1 - c0) * 1000 / max(res["requests"], 1), 4),
                   "t": round(time.time() - t0, 1)}
            samples.append(row)
            print(f"{total:>9,} requests ({mode:6s} {res['rps']:7.0f} req/s, {res['errors']} errors): "
                  f"RSS {rss:6.1f} MB (peak {hwm:6.1f})", flush=True)
            k += 1
            if res["requests"] == 0:
                raise RuntimeError("a batch completed no request")
    finally:
        for p in (gateway, mock):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
        mock_log.close()
        gw_log.close()

    # the figures
    done = samples[-1]["requests"]
    half = done / 2
    last_half = [s for s in samples[1:] if s["requests"] >= half]
    mid = min(samples, key=lambda s: abs(s["requests"] - half))
    growth = samples[-1]["rss_mb"] - mid["rss_mb"]
    slope = None
    if len(last_half) >= 2:
        xs = [s["requests"] / 1e5 for s in last_half]
        ys = [s["rss_mb"] for s in last_half]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        den = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else None
    result = {**meta, "requests_done": done, "errors": errors, "idle_rss_mb": round(idle[0], 1),
              "rss_after_warmup_mb": samples[0]["rss_mb"], "rss_final_mb": samples[-1]["rss_mb"],
              "peak_rss_mb": max(s["hwm_mb"] for s in samples),
              "mid_sample": {"requests": mid["requests"], "rss_mb": mid["rss_mb"]},
              "growth_last_half_mb": round(growth, 1),
              "slope_last_half_mb_per_100k": None if slope is None else round(slope, 3),
              "samples": samples, "finished": dt.datetime.now().isoformat(timespec="seconds")}
    with open(os.path.join(out, "leak.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(out, "leak.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(samples[0]))
        w.writeheader()
        w.writerows(samples)
    print()
    print(f"policy {a.policy}, {a.workers} worker(s), c={a.conc}, modes {','.join(modes)}, client {a.client}")
    print(f"requests: {done:,} (+{a.warmup:,} warm-up), errors: {errors}")
    print(f"RSS idle {idle[0]:.1f} MB, after warm-up {samples[0]['rss_mb']:.1f} MB, after the run "
          f"{samples[-1]['rss_mb']:.1f} MB (peak {result['peak_rss_mb']:.1f} MB)")
    print(f"growth over the last half ({mid['requests']:,} -> {done:,}): {growth:+.1f} MB"
          + ("" if slope is None else f"; slope {slope:+.2f} MB per 100k requests"))
    print(f"results: {os.path.join(out, 'leak.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
