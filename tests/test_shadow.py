"""Shadow comparisons (`feedback.shadow`) through the real gateway: a sampled answer is also asked of the other
tier after the client has it, a judge compares the two in both orders, the outcome is stored with both
qualities; `gateway learn --from-store` learns from those outcomes, the learned model is promoted on the
outcomes it did not see, and the next answer names its version. Never for personal-data routes; not once the
daily budget is spent; never in the way of the client's answer. Pure logic (verdicts, targets, the policy
block, the feedback lines) is tested on its own."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import numpy as np
import pytest
from conftest import Gateway, MockUpstream
from redis_fixture import REDIS_SERVER, SKIP_REASON, start_redis, stop_redis
from test_learn import _prompt, gateway

from gateway.execution.shadow import (
    combine,
    other_tier_targets,
    parse_verdict,
    personal,
    route_of,
    shadow_body,
)
from gateway.observability.outcomes import to_feedback
from gateway.policy.compile import PolicyInvalid, compile_policy

EDGE_TEXT = "EDGE draft answer."
CLOUD_TEXT = "CLOUD full answer."
# The judge prefers the cloud answer on poems and the edge answer on opening hours, and sees no difference
# elsewhere (it then says "A" in both orders, an inconsistent pair that counts as a tie).
JUDGE = {"content_if": [[r"Compose a short poem.*\[Answer A\]\s*CLOUD", "A"],
                        [r"Compose a short poem.*\[Answer B\]\s*CLOUD", "B"],
                        [r"opening hours.*\[Answer A\]\s*EDGE", "A"],
                        [r"opening hours.*\[Answer B\]\s*EDGE", "B"]], "content": "A"}

POLICY = """
version: 1
models:
  edge-a:
    tier: edge
    litellm: {{model: openai/edge-a, api_base: "{edge}", api_key: test}}
  cloud-a:
    tier: cloud
    litellm: {{model: openai/cloud-a, api_base: "{cloud}", api_key: test}}
    cost: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
  judge-a:
    tier: cloud
    litellm: {{model: openai/judge-a, api_base: "{cloud}", api_key: test}}
    cost: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
classifier: {{kind: onnx, cloud_share: 0.5}}
routes:
  - name: private
    when: {{pii: [email]}}
    edge_only: true
    targets: [edge-a]
  - name: personal
    when: {{pii: true}}
    simple: [edge-a]
    complex: [cloud-a]
  - name: auto
    when: {{model: auto}}
    simple: [edge-a]
    complex: [cloud-a]
retry: {{attempts: 1}}
feedback:
  store_prompts: true
  implicit: false          # repeated prompts of the traffic are not regenerations here
  promote_margin: 0.02
  shadow: {{rate: 1.0, daily_budget_usd: 5.0, judge: judge-a, max_tokens: 64}}
