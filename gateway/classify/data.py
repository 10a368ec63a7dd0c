"""Outcome data for training and evaluating the complexity classifier.

Reads the public per-prompt outcome sets, shipped gzipped in the repository's data/outcomes (or a folder in
the original layout given with --data / GATEWAY_CLASSIFY_DATA):

- ``routellm-evals/mmlu_train_1500.csv``: MMLU prompts, GPT-4-1106 (strong) vs Mixtral-8x7B (weak), 0/1 correct.
- ``llmrouter-9model/dcrouter_train.json`` joined on question text with ``default_query_train.jsonl`` for the
  task family: 14 task families, 9 models scored 0..1; the pair is chosen by name (default weak
  ``qwen2.5-7b-instruct``, strong ``llama-3.1-nemotron-51b-instruct``).

Each row becomes an :class:`Example` with the prompt text, the weak and strong scores, the dataset name,
the task family and a split ("train", "val", "test") given by a seeded hash of the prompt text, so a
prompt always lands in the same split whatever else is in the data.
"""

from __future__ import annotations

import ast
import csv
import gzip
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

LLMROUTER_WEAK = "qwen2.5-7b-instruct"
LLMROUTER_STRONG = "llama-3.1-nemotron-51b-instruct"
# Training target on llmrouter, to denoise the single pair: half the pair's gain, half the gain of the
# two large models over the four 7-9B instruction models (all scored on the same prompt).
LLMROUTER_SMALL = ("qwen2.5-7b-instruct", "llama-3.1-8b-instruct", "gemma-2-9b-it", "mistral-7b-instruct-v0.3")
LLMROUTER_BIG = ("llama-3.1-nemotron-51b-instruct", "llama-3.3-nemotron-super-49b-v1")
# Families trained on the multi-model gain alone: the pair's own gain there is tiny (a net 20 of 768 dev
# prompts) and ranks maths prompts unlike every other pair does (docs/classifier.md, "Maths target").
MULTI_ONLY_TASKS = ("gsm8k", "math")
ROUTELLM_WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
ROUTELLM_STRONG = "gpt-4-1106-preview"

SPLIT_SEED = "gw-classify-split-v1"
# Fractions of the hash space: [0, train) train, [train, train+val) val (calibration, model selection), rest test.
SPLIT_FRACTIONS = (0.6, 0.15, 0.25)

# Task families grouped for reporting.
FAMILY_GROUPS = {
    "math": ("gsm8k", "math", "agentverse-mgsm"),
    "code": ("mbpp", "human_eval"),
    "multiple-choice": ("mmlu", "gpqa", "arc_challenge", "openbook_qa", "commonsense_qa", "agentverse-logicgrid"),
    "open QA": ("natural_qa", "trivia_qa"),
    "generation": ("commongen",),
}


TARGET_DESCRIPTION = (
    "soft gain in [-1, 1]: RouteLLM MMLU: correct(GPT-4) - correct(Mixtral); llmrouter: 0.5 * (score(strong) - "
    "score(weak)) + 0.5 * (mean score of " + ", ".join(LLMROUTER_BIG) + " - mean score of "
    + ", ".join(LLMROUTER_SMALL) + "); on " + ", ".join(MULTI_ONLY_TASKS) + " the second (multi-model) term alone"
)


class DataError(Exception):
    """The outcome data is missing or not in the expected shape."""


@dataclass(frozen=True)
class Example:
    text: str
    weak: float
    strong: float
    dataset: str  # "mmlu" (RouteLLM) or "llmrouter"
    task: str     # MMLU subject or llmrouter task family
    split: str
    target: float  # training target in [-1, 1] (see TARGET_DESCRIPTION)
    scores: tuple[tuple[str, float], ...] = ()  # llmrouter: every model's score, for evaluation on other pairs

    @property
    def gain(self) -> float:
        return self.strong - self.weak

    @property
    def multi_gain(self) -> float:
        """Mean score of LLMROUTER_BIG minus mean of LLMROUTER_SMALL (the pair's gain where unknown)."""
        return multi_model_gain(dict(self.scores), self.gain)


def multi_model_gain(scores: dict[str, float], default: float) -> float:
    """Mean score of LLMROUTER_BIG minus mean of LLMROUTER_SMALL; `default` when one of them has no score."""
    if any(m not in scores for m in LLMROUTER_BIG + LLMROUTER_SMALL):
        return default
    return (sum(scores[m] for m in LLMROUTER_BIG) / len(LLMROUTER_BIG)
            - sum(scores[m] for m in LLMROUTER_SMALL) / len(LLMROUTER_SMALL))


def default_data_dir() -> Path:
    """``$GATEWAY_CLASSIFY_DATA`` or the repository's ``data/outcomes`` (gzipped copies, see data/SOURCE.md)."""
    env = os.environ.get("GATEWAY_CLASSIFY_DATA")
    if env:
        return Path(env)
    repo_root = Path(__file__).resolve().parents[2]
    return repo_root / "data" / "outcomes"


