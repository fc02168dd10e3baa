"""Every command as a user who may not write the cortex (issue 13, "No traceback, anywhere").

The suite runs as root, whom file modes do not stop, so these tests run the built pyz as `nobody` (uid 65534)
through the system's python3, with no HOME, as a service user would: a cortex owned by root is then read-only to
it, a database of mode 0600 unreadable. Each asserts the exit code, the exact first line of stderr, and that the
cortex is unchanged (every file's bytes and mode). They need root to switch users and are skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PYZ, make_cortex, run_cli

pytestmark = pytest.mark.zipapp

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"  # the venv's interpreter lives under /root, which nobody may not enter


def _can_switch_users() -> bool:
    if os.geteuid() != 0 or not os.access(SYSTEM_PYTHON, os.X_OK):
        return False
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import os; print(os.getuid())"],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stdout.strip() == str(NOBODY)


needs_root = pytest.mark.skipif(
    not _can_switch_users(), reason="needs root and /usr/bin/python3 to run as nobody"
)


@pytest.fixture
def world() -> Iterator[Path]:
    """A folder nobody may enter (pytest's own tmp folders are 0700 root), holding a copy of the pyz."""
    root = Path(tempfile.mkdtemp(prefix="noemafed-unprivileged-"))
    root.chmod(0o755)
    shutil.copy2(PYZ, root / "noemafed.pyz")
    (root / "noemafed.pyz").chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root)


def shared_tmp(world: Path) -> Path:
    """The temp folder every user shares (noema's runtime lock folders go there without XDG_RUNTIME_DIR)."""
    tmp = world / "tmp"
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o1777)
    return tmp


