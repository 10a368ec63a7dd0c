"""The one error taxonomy: every upstream failure is classified here, once, at the provider boundary.

Execution only looks at `UpstreamError.action`: retry the same target, fail over to the next one, or
return the error to the client. Nothing above the providers inspects exception types of a client library.
"""

from __future__ import annotations

import enum
import re


class Action(enum.Enum):
    RETRY = "retry"        # transient: retry this target (then fail over when the retry budget is spent)
    FAILOVER = "failover"  # this target cannot serve this request: go to the next one at once
    CLIENT = "client"      # the request itself is wrong: return the upstream's 4xx to the client


class UpstreamError(Exception):
    """An upstream call failed. `kind` is a short machine name used in metrics and headers."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        action: Action | None = None,
        retry_after: float | None = None,
        body: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.action = action or action_for(kind, status)
        self.retry_after = retry_after
        self.body = body

    def __repr__(self) -> str:
        return f"UpstreamError(kind={self.kind!r}, status={self.status}, action={self.action.value})"


_RETRY_KINDS = {"timeout", "connect", "rate_limit", "server", "malformed", "stream_cut", "overloaded"}
# "redirect": an upstream answered 3xx; redirects are never followed (the policy names every destination).
# "oversized": an answer body or stream event over the gateway's cap (GATEWAY_MAX_UPSTREAM_*_BYTES).
_FAILOVER_KINDS = {"context_window", "content_policy", "unavailable", "not_found_upstream", "auth_upstream",
                   "redirect", "oversized"}


def action_for(kind: str, status: int | None) -> Action:
    if kind in _RETRY_KINDS:
        return Action.RETRY
    if kind in _FAILOVER_KINDS:
        return Action.FAILOVER
    return Action.CLIENT


def kind_for_status(status: int, message: str = "") -> str:
    """Map an HTTP status (and the upstream's message) to an error kind."""
    text = message.lower()
    if status == 429:
        return "rate_limit"
    if status in (408,):
        return "timeout"
    if status == 409:
        return "server"  # conflict: transient on OpenAI's side, retried as they document
    if status >= 500:
        return "server"
    if 300 <= status < 400:
        return "redirect"
    if status in (401, 403):
        # The operator's credentials are wrong for this target; another target may work.
        return "auth_upstream"
    if status == 404:
        return "not_found_upstream"
    if "context length" in text or "context_length" in text or "maximum context" in text or "too many tokens" in text:
        return "context_window"
    if "content_policy" in text or "content policy" in text or "content_filter" in text or "safety" in text:
        return "content_policy"
    return "bad_request"


def parse_retry_after(headers) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime
    import time

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


# What a client sees in `x-gateway-degraded-reason` (and in a 503's message) for each upstream error kind.
_REASONS = {
    "server": "upstream_server_error", "timeout": "upstream_timeout", "connect": "upstream_unreachable",
    "rate_limit": "upstream_rate_limited", "malformed": "upstream_malformed_response",
    "stream_cut": "upstream_stream_cut", "overloaded": "edge_overloaded", "unavailable": "upstream_unavailable",
    "context_window": "context_window_exceeded", "content_policy": "content_policy",
    "not_found_upstream": "upstream_model_not_found", "auth_upstream": "upstream_auth_failed",
    "bad_request": "upstream_bad_request", "redirect": "upstream_redirect_refused",
}
_TOKEN = re.compile(r"[^a-z0-9_]+")


def degraded_reason(kind: object) -> str:
    """The error kind as a client may see it: a fixed word per known kind, else the kind as a bounded token."""
    word = str(kind)
    if word in _REASONS:
        return _REASONS[word]
    token = _TOKEN.sub("_", word.lower()).strip("_")[:48]
    return f"upstream_{token or 'error'}"
