"""Plant each seeded bug of docs/testing.md in the product code, and check that its test fails with it.

A test exists to catch a bug: this keeps the tests written for the bugs that once survived the whole suite
honest. Each plant is one textual edit of one module; the module is always restored, even on Ctrl-C.

    python scripts/seeded_bugs.py              # every plant: its tests must fail with it, pass without it
    python scripts/seeded_bugs.py c d          # only these plants
    python scripts/seeded_bugs.py --suite a    # the whole suite (not zipapp, not slow) with plant a: caught?
    python scripts/seeded_bugs.py --list

Exit status 0 when every plant was caught (and, without --suite, every test passes on the clean code).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent


class Plant(NamedTuple):
    name: str
    bug: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


_SSE_CHECK = (
    "        total += len(chunk)\n"
    "        if total > budget:\n"
    "            raise ResponseTooLarge(TOO_LARGE.format(what=what, budget=budget))\n"
    "        for event in events:\n"
)
_JSON_CHECK = (
    "        if len(body) + len(chunk) > budget:\n"
    "            raise ResponseTooLarge(TOO_LARGE.format(what=what, budget=budget))\n"
    "        body += chunk\n"
)
_LATE = "        if total > budget:\n            raise ResponseTooLarge(TOO_LARGE.format(what=what, budget=budget))\n"

WIRE = "tests/test_wire_budgets.py"
PAGES = "tests/test_sync_cursors.py"
REPLAY = "tests/test_replay.py"
SERVE = "tests/test_serve_limits.py"
SIGNING = "tests/test_identity_signing.py"

PLANTS = (
    Plant(
        "a",
        "the SSE path ignores the byte budget",
        "noemafed/mcp/client.py",
        _SSE_CHECK,
        "        for event in events:\n",
        (f"{WIRE}::test_an_sse_answer_over_its_budget_is_refused",),
    ),
    Plant(
        "b",
        "the JSON byte budget is checked one chunk late",
        "noemafed/mcp/client.py",
        _JSON_CHECK,
        _JSON_CHECK.replace("len(body) + len(chunk) > budget", "len(body) > budget"),
        (f"{WIRE}::test_the_budget_edges",),
    ),
    Plant(
        "b-sse",
        "the SSE byte budget is checked one chunk late",
        "noemafed/mcp/client.py",
        _SSE_CHECK,
        _LATE + "        total += len(chunk)\n        for event in events:\n",
        (f"{WIRE}::test_the_budget_edges",),
    ),
    Plant(
        "b-json-eq",
        "a JSON body of exactly the budget is refused",
        "noemafed/mcp/client.py",
        _JSON_CHECK,
        _JSON_CHECK.replace("> budget", ">= budget"),
        (f"{WIRE}::test_the_budget_edges",),
    ),
    Plant(
        "b-sse-eq",
        "an SSE stream of exactly the budget is refused",
        "noemafed/mcp/client.py",
        _SSE_CHECK,
        _SSE_CHECK.replace("total > budget", "total >= budget"),
        (f"{WIRE}::test_the_budget_edges",),
    ),
    Plant(
        "c",
        "a sync_events page that repeats the cursor's id is accepted",
        "noemafed/federation/syncer.py",
        "if previous and event.id <= previous:",
        "if previous and event.id < previous:",
        (
            f"{PAGES}::test_a_page_that_repeats_the_cursors_id_is_refused",
            f"{PAGES}::test_a_page_that_repeats_an_id_within_itself_is_refused",
        ),
    ),
    Plant(
        "c-cursor",
        "a page is only checked within itself, not against the cursor",
        "noemafed/federation/syncer.py",
        "    previous = cursor\n    for event in events[:trusted]:",
        '    previous = ""\n    for event in events[:trusted]:',
        (f"{PAGES}::test_a_page_that_repeats_the_cursors_id_is_refused",),
    ),
    Plant(
        "d",
        "the usage cursor is taken from the first row instead of the last",
        "noemafed/federation/syncer.py",
        'last = rows[-1].get("updated_at")',
        'last = rows[0].get("updated_at")',
        (f"{PAGES}::test_the_usage_cursor_is_the_last_rows_updated_at",),
    ),
    Plant(
        "e",
        "purge_long_term leaves the archived file",
        "noemafed/federation/replay.py",
        "traces.remove(self.dir, row.id, (traces.ACTIVE, traces.ARCHIVE))",
        "traces.remove(self.dir, row.id, (traces.ACTIVE,))",
        (f"{REPLAY}::test_purge_long_term_removes_the_archived_file",),
    ),
    Plant(
        "f",
        "the create fold sets `mid` from `long` on a consolidate",
        "noemafed/federation/replay.py",
        'tier = "mid" if tier == "short" else tier',
        'tier = "mid"',
        (f"{REPLAY}::test_the_create_fold_never_lowers_a_long_trace_to_mid",),
    ),
    Plant(
        "g",
        "serve clamps a limit over 1000 to 1000 instead of 100",
        "noemafed/mcp/server.py",
        "    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value > MAX_LIMIT:\n"
        "        return DEFAULT_LIMIT\n",
        "    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:\n"
        "        return DEFAULT_LIMIT\n"
        "    if value > MAX_LIMIT:\n"
        "        return MAX_LIMIT\n",
        (f"{SERVE}::test_a_limit_outside_1_to_1000_means_100",),
    ),
    Plant(
        "h",
        "the signing-key identity failure is downgraded to a transient reason",
        "noemafed/federation/classify.py",
        "IdentityFailure.SIGNING: Reason.IDENTITY_MISMATCH,",
        "IdentityFailure.SIGNING: Reason.OTHER,",
        (f"{SIGNING}::test_a_signing_key_refusal_needs_an_operator",),
    ),
    Plant(
        "h-identity",
        "a changed trust-on-first-use key is refused as a database failure",
        "noemafed/federation/identity.py",
        "        message = KEY_MISMATCH_ERROR.format(name=quoted, id=identity.id, peer=peer)\n"
        "        raise IdentityError(message, IdentityFailure.SIGNING)\n",
        "        message = KEY_MISMATCH_ERROR.format(name=quoted, id=identity.id, peer=peer)\n"
        "        raise IdentityError(message, IdentityFailure.DB)\n",
        (f"{SIGNING}::test_a_signing_key_refusal_needs_an_operator",),
    ),
)


TESTS_FAILED = 1  # pytest's exit status when tests ran and some failed (not a usage or collection error)


def pytest(args: list[str], show: bool = False) -> int:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "--tb=line", *args]
    output = None if show else subprocess.DEVNULL
    return subprocess.run(command, cwd=REPO, env=env, stdout=output, check=False).returncode


def with_plant(plant: Plant, args: list[str], show: bool) -> int:
    """Run pytest with the plant in place; the module is restored byte for byte whatever happens."""
    path = REPO / plant.path
    original = path.read_bytes()
    text = original.decode()
    if text.count(plant.old) != 1:
        raise SystemExit(f"plant {plant.name}: the code to change is not in {plant.path} exactly once")
    if plant.new == plant.old:
        raise SystemExit(f"plant {plant.name}: plants nothing (its new code is its old code)")
    try:
        path.write_text(text.replace(plant.old, plant.new), encoding="utf-8")
        return pytest(args, show)
    finally:
        path.write_bytes(original)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("names", nargs="*", help="plants to run (default: all)")
    parser.add_argument("--suite", action="store_true", help="run the whole suite with each plant")
    parser.add_argument("--list", action="store_true", help="list the plants and their tests")
    parser.add_argument("--show", action="store_true", help="show pytest's output (one line per failure)")
    options = parser.parse_args()
    chosen = [p for p in PLANTS if not options.names or p.name in options.names]
    if options.list:
        for plant in chosen:
            print(f"{plant.name:12} {plant.bug}\n{'':12} {' '.join(plant.tests)}")
        return 0
    failures = 0
    for plant in chosen:
        args = ["-m", "not zipapp and not slow", "tests"] if options.suite else list(plant.tests)
        caught = with_plant(plant, args, options.show) == TESTS_FAILED
        failures += not caught
        print(f"{plant.name:12} {'caught  ' if caught else 'SURVIVED'} {plant.bug}", flush=True)
    if not options.suite:
        tests = sorted({test for plant in chosen for test in plant.tests})
        clean = pytest(tests, options.show) == 0
        failures += not clean
        print(f"{'(none)':12} {'passes  ' if clean else 'FAILS   '} the tests on the clean code", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