"""


@pytest.fixture(scope="module")
def mocks():
    edge, cloud = MockUpstream(), MockUpstream()
    yield edge, cloud
    edge.stop()
    cloud.stop()


@pytest.fixture
def scripted(mocks):
    edge, cloud = mocks
    for m in (edge, cloud):
        m.reset()
    edge.script("edge-a", default={"content": EDGE_TEXT})
    cloud.script("cloud-a", default={"content": CLOUD_TEXT})
    cloud.script("judge-a", default=JUDGE)
    return edge, cloud


@pytest.fixture(scope="module")
def gw(mocks, tmp_module):
    edge, cloud = mocks
    outcomes = tmp_module / "outcomes.jsonl"
    g = Gateway(POLICY.format(edge=edge.url, cloud=cloud.url), tmp_module,
                env={"GATEWAY_OUTCOMES_PATH": str(outcomes)})
    g.outcomes = outcomes
    yield g
    g.stop()


def _outcomes(gw) -> list[dict]:
    if not gw.outcomes.exists():
        return []
    return [json.loads(line) for line in gw.outcomes.read_text().splitlines() if line.strip()]


def _wait_outcomes(gw, n: int, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _outcomes(gw)
        if len(found) >= n:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{len(_outcomes(gw))} outcomes after {timeout}s, expected {n}\n{gw.log()}")


def _ask(gw, text: str, **extra) -> httpx.Response:
    r = httpx.post(gw.base + "/v1/chat/completions", timeout=30,
                   json={"model": "auto", "messages": [{"role": "user", "content": text}], **extra})
    assert r.status_code == 200, r.text
    return r


def _metric(gw, name: str, **labels) -> float:
    text = httpx.get(gw.base + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _traffic(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [_prompt(rng, bool(rng.random() < 0.6)) for _ in range(n)]  # the cloud is better on average


# -- through the gateway -----------------------------------------------------------------------------


def test_learning_loop_shadow_judge_learn_promote(gw, scripted, tmp_path):
    edge, cloud = scripted
    before = len(_outcomes(gw))
    r = _ask(gw, "Compose a short poem about the quiet river.")
    rid, tier = r.headers["x-request-id"], r.headers["x-gateway-tier"]
    shipped = r.headers["x-gateway-classifier"]
    got = _wait_outcomes(gw, before + 1)[-1]
    # one call to the other tier, non-streamed, and the judge twice, once in each order
    other = cloud.requests("cloud-a") if tier == "edge" else edge.requests("edge-a")
    assert len(other) == 1
    shadow_call = other[-1]["body"]
    assert shadow_call["max_tokens"] == 64 and not shadow_call.get("stream")
    judged = cloud.requests("judge-a")
    assert len(judged) == 2
    users = [j["body"]["messages"][-1]["content"] for j in judged]
    orders = sorted(re.search(r"\[Answer A\]\s*(\w+)", u).group(1) for u in users)
    assert orders == ["CLOUD", "EDGE"]
    assert all("Compose a short poem about the quiet river." in u for u in users)
    assert got["request_id"] == rid and got["source"] == "shadow" and got["kind"] == "shadow"
    assert (got["edge_quality"], got["cloud_quality"]) == (0.0, 1.0)
    assert got["classifier_version"] == shipped
    assert got["policy_version"] == r.headers["x-gateway-policy-version"]
    assert (got["edge_model"], got["cloud_model"], got["judge"]) == ("edge-a", "cloud-a", "judge-a")
    assert got["prompt"] == "Compose a short poem about the quiet river."
    assert got["shadow_cost_usd"] > 0

    # Traffic whose truth depends on the prompt: the cloud answer wins on poems, the edge one on opening hours.
    prompts = _traffic(300, seed=21)
    with ThreadPoolExecutor(4) as pool:
        for start in range(0, len(prompts), 32):
            list(pool.map(lambda p: _ask(gw, p), prompts[start:start + 32]))
            _wait_outcomes(gw, before + 1 + min(start + 32, len(prompts)))
    stored = _outcomes(gw)[before:]
    assert len(stored) == 301 and all(o["source"] == "shadow" for o in stored)
    poems = [o for o in stored if o["prompt"].startswith("Compose")]
    assert poems and all((o["edge_quality"], o["cloud_quality"]) == (0.0, 1.0) for o in poems)
    assert all((o["edge_quality"], o["cloud_quality"]) == (1.0, 0.0) for o in stored if o not in poems)
    assert _metric(gw, "gateway_shadow_verdicts_total", verdict="cloud") >= len(poems)
    assert _metric(gw, "gateway_shadow_verdicts_total", verdict="edge") >= len(stored) - len(poems)
    assert _metric(gw, "gateway_shadow_calls_total", result="ok") >= 301
    assert _metric(gw, "gateway_shadow_cost_usd_total") > 0

    # Learn from the first 220 stored outcomes; the other 81 stay held back for the promotion.
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(o) + "\n" for o in stored[:220]))
    model = tmp_path / "learned"
    res = gateway("learn", "--from-store", str(train), "--output", str(model))
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in (model / "feedback.jsonl").read_text().splitlines()]
    assert len(lines) == len({o["prompt"] for o in stored[:220]})
    assert {(x["edge_quality"], x["cloud_quality"]) for x in lines} == {(0.0, 1.0), (1.0, 0.0)}

    p = httpx.post(gw.base + "/admin/classifier/promote", headers=gw.admin(), timeout=120,
                   json={"model": str(model), "holdout": "store"})
    assert p.status_code == 200, p.text
    report = p.json()
    assert report["promoted"] is True, json.dumps(report)
    assert report["n"] == len({o["prompt"] for o in stored[220:]} - {o["prompt"] for o in stored[:220]})
    after = _ask(gw, "Compose a short poem about the golden harbor.")
    assert after.headers["x-gateway-classifier"] == report["candidate"] != shipped
    assert _wait_outcomes(gw, before + 302)[-1]["classifier_version"] == report["candidate"]


@pytest.mark.parametrize("stream", [True, False])
def test_answer_is_judged_and_the_client_does_not_wait(gw, scripted, stream):
    edge, cloud = scripted
    cloud.script("judge-a", actions=[{**JUDGE, "delay": 3.0}, {**JUDGE, "delay": 3.0}])
    before = len(_outcomes(gw))
    started = time.monotonic()
    with httpx.stream("POST", gw.base + "/v1/chat/completions", timeout=30, json={
            "model": "auto", "stream": stream,
            "messages": [{"role": "user", "content": "Tell me the usual opening hours of the old library."}]}) as r:
        assert r.status_code == 200
        body = r.read().decode()
        rid, tier = r.headers["x-request-id"], r.headers["x-gateway-tier"]
    elapsed = time.monotonic() - started
    assert ("[DONE]" in body) if stream else (json.loads(body)["choices"][0]["message"]["content"] in
                                              (EDGE_TEXT, CLOUD_TEXT))
    # The answer was complete while the judge was still thinking (it takes 3 s per order).
    assert elapsed < 2.5, elapsed
    assert len(_outcomes(gw)) == before
    got = _wait_outcomes(gw, before + 1, timeout=30)[-1]
    assert got["request_id"] == rid and got["tier"] == tier
    judged = cloud.requests("judge-a")
    assert len(judged) == 2
    # what the client was streamed is what the judge compared
    streamed = EDGE_TEXT if tier == "edge" else CLOUD_TEXT
    assert all(streamed in j["body"]["messages"][-1]["content"] for j in judged)


def test_personal_data_routes_are_never_shadowed(gw, scripted):
    edge, cloud = scripted
    before = len(_outcomes(gw))
    private = _ask(gw, "Write to me at jane.doe@example.com about the poem.")
    personal_ = _ask(gw, "Compose a short poem, then call me at +44 20 7946 0958.")
    assert private.headers["x-gateway-route"] == "private"
    assert personal_.headers["x-gateway-route"] == "personal"
    assert personal_.headers.get("x-gateway-complexity-class") in ("simple", "complex")
    control = _ask(gw, "Compose a short poem about the hidden island.")
    assert control.headers["x-gateway-route"] == "auto"
    _wait_outcomes(gw, before + 1)
    time.sleep(0.5)  # anything else scheduled would have run by now
    got = _outcomes(gw)[before:]
    assert [o["request_id"] for o in got] == [control.headers["x-request-id"]]
    assert len(cloud.requests("judge-a")) == 2  # the control's two orders only
    texts = [m["content"] for r in edge.requests() + cloud.requests() for m in r["body"]["messages"]]
    assert sum("jane.doe@example.com" in t for t in texts) == 1       # its own edge call, nothing else
    assert sum("+44 20 7946 0958" in t for t in texts) == 1


BUDGET_POLICY = """
version: 1
models:
  edge-a:
    tier: edge
    litellm: {{model: openai/edge-a, api_base: "{edge}", api_key: test}}
  judge-e:
    tier: edge
    litellm: {{model: openai/judge-e, api_base: "{edge}", api_key: test}}
  cloud-a:
    tier: cloud
    litellm: {{model: openai/cloud-a, api_base: "{cloud}", api_key: test}}
    cost: {{input_per_mtok: 1000, output_per_mtok: 1000}}
