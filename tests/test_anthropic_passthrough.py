"""The gateway with an Anthropic upstream (`client: anthropic`), end to end: a Messages client's bytes pass
through untouched (thinking blocks and signatures kept, both ways), a Chat Completions client is translated,
failover and canned replies work across dialects, and personal data anywhere in the client's body (even in
a block the chat translation drops) keeps the request on the edge."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest
from conftest import Gateway

THINKING = {"thinking": "The user wants a short answer.", "signature": "EqQBCgIYAhIMsig+passthrough=="}


def _policy(url: str, base: str, dead: int) -> str:
    return f"""
version: 1
models:
  claude: {{tier: cloud, litellm: {{model: anthropic/claude-up, api_base: "{base}", api_key: sk-ant-policy}}}}
  claude-dead:
    tier: cloud
    litellm: {{model: anthropic/claude-dead, api_base: "http://127.0.0.1:{dead}", api_key: sk-ant-policy}}
  edge-a: {{tier: edge, litellm: {{model: openai/edge-a, api_base: "{url}", api_key: t}}}}
classifier: {{kind: length, threshold: 0.5}}
routes:
  - {{name: private, when: {{pii: true}}, targets: [edge-a], edge_only: true}}
  - {{name: claude, when: {{model: claude}}, targets: [claude]}}
  - {{name: failover, when: {{model: claude-dead}}, targets: [claude-dead, claude]}}
  - {{name: canned, when: {{model: gone}}, targets: [claude-dead], degrade: {{reply: "Busy, sorry."}}}}
  - {{name: mixed, when: {{model: mixed}}, targets: [edge-a, claude]}}
  - {{name: edge, when: {{model: edge}}, targets: [edge-a]}}
retry: {{attempts: 1}}
breaker: {{failures: 100, window: 10s, cooldown: 1s}}
"""


@pytest.fixture(scope="module")
def gw(upstream, tmp_module, dead_port):
    gateway = Gateway(_policy(upstream.url, upstream.base, dead_port), tmp_module)
    yield gateway
    gateway.stop()


def _client(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.base, api_key="unused", max_retries=0)


HISTORY = [
    {"role": "user", "content": "Is 7 prime?"},
    {"role": "assistant", "content": [{"type": "thinking", **THINKING}, {"type": "text", "text": "Yes."}]},
    {"role": "user", "content": "And 9?"},
]


def test_messages_pass_through_keeps_thinking_both_ways(gw, mock):
    mock.script("claude-up", default={"content": "No, 9 = 3 x 3.", "thinking": THINKING})
    raw_response = _client(gw).messages.with_raw_response.create(
        model="claude", max_tokens=200, messages=HISTORY, thinking={"type": "enabled", "budget_tokens": 1024})
    message = raw_response.parse()
    assert raw_response.headers["x-gateway-model"] == "claude"
    assert raw_response.headers["x-gateway-route"] == "claude"
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].signature == THINKING["signature"]
    sent = mock.requests("claude-up")[-1]
    assert sent["path"] == "/v1/messages"
    body = json.loads(sent["raw"])
    assert body["model"] == "claude-up"  # only the model changed
    assert body["messages"] == HISTORY and body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert sent["headers"].get("x-api-key") == "sk-ant-policy"  # the policy's key, never the client's


def test_messages_stream_passes_events_through(gw, mock):
    mock.script("claude-up", default={"content": "Nine is not prime.", "thinking": THINKING, "chunks": 4})
    with _client(gw).messages.stream(model="claude", max_tokens=200, messages=HISTORY) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].signature == THINKING["signature"]
    assert final.content[1].text == "Nine is not prime."
    assert final.usage.output_tokens > 0


def test_chat_client_reaches_the_anthropic_model_translated(gw, mock):
    mock.script("claude-up", default={"content": "Translated hello."})
    client = openai.OpenAI(base_url=gw.base + "/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "Translated hello."
    assert mock.requests("claude-up")[-1]["path"] == "/v1/messages"


@pytest.mark.parametrize("stream", [False, True])
def test_failover_to_the_anthropic_upstream(gw, mock, stream):
    mock.script("claude-up", default={"content": "From the second target."})
    r = httpx.post(gw.base + "/v1/messages", timeout=30, json={
        "model": "claude-dead", "max_tokens": 50, "stream": stream,
        "messages": [{"role": "user", "content": "hello"}]})
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-model"] == "claude" and r.headers["x-gateway-fallbacks"] == "1"
    if stream:
        events = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
        text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    else:
        text = r.json()["content"][0]["text"]
    assert text == "From the second target."


def test_anthropic_upstream_errors_come_back_in_the_clients_shape(gw, mock):
    mock.script("claude-up", default={"status": 400, "message": "messages: bad role", "error_type":
                                      "invalid_request_error"})
    r = httpx.post(gw.base + "/v1/messages", timeout=30, json={
        "model": "claude", "max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]})
    assert r.status_code == 400
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    c = httpx.post(gw.base + "/v1/chat/completions", timeout=30, json={
        "model": "claude", "messages": [{"role": "user", "content": "hello"}]})
    assert c.status_code == 400 and "error" in c.json() and "type" not in c.json()


def test_canned_reply_for_a_messages_client(gw, mock):
    r = httpx.post(gw.base + "/v1/messages", timeout=30, json={
        "model": "gone", "max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]})
    assert r.status_code == 200 and r.headers["x-gateway-degraded"] == "true"
    assert r.json()["type"] == "message" and r.json()["content"][0]["text"] == "Busy, sorry."


def test_personal_data_in_a_dropped_block_still_keeps_the_request_on_the_edge(gw, mock):
    """The chat translation drops thinking blocks; the scan reads the client's own body too."""
    mock.script("edge-a", default={"content": "edge answer"})
    history = [HISTORY[0], {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "Mail jane.doe@example.com the result.", "signature": "sig"},
        {"type": "text", "text": "Yes."}]}, HISTORY[2]]
    r = httpx.post(gw.base + "/v1/messages", timeout=30, json={"model": "claude", "max_tokens": 50,
                                                               "messages": history})
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-route"] == "private" and r.headers["x-gateway-tier"] == "edge"
    assert not mock.requests("claude-up")


DOCUMENT_REQUEST = {
    "max_tokens": 100,
    "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
              {"name": "add", "input_schema": {"type": "object"}}],
    "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The memo."},
         "title": "memo", "citations": {"enabled": True}},
        {"type": "text", "text": "Summarise the memo."}]}],
}


def test_document_blocks_and_server_tools_pass_through_to_an_anthropic_upstream(gw, mock):
    mock.script("claude-up", default={"content": "A short memo."})
    r = httpx.post(gw.base + "/v1/messages", timeout=30, json={"model": "mixed", **DOCUMENT_REQUEST})
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-model"] == "claude"
    assert "edge-a=cannot take a document block" in r.headers["x-gateway-skipped"]
    sent = json.loads(mock.requests("claude-up")[-1]["raw"])
    assert sent["messages"] == DOCUMENT_REQUEST["messages"] and sent["tools"] == DOCUMENT_REQUEST["tools"]
    assert not mock.requests("edge-a")


def test_document_blocks_for_a_route_without_an_anthropic_upstream_are_a_clear_400(gw, mock):
    r = httpx.post(gw.base + "/v1/messages", timeout=30, json={"model": "edge", **DOCUMENT_REQUEST})
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "document block" in body["error"]["message"] and "route 'edge'" in body["error"]["message"]
    assert not mock.requests()
