#!/usr/bin/env bash
# The one test command: venv + dev dependencies, lint and types, the suite, then the built pyz.
# Usage: scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$(scripts/venv.sh)"
export NOEMAFED_VENV="$VENV"
scripts/lint.sh
"$VENV/bin/python" -m pytest -m "not zipapp" "$@"
PYTHON="$VENV/bin/python" ./build.sh
"$VENV/bin/python" -m pytest -m zipapp "$@"
