"""Anthropic Messages dialect (`POST /v1/messages`, `/v1/messages/count_tokens`): pure translators.

`to_chat` turns a Messages request into a Chat Completions body (the gateway's neutral form today);
`encode_completion`, `AnthropicStream` and `error_body` turn the chat pipeline's answer, stream chunks and
errors back into Anthropic's shapes. Nothing here does I/O; `AnthropicMessages` hands them to the endpoint.
An Anthropic upstream (`client: anthropic`) gets the client's own bytes instead, so nothing is dropped there.

Dropped on the way in to OpenAI-compatible targets: `thinking` / `redacted_thinking` blocks of the
assistant's history and the `thinking` option, `cache_control`, `top_k`, `metadata` other than `user_id`,
images inside `tool_result` blocks (replaced by a short text note). Document blocks and server tools cannot
be translated: `AnthropicMessages.parse` lists them so that the pipeline sends the request to Anthropic
upstreams only (or answers 400 when the route has none).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from gateway.api.dialect import Parsed, Translated, count, text_or, tool_call_pieces
from gateway.api.validate import validate_chat
from gateway.execution.replay import answer_of
from gateway.errors import ApiError

# HTTP status -> Anthropic error type
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large",
                415: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
                500: "api_error", 502: "api_error", 503: "overloaded_error", 504: "api_error",
                529: "overloaded_error"}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                 "content_filter": "refusal"}
_DROPPED_BLOCKS = ("thinking", "redacted_thinking")  # a tuple: a client may send any JSON as a type
# Blocks only an Anthropic upstream can take (the pass-through sends them as written).
_NATIVE_USER_BLOCKS = ("document", "search_result", "container_upload")


def _server_block(kind: str) -> bool:
    """An assistant block of a server tool's call or result (web search, web fetch, code execution, MCP)."""
    return kind in ("server_tool_use", "mcp_tool_use", "container_upload") or kind.endswith("_tool_result")


def _bad(message: str, param: str) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_request")


# ---- request --------------------------------------------------------------------------------------

def _text_of(blocks: Any, where: str) -> str:
    """`system` or a `tool_result` content: a string or a list of text blocks."""
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise _bad(f"'{where}' must be a string or an array of text blocks.", where)
    parts = []
    for i, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise _bad(f"'{where}[{i}]' must be an object.", f"{where}[{i}]")
        if block.get("type") == "text":
            if not isinstance(block.get("text"), str):
                raise _bad(f"'{where}[{i}].text' must be a string.", f"{where}[{i}].text")
            parts.append(block["text"])
        elif block.get("type") == "image":
            parts.append("[image omitted]")
        else:
            raise _bad(f"'{where}[{i}].type' must be text here; got {str(block.get('type'))[:40]!r}.",
                       f"{where}[{i}].type")
    return "\n".join(parts)


def _image_part(block: dict, where: str) -> dict:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _bad(f"'{where}.source' is required for an image block.", f"{where}.source")
    if source.get("type") == "base64":
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or not isinstance(data, str):
            raise _bad(f"'{where}.source' needs string media_type and data.", f"{where}.source")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise _bad(f"'{where}.source.type' must be base64 or url.", f"{where}.source.type")


def _user_messages(content: list, where: str, native: list | None) -> list[dict]:
    """A user turn: its tool results become `tool` messages (first, as OpenAI wants them right after the
    assistant's tool calls), the rest one user message."""
    out: list[dict] = []
    parts: list[dict] = []
    for j, block in enumerate(content):
        at = f"{where}.content[{j}]"
        if not isinstance(block, dict):
            raise _bad(f"'{at}' must be an object.", at)
        kind = block.get("type")
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise _bad(f"'{at}.text' must be a string.", f"{at}.text")
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image_part(block, at))
        elif kind == "tool_result":
            call_id = block.get("tool_use_id")
            if not isinstance(call_id, str) or not call_id:
                raise _bad(f"'{at}.tool_use_id' is required.", f"{at}.tool_use_id")
            text = _text_of(block.get("content", ""), f"{at}.content")
            if block.get("is_error"):
                text = "[tool error] " + text
            out.append({"role": "tool", "tool_call_id": call_id, "content": text})
        elif kind in _DROPPED_BLOCKS:
            continue
        elif native is not None and kind in _NATIVE_USER_BLOCKS:
            native.append((f"{at}.type", f"a {kind} block"))
            parts.append({"type": "text", "text": f"[{kind}]"})  # what routing sees; only the raw body goes up
        else:
            raise _bad(f"'{at}.type' {str(kind)[:40]!r} is not supported in a user message "
                       "(use text, image or tool_result).", f"{at}.type")
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        out.append({"role": "user", "content": "\n".join(p["text"] for p in parts) if only_text else parts})
    return out


