"""``gateway eval``: router quality on the held-out test split (never trained on, never tuned on).

For each dataset / task family: APGR, CPT(50%), CPT(80%) of the model, of prompt length
(LengthScorer) and of a random router (exact expectation: a constant score, all prompts tied), with a
bootstrap 90 % interval for the model's APGR and for its difference to length. Then the cloud share
actually reached on the test split at the thresholds the metadata calibrated on the val split for target
shares 0.3 and 0.5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from . import data as D
from .base import LengthScorer
from .calibrate import share_at
from .metrics import apgr, cpt, pgr_curve
from .model import OnnxScorer

PUBLISHED = {"mmlu": 0.603, "gsm8k+math": 0.622}  # RouteLLM (ICLR 2025) best APGR, GPT-4 vs Mixtral


def _rows(test: list[D.Example]) -> list[tuple[str, str, np.ndarray]]:
    """(row name, note, index array) for every reported subset of the test split."""
    ds = np.array([e.dataset for e in test])
    task = np.array([e.task for e in test])
    rows = [
        ("mmlu", "RouteLLM MMLU, GPT-4 vs Mixtral", np.nonzero(ds == "mmlu")[0]),
        ("llmrouter (all 14 families)", "qwen2.5-7b vs nemotron-51b", np.nonzero(ds == "llmrouter")[0]),
        ("gsm8k+math", "llmrouter, GSM8K-like maths", np.nonzero(np.isin(task, ["gsm8k", "math"]) & (ds == "llmrouter"))[0]),
    ]
    for g, fams in D.FAMILY_GROUPS.items():
        rows.append((f"group: {g}", ", ".join(fams), np.nonzero(np.isin(task, fams) & (ds == "llmrouter"))[0]))
    for fam in sorted(set(task[ds == "llmrouter"])):
        rows.append((f"family: {fam}", "", np.nonzero((task == fam) & (ds == "llmrouter"))[0]))
    return [r for r in rows if len(r[2])]


def _safe(fn, *a) -> float | None:
    try:
        return fn(*a)
    except ValueError:
        return None


def _bootstrap(model: np.ndarray, length: np.ndarray, w: np.ndarray, s: np.ndarray, n_boot: int,
               rng: np.random.Generator) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    a_m, a_d = [], []
    n = len(w)
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        if abs(float(np.sum(s[i] - w[i]))) < 1e-9:
            continue
        m = apgr(model[i], w[i], s[i])
        a_m.append(m)
        a_d.append(m - apgr(length[i], w[i], s[i]))
    if len(a_m) < n_boot // 2:
        return None, None
    q = lambda v: (float(np.quantile(v, 0.05)), float(np.quantile(v, 0.95)))  # noqa: E731
    return q(a_m), q(a_d)


def evaluate(model_path: str | None = None, data_dir: str | None = None, n_boot: int = 1000, seed: int = 0,
             log: Callable[[str], None] = print) -> dict:
    scorer = OnnxScorer(model_path)
    split_meta = scorer.metadata.get("training", {}).get("split", {})
    if split_meta.get("seed") not in (None, D.SPLIT_SEED) or list(split_meta.get("fractions", D.SPLIT_FRACTIONS)) != list(D.SPLIT_FRACTIONS):
        raise D.DataError("model was trained with another split seed/fractions: its test split is not held out here")
    data_path = Path(data_dir) if data_dir else D.default_data_dir()
    log(f"[eval] model {scorer.path} ({scorer.version}); data {data_path}")
    examples = D.load_all(data_path)
    test = [e for e in examples if e.split == "test"]
    log(f"[eval] test split: {len(test)} prompts (never used for training, selection or calibration)")
    texts = [e.text for e in test]
    s_model = np.array(scorer.score_batch(texts))
    s_len = np.array(LengthScorer().score_batch(texts))
    s_rand = np.zeros(len(test))
    w = np.array([e.weak for e in test])
    st = np.array([e.strong for e in test])
    rng = np.random.default_rng(seed)

    rows = []
    for name, note, idx in _rows(test):
        wi, si = w[idx], st[idx]
        row = {"name": name, "note": note, "n": int(len(idx)), "weak": float(wi.mean()), "strong": float(si.mean())}
        for key, sc in (("model", s_model[idx]), ("length", s_len[idx]), ("random", s_rand[idx])):
            row[key] = {"apgr": _safe(apgr, sc, wi, si), "cpt50": _safe(cpt, sc, wi, si, 0.5),
                        "cpt80": _safe(cpt, sc, wi, si, 0.8)}
        if n_boot and row["model"]["apgr"] is not None:
            row["model_ci"], row["diff_ci"] = _bootstrap(s_model[idx], s_len[idx], wi, si, n_boot, rng)
        rows.append(row)

    calib = []
    ds = np.array([e.dataset for e in test])
    for target in (0.3, 0.5):
        thr = scorer.threshold_for_share(target)
        entry = {"target": target, "threshold": thr, "reached_all": share_at(s_model, thr),
                 "reached": {d: share_at(s_model[ds == d], thr) for d in ("mmlu", "llmrouter")}}
        # PGR actually obtained at this threshold on each dataset
        for d in ("mmlu", "llmrouter"):
            m = ds == d
            x, p = pgr_curve(s_model[m], w[m], st[m])
            k = int(np.sum(s_model[m] >= thr))
            entry.setdefault("pgr", {})[d] = float(p[k])
        calib.append(entry)
    return {"model": str(scorer.path), "version": scorer.version, "n_test": len(test), "rows": rows,
            "calibration": calib, "calibrated_on": scorer.metadata.get("calibration", {}).get("split", "?"),
            "default_threshold": scorer.default_threshold,
            "default_cloud_share": scorer.metadata.get("default_cloud_share")}


def _f(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def format_markdown(rep: dict) -> str:
    out = [f"Model `{rep['version']}`, test split: {rep['n_test']} prompts.", ""]
    out.append("| dataset | n | weak | strong | APGR model [90% CI] | APGR length | APGR random | "
               "model − length [90% CI] | CPT(50%) model / length / random | CPT(80%) model / length / random |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rep["rows"]:
        m, L, R = r["model"], r["length"], r["random"]
        ci = r.get("model_ci")
        dci = r.get("diff_ci")
        diff = (m["apgr"] - L["apgr"]) if m["apgr"] is not None and L["apgr"] is not None else None
        out.append(
            f"| {r['name']} | {r['n']} | {r['weak']:.3f} | {r['strong']:.3f} | "
            f"**{_f(m['apgr'])}** [{_f(ci[0]) if ci else 'n/a'}, {_f(ci[1]) if ci else 'n/a'}] | {_f(L['apgr'])} | "
            f"{_f(R['apgr'])} | {('+' if diff is not None and diff >= 0 else '') + _f(diff)} "
            f"[{_f(dci[0]) if dci else 'n/a'}, {_f(dci[1]) if dci else 'n/a'}] | "
            f"{_f(m['cpt50'], True)} / {_f(L['cpt50'], True)} / {_f(R['cpt50'], True)} | "
            f"{_f(m['cpt80'], True)} / {_f(L['cpt80'], True)} / {_f(R['cpt80'], True)} |"
        )
    out += ["", f"Cloud share reached on the test split at thresholds calibrated on the {rep['calibrated_on']} split "
            f"(default threshold {rep['default_threshold']:.4f} = target share {rep['default_cloud_share']}):", "",
            "| target share | threshold | reached (all test) | reached mmlu | reached llmrouter | PGR mmlu | PGR llmrouter |",
            "|---|---|---|---|---|---|---|"]
    for c in rep["calibration"]:
        out.append(f"| {c['target']:.0%} | {c['threshold']:.4f} | {c['reached_all']:.1%} | {c['reached']['mmlu']:.1%} | "
                   f"{c['reached']['llmrouter']:.1%} | {c['pgr']['mmlu']:.3f} | {c['pgr']['llmrouter']:.3f} |")
    return "\n".join(out)
