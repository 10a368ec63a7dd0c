"""Outcomes of answers: POST /v1/feedback (explicit) and regenerations / escalations (implicit).

Explicit: a client rates an answer the gateway gave, by its request id.

Body: ``{"request_id": "<x-request-id of the answer>", "score": 0..1 | "up" | "down"}``. Authenticated like
chat (the policy's keys); only the key that made the request may rate it. The answer must have been sent
within the policy's ``feedback.window_s``. The outcome is stored by :class:`OutcomeLog` with the request's
route, tier, model, classifier score and version, policy version and (policy permitting) prompt.

Implicit (``feedback.implicit``, on by default): when the same key re-sends the same conversation within
``feedback.implicit_window_s`` of an answer, that answer gets an outcome of score 0 — ``regenerated`` when the
new request asks for the same model, ``escalated`` when an edge answer is followed by a request that pins a
cloud model.
"""

from __future__ import annotations

import time

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.admission.keys import authenticate
from gateway.api.validate import parse_json
from gateway.errors import ApiError

_THUMBS = {"up": 1.0, "down": 0.0}
_MAX_BODY = 64 * 1024


def _score(value) -> float:
    if isinstance(value, str) and value.lower() in _THUMBS:
        return _THUMBS[value.lower()]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ApiError(400, '"score" must be a number between 0 and 1, or "up" / "down".', param="score",
                       code="invalid_value")
    return float(value)


def feedback_endpoint(runtime):
    async def feedback(request: Request) -> Response:
        try:
            policy = runtime.policies.current
            if not policy.feedback.enabled:
                raise ApiError(403, "Feedback collection is off: the policy has no `feedback:` section.",
                               code="feedback_disabled")
            headers = {k.lower(): v for k, v in request.headers.items()}
            key = authenticate(policy, headers)
            raw = b""
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > _MAX_BODY:
                    raise ApiError(413, f"The feedback body is over the limit of {_MAX_BODY} bytes.",
                                   code="request_too_large")
            body = parse_json(raw)
            request_id = body.get("request_id")
            if not isinstance(request_id, str) or not request_id:
                raise ApiError(400, '"request_id" is required: the x-request-id header of the answer you rate.',
                               param="request_id", code="missing_required_parameter" if request_id is None
                               else "invalid_value")
            if "score" not in body:
                raise ApiError(400, '"score" is required: a number between 0 and 1, or "up" / "down".',
                               param="score", code="missing_required_parameter")
            score = _score(body["score"])
            record = await runtime.outcomes.lookup(request_id)
            if record is None or record.get("key") != (key.name if key else None):
                raise ApiError(404, f"No answer with request id {request_id!r} to rate (unknown, or older than "
                                    f"{policy.feedback.window_s:g} s).", param="request_id", code="request_not_found")
            outcome = {**record, "request_id": request_id, "kind": "explicit", "score": score, "at": time.time(),
                       "answered_at": record.get("at")}
            spec = policy.feedback
            runtime.outcomes.append(outcome, spec.retention_days, spec.max_records)
            return Response(orjson.dumps({"object": "feedback", "request_id": request_id, "score": score,
                                          "recorded": True}), media_type="application/json")
        except ApiError as exc:
            return Response(exc.body(), status_code=exc.status, media_type="application/json", headers=exc.headers)

    return feedback
