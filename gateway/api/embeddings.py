"""POST /v1/embeddings: key check, rate limits, the policy's embedding model (and its fallbacks) with
retries, the upstream's answer passed through, decision headers as on chat.

Embedding models are declared with `kind: embedding`; `model: "auto"` takes the first one the policy
declares. When the policy routes on personal data (`pii` in a rule), input holding personal data goes to
edge embedding models only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from gateway.admission.keys import authenticate, check_model
from gateway.api.endpoint import read_body, request_id_of
from gateway.api.validate import parse_json
from gateway.errors import ApiError
from gateway.execution.executor import Outcome
from gateway.pipeline.headers import decision_headers
from gateway.pipeline.record import Record
from gateway.policy.schema import DegradeSpec, Deployment, ModelSpec, Policy
from gateway.providers.base import Completion, Deadlines
from gateway.providers.embeddings import embed
from gateway.providers.errors import degraded_reason
from gateway.request import Request
from gateway.routing.plan import Decision, Plan
from gateway.routing.signals import OFF_LOOP_BYTES

log = logging.getLogger("gateway.embeddings")
_JSON = [(b"content-type", b"application/json")]


def _bad(message: str, param: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def validate(body: dict) -> tuple[str, list[str]]:
    """(model, the input's texts for the estimates) or ApiError(400) naming the field."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required (an embedding model of the policy, or \"auto\").", "model",
                   "missing_required_parameter")
    value: Any = body.get("input")
    if value is None:
        raise _bad("'input' is required: a string, an array of strings, or token arrays.", "input",
                   "missing_required_parameter")
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        texts = list(value)
    elif isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        texts = [" " * (4 * len(value))]  # one token array: only its length matters for the estimate
    elif isinstance(value, list) and value and all(
            isinstance(v, list) and v and all(isinstance(t, int) and not isinstance(t, bool) for t in v)
            for v in value):
        texts = [" " * (4 * len(v)) for v in value]
    else:
        raise _bad("'input' must be a non-empty string, array of strings, array of token ids or array of "
                   "token arrays.", "input", "invalid_type")
    if any(t == "" for t in texts):
        raise _bad("'input' must not contain empty strings.", "input")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise _bad("'encoding_format' must be float or base64.", "encoding_format")
    dims = body.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
        raise _bad("'dimensions' must be a positive integer.", "dimensions")
    try:
        orjson.dumps(body)
    except orjson.JSONEncodeError as exc:  # nesting deeper than the encoder allows (the parser allows more)
        raise ApiError(400, f"The request cannot be forwarded: {exc}", code="invalid_json") from None
    return model, texts


def targets(policy: Policy, model: str) -> list[ModelSpec]:
    """The embedding models to try in order, or ApiError (404 unknown, 400 not an embedding model)."""
    if model == "auto":
        first = next((m for m in policy.models.values() if m.kind == "embedding"), None)
        if first is None:
            raise ApiError(404, "The policy declares no embedding model (a model with `kind: embedding`).",
                           param="model", code="model_not_found")
        chain = [first.name, *first.fallbacks]
    elif model in policy.models:
        spec = policy.models[model]
        if spec.kind != "embedding":
            raise _bad(f"The model '{model}' is a chat model; embeddings need a model declared with "
                       f"`kind: embedding`.", "model", "model_not_embedding")
        chain = [model, *spec.fallbacks]
    else:
        names = [m.name for m in policy.models.values() if m.kind == "embedding"]
        raise ApiError(404, f"The embedding model '{model}' does not exist. Use 'auto' or one of: "
                            f"{', '.join(names) or '(none declared)'}.", param="model", code="model_not_found")
    seen: list[ModelSpec] = []
    for name in chain:
        spec = policy.models[name]
        if spec not in seen:
            seen.append(spec)
    return seen


