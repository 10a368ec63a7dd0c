"""The values routing hands to execution: `Decision` (why) and `Plan` (what to try, in order)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.policy.schema import CacheSpec, DegradeSpec, ModelSpec, RetrySpec


@dataclass(frozen=True, slots=True)
class Decision:
    route: str
    tier: str                      # tier of the chain chosen: "edge" | "cloud"
    score: float | None
    threshold: float | None
    complexity: str | None         # "simple" | "complex" | None when the route does not split
    reasons: tuple[str, ...]
    policy_version: str
    skipped: tuple[tuple[str, str], ...] = ()  # (model, why) left out of the chain
    classifier: str | None = None  # version of the classifier that scored the request
    conversation: str | None = None  # the conversation's key in the Store (see router.conversation_key)
    sticky: str | None = None        # "cloud" when edge targets were skipped because of an earlier turn
    budget: str | None = None        # "spent" | "spent-no-edge" when a daily cloud budget was reached (budget.py)


@dataclass(frozen=True, slots=True)
class Plan:
    targets: tuple[ModelSpec, ...]  # in order; unavailable models are already left out
    skipped: tuple[tuple[str, str], ...]  # (model, why) left out of the chain
    edge_only: bool
    retry: RetrySpec
    degrade: DegradeSpec
    deadline: float
    cache: CacheSpec | None
    route: str
    reference: ModelSpec | None = None   # the route's first cloud model: what savings are measured against
