"""Check a chat request body with plain code (no pydantic on the hot path); name the field at fault."""

from __future__ import annotations

import orjson

from gateway.errors import ApiError

ROLES = frozenset({"system", "user", "assistant", "tool", "function", "developer"})
_CONTENT_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal", "input_image", "image"})


# name -> (lowest, highest, integer)
_NUMBERS = {"max_tokens": (1, None, True), "max_completion_tokens": (1, None, True), "n": (1, 128, True),
            "temperature": (0, 2, False), "top_p": (0, 1, False), "presence_penalty": (-2, 2, False),
            "frequency_penalty": (-2, 2, False)}


def _bad(message: str, param: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def parse_json(raw: bytes) -> dict:
    if not raw:
        raise ApiError(400, "The request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return body


def _number(body: dict, name: str, lo: float | None = None, hi: float | None = None, integer: bool = False):
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        kind = "an integer" if integer else "a number"
        raise _bad(f"'{name}' must be {kind}.", name, "invalid_type")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _bad(f"'{name}' must be between {lo} and {hi}." if hi is not None else f"'{name}' must be at least {lo}.",
                   name)


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
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad(f"'{where}' must be an object.", where, "invalid_type")
        role = message.get("role")
        if role is None:
            raise _bad(f"'{where}.role' is required.", f"{where}.role", "missing_required_parameter")
        if role not in ROLES:
            raise _bad(f"'{where}.role' must be one of {', '.join(sorted(ROLES))}; got {str(role)[:40]!r}.",
                       f"{where}.role")
        content = message.get("content")
        if isinstance(content, str):
            continue
        if content is None:
            if role in ("assistant", "function") or message.get("tool_calls") or message.get("function_call"):
                continue
            raise _bad(f"'{where}.content' is required for role {role}.", f"{where}.content",
                       "missing_required_parameter")
        if not isinstance(content, list):
            raise _bad(f"'{where}.content' must be a string or an array of content parts.", f"{where}.content",
                       "invalid_type")
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in _CONTENT_PART_TYPES:
                raise _bad(f"'{where}.content[{j}]' must be a content part with a known type "
                           f"({', '.join(sorted(_CONTENT_PART_TYPES))}).", f"{where}.content[{j}]")
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                raise _bad(f"'{where}.content[{j}].text' must be a string.", f"{where}.content[{j}].text",
                           "invalid_type")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean.", "stream", "invalid_type")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _bad("'stream_options' must be an object.", "stream_options", "invalid_type")
    for name in _NUMBERS.keys() & body.keys():
        _number(body, name, *_NUMBERS[name])
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise _bad("'stop' must be a string or an array of strings.", "stop", "invalid_type")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise _bad("'tools' must be an array.", "tools", "invalid_type")
    return model, messages, stream
