"""No overlapping syncs: an flock on a file in the cortex's database folder, released by the kernel on death."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from noemafed.errors import ExitCode, NoemafedError

LOCK_FILE = "noemafed-sync.lock"
_POLL_SECONDS = 0.1

HELD_ERROR = "another noemafed sync{holder} holds {path}{waited}"
HELD_HOLDER = " (pid {pid})"
HELD_WAITED = " after waiting {seconds:g}s"
HELD_HINT = "let it finish, or pass --wait SECONDS to queue behind it"


class LockHeldError(NoemafedError):
    """Another noemafed sync holds this cortex."""

    code = "locked"
    exit_code = ExitCode.LOCKED


class SyncLock:
    """Held for a whole run. The pid written inside is informational; the flock is the lock."""

    def __init__(self, db_dir: Path) -> None:
        self.path = db_dir / LOCK_FILE
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
                    waited = HELD_WAITED.format(seconds=wait_seconds) if wait_seconds > 0 else ""
                    message = HELD_ERROR.format(holder=holder, path=self.path, waited=waited)
                    raise LockHeldError(message, hint=HELD_HINT) from None
                time.sleep(_POLL_SECONDS)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
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


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return ""
    return HELD_HOLDER.format(pid=text) if text.isdigit() else ""