classifier: {{kind: length, threshold: 0.99}}
routes:
  - name: auto
    when: {{model: auto}}
    simple: [edge-a]
    complex: [cloud-a]
retry: {{attempts: 1}}
feedback:
  shadow: {{rate: 1.0, daily_budget_usd: 0.1, judge: judge-e, max_tokens: {max_tokens}}}
"""


def test_shadowing_stops_when_the_daily_budget_is_spent(mocks, tmp_path):
    edge, cloud = mocks
    for m in (edge, cloud):
        m.reset()
    edge.script("judge-e", default={"content": "tie"})
    g = Gateway(BUDGET_POLICY.format(edge=edge.url, cloud=cloud.url, max_tokens=50), tmp_path)
    try:
        made: list[int] = []
        for i in range(10):
            _ask_settled(g, f"Hello there, number {i}.", i + 1)
            made.append(len(cloud.requests("cloud-a")))
        last_shadowed = made.index(made[-1])
        assert 2 <= made[-1] < 10 and last_shadowed < 9  # some were shadowed, then none at all
        assert made[last_shadowed:] == [made[-1]] * (10 - last_shadowed)
        assert _metric(g, "gateway_shadow_calls_total", result="budget") == 10 - made[-1]
        assert len(edge.requests("judge-e")) == 2 * made[-1]
        assert 0 < _metric(g, "gateway_shadow_cost_usd_total") <= 0.1
        shadow = httpx.get(g.base + "/admin/status", headers=g.admin()).json()["shadow"]
        assert shadow["daily_budget_usd"] == 0.1
        assert shadow["spent_today_usd"] == pytest.approx(_metric(g, "gateway_shadow_cost_usd_total"), rel=0.05)
    finally:
        g.stop()


def _ask_settled(g, text: str, settled: int) -> None:
    """Ask, then wait until `settled` sampled requests of this gateway were judged or refused by the budget."""
    r = _ask(g, text)
    assert r.headers["x-gateway-tier"] == "edge"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done = _metric(g, "gateway_shadow_verdicts_total") + _metric(g, "gateway_shadow_calls_total", result="budget")
        if done >= settled:
            return
        time.sleep(0.05)
    raise AssertionError(g.log())


@pytest.mark.skipif(REDIS_SERVER is None, reason=SKIP_REASON)
def test_replicas_share_the_daily_budget_through_redis(mocks, tmp_path):
    """With answers costing about what was reserved, one replica alone spends nearly the whole budget; two
    sharing Redis spend it together, not twice."""
    edge, cloud = mocks
    for m in (edge, cloud):
        m.reset()
    edge.script("judge-e", default={"content": "tie"})
    proc, url = start_redis()
    policy = BUDGET_POLICY.format(edge=edge.url, cloud=cloud.url, max_tokens=8)
    replicas = [Gateway(policy, tmp_path, env={"GATEWAY_REDIS_URL": url}) for _ in range(2)]
    try:
        for i in range(12):
            for g in replicas:
                _ask_settled(g, f"Hello there, number {i}.", i + 1)
        spent = [_metric(g, "gateway_shadow_cost_usd_total") for g in replicas]
        refused = [_metric(g, "gateway_shadow_calls_total", result="budget") for g in replicas]
        assert all(x > 0 for x in spent) and all(x > 0 for x in refused), (spent, refused)
        assert sum(spent) <= 0.1, spent
        assert len(cloud.requests("cloud-a")) == sum(_metric(g, "gateway_shadow_calls_total", result="ok")
                                                      for g in replicas)
    finally:
        for g in replicas:
            g.stop()
        stop_redis(proc)


# -- pure logic ------------------------------------------------------------------------------------------


def test_verdicts_and_their_combination():
    assert [parse_verdict(x) for x in ("A", " b.", "Tie", "**A**", "Answer B", "neither", "", None, "Apple")] == \
        ["A", "B", "tie", "A", "B", None, None, None, None]
    # first order A=edge B=cloud, second order A=cloud B=edge
    assert combine("B", "A") == (0.0, 1.0)
    assert combine("A", "B") == (1.0, 0.0)
    assert combine("A", "A") == (0.5, 0.5)       # inconsistent: position, not quality
    assert combine("tie", "A") == (0.5, 0.5)
    assert combine("tie", "tie") == (0.5, 0.5)


def _policy(extra: str = "", shadow: str = "{rate: 0.05, daily_budget_usd: 1.0, judge: cloud-a}"):
    return compile_policy(f"""
