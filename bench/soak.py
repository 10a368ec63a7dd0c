"""Resilience soak: N requests (default 20,000) with ~30 % mixed faults across two upstreams.

Reports how many requests got a real answer, a canned answer, an explicit stream error event, or a
malformed/erroneous answer; gateway 5xx; and the worst latency against the route's deadline.
Not part of the test suite:  python bench/soak.py [--requests 20000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import Gateway, MockUpstream  # noqa: E402

DEADLINE = 3.0
POLICY = """
version: 1
models:
  up1: {tier: cloud, litellm: {model: openai/up1, api_base: "U1", api_key: t}, timeout: 800ms, first_token_timeout: 500ms}
  up2: {tier: cloud, litellm: {model: openai/up2, api_base: "U2", api_key: t}, timeout: 800ms, first_token_timeout: 500ms}
classifier: {kind: length}
routes:
  - name: soak
    when: {model: soak}
    targets: [up1, up2]
    deadline: DEADLINEs
retry: {attempts: 2, backoff: {initial: 20ms, max: 100ms}, retry_after_cap: 200ms}
breaker: BREAKER
degrade: {reply: "canned: please retry", retry_after: 2s}
"""

# 70 % healthy, 30 % faults of every kind the suite knows.
MIX = {"mix": [
    [70, {}],
    [6, {"status": 500}], [4, {"status": 503}], [4, {"status": 429, "headers": {"Retry-After": "0.1"}}],
    [3, {"reset": True}], [3, {"malformed": True}], [2, {"hang": True}], [2, {"delay": 1.2}],
    [2, {"first_token_delay": 0.8}], [2, {"cut_after": 2, "chunks": 6}], [2, {"error_after": 3, "chunks": 6}],
]}


def classify(status: int, headers, body: bytes, stream: bool) -> str:
    if status >= 500:
        return "gateway_5xx"
    if status != 200:
        return f"http_{status}"
    if headers.get("x-gateway-degraded"):
        return "canned"
    if not stream:
        try:
            data = json.loads(body)
            return "real" if data.get("object") == "chat.completion" and data["choices"] else "malformed"
        except (ValueError, KeyError, TypeError):
            return "malformed"
    text = body.decode(errors="replace").strip()
    if not text.endswith("data: [DONE]"):
        return "malformed"
    events = [line[6:] for line in text.split("\n") if line.startswith("data: ") and line[6:] != "[DONE]"]
    try:
        parsed = [json.loads(e) for e in events]
    except ValueError:
        return "malformed"
    if any("error" in p for p in parsed):
        return "stream_error_event"
    return "real" if parsed else "malformed"


async def run(base: str, n: int, concurrency: int) -> tuple[dict, list[float]]:
    counts: dict[str, int] = {}
    latencies: list[float] = []
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency * 2)) as client:
        async def one(i: int) -> None:
            stream = i % 2 == 1
            async with sem:
                started = time.monotonic()
                try:
                    r = await client.post(base + "/v1/chat/completions", json={
                        "model": "soak", "stream": stream, "messages": [{"role": "user", "content": f"q{i}"}]})
                    kind = classify(r.status_code, r.headers, r.content, stream)
                    if kind == "canned":  # why: the failure kind that ended the last target tried
                        why = r.headers.get("x-gateway-degraded-reason", "?").split(":")[0]
                        counts[f"  canned because: {why}"] = counts.get(f"  canned because: {why}", 0) + 1
                except httpx.HTTPError as exc:
                    kind = f"client_error:{type(exc).__name__}"
                latencies.append(time.monotonic() - started)
                counts[kind] = counts.get(kind, 0) + 1

        await asyncio.gather(*[one(i) for i in range(n)])
    return counts, latencies


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--breaker",
                        default="{failure_ratio: 0.5, min_requests: 10, consecutive: 5, window: 30s, cooldown: 20s}",
                        help="the policy's breaker, e.g. '{failures: 5, window: 30s, cooldown: 20s}' or '{enabled: false}'")
    args = parser.parse_args()
    ups = [MockUpstream(), MockUpstream()]
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    gw = Gateway(POLICY.replace("U1", ups[0].url).replace("U2", ups[1].url).replace("DEADLINE", str(DEADLINE))
                 .replace("BREAKER", args.breaker), tmp,
                 env={"GATEWAY_LOG_REQUESTS": "true"})
    try:
        for up in ups:
            up.script("*", [], default=MIX)
        started = time.monotonic()
        counts, latencies = asyncio.run(run(gw.base, args.requests, args.concurrency))
        wall = time.monotonic() - started
    finally:
        gw.stop()
        for up in ups:
            up.stop()
    latencies.sort()
    # The gateway's own view (request log): the client's includes its own queueing on this small machine.
    served = sorted(json.loads(line)["latency_ms"] / 1e3 for line in gw.log_path.read_text().splitlines()
                    if line.startswith("{") and '"request_id"' in line)
    worst = served[-1]
    well_formed = sum(v for k, v in counts.items() if k in ("real", "canned", "stream_error_event"))
    print(f"requests: {args.requests} at concurrency {args.concurrency} in {wall:.1f}s")
    for kind, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<22} {count:>7}  ({100 * count / args.requests:.2f}%)")
    print(f"well-formed answers: {well_formed}/{args.requests} ({100 * well_formed / args.requests:.2f}%)")
    print(f"gateway 5xx: {counts.get('gateway_5xx', 0)}")
    print(f"client-side latency p50 {latencies[len(latencies) // 2] * 1e3:.0f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.0f} ms, worst {latencies[-1] * 1e3:.0f} ms")
    print(f"gateway-side latency ({len(served)} logged) p50 {served[len(served) // 2] * 1e3:.0f} ms, "
          f"p99 {served[int(len(served) * 0.99)] * 1e3:.0f} ms, worst {worst * 1e3:.0f} ms; deadline "
          f"{DEADLINE * 1e3:.0f} ms; worst overrun {max(0.0, worst - DEADLINE) * 1e3:.0f} ms")
    ok = well_formed == args.requests and counts.get("gateway_5xx", 0) == 0 and worst <= DEADLINE + 0.1
    print("target met" if ok else "target NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
