"""Everyday-chat check of the complexity classifier (a check, never training data).

bench/everyday_chat.jsonl holds hand-written chat prompts in four groups, written before any tuning:
short-easy (small talk, one-line facts, "What is 2+2?"), long-easy (summarise / translate / fix typos /
extract from a long *given* text), short-hard (prove, derive, design, implement, critique in one line)
and long-hard (detailed reasoning, design, analysis or creation asks). Each line:
``{"prompt": ..., "label": "easy"|"hard", "group": ...}``. Length alone cannot separate the long groups.

Reported for the model and for prompt length, with 95 % bootstrap intervals (2,000 resamples over
prompts, stratified by group):
- AUC of the score for hard vs easy (all prompts; long groups only; short groups only);
- at the model's default threshold: the share of easy prompts sent to the cloud and of hard prompts
  kept on the edge (the length baseline uses the threshold that gives the model's overall cloud share).

    python bench/everyday_chat.py [--model PATH] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.classify import load_scorer

DATA = Path(__file__).with_suffix(".jsonl")


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a random hard prompt > a random easy one), ties count half."""
    d = pos[:, None] - neg[None, :]
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size)


def _ci(vals: list[float]) -> tuple[float, float]:
    return float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))


def report(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, threshold: float, n_boot: int = 2000,
           seed: int = 0) -> dict:
    hard = labels == "hard"
    long_ = np.char.startswith(groups.astype(str), "long")
    subsets = {"all": np.ones(len(scores), bool), "long groups": long_, "short groups": ~long_}

    def stats(idx: np.ndarray) -> dict:
        s, h = scores[idx], hard[idx]
        out = {name: auc(s[h & m[idx]], s[~h & m[idx]]) for name, m in subsets.items()}
        out["easy to cloud"] = float(np.mean(s[~h] >= threshold))
        out["hard to edge"] = float(np.mean(s[h] < threshold))
        out["cloud share"] = float(np.mean(s >= threshold))
        return out

    point = stats(np.arange(len(scores)))
    rng = np.random.default_rng(seed)
    strata = [np.nonzero(groups == g)[0] for g in sorted(set(groups))]
    boots: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(st, len(st)) for st in strata])
        for k, v in stats(idx).items():
            boots[k].append(v)
    return {k: {"value": round(point[k], 4), "ci95": [round(x, 4) for x in _ci(boots[k])]} for k in point}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model file or folder (default: the shipped model)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--threshold", type=float, default=None, help="default: the model's default_threshold")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rows = [json.loads(line) for line in Path(a.data).read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = [r["prompt"] for r in rows]
    labels = np.array([r["label"] for r in rows])
    groups = np.array([r["group"] for r in rows])
    scorer = load_scorer("onnx", a.model)
    thr = a.threshold if a.threshold is not None else float(scorer.default_threshold)
    s_model = np.array(scorer.score_batch(prompts))
    s_len = np.array([float(len(p)) for p in prompts])
    share = float(np.mean(s_model >= thr))
    thr_len = float(np.quantile(s_len, 1.0 - share)) if 0 < share < 1 else (np.inf if share == 0 else -np.inf)
    res = {"model": scorer.version, "threshold": thr, "n": len(rows),
           "groups": {str(g): int((groups == g).sum()) for g in sorted(set(groups))},
           "classifier": report(s_model, labels, groups, thr),
           "length": report(s_len, labels, groups, thr_len)}
    print(f"everyday chat: {len(rows)} prompts {res['groups']}; model {scorer.version}, threshold {thr:.4f}")
    print("| router | AUC all | AUC long groups | AUC short groups | easy -> cloud | hard -> edge | cloud share |")
    print("|---|---|---|---|---|---|---|")
    for name in ("classifier", "length"):
        r = res[name]
        cells = [f"{r[k]['value']:.3f} [{r[k]['ci95'][0]:.2f}, {r[k]['ci95'][1]:.2f}]"
                 for k in ("all", "long groups", "short groups", "easy to cloud", "hard to edge", "cloud share")]
        print(f"| {name} | " + " | ".join(cells) + " |")
    per = {str(g): float(np.mean(s_model[groups == g] >= thr)) for g in sorted(set(groups))}
    print("cloud share per group (model): " + ", ".join(f"{g} {v:.0%}" for g, v in per.items()))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
