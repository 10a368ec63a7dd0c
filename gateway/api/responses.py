"""OpenAI Responses dialect (`POST /v1/responses`): pure translators.

`to_chat` turns a Responses request into a Chat Completions body (the gateway's neutral form today);
`encode_completion` and `ResponsesStream` turn the chat pipeline's answer and stream chunks into a
`response` object and Responses stream events. Errors keep OpenAI's shape. Nothing here does I/O.

Stored responses (`previous_response_id`) exist only when the policy keeps them (`responses: {store: true}`);
the endpoint then loads the earlier turns and answers `store` as the request's `store` (default true),
otherwise `store` is answered as false and `previous_response_id` is refused with a 400. `item_reference`
and `background` are refused. Dropped on the way in: `reasoning` items and options, `truncation`,
`metadata`, `include`.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

import orjson

from gateway.admission.keys import bearer
from gateway.api.dialect import Parsed, Translated, count, text_or, tool_call_pieces
from gateway.execution.replay import answer_of
from gateway.errors import ApiError


def _bad(message: str, param: str, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# ---- request --------------------------------------------------------------------------------------

def _parts(content: Any, where: str) -> str | list[dict]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(f"'{where}' must be a string or an array of content parts.", where)
    parts: list[dict] = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise _bad(f"'{at}' must be an object.", at)
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            if not isinstance(part.get("text"), str):
                raise _bad(f"'{at}.text' must be a string.", f"{at}.text")
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal") or "")})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise _bad(f"'{at}.image_url' is required (file_id needs stored files, which this gateway "
                           "does not keep).", f"{at}.image_url")
            image: dict = {"url": url}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise _bad(f"'{at}.type' {str(kind)[:40]!r} is not supported (use input_text, output_text or "
                       "input_image).", f"{at}.type")
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _items(items: list, out: list[dict]) -> None:
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad(f"'{where}' must be an object.", where)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _bad(f"'{where}.role' must be user, assistant, system or developer.", f"{where}.role")
            content = _parts(item.get("content"), f"{where}.content")
            if role == "assistant" and isinstance(content, list):
                content = "".join(p.get("text", "") for p in content)
            out.append({"role": role, "content": content})
        elif kind == "function_call":
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise _bad(f"'{where}' needs string call_id and name.", where)
            arguments = item.get("arguments", "")
            if not isinstance(arguments, str):
                raise _bad(f"'{where}.arguments' must be a JSON string.", f"{where}.arguments")
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and (
                    last.get("tool_calls") or last.get("content") is not None):
                last.setdefault("tool_calls", []).append(call)  # one assistant turn: text and its calls
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                raise _bad(f"'{where}.call_id' is required.", f"{where}.call_id")
            output = item.get("output", "")
            if not isinstance(output, str):
                output = _parts(output, f"{where}.output")
                if not isinstance(output, str):
                    output = "\n".join(p.get("text", "[image omitted]") for p in output)
            out.append({"role": "tool", "tool_call_id": call_id, "content": output})
        elif kind == "reasoning":
            continue  # another model's reasoning cannot be replayed to an OpenAI-compatible target
        elif kind == "item_reference":
            raise _bad(f"'{where}': item references need stored responses, which this gateway does not keep; "
                       "send the items themselves.", where)
        else:
            raise _bad(f"'{where}.type' {str(kind)[:40]!r} is not supported (use message, function_call or "
                       "function_call_output).", f"{where}.type")


def _tools(tools: Any) -> list[dict]:
    if not isinstance(tools, list):
        raise _bad("'tools' must be an array.", "tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _bad(f"'tools[{i}]' must be an object.", f"tools[{i}]")
        if tool.get("type") != "function":
            raise _bad(f"'tools[{i}].type' {str(tool.get('type'))[:40]!r} is a hosted tool; this gateway "
                       "supports function tools only.", f"tools[{i}].type")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _bad(f"'tools[{i}].name' is required.", f"tools[{i}].name")
        parameters = tool.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _bad(f"'tools[{i}].parameters' must be an object (a JSON schema).", f"tools[{i}].parameters")
        function: dict = {"name": tool["name"], "parameters": parameters or {"type": "object", "properties": {}}}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _bad("'tool_choice' must be auto, none, required or {\"type\": \"function\", \"name\": ...}.",
               "tool_choice")


def _text_format(text: Any) -> dict | None:
    """`text.format` as a chat `response_format` (None for plain text); what an upstream or litellm would
    fail on (a schema that is not an object, a name that is not a string) is a 400 here."""
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _bad("'text' must be an object.", "text", "invalid_type")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise _bad("'text.format' must be an object with type text, json_object or json_schema.", "text.format")
    if fmt["type"] == "text":
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    name, schema, strict = fmt.get("name", "response"), fmt.get("schema"), fmt.get("strict")
    if not isinstance(name, str) or not name:
        raise _bad("'text.format.name' must be a non-empty string.", "text.format.name", "invalid_type")
    if schema is not None and not isinstance(schema, dict):
        raise _bad("'text.format.schema' must be an object (a JSON schema).", "text.format.schema", "invalid_type")
    if strict is not None and not isinstance(strict, bool):
        raise _bad("'text.format.strict' must be a boolean.", "text.format.strict", "invalid_type")
    json_schema: dict = {"name": name, "schema": schema or {}}
    if strict is not None:
        json_schema["strict"] = strict
    return {"type": "json_schema", "json_schema": json_schema}


def to_chat(body: dict) -> dict:
    """A Responses request as a Chat Completions body; raises ApiError(400) naming the field at fault."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required (a model name, or \"auto\" to let the gateway route).", "model",
                   "missing_required_parameter")
    if body.get("previous_response_id") is not None:
        raise _bad("'previous_response_id' is not supported: this gateway does not store responses. Send the "
                   "whole conversation in 'input' (with store: false).", "previous_response_id",
                   "unsupported_parameter")
    if body.get("background"):
        raise _bad("'background' is not supported by this gateway.", "background", "unsupported_parameter")
    messages: list[dict] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _bad("'instructions' must be a string.", "instructions")
        if instructions:
            messages.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
    elif isinstance(items, list):
        _items(items, messages)
    else:
        raise _bad("'input' is required: a string or an array of input items.", "input",
                   "missing_required_parameter" if items is None else "invalid_type")
    if not any(m["role"] != "system" for m in messages):
        raise _bad("'input' holds no message the gateway can send.", "input")
    chat: dict = {"model": model, "messages": messages}
    limit = body.get("max_output_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise _bad("'max_output_tokens' must be a positive integer.", "max_output_tokens")
        chat["max_tokens"] = limit
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]  # checked by the chat validation, reported under the same name
    if body.get("tools") is not None:
        tools = _tools(body["tools"])
        if tools:
            chat["tools"] = tools
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    if isinstance(body.get("parallel_tool_calls"), bool):
        chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    if isinstance(body.get("user"), str):
        chat["user"] = body["user"]
    fmt = _text_format(body.get("text"))
    if fmt is not None:
        chat["response_format"] = fmt
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean.", "stream", "invalid_type")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