def as_nobody(world: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "TMPDIR": str(shared_tmp(world))}
    return subprocess.run(
        [SYSTEM_PYTHON, str(world / "noemafed.pyz"), *args],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def snapshot(cortex: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under the cortex with its mode and bytes (folders with their mode)."""
    out: dict[str, tuple[int, bytes]] = {}
    for path in sorted(cortex.rglob("*")):
        mode = stat.S_IMODE(path.lstat().st_mode)
        out[str(path.relative_to(cortex))] = (mode, path.read_bytes() if path.is_file() else b"")
    return out


def root_owned_cortex(world: Path) -> Path:
    cortex = make_cortex(world, "cortex")
    for path in [cortex, *cortex.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return cortex


def nobody_owned_cortex(world: Path) -> Path:
    cortex = root_owned_cortex(world)
    for path in [cortex, *cortex.rglob("*")]:
        os.chown(path, NOBODY, NOBODY)
    return cortex


DB_COMMANDS = [
    ["status"],
    ["peers"],
    ["reset-peer", "p", "--yes"],
    ["remove-peer", "p", "--yes"],
    ["sync", "--once"],
    ["serve", "--port", "0"],
]
MANIFEST_COMMANDS = [
    ["add-peer", "q", "http://127.0.0.1:9"],
    ["set-mode", "subscribe"],
    ["set-interval", "5m"],
    ["set-verify", "warn"],
]


@needs_root
def test_the_pyz_runs_as_another_user_without_a_home(world: Path) -> None:
    """The control: the harness really runs as nobody, and a cortex nobody owns works."""
    cortex = nobody_owned_cortex(world)
    result = as_nobody(world, "--cortex", str(cortex), "status", "--json")
    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads(result.stdout)["cortex"]["name"]


@needs_root
def test_a_runtime_lock_folder_another_user_made_first_is_passed_over(world: Path) -> None:
    """Bug: root's noema made the cortex's runtime lock folder (0700) first, and every later run by the service
    user failed with `permission denied` on a lock it could never take; the cortex's own lock file still counts."""
    from noemafed.cortex.storage_lock import acquire_shared, runtime_lock_path

    cortex = nobody_owned_cortex(world)
    environ = {"TMPDIR": str(shared_tmp(world))}
    acquire_shared(cortex, 1.0, environ).release()  # as root
    assert stat.S_IMODE(runtime_lock_path(cortex, environ).parent.stat().st_mode) == 0o700
    result = as_nobody(world, "--cortex", str(cortex), "status")
    assert (result.returncode, result.stderr) == (0, "")


@needs_root
@pytest.mark.parametrize("command", DB_COMMANDS, ids=" ".join)
def test_a_database_this_user_may_not_write_is_permission_denied(world: Path, command: list[str]) -> None:
    """Bug: a read-only database was `not a usable noema database: attempt to write a readonly database` (69),
    and a runtime lock folder another user made first ended the run before the database was even looked at."""
    cortex = root_owned_cortex(world)
    add = run_cli(["--cortex", str(cortex), "add-peer", "p", "http://127.0.0.1:9"])  # as root: a peer to name
    assert add.exit_code == 0, add.stderr
    before = snapshot(cortex)
    result = as_nobody(world, "--cortex", str(cortex), *command)
    assert result.returncode == 77, result.stderr
    # reset-peer and remove-peer take the sync lock (a file beside the database) before they open it
    denied = "noemafed-sync.lock" if command[0] in ("reset-peer", "remove-peer") else "noema.db"
    assert result.stderr.splitlines()[0] == f"Error: permission denied: {cortex / 'db' / denied}"
    assert "Traceback" not in result.stderr
    assert snapshot(cortex) == before


@needs_root
@pytest.mark.parametrize("command", [["status", "--json"], ["sync", "--once", "--json"]], ids=" ".join)
def test_json_commands_print_their_error_document_on_exit_77(world: Path, command: list[str]) -> None:
    cortex = root_owned_cortex(world)
    result = as_nobody(world, "--cortex", str(cortex), *command)
    assert result.returncode == 77
    document = json.loads(result.stdout)
    assert document["error"]["exit_code"] == 77


@needs_root
def test_an_unreadable_database_is_permission_denied(world: Path) -> None:
    cortex = root_owned_cortex(world)
    (cortex / "db" / "noema.db").chmod(0o600)
    result = as_nobody(world, "--cortex", str(cortex), "status")
    assert result.returncode == 77
    assert result.stderr.splitlines()[0] == f"Error: permission denied: {cortex / 'db' / 'noema.db'}"


@needs_root
@pytest.mark.parametrize("command", MANIFEST_COMMANDS, ids=" ".join)
def test_a_cortex_folder_this_user_may_not_write_is_permission_denied(
    world: Path, command: list[str]
) -> None:
    """Bug: the refusal named the random temp file it could not create, not the folder."""
    cortex = root_owned_cortex(world)
    before = snapshot(cortex)
    result = as_nobody(world, "--cortex", str(cortex), *command)
    assert result.returncode == 77, result.stderr
    assert result.stderr.splitlines()[0] == f"Error: permission denied: {cortex}"
    assert snapshot(cortex) == before


@needs_root
def test_init_into_a_folder_this_user_may_not_write_is_permission_denied(world: Path) -> None:
    parent = world / "parent"
    parent.mkdir(mode=0o755)
    result = as_nobody(world, "init", str(parent / "cortex"))
    assert result.returncode == 77
    assert result.stderr.splitlines()[0] == f"Error: permission denied: {parent / 'cortex'}"
    assert list(parent.iterdir()) == []


@needs_root
def test_a_read_only_cortex_md_is_refused_not_replaced(world: Path) -> None:
    """Bug: cortex.md at mode 0444 was silently replaced (a rename needs only the folder to be writable)."""
    cortex = nobody_owned_cortex(world)
    (cortex / "cortex.md").chmod(0o444)
    before = snapshot(cortex)
    result = as_nobody(world, "--cortex", str(cortex), "add-peer", "q", "http://127.0.0.1:9")
    assert result.returncode == 77, result.stderr
    assert result.stderr.splitlines()[0] == f"Error: permission denied: {cortex / 'cortex.md'}"
    assert snapshot(cortex) == before


def test_a_read_only_cortex_md_is_refused_even_for_root(tmp_path: Path) -> None:
    """Root is not stopped by the mode, so the refusal is noemafed's own check, not the file system's."""
    cortex = make_cortex(tmp_path)
    (cortex / "cortex.md").chmod(0o444)
    text = (cortex / "cortex.md").read_bytes()
    result = run_cli(["--cortex", str(cortex), "set-interval", "5m"])
    assert result.exit_code == 77
    assert result.stderr.splitlines()[0] == f"Error: permission denied: {cortex / 'cortex.md'}"
    assert (cortex / "cortex.md").read_bytes() == text
    assert stat.S_IMODE((cortex / "cortex.md").stat().st_mode) == 0o444