def _assistant_message(content: list, where: str, native: list | None) -> dict | None:
    texts: list[str] = []
    calls: list[dict] = []
    for j, block in enumerate(content):
        at = f"{where}.content[{j}]"
        if not isinstance(block, dict):
            raise _bad(f"'{at}' must be an object.", at)
        kind = block.get("type")
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise _bad(f"'{at}.text' must be a string.", f"{at}.text")
            texts.append(block["text"])
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _bad(f"'{at}' needs string id and name.", at)
            calls.append({"id": block["id"], "type": "function",
                          "function": {"name": block["name"],
                                       "arguments": orjson.dumps(block.get("input") or {}).decode()}})
        elif kind in _DROPPED_BLOCKS:
            continue  # an OpenAI-compatible target cannot verify another provider's thinking signatures
        elif native is not None and isinstance(kind, str) and _server_block(kind):
            native.append((f"{at}.type", f"a {kind} block"))
        else:
            raise _bad(f"'{at}.type' {str(kind)[:40]!r} is not supported in an assistant message "
                       "(use text or tool_use).", f"{at}.type")
    if not texts and not calls:
        return None
    message: dict = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(tools: Any, native: list | None) -> list[dict]:
    if not isinstance(tools, list):
        raise _bad("'tools' must be an array.", "tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _bad(f"'tools[{i}]' must be an object.", f"tools[{i}]")
        if tool.get("type") not in (None, "custom") and native is not None and isinstance(tool.get("type"), str):
            native.append((f"tools[{i}].type", f"the server tool {tool['type'][:40]!r}"))
            continue
        if tool.get("type") not in (None, "custom"):
            raise _bad(f"'tools[{i}].type' {str(tool.get('type'))[:40]!r} is a server tool; this gateway "
                       "supports client tools (name, description, input_schema) only.", f"tools[{i}].type")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _bad(f"'tools[{i}].name' is required.", f"tools[{i}].name")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise _bad(f"'tools[{i}].input_schema' must be a JSON schema object.", f"tools[{i}].input_schema")
        function: dict = {"name": tool["name"], "parameters": schema}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any, chat: dict) -> None:
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise _bad("'tool_choice' must be an object with type auto, any, tool or none.", "tool_choice")
    kind = choice["type"]
    if kind == "tool":
        if not isinstance(choice.get("name"), str):
            raise _bad("'tool_choice.name' is required when type is tool.", "tool_choice.name")
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        chat["parallel_tool_calls"] = False


