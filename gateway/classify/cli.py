"""Subcommands ``classify``, ``train`` and ``eval`` (registered on the gateway CLI by ``add_commands``).

    gateway classify "some text"                        -> prints the score
    gateway classify --input IN.jsonl --output OUT.jsonl -> one {"score", "tier"} line per input line
    gateway classify --calibrate FILE.jsonl --cloud-share 0.3 -> prints the threshold for that share
    gateway train [--data DIR] [--out DIR] [--seed N]
    gateway eval  [--model PATH] [--data DIR] [--crossfit]
    gateway learn --feedback F.jsonl --output DIR [--traffic T.jsonl --cloud-share S]   (see learn.py, learn_cli.py)

Input lines are JSON objects with a string "prompt", or chat request bodies (their last user message is
scored); blank lines are skipped. A bad line stops the
command before anything is written, with an error naming the file and line number (exit code 2).
Exit codes: 0 ok, 1 model could not be loaded, 2 bad input or data.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .base import ClassifierLoadError

EXIT_OK, EXIT_LOAD, EXIT_INPUT = 0, 1, 2


class InputError(Exception):
    pass


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


def read_prompts(path: str) -> list[str]:
    """Prompts of a sample (`{"prompt": ...}` lines or chat request bodies), in order; raises InputError
    naming the line on the first bad line."""
    from gateway.routing.traffic import TrafficError, read_prompts as read_sample

    try:
        return read_sample(path)
    except TrafficError as e:
        raise InputError(str(e)) from e


def _score_all(scorer: Any, prompts: list[str], batch: int = 256) -> list[float]:
    out: list[float] = []
    for i in range(0, len(prompts), batch):
        out.extend(scorer.score_batch(prompts[i:i + batch]))
    return out


def cmd_classify(args: argparse.Namespace) -> int:
    from . import load_scorer

    modes = sum(x is not None for x in (args.text, args.input, args.calibrate))
    if modes != 1:
        _err("give exactly one of: TEXT, --input IN.jsonl (with --output), --calibrate FILE.jsonl")
        return EXIT_INPUT
    if args.input is not None and not args.output:
        _err("--input needs --output OUT.jsonl (or - for stdout)")
        return EXIT_INPUT
    if args.calibrate is not None and args.cloud_share is None:
        _err("--calibrate needs --cloud-share (e.g. 0.3)")
        return EXIT_INPUT
    if args.cloud_share is not None and not 0.0 <= args.cloud_share <= 1.0:
        _err("--cloud-share must be between 0 and 1")
        return EXIT_INPUT
    try:
        prompts = read_prompts(args.input if args.input is not None else args.calibrate) if args.text is None else [args.text]
    except InputError as e:
        _err(str(e))
        return EXIT_INPUT
    try:
        scorer = load_scorer(args.scorer, args.model)
    except ClassifierLoadError as e:
        _err(str(e))
        return EXIT_LOAD

    if args.text is not None:
        print(f"{scorer.score_batch([args.text])[0]:.6f}")
        return EXIT_OK

    scores = _score_all(scorer, prompts)
    if args.calibrate is not None:
        from .calibrate import share_at, threshold_from_scores

        if not scores:
            _err(f"{args.calibrate}: no prompts")
            return EXIT_INPUT
        thr = threshold_from_scores(scores, args.cloud_share)
        print(f"{thr:.6f}")
        print(f"{len(scores)} prompts: cloud share {args.cloud_share:g} -> threshold {thr:.6f} "
              f"(reaches {share_at(scores, thr):.1%} on this sample; shipped calibration gives "
              f"{scorer.threshold_for_share(args.cloud_share):.6f})", file=sys.stderr)
        return EXIT_OK

    if args.threshold is not None:
        thr = args.threshold
    elif args.cloud_share is not None:
        thr = scorer.threshold_for_share(args.cloud_share)
    else:
        thr = float(getattr(scorer, "default_threshold", 0.5))
    lines = "".join(
        json.dumps({"score": round(float(s), 6), "tier": "cloud" if s >= thr else "edge"}) + "\n" for s in scores
    )
    try:
        if args.output == "-":
            sys.stdout.write(lines)
        else:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(lines)
    except OSError as e:
        _err(f"cannot write {args.output}: {e.strerror or e}")
        return EXIT_INPUT
    print(f"scored {len(scores)} prompts at threshold {thr:.6f}: "
          f"{sum(s >= thr for s in scores)} cloud, {sum(s < thr for s in scores)} edge", file=sys.stderr)
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from .data import DataError
    from .train import train

    try:
        train(data_dir=args.data, out_dir=args.out, seed=args.seed, hidden=args.hidden, members=args.members,
              alpha=args.alpha, cloud_share=args.default_cloud_share, prior_beta=args.prior_beta)
    except DataError as e:
        _err(str(e))
        return EXIT_INPUT
    except ImportError as e:
        _err(f"training needs the optional extra deps (pip install 'edge-cloud-gateway[train]'): {e}")
        return EXIT_LOAD
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from .data import DataError
    from .evaluate import evaluate, evaluate_crossfit, format_markdown

    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    try:
        if args.crossfit:
            rep = evaluate_crossfit(data_dir=args.data, n_boot=args.bootstrap, seed=args.seed, log=log)
        else:
            rep = evaluate(model_path=args.model, data_dir=args.data, n_boot=args.bootstrap, seed=args.seed, log=log)
    except ImportError as e:
        _err(f"--crossfit trains models: it needs the optional extra deps (pip install 'edge-cloud-gateway[train]'): {e}")
        return EXIT_LOAD
    except ClassifierLoadError as e:
        _err(str(e))
        return EXIT_LOAD
    except DataError as e:
        _err(str(e))
        return EXIT_INPUT
    print(format_markdown(rep))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rep, f, indent=1)
    return EXIT_OK


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("classify", help="score prompts with the complexity classifier",
                              description="Score prompts: one TEXT, a JSONL file (--input/--output), or "
                                          "calibrate a threshold on a sample (--calibrate/--cloud-share).")
    p.add_argument("text", nargs="?", help="a prompt to score (prints its score)")
    p.add_argument("--input", metavar="IN.jsonl", help='lines {"prompt": "..."}')
    p.add_argument("--output", metavar="OUT.jsonl", help='one line {"score": float, "tier": "edge"|"cloud"} per input')
    p.add_argument("--calibrate", metavar="FILE.jsonl", help="operator sample of prompts to calibrate a threshold on")
    p.add_argument("--cloud-share", type=float, default=None,
                   help="target share of cloud traffic (with --calibrate; with --input: threshold from the shipped table)")
    p.add_argument("--threshold", type=float, default=None, help="tier threshold for --input (default: from metadata)")
    p.add_argument("--model", default=None,
                   help="model file or folder, or a folder written by `gateway learn` (default: the shipped model)")
    p.add_argument("--scorer", choices=("onnx", "length"), default="onnx")
    p.set_defaults(func=cmd_classify)

    p = subparsers.add_parser("train", help="train the complexity classifier and export ONNX + metadata")
    p.add_argument("--data", default=None, help="outcome data folder (default ../shared/data or $GATEWAY_CLASSIFY_DATA)")
    p.add_argument("--out", default=None, help="output folder (default gateway/classify/model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--members", type=int, default=5, help="MLPs in the ensemble")
    p.add_argument("--hidden", type=int, default=16, help="hidden units per MLP")
    p.add_argument("--alpha", type=float, default=1.0, help="L2 penalty")
    p.add_argument("--prior-beta", type=float, default=0.5, help="weight of the task-complexity prior (0: MLP only)")
    p.add_argument("--default-cloud-share", type=float, default=0.3, help="share that sets default_threshold")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("eval", help="APGR / CPT of the classifier vs length and random on the test split")
    p.add_argument("--model", default=None, help="model file or folder (default: the shipped model)")
    p.add_argument("--data", default=None, help="outcome data folder (default ../shared/data)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 90%% intervals (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the full report as JSON here")
    p.add_argument("--crossfit", action="store_true",
                   help="evaluate the training recipe cross-fitted over all the data instead (5 folds x 3 seeds; "
                        "needs the train extra; ~1-2 min)")
    p.set_defaults(func=cmd_eval)

    from .learn_cli import add_learn_command

    add_learn_command(subparsers)
