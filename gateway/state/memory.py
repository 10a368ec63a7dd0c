"""In-memory `Store`: the default for one process. Same semantics as the Redis store."""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict

from gateway.state.base import BreakerView, WindowResult


class MemoryStore:
    healthy = True

    def __init__(self, max_cache_entries: int = 10_000, clock=time.time) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[list[float], list[float]]] = {}
        self._breakers: dict[str, list] = {}  # key -> [failure times, open_until, half_open]
        self._cache: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_cache = max_cache_entries
        self._counters: dict[str, dict[str, float]] = {}

    # -- sliding windows -------------------------------------------------------------------------
    def _window(self, key: str, window_s: float, now: float) -> tuple[list[float], list[float]]:
        times, amounts = self._windows.setdefault(key, ([], []))
        cut = bisect.bisect_right(times, now - window_s)
        if cut:
            del times[:cut]
            del amounts[:cut]
        return times, amounts

    async def window_take(self, key: str, amount: float, limit: float, window_s: float) -> WindowResult:
        now = self._clock()
        times, amounts = self._window(key, window_s, now)
        used = sum(amounts)
        if used + amount > limit and amount > 0:
            # Room frees up as the oldest entries leave the window.
            need, freed, reset = used + amount - limit, 0.0, window_s
            for t, a in zip(times, amounts):
                freed += a
                if freed >= need:
                    reset = t + window_s - now
                    break
            return WindowResult(False, used, limit, max(reset, 0.001))
        times.append(now)
        amounts.append(amount)
        return WindowResult(True, used + amount, limit, 0.0)

    async def window_adjust(self, key: str, delta: float, window_s: float) -> None:
        now = self._clock()
        times, amounts = self._window(key, window_s, now)
        times.append(now)
        amounts.append(delta)

    def window_drain(self, key: str, window_s: float) -> float:
        """Remove a window and return what it still counts (for merging it into a shared store)."""
        times, amounts = self._window(key, window_s, self._clock())
        self._windows.pop(key, None)
        return sum(amounts)

    # -- breakers ----------------------------------------------------------------------------------
    def _view(self, key: str, now: float) -> BreakerView:
        entry = self._breakers.get(key)
        if entry is None:
            return BreakerView("closed", 0.0, 0)
        failures, open_until, _ = entry
        if open_until > now:
            return BreakerView("open", open_until, len(failures))
        if open_until:
            return BreakerView("half_open", open_until, len(failures))
        return BreakerView("closed", 0.0, len(failures))

    async def breaker_failure(self, key: str, threshold: int, window_s: float, cooldown_s: float) -> BreakerView:
        now = self._clock()
        entry = self._breakers.setdefault(key, [[], 0.0, False])
        failures = [t for t in entry[0] if t > now - window_s]
        failures.append(now)
        entry[0] = failures
        was_half_open = entry[1] and entry[1] <= now
        if was_half_open or len(failures) >= threshold:
            entry[1] = now + cooldown_s
        return self._view(key, now)

    async def breaker_success(self, key: str) -> BreakerView:
        self._breakers.pop(key, None)
        return BreakerView("closed", 0.0, 0)

    async def breaker_view(self, key: str) -> BreakerView:
        return self._view(key, self._clock())

    # -- cache -------------------------------------------------------------------------------------
    async def cache_get(self, key: str) -> bytes | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < self._clock():
            self._cache.pop(key, None)
            return None
        self._cache.move_to_end(key)
        return value

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._cache[key] = (self._clock() + ttl_s, value)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_cache:
            self._cache.popitem(last=False)

    # -- counters ----------------------------------------------------------------------------------
    async def counters_add(self, key: str, fields: dict[str, float]) -> None:
        record = self._counters.setdefault(key, {})
        for name, value in fields.items():
            record[name] = record.get(name, 0.0) + value

    async def counters_get(self, key: str) -> dict[str, float]:
        return dict(self._counters.get(key, {}))

    def counters_pop(self, key: str) -> dict[str, float]:
        """Remove a counter record and return it (for merging it into a shared store)."""
        return self._counters.pop(key, {})

    async def counters_keys(self, prefix: str) -> list[str]:
        return [k for k in self._counters if k.startswith(prefix)]

    async def aclose(self) -> None:
        return None
