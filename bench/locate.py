"""Where the shared bench harness and the `gateway` command are, for the scripts in bench/."""

from __future__ import annotations

import os
import shutil
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_harness(marker: str = "run_bench.py") -> str:
    """$BENCH_HARNESS, else ../shared/bench beside the repository: the folder holding `marker`."""
    for cand in (os.environ.get("BENCH_HARNESS"), os.path.join(REPO, "..", "shared", "bench")):
        if cand and os.path.exists(os.path.join(cand, marker)):
            return os.path.abspath(cand)
    sys.exit(f"cannot find the shared bench harness (set BENCH_HARNESS to the folder with {marker})")


def find_gateway() -> str:
    """$GATEWAY_BIN, else the `gateway` of this Python's environment, else the one on PATH."""
    for cand in (os.environ.get("GATEWAY_BIN"), os.path.join(sys.prefix, "bin", "gateway")):
        if cand and os.access(cand, os.X_OK):
            return cand
    found = shutil.which("gateway")
    if not found:
        sys.exit("cannot find the `gateway` command (set GATEWAY_BIN)")
    return found
