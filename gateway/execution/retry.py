"""Which upstream failures the policy retries, and how long to wait between tries."""

from __future__ import annotations

import random

from tenacity import RetryCallState

from gateway.policy.schema import RetrySpec
from gateway.providers.errors import Action, UpstreamError


def should_retry(spec: RetrySpec, error: BaseException) -> bool:
    """Whether the policy's `retry.on` covers this failure: its kind's condition, or for a 408 or 409 the
    status itself."""
    if not isinstance(error, UpstreamError) or error.action is not Action.RETRY:
        return False
    if error.status in (408, 409) and str(error.status) in spec.on:
        return True
    return error.kind.retry_on in spec.on


class BackoffWait:
    """Exponential backoff with full jitter; an upstream's Retry-After wins, up to the policy's cap.
    Never waits past the request's deadline (`remaining()` seconds left)."""

    def __init__(self, spec: RetrySpec, remaining, offset: int = 0) -> None:
        self.spec = spec
        self.remaining = remaining
        self.offset = offset

    def shifted(self, offset: int) -> "BackoffWait":
        """The same wait for a tenacity loop that starts after `offset` tries were made outside it."""
        return BackoffWait(self.spec, self.remaining, offset)

    def first(self, error: BaseException) -> float:
        return self._delay(error, 1)

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return self._delay(error, state.attempt_number + self.offset)

    def _delay(self, error: BaseException | None, tries_made: int) -> float:
        hinted = getattr(error, "retry_after", None)
        if hinted is not None:
            delay = min(hinted, self.spec.retry_after_cap)
        else:
            ceiling = min(self.spec.max_backoff, self.spec.initial * (2 ** (tries_made - 1)))
            delay = random.uniform(0, ceiling) if self.spec.jitter == "full" else ceiling
        return max(0.0, min(delay, self.remaining() - 0.001))
