"""POST /v1/feedback through the real gateway: outcomes stored with the request's context, errors in OpenAI's
shape, the policy's prompt switch and retention, and the loop closed: outcomes -> `gateway learn
--from-store` -> a gateway serving the learned model (GATEWAY_CLASSIFIER_MODEL=DIR)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import httpx
import pytest
from conftest import ROOT, Gateway

KEY_A, KEY_B = "sk-team-a", "sk-team-b"
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
auth:
  required: true
  keys:
    - {{name: team-a, sha256: {a}}}
    - {{name: team-b, sha256: {b}}}
routes:
  - name: auto
    when: {{model: auto}}
    simple: [edge-a]
    complex: [cloud-a]
retry: {{attempts: 1}}
{feedback}
"""
FEEDBACK_ON = "feedback: {store_prompts: true, window_s: 600, max_records: 1000}"


def policy(url: str, feedback: str = FEEDBACK_ON) -> str:
    def digest(k):
        return hashlib.sha256(k.encode()).hexdigest()
    return POLICY.format(url=url, a=digest(KEY_A), b=digest(KEY_B), feedback=feedback)


@pytest.fixture(scope="module")
def outcomes_path(tmp_module):
    return tmp_module / "outcomes.jsonl"


@pytest.fixture(scope="module")
def gw(upstream, tmp_module, outcomes_path):
    gateway = Gateway(policy(upstream.url), tmp_module, env={"GATEWAY_OUTCOMES_PATH": str(outcomes_path)})
    yield gateway
    gateway.stop()


def _chat(gw, text: str, key: str = KEY_A) -> httpx.Response:
    r = httpx.post(gw.base + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                   json={"model": "auto", "messages": [{"role": "system", "content": "be brief"},
                                                       {"role": "user", "content": text}]})
    assert r.status_code == 200, r.text
    return r


