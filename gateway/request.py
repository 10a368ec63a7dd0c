"""`Request`: the neutral request every dialect parses into, and that routing and execution read.

Its `body` is a Chat Completions body (messages, tools, parameters): the one form routing, the personal-data
scan and translating providers work on. `raw` and `dialect` keep what the client actually sent, so that a
provider speaking the client's dialect can forward those bytes untouched; `original` is the client's parsed
body when its dialect is not Chat Completions (scanned too: it can hold fields the translation drops).
"""

from __future__ import annotations

from dataclasses import dataclass, field

OPENAI = "openai"          # Chat Completions
ANTHROPIC = "anthropic"    # Anthropic Messages
RESPONSES = "responses"    # OpenAI Responses


@dataclass(slots=True)
class Request:
    body: dict                  # the request as Chat Completions; unknown fields are passed through upstream
    raw: bytes                  # the body as the client sent it, in its dialect
    model: str
    stream: bool
    messages: list
    headers: dict = field(default_factory=dict)   # lower-case name -> value
    key_name: str | None = None
    key_group: str | None = None
    request_id: str = ""
    dialect: str = OPENAI
    original: dict | None = None  # the client's parsed body when `dialect` is not OPENAI
    # Parts of the request (field, what) only an upstream speaking `dialect` can take (an Anthropic
    # document block, a server tool): such a request goes only to targets of that dialect.
    native_only: tuple[tuple[str, str], ...] = ()

    @property
    def include_usage(self) -> bool:
        options = self.body.get("stream_options")
        return bool(isinstance(options, dict) and options.get("include_usage"))


def message_text(message: dict) -> str:
    """The text of one message: a string content, or the text parts of a list content."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "") for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""
