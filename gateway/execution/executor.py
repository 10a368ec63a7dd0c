"""Run a `Plan`: each target in order (and each deployment of a target), with retries, breakers and one
total deadline; when every target failed or is open, the canned reply. Streams fall over until the first
chunk with content is in hand (see `opening.py`); after that the api ends them with an error event.

When every target refused the request for the same reason, retrying later cannot help and a canned reply
would hide it: every target said the prompt is too long (or against its content policy) → the upstream's
400 goes to the client; every target refused the gateway's credentials → `auth_refused` (a 502, an
operator error). A mix of the two is a 400 (the reachable targets judged the request); any other failure,
or a target skipped by its breaker, leaves the usual degradation."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tenacity import AsyncRetrying, retry_if_exception

from gateway.execution.breaker import Breakers
from gateway.execution.looplag import LoopLag
from gateway.execution.opening import Opening
from gateway.execution.retry import BackoffWait, should_retry
from gateway.observability import metrics
from gateway.policy.schema import BreakerSpec, Deployment, ModelSpec, RetrySpec
from gateway.providers.base import ChunkStream, Completion, Deadlines, UpstreamCall
from gateway.providers.errors import Action, ErrorKind, UpstreamError
from gateway.providers.registry import Providers
from gateway.request import OPENAI, Request
from gateway.routing.plan import Plan


# Another kind of upstream call than the provider's chat call (embeddings): one try at one deployment.
Invoke = Callable[[ModelSpec, Deployment, Deadlines], Awaitable[Completion]]


@dataclass(slots=True)
class Attempt:
    model: str
    deployment: str
    tries: int = 0
    error: str | None = None     # kind of the last error, None on success
    failure: UpstreamError | None = None  # the last error itself
    skipped: str | None = None   # why it was not tried ("breaker open")


@dataclass(slots=True)
class Outcome:
    attempts: list[Attempt] = field(default_factory=list)
    model: ModelSpec | None = None
    deployment: str | None = None
    completion: Completion | None = None
    stream: ChunkStream | None = None
    held: list[bytes] = field(default_factory=list)  # the stream's opening pieces, not yet sent
    stream_ended: bool = False                   # the stream ended within its opening
    client_error: UpstreamError | None = None   # a 4xx to pass back to the client
    failed: UpstreamError | None = None          # last error when every target failed
    auth_refused: bool = False                   # every target refused the gateway's credentials
    started: float = 0.0
    deadline: float = 0.0
    _release: Callable[[], None] | None = None

    @property
    def tries(self) -> int:
        return sum(a.tries for a in self.attempts)

    @property
    def fallbacks(self) -> int:
        return max(0, sum(1 for a in self.attempts if a.tries or a.skipped) - 1)

    def release(self) -> None:
        """Give the deployment's in-flight slot back (streams call this when they end)."""
        if self._release is not None:
            release, self._release = self._release, None
            release()


