"""The policy-wide sections: retry, degrade, breaker, classifier, limits, logging, feedback, conversations."""

from __future__ import annotations

from gateway.policy.checker import Checker, did_you_mean
from gateway.policy.schema import (
    BreakerSpec,
    ClassifierSpec,
    DegradeSpec,
    FeedbackSpec,
    LimitSpec,
    ModelSpec,
    RetrySpec,
    ShadowSpec,
)
from gateway.policy.yamlsrc import LocatedList

RETRY_ON = ("429", "5xx", "timeout", "connect", "408", "409")

def compile_retry(c: Checker, spec, line: int, where: str, base: RetrySpec) -> RetrySpec:
    spec = c.mapping(spec, line, where)
    if spec is None:
        return base
    c.unknown_keys(spec, {"attempts", "backoff", "on", "retry_after_cap"}, where)
    backoff = c.mapping(spec.get("backoff"), c.line_of(spec, "backoff"), f"{where}.backoff") or {}
    if backoff:
        c.unknown_keys(backoff, {"initial", "max", "jitter"}, f"{where}.backoff")
    jitter = c.get(backoff, "jitter", str, f"{where}.backoff", base.jitter)
    if jitter not in ("full", "none"):
        c.err(c.line_of(backoff, "jitter"), f"{where}.backoff.jitter must be full or none")
        jitter = base.jitter
    on = base.on
    if "on" in spec:
        raw_on = spec["on"]
        if isinstance(raw_on, LocatedList):  # status codes may be written as numbers: [429, 5xx]
            spec["on"] = LocatedList(str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in raw_on)
            spec["on"].line, spec["on"].item_lines = raw_on.line, raw_on.item_lines
        items, lines = c.names(spec, "on", where)
        for item, item_line in zip(items, lines):
            if item not in RETRY_ON:
                c.err(item_line, f"{where}.on: unknown condition {item!r} (use {', '.join(RETRY_ON)})")
        on = frozenset(items)
    return RetrySpec(
        attempts=c.number(spec, "attempts", where, base.attempts, 1, 20, True),
        initial=c.duration(backoff, "initial", f"{where}.backoff", base.initial),
        max_backoff=c.duration(backoff, "max", f"{where}.backoff", base.max_backoff),
        jitter=jitter,
        on=on,
        retry_after_cap=c.duration(spec, "retry_after_cap", where, base.retry_after_cap),
    )


def compile_degrade(c: Checker, spec, line: int, where: str, base: DegradeSpec) -> DegradeSpec:
    spec = c.mapping(spec, line, where)
    if spec is None:
        return base
    c.unknown_keys(spec, {"reply", "retry_after", "webhook", "webhook_internal"}, where)
    webhook, absent = c.secret(c.get(spec, "webhook", str, where, base.webhook), c.line_of(spec, "webhook"),
                               f"{where}.webhook")
    if absent:
        c.err(c.line_of(spec, "webhook"), f"{where}.webhook: environment variable {absent} is not set")
    reply = c.get(spec, "reply", str, where, base.reply)
    if "reply" in spec and (spec["reply"] is None or str(spec["reply"]).strip().lower() == "none"):
        reply = None  # `reply: none` (or null): 503 with Retry-After, also over a policy-level reply
    return DegradeSpec(
        reply=reply,
        retry_after=c.duration(spec, "retry_after", where, base.retry_after),
        webhook=webhook,
        webhook_internal=bool(c.get(spec, "webhook_internal", bool, where, base.webhook_internal)),
    )


def cloud_budget(c: Checker, spec, where: str, edge_only: bool = False) -> float | None:
    """`cloud_budget_usd` of a route or a key: dollars of cloud spend per UTC day."""
    value = c.number(spec, "cloud_budget_usd", where, None, 0.0)
    if value is not None and edge_only:
        c.err(c.line_of(spec, "cloud_budget_usd"), f"{where}: an edge_only route never spends on the cloud; "
                                                   f"cloud_budget_usd has no effect here")
    return None if value is None else float(value)


