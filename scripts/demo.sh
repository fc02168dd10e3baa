#!/usr/bin/env bash
# The main job on a built-in demo: build the pyz, create two cortexes, make them peers, show status.
# Everything happens in a temporary directory that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$(scripts/venv.sh)"
PYTHON="$VENV/bin/python" ./build.sh >/dev/null
demo="$(mktemp -d)"
trap 'rm -rf "$demo"' EXIT
export SHIV_ROOT="$demo/shiv"
pyz() { "$VENV/bin/python" dist/noemafed.pyz "$@"; }

echo "== noemafed $(pyz --version | cut -d' ' -f2): two cortexes in $demo"
pyz init "$demo/research" --name research
pyz init "$demo/laptop" --name laptop
pyz --cortex "$demo/laptop" add-peer research https://127.0.0.1:8765/
echo
echo "== noemafed --cortex laptop status"
pyz --cortex "$demo/laptop" status
echo
echo "== noemafed --cortex laptop status --json"
pyz --cortex "$demo/laptop" status --json
echo
echo "== database check"
"$VENV/bin/python" -c 'import sqlite3,sys; print("integrity_check:", sqlite3.connect(sys.argv[1]).execute("PRAGMA integrity_check").fetchone()[0])' "$demo/laptop/db/noema.db"
