"""The learning loop, simulated end to end through the real gateway: APGR and cloud share against outcomes.

A pair's recorded per-prompt outcomes (llmrouter data, a pair the shipped classifier was not trained on) are
replayed as traffic. The gateway runs as a subprocess on loopback with two mock upstreams, an edge and a cloud
model, that answer each prompt with the quality that model was recorded to reach on it ("recorded quality
0.8125"). Three ways to collect outcomes (`--labels`):

- `shadow`: the policy's `feedback.shadow` (rate 1) sends each routed prompt to the other tier too, after the
  client was answered, and a mock judge compares the two answers (both orders) by their recorded qualities;
- `both`: the client rates every answer with POST /v1/feedback (the quality written in it), asks the other
  tier for the same prompt (the model pinned by name) and rates that answer too;
- `answered`: the client rates only the answer it got, and `gateway learn` fills in the other tier with that
  tier's mean.

At each stage of K rated prompts (K = 0, 50, 100, 200, 400) it runs
`gateway learn --from-store OUTCOMES --traffic T --cloud-share 0.3` on the gateway's own outcome file (the
outcomes of the rated prompts' requests: the live requests below are shadowed too, and left out), scores
the held-out slice with the candidate (`gateway classify --model DIR`), and asks the gateway to promote it
(POST /admin/classifier/promote, the safe check: it must win on 300 judged prompts held back from everything
else). The gateway then routes 300 unlabelled requests (real chat requests: they fill the share dial of
`classifier.hold_window`) and scores a fixed held-out slice with /admin/explain: APGR of the running
classifier's scores (RouteLLM protocol) and the share of the slice it sends to the cloud tier. Stage 0 is the
shipped classifier.

Prompts are split (disjoint, seeded) from the 2,222 llmrouter prompts outside the shipped model's training
split: the rated stream, the judged prompts of the promotion check, 800 unlabelled traffic prompts (the
threshold of `gateway learn` and the live requests), and the held-out slice.

    PYTHONPATH=$PWD python bench/simulate_learning.py [--pair EDGE CLOUD] [--labels shadow both answered]
        [--stages 0 50 100 200 400] [--heldout 500] [--seeds 3] [--hold-window 500]
        [--png docs/learning-curve.png] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from aiohttp import web

from gateway.classify import data as D
from gateway.classify.base import LengthScorer
from gateway.classify.metrics import apgr

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "sim-admin-key"
SHARE = 0.3
N_JUDGED = 300
N_TRAFFIC = 800
N_LIVE = 300  # unlabelled requests the gateway routes before each measurement (they fill the share dial)
_QUALITY = re.compile(r"recorded quality ([0-9.]+)")

POLICY = """
version: 1
models:
  edge-sim: {{tier: edge, litellm: {{model: openai/edge-sim, api_base: "http://127.0.0.1:{edge}/v1", api_key: sim}}}}
  cloud-sim: {{tier: cloud, litellm: {{model: openai/cloud-sim, api_base: "http://127.0.0.1:{cloud}/v1", api_key: sim}}}}
  judge-sim: {{tier: cloud, litellm: {{model: openai/judge-sim, api_base: "http://127.0.0.1:{judge}/v1", api_key: sim}}}}
classifier: {{kind: onnx, cloud_share: {share}{hold}}}
feedback: {{store_prompts: true, implicit: false{shadow}}}
routes:
  - name: auto
    when: {{model: auto}}
    simple: [edge-sim, cloud-sim]
    complex: [cloud-sim, edge-sim]
