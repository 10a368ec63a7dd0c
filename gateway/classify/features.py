"""Feature extraction for the complexity classifier: text -> float32 vector (stdlib + numpy only).

Two blocks, concatenated:

1. ``N_DENSE`` hand-crafted task features that describe the *shape* of the task rather than its topic:
   length, digits and maths symbols, LaTeX, code markers, question words, reasoning cues ("prove", "step",
   "explain why"), multiple-choice options, constraints ("at least", "must", "exactly"), lists, language
   (non-ASCII, CJK, Cyrillic). Counts are log-compressed (``log1p``) or given as fractions.
2. ``N_HASH`` buckets of hashed lower-cased word unigrams and bigrams (CRC-32, so identical in every
   process), as ``log1p(count)`` then L2-normalised over the block.

The ONNX head (see train.py) takes this vector, so features computed here are the only Python step at
inference. Bump ``FEATURE_VERSION`` on any change: loading checks it against the model metadata.
"""

from __future__ import annotations

import math
import re
import zlib
from typing import Sequence

import numpy as np

FEATURE_VERSION = "hf1-d64-h4096"
HASH_BITS = 12
N_HASH = 1 << HASH_BITS
_HASH_MASK = N_HASH - 1

_WORD_RE = re.compile(r"[a-z]+|\d+|[^\sa-z\d]", re.ASCII)
_MC_RE = re.compile(r"(?m)^[ \t]*[\(\[]?([A-Ja-j])[\)\]\.:][ \t]+\S")
_NUMLIST_RE = re.compile(r"(?m)^[ \t]*(?:\d{1,2}[\.\)]|[-*\u2022])[ \t]+\S")
_CODELINE_RE = re.compile(r"(?m)^(?:    |\t)\S")

# Word cue groups (lower-case tokens as produced by _WORD_RE).
_CUES: dict[str, tuple[str, ...]] = {
    "qword": ("what", "who", "when", "where", "which", "whom", "whose"),
    "why_how": ("why", "how"),
    "reason": ("prove", "proof", "derive", "justify", "explain", "reason", "reasoning", "step", "steps",
               "show", "demonstrate", "deduce", "infer", "conclude", "therefore", "thus", "hence",
               "because", "implies", "suppose", "assume", "given", "if", "then"),
    "compute": ("calculate", "compute", "solve", "find", "evaluate", "simplify", "determine", "estimate",
                "how", "many", "much", "total", "sum", "product", "difference", "remainder", "percent",
                "ratio", "average", "probability", "expected"),
    "math_terms": ("equation", "integer", "integers", "prime", "function", "polynomial", "derivative",
                   "integral", "matrix", "vector", "triangle", "angle", "circle", "area", "perimeter",
                   "radius", "real", "roots", "root", "sqrt", "log", "sin", "cos", "frac", "mod", "digit",
                   "digits", "divisible", "factor", "factors", "sequence", "series", "limit", "group",
                   "field", "ring", "set", "subset", "graph", "variable", "value", "values", "x", "y", "n"),
    "code_kw": ("def", "return", "class", "import", "from", "self", "print", "lambda", "elif", "else",
                "for", "while", "in", "int", "str", "list", "dict", "none", "true", "false", "void",
                "public", "static", "const", "let", "var", "function", "null", "include", "std", "typing"),
    "code_task": ("write", "implement", "function", "program", "code", "script", "algorithm", "python",
                  "javascript", "java", "sql", "query", "regex", "array", "string", "bug", "debug",
                  "compile", "error", "api", "output", "input", "test", "tests", "assert", "refactor"),
    "constraint": ("must", "should", "exactly", "least", "most", "only", "without", "never", "always",
                   "ensure", "format", "words", "sentences", "paragraphs", "json", "bullet", "limit",
                   "maximum", "minimum", "within", "no", "not", "except", "unless", "each", "every", "all"),
    "creative": ("story", "poem", "essay", "write", "compose", "describe", "imagine", "creative",
                 "letter", "blog", "email", "article", "summarize", "summary", "rewrite", "translate"),
    "analysis": ("analyze", "analyse", "compare", "contrast", "evaluate", "discuss", "critique",
                 "assess", "argue", "implications", "tradeoffs", "pros", "cons", "design", "optimize",
                 "strategy", "plan"),
    "negation": ("not", "no", "never", "none", "neither", "nor", "cannot", "except", "false", "incorrect"),
    "mc_words": ("following", "which", "statement", "statements", "true", "false", "correct", "best",
                 "answer", "option", "options", "choice", "choices", "select"),
    "science": ("energy", "force", "mass", "cell", "cells", "gene", "protein", "molecule", "atom",
                "reaction", "acid", "chemical", "temperature", "velocity", "electron", "quantum",
                "organism", "species", "dna", "enzyme"),
    "social": ("law", "court", "legal", "contract", "defendant", "plaintiff", "government", "policy",
               "economic", "market", "price", "tax", "moral", "ethics", "society", "history", "war"),
    "pronoun_chat": ("i", "you", "me", "my", "your", "we", "please", "help", "can", "could", "would"),
    "logic": ("clue", "clues", "house", "houses", "left", "right", "next", "between", "directly",
              "puzzle", "each", "different", "person", "people"),
}
_CUE_NAMES = tuple(_CUES)
_CUE_INDEX: dict[str, tuple[int, ...]] = {}
for _gi, _name in enumerate(_CUE_NAMES):
    for _w in _CUES[_name]:
        _CUE_INDEX[_w] = _CUE_INDEX.get(_w, ()) + (_gi,)

