"""Daily cloud budgets per key and per route: once the day's cloud spend reaches the budget, requests that would
start on the cloud start on the route's edge models instead (unit, policy check, and through the real gateway
with one mock upstream serving both tiers and prices set in the policy)."""

from __future__ import annotations

import time

import httpx
import pytest
from conftest import Gateway
from redis_fixture import REDIS_SERVER, SKIP_REASON, start_redis, stop_redis

from gateway.policy import PolicyInvalid
from gateway.policy.compile import compile_policy
from gateway.routing.budget import edge_first, spent_budget

# The mock answers with prompt_tokens = len(prompt) // 4 and 7 completion tokens; at $1000 per million tokens
# a LONG prompt costs (200 + 7) * 0.001 = $0.207 on the cloud model, so one of them spends a $0.15 budget.
LONG = "Explain step by step, with a proof, why the following holds. " * 14
LONG = LONG[:800]
SHORT = "hi"

POLICY = """
version: 1
models:
  edge-a: {{tier: edge, litellm: {{model: openai/edge-a, api_base: "{url}", api_key: t}}}}
  cloud-b:
    tier: cloud
    litellm: {{model: openai/cloud-b, api_base: "{url}", api_key: t}}
    cost: {{input_per_mtok: 1000, output_per_mtok: 1000}}
classifier: {{kind: length, threshold: 0.5}}
auth:
  keys:
    - {{name: alice, key: "env:ALICE_KEY", cloud_budget_usd: 0.15}}
    - {{name: bob, key: "env:BOB_KEY"}}
routes:
  - name: cloudonly
    when: {{model: cloud-only}}
    targets: [cloud-b]
    cloud_budget_usd: 0.1
  - name: auto
    when: {{model: auto}}
    simple: [edge-a, cloud-b]
    complex: [cloud-b, edge-a]
retry: {{attempts: 1}}
"""
ENV = {"ALICE_KEY": "sk-alice", "BOB_KEY": "sk-bob"}


def _ask(gw: Gateway, key: str, prompt: str, model: str = "auto") -> httpx.Response:
    r = httpx.post(gw.base + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                   json={"model": model, "messages": [{"role": "user", "content": prompt}]}, timeout=30)
    assert r.status_code == 200, r.text
    return r


def test_edge_first_keeps_cloud_behind_and_needs_an_edge_model():
    tiers = {"e1": "edge", "e2": "edge", "c1": "cloud", "c2": "cloud"}.__getitem__
    assert edge_first(("c1", "e1"), ("e1", "c1", "e2"), tiers) == ("e1", "e2", "c1")
    assert edge_first(("c1", "c2"), ("c1", "c2", "e2"), tiers) == ("e2", "c1", "c2")
    assert edge_first(("c1", "c2"), ("c1", "c2"), tiers) is None


async def test_spent_budget_checks_the_key_then_the_route():
    spend = {"key=alice": 0.2, "route=auto": 0.05}

    async def spent(scope: str) -> float:
        return spend.get(scope, 0.0)

    hit = await spent_budget(spent, ("alice", 0.2), ("auto", 1.0))
    assert hit is not None and (hit.scope, hit.name, hit.spent) == ("key", "alice", 0.2)
    assert await spent_budget(spent, ("alice", 0.3), ("auto", 1.0)) is None
    assert await spent_budget(spent, ("alice", None), ("auto", None)) is None
    hit = await spent_budget(spent, ("alice", None), ("auto", 0.05))
    assert hit is not None and hit.scope == "route"


def test_policy_check_reports_bad_budgets_with_lines():
    text = POLICY.format(url="http://127.0.0.1:1/v1").replace("cloud_budget_usd: 0.15", "cloud_budget_usd: -1")
    text = text.replace("cloud_budget_usd: 0.1\n", "cloud_budget_usd: cheap\n")
    with pytest.raises(PolicyInvalid) as exc:
        compile_policy(text, "p.yaml", env=ENV)
    messages = [str(e) for e in exc.value.errors]
    lines = text.splitlines()
    assert any(m.startswith(f"p.yaml:{lines.index(next(x for x in lines if 'alice' in x)) + 1}:")
               and "auth.keys[0].cloud_budget_usd must be at least 0.0" in m for m in messages), messages
    assert any("routes[0] (cloudonly).cloud_budget_usd" in m for m in messages), messages
    edge_only = """
version: 1
models:
  e: {tier: edge, litellm: {model: openai/e, api_base: "http://127.0.0.1:1/v1", api_key: x}}
routes:
  - name: private
    when: {model: auto}
    targets: [e]
    edge_only: true
    cloud_budget_usd: 5
"""
    with pytest.raises(PolicyInvalid) as exc:
        compile_policy(edge_only, "q.yaml")
    assert [str(e) for e in exc.value.errors] == [
        "q.yaml:10: routes[0] (private): an edge_only route never spends on the cloud; cloud_budget_usd has no "
        "effect here"]
    policy = compile_policy(POLICY.format(url="http://127.0.0.1:1/v1"), "p.yaml", env=ENV)
    assert [k.cloud_budget_usd for k in policy.keys] == [0.15, None]
    assert [r.cloud_budget_usd for r in policy.routes] == [0.1, None]


