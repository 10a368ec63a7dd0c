"""How the classifier ranks chat-style prompts, which the outcome data does not contain.

    python bench/chat_sanity.py [--model PATH] [--betas 0,0.5,1,1.5,2,3]

``bench/chat_prompts.jsonl`` holds 35 short prompts in MT-Bench-like categories, written for this check (not
taken from any dataset), each labelled with the tier a small edge model would need: "edge" for small talk,
writing, role-play, extraction and simple facts; "cloud" for maths, reasoning, coding and analysis. The labels
were written before any scoring, by the same person who wrote the classifier's task-complexity prior, so they
share its intuitions: treat the figures as a sanity check, not as a benchmark.

Prints the ROC AUC of the score for "cloud" vs "edge" for the given model and for prompt length, each
category's mean score rank, and, with ``--betas``, the same AUC for models retrained at other prior strengths
(``gateway train --prior-beta B`` into a temporary folder; needs the train extra and the outcome data).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.classify import LengthScorer, load_scorer  # noqa: E402

PROMPTS = ROOT / "bench" / "chat_prompts.jsonl"


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counting half."""
    pos, neg = scores[positive], scores[~positive]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model file or folder (default: the shipped model)")
    ap.add_argument("--betas", default="", help="also retrain at these prior strengths, e.g. 0,0.5,1,2")
    a = ap.parse_args()
    rows = [json.loads(line) for line in PROMPTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [r["prompt"] for r in rows]
    cloud = np.array([r["tier"] == "cloud" for r in rows])
    model = load_scorer("onnx", a.model)
    s_model = np.array(model.score_batch(texts))
    s_len = np.array(LengthScorer().score_batch(texts))
    print(f"{len(rows)} prompts ({int(cloud.sum())} cloud, {int((~cloud).sum())} edge) from {PROMPTS.relative_to(ROOT)}\n")
    print("| router | AUC cloud vs edge |\n|---|---|")
    print(f"| model `{model.version}` | {auc(s_model, cloud):.3f} |\n| prompt length | {auc(s_len, cloud):.3f} |")

    rank = s_model.argsort().argsort() / (len(rows) - 1)  # 0 = lowest score, 1 = highest
    print("\n| category | tier | prompts | mean score rank (0 = lowest, 1 = highest) |\n|---|---|---|---|")
    for cat in dict.fromkeys(r["category"] for r in rows):
        idx = [i for i, r in enumerate(rows) if r["category"] == cat]
        print(f"| {cat} | {rows[idx[0]]['tier']} | {len(idx)} | {rank[idx].mean():.2f} |")

    if a.betas:
        from gateway.classify.train import train

        print("\n| prior strength β (retrained) | AUC cloud vs edge |\n|---|---|")
        for beta in (float(b) for b in a.betas.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                train(out_dir=tmp, prior_beta=beta, log=lambda _: None)
                s = np.array(load_scorer("onnx", str(Path(tmp) / "classifier.onnx")).score_batch(texts))
            print(f"| {beta:g} | {auc(s, cloud):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
