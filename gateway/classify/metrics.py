"""Router quality metrics, RouteLLM protocol: PGR curve, APGR, CPT.

Sort prompts by router score (highest first) and send the top k of n to the strong model. Quality at
x = k/n is the mean over prompts of the strong score for routed prompts and the weak score for the rest;
PGR(x) = (quality(x) - weak) / (strong - weak), APGR = area under PGR over x in [0, 1] (trapezoids over
the n+1 points), CPT(p) = smallest x with PGR(x) >= p (linear interpolation between points).

Ties: prompts with equal scores are in no defined order, so each tie group counts as if routed in random
order (its members get the group's mean gain). A constant router is thus exactly the random router:
APGR 0.5, CPT(50%) = 50%.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pgr_curve(scores: Sequence[float], weak: Sequence[float], strong: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    w = np.asarray(weak, dtype=np.float64)
    g = np.asarray(strong, dtype=np.float64) - w
    n = len(s)
    if n == 0:
        raise ValueError("no prompts")
    gap = g.sum() / n
    if gap == 0:
        raise ValueError("strong and weak have the same mean quality: PGR undefined")
    order = np.argsort(-s, kind="stable")
    s_sorted, g_sorted = s[order], g[order]
    # Replace gains by the mean of their tie group.
    _, start, counts = np.unique(-s_sorted, return_index=True, return_counts=True)
    group_sum = np.add.reduceat(g_sorted, start)
    g_tied = np.repeat(group_sum / counts, counts)
    cum = np.concatenate([[0.0], np.cumsum(g_tied)]) / n
    x = np.arange(n + 1) / n
    return x, cum / gap


def apgr(scores, weak, strong) -> float:
    x, p = pgr_curve(scores, weak, strong)
    return float(np.sum((p[1:] + p[:-1]) * np.diff(x)) / 2.0)


def cpt(scores, weak, strong, target: float) -> float:
    """Smallest share of strong calls at which PGR reaches `target` (e.g. 0.5 for CPT(50%))."""
    x, p = pgr_curve(scores, weak, strong)
    idx = np.nonzero(p >= target - 1e-12)[0]
    if len(idx) == 0:
        return 1.0
    i = int(idx[0])
    if i == 0:
        return 0.0
    x0, x1, p0, p1 = x[i - 1], x[i], p[i - 1], p[i]
    return float(x0 + (target - p0) * (x1 - x0) / (p1 - p0)) if p1 != p0 else float(x1)
