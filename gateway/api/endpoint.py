"""The HTTP endpoint every dialect shares: read, parse, run the pipeline, write the result in the dialect.

A raw ASGI endpoint: it authenticates before reading the body (no work for unknown callers), reads the body
once, and watches for the client going away so that an abandoned request cancels its upstream call.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
import uuid

from gateway.admission.keys import authenticate
from gateway.api.dialect import JSON_TYPE, SSE_TYPE, Dialect, replay
from gateway.api.validate import parse_json
from gateway.errors import ApiError
from gateway.execution.replay import canned_completion
from gateway.execution.stream import relay
from gateway.pipeline.headers import decision_headers, header_value
from gateway.pipeline.record import Record
from gateway.pipeline.result import Canned, Failure, Reply, Streamed
from gateway.request import OPENAI, Request

log = logging.getLogger("gateway.api")

_JSON_HEADERS = [(b"content-type", JSON_TYPE)]
_SSE_HEADERS = [(b"content-type", SSE_TYPE), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_ID_PREFIX = uuid.uuid4().hex[:16]
_ids = itertools.count(1)


def new_request_id() -> str:
    """Unique across processes (random prefix per process) and cheap (a counter)."""
    return f"{_ID_PREFIX}{next(_ids):016x}"


def request_id_of(headers: dict) -> str:
    given = headers.get("x-request-id")
    return given if given and REQUEST_ID.match(given) else new_request_id()


async def read_body(receive, limit: int, declared: str | None) -> bytes:
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number.", code="invalid_request") from None
        if size > limit:
            raise ApiError(413, f"The request body is {size} bytes; the limit is {limit}.", code="request_too_large")
    parts, total = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise asyncio.CancelledError()
        chunk = message.get("body", b"")
        if chunk:
            total += len(chunk)
            if total > limit:
                raise ApiError(413, f"The request body is over the limit of {limit} bytes.", code="request_too_large")
            parts.append(chunk)
        if not message.get("more_body"):
            return parts[0] if len(parts) == 1 else b"".join(parts)


class Endpoint:
    """POST /v1/chat/completions, /v1/messages, /v1/responses: one class, the dialect tells them apart."""

    def __init__(self, runtime, dialect: Dialect) -> None:
        self.rt = runtime
        self.dialect = dialect

    async def __call__(self, scope, receive, send) -> None:
        dialect = self.dialect
        if scope["method"] != "POST":
            await self._error(send, ApiError(405, f"Method {scope['method']} is not allowed on this path; use POST.",
                                             code="method_not_allowed", headers={"allow": "POST"}), [])
            return
        rt = self.rt
        started = time.perf_counter()
        arrived = time.monotonic()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = request_id_of(headers)
        policy = rt.policies.current  # this request keeps this version to the end, whatever reloads happen
        record = Record(request_id, policy, dialect.name)
        sent = _Sent(send)
        try:
            key = authenticate(policy, headers)  # before reading the body: no work for unknown callers
            raw = await read_body(receive, rt.settings.max_body_bytes, headers.get("content-length"))
            parsed = await dialect.parse(parse_json(raw), headers, rt.store, policy)
            request = Request(parsed.chat, raw, parsed.model, parsed.stream, parsed.messages, headers,
                              key.name if key else None, key.group if key else None, request_id, dialect.name,
                              parsed.original, parsed.native_only)
            watcher = _watch_disconnect(receive, sent)  # from here on a client that goes away cancels the work
            try:
                result = await rt.pipeline.run(request, key, record, arrived)
                await self._write(sent.send, request, parsed, result, record)
            finally:
                watcher.cancel()
        except ApiError as exc:
            record.status = exc.status
            await self._error(sent.send, exc, decision_headers(request_id, policy.version, record.decision))
        except asyncio.CancelledError as exc:
            record.status = 499  # the client went away; the upstream call was cancelled with us
            if exc.args[:1] != (_DISCONNECTED,):
                raise  # a shutdown, not our disconnect watcher: let it through
            asyncio.current_task().uncancel()  # type: ignore[union-attr]  # always inside a task
        except Exception:  # a bug of ours: still answer in the dialect's shape when nothing was sent yet
            log.exception("unhandled error on the %s endpoint", dialect.name)
            if sent.started:
                raise
            record.status = 500
            await self._error(sent.send, ApiError(500, "The gateway failed to handle this request.",
                                                  code="internal_error"), [(b"x-request-id", request_id.encode())])
        finally:
            rt.accounting.finish(record, time.perf_counter() - started)

    async def _write(self, send, request: Request, parsed, result, record: Record) -> None:
        dialect = self.dialect
        if isinstance(result, Streamed):
            stream = result.outcome.stream
            encoder = dialect.encoder(parsed, getattr(stream, "framed", False), getattr(stream, "dialect", OPENAI))
            record.status = 200
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS + result.headers})

            async def out(data: bytes) -> None:
                await send({"type": "http.response.body", "body": data, "more_body": True})

            end = await relay(result.outcome, encoder.piece, out, result.assemble, record.prompt_estimate)
            last = await encoder.end() if end.error is None else encoder.failed(end.error)
            await send({"type": "http.response.body", "body": last})
            await self.rt.pipeline.settle(record, end)
            return
        if isinstance(result, Failure):
            record.status = result.status
            await send({"type": "http.response.start", "status": result.status,
                        "headers": _JSON_HEADERS + result.headers})
            await send({"type": "http.response.body", "body": dialect.error(result.status, {"error": result.error})})
            return
        if isinstance(result, Canned):
            body, answer_dialect, headers = canned_completion(result.text), OPENAI, result.headers
        else:
            body, answer_dialect, headers = result.body, result.dialect, result.headers
        if request.stream and answer_dialect == OPENAI:  # a cached answer or a canned reply, as a stream
            encoder = dialect.encoder(parsed, False, OPENAI)
            data = replay(encoder, body, request.include_usage) + await encoder.end()
            record.status = 200
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS + headers})
        else:
            data = await dialect.reply(body, answer_dialect, parsed)
            record.status = 200
            await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS + headers})
        await send({"type": "http.response.body", "body": data})
        if isinstance(result, Reply):
            await self.rt.pipeline.settle(record)

    async def _error(self, send, exc: ApiError, extra) -> None:
        headers = _JSON_HEADERS + list(extra) + [(k.encode(), header_value(v)) for k, v in exc.headers.items()]
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.dialect.error(exc.status, {"error": exc.payload()})})


_DISCONNECTED = "gateway-client-disconnected"


class _Sent:
    """Wraps `send` to know whether the answer started and when it is complete: uvicorn reports
    `http.disconnect` to a pending `receive()` once the response is done, which is not a client going away."""

    __slots__ = ("_send", "started", "complete")

    def __init__(self, send) -> None:
        self._send = send
        self.started = False
        self.complete = False

    async def send(self, message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            self.complete = True
        await self._send(message)


def _watch_disconnect(receive, sent: _Sent) -> asyncio.Task:
    """A task that cancels the current one (and with it the upstream call) if the client disconnects
    before the answer is complete. The caller cancels the watcher when the request is done."""
    task = asyncio.current_task()
    assert task is not None

    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not sent.complete:
                    task.cancel(_DISCONNECTED)
                return

    return asyncio.get_running_loop().create_task(watch())
