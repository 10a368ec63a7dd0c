"""What the pipeline hands the client's dialect to write: one of four neutral results."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.execution.executor import Outcome
from gateway.request import OPENAI

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Reply:
    """A whole answer. `body` is a chat.completion unless `dialect` says the upstream wrote the client's own
    format (pass-through); a stream request answered from the cache gets it replayed as a stream."""

    body: bytes
    headers: Headers
    dialect: str = OPENAI


@dataclass(slots=True)
class Streamed:
    """An upstream stream the executor committed to: the dialect encodes it as `execution.stream.relay`
    sends it."""

    outcome: Outcome
    headers: Headers
    assemble: bool  # build the answer as a chat.completion too (cache, shadow comparison, stored responses)


@dataclass(slots=True)
class Canned:
    """The policy's canned reply (every target failed), marked degraded in `headers`."""

    text: str
    headers: Headers


@dataclass(slots=True)
class Failure:
    """An error answer: `error` is OpenAI-shaped (message, type, param, code), the dialect reshapes it."""

    status: int
    error: dict
    headers: Headers


Result = Reply | Streamed | Canned | Failure
