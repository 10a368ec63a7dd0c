"""The cost-quality dial held on live traffic: a route's cloud share tracks the policy's `cloud_share`.

A calibration table maps a target share to a threshold on the traffic it was made on; when the traffic shifts
(longer prompts, another mix of tasks) the realised share drifts. With `classifier.hold_window: N` each split
route keeps the scores of its last N scored requests, and its threshold is the (1 - share) quantile of that
window: the share of the recent traffic at or above it is the target, whatever the traffic now looks like.
Until a route has seen MIN_SAMPLES requests the calibrated threshold is used.

State is per process (with several workers, each sees a random part of the same traffic, so the quantiles
agree). The realised share over the window (the share of the last N decisions that went to the complex
chain) is exported per route as a metric.
"""

from __future__ import annotations

import bisect
from collections import deque

MIN_SAMPLES = 20


class _Window:
    __slots__ = ("complex", "n_complex", "order", "sorted")

    def __init__(self) -> None:
        self.order: deque[float] = deque()
        self.sorted: list[float] = []
        self.complex: deque[bool] = deque()
        self.n_complex = 0


class ShareDial:
    """Per-route sliding windows of recent scores and decisions; see the module docstring."""

    def __init__(self) -> None:
        self._routes: dict[str, _Window] = {}

    def threshold(self, route: str, share: float, window: int, calibrated: float) -> float:
        w = self._routes.get(route)
        if w is None or len(w.sorted) < min(MIN_SAMPLES, window):
            return calibrated
        if share <= 0.0:
            return float("inf")
        if share >= 1.0:
            return float("-inf")
        n = len(w.sorted)
        k = min(n - 1, max(0, n - round(share * n)))  # the k-th smallest: n - k of the window at or above
        return w.sorted[k]

    def observe(self, route: str, score: float, is_complex: bool, window: int) -> float:
        """Record one scored decision; returns the route's realised share of complex decisions."""
        w = self._routes.get(route)
        if w is None:
            w = self._routes[route] = _Window()
        w.order.append(score)
        bisect.insort(w.sorted, score)
        w.complex.append(is_complex)
        w.n_complex += is_complex
        while len(w.order) > window:
            old = w.order.popleft()
            del w.sorted[bisect.bisect_left(w.sorted, old)]
            w.n_complex -= w.complex.popleft()
        return w.n_complex / len(w.complex)

    def realised(self, route: str) -> float | None:
        w = self._routes.get(route)
        return w.n_complex / len(w.complex) if w is not None and w.complex else None

    def forget_others(self, routes: set[str]) -> None:
        """Drop the windows of routes a reloaded policy no longer has."""
        for name in [r for r in self._routes if r not in routes]:
            del self._routes[name]
