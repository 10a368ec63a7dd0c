"""Feature extraction for the complexity classifier: text -> float32 vector (stdlib + numpy only).

Hand-crafted task features that describe the *shape* of the task rather than its topic: length, digits
and maths symbols, LaTeX, code markers, question words, reasoning cues ("prove", "step", "explain why"),
multiple-choice options, constraints ("at least", "must", "exactly"), lists, language (non-ASCII, CJK,
Cyrillic). Counts are log-compressed (``log1p``) or given as rates per 10 bytes. The shape features
memorise no word identities: an earlier variant with 4,096 hashed word uni/bigrams fitted the training
topics and did not rank better inside a task family, so it was dropped (see docs/classifier.md).

Version task-v2-71 adds a maths-gated block of 9 features (zero for prompts that do not look like a maths
problem): two gates (maths word problem or LaTeX; competition-style LaTeX) and their products with length,
number count, arithmetic operation words, sentence count and LaTeX command count, so the head can learn
that within maths these predict difficulty without changing how it ranks other prompts.

Version task-v3-71-wv64 appends the prompt's pooled static word vector (64 dimensions, wordvec.py,
distilled from all-MiniLM-L6-v2): the shape features say how the prompt is built, the word vector says
what it asks for ("prove", "design", "critique" vs "translate", "fix the typos", "summarise"). The
outcome MLP reads only the 71 shape columns; the chat head and the gate read all of them (train.py).

The ONNX head (see train.py) takes this vector, so the features computed here are the only Python step
at inference. Bump ``FEATURE_VERSION`` on any change: loading checks it against the model metadata.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from . import wordvec

FEATURE_VERSION = "task-v3-71-wv64"

# Line-start patterns, one pass: multiple-choice option ("A. ", "(b) ") or list item ("1. ", "- ").
_LINE_RE = re.compile(rb"(?m)^[ \t]*(?:([\(\[]?[A-Ja-j][\)\]\.:][ \t]+\S)|((?:\d{1,2}[\.\)]|[-*])[ \t]+\S))")
_CODELINE_RE = re.compile(rb"(?m)^(?:    |\t)\S")
_LATEX_CMD_RE = re.compile(rb"\\[a-zA-Z]+")
# bytes.translate tables: keep a-z (resp. 0-9), everything else becomes a space.
_ALPHA_ONLY = bytes(c if 97 <= c <= 122 else 32 for c in range(256))
_DIGIT_ONLY = bytes(c if 48 <= c <= 57 else 32 for c in range(256))

# Word cue groups (lower-cased a-z words). A group's feature is log1p(number of its distinct words present).
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
# Arithmetic word-problem operation words. Not a feature of its own: only used, counted like a cue group,
# inside the maths-gated block (see _fill).
_OPS_WORDS = (
    "times", "each", "per", "total", "remaining", "left", "twice", "half", "double", "triple", "more", "less",
    "fewer", "than", "every", "average", "cost", "costs", "spend", "spent", "pay", "pays", "paid", "earn",
    "earns", "earned", "profit", "sell", "sells", "sold", "buy", "buys", "bought", "rate", "hour", "hours",
    "minute", "minutes", "day", "days", "week", "weeks", "month", "months", "year", "years", "dollars",
    "dollar", "cents", "price", "percent", "remainder", "altogether", "together", "sum", "difference",
    "product", "quotient",
)
_OPS_GROUP = len(_CUE_NAMES)  # extra slot after the output cue groups
_CUE_INDEX: dict[bytes, tuple[int, ...]] = {}
for _gi, _name in enumerate(_CUE_NAMES):
    for _w in _CUES[_name]:
        _CUE_INDEX[_w.encode()] = _CUE_INDEX.get(_w.encode(), ()) + (_gi,)
for _w in _OPS_WORDS:
    _CUE_INDEX[_w.encode()] = _CUE_INDEX.get(_w.encode(), ()) + (_OPS_GROUP,)
_CUE_WORDS = frozenset(_CUE_INDEX)

_PHRASES = (
    "step by step", "explain why", "show that", "prove that", "at least", "at most", "no more than",
    "how many", "how much", "which of the following", "write a function", "write a program",
    "```", "\\boxed", "\\frac", "$", "answer:", "let's think",
)
_PHRASES_B = tuple(p.encode() for p in _PHRASES)

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
    + tuple(f"cues_{n}" for n in _CUE_NAMES)
    + tuple("phrase_" + (re.sub(r"[^a-z]+", "_", p).strip("_") or {"$": "dollar", "```": "fence"}.get(p, "sym"))
            for p in _PHRASES)
    # Maths-gated block (zero unless the prompt looks like a maths problem; see _fill). gate_math: no
    # multiple-choice options, and LaTeX / "$" or (>= 2 numbers and an arithmetic operation word);
    # gate_comp: no options, and LaTeX / "$" (competition style, MATH). The products let the head learn
    # that *within* maths, length, the number of quantities and operations predict difficulty.
    + ("gate_math", "gate_comp", "gm_log_chars", "gm_log_numbers", "gm_log_ops", "gc_log_chars",
       "gc_log_latex_cmds", "gm_log_words", "gm_log_sentences")
)
N_SHAPE = len(DENSE_NAMES)
assert N_SHAPE == 71, N_SHAPE  # FEATURE_VERSION names the width
# Task block: the pooled static word vector of the prompt (wordvec.py), after the 71 shape features.
DENSE_NAMES = DENSE_NAMES + tuple(f"wv_{i}" for i in range(wordvec.DIMS))
N_FEATURES = len(DENSE_NAMES)

_OFF_BYTES = 12
_OFF_CUES = _OFF_BYTES + len(_BYTE_NAMES)
_OFF_PHRASES = _OFF_CUES + len(_CUE_NAMES)
_OFF_MATH = _OFF_PHRASES + len(_PHRASES)
_OFF_WV = N_SHAPE

_log1p = math.log1p


def _fill(text: str, out: np.ndarray) -> None:
    """Write the features of `text` into the zeroed float32 row `out` (length N_FEATURES)."""
    raw = text.encode("utf-8", "surrogatepass")
    n_bytes = len(raw)
    lob = raw.lower()  # ASCII-only lower-casing
    words = lob.translate(_ALPHA_ONLY).split()
    n_words = len(words)
    if n_words > 64:
        lens = np.fromiter(map(len, words), dtype=np.int64, count=n_words)
        word_chars = int(lens.sum())
        n_long = int(np.count_nonzero(lens >= 9))
    else:  # short prompts, the common case: plain Python beats numpy's per-call cost
        lens = list(map(len, words))
        word_chars = sum(lens)
        n_long = sum(1 for n in lens if n >= 9)
    n_num = len(lob.translate(_DIGIT_ONLY).split())
    n_mc = n_list = 0
    for mc, _ in _LINE_RE.findall(raw):
        if mc:
            n_mc += 1
        else:
            n_list += 1

    out[0] = _log1p(len(text))
    out[1] = _log1p(n_words)
    out[2] = _log1p(raw.count(b"\n") + 1)
    out[3] = (word_chars / n_words) / 10.0 if n_words else 0.0
    out[4] = _log1p(n_long)
    out[5] = _log1p(n_num)
    out[6] = _log1p(n_mc)
    out[7] = 1.0 if n_mc >= 2 else 0.0
    out[8] = _log1p(n_list)
    out[9] = _log1p(len(_CODELINE_RE.findall(raw)))
    out[10] = _log1p(raw.count(b". ") + raw.count(b"? ") + raw.count(b"! ") + 1)
    out[11] = len(set(words)) / n_words if n_words else 0.0
    if n_bytes:
        hist = np.bincount(np.frombuffer(raw, dtype=np.uint8), minlength=256)
        out[_OFF_BYTES:_OFF_CUES] = (hist @ _BYTE_M) * (10.0 / n_bytes)
    # Cue groups: number of distinct cue words of each group present in the text.
    present = _CUE_WORDS.intersection(words)
    n_ops = 0
    if present:
        cue = [0] * (len(_CUE_NAMES) + 1)
        for w in present:
            for g in _CUE_INDEX[w]:
                cue[g] += 1
        n_ops = cue.pop()
        for g, c in enumerate(cue):
            if c:
                out[_OFF_CUES + g] = _log1p(c)
    for i, p in enumerate(_PHRASES_B):
        c = lob.count(p)
        if c:
            out[_OFF_PHRASES + i] = _log1p(c)
    # Maths-gated block.
    if n_mc < 2:
        n_latex = len(_LATEX_CMD_RE.findall(raw)) if b"\\" in raw else 0
        comp = n_latex > 0 or b"$" in raw
        if comp or (n_num >= 2 and n_ops):
            o = _OFF_MATH
            out[o] = 1.0
            out[o + 2] = out[0]
            out[o + 3] = out[5]
            out[o + 4] = _log1p(n_ops)
            out[o + 7] = out[1]
            out[o + 8] = out[10]
            if comp:
                out[o + 1] = 1.0
                out[o + 5] = out[0]
                out[o + 6] = _log1p(n_latex)
    _WV.embed_words(words, out[_OFF_WV:])


class _LazyTable:
    """The word-vector table, loaded on the first prompt rather than at import."""

    def embed_words(self, words: list[bytes], out: np.ndarray) -> None:
        global _WV
        _WV = wordvec.table()
        _WV.embed_words(words, out)


_WV: wordvec.WordVectors | _LazyTable = _LazyTable()


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
