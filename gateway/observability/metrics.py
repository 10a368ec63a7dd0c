"""Prometheus metrics. Names start with `gateway_`, or follow OpenTelemetry GenAI where one fits.

With several workers, `gateway serve` sets PROMETHEUS_MULTIPROC_DIR before this module is imported, and
`/metrics` aggregates every worker's files.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter("gateway_requests_total", "Chat requests answered",
                   ["route", "tier", "model", "status", "degraded"])
UPSTREAM_LATENCY = Histogram("gen_ai_client_operation_duration_seconds", "Upstream call duration",
                             ["gen_ai_request_model", "tier"], buckets=_LATENCY)
TTFT = Histogram("gateway_time_to_first_token_seconds", "Upstream time to first streamed chunk",
                 ["model", "tier"], buckets=_LATENCY)
TOKENS = Counter("gen_ai_client_token_usage", "Tokens used", ["gen_ai_request_model", "gen_ai_token_type"])
CLASSIFIER_SCORE = Histogram("gateway_classifier_score", "Complexity scores",
                             buckets=tuple(i / 10 for i in range(1, 11)))
ROUTE_CLOUD_SHARE = Gauge("gateway_route_cloud_share", "Share of a held route's recent scored requests sent to "
                          "its complex chain (classifier.hold_window)", ["route"], multiprocess_mode="mostrecent")
CLASSIFIER_PROMOTIONS = Counter("gateway_classifier_promotions_total", "Candidate classifiers promoted, kept aside "
                                "or rolled back", ["result"])
CLASSIFIER_LATENCY = Histogram("gateway_classifier_latency_seconds", "Time to score one request",
                               buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05))
RETRIES = Counter("gateway_retries_total", "Retries of the same target", ["model", "kind"])
FALLBACKS = Counter("gateway_fallbacks_total", "Moves to the next target or deployment", ["route", "from_model"])
BREAKER_CHANGES = Counter("gateway_breaker_transitions_total", "Breaker state changes", ["target", "state"])
BREAKER_OPEN = Gauge("gateway_breaker_open", "1 while a target's breaker is open", ["target"],
                     multiprocess_mode="max")
UPSTREAM_AUTH_REFUSED = Counter("gateway_upstream_auth_refused_total", "Upstream answers 401/403 to the gateway's "
                                "credentials (an operator error: alert on any increase)", ["target"])
DEGRADED = Counter("gateway_degraded_total", "Canned or 503 answers after every target failed", ["route", "reason"])
CACHE = Counter("gateway_cache_total", "Response cache lookups", ["result"])
RATE_LIMITED = Counter("gateway_rate_limited_total", "Requests refused by a rate limit", ["scope"])
POLICY_RELOADS = Counter("gateway_policy_reloads_total", "Policy reloads", ["result"])
REDIS_DEGRADED = Gauge("gateway_redis_degraded", "1 while Redis is unreachable and local state is used",
                       multiprocess_mode="max")
COST = Counter("gateway_cost_usd_total", "Cost of answered requests", ["route", "tier", "model"])
BUDGET_SPENT = Counter("gateway_budget_spent_total", "Requests routed with a daily cloud budget spent (moved to the "
                       "edge when the route has an edge model)", ["scope", "name"])
SAVINGS = Counter("gateway_savings_usd_total", "Cost avoided against the route's reference cloud model", ["route"])
SHADOW_CALLS = Counter("gateway_shadow_calls_total", "Shadow calls to the other tier (feedback.shadow), and "
                       "sampled requests not shadowed (result: budget, busy, no_target)", ["route", "model", "result"])
SHADOW_VERDICTS = Counter("gateway_shadow_verdicts_total", "Judged shadow comparisons by combined verdict (edge, "
                          "cloud, tie) or invalid (the judge failed or gave no A/B/tie)", ["verdict"])
SHADOW_COST = Counter("gateway_shadow_cost_usd_total", "Spent on shadow and judge calls (counted against "
                      "feedback.shadow.daily_budget_usd)", ["model"])


def render() -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# Children of labelled metrics, cached: `labels()` takes a lock and builds a key on every call.
_children: dict = {}


def child(metric, *labels):
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


def token_usage(model: str, prompt_tokens: int, completion_tokens: int) -> None:
    child(TOKENS, model, "input").inc(prompt_tokens)
    child(TOKENS, model, "output").inc(completion_tokens)
