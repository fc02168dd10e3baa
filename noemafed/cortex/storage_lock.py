"""noema's storage lock, held shared while noemafed uses a cortex's database.

The live (Rust) build locks two files with `flock`: a per-user runtime file, keyed by the cortex's canonical
path, and `.noema-storage.lock` in the cortex. Every client holds them shared for as long as its database is
open; `noema cortex compact` and storage migrations take them exclusively, and refuse while anyone holds them.
Holding them shared means noemafed never writes under a compaction or migration, and none starts under us.
"""

from __future__ import annotations

import errno
import fcntl
import importlib
import os
import time
from collections.abc import Mapping
from pathlib import Path

from noemafed.errors import CortexUnavailableError

LEGACY_LOCK_FILE = ".noema-storage.lock"
RUNTIME_LOCK_FILE = "storage.lock"
RETRY_SECONDS = 0.05

BUSY_ERROR = (
    "{cortex}: noema's storage lock is held exclusively (`noema cortex compact` or a storage migration is "
    "running); waited {seconds:g}s"
)
BUSY_HINT = "wait for the compaction or migration to finish; the next run syncs as usual"
SYMLINK_ERROR = "storage paths must not be symlinks: {path}"


class StorageBusyError(CortexUnavailableError):
    """A compaction or storage migration holds noema's storage lock: this host's storage, not a peer, is busy."""

    code = "storage_busy"


def runtime_lock_path(cortex_dir: Path, environ: Mapping[str, str]) -> Path:
    """`<$XDG_RUNTIME_DIR or the temp dir>/noema/storage-locks/<sha256 of the canonical path>/storage.lock`."""
    # Rust's std::env::temp_dir() on Unix: $TMPDIR, else /tmp (not Python's longer search, which could differ).
    base = environ.get("XDG_RUNTIME_DIR") or environ.get("TMPDIR") or "/tmp"  # noqa: S108 (noema's own path)
    digest = _sha256_hex(os.fsencode(os.path.realpath(cortex_dir)))
    return Path(base) / "noema" / "storage-locks" / digest / RUNTIME_LOCK_FILE


def _sha256_hex(data: bytes) -> str:
    """SHA-256 from CPython's builtin module: hashlib loads OpenSSL's first, 2 ms of every `status` and `sync`."""
    for name in ("_sha256", "_sha2"):  # Python 3.11; 3.12 and later
        try:
            return str(importlib.import_module(name).sha256(data).hexdigest())
        except ImportError:
            continue
    import hashlib  # noqa: PLC0415 (a build without the builtin module)

    return hashlib.sha256(data).hexdigest()


class StorageLock:
    """The shared holds on noema's lock files; release them when the database is closed."""

    def __init__(self, descriptors: list[int]) -> None:
        self._descriptors = descriptors

    def release(self) -> None:
        for descriptor in self._descriptors:
            os.close(descriptor)  # closing the last descriptor drops the flock
        self._descriptors = []


def acquire_shared(cortex_dir: Path, wait_seconds: float, environ: Mapping[str, str]) -> StorageLock:
    """Hold both lock files shared (runtime first, as noema does), waiting up to `wait_seconds` for an
    exclusive holder to finish."""
    runtime = runtime_lock_path(cortex_dir, environ)
    deadline = time.monotonic() + wait_seconds
    descriptors: list[int] = []
    try:
        for path in (runtime, cortex_dir / LEGACY_LOCK_FILE):
            descriptor = _open_lock_file(path, private_parent=path == runtime)
            if descriptor is None:
                continue
            descriptors.append(descriptor)
            _lock_shared(descriptor, deadline, cortex_dir, wait_seconds)
    except BaseException:
        StorageLock(descriptors).release()
        raise
    return StorageLock(descriptors)


def _open_lock_file(path: Path, private_parent: bool) -> int | None:
    """The lock file opened for flock, created if missing; None where it cannot exist (a read-only cortex:
    no compaction can run there either) or this user cannot open it."""
    try:
        if path.is_symlink():
            raise CortexUnavailableError(SYMLINK_ERROR.format(path=path))
    except PermissionError:
        return None  # in a folder this user may not search: see below
    if private_parent:
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            return None
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)  # flock needs no write access
    except (FileNotFoundError, PermissionError):
        # Missing, or out of this user's reach: the runtime folder under a shared /tmp is private to the user
        # who made it first (0700), as noema makes it. Nothing this user runs can take a lock there; the cortex's own lock file
        # is what coordinates between users.
        return None


def _lock_shared(descriptor: int, deadline: float, cortex_dir: Path, wait_seconds: float) -> None:
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StorageBusyError(
                    BUSY_ERROR.format(cortex=cortex_dir, seconds=wait_seconds), hint=BUSY_HINT
                ) from None
            time.sleep(RETRY_SECONDS)