class Executor:
    def __init__(self, providers: Providers, breakers: Breakers) -> None:
        self.providers = providers
        self.breakers = breakers
        self.lag = LoopLag()

    async def run(self, request: Request, plan: Plan, breaker: BreakerSpec,
                  arrived: float | None = None, invoke: Invoke | None = None) -> Outcome:
        """`arrived`: when the request came in (time.monotonic()); the deadline counts from there, so that
        it bounds the whole answer, the work before execution included."""
        now = time.monotonic() if arrived is None else arrived
        self.lag.start()
        # Give up early by what the loop currently lags, so the answer still leaves within the deadline.
        outcome = Outcome(started=now, deadline=now + plan.deadline - self.lag.reserve(plan.deadline))
        last_error: UpstreamError | None = None
        try:
            async with asyncio.timeout_at(_loop_deadline(outcome.deadline)):
                for model in plan.targets:
                    for deployment in await self._order(model, breaker, outcome):
                        attempt = Attempt(model.name, deployment.name)
                        outcome.attempts.append(attempt)
                        try:
                            await self._try(request, plan.retry, breaker, model, deployment, attempt, outcome,
                                            invoke)
                            return outcome
                        except UpstreamError as exc:
                            attempt.error, attempt.failure = exc.kind, exc
                            if exc.action is Action.CLIENT:
                                outcome.client_error = exc
                                return outcome
                            last_error = exc
                            metrics.FALLBACKS.labels(plan.route, model.name).inc()
        except TimeoutError:
            last_error = UpstreamError("timeout", f"the request deadline of {plan.deadline:g}s passed")
            if outcome.attempts and outcome.attempts[-1].error is None and outcome.model is None:
                outcome.attempts[-1].error = "deadline"
        outcome.failed = last_error or UpstreamError("unavailable", "no target was available (breakers open)")
        _refused_everywhere(outcome)
        return outcome

    async def _order(self, model: ModelSpec, breaker: BreakerSpec, outcome: Outcome) -> list[Deployment]:
        """Deployments by weighted least requests in flight; ones with an open breaker are left out."""
        deployments = model.deployments
        open_ = []
        usable = []
        for d in deployments:
            if await self.breakers.is_open(breaker, d.name):
                open_.append(d)
            else:
                usable.append(d)
        for d in open_:
            outcome.attempts.append(Attempt(model.name, d.name, skipped="breaker open"))
        if len(usable) > 1:
            in_flight = self.providers.in_flight
            # Least requests in flight relative to weight; ties go by an exponential race, which picks each
            # deployment with probability proportional to its weight.
            usable.sort(key=lambda d: (in_flight.get(d.name, 0) / max(d.weight, 1e-9),
                                       -math.log(1.0 - random.random()) / max(d.weight, 1e-9)))
        return usable

    async def _try(self, request: Request, spec: RetrySpec, breaker: BreakerSpec, model: ModelSpec,
                   deployment: Deployment, attempt: Attempt, outcome: Outcome, invoke: Invoke | None) -> None:
        provider = self.providers.get(model, deployment) if invoke is None else None
        in_flight = self.providers.in_flight
        name = deployment.name

        def remaining() -> float:
            return outcome.deadline - time.monotonic()

        async def once() -> None:
            left = remaining()
            if left <= 0.001:
                # The deadline's cancellation can be absorbed by a client library's own timeout firing at
                # the same moment; no attempt may start then (a timeout of 0 means none to aiohttp).
                raise UpstreamError("timeout", "the request deadline passed")
            attempt.tries += 1
            deadlines = Deadlines(connect=min(model.connect_timeout, left), attempt=min(model.timeout, left),
                                  first_token=min(model.first_token_timeout, left))
            # The client's own bytes go only to an upstream that speaks the client's dialect.
            raw = request.raw if model.dialect == request.dialect else None
            call = UpstreamCall(request.body, model.upstream_model, request.stream, deadlines, raw, request.dialect)
            in_flight[name] = in_flight.get(name, 0) + 1
            released = False
            started = time.monotonic()
            try:
                if invoke is not None:
                    outcome.completion = await invoke(model, deployment, deadlines)
                    metrics.child(metrics.UPSTREAM_LATENCY, model.name, model.tier).observe(time.monotonic() - started)
                elif request.stream:
                    assert provider is not None
                    stream = await provider.stream(call)
                    if getattr(stream, "dialect", OPENAI) == OPENAI:
                        held, ended = await _opening(stream, deadlines.first_token)
                    else:  # a stream in another dialect checked its own opening before `stream()` returned
                        held, ended = [], False
                    metrics.child(metrics.TTFT, model.name, model.tier).observe(time.monotonic() - started)
                    outcome.stream, outcome.held, outcome.stream_ended = stream, held, ended
                    outcome._release = lambda: _decrement(in_flight, name)
                    released = True  # the api releases the slot when the stream ends
                else:
                    assert provider is not None
                    outcome.completion = await provider.complete(call)
                    metrics.child(metrics.UPSTREAM_LATENCY, model.name, model.tier).observe(time.monotonic() - started)
            except UpstreamError as exc:
                if exc.kind == "auth_upstream":
                    metrics.UPSTREAM_AUTH_REFUSED.labels(name).inc()
                await self.breakers.failure(breaker, name, exc.kind)
                raise
            finally:
                if not released:
                    _decrement(in_flight, name)
            outcome.model, outcome.deployment = model, name
            await self.breakers.success(breaker, name)

        try:
            await once()  # the common case needs no retry machinery
            return
        except UpstreamError as exc:
            if spec.attempts <= 1 or not should_retry(spec, exc) or remaining() <= 0.002:
                raise
            first_error = exc
        metrics.RETRIES.labels(model.name, first_error.kind).inc()
        wait = BackoffWait(spec, remaining)
        await asyncio.sleep(wait.first(first_error))

        def stop(state) -> bool:
            return state.attempt_number >= spec.attempts - 1 or remaining() <= 0.002

        def note_retry(state) -> None:
            error = state.outcome.exception() if state.outcome else None
            metrics.RETRIES.labels(model.name, getattr(error, "kind", "error")).inc()

        retrying = AsyncRetrying(stop=stop, wait=wait.shifted(1), retry=retry_if_exception(
            lambda e: should_retry(spec, e)), before_sleep=note_retry, reraise=True)
        async for step in retrying:
            with step:
                await once()


