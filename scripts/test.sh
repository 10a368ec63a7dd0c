#!/usr/bin/env bash
# README's second command (and what .ci/run calls): set up .venv with every extra, lint and type-check,
# run the whole suite. Any failing step fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh -e '.[edge,train,test]'
.venv/bin/python -m ruff check gateway tests bench
.venv/bin/python -m mypy gateway
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
