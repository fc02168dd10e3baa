#!/usr/bin/env bash
# The main job on a built-in demo: build the pyz, create two cortexes, seed one, serve it, sync the other
# from it, show status and the replicated traces, stop the server. Everything lives in a temp directory.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$(scripts/venv.sh)"
PYTHON="$VENV/bin/python"
PYTHON="$PYTHON" ./build.sh >/dev/null
demo="$(mktemp -d)"
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$demo"
}
trap cleanup EXIT
export SHIV_ROOT="$demo/shiv"
pyz() { "$PYTHON" dist/noemafed.pyz "$@"; }

echo "== noemafed $(pyz --version | cut -d' ' -f2): two cortexes in $demo"
pyz init "$demo/research" --name research
pyz init "$demo/laptop" --name laptop
"$PYTHON" scripts/seed.py "$demo/research" --traces 12

echo
echo "== research serves its log"
# Started directly (not through the pyz function) so $! is the server itself and the trap can stop it.
"$PYTHON" dist/noemafed.pyz --cortex "$demo/research" serve --port 0 >/dev/null 2>"$demo/serve.log" &
server_pid=$!
endpoint=""
for _ in $(seq 1 100); do
  endpoint="$(sed -n 's#.*listening on \(http://[^ ]*\)/mcp.*#\1#p' "$demo/serve.log" | head -n 1)"
  [ -n "$endpoint" ] && break
  sleep 0.1
done
[ -n "$endpoint" ] || { cat "$demo/serve.log"; echo "serve did not start" >&2; exit 1; }
echo "research is at $endpoint"
pyz --cortex "$demo/laptop" add-peer research "$endpoint"

echo
echo "== laptop: noemafed sync --once --verbose"
pyz --cortex "$demo/laptop" sync --once --verbose

echo
echo "== laptop: noemafed status"
pyz --cortex "$demo/laptop" status

echo
echo "== laptop: replicated traces"
for folder in traces archive/traces trash/traces; do
  count=$(find "$demo/laptop/$folder" -name '*.md' | wc -l)
  echo "$folder/: $count files"
done
first="$(find "$demo/laptop/traces" -name '*.md' | sort | head -n 1)"
echo "-- $(basename "$first")"
cat "$first"

echo
echo "== the server's request log"
cat "$demo/serve.log"
echo
echo "== database check: $("$PYTHON" -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("PRAGMA integrity_check").fetchone()[0])' "$demo/laptop/db/noema.db")"
