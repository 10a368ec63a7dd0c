"""RedisStore: MemoryStore semantics on a real redis-server, two replicas, and Redis faults."""

from __future__ import annotations

import asyncio
import time

import pytest

try:
    from tests.redis_fixture import REDIS_SERVER, SKIP_REASON, free_port, kill_redis, redis_server, start_redis, stop_redis
except ImportError:  # tests/ on sys.path (pytest's rootdir-less import mode)
    from redis_fixture import REDIS_SERVER, SKIP_REASON, free_port, kill_redis, redis_server, start_redis, stop_redis

from gateway.state import MemoryStore, make_store
from gateway.state.redis import RedisStore

pytestmark = [pytest.mark.redis, pytest.mark.skipif(REDIS_SERVER is None, reason=SKIP_REASON)]

__all__ = ["redis_server"]  # the imported fixture is used by name

# Generous for correctness tests on a loaded CI machine; fault tests use the short default.
OK_TIMEOUT = 5.0


@pytest.fixture
async def store(redis_server):
    s = RedisStore(redis_server, prefix="t", timeout_s=OK_TIMEOUT)
    yield s
    await s.aclose()


@pytest.fixture
async def two(redis_server):
    a = RedisStore(redis_server, prefix="t", timeout_s=OK_TIMEOUT, breaker_cache_s=0.2)
    b = RedisStore(redis_server, prefix="t", timeout_s=OK_TIMEOUT, breaker_cache_s=0.2)
    yield a, b
    await a.aclose()
    await b.aclose()


# -- windows --------------------------------------------------------------------------------------

async def test_window_matches_memory_store(store):
    mem = MemoryStore()
    for amount in [3, 4, 2, 5, 1, 0, 7, 1]:
        r, m = await store.window_take("k", amount, 10, 60), await mem.window_take("k", amount, 10, 60)
        assert (r.allowed, r.used, r.limit) == (m.allowed, m.used, m.limit), amount
        if not r.allowed:
            assert 59 < r.reset_s <= 60
        else:
            assert r.reset_s == 0.0
    assert store.healthy and store.fallbacks == 0


async def test_window_slides_and_reset_s(store):
    assert (await store.window_take("w", 3, 5, 0.6)).allowed
    await asyncio.sleep(0.3)
    assert (await store.window_take("w", 2, 5, 0.6)).allowed
    r = await store.window_take("w", 2, 5, 0.6)
    assert not r.allowed and r.used == 5
    assert 0.15 < r.reset_s < 0.35          # the first entry (3) leaves first and frees enough
    r = await store.window_take("w", 5, 5, 0.6)
    assert not r.allowed and 0.4 < r.reset_s < 0.65  # needs both entries gone
    await asyncio.sleep(r.reset_s + 0.05)
    r = await store.window_take("w", 5, 5, 0.6)
    assert r.allowed and r.used == 5


async def test_window_exact_with_two_replicas_concurrently(two):
    a, b = two
    results = await asyncio.gather(*[s.window_take("shared", 1, 25, 30) for _ in range(40) for s in (a, b)])
    assert sum(r.allowed for r in results) == 25
    assert max(r.used for r in results) == 25
    assert a.fallbacks == b.fallbacks == 0
    # float amounts too
    results = await asyncio.gather(*[s.window_take("f", 0.5, 7.5, 30) for _ in range(20) for s in (a, b)])
    assert sum(r.allowed for r in results) == 15


async def test_window_adjust(store):
    mem = MemoryStore()
    for s in (store, mem):
        assert (await s.window_take("a", 5, 10, 60)).allowed
        await s.window_adjust("a", 4, 60)          # real usage was 9
        r = await s.window_take("a", 2, 10, 60)
        assert not r.allowed and r.used == 9
        await s.window_adjust("a", -3, 60)         # over-estimate corrected
        r = await s.window_take("a", 2, 10, 60)
        assert r.allowed and r.used == 8
    await store.window_adjust("fresh", 3, 60)     # adjust on an empty window never rejects
    assert (await store.window_take("fresh", 8, 10, 60)).allowed is False


async def test_window_keys_are_prefixed_versioned_and_expire(redis_server):
    import redis.asyncio as aioredis

    s = RedisStore(redis_server, prefix="px", timeout_s=OK_TIMEOUT)
    r = aioredis.from_url(redis_server)
    try:
        await s.window_take("user:1", 1, 10, 0.3)
        assert await r.exists("px:v1:win:user:1") == 1
        assert 0 < await r.pttl("px:v1:win:user:1") <= 300
        await asyncio.sleep(0.4)
        assert await r.exists("px:v1:win:user:1", "px:v1:wsum:user:1") == 0
    finally:
        await r.aclose()
        await s.aclose()


# -- breakers -------------------------------------------------------------------------------------

