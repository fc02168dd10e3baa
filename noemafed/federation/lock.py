"""No overlapping syncs: an flock on a file in the cortex's database folder, released by the kernel on death."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from noemafed.cortex.open import database_dir
from noemafed.errors import ExitCode, NoemafedError
from noemafed.records import Record

LOCK_FILE = "noemafed-sync.lock"
_POLL_SECONDS = 0.1

HELD_ERROR = "another noemafed {what}{holder} holds {path}{waited}"
HELD_BY_SYNC = "sync"
HELD_BY_CONFIG = "remove-peer or reset-peer"
HELD_HOLDER = " (pid {pid})"
HELD_WAITED = " after waiting {seconds:g}s"
HELD_HINT = "let it finish, or pass --wait SECONDS to queue behind it"

# Who holds the lock, written after the pid so configuration commands can name what is running.
ROLE_ONCE = "once"  # `sync --once`: ends by itself
ROLE_DAEMON = "daemon"  # `sync` without --once: holds the lock until stopped, reads cortex.md only at start
ROLE_CONFIG = "config"  # remove-peer, reset-peer: a few milliseconds
ROLES = (ROLE_ONCE, ROLE_DAEMON, ROLE_CONFIG)


class LockHolder(Record):
    """The process holding a cortex's sync lock: its pid and role ("" when an older noemafed wrote only the pid)."""

    pid: int
    role: str

    @property
    def restart_needed(self) -> bool:
        """A daemon reads cortex.md once, at start; an older noemafed's holder may be one too."""
        return self.role in (ROLE_DAEMON, "")

    @property
    def run_under_way(self) -> bool:
        """A `sync --once` run that started before a change, and the next run will see it."""
        return self.role == ROLE_ONCE


class LockHeldError(NoemafedError):
    """Another noemafed sync holds this cortex."""

    code = "locked"
    exit_code = ExitCode.LOCKED

    def __init__(self, message: str, hint: str | None = None, holder: LockHolder | None = None) -> None:
        super().__init__(message, hint)
        self.holder = holder  # so a command without --wait can give its own hint


class SyncLock:
    """Held for a whole run. The pid written inside is informational; the flock is the lock."""

    def __init__(self, db_dir: Path, role: str = ROLE_ONCE) -> None:
        self.path = db_dir / LOCK_FILE
        self.role = role
        self._fd: int | None = None

    def acquire(self, wait_seconds: float = 0.0) -> None:
        """Take the lock, waiting up to `wait_seconds`; a holder that was killed holds nothing."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(wait_seconds, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    shown = HELD_HOLDER.format(pid=holder.pid) if holder else ""
                    waited = HELD_WAITED.format(seconds=wait_seconds) if wait_seconds > 0 else ""
                    what = HELD_BY_CONFIG if holder and holder.role == ROLE_CONFIG else HELD_BY_SYNC
                    message = HELD_ERROR.format(what=what, holder=shown, path=self.path, waited=waited)
                    raise LockHeldError(message, HELD_HINT, holder) from None
                time.sleep(_POLL_SECONDS)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {self.role}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SyncLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> LockHolder | None:
    """The pid and role written by the holder; None when the file says nothing usable."""
    try:
        fields = os.pread(fd, 64, 0).decode("ascii", errors="replace").split()
    except OSError:
        return None
    if not fields or not fields[0].isdigit():
        return None
    role = fields[1] if len(fields) > 1 and fields[1] in ROLES else ""
    return LockHolder(int(fields[0]), role)


def lock_holder(db_dir: Path) -> LockHolder | None:
    """Who holds the sync lock right now, or None; never creates the file, never waits.

    A shared flock conflicts only with a holder's exclusive one, and is dropped at once; a sync that starts in
    that instant is refused (exit 75) as if another sync ran, which its --wait or the next cron run absorbs.
    """
    try:
        fd = os.open(db_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:  # no lock file: no noemafed sync has ever run here, so none runs now
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd) or LockHolder(0, "")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def sync_running(cortex_dir: Path) -> LockHolder | None:
    """The noemafed sync running on this cortex, if any: what a configuration change must tell to restart.

    Best effort: a cortex whose database folder cannot even be found runs no sync of ours.
    """
    try:
        return lock_holder(database_dir(cortex_dir))
    except NoemafedError:
        return None
