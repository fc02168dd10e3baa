"""Drift guards for docs/robustness.md, which scripts/robustness_report.py writes from a run of the corpus."""

from __future__ import annotations

import ast

import pytest
from conftest import REPO

CORPUS = ("test_hostile_peers.py", "test_crash_trials.py")
DOC = REPO / "docs" / "robustness.md"


def _tests(name: str) -> dict[str, str]:
    """Each test function of a corpus file and its docstring."""
    tree = ast.parse((REPO / "tests" / name).read_text())
    return {
        node.name: ast.get_docstring(node) or ""
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


@pytest.mark.parametrize("name", CORPUS)
def test_every_case_says_what_it_does_and_what_is_expected(name: str) -> None:
    """The docstring is the case's description in the document: what the peer or client does, then the outcome."""
    vague = [
        test for test, doc in _tests(name).items() if "Expected:" not in doc or doc.startswith("Expected:")
    ]
    assert not vague, (
        f"give these a docstring `<what the peer does>. Expected: <exit, reason, cursor>`: {vague}"
    )


@pytest.mark.parametrize("name", CORPUS)
def test_the_document_lists_every_case(name: str) -> None:
    missing = [test for test in _tests(name) if f".{test}`" not in DOC.read_text()]
    assert not missing, (
        f"regenerate docs/robustness.md (scripts/robustness_report.py): {missing} are not in it"
    )
