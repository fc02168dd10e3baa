"""The built artifact: dist/noemafed.pyz runs, does the job, and builds reproducibly."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from conftest import PYZ, REPO

from noemafed import __version__

pytestmark = pytest.mark.zipapp


def run_pyz(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if not PYZ.exists():
        pytest.fail("dist/noemafed.pyz is missing: run ./build.sh (scripts/test.sh does)")
    return subprocess.run(
        [sys.executable, str(PYZ), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_pyz_answers_version() -> None:
    result = run_pyz("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"noemafed {__version__}\n"


def test_pyz_runs_under_its_shebang_python() -> None:
    """The file itself is executable with `/usr/bin/env python3`, as an operator would run it."""
    assert PYZ.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    result = subprocess.run([str(PYZ), "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "Usage: noemafed" in result.stdout


def test_pyz_init_then_status_json_validates(tmp_path: Path) -> None:
    cortex = tmp_path / "c"
    assert run_pyz("init", str(cortex), "--name", "alpha").returncode == 0
    result = run_pyz("--cortex", str(cortex), "status", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, json.loads((REPO / "docs" / "status.schema.json").read_text()))
    assert doc["cortex"]["name"] == "alpha"
    conn = sqlite3.connect(cortex / "db" / "noema.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_pyz_reports_errors_with_exit_codes(tmp_path: Path) -> None:
    result = run_pyz("--cortex", str(tmp_path / "missing"), "status")
    assert result.returncode == 66
    assert result.stderr.startswith("Error: no cortex at --cortex")
    assert "Traceback" not in result.stderr


def _build_in_clone(tmp_path: Path, name: str) -> str:
    clone = tmp_path / name / "noemafed"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("SOURCE_DATE_EPOCH", None)
    subprocess.run([str(clone / "build.sh")], check=True, timeout=600, env=env, capture_output=True)
    return hashlib.sha256((clone / "dist" / "noemafed.pyz").read_bytes()).hexdigest()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to clone the checkout")
def test_two_builds_from_two_checkout_paths_are_identical(tmp_path: Path) -> None:
    if subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, check=False
    ).returncode:
        pytest.skip("the checkout has no commit to clone")
    first = _build_in_clone(tmp_path, "one")
    second = _build_in_clone(tmp_path, "somewhere-else")
    assert first == second
