"""Wiring: build every part from the settings and the policy, and mount the HTTP routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admission.limits import RateLimiter
from gateway.api.admin import admin_endpoints
from gateway.api.anthropic import AnthropicMessages
from gateway.api.classifier_admin import ClassifierSlot, classifier_endpoints
from gateway.api.count_tokens import CountTokens
from gateway.api.dialect import OpenAIChat
from gateway.api.embeddings import Embeddings
from gateway.api.endpoint import Endpoint
from gateway.api.feedback import feedback_endpoint
from gateway.api.responses import OpenAIResponses
from gateway.api.meta import health_endpoints, models_endpoint
from gateway.errors import ApiError
from gateway.execution.breaker import Breakers
from gateway.execution.degrade import HandOff
from gateway.execution.executor import Executor
from gateway.execution.shadow import Shadow
from gateway.observability import metrics
from gateway.observability.logs import RequestLog, audit, set_policy_version
from gateway.observability.outcomes import OutcomeLog
from gateway.observability.usage import Accountant
from gateway.pipeline.accounting import Accounting
from gateway.pipeline.run import Pipeline
from gateway.policy.reload import PolicyHolder
from gateway.providers.registry import Providers
from gateway.routing.router import Router
from gateway.settings import Settings
from gateway.state import make_store

log = logging.getLogger("gateway")


class _Timed:
    """Observes the classifier's latency once per batch, not once per request."""

    def __init__(self, scorer) -> None:
        self.scorer = scorer

    def score_batch(self, texts):
        started = time.perf_counter()
        scores = self.scorer.score_batch(texts)
        metrics.CLASSIFIER_LATENCY.observe(time.perf_counter() - started)
        return scores


class ScoringKind:
    """One classifier kind, with concurrent requests scored in batches."""

    def __init__(self, scorer) -> None:
        from gateway.classify import MicroBatcher

        self.scorer = scorer
        self.version = getattr(scorer, "version", "?")
        self.default_threshold = scorer.default_threshold
        self._batcher = MicroBatcher(_Timed(scorer))

    async def score(self, text: str) -> float:
        return await self._batcher.score(text)

    def threshold_for_share(self, cloud_share: float) -> float:
        return self.scorer.threshold_for_share(cloud_share)


