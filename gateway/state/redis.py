"""Redis-backed `Store`: state shared between gateway replicas, with the `MemoryStore` semantics.

Keys
    ``<prefix>:v1:<kind>:<key>`` where kind is ``win``/``wsum`` (sliding window: a sorted set of
    ``"ts:amount:uuid"`` members scored by server time, plus its running sum), ``brkf``/``brko``
    (breaker: failure times, open-until), ``cache`` and ``cnt`` (a hash of counters). ``v1`` is the
    schema version: bump it when the layout changes so old and new replicas never misread each other.

Atomicity and clocks
    Every read-modify-write is one Lua script (``register_script``; EVALSHA, re-loaded on NOSCRIPT after
    a Redis restart). Scripts read ``redis.call('TIME')``, so replicas with skewed clocks agree on window
    edges, ``reset_s`` and ``open_until`` (which are therefore in Redis server epoch seconds).
    Window keys expire ``window_s`` after their last write, breaker keys ``window_s + cooldown_s +
    breaker_idle_ttl_s`` after their last failure (an idle half-open breaker then reads as closed),
    cache entries with their TTL. Counters never expire.

Breaker views are cached locally
    The gateway reads `breaker_view` for every target on every request, so views are kept in a small
    local cache refreshed at most every ``breaker_cache_s`` (default 0.2 s) per key; this replica's own
    `breaker_failure` / `breaker_success` update that cache at once. A breaker opened (or closed) by
    another replica is therefore seen here within ``breaker_cache_s``. Concurrent refreshes of one key
    share a single round trip. A cached view's state is re-derived from the elapsed time, so an open
    breaker turns half-open on time without asking Redis.

Redis faults never fail a request
    Each Redis operation is bounded by ``timeout_s`` (socket, connect, pool wait and an overall
    ``asyncio.timeout``) and any error or timeout answers that call from a local `MemoryStore`
    (``fallbacks`` counts such calls). A breaker guards Redis itself: after ``failure_threshold``
    consecutive failures the store is *degraded* (``healthy = False``, ``degraded_since`` set) and
    every call goes straight to the local store with no Redis latency at all for ``retry_s``; then a
    single background PING probes Redis (calls still answer locally meanwhile) and, when it answers,
    calls go to Redis again (`ping()` succeeding does the same). While degraded, windows, cache and
    counters live only in this process: windows still count locally, so limits keep holding per
    replica. On recovery they are merged back, in the background: what each window touched while
    degraded still counts is added to its Redis window (at the merge time, so it is held a little
    longer than it would have been), and the usage counters are added to the Redis counters, so limits
    and usage are not undercounted after an outage. A merge that fails stays pending for the next
    recovery. Cache entries are not merged (they are only a cache). This replica's breaker
    failures/successes are also mirrored into the local store, so it still knows the targets it saw
    failing when Redis goes away.

    Fail-open vs fail-closed for limits is the caller's choice: check ``healthy`` and refuse when
    configured fail-closed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis import exceptions as aioredis_exceptions
from redis.backoff import NoBackoff

from gateway.state.base import BreakerView, WindowResult
from gateway.state.memory import MemoryStore

log = logging.getLogger(__name__)

SCHEMA = "v1"

# Shared Lua helpers (prepended to each script).
_LUA_LIB = r"""
local function fmt(x) return string.format('%.17g', x) end
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function amount_of(member)
  return tonumber(string.match(member, '^[^:]*:([^:]*):')) or 0
end
-- Drop window entries at or before `cutoff` and return the sum of what is left.
local function prune(zkey, skey, cutoff)
  local s = redis.call('GET', skey)
  local old = redis.call('ZRANGEBYSCORE', zkey, '-inf', fmt(cutoff))
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', zkey, '-inf', fmt(cutoff)) end
  if redis.call('ZCARD', zkey) == 0 then return 0 end  -- also resets float drift of the running sum
  local used = 0
  if s then
    used = tonumber(s) or 0
    for i = 1, #old do used = used - amount_of(old[i]) end
    if #old > 0 then redis.call('SET', skey, fmt(used), 'KEEPTTL') end
  else  -- running sum lost (should not happen): recount
    for _, m in ipairs(redis.call('ZRANGE', zkey, 0, -1)) do used = used + amount_of(m) end
  end
  return used
