"""The cloud-share dial: a route's share of complex decisions holds `classifier.cloud_share` over a sliding
window when the traffic shifts away from what the calibration assumed (unit and through the real gateway)."""

from __future__ import annotations

import random

import httpx
import pytest
from conftest import Gateway

from gateway.policy import PolicyInvalid
from gateway.policy.compile import compile_policy
from gateway.routing.dial import MIN_SAMPLES, ShareDial


def test_dial_threshold_is_the_window_quantile_and_slides():
    dial = ShareDial()
    assert dial.threshold("r", 0.3, 100, 0.42) == 0.42  # nothing seen yet: the calibrated threshold
    rng = random.Random(1)
    decisions = []
    for _ in range(600):
        s = rng.random()
        thr = dial.threshold("r", 0.3, 100, 0.9)
        decisions.append(s >= thr)
        dial.observe("r", s, s >= thr, 100)
    assert abs(sum(decisions[-400:]) / 400 - 0.3) < 0.06
    for _ in range(300):  # the traffic shifts: every score is now in [0.9, 1]
        s = 0.9 + 0.1 * rng.random()
        thr = dial.threshold("r", 0.3, 100, 0.9)
        decisions.append(s >= thr)
        dial.observe("r", s, s >= thr, 100)
    assert abs(sum(decisions[-200:]) / 200 - 0.3) < 0.08
    assert abs(dial.realised("r") - 0.3) < 0.1
    assert dial.threshold("r", 0.3, 100, 0.5) > 0.9
    assert len(dial._routes["r"].sorted) == 100 == len(dial._routes["r"].order)


def test_dial_warm_up_and_edges():
    dial = ShareDial()
    for i in range(MIN_SAMPLES - 1):
        dial.observe("r", i / 100, False, 500)
    assert dial.threshold("r", 0.5, 500, 0.77) == 0.77
    dial.observe("r", 0.5, False, 500)
    assert dial.threshold("r", 0.5, 500, 0.77) != 0.77
    assert dial.threshold("r", 0.0, 500, 0.77) == float("inf")
    assert dial.threshold("r", 1.0, 500, 0.77) == float("-inf")
    dial.forget_others({"other"})
    assert dial.realised("r") is None


def test_hold_window_needs_cloud_share():
    text = """
version: 1
models:
  e: {tier: edge, litellm: {model: openai/e, api_base: "http://127.0.0.1:1/v1", api_key: x}}
classifier: {kind: length, hold_window: 200}
routes:
  - {name: auto, when: {model: auto}, targets: [e]}
"""
    with pytest.raises(PolicyInvalid, match="hold_window"):
        compile_policy(text, "p.yaml")


POLICY = """
version: 1
models:
  edge-a:
    tier: edge
    litellm: {{model: openai/edge-a, api_base: "{url}", api_key: test}}
  cloud-a:
    tier: cloud
    litellm: {{model: openai/cloud-a, api_base: "{url}", api_key: test}}
classifier: {{kind: length, cloud_share: {share}{extra}}}
routes:
  - name: auto
    when: {{model: auto}}
    simple: [edge-a]
    complex: [cloud-a]
retry: {{attempts: 1}}
"""


def _share(gw, prompts) -> float:
    tiers = []
    with httpx.Client(timeout=30) as client:
        for p in prompts:
            r = client.post(gw.base + "/v1/chat/completions",
                            json={"model": "auto", "messages": [{"role": "user", "content": p}]})
            assert r.status_code == 200, r.text
            tiers.append(r.headers["x-gateway-complexity-class"])
    return tiers.count("complex") / len(tiers)


