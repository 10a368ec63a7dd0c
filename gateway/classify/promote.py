"""Safe promotion: does a candidate classifier beat the running one on outcomes held back from its training?

``compare`` scores held-back pairwise outcomes with both and reports each APGR, the difference and its 90 %
bootstrap interval (paired, over prompts). ``decide`` promotes only when the difference is at least the
policy's margin and the interval's lower end is above zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .learn import TRAINED_FILE, prompt_digest
from .metrics import apgr

MIN_HOLDOUT = 30


class PromotionError(Exception):
    """No usable held-back outcomes (too few, or the cloud model is not better on them)."""


def trained_digests(model_dir: str | Path) -> set[str]:
    p = Path(model_dir) / TRAINED_FILE
    if not p.is_file():
        return set()
    return {line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()}


def holdout_from_feedback(lines: Iterable[dict], exclude: set[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Feedback lines whose prompt the candidate was not trained on."""
    keep = [x for x in lines if prompt_digest(x["prompt"]) not in exclude]
    return ([x["prompt"] for x in keep], np.array([float(x["edge_quality"]) for x in keep]),
            np.array([float(x["cloud_quality"]) for x in keep]))


def compare(running: Any, candidate: Any, prompts: Sequence[str], edge: np.ndarray, cloud: np.ndarray,
            n_boot: int = 1000, seed: int = 0) -> dict:
    if len(prompts) < MIN_HOLDOUT:
        raise PromotionError(f"{len(prompts)} held-back outcomes; at least {MIN_HOLDOUT} are needed")
    if float(np.mean(cloud - edge)) <= 0:
        raise PromotionError("on the held-back outcomes the cloud model is not better on average: APGR undefined")
    a = np.asarray(running.score_batch(list(prompts)), dtype=np.float64)
    b = np.asarray(candidate.score_batch(list(prompts)), dtype=np.float64)
    a_run, a_cand = apgr(a, edge, cloud), apgr(b, edge, cloud)
    rng = np.random.default_rng(seed)
    diffs = []
    n = len(prompts)
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        if float(np.sum(cloud[i] - edge[i])) <= 1e-9:
            continue
        diffs.append(apgr(b[i], edge[i], cloud[i]) - apgr(a[i], edge[i], cloud[i]))
    ci = [float(np.quantile(diffs, 0.05)), float(np.quantile(diffs, 0.95))] if diffs else [float("-inf"), float("inf")]
    return {"n": n, "running_apgr": a_run, "candidate_apgr": a_cand, "diff": a_cand - a_run, "diff_ci90": ci}


def decide(result: dict, margin: float) -> tuple[bool, str]:
    diff, (lo, _) = result["diff"], result["diff_ci90"]
    if diff < margin:
        return False, f"APGR gain {diff:+.4f} is under the policy margin {margin:g}"
    if lo <= 0:
        return False, f"APGR gain {diff:+.4f}, but its 90 % interval reaches {lo:+.4f}: not clearly better"
    return True, f"APGR gain {diff:+.4f} (90 % interval {lo:+.4f} .. {result['diff_ci90'][1]:+.4f}) >= margin {margin:g}"
