"""The classifier on RouteLLM's own outcome files (GPT-4 vs Mixtral), the data behind its published figures.

    python bench/external_routellm.py FILE [--model PATH ...] [--bootstrap 2000]

FILE is RouteLLM's ``routellm/evals/gsm8k/gsm8k_responses.csv`` (columns ``prompt``,
``mixtral-8x7b-instruct-v0.1``, ``gpt-4-1106-preview``, ...; Apache-2.0, github.com/lm-sys/RouteLLM), or a
JSONL file of ``{"prompt", "mixtral": bool, "gpt4": bool}`` lines. It is not shipped: nothing in this
repository trains on it, and it is not needed by the tests. Prints APGR and CPT(50%) for each model, for
prompt length and for random, with a 90 % bootstrap interval for each model and for its difference to length.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.classify import LengthScorer, load_scorer  # noqa: E402
from gateway.classify.evaluate import bootstrap_intervals  # noqa: E402
from gateway.classify.metrics import apgr, cpt  # noqa: E402

WEAK, STRONG = "mixtral-8x7b-instruct-v0.1", "gpt-4-1106-preview"


def read(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [r["prompt"] for r in rows], np.array([float(r["mixtral"]) for r in rows]), \
            np.array([float(r["gpt4"]) for r in rows])
    csv.field_size_limit(1 << 24)
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    as_float = lambda v: 1.0 if str(v).strip() == "True" else 0.0  # noqa: E731
    return [r["prompt"] for r in rows], np.array([as_float(r[WEAK]) for r in rows]), \
        np.array([as_float(r[STRONG]) for r in rows])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("--model", action="append", default=None, help="model file(s) (default: the shipped model)")
    ap.add_argument("--bootstrap", type=int, default=2000)
    a = ap.parse_args()
    texts, weak, strong = read(a.file)
    print(f"{a.file.name}: {len(texts)} prompts; weak (Mixtral) {weak.mean():.3f}, strong (GPT-4) {strong.mean():.3f}\n")
    s_len = np.array(LengthScorer().score_batch(texts))
    print("| router | APGR [90% CI] | CPT(50%) | APGR − length [90% CI] |\n|---|---|---|---|")
    for path in a.model or [None]:
        scorer = load_scorer("onnx", path)
        s = np.array(scorer.score_batch(texts))
        ci, diff_ci = bootstrap_intervals(s, s_len, weak, strong, a.bootstrap, np.random.default_rng(0))
        print(f"| model `{scorer.version}` | {apgr(s, weak, strong):.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | "
              f"{cpt(s, weak, strong, 0.5):.1%} | {apgr(s, weak, strong) - apgr(s_len, weak, strong):+.3f} "
              f"[{diff_ci[0]:+.3f}, {diff_ci[1]:+.3f}] |")
    print(f"| prompt length | {apgr(s_len, weak, strong):.3f} | {cpt(s_len, weak, strong, 0.5):.1%} | |")
    print("| random | 0.500 | 50.0% | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
