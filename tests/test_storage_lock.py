"""noema's storage lock: noemafed holds it shared while its database is open, and never writes under a
`noema cortex compact` or storage migration (which hold it exclusively)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import make_cortex, run_cli, state_rows
from peers.stdlib_peer import StdlibPeer
from sync_helpers import events, source, target_with

from noemafed.cortex import storage_lock
from noemafed.cortex.open import open_database


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "runtime"
    path.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(path))
    return path


@contextmanager
def held(path: Path, mode: int) -> Iterator[None]:
    """Another process's hold on a lock file (flock locks belong to the open file, so a second open competes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, mode | fcntl.LOCK_NB)
        yield
    finally:
        os.close(descriptor)


def test_the_runtime_path_is_noema_s(tmp_path: Path, runtime_dir: Path) -> None:
    cortex = make_cortex(tmp_path)
    digest = hashlib.sha256(os.fsencode(os.path.realpath(cortex))).hexdigest()
    expected = runtime_dir / "noema" / "storage-locks" / digest / "storage.lock"
    assert storage_lock.runtime_lock_path(cortex, os.environ) == expected


def test_an_open_database_holds_both_locks_shared_until_closed(tmp_path: Path) -> None:
    cortex = make_cortex(tmp_path)
    runtime = storage_lock.runtime_lock_path(cortex, os.environ)
    conn = open_database(cortex)
    for path in (runtime, cortex / ".noema-storage.lock"):
        with pytest.raises(BlockingIOError), held(path, fcntl.LOCK_EX):
            pass  # what `noema cortex compact` would meet
        with held(path, fcntl.LOCK_SH):
            pass  # other clients share it
    assert oct(runtime.parent.stat().st_mode & 0o777) == "0o700"
    conn.close()
    with held(runtime, fcntl.LOCK_EX), held(cortex / ".noema-storage.lock", fcntl.LOCK_EX):
        pass  # released with the connection


@pytest.mark.parametrize("which", ["runtime", "legacy"])
def test_a_compaction_fails_each_peer_with_local_storage_and_writes_nothing(
    tmp_path: Path, which: str
) -> None:
    """Bug: noemafed ignored the lock and could write while `noema cortex compact` rewrote the database."""
    src = source(tmp_path, count=2)
    with StdlibPeer(src) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        path = (
            storage_lock.runtime_lock_path(target, os.environ)
            if which == "runtime"
            else target / ".noema-storage.lock"
        )
        started = time.monotonic()
        with held(path, fcntl.LOCK_EX):
            result = run_cli(["--cortex", str(target), "sync", "--once", "--json"])
        elapsed = time.monotonic() - started
        [report] = json.loads(result.stdout)["peers"]
        assert result.exit_code == 3
        assert (report["reason"], report["phase"]) == ("local_storage", "open")
        assert "storage lock is held exclusively" in report["error"]
        assert 4.5 < elapsed < 15  # waited the busy timeout, then gave up
        assert events(target) == []
        assert run_cli(["--cortex", str(target), "sync", "--once"]).exit_code == 0  # the next run syncs
    health = json.loads(state_rows(target)["peer:src:health"])
    assert "last_error" not in health


def test_status_waits_then_names_the_busy_storage(tmp_path: Path) -> None:
    cortex = make_cortex(tmp_path)
    with held(cortex / ".noema-storage.lock", fcntl.LOCK_EX):
        result = run_cli(["--cortex", str(cortex), "status"])
    assert result.exit_code == 69
    assert result.stderr.startswith(f"Error: {cortex}: noema's storage lock is held exclusively")