def find_file(data_dir: Path, rel: str) -> Path | None:
    """A data file in either layout: ``DIR/rel`` (the original folders) or ``DIR/<name>[.gz]`` (data/outcomes)."""
    for cand in (data_dir / rel, data_dir / (rel + ".gz"), data_dir / Path(rel).name, data_dir / (Path(rel).name + ".gz")):
        if cand.is_file():
            return cand
    return None


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8", newline="") if path.suffix == ".gz" else path.open(encoding="utf-8", newline="")


def _need(data_dir: Path, rel: str) -> Path:
    p = find_file(data_dir, rel)
    if p is None:
        raise DataError(f"missing {data_dir / rel} (or {Path(rel).name}[.gz]; set --data or GATEWAY_CLASSIFY_DATA)")
    return p


def split_of(text: str, seed: str = SPLIT_SEED, fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> str:
    h = hashlib.sha256((seed + "\x00" + text).encode("utf-8")).digest()
    u = int.from_bytes(h[:8], "big") / 2.0**64
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "val"
    return "test"


def _format_choices(raw: str | None) -> list[tuple[str, str]]:
    """Parse the llmrouter ``choices`` field (a Python literal) into (label, text) pairs."""
    if not raw:
        return []
    try:
        val = ast.literal_eval(raw) if isinstance(raw, str) else raw
    except (ValueError, SyntaxError):
        return []
    if isinstance(val, dict):
        texts = val.get("text") or []
        labels = val.get("label") or val.get("labels") or []
    elif isinstance(val, list):
        texts, labels = val, []
    else:
        return []
    labels = list(labels) or [chr(ord("A") + i) for i in range(len(texts))]
    return [(str(lab), str(t)) for lab, t in zip(labels, texts)]


def llmrouter_prompt(query: str, metric: str | None, choices: str | None) -> str:
    """The prompt as a model would see it: multiple-choice options are appended as "A. ..." lines
    (the dataset stores them apart from the question; the scored models were shown them)."""
    if metric == "em_mc":
        opts = _format_choices(choices)
        if opts:
            return query.rstrip() + "\n" + "\n".join(f"{lab}. {t}" for lab, t in opts) + "\nAnswer:"
    return query


def load_mmlu(data_dir: Path) -> list[Example]:
    path = _need(data_dir, "routellm-evals/mmlu_train_1500.csv")
    out = []
    with _open_text(path) as f:
        for row in csv.DictReader(f):
            text = row["prompt"]
            weak = 1.0 if row[ROUTELLM_WEAK].strip() == "True" else 0.0
            strong = 1.0 if row[ROUTELLM_STRONG].strip() == "True" else 0.0
            out.append(Example(text, weak, strong, "mmlu", row["subject"], split_of(text), strong - weak))
    return out


def load_llmrouter(data_dir: Path, weak: str = LLMROUTER_WEAK, strong: str = LLMROUTER_STRONG) -> list[Example]:
    scores_path = _need(data_dir, "llmrouter-9model/dcrouter_train.json")
    query_path = _need(data_dir, "llmrouter-9model/default_query_train.jsonl")
    meta: dict[str, dict] = {}
    with _open_text(query_path) as f:
        for line in f:
            if line.strip():
                q = json.loads(line)
                meta.setdefault(q["query"], q)
    with _open_text(scores_path) as f:
        rows = json.load(f)
    out = []
    for r in rows:
        q = meta.get(r["question"])
        if q is None:
            continue
        sc = r["scores"]
        if weak not in sc or strong not in sc:
            raise DataError(f"model {weak!r} or {strong!r} not in llmrouter scores ({sorted(sc)})")
        text = llmrouter_prompt(r["question"], q.get("metric"), q.get("choices"))
        w, s = float(sc[weak]), float(sc[strong])
        multi = multi_model_gain({m: float(v) for m, v in sc.items()}, s - w)
        target = multi if q["task_name"] in MULTI_ONLY_TASKS else 0.5 * (s - w) + 0.5 * multi
        out.append(Example(text, w, s, "llmrouter", q["task_name"], split_of(text), target,
                           tuple(sorted((m, float(v)) for m, v in sc.items()))))
    return out


def load_all(data_dir: str | os.PathLike | None = None) -> list[Example]:
    d = Path(data_dir) if data_dir else default_data_dir()
    if not d.is_dir():
        raise DataError(f"data folder {d} not found (set --data or GATEWAY_CLASSIFY_DATA)")
    return load_mmlu(d) + load_llmrouter(d)


def family_group(task: str) -> str:
    for g, tasks in FAMILY_GROUPS.items():
        if task in tasks:
            return g
    return "other"


def source_files(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Name, size and sha256 of each data file read (recorded in the model metadata)."""
    d = Path(data_dir) if data_dir else default_data_dir()
    out = []
    for rel in ("routellm-evals/mmlu_train_1500.csv", "llmrouter-9model/dcrouter_train.json",
                "llmrouter-9model/default_query_train.jsonl"):
        p = find_file(d, rel)
        if p is not None:
            out.append({"file": p.name, "bytes": p.stat().st_size,
                        "sha256": hashlib.sha256(p.read_bytes()).hexdigest()})
    return out