retry: {{attempts: 1}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RecordedUpstream:
    """An OpenAI-compatible chat upstream that answers each prompt with its recorded quality for one model."""

    def __init__(self, name: str, quality: dict[str, float]) -> None:
        self.name, self.quality, self.port = name, quality, _free_port()
        self.calls = 0
        self._ready = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        self._ready.wait(10)

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        self.calls += 1
        q = self.quality.get(prompt)
        text = f"{self.name} answer, recorded quality {q:.6f}" if q is not None else f"{self.name}: unknown prompt"
        return web.json_response({
            "id": f"sim-{self.calls}", "object": "chat.completion", "created": int(time.time()), "model": self.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": max(1, len(prompt) // 4), "completion_tokens": 8,
                      "total_tokens": max(1, len(prompt) // 4) + 8}})

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        loop.run_forever()


class RecordedJudge(RecordedUpstream):
    """The judge of the shadow comparisons: prefers the answer whose recorded quality is higher (tie when equal)."""

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        user = body["messages"][-1]["content"]
        self.calls += 1
        a = _QUALITY.search(user.split("[Answer A]", 1)[-1].split("[Answer B]", 1)[0])
        b = _QUALITY.search(user.split("[Answer B]", 1)[-1])
        if a is None or b is None:
            verdict = "I cannot tell."
        else:
            qa, qb = float(a.group(1)), float(b.group(1))
            verdict = "A" if qa > qb else "B" if qb > qa else "tie"
        return web.json_response({
            "id": f"judge-{self.calls}", "object": "chat.completion", "created": int(time.time()), "model": self.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": verdict}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(user) // 4, "completion_tokens": 1, "total_tokens": len(user) // 4 + 1}})


def _stream_outcomes(path: Path, ids: set[str]) -> list[bytes]:
    """The stored outcomes of the rated stream's requests (not of the unlabelled live requests, which the
    shadow comparisons sample too)."""
    if not path.is_file():
        return []
    return [line for line in path.read_bytes().splitlines() if json.loads(line).get("request_id") in ids]


def _wait_shadow(path: Path, ids: set[str], timeout: float = 60.0) -> int:
    """Shadow comparisons run after the answers: wait until each of `ids` has its outcome."""
    deadline = time.monotonic() + timeout
    while len(have := _stream_outcomes(path, ids)) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(have)


class GatewayProcess:
    def __init__(self, policy: str, tmp: Path, outcomes: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        (tmp / "policy.yaml").write_text(policy)
        env = {**os.environ, "GATEWAY_ADMIN_KEY": ADMIN, "GATEWAY_LOG_REQUESTS": "false",
               "GATEWAY_OUTCOMES_PATH": str(outcomes), "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self._log = open(tmp / "gateway.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--policy", str(tmp / "policy.yaml"),
                                      "--port", str(self.port)], cwd=ROOT, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited: {(tmp / 'gateway.log').read_text()[-3000:]}")
            try:
                if httpx.get(self.base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.client = httpx.Client(base_url=self.base, timeout=60)
        self.admin = {"Authorization": f"Bearer {ADMIN}"}

    def ask(self, prompt: str, model: str) -> tuple[str, str, float]:
        """(request id, tier that answered, recorded quality written in the answer)."""
        r = self.client.post("/v1/chat/completions", json={"model": model,
                                                           "messages": [{"role": "user", "content": prompt}]})
        r.raise_for_status()
        found = _QUALITY.search(r.json()["choices"][0]["message"]["content"])
        if found is None:
            raise RuntimeError(f"the mock did not know the prompt: {r.text[:200]}")
        return r.headers["x-request-id"], r.headers["x-gateway-tier"], float(found.group(1))

    def rate(self, request_id: str, score: float) -> None:
        self.client.post("/v1/feedback", json={"request_id": request_id, "score": score}).raise_for_status()

    def explain(self, prompt: str) -> dict:
        r = self.client.post("/admin/explain", headers=self.admin,
                             json={"model": "auto", "messages": [{"role": "user", "content": prompt}]})
        r.raise_for_status()
        return r.json()

    def promote(self, model_dir: Path, holdout: Path) -> dict:
        """The gateway's safe promotion: the candidate replaces the running classifier only if it wins on
        the judged prompts (policy margin and bootstrap interval)."""
        r = self.client.post("/admin/classifier/promote", headers=self.admin,
                             json={"model": str(model_dir), "holdout": str(holdout)})
        if r.status_code != 200:
            raise RuntimeError(f"promotion failed ({r.status_code}): {r.text}")
        return r.json()

    def status(self) -> dict:
        return self.client.get("/admin/status", headers=self.admin).json()

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def _gateway(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT, capture_output=True, text=True,
                          check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"gateway {args[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _ci(scores: np.ndarray, w: np.ndarray, s: np.ndarray, rng, n_boot: int = 300) -> list[float]:
    vals = []
    for _ in range(n_boot):
        i = rng.integers(0, len(w), len(w))
        if float(np.sum(s[i] - w[i])) > 1e-9:
            vals.append(apgr(scores[i], w[i], s[i]))
    return [float(np.quantile(vals, 0.05)), float(np.quantile(vals, 0.95))]


def simulate(pair: tuple[str, str], stages: list[int], n_heldout: int, labels: str, seed: int, hold_window: int,
             log) -> dict:
    weak, strong = pair
    pool = [e for e in D.load_llmrouter(D.default_data_dir()) if e.split != "train"]
    pool = [e for e in pool if weak in dict(e.scores) and strong in dict(e.scores)]
    # One recorded outcome per prompt text (a handful of texts repeat in the data).
    unique = list({e.text: e for e in pool}.values())
    rng = np.random.default_rng(seed)
    order = [unique[i] for i in rng.permutation(len(unique))]
    n_stream = max(stages)
    need = n_stream + N_JUDGED + N_TRAFFIC + n_heldout
    if need > len(order):
        raise SystemExit(f"{need} prompts needed, {len(order)} available")
    stream = order[:n_stream]
    judged = order[n_stream:n_stream + N_JUDGED]
    traffic = order[n_stream + N_JUDGED:n_stream + N_JUDGED + N_TRAFFIC]
    heldout = order[n_stream + N_JUDGED + N_TRAFFIC:need]
    edge_q = {e.text: dict(e.scores)[weak] for e in order}
    cloud_q = {e.text: dict(e.scores)[strong] for e in order}
    w = np.array([edge_q[e.text] for e in heldout])
    s = np.array([cloud_q[e.text] for e in heldout])
    length_apgr = apgr(np.array(LengthScorer().score_batch([e.text for e in heldout])), w, s)
    log(f"{weak} -> {strong}: {len(unique)} prompts; held-out gap {float(np.mean(s - w)):.3f}, "
        f"length APGR {length_apgr:.3f}")

    edge = RecordedUpstream("edge-sim", edge_q)
    cloud = RecordedUpstream("cloud-sim", cloud_q)
    judge = RecordedJudge("judge-sim", {})
    rows = []
    with tempfile.TemporaryDirectory(prefix="simulate-learning-") as tmp_name:
        tmp = Path(tmp_name)
        outcomes = tmp / "outcomes.jsonl"
        _write(tmp / "traffic.jsonl", [{"prompt": e.text} for e in traffic])
        _write(tmp / "heldout.jsonl", [{"prompt": e.text} for e in heldout])
        _write(tmp / "judged.jsonl", [{"prompt": e.text, "edge_quality": edge_q[e.text],
                                       "cloud_quality": cloud_q[e.text]} for e in judged])
        hold = f", hold_window: {hold_window}" if hold_window else ""
        shadow = ", shadow: {rate: 1.0, daily_budget_usd: 1000, judge: judge-sim}" if labels == "shadow" else ""
        gw = GatewayProcess(POLICY.format(edge=edge.port, cloud=cloud.port, judge=judge.port, share=SHARE, hold=hold,
                                          shadow=shadow), tmp, outcomes)
        started = time.perf_counter()
        try:
            rated = 0
            answered_cloud = 0
            stream_ids: set[str] = set()
            for k in sorted(set(stages)):
                t0 = time.perf_counter()
                while rated < k:  # traffic until k prompts are rated
                    prompt = stream[rated].text
                    rid, tier, quality = gw.ask(prompt, "auto")
                    answered_cloud += tier == "cloud"
                    rated += 1
                    stream_ids.add(rid)
                    if labels == "shadow":  # the gateway compares, the mock judge decides
                        if rated % 32 == 0 or rated == k:  # well under the shadow queue's limit
                            _wait_shadow(outcomes, stream_ids)
                        continue
                    gw.rate(rid, quality)
                    if labels == "both":  # the other tier's answer to the same prompt, judged
                        rid, _, quality = gw.ask(prompt, "edge-sim" if tier == "cloud" else "cloud-sim")
                        stream_ids.add(rid)
                        gw.rate(rid, quality)
                t_traffic = time.perf_counter() - t0
                stored = _stream_outcomes(outcomes, stream_ids)
                row: dict = {"outcomes": k, "stream_cloud_share": answered_cloud / rated if rated else None,
                             "stored_outcomes": len(stored)}
                t1 = time.perf_counter()
                if k > 0:
                    model_dir = tmp / f"learned-{k}"
                    (tmp / "stream-outcomes.jsonl").write_bytes(b"".join(x + b"\n" for x in stored))
                    out = _gateway("learn", "--from-store", str(tmp / "stream-outcomes.jsonl"), "--output",
                                   str(model_dir), "--traffic",
                                   str(tmp / "traffic.jsonl"), "--cloud-share", str(SHARE))
                    row["head"] = json.loads(out.strip().splitlines()[-1])["chosen"]
                    _gateway("classify", "--model", str(model_dir), "--input", str(tmp / "heldout.jsonl"),
                             "--output", str(tmp / "scored.jsonl"))
                    scored = [json.loads(x) for x in (tmp / "scored.jsonl").read_text().splitlines()]
                    cand = np.array([x["score"] for x in scored])
                    row["candidate"] = {"apgr": apgr(cand, w, s),
                                        "share": float(np.mean([x["tier"] == "cloud" for x in scored]))}
                    verdict = gw.promote(model_dir, tmp / "judged.jsonl")
                    row["promotion"] = {x: verdict[x] for x in ("candidate_apgr", "running_apgr", "diff_ci90",
                                                                 "promoted", "reason")}
                t_learn = time.perf_counter() - t1
                live = [traffic[(k + i) % len(traffic)].text for i in range(N_LIVE)]
                row["live_cloud_share"] = float(np.mean([gw.ask(p, "auto")[1] == "cloud" for p in live]))
                t2 = time.perf_counter()
                explained = [gw.explain(e.text) for e in heldout]
                t_explain = time.perf_counter() - t2
                scores = np.array([x["score"] for x in explained])
                row.update({"apgr": apgr(scores, w, s), "apgr_ci90": _ci(scores, w, s, rng),
                            "realised_share": float(np.mean([x["tier"] == "cloud" for x in explained])),
                            "classifier": gw.status()["classifier"]["version"],
                            "seconds": {"traffic": round(t_traffic, 1), "learn_promote": round(t_learn, 1),
                                        "explain": round(t_explain, 1)}})
                rows.append(row)
                cand_text = "" if k == 0 else (f"; candidate ({row['head']}) {row['candidate']['apgr']:.3f} share "
                                               f"{row['candidate']['share']:.3f} "
                                               f"{'promoted' if row['promotion']['promoted'] else 'kept aside'}")
                log(f"seed {seed} {labels} K={k:4d}: running {row['classifier']} APGR {row['apgr']:.3f} share "
                    f"{row['realised_share']:.3f}{cand_text} ({t_traffic:.0f}+{t_learn:.0f}+{t_explain:.0f} s)")
        finally:
            gw.stop()
        wall = time.perf_counter() - started
    return {"pair": [weak, strong], "labels": labels, "seed": seed, "share_target": SHARE, "hold_window": hold_window,
            "n_heldout": n_heldout, "n_judged": N_JUDGED, "n_traffic": N_TRAFFIC, "length_apgr": length_apgr,
            "gap": float(np.mean(s - w)), "rows": rows, "wall_s": round(wall, 1),
            "upstream_calls": {"edge": edge.calls, "cloud": cloud.calls}}


def summarise(reports: list[dict]) -> dict:
    """Per labelling mode and stage: means over seeds of the running and the candidate classifier."""
    out: dict = {}
    for labels in dict.fromkeys(r["labels"] for r in reports):
        runs = [r for r in reports if r["labels"] == labels]
        stages = []
        for i, row in enumerate(runs[0]["rows"]):
            rows = [r["rows"][i] for r in runs]
            cand = [x.get("candidate", {"apgr": x["apgr"], "share": x["realised_share"]}) for x in rows]
            stages.append({
                "outcomes": row["outcomes"], "runs": len(rows),
                "running_apgr": float(np.mean([x["apgr"] for x in rows])),
                "running_apgr_sd": float(np.std([x["apgr"] for x in rows])),
                "running_share": float(np.mean([x["realised_share"] for x in rows])),
                "live_share": float(np.mean([x["live_cloud_share"] for x in rows])),
                "candidate_apgr": float(np.mean([c["apgr"] for c in cand])),
                "candidate_apgr_sd": float(np.std([c["apgr"] for c in cand])),
                "candidate_share": float(np.mean([c["share"] for c in cand])),
                "promoted": sum(bool(x.get("promotion", {}).get("promoted")) for x in rows),
                "stacked": sum(x.get("head", "prior") != "prior" for x in rows)})
        out[labels] = {"stages": stages, "length_apgr": float(np.mean([r["length_apgr"] for r in runs])),
                       "wall_s": float(np.mean([r["wall_s"] for r in runs]))}
    return out


_LABEL_NAMES = {"both": "both tiers rated", "answered": "answered tier rated", "shadow": "shadow comparisons"}


def plot(summary: dict, meta: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12.5, 5.8), dpi=110)
    for (labels, summ), colour, shift in zip(summary.items(), ("tab:blue", "tab:orange", "tab:green"), (-5, 0, 5)):
        st = summ["stages"]
        xs = [x["outcomes"] + shift for x in st]  # side by side, so the error bars do not hide each other
        name = _LABEL_NAMES[labels]
        ax1.errorbar(xs, [x["running_apgr"] for x in st], yerr=[x["running_apgr_sd"] for x in st], marker="o",
                     capsize=3, color=colour, label=f"{name}: routing classifier (safe promotion)")
        ax1.plot(xs, [x["candidate_apgr"] for x in st], marker="x", linestyle="--", color=colour, alpha=0.8,
                 label=f"{name}: learned candidate")
        ax2.plot(xs, [x["running_share"] for x in st], marker="o", color=colour,
                 label=f"{name}: routing classifier")
        ax2.plot(xs, [x["candidate_share"] for x in st], marker="x", linestyle="--", color=colour, alpha=0.8,
                 label=f"{name}: learned candidate")
    first = next(iter(summary.values()))
    ax1.axhline(first["length_apgr"], color="tab:red", linestyle=":", label="prompt length")
    ax1.set_xlabel("outcomes collected (prompts rated)")
    ax1.set_ylabel(f"APGR on {meta['heldout']} held-out prompts")
    ax1.set_title("Routing quality (mean ± sd over seeds)", fontsize=10)
    ax1.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    ax1.grid(alpha=0.3)
    ax2.axhline(meta["share"], color="grey", linestyle=":", label=f"target {meta['share']:.0%}")
    ax2.set_ylim(0, 0.6)
    ax2.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax2.set_xlabel("outcomes collected (prompts rated)")
    ax2.set_ylabel("held-out prompts sent to the cloud")
    held = f", hold_window: {meta['hold_window']}" if meta["hold_window"] else ""
    ax2.set_title(f"Realised cloud share (policy cloud_share: {meta['share']:g}{held})", fontsize=10)
    ax2.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    ax2.grid(alpha=0.3)
    fig.suptitle(f"Learning {meta['pair'][0]} -> {meta['pair'][1]} from its own traffic "
                 f"({meta['seeds']} seeds)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_markdown(summary: dict, meta: dict) -> str:
    lines = []
    for labels, summ in summary.items():
        lines += [f"\n**{_LABEL_NAMES[labels]}** ({meta['pair'][0]} -> {meta['pair'][1]}, mean of {meta['seeds']} "
                  f"seeds; prompt length APGR {summ['length_apgr']:.3f}; {summ['wall_s']:.0f} s per run)\n",
                  "| outcomes | routing APGR | routing share (held-out) | live share | candidate APGR | "
                  "candidate share | stacked head | promoted |", "|---|---|---|---|---|---|---|---|"]
        for x in summ["stages"]:
            n = x["runs"]
            lines.append(f"| {x['outcomes']} | {x['running_apgr']:.3f} ± {x['running_apgr_sd']:.3f} | "
                         f"{x['running_share']:.1%} | {x['live_share']:.1%} | {x['candidate_apgr']:.3f} ± {x['candidate_apgr_sd']:.3f} | "
                         f"{x['candidate_share']:.1%} | "
                         + ("—" if x["outcomes"] == 0 else f"{x['stacked']}/{n}") + " | "
                         + ("—" if x["outcomes"] == 0 else f"{x['promoted']}/{n}") + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", nargs=2, default=["mistral-7b-instruct-v0.3", "llama-3.1-nemotron-51b-instruct"],
                    metavar=("EDGE", "CLOUD"))
    ap.add_argument("--labels", nargs="+", choices=["shadow", "both", "answered"],
                    default=["shadow", "both", "answered"],
                    help="shadow: the gateway's shadow comparisons, judged by a mock judge from the recorded "
                         "qualities; both: the client rates each prompt's answers from both tiers; answered: "
                         "only the tier that answered")
    ap.add_argument("--stages", type=int, nargs="+", default=[0, 50, 100, 200, 400])
    ap.add_argument("--heldout", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=3, help="random splits (a fresh gateway each)")
    ap.add_argument("--hold-window", type=int, default=500,
                    help="the policy's classifier.hold_window (0: the calibrated threshold alone)")
    ap.add_argument("--png", default=None, help="write the plot here (needs matplotlib: the `bench` extra)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    reports = [simulate(tuple(args.pair), args.stages, args.heldout, labels, seed, args.hold_window,
                        lambda m: print(m, file=sys.stderr, flush=True))
               for labels in args.labels for seed in range(args.seeds)]
    summary = summarise(reports)
    meta = {"pair": args.pair, "seeds": args.seeds, "heldout": args.heldout, "share": SHARE,
            "hold_window": args.hold_window}
    print(format_markdown(summary, meta))
    if args.png:
        plot(summary, meta, args.png)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "summary": summary, "runs": reports}, indent=1),
                                   encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
