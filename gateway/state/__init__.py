"""Shared state: the `Store` protocol, the in-memory store and the Redis store."""

from __future__ import annotations

from gateway.state.base import BreakerView, Store, WindowResult
from gateway.state.memory import MemoryStore

__all__ = ["BreakerView", "MemoryStore", "Store", "WindowResult", "make_store"]

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def make_store(url: str | None, **kw) -> Store:
    """None or "" -> `MemoryStore()`; a redis://, rediss:// or unix:// URL -> `RedisStore(url, **kw)`
    (keyword arguments such as prefix, timeout_s, breaker_cache_s go to RedisStore)."""
    if not url:
        return MemoryStore()
    if url.lower().startswith(_REDIS_SCHEMES):
        from gateway.state.redis import RedisStore  # imported lazily: MemoryStore users need no redis

        return RedisStore(url, **kw)
    raise ValueError(f"unsupported state store URL {url!r}: use redis://, rediss:// or unix://")
