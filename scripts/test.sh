#!/usr/bin/env bash
# README's second command (and what .ci/run calls): set up .venv with every extra, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh -e '.[edge,train,test]'
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
