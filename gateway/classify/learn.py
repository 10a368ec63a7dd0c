"""``gateway learn``: adapt the complexity classifier to the operator's own model pair from pairwise outcomes.

The shipped classifier was trained on other model pairs, so for the pair a gateway actually routes between
it is a prior. Learning stacks a small model on it:

    logit P(cloud better) = b + c * logit(prior score) + w . z

where z is the standardised prompt length and the base model's feature vector. The target is "cloud is
better than edge" (label 1 when cloud_quality > edge_quality) with sample weight |cloud - edge| (ties carry
no information and weigh 0). ``w`` has an L2 penalty; as it grows the model tends to a monotone map of the
prior (same ranking, same APGR), so the penalty is shrinkage toward the prior. Its strength is chosen by
repeated K-fold cross-validation on the feedback, scored by APGR (RouteLLM protocol) of the out-of-fold
predictions. Safe fallback: unless the best penalty beats the prior's own cross-validated APGR by more than
``min_z`` standard errors of the paired difference (plus ``min_gain``), the learned model keeps the prior's
score, so it is never much worse than the shipped model.

The threshold is set from unlabelled traffic (``--traffic``: the (1 - share) quantile of its scores) or,
without it, from the feedback prompts' scores at ``--cloud-share`` (default DEFAULT_CLOUD_SHARE).

The output folder is self-contained: ``base/`` holds a copy of the base ONNX model and its metadata,
``learned.json`` the head, scaling, threshold and calibration table, ``report.json`` the cross-validation,
``trained_on.sha256`` a hash of each feedback prompt (promotion holds those out).
Serving (:class:`LearnedScorer`) needs numpy and onnxruntime only; learning needs numpy only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import ClassifierLoadError
from .calibrate import quantile_table, share_at, threshold_from_table
from .metrics import apgr

LEARNED_FILE = "learned.json"
REPORT_FILE = "report.json"
TRAINED_FILE = "trained_on.sha256"  # sha256 of each feedback prompt, so promotion can hold them out
BASE_DIR = "base"
LEARN_FORMAT = 1
DEFAULT_CLOUD_SHARE = 0.3
# Penalty strengths tried by cross-validation, as a multiple of the total sample weight (scale-free).
PENALTIES = (100.0, 30.0, 10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01)
LENGTH_ONLY = "length"  # candidate head on the prior and prompt length alone (lightly penalised)
_LENGTH_PENALTY = 0.01
CV_FOLDS = 5
CV_REPEATS = 3
# The stacked model replaces the prior only if its cross-validated APGR gain minus MIN_Z standard errors
# (paired, over prompts) is at least MIN_GAIN.
MIN_GAIN = 0.0
MIN_Z = 1.0
MIN_LABELS = 20
_EPS = 1e-4


class LearnError(Exception):
    """The feedback or traffic file cannot be learned from (bad lines, too few informative labels)."""


# --- the base model: the ONE place that knows how the shipped classifier computes score and features ---

class BaseModel:
    """The shipped (prior) classifier seen through a narrow interface: prompts -> (score, feature matrix)."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        from .model import OnnxScorer

        self.scorer = OnnxScorer(path)
        self.path: Path = self.scorer.path
        self.version: str = self.scorer.version
        self.feature_version: str = self.scorer.feature_version

    def score_and_features(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if not len(prompts):
            return np.zeros(0), np.zeros((0, 0))
        x, scores = self.scorer.features_and_scores(prompts)
        return scores, x.astype(np.float64)

    def copy_to(self, folder: Path) -> None:
        """Copy the model file and its metadata into `folder` (so a learned model is self-contained)."""
        from .model import metadata_path_for

        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.path, folder / "classifier.onnx")
        shutil.copyfile(metadata_path_for(self.path), folder / "classifier.json")


