"""Run a `Plan`: each target in order (and each deployment of a target), with retries, breakers and one
total deadline; when every target failed or is open, the canned reply. Streams fall over only until the
first chunk is in hand; after that the api ends them with an error event."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tenacity import AsyncRetrying, retry_if_exception

from gateway.execution.breaker import Breakers
from gateway.execution.retry import BackoffWait, should_retry
from gateway.observability import metrics
from gateway.policy.schema import BreakerSpec, Deployment, ModelSpec, RetrySpec
from gateway.providers.base import ChunkStream, Completion, Deadlines, UpstreamCall
from gateway.providers.errors import Action, UpstreamError
from gateway.providers.registry import Providers
from gateway.routing.plan import Plan
from gateway.routing.request import ChatRequest


@dataclass(slots=True)
class Attempt:
    model: str
    deployment: str
    tries: int = 0
    error: str | None = None     # kind of the last error, None on success
    skipped: str | None = None   # why it was not tried ("breaker open")


@dataclass(slots=True)
class Outcome:
    attempts: list[Attempt] = field(default_factory=list)
    model: ModelSpec | None = None
    deployment: str | None = None
    completion: Completion | None = None
    stream: ChunkStream | None = None
    first_chunk: bytes | None = None
    client_error: UpstreamError | None = None   # a 4xx to pass back to the client
    failed: UpstreamError | None = None          # last error when every target failed
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

    async def run(self, request: ChatRequest, plan: Plan, breaker: BreakerSpec) -> Outcome:
        now = time.monotonic()
        outcome = Outcome(started=now, deadline=now + plan.deadline)
        last_error: UpstreamError | None = None
        try:
            async with asyncio.timeout_at(_loop_deadline(outcome.deadline)):
                for model in plan.targets:
                    for deployment in await self._order(model, breaker, outcome):
                        attempt = Attempt(model.name, deployment.name)
                        outcome.attempts.append(attempt)
                        try:
                            await self._try(request, plan.retry, breaker, model, deployment, attempt, outcome)
                            return outcome
                        except UpstreamError as exc:
                            attempt.error = exc.kind
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

    async def _try(self, request: ChatRequest, spec: RetrySpec, breaker: BreakerSpec, model: ModelSpec,
                   deployment: Deployment, attempt: Attempt, outcome: Outcome) -> None:
        provider = self.providers.get(model, deployment)
        in_flight = self.providers.in_flight
        name = deployment.name

        def remaining() -> float:
            return outcome.deadline - time.monotonic()

        async def once() -> None:
            attempt.tries += 1
            left = remaining()
            deadlines = Deadlines(connect=min(model.connect_timeout, left), attempt=min(model.timeout, left),
                                  first_token=min(model.first_token_timeout, left))
            call = UpstreamCall(request.body, model.upstream_model, request.stream, deadlines, request.raw)
            in_flight[name] = in_flight.get(name, 0) + 1
            released = False
            started = time.monotonic()
            try:
                if request.stream:
                    stream = await provider.stream(call)
                    try:
                        async with asyncio.timeout(deadlines.first_token):
                            first = await stream.__anext__()
                    except StopAsyncIteration:
                        await stream.aclose()
                        raise UpstreamError("stream_cut", "the upstream stream ended before any chunk") from None
                    except TimeoutError:
                        await stream.aclose()
                        raise UpstreamError("timeout", "no first token in time") from None
                    except BaseException:
                        await stream.aclose()
                        raise
                    metrics.child(metrics.TTFT, model.name, model.tier).observe(time.monotonic() - started)
                    outcome.stream, outcome.first_chunk = stream, first
                    outcome._release = lambda: _decrement(in_flight, name)
                    released = True  # the api releases the slot when the stream ends
                else:
                    outcome.completion = await provider.complete(call)
                    metrics.child(metrics.UPSTREAM_LATENCY, model.name, model.tier).observe(time.monotonic() - started)
            except UpstreamError as exc:
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


def _decrement(in_flight: dict, name: str) -> None:
    in_flight[name] = in_flight.get(name, 1) - 1


def _loop_deadline(monotonic_deadline: float) -> float:
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())
