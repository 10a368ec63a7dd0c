"""Circuit breakers per deployment, kept in the `Store` so that replicas sharing Redis agree.

Two modes (policy `breaker`):
- ratio (`failure_ratio: R`, the default, R = 0.5): open when at least R of the attempts within `window`
  failed, once there were `min_requests` of them (as LiteLLM's default cooldown and Helicone's error-ratio
  monitor do). With fewer attempts than that, too few for a share, `consecutive` failures in a row open
  it, so a dead deployment behind little traffic is still cut off;
- count (`failures: N`): open after N counted failures within `window`, counted in the Store, so across
  replicas.

Why ratio by default: a fault rate below R (say 30 % of requests, absorbed by retries) never opens it,
where a count would trip within seconds at any real traffic (bench/soak.py: 35 % canned replies with a
5-in-30 s count, 0.4 % with the ratio). The share is measured per replica, from its own attempts: counting
every success in Redis would add a round trip to every request. Opening, the open/half-open state and
closing go through the Store as in count mode, so all replicas skip the deployment once one has opened it.
"""

from __future__ import annotations

import time

from gateway.observability import metrics
from gateway.policy.schema import BreakerSpec
from gateway.providers.errors import ErrorKind
from gateway.state.base import Store


def breaker_key(target: str) -> str:
    return f"breaker:{target}"


class OutcomeWindow:
    """Successes and failures over the last `window` seconds, in BUCKETS time buckets, with running totals
    (it is updated on every attempt, so an update is O(1) but for expiring buckets)."""

    BUCKETS = 10
    __slots__ = ("window", "width", "ok", "bad", "last", "total_ok", "total_bad")

    def __init__(self, window: float) -> None:
        self.window = window
        self.width = max(window, 1e-3) / self.BUCKETS
        self.ok = [0] * self.BUCKETS
        self.bad = [0] * self.BUCKETS
        self.last: int | None = None  # number (time / width) of the newest bucket seen
        self.total_ok = self.total_bad = 0

    def add(self, failed: bool, now: float) -> tuple[int, int]:
        """Record one outcome; returns (failures, attempts) within the window."""
        b = int(now / self.width)
        if b != self.last:
            # Expire the buckets between the newest one used and this one (all of them after a long gap).
            first = b - self.BUCKETS + 1 if self.last is None else max(self.last + 1, b - self.BUCKETS + 1)
            for j in range(first, b + 1):
                i = j % self.BUCKETS
                self.total_ok -= self.ok[i]
                self.total_bad -= self.bad[i]
                self.ok[i] = self.bad[i] = 0
            self.last = b
        i = b % self.BUCKETS
        if failed:
            self.bad[i] += 1
            self.total_bad += 1
        else:
            self.ok[i] += 1
            self.total_ok += 1
        return self.total_bad, self.total_bad + self.total_ok


class Breakers:
    def __init__(self, store: Store, clock=time.monotonic) -> None:
        self.store = store
        self._last_state: dict[str, str] = {}
        self._windows: dict[str, OutcomeWindow] = {}  # ratio mode, per deployment
        self._streaks: dict[str, int] = {}             # ratio mode: failures in a row, per deployment
        self._clock = clock

    def _window(self, spec: BreakerSpec, target: str) -> OutcomeWindow:
        w = self._windows.get(target)
        if w is None or w.window != spec.window:  # new, or the policy changed
            w = self._windows[target] = OutcomeWindow(spec.window)
        return w

    def _changed(self, target: str, state: str) -> None:
        if self._last_state.get(target, "closed") != state:
            self._last_state[target] = state
            metrics.BREAKER_CHANGES.labels(target, state).inc()
            metrics.BREAKER_OPEN.labels(target).set(1 if state == "open" else 0)

    async def is_open(self, spec: BreakerSpec, target: str) -> bool:
        if not spec.enabled:
            return False
        view = await self.store.breaker_view(breaker_key(target))
        self._changed(target, view.state)
        return view.state == "open"

    async def failure(self, spec: BreakerSpec, target: str, kind: str) -> None:
        """Count a failed attempt, if its kind says the deployment is unhealthy (`counts_for_breaker`)."""
        if not spec.enabled or not ErrorKind(kind).counts_for_breaker:
            return
        threshold = spec.failures
        if spec.failure_ratio is not None:
            bad, total = self._window(spec, target).add(True, self._clock())
            streak = self._streaks[target] = self._streaks.get(target, 0) + 1
            if total >= spec.min_requests:
                tripped = bad >= spec.failure_ratio * total
            else:
                tripped = streak >= spec.consecutive
            if not tripped and self._last_state.get(target, "closed") == "closed":
                return
            threshold = 1  # the Store opens at once (and a failed half-open trial reopens there anyway)
            if tripped:  # after the cooldown, judge on fresh attempts
                self._windows.pop(target, None)
                self._streaks.pop(target, None)
        view = await self.store.breaker_failure(breaker_key(target), threshold, spec.window, spec.cooldown)
        self._changed(target, view.state)

    async def success(self, spec: BreakerSpec, target: str) -> None:
        if not spec.enabled:
            return
        if spec.failure_ratio is not None:
            self._window(spec, target).add(False, self._clock())
            self._streaks.pop(target, None)
        if self._last_state.get(target, "closed") != "closed":
            await self.store.breaker_success(breaker_key(target))
            self._changed(target, "closed")

    async def states(self) -> dict[str, str]:
        return dict(self._last_state)
