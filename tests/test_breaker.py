"""Circuit breakers in ratio mode (`breaker: {failure_ratio: R, min_requests: N}`): the outcome window, the
state machine on a fake clock, the policy checks, and the real gateway under partial and total faults."""

from __future__ import annotations

import random
import textwrap

import httpx
import pytest

from conftest import Gateway
from gateway.execution.breaker import Breakers, OutcomeWindow
from gateway.policy import PolicyInvalid, compile_policy
from gateway.policy.schema import BreakerSpec
from gateway.state.memory import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def rig() -> tuple[Clock, MemoryStore, Breakers]:
    """Breakers over an in-memory store, both on one fake clock."""
    clock = Clock()
    store = MemoryStore(clock=clock)
    return clock, store, Breakers(store, clock=clock)


def test_outcome_window_counts_and_forgets_after_the_window():
    w = OutcomeWindow(10.0)
    assert w.add(True, 100.0) == (1, 1)
    assert w.add(False, 101.0) == (1, 2)
    assert w.add(False, 109.5) == (1, 3)
    # The window is the last 10 one-second buckets: at 110.2 s that is 101-110, so the failure at 100 s is gone.
    assert w.add(False, 110.2) == (0, 3)
    assert w.add(True, 111.0) == (1, 3)  # 102-111: 109.5, 110.2 and 111
    assert w.add(False, 125.0) == (0, 1)


def test_outcome_window_running_totals_match_a_recount():
    rng = random.Random(5)
    w, seen, now = OutcomeWindow(3.0), [], 50.0
    for _ in range(3000):
        now += rng.choice([0.0, 0.01, 0.1, 0.35, 1.7, 4.0])
        failed = rng.random() < 0.3
        seen.append((int(now / 0.3), failed))
        newest = seen[-1][0]
        recount = [f for b, f in seen if b > newest - 10]
        assert w.add(failed, now) == (sum(recount), len(recount))


async def _run(breakers: Breakers, spec: BreakerSpec, outcomes: str, clock: Clock, step: float = 0.01) -> list[str]:
    """Feed 'x' (failure) / '.' (success) outcomes; returns the state seen before each one. While the
    breaker is open the deployment is skipped, as the executor does: no outcome is recorded."""
    seen = []
    for o in outcomes:
        seen.append("open" if await breakers.is_open(spec, "d") else "closed")
        if seen[-1] == "open":
            pass
        elif o == "x":
            await breakers.failure(spec, "d", "server")
        else:
            await breakers.success(spec, "d")
        clock.t += step
    return seen


async def test_ratio_mode_ignores_a_partial_fault_rate_and_opens_on_a_majority(rig):
    clock, store, breakers = rig
    spec = BreakerSpec(failure_ratio=0.5, min_requests=10, window=30.0, cooldown=5.0, consecutive=100)
    # 30 % failures, spread evenly, for 200 attempts: never opens (a count of 5 in 30 s would have).
    seen = await _run(breakers, spec, "x.." * 67, clock)
    assert "open" not in seen
    assert (await store.breaker_view("breaker:d")).state == "closed"

    # The next window is mostly failures: opens once 10 attempts are in and at least half failed.
    clock.t += 31
    seen = await _run(breakers, spec, "xxxxxxxxxx" + "x", clock)
    assert seen[:10] == ["closed"] * 10 and seen[10] == "open"
    assert (await store.breaker_view("breaker:d")).state == "open"


async def test_ratio_mode_waits_for_min_requests_then_half_opens_and_closes(rig):
    clock, store, breakers = rig
    spec = BreakerSpec(failure_ratio=0.5, min_requests=20, window=10.0, cooldown=2.0, consecutive=100)
    seen = await _run(breakers, spec, "x" * 19, clock)
    assert "open" not in seen  # 19 failures of 19, but fewer than min_requests (and than `consecutive`)
    await breakers.failure(spec, "d", "server")
    assert await breakers.is_open(spec, "d")
    await breakers.failure(spec, "d", "bad_request")  # not a health failure: ignored
    clock.t += 2.5  # cooldown over: half-open, a trial goes through
    assert not await breakers.is_open(spec, "d")
    await breakers.failure(spec, "d", "timeout")  # the trial failed: open again at once
    assert await breakers.is_open(spec, "d")
    clock.t += 2.5
    assert not await breakers.is_open(spec, "d")
    await breakers.success(spec, "d")
    assert (await store.breaker_view("breaker:d")).state == "closed"
    seen = await _run(breakers, spec, "x" * 5, clock)  # a fresh window after closing
    assert "open" not in seen


async def test_ratio_mode_at_low_traffic_opens_on_failures_in_a_row(rig):
    clock, store, breakers = rig
    spec = BreakerSpec(failure_ratio=0.5, min_requests=10, window=30.0, cooldown=5.0, consecutive=5)
    # Sparse traffic (one attempt every 4 s, never 10 in a window): a success breaks each streak.
    seen = await _run(breakers, spec, "xxxx.xxxx.xx.x.", clock, step=4.0)
    assert "open" not in seen
    seen = await _run(breakers, spec, "xxxxx" + "x", clock, step=4.0)  # a dead upstream
    assert seen[:5] == ["closed"] * 5 and seen[5] == "open"
    # With enough attempts in the window, the share decides, not the streak: at the 5th failure in a row
    # the window holds 26 attempts of which 9 failed, so it stays closed.
    clock.t += 31
    seen = await _run(breakers, spec, ".." * 6 + ".x" * 4 + "." + "xxxxx" + ".", clock, step=0.1)
    assert "open" not in seen