def compile_shadow(c: Checker, feedback_map, models: dict[str, ModelSpec]) -> ShadowSpec | None:
    """`feedback.shadow`: rate, daily budget and the judge, a chat model of this policy."""
    spec = c.mapping(feedback_map.get("shadow"), c.line_of(feedback_map, "shadow"), "feedback.shadow")
    if spec is None:
        return None
    where = "feedback.shadow"
    c.unknown_keys(spec, {"rate", "daily_budget_usd", "judge", "max_tokens"}, where)
    for key in ("rate", "daily_budget_usd", "judge"):
        if spec.get(key) is None:
            c.err(spec.line, f"{where}.{key} is required")
    judge = c.get(spec, "judge", str, where)
    if judge is not None:
        model = models.get(judge)
        if model is None:
            c.err(c.line_of(spec, "judge"), f"{where}.judge: unknown model {judge!r}{did_you_mean(judge, models)}")
        elif model.kind != "chat":
            c.err(c.line_of(spec, "judge"), f"{where}.judge: {judge!r} is an {model.kind} model, not a chat model")
    rate = c.number(spec, "rate", where, None, 0.0, 1.0)
    budget = c.number(spec, "daily_budget_usd", where, None, 0.0, None)
    max_tokens = c.number(spec, "max_tokens", where, 512, 1, None, True)
    if judge is None or rate is None or budget is None:
        return None
    return ShadowSpec(float(rate), float(budget), judge, int(max_tokens))


def compile_breaker(c: Checker, data) -> BreakerSpec:
    breaker_spec = c.mapping(data.get("breaker"), c.line_of(data, "breaker"), "breaker")
    if breaker_spec is None:
        return BreakerSpec()
    c.unknown_keys(breaker_spec, {"failures", "window", "cooldown", "enabled", "failure_ratio", "min_requests",
                                  "consecutive"}, "breaker")
    if "failures" in breaker_spec and "failure_ratio" in breaker_spec:
        c.err(c.line_of(breaker_spec, "failure_ratio"),
              "breaker: give `failures` (count of failures) or `failure_ratio` (share of attempts), not both")
    for key in ("min_requests", "consecutive"):
        if key in breaker_spec and "failures" in breaker_spec:
            c.err(c.line_of(breaker_spec, key),
                  f"breaker.{key} belongs to the ratio mode; with `failures` (count mode) it has no effect")
    count_mode = "failures" in breaker_spec
    ratio = None if count_mode else c.number(breaker_spec, "failure_ratio", "breaker", 0.5, 0.01, 1.0)
    return BreakerSpec(
        failures=c.number(breaker_spec, "failures", "breaker", 5, 1, None, True),
        window=c.duration(breaker_spec, "window", "breaker", 30.0),
        cooldown=c.duration(breaker_spec, "cooldown", "breaker", 20.0),
        enabled=bool(c.get(breaker_spec, "enabled", bool, "breaker", True)),
        failure_ratio=float(ratio) if ratio is not None else None,
        min_requests=c.number(breaker_spec, "min_requests", "breaker", 10, 1, None, True),
        consecutive=c.number(breaker_spec, "consecutive", "breaker", 5, 1, None, True),
    )


def compile_classifier(c: Checker, data) -> ClassifierSpec:
    cls_spec = c.mapping(data.get("classifier"), c.line_of(data, "classifier"), "classifier")
    if cls_spec is None:
        return ClassifierSpec()
    c.unknown_keys(cls_spec, {"kind", "threshold", "cloud_share", "input", "max_chars", "hold_window",
                              "allow_higher_share"}, "classifier")
    kind = c.get(cls_spec, "kind", str, "classifier", "onnx")
    if kind not in ("onnx", "length"):
        c.err(c.line_of(cls_spec, "kind"), "classifier.kind must be onnx or length")
        kind = "onnx"
    inp = c.get(cls_spec, "input", str, "classifier", "last_user")
    if inp not in ("last_user", "user", "all"):
        c.err(c.line_of(cls_spec, "input"), "classifier.input must be last_user, user or all")
        inp = "last_user"
    threshold = c.number(cls_spec, "threshold", "classifier", None, 0.0, 1.0)
    share = c.number(cls_spec, "cloud_share", "classifier", None, 0.0, 1.0)
    if threshold is not None and share is not None:
        c.err(cls_spec.line, "classifier: give threshold or cloud_share, not both")
    hold = c.number(cls_spec, "hold_window", "classifier", 0, 0, None, True)
    if hold and share is None:
        c.err(c.line_of(cls_spec, "hold_window"), "classifier.hold_window holds cloud_share: set cloud_share too")
    return ClassifierSpec(kind, threshold, share, inp,
                          c.number(cls_spec, "max_chars", "classifier", 4000, 100, None, True), hold,
                          bool(c.get(cls_spec, "allow_higher_share", bool, "classifier", False)))


