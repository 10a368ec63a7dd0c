#!/usr/bin/env python3
"""Optional: the gateway against external gateways (LiteLLM Proxy, Portkey) as well, in ONE run.

    python bench/run_peers.py                  # 1 core: direct, ref-aiohttp, ours, LiteLLM Proxy, Portkey
    python bench/run_peers.py --mode 2core     # 1 vs 2 workers, nothing pinned: + ours-w2, ref-aiohttp-w2
    python bench/run_peers.py --quick          # 1 repeat, 3 s, c=1,16
    python bench/run_peers.py --no-litellm --no-portkey    # = bench/throughput.py

Every figure is measured by this repository's harness (bench/throughput.py: bench/loadgen.c against
bench/mock_openai.py). The only thing borrowed is the installation of the two external peers, which are
not Python dependencies of the gateway: an external harness's `setup.sh` (found by $BENCH_HARNESS or
`../shared/bench`) installs LiteLLM Proxy into a temp venv and the Portkey gateway into a temp npm folder
under $BENCH_TMP, and its `peers/litellm_proxy_config.yaml` routes LiteLLM's model `mock` to the mock.
Without that harness use --no-litellm --no-portkey, or bench/throughput.py directly.
Arguments after `--` go to bench/throughput.py (e.g. `-- --repeats 5 --conc 16,64`).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import subprocess
import sys

from locate import BENCH, bench_tmp, find_external_harness, find_python

PORTKEY_JS = ("node_modules", "@portkey-ai", "gateway", "build", "start-server.js")


def setup_external(harness: str, venv: str, portkey_dir: str, litellm: bool, portkey: bool) -> None:
    """Install the external peers into temp dirs with the external harness's setup.sh (skipped when present)."""
    need_litellm = litellm and not os.access(os.path.join(venv, "bin", "litellm"), os.X_OK)
    need_portkey = portkey and not os.path.exists(os.path.join(portkey_dir, *PORTKEY_JS))
    if not (need_litellm or need_portkey):
        return
    tmp = bench_tmp()
    os.makedirs(tmp, exist_ok=True)
    env = dict(os.environ, BENCH_VENV=venv, PORTKEY_DIR=portkey_dir, LOADGEN=os.path.join(tmp, "ext-loadgen"),
               SKIP_APT="1", SKIP_LITELLM="0" if need_litellm else "1", SKIP_PORTKEY="0" if need_portkey else "1")
    log = os.path.join(tmp, "setup-external.log")
    print(f"installing the external peers (log: {log}) ...", flush=True)
    with open(log, "ab") as fh:
        subprocess.run(["bash", os.path.join(harness, "setup.sh")], env=env, stdout=fh, stderr=subprocess.STDOUT,
                       check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("1core", "2core"), default="1core")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--no-portkey", action="store_true")
    ap.add_argument("--node", default="node")
    ap.add_argument("rest", nargs="*", help="passed to bench/throughput.py (after `--`)")
    a = ap.parse_args()

    tmp = bench_tmp()
    venv = os.environ.get("BENCH_VENV") or os.path.join(tmp, "venv")
    portkey_dir = os.environ.get("PORTKEY_DIR") or os.path.join(tmp, "portkey")
    cmd = [find_python(), os.path.join(BENCH, "throughput.py")]
    if a.quick:
        cmd.append("--quick")
    if a.mode == "2core":
        cmd += ["--no-pin", "--conc", "16,64", "--peers", "direct,ref-aiohttp,ref-aiohttp-w2,ours,ours-w2"]
    else:
        litellm, portkey = not a.no_litellm, not a.no_portkey
        if litellm or portkey:
            harness = find_external_harness("setup.sh")
            setup_external(harness, venv, portkey_dir, litellm, portkey)
        if litellm:
            key = "sk-bench-" + secrets.token_hex(8)
            config = os.path.join(find_external_harness("setup.sh"), "peers", "litellm_proxy_config.yaml")
            run = (f"env MOCK_API_BASE={{upstream_base}} LITELLM_MASTER_KEY={key} LITELLM_LOCAL_MODEL_COST_MAP=True "
                   f"LITELLM_LOG=ERROR DISABLE_ADMIN_UI=True NO_DOCS=True "
                   f"{shlex.quote(os.path.join(venv, 'bin', 'litellm'))} --config {shlex.quote(config)} "
                   f"--host 127.0.0.1 --port {{port}}")
            cmd += ["--extra-peer", f"litellm={run}", "--header", f"litellm=Authorization: Bearer {key}"]
        if portkey:
            js = os.path.join(portkey_dir, *PORTKEY_JS)
            cmd += ["--extra-peer", f"portkey=cd {shlex.quote(portkey_dir)} && exec {shlex.quote(a.node)} "
                                    f"{shlex.quote(js)} --port={{port}} --headless",
                    "--header", "portkey=x-portkey-provider: openai",
                    "--header", "portkey=x-portkey-custom-host: {upstream_base}",
                    "--header", "portkey=Authorization: Bearer sk-mock"]
    cmd += a.rest
    print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
