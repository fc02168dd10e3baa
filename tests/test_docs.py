"""Drift guards for what mirrors the code by hand: docs/exit-codes.md against ExitCode, docs/dependencies.md
against pyproject.toml, the vulture whitelist against the names it vouches for."""

from __future__ import annotations

import re
import runpy
import tomllib

from conftest import REPO

from noemafed.errors import ExitCode
from noemafed.federation.verdict import CheckState

EXIT_CODES_DOC = REPO / "docs" / "exit-codes.md"
# A row of the main table: | 66 | `CORTEX_NOT_FOUND` | when ... |
_CODE_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*`([A-Z_]+)`\s*\|", re.MULTILINE)
# A row of the per-peer table: | outcome ... | 3 |
_OUTCOME_ROW = re.compile(r"^\|(?!\s*-).*\|\s*(\d+)\s*\|\s*$", re.MULTILINE)


def _documented_codes(text: str) -> dict[str, int]:
    return {name: int(number) for number, name in _CODE_ROW.findall(text)}


CHECK_SECTION = "\n## `status --check`\n"


def test_every_exit_code_is_documented_with_its_number() -> None:
    documented = _documented_codes(EXIT_CODES_DOC.read_text().split(CHECK_SECTION)[0])
    assert documented == {member.name: member.value for member in ExitCode}


def test_every_check_state_is_documented_with_its_number() -> None:
    documented = _documented_codes(EXIT_CODES_DOC.read_text().split(CHECK_SECTION)[1])
    assert documented == {member.name: member.value for member in CheckState}


def test_every_code_a_peer_outcome_names_exists() -> None:
    outcomes = [int(code) for code in _OUTCOME_ROW.findall(EXIT_CODES_DOC.read_text())]
    assert outcomes, "the per-peer outcome table is gone or no longer parses"
    assert set(outcomes) <= set(ExitCode)


def test_every_dependency_says_why_it_is_there() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    names = {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0] for requirement in requirements}
    rows = set(re.findall(r"^\| `([^`]+)`", (REPO / "docs" / "dependencies.md").read_text(), re.MULTILINE))
    assert names <= rows, f"add a row to docs/dependencies.md for {sorted(names - rows)}"


def test_the_vulture_whitelist_names_only_what_exists() -> None:
    # vulture only parses the whitelist; running it turns an entry for a renamed or removed name into an error.
    runpy.run_path(str(REPO / "scripts" / "vulture_whitelist.py"))


COMPATIBILITY_DOC = REPO / "docs" / "compatibility.md"
# A line of the index: | 8.1.7 | ... or | 9.12 | ...
_INDEX_ITEM = re.compile(r"^\| (8\.1\.\d+|9\.\d+) \|", re.MULTILINE)


def test_every_trap_of_the_spec_has_a_line_in_the_compatibility_index() -> None:
    """federation.md §8.1 and cortex.md §9 have 18 items each; each needs its decision (issue 12)."""
    items = _INDEX_ITEM.findall(COMPATIBILITY_DOC.read_text())
    assert sorted(items) == sorted({f"8.1.{n}" for n in range(1, 19)} | {f"9.{n}" for n in range(1, 19)})


def test_every_test_the_compatibility_doc_names_exists() -> None:
    text = COMPATIBILITY_DOC.read_text()
    tests = REPO / "tests"
    defined = set()
    for path in tests.glob("test_*.py"):
        defined.update(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.MULTILINE))
    files = set(re.findall(r"tests/(test_\w+\.py)", text))
    assert files, "the doc names no test file any more"
    assert {name for name in files if not (tests / name).is_file()} == set()
    names = set(re.findall(r"`(?:tests/test_\w+\.py::)?(test_\w+)`", text))
    assert names, "the doc names no test any more"
    assert names - defined == set()
