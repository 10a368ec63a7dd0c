"""Fault paths on both provider paths (native aiohttp client and litellm), through the real gateway:
malformed and empty streams, streams cut after a content-free opening, targets that all refuse the request
or the gateway's credentials, `degrade.reply: none`, usage for every stream, and caps on upstream sizes."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from conftest import Gateway, _wait_http, one_model_policy

PATHS = ["native", "litellm"]
# Scenario name -> whether the route has a backup model. Every scenario has a model per path.
SCENARIOS = ["bad", "empty", "role", "auth", "ctx", "mixed", "none", "usage", "cap", "dl", "tpm"]


def _policy(url: str) -> str:
    models, routes = [], []
    for path in PATHS:
        p = path[0]
        for s in SCENARIOS:
            for role in ("a", "b"):
                name = f"{p}{s}{role}"
                models.append(f"  {name}: {{tier: cloud, client: {path}, litellm: {{model: openai/{name}, "
                              f"api_base: \"{url}\", api_key: t}}, timeout: 2s, first_token_timeout: 1s}}")
        for s in SCENARIOS:
            extra = {"none": ", degrade: {reply: none}", "dl": ", deadline: 1500ms"}.get(s, "")
            routes.append(f"  - {{name: {p}{s}, when: {{model: {p}{s}}}, targets: [{p}{s}a, {p}{s}b]{extra}}}")
    return ("version: 1\nmodels:\n" + "\n".join(models) + "\nclassifier: {kind: length}\nroutes:\n"
            + "\n".join(routes) + "\nretry: {attempts: 2, backoff: {initial: 10ms, max: 50ms}}\n"
            "breaker: {enabled: false}\ndeadline: 10s\n"
            "degrade: {reply: \"We are busy.\", retry_after: 5s}\n"
            "limits: {models: {ntpma: {tpm: 60}, ltpma: {tpm: 60}}}\n")


@pytest.fixture(scope="module")
def gw(upstream, tmp_module):
    gateway = Gateway(_policy(upstream.url), tmp_module, wait=False, env={
        "GATEWAY_MAX_UPSTREAM_BODY_BYTES": str(1024 * 1024), "GATEWAY_MAX_UPSTREAM_EVENT_BYTES": str(256 * 1024)})
    _ready(gateway)
    yield gateway
    gateway.stop()


def _ready(gateway: Gateway) -> None:
    """Wait for the start, litellm's import and warm-up included (slow on a busy machine)."""
    try:
        _wait_http(gateway.base + "/readyz", gateway.proc, timeout=240)
    except RuntimeError:
        gateway.stop()
        raise


def post(gw, model: str, stream: bool = False, **extra) -> httpx.Response:
    return httpx.post(gw.base + "/v1/chat/completions", json={
        "model": model, "stream": stream, "messages": [{"role": "user", "content": "hello there"}], **extra},
        timeout=30)


def events(response: httpx.Response) -> list:
    out = []
    for line in response.text.split("\n"):
        if line.startswith("data: "):
            out.append(line[6:] if line[6:] == "[DONE]" else json.loads(line[6:]))
    return out


def streamed_text(evs: list) -> str:
    return "".join((c["choices"][0]["delta"].get("content") or "") for c in evs
                   if isinstance(c, dict) and c.get("choices"))


def assert_real_stream(r: httpx.Response, model: str) -> list:
    """A 200 stream with the whole answer of `model`, no error event, ending [DONE], not degraded."""
    assert r.status_code == 200, r.text
    assert "x-gateway-degraded" not in r.headers
    assert r.headers["x-gateway-model"] == model
    evs = events(r)
    assert evs[-1] == "[DONE]"
    assert not any("error" in e for e in evs[:-1]), evs
    assert streamed_text(evs) == "mock answer to: hello there"
    return evs


