"""`gateway learn` and `gateway classify --model DIR`: the exact CLI, learning on synthetic outcomes where the
truth depends on a prompt feature the shipped model does not weigh, the safe fallback to the prior, the
threshold set from unlabelled traffic, a self-contained model folder, and clear errors on bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gateway.classify import ClassifierLoadError, load_scorer
from gateway.classify.learn import LearnedScorer, fit_logistic
from gateway.classify.metrics import apgr
from gateway.classify.model import OnnxScorer

ROOT = Path(__file__).resolve().parent.parent
TOPICS = ("river", "mountain", "city", "garden", "ocean", "winter", "market", "train", "library", "forest",
          "bridge", "island", "harvest", "lantern", "festival", "desert", "harbor", "meadow", "castle", "storm")
FILLER = ("old", "quiet", "busy", "green", "small", "distant", "bright", "early", "golden", "hidden")


def _prompt(rng: np.random.Generator, creative: bool) -> str:
    words = " ".join(f"{rng.choice(FILLER)} {rng.choice(TOPICS)}" for _ in range(int(rng.integers(1, 6))))
    if creative:
        return f"Compose a short poem about the {words}."
    return f"Tell me the usual opening hours of the {words}."


def synthetic(n: int, seed: int, noise: float = 0.1) -> list[dict]:
    """Cloud is much better on poems and a little worse on the rest; `noise` of the labels are swapped."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        creative = bool(rng.random() < 0.5)
        flip = bool(rng.random() < noise)
        cloud_wins = creative != flip
        edge, cloud = (0.2, 0.9) if cloud_wins else (0.8, 0.7)
        rows.append({"prompt": _prompt(rng, creative), "edge_quality": edge, "cloud_quality": cloud,
                     "truth_creative": creative})
    return rows


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def gateway(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "gateway", *args], check=False, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def _classify(model: Path, rows: list[dict], tmp: Path) -> list[dict]:
    inp = _write(tmp / "in.jsonl", [{"prompt": r["prompt"]} for r in rows])
    out = tmp / "out.jsonl"
    res = gateway("classify", "--model", str(model), "--input", str(inp), "--output", str(out))
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == len(rows) and all(set(x) == {"score", "tier"} for x in lines)
    return lines


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("learn")
    fb = _write(tmp / "feedback.jsonl", synthetic(400, seed=1))
    traffic = _write(tmp / "traffic.jsonl", [{"prompt": r["prompt"]} for r in synthetic(1000, seed=2)])
    out = tmp / "model"
    res = gateway("learn", "--feedback", str(fb), "--output", str(out), "--traffic", str(traffic),
                  "--cloud-share", "0.3")
    assert res.returncode == 0, res.stderr
    return out


def test_learned_model_beats_the_prior_where_truth_depends_on_a_feature(learned, tmp_path):
    report = json.loads((learned / "report.json").read_text())
    assert report["chosen"] != "prior", report["reason"]
    cv = report["cross_validation"]["apgr"]
    assert cv[report["chosen"]] > cv["prior"] + 0.1
    test = synthetic(600, seed=3)
    w = np.array([r["edge_quality"] for r in test])
    s = np.array([r["cloud_quality"] for r in test])
    learned_scores = np.array([x["score"] for x in _classify(learned, test, tmp_path)])
    prior_scores = np.array(OnnxScorer().score_batch([r["prompt"] for r in test]))
    oracle = np.array([float(r["truth_creative"]) for r in test])  # the feature the truth depends on
    a_learned, a_prior, a_oracle = apgr(learned_scores, w, s), apgr(prior_scores, w, s), apgr(oracle, w, s)
    assert a_learned > a_prior + 0.3, (a_learned, a_prior)
    assert a_learned > a_oracle - 0.03, (a_learned, a_oracle)


def test_threshold_from_traffic_hits_the_share_on_new_traffic(learned, tmp_path):
    report = json.loads((learned / "report.json").read_text())
    assert report["calibration"]["source"] == "traffic" and report["calibration"]["n"] == 1000
    assert abs(report["calibration"]["share_reached"] - 0.3) < 0.02
    fresh = synthetic(1000, seed=4)
    tiers = [x["tier"] for x in _classify(learned, fresh, tmp_path)]
    assert abs(tiers.count("cloud") / len(tiers) - 0.3) <= 0.05


def test_model_folder_is_self_contained(learned, tmp_path):
    test = synthetic(50, seed=5)
    before = _classify(learned, test, tmp_path)
    moved = tmp_path / "elsewhere" / "m"
    shutil.copytree(learned, moved)
    assert (moved / "base" / "classifier.onnx").is_file() and (moved / "base" / "classifier.json").is_file()
    assert _classify(moved, test, tmp_path) == before
    scorer = load_scorer("onnx", str(moved))
    assert isinstance(scorer, LearnedScorer) and scorer.version.startswith("learned-")
    assert scorer.default_threshold == json.loads((moved / "learned.json").read_text())["default_threshold"]