def _design(prompts: Sequence[str], prior: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logit of the prior score, raw stacked features: log prompt length and the base features)."""
    lp = np.log(np.clip(prior, _EPS, 1 - _EPS) / (1 - np.clip(prior, _EPS, 1 - _EPS)))
    length = np.log1p(np.array([len(p) for p in prompts], dtype=np.float64))[:, None]
    return lp, np.hstack([length, x])


# --- penalised weighted logistic regression (Newton) ---

def fit_logistic(lp: np.ndarray, z: np.ndarray, y: np.ndarray, w: np.ndarray, penalty: float,
                 start: np.ndarray | None = None, iters: int = 50) -> np.ndarray:
    """Coefficients [b, c, w...] minimising weighted log-loss + penalty/2 * ||w||^2 (b and c barely
    penalised). `penalty` is absolute (the caller scales it by the total weight)."""
    a = np.hstack([np.ones((len(lp), 1)), lp[:, None], z])
    d = a.shape[1]
    pen = np.full(d, penalty)
    pen[:2] = 1e-6 * max(float(w.sum()), 1.0)
    beta = np.zeros(d) if start is None else start.copy()
    if start is None:
        beta[1] = 1.0

    def loss(b: np.ndarray) -> float:
        eta = a @ b
        return float(np.sum(w * (np.logaddexp(0.0, eta) - y * eta)) + 0.5 * np.sum(pen * b * b))

    cur = loss(beta)
    for _ in range(iters):
        eta = a @ beta
        p = 1.0 / (1.0 + np.exp(-eta))
        g = a.T @ (w * (p - y)) + pen * beta
        h = (a * (w * p * (1 - p))[:, None]).T @ a + np.diag(pen)
        try:
            step = np.linalg.solve(h, g)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(h, g, rcond=None)[0]
        t = 1.0
        while t > 1e-4:
            cand = beta - t * step
            new = loss(cand)
            if new <= cur + 1e-12:
                break
            t *= 0.5
        else:
            break
        beta, done = cand, cur - new < 1e-10 * max(1.0, abs(cur))
        cur = new
        if done:
            break
    return beta


class Head:
    """A fitted stacked head: standardisation + coefficients; `kind` "stacked" or "prior"."""

    def __init__(self, kind: str, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray) -> None:
        self.kind, self.mean, self.scale, self.coef = kind, mean, scale, coef

    def logits(self, lp: np.ndarray, z: np.ndarray) -> np.ndarray:
        if self.kind == "prior":
            return lp
        zs = (z - self.mean) / self.scale
        return self.coef[0] + self.coef[1] * lp + zs @ self.coef[2:]

    def scores(self, lp: np.ndarray, z: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(lp, z)))

    def to_json(self) -> dict:
        return {"kind": self.kind, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist()}

    @classmethod
    def from_json(cls, obj: dict, width: int) -> Head:
        kind = obj.get("kind")
        if kind not in ("stacked", "prior"):
            raise ValueError(f"unknown head kind {kind!r}")
        mean, scale, coef = (np.asarray(obj.get(k, []), dtype=np.float64) for k in ("mean", "scale", "coef"))
        if kind == "stacked" and not (len(mean) == len(scale) == width and len(coef) == width + 2):
            raise ValueError(f"head has {len(mean)}/{len(scale)}/{len(coef)} values, features are {width} wide")
        return cls(kind, mean, scale, coef)


def _standardise(z: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    wn = w / w.sum()
    mean = wn @ z
    sd = np.sqrt(wn @ (z - mean) ** 2)
    return mean, np.where(sd > 1e-9, sd, 1.0)


def fit_head(lp: np.ndarray, z: np.ndarray, y: np.ndarray, w: np.ndarray, penalty: float,
             start: np.ndarray | None = None, cols: int | None = None) -> Head:
    """`cols`: fit on the first `cols` stacked features only (the others get weight 0)."""
    mean, scale = _standardise(z, w)
    k = z.shape[1] if cols is None else cols
    coef = fit_logistic(lp, ((z - mean) / scale)[:, :k], y, w, penalty * float(w.sum()), start)
    return Head("stacked", mean, scale, np.concatenate([coef, np.zeros(z.shape[1] - k)]))


def fit_candidate(key: str, lp: np.ndarray, z: np.ndarray, y: np.ndarray, w: np.ndarray,
                  start: np.ndarray | None = None) -> Head:
    if key == LENGTH_ONLY:
        return fit_head(lp, z, y, w, _LENGTH_PENALTY, cols=1)
    return fit_head(lp, z, y, w, float(key), start)


def _apgr_or_none(scores: np.ndarray, edge: np.ndarray, cloud: np.ndarray) -> float | None:
    try:
        return apgr(scores, edge, cloud)
    except ValueError:
        return None


def _fold_ranks(scores: np.ndarray) -> np.ndarray:
    """Within-fold percentile ranks, so out-of-fold scores of different fold models can be pooled."""
    order = np.argsort(np.argsort(scores, kind="stable"), kind="stable")
    return (order + 0.5) / len(scores)


def cross_validate(lp: np.ndarray, z: np.ndarray, edge: np.ndarray, cloud: np.ndarray, folds: int = CV_FOLDS,
                   repeats: int = CV_REPEATS, penalties: Sequence[float] = PENALTIES,
                   seed: int = 0) -> tuple[dict[str, float | None], dict[str, np.ndarray]]:
    """Pooled out-of-fold APGR of the prior and of each penalty, averaged over `repeats` random fold splits;
    and each candidate's out-of-fold percentile ranks averaged over the repeats (for the paired test)."""
    gain = cloud - edge
    y = (gain > 0).astype(np.float64)
    w = np.abs(gain)
    n = len(lp)
    rng = np.random.default_rng(seed)
    keys = ["prior", LENGTH_ONLY, *(f"{p:g}" for p in penalties)]
    results: dict[str, list[float]] = {k: [] for k in keys}
    ranks: dict[str, np.ndarray] = {k: np.zeros(n) for k in keys}
    used = 0
    for _ in range(repeats):
        fold_of = rng.permutation(n) % folds
        oof = {k: np.zeros(n) for k in keys}
        ok = True
        for f in range(folds):
            te, tr = fold_of == f, fold_of != f
            if w[tr].sum() <= 0 or len(np.unique(y[tr][w[tr] > 0])) < 2:
                ok = False
                break
            oof["prior"][te] = _fold_ranks(lp[te])
            oof[LENGTH_ONLY][te] = _fold_ranks(fit_candidate(LENGTH_ONLY, lp[tr], z[tr], y[tr], w[tr]).logits(lp[te], z[te]))
            start = None
            for p in penalties:  # strongest first: each fit warm-starts the next
                head = fit_head(lp[tr], z[tr], y[tr], w[tr], p, start)
                start = head.coef
                oof[f"{p:g}"][te] = _fold_ranks(head.logits(lp[te], z[te]))
        if not ok:
            continue
        used += 1
        for k, s in oof.items():
            ranks[k] += _fold_ranks(s)
            a = _apgr_or_none(s, edge, cloud)
            if a is not None:
                results[k].append(a)
    means = {k: (float(np.mean(v)) if v else None) for k, v in results.items()}
    return means, {k: r / max(used, 1) for k, r in ranks.items()}


