"""Keys, limits, cache and breakers shared by several gateway processes through one real redis-server,
and what happens when Redis dies or stalls."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time

import httpx
import pytest

from conftest import Gateway
from redis_fixture import REDIS_SERVER, SKIP_REASON, start_redis, stop_redis

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason=SKIP_REASON)

KEY_A, KEY_B, KEY_C, KEY_T = "sk-team-a-secret", "sk-team-b-secret", "sk-team-c-secret", "sk-team-t-secret"

POLICY = """
version: 1
models:
  edge-a: {{tier: edge, litellm: {{model: openai/edge-a, api_base: "{url}", api_key: t}}}}
  flaky: {{tier: cloud, litellm: {{model: openai/flaky, api_base: "{url}", api_key: t}}}}
  steady: {{tier: cloud, litellm: {{model: openai/steady, api_base: "{url}", api_key: t}}}}
classifier: {{kind: length}}
auth:
  required: true
  keys:
    - {{name: team-a, sha256: {a}, group: research, rpm: {rpm}}}
    - {{name: team-b, sha256: {b}, group: support}}
    - {{name: team-c, sha256: {c}, group: support}}
    - {{name: team-t, sha256: {t}, group: support, tpm: 100}}
routes:
  - name: cached
    when: {{model: cached}}
    targets: [edge-a]
    cache: {{ttl: 60s}}
  - name: breaker
    when: {{model: breaker}}
    targets: [flaky, steady]
  - name: auto
    when: {{model: auto}}
    targets: [edge-a]
