#!/usr/bin/env bash
# Lint, format check, strict type check, dead code, the generated CLI reference and the import layers; the same
# checks CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${NOEMAFED_VENV:-.venv}/bin"
"$BIN/ruff" check noemafed tests scripts
"$BIN/ruff" format --check noemafed tests scripts
"$BIN/mypy"
"$BIN/vulture"                   # dead code: [tool.vulture] in pyproject.toml, scripts/vulture_whitelist.py
"$BIN/cog" --check docs/cli.md   # after changing a command: cog -r docs/cli.md
"$BIN/lint-imports" --no-logo    # the layers of docs/architecture.md: [tool.importlinter] in pyproject.toml
