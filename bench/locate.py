"""Where things are for the scripts in bench/: the repository, a Python to run the peers, the gateway, temp dirs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")


def bench_tmp() -> str:
    """$BENCH_TMP, else ${TMPDIR:-/tmp}/gw-bench: everything a benchmark writes goes there, never into the repo."""
    return os.environ.get("BENCH_TMP") or os.path.join(os.environ.get("TMPDIR", "/tmp"), "gw-bench")


def find_python() -> str:
    """A Python that has the gateway's dependencies (aiohttp, uvicorn): $BENCH_PYTHON, this one, or <repo>/.venv."""
    cands = [os.environ.get("BENCH_PYTHON"), sys.executable, os.path.join(REPO, ".venv", "bin", "python")]
    for cand in cands:
        if cand and os.access(cand, os.X_OK) and subprocess.run(
                [cand, "-c", "import aiohttp, uvicorn"], capture_output=True).returncode == 0:
            return cand
    sys.exit("no Python with aiohttp and uvicorn found: run with the project's venv or set BENCH_PYTHON")


def gateway_command(source: str | None, python: str) -> tuple[list[str], dict[str, str]]:
    """The command (before `serve ...`) and extra env that start a gateway.

    `source` is a gateway executable, or a source tree (a folder with gateway/) run as `python -m gateway`
    with that tree first on PYTHONPATH; None = this repository's tree, so a benchmark measures the code
    it sits next to rather than whatever `gateway` an environment has installed."""
    tree = REPO if source is None else source
    if os.path.isdir(os.path.join(tree, "gateway")):
        path = os.path.abspath(tree) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
        return [python, "-P", "-m", "gateway"], {"PYTHONPATH": path}  # -P: not the working directory first
    if os.access(tree, os.X_OK) and not os.path.isdir(tree):
        return [tree], {}
    sys.exit(f"{tree}: neither a gateway executable nor a source tree with gateway/")


def find_gateway() -> str:
    """$GATEWAY_BIN, else the `gateway` of this Python's environment, else the one on PATH."""
    for cand in (os.environ.get("GATEWAY_BIN"), os.path.join(sys.prefix, "bin", "gateway")):
        if cand and os.access(cand, os.X_OK):
            return cand
    found = shutil.which("gateway")
    if not found:
        sys.exit("cannot find the `gateway` command (set GATEWAY_BIN)")
    return found


def find_external_harness(marker: str = "run_bench.py") -> str:
    """Only for the optional external peers (LiteLLM Proxy, Portkey) of run_peers.py: $BENCH_HARNESS, else a
    `shared/bench` folder beside the repository holding `marker`. Nothing else in bench/ needs it."""
    for cand in (os.environ.get("BENCH_HARNESS"), os.path.join(REPO, "..", "shared", "bench")):
        if cand and os.path.exists(os.path.join(cand, marker)):
            return os.path.abspath(cand)
    sys.exit(f"the external peers need a harness with {marker} (set BENCH_HARNESS); "
             "for ours / direct / ref-aiohttp use bench/throughput.py")
