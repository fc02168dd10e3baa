"""The sync lock seen from the configuration commands: remove-peer, reset-peer and a renaming set-peer refuse
while a sync holds the cortex (exit 75, a hint that names the holder and no flag they lack), and the advice
after a change names what is actually running: a `noemafed sync` daemon, a `sync --once` run, or else noema
serve. Locks are real: a daemon in its own process, or a SyncLock held on another file descriptor."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, make_cortex, put_state, run_cli, state_rows
from test_cli_config import fingerprint

from noemafed.cortex.open import database_dir
from noemafed.federation.lock import (
    LOCK_FILE,
    ROLE_CONFIG,
    ROLE_DAEMON,
    ROLE_ONCE,
    LockHolder,
    SyncLock,
    lock_holder,
)

NOEMA_RESTART = "Restart `noema serve` for the change to take effect.\n"
APPLY = "Restart `noema serve` if it serves this cortex; the next `noemafed sync` reads cortex.md.\n"


def cortex(tmp_path: Path) -> Path:
    # Port 1 refuses at once: a daemon keeps running, backing off, and never syncs.
    path = make_cortex(
        tmp_path,
        "alpha",
        peers=[
            {"name": "beta", "endpoint": "http://127.0.0.1:1"},
            {"name": "gamma", "endpoint": "http://127.0.0.1:1"},
        ],
    )
    put_state(path, **{"peer:beta:last_event": "01JQH4HPD0B8E9WCXGFN1A33VE"})
    return path


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A real `noemafed sync` daemon on the cortex, in its own process, once it holds the lock."""
    path = cortex(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "noemafed", "--cortex", str(path), "sync"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 30
        while lock_holder(database_dir(path)) is None:
            assert proc.poll() is None, "the daemon exited"
            assert time.monotonic() < deadline, "the daemon never took the lock"
            time.sleep(0.05)
        yield path, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def once_lock(tmp_path: Path) -> Iterator[tuple[Path, SyncLock]]:
    """The lock as a `sync --once` run holds it (this process, another file descriptor)."""
    path = cortex(tmp_path)
    lock = SyncLock(database_dir(path), ROLE_ONCE)
    lock.acquire()
    try:
        yield path, lock
    finally:
        lock.release()


# ---- the lock file names its holder ---------------------------------------------------------------------


def test_lock_holder_reads_the_pid_and_role_and_never_creates_the_file(tmp_path: Path) -> None:
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    assert lock_holder(db_dir) is None
    assert not (db_dir / LOCK_FILE).exists()
    with SyncLock(db_dir, ROLE_DAEMON) as lock:
        lock.acquire()
        assert (db_dir / LOCK_FILE).read_text() == f"{os.getpid()} daemon\n"
        assert lock_holder(db_dir) == LockHolder(os.getpid(), ROLE_DAEMON)
    assert lock_holder(db_dir) is None  # released: the file stays, holding nothing


def test_a_lock_file_left_by_a_killed_holder_holds_nothing(tmp_path: Path) -> None:
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    (db_dir / LOCK_FILE).write_text("999999 daemon\n")
    assert lock_holder(db_dir) is None


# ---- remove-peer, reset-peer, set-peer --rename refuse while a sync runs ----------------------------------


def test_remove_peer_refuses_while_the_daemon_runs(daemon: tuple[Path, int]) -> None:
    path, pid = daemon
    # The daemon itself writes health records as it fails to reach the peers: compare what remove-peer would
    # change, cortex.md and beta's cursor, not the whole database.
    manifest = (path / "cortex.md").read_bytes()
    result = run_cli(["--cortex", str(path), "remove-peer", "beta", "--yes"])
    assert result.exit_code == 75, result.stderr
    lock = database_dir(path) / LOCK_FILE
    assert result.stderr == (
        f"Error: another noemafed sync (pid {pid}) holds {lock}\n"
        f"Hint: stop the `noemafed sync` daemon (pid {pid}) first (under systemd: systemctl stop <its unit>), "
        "run remove-peer again, then start the daemon\n"
    )
    assert "--wait" not in result.stderr  # remove-peer has no --wait
    assert result.stdout == ""
    assert (path / "cortex.md").read_bytes() == manifest
    assert state_rows(path)["peer:beta:last_event"] == "01JQH4HPD0B8E9WCXGFN1A33VE"


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["remove-peer", "beta", "--yes"], "remove-peer"),
        (["reset-peer", "beta", "--yes"], "reset-peer"),
        (["set-peer", "beta", "--rename", "delta"], "set-peer --rename"),
    ],
)
def test_state_changing_commands_refuse_while_a_sync_once_runs(
    once_lock: tuple[Path, SyncLock], args: list[str], command: str
) -> None:
    path, lock = once_lock
    before = fingerprint(path)
    result = run_cli(["--cortex", str(path), *args])
    assert result.exit_code == 75, result.stderr
    assert result.stderr == (
        f"Error: another noemafed sync (pid {os.getpid()}) holds {lock.path}\n"
        f"Hint: wait for that `noemafed sync --once` (pid {os.getpid()}) to end (at most its --max-duration), "
        f"then run {command} again\n"
    )
    assert fingerprint(path) == before


