"""Read a sample of traffic: JSONL (or JSON) of `{"prompt": ...}` lines or of chat request bodies.

Every command that reads a sample (classify --input/--calibrate, policy diff, policy explain) uses this
one reader, so a file that works for one works for all. A `{"prompt": "..."}` line stands for a request of
one user message to `auto`; a request body (`{"messages": [...]}`) is kept as sent.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import orjson

from gateway.request import message_text


class TrafficError(ValueError):
    """A sample that cannot be read; the message names the file and line."""


def _request(obj: object, where: str) -> dict:
    if not isinstance(obj, dict) or ("prompt" not in obj and "messages" not in obj):
        raise TrafficError(f'{where}: expected an object with a "prompt" field or a "messages" array')
    if "messages" in obj:
        messages = obj["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise TrafficError(f'{where}: "messages" must be an array of message objects')
        return obj
    prompt = obj["prompt"]
    if not isinstance(prompt, str):
        raise TrafficError(f'{where}: "prompt" must be a string, got {type(prompt).__name__}')
    body = {k: v for k, v in obj.items() if k != "prompt"}
    body.setdefault("model", "auto")
    body["messages"] = [{"role": "user", "content": prompt}]
    return body


def _lines(lines: Iterable[bytes], path: str) -> list[dict]:
    requests = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise TrafficError(f"{path}: line {lineno}: not valid JSON ({exc})") from None
        requests.append(_request(obj, f"{path}: line {lineno}"))
    return requests


def read_requests(path: str) -> list[dict]:
    """Request bodies of a sample, in order. JSONL (one object a line, blank lines skipped), or, for a
    file not named .jsonl whose whole text is one JSON document, an object or an array of objects.
    "-" reads standard input. Raises TrafficError on the first bad line."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as fh:
                data = fh.read()
    except OSError as exc:
        raise TrafficError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not path.endswith(".jsonl"):
        try:
            whole = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # not one document: read it as JSONL
        else:
            items = whole if isinstance(whole, list) else [whole]
            return [_request(obj, f"{path}: item {i}") for i, obj in enumerate(items)]
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TrafficError(f"{path}: not UTF-8 text ({exc.reason})") from None
    return _lines(data.splitlines(), path)


def prompt_of(body: dict) -> str:
    """The text a complexity classifier reads from a request: its last user message."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message)
    return ""


def read_prompts(path: str) -> list[str]:
    """The prompt (last user message) of every request of a sample, in order."""
    return [prompt_of(body) for body in read_requests(path)]
