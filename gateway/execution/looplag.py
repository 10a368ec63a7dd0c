"""How late this process's event loop runs its timers, so that deadlines hold when CPU is short.

A timer set for a request's deadline fires only when the loop gets to it: with the loop busy (the litellm
path costs several times the native path's CPU per request, and a shared machine may give the process
little of a core), that can be hundreds of milliseconds late, and the canned reply with it. The executor
therefore gives up earlier by twice the worst lag seen over the last few seconds (the timer's own lateness,
then as much again for cancelling the upstream call and sending the canned reply on the same busy loop),
capped at a quarter of the deadline.
"""

from __future__ import annotations

import asyncio
import collections
import time


class LoopLag:
    def __init__(self, interval: float = 0.05, window: float = 5.0) -> None:
        self.interval = interval
        self.window = window
        self._samples: collections.deque[tuple[float, float]] = collections.deque()  # (when, lag)
        self._task: asyncio.Task | None = None
        self._worst = 0.0  # over the window, updated with each sample (read on every request)

    def start(self) -> None:
        """Start sampling on the running loop (once; again after the loop changed)."""
        task = self._task
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            return
        self._task = asyncio.get_running_loop().create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            self._samples.append((now, max(0.0, now - before - self.interval)))
            while self._samples and self._samples[0][0] < now - self.window:
                self._samples.popleft()
            self._worst = max(lag for _, lag in self._samples)

    def worst(self) -> float:
        """The largest lag within the window, in seconds."""
        return self._worst

    def reserve(self, deadline: float) -> float:
        """How long before a deadline of `deadline` seconds to give up."""
        return min(2.0 * self.worst(), 0.25 * deadline)
