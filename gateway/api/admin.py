"""Admin endpoints behind the admin key: policy state, reload, explain, usage, breakers, dashboard."""

from __future__ import annotations

import hmac
import os

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from gateway.admission.keys import check_model, find_key
from gateway.api.validate import parse_json, validate_chat
from gateway.errors import ApiError
from gateway.observability.status import dashboard_status
from gateway.observability.logs import audit
from gateway import request as neutral
from gateway.routing.router import BadShareHeader, NoRoute, UnknownModel

_STATIC = os.path.join(os.path.dirname(__file__), "static")


def _json(data, status: int = 200) -> Response:
    return Response(orjson.dumps(data, default=str), status_code=status, media_type="application/json")


def _error(exc: ApiError) -> Response:
    return Response(exc.body(), status_code=exc.status, media_type="application/json", headers=exc.headers)


MAX_USAGE_DAYS = 366


def int_query(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    """A whole-number query parameter within [lo, hi]; anything else is a 400 in OpenAI's shape."""
    values = request.query_params.getlist(name)
    if not values:
        return default
    text = values[-1].strip()
    if len(values) > 1 or not text.isascii() or not text.isdigit() or len(text) > 9 or not lo <= int(text) <= hi:
        raise ApiError(400, f"Query parameter '{name}' must be one whole number from {lo} to {hi}.", param=name,
                       code="invalid_query")
    return int(text)


def explain_decision(decision, plan) -> dict:
    return {
        "route": decision.route, "tier": decision.tier, "score": decision.score, "threshold": decision.threshold,
        "complexity": decision.complexity, "reasons": list(decision.reasons),
        "policy_version": decision.policy_version,
        "chain": [{"model": m.name, "tier": m.tier, "client": m.client} for m in plan.targets],
        "skipped": [{"model": n, "why": w} for n, w in plan.skipped],
        "edge_only": plan.edge_only, "deadline_s": plan.deadline,
    }


def signals_seen(signals) -> dict:
    return {"messages": len(signals.request.messages), "estimated_tokens": signals.estimated_tokens,
            "tools": signals.has_tools, "images": signals.has_images, "pii": sorted(signals.pii),
            "score": signals.score, "key": signals.request.key_name, "group": signals.request.key_group}


async def explain_request(router, policy, body: dict, headers: dict | None = None) -> dict:
    """The decision for one request body, without calling any upstream (admin endpoint and CLI).

    `_api_key` in the body stands for the caller's key; `_headers` for request headers (CLI use)."""
    presented = body.pop("_api_key", None)
    given = body.pop("_headers", None) or {}
    if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
        raise ApiError(400, "'_headers' must be an object of header names to string values.", param="_headers",
                       code="invalid_type")
    headers = {**{k.lower(): v for k, v in given.items()}, **(headers or {})}
    model, messages, stream = validate_chat(body)
    key = find_key(policy, presented) if isinstance(presented, str) else None
    check_model(key, model)
    request = neutral.Request(body, b"", model, stream, messages, headers, key.name if key else None,
                          key.group if key else None, "explain")
    try:
        decision, plan, signals = await router.decide(policy, request, record=False)
    except UnknownModel:
        raise ApiError(404, f"The model '{model}' does not exist.", param="model", code="model_not_found") from None
    except NoRoute:
        raise ApiError(400, "No route of the policy matches this request.", code="no_route") from None
    except BadShareHeader:
        raise ApiError(400, "The x-gateway-cloud-share header must be a number between 0 and 1.",
                       param="x-gateway-cloud-share", code="invalid_value") from None
    return {**explain_decision(decision, plan), "signals": signals_seen(signals)}


def admin_endpoints(runtime):
    def check(request: Request) -> None:
        key = runtime.settings.admin_key
        if not key:
            raise ApiError(403, "Admin endpoints are off: set GATEWAY_ADMIN_KEY to enable them.",
                           code="admin_disabled")
        presented = request.headers.get("authorization", "")
        presented = presented[7:].strip() if presented[:7].lower() == "bearer " else request.headers.get(
            "x-admin-key", "")
        if not hmac.compare_digest(presented.encode(), key.encode()):
            raise ApiError(401, "A valid admin key is required.", code="invalid_admin_key")
        audit("admin_call", path=request.url.path, method=request.method,
              client=request.client.host if request.client else None)

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            try:
                check(request)
                return await handler(request)
            except ApiError as exc:
                return _error(exc)
        return endpoint

    async def policy_state(request: Request) -> Response:
        holder = runtime.policies
        last, error = holder.last_result, holder.last_error
        return _json({
            "version": holder.current.version, "source": holder.current.source,
            "last_reload": {"ok": last.ok, "at": last.at, "version": last.version, "errors": last.errors,
                            "trigger": last.trigger},
            "last_error": None if error is None else {"at": error.at, "errors": error.errors,
                                                      "trigger": error.trigger},
        })

    async def reload(request: Request) -> Response:
        result = await runtime.policies.reload("admin")
        return _json({"ok": result.ok, "version": result.version, "errors": result.errors},
                     200 if result.ok else 422)

    async def explain(request: Request) -> Response:
        body = parse_json(await request.body())
        headers = {k.lower(): v for k, v in request.headers.items()}
        return _json(await explain_request(runtime.router, runtime.policies.current, body, headers))

    async def usage(request: Request) -> Response:
        days = int_query(request, "days", 7, 1, MAX_USAGE_DAYS)
        return _json(await runtime.accountant.report(days))

    async def status(request: Request) -> Response:
        return _json(await dashboard_status(runtime))

    async def dashboard(request: Request) -> Response:
        return FileResponse(os.path.join(_STATIC, "dashboard.html"), media_type="text/html")

    return {
        "policy": guarded(policy_state), "reload": guarded(reload), "explain": guarded(explain),
        "usage": guarded(usage), "status": guarded(status), "dashboard": dashboard, "guard": guarded,
    }