_PHRASES = (
    "step by step", "explain why", "show that", "prove that", "at least", "at most", "no more than",
    "how many", "how much", "which of the following", "write a function", "write a program",
    "```", "\\boxed", "\\frac", "$", "answer:", "let's think",
)

# Byte classes for the histogram block.
def _byte_class_matrix() -> tuple[np.ndarray, tuple[str, ...]]:
    classes = {
        "digit": b"0123456789",
        "upper": bytes(range(65, 91)),
        "space": b" \t",
        "newline": b"\n",
        "math_sym": b"+-*/=^<>%",
        "brackets": b"()[]{}",
        "curly": b"{}",
        "code_sym": b";_#|&`~@",
        "punct": b".,!:;",
        "question": b"?",
        "quote": b"\"'",
        "backslash": b"\\",
        "dollar": b"$",
    }
    m = np.zeros((256, len(classes) + 3), dtype=np.float64)
    for j, chars in enumerate(classes.values()):
        for c in chars:
            m[c, j] = 1.0
    k = len(classes)
    m[128:, k] = 1.0          # any non-ASCII byte
    m[0xE3:0xEA, k + 1] = 1.0  # lead bytes of CJK / kana / hangul (3-byte UTF-8 U+3000..U+9FFF, roughly)
    m[0xD0:0xD2, k + 2] = 1.0  # lead bytes of Cyrillic
    return m, tuple(classes) + ("non_ascii", "cjk_lead", "cyrillic_lead")


_BYTE_M, _BYTE_NAMES = _byte_class_matrix()

DENSE_NAMES: tuple[str, ...] = (
    ("log_chars", "log_words", "log_lines", "avg_word_len", "log_long_words", "log_numbers",
     "log_mc_options", "has_mc", "log_list_items", "log_code_lines", "log_sentences", "frac_unique_words")
    + tuple(f"frac_{n}" for n in _BYTE_NAMES)
    + tuple(f"cue_{n}" for n in _CUE_NAMES)
    + tuple(f"phrase_{i}" for i in range(len(_PHRASES)))
)
N_DENSE = 64
assert len(DENSE_NAMES) <= N_DENSE, len(DENSE_NAMES)
DENSE_NAMES = DENSE_NAMES + tuple(f"pad_{i}" for i in range(N_DENSE - len(DENSE_NAMES)))
N_FEATURES = N_DENSE + N_HASH

