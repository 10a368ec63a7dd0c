"""MicroBatcher: collect concurrent ``await batcher.score(text)`` calls into one ``score_batch`` call.

Rules (all on the event loop thread; scoring is a sub-millisecond CPU call, so it runs inline rather
than in an executor, which would cost more than the work itself):

- the first pending request schedules a check at the next loop turn;
- at a check, the batch is scored at once if no request arrived during the last turn (so a lone
  request waits one loop turn, microseconds, not ``max_wait_s``), if ``max_wait_s`` has passed since the
  first pending request, or otherwise another check is scheduled for the next turn;
- reaching ``max_batch`` pending requests scores them immediately.

Results are delivered to each caller in order; an exception from ``score_batch`` is raised to every
caller of that batch. Cancelled callers are skipped.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


class MicroBatcher:
    def __init__(self, scorer: Any, max_batch: int = 32, max_wait_s: float = 0.0005) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.scorer = scorer
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self._texts: list[str] = []
        self._futures: list[asyncio.Future] = []
        self._first_at = 0.0
        self._seen = 0
        self._scheduled: asyncio.Handle | None = None
        # Counters for observability and tests.
        self.batches = 0
        self.requests = 0

    async def score(self, text: str) -> float:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if not self._texts:
            self._first_at = time.perf_counter()
            self._seen = 0
        self._texts.append(text)
        self._futures.append(fut)
        if len(self._texts) >= self.max_batch:
            self._flush()
        elif self._scheduled is None:
            self._seen = len(self._texts)
            self._scheduled = loop.call_soon(self._check)
        return await fut

    def _check(self) -> None:
        self._scheduled = None
        n = len(self._texts)
        if n == 0:
            return
        waited = time.perf_counter() - self._first_at
        if n == self._seen or waited >= self.max_wait_s:
            self._flush()
            return
        self._seen = n
        self._scheduled = asyncio.get_running_loop().call_soon(self._check)

    def _flush(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        texts, futures = self._texts, self._futures
        self._texts, self._futures = [], []
        if not texts:
            return
        self.batches += 1
        self.requests += len(texts)
        try:
            scores = self.scorer.score_batch(texts)
            if len(scores) != len(texts):
                raise RuntimeError(f"scorer returned {len(scores)} scores for {len(texts)} texts")
        except Exception as e:  # deliver the failure to every waiting caller
            for f in futures:
                if not f.done():
                    f.set_exception(e)
            return
        for f, s in zip(futures, scores):
            if not f.done():
                f.set_result(float(s))