def _traffic(rng: random.Random, n: int, lo: int, hi: int) -> list[str]:
    return ["x " * (rng.randint(lo, hi) // 2) for _ in range(n)]


def test_gateway_holds_the_share_when_traffic_shifts(upstream, tmp_path):
    rng = random.Random(3)
    # Long prompts (under max_chars, so their scores do not tie): the length scorer's calibration (exponential lengths, mean 600) sends all of them to the
    # cloud; short prompts: none. The dial holds 30 % on both.
    long_traffic, short_traffic = _traffic(rng, 260, 1500, 3800), _traffic(rng, 260, 10, 300)
    plain = Gateway(POLICY.format(url=upstream.url, share=0.3, extra=""), tmp_path)
    try:
        assert _share(plain, long_traffic[:60]) > 0.9
        assert _share(plain, short_traffic[:60]) < 0.1
    finally:
        plain.stop()
    held = Gateway(POLICY.format(url=upstream.url, share=0.3, extra=", hold_window: 100"), tmp_path)
    try:
        _share(held, long_traffic[:100])  # the window fills
        assert abs(_share(held, long_traffic[100:]) - 0.3) <= 0.08
        _share(held, short_traffic[:100])  # the traffic shifts; the window slides over it
        assert abs(_share(held, short_traffic[100:]) - 0.3) <= 0.08
        metrics = httpx.get(held.base + "/metrics", timeout=5).text
        line = next(x for x in metrics.splitlines() if x.startswith('gateway_route_cloud_share{route="auto"}'))
        assert abs(float(line.split()[-1]) - 0.3) <= 0.1
        explained = httpx.post(held.base + "/admin/explain", headers=held.admin(), timeout=5,
                               json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).json()
        assert "held at cloud share 0.3" in " ".join(explained["reasons"])
    finally:
        held.stop()


def _ask(gw, text: str, share: str | None) -> httpx.Response:
    headers = {"x-gateway-cloud-share": share} if share is not None else {}
    return httpx.post(gw.base + "/v1/chat/completions", headers=headers, timeout=30,
                      json={"model": "auto", "messages": [{"role": "user", "content": text}]})


def test_client_may_ask_for_a_lower_cloud_share_only(upstream, tmp_path):
    gw = Gateway(POLICY.format(url=upstream.url, share=0.5, extra=""), tmp_path)
    try:
        mid, short = "y" * 600, "y" * 200  # length scores 0.63 and 0.28; the policy's threshold is 0.5
        assert _ask(gw, mid, None).headers["x-gateway-complexity-class"] == "complex"
        assert _ask(gw, mid, "0.1").headers["x-gateway-complexity-class"] == "simple"  # threshold 0.9
        assert _ask(gw, short, "0.9").headers["x-gateway-complexity-class"] == "simple"  # more: not granted
        r = _ask(gw, mid, "lots")
        assert r.status_code == 400 and r.json()["error"]["param"] == "x-gateway-cloud-share"
        assert _ask(gw, mid, "1.5").status_code == 400
        gw.write_policy(POLICY.format(url=upstream.url, share=0.5, extra=", allow_higher_share: true"))
        assert httpx.post(gw.base + "/admin/reload", headers=gw.admin(), timeout=10).json()["ok"]
        assert _ask(gw, short, "0.9").headers["x-gateway-complexity-class"] == "complex"  # threshold 0.1
    finally:
        gw.stop()


async def test_dial_starts_over_when_the_classifier_changes():
    """A promoted classifier scores on another scale: quantiles of the old one's scores would set its
    threshold, so the windows start over (the new model's calibrated threshold until they fill)."""
    from gateway.request import Request
    from gateway.routing.router import Router

    class Scoring:
        default_threshold = 0.5

        def __init__(self, version: str, offset: float) -> None:
            self.version, self.offset = version, offset

        async def score(self, text: str) -> float:
            return self.offset + len(text) / 1000

        def threshold_for_share(self, share: float) -> float:
            return self.offset + 0.07

    text = """
version: 1
models:
  e: {tier: edge, litellm: {model: openai/e, api_base: "http://127.0.0.1:1/v1", api_key: x}}
  c: {tier: cloud, litellm: {model: openai/c, api_base: "http://127.0.0.1:1/v1", api_key: x}}
classifier: {kind: length, cloud_share: 0.3, hold_window: 50}
routes:
  - {name: auto, when: {model: auto}, simple: [e], complex: [c]}
"""
    policy = compile_policy(text, "p.yaml")
    current = {"length": Scoring("old", 0.0)}
    router = Router(current.__getitem__)

    def request(n: int) -> Request:
        return Request({}, b"", "auto", False, [{"role": "user", "content": "x" * n}])

    for n in range(1, 51):
        await router.decide(policy, request(n))
    decision, _, _ = await router.decide(policy, request(10))
    assert decision.threshold == pytest.approx(0.036)  # the 0.7 quantile of the window's 0.001 … 0.050
    current["length"] = Scoring("new", 0.9)  # promoted: every score is now above the old window
    decision, _, _ = await router.decide(policy, request(10))
    assert decision.threshold == pytest.approx(0.97)  # calibrated, not the stale quantile (which sends all)
    assert decision.complexity == "simple"