class Embeddings:
    def __init__(self, runtime) -> None:
        self.rt = runtime

    async def __call__(self, scope, receive, send) -> None:
        rt = self.rt
        if scope["method"] != "POST":
            await _send_error(send, ApiError(405, "Use POST.", code="method_not_allowed", headers={"allow": "POST"}),
                              [])
            return
        started = time.perf_counter()
        arrived = time.monotonic()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = request_id_of(headers)
        policy = rt.policies.current
        record = Record(request_id, policy, "embeddings")
        try:
            key = authenticate(policy, headers)  # before reading the body: no work for unknown callers
            body = parse_json(await read_body(receive, rt.settings.max_body_bytes, headers.get("content-length")))
            model, texts = validate(body)
            check_model(key, model)
            chain = targets(policy, model)
            if policy.uses_pii and await _has_personal_data(rt.router.pii_detector, texts):
                chain = [m for m in chain if m.tier == "edge"]
                if not chain:
                    raise ApiError(400, "The input holds personal data and this policy keeps it on the edge tier, "
                                        "but the embedding model chain has no edge model.", param="input",
                                   code="pii_edge_only")
            available = [m for m in chain if m.available]
            decision = Decision(route="embeddings", tier=(available or chain)[0].tier, score=None, threshold=None,
                                complexity=None, reasons=("embedding request",), policy_version=policy.version,
                                skipped=tuple((m.name, m.unavailable_reason) for m in chain if not m.available))
            record.decision, record.key = decision, key.name if key else None
            estimate = sum(len(t) for t in texts) // 4 + 1
            counted = await rt.limiter.admit(policy, key, available[0].name if available else None, estimate)
            outcome = await self._run(available, body, policy, key, headers, request_id, arrived)
            record.outcome = outcome
            extra = decision_headers(request_id, policy.version, decision, outcome)
            if outcome.completion is None:
                error = outcome.client_error
                if error is not None:
                    status = error.status or 400
                    payload = orjson.dumps(error.body) if isinstance(error.body, dict) and isinstance(
                        error.body.get("error"), dict) else ApiError(status, error.message, code=error.kind).body()
                    record.status = status
                    await send({"type": "http.response.start", "status": status, "headers": _JSON + extra})
                    await send({"type": "http.response.body", "body": payload})
                    return
                failed = outcome.failed
                if failed is not None:  # the upstream's own words go to the log; the client gets the kind
                    log.warning("every embedding target failed: %s: %s", failed.kind, failed.message[:180])
                reason = degraded_reason(failed.kind) if failed else "no embedding model is available"
                raise ApiError(503, f"Every embedding target failed ({reason}).", code="upstreams_unavailable",
                               headers={"retry-after": "30"})
            record.usage = outcome.completion.usage
            record.status = 200
            await send({"type": "http.response.start", "status": 200, "headers": _JSON + extra})
            await send({"type": "http.response.body", "body": outcome.completion.body})
            await rt.limiter.correct(counted, estimate, record.usage.total_tokens if record.usage else estimate)
        except ApiError as exc:
            record.status = exc.status
            await _send_error(send, exc, decision_headers(request_id, policy.version, record.decision,
                                                          record.outcome))
        except Exception:
            log.exception("unhandled error in the embeddings endpoint")
            if record.status:
                raise
            record.status = 500
            await _send_error(send, ApiError(500, "The gateway failed to handle this request.",
                                             code="internal_error"), [(b"x-request-id", request_id.encode())])
        finally:
            rt.accounting.finish(record, time.perf_counter() - started)

    async def _run(self, chain: list[ModelSpec], body: dict, policy: Policy, key, headers: dict, request_id: str,
                   arrived: float) -> Outcome:
        """The chain through the executor, as chat's plans are run: retries, breakers, the total deadline."""
        rt = self.rt
        plan = Plan(targets=tuple(chain), skipped=(), edge_only=all(m.tier == "edge" for m in chain),
                    retry=policy.retry, degrade=DegradeSpec(reply=None), deadline=policy.deadline, cache=None,
                    route="embeddings")
        request = Request(body, b"", str(body.get("model")), False, [], headers, key.name if key else None,
                          key.group if key else None, request_id, dialect="embeddings")
        session, cap = rt.providers.session(), rt.settings.max_upstream_body_bytes

        async def invoke(model: ModelSpec, deployment: Deployment, deadlines: Deadlines) -> Completion:
            return await embed(session, model, deployment, body, deadlines, cap)

        return await rt.executor.run(request, plan, policy.breaker, arrived, invoke)


async def _has_personal_data(detector, texts: list[str]) -> bool:
    """Large inputs are scanned in a worker thread, as chat requests are, so the event loop keeps its turns."""
    def scan() -> bool:
        return any(detector.detect(t) for t in texts)

    return await asyncio.to_thread(scan) if sum(len(t) for t in texts) > OFF_LOOP_BYTES else scan()


async def _send_error(send, exc: ApiError, extra) -> None:
    headers = _JSON + list(extra) + [(k.encode(), str(v).encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": exc.body()})