version: 1
models:
  edge-a: {{tier: edge, litellm: {{model: openai/edge-a, api_base: "http://127.0.0.1:9/v1"}}}}
  edge-b: {{tier: edge, litellm: {{model: openai/edge-b, api_base: "http://127.0.0.1:9/v1"}}}}
  cloud-a: {{tier: cloud, litellm: {{model: openai/cloud-a, api_base: "http://127.0.0.1:9/v1"}}}}
  emb: {{tier: cloud, kind: embedding, litellm: {{model: openai/emb, api_base: "http://127.0.0.1:9/v1"}}}}
routes:
  - name: private
    when: {{pii: true}}
    edge_only: true
    simple: [edge-a]
    complex: [edge-b]
  - name: auto
    when: {{model: auto}}
    simple: [edge-a]
    complex: [cloud-a, edge-b]
feedback:
  shadow: {shadow}
{extra}""", "p.yaml")


def test_policy_shadow_block():
    spec = _policy().feedback.shadow
    assert spec is not None and (spec.rate, spec.daily_budget_usd, spec.judge, spec.max_tokens) == \
        (0.05, 1.0, "cloud-a", 512)
    assert _policy(shadow="{rate: 1, daily_budget_usd: 0, judge: edge-a, max_tokens: 32}").feedback.shadow.max_tokens == 32
    bad = {"{rate: 1.5, daily_budget_usd: 1, judge: cloud-a}": "feedback.shadow.rate must be between 0.0 and 1.0",
           "{rate: 0.1, daily_budget_usd: -1, judge: cloud-a}": "feedback.shadow.daily_budget_usd must be at least 0",
           "{rate: 0.1, daily_budget_usd: 1, judge: cloud-b}": "feedback.shadow.judge: unknown model 'cloud-b'",
           "{rate: 0.1, daily_budget_usd: 1, judge: emb}": "'emb' is an embedding model, not a chat model",
           "{rate: 0.1, daily_budget_usd: 1}": "feedback.shadow.judge is required",
           "{rate: 0.1, daily_budget_usd: 1, judge: cloud-a, budget: 3}": "unknown key 'budget' in feedback.shadow",
           "{rate: 0.1, daily_budget_usd: 1, judge: cloud-a, max_tokens: 0}": "feedback.shadow.max_tokens must be",
           "[1, 2]": "feedback.shadow must be a mapping"}
    for shadow, message in bad.items():
        with pytest.raises(PolicyInvalid) as exc:
            _policy(shadow=shadow)
        text = str(exc.value)
        assert message in text and re.search(r"^p\.yaml:19: ", text, re.M), (shadow, text)  # the shadow line


def test_other_tier_targets():
    policy = _policy()
    auto, private = route_of(policy, "auto"), route_of(policy, "private")
    models = policy.models
    assert [m.name for m in other_tier_targets(policy, auto, "simple", models["edge-a"])] == ["cloud-a"]
    assert [m.name for m in other_tier_targets(policy, auto, "complex", models["cloud-a"])] == ["edge-a", "edge-b"]
    # an answer that crossed tiers (a fallback to edge-b on the complex chain): the simple chain has no cloud
    # model, so the complex chain's own
    assert [m.name for m in other_tier_targets(policy, auto, "complex", models["edge-b"])] == ["cloud-a"]
    assert other_tier_targets(policy, auto, None, models["edge-a"]) == []          # not split (pinned)
    assert other_tier_targets(policy, private, "simple", models["edge-a"]) == []   # edge-only, personal
    # The guards hold even for a route built past the compiler's checks: edge_only, or matching personal data.
    leaky = replace(auto, edge_only=True)
    assert other_tier_targets(policy, leaky, "simple", models["edge-a"]) == []
    personal_route = replace(auto, when=private.when)
    assert personal(private.when) and not personal(auto.when)
    assert other_tier_targets(policy, personal_route, "simple", models["edge-a"]) == []


def test_shadow_body_is_one_bounded_non_streamed_answer():
    body = {"model": "auto", "messages": [], "stream": True, "stream_options": {"include_usage": True}, "n": 3,
            "max_tokens": 4000, "temperature": 0.3}
    assert shadow_body(body, 512) == {"model": "auto", "messages": [], "max_tokens": 512, "temperature": 0.3}
    assert shadow_body({"messages": [], "max_completion_tokens": 20}, 512)["max_tokens"] == 20


def test_feedback_lines_from_shadow_outcomes():
    outcomes = [
        {"request_id": "r1", "kind": "shadow", "prompt": "p1", "tier": "edge", "edge_quality": 0.0,
         "cloud_quality": 1.0, "at": 1},
        {"request_id": "r1", "kind": "explicit", "prompt": "p1", "tier": "edge", "score": 0.5, "at": 2},
        {"request_id": "r2", "kind": "shadow", "prompt": "p2", "tier": "cloud", "edge_quality": 0.5,
         "cloud_quality": 0.5, "at": 3},
        {"request_id": "r3", "kind": "shadow", "tier": "cloud", "edge_quality": 1.0, "cloud_quality": 0.0, "at": 4},
    ]
    lines, info = to_feedback(outcomes)
    by = {x["prompt"]: x for x in lines}
    # r1: the comparison and the client's own rating both count (edge: mean of 0 and 0.5)
    assert (by["p1"]["edge_quality"], by["p1"]["cloud_quality"]) == (0.25, 1.0)
    assert (by["p2"]["edge_quality"], by["p2"]["cloud_quality"]) == (0.5, 0.5)
    assert info["outcomes"] == 4 and info["skipped"]["no_prompt"] == 1
