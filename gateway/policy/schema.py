"""The compiled policy: immutable values the hot path reads. Built only by the compiler (`compile.py`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Deployment:
    """One place a model runs: an endpoint (and key) of a model, chosen by load balancing."""

    name: str                    # unique within the model, e.g. "edge-small#0"
    params: dict                 # litellm-style parameters: model, api_base, api_key (resolved), ...
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    tier: str                        # "edge" | "cloud"
    client: str                      # a kind of `policy.clients.CLIENT_KINDS`: native | anthropic | litellm | embedded
    upstream_model: str              # model name sent upstream (provider prefix stripped for native clients)
    deployments: tuple[Deployment, ...]
    timeout: float
    connect_timeout: float
    first_token_timeout: float
    available: bool = True           # False when optional and a secret is missing
    unavailable_reason: str = ""
    cost_input_per_mtok: float | None = None    # None: ask litellm's price table
    cost_output_per_mtok: float | None = None
    fallbacks: tuple[str, ...] = ()
    embedded: dict = field(default_factory=dict)  # options of the in-process model
    load_probe: str | None = None    # "llamacpp" | "vllm": read the server's own load report
    load_interval: float = 1.0
    line: int = 0
    kind: str = "chat"               # "chat" | "embedding" (served on /v1/embeddings only)
    dialect: str = "openai"          # the API the upstream speaks: a request in it can pass through as bytes


@dataclass(frozen=True, slots=True)
class RetrySpec:
    attempts: int = 2                 # tries per target, the first included
    initial: float = 0.2
    max_backoff: float = 2.0
    jitter: str = "full"              # "full" | "none"
    on: frozenset = frozenset({"429", "5xx", "timeout", "connect"})
    retry_after_cap: float = 10.0


@dataclass(frozen=True, slots=True)
class BreakerSpec:
    failures: int = 5                    # count mode (when a policy gives `failures`): open after this
    window: float = 30.0                 # many counted failures within `window`
    cooldown: float = 20.0
    enabled: bool = True
    failure_ratio: float | None = 0.5    # ratio mode, the default: open when this share of the attempts
    min_requests: int = 10               # within `window` failed, once there were at least min_requests;
    consecutive: int = 5                 # with fewer attempts than that, after this many failures in a row


@dataclass(frozen=True, slots=True)
class DegradeSpec:
    reply: str | None = None          # None: answer 503 when every target failed
    retry_after: float | None = None
    webhook: str | None = None        # human hand-off: the conversation is posted here
    webhook_internal: bool = False    # the webhook stays on premises (allowed for edge-only routes)


@dataclass(frozen=True, slots=True)
class CacheSpec:
    ttl: float


@dataclass(frozen=True, slots=True)
class SpilloverSpec:
    """Leave the edge chain for `to` when the first edge target is saturated (with hysteresis)."""

    queue_depth: int | None
    expected_wait: float | None
    to: tuple[str, ...]
    hold: float = 10.0                # stay spilled at least this long once tripped


@dataclass(frozen=True, slots=True)
class Band:
    min: float | None = None
    max: float | None = None

    def contains(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


@dataclass(frozen=True, slots=True)
class Match:
    """The `when` of a route. Every condition that is set must hold; `any` needs one of its parts."""

    models: tuple[str, ...] | None = None
    keys: tuple[str, ...] | None = None
    groups: tuple[str, ...] | None = None
    headers: tuple[tuple[str, re.Pattern], ...] = ()
    messages: Band | None = None
    tokens: Band | None = None
    tools: bool | None = None
    images: bool | None = None
    last_user: re.Pattern | None = None
    score: Band | None = None
    pii: bool | None = None
    pii_kinds: tuple[str, ...] | None = None
    pii_unscannable: bool = False     # the route's `unscannable: personal`: unreadable parts count as personal
    any: tuple["Match", ...] = ()
    none: tuple["Match", ...] = ()

    @property
    def uses_score(self) -> bool:
        return self.score is not None or any(m.uses_score for m in self.any + self.none)

    @property
    def uses_pii(self) -> bool:
        return self.pii is not None or self.pii_kinds is not None or any(
            m.uses_pii for m in self.any + self.none
        )


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    when: Match
    simple: tuple[str, ...]           # the chain for simple prompts (or the only chain)
    complex: tuple[str, ...]          # the chain for complex prompts (same as simple when not split)
    split: bool                       # True when the classifier chooses between the chains
    threshold: float | None           # overrides the policy's threshold
    edge_only: bool
    retry: RetrySpec
    degrade: DegradeSpec
    cache: CacheSpec | None
    spillover: SpilloverSpec | None
    deadline: float
    line: int = 0
    cloud_budget_usd: float | None = None  # daily cloud spend after which cloud-first chains start on the edge


@dataclass(frozen=True, slots=True)
class ClassifierSpec:
    kind: str = "onnx"                # "onnx" | "length"
    threshold: float | None = None    # explicit threshold
    cloud_share: float | None = None  # or a target share of cloud traffic (calibrated)
    input: str = "last_user"          # "last_user" | "user" | "all"
    max_chars: int = 4000             # only the head and tail of longer texts are scored
    hold_window: int = 0              # > 0: hold cloud_share per route over the last N scored requests
    allow_higher_share: bool = False  # may x-gateway-cloud-share ask for more cloud than the policy gives


@dataclass(frozen=True, slots=True)
class ShadowSpec:
    """Shadow comparisons: a sample of answered requests also goes to the other tier, and a judge compares."""
    rate: float                       # share of eligible requests shadowed, 0..1
    daily_budget_usd: float           # shadow and judge calls stop for the (UTC) day once this is spent
    judge: str                        # a chat model of the policy
    max_tokens: int = 512             # cap of the other tier's answer and of the judge's reply


@dataclass(frozen=True, slots=True)
class FeedbackSpec:
    """Outcome collection (POST /v1/feedback): on when the policy has a `feedback:` section."""
    enabled: bool = False
    store_prompts: bool = False       # keep the scored prompt text with each outcome (needed to learn from it)
    window_s: float = 86400.0         # feedback is accepted this long after the answer
    retention_days: float = 30.0      # outcomes older than this are dropped
    max_records: int = 100_000        # and at most this many are kept (the newest)
    promote_margin: float = 0.01      # APGR a candidate classifier must gain on held-back outcomes
    implicit: bool = True             # regenerations and escalations count as outcomes of score 0
    implicit_window_s: float = 120.0  # ... when the conversation is re-sent within this time
    shadow: ShadowSpec | None = None  # shadow comparisons (off without a `shadow:` block)


@dataclass(frozen=True, slots=True)
class KeySpec:
    name: str
    digest: bytes                     # sha256 of the key
    group: str
    rpm: int | None = None
    tpm: int | None = None
    models: tuple[str, ...] | None = None   # names (or globs) this key may ask for; None: any
    cloud_budget_usd: float | None = None   # daily cloud spend after which cloud-first chains start on the edge


@dataclass(frozen=True, slots=True)
class LimitSpec:
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    source: str                       # file path
    version: str                      # content hash + load time
    content_hash: str
    models: dict                      # name -> ModelSpec
    routes: tuple[Route, ...]
    classifier: ClassifierSpec
    retry: RetrySpec
    breaker: BreakerSpec
    degrade: DegradeSpec
    deadline: float
    auth_required: bool
    keys: tuple[KeySpec, ...]
    model_limits: dict                # model name -> LimitSpec
    limits_fail_open: bool
    log_prompts: bool
    virtual_models: tuple[str, ...]   # names clients may ask for besides the aliases and "auto"
    uses_score_in_match: bool
    uses_pii: bool
    feedback: FeedbackSpec = FeedbackSpec()
    sticky_ttl: float | None = 3600.0  # conversations answered by the cloud stay there this long; None: off
    responses_ttl: float | None = None  # Responses API answers kept this long for previous_response_id; None: off

    def model_names(self) -> list[str]:
        return ["auto", *self.models, *self.virtual_models]