async def test_breaker_state_machine_across_replicas(two):
    a, b = two
    assert (await b.breaker_view("t1")).state == "closed"        # b caches "closed"
    v = await a.breaker_failure("t1", 3, 10, 0.5)
    assert (v.state, v.failures) == ("closed", 1)
    await a.breaker_failure("t1", 3, 10, 0.5)
    v = await a.breaker_failure("t1", 3, 10, 0.5)
    assert v.state == "open" and v.failures == 3
    assert (await a.breaker_view("t1")).state == "open"         # own call updated the local cache
    assert (await b.breaker_view("t1")).state == "closed"       # b still within breaker_cache_s
    await asyncio.sleep(0.22)
    vb = await b.breaker_view("t1")
    assert vb.state == "open" and vb.open_until == pytest.approx(v.open_until)
    await asyncio.sleep(0.4)                                      # past open_until
    assert (await a.breaker_view("t1")).state == "half_open"    # derived locally from the cached view
    assert (await b.breaker_view("t1")).state == "half_open"
    v = await b.breaker_failure("t1", 3, 10, 0.5)                 # failure while half-open reopens at once
    assert v.state == "open"
    await asyncio.sleep(0.22)
    assert (await a.breaker_view("t1")).state == "open"
    v = await a.breaker_success("t1")
    assert (v.state, v.open_until, v.failures) == ("closed", 0.0, 0)
    assert (await a.breaker_view("t1")).state == "closed"
    await asyncio.sleep(0.22)
    assert (await b.breaker_view("t1")).state == "closed"


async def test_breaker_failures_outside_window_do_not_count(store):
    await store.breaker_failure("t2", 2, 0.2, 5)
    await asyncio.sleep(0.25)
    v = await store.breaker_failure("t2", 2, 0.2, 5)
    assert v.state == "closed" and v.failures == 1
    v = await store.breaker_failure("t2", 2, 0.2, 5)
    assert v.state == "open"


async def test_breaker_view_hot_path_is_cached(store):
    await store.breaker_view("t3")
    calls = 0
    real = store._s_bview

    async def counting(*a, **kw):
        nonlocal calls
        calls += 1
        return await real(*a, **kw)

    store._s_bview = counting
    await asyncio.gather(*[store.breaker_view("t3") for _ in range(200)])
    assert calls == 0
    await asyncio.sleep(0.21)
    await asyncio.gather(*[store.breaker_view("t3") for _ in range(200)])
    assert calls == 1                                             # one shared refresh


# -- cache and counters ---------------------------------------------------------------------------

async def test_cache_ttl(store):
    assert await store.cache_get("c") is None
    await store.cache_set("c", b"\x00value", 0.3)
    assert await store.cache_get("c") == b"\x00value"
    await asyncio.sleep(0.35)
    assert await store.cache_get("c") is None
    await store.cache_set("z", b"v", 0)
    assert await store.cache_get("z") is None


async def test_counters(two):
    a, b = two
    await asyncio.gather(*[s.counters_add("usage:k1:m", {"tokens": 10, "cost": 0.25}) for s in (a, b) for _ in range(5)])
    await a.counters_add("usage:k2:m", {"tokens": 1})
    await a.counters_add("other:[x]*", {"n": 1})
    assert await b.counters_get("usage:k1:m") == {"tokens": 100.0, "cost": 2.5}
    assert await b.counters_get("missing") == {}
    assert await b.counters_keys("usage:") == ["usage:k1:m", "usage:k2:m"]
    assert await b.counters_keys("other:[x]") == ["other:[x]*"]      # glob characters are literal
    assert await b.counters_keys("nope") == []


async def test_make_store(redis_server):
    assert isinstance(make_store(None), MemoryStore)
    assert isinstance(make_store(""), MemoryStore)
    s = make_store(redis_server, prefix="mk", timeout_s=OK_TIMEOUT)
    try:
        assert isinstance(s, RedisStore) and s.prefix == "mk"
        assert await s.ping()
    finally:
        await s.aclose()
    with pytest.raises(ValueError):
        make_store("http://example.invalid")


# -- faults ---------------------------------------------------------------------------------------

async def _timed(coro):
    t = time.perf_counter()
    result = await coro
    return result, time.perf_counter() - t


