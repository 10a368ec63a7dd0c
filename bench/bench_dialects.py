#!/usr/bin/env python3
"""What the Messages and Responses dialects add over Chat Completions, and what conversation stickiness adds
to routing.

    python3 bench/bench_dialects.py                      # 2,000 requests per endpoint and mode, one client
    python3 bench/bench_dialects.py --requests 500 --routing 20000

Part 1 starts the test suite's mock upstream and `gateway serve` on a two-model policy (`auto`: edge then
cloud), then sends the same one-line question, one request at a time, to /v1/chat/completions,
/v1/messages and /v1/responses, JSON and stream, in rounds that alternate the endpoints (so drift hits all
alike). It reports client-side latency p50 / p99 and each dialect's p50 minus chat's.

Part 2 times `Router.decide` in process on the same policy with `conversations: {sticky: false}` and with
the default (sticky on, in-memory store): a first turn (hashed for the record) and a third turn (hashed
and looked up).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POLICY = """
version: 1
models:
  edge-a: {{tier: edge, litellm: {{model: openai/edge-a, api_base: "{url}", api_key: t}}}}
  cloud-a: {{tier: cloud, litellm: {{model: openai/cloud-a, api_base: "{url}", api_key: t}}}}
classifier: {{kind: length, threshold: 0.5}}
routes:
  - {{name: auto, when: {{model: auto}}, targets: [edge-a, cloud-a]}}
retry: {{attempts: 1}}
{extra}
"""
QUESTION = "Say hello."
BODIES = {
    "chat": ("/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": QUESTION}]}),
    "messages": ("/v1/messages", {"model": "auto", "max_tokens": 16,
                                  "messages": [{"role": "user", "content": QUESTION}]}),
    "responses": ("/v1/responses", {"model": "auto", "input": QUESTION}),
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(url: str) -> None:
    for _ in range(600):
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def http_part(requests: int) -> None:
    mock_port, gw_port = free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="bench-dialects-"))
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY.format(url=f"http://127.0.0.1:{mock_port}/v1", extra=""))
    env = {**os.environ, "GATEWAY_LOG_REQUESTS": "false", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "mock_upstream.py"), "--port", str(mock_port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
             subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--policy", str(policy), "--port",
                               str(gw_port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait(f"http://127.0.0.1:{mock_port}/v1/models")
        wait(f"http://127.0.0.1:{gw_port}/healthz")
        base = f"http://127.0.0.1:{gw_port}"
        times: dict[tuple[str, bool], list[float]] = {(d, s): [] for d in BODIES for s in (False, True)}
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(50):  # warm-up
                for path, body in BODIES.values():
                    client.post(path, json=body).raise_for_status()
            for _ in range(requests):
                for (dialect, stream), bucket in times.items():
                    path, body = BODIES[dialect]
                    started = time.perf_counter()
                    r = client.post(path, json={**body, "stream": stream})
                    r.read()
                    bucket.append((time.perf_counter() - started) * 1e3)
                    assert r.status_code == 200, r.text
        print(f"HTTP, one client, {requests} requests each (ms)")
        print("| endpoint | mode | p50 | p99 | p50 − chat p50 |")
        print("|---|---|---|---|---|")
        for (dialect, stream), values in times.items():
            chat = statistics.median(times[("chat", stream)])
            p50 = statistics.median(values)
            print(f"| {BODIES[dialect][0]} | {'stream' if stream else 'json'} | {p50:.3f} | {pct(values, 0.99):.3f} "
                  f"| {p50 - chat:+.3f} |")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def routing_part(rounds: int) -> None:
    from gateway.policy.compile import compile_policy
    from gateway.request import Request
    from gateway.routing.router import Router
    from gateway.state.memory import MemoryStore

    class Length:
        default_threshold = 0.5

        async def score(self, text: str) -> float:
            return min(1.0, len(text) / 2000)

        def threshold_for_share(self, share: float) -> float:
            return 0.5

    first = [{"role": "user", "content": QUESTION}]
    third = first + [{"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Again."},
                     {"role": "assistant", "content": "Hello again!"}, {"role": "user", "content": "Thanks."}]
    print(f"\nRouter.decide in process, {rounds} calls a run, 7 runs alternating off/on (µs per call, fastest run)")
    print("| conversation stickiness | first turn | third turn |")
    print("|---|---|---|")
    setups = {}
    for label, extra in (("off (`sticky: false`)", "conversations: {sticky: false}"), ("on (default)", "")):
        policy = compile_policy(POLICY.format(url="http://127.0.0.1:9/v1", extra=extra), env={})
        setups[label] = (policy, Router(lambda kind: Length(), store=MemoryStore()))
    requests = [Request({"model": "auto", "messages": m}, b"", "auto", False, m) for m in (first, third)]

    async def run(policy, router, request) -> float:
        started = time.perf_counter()
        for _ in range(rounds):
            await router.decide(policy, request)
        return (time.perf_counter() - started) / rounds * 1e6

    best: dict[tuple[str, int], float] = {}
    for _ in range(7):
        for label, (policy, router) in setups.items():
            for i, request in enumerate(requests):
                t = asyncio.run(run(policy, router, request))
                best[(label, i)] = min(best.get((label, i), t), t)
    for label in setups:
        print(f"| {label} | {best[(label, 0)]:.2f} | {best[(label, 1)]:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--routing", type=int, default=50000)
    args = parser.parse_args()
    http_part(args.requests)
    routing_part(args.routing)


if __name__ == "__main__":
    main()
