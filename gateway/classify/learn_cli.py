"""The ``gateway learn`` subcommand (the work is in learn.py).

BLAS is limited to one thread before numpy loads: the matrices are small, and on a busy machine a
multi-threaded BLAS made a 1,000-label run ten times slower than a single core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_CLOUD_SHARE = 0.3  # the same default as learn.DEFAULT_CLOUD_SHARE (kept here so help needs no numpy)



def cmd_learn(args: argparse.Namespace) -> int:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from .base import ClassifierLoadError
    from .learn import LearnError, export_outcomes, learn

    def err(msg: str) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return 2

    if args.cloud_share is not None and not 0.0 < args.cloud_share < 1.0:
        return err("--cloud-share must be strictly between 0 and 1")
    if (args.feedback is None) == (args.from_store is None):
        return err("give exactly one of --feedback F.jsonl or --from-store [OUTCOMES.jsonl]")
    if args.from_store is not None:
        try:
            args.feedback = export_outcomes(args.from_store or os.environ.get("GATEWAY_OUTCOMES_PATH", ""),
                                            Path(args.output) / "feedback.jsonl")
        except LearnError as e:
            return err(str(e))
    if args.cloud_share is not None and not args.traffic:
        print("note: --cloud-share without --traffic: the threshold is set on the feedback prompts' scores",
              file=sys.stderr)
    try:
        report = learn(args.feedback, args.output, traffic=args.traffic, cloud_share=args.cloud_share,
                       base=args.base, seed=args.seed, log=lambda s: print(s, file=sys.stderr))
    except LearnError as e:
        return err(str(e))
    except ClassifierLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        return err(f"cannot write {args.output}: {e.strerror or e}")
    print(json.dumps({"output": args.output, "chosen": report["chosen"],
                      "threshold": report["calibration"]["threshold"],
                      "cv_apgr": report["cross_validation"]["apgr"]}))
    return 0


def add_learn_command(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "learn", help="learn the operator's model pair from pairwise outcomes (stacked on the shipped classifier)",
        description="Learn a classifier for your own edge/cloud pair from FEEDBACK lines {prompt, edge_quality, "
                    "cloud_quality}; write a self-contained model folder for `gateway classify --model DIR` "
                    "and GATEWAY_CLASSIFIER_MODEL.")
    p.add_argument("--feedback", default=None, metavar="F.jsonl",
                   help='lines {"prompt": str, "edge_quality": 0..1, "cloud_quality": 0..1}')
    p.add_argument("--from-store", nargs="?", const="", default=None, metavar="OUTCOMES.jsonl",
                   help="learn from the outcomes the gateway stored (default $GATEWAY_OUTCOMES_PATH); the "
                        "feedback lines made from them are written to DIR/feedback.jsonl")
    p.add_argument("--output", required=True, metavar="DIR", help="model folder to write")
    p.add_argument("--traffic", default=None, metavar="T.jsonl",
                   help='unlabelled traffic {"prompt": str} to set the threshold on')
    p.add_argument("--cloud-share", type=float, default=None,
                   help=f"target share of cloud traffic (default {DEFAULT_CLOUD_SHARE})")
    p.add_argument("--base", default=None, help="base model file or folder (default: the shipped model)")
    p.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds")
    p.set_defaults(func=cmd_learn)