# The error code a client gets when every target refused its request for the same reason.
_REQUEST_BOUND_CODE = {ErrorKind.CONTEXT_WINDOW: "context_length_exceeded",
                       ErrorKind.CONTENT_POLICY: "content_policy_violation"}


def _refused_everywhere(outcome: Outcome) -> None:
    """Turn "every target failed" into the client's 400 or the operator's 502 when every target that was
    tried refused the request itself or the gateway's credentials (see the module's docstring)."""
    failures = [a.failure for a in outcome.attempts]
    if not failures or any(f is None for f in failures):  # skipped (breaker open) or cut off by the deadline
        return
    kinds = {f.kind for f in failures if f is not None}
    if not all(k.request_bound or k is ErrorKind.AUTH_UPSTREAM for k in kinds):
        return
    request_bound = next((k for k in ErrorKind if k in kinds and k.request_bound), None)
    if request_bound is None:
        outcome.auth_refused = True
        return
    error = next(f for f in reversed(failures) if f is not None and f.kind is request_bound)
    given = error.body.get("error") if isinstance(error.body, dict) else None
    given = given if isinstance(given, dict) else {}
    # The upstream's own error in OpenAI's shape, its fields kept, the standard code where it gave none.
    body = {"message": str(given.get("message") or error.message), "type": given.get("type") or "invalid_request_error",
            "param": given.get("param"), "code": given.get("code") or _REQUEST_BOUND_CODE[request_bound]}
    outcome.client_error = UpstreamError(request_bound, error.message, status=400, body={"error": body})


async def _opening(stream: ChunkStream, first_token: float | None) -> tuple[list[bytes], bool]:
    """Read a chat stream up to its first real content (see opening.py): (the pieces held back, whether the
    stream already ended). Closes the stream when it fails."""
    opening = Opening(getattr(stream, "framed", False))
    try:
        async with asyncio.timeout(first_token):
            while True:
                try:
                    piece = await stream.__anext__()
                except StopAsyncIteration:
                    opening.end()  # raises unless the stream was a well-formed empty answer
                    return opening.held, True
                if opening.add(piece):
                    return opening.held, False
    except TimeoutError:
        await stream.aclose()
        raise UpstreamError("timeout", "no first token in time") from None
    except BaseException:
        await stream.aclose()
        raise


def _decrement(in_flight: dict, name: str) -> None:
    in_flight[name] = in_flight.get(name, 1) - 1


def _loop_deadline(monotonic_deadline: float) -> float:
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())