BAD_OPENINGS = {
    "not json": {"first_event": "this is not json"},
    "truncated": {"first_event": '{"id": "chatcmpl-1", "object": "chat.completion.chunk", "choi'},
    "wrong shape": {"first_event": '{"id": "x", "object": "list", "data": []}'},
    "plain text body": {"raw": "Service temporarily unavailable\n", "content_type": "text/plain"},
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fault", list(BAD_OPENINGS))
def test_stream_with_a_bad_opening_is_retried(gw, mock, path, fault):
    """The first event is not a chunk: retried on the same target, the client sees only the good answer."""
    p = path[0]
    mock.script(f"{p}bada", [BAD_OPENINGS[fault]])
    r = post(gw, f"{p}bad", stream=True)
    assert_real_stream(r, f"{p}bada")
    if path == "litellm" and fault == "wrong shape":
        return  # litellm reads a JSON event of another shape as an empty chunk: held back, then the answer
    assert r.headers["x-gateway-attempts"] == "2"
    assert len(mock.requests(f"{p}bada")) == 2


EMPTY_ANSWERS = {
    "html page": {"raw": "<html><body><h1>502 Bad Gateway</h1></body></html>", "content_type": "text/html"},
    "empty body": {"raw": ""},
    "no events": {"raw": ": keep-alive\n\n"},
    "only done": {"raw": "data: [DONE]\n\n"},
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fault", list(EMPTY_ANSWERS))
def test_empty_stream_is_a_failure_not_an_empty_answer(gw, mock, path, fault):
    """A 200 with nothing in it falls over (after its retry) to the next target."""
    p = path[0]
    mock.script(f"{p}emptya", [], default=EMPTY_ANSWERS[fault])
    r = post(gw, f"{p}empty", stream=True)
    assert_real_stream(r, f"{p}emptyb")
    assert len(mock.requests(f"{p}emptya")) == 2


@pytest.mark.parametrize("path", PATHS)
def test_all_targets_empty_gives_the_canned_reply_not_an_empty_success(gw, mock, path):
    p = path[0]
    mock.script(f"{p}emptya", [], default=EMPTY_ANSWERS["empty body"])
    mock.script(f"{p}emptyb", [], default=EMPTY_ANSWERS["html page"])
    r = post(gw, f"{p}empty", stream=True)
    assert r.status_code == 200 and r.headers["x-gateway-degraded"] == "true"
    assert streamed_text(events(r)) == "We are busy."


@pytest.mark.parametrize("path", PATHS)
def test_role_only_opening_then_cut_falls_over(gw, mock, path):
    """A stream that sent only its role chunk has given the client nothing yet: a cut falls over."""
    p = path[0]
    mock.script(f"{p}rolea", [], default={"role_chunk": True, "cut_after": 0})
    r = post(gw, f"{p}role", stream=True)
    evs = assert_real_stream(r, f"{p}roleb")
    assert evs[0]["choices"][0]["delta"].get("role") == "assistant"


@pytest.mark.parametrize("path", PATHS)
def test_role_only_opening_then_content_is_passed_on_whole(gw, mock, path):
    p = path[0]
    mock.script(f"{p}rolea", [{"role_chunk": True}])
    evs = assert_real_stream(post(gw, f"{p}role", stream=True), f"{p}rolea")
    assert evs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}


@pytest.mark.parametrize("path", PATHS)
def test_cut_after_content_still_ends_with_an_error_event(gw, mock, path):
    p = path[0]
    mock.script(f"{p}rolea", [{"role_chunk": True, "chunks": 6, "cut_after": 2}])
    r = post(gw, f"{p}role", stream=True)
    evs = events(r)
    assert r.status_code == 200 and evs[-1] == "[DONE]" and evs[-2]["error"]["code"] == "stream_cut"
    assert len(mock.requests(f"{p}rolea")) == 1 and not mock.requests(f"{p}roleb")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("stream", [False, True])
def test_every_target_refusing_the_credentials_is_a_502(gw, mock, path, stream):
    p = path[0]
    before = _metric(gw, f'gateway_upstream_auth_refused_total{{target="{p}autha#0"}}')
    mock.script(f"{p}autha", [], default={"status": 401, "message": "Incorrect API key provided"})
    mock.script(f"{p}authb", [], default={"status": 403, "message": "forbidden"})
    r = post(gw, f"{p}auth", stream=stream)
    assert r.status_code == 502
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "upstream_auth_failed" and "credentials" in error["message"]
    assert len(mock.requests(f"{p}autha")) == 1  # not retried
    assert _metric(gw, f'gateway_upstream_auth_refused_total{{target="{p}autha#0"}}') == before + 1


CTX = {"status": 400, "message": "This model's maximum context length is 4096 tokens. However, you requested "
                                 "9000 tokens.", "code": "context_length_exceeded"}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("stream", [False, True])
def test_every_target_refusing_the_length_gives_the_upstreams_400(gw, mock, path, stream):
    p = path[0]
    mock.script(f"{p}ctxa", [], default=CTX)
    mock.script(f"{p}ctxb", [], default=CTX)
    r = post(gw, f"{p}ctx", stream=stream)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded" and "maximum context length" in error["message"]
    assert error["type"] and "x-gateway-degraded" not in r.headers


@pytest.mark.parametrize("path", PATHS)
def test_too_long_for_one_target_and_refused_by_the_other_is_the_400(gw, mock, path):
    p = path[0]
    mock.script(f"{p}mixeda", [], default=CTX)
    mock.script(f"{p}mixedb", [], default={"status": 401})
    r = post(gw, f"{p}mixed")
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("path", PATHS)
def test_too_long_for_one_target_and_down_at_the_other_degrades(gw, mock, path):
    p = path[0]
    mock.script(f"{p}mixeda", [], default=CTX)
    mock.script(f"{p}mixedb", [], default={"status": 500})
    r = post(gw, f"{p}mixed")
    assert r.status_code == 200 and r.headers["x-gateway-degraded"] == "true"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("stream", [False, True])
def test_reply_none_is_a_503_with_retry_after_over_the_policy_reply(gw, mock, path, stream):
    """The policy's `degrade.reply` is a canned text; the route's `reply: none` turns it off."""
    p = path[0]
    mock.script(f"{p}nonea", [], default={"status": 500})
    mock.script(f"{p}noneb", [], default={"status": 503})
    r = post(gw, f"{p}none", stream=stream)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "upstreams_unavailable"
    assert "none" != r.text.strip()


def _metric(gw, name: str) -> float:
    for line in httpx.get(gw.base + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def _usage_total(gw) -> dict:
    report = httpx.get(gw.base + "/admin/usage", headers=gw.admin()).json()
    totals: dict[str, float] = {}
    for scopes in report.values():
        for scope, counters in scopes.items():
            if scope.startswith("model="):  # model=NAME|tier=TIER
                name = scope[len("model="):].split("|")[0]
                for k, v in counters.items():
                    totals[f"model:{name}:{k}"] = totals.get(f"model:{name}:{k}", 0) + v
    return totals


@pytest.mark.parametrize("path", PATHS)
def test_stream_usage_is_asked_for_counted_and_hidden_when_not_asked(gw, mock, path):
    p = path[0]
    mock.script(f"{p}usagea", [{"chunks": 5}])
    before = _usage_total(gw)
    r = post(gw, f"{p}usage", stream=True)
    evs = assert_real_stream(r, f"{p}usagea")
    assert not any("usage" in e and e.get("usage") for e in evs[:-1]), evs  # the client did not ask
    assert all(e["choices"] for e in evs[:-1])
    sent = mock.requests(f"{p}usagea")[0]["body"]
    assert sent["stream_options"]["include_usage"] is True
    after = _usage_total(gw)
    key = f"model:{p}usagea:completion_tokens"
    assert after.get(key, 0) - before.get(key, 0) == 5  # what the upstream reported


@pytest.mark.parametrize("path", PATHS)
def test_stream_usage_when_the_client_asks_is_passed_on(gw, mock, path):
    p = path[0]
    mock.script(f"{p}usagea", [{"chunks": 5}])
    evs = assert_real_stream(post(gw, f"{p}usage", stream=True, stream_options={"include_usage": True}),
                             f"{p}usagea")
    assert evs[-2]["choices"] == [] and evs[-2]["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize("path", PATHS)
def test_stream_without_upstream_usage_is_counted_from_the_text(gw, mock, path):
    p = path[0]
    mock.script(f"{p}usagea", [{"chunks": 5, "no_usage": True}])
    before = _usage_total(gw)
    assert_real_stream(post(gw, f"{p}usage", stream=True), f"{p}usagea")
    after = _usage_total(gw)
    key = f"model:{p}usagea:completion_tokens"
    if path == "native":
        # "mock answer to: hello there" is 27 characters: about 7 tokens at 4 characters a token.
        assert after.get(key, 0) - before.get(key, 0) == 7
    else:  # litellm counts the streamed text with its own tokenizer when the upstream gives no usage
        assert 3 <= after.get(key, 0) - before.get(key, 0) <= 10
    prompt = f"model:{p}usagea:prompt_tokens"
    assert after.get(prompt, 0) - before.get(prompt, 0) > 0


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_over_the_size_cap_is_an_upstream_failure(gw, mock, path, stream):
    """A 64 MiB body or stream event is cut off at the cap (1 MiB / 256 KiB here) and falls over."""
    p = path[0]
    mock.script(f"{p}capa", [], default={"huge": 64 * 1024 * 1024})
    r = post(gw, f"{p}cap", stream=stream)
    assert r.status_code == 200 and r.headers["x-gateway-model"] == f"{p}capb", r.headers
    if stream:
        assert_real_stream(r, f"{p}capb")
    else:
        assert r.json()["choices"][0]["message"]["content"] == "mock answer to: hello there"
    sent = mock.requests(f"{p}capa")
    if path == "native":  # the native client stops reading at the cap
        assert all(req.get("sent", 0) < 16 * 1024 * 1024 for req in sent), [req.get("sent") for req in sent]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("stream", [False, True])
def test_hanging_upstreams_get_the_canned_reply_within_the_deadline(gw, mock, path, stream):
    p = path[0]
    mock.script(f"{p}dla", [], default={"hang": True})
    mock.script(f"{p}dlb", [], default={"hang": True})
    started = time.monotonic()
    r = post(gw, f"{p}dl", stream=stream)
    elapsed = time.monotonic() - started
    assert r.status_code == 200 and r.headers["x-gateway-degraded"] == "true"
    # The executor gives up early by twice the event loop's recent lag, at most a quarter of the deadline.
    assert 1.5 * 0.75 <= elapsed < 1.5 + 0.2, elapsed


def test_litellm_is_warm_before_ready_and_the_first_request_reaches_the_upstream(mock, tmp_path):
    """litellm's import and first call take seconds; they happen before the gateway says ready, so the
    first request is answered by the upstream well inside a short deadline."""
    policy = one_model_policy(mock.url).replace("litellm: {model:", "client: litellm\n    litellm: {model:") \
        + "deadline: 1500ms\n"
    gateway = Gateway(policy, tmp_path, wait=False)
    _ready(gateway)
    try:
        assert httpx.get(gateway.base + "/readyz", timeout=5).status_code == 200
        started = time.monotonic()
        r = httpx.post(gateway.base + "/v1/chat/completions", json={
            "model": "auto", "messages": [{"role": "user", "content": "first"}]}, timeout=30)
        elapsed = time.monotonic() - started
        assert r.status_code == 200 and "x-gateway-degraded" not in r.headers, (r.headers, gateway.log())
        assert r.json()["choices"][0]["message"]["content"] == "mock answer to: first"
        assert len(mock.requests("edge-a")) == 1 and elapsed < 1.5
        assert "litellm warmed up" in gateway.log()
        assert not mock.requests("gateway-warm-up")  # the warm-up never leaves the gateway
    finally:
        gateway.stop()


def test_loop_lag_reserve_follows_a_blocked_loop():
    """Unit: a loop blocked for 300 ms shows as lag, and the reserve is capped at a quarter of the deadline."""
    import asyncio

    from gateway.execution.looplag import LoopLag

    async def scenario():
        lag = LoopLag(interval=0.02, window=5.0)
        lag.start()
        await asyncio.sleep(0.1)
        quiet = lag.worst()
        time.sleep(0.3)  # a request hogging the loop
        await asyncio.sleep(0.05)
        return quiet, lag.worst(), lag.reserve(10.0), lag.reserve(0.4)

    quiet, busy, reserve, capped = asyncio.run(scenario())
    assert quiet < 0.1 and busy >= 0.25
    assert reserve == 2 * busy and capped == 0.1


@pytest.mark.parametrize("path", PATHS)
def test_streamed_tokens_count_against_the_token_limit(gw, mock, path):
    """A stream's usage (asked for by the gateway) corrects the token window: 80 streamed tokens use up
    a 60-a-minute limit that the estimate before the call (6 tokens) left open."""
    p = path[0]
    mock.script(f"{p}tpma", [{"chunks": 80, "content": " ".join(["word"] * 80)}])
    r = post(gw, f"{p}tpm", stream=True)
    assert r.status_code == 200 and events(r)[-1] == "[DONE]"
    again = post(gw, f"{p}tpm", stream=True)
    assert again.status_code == 429, again.text
    assert again.json()["error"]["code"]


def test_a_reload_that_brings_in_a_litellm_model_warms_litellm(mock, tmp_path):
    """A policy reload that names litellm for the first time warms it in the background, so the first
    request to that model is answered inside a short deadline too."""
    native = one_model_policy(mock.url) + "deadline: 1500ms\n"
    gateway = Gateway(native, tmp_path, wait=False)
    _ready(gateway)
    try:
        assert "litellm warmed up" not in gateway.log()
        gateway.write_policy(native.replace("litellm: {model:", "client: litellm\n    litellm: {model:"))
        deadline = time.monotonic() + 60
        while "litellm warmed up" not in gateway.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "litellm warmed up" in gateway.log(), gateway.log()
        started = time.monotonic()
        r = httpx.post(gateway.base + "/v1/chat/completions", json={
            "model": "auto", "messages": [{"role": "user", "content": "after reload"}]}, timeout=30)
        assert r.status_code == 200 and "x-gateway-degraded" not in r.headers, (r.headers, gateway.log())
        assert r.json()["choices"][0]["message"]["content"] == "mock answer to: after reload"
        assert time.monotonic() - started < 1.5
    finally:
        gateway.stop()