# ---- answers --------------------------------------------------------------------------------------

def _usage(usage: Any) -> dict | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = count(usage.get("prompt_tokens")), count(usage.get("completion_tokens"))
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + completion}


class _Shell:
    """The fields of a `response` object that echo the request."""

    def __init__(self, request: dict) -> None:
        self.id = _new_id("resp")
        self.created_at = int(time.time())
        self.request = request

    def response(self, model: str, status: str, output: list, usage: dict | None = None,
                 incomplete: str | None = None, error: dict | None = None) -> dict:
        r = self.request
        return {
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "error": error, "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": r.get("instructions"), "max_output_tokens": r.get("max_output_tokens"),
            "model": model or r.get("model", ""), "output": output,
            "parallel_tool_calls": r.get("parallel_tool_calls", True),
            "previous_response_id": r.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None}, "store": r.get("store") is True,
            "temperature": r.get("temperature"), "text": r.get("text") or {"format": {"type": "text"}},
            "tool_choice": r.get("tool_choice", "auto"), "tools": r.get("tools") or [],
            "top_p": r.get("top_p"), "truncation": "disabled", "usage": usage,
            "user": r.get("user"), "metadata": r.get("metadata") or {},
        }


def _message_item(item_id: str, text: str, status: str = "completed") -> dict:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def _final_status(finish_reason: Any) -> tuple[str, str | None]:
    if finish_reason == "length":
        return "incomplete", "max_output_tokens"
    if finish_reason == "content_filter":
        return "incomplete", "content_filter"
    return "completed", None


