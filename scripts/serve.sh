#!/usr/bin/env bash
# README's first command: set up .venv with the embedded edge model and serve the default policy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh '.[edge]'
exec .venv/bin/gateway serve "$@"
