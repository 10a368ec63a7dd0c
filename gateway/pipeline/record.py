"""`Record`: everything logs, metrics, usage accounting and learning need to know about one request.

Filled in as the request goes through the pipeline and read once, after the answer went out (accounting).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.execution.executor import Outcome
    from gateway.policy.schema import ModelSpec, Policy
    from gateway.providers.base import Usage
    from gateway.request import Request
    from gateway.routing.plan import Decision


@dataclass(slots=True)
class Settlement:
    """What the pipeline still owes once the answer went out (see `Pipeline.settle`)."""

    counted: list[str]       # the token-limit counters charged on admission
    estimate: int            # the tokens they reserved
    cache_key: str | None    # where to cache the answer, None when the route does not cache it
    ttl: float


@dataclass(slots=True)
class Record:
    request_id: str
    policy: Policy                     # the version the request started with, kept to the end
    dialect: str
    status: int = 0                    # the HTTP status sent; 499 when the client went away
    decision: Decision | None = None
    outcome: Outcome | None = None
    degraded: str | None = None        # why every target failed (for the log and the hand-off)
    cache: str | None = None           # "hit" | "miss" when the route caches
    key: str | None = None             # the API key's name
    reference: ModelSpec | None = None  # what savings are measured against
    prompt_estimate: int = 0           # tokens, estimated before routing
    usage: Usage | None = None
    cost: float | None = None
    stream_error: str | None = None    # error kind that ended a started stream
    answer_body: bytes | None = None   # a streamed answer assembled as a chat.completion (cache, shadow)
    prompt: list | None = None         # the messages, only when the policy logs prompts
    answer: str | None = None          # the answer, likewise
    asked_model: str | None = None     # feedback: what the client asked for
    conversation: str | None = None    # feedback: the conversation's key (regenerations)
    feedback_prompt: str | None = None  # feedback: the classifier's text, when the policy stores prompts
    shadow: Request | None = None      # sampled for a shadow comparison after the answer
    settlement: Settlement | None = None