def encode_completion(data: dict, request: dict) -> dict:
    """A `chat.completion` as a `response` object."""
    choice, text, calls = answer_of(data)
    output: list[dict] = []
    if text:
        output.append(_message_item(_new_id("msg"), text))
    for call in calls:
        found = call.get("function")
        function: dict = found if isinstance(found, dict) else {}
        arguments = function.get("arguments") or ""
        output.append(_call_item(_new_id("fc"), text_or(call.get("id")) or _new_id("call"),
                                 text_or(function.get("name")),
                                 arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()))
    status, incomplete = _final_status(choice.get("finish_reason"))
    return _Shell(request).response(text_or(data.get("model")), status, output, _usage(data.get("usage")), incomplete)


class ResponsesStream:
    """Chat chunks in, Responses stream events out (each `event: <type>` with a sequence_number):
    response.created and response.in_progress first; per output item output_item.added, then for text
    content_part.added / output_text.delta / output_text.done / content_part.done, for a function call
    function_call_arguments.delta / .done; output_item.done; response.completed (or .incomplete) with usage
    once the chat stream ends. A failure after the start gives `error` and `response.failed`."""

    def __init__(self, request: dict) -> None:
        self.shell = _Shell(request)
        self.seq = 0
        self.started = False
        self.ended = False
        self.model = ""
        self.output: list[dict] = []        # finished items
        self.current: dict | None = None    # the item being streamed
        self.calls: dict[int, int] = {}     # chat tool index -> output index
        self.finish_reason: Any = None
        self.usage: dict | None = None
        self.final: dict | None = None      # the finished response, once response.completed is out

    def _event(self, kind: str, data: dict) -> bytes:
        payload = {"type": kind, "sequence_number": self.seq, **data}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _start(self) -> bytes:
        self.started = True
        response = self.shell.response(self.model, "in_progress", [])
        return (self._event("response.created", {"response": response})
                + self._event("response.in_progress", {"response": response}))

    def _close(self) -> bytes:
        item, self.current = self.current, None
        if item is None:
            return b""
        index = len(self.output)
        out = []
        if item["type"] == "message":
            text = item["content"][0]["text"]
            part = {"type": "output_text", "text": text, "annotations": []}
            out.append(self._event("response.output_text.done", {"item_id": item["id"], "output_index": index,
                                                                 "content_index": 0, "text": text, "logprobs": []}))
            out.append(self._event("response.content_part.done", {"item_id": item["id"], "output_index": index,
                                                                  "content_index": 0, "part": part}))
        else:
            out.append(self._event("response.function_call_arguments.done", {
                "item_id": item["id"], "output_index": index, "name": item["name"], "arguments": item["arguments"]}))
        item["status"] = "completed"
        out.append(self._event("response.output_item.done", {"output_index": index, "item": item}))
        self.output.append(item)
        return b"".join(out)

    def chunk(self, payload: dict) -> bytes:
        if self.ended:
            return b""
        self.model = self.model or text_or(payload.get("model"))
        out = [] if self.started else [self._start()]
        if isinstance(payload.get("usage"), dict):
            self.usage = _usage(payload["usage"])
        for choice in payload.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            found = choice.get("delta")
            delta: dict = found if isinstance(found, dict) else {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.current is None or self.current["type"] != "message":
                    out.append(self._close())
                    self.current = _message_item(_new_id("msg"), "", "in_progress")
                    index = len(self.output)
                    out.append(self._event("response.output_item.added", {
                        "output_index": index, "item": {**self.current, "content": []}}))
                    out.append(self._event("response.content_part.added", {
                        "item_id": self.current["id"], "output_index": index, "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": []}}))
                self.current["content"][0]["text"] += text
                out.append(self._event("response.output_text.delta", {
                    "item_id": self.current["id"], "output_index": len(self.output), "content_index": 0,
                    "delta": text, "logprobs": []}))
            for call, position, function in tool_call_pieces(delta):
                if position not in self.calls:
                    out.append(self._close())
                    self.calls[position] = len(self.output)
                    self.current = _call_item(_new_id("fc"), text_or(call.get("id")) or _new_id("call"),
                                              text_or(function.get("name")), "", "in_progress")
                    out.append(self._event("response.output_item.added", {"output_index": len(self.output),
                                                                          "item": dict(self.current)}))
                arguments = function.get("arguments")
                if arguments and isinstance(arguments, str) and self.current is not None and self.calls[position] == len(self.output) \
                        and self.current["type"] == "function_call":
                    self.current["arguments"] += arguments
                    out.append(self._event("response.function_call_arguments.delta", {
                        "item_id": self.current["id"], "output_index": len(self.output), "delta": arguments}))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                out.append(self._close())
        return b"".join(out)

    def end(self) -> bytes:
        if self.ended:
            return b""
        out = [] if self.started else [self._start()]
        self.ended = True
        out.append(self._close())
        status, incomplete = _final_status(self.finish_reason)
        response = self.final = self.shell.response(self.model, status, self.output, self.usage, incomplete)
        out.append(self._event("response.completed" if status == "completed" else "response.incomplete",
                               {"response": response}))
        return b"".join(out)

    def error(self, status: int, openai_error: dict) -> bytes:
        if self.ended:
            return b""
        out = [] if self.started else [self._start()]
        self.ended = True
        found = openai_error.get("error")
        error: dict = found if isinstance(found, dict) else {}
        message = str(error.get("message") or "the upstream failed")
        code = str(error.get("code") or "server_error")
        out.append(self._event("error", {"code": code, "message": message, "param": None}))
        out.append(self._event("response.failed", {"response": self.shell.response(
            self.model, "failed", self.output, self.usage, error={"code": "server_error", "message": message})}))
        return b"".join(out)