async def test_redis_killed_then_restarted():
    proc, url = start_redis()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    s = RedisStore(url, prefix="k", timeout_s=0.05, failure_threshold=2, retry_s=0.3)
    try:
        assert (await s.window_take("w", 1, 3, 60)).allowed
        await s.breaker_failure("t", 1, 60, 60)
        assert s.healthy and s.fallbacks == 0

        kill_redis(proc)
        durations = []
        results = []
        for _ in range(4):
            r, dt = await _timed(s.window_take("w", 1, 3, 60))  # counts locally now
            results.append(r.allowed)
            durations.append(dt)
        assert max(durations) < 0.15
        assert not s.healthy and s.degraded_since is not None and s.fallbacks == 4
        assert results == [True, True, True, False]                   # local window counts from zero
        (v, dt) = await _timed(s.breaker_view("t"))
        assert dt < 0.15 and v.state == "open"                        # own failure mirrored locally
        await s.cache_set("c", b"x", 60)
        assert await s.cache_get("c") == b"x"
        await s.counters_add("usage", {"requests": 2, "cost": 0.5})       # usage flushed while degraded
        assert not await s.ping()

        proc, url2 = start_redis(port)
        assert url2 == url
        deadline = time.monotonic() + 5
        while not s.healthy:
            assert time.monotonic() < deadline, "store did not go back to Redis"
            await s.window_take("other", 1, 100, 60)
            await asyncio.sleep(0.05)
        while s._merge_task is not None:                              # the merge-back runs in the background
            await asyncio.sleep(0.01)
        fallbacks = s.fallbacks
        # The restarted Redis is empty: what it holds now is exactly what was counted locally while degraded.
        r = await s.window_take("w", 1, 3, 60)
        assert not r.allowed and r.used == 3                          # the 3 taken during the outage still count
        assert await s.counters_get("usage") == {"requests": 2.0, "cost": 0.5}
        assert await s.local.counters_get("usage") == {}              # moved, not copied
        assert s.merged >= 3                                          # "w", "other" (windows) and "usage"
        assert await s.cache_get("c") is None                         # cache entries are not merged back
        assert s.fallbacks == fallbacks and s.degraded_since is None
        assert await s.ping()
    finally:
        await s.aclose()
        stop_redis(proc)


async def test_redis_down_from_the_start():
    s = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.05, failure_threshold=3, retry_s=60)
    try:
        for _ in range(5):
            r, dt = await _timed(s.window_take("w", 1, 10, 60))
            assert r.allowed and dt < 0.15
        assert not s.healthy and s.fallbacks == 5
    finally:
        await s.aclose()


async def test_stalled_redis_bounded_then_skipped():
    conns: list[asyncio.StreamWriter] = []

    async def never_answer(reader, writer):
        conns.append(writer)
        while await reader.read(4096):
            pass

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    timeout = 0.05
    s = RedisStore(f"redis://127.0.0.1:{port}/0", timeout_s=timeout, failure_threshold=3, retry_s=60)
    calls = [
        lambda: s.window_take("w", 1, 10, 60),
        lambda: s.window_adjust("w", 1, 60),
        lambda: s.breaker_failure("b", 5, 60, 30),
        lambda: s.breaker_success("b"),
        lambda: s.breaker_view("b2"),
        lambda: s.cache_set("c", b"v", 10),
        lambda: s.cache_get("c"),
        lambda: s.counters_add("n", {"x": 1}),
        lambda: s.counters_get("n"),
        lambda: s.counters_keys(""),
    ]
    try:
        # Until the Redis breaker opens, each call waits at most ~timeout_s.
        for i in range(3):
            _, dt = await _timed(calls[i]())
            assert dt < timeout + 0.1, (i, dt)
        assert not s.healthy and s.degraded_since is not None
        assert "TimeoutError" in (s.last_error or "")
        # Then Redis is skipped: no added latency for any method.
        for _ in range(3):
            for call in calls:
                _, dt = await _timed(call())
                assert dt < 0.02, dt                                  # no Redis round trip
        # concurrent calls too
        _, dt = await _timed(asyncio.gather(*[s.window_take("w", 1, 1000, 60) for _ in range(100)]))
        assert dt < 0.05
        assert s.fallbacks >= 3 + 30 + 100
        assert await s.counters_get("n") == {"x": 3.0}                # local state kept counting
        _, dt = await _timed(s.ping())
        assert dt < timeout + 0.1
    finally:
        await s.aclose()
        for w in conns:
            w.close()
        server.close()
        await server.wait_closed()


async def test_stalled_redis_concurrent_first_calls_bounded():
    conns: list[asyncio.StreamWriter] = []

    async def never_answer(reader, writer):
        conns.append(writer)
        while await reader.read(4096):
            pass

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    s = RedisStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.05, failure_threshold=3, retry_s=60)
    try:
        _, dt = await _timed(asyncio.gather(*[s.window_take(f"w{i}", 1, 10, 60) for i in range(50)]))
        assert dt < 0.5  # about one timeout (0.05 s) in all, never one per call (2.5 s): slack for a busy machine
        assert not s.healthy and s.fallbacks == 50
    finally:
        await s.aclose()
        for w in conns:
            w.close()
        server.close()
        await server.wait_closed()
