"""Circuit breakers per deployment, kept in the `Store` so that replicas sharing Redis agree."""

from __future__ import annotations

from gateway.observability import metrics
from gateway.policy.schema import BreakerSpec
from gateway.state.base import Store

# Failures that say the target is unhealthy (not ones caused by the request itself).
_COUNTED = {"rate_limit", "overloaded", "server", "malformed", "timeout", "connect", "stream_cut",
            "auth_upstream", "not_found_upstream", "unavailable"}


def breaker_key(target: str) -> str:
    return f"breaker:{target}"


class Breakers:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._last_state: dict[str, str] = {}

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
        if spec.enabled and kind in _COUNTED:
            view = await self.store.breaker_failure(breaker_key(target), spec.failures, spec.window, spec.cooldown)
            self._changed(target, view.state)

    async def success(self, spec: BreakerSpec, target: str) -> None:
        if spec.enabled and self._last_state.get(target, "closed") != "closed":
            await self.store.breaker_success(breaker_key(target))
            self._changed(target, "closed")

    async def states(self) -> dict[str, str]:
        return dict(self._last_state)
