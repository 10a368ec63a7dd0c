"""Calibration: map a target share of cloud traffic to a score threshold.

The table is the score quantiles of a held-out sample at evenly spaced levels 0, 1/(n-1), ..., 1.
A prompt goes to the cloud tier when ``score >= threshold``; the threshold for a cloud share s is the
(1 - s) quantile, linearly interpolated in the table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TABLE_POINTS = 201  # quantile levels every 0.5 %


def quantile_table(scores: Sequence[float], points: int = TABLE_POINTS) -> list[float]:
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise ValueError("no scores to calibrate on")
    levels = np.linspace(0.0, 1.0, points)
    return [float(v) for v in np.quantile(s, levels)]


def threshold_from_table(table: Sequence[float], cloud_share: float) -> float:
    """Threshold so that about `cloud_share` of the calibration sample scores at or above it."""
    if len(table) < 2:
        raise ValueError("calibration table needs at least 2 points")
    share = min(max(float(cloud_share), 0.0), 1.0)
    if share <= 0.0:
        return 1.0
    if share >= 1.0:
        return 0.0
    levels = np.linspace(0.0, 1.0, len(table))
    return float(np.interp(1.0 - share, levels, np.asarray(table, dtype=np.float64)))


def threshold_from_scores(scores: Sequence[float], cloud_share: float) -> float:
    """Threshold computed directly from an operator's own sample of scores."""
    return threshold_from_table(quantile_table(scores, points=1001), cloud_share)


def share_at(scores: Sequence[float], threshold: float) -> float:
    """Share of prompts that go to the cloud tier at `threshold`."""
    s = np.asarray(scores, dtype=np.float64)
    return float(np.mean(s >= threshold)) if s.size else 0.0
