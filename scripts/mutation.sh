#!/usr/bin/env bash
# Mutation testing (mutmut) of the boundary modules: each module against its own test files, in a copy of the tree.
# Not part of CI (minutes per module); docs/testing.md records the scores and the survivors judged equivalent.
#
# Usage: scripts/mutation.sh [MODULE ...]          MODULE: a name from the table below; default: all of them
#   MUTATION_DIR   where the copies go (default /tmp/noemafed-mutation); per module: run.log, results.txt (every
#                  mutant that was not killed, with its status), survivors.diff (the diff of each) and score.txt
#   MUTATION_JOBS  mutants run at once (default 2); the runs are niced
#   MUTATION_TIMEOUT_MULTIPLIER  a mutant is stopped (and counted killed, as a timeout) after this many times its
#                  tests' clean run time plus a second (default mutmut's 15; lower ends endless loops sooner)
# Needs mutmut 3.8.1 in the venv (${NOEMAFED_VENV:-.venv}): `pip install mutmut==3.8.1`.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
BIN="$(cd "${NOEMAFED_VENV:-.venv}/bin" && pwd)"
OUT="${MUTATION_DIR:-/tmp/noemafed-mutation}"
JOBS="${MUTATION_JOBS:-2}"
TIMEOUT_MULTIPLIER="${MUTATION_TIMEOUT_MULTIPLIER:-15}"

# module name -> "path/to/module.py tests/test_a.py tests/test_b.py ..." (the module, then the tests that guard it)
declare -A MODULES=(
  [classify]="noemafed/federation/classify.py tests/test_classify.py"
  [sse]="noemafed/mcp/sse.py tests/test_sse.py"
  [client]="noemafed/mcp/client.py tests/test_mcp_client.py tests/test_wire_budgets.py tests/test_sync.py"
  [events]="noemafed/cortex/events.py tests/test_events.py"
  [replay]="noemafed/federation/replay.py tests/test_replay.py tests/test_replay_corpus.py tests/test_replay_signatures.py"
  [server]="noemafed/mcp/server.py tests/test_serve.py tests/test_serve_limits.py"
  [identity]="noemafed/federation/identity.py tests/test_identity.py tests/test_syncer.py tests/test_go_twins_sync.py tests/test_identity_signing.py"
  [syncer]="noemafed/federation/syncer.py tests/test_syncer.py tests/test_sync.py tests/test_sync_cursors.py"
)
ORDER=(classify sse client events replay server identity syncer)

# mutmut reads its configuration when imported, so ask the package metadata, not `mutmut --version`.
VERSION="$("$BIN/python" -c 'import importlib.metadata as m; print(m.version("mutmut"))' 2>/dev/null || true)"
if [[ "$VERSION" != "3.8.1" ]]; then
  echo "needs mutmut 3.8.1 in $BIN (found '${VERSION:-none}'): pip install mutmut==3.8.1" >&2
  exit 2
fi

run_module() {
  local name="$1"
  local spec="${MODULES[$name]:-}"
  if [[ -z "$spec" ]]; then
    echo "unknown module $name (known: ${ORDER[*]})" >&2
    return 2
  fi
  read -r -a parts <<<"$spec"
  local module="${parts[0]}"
  local work="$OUT/$name"
  rm -rf "$work"
  mkdir -p "$work"
  # The tree as committed plus new files, without what .gitignore keeps out (venvs, dist, caches).
  git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work"
  {
    echo "[mutmut]"
    echo "source_paths = noemafed"
    echo "only_mutate = $module"
    echo "also_copy ="
    echo "    scripts/"
    echo "    docs/"
    echo "pytest_add_cli_args ="
    echo "    -p"
    echo "    no:cacheprovider"
    echo "    -m"
    echo "    not zipapp and not slow"
    echo "pytest_add_cli_args_test_selection ="
    printf '    %s\n' "${parts[@]:1}"
    echo "use_git_change_detection = false"
    echo "timeout_multiplier = $TIMEOUT_MULTIPLIER"
  } >"$work/setup.cfg"
  echo "== $name: $module against ${parts[*]:1}"
  (
    cd "$work"
    local started=$SECONDS
    if ! nice -n 10 "$BIN/mutmut" run --max-children "$JOBS" >run.log 2>&1; then
      # Typically the clean run before any mutant failed (a timing test on a busy machine): no score to give.
      echo "$name: mutmut run failed, see $work/run.log" | tee score.txt
      return 1
    fi
    "$BIN/mutmut" export-cicd-stats >/dev/null
    "$BIN/mutmut" results >results.txt
    : >survivors.diff
    while read -r mutant status; do
      [[ "$status" == "survived" ]] && "$BIN/mutmut" show "${mutant%:}" >>survivors.diff
    done <results.txt
    "$BIN/python" - "$name" "$((SECONDS - started))" <<'EOF' | tee score.txt
import json, sys
stats = json.load(open("mutants/mutmut-cicd-stats.json"))
tested = stats["total"] - stats.get("skipped", 0)
killed = stats["killed"] + stats.get("timeout", 0)
print(f"{sys.argv[1]}: {killed}/{tested} killed ({100 * killed / tested:.1f} %), "
      f"{stats['survived']} survived, {stats.get('no_tests', 0)} without tests, {sys.argv[2]} s; {json.dumps(stats)}")
EOF
  )
}

status=0
for name in "${@:-${ORDER[@]}}"; do
  run_module "$name" || status=$?
done
echo "results under $OUT/<module>/ (score.txt, results.txt, survivors.diff)"
exit "$status"