retry: {{attempts: 1}}
breaker: {{failures: 2, window: 30s, cooldown: 30s}}
limits: {{fail: open}}
"""


def policy(url: str, rpm: int = 10) -> str:
    return POLICY.format(url=url, rpm=rpm, a=hashlib.sha256(KEY_A.encode()).hexdigest(),
                         b=hashlib.sha256(KEY_B.encode()).hexdigest(),
                         c=hashlib.sha256(KEY_C.encode()).hexdigest(), t=hashlib.sha256(KEY_T.encode()).hexdigest())


def chat(gw, model="auto", key=KEY_A, content="hi", **extra):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(gw.base + "/v1/chat/completions", headers=headers, timeout=10,
                      json={"model": model, "messages": [{"role": "user", "content": content}], **extra})


@pytest.fixture(scope="module")
def redis_url():
    proc, url = start_redis()
    yield url
    stop_redis(proc)


@pytest.fixture(scope="module")
def fleet(upstream, tmp_module, redis_url):
    gateways = [Gateway(policy(upstream.url), tmp_module, env={"GATEWAY_REDIS_URL": redis_url}) for _ in range(3)]
    yield gateways
    for g in gateways:
        g.stop()


def test_keys_are_required_and_checked(fleet, mock):
    gw = fleet[0]
    r = chat(gw, key=None)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = chat(gw, key="sk-wrong")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert chat(gw, key=KEY_B).status_code == 200


def test_rate_limit_is_shared_across_three_replicas(fleet, mock):
    statuses, retry_afters = [], []
    for i in range(30):
        r = chat(fleet[i % 3], content=f"r{i}")
        statuses.append(r.status_code)
        if r.status_code == 429:
            retry_afters.append(r.headers)
    assert statuses.count(200) == 10, statuses   # 10 per minute in total, not 10 per replica
    assert statuses.count(429) == 20
    h = retry_afters[0]
    assert int(h["retry-after"]) >= 1
    assert h["x-ratelimit-limit-requests"] == "10" and h["x-ratelimit-remaining-requests"] == "0"
    body = chat(fleet[0]).json()
    assert body["error"]["code"] == "rate_limit_exceeded" and body["error"]["type"] == "rate_limit_error"


def test_token_limit_estimates_then_corrects_with_real_usage(fleet, mock):
    # "hi" with max_tokens 80 is estimated at 84 tokens; the mock really uses 8. Without the correction
    # the second request (84 + 84 > 100) would be refused.
    for i in range(2):
        r = chat(fleet[i], key=KEY_T, max_tokens=80)
        assert r.status_code == 200, r.text
        time.sleep(0.1)
    r = chat(fleet[2], key=KEY_T, max_tokens=95)       # 16 used + 99 estimated > 100
    assert r.status_code == 429
    assert r.headers["x-ratelimit-limit-tokens"] == "100"
    assert "tokens per minute" in r.json()["error"]["message"]


def test_breaker_opened_by_one_replica_is_seen_by_the_others(fleet, mock):
    mock.script("flaky", [], default={"status": 500})
    r = chat(fleet[0], model="breaker", key=KEY_B)
    r = chat(fleet[0], model="breaker", key=KEY_B)
    assert r.headers["x-gateway-model"] == "steady"
    calls = len(mock.requests("flaky"))
    assert calls == 2
    time.sleep(0.4)  # replicas refresh breaker views at most every 200 ms
    for gw in fleet[1:]:
        r = chat(gw, model="breaker", key=KEY_B)
        assert r.headers["x-gateway-model"] == "steady"
    assert len(mock.requests("flaky")) == calls  # the others skipped it without calling


def test_cache_written_by_one_replica_is_served_by_another(fleet, mock):
    r1 = chat(fleet[0], model="cached", key=KEY_B, content="cache me")
    assert r1.headers["x-gateway-cache"] == "miss"
    r2 = chat(fleet[1], model="cached", key=KEY_B, content="cache me")
    assert r2.headers["x-gateway-cache"] == "hit"
    assert r2.json()["choices"] == r1.json()["choices"]
    assert len(mock.requests("edge-a")) == 1
    # A stream asking the same is replayed as a stream.
    s = chat(fleet[2], model="cached", key=KEY_B, content="cache me", stream=True)
    assert s.headers["x-gateway-cache"] == "hit" and s.headers["content-type"].startswith("text/event-stream")
    assert s.text.rstrip().endswith("data: [DONE]") and "mock answer to: cache me" in s.text
    # Another tenant never sees team-b's entries.
    r3 = chat(fleet[1], model="cached", key=KEY_C, content="cache me")
    assert r3.headers["x-gateway-cache"] == "miss"
    assert len(mock.requests("edge-a")) == 2


def test_usage_is_accounted_in_the_shared_store(fleet, mock):
    chat(fleet[0], key=KEY_B, content="count me")
    deadline = time.monotonic() + 5  # replicas flush their sums to the store once a second
    while time.monotonic() < deadline:
        usage = httpx.get(fleet[1].base + "/admin/usage", headers=fleet[1].admin()).json()
        day = next(iter(usage.values()), {})
        if day.get("key=team-b", {}).get("requests", 0) >= 1:
            break
        time.sleep(0.2)
    assert day["key=team-b"]["requests"] >= 1 and day["key=team-b"]["completion_tokens"] >= 7


def test_redis_killed_mid_load_fails_no_request(upstream, tmp_module):
    proc, url = start_redis()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    gws = [Gateway(policy(upstream.url, rpm=1_000_000), tmp_module, env={"GATEWAY_REDIS_URL": url}) for _ in range(2)]
    results: list[int] = []
    try:
        async def load():
            async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=32)) as client:
                async def one(i):
                    r = await client.post(gws[i % 2].base + "/v1/chat/completions",
                                          headers={"Authorization": f"Bearer {KEY_A}"},
                                          json={"model": "auto", "messages": [{"role": "user", "content": "x"}]})
                    results.append(r.status_code if not r.headers.get("x-gateway-degraded") else 599)
                sem = asyncio.Semaphore(16)

                async def guarded(i):
                    async with sem:
                        await one(i)
                await asyncio.gather(*[guarded(i) for i in range(5000)])

        killer_state = {}

        def chaos():
            while len(results) < 1500:
                time.sleep(0.01)
            stop_redis(proc)
            killer_state["killed_at"] = len(results)
            while len(results) < 3000:
                time.sleep(0.01)
            killer_state["ready_while_down"] = httpx.get(gws[0].base + "/readyz").json()["status"]
            killer_state["proc"], _ = start_redis(port)
            killer_state["restarted_at"] = len(results)

        t = threading.Thread(target=chaos)
        t.start()
        asyncio.run(load())
        t.join()
        assert len(results) == 5000
        assert results.count(200) == 5000, {s: results.count(s) for s in set(results)}
        assert killer_state["ready_while_down"] == "degraded"
        assert killer_state["killed_at"] < 5000 and killer_state["restarted_at"] < 5000
        deadline = time.monotonic() + 15  # the store probes Redis again after its retry period
        while time.monotonic() < deadline:
            chat(gws[0])
            if httpx.get(gws[0].base + "/readyz").json()["status"] == "ready":
                break
            time.sleep(0.5)
        else:
            pytest.fail("the gateway did not go back to Redis")
    finally:
        for g in gws:
            g.stop()
        if "proc" in killer_state:
            stop_redis(killer_state["proc"])


def test_stalled_redis_adds_at_most_the_timeout(upstream, tmp_module):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted = []
    stop = threading.Event()

    def accept():  # accepts connections and never answers
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    port = listener.getsockname()[1]
    gw = Gateway(policy(upstream.url, rpm=1_000_000), tmp_module,
                 env={"GATEWAY_REDIS_URL": f"redis://127.0.0.1:{port}/0", "GATEWAY_REDIS_TIMEOUT": "1.0"})
    try:
        baseline_gw_latencies = []
        for i in range(30):
            started = time.monotonic()
            r = chat(gw, content=f"s{i}")
            baseline_gw_latencies.append(time.monotonic() - started)
            assert r.status_code == 200
        # A long timeout (1 s) makes the check independent of this machine's noise: the first request may
        # wait for it once; none waits for it twice, and once Redis is given up on none waits at all.
        assert max(baseline_gw_latencies) < 1.0 + 0.5, baseline_gw_latencies
        assert sum(1 for t in baseline_gw_latencies if t >= 0.5) <= 1, baseline_gw_latencies
        assert accepted  # it really tried the stalled server
        assert httpx.get(gw.base + "/readyz").json()["status"] == "degraded"
        assert "gateway_redis_degraded 1.0" in httpx.get(gw.base + "/metrics").text
    finally:
        gw.stop()
        stop.set()
        listener.close()
