"""Shared fixtures: an isolated environment, real cortexes in tmp_path, and an in-process CLI runner."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import settings

from noemafed.cli import Environment, main
from noemafed.cortex import frontmatter
from noemafed.cortex.open import init_cortex

REPO = Path(__file__).resolve().parent.parent
PYZ = REPO / "dist" / "noemafed.pyz"
# scripts/seed.py is how tests make realistic data, the same way the demo and the benchmarks do.
sys.path.insert(0, str(REPO / "scripts"))

# `pytest --hypothesis-profile=deep tests/test_convergence.py`: the convergence property (which otherwise runs
# a CI budget) with many more and longer runs; other property tests keep their own settings where they set them.
settings.register_profile("deep", max_examples=5000, stateful_step_count=60, deadline=None)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads or writes the real home, registry or key: each gets its own HOME and XDG dirs."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("SHIV_ROOT", str(home / ".shiv"))
    for name in ("NOEMA_MCP_KEY", "NOEMA_CORTEX", "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return home


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(
    args: list[str], stdin: str | None = None, env: dict[str, str] | None = None, tty: tuple[str, ...] = ()
) -> Result:
    """Run noemafed's real entry point in-process, with the error boundary and exit codes of main(); `tty`
    names the streams that play a terminal ("stdin", "stdout", "stderr"), as if run by hand rather than by
    cron."""
    runner = CliRunner()
    with runner.isolation(input=stdin, env=env) as streams:
        try:
            main(args, Environment(**{f"{name}_isatty": True for name in tty}))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        stdout, stderr = streams[0].getvalue(), streams[1].getvalue()
    return Result(code, stdout.decode(), stderr.decode())


def version_line(commit: str = "unknown") -> str:
    """What `--version` prints: a checkout's commit is unknown, a pyz built by build.sh names its own."""
    from noemafed import __version__
    from noemafed.signing import verifier

    return (
        f"noemafed {__version__} (commit {commit}) on Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, Ed25519: {verifier.current().label}\n"
    )


def make_cortex(
    root: Path, name: str = "alpha", peers: list[dict[str, str]] | None = None, **fed: str
) -> Path:
    """A real cortex made by `init`, with a federation block written into cortex.md when asked."""
    path = root / name
    init_cortex(path, name)
    if peers is not None or fed:
        set_federation(path, peers or [], **fed)
    return path


def set_federation(path: Path, peers: list[dict[str, str]], **fed: str) -> None:
    """Rewrite the manifest's federation block the way an operator would edit it by hand."""
    manifest = path / "cortex.md"
    yaml_text, body = frontmatter.split_manifest(manifest.read_text())
    raw = frontmatter.loads(yaml_text)
    block: dict[str, object] = dict(fed)
    block["peers"] = [dict(peer) for peer in peers]
    raw["federation"] = block
    manifest.write_text(frontmatter.join_manifest(frontmatter.dumps(raw), body))


def db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path / "db" / "noema.db", isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def put_state(path: Path, **values: str) -> None:
    """Seed federation_state rows directly, as a previous sync would have left them."""
    conn = db(path)
    with conn:
        for key, value in values.items():
            conn.execute("INSERT OR REPLACE INTO federation_state(key, value) VALUES (?, ?)", (key, value))
    conn.close()


def state_rows(path: Path) -> dict[str, str]:
    conn = db(path)
    rows = dict(conn.execute("SELECT key, value FROM federation_state").fetchall())
    conn.close()
    return rows


@pytest.fixture
def chdir_tmp(tmp_path: Path) -> Iterator[Path]:
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)