def assistant_message(response: dict) -> dict:
    """A finished response's output as the chat assistant message it stands for (kept for the next turn)."""
    texts: list[str] = []
    calls: list[dict] = []
    for item in response.get("output") or []:
        if item.get("type") == "message":
            texts.extend(p.get("text", "") for p in item.get("content") or [] if p.get("type") == "output_text")
        elif item.get("type") == "function_call":
            calls.append({"id": item["call_id"], "type": "function",
                          "function": {"name": item["name"], "arguments": item["arguments"]}})
    message: dict = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def error_body(status: int, openai_error: dict | None) -> bytes:
    """Errors keep OpenAI's shape; anything else (an upstream's odd body) is wrapped into it."""
    if isinstance(openai_error, dict) and isinstance(openai_error.get("error"), dict):
        return orjson.dumps(openai_error)
    message = str((openai_error or {}).get("error") or f"HTTP {status}")
    return ApiError(status, message).body()


class OpenAIResponses(Translated):
    """/v1/responses, with `previous_response_id` when the policy keeps responses (`responses: {store: true}`):
    each stored answer is the chat conversation so far (without the request's `instructions`, which OpenAI
    does not carry over either) plus the assistant's turn, kept under its response id for the caller's key
    only, for the policy's `ttl`."""

    name = "responses"

    def to_chat(self, body: dict) -> dict:
        return to_chat(body)

    def answer(self, completion: dict, parsed: Parsed) -> dict:
        return encode_completion(completion, parsed.echo or {})

    def translator(self, parsed: Parsed) -> ResponsesStream:
        return ResponsesStream(parsed.echo or {})

    def error(self, status: int, error: dict) -> bytes:
        return error_body(status, error)

    async def parse(self, body: dict, headers: dict, store, policy) -> Parsed:
        ttl = policy.responses_ttl
        if ttl is None:  # nothing is kept: to_chat refuses previous_response_id
            chat = self.checked_chat(body)
            return Parsed(chat, chat["model"], bool(chat.get("stream")), chat["messages"], {**body, "store": False},
                          original=body)
        caller = hashlib.sha256((bearer(headers) or "").encode()).hexdigest()[:24]  # responses are the key's own
        previous = body.get("previous_response_id")
        history: list = []
        if previous is not None:
            if not isinstance(previous, str) or not previous:
                raise ApiError(400, "'previous_response_id' must be a response id.", param="previous_response_id",
                               code="invalid_type")
            stored = await store.cache_get(f"resp:{caller}:{previous}")
            if stored is None:
                raise ApiError(400, f"Previous response with id '{previous}' not found (it was not stored, has "
                                    "expired, or belongs to another key).", param="previous_response_id",
                               code="previous_response_not_found")
            history = orjson.loads(stored)
        chat = self.checked_chat({**body, "previous_response_id": None})
        start = 1 if body.get("instructions") else 0  # the instructions' system message comes first
        chat["messages"][start:start] = history
        keep = body.get("store") is not False
        parsed = Parsed(chat, chat["model"], bool(chat.get("stream")), chat["messages"], {**body, "store": keep},
                        original=body)
        if keep:
            turns = chat["messages"][start:]

            async def remember(answer: dict) -> None:
                if answer.get("status") in ("completed", "incomplete"):
                    record = orjson.dumps([*turns, assistant_message(answer)])
                    await store.cache_set(f"resp:{caller}:{answer['id']}", record, ttl)

            parsed.on_answer = remember
        return parsed
