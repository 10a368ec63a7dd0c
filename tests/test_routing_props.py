"""Property tests (hypothesis) on the matcher, the privacy check and the PII detector."""

from __future__ import annotations

import asyncio
import re

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.policy import PolicyInvalid, compile_policy
from gateway.policy.schema import Band, Match
from gateway.routing.matcher import evaluate
from gateway.routing.pii import RegexPiiDetector, iban_ok, luhn_ok
from gateway.request import Request
from gateway.routing.router import Router
from gateway.routing.signals import Signals

detector = RegexPiiDetector()
texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]),
                                           "content": texts}), min_size=1, max_size=6)


def signals(msgs, model="auto", score=None, body_extra=None):
    body = {"model": model, "messages": msgs, **(body_extra or {})}
    s = Signals(Request(body, b"", model, False, msgs, {}), detector)
    s.score = score
    return s


@given(messages, st.floats(0, 1))
def test_any_and_not_are_or_and_negation(msgs, score):
    s = signals(msgs, score=score)
    a = Match(score=Band(0.5, None))
    b = Match(messages=Band(None, 2))
    assert evaluate(Match(any=(a, b)), s) == (evaluate(a, s) or evaluate(b, s))
    assert evaluate(Match(none=(a,)), s) == (not evaluate(a, s))
    assert evaluate(Match(), s)  # an empty `when` matches every request


@given(messages, st.integers(0, 5000), st.integers(0, 5000))
def test_token_band_agrees_with_estimate(msgs, lo, hi):
    assume(lo <= hi)
    s = signals(msgs)
    assert evaluate(Match(tokens=Band(lo, hi)), s) == (lo <= s.estimated_tokens <= hi)


def _luhn_complete(prefix: str) -> str:
    for d in "0123456789":
        if luhn_ok(prefix + d):
            return prefix + d
    raise AssertionError


@given(st.text(alphabet="0123456789", min_size=15, max_size=15), texts)
def test_valid_card_numbers_are_always_found(digits, noise):
    card = _luhn_complete(digits)
    assume(not re.search(r"\d$", noise))
    grouped = " ".join(card[i:i + 4] for i in range(0, 16, 4))
    assert "card" in detector.detect(f"{noise} pay with {grouped} please")


@given(st.text(alphabet="0123456789", min_size=16, max_size=16))
def test_card_detection_requires_luhn(digits):
    found = "card" in detector.detect(f"number {digits} end")
    assert found == luhn_ok(digits)


def test_iban_checksum():
    assert iban_ok("DE89 3704 0044 0532 0130 00") and iban_ok("GB82WEST12345698765432")
    assert not iban_ok("DE89 3704 0044 0532 0130 01")
    assert detector.detect("send to GB82 WEST 1234 5698 7654 32 today") >= {"iban"}
    assert detector.detect("write to jane.doe@example.org") == {"email"}
    assert "phone" in detector.detect("call me on +44 20 7946 0958")
    assert "national_id" in detector.detect("my SSN is 123-45-6789")
    assert detector.detect("The answer is 42 and 1999 was a year.") == set()


tiers = st.sampled_from(["edge", "cloud"])


@st.composite
def policies(draw):
    n = draw(st.integers(2, 5))
    names = [f"m{i}" for i in range(n)]
    model_lines = []
    for name in names:
        fallbacks = draw(st.lists(st.sampled_from(names), max_size=2, unique=True))
        model_lines.append(f"  {name}: {{tier: {draw(tiers)}, litellm: {{model: openai/{name}, api_base: 'http://h/v1'}}, "
                           f"fallbacks: [{', '.join(fallbacks)}]}}")
    chain = draw(st.lists(st.sampled_from(names), min_size=1, max_size=4))
    spill = draw(st.lists(st.sampled_from(names), max_size=2, unique=True))
    spill_line = f"\n    spillover: {{queue_depth: 1, to: [{', '.join(spill)}]}}" if spill else ""
    text = ("models:\n" + "\n".join(model_lines) +
            f"\nroutes:\n  - name: private\n    targets: [{', '.join(chain)}]\n    edge_only: true{spill_line}\n")
    return text


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(policies())
def test_edge_only_policies_either_are_rejected_or_never_reach_cloud(text):
    try:
        policy = compile_policy(text, "p.yaml", {})
    except PolicyInvalid as exc:
        assert any("edge_only route can reach cloud model" in e.message for e in exc.errors)
        return
    route = policy.routes[0]
    reachable, todo = set(), list(route.simple + (route.spillover.to if route.spillover else ()))
    while todo:
        name = todo.pop()
        if name not in reachable:
            reachable.add(name)
            todo.extend(policy.models[name].fallbacks)
    assert all(policy.models[n].tier == "edge" for n in reachable)


class _Score:
    default_threshold = 0.5

    def __init__(self, value):
        self.value = value

    async def score(self, text):
        return self.value

    def threshold_for_share(self, share):
        return 1 - share


@settings(max_examples=60)
@given(st.floats(0, 1), messages)
def test_split_route_picks_the_chain_by_threshold(score, msgs):
    policy = compile_policy("""
models:
  e: {tier: edge, litellm: {model: openai/e, api_base: 'http://h/v1'}}
  c: {tier: cloud, litellm: {model: openai/c, api_base: 'http://h/v1'}}
classifier: {kind: length, threshold: 0.4}
routes:
  - {name: auto, when: {model: auto}, simple: [e, c], complex: [c, e]}
""", "p.yaml", {})
    router = Router(lambda kind: _Score(score))
    decision, plan, _ = asyncio.run(router.decide(policy, Request({}, b"", "auto", False, msgs, {})))
    assert decision.complexity == ("complex" if score >= 0.4 else "simple")
    assert plan.targets[0].name == ("c" if score >= 0.4 else "e")