end
local function breaker_state(ou, now)
  if ou > now then return 'open' end
  if ou > 0 then return 'half_open' end
  return 'closed'
end
"""

# KEYS: zset, sum. ARGV: amount, limit, window_s, window_ms, uid. -> {allowed, used, reset, now}
_WINDOW_TAKE = _LUA_LIB + r"""
local zkey, skey = KEYS[1], KEYS[2]
local amount, limit, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = server_now()
local used = prune(zkey, skey, now - window)
if used + amount > limit and amount > 0 then
  -- Room frees up as the oldest entries leave the window.
  local need, freed, reset = used + amount - limit, 0, window
  local start, done = 0, false
  while not done do
    local batch = redis.call('ZRANGE', zkey, start, start + 99, 'WITHSCORES')
    if #batch == 0 then break end
    for i = 1, #batch, 2 do
      freed = freed + amount_of(batch[i])
      if freed >= need then
        reset = tonumber(batch[i + 1]) + window - now
        done = true
        break
      end
    end
    start = start + 100
  end
  if reset < 0.001 then reset = 0.001 end
  return {0, fmt(used), fmt(reset), fmt(now)}
end
redis.call('ZADD', zkey, fmt(now), string.format('%.6f', now) .. ':' .. ARGV[1] .. ':' .. ARGV[5])
redis.call('SET', skey, fmt(used + amount), 'PX', ARGV[4])
redis.call('PEXPIRE', zkey, ARGV[4])
return {1, fmt(used + amount), '0', fmt(now)}
"""

# KEYS: zset, sum. ARGV: delta, window_s, window_ms, uid.
_WINDOW_ADJUST = _LUA_LIB + r"""
local zkey, skey = KEYS[1], KEYS[2]
local delta, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = server_now()
local used = prune(zkey, skey, now - window)
redis.call('ZADD', zkey, fmt(now), string.format('%.6f', now) .. ':' .. ARGV[1] .. ':' .. ARGV[4])
redis.call('SET', skey, fmt(used + delta), 'PX', ARGV[3])
redis.call('PEXPIRE', zkey, ARGV[3])
return fmt(used + delta)
"""

# KEYS: failures zset, open-until string. ARGV: threshold, window_s, cooldown_s, uid, ttl_ms.
# -> {state, open_until, failures, now}
_BREAKER_FAILURE = _LUA_LIB + r"""
local fkey, okey = KEYS[1], KEYS[2]
local threshold, window, cooldown = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = server_now()
redis.call('ZREMRANGEBYSCORE', fkey, '-inf', fmt(now - window))
redis.call('ZADD', fkey, fmt(now), string.format('%.6f', now) .. ':' .. ARGV[4])
local n = redis.call('ZCARD', fkey)
local ou = tonumber(redis.call('GET', okey) or '0') or 0
local was_half_open = ou > 0 and ou <= now
if was_half_open or n >= threshold then ou = now + cooldown end
redis.call('PEXPIRE', fkey, ARGV[5])
if ou > 0 then redis.call('SET', okey, fmt(ou), 'PX', ARGV[5]) end
return {breaker_state(ou, now), fmt(ou), n, fmt(now)}
"""

# KEYS: failures zset, open-until string. -> {state, open_until, failures, now}
_BREAKER_VIEW = _LUA_LIB + r"""
local now = server_now()
local ou = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local n = redis.call('ZCARD', KEYS[1])
return {breaker_state(ou, now), fmt(ou), n, fmt(now)}
"""


class RedisUnavailable(Exception):
    """Internal: Redis is skipped (its breaker is open)."""


@dataclass(slots=True)
class _CachedView:
    fetched: float        # time.monotonic() when read
    server_now: float     # Redis server time at that read
    open_until: float
    failures: int

    def view(self, mono_now: float) -> BreakerView:
        now = self.server_now + (mono_now - self.fetched)
        if self.open_until > now:
            return BreakerView("open", self.open_until, self.failures)
        if self.open_until:
            return BreakerView("half_open", self.open_until, self.failures)
        return BreakerView("closed", 0.0, self.failures)


def _glob_escape(s: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)


class RedisStore:
    """`Store` on Redis with a local `MemoryStore` fallback (see the module docstring)."""

    def __init__(
        self,
        url: str,
        prefix: str = "gw",
        timeout_s: float = 0.05,
        *,
        breaker_cache_s: float = 0.2,
        failure_threshold: int = 3,
        retry_s: float = 5.0,
        max_connections: int = 64,
        breaker_idle_ttl_s: float = 3600.0,
        scan_timeout_s: float = 2.0,
        local: MemoryStore | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.breaker_cache_s = breaker_cache_s
        self.failure_threshold = max(1, failure_threshold)
        self.retry_s = retry_s
        self.breaker_idle_ttl_s = breaker_idle_ttl_s
        self.scan_timeout_s = scan_timeout_s
        self._ns = f"{prefix}:{SCHEMA}:"

        self.healthy = True
        self.fallbacks = 0                       # calls answered from local state
        self.degraded_since: float | None = None  # epoch seconds when Redis was given up on
        self.last_error: str | None = None
        self._consecutive_failures = 0
        self._skip_until = 0.0                   # monotonic; Redis is not tried before this
        self._probe_task: asyncio.Task | None = None
        self._closed = False

        self.local = local if local is not None else MemoryStore()
        # Touched locally while degraded, merged into Redis on recovery: window key -> window_s; counter keys.
        self._pending_windows: dict[str, float] = {}
        self._pending_counters: set[str] = set()
        self._merge_task: asyncio.Task | None = None
        self.merged = 0                          # window and counter records merged back so far
        self._views: dict[str, _CachedView] = {}
        self._view_gen: dict[str, int] = {}
        self._view_tasks: dict[str, asyncio.Future] = {}
        self._max_views = 10_000

        self._pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,                   # wait for a free pooled connection
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._r = aioredis.Redis(connection_pool=self._pool)
        self._s_take = self._r.register_script(_WINDOW_TAKE)
        self._s_adjust = self._r.register_script(_WINDOW_ADJUST)
        self._s_bfail = self._r.register_script(_BREAKER_FAILURE)
        self._s_bview = self._r.register_script(_BREAKER_VIEW)

    # -- Redis breaker -----------------------------------------------------------------------------
    def _k(self, kind: str, key: str) -> str:
        return f"{self._ns}{kind}:{key}"

    def _redis_usable(self) -> bool:
        """False while degraded; starts one background probe once `retry_s` has passed."""
        if self.healthy:
            return True
        if time.monotonic() >= self._skip_until and self._probe_task is None and not self._closed:
            self._probe_task = asyncio.get_running_loop().create_task(self._probe())
        return False

    async def _probe(self) -> None:
        try:
            await self.ping()
        finally:
            self._probe_task = None

    def _on_success(self) -> None:
        self._consecutive_failures = 0
        if not self.healthy:
            log.warning("redis store: %s reachable again after %.1f s; leaving local fallback",
                        self.url, time.time() - (self.degraded_since or time.time()))
            self.healthy = True
            self.degraded_since = None
            self.last_error = None
            if (self._pending_windows or self._pending_counters) and self._merge_task is None and not self._closed:
                self._merge_task = asyncio.get_running_loop().create_task(self._merge_back())

    async def _merge_back(self) -> None:
        """Add what was counted locally while degraded to Redis (see the module docstring)."""
        merged = 0
        try:
            for key, window_s in list(self._pending_windows.items()):
                amount = self.local.window_drain(key, window_s)
                del self._pending_windows[key]
                if amount:
                    await self.window_adjust(key, amount, window_s)  # back to local + pending if Redis fails
                    merged += key not in self._pending_windows
            for key in list(self._pending_counters):
                self._pending_counters.discard(key)
                fields = self.local.counters_pop(key)
                await self.counters_add(key, fields)
                merged += key not in self._pending_counters
        finally:
            self._merge_task = None
            self.merged += merged
            if merged:
                log.warning("redis store: merged %d window and counter records counted locally back into Redis", merged)

    def _on_failure(self, exc: BaseException) -> None:
        self._consecutive_failures += 1
        self.last_error = f"{type(exc).__name__}: {str(exc) or f'no answer within {self.timeout_s} s'}"
        # A timeout means Redis is stalled: give up on it at once, so that no request pays the timeout
        # more than once. Refused connections cost nothing and are counted up to the threshold.
        stalled = isinstance(exc, (TimeoutError, asyncio.TimeoutError, aioredis_exceptions.TimeoutError))
        if stalled or self._consecutive_failures >= self.failure_threshold:
            self._skip_until = time.monotonic() + self.retry_s
            if self.healthy:
                self.healthy = False
                self.degraded_since = time.time()
                log.warning("redis store: %s failing (%s); using local state, retry in %.1f s",
                            self.url, self.last_error, self.retry_s)

    async def _call(self, fn, *args, **kwargs):
        """Run one Redis operation within `timeout_s`; raise RedisUnavailable on any failure."""
        if not self._redis_usable():
            raise RedisUnavailable()
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any Redis fault means local fallback
            self._on_failure(exc)
            raise RedisUnavailable() from exc
        self._on_success()
        return result

    async def ping(self) -> bool:
        """True when Redis answers within `timeout_s` (always tries, even while degraded)."""
        if self._closed:
            return False
        try:
            async with asyncio.timeout(self.timeout_s):
                ok = bool(await self._r.ping())
        except Exception as exc:  # noqa: BLE001
            self._on_failure(exc)
            return False
        if ok:
            self._on_success()
        return ok

    # -- sliding windows ---------------------------------------------------------------------------
    async def window_take(self, key: str, amount: float, limit: float, window_s: float) -> WindowResult:
        uid = uuid.uuid4().hex
        try:
            res = await self._call(
                self._s_take,
                [self._k("win", key), self._k("wsum", key)],
                [repr(float(amount)), repr(float(limit)), repr(float(window_s)),
                 max(1, math.ceil(window_s * 1000)), uid],
            )
        except RedisUnavailable:
            self.fallbacks += 1
            self._pending_windows[key] = window_s
            return await self.local.window_take(key, amount, limit, window_s)
        return WindowResult(bool(int(res[0])), float(res[1]), limit, float(res[2]))

    async def window_adjust(self, key: str, delta: float, window_s: float) -> None:
        try:
            await self._call(
                self._s_adjust,
                [self._k("win", key), self._k("wsum", key)],
                [repr(float(delta)), repr(float(window_s)), max(1, math.ceil(window_s * 1000)),
                 uuid.uuid4().hex],
            )
        except RedisUnavailable:
            self.fallbacks += 1
            self._pending_windows[key] = window_s
            await self.local.window_adjust(key, delta, window_s)

    # -- breakers ----------------------------------------------------------------------------------
    def _remember(self, key: str, res) -> BreakerView:
        state, ou, n, now = (res[0].decode() if isinstance(res[0], bytes) else res[0],
                             float(res[1]), int(res[2]), float(res[3]))
        if len(self._views) >= self._max_views and key not in self._views:
            self._views.clear()
            self._view_gen.clear()
        self._views[key] = _CachedView(time.monotonic(), now, ou, n)
        return BreakerView(state, ou if state != "closed" else 0.0, n)

    def _own_update(self, key: str) -> None:
        # Any refresh already in flight for this key read older state: don't let it overwrite ours.
        self._view_gen[key] = self._view_gen.get(key, 0) + 1

    async def breaker_failure(self, key: str, threshold: int, window_s: float, cooldown_s: float) -> BreakerView:
        local_view = await self.local.breaker_failure(key, threshold, window_s, cooldown_s)
        self._own_update(key)
        ttl_ms = max(1, math.ceil((window_s + cooldown_s + self.breaker_idle_ttl_s) * 1000))
        try:
            res = await self._call(
                self._s_bfail,
                [self._k("brkf", key), self._k("brko", key)],
                [int(threshold), repr(float(window_s)), repr(float(cooldown_s)), uuid.uuid4().hex, ttl_ms],
            )
        except RedisUnavailable:
            self.fallbacks += 1
            self._views.pop(key, None)
            return local_view
        return self._remember(key, res)

    async def breaker_success(self, key: str) -> BreakerView:
        await self.local.breaker_success(key)
        self._own_update(key)
        try:
            await self._call(self._r.delete, self._k("brkf", key), self._k("brko", key))
        except RedisUnavailable:
            self.fallbacks += 1
            self._views.pop(key, None)
            return BreakerView("closed", 0.0, 0)
        self._views[key] = _CachedView(time.monotonic(), 0.0, 0.0, 0)
        return BreakerView("closed", 0.0, 0)

    async def breaker_view(self, key: str) -> BreakerView:
        mono = time.monotonic()
        cached = self._views.get(key)
        if cached is not None and mono - cached.fetched < self.breaker_cache_s:
            return cached.view(mono)
        if not self._redis_usable():
            self.fallbacks += 1
            return await self.local.breaker_view(key)
        task = self._view_tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(self._refresh_view(key))
            self._view_tasks[key] = task
            task.add_done_callback(lambda _t, k=key: self._view_tasks.pop(k, None))  # type: ignore[misc]
        return await asyncio.shield(task)

    async def _refresh_view(self, key: str) -> BreakerView:
        gen = self._view_gen.get(key, 0)
        try:
            res = await self._call(self._s_bview, [self._k("brkf", key), self._k("brko", key)], [])
        except RedisUnavailable:
            self.fallbacks += 1
            return await self.local.breaker_view(key)
        if self._view_gen.get(key, 0) != gen:
            cached = self._views.get(key)
            if cached is not None:
                return cached.view(time.monotonic())
        return self._remember(key, res)

    # -- cache -------------------------------------------------------------------------------------
    async def cache_get(self, key: str) -> bytes | None:
        try:
            return await self._call(self._r.get, self._k("cache", key))
        except RedisUnavailable:
            self.fallbacks += 1
            return await self.local.cache_get(key)

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None:
        k = self._k("cache", key)
        ttl_ms = math.ceil(ttl_s * 1000)
        try:
            if ttl_ms <= 0:
                await self._call(self._r.delete, k)
            else:
                await self._call(self._r.set, k, value, px=ttl_ms)
        except RedisUnavailable:
            self.fallbacks += 1
            await self.local.cache_set(key, value, ttl_s)

    # -- counters ----------------------------------------------------------------------------------
    async def _hincr(self, k: str, fields: dict[str, float]) -> None:
        pipe = self._r.pipeline(transaction=True)
        for name, value in fields.items():
            pipe.hincrbyfloat(k, name, float(value))
        await pipe.execute()

    async def counters_add(self, key: str, fields: dict[str, float]) -> None:
        if not fields:
            return
        try:
            await self._call(self._hincr, self._k("cnt", key), fields)
        except RedisUnavailable:
            self.fallbacks += 1
            self._pending_counters.add(key)
            await self.local.counters_add(key, fields)

    async def counters_get(self, key: str) -> dict[str, float]:
        try:
            raw = await self._call(self._r.hgetall, self._k("cnt", key))
        except RedisUnavailable:
            self.fallbacks += 1
            return await self.local.counters_get(key)
        return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}

    async def counters_keys(self, prefix: str) -> list[str]:
        """SCAN for counter records; each SCAN step is bounded by `timeout_s`, the whole walk by
        `scan_timeout_s`."""
        base = self._k("cnt", "")
        match = _glob_escape(base + prefix) + "*"
        keys: set[str] = set()
        cursor = 0
        deadline = time.monotonic() + self.scan_timeout_s
        try:
            while True:
                cursor, batch = await self._call(self._r.scan, cursor, match=match, count=1000)
                keys.update((b.decode() if isinstance(b, bytes) else b)[len(base):] for b in batch)
                if int(cursor) == 0:
                    break
                if time.monotonic() > deadline:
                    self._on_failure(TimeoutError(f"SCAN took over {self.scan_timeout_s} s"))
                    raise RedisUnavailable()
        except RedisUnavailable:
            self.fallbacks += 1
            return await self.local.counters_keys(prefix)
        return sorted(keys)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def aclose(self) -> None:
        self._closed = True
        if self._merge_task is not None:  # let a running merge finish: it is bounded by timeout_s per record
            try:
                await self._merge_task
            except BaseException:  # noqa: BLE001
                pass
        if self._probe_task is not None:
            self._probe_task.cancel()
            try:
                await self._probe_task
            except BaseException:  # noqa: BLE001
                pass
            self._probe_task = None
        for task in list(self._view_tasks.values()):
            task.cancel()
        try:
            await self._r.aclose()
        finally:
            await self._pool.disconnect()
        await self.local.aclose()
