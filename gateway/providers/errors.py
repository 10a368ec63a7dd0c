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


@dataclasses.dataclass(frozen=True, slots=True)
class _Traits:
    action: Action
    retry_on: RetryOn | None
    counts_for_breaker: bool
    request_bound: bool = False


_R, _F, _C = Action.RETRY, Action.FAILOVER, Action.CLIENT
K = ErrorKind
_TRAITS: dict[ErrorKind, _Traits] = {
    # kind                       action, retry.on, counts for the breaker, request bound
    K.TIMEOUT:            _Traits(_R, "timeout", True),
    K.CONNECT:            _Traits(_R, "connect", True),
    K.RATE_LIMIT:         _Traits(_R, "429", True),
    K.SERVER:             _Traits(_R, "5xx", True),
    K.MALFORMED:          _Traits(_R, "5xx", True),      # invalid JSON, a bad stream opening
    K.STREAM_CUT:         _Traits(_R, "connect", True),  # the connection broke mid-answer
    K.OVERLOADED:         _Traits(_R, "429", True),      # the embedded model's queue is full
    K.CONTEXT_WINDOW:     _Traits(_F, None, False, True),
    K.CONTENT_POLICY:     _Traits(_F, None, False, True),
    K.UNAVAILABLE:        _Traits(_F, None, True),
    K.NOT_FOUND_UPSTREAM: _Traits(_F, None, True),
    K.AUTH_UPSTREAM:      _Traits(_F, None, True),       # the operator's credentials: another target may work
    K.REDIRECT:           _Traits(_F, None, False),      # 3xx: never followed, the policy names every destination
    K.OVERSIZED:          _Traits(_F, None, True),       # over GATEWAY_MAX_UPSTREAM_*_BYTES
    K.BAD_REQUEST:        _Traits(_C, None, False),      # any other 4xx: the upstream's answer goes to the client
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
