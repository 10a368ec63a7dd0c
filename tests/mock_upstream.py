"""A mock OpenAI-compatible upstream whose faults are scripted per request, for the test suites.

Run: python tests/mock_upstream.py --port 18001
Control (JSON over HTTP):
  POST /_script   {"model": "m" | "*", "actions": [action, ...], "default": action | null}
                  each request to /v1/chat/completions for that model takes the next action (then the default)
  GET  /_requests the requests received so far: [{"model", "body", "headers", "t"}]
  POST /_reset    forget scripts and requests
An action ({"mix": [[weight, action], ...]} draws one per request): {"status": 200|4xx|5xx, "message": str, "code": str, "headers": {...}, "delay": s, "hang": bool,
            "reset": bool, "malformed": bool, "content": str, "chunks": n, "chunk_delay": s,
            "first_token_delay": s, "cut_after": k, "error_after": k,
            "raw": str, "content_type": str   (the whole 200 body as given: HTML, empty, plain text, bad SSE),
            "first_event": str                (a stream's first `data:` payload as given, then the chunks),
            "role_chunk": bool                (a stream opens with a role-only chunk; cut_after 0 then cuts it),
            "no_usage": bool                  (a stream never sends usage, whatever was asked),
            "huge": n                         (a body, or a stream's first event, of n bytes, sent in 64 KiB
                                               pieces; the record's "sent" says how far it got),
            "tool_call": {"name": str, "arguments": str}  (answer with that tool call instead of text),
            "content_if": [[regex, content], ...]  (the content of the first regex found in the last user
                                                   message, else "content")}
Anthropic Messages: POST /v1/messages takes the same scripted actions per model (status with Anthropic's
error JSON, e.g. 529 overloaded_error; headers, delay, hang, reset, malformed, raw, content, chunks,
chunk_delay, cut_after k (after k text deltas), error_after k (an `event: error` after k text deltas), huge)
and answers a message, or its stream in Anthropic's event order (message_start, content_block_start, ping,
content_block_delta..., content_block_stop, message_delta with usage, message_stop), plus:
            "error_type": str                 (the Anthropic error type of a status or error event),
            "thinking": {"thinking": str, "signature": str}  (a thinking block before the text),
            "split": n                        (the stream, or "raw", written in pieces of n bytes with a pause
                                               between them, cutting through events),
            "cache_read": n                   (usage.cache_read_input_tokens)
The record of each request also holds "path" and "raw" (the body as received, as text).
Embeddings: POST /v1/embeddings takes the same scripted actions per model (status, delay, hang, headers) and
answers deterministic vectors (8 floats derived from each input's text).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import time
import uuid

from aiohttp import web

scripts: dict[str, list] = {}
defaults: dict[str, dict] = {}
received: list[dict] = []
hooks: list[dict] = []
reported_load = {"processing": 0, "deferred": 0}


_random = random.Random(7)


def _next_action(model: str) -> dict:
    for key in (model, "*"):
        queue = scripts.get(key)
        if queue:
            return _pick(queue.pop(0))
    return _pick(defaults.get(model) or defaults.get("*") or {})


def _pick(action: dict) -> dict:
    """{"mix": [[weight, action], ...]} draws one action at random (seeded) for each request."""
    mix = action.get("mix")
    if not mix:
        return action
    total = sum(w for w, _ in mix)
    x = _random.uniform(0, total)
    for weight, chosen in mix:
        x -= weight
        if x <= 0:
            return chosen
    return mix[-1][1]


def _chosen_content(action: dict, body: dict) -> str | None:
    for pattern, content in action.get("content_if") or []:
        if re.search(pattern, _last_user(body), re.DOTALL):
            return content
    return action.get("content")


def _last_user(body: dict) -> str:
    for m in reversed(body.get("messages") or []):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else json.dumps(c)
    return ""


async def chat(request: web.Request) -> web.StreamResponse:
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError:
        return web.json_response({"error": {"message": "bad json", "type": "invalid_request_error"}}, status=400)
    model = body.get("model", "")
    record = {"model": model, "body": body, "headers": dict(request.headers), "t": time.time(), "aborted": False}
    received.append(record)
    action = _next_action(model)
    if action.get("delay"):
        await asyncio.sleep(action["delay"])
        if request.transport is None or request.transport.is_closing():
            record["aborted"] = True  # the gateway gave up on this call and closed the connection
    if action.get("hang"):
        for _ in range(36000):
            await asyncio.sleep(0.1)
            if request.transport is None or request.transport.is_closing():
                record["aborted"] = True
                break
        return web.Response()
    if action.get("reset"):
        request.transport.abort()
        await asyncio.sleep(0.05)
        return web.Response()
    status = action.get("status", 200)
    headers = action.get("headers") or {}
    if status != 200:
        error = {"error": {"message": action.get("message", f"mock error {status}"), "type": "mock_error",
                           "param": None, "code": action.get("code")}}
        return web.json_response(error, status=status, headers=headers)
    if action.get("malformed"):
        return web.Response(body=b'{"id": "x", "choices": [', content_type="application/json", headers=headers)
    if action.get("tool_call"):
        return await _tool_call_reply(request, body, action["tool_call"], headers)
    if "raw" in action:
        return web.Response(body=action["raw"].encode(), headers={
            "Content-Type": action.get("content_type", "text/event-stream"), **headers})
    if action.get("huge"):
        return await _huge(request, record, int(action["huge"]), bool(body.get("stream")))
    content = _chosen_content(action, body) or f"mock answer to: {_last_user(body)[:60]}"
    prompt_tokens = max(1, len(_last_user(body)) // 4)
    if not body.get("stream"):
        return web.json_response({
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 7, "total_tokens": prompt_tokens + 7},
        }, headers=headers)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **headers})
    await response.prepare(request)
    n = action.get("chunks", 5)
    words = (content.split(" ") + [""] * n)[:n] if n else []
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}
    if action.get("first_token_delay"):
        await asyncio.sleep(action["first_token_delay"])
    if "first_event" in action:
        await response.write(b"data: " + action["first_event"].encode() + b"\n\n")
    if action.get("role_chunk"):
        role = {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        await response.write(b"data: " + json.dumps(role).encode() + b"\n\n")
        await asyncio.sleep(0.02)  # a separate read on the other side
    for i, word in enumerate(words):
        if action.get("cut_after") is not None and i >= action["cut_after"]:
            request.transport.abort()
            return response
        if action.get("error_after") is not None and i >= action["error_after"]:
            await response.write(b'data: {"error": {"message": "mock mid-stream failure", "code": 500}}\n\n')
            await response.write_eof()
            return response
        real = content.split(" ")
        delta = {"content": word + (" " if i < len(real) - 1 else "")}
        if i == 0 and not action.get("role_chunk"):
            delta["role"] = "assistant"
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        try:
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        except (ConnectionError, RuntimeError):
            record["aborted"] = True
            return response
        if request.transport is None or request.transport.is_closing():
            record["aborted"] = True
            return response
        if action.get("chunk_delay"):
            await asyncio.sleep(action["chunk_delay"])
    final = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    await response.write(b"data: " + json.dumps(final).encode() + b"\n\n")
    if (body.get("stream_options") or {}).get("include_usage") and not action.get("no_usage"):
        usage = {**base, "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n,
                                                  "total_tokens": prompt_tokens + n}}
        await response.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def _tool_call_reply(request: web.Request, body: dict, call: dict, headers: dict) -> web.StreamResponse:
    """An assistant turn that calls one tool (JSON, or a stream whose arguments arrive in three pieces)."""
    model, call_id = body.get("model", ""), f"call_{uuid.uuid4().hex[:12]}"
    name, arguments = call.get("name", "tool"), call.get("arguments", "{}")
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "created": int(time.time()), "model": model}
    usage = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
    if not body.get("stream"):
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]}
        return web.json_response({**base, "object": "chat.completion", "usage": usage, "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls"}]}, headers=headers)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **headers})
    await response.prepare(request)
    third = max(1, len(arguments) // 3)
    pieces = [arguments[:third], arguments[third:2 * third], arguments[2 * third:]]
    deltas = [{"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]}]
    deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in pieces if p]
    for delta in deltas:
        chunk = {**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta,
                                                                         "finish_reason": None}]}
        await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    final = {**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {},
                                                                      "finish_reason": "tool_calls"}]}
    await response.write(b"data: " + json.dumps(final).encode() + b"\n\n")
    if (body.get("stream_options") or {}).get("include_usage"):
        tail = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
        await response.write(b"data: " + json.dumps(tail).encode() + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


_ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                          404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                          529: "overloaded_error"}


def _anthropic_error(status: int, action: dict) -> dict:
    kind = action.get("error_type") or _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": action.get("message", f"mock error {status}")}}


def _last_user_anthropic(body: dict) -> str:
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            return " ".join(b.get("text", "") for b in c or [] if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _sse(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


async def messages(request: web.Request) -> web.StreamResponse:
    """Anthropic's Messages API (see the module's docstring)."""
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError:
        return web.json_response({"type": "error", "error": {"type": "invalid_request_error",
                                                             "message": "bad json"}}, status=400)
    model = body.get("model", "")
    record = {"model": model, "body": body, "headers": dict(request.headers), "t": time.time(), "aborted": False,
              "path": request.path, "raw": raw.decode("utf-8", "replace")}
    received.append(record)
    action = _next_action(model)
    if action.get("delay"):
        await asyncio.sleep(action["delay"])
        if request.transport is None or request.transport.is_closing():
            record["aborted"] = True
    if action.get("hang"):
        for _ in range(36000):
            await asyncio.sleep(0.1)
            if request.transport is None or request.transport.is_closing():
                record["aborted"] = True
                break
        return web.Response()
    if action.get("reset"):
        request.transport.abort()
        await asyncio.sleep(0.05)
        return web.Response()
    status = action.get("status", 200)
    headers = action.get("headers") or {}
    if status != 200:
        return web.json_response(_anthropic_error(status, action), status=status, headers=headers)
    if action.get("malformed"):
        return web.Response(body=b'{"id": "msg_x", "type": "message", "content": [', content_type="application/json",
                            headers=headers)
    if "raw" in action and not action.get("split"):
        return web.Response(body=action["raw"].encode(), headers={
            "Content-Type": action.get("content_type", "text/event-stream"), **headers})
    if action.get("huge"):
        return await _huge_anthropic(request, record, int(action["huge"]), bool(body.get("stream")))
    content = action.get("content") or f"mock answer to: {_last_user_anthropic(body)[:60]}"
    usage = {"input_tokens": max(1, len(_last_user_anthropic(body)) // 4), "output_tokens": 7,
             "cache_creation_input_tokens": 0, "cache_read_input_tokens": int(action.get("cache_read") or 0)}
    thinking = action.get("thinking")
    message = {"id": f"msg_{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant", "model": model,
               "content": [], "stop_reason": None, "stop_sequence": None}
    if not body.get("stream"):
        blocks = [{"type": "thinking", **thinking}] if thinking else []
        blocks.append({"type": "text", "text": content})
        return web.json_response({**message, "content": blocks, "stop_reason": "end_turn", "usage": usage},
                                 headers=headers)
    n = action.get("chunks", 5)
    words = (content.split(" ") + [""] * n)[:n] if n else []
    real = content.split(" ")
    events: list[tuple[str, bytes]] = [("open", _sse("message_start", {
        "type": "message_start", "message": {**message, "usage": {**usage, "output_tokens": 1}}}))]
    index = 0
    if thinking:
        events += [("open", _sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
                        "type": "thinking", "thinking": "", "signature": ""}})),
                   ("open", _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                       "type": "thinking_delta", "thinking": thinking.get("thinking", "")}})),
                   ("open", _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                       "type": "signature_delta", "signature": thinking.get("signature", "")}})),
                   ("open", _sse("content_block_stop", {"type": "content_block_stop", "index": 0}))]
        index = 1
    events += [("open", _sse("content_block_start", {"type": "content_block_start", "index": index,
                                                     "content_block": {"type": "text", "text": ""}})),
               ("open", _sse("ping", {"type": "ping"}))]
    for i, word in enumerate(words):
        text = word + (" " if i < len(real) - 1 else "")
        events.append(("delta", _sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                                             "delta": {"type": "text_delta", "text": text}})))
    events += [("close", _sse("content_block_stop", {"type": "content_block_stop", "index": index})),
               ("close", _sse("message_delta", {"type": "message_delta", "delta": {
                   "stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": n}})),
               ("close", _sse("message_stop", {"type": "message_stop"}))]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **headers})
    await response.prepare(request)
    if action.get("first_token_delay"):
        await asyncio.sleep(action["first_token_delay"])
    if action.get("split"):
        whole = action["raw"].encode() if "raw" in action else b"".join(e for _, e in events)
        size = int(action["split"])
        for start in range(0, len(whole), size):
            await response.write(whole[start:start + size])
            await asyncio.sleep(0.01)  # a separate read on the other side
        await response.write_eof()
        return response
    deltas = 0
    for kind, event in events:
        if kind == "delta":
            if action.get("cut_after") is not None and deltas >= action["cut_after"]:
                request.transport.abort()
                return response
            if action.get("error_after") is not None and deltas >= action["error_after"]:
                await response.write(_sse("error", _anthropic_error(529, action)))
                await response.write_eof()
                return response
            deltas += 1
        try:
            await response.write(event)
        except (ConnectionError, RuntimeError):
            record["aborted"] = True
            return response
        if request.transport is None or request.transport.is_closing():
            record["aborted"] = True
            return response
        if kind == "delta" and action.get("chunk_delay"):
            await asyncio.sleep(action["chunk_delay"])
    await response.write_eof()
    return response


async def _huge_anthropic(request: web.Request, record: dict, size: int, stream: bool) -> web.StreamResponse:
    """A message (or a stream whose first delta is) `size` bytes long, in 64 KiB pieces."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream" if stream else "application/json"})
    await response.prepare(request)
    piece = b"a" * 65536
    record["sent"] = 0
    try:
        if stream:
            await response.write(_sse("message_start", {"type": "message_start", "message": {
                "id": "msg_huge", "type": "message", "role": "assistant", "content": [],
                "usage": {"input_tokens": 1, "output_tokens": 1}}}))
            await response.write(b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
                                 b'"delta": {"type": "text_delta", "text": "')
        else:
            await response.write(b'{"type": "message", "role": "assistant", "content": [{"type": "text", "text": "')
        while record["sent"] < size:
            await response.write(piece)
            record["sent"] += len(piece)
        await response.write(b'"}}\n\n' if stream else b'"}], "usage": {"input_tokens": 1, "output_tokens": 1}}')
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        record["aborted"] = True
    return response


