"""``gateway eval``: router quality on the held-out test split (never trained on, never tuned on).

For each dataset / task family: APGR, CPT(50%), CPT(80%) of the model, of prompt length
(LengthScorer) and of a random router (exact expectation: a constant score, all prompts tied), with a
bootstrap 90 % interval for the model's APGR and for its difference to length. Then the cloud share
actually reached on the test split at the thresholds the metadata calibrated on the val split for target
shares 0.3 and 0.5.

The team that runs the gateway routes between other models than the training pair, so the llmrouter rows
are also scored against *other* weak/strong pairs from the same 9-model outcomes (OTHER_PAIRS: each 7-9B
model against each ~50B model; codegemma-7b is in no training target). Pairs whose gap on a subset is
below MIN_PAIR_GAP are skipped there: their APGR is noise. As a ceiling for routers that estimate how hard
a prompt is, each pair also gets a *difficulty oracle*: minus the mean score of the other models of
OTHER_PAIRS on that prompt (it knows the outcomes, but not the pair's own).

``--crossfit`` answers a different question with less noise: how good is the training *recipe*? The test
split's maths subset has 236 prompts on which the pair differs by a net ~17, so its APGR interval spans
~0.45. Cross-fitting scores all 7,108 prompts, each by models trained without it (5 folds, 3 fold seeds).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import data as D
from .base import LengthScorer
from .calibrate import share_at
from .metrics import apgr, cpt, pgr_curve
from .model import OnnxScorer

SMALL_MODELS = D.LLMROUTER_SMALL + ("codegemma-7b",)
PAIR_MODELS = SMALL_MODELS + D.LLMROUTER_BIG
OTHER_PAIRS = tuple((w, s) for w in SMALL_MODELS for s in D.LLMROUTER_BIG if (w, s) != (D.LLMROUTER_WEAK, D.LLMROUTER_STRONG))
MIN_PAIR_GAP = 0.05
OTHER_PAIR_ROWS = ("llmrouter (all 14 families)", "gsm8k+math", "group: math", "group: code", "group: multiple-choice")


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


def bootstrap_intervals(model: np.ndarray, length: np.ndarray, w: np.ndarray, s: np.ndarray, n_boot: int,
                        rng: np.random.Generator) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """90 % bootstrap intervals over prompts of the model's APGR and of its paired difference to length
    (None when fewer than half the resamples have a gap)."""
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
    def q(v):
        return (float(np.quantile(v, 0.05)), float(np.quantile(v, 0.95)))
    return q(a_m), q(a_d)


def _quality(examples: list[D.Example], s_model: np.ndarray, n_boot: int, seed: int) -> dict:
    """The per-subset rows (model, length, random; bootstrap intervals) and the other-pairs table."""
    s_len = np.array(LengthScorer().score_batch([e.text for e in examples]))
    s_rand = np.zeros(len(examples))
    w = np.array([e.weak for e in examples])
    st = np.array([e.strong for e in examples])
    rng = np.random.default_rng(seed)
    rows = []
    for name, note, idx in _rows(examples):
        wi, si = w[idx], st[idx]
        row = {"name": name, "note": note, "n": len(idx), "weak": float(wi.mean()), "strong": float(si.mean())}
        for key, sc in (("model", s_model[idx]), ("length", s_len[idx]), ("random", s_rand[idx])):
            row[key] = {"apgr": _safe(apgr, sc, wi, si), "cpt50": _safe(cpt, sc, wi, si, 0.5),
                        "cpt80": _safe(cpt, sc, wi, si, 0.8)}
        if n_boot and row["model"]["apgr"] is not None:
            row["model_ci"], row["diff_ci"] = bootstrap_intervals(s_model[idx], s_len[idx], wi, si, n_boot, rng)
        rows.append(row)
    return {"n_test": len(examples), "rows": rows, "other_pairs": _other_pairs(examples, s_model, s_len)}


def evaluate(model_path: str | None = None, data_dir: str | None = None, n_boot: int = 1000, seed: int = 0,
             log: Callable[[str], None] = print) -> dict:
    """The shipped (or given) model on the test split, and the cloud share its calibrated thresholds reach."""
    scorer = OnnxScorer(model_path)
    split_meta = scorer.metadata.get("training", {}).get("split", {})
    if split_meta.get("seed") not in (None, D.SPLIT_SEED) or list(split_meta.get("fractions", D.SPLIT_FRACTIONS)) != list(D.SPLIT_FRACTIONS):
        raise D.DataError("model was trained with another split seed/fractions: its test split is not held out here")
    data_path = Path(data_dir) if data_dir else D.default_data_dir()
    log(f"[eval] model {scorer.path} ({scorer.version}); data {data_path}")
    test = [e for e in D.load_all(data_path) if e.split == "test"]
    log(f"[eval] test split: {len(test)} prompts (never used for training, selection or calibration)")
    s_model = np.array(scorer.score_batch([e.text for e in test]))
    w = np.array([e.weak for e in test])
    st = np.array([e.strong for e in test])

    calib = []
    ds = np.array([e.dataset for e in test])
    for target in (0.3, 0.5):
        thr = scorer.threshold_for_share(target)
        entry = {"target": target, "threshold": thr, "reached_all": share_at(s_model, thr),
                 "reached": {d: share_at(s_model[ds == d], thr) for d in ("mmlu", "llmrouter")}}
        # PGR actually obtained at this threshold on each dataset
        for d in ("mmlu", "llmrouter"):
            m = ds == d
            _, p = pgr_curve(s_model[m], w[m], st[m])
            k = int(np.sum(s_model[m] >= thr))
            entry.setdefault("pgr", {})[d] = float(p[k])
        calib.append(entry)
    return {"model": str(scorer.path), "version": scorer.version, "subject": "test split",
            **_quality(test, s_model, n_boot, seed), "calibration": calib,
            "calibrated_on": scorer.metadata.get("calibration", {}).get("split", "?"),
            "default_threshold": scorer.default_threshold,
            "default_cloud_share": scorer.metadata.get("default_cloud_share")}


def evaluate_crossfit(data_dir: str | None = None, n_boot: int = 1000, seed: int = 0,
                      log: Callable[[str], None] = print) -> dict:
    """The training recipe, cross-fitted over all the data (every split): each prompt is scored by models
    trained without it (train.crossfit_scores). It measures the recipe rather than the shipped file, on
    four times the prompts of the test split, which the test split's small subsets need (see the module doc)."""
    from .train import crossfit_scores

    data_path = Path(data_dir) if data_dir else D.default_data_dir()
    examples = D.load_all(data_path)
    log(f"[eval] cross-fitting the training recipe over all {len(examples)} prompts of {data_path}")
    s_model = crossfit_scores(examples, log=log)
    return {"model": "training recipe (cross-fitted)", "version": "crossfit-5fold-x3",
            "subject": "all splits, out-of-fold", **_quality(examples, s_model, n_boot, seed)}