def _feedback(gw, body, key: str | None = KEY_A, raw: bytes | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if raw is not None:
        return httpx.post(gw.base + "/v1/feedback", headers={**headers, "content-type": "application/json"},
                          content=raw, timeout=10)
    return httpx.post(gw.base + "/v1/feedback", headers=headers, json=body, timeout=10)


def _outcomes(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _recorded(gw, request_id: str, score, key: str = KEY_A) -> dict:
    """Post feedback, retrying briefly: the request record is written just after the answer is sent."""
    for _ in range(50):
        r = _feedback(gw, {"request_id": request_id, "score": score}, key)
        if r.status_code != 404:
            break
        import time

        time.sleep(0.02)
    assert r.status_code == 200, r.text
    return r.json()


def test_feedback_is_stored_with_the_request_context(gw, mock, outcomes_path):
    r = _chat(gw, "Write a sonnet about the sea.")
    rid = r.headers["x-request-id"]
    body = _recorded(gw, rid, "up")
    assert body == {"object": "feedback", "request_id": rid, "score": 1.0, "recorded": True}
    (rec,) = [o for o in _outcomes(outcomes_path) if o["request_id"] == rid]
    assert rec["score"] == 1.0 and rec["kind"] == "explicit"
    assert rec["tier"] == r.headers["x-gateway-tier"] and rec["model"] == r.headers["x-gateway-model"]
    assert rec["route"] == "auto" and rec["key"] == "team-a"
    assert rec["policy_version"] == r.headers["x-gateway-policy-version"]
    assert rec["classifier_version"].startswith("onnx-")
    assert abs(rec["classifier_score"] - float(r.headers["x-gateway-complexity"])) < 1e-4
    assert rec["prompt"] == "Write a sonnet about the sea."  # the text the classifier scored (last user turn)
    assert rec["at"] >= rec["answered_at"]
    _recorded(gw, rid, 0.25)  # a second rating of the same answer is kept; the export uses the latest
    assert [o["score"] for o in _outcomes(outcomes_path) if o["request_id"] == rid] == [1.0, 0.25]


@pytest.mark.parametrize("body,status,param,code", [
    ({"score": 1}, 400, "request_id", "missing_required_parameter"),
    ({"request_id": 7, "score": 1}, 400, "request_id", "invalid_value"),
    ({"request_id": "x"}, 400, "score", "missing_required_parameter"),
    ({"request_id": "x", "score": 1.5}, 400, "score", "invalid_value"),
    ({"request_id": "x", "score": "maybe"}, 400, "score", "invalid_value"),
    ({"request_id": "x", "score": True}, 400, "score", "invalid_value"),
    ({"request_id": "no-such-request", "score": 1}, 404, "request_id", "request_not_found"),
])
def test_bad_feedback_is_a_4xx_in_openai_shape(gw, body, status, param, code):
    r = _feedback(gw, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["code"] == code and err["message"]


def test_feedback_needs_the_key_that_made_the_request(gw, mock):
    rid = _chat(gw, "hello")
    rid = rid.headers["x-request-id"]
    _recorded(gw, rid, 1)
    assert _feedback(gw, {"request_id": rid, "score": 1}, key=None).status_code == 401
    assert _feedback(gw, {"request_id": rid, "score": 1}, key="sk-wrong").status_code == 401
    r = _feedback(gw, {"request_id": rid, "score": 1}, key=KEY_B)
    assert r.status_code == 404 and r.json()["error"]["code"] == "request_not_found"
    r = _feedback(gw, None, raw=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = _feedback(gw, None, raw=b'{"request_id": "' + b"x" * 70000 + b'", "score": 1}')
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = httpx.get(gw.base + "/v1/feedback", timeout=5)
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"


def _chat_model(gw, model: str, text: str) -> str:
    r = httpx.post(gw.base + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY_A}"}, timeout=30,
                   json={"model": model, "messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200, r.text
    return r.headers["x-request-id"]


def _wait_outcome(path, request_id: str, kind: str) -> dict:
    import time

    for _ in range(100):
        found = [o for o in _outcomes(path) if o["request_id"] == request_id and o["kind"] == kind]
        if found:
            return found[-1]
        time.sleep(0.02)
    raise AssertionError(f"no {kind} outcome for {request_id}: {_outcomes(path)[-3:]}")


def test_regeneration_and_escalation_are_implicit_outcomes(gw, mock, outcomes_path):
    import time

    first = _chat_model(gw, "auto", "Regenerate me, please.")
    time.sleep(0.1)  # the answer is remembered in the background, after it was sent
    second = _chat_model(gw, "auto", "Regenerate me, please.")
    rec = _wait_outcome(outcomes_path, first, "regenerated")
    assert rec["score"] == 0.0 and rec["followed_by"] == second and rec["prompt"] == "Regenerate me, please."

    edge = _chat_model(gw, "edge-a", "Is this answer good enough?")
    time.sleep(0.1)
    cloud = _chat_model(gw, "cloud-a", "Is this answer good enough?")
    rec = _wait_outcome(outcomes_path, edge, "escalated")
    assert rec["score"] == 0.0 and rec["tier"] == "edge" and rec["followed_by"] == cloud
    # A new conversation is not a repeat.
    other = _chat_model(gw, "auto", "Something else entirely.")
    time.sleep(0.2)
    assert not [o for o in _outcomes(outcomes_path) if o.get("followed_by") == other]


def test_learning_loop_outcomes_to_learned_model_serving(gw, mock, outcomes_path, upstream, tmp_path):
    """Clients rate answers; `gateway learn --from-store` learns from them; a gateway started on the learned
    folder routes with it and names its version in the next outcome."""
    topics = ["river", "city", "forest", "winter", "market", "harbor", "castle", "storm", "garden", "island"]
    prompts = [f"Compose a short poem about the {t} at dawn, number {i}." for i in range(3) for t in topics]
    prompts += [f"What are the opening hours of the {t} office, branch {i}?" for i in range(3) for t in topics]
    for text in prompts:
        r = _chat(gw, text)
        tier = r.headers["x-gateway-tier"]
        score = 0.8 if tier == "cloud" else (0.0 if "poem" in text else 1.0)
        _recorded(gw, r.headers["x-request-id"], score)
    out = tmp_path / "learned"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "gateway", "learn", "--from-store", str(outcomes_path),
                          "--output", str(out)], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    feedback = [json.loads(line) for line in (out / "feedback.jsonl").read_text().splitlines()]
    assert {f["prompt"] for f in feedback} >= set(prompts)
    assert (out / "learned.json").is_file() and (out / "base" / "classifier.onnx").is_file()

    from gateway.classify.learn import LearnedScorer

    learned = LearnedScorer(out)
    served = Gateway(policy(upstream.url), tmp_path, env={"GATEWAY_CLASSIFIER_MODEL": str(out),
                                                          "GATEWAY_OUTCOMES_PATH": str(tmp_path / "o2.jsonl")})
    try:
        text = "Compose a short poem about the meadow at noon."
        r = _chat(served, text)
        assert abs(float(r.headers["x-gateway-complexity"]) - learned.score_batch([text])[0]) < 1e-4
        _recorded(served, r.headers["x-request-id"], "down")
        (rec,) = _outcomes(tmp_path / "o2.jsonl")
        assert rec["classifier_version"] == learned.version
    finally:
        served.stop()


def test_prompt_switch_and_retention_and_off(gw, mock, upstream, outcomes_path):
    admin = gw.admin()
    gw.write_policy(policy(upstream.url, "feedback: {window_s: 600, max_records: 5}"))
    assert httpx.post(gw.base + "/admin/reload", headers=admin, timeout=10).json()["ok"]
    ids = []
    for i in range(8):
        rid = _chat(gw, f"question {i}").headers["x-request-id"]
        _recorded(gw, rid, i / 10)
        ids.append(rid)
    kept = _outcomes(outcomes_path)
    assert [o["request_id"] for o in kept] == ids[-5:]  # the newest 5
    assert all("prompt" not in o for o in kept)  # store_prompts is off by default

    gw.write_policy(policy(upstream.url, ""))
    assert httpx.post(gw.base + "/admin/reload", headers=admin, timeout=10).json()["ok"]
    rid = _chat(gw, "one more").headers["x-request-id"]
    r = _feedback(gw, {"request_id": rid, "score": 1})
    assert r.status_code == 403 and r.json()["error"]["code"] == "feedback_disabled"
    gw.write_policy(policy(upstream.url))
    assert httpx.post(gw.base + "/admin/reload", headers=admin, timeout=10).json()["ok"]