def test_a_sync_refused_by_a_remove_peer_names_it(tmp_path: Path) -> None:
    path = cortex(tmp_path)
    with SyncLock(database_dir(path), ROLE_CONFIG) as lock:
        lock.acquire()
        result = run_cli(["--cortex", str(path), "sync", "--once"])
    assert result.exit_code == 75
    assert result.stderr.splitlines()[0] == (
        f"Error: another noemafed remove-peer or reset-peer (pid {os.getpid()}) holds {lock.path}"
    )


def test_remove_peer_takes_the_lock_so_a_sync_cannot_start_meanwhile(tmp_path: Path) -> None:
    """While remove-peer waits at its prompt, it holds the lock: the state it showed is the state it clears."""
    path = cortex(tmp_path)
    seen: list[LockHolder | None] = []
    from noemafed.commands.peers import remove_peers

    def confirm(plan: object) -> bool:
        seen.append(lock_holder(database_dir(path)))
        return True

    remove_peers(lambda: path, ("beta",), False, confirm)
    assert seen == [LockHolder(os.getpid(), ROLE_CONFIG)]
    assert lock_holder(database_dir(path)) is None
    assert "peer:beta:last_event" not in state_rows(path)


def test_remove_peer_keep_state_runs_beside_a_daemon_and_names_it(daemon: tuple[Path, int]) -> None:
    path, pid = daemon
    result = run_cli(["--cortex", str(path), "remove-peer", "beta", "--yes", "--keep-state"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith(
        f"  beta: state kept\nRestart the `noemafed sync` daemon (pid {pid}) for the change to take effect.\n"
    )


# ---- the advice after a change names what runs -----------------------------------------------------------

CHANGES = [
    (["pause-peer", "beta"], NOEMA_RESTART),
    (["set-mode", "publish"], NOEMA_RESTART),
    (["set-interval", "5m"], APPLY),
    (["set-verify", "warn"], APPLY),
    (["set-peer", "beta", "--endpoint", "http://127.0.0.1:2"], APPLY),
]


@pytest.mark.parametrize(("args", "otherwise"), CHANGES, ids=[args[0] for args, _ in CHANGES])
def test_with_nothing_running_the_advice_names_noema_serve(
    tmp_path: Path, args: list[str], otherwise: str
) -> None:
    path = cortex(tmp_path)
    result = run_cli(["--cortex", str(path), *args])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith("\n" + otherwise)
    assert "noemafed sync` daemon" not in result.stdout


@pytest.mark.parametrize(("args", "otherwise"), CHANGES, ids=[args[0] for args, _ in CHANGES])
def test_with_a_daemon_running_the_advice_names_the_daemon(
    daemon: tuple[Path, int], args: list[str], otherwise: str
) -> None:
    path, pid = daemon
    result = run_cli(["--cortex", str(path), *args])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith(
        f"\nRestart the `noemafed sync` daemon (pid {pid}) for the change to take effect.\n"
    )
    assert "noema serve" not in result.stdout


@pytest.mark.parametrize(("args", "otherwise"), CHANGES, ids=[args[0] for args, _ in CHANGES])
def test_with_a_sync_once_running_the_advice_says_the_next_run_applies_it(
    once_lock: tuple[Path, SyncLock], args: list[str], otherwise: str
) -> None:
    path, _ = once_lock
    result = run_cli(["--cortex", str(path), *args])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith(
        f"\nA `noemafed sync --once` run (pid {os.getpid()}) is under way with the previous settings; "
        "the next run reads cortex.md.\n" + otherwise
    )


def test_add_peer_says_nothing_more_than_noema_unless_a_sync_runs(
    tmp_path: Path, daemon: tuple[Path, int]
) -> None:
    path, pid = daemon
    result = run_cli(["--cortex", str(path), "add-peer", "delta", "http://127.0.0.1:4"])
    assert result.stdout == (
        'Added peer "delta" (http://127.0.0.1:4) to cortex.md\n'
        f"Restart the `noemafed sync` daemon (pid {pid}) for the change to take effect.\n"
    )
    quiet = make_cortex(tmp_path / "other", "quiet")
    result = run_cli(["--cortex", str(quiet), "add-peer", "delta", "http://127.0.0.1:4"])
    assert result.stdout == 'Added peer "delta" (http://127.0.0.1:4) to cortex.md\n'
