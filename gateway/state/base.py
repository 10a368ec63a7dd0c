"""The `Store` protocol: all state shared between requests (and, with Redis, between replicas).

Every method is a single atomic operation, so the Redis implementation can run each as one Lua script.
Implementations never raise to callers for an unreachable backend: `RedisStore` falls back to local state
and reports `healthy = False` (see `redis.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class WindowResult:
    allowed: bool
    used: float          # amount counted in the window, including this call if allowed
    limit: float
    reset_s: float       # seconds until the window frees enough room (0 when allowed)


@dataclass(slots=True)
class BreakerView:
    state: str            # "closed" | "open" | "half_open"
    open_until: float     # epoch seconds; 0 when closed
    failures: int


class Store(Protocol):
    healthy: bool  # False while a shared backend is unreachable and local state is used

    async def window_take(self, key: str, amount: float, limit: float, window_s: float) -> WindowResult:
        """Sliding-window counter: add `amount` if it fits under `limit` over the last `window_s`."""
        ...

    async def window_adjust(self, key: str, delta: float, window_s: float) -> None:
        """Correct a counted amount afterwards (estimated tokens replaced by real usage); never rejects."""
        ...

    async def breaker_failure(self, key: str, threshold: int, window_s: float, cooldown_s: float) -> BreakerView:
        """Count a failure; open the breaker when `threshold` failures fell within `window_s`,
        or at once when it was half-open."""
        ...

    async def breaker_success(self, key: str) -> BreakerView:
        """A success closes the breaker and clears its failures."""
        ...

    async def breaker_view(self, key: str) -> BreakerView:
        """Current state: open until `open_until`, then half-open until the next success or failure."""
        ...

    async def cache_get(self, key: str) -> bytes | None: ...

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def counters_add(self, key: str, fields: dict[str, float]) -> None:
        """Add to named numeric fields of one record (usage and cost totals)."""
        ...

    async def counters_get(self, key: str) -> dict[str, float]: ...

    async def counters_keys(self, prefix: str) -> list[str]:
        """Keys of counter records starting with `prefix`."""
        ...

    async def aclose(self) -> None: ...
