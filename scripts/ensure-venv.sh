#!/usr/bin/env bash
# Create .venv from the pinned requirements, or refresh it when they changed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
python=${PYTHON:-python3.11}
stamp=.venv/.tinygru-stamp
want=$(cat requirements.txt requirements-nodeps.txt edge_runtime/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
command -v "$python" >/dev/null || { echo "tinygru: $python not found (Python 3.11 is required)" >&2; exit 1; }
echo "tinygru: creating .venv from requirements.txt (first run: about a minute)"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/pip install -q -r requirements.txt
.venv/bin/pip install -q --no-deps -r requirements-nodeps.txt
echo "$want" > "$stamp"
