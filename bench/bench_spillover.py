"""What spill-over does to latency when the embedded edge model is overloaded by 16 clients.

Two runs on the same machine: the route without spill-over (every request waits for the one embedded
model), and with `spillover: {queue_depth: 2, to: [cloud]}` where `cloud` is the test suite's mock
upstream (standing in for a cloud model). Reports p50/p99 latency and where requests went.
    python bench/bench_spillover.py [--requests 64] [--clients 16] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import Gateway, MockUpstream  # noqa: E402

POLICY = """
version: 1
models:
  local: {tier: edge, embedded: {gguf: default, threads: 1, max_queue: 64}, timeout: 120s, first_token_timeout: 120s}
  cloud: {tier: cloud, litellm: {model: openai/cloud, api_base: "URL", api_key: t}}
classifier: {kind: length}
routes:
  - name: auto
    when: {model: auto}
    targets: [local]
SPILL
deadline: 300s
"""


async def drive(base: str, n: int, clients: int, max_tokens: int) -> tuple[list[float], dict]:
    latencies, where = [], {}
    sem = asyncio.Semaphore(clients)
    async with httpx.AsyncClient(timeout=300) as client:
        async def one(i: int) -> None:
            async with sem:
                started = time.monotonic()
                r = await client.post(base + "/v1/chat/completions", json={
                    "model": "auto", "max_tokens": max_tokens, "temperature": 0.7,
                    "messages": [{"role": "user", "content": f"Write a short poem about the number {i}."}]})
                latencies.append(time.monotonic() - started)
                model = r.headers.get("x-gateway-model", f"status {r.status_code}")
                where[model] = where.get(model, 0) + 1
        await asyncio.gather(*[one(i) for i in range(n)])
    return sorted(latencies), where


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    up = MockUpstream()
    tmp = Path(tempfile.mkdtemp(prefix="spill-"))
    spill = "    spillover: {queue_depth: 2, to: [cloud], hold: 5s}"
    try:
        for label, extra in (("no spill-over", ""), ("spill-over at queue depth 2", spill)):
            gw = Gateway(POLICY.replace("URL", up.url).replace("SPILL", extra), tmp, env={"OPENAI_API_KEY": ""})
            try:
                asyncio.run(drive(gw.base, 2, 1, 4))  # warm the model up
                started = time.monotonic()
                lat, where = asyncio.run(drive(gw.base, args.requests, args.clients, args.max_tokens))
                wall = time.monotonic() - started
            finally:
                gw.stop()
            p = lambda q, lat=lat: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3  # noqa: E731
            print(f"{label:<30} {args.requests} requests, {args.clients} clients, {wall:.1f}s: "
                  f"p50 {p(0.5):.0f} ms, p99 {p(0.99):.0f} ms, max {lat[-1] * 1e3:.0f} ms; served by {where}")
    finally:
        up.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
