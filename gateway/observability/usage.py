"""Usage and cost totals per key, route, model, tier and day, kept in the `Store` (shared with Redis)."""

from __future__ import annotations

import time

from gateway.observability import metrics
from gateway.state.base import Store


class Accountant:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def record(self, *, key: str | None, route: str, model: str, tier: str, prompt_tokens: int,
                     completion_tokens: int, cost: float, reference_cost: float, degraded: bool) -> None:
        day = time.strftime("%Y-%m-%d", time.gmtime())
        fields = {"requests": 1, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "cost_usd": cost, "reference_cost_usd": reference_cost,
                  "savings_usd": max(0.0, reference_cost - cost), "degraded": 1 if degraded else 0}
        scope = f"usage:{day}:"
        for record in (f"key={key or '-'}", f"route={route}", f"model={model}|tier={tier}", "all"):
            await self.store.counters_add(scope + record, fields)
        if prompt_tokens or completion_tokens:
            metrics.TOKENS.labels(model, "input").inc(prompt_tokens)
            metrics.TOKENS.labels(model, "output").inc(completion_tokens)
        if cost:
            metrics.COST.labels(route, tier, model).inc(cost)
        if reference_cost > cost:
            metrics.SAVINGS.labels(route).inc(reference_cost - cost)

    async def report(self, days: int = 7) -> dict:
        """Totals per day and scope, newest day first."""
        result: dict[str, dict] = {}
        for key in sorted(await self.store.counters_keys("usage:"), reverse=True):
            _, day, scope = key.split(":", 2)
            if len(result) >= days and day not in result:
                continue
            result.setdefault(day, {})[scope] = await self.store.counters_get(key)
        return result