_OFF_BYTES = 12
_OFF_CUES = _OFF_BYTES + len(_BYTE_NAMES)
_OFF_PHRASES = _OFF_CUES + len(_CUE_NAMES)

_log1p = math.log1p
_crc32 = zlib.crc32


def _fill(text: str, out: np.ndarray) -> None:
    """Write the features of `text` into the zeroed float32 row `out` (length N_FEATURES)."""
    lo = text.lower()
    raw = text.encode("utf-8", "surrogatepass")
    n_bytes = len(raw)
    toks = _WORD_RE.findall(lo)

    # --- hashed unigrams + bigrams, and cue counts, in one pass over the tokens
    counts: dict[int, int] = {}
    cue = [0] * len(_CUE_NAMES)
    n_words = 0
    n_long = 0
    n_num = 0
    word_chars = 0
    prev = 0
    cue_get = _CUE_INDEX.get
    for t in toks:
        h = _crc32(t.encode())
        c0 = t[0]
        if "a" <= c0 <= "z":
            n_words += 1
            lt = len(t)
            word_chars += lt
            if lt >= 9:
                n_long += 1
            gi = cue_get(t)
            if gi is not None:
                for g in gi:
                    cue[g] += 1
        elif "0" <= c0 <= "9":
            n_num += 1
            h = 0x5EED  # all numbers share one token: the value carries no task signal
        u = h & _HASH_MASK
        counts[u] = counts.get(u, 0) + 1
        b = ((prev * 0x9E3779B1) ^ h) >> 7 & _HASH_MASK
        counts[b] = counts.get(b, 0) + 1
        prev = h
    if counts:
        idx = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        val = np.log1p(np.fromiter(counts.values(), dtype=np.float32, count=len(counts)))
        val /= np.sqrt(np.dot(val, val))
        out[N_DENSE + idx] = val

    # --- dense block
    out[0] = _log1p(len(text))
    out[1] = _log1p(n_words)
    n_lines = text.count("\n") + 1
    out[2] = _log1p(n_lines)
    out[3] = (word_chars / n_words) / 10.0 if n_words else 0.0
    out[4] = _log1p(n_long)
    out[5] = _log1p(n_num)
    n_mc = len(_MC_RE.findall(text))
    out[6] = _log1p(n_mc)
    out[7] = 1.0 if n_mc >= 2 else 0.0
    out[8] = _log1p(len(_NUMLIST_RE.findall(text)))
    out[9] = _log1p(len(_CODELINE_RE.findall(text)))
    out[10] = _log1p(text.count(". ") + text.count("? ") + text.count("! ") + 1)
    out[11] = len(set(toks)) / len(toks) if toks else 0.0
    if n_bytes:
        hist = np.bincount(np.frombuffer(raw, dtype=np.uint8), minlength=256)
        out[_OFF_BYTES:_OFF_CUES] = (hist @ _BYTE_M) * (10.0 / n_bytes)
    for g, c in enumerate(cue):
        if c:
            out[_OFF_CUES + g] = _log1p(c)
    for i, p in enumerate(_PHRASES):
        c = lo.count(p)
        if c:
            out[_OFF_PHRASES + i] = _log1p(c)


def extract(text: str) -> np.ndarray:
    """Feature row (float32, shape (N_FEATURES,)) of one text."""
    out = np.zeros(N_FEATURES, dtype=np.float32)
    _fill(text, out)
    return out


def extract_batch(texts: Sequence[str]) -> np.ndarray:
    """Feature matrix (float32, shape (len(texts), N_FEATURES)); row i equals extract(texts[i])."""
    out = np.zeros((len(texts), N_FEATURES), dtype=np.float32)
    for i, t in enumerate(texts):
        _fill(t, out[i])
    return out