async def test_count_mode_is_unchanged(rig):
    clock, store, breakers = rig
    spec = BreakerSpec(failures=5, window=30.0, cooldown=5.0, failure_ratio=None)
    seen = await _run(breakers, spec, "x.." * 5 + ".", clock)
    assert seen[-1] == "open"  # 5 failures in 30 s open it even at a 33 % failure rate


POLICY = """\
version: 1
models:
  m: {{tier: cloud, litellm: {{model: openai/m, api_base: "{url}", api_key: t}}}}
classifier: {{kind: length}}
routes:
  - {{name: r, when: {{model: m}}, targets: [m]}}
retry: {{attempts: 3, backoff: {{initial: 10ms, max: 20ms}}}}
breaker: {{failure_ratio: 0.5, min_requests: 10, window: 30s, cooldown: 60s}}
degrade: {{reply: "busy"}}
"""


def _errors(breaker: str) -> list[str]:
    text = textwrap.dedent(POLICY.format(url="http://127.0.0.1:9/v1")).replace(
        "breaker: {failure_ratio: 0.5, min_requests: 10, window: 30s, cooldown: 60s}", breaker)
    with pytest.raises(PolicyInvalid) as info:
        compile_policy(text, "p.yaml", {})
    return [str(e) for e in info.value.errors]


def test_policy_checks_the_ratio_breaker():
    policy = compile_policy(POLICY.format(url="http://127.0.0.1:9/v1"), "p.yaml", {})
    assert policy.breaker.failure_ratio == 0.5 and policy.breaker.min_requests == 10
    assert _errors("breaker: {failures: 3, failure_ratio: 0.5}") == [
        "p.yaml:8: breaker: give `failures` (count of failures) or `failure_ratio` (share of attempts), not both"]
    assert _errors("breaker: {failure_ratio: 1.5}") == ["p.yaml:8: breaker.failure_ratio must be between 0.01 and 1.0, got 1.5"]
    assert _errors("breaker: {failures: 3, min_requests: 5, consecutive: 2}") == [
        "p.yaml:8: breaker.min_requests belongs to the ratio mode; with `failures` (count mode) it has no effect",
        "p.yaml:8: breaker.consecutive belongs to the ratio mode; with `failures` (count mode) it has no effect"]
    count = compile_policy(POLICY.format(url="http://127.0.0.1:9/v1").replace(
        "breaker: {failure_ratio: 0.5, min_requests: 10, window: 30s, cooldown: 60s}", "breaker: {failures: 3}"), "p.yaml", {})
    assert count.breaker.failure_ratio is None and count.breaker.failures == 3
    default = compile_policy(POLICY.format(url="http://127.0.0.1:9/v1").replace(
        "breaker: {failure_ratio: 0.5, min_requests: 10, window: 30s, cooldown: 60s}\n", ""), "p.yaml", {})
    assert default.breaker.failure_ratio == 0.5 and default.breaker.min_requests == 10
    assert default.breaker.consecutive == 5


def test_gateway_rides_out_partial_faults_and_opens_on_a_dead_upstream(upstream, mock, tmp_path):
    gw = Gateway(POLICY.format(url=upstream.url), tmp_path)
    try:
        # 30 % of upstream calls fail: retries absorb them and the breaker stays closed.
        mock.script("m", [], default={"mix": [[3, {"status": 500}], [7, {}]]})
        answers = [httpx.post(gw.base + "/v1/chat/completions", timeout=10,
                              json={"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]}) for i in range(60)]
        assert all(r.status_code == 200 for r in answers)
        degraded = sum(r.headers.get("x-gateway-degraded") == "true" for r in answers)
        assert degraded <= 8  # only when all 3 tries fail: p = 0.027 a request, ~1.6 expected in 60
        metrics = httpx.get(gw.base + "/metrics").text
        assert 'gateway_breaker_open{target="m#0"} 1.0' not in metrics

        # Now every call fails: after min_requests attempts (most of them failed) the breaker opens and
        # requests get the canned reply without calling the upstream.
        mock.script("m", [], default={"status": 500})
        for i in range(30):  # the window still holds the ~60 successes above: ~12 all-failing requests
            httpx.post(gw.base + "/v1/chat/completions", timeout=10,
                       json={"model": "m", "messages": [{"role": "user", "content": f"dead{i}"}]})
            if 'gateway_breaker_open{target="m#0"} 1.0' in httpx.get(gw.base + "/metrics").text:
                break
        else:
            pytest.fail("the breaker did not open on an upstream failing every call")
        assert i >= 5  # not before the failures outweighed the earlier successes
        calls = len(mock.requests("m"))
        r = httpx.post(gw.base + "/v1/chat/completions", timeout=10,
                       json={"model": "m", "messages": [{"role": "user", "content": "skipped"}]})
        assert r.headers["x-gateway-degraded"] == "true" and len(mock.requests("m")) == calls
    finally:
        gw.stop()
