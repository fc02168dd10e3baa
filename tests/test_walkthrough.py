"""What the README tells a new user to do, done with the built pyz copied to another folder and run as README
shows (`./noemafed.pyz ...`), in a fresh HOME and as a user whose home is no use: init, add-peer, keygen,
status, sync --once against a real peer (our own serve of a second cortex on 127.0.0.1), peers, set-peer and
remove-peer. Each step's exit code and first line are asserted.

We run as root, so a read-only home cannot be played by permissions (root writes through mode 0555); it is
played by a HOME that is unset, that does not exist, or that is a file (nothing can be created under it, not
even by root). What only a real unprivileged user would show (EACCES on a 0555 home) is left to
test_zipapp.py's service-user test, which says so too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from conftest import PYZ, REPO
from sync_helpers import seed

pytestmark = pytest.mark.zipapp

HOMES = ["fresh", "unset", "missing", "a-file"]
LISTENING = re.compile(r"\[serve\] listening on http://127\.0\.0\.1:(\d+)/mcp \(access: open\)")


class User:
    """A shell session of the README's new user: the pyz in its own folder, run as `./noemafed.pyz`."""

    def __init__(self, root: Path, home: str) -> None:
        self.bin = root / "opt"
        self.bin.mkdir()
        shutil.copy(PYZ, self.bin / "noemafed.pyz")
        (self.bin / "noemafed.pyz").chmod(0o755)
        self.work = root / "work"
        self.work.mkdir()
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("SHIV_", "XDG_", "NOEMA")) and key not in ("HOME", "PYTHONPATH")
        }
        env["TMPDIR"] = str(root / "tmp")
        (root / "tmp").mkdir()
        if home == "fresh":
            env["HOME"] = str(root / "home")
            (root / "home").mkdir()
        elif home == "missing":
            env["HOME"] = str(root / "nonexistent")
        elif home == "a-file":
            (root / "home-file").write_text("not a folder\n")
            env["HOME"] = str(root / "home-file")
        self.env = env
        self.cortexes = (root / "home" if home == "fresh" else self.work) / "cortexes"

    def argv(self, *args: str) -> list[str]:
        return ["./noemafed.pyz", *args]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            cwd=self.bin,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def step(self, *args: str, code: int = 0) -> tuple[str, str]:
        """Run one README step; it must exit `code` and never show a traceback. Returns stdout's and stderr's
        first lines."""
        result = self.run(*args)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        first = (result.stdout.splitlines() or [""])[0]
        return first, (result.stderr.splitlines() or [""])[0]


@pytest.fixture(params=HOMES)
def user(request: pytest.FixtureRequest, tmp_path: Path) -> User:
    if not PYZ.exists():
        pytest.fail("dist/noemafed.pyz is missing: run ./build.sh (scripts/test.sh does)")
    return User(tmp_path, request.param)


@pytest.fixture
def laptop(user: User) -> Iterator[tuple[Path, int]]:
    """The peer: a second cortex with a few traces, served by the same pyz on 127.0.0.1 (port 0)."""
    path = user.cortexes / "laptop"
    assert user.step("init", str(path), "--name", "laptop")[0].startswith('Initialized cortex "laptop"')
    seed(path, 3, prefix="laptop")
    proc = subprocess.Popen(
        user.argv("--cortex", str(path), "serve", "--port", "0"),
        cwd=user.bin,
        env=user.env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        port = 0
        while not port:
            line = proc.stderr.readline()
            assert line, "serve exited before listening"
            assert time.monotonic() < deadline
            match = LISTENING.search(line)
            port = int(match.group(1)) if match else 0
        yield path, port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_readme_walkthrough(user: User, laptop: tuple[Path, int]) -> None:
    laptop_path, port = laptop
    research = user.cortexes / "research"
    cortex = ["--cortex", str(research)]

    # "./noemafed.pyz init ~/cortexes/research --name research"
    out, _ = user.step("init", str(research), "--name", "research")
    manifest = (research / "cortex.md").read_text()
    cortex_id = re.search(r"^id: (\w{26})$", manifest, re.MULTILINE)
    assert cortex_id
    assert out == f'Initialized cortex "research" ({cortex_id.group(1)}) at {research}'

    # "./noemafed.pyz --cortex ~/cortexes/research add-peer laptop https://laptop.lan:3000" (here: the real peer)
    endpoint = f"http://127.0.0.1:{port}"
    out, _ = user.step(*cortex, "add-peer", "laptop", endpoint)
    assert out == f'Added peer "laptop" ({endpoint}) to cortex.md'
    # a mistake is caught where it is made (README: "A bad value exits 2 with Error: and a Hint:")
    _, err = user.step(*cortex, "add-peer", "laptop2", "laptop.lan:3000", code=2)
    assert err == 'Error: endpoint "laptop.lan:3000" has no scheme'

    out, _ = user.step(*cortex, "keygen")
    assert out == f"Signing key written to {research / 'noema-signing.key'} (mode 0600)"
    assert (research / "noema-signing.key").stat().st_mode & 0o777 == 0o600

    out, _ = user.step(*cortex, "status")
    assert out == "Cortex: research"
    status = json.loads(user.run(*cortex, "status", "--json").stdout)
    jsonschema.validate(status, json.loads((REPO / "docs" / "status.schema.json").read_text()))
    assert [peer["name"] for peer in status["peers"]] == ["laptop"]

    # -v prints the report; under cron (no terminal) a clean run prints nothing.
    out, _ = user.step(*cortex, "sync", "--once", "-v")
    applied = re.fullmatch(r"laptop: ok, (\d+) events applied, cursor \w{26}", out)
    assert applied, out
    assert int(applied.group(1)) > 0
    assert sorted(p.name for p in (research / "traces").glob("*.md")) == sorted(
        p.name for p in (laptop_path / "traces").glob("*.md")
    )
    assert user.step(*cortex, "sync", "--once") == ("", "")
    status = json.loads(user.run(*cortex, "status", "--json").stdout)
    laptop_id = re.search(r"^id: (\w{26})$", (laptop_path / "cortex.md").read_text(), re.MULTILINE)
    assert laptop_id
    assert status["peers"][0]["cortex_id"] == laptop_id.group(1)

    out, _ = user.step(*cortex, "peers")
    assert out.split() == ["NAME", "ENDPOINT", "MODE", "PINNED", "CORTEX", "ID"]

    out, _ = user.step(*cortex, "set-peer", "laptop", "--endpoint", f"http://localhost:{port}")
    assert out == 'Peer "laptop" updated in cortex.md:'
    assert user.step(*cortex, "sync", "--once") == ("", "")  # the new endpoint reaches the same peer

    # Without a terminal remove-peer needs --yes (README), then removes the peer with its state.
    _, err = user.step(*cortex, "remove-peer", "laptop", code=2)
    assert err == "Error: remove-peer asks before it changes anything, and stdin is not a terminal"
    out, _ = user.step(*cortex, "remove-peer", "laptop", "--yes")
    assert out == 'About to remove 1 peer(s) from cortex "research":'
    out, _ = user.step(*cortex, "peers")
    assert out == "No peers configured. Add peers to cortex.md under the federation section."


def test_the_pyz_in_another_folder_needs_nothing_from_the_checkout(user: User) -> None:
    """The copy runs without PYTHONPATH or the checkout, with whatever home this user has."""
    result = user.run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("noemafed ")
    assert "PYTHONPATH" not in user.env