def compile_limits(c: Checker, data, models: dict) -> tuple[dict[str, LimitSpec], bool]:
    """`limits:` per-model rate limits, and whether they fail open when the shared store is down."""
    limits_spec = c.mapping(data.get("limits"), c.line_of(data, "limits"), "limits")
    model_limits: dict[str, LimitSpec] = {}
    fail_open = True
    if limits_spec is None:
        return model_limits, fail_open
    c.unknown_keys(limits_spec, {"fail", "models"}, "limits")
    fail = c.get(limits_spec, "fail", str, "limits", "open")
    if fail not in ("open", "closed"):
        c.err(c.line_of(limits_spec, "fail"), "limits.fail must be open or closed")
    fail_open = fail != "closed"
    per_model = c.mapping(limits_spec.get("models"), c.line_of(limits_spec, "models"), "limits.models")
    for name, spec in (per_model or {}).items():
        if name not in models:
            c.err(c.line_of(per_model, name), f"limits.models: unknown model {name!r}")
            continue
        spec = c.mapping(spec, c.line_of(per_model, name), f"limits.models.{name}")
        if spec is not None:
            c.unknown_keys(spec, {"rpm", "tpm"}, f"limits.models.{name}")
            model_limits[name] = LimitSpec(c.number(spec, "rpm", f"limits.models.{name}", None, 1, None, True),
                                           c.number(spec, "tpm", f"limits.models.{name}", None, 1, None, True))
    return model_limits, fail_open


def compile_log_prompts(c: Checker, data) -> bool:
    logging_spec = c.mapping(data.get("logging"), c.line_of(data, "logging"), "logging") or {}
    if logging_spec:
        c.unknown_keys(logging_spec, {"prompts"}, "logging")
    return bool(c.get(logging_spec, "prompts", bool, "logging", False))


def compile_feedback(c: Checker, data, models: dict[str, ModelSpec]) -> FeedbackSpec:
    feedback_map = c.mapping(data.get("feedback"), c.line_of(data, "feedback"), "feedback") or {}
    if feedback_map:
        c.unknown_keys(feedback_map, {"enabled", "store_prompts", "window_s", "retention_days", "max_records",
                            "promote_margin", "implicit", "implicit_window_s", "shadow"}, "feedback")
    return FeedbackSpec(bool(c.get(feedback_map, "enabled", bool, "feedback", "feedback" in data)),
                        bool(c.get(feedback_map, "store_prompts", bool, "feedback", False)),
                        float(c.number(feedback_map, "window_s", "feedback", 86400.0, 1, None)),
                        float(c.number(feedback_map, "retention_days", "feedback", 30.0, 0.001, None)),
                        int(c.number(feedback_map, "max_records", "feedback", 100_000, 1, None, True)),
                        float(c.number(feedback_map, "promote_margin", "feedback", 0.01, -1.0, 1.0)),
                        bool(c.get(feedback_map, "implicit", bool, "feedback", True)),
                        float(c.number(feedback_map, "implicit_window_s", "feedback", 120.0, 1, None)),
                        compile_shadow(c, feedback_map, models))


def compile_ttls(c: Checker, data) -> tuple[float | None, float | None]:
    """`conversations:` (sticky cloud conversations) and `responses:` (stored answers): their TTLs, None when off."""
    conversations = c.mapping(data.get("conversations"), c.line_of(data, "conversations"), "conversations")
    if conversations is not None:
        c.unknown_keys(conversations, {"sticky", "ttl"}, "conversations")
    sticky_ttl: float | None = c.duration(conversations, "ttl", "conversations", 3600.0)
    if not c.get(conversations, "sticky", bool, "conversations", True):
        sticky_ttl = None
    responses = c.mapping(data.get("responses"), c.line_of(data, "responses"), "responses")
    if responses is not None:
        c.unknown_keys(responses, {"store", "ttl"}, "responses")
    responses_ttl: float | None = c.duration(responses, "ttl", "responses", 3600.0)
    if not c.get(responses, "store", bool, "responses", False):
        responses_ttl = None
    return sticky_ttl, responses_ttl