def paired_gain(ranks_a: np.ndarray, ranks_b: np.ndarray, gain: np.ndarray) -> tuple[float, float]:
    """APGR(a) - APGR(b) and its standard error, from per-prompt contributions.

    Routing by percentile rank u (1 = first to the cloud), APGR ~ sum_i gain_i * u_i / (n * mean gain), so
    the difference is a mean of per-prompt terms gain_i * (u_a,i - u_b,i) / mean gain."""
    c = gain * (ranks_a - ranks_b) / float(gain.mean())
    return float(c.mean()), float(c.std(ddof=1) / math.sqrt(len(c)))


# --- reading the input files ---

def _check_line(path: str, lineno: int, line: str, need: Sequence[str]) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise LearnError(f"{path}: line {lineno}: not valid JSON ({e.msg})") from e
    if not isinstance(obj, dict):
        raise LearnError(f"{path}: line {lineno}: expected a JSON object")
    for k in need:
        if k not in obj:
            raise LearnError(f'{path}: line {lineno}: missing "{k}"')
    if not isinstance(obj["prompt"], str):
        raise LearnError(f'{path}: line {lineno}: "prompt" must be a string')
    for k in need[1:]:
        v = obj[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            raise LearnError(f'{path}: line {lineno}: "{k}" must be a number in [0, 1], got {v!r}')
    return obj


def _read_jsonl(path: str, need: Sequence[str]) -> list[dict]:
    rows = []
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    rows.append(_check_line(path, lineno, line, need))
    except UnicodeDecodeError as e:
        raise LearnError(f"{path}: not UTF-8 text ({e.reason})") from e
    except OSError as e:
        raise LearnError(f"cannot read {path}: {e.strerror or e}") from e
    return rows


def read_feedback(path: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    rows = _read_jsonl(path, ("prompt", "edge_quality", "cloud_quality"))
    prompts = [r["prompt"] for r in rows]
    edge = np.array([float(r["edge_quality"]) for r in rows])
    cloud = np.array([float(r["cloud_quality"]) for r in rows])
    return prompts, edge, cloud


def read_traffic(path: str) -> list[str]:
    return [r["prompt"] for r in _read_jsonl(path, ("prompt",))]


# --- learning ---

def learn(feedback: str, output: str, traffic: str | None = None, cloud_share: float | None = None,
          base: str | None = None, seed: int = 0, min_gain: float = MIN_GAIN, min_z: float = MIN_Z,
          log: Any = lambda s: None) -> dict:
    """Learn from `feedback`, write the model folder `output`; returns the report."""
    started = time.perf_counter()
    share = DEFAULT_CLOUD_SHARE if cloud_share is None else float(cloud_share)
    if not 0.0 < share < 1.0:
        raise LearnError(f"--cloud-share must be strictly between 0 and 1, got {share:g}")
    prompts, edge, cloud = read_feedback(feedback)
    traffic_prompts = read_traffic(traffic) if traffic else None
    if traffic_prompts is not None and not traffic_prompts:
        raise LearnError(f"{traffic}: no prompts")
    gain = cloud - edge
    informative = int(np.sum(gain != 0))
    if not prompts:
        raise LearnError(f"{feedback}: no feedback lines")
    bm = BaseModel(base)
    prior, x = bm.score_and_features(prompts)
    lp, z = _design(prompts, prior, x)

    gap = float(gain.mean())
    cv: dict[str, float | None] = {}
    test: dict[str, Any] = {}
    chosen = "prior"
    reason = ""
    if informative < MIN_LABELS:
        reason = (f"only {informative} prompts where cloud and edge quality differ (at least {MIN_LABELS} are "
                  f"needed to learn): prior kept")
    elif gap <= 0:
        reason = f"the cloud model is not better on average (mean gain {gap:+.4f}): APGR undefined, prior kept"
    elif int(np.sum(gain > 0)) == 0 or int(np.sum(gain < 0)) == 0:
        reason = "one-sided labels: prior kept"
    else:
        cv, ranks = cross_validate(lp, z, edge, cloud, seed=seed)
        best = max((k for k in cv if k != "prior" and cv[k] is not None), key=lambda k: cv[k] or 0.0, default=None)
        if best is None or cv.get("prior") is None:
            reason = "cross-validation had no usable folds: prior kept"
        else:
            diff, se = paired_gain(ranks[best], ranks["prior"], gain)
            test = {"penalty": best, "apgr_gain": diff, "se": se, "z": min_z, "min_gain": min_gain}
            if diff - min_z * se >= min_gain:
                chosen = best
                reason = f"candidate {best} beats the prior by {diff:+.4f} cross-validated APGR (se {se:.4f})"
            else:
                reason = (f"best candidate {best} gains {diff:+.4f} cross-validated APGR over the prior (se {se:.4f}), "
                          f"not {min_gain:g} + {min_z:g} se: prior kept")
    log(f"[learn] {len(prompts)} labels ({informative} informative), mean gain {gap:+.4f}; {reason}")

    if chosen == "prior":
        head = Head("prior", np.zeros(z.shape[1]), np.ones(z.shape[1]), np.array([0.0, 1.0]))
    else:
        head = fit_candidate(chosen, lp, z, (gain > 0).astype(np.float64), np.abs(gain))

    if traffic_prompts is not None:
        t_prior, t_x = bm.score_and_features(traffic_prompts)
        t_lp, t_z = _design(traffic_prompts, t_prior, t_x)
        cal_scores = head.scores(t_lp, t_z)
        cal_source = {"source": "traffic", "file": os.path.basename(traffic or ""), "n": len(traffic_prompts)}
    else:
        cal_scores = head.scores(lp, z)
        cal_source = {"source": "feedback", "file": os.path.basename(feedback), "n": len(prompts)}
    table = quantile_table(cal_scores.tolist())
    threshold = threshold_from_table(table, share)

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    bm.copy_to(out / BASE_DIR)
    train_scores = head.scores(lp, z)
    report: dict[str, Any] = {
        "labels": len(prompts), "informative": informative, "mean_edge_quality": float(edge.mean()),
        "mean_cloud_quality": float(cloud.mean()), "mean_gain": gap,
        "cross_validation": {"folds": CV_FOLDS, "repeats": CV_REPEATS, "metric": "pooled out-of-fold APGR",
                             "apgr": cv, "fallback_test": test},
        "chosen": chosen, "reason": reason,
        "train_apgr": {"learned": _apgr_or_none(train_scores, edge, cloud),
                       "prior": _apgr_or_none(prior, edge, cloud)},
        "calibration": {**cal_source, "target_share": share, "threshold": threshold,
                        "share_reached": share_at(cal_scores.tolist(), threshold)},
        "base": {"version": bm.version, "feature_version": bm.feature_version},
        "seconds": round(time.perf_counter() - started, 3),
    }
    learned = {
        "format": LEARN_FORMAT, "kind": "learned-stacked-logistic",
        "base": {"file": f"{BASE_DIR}/classifier.onnx", "version": bm.version, "feature_version": bm.feature_version},
        "stacked_features": ["logit(prior score)", "log1p(prompt chars)", "base features"],
        "head": head.to_json(), "candidate": chosen,
        "score": "estimated P(cloud answer better than edge answer) for the learned pair",
        "cloud_share": share, "default_threshold": threshold,
        "calibration": {**cal_source, "quantiles": table, "rule": "cloud if score >= threshold"},
    }
    (out / LEARNED_FILE).write_text(json.dumps(learned, indent=1), encoding="utf-8")
    (out / REPORT_FILE).write_text(json.dumps(report, indent=1), encoding="utf-8")
    (out / TRAINED_FILE).write_text("".join(prompt_digest(p) + "\n" for p in sorted(set(prompts))), encoding="utf-8")
    log(f"[learn] wrote {out}: {chosen} head, threshold {threshold:.6f} for cloud share {share:g} "
        f"({share_at(cal_scores.tolist(), threshold):.1%} on {cal_source['source']}); {report['seconds']:.1f} s")
    return report


def prompt_digest(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()


# --- serving ---

def is_learned_dir(path: str | os.PathLike | None) -> bool:
    return path is not None and Path(path).is_dir() and (Path(path) / LEARNED_FILE).is_file()


class LearnedScorer:
    """A model folder written by ``gateway learn``, served like the shipped scorer (numpy + onnxruntime)."""

    name = "learned"

    def __init__(self, path: str | os.PathLike) -> None:
        folder = Path(path)
        meta_path = folder / LEARNED_FILE
        try:
            raw = meta_path.read_bytes()
            meta = json.loads(raw)
        except (OSError, ValueError) as e:
            raise ClassifierLoadError(f"learned model {meta_path} cannot be read: {e}") from e
        if not isinstance(meta, dict) or meta.get("format") != LEARN_FORMAT:
            raise ClassifierLoadError(f"learned model {meta_path} is not format {LEARN_FORMAT}")
        try:
            self.base = BaseModel(folder / BASE_DIR / "classifier.onnx")
        except ClassifierLoadError as e:
            raise ClassifierLoadError(f"learned model {folder}: its base model did not load: {e}") from e
        n_base = int(self.base.scorer.metadata["n_features"])
        try:
            self.head = Head.from_json(meta.get("head") or {}, 1 + n_base)
            table = [float(v) for v in meta["calibration"]["quantiles"]]
            self.default_threshold = float(meta["default_threshold"])
        except (KeyError, TypeError, ValueError) as e:
            raise ClassifierLoadError(f"learned model {meta_path} is malformed: {e}") from e
        if len(table) < 2:
            raise ClassifierLoadError(f"learned model {meta_path} has no calibration quantiles")
        self._table = table
        self.path = folder
        self.metadata = meta
        self.version = "learned-" + hashlib.sha256(raw + self.base.version.encode()).hexdigest()[:12]

    def score_batch(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        prior, x = self.base.score_and_features(texts)
        lp, z = _design(texts, prior, x)
        return self.head.scores(lp, z).tolist()

    def threshold_for_share(self, cloud_share: float) -> float:
        return threshold_from_table(self._table, cloud_share)


def export_outcomes(outcomes_path: str, out: Path) -> str:
    """Write the feedback lines made from a gateway outcomes file (see outcomes.to_feedback) to `out`."""
    from gateway.observability.outcomes import read_outcomes, to_feedback

    if not outcomes_path:
        raise LearnError("--from-store needs the outcomes file: give its path or set GATEWAY_OUTCOMES_PATH")
    try:
        lines, info = to_feedback(read_outcomes(outcomes_path))
    except OSError as e:
        raise LearnError(f"cannot read {outcomes_path}: {e.strerror or e}") from e
    print(f"[learn] {outcomes_path}: {info['outcomes']} outcomes -> {info['prompts']} feedback prompts "
          f"(skipped: {info['skipped']})", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return str(out)
