"""GET /v1/models, /healthz, /readyz, /metrics."""

from __future__ import annotations

import hmac
import time

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.admission.keys import authenticate, bearer
from gateway.observability import metrics
from gateway.policy.compile import model_matches

_STARTED = int(time.time())


def _json(data, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def models_endpoint(runtime):
    async def models(request: Request) -> Response:
        policy = runtime.policies.current
        # The same key check as the chat endpoint: a key limited to some models sees only those. The admin
        # key (the dashboard's) sees every model.
        headers = {k.lower(): v for k, v in request.headers.items()}
        admin = runtime.settings.admin_key
        presented = bearer(headers)
        if admin and presented and hmac.compare_digest(presented.encode(), admin.encode()):
            allowed = None
        else:
            key = authenticate(policy, headers)
            allowed = key.models if key is not None else None
        data = []
        for name in policy.model_names():
            if allowed is not None and not model_matches(allowed, name):
                continue
            spec = policy.models.get(name)
            entry = {"id": name, "object": "model", "created": _STARTED, "owned_by": "gateway"}
            if spec is not None:
                entry["tier"] = spec.tier
                entry["available"] = spec.available
            data.append(entry)
        return _json({"object": "list", "data": data})

    return models


def health_endpoints(runtime):
    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        degraded = []
        if not runtime.store.healthy:
            degraded.append("redis")
        policy = runtime.policies.current
        missing = [m.name for m in policy.models.values() if not m.available]
        body = {
            "status": "degraded" if degraded else "ready",
            "policy_version": policy.version,
            "classifier": runtime.scoring_status(),
            "degraded": degraded,
            "unavailable_models": missing,
            "last_reload_ok": runtime.policies.last_result.ok,
        }
        metrics.REDIS_DEGRADED.set(1 if "redis" in degraded else 0)
        # Degraded dependencies do not make the replica unready: it keeps serving on local state.
        return _json(body)

    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return healthz, readyz, metrics_endpoint