class Runtime:
    """Everything a request needs, built once per process."""

    def __init__(self, settings: Settings) -> None:
        from gateway.classify import load_scorer

        self.settings = settings
        self.policies = PolicyHolder(settings.policy, on_result=self._on_reload)
        set_policy_version(self.policies.current.version)
        self.store = make_store(settings.redis_url, timeout_s=settings.redis_timeout) if settings.redis_url \
            else make_store(None)
        # The shipped classifier loads at start-up, so a missing or broken model stops the start here.
        self._scoring = {"onnx": ScoringKind(load_scorer("onnx", settings.classifier_model or None)),
                         "length": ScoringKind(load_scorer("length"))}
        self.classifier = ClassifierSlot(self._scoring, ScoringKind)  # hot promotion and rollback
        self.providers = Providers(settings.max_upstream_body_bytes, settings.max_upstream_event_bytes)
        self.breakers = Breakers(self.store)
        self.accountant = Accountant(self.store)
        self.router = Router(self._scoring.__getitem__,
                             edge_load=lambda name: self.providers.edge_load(self.policies.current, name),
                             on_share=lambda route, share: metrics.ROUTE_CLOUD_SHARE.labels(route).set(share),
                             store=self.store, spend=self.accountant.cloud_spent,
                             on_budget=lambda scope, name: metrics.BUDGET_SPENT.labels(scope, name).inc())
        self.executor = Executor(self.providers, self.breakers)
        self.limiter = RateLimiter(self.store)
        self.handoff = HandOff(self.providers.session)
        self.request_log = RequestLog(enabled=settings.log_requests)
        # Request records for feedback: in Redis when shared, else in their own memory (not the response cache's).
        self.outcomes = OutcomeLog(self.store if settings.redis_url else make_store(None), settings.outcomes_path)
        self.shadow = Shadow(self.providers, self.breakers, self.store, self.outcomes)  # feedback.shadow
        self.pipeline = Pipeline(self)
        self.accounting = Accounting(self)
        self._background: set[asyncio.Task] = set()
        # The last requests, for the dashboard: (time, latency ms, tier, status, degraded, model).
        self.recent: list[tuple] = []

    def scoring_status(self) -> dict:
        return {kind: getattr(s.scorer, "version", kind) for kind, s in self._scoring.items()}

    def _on_reload(self, result, holder) -> None:
        set_policy_version(holder.current.version)
        if result.ok:
            self.providers.sync_probes(holder.current)
            self.in_background(self.providers.warm_up(holder.current))
        metrics.POLICY_RELOADS.labels("ok" if result.ok else "rejected").inc()
        audit("policy_reload", ok=result.ok, trigger=result.trigger, version=holder.current.version,
              errors=result.errors)

    async def start(self) -> None:
        if self.settings.watch_policy:
            self.policies.start_watching()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self._reload_soon, "SIGHUP")
        if self.settings.redis_url:
            task = loop.create_task(self._watch_store())
            self._background.add(task)
            follow = loop.create_task(self.classifier.follow(self.store))  # promotions made on other replicas
            self._background.add(follow)
        await self.providers.start(self.policies.current)

    async def _watch_store(self) -> None:
        """Keep the Redis health gauge current (the store itself knows nothing of metrics)."""
        while True:
            metrics.REDIS_DEGRADED.set(0 if self.store.healthy else 1)
            await asyncio.sleep(1.0)

    def _reload_soon(self, trigger: str) -> None:
        self.in_background(self.policies.reload(trigger))

    def in_background(self, work) -> None:
        """Run `work` on the event loop without waiting for it, keeping a reference until it ends."""
        try:
            task = asyncio.get_running_loop().create_task(work)
        except RuntimeError:  # no loop yet (the first load): start() does this work
            work.close()
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        await self.policies.stop()
        await self.handoff.drain()
        await self.shadow.drain(2.0)
        await self.accountant.aclose()
        for task in list(self._background):
            task.cancel()
        await self.providers.aclose()
        await self.store.aclose()


_MESSAGES = AnthropicMessages()


def _error_response(status: int, message: str, code: str, headers: dict | None = None, path: str = "") -> Response:
    """In Anthropic's shape under /v1/messages (what an Anthropic SDK there expects), else in OpenAI's."""
    exc = ApiError(status, message, code=code, headers=headers)
    body = _MESSAGES.error(status, {"error": exc.payload()}) if path.startswith("/v1/messages") else exc.body()
    return Response(body, status_code=status, media_type="application/json", headers=exc.headers)


