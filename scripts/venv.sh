#!/usr/bin/env bash
# Create (once) the project virtualenv and install noemafed with its dev dependencies into it.
# Prints the venv path. Used by scripts/test.sh and scripts/demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${NOEMAFED_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV" >&2
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]' >&2
echo "$VENV"
