"""POST /v1/chat/completions: admission → routing → execution → the answer (JSON or SSE).

A raw ASGI endpoint: it reads the body once, forwards bytes where it can, and watches for the client
going away so that an abandoned request cancels its upstream call.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
import uuid
from typing import Any

import orjson

from gateway.admission.cache import cache_key
from gateway.api.replay import StreamAssembler, chunks_from_completion
from gateway.admission.keys import authenticate, check_model
from gateway.api import sse
from gateway.api.feedback import conversation_key
from gateway.api.headers import decision_headers, degraded_reason, header_value
from gateway.api.validate import parse_json, validate_chat
from gateway.errors import ApiError, error_body
from gateway.execution.degrade import canned_chunks, canned_completion
from gateway.observability import metrics
from gateway.observability.cost import cost_of
from gateway.providers.base import estimated_usage
from gateway.routing.request import ChatRequest
from gateway.routing.router import BadShareHeader, NoRoute, UnknownModel
from gateway.routing.signals import estimate_tokens

log = logging.getLogger("gateway.chat")

_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_ID_PREFIX = uuid.uuid4().hex[:16]
_ids = itertools.count(1)


def _new_request_id() -> str:
    """Unique across processes (random prefix per process) and cheap (a counter)."""
    return f"{_ID_PREFIX}{next(_ids):016x}"


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


class ChatCompletions:
    def __init__(self, runtime) -> None:
        self.rt = runtime

    async def __call__(self, scope, receive, send) -> None:
        if scope["method"] != "POST":
            await _send_error(send, ApiError(405, f"Method {scope['method']} is not allowed on this path; use POST.",
                                             code="method_not_allowed", headers={"allow": "POST"}), [])
            return
        rt = self.rt
        started = time.perf_counter()
        arrived = time.monotonic()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given_id = headers.get("x-request-id")
        request_id = given_id if given_id and _REQUEST_ID.match(given_id) else _new_request_id()
        policy = rt.policies.current  # this request keeps this version to the end, whatever reloads happen
        state: dict[str, Any] = {"status": 0, "decision": None, "outcome": None, "degraded": None, "cache": None}
        try:
            key = authenticate(policy, headers)  # before reading the body: no work for unknown callers
            raw = await read_body(receive, rt.settings.max_body_bytes, headers.get("content-length"))
            body = parse_json(raw)
            model, messages, stream = validate_chat(body)
            check_model(key, model)
            request = ChatRequest(body, raw, model, stream, messages, headers, key.name if key else None,
                                  key.group if key else None, request_id)
            # Per-key limits before routing, whose work (personal-data scan, classifier) grows with the prompt.
            state["prompt_estimate"] = prompt_tokens = estimate_tokens(messages)
            estimate = prompt_tokens + int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
            counted = await rt.limiter.admit(policy, key, None, estimate)
            try:
                decision, plan, signals = await rt.router.decide(policy, request)
            except UnknownModel:
                raise ApiError(404, f"The model '{model}' does not exist. Use 'auto' or one of: "
                                    f"{', '.join(policy.model_names())}.", param="model",
                               code="model_not_found") from None
            except NoRoute:
                raise ApiError(400, f"No route of the policy matches this request for model '{model}'.",
                               param="model", code="no_route") from None
            except BadShareHeader as exc:
                raise ApiError(400, f"The x-gateway-cloud-share header must be a number between 0 and 1, got "
                                    f"{exc.args[0]!r}.", param="x-gateway-cloud-share", code="invalid_value") from None
            state["decision"], state["reference"], state["key"] = decision, plan.reference, request.key_name
            if policy.log_prompts:
                state["prompt"] = messages
            if policy.feedback.enabled:  # for outcomes: what was asked, and which conversation (regenerations)
                state["asked_model"], state["conversation"] = model, conversation_key(messages)
                if policy.feedback.store_prompts:
                    state["feedback_prompt"] = signals.classifier_text(policy.classifier.input,
                                                                       policy.classifier.max_chars)
                if rt.shadow.sample(policy, decision):  # compared with the other tier after the answer
                    state["shadow"] = request
            if decision.score is not None:
                metrics.CLASSIFIER_SCORE.observe(decision.score)
            counted += await rt.limiter.admit(policy, None, plan.targets[0].name if plan.targets else None, estimate)
            if plan.cache is not None:
                ckey = cache_key(body, tuple(t.name for t in plan.targets), policy.content_hash, request.key_name)
                cached = await rt.store.cache_get(ckey)
                metrics.CACHE.labels("hit" if cached else "miss").inc()
                state["cache"] = "hit" if cached else "miss"
                if cached is not None:
                    extra = decision_headers(request_id, policy.version, decision) + [(b"x-gateway-cache", b"hit")]
                    state["status"] = 200
                    await _answer_cached(send, request, cached, extra)
                    return
            else:
                ckey = None
            sent = _Sent(send)
            send = sent.send
            watcher = _watch_disconnect(receive, sent)  # from here on a client that goes away cancels the work
            try:
                outcome = await rt.executor.run(request, plan, policy.breaker, arrived)
                state["outcome"] = outcome
                await self._respond(send, request, policy, decision, plan, outcome, state, counted, estimate, ckey)
            finally:
                watcher.cancel()
        except ApiError as exc:
            state["status"] = exc.status
            await _send_error(send, exc, decision_headers(request_id, policy.version, state["decision"]))
        except asyncio.CancelledError as exc:
            state["status"] = 499  # the client went away; the upstream call was cancelled with us
            if exc.args[:1] != (_DISCONNECTED,):
                raise  # a shutdown, not our disconnect watcher: let it through
            asyncio.current_task().uncancel()  # type: ignore[union-attr]  # always inside a task
        except Exception:  # a bug of ours: still answer in OpenAI's shape when nothing was sent yet
            log.exception("unhandled error in the chat endpoint")
            if state["status"]:
                raise
            state["status"] = 500
            await _send_error(send, ApiError(500, "The gateway failed to handle this request.",
                                             code="internal_error"), [(b"x-request-id", request_id.encode())])
        finally:
            rt.finish_request(request_id, policy, state, time.perf_counter() - started)

    async def _respond(self, send, request, policy, decision, plan, outcome, state, counted, estimate,
                       ckey) -> None:
        rt = self.rt
        if outcome.client_error is not None:
            error = outcome.client_error
            state["status"] = error.status or 400
            body = error.body if isinstance(error.body, dict) and isinstance(error.body.get("error"), dict) else None
            payload = orjson.dumps(body) if body else error_body(error.message, "invalid_request_error", None, error.kind)
            await send({"type": "http.response.start", "status": state["status"],
                        "headers": _JSON_HEADERS + decision_headers(request.request_id, policy.version, decision, outcome)})
            await send({"type": "http.response.body", "body": payload})
            return
        if outcome.failed is not None:
            await self._degrade(send, request, policy, decision, plan, outcome, state)
            return
        extra = decision_headers(request.request_id, policy.version, decision, outcome)
        if state["cache"] == "miss":
            extra.append((b"x-gateway-cache", b"miss"))
        model = outcome.model
        if outcome.completion is not None:
            completion = outcome.completion
            cost = state["cost"] = cost_of(model, completion.usage)
            extra.append((b"x-gateway-cost", f"{cost:.8f}".encode()))
            state["status"] = 200
            await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS + extra})
            await send({"type": "http.response.body", "body": completion.body})
            state["usage"] = completion.usage
            if policy.log_prompts:
                state["answer"] = completion.body.decode("utf-8", "replace")
            if ckey is not None:
                await rt.store.cache_set(ckey, completion.body, plan.cache.ttl)
        else:
            state["status"] = 200
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS + extra})
            assembler = StreamAssembler() if ckey is not None or state.get("shadow") else None
            await self._pump(send, outcome, assembler, state)
            stream = outcome.stream
            state["usage"] = stream.usage or estimated_usage(state.get("prompt_estimate", 0),
                                                             getattr(stream, "text_chars", 0))
            if assembler is not None and state.get("stream_ok"):
                completion = state["answer_body"] = assembler.completion()
                if completion is not None and ckey is not None:
                    await rt.store.cache_set(ckey, completion, plan.cache.ttl)
        usage = state.get("usage")
        if usage is not None:
            await rt.limiter.correct(counted, estimate, usage.total_tokens)

    async def _pump(self, send, outcome, assembler, state) -> None:
        """Send the stream's chunks; a failure after the first chunk ends it with an error event and [DONE]."""
        stream = outcome.stream
        framed = getattr(stream, "framed", False)  # native streams hand over whole SSE blocks to forward
        try:
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + (outcome.deadline - time.monotonic())):
                held = outcome.held  # the opening the executor validated and held back
                if assembler is not None:
                    for piece in held:
                        assembler.add_events(piece) if framed else assembler.add(piece)
                await send({"type": "http.response.body", "more_body": True,
                            "body": b"".join(held) if framed else b"".join(sse.event(p) for p in held)})
                while not outcome.stream_ended:
                    try:
                        payload = await stream.__anext__()
                    except StopAsyncIteration:
                        break
                    if assembler is not None:
                        assembler.add_events(payload) if framed else assembler.add(payload)
                    await send({"type": "http.response.body", "body": payload if framed else sse.event(payload),
                                "more_body": True})
            state["stream_ok"] = True
            await send({"type": "http.response.body", "body": sse.DONE})
        except TimeoutError:
            state["stream_error"] = "deadline"
            await send({"type": "http.response.body", "body": sse.error_event(
                "The request deadline passed while streaming.", "timeout_error", "deadline_exceeded") + sse.DONE})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any upstream failure mid-stream becomes an explicit event
            kind = getattr(exc, "kind", "stream_error")
            state["stream_error"] = kind
            if not hasattr(exc, "kind"):
                log.exception("stream failed")
            else:  # the upstream's words (hosts, addresses) go to the log; the client gets the kind
                log.warning("stream failed after it started: %s", getattr(exc, "message", exc))
            await send({"type": "http.response.body", "body": sse.error_event(
                f"The upstream stream failed after it started ({degraded_reason(kind)}).", "api_error",
                kind) + sse.DONE})
        finally:
            await stream.aclose()
            outcome.release()

    async def _degrade(self, send, request, policy, decision, plan, outcome, state) -> None:
        rt = self.rt
        error = outcome.failed
        reason = f"{error.kind}: {error.message}"[:180]
        state["degraded"] = reason  # the full reason is for the log and the hand-off; clients see the kind
        log.warning("every target of route %s failed (request %s): %s", plan.route, request.request_id, reason)
        metrics.DEGRADED.labels(plan.route, error.kind).inc()
        rt.handoff.send(plan.degrade, {"request_id": request.request_id, "route": plan.route, "reason": reason,
                                       "messages": request.messages, "key": request.key_name})
        extra = decision_headers(request.request_id, policy.version, decision, outcome, degraded=error.kind)
        retry_after = plan.degrade.retry_after
        if retry_after is not None:
            extra.append((b"retry-after", str(max(1, round(retry_after))).encode()))
        reply = plan.degrade.reply
        if outcome.auth_refused:
            # An operator error, not a busy upstream: no canned reply hides it (the metric
            # gateway_upstream_auth_refused_total counts each refusal for alerting).
            state["status"] = 502
            log.error("every target of route '%s' refused the gateway's credentials (%s)", plan.route, reason)
            await _send_error(send, ApiError(502, "Every target refused the gateway's credentials (401/403 "
                                                  "upstream); the gateway's operator must fix its provider keys.",
                                             code="upstream_auth_failed", type="api_error"),
                              decision_headers(request.request_id, policy.version, decision, outcome))
            return
        if plan.edge_only and error.kind == "overloaded":
            # Edge-only requests are never spilled: a saturated edge answers 429 with when to come back.
            state["status"] = 429
            wait = max(1, round(error.retry_after or retry_after or 1))
            await _send_error(send, ApiError(429, "The edge model is saturated and this request must stay on the "
                                                  f"edge; retry in {wait}s.", code="edge_saturated",
                                             headers={"retry-after": str(wait)}),
                              [h for h in extra if h[0] != b"retry-after"])
            return
        if reply is None:
            state["status"] = 503
            if retry_after is None:
                extra.append((b"retry-after", b"30"))
            await _send_error(send, ApiError(503, f"Every target of route '{plan.route}' failed "
                                                  f"({degraded_reason(error.kind)}).",
                                             code="upstreams_unavailable"), extra)
            return
        state["status"] = 200
        if request.stream:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS + extra})
            frames = b"".join(sse.event(c) for c in canned_chunks(reply, "gateway-degraded", request.include_usage))
            await send({"type": "http.response.body", "body": frames + sse.DONE})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS + extra})
            await send({"type": "http.response.body", "body": canned_completion(reply, "gateway-degraded")})


async def _answer_cached(send, request: ChatRequest, cached: bytes, extra) -> None:
    if request.stream:
        frames = b"".join(sse.event(c) for c in chunks_from_completion(cached, request.include_usage))
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS + extra})
        await send({"type": "http.response.body", "body": frames + sse.DONE})
    else:
        await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS + extra})
        await send({"type": "http.response.body", "body": cached})


async def _send_error(send, exc: ApiError, extra) -> None:
    headers = _JSON_HEADERS + list(extra) + [(k.encode(), header_value(v)) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": exc.body()})


_DISCONNECTED = "gateway-client-disconnected"


class _Sent:
    """Wraps `send` to know when the answer is complete: uvicorn reports `http.disconnect` to a pending
    `receive()` once the response is done, which is not a client going away."""

    __slots__ = ("_send", "complete")

    def __init__(self, send) -> None:
        self._send = send
        self.complete = False

    async def send(self, message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
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
