#!/usr/bin/env bash
# Lint, format check and strict type check; the same checks CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${NOEMAFED_VENV:-.venv}/bin"
"$BIN/ruff" check noemafed tests scripts
"$BIN/ruff" format --check noemafed tests scripts
"$BIN/mypy"