def _vector(text: str) -> list[float]:
    """A deterministic 8-dimensional vector for a text (the same text always gives the same vector)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round((b - 128) / 128, 6) for b in digest[:8]]


async def embeddings(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    model = body.get("model", "")
    record = {"model": model, "body": body, "headers": dict(request.headers), "t": time.time(), "aborted": False}
    received.append(record)
    action = _next_action(model)
    if action.get("delay"):
        await asyncio.sleep(action["delay"])
    if action.get("hang"):
        await asyncio.sleep(3600)
    status = action.get("status", 200)
    if status != 200:
        return web.json_response({"error": {"message": action.get("message", f"mock error {status}"),
                                            "type": "mock_error", "param": None, "code": action.get("code")}},
                                 status=status, headers=action.get("headers") or {})
    texts = body["input"] if isinstance(body.get("input"), list) else [body.get("input")]
    texts = [t if isinstance(t, str) else json.dumps(t) for t in texts]
    tokens = sum(max(1, len(t) // 4) for t in texts)
    return web.json_response({"object": "list", "model": model, "data": [
        {"object": "embedding", "index": i, "embedding": _vector(t)} for i, t in enumerate(texts)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


async def _huge(request: web.Request, record: dict, size: int, stream: bool) -> web.StreamResponse:
    """A body (or a stream's first event) of `size` bytes with no end of line, in 64 KiB pieces, for as
    long as the other side reads."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream" if stream else "application/json"})
    await response.prepare(request)
    head = b'data: {"choices": [{"index": 0, "delta": {"content": "' if stream else \
        b'{"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "'
    piece = b"a" * 65536
    record["sent"] = 0
    try:
        await response.write(head)
        while record["sent"] < size:
            await response.write(piece)
            record["sent"] += len(piece)
        await response.write(b'"}}]}\n\n' if stream else b'"}, "finish_reason": "stop"}]}')
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        record["aborted"] = True
    return response


