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
_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "reference_cost_usd", "savings_usd",
           "degraded", "cloud_cost_usd")


class Accountant:
    def __init__(self, store: Store, flush_every: float = 1.0) -> None:
        self.store = store
        self.flush_every = flush_every
        self._pending: dict[tuple, list] = {}   # (day, key, route, model, tier) -> sums in _FIELDS order
        self._task: asyncio.Task | None = None

    def record(self, *, key: str | None, route: str, model: str, tier: str, prompt_tokens: int,
               completion_tokens: int, cost: float, reference_cost: float, degraded: bool) -> None:
        # One small update per request; the four scopes are expanded at flush time.
        group = (int(time.time() // 86400), key or "-", route, model, tier)
        sums = self._pending.get(group)
        if sums is None:
            sums = self._pending[group] = [0, 0, 0, 0.0, 0.0, 0.0, 0, 0.0]
        sums[0] += 1
        sums[1] += prompt_tokens
        sums[2] += completion_tokens
        sums[3] += cost
        sums[4] += reference_cost
        sums[5] += max(0.0, reference_cost - cost)
        sums[6] += 1 if degraded else 0
        if tier == "cloud":
            sums[7] += cost  # what daily cloud budgets count (routing/budget.py)
        if prompt_tokens or completion_tokens:
            metrics.token_usage(model, prompt_tokens, completion_tokens)
        if cost:
            metrics.child(metrics.COST, route, tier, model).inc(cost)
        if reference_cost > cost:
            metrics.child(metrics.SAVINGS, route).inc(reference_cost - cost)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_every)
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        records: dict[str, dict[str, float]] = {}
        for (day, key, route, model, tier), sums in pending.items():
            scope = f"usage:{time.strftime('%Y-%m-%d', time.gmtime(day * 86400))}:"
            fields = dict(zip(_FIELDS, sums))
            for record in (f"key={key}", f"route={route}", f"model={model}|tier={tier}", "all"):
                total = records.setdefault(scope + record, dict.fromkeys(_FIELDS, 0.0))
                for name, value in fields.items():
                    total[name] += value
        for key, fields in records.items():
            try:
                await self.store.counters_add(key, fields)
            except Exception:  # noqa: BLE001 - accounting must never break serving
                log.exception("usage flush failed for %s", key)

    async def cloud_spent(self, scope: str) -> float:
        """Today's (UTC) cloud cost of one scope, "key=NAME" or "route=NAME": the shared total plus what this
        process has not flushed yet."""
        day = int(time.time() // 86400)
        at = 1 if scope.startswith("key=") else 2
        name = scope.split("=", 1)[1]
        local = sum(sums[7] for group, sums in self._pending.items() if group[0] == day and group[at] == name)
        stored = await self.store.counters_get(f"usage:{time.strftime('%Y-%m-%d', time.gmtime(day * 86400))}:{scope}")
        return local + float(stored.get("cloud_cost_usd", 0.0))

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
