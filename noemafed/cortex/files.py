"""Small files replaced whole (cortex.md, the metrics file), and the folder sync that makes a rename durable.

Trace files have their own writer (`traces.write_atomic`: its temp names, dry runs, the crash undo log).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_dir(folder: str | Path) -> None:
    """Sync a folder's entries, so a file created, renamed or deleted in it stays so after a power loss."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, text: str, mode: int) -> None:
    """Replace `path` with `text` whole or not at all: a reader sees the old file or the new one, never half.

    A temp file in the same folder, `.<name>.<random>.tmp` (hidden, so neither a collector reading `*.prom` nor
    a reader of `*.md` ever sees it), written, given `mode` and fsynced, is renamed over `path`; the folder is
    then synced so the rename survives a crash, except where a folder cannot be opened (some network file
    systems), where the file is in place all the same. A folder this user cannot write is named in the error.
    """
    import tempfile  # noqa: PLC0415 (only commands that write a file pay for it, never a caught-up cron run)

    try:
        descriptor, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except PermissionError as exc:  # name the folder the user cannot write, not a random temp name
        raise PermissionError(exc.errno, exc.strerror, str(path.parent)) from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    with contextlib.suppress(OSError):
        fsync_dir(path.parent)
