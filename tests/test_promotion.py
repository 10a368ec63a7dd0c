"""Safe promotion through the real gateway: a learned classifier that beats the running one on held-back
outcomes is swapped in hot (next answer names its version), one that does not is kept aside, rollback restores
the previous one; all of it in /admin/status and the metrics."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import Gateway
from redis_fixture import REDIS_SERVER, SKIP_REASON, start_redis, stop_redis
from test_learn import _write, gateway, synthetic

from gateway.classify.promote import MIN_HOLDOUT, PromotionError, compare, decide

POLICY = """
version: 1
models:
  edge-a:
    tier: edge
    litellm: {{model: openai/edge-a, api_base: "{url}", api_key: test}}
  cloud-a:
    tier: cloud
    litellm: {{model: openai/cloud-a, api_base: "{url}", api_key: test}}
classifier: {{kind: onnx, cloud_share: 0.5}}
routes:
  - name: auto
    when: {{model: auto}}
    simple: [edge-a]
    complex: [cloud-a]
retry: {{attempts: 1}}
feedback: {{store_prompts: true, promote_margin: 0.02}}
"""


@pytest.fixture(scope="module")
def models(tmp_module):
    good, bad = tmp_module / "good", tmp_module / "bad"
    res = gateway("learn", "--feedback", str(_write(tmp_module / "f.jsonl", synthetic(300, seed=11))),
                  "--output", str(good))
    assert res.returncode == 0, res.stderr
    flipped = synthetic(300, seed=12)
    for r in flipped:  # the opposite truth: cloud better on the non-poems
        r["edge_quality"], r["cloud_quality"] = (0.2, 0.9) if not r["truth_creative"] else (0.8, 0.7)
    res = gateway("learn", "--feedback", str(_write(tmp_module / "b.jsonl", flipped)), "--output", str(bad))
    assert res.returncode == 0, res.stderr
    holdout = _write(tmp_module / "holdout.jsonl", synthetic(200, seed=13))
    return good, bad, holdout


@pytest.fixture(scope="module")
def gw(upstream, tmp_module):
    g = Gateway(POLICY.format(url=upstream.url), tmp_module, env={"GATEWAY_OUTCOMES_PATH": str(tmp_module / "o.jsonl")})
    yield g
    g.stop()


def _classifier_header(gw) -> str:
    r = httpx.post(gw.base + "/v1/chat/completions", timeout=30,
                   json={"model": "auto", "messages": [{"role": "user", "content": "Compose a short poem about rain."}]})
    assert r.status_code == 200, r.text
    return r.headers["x-gateway-classifier"]


def _promote(gw, body) -> httpx.Response:
    return httpx.post(gw.base + "/admin/classifier/promote", headers=gw.admin(), json=body, timeout=60)


def test_promotion_kept_aside_promoted_and_rolled_back(gw, mock, models):
    good, bad, holdout = models
    shipped = _classifier_header(gw)
    assert shipped.startswith("onnx-")

    r = _promote(gw, {"model": str(bad), "holdout": str(holdout)})
    assert r.status_code == 200, r.text
    kept = r.json()
    assert kept["promoted"] is False and kept["diff"] < 0.02 and kept["candidate"].startswith("learned-")
    assert _classifier_header(gw) == shipped

    r = _promote(gw, {"model": str(good), "holdout": str(holdout)})
    assert r.status_code == 200, r.text
    won = r.json()
    assert won["promoted"] is True and won["diff"] >= 0.02 and won["diff_ci90"][0] > 0, won
    assert _classifier_header(gw) == won["candidate"]  # the next request is routed by the new version
    status = httpx.get(gw.base + "/admin/status", headers=gw.admin(), timeout=5).json()["classifier"]
    assert status["version"] == won["candidate"] and status["previous"] == shipped
    assert status["last_promotion"]["promoted"] is True

    r = httpx.post(gw.base + "/admin/classifier/rollback", headers=gw.admin(), timeout=10)
    assert r.status_code == 200 and r.json()["running"] == shipped
    assert _classifier_header(gw) == shipped
    m = httpx.get(gw.base + "/metrics", timeout=5).text
    for result in ("promoted", "kept_aside", "rolled_back"):
        assert f'gateway_classifier_promotions_total{{result="{result}"}} 1.0' in m
    assert "classifier_promotion" in gw.log() and "classifier_rollback" in gw.log()


def test_promotion_refuses_bad_requests(gw, models):
    good, _, _ = models
    assert httpx.post(gw.base + "/admin/classifier/promote", json={"model": str(good)}, timeout=5).status_code == 401
    r = _promote(gw, {})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = _promote(gw, {"model": "/no/such/model"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_model"
    # Held-back outcomes from the store: none yet that the candidate was not trained on.
    r = _promote(gw, {"model": str(good), "holdout": "store"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_holdout"


def test_holdout_excludes_the_candidates_training_prompts(models, tmp_path):
    from gateway.classify.learn import LearnedScorer, prompt_digest
    from gateway.classify.promote import holdout_from_feedback, trained_digests

    good, _, _ = models
    trained = [json.loads(x) for x in (good.parent / "f.jsonl").read_text().splitlines()]
    digests = trained_digests(good)
    assert {prompt_digest(r["prompt"]) for r in trained} == digests
    prompts, _, _ = holdout_from_feedback(trained + synthetic(50, seed=99), digests)
    assert not any(prompt_digest(p) in digests for p in prompts)
    scorer = LearnedScorer(good)
    with pytest.raises(PromotionError, match=f"at least {MIN_HOLDOUT}"):
        import numpy as np

        compare(scorer, scorer, ["a"] * 5, np.zeros(5), np.ones(5))
    assert decide({"diff": 0.05, "diff_ci90": [0.01, 0.09]}, 0.02)[0]
    assert not decide({"diff": 0.05, "diff_ci90": [-0.01, 0.09]}, 0.02)[0]
    assert not decide({"diff": 0.01, "diff_ci90": [0.005, 0.02]}, 0.02)[0]


@pytest.mark.skipif(not REDIS_SERVER, reason=SKIP_REASON)
def test_promotion_reaches_the_other_replica_through_redis(upstream, tmp_path, models):
    import time

    good, _, holdout = models
    proc, url = start_redis()
    a = b = None
    try:
        env = {"GATEWAY_REDIS_URL": url}
        a = Gateway(POLICY.format(url=upstream.url), tmp_path, env=env)
        b = Gateway(POLICY.format(url=upstream.url), tmp_path, env=env)
        shipped = _classifier_header(b)
        won = _promote(a, {"model": str(good), "holdout": str(holdout)}).json()
        assert won["promoted"] is True
        deadline = time.time() + 10
        while _classifier_header(b) != won["candidate"] and time.time() < deadline:
            time.sleep(0.2)
        assert _classifier_header(b) == won["candidate"]
        assert "classifier_followed" in b.log()
        assert httpx.post(a.base + "/admin/classifier/rollback", headers=a.admin(), timeout=10).status_code == 200
        deadline = time.time() + 10
        while _classifier_header(b) != shipped and time.time() < deadline:
            time.sleep(0.2)
        assert _classifier_header(b) == shipped
    finally:
        for g in (a, b):
            if g is not None:
                g.stop()
        stop_redis(proc)
