"""Chaos run over both provider paths and every client dialect: 30 % upstream faults, malformed and empty
streams included.

For each path (native aiohttp client, litellm) the gateway routes `chaos-<path>` to two upstreams that fail
30 % of calls in every way tests/mock_upstream.py knows; half the requests stream, and the requests take
turns between the dialects asked for (Chat Completions, Anthropic Messages, OpenAI Responses). Every answer
is checked in its own dialect: well-formed (a real answer, the canned reply, or a stream that ends with the
dialect's explicit error event), malformed (bad JSON, a stream without its proper end, an event of the wrong
shape), an empty "success" (200, not degraded, no content), a 5xx, or later than the deadline + 100 ms (by
the client's clock and by the gateway's request log; the target is judged on the gateway's).
Not part of the test suite:
    nice -n 10 python bench/chaos.py [--requests 1000] [--concurrency 32] [--paths native litellm]
                                     [--dialects chat messages responses]
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
from conftest import Gateway, MockUpstream, _wait_http  # noqa: E402

DEADLINE = 3.0
LATE = 0.1
MODEL = ("  {p}{i}: {{tier: cloud, client: {p}, litellm: {{model: openai/{p}{i}, api_base: \"{url}\", api_key: t}}, "
         "timeout: 800ms, first_token_timeout: 500ms}}")
POLICY = """
version: 1
models:
{models}
classifier: {{kind: length}}
routes:
{routes}
deadline: {deadline}s
retry: {{attempts: 2, backoff: {{initial: 20ms, max: 100ms}}, retry_after_cap: 200ms}}
breaker: {{failure_ratio: 0.5, min_requests: 10, consecutive: 5, window: 30s, cooldown: 20s}}
degrade: {{reply: "canned: please retry", retry_after: 2s}}
"""

# 70 % healthy, 30 % faults: errors, resets, hangs, slow answers, and broken streams of every shape.
MIX = {"mix": [
    [70, {}],
    [4, {"status": 500}], [2, {"status": 503}], [3, {"status": 429, "headers": {"Retry-After": "0.1"}}],
    [2, {"reset": True}], [2, {"malformed": True}], [2, {"hang": True}], [2, {"delay": 1.2}],
    [2, {"first_token_delay": 0.8}], [2, {"cut_after": 2, "chunks": 6}], [2, {"error_after": 3, "chunks": 6}],
    [2, {"first_event": "this is not json"}],
    [1, {"first_event": '{"id": "x", "object": "chat.completion.chunk", "ch'}],
    [1, {"raw": "<html><body>502 Bad Gateway</body></html>", "content_type": "text/html"}],
    [1, {"raw": ""}], [1, {"raw": "data: [DONE]\n\n"}], [1, {"role_chunk": True, "cut_after": 0}],
]}


class Verdict(Exception):
    """An answer judged before its text is read: "malformed", or "stream_error_event" (an explicit end)."""


def chat_text(body: bytes, stream: bool) -> str:
    """The text of a Chat Completions answer, or Verdict."""
    if not stream:
        try:
            data = json.loads(body)
            if data.get("object") != "chat.completion" or not data["choices"]:
                raise Verdict("malformed")
            return data["choices"][0]["message"].get("content") or ""
        except (ValueError, KeyError, TypeError, AttributeError):
            raise Verdict("malformed") from None
    text = body.decode(errors="replace").strip()
    if not text.endswith("data: [DONE]"):
        raise Verdict("malformed")
    events = [line[6:] for line in text.split("\n") if line.startswith("data: ") and line[6:] != "[DONE]"]
    try:
        parsed = [json.loads(e) for e in events]
    except ValueError:
        raise Verdict("malformed") from None
    if any(not isinstance(p, dict) for p in parsed):
        raise Verdict("malformed")
    errors = [p for p in parsed if "error" in p]
    chunks = [p for p in parsed if "error" not in p]
    if any(p.get("object") != "chat.completion.chunk" or not isinstance(p.get("choices"), list) for p in chunks):
        raise Verdict("malformed")
    if errors:
        raise Verdict("stream_error_event" if errors == parsed[-1:] else "malformed")
    return "".join((c.get("delta") or {}).get("content") or "" for p in chunks for c in p["choices"])


def _events(body: bytes) -> list[tuple[str | None, dict]]:
    """(event name, parsed data) of every SSE event; Verdict when one is not JSON."""
    out = []
    for block in body.decode(errors="replace").replace("\r\n", "\n").split("\n\n"):
        name = next((line[6:].strip() for line in block.split("\n") if line.startswith("event:")), None)
        data = "".join(line[5:].strip() for line in block.split("\n") if line.startswith("data:"))
        if not data:
            continue
        try:
            parsed = json.loads(data)
        except ValueError:
            raise Verdict("malformed") from None
        out.append((name, parsed if isinstance(parsed, dict) else {}))
    return out


def messages_text(body: bytes, stream: bool) -> str:
    """The text of an Anthropic Messages answer: a `message`, or message_start … message_stop (or an `error`
    event); or Verdict."""
    if not stream:
        try:
            data = json.loads(body)
            if data.get("type") != "message" or not isinstance(data.get("content"), list):
                raise Verdict("malformed")
            return "".join(b.get("text", "") for b in data["content"] if b.get("type") == "text")
        except (ValueError, TypeError, AttributeError):
            raise Verdict("malformed") from None
    events = _events(body)
    if not events or events[0][0] != "message_start" or any(d.get("type") != n for n, d in events):
        raise Verdict("malformed")
    if events[-1][0] == "error":
        raise Verdict("stream_error_event")
    if events[-1][0] != "message_stop":
        raise Verdict("malformed")
    return "".join(d["delta"].get("text", "") for n, d in events
                   if n == "content_block_delta" and isinstance(d.get("delta"), dict))


def responses_text(body: bytes, stream: bool) -> str:
    """The text of an OpenAI Responses answer: a `response`, or response.created … response.completed (or
    .failed); or Verdict."""
    if not stream:
        try:
            data = json.loads(body)
            if data.get("object") != "response" or data.get("status") not in ("completed", "incomplete"):
                raise Verdict("malformed")
            return "".join(p.get("text", "") for item in data["output"] if item.get("type") == "message"
                           for p in item.get("content") or [])
        except (ValueError, TypeError, AttributeError, KeyError):
            raise Verdict("malformed") from None
    events = _events(body)
    if not events or events[0][0] != "response.created" or any(
            d.get("type") != n or d.get("sequence_number") != i for i, (n, d) in enumerate(events)):
        raise Verdict("malformed")
    last = events[-1][0]
    if last == "response.failed":
        raise Verdict("stream_error_event")
    if last not in ("response.completed", "response.incomplete"):
        raise Verdict("malformed")
    return "".join(d.get("delta", "") for n, d in events if n == "response.output_text.delta")


TEXT_OF = {"chat": chat_text, "messages": messages_text, "responses": responses_text}


def classify(dialect: str, status: int, headers, body: bytes, stream: bool) -> str:
    """One answer's kind: a 5xx or other status, malformed, an explicit stream error, real, canned, or an
    empty "success"."""
    if status >= 500:
        return "gateway_5xx"
    if status != 200:
        return f"http_{status}"
    try:
        text = TEXT_OF[dialect](body, stream)
    except Verdict as verdict:
        return str(verdict)
    if not text:
        return "empty_success"
    return "canned" if headers.get("x-gateway-degraded") else "real"


def request_of(dialect: str, model: str, i: int, stream: bool) -> tuple[str, dict]:
    """(path, body) of one request in a dialect."""
    say = f"q{i}"
    if dialect == "messages":
        return "/v1/messages", {"model": model, "max_tokens": 64, "stream": stream,
                                "messages": [{"role": "user", "content": say}]}
    if dialect == "responses":
        return "/v1/responses", {"model": model, "stream": stream, "input": say, "store": False}
    return "/v1/chat/completions", {"model": model, "stream": stream, "messages": [{"role": "user", "content": say}]}


async def run(base: str, model: str, n: int, concurrency: int,
              dialects: tuple[str, ...] = ("chat",)) -> tuple[dict, list[float]]:
    counts: dict[str, int] = {}
    latencies: list[float] = []
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency * 2)) as client:
        async def one(i: int) -> None:
            stream = i % 2 == 1
            dialect = dialects[(i // 2) % len(dialects)]
            path, body = request_of(dialect, model, i, stream)
            async with sem:
                started = time.monotonic()
                try:
                    r = await client.post(base + path, json=body)
                    kind = classify(dialect, r.status_code, r.headers, r.content, stream)
                    kind = kind if len(dialects) == 1 else f"{dialect}:{kind}"
                except httpx.HTTPError as exc:
                    kind = f"client_error:{type(exc).__name__}"
                latencies.append(time.monotonic() - started)
                counts[kind] = counts.get(kind, 0) + 1

        await asyncio.gather(*[one(i) for i in range(n)])
    return counts, latencies


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000, help="per path")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--paths", nargs="+", default=["native", "litellm"])
    parser.add_argument("--dialects", nargs="+", default=["chat"], choices=sorted(TEXT_OF))
    args = parser.parse_args()
    ups = [MockUpstream(), MockUpstream()]
    models = "\n".join(MODEL.format(p=p, i=i, url=ups[i - 1].url) for p in args.paths for i in (1, 2))
    routes = "\n".join(f"  - {{name: chaos-{p}, when: {{model: chaos-{p}}}, targets: [{p}1, {p}2]}}"
                       for p in args.paths)
    tmp = Path(tempfile.mkdtemp(prefix="chaos-"))
    ok = True
    gw = None
    try:
        gw = Gateway(POLICY.format(models=models, routes=routes, deadline=DEADLINE), tmp,
                     env={"GATEWAY_LOG_REQUESTS": "true"}, wait=False)
        _wait_http(gw.base + "/readyz", gw.proc, timeout=300)  # litellm is imported and warmed first
        for up in ups:
            up.script("*", [], default=MIX)
        for path in args.paths:
            started = time.monotonic()
            counts, latencies = asyncio.run(run(gw.base, f"chaos-{path}", args.requests, args.concurrency,
                                                tuple(args.dialects)))
            wall = time.monotonic() - started
            latencies.sort()
            late = sum(1 for x in latencies if x > DEADLINE + LATE)
            bad = {k: sum(n for kind, n in counts.items() if kind.split(":")[-1] == k)
                   for k in ("malformed", "empty_success", "gateway_5xx")}
            print(f"[{path}] {args.requests} requests at concurrency {args.concurrency} in {wall:.1f}s")
            for kind, count in sorted(counts.items(), key=lambda kv: -kv[1]):
                print(f"  {kind:<22} {count:>6}  ({100 * count / args.requests:.1f}%)")
            print(f"  malformed {bad['malformed']}, empty successes {bad['empty_success']}, 5xx {bad['gateway_5xx']}, "
                  f"later than deadline+{LATE * 1e3:.0f} ms: {late}")
            print(f"  client latency p50 {latencies[len(latencies) // 2] * 1e3:.0f} ms, "
                  f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.0f} ms, worst {latencies[-1] * 1e3:.0f} ms "
                  f"(deadline {DEADLINE * 1e3:.0f} ms)")
            ok = ok and not any(bad.values()) and not any("client_error" in k for k in counts)
    finally:
        if gw is not None:
            gw.stop()
        for up in ups:
            up.stop()
    # The gateway's own view (request log): the client on the same cores adds its own queueing.
    records = [json.loads(line) for line in gw.log_path.read_text().splitlines() if line.startswith('{"request_id"')]
    for path in args.paths:
        served = sorted(r["latency_ms"] / 1e3 for r in records if r["route"] == f"chaos-{path}")
        late = sum(1 for x in served if x > DEADLINE + LATE)
        print(f"[{path}] gateway latency ({len(served)} logged) p50 {served[len(served) // 2] * 1e3:.0f} ms, "
              f"p99 {served[int(len(served) * 0.99)] * 1e3:.0f} ms, worst {served[-1] * 1e3:.0f} ms; "
              f"later than deadline+{LATE * 1e3:.0f} ms: {late}, worst overrun "
              f"{max(0.0, served[-1] - DEADLINE) * 1e3:.0f} ms")
        ok = ok and late == 0
    print("target met" if ok else "target NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