def _other_pairs(test: list[D.Example], s_model: np.ndarray, s_len: np.ndarray) -> list[dict]:
    """APGR of model and length on OTHER_PAIRS for the OTHER_PAIR_ROWS subsets (pairs with a gap >= MIN_PAIR_GAP)."""
    scores = [dict(e.scores) for e in test]
    out = []
    for name, _, idx in _rows(test):
        if name not in OTHER_PAIR_ROWS:
            continue
        pairs = []
        for wk, st in OTHER_PAIRS:
            keep = [i for i in idx if wk in scores[i] and st in scores[i]]
            wi = np.array([scores[i][wk] for i in keep])
            si = np.array([scores[i][st] for i in keep])
            if len(keep) == 0 or si.mean() - wi.mean() < MIN_PAIR_GAP:
                continue
            others = [m for m in PAIR_MODELS if m not in (wk, st)]
            oracle = [-np.mean([scores[i].get(m, 0.0) for m in others]) for i in keep]
            pairs.append({"weak": wk, "strong": st, "n": len(keep), "gap": float(si.mean() - wi.mean()),
                          "model": apgr(s_model[keep], wi, si), "length": apgr(s_len[keep], wi, si),
                          "oracle": apgr(oracle, wi, si)})
        out.append({"name": name, "pairs": pairs})
    return out


def _f(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def format_markdown(rep: dict) -> str:
    out = [f"Model `{rep['version']}`, {rep['subject']}: {rep['n_test']} prompts.", ""]
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
    out += ["", (f"Other model pairs of the llmrouter outcomes (each 7-9B model vs each ~50B model, without the "
            f"training pair; pairs with a gap below {MIN_PAIR_GAP} on the subset are skipped):"), "",
            "| subset | pairs | APGR model, mean [min, max] | APGR length, mean | model > length in | difficulty oracle, mean |",
            "|---|---|---|---|---|---|"]
    for r in rep["other_pairs"]:
        ps = r["pairs"]
        if not ps:
            out.append(f"| {r['name']} | 0 | n/a | n/a | n/a | n/a |")
            continue
        m = [p["model"] for p in ps]
        L = [p["length"] for p in ps]
        wins = sum(a > b for a, b in zip(m, L))
        out.append(f"| {r['name']} | {len(ps)} | **{np.mean(m):.3f}** [{min(m):.3f}, {max(m):.3f}] | {np.mean(L):.3f} | "
                   f"{wins} of {len(ps)} | {np.mean([p['oracle'] for p in ps]):.3f} |")
    out += ["", "Per pair, gsm8k+math:", "", "| weak → strong | n | gap | APGR model | APGR length | difficulty oracle |",
            "|---|---|---|---|---|---|"]
    for r in rep["other_pairs"]:
        if r["name"] == "gsm8k+math":
            for p in r["pairs"]:
                out.append(f"| {p['weak']} → {p['strong']} | {p['n']} | {p['gap']:.3f} | {p['model']:.3f} | "
                           f"{p['length']:.3f} | {p['oracle']:.3f} |")
    if "calibration" not in rep:
        return "\n".join(out)
    out += ["", (f"Cloud share reached on the test split at thresholds calibrated on the {rep['calibrated_on']} split "
            f"(default threshold {rep['default_threshold']:.4f} = target share {rep['default_cloud_share']}):"), "",
            "| target share | threshold | reached (all test) | reached mmlu | reached llmrouter | PGR mmlu | PGR llmrouter |",
            "|---|---|---|---|---|---|---|"]
    for c in rep["calibration"]:
        out.append(f"| {c['target']:.0%} | {c['threshold']:.4f} | {c['reached_all']:.1%} | {c['reached']['mmlu']:.1%} | "
                   f"{c['reached']['llmrouter']:.1%} | {c['pgr']['mmlu']:.3f} | {c['pgr']['llmrouter']:.3f} |")
    return "\n".join(out)