@pytest.fixture
def gateway(mock, tmp_path):
    gw = Gateway(POLICY.format(url=mock.url), tmp_path, env=ENV)
    yield gw
    gw.stop()


def test_spent_key_budget_sends_complex_requests_to_the_edge(gateway, mock):
    first = _ask(gateway, "sk-alice", LONG)
    assert first.headers["x-gateway-tier"] == "cloud" and first.headers["x-gateway-model"] == "cloud-b"
    assert float(first.headers["x-gateway-cost"]) > 0.15
    assert "x-gateway-budget" not in first.headers

    second = _ask(gateway, "sk-alice", LONG)
    assert second.headers["x-gateway-budget"] == "spent"
    assert second.headers["x-gateway-route"] == "auto"
    assert second.headers["x-gateway-tier"] == "edge" and second.headers["x-gateway-model"] == "edge-a"
    assert second.headers["x-gateway-complexity-class"] == "complex"
    assert [r["model"] for r in mock.requests()] == ["cloud-b", "edge-a"]

    # Another key has its own (here: no) budget; simple requests never looked at the budget.
    assert _ask(gateway, "sk-bob", LONG).headers["x-gateway-tier"] == "cloud"
    simple = _ask(gateway, "sk-alice", SHORT)
    assert simple.headers["x-gateway-tier"] == "edge" and "x-gateway-budget" not in simple.headers

    explain = httpx.post(gateway.base + "/admin/explain", headers=gateway.admin(),
                         json={"model": "auto", "messages": [{"role": "user", "content": LONG}],
                               "_api_key": "sk-alice"})
    assert explain.status_code == 200, explain.text
    why = explain.json()
    assert [m["model"] for m in why["chain"]] == ["edge-a", "cloud-b"] and why["route"] == "auto"
    assert any("daily cloud budget of key 'alice' spent ($0.2070 of $0.15)" in r for r in why["reasons"]), why
    metrics = httpx.get(gateway.base + "/metrics").text
    assert 'gateway_budget_spent_total{name="alice",scope="key"} 1.0' in metrics
    usage = httpx.get(gateway.base + "/admin/usage", headers=gateway.admin()).json()
    today = next(iter(usage.values()))
    assert today["key=alice"]["cloud_cost_usd"] == pytest.approx(0.207)
    assert today["key=bob"]["cloud_cost_usd"] == pytest.approx(0.207)
    assert today["key=alice"]["cost_usd"] == pytest.approx(0.207)  # the edge answers cost nothing
    budgets = httpx.get(gateway.base + "/admin/status", headers=gateway.admin()).json()["budgets"]
    alice = next(b for b in budgets if b["scope"] == "key" and b["name"] == "alice")
    assert alice["budget_usd"] == 0.15 and alice["spent_usd"] == pytest.approx(0.207) and alice["reached"]
    assert {(b["scope"], b["name"]) for b in budgets} == {("key", "alice"), ("route", "cloudonly")}


def test_spent_route_budget_without_an_edge_model_still_answers(gateway, mock):
    first = _ask(gateway, "sk-bob", LONG, model="cloud-only")
    assert first.headers["x-gateway-tier"] == "cloud" and "x-gateway-budget" not in first.headers
    second = _ask(gateway, "sk-bob", SHORT, model="cloud-only")
    assert second.headers["x-gateway-tier"] == "cloud"
    assert second.headers["x-gateway-budget"] == "spent-no-edge"
    assert second.headers["x-gateway-route"] == "cloudonly"
    assert [r["model"] for r in mock.requests()] == ["cloud-b", "cloud-b"]
    # The route's spend is not the key's: bob's `auto` requests still reach the cloud.
    assert _ask(gateway, "sk-bob", LONG).headers["x-gateway-tier"] == "cloud"


def test_spent_budget_falls_back_to_the_cloud_when_the_edge_fails(gateway, mock):
    _ask(gateway, "sk-alice", LONG)
    mock.script("edge-a", [{"status": 500}])
    answer = _ask(gateway, "sk-alice", LONG)
    assert answer.headers["x-gateway-budget"] == "spent"
    assert answer.headers["x-gateway-model"] == "cloud-b"  # the budget never makes a request fail
    assert [r["model"] for r in mock.requests()] == ["cloud-b", "edge-a", "cloud-b"]


@pytest.mark.skipif(REDIS_SERVER is None, reason=SKIP_REASON)
def test_budget_spent_on_one_replica_holds_on_another(mock, tmp_path):
    proc, url = start_redis()
    gws = [Gateway(POLICY.format(url=mock.url), tmp_path, env={**ENV, "GATEWAY_REDIS_URL": url}) for _ in range(2)]
    try:
        assert _ask(gws[0], "sk-alice", LONG).headers["x-gateway-tier"] == "cloud"
        deadline = time.monotonic() + 10
        while True:  # the spend reaches Redis with the accountant's next flush (once a second)
            answer = _ask(gws[1], "sk-alice", LONG)
            if answer.headers.get("x-gateway-budget") == "spent" or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert answer.headers.get("x-gateway-budget") == "spent"
        assert answer.headers["x-gateway-tier"] == "edge"
    finally:
        for gw in gws:
            gw.stop()
        stop_redis(proc)
