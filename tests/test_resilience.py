"""Fault injection: every upstream failure mode against the real gateway, asserting the answer the client
gets, the attempts made, the time taken against the deadlines, and the breakers."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from conftest import Gateway

POLICY = """
version: 1
models:
{models}
  pool:
    tier: edge
    litellm: {{model: openai/pool, api_key: t}}
    deployments:
      - {{name: pool-live, api_base: "{url}"}}
      - {{name: pool-dead, api_base: "http://127.0.0.1:{dead}/v1"}}
  weighted:
    tier: edge
    litellm: {{model: openai/weighted, api_key: t}}
    deployments:
      - {{name: w-heavy, api_base: "{url}", weight: 3}}
      - {{name: w-light, api_base: "{url}", weight: 1}}
classifier: {{kind: length}}
routes:
{routes}
  - name: pool
    when: {{model: pool-route}}
    targets: [pool]
  - name: canned
    when: {{model: canned}}
    targets: [c-primary]
    degrade: {{reply: "We are busy; a person will follow up.", retry_after: 7s, webhook: "{base}/_hook"}}
  - name: deadline
    when: {{model: deadline}}
    targets: [hangs]
    deadline: 1500ms
retry: {{attempts: 3, backoff: {{initial: 50ms, max: 200ms, jitter: full}}, retry_after_cap: 1s}}
breaker: {{failures: 3, window: 10s, cooldown: 1s}}
"""

# Each test uses its own models, so breakers and scripts of one test never touch another.
NAMES = ["p500", "b500", "p429", "pra", "pcap", "pctx", "bctx", "pdown", "bdown", "preset", "pmal", "pttft", "bttft",
         "pcut", "perr", "pcut0", "bcut0", "brk", "brkb", "hangs", "c-primary", "pdisc", "pdisc2", "p408"]


def _policy(url: str, base: str, dead: int) -> str:
    models = "\n".join(f"  {n}: {{tier: cloud, litellm: {{model: openai/{n}, api_base: \"{url}\", api_key: t}}, "
                       f"timeout: 1s, first_token_timeout: 500ms}}" for n in NAMES)
    pairs = [("p500", "b500"), ("p429", None), ("pra", None), ("pcap", None), ("pctx", "bctx"), ("pdown", "bdown"),
             ("preset", None), ("pmal", None), ("pttft", "bttft"), ("pcut", None), ("perr", None),
             ("pcut0", "bcut0"), ("brk", "brkb"), ("pdisc", None), ("pdisc2", None), ("p408", None)]
    routes = "\n".join(f"  - {{name: r-{a}, when: {{model: {a}-route}}, targets: [{a}{', ' + b if b else ''}]}}"
                       for a, b in pairs)
    return POLICY.format(models=models, routes=routes, url=url, base=base, dead=dead)


@pytest.fixture(scope="module")
def gw(upstream, tmp_module, dead_port):
    gateway = Gateway(_policy(upstream.url, upstream.base, dead_port), tmp_module)
    yield gateway
    gateway.stop()


def post(gw, model: str, stream: bool = False, content: str = "hello", **extra):
    return httpx.post(gw.base + "/v1/chat/completions", json={
        "model": model, "stream": stream, "messages": [{"role": "user", "content": content}], **extra}, timeout=30)


def sse_events(response: httpx.Response) -> list:
    events = []
    for line in response.text.split("\n"):
        if line.startswith("data: "):
            events.append(line[6:] if line[6:] == "[DONE]" else json.loads(line[6:]))
    return events


def test_5xx_is_retried_then_succeeds(gw, mock):
    mock.script("p500", [{"status": 500}, {"status": 503}])
    r = post(gw, "p500-route")
    assert r.status_code == 200
    assert r.headers["x-gateway-model"] == "p500"
    assert r.headers["x-gateway-attempts"] == "3"
    assert len(mock.requests("p500")) == 3 and not mock.requests("b500")


def test_5xx_after_retries_falls_over_to_next_target(gw, mock):
    mock.script("p500", [], default={"status": 502})
    r = post(gw, "p500-route")
    assert r.status_code == 200
    assert r.headers["x-gateway-model"] == "b500"
    assert r.headers["x-gateway-attempts"] == "4"
    assert r.headers["x-gateway-fallbacks"] == "1"
    assert len(mock.requests("p500")) == 3 and len(mock.requests("b500")) == 1


def test_429_honours_retry_after_seconds(gw, mock):
    mock.script("pra", [{"status": 429, "headers": {"Retry-After": "0.6"}}])
    started = time.monotonic()
    r = post(gw, "pra-route")
    elapsed = time.monotonic() - started
    assert r.status_code == 200
    first, second = mock.requests("pra")
    assert second["t"] - first["t"] >= 0.55
    assert elapsed < 3


def test_429_honours_retry_after_ms(gw, mock):
    mock.script("p429", [{"status": 429, "headers": {"retry-after-ms": "300"}}])
    r = post(gw, "p429-route")
    assert r.status_code == 200
    first, second = mock.requests("p429")
    assert 0.28 <= second["t"] - first["t"] < 1.0


def test_retry_after_is_capped(gw, mock):
    mock.script("pcap", [{"status": 429, "headers": {"Retry-After": "30"}}])
    started = time.monotonic()
    r = post(gw, "pcap-route")
    assert r.status_code == 200
    assert time.monotonic() - started < 2.5  # the policy caps waits at 1s


def test_408_is_retried(gw, mock):
    mock.script("p408", [{"status": 408}])
    r = post(gw, "p408-route")
    assert r.status_code == 200 and len(mock.requests("p408")) == 2


def test_context_window_error_fails_over_without_retry(gw, mock):
    mock.script("pctx", [{"status": 400, "message": "This model's maximum context length is 4096 tokens",
                          "code": "context_length_exceeded"}])
    r = post(gw, "pctx-route")
    assert r.status_code == 200
    assert r.headers["x-gateway-model"] == "bctx"
    assert len(mock.requests("pctx")) == 1


def test_connection_reset_is_retried(gw, mock):
    mock.script("preset", [{"reset": True}])
    r = post(gw, "preset-route")
    assert r.status_code == 200
    assert len(mock.requests("preset")) == 2


def test_malformed_json_is_retried(gw, mock):
    mock.script("pmal", [{"malformed": True}])
    r = post(gw, "pmal-route")
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"
    assert len(mock.requests("pmal")) == 2


def test_hanging_upstream_is_bounded_by_the_total_deadline(gw, mock):
    mock.script("hangs", [], default={"hang": True})
    started = time.monotonic()
    r = post(gw, "deadline")
    elapsed = time.monotonic() - started
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "upstreams_unavailable"
    assert "retry-after" in r.headers
    # The executor gives up early by twice the event loop's recent lag, at most a quarter of the deadline.
    assert 1.5 * 0.75 <= elapsed < 1.5 + 0.4
    time.sleep(0.3)
    assert all(req["aborted"] for req in mock.requests("hangs"))  # abandoned calls were closed


def test_stream_slow_first_token_falls_over_before_any_byte(gw, mock):
    mock.script("pttft", [], default={"first_token_delay": 3})
    started = time.monotonic()
    r = post(gw, "pttft-route", stream=True)
    assert r.status_code == 200
    assert r.headers["x-gateway-model"] == "bttft"
    events = sse_events(r)
    assert events[-1] == "[DONE]" and all("error" not in e for e in events[:-1])
    assert time.monotonic() - started < 2.9  # 3 tries x 0.5s first-token budget, then the backup


def test_stream_cut_after_first_chunks_ends_with_error_event_and_done(gw, mock):
    mock.script("pcut", [{"chunks": 6, "cut_after": 2}])
    r = post(gw, "pcut-route", stream=True)
    assert r.status_code == 200
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    assert "error" in events[-2] and events[-2]["error"]["code"] == "stream_cut"
    assert len([e for e in events[:-2] if "choices" in e]) == 2
    assert len(mock.requests("pcut")) == 1  # no retry once the client has bytes


def test_stream_error_event_from_upstream_is_passed_on(gw, mock):
    mock.script("perr", [{"chunks": 6, "error_after": 3}])
    events = sse_events(post(gw, "perr-route", stream=True))
    assert events[-1] == "[DONE]" and "error" in events[-2]
    assert len([e for e in events if isinstance(e, dict) and "choices" in e]) == 3


def test_stream_cut_before_first_chunk_is_retried(gw, mock):
    mock.script("pcut0", [], default={"cut_after": 0})
    r = post(gw, "pcut0-route", stream=True)
    assert r.headers["x-gateway-model"] == "bcut0"
    assert sse_events(r)[-1] == "[DONE]"


def test_canned_reply_non_stream_and_stream_with_handoff(gw, mock):
    mock.script("c-primary", [], default={"status": 500})
    r = post(gw, "canned")
    assert r.status_code == 200
    assert r.headers["x-gateway-degraded"] == "true"
    assert "server" in r.headers["x-gateway-degraded-reason"]
    assert r.headers["retry-after"] == "7"
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "We are busy; a person will follow up."
    s = post(gw, "canned", stream=True, stream_options={"include_usage": True})
    assert s.status_code == 200 and s.headers["x-gateway-degraded"] == "true"
    events = sse_events(s)
    assert events[-1] == "[DONE]"
    assert events[0]["choices"][0]["delta"]["content"] == "We are busy; a person will follow up."
    assert events[-2]["usage"]["total_tokens"] == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(httpx.get(mock.base + "/_hooks").json()) < 2:
        time.sleep(0.05)
    hooks = httpx.get(mock.base + "/_hooks").json()
    assert len(hooks) == 2 and hooks[0]["messages"][0]["content"] == "hello" and hooks[0]["route"] == "canned"


def test_openai_sdk_reads_canned_reply(gw, mock):
    mock.script("c-primary", [], default={"status": 503})
    client = openai.OpenAI(base_url=gw.base + "/v1", api_key="x", max_retries=0)
    completion = client.chat.completions.create(model="canned", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content.startswith("We are busy")


def test_no_canned_reply_gives_503_in_openai_shape(gw, mock):
    mock.script("pdown", [], default={"status": 500})
    mock.script("bdown", [], default={"status": 500})
    r = post(gw, "pdown-route")
    assert r.status_code == 503
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert r.headers["retry-after"]
    assert r.headers["x-gateway-attempts"] == "6"


def test_breaker_opens_skips_target_then_half_opens_and_closes(gw, mock):
    mock.script("brk", [], default={"status": 500})
    r = post(gw, "brk-route")  # 3 failures: the breaker (3 in 10s) opens
    assert r.headers["x-gateway-model"] == "brkb"
    assert len(mock.requests("brk")) == 3
    r = post(gw, "brk-route")
    assert r.headers["x-gateway-model"] == "brkb"
    assert len(mock.requests("brk")) == 3  # skipped while open: no call made
    metrics = httpx.get(gw.base + "/metrics").text
    assert 'gateway_breaker_open{target="brk#0"} 1.0' in metrics
    mock.script("brk", [], default=None)  # healthy again
    time.sleep(1.1)                         # cooldown over: half-open
    r = post(gw, "brk-route")
    assert r.headers["x-gateway-model"] == "brk"
    assert 'gateway_breaker_open{target="brk#0"} 0.0' in httpx.get(gw.base + "/metrics").text


def test_group_skips_dead_deployment(gw, mock):
    for _ in range(10):  # equal weights: the dead one is picked first at least once but with p = 1/1024
        r = post(gw, "pool-route")
        assert r.status_code == 200 and r.headers["x-gateway-model"] == "pool"
        assert r.headers["x-gateway-deployment"] == "pool-live"
    assert len(mock.requests("pool")) == 10
    assert 'gateway_breaker_open{target="pool-dead"} 1.0' in httpx.get(gw.base + "/metrics").text


def test_weighted_deployments_share_load(gw, mock):
    chosen = []
    for _ in range(160):
        r = post(gw, "weighted")
        assert r.status_code == 200
        chosen.append(r.headers["x-gateway-deployment"])
    share = chosen.count("w-heavy") / len(chosen)
    assert 0.6 <= share <= 0.9  # weights 3:1 -> 0.75 expected; the bounds are ~4 standard deviations
    assert len(mock.requests("weighted")) == 160


def test_client_disconnect_cancels_the_upstream_stream(gw, mock):
    mock.script("pdisc", [{"chunks": 200, "chunk_delay": 0.05}])
    with httpx.stream("POST", gw.base + "/v1/chat/completions", json={
            "model": "pdisc-route", "stream": True, "messages": [{"role": "user", "content": "x"}]}) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(3)]
        assert got[0].startswith("data: ")
    time.sleep(0.6)
    assert mock.requests("pdisc")[0]["aborted"]


def test_client_disconnect_cancels_a_non_stream_call(gw, mock):
    mock.script("pdisc2", [{"delay": 1.0}])
    with pytest.raises(httpx.ReadTimeout):
        post_timeout = httpx.Timeout(0.3)
        httpx.post(gw.base + "/v1/chat/completions", json={
            "model": "pdisc2-route", "messages": [{"role": "user", "content": "x"}]}, timeout=post_timeout)
    time.sleep(1.2)
    assert mock.requests("pdisc2")[0]["aborted"]


def test_counters_for_retries_fallbacks_and_degraded(gw, mock):
    text = httpx.get(gw.base + "/metrics").text
    assert "gateway_retries_total" in text and "gateway_fallbacks_total" in text
    assert "gateway_degraded_total" in text
