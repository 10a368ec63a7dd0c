"""Requests and tokens per minute, per key and per model, counted in the shared `Store`.

Tokens are estimated before the call and corrected with the real usage afterwards.
"""

from __future__ import annotations

import math

from gateway.errors import ApiError
from gateway.observability import metrics
from gateway.policy.schema import KeySpec, Policy
from gateway.state.base import Store, WindowResult

WINDOW = 60.0


class RateLimiter:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def admit(self, policy: Policy, key: KeySpec | None, model: str | None, tokens: int) -> list[str]:
        """Count this request; raise 429 when a limit is reached. Returns what to correct afterwards."""
        checks: list[tuple[str, str | None, int | None, int | None]] = []
        if key is not None:
            checks.append(("key", key.name, key.rpm, key.tpm))
        limit = policy.model_limits.get(model) if model else None
        if limit is not None:
            checks.append(("model", model, limit.rpm, limit.tpm))
        if not checks:
            return []
        if not self.store.healthy and not policy.limits_fail_open:
            raise ApiError(503, "Rate limits cannot be checked right now (shared state is unavailable).",
                           code="limits_unavailable", headers={"retry-after": "5"})
        counted: list[str] = []
        headers: dict[str, str] = {}
        for scope, name, rpm, tpm in checks:
            if rpm:
                result = await self.store.window_take(f"rl:{scope}:{name}:req", 1, rpm, WINDOW)
                self._check(result, scope, "requests", headers)
            if tpm:
                result = await self.store.window_take(f"rl:{scope}:{name}:tok", tokens, tpm, WINDOW)
                self._check(result, scope, "tokens", headers)
                counted.append(f"rl:{scope}:{name}:tok")
        return counted

    @staticmethod
    def _check(result: WindowResult, scope: str, unit: str, headers: dict) -> None:
        headers[f"x-ratelimit-limit-{unit}"] = str(int(result.limit))
        headers[f"x-ratelimit-remaining-{unit}"] = str(max(0, int(result.limit - result.used)))
        if not result.allowed:
            metrics.RATE_LIMITED.labels(scope).inc()
            wait = max(1, math.ceil(result.reset_s))
            headers[f"x-ratelimit-reset-{unit}"] = f"{result.reset_s:.3f}s"
            headers["retry-after"] = str(wait)
            raise ApiError(429, f"Rate limit reached for {scope} ({unit} per minute: {int(result.limit)}). "
                                f"Try again in {wait}s.", code="rate_limit_exceeded", headers=dict(headers))

    async def correct(self, counted: list[str], estimated: int, actual: int) -> None:
        if counted and actual != estimated:
            for key in counted:
                await self.store.window_adjust(key, actual - estimated, WINDOW)
