"""`ChatRequest`: the validated client request as the api hands it to routing and execution."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ChatRequest:
    body: dict                  # the parsed JSON body; unknown fields are passed through upstream
    raw: bytes                  # the body as the client sent it
    model: str
    stream: bool
    messages: list
    headers: dict = field(default_factory=dict)   # lower-case name -> value
    key_name: str | None = None
    key_group: str | None = None
    request_id: str = ""

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
