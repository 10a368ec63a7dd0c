"""What routing needs from a complexity scorer, and the prompt-length baseline.

A scorer maps prompt texts to scores in [0, 1]: the probability that the prompt needs the cloud tier.
`threshold_for_share(share)` turns a target share of cloud traffic into a threshold (calibration table).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol


class Scorer(Protocol):
    name: str     # "length", "onnx", ...
    version: str  # identifies the model file (hash), shown in decisions

    def score_batch(self, texts: Sequence[str]) -> list[float]: ...

    def threshold_for_share(self, cloud_share: float) -> float: ...


class ClassifierLoadError(Exception):
    """A classifier model could not be loaded (missing, corrupt, or not matching its metadata)."""


class LengthScorer:
    """Baseline: longer prompts are more complex. Score = a smooth map of the character count.

    score(n) = 1 - exp(-n / scale); with scale 600, 100 chars -> 0.15, 600 -> 0.63, 2000 -> 0.96.
    """

    name = "length"
    default_threshold = 0.5

    def __init__(self, scale: float = 600.0) -> None:
        self.scale = scale
        self.version = f"length-{scale:g}"

    def score_batch(self, texts: Sequence[str]) -> list[float]:
        return [1.0 - math.exp(-len(t) / self.scale) for t in texts]

    def threshold_for_share(self, cloud_share: float) -> float:
        # No calibration table for a formula: assume prompt lengths are exponential with mean `scale`,
        # for which the score is uniform, so the threshold is 1 - share.
        return min(max(1.0 - cloud_share, 0.0), 1.0)
