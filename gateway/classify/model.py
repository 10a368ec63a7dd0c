"""The shipped ONNX scorer: Python/numpy features (features.py) -> ONNX head -> score in [0, 1].

A model is two files side by side: ``NAME.onnx`` and its metadata ``NAME.json`` (written by train.py).
Loading checks, in order, that both exist, that the metadata parses and names the current feature
version, that the word-vector table is the one the model was trained with, that the model file's sha256
matches the metadata, and that onnxruntime accepts the graph with
the expected input width; any failure raises :class:`ClassifierLoadError` with the reason and the path.

Serving imports only numpy, onnxruntime and the stdlib.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import features, wordvec
from .base import ClassifierLoadError
from .calibrate import threshold_from_table

MODEL_DIR = Path(__file__).resolve().parent / "model"
DEFAULT_MODEL = MODEL_DIR / "classifier.onnx"
METADATA_FORMAT = 1


def metadata_path_for(model_path: str | os.PathLike) -> Path:
    return Path(model_path).with_suffix(".json")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _resolve(path: str | os.PathLike | None) -> Path:
    if path is None:
        return DEFAULT_MODEL
    p = Path(path)
    if p.is_dir():
        return p / "classifier.onnx"
    return p


def read_metadata(model_path: Path) -> dict:
    meta_path = metadata_path_for(model_path)
    if not meta_path.is_file():
        raise ClassifierLoadError(f"classifier metadata {meta_path} is missing (expected beside {model_path.name})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ClassifierLoadError(f"classifier metadata {meta_path} is not valid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise ClassifierLoadError(f"classifier metadata {meta_path} is not a JSON object")
    missing = [k for k in ("sha256", "feature_version", "n_features", "calibration", "default_threshold") if k not in meta]
    if missing:
        raise ClassifierLoadError(f"classifier metadata {meta_path} lacks {', '.join(missing)}")
    return meta


def prompt_features(texts: Sequence[str], scorer: OnnxScorer | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Feature vectors and scores of the shipped model (or `scorer`) for a list of prompts: the inputs a
    stacked head needs. Returns (float32 [N, n_features], float64 [N])."""
    return (scorer or OnnxScorer()).features_and_scores(texts)


class OnnxScorer:
    """Complexity scorer backed by an ONNX graph; see the module docstring."""

    name = "onnx"

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        model_path = _resolve(path)
        if not model_path.is_file():
            raise ClassifierLoadError(f"classifier model file {model_path} is missing; train one with `gateway train`")
        meta = read_metadata(model_path)
        if meta["feature_version"] != features.FEATURE_VERSION:
            raise ClassifierLoadError(
                f"classifier {model_path} was trained on features {meta['feature_version']!r} but this code "
                f"computes {features.FEATURE_VERSION!r}; retrain with `gateway train`"
            )
        if int(meta["n_features"]) != features.N_FEATURES:
            raise ClassifierLoadError(
                f"classifier {model_path} expects {meta['n_features']} features, code computes {features.N_FEATURES}"
            )
        wv_meta = meta.get("wordvec")
        if isinstance(wv_meta, dict):
            try:
                wv_sha = wordvec.table_sha256()
            except (OSError, ValueError, KeyError) as e:
                raise ClassifierLoadError(f"word-vector table {wordvec.TABLE_PATH} cannot be loaded: {e}") from e
            if wv_sha != wv_meta.get("sha256"):
                raise ClassifierLoadError(
                    f"classifier {model_path} was trained with word-vector table sha256 "
                    f"{str(wv_meta.get('sha256'))[:16]}... but {wordvec.TABLE_PATH} is {wv_sha[:16]}...; retrain with `gateway train`"
                )
        blob = model_path.read_bytes()
        digest = hashlib.sha256(blob).hexdigest()
        if digest != meta["sha256"]:
            raise ClassifierLoadError(
                f"classifier model file {model_path} does not match its metadata: sha256 {digest[:16]}... "
                f"!= {str(meta['sha256'])[:16]}... (file corrupt or replaced)"
            )
        try:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.log_severity_level = 3
            sess = ort.InferenceSession(blob, sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises several exception types for bad graphs
            raise ClassifierLoadError(f"classifier model file {model_path} cannot be loaded by onnxruntime: {e}") from e
        inputs, outputs = sess.get_inputs(), sess.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ClassifierLoadError(f"classifier {model_path}: expected 1 input and 1 output, got {len(inputs)}/{len(outputs)}")
        shape = inputs[0].shape
        if len(shape) != 2 or shape[1] != features.N_FEATURES:
            raise ClassifierLoadError(
                f"classifier {model_path}: input shape {shape} does not take {features.N_FEATURES} features"
            )
        table = meta["calibration"].get("quantiles") if isinstance(meta["calibration"], dict) else None
        if not table or len(table) < 2:
            raise ClassifierLoadError(f"classifier metadata for {model_path} has no calibration quantiles")
        self._sess = sess
        self._input = inputs[0].name
        self._output = outputs[0].name
        self.path = model_path
        self.metadata = meta
        self.sha256 = digest
        self.version = f"onnx-{digest[:12]}"
        self.feature_version = meta["feature_version"]
        self.default_threshold = float(meta["default_threshold"])
        self._table = [float(v) for v in table]

    def score_features(self, x: np.ndarray) -> list[float]:
        """Scores of a float32 feature matrix (rows from features.extract_batch)."""
        if x.shape[0] == 0:
            return []
        y = self._sess.run([self._output], {self._input: x})[0]
        return y.reshape(-1).astype(np.float64).tolist()

    def score_batch(self, texts: Sequence[str]) -> list[float]:
        return self.score_features(features.extract_batch(texts))

    def features_and_scores(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The feature matrix (float32, [N, n_features], names in ``features.DENSE_NAMES``) and the scores
        (float64, [N]) of this model for `texts`, from one feature pass."""
        x = features.extract_batch(texts)
        return x, np.asarray(self.score_features(x), dtype=np.float64)

    def score(self, text: str) -> float:
        return self.score_batch([text])[0]

    def threshold_for_share(self, cloud_share: float) -> float:
        return threshold_from_table(self._table, cloud_share)
