"""Complexity classifier: a score in [0, 1] that a prompt needs the cloud tier rather than the edge tier.

Serving API (imports only numpy + onnxruntime + stdlib):

- ``load_scorer(kind="onnx", path=None)``: "onnx" = the shipped model in gateway/classify/model/ (or the
  model file / folder at ``path``, or a folder written by ``gateway learn``); "length" = the prompt-length baseline.
- ``ClassifierLoadError``: raised with a clear message when a model is missing, corrupt or does not match
  its metadata.
- ``MicroBatcher(scorer, max_batch=32, max_wait_s=0.0005)``: ``await batcher.score(text)``.

Training (``gateway train``) and evaluation (``gateway eval``) live in train.py / evaluate.py and need the
optional ``train`` extra (scikit-learn, onnx).
"""

from __future__ import annotations

from .base import ClassifierLoadError, LengthScorer, Scorer
from .batcher import MicroBatcher


def load_scorer(kind: str = "onnx", path: str | None = None) -> Scorer:
    if kind == "length":
        return LengthScorer()
    if kind == "onnx":
        from .learn import LearnedScorer, is_learned_dir
        from .model import OnnxScorer

        if path is not None and is_learned_dir(path):  # a folder written by `gateway learn`
            return LearnedScorer(path)

        return OnnxScorer(path)
    raise ValueError(f"unknown scorer kind {kind!r} (expected 'onnx' or 'length')")


__all__ = ["ClassifierLoadError", "LengthScorer", "MicroBatcher", "Scorer", "load_scorer"]
