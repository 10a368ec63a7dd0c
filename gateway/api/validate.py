"""Check a chat request body with plain code (no pydantic on the hot path); name the field at fault.

Every field the gateway or an upstream client reads is type-checked here, so no client input reaches code
that would fail on it (a 500): roles, content parts, tool calls, tools, numeric parameters, and the
nesting depth of the whole body (orjson cannot re-encode past 255 levels, litellm copies it recursively).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import ApiError

ROLES = frozenset({"system", "user", "assistant", "tool", "function", "developer"})
_CONTENT_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal", "input_image", "image"})
# Deeper than any real request (a tool's JSON schema nests a few levels per object), far below the 255
# levels orjson can re-encode.
MAX_DEPTH = 64

# name -> (lowest, highest, integer)
_NUMBERS: dict[str, tuple[float | None, float | None, bool]] = {
    "max_tokens": (1, None, True), "max_completion_tokens": (1, None, True), "n": (1, 128, True),
    "temperature": (0, 2, False), "top_p": (0, 1, False), "presence_penalty": (-2, 2, False),
    "frequency_penalty": (-2, 2, False), "seed": (None, None, True), "top_logprobs": (0, 20, True),
    "top_k": (None, None, True), "min_p": (0, 1, False), "repeat_penalty": (0, None, False)}
# Optional fields of a known JSON type (when present and not null).
_TYPED = {"user": (str, "a string"), "logprobs": (bool, "a boolean"), "parallel_tool_calls": (bool, "a boolean"),
          "store": (bool, "a boolean"), "metadata": (dict, "an object"), "response_format": (dict, "an object"),
          "logit_bias": (dict, "an object"), "reasoning_effort": (str, "a string"),
          "service_tier": (str, "a string"), "modalities": (list, "an array"), "prediction": (dict, "an object"),
          "audio": (dict, "an object"), "web_search_options": (dict, "an object")}


def _bad(message: str, param: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _wrong_type(where: str, kind: str) -> ApiError:
    return _bad(f"'{where}' must be {kind}.", where, "invalid_type")


def parse_json(raw: bytes) -> dict:
    if not raw:
        raise ApiError(400, "The request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and _too_deep(body, MAX_DEPTH):
        raise ApiError(400, f"The request body nests JSON deeper than {MAX_DEPTH} levels.", code="invalid_json")
    return body


def _too_deep(value: Any, limit: int) -> bool:
    """True when arrays/objects nest more than `limit` levels; one pass over the containers."""
    level: list[Any] = [value]
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below = []
        for node in level:
            for child in (node.values() if isinstance(node, dict) else node):
                if isinstance(child, (dict, list)):
                    below.append(child)
        level = below
    return False


def _number(body: dict, name: str, lo: float | None = None, hi: float | None = None, integer: bool = False) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        kind = "an integer" if integer else "a number"
        raise _bad(f"'{name}' must be {kind}.", name, "invalid_type")
    if value != value or (lo is not None and value < lo) or (hi is not None and value > hi):
        if lo is None:
            message = f"'{name}' must be at most {hi}."
        elif hi is None:
            message = f"'{name}' must be at least {lo}."
        else:
            message = f"'{name}' must be between {lo} and {hi}."
        raise _bad(message, name)


def _optional(obj: dict, key: str, kind: type, description: str, where: str) -> None:
    value = obj.get(key)
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise _wrong_type(f"{where}.{key}" if where else key, description)


def _content(content: list, where: str) -> None:
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str) \
                or part["type"] not in _CONTENT_PART_TYPES:
            raise _bad(f"'{at}' must be a content part with a known type "
                       f"({', '.join(sorted(_CONTENT_PART_TYPES))}).", at)
        kind = part["type"]
        if kind == "text" and not isinstance(part.get("text"), str):
            raise _wrong_type(f"{at}.text", "a string")
        if kind == "refusal" and not isinstance(part.get("refusal"), str):
            raise _wrong_type(f"{at}.refusal", "a string")
        if kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise _wrong_type(f"{at}.image_url", 'an object with a string "url"')
        if kind == "input_audio" and not isinstance(part.get("input_audio"), dict):
            raise _wrong_type(f"{at}.input_audio", "an object")
        if kind == "file" and not isinstance(part.get("file"), dict):
            raise _wrong_type(f"{at}.file", "an object")


def _tool_calls(calls: Any, where: str) -> None:
    if not isinstance(calls, list):
        raise _wrong_type(f"{where}.tool_calls", "an array")
    for k, call in enumerate(calls):
        at = f"{where}.tool_calls[{k}]"
        if not isinstance(call, dict):
            raise _wrong_type(at, "an object")
        _optional(call, "id", str, "a string", at)
        _optional(call, "type", str, "a string", at)
        function = call.get("function")
        if function is not None:
            if not isinstance(function, dict):
                raise _wrong_type(f"{at}.function", "an object")
            _optional(function, "name", str, "a string", f"{at}.function")
            _optional(function, "arguments", str, "a string", f"{at}.function")


def _message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise _wrong_type(where, "an object")
    role = message.get("role")
    if role is None:
        raise _bad(f"'{where}.role' is required.", f"{where}.role", "missing_required_parameter")
    if not isinstance(role, str):
        raise _bad(f"'{where}.role' must be a string, one of {', '.join(sorted(ROLES))}.", f"{where}.role",
                   "invalid_type")
    if role not in ROLES:
        raise _bad(f"'{where}.role' must be one of {', '.join(sorted(ROLES))}; got {role[:40]!r}.", f"{where}.role")
    for key in ("name", "tool_call_id", "refusal"):
        _optional(message, key, str, "a string", where)
    if message.get("tool_calls") is not None:
        _tool_calls(message["tool_calls"], where)
    _optional(message, "function_call", dict, "an object", where)
    content = message.get("content")
    if isinstance(content, str):
        return
    if content is None:
        if role in ("assistant", "function") or message.get("tool_calls") or message.get("function_call"):
            return
        raise _bad(f"'{where}.content' is required for role {role}.", f"{where}.content",
                   "missing_required_parameter")
    if not isinstance(content, list):
        raise _bad(f"'{where}.content' must be a string or an array of content parts.", f"{where}.content",
                   "invalid_type")
    _content(content, where)


def _tools(body: dict) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _wrong_type("tools", "an array")
        for i, tool in enumerate(tools):
            at = f"tools[{i}]"
            if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
                raise _wrong_type(at, 'an object with a string "type"')
            if tool["type"] == "function":
                _function(tool.get("function"), f"{at}.function")
    functions = body.get("functions")
    if functions is not None:
        if not isinstance(functions, list):
            raise _wrong_type("functions", "an array")
        for i, function in enumerate(functions):
            _function(function, f"functions[{i}]")
    choice = body.get("tool_choice")
    if choice is not None and not isinstance(choice, (str, dict)):
        raise _wrong_type("tool_choice", "a string or an object")
    choice = body.get("function_call")
    if choice is not None and not isinstance(choice, (str, dict)):
        raise _wrong_type("function_call", "a string or an object")


def _function(function: Any, where: str) -> None:
    if not isinstance(function, dict):
        raise _wrong_type(where, "an object")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise _bad(f"'{where}.name' must be a non-empty string.", f"{where}.name", "invalid_type")
    _optional(function, "description", str, "a string", where)
    _optional(function, "parameters", dict, "an object (a JSON schema)", where)
    _optional(function, "strict", bool, "a boolean", where)


def validate_chat(body: dict) -> tuple[str, list, bool]:
    """Returns (model, messages, stream) or raises ApiError(400) naming the field."""
    model = body.get("model")
    if model is None:
        raise _bad("'model' is required (a model name, or \"auto\" to let the gateway route).", "model",
                   "missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise _bad("'model' must be a non-empty string.", "model", "invalid_type")
    messages = body.get("messages")
    if messages is None:
        raise _bad("'messages' is required.", "messages", "missing_required_parameter")
    if not isinstance(messages, list):
        raise _bad("'messages' must be an array of message objects.", "messages", "invalid_type")
    if not messages:
        raise _bad("'messages' must contain at least one message.", "messages", "empty_array")
    for i, message in enumerate(messages):
        _message(message, f"messages[{i}]")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean.", "stream", "invalid_type")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise _bad("'stream_options' must be an object.", "stream_options", "invalid_type")
        _optional(options, "include_usage", bool, "a boolean", "stream_options")
    for name in _NUMBERS.keys() & body.keys():
        _number(body, name, *_NUMBERS[name])
    for name in _TYPED.keys() & body.keys():
        kind, description = _TYPED[name]
        _optional(body, name, kind, description, "")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise _bad("'stop' must be a string or an array of strings.", "stop", "invalid_type")
    bias = body.get("logit_bias")
    if bias and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bias.values()):
        raise _bad("'logit_bias' must map token ids to numbers.", "logit_bias", "invalid_type")
    response_format = body.get("response_format")
    if response_format is not None and not isinstance(response_format.get("type"), str):
        raise _wrong_type("response_format.type", "a string")
    _tools(body)
    return model, messages, stream
