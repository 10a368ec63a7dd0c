"""The one error taxonomy: every upstream failure is classified here, once, at the provider boundary.

An `ErrorKind` carries everything execution needs to know about a failure, from one table (`_TRAITS`):
retry this target, fail over to the next one or return the error to the client; the policy's `retry.on`
condition it falls under; whether it counts against the deployment's breaker; whether the client's request
itself is the problem. Nothing above the providers inspects exception types of a client library, and
nothing keeps its own list of kind names.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from typing import Literal


class Action(enum.Enum):
    RETRY = "retry"        # transient: retry this target (then fail over when the retry budget is spent)
    FAILOVER = "failover"  # this target cannot serve this request: go to the next one at once
    CLIENT = "client"      # the request itself is wrong: return the upstream's 4xx to the client


RetryOn = Literal["429", "5xx", "timeout", "connect"]


class ErrorKind(enum.StrEnum):
    """A failure's short machine name (used as is in metrics labels and headers) with its traits."""

    TIMEOUT = "timeout"
    CONNECT = "connect"
    RATE_LIMIT = "rate_limit"
    SERVER = "server"
    MALFORMED = "malformed"
    STREAM_CUT = "stream_cut"
    OVERLOADED = "overloaded"
    CONTEXT_WINDOW = "context_window"
    CONTENT_POLICY = "content_policy"
    UNAVAILABLE = "unavailable"
    NOT_FOUND_UPSTREAM = "not_found_upstream"
    AUTH_UPSTREAM = "auth_upstream"
    REDIRECT = "redirect"
    OVERSIZED = "oversized"
    BAD_REQUEST = "bad_request"

    @property
    def action(self) -> Action:
        return _TRAITS[self].action

    @property
    def retry_on(self) -> RetryOn | None:
        """The policy's `retry.on` condition that retries this kind (None: never retried)."""
        return _TRAITS[self].retry_on

    @property
    def counts_for_breaker(self) -> bool:
        """The failure says the deployment is unhealthy (not that this request was wrong for it)."""
        return _TRAITS[self].counts_for_breaker

    @property
    def request_bound(self) -> bool:
        """The client's request is the problem: when every target says so, the client gets the 400."""
        return _TRAITS[self].request_bound

    @property
    def reason(self) -> str:
        """What a client sees of this kind (`x-gateway-degraded-reason`, a 503's message): a fixed word."""
        return _TRAITS[self].reason


@dataclasses.dataclass(frozen=True, slots=True)
class _Traits:
    action: Action
    retry_on: RetryOn | None
    counts_for_breaker: bool
    reason: str
    request_bound: bool = False


_R, _F, _C = Action.RETRY, Action.FAILOVER, Action.CLIENT
K = ErrorKind
_TRAITS: dict[ErrorKind, _Traits] = {
    # kind                action, retry.on, counts for the breaker, what a client sees, request bound
    K.TIMEOUT:            _Traits(_R, "timeout", True, "upstream_timeout"),
    K.CONNECT:            _Traits(_R, "connect", True, "upstream_unreachable"),
    K.RATE_LIMIT:         _Traits(_R, "429", True, "upstream_rate_limited"),
    K.SERVER:             _Traits(_R, "5xx", True, "upstream_server_error"),
    # invalid JSON, a bad stream opening
    K.MALFORMED:          _Traits(_R, "5xx", True, "upstream_malformed_response"),
    # the connection broke mid-answer
    K.STREAM_CUT:         _Traits(_R, "connect", True, "upstream_stream_cut"),
    # the embedded model's queue is full
    K.OVERLOADED:         _Traits(_R, "429", True, "edge_overloaded"),
    K.CONTEXT_WINDOW:     _Traits(_F, None, False, "context_window_exceeded", True),
    K.CONTENT_POLICY:     _Traits(_F, None, False, "content_policy", True),
    K.UNAVAILABLE:        _Traits(_F, None, True, "upstream_unavailable"),
    K.NOT_FOUND_UPSTREAM: _Traits(_F, None, True, "upstream_model_not_found"),
    # the operator's credentials: another target may work
    K.AUTH_UPSTREAM:      _Traits(_F, None, True, "upstream_auth_failed"),
    # 3xx: never followed, the policy names every destination
    K.REDIRECT:           _Traits(_F, None, False, "upstream_redirect_refused"),
    # over GATEWAY_MAX_UPSTREAM_*_BYTES
    K.OVERSIZED:          _Traits(_F, None, True, "upstream_oversized"),
    # any other 4xx: the upstream's answer goes to the client
    K.BAD_REQUEST:        _Traits(_C, None, False, "upstream_bad_request"),
}
del K
if set(_TRAITS) != set(ErrorKind):  # a kind without its row would fail on first use, far from here
    raise RuntimeError(f"error kinds without traits: {sorted(set(ErrorKind) - set(_TRAITS))}")


class UpstreamError(Exception):
    """An upstream call failed. `kind` (an ErrorKind, or its name) decides what happens next; an unknown
    name raises ValueError, so a typo cannot pass as a client error."""

    def __init__(
        self,
        kind: ErrorKind | str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        body: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = ErrorKind(kind)
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.body = body

    @property
    def action(self) -> Action:
        return self.kind.action

    def __repr__(self) -> str:
        return f"UpstreamError(kind={self.kind.value!r}, status={self.status}, action={self.action.value})"


def kind_for_status(status: int, message: str = "") -> ErrorKind:
    """Map an HTTP status (and the upstream's message) to an error kind."""
    text = message.lower()
    if status == 429:
        return ErrorKind.RATE_LIMIT
    if status in (408,):
        return ErrorKind.TIMEOUT
    if status == 409:
        return ErrorKind.SERVER  # conflict: transient on OpenAI's side, retried as they document
    if status >= 500:
        return ErrorKind.SERVER
    if 300 <= status < 400:
        return ErrorKind.REDIRECT
    if status in (401, 403):
        return ErrorKind.AUTH_UPSTREAM
    if status == 404:
        return ErrorKind.NOT_FOUND_UPSTREAM
    if "context length" in text or "context_length" in text or "maximum context" in text or "too many tokens" in text:
        return ErrorKind.CONTEXT_WINDOW
    if "content_policy" in text or "content policy" in text or "content_filter" in text or "safety" in text:
        return ErrorKind.CONTENT_POLICY
    return ErrorKind.BAD_REQUEST


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


_TOKEN = re.compile(r"[^a-z0-9_]+")
_BY_NAME = {kind.value: kind for kind in ErrorKind}


def degraded_reason(kind: object) -> str:
    """The error kind as a client may see it: a fixed word per known kind, else the kind as a bounded token."""
    word = str(kind)
    if word in _BY_NAME:
        return _BY_NAME[word].reason
    token = _TOKEN.sub("_", word.lower()).strip("_")[:48]
    return f"upstream_{token or 'error'}"
