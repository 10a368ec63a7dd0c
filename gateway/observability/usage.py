"""Usage and cost totals per key, route, model, tier and day, kept in the `Store` (shared with Redis).

Requests add to a local buffer; a background task flushes the sums to the store once a second, so the
hot path never waits on the store and Redis sees one update per record and second, not four per request.
"""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.observability import metrics
from gateway.state.base import Store

log = logging.getLogger("gateway.usage")


class Accountant:
    def __init__(self, store: Store, flush_every: float = 1.0) -> None:
        self.store = store
        self.flush_every = flush_every
        self._pending: dict[str, dict[str, float]] = {}
        self._task: asyncio.Task | None = None

    def record(self, *, key: str | None, route: str, model: str, tier: str, prompt_tokens: int,
               completion_tokens: int, cost: float, reference_cost: float, degraded: bool) -> None:
        scope = f"usage:{time.strftime('%Y-%m-%d', time.gmtime())}:"
        fields = {"requests": 1, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "cost_usd": cost, "reference_cost_usd": reference_cost,
                  "savings_usd": max(0.0, reference_cost - cost), "degraded": 1 if degraded else 0}
        for record in (f"key={key or '-'}", f"route={route}", f"model={model}|tier={tier}", "all"):
            pending = self._pending.setdefault(scope + record, {})
            for name, value in fields.items():
                pending[name] = pending.get(name, 0.0) + value
        if prompt_tokens or completion_tokens:
            metrics.token_usage(model, prompt_tokens, completion_tokens)
        if cost:
            metrics.COST.labels(route, tier, model).inc(cost)
        if reference_cost > cost:
            metrics.SAVINGS.labels(route).inc(reference_cost - cost)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_every)
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for key, fields in pending.items():
            try:
                await self.store.counters_add(key, fields)
            except Exception:  # noqa: BLE001 - accounting must never break serving
                log.exception("usage flush failed for %s", key)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.flush()

    async def report(self, days: int = 7) -> dict:
        """Totals per day and scope, newest day first."""
        await self.flush()
        result: dict[str, dict] = {}
        for key in sorted(await self.store.counters_keys("usage:"), reverse=True):
            _, day, scope = key.split(":", 2)
            if len(result) >= days and day not in result:
                continue
            result.setdefault(day, {})[scope] = await self.store.counters_get(key)
        return result
