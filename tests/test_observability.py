"""Metrics, request and audit logs, cost and savings, as an operator sees them."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from conftest import Gateway

POLICY = """
version: 1
models:
  edge-a: {{tier: edge, litellm: {{model: openai/edge-a, api_base: "{url}", api_key: t}}}}
  cloud-a:
    tier: cloud
    litellm: {{model: openai/cloud-a, api_base: "{url}", api_key: t}}
    cost: {{input_per_mtok: 1000, output_per_mtok: 2000}}
classifier: {{kind: length, threshold: 0.5}}
routes:
  - name: auto
    when: {{model: auto}}
    simple: [edge-a, cloud-a]
    complex: [cloud-a, edge-a]
logging: {{prompts: {prompts}}}
"""


def chat(gw, content="hi", model="auto", **extra):
    return httpx.post(gw.base + "/v1/chat/completions", timeout=10,
                      json={"model": model, "messages": [{"role": "user", "content": content}], **extra})


@pytest.fixture(scope="module")
def gw(upstream, tmp_module):
    gateway = Gateway(POLICY.format(url=upstream.url, prompts="false"), tmp_module,
                      env={"GATEWAY_LOG_REQUESTS": "true"})
    yield gateway
    gateway.stop()


def test_metrics_names_and_labels(gw, mock):
    chat(gw)
    chat(gw, stream=True)
    chat(gw, content="x" * 2000)
    text = httpx.get(gw.base + "/metrics").text
    assert re.search(r'gateway_requests_total\{degraded="false",model="edge-a",route="auto",status="200",tier="edge"\} 2\.0', text)
    assert re.search(r'gateway_requests_total\{degraded="false",model="cloud-a",route="auto",status="200",tier="cloud"\} 1\.0', text)
    for name in ("gen_ai_client_token_usage_total", "gen_ai_client_operation_duration_seconds_bucket",
                 "gateway_time_to_first_token_seconds_bucket", "gateway_classifier_score_bucket",
                 "gateway_classifier_latency_seconds_bucket", "gateway_cost_usd_total", "gateway_savings_usd_total"):
        assert name in text, name
    assert 'gen_ai_client_token_usage_total{gen_ai_request_model="cloud-a",gen_ai_token_type="output"} 7.0' in text


def test_cost_header_and_usage_with_savings(gw, mock):
    r = chat(gw, content="y" * 2000)           # complex: cloud-a, 500 prompt tokens + 7 completion
    assert r.headers["x-gateway-tier"] == "cloud"
    assert float(r.headers["x-gateway-cost"]) == pytest.approx(500 * 1000e-6 + 7 * 2000e-6)
    r = chat(gw, content="z" * 40)              # simple: edge-a, 10 prompt tokens, free
    assert float(r.headers["x-gateway-cost"]) == 0.0
    time.sleep(0.3)
    usage = httpx.get(gw.base + "/admin/usage", headers=gw.admin()).json()
    today = next(iter(usage.values()))
    edge = today["model=edge-a|tier=edge"]
    # What the edge answers would have cost on the route's reference cloud model is the saving.
    assert edge["savings_usd"] >= 10 * 1000e-6 + 7 * 2000e-6 - 1e-12
    assert today["route=auto"]["requests"] >= 2 and today["all"]["cost_usd"] > 0


def test_request_log_lines_and_no_prompts_by_default(gw, mock):
    chat(gw, content="secret prompt text")
    time.sleep(0.3)
    lines = [json.loads(line) for line in gw.log().splitlines() if line.startswith("{")]
    requests = [line for line in lines if "request_id" in line]
    assert requests
    last = requests[-1]
    for field in ("request_id", "policy_version", "route", "tier", "model", "score", "attempts", "latency_ms",
                  "prompt_tokens", "completion_tokens", "cost_usd", "status"):
        assert field in last, field
    assert "secret prompt text" not in gw.log()


def test_audit_log_of_admin_calls_and_reloads(gw, mock):
    httpx.get(gw.base + "/admin/policy", headers=gw.admin())
    gw.write_policy(POLICY.format(url=mock.url, prompts="false") + "\n# edited\n")
    httpx.post(gw.base + "/admin/reload", headers=gw.admin())
    time.sleep(0.3)
    audits = [json.loads(line) for line in gw.log().splitlines() if '"audit"' in line]
    kinds = {a["audit"] for a in audits}
    assert {"admin_call", "policy_reload"} <= kinds
    reload = [a for a in audits if a["audit"] == "policy_reload"][-1]
    assert reload["ok"] is True and reload["trigger"] in ("admin", "file change") and reload["version"]


def test_prompts_logged_only_when_the_policy_opts_in(upstream, tmp_path):
    gw = Gateway(POLICY.format(url=upstream.url, prompts="true"), tmp_path, env={"GATEWAY_LOG_REQUESTS": "true"})
    try:
        chat(gw, content="please log me")
        time.sleep(0.3)
        assert "please log me" in gw.log()
    finally:
        gw.stop()


def test_metrics_aggregate_across_workers(upstream, tmp_path):
    gw = Gateway(POLICY.format(url=upstream.url, prompts="false"), tmp_path, extra_args=["--workers", "2"])
    try:
        for i in range(20):
            assert chat(gw, content=f"w{i}").status_code == 200
        text = httpx.get(gw.base + "/metrics").text
        total = sum(float(v) for v in re.findall(r'gateway_requests_total\{[^}]*status="200"[^}]*\} ([0-9.]+)', text))
        assert total == 20
    finally:
        gw.stop()
