"""Benchmark of the complexity classifier: model load time and per-request latency (text -> score).

    python bench/bench_classifier.py [--n 3000] [--cpu 0] [--model PATH]

Pins the process to one CPU core (``--cpu``, default 0; ``--cpu -1`` to not pin), uses a ~200-token prompt
(about 150 English words with a little maths and code, ~900 characters), and prints a markdown table:

- load: onnxruntime import (once per process); the first OnnxScorer construction, which also reads the
  word-vector table; the table alone (median of 5); then OnnxScorer construction (sha256 checks + session),
  median of 20 loads;
- single: ``score_batch([text])`` per request, split into features (Python/numpy) and the ONNX run;
- batched: ``score_batch`` of 32 different prompts, time per request = call time / 32;
- MicroBatcher: a lone ``await batcher.score(text)`` (one loop turn of batching overhead) and 32 concurrent
  calls (gathered; time per request = total / 32).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = (
    "I am preparing a short technical report for my team and need help with one part of it. We measured the "
    "latency of our service over 14 days; the daily p99 values in milliseconds were 212, 198, 240, 251, 199, "
    "205, 230, 262, 219, 201, 244, 238, 209 and 226. First, explain step by step how to compute the mean, the "
    "median and a 95% confidence interval for the mean, and state which assumptions the interval needs. "
    "Second, write a Python function `summarize(xs: list[float]) -> dict` that returns these three values "
    "without using any third-party library, and include two unit tests. Third, explain why the p99 of the "
    "whole fortnight is not the mean of the daily p99 values, with a small numeric example. Keep the answer "
    "under 400 words, use exactly three sections with headings, and do not use tables."
)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1e3, q))  # ms


def variants(n: int) -> list[str]:
    """n distinct prompts of the same size (numbers changed), so no caching effect can help."""
    return [PROMPT.replace("212", str(100 + i)).replace("14 days", f"{14 + i % 7} days") for i in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="timed requests per measurement")
    ap.add_argument("--cpu", type=int, default=0, help="pin to this core (-1: no pinning)")
    ap.add_argument("--model", default=None, help="model file or folder (default: shipped model)")
    args = ap.parse_args()
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})

    t0 = time.perf_counter()
    import onnxruntime

    t_import = time.perf_counter() - t0
    from gateway.classify import MicroBatcher, wordvec
    from gateway.classify import features as F
    from gateway.classify.model import OnnxScorer

    t0 = time.perf_counter()
    OnnxScorer(args.model)  # first load in the process: also reads the word-vector table
    t_first = time.perf_counter() - t0
    table_loads = []
    for _ in range(5):
        t0 = time.perf_counter()
        wordvec.WordVectors()
        table_loads.append(time.perf_counter() - t0)
    loads = []
    for _ in range(20):
        t0 = time.perf_counter()
        scorer = OnnxScorer(args.model)
        loads.append(time.perf_counter() - t0)
    size = scorer.path.stat().st_size

    texts = variants(args.n)
    words = len(PROMPT.split())
    for t in texts[:200]:  # warm-up
        scorer.score_batch([t])

    single, feat, run = [], [], []
    for t in texts:
        a = time.perf_counter()
        scorer.score_batch([t])
        b = time.perf_counter()
        single.append(b - a)
    for t in texts:
        a = time.perf_counter()
        x = F.extract_batch([t])
        b = time.perf_counter()
        scorer.score_features(x)
        c = time.perf_counter()
        feat.append(b - a)
        run.append(c - b)

    batched = []
    for i in range(0, len(texts) - 31, 32):
        chunk = texts[i:i + 32]
        a = time.perf_counter()
        scorer.score_batch(chunk)
        batched.append((time.perf_counter() - a) / 32)

    async def lone_and_concurrent() -> tuple[list[float], list[float]]:
        b = MicroBatcher(scorer, max_batch=32, max_wait_s=0.0005)
        lone, conc = [], []
        for t in texts[:1000]:
            a = time.perf_counter()
            await b.score(t)
            lone.append(time.perf_counter() - a)
        for i in range(0, min(len(texts), 3200) - 31, 32):
            chunk = texts[i:i + 32]
            a = time.perf_counter()
            await asyncio.gather(*(b.score(t) for t in chunk))
            conc.append((time.perf_counter() - a) / 32)
        return lone, conc

    lone, conc = asyncio.run(lone_and_concurrent())

    print(f"Complexity classifier benchmark: {platform.processor() or platform.machine()}, Python "
          f"{platform.python_version()}, onnxruntime {onnxruntime.__version__}, "
          f"{'pinned to core ' + str(args.cpu) if args.cpu >= 0 else 'not pinned'}, "
          f"model {scorer.version} ({size / 1024:.1f} KiB), prompt {len(PROMPT)} chars / {words} words (~200 tokens)")
    print()
    print("| measurement | p50 (ms) | p99 (ms) | n |")
    print("|---|---|---|---|")
    print(f"| onnxruntime import (once per process) | {t_import * 1e3:.1f} | | 1 |")
    print(f"| first model load in a process (word-vector table + sha256 checks + session) | {t_first * 1e3:.2f} | | 1 |")
    print(f"| word-vector table load ({wordvec.TABLE_PATH.stat().st_size / 1e6:.2f} MB) | {pct(table_loads, 50):.2f} | {pct(table_loads, 99):.2f} | {len(table_loads)} |")
    print(f"| model load (sha256 check + session) | {pct(loads, 50):.2f} | {pct(loads, 99):.2f} | {len(loads)} |")
    print(f"| single request, text -> score | {pct(single, 50):.3f} | {pct(single, 99):.3f} | {len(single)} |")
    print(f"| - of which features (Python/numpy) | {pct(feat, 50):.3f} | {pct(feat, 99):.3f} | {len(feat)} |")
    print(f"| - of which ONNX run | {pct(run, 50):.3f} | {pct(run, 99):.3f} | {len(run)} |")
    print(f"| batched 32, per request | {pct(batched, 50):.3f} | {pct(batched, 99):.3f} | {len(batched)} batches |")
    print(f"| MicroBatcher, lone request | {pct(lone, 50):.3f} | {pct(lone, 99):.3f} | {len(lone)} |")
    print(f"| MicroBatcher, 32 concurrent, per request | {pct(conc, 50):.3f} | {pct(conc, 99):.3f} | {len(conc)} batches |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
