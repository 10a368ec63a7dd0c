"""Request validation as a pure function: whatever JSON a client sends, the answer is a 4xx or a body that
the rest of the gateway can read and re-encode."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.api.validate import MAX_DEPTH, parse_json, validate_chat
from gateway.errors import ApiError
from gateway.request import Request, message_text

scalars = st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1) \
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)

ROLES = st.sampled_from(["system", "user", "assistant", "tool", "developer", "function", "wizard"]) | json_values
PART_TYPES = st.sampled_from(["text", "image_url", "input_audio", "file", "refusal", "video"]) | json_values
part = st.fixed_dictionaries({"type": PART_TYPES}, optional={
    "text": json_values, "image_url": json_values | st.fixed_dictionaries({"url": json_values}),
    "input_audio": json_values, "file": json_values, "refusal": json_values})
content = st.text(max_size=10) | st.none() | st.lists(part | json_values, max_size=3) | json_values
tool_call = st.fixed_dictionaries({}, optional={
    "id": json_values, "type": json_values,
    "function": st.fixed_dictionaries({}, optional={"name": json_values, "arguments": json_values}) | json_values})
message = st.fixed_dictionaries({}, optional={
    "role": ROLES, "content": content, "name": json_values, "tool_call_id": json_values,
    "tool_calls": st.lists(tool_call | json_values, max_size=2) | json_values, "function_call": json_values})
function = st.fixed_dictionaries({}, optional={"name": json_values | st.text(max_size=5), "description": json_values,
                                               "parameters": json_values, "strict": json_values})
tool = st.fixed_dictionaries({"type": st.just("function") | json_values},
                             optional={"function": function | json_values})
PARAMS = ["max_tokens", "max_completion_tokens", "n", "temperature", "top_p", "presence_penalty",
          "frequency_penalty", "seed", "top_logprobs", "stream", "stream_options", "stop", "user", "metadata",
          "logit_bias", "response_format", "tool_choice", "parallel_tool_calls", "logprobs", "functions"]
body = st.fixed_dictionaries({}, optional={
    "model": st.just("auto") | json_values,
    "messages": st.lists(message | json_values, max_size=3) | json_values,
    "tools": st.lists(tool | json_values, max_size=2) | json_values,
    **{name: json_values for name in PARAMS},
    "vendor_field": json_values,
})


# Well-formed on the outside (a model and a list of message objects), anything inside: reaches the checks
# of each message and field instead of stopping at the first missing key.
chat_body = st.fixed_dictionaries({"model": st.just("auto"), "messages": st.lists(message, min_size=1, max_size=3)},
                                  optional={"tools": st.lists(tool, max_size=2), **{n: json_values for n in PARAMS},
                                            "vendor_field": json_values})


def _read_like_the_gateway(b: dict) -> None:
    """What the api, routing and the upstream clients do with an accepted body."""
    model, messages, stream = validate_chat(b)
    assert isinstance(model, str) and model and isinstance(stream, bool)
    request = Request(b, b"", model, stream, messages, {})
    request.include_usage  # noqa: B018 - reads stream_options
    for m in messages:
        assert m["role"] in {"system", "user", "assistant", "tool", "function", "developer"}
        assert isinstance(message_text(m), str)
    int(b.get("max_tokens") or b.get("max_completion_tokens") or 0)
    orjson.dumps({**b, "model": "upstream"})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body)
def test_any_body_is_accepted_readably_or_rejected_with_a_400(b):
    raw = orjson.dumps(b)
    try:
        parsed = parse_json(raw)
        _read_like_the_gateway(parsed)
    except ApiError as exc:
        assert exc.status == 400
        assert exc.message and exc.code
        error = orjson.loads(exc.body())["error"]
        assert set(error) == {"message", "type", "param", "code"}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chat_body)
def test_any_chat_shaped_body_is_accepted_readably_or_rejected_with_a_400(b):
    test_any_body_is_accepted_readably_or_rejected_with_a_400.hypothesis.inner_test(b)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_any_json_document_is_a_400_or_a_dict(value):
    try:
        assert isinstance(parse_json(orjson.dumps(value)), dict)
    except ApiError as exc:
        assert exc.status == 400


def _deep(depth: int) -> bytes:
    return b'{"model": "auto", "x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize("depth, ok", [(MAX_DEPTH, True), (MAX_DEPTH + 1, False), (254, False), (300, False),
                                       (1000, False), (2000, False)])
def test_depth_limit(depth, ok):
    if ok:
        assert parse_json(_deep(depth))["model"] == "auto"
    else:
        with pytest.raises(ApiError) as info:
            parse_json(_deep(depth))
        assert info.value.status == 400 and info.value.code == "invalid_json"


def test_many_brackets_but_shallow_is_accepted():
    raw = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "[{" * 500}],
                        "x": [[1]] * 5000})
    assert len(parse_json(raw)["x"]) == 5000
