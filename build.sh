#!/usr/bin/env bash
# Build dist/noemafed.pyz reproducibly: our wheel first, then shiv from local wheels only, then a smoke run.
# Usage: ./build.sh   (uses $PYTHON if set; else the project venv, created or updated by scripts/venv.sh as
#                     scripts/test.sh does, so a fresh clone builds with no other step)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
if [ -z "${PYTHON:-}" ]; then
  PYTHON="$(scripts/venv.sh)/bin/python"
fi

# Timestamps come from the commit, so two checkouts of one commit (anywhere on disk) build the same bytes.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH="$(git -C "$here" log -1 --format=%ct 2>/dev/null || echo 1767225600)"
fi
export SOURCE_DATE_EPOCH
export PYTHONHASHSEED=0

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/wheels" dist

# 1. Our own wheel, built from a copy of the sources so no build/ or egg-info lands in the checkout
#    and the checkout's path never reaches the wheel.
mkdir -p "$work/src"
cp -r pyproject.toml README.md noemafed "$work/src/"
find "$work/src" -name '__pycache__' -prune -exec rm -rf {} +
#    The commit goes into that copy's __init__.py, so `--version` names it ("+dirty": uncommitted changes
#    to tracked files; no git: "unknown"). Same commit, same text: the build stays reproducible.
commit="$(git -C "$here" rev-parse --short=12 HEAD 2>/dev/null || true)"
if [ -n "$commit" ] && ! git -C "$here" diff --quiet HEAD -- 2>/dev/null; then
  commit="$commit+dirty"
fi
"$PYTHON" - "$work/src/noemafed/__init__.py" "$commit" <<'PY'
import sys
path, commit = sys.argv[1], sys.argv[2]
text = open(path, encoding="utf-8").read()
marker = '__commit__ = ""\n'
assert marker in text, f"{path} has no {marker!r} for build.sh to fill in"
open(path, "w", encoding="utf-8").write(text.replace(marker, f"__commit__ = {commit!r}\n", 1))
PY
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$work/wheels" "$work/src"

# 2. The runtime dependencies, exactly the pinned wheels (pure Python, so any platform).
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
  --dest "$work/wheels" -r scripts/runtime-lock.txt

# 3. The zipapp, from those wheels only. Dependencies are named, never resolved from markers here.
"$PYTHON" -m shiv --reproducible --compressed \
  --no-index --find-links "$work/wheels" \
  --entry-point noemafed.cli:run --python '/usr/bin/env python3' \
  --output-file dist/noemafed.pyz \
  noemafed click python-ulid typing-extensions >/dev/null

# 4. Our __main__.py in place of shiv's: once the archive is extracted, it skips shiv's bootstrap imports
#    (about 15 ms of every cron run) and hands every other case to that bootstrap (scripts/pyz_main.py).
"$PYTHON" scripts/replace_main.py dist/noemafed.pyz

# 5. Smoke run with a throwaway extraction root, never ~/.shiv.
SHIV_ROOT="$work/shiv-root" "$PYTHON" dist/noemafed.pyz --version
sha256sum dist/noemafed.pyz 2>/dev/null || shasum -a 256 dist/noemafed.pyz