def to_chat(body: dict, native: list | None = None) -> dict:
    """A Messages request as a Chat Completions body; raises ApiError(400) naming the field at fault.

    With `native` (a list), parts that only an Anthropic upstream can take (document blocks, server tools and
    their results) are listed there as (field, what) instead of refused, and left out of the chat form."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required (a model name, or \"auto\" to let the gateway route).", "model")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _bad("'max_tokens' is required.", "max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _bad("'max_tokens' must be a positive integer.", "max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty array.", "messages")
    out: list[dict] = []
    system = body.get("system")
    if system is not None:
        text = _text_of(system, "system")
        if text:
            out.append({"role": "system", "content": text})
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad(f"'{where}' must be an object.", where)
        role, content = message.get("role"), message.get("content")
        if role not in ("user", "assistant"):
            raise _bad(f"'{where}.role' must be user or assistant.", f"{where}.role")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise _bad(f"'{where}.content' must be a string or an array of content blocks.", f"{where}.content")
        if role == "user":
            out.extend(_user_messages(content, where, native))
        else:
            assistant = _assistant_message(content, where, native)
            if assistant is not None:
                out.append(assistant)
    if not out:
        raise _bad("'messages' holds no content the gateway can send.", "messages")
    chat: dict = {"model": model, "messages": out, "max_tokens": max_tokens}
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _bad(f"'{name}' must be a number.", name)
            chat[name] = value
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("'stop_sequences' must be an array of strings.", "stop_sequences")
        if stops:
            chat["stop"] = stops
    if body.get("tools") is not None:
        tools = _tools(body["tools"], native)
        if tools:
            chat["tools"] = tools
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], chat)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean.", "stream")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


# ---- answers --------------------------------------------------------------------------------------

def _message_id(chat_id: Any) -> str:
    if isinstance(chat_id, str) and chat_id:
        return "msg_" + chat_id.removeprefix("chatcmpl-")
    return "msg_" + uuid.uuid4().hex[:24]


def _stop(choice: dict, stop_sequences: list[str]) -> tuple[str, str | None]:
    """Chat finish_reason -> (stop_reason, stop_sequence). A stop sequence is recognised when the upstream
    names the matched one (vLLM's `stop_reason`); plain OpenAI says only "stop"."""
    reason = choice.get("finish_reason") or "stop"
    matched = choice.get("stop_reason")
    if reason == "stop" and isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    return (_STOP_REASONS.get(reason, "end_turn") if isinstance(reason, str) else "end_turn"), None


def _input_of(arguments: Any) -> dict:
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    if not isinstance(arguments, str):
        return {"value": arguments}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"_raw_arguments": arguments}
    return value if isinstance(value, dict) else {"value": value}


def _usage(usage: Any) -> dict:
    usage = usage if isinstance(usage, dict) else {}
    return {"input_tokens": count(usage.get("prompt_tokens")), "output_tokens": count(usage.get("completion_tokens"))}


def encode_completion(data: dict, stop_sequences: list[str] | None = None) -> dict:
    """A `chat.completion` as an Anthropic `message`."""
    choice, text, calls = answer_of(data)
    content: list[dict] = []
    if text:
        content.append({"type": "text", "text": text})
    for call in calls:
        found = call.get("function")
        function: dict = found if isinstance(found, dict) else {}
        content.append({"type": "tool_use", "id": text_or(call.get("id")) or "toolu_" + uuid.uuid4().hex[:24],
                        "name": text_or(function.get("name")), "input": _input_of(function.get("arguments"))})
    stop_reason, stop_sequence = _stop(choice, stop_sequences or [])
    return {"id": _message_id(data.get("id")), "type": "message", "role": "assistant",
            "model": text_or(data.get("model")), "content": content, "stop_reason": stop_reason,
            "stop_sequence": stop_sequence, "usage": _usage(data.get("usage"))}


def error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, openai_error: dict | None) -> bytes:
    """An OpenAI-shaped error body (or None) as Anthropic's {"type": "error", "error": {type, message}}."""
    error = (openai_error or {}).get("error")
    if isinstance(error, dict):
        message = str(error.get("message") or "")
    else:
        message = str(error or "")
    return orjson.dumps({"type": "error", "error": {"type": error_type(status),
                                                     "message": message or f"HTTP {status}"}})


def _event(kind: str, data: dict) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


