#!/usr/bin/env bash
# Mutation testing (mutmut) of the boundary modules: each module against its own test files, in a copy of the tree.
# Not part of CI (minutes per module); docs/testing.md records the scores and the survivors judged equivalent.
#
# Usage: scripts/mutation.sh [MODULE ...]          MODULE: a name from the table below; default: all of them
#   MUTATION_DIR   where the copies go (default /tmp/noemafed-mutation); per module: run.log, results.txt (every
#                  mutant that was not killed, with its status), survivors.diff (the diff of each) and score.txt
#   MUTATION_JOBS  mutants run at once (default 2); the runs are niced
#   MUTATION_RESUME=1  keep the module's last run: copy the tree over it, test the mutants of functions that
#                  changed, and run the mutants it did not kill again against the tests as they are now (its kills
#                  stand: tests were added, not weakened). Minutes instead of an hour for a network module.
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
  # the wire against real peers; not test_sync.py, whose whole runs of `sync` belong to the syncer (a minute each)
  [client]="noemafed/mcp/client.py tests/test_client_wire.py tests/test_mcp_client.py tests/test_wire_budgets.py"
  [events]="noemafed/cortex/events.py tests/test_events.py"
  [replay]="noemafed/federation/replay.py tests/test_replay.py tests/test_replay_corpus.py tests/test_replay_signatures.py
    tests/test_replay_crash.py tests/test_replay_order.py tests/test_replay_mutants.py"
  # the wire's connection (keep-alive, retries, proxies), through the client and on its own
  [transport]="noemafed/mcp/transport.py tests/test_client_keepalive.py tests/test_mcp_client.py tests/test_client_wire.py
    tests/test_wire_budgets.py tests/test_transport_mutants.py"
  [large_answer]="noemafed/mcp/large_answer.py tests/test_large_answer.py tests/test_large_answer_mutants.py"
  # byte offsets and errors of a Latin-1 reading turned back into the decoded text's: the large page's parser
  # (events) and the large answer's error both word their errors through it
  [latin_utf8]="noemafed/text/latin_utf8.py tests/test_events.py tests/test_large_answer.py tests/test_latin_utf8.py"
  # serve: its JSON-RPC side and the HTTP tests that reach it, not the slow flood, SDK and deadline tests
  [server]="noemafed/mcp/server.py tests/test_serve_answers.py tests/test_serve_limits.py
    tests/test_serve.py::test_initialize_and_tools tests/test_serve.py::test_sync_events_pages_with_noemas_rules
    tests/test_serve.py::test_stored_bytes_are_served_unchanged tests/test_serve.py::test_subscribe_mode_refuses_both_tools
    tests/test_serve.py::test_sessions tests/test_serve.py::test_guards tests/test_serve.py::test_the_app_answers_without_a_socket
    tests/test_serve.py::test_sse_only_when_the_client_asks_for_it_alone
    tests/test_serve.py::test_publish_and_sync_modes_serve_both_tools
    tests/test_serve_abuse.py::test_any_body_the_parser_rejects_is_a_400_parse_error
    tests/test_serve_abuse.py::test_a_lone_surrogate_id_gets_a_well_formed_answer
    tests/test_serve_abuse.py::test_a_request_whose_answer_fails_leaves_no_session
    tests/test_serve_abuse.py::test_ids_are_echoed_encodable_or_refused
    tests/test_serve_abuse.py::test_a_lone_surrogate_since_is_read_as_go_reads_it"
  [identity]="noemafed/federation/identity.py tests/test_identity.py tests/test_syncer.py tests/test_go_twins_sync.py tests/test_identity_signing.py"
  # the poll's boundary cases (_unexpected_failure is reached only there), poison events (skip-event's next_event)
  # and the poll step by step
  [syncer]="noemafed/federation/syncer.py tests/test_syncer.py tests/test_sync.py tests/test_sync_cursors.py
    tests/test_poll_boundary.py tests/test_poison.py tests/test_syncer_mutants.py"
)
ORDER=(classify sse client transport events latin_utf8 large_answer replay server identity syncer)

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
  read -r -d "" -a parts <<<"$spec" || true  # the spec may run over several lines
  local module="${parts[0]}"
  local work="$OUT/$name"
  local again=()
  if [[ "${MUTATION_RESUME:-}" == 1 && -f "$work/results.txt" ]]; then
    # What the last run did not kill, to be run again (its mutant names, without the trailing colon).
    mapfile -t again < <(awk '$2 != "killed" && $2 != "timeout" && $2 != "not" {sub(/:$/, "", $1); print $1}' "$work/results.txt")
  else
    rm -rf "$work"
  fi
  mkdir -p "$work"
  # The tree as committed plus new files, without what .gitignore keeps out (venvs, dist, caches).
  git ls-files -z --cached --others --exclude-standard | xargs -0 cp --preserve=timestamps --parents -t "$work"
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
    # Without names mutmut tests every mutant it has no verdict for (all of them on a fresh copy); with names,
    # those again.
    if ! nice -n 10 "$BIN/mutmut" run --max-children "$JOBS" >run.log 2>&1 ||
      { ((${#again[@]})) && ! nice -n 10 "$BIN/mutmut" run --max-children "$JOBS" "${again[@]}" >>run.log 2>&1; }; then
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
