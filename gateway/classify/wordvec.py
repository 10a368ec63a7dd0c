"""Static word vectors: what a prompt is about and what it asks for, in microseconds.

The table (``model/wordvec.npz``, written offline by distill.py from all-MiniLM-L6-v2) maps ~21.7k
lower-case English words to PCA-reduced sentence-encoder vectors and a pooling weight. A prompt's vector is
the weighted mean of its known words' vectors, L2-normalised (zero if no word is known). No encoder runs
at serving time: a dict lookup per word and one small numpy reduction.

The table is loaded once, lazily, on first use (a few ms); :func:`table_sha256` identifies it, and the model
metadata records it so a model is never served with a table it was not trained with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

TABLE_PATH = Path(__file__).resolve().parent / "model" / "wordvec.npz"
DIMS = 64


class WordVectors:
    def __init__(self, path: Path = TABLE_PATH) -> None:
        blob = path.read_bytes()
        self.sha256 = hashlib.sha256(blob).hexdigest()
        with np.load(path, allow_pickle=False) as z:
            words = z["words"].tobytes().split(b"\n")
            vecs = z["vectors"].astype(np.float32)
            weights = z["weights"].astype(np.float32)
        if vecs.shape != (len(words), DIMS) or weights.shape != (len(words),):
            raise ValueError(f"word-vector table {path} has shape {vecs.shape}, expected ({len(words)}, {DIMS})")
        # Row len(words) is the unknown word: zero vector, zero weight.
        self.vectors = np.vstack([vecs * weights[:, None], np.zeros((1, DIMS), np.float32)])
        self.weights = np.append(weights, np.float32(0.0))
        self.index = {w: i for i, w in enumerate(words)}
        self.unknown = len(words)

    def embed_words(self, words: Sequence[bytes], out: np.ndarray) -> None:
        """Write the pooled vector of lower-case a-z byte words into `out` (length DIMS); zero if none known."""
        get, unk = self.index.get, self.unknown
        ids = [i for i in (get(w, unk) for w in words) if i != unk]
        if not ids:
            return
        v = self.vectors[ids].sum(axis=0)
        norm = float(np.sqrt(v @ v))
        if norm > 0:
            out[:] = v / norm


_TABLE: WordVectors | None = None


def table() -> WordVectors:
    global _TABLE
    if _TABLE is None:
        _TABLE = WordVectors()
    return _TABLE


def table_sha256() -> str:
    return table().sha256