class AnthropicStream:
    """Chat chunks in, Anthropic stream events out: message_start, then per content block
    content_block_start / content_block_delta (text_delta, input_json_delta) / content_block_stop, then
    message_delta (stop_reason, usage) and message_stop once the chat stream ends.

    Tool calls are expected one after another (as OpenAI-compatible servers send them); argument pieces
    of a call whose block was already closed are dropped, as an Anthropic block cannot reopen."""

    def __init__(self, stop_sequences: list[str] | None = None) -> None:
        self.stop_sequences = stop_sequences or []
        self.started = False
        self.ended = False
        self.index = -1
        self.block: tuple | None = None      # ("text",) or ("tool", chat tool index)
        self.tools: set[int] = set()
        self.stop_reason = "end_turn"
        self.stop_sequence: str | None = None
        self.usage = {"input_tokens": 0, "output_tokens": 0}

    def _start(self, model: str, chat_id: Any) -> bytes:
        self.started = True
        return _event("message_start", {"message": {
            "id": _message_id(chat_id), "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}})

    def _close(self) -> bytes:
        if self.block is None:
            return b""
        self.block = None
        return _event("content_block_stop", {"index": self.index})

    def _open(self, block: tuple, content_block: dict) -> bytes:
        out = self._close()
        self.index += 1
        self.block = block
        return out + _event("content_block_start", {"index": self.index, "content_block": content_block})

    def chunk(self, payload: dict) -> bytes:
        if self.ended:
            return b""
        out = [] if self.started else [self._start(text_or(payload.get("model")), payload.get("id"))]
        if isinstance(payload.get("usage"), dict):
            self.usage = _usage(payload["usage"])
        for choice in payload.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            found = choice.get("delta")
            delta: dict = found if isinstance(found, dict) else {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.block != ("text",):
                    out.append(self._open(("text",), {"type": "text", "text": ""}))
                out.append(_event("content_block_delta", {"index": self.index,
                                                          "delta": {"type": "text_delta", "text": text}}))
            for call, position, function in tool_call_pieces(delta):
                if position not in self.tools:
                    self.tools.add(position)
                    out.append(self._open(("tool", position), {
                        "type": "tool_use", "id": text_or(call.get("id")) or "toolu_" + uuid.uuid4().hex[:24],
                        "name": text_or(function.get("name")), "input": {}}))
                arguments = function.get("arguments")
                if arguments and isinstance(arguments, str) and self.block == ("tool", position):
                    out.append(_event("content_block_delta", {
                        "index": self.index, "delta": {"type": "input_json_delta", "partial_json": arguments}}))
            if choice.get("finish_reason"):
                self.stop_reason, self.stop_sequence = _stop(choice, self.stop_sequences)
                out.append(self._close())
        return b"".join(out)

    def end(self) -> bytes:
        """The chat stream's [DONE]: close the message."""
        if self.ended:
            return b""
        out = [] if self.started else [self._start("", None)]
        self.ended = True
        out.append(self._close())
        out.append(_event("message_delta", {"delta": {"stop_reason": self.stop_reason,
                                                      "stop_sequence": self.stop_sequence},
                                            "usage": self.usage}))
        out.append(_event("message_stop", {}))
        return b"".join(out)

    def error(self, status: int, openai_error: dict) -> bytes:
        """A failure after the stream started: Anthropic's `error` event; nothing follows it."""
        if self.ended:
            return b""
        self.ended = True
        body = orjson.loads(error_body(status, openai_error))
        return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"


def count_tokens_body(body: dict) -> dict:
    """The chat form of a count_tokens request (same fields as a message request, no max_tokens)."""
    return to_chat({**body, "max_tokens": 1, "stream": False}, native=[])


class AnthropicMessages(Translated):
    name = "anthropic"

    def to_chat(self, body: dict) -> dict:
        return to_chat(body)

    async def parse(self, body: dict, headers: dict, store, policy) -> Parsed:
        native: list[tuple[str, str]] = []
        chat = to_chat(body, native)
        validate_chat(chat)
        return Parsed(chat, chat["model"], bool(chat.get("stream")), chat["messages"], echo=body, original=body,
                      native_only=tuple(native))

    def answer(self, completion: dict, parsed: Parsed) -> dict:
        return encode_completion(completion, (parsed.echo or {}).get("stop_sequences"))

    def translator(self, parsed: Parsed) -> AnthropicStream:
        return AnthropicStream((parsed.echo or {}).get("stop_sequences"))

    def error(self, status: int, error: dict) -> bytes:
        return error_body(status, error)
