"""How busy the embedded model is, for capacity-aware routing and for the Retry-After of a rejected request.

The estimates come from the model's recent speed: exponentially weighted means of how long a request took
and of decode tokens/s, fed by every request that finished normally (a cancelled one says nothing about
speed). Before any request finished, a prior rate stands in.
"""

from __future__ import annotations

from .job import Job

_EWMA_ALPHA = 0.3
_PRIOR_TOKENS_PER_SECOND = 60.0   # before any request finished (1 thread, contended machine)


class Throughput:
    """The model's recent speed. Not thread-safe: the worker's lock guards it."""

    def __init__(self, max_tokens_default: int) -> None:
        self.max_tokens_default = max_tokens_default
        self.duration: float | None = None            # seconds per normally finished request
        self.tokens_per_second: float | None = None   # decode tokens/s

    def record(self, job: Job) -> None:
        """Learn from a request that just ended."""
        if not job.completed_normally or job.started_at is None or job.finished_at is None:
            return
        self.duration = _ewma(self.duration, job.finished_at - job.started_at)
        if job.first_token_at is not None and job.produced >= 4:
            decode = job.finished_at - job.first_token_at
            if decode > 0:
                self.tokens_per_second = _ewma(self.tokens_per_second, (job.produced - 1) / decode)

    def expected_wait(self, now: float, waiting: int, running: Job | None) -> float:
        """Seconds before a request admitted now would start: what is left of the running request plus the
        `waiting` ones times the mean recent request duration."""
        rate = self.tokens_per_second or _PRIOR_TOKENS_PER_SECOND
        mean = self.duration if self.duration is not None else self.max_tokens_default / rate
        wait = waiting * mean  # every admitted request is ahead of a new one
        if running is not None and running.cancel_reason is None and running.started_at is not None:
            budget_left = max(0, running.max_tokens - running.produced) / rate  # upper bound from the token budget
            elapsed = now - running.started_at
            left = mean - elapsed if elapsed < mean else 0.5 * mean
            wait += max(0.0, min(left, budget_left))
        return wait


def _ewma(mean: float | None, sample: float) -> float:
    return sample if mean is None else _EWMA_ALPHA * sample + (1 - _EWMA_ALPHA) * mean