def test_noise_labels_keep_the_prior(tmp_path):
    # Labels independent of the prompt. With this seed and the shipped model the best candidate gains
    # +0.02 cross-validated APGR over the prior, within one standard error: only the fallback test keeps the
    # prior. (Over 12 seeds of such noise, 6 keep the prior at one standard error; see docs/learning.md.)
    rng = np.random.default_rng(4)
    rows = [{"prompt": _prompt(rng, bool(rng.random() < 0.5)), "edge_quality": float(rng.random() < 0.4),
             "cloud_quality": float(rng.random() < 0.7)} for _ in range(400)]
    out = tmp_path / "m"
    res = gateway("learn", "--feedback", str(_write(tmp_path / "f.jsonl", rows)), "--output", str(out))
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["chosen"] == "prior", report
    assert report["cross_validation"]["fallback_test"]["apgr_gain"] > 0  # the z-test, not the sign, decided
    # Without --traffic the threshold is set on the feedback prompts at the default share.
    assert report["calibration"]["source"] == "feedback" and report["calibration"]["target_share"] == 0.3
    texts = [r["prompt"] for r in rows[:40]]
    learned = np.array(LearnedScorer(out).score_batch(texts))
    shipped = np.array(OnnxScorer().score_batch(texts))
    assert np.array_equal(np.argsort(learned, kind="stable"), np.argsort(shipped, kind="stable"))


@pytest.mark.parametrize("content,needle", [
    ('{"prompt": "a", "edge_quality": 0.5}\n', 'line 1: missing "cloud_quality"'),
    ('{"prompt": "a", "edge_quality": 0.5, "cloud_quality": 1.5}\n', '"cloud_quality" must be a number in [0, 1]'),
    ('{"prompt": 3, "edge_quality": 0.5, "cloud_quality": 1}\n', '"prompt" must be a string'),
    ('{"prompt": "a", "edge_quality": 0.5, "cloud_quality": 1}\nnot json\n', "line 2: not valid JSON"),
    ("\n", "no feedback lines"),
])
def test_bad_feedback_exits_2_with_a_clear_error(tmp_path, content, needle):
    fb = tmp_path / "f.jsonl"
    fb.write_text(content)
    res = gateway("learn", "--feedback", str(fb), "--output", str(tmp_path / "m"))
    assert res.returncode == 2 and needle in res.stderr, res.stderr
    assert not (tmp_path / "m" / "learned.json").exists()


def test_too_few_informative_labels_keep_the_prior(tmp_path):
    rows = synthetic(30, seed=6)
    for r in rows[:15]:
        r["cloud_quality"] = r["edge_quality"]  # ties carry no information
    res = gateway("learn", "--feedback", str(_write(tmp_path / "f.jsonl", rows)), "--output", str(tmp_path / "m"))
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert report["chosen"] == "prior" and report["informative"] < 20 and "at least 20" in report["reason"]
    assert "at least 20" in res.stderr


def test_bad_arguments_exit_2(tmp_path):
    fb = _write(tmp_path / "f.jsonl", synthetic(40, seed=8))
    res = gateway("learn", "--feedback", str(fb), "--output", str(tmp_path / "m"), "--cloud-share", "1.5")
    assert res.returncode == 2 and "--cloud-share" in res.stderr
    res = gateway("learn", "--feedback", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "m"))
    assert res.returncode == 2 and "cannot read" in res.stderr
    bad_traffic = tmp_path / "t.jsonl"
    bad_traffic.write_text('{"text": "x"}\n')
    res = gateway("learn", "--feedback", str(fb), "--output", str(tmp_path / "m"), "--traffic", str(bad_traffic))
    assert res.returncode == 2 and 'missing "prompt"' in res.stderr
    res = gateway("learn", "--output", str(tmp_path / "m"))
    assert res.returncode == 2 and "--feedback" in res.stderr


def test_damaged_model_folder_is_a_load_error(learned, tmp_path):
    broken = tmp_path / "m"
    shutil.copytree(learned, broken)
    (broken / "base" / "classifier.onnx").write_bytes(b"not a model")
    with pytest.raises(ClassifierLoadError, match="base model"):
        LearnedScorer(broken)
    res = gateway("classify", "--model", str(broken), "--input", str(_write(tmp_path / "i.jsonl", [{"prompt": "x"}])),
                  "--output", str(tmp_path / "o.jsonl"))
    assert res.returncode == 1 and "base model" in res.stderr
    meta = json.loads((learned / "learned.json").read_text())
    meta["head"]["coef"] = meta["head"]["coef"][:3] if meta["head"]["kind"] == "stacked" else [1.0]
    meta["head"]["kind"] = "stacked"
    shutil.copytree(learned / "base", broken / "base", dirs_exist_ok=True)
    (broken / "learned.json").write_text(json.dumps(meta))
    with pytest.raises(ClassifierLoadError, match="malformed"):
        LearnedScorer(broken)


def test_fit_logistic_reaches_the_penalised_optimum():
    rng = np.random.default_rng(0)
    n, d = 300, 4
    z = rng.normal(size=(n, d))
    lp = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(0.5 * lp + z[:, 0])))).astype(float)
    w = rng.random(n) + 0.1
    beta = fit_logistic(lp, z, y, w, penalty=5.0)
    a = np.hstack([np.ones((n, 1)), lp[:, None], z])
    p = 1 / (1 + np.exp(-(a @ beta)))
    pen = np.array([1e-6 * w.sum()] * 2 + [5.0] * d)
    grad = a.T @ (w * (p - y)) + pen * beta
    assert np.max(np.abs(grad)) < 1e-6
    assert beta[2] > 0.3  # the informative feature is found