def build_app(settings: Settings | None = None) -> "ChatFastPath":
    settings = settings or Settings.from_env()
    runtime = Runtime(settings)
    healthz, readyz, metrics_endpoint = health_endpoints(runtime)
    admin = admin_endpoints(runtime)
    chat = Endpoint(runtime, OpenAIChat())
    promotion = classifier_endpoints(runtime, runtime.classifier)
    routes = [
        Route("/v1/chat/completions", chat, methods=None),
        Route("/chat/completions", chat, methods=None),
        Route("/v1/messages", Endpoint(runtime, AnthropicMessages()), methods=None),
        Route("/v1/messages/count_tokens", CountTokens(runtime), methods=None),
        Route("/v1/responses", Endpoint(runtime, OpenAIResponses()), methods=None),
        Route("/v1/embeddings", Embeddings(runtime), methods=None),
        Route("/v1/models", models_endpoint(runtime), methods=["GET"]),
        Route("/v1/feedback", feedback_endpoint(runtime), methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/admin/policy", admin["policy"], methods=["GET"]),
        Route("/admin/reload", admin["reload"], methods=["POST"]),
        Route("/admin/explain", admin["explain"], methods=["POST"]),
        Route("/admin/usage", admin["usage"], methods=["GET"]),
        Route("/admin/status", admin["status"], methods=["GET"]),
        Route("/admin/classifier/promote", admin["guard"](promotion["promote"]), methods=["POST"]),
        Route("/admin/classifier/rollback", admin["guard"](promotion["rollback"]), methods=["POST"]),
        Route("/dashboard", admin["dashboard"], methods=["GET"]),
    ]

    async def not_found(request: Request, exc) -> Response:
        return _error_response(404, f"No endpoint {request.method} {request.url.path}.", "not_found",
                               path=request.url.path)

    async def not_allowed(request: Request, exc) -> Response:
        allow = (getattr(exc, "headers", None) or {}).get("Allow", "")
        return _error_response(405, f"Method {request.method} is not allowed on {request.url.path}.",
                               "method_not_allowed", {"allow": allow} if allow else None, request.url.path)

    async def api_error(request: Request, exc: ApiError) -> Response:
        return Response(exc.body(), status_code=exc.status, media_type="application/json", headers=exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path, exc_info=exc)
        return _error_response(500, "The gateway failed to handle this request.", "internal_error")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await runtime.start()
        yield
        await runtime.stop()

    handlers: dict[Any, Any] = {404: not_found, 405: not_allowed, ApiError: api_error, Exception: server_error}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.runtime = runtime
    return ChatFastPath(app, chat)


class ChatFastPath:
    """Sends chat requests straight to their endpoint and everything else through Starlette: the chat
    path is the hot one, and Starlette's middleware and route matching cost ~10 µs a request there.
    Every response goes through `_Framing` (policy version header, content-length)."""

    # With and without a trailing slash: Starlette would answer the latter with a 307 to a Location built
    # from the client's Host header.
    _PATHS = frozenset({"/v1/chat/completions", "/chat/completions", "/v1/chat/completions/", "/chat/completions/"})

    def __init__(self, app: Starlette, chat: Endpoint) -> None:
        self.app = app
        self.chat = chat
        self.state = app.state
        self.router = app.router
        self.router.redirect_slashes = False  # other paths: a 404 in OpenAI's shape, never a redirect

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        version = self.state.runtime.policies.current.version.encode()
        framed = _Framing(send, version, scope.get("http_version") == "1.0").send
        if scope["path"] in self._PATHS:
            await self.chat(scope, receive, framed)
            return
        await self.app(scope, receive, framed)


_VERSION_HEADER = b"x-gateway-policy-version"


class _Framing:
    """Wraps one response's `send`: adds x-gateway-policy-version where the endpoint did not, and sends a
    content-length instead of chunked transfer coding whenever the body is known at once. HTTP/1.0 has no
    chunked coding, so for an HTTP/1.0 client a streamed body (SSE) is collected and sent whole."""

    __slots__ = ("_send", "_version", "_http10", "_start", "_parts")

    def __init__(self, send, version: bytes, http10: bool) -> None:
        self._send = send
        self._version = version
        self._http10 = http10
        self._start: dict | None = None
        self._parts: list[bytes] = []

    async def send(self, message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            headers = list(message.get("headers") or ())
            names = {name.lower() for name, _ in headers}
            if _VERSION_HEADER not in names:
                headers.append((_VERSION_HEADER, self._version))
            message = {**message, "headers": headers}
            if b"content-length" in names or b"transfer-encoding" in names:
                await self._send(message)
            else:
                self._start = message  # until the body shows whether its length is known
            return
        if kind == "http.response.body" and self._start is not None:
            body = message.get("body", b"")
            if message.get("more_body"):
                if self._http10:
                    self._parts.append(body)
                    return
                start, self._start = self._start, None
                await self._send(start)  # a stream to an HTTP/1.1 client: chunked, as it should be
                await self._send(message)
                return
            if self._parts:
                body = b"".join([*self._parts, body])
                self._parts = []
            start, self._start = self._start, None
            start["headers"].append((b"content-length", str(len(body)).encode()))
            await self._send(start)
            await self._send({"type": "http.response.body", "body": body})
            return
        await self._send(message)


def create_app() -> "ChatFastPath":
    """Factory for `uvicorn --factory gateway.app:create_app` (settings from the environment)."""
    return build_app(Settings.from_env())