async def hook(request: web.Request) -> web.Response:
    hooks.append(await request.json())
    return web.json_response({"ok": True})


async def hooks_(request: web.Request) -> web.Response:
    return web.json_response(hooks)


async def metrics(request: web.Request) -> web.Response:
    """llama.cpp server's /metrics, with the load a test sets through /_load."""
    text = (f"# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing {reported_load['processing']}\n"
            f"# TYPE llamacpp:requests_deferred gauge\nllamacpp:requests_deferred {reported_load['deferred']}\n")
    return web.Response(text=text)


async def set_load(request: web.Request) -> web.Response:
    reported_load.update(await request.json())
    return web.json_response(reported_load)


async def script(request: web.Request) -> web.Response:
    spec = await request.json()
    model = spec.get("model", "*")
    scripts.setdefault(model, []).extend(spec.get("actions") or [])
    if "default" in spec:
        if spec["default"] is None:
            defaults.pop(model, None)
        else:
            defaults[model] = spec["default"]
    return web.json_response({"ok": True})


async def requests_(request: web.Request) -> web.Response:
    return web.json_response(received)


async def reset(request: web.Request) -> web.Response:
    scripts.clear()
    defaults.clear()
    received.clear()
    hooks.clear()
    reported_load.update(processing=0, deferred=0)
    return web.json_response({"ok": True})


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "mock", "object": "model"}]})


def make_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/messages", messages)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/_script", script)
    app.router.add_get("/_requests", requests_)
    app.router.add_post("/_reset", reset)
    app.router.add_post("/_hook", hook)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/_load", set_load)
    app.router.add_get("/_hooks", hooks_)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(make_app(), host="127.0.0.1", port=args.port, print=None, access_log=None)
