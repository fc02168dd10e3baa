"""An undo log for the trace files one replay transaction touches, so a crash leaves no file ahead of the rows.

A replay page runs its DB statements in one SQLite transaction and its file steps (writes, renames,
deletions) as it goes. A crash before COMMIT rolls the rows back and leaves the files. Replaying the same
events again repairs them, but the retry does not always get the same events: by then another peer may
have delivered an event that changes a decision (a purge, a concurrent edit), and a trace file written for
a decision that never committed stays behind (a divergence record without a row, new content over an old
row). So before a transaction first touches a trace id, the state of its three folders is saved in a
folder of the replayer's own (`<db folder>/noemafed-replay-undo/<random token>/`; `sync` replays several
peers at once, each with its own connection):

- `journal`: one line per saved path, `B <n> <path>` (the file existed; a hard link to it is `<n>`) or
  `A <path>` (it did not exist), and `E <event id>` for the event whose file steps follow;
- a hard link per existing file (a copy where the file system refuses links): replacing or deleting the
  trace file later leaves the link holding the old content, at the cost of one `link` call. This relies on
  replay never writing a trace file in place: every write is a new file renamed over the old one.

After COMMIT the log is discarded. Every transaction starts, once it holds SQLite's write lock (so no other
replayer is inside a transaction), by looking at every log in the undo folder: one still there was left by
a crash (in this process or an earlier one), or belongs to a replayer that has committed and not yet
discarded it. The DB says which: an `E` event that is stored means the transaction committed, and the log is
dropped; none stored means it rolled back, and every saved path is put back as it was. Restoring is
idempotent, so a crash during it is repaired by the next run. A rollback that is not a crash puts the files
back before it releases the lock, so no other replayer sees them half restored.

Paths in the log are relative to the cortex and are built from valid trace ids only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from pathlib import Path

from noemafed.cortex import traces
from noemafed.cortex.files import fsync_dir

__all__ = ["UNDO_DIR", "FileUndo"]

UNDO_DIR = "noemafed-replay-undo"  # under the database folder: same file system as the cortex, ours alone
JOURNAL = "journal"


class FileUndo:
    """Saves trace files before a transaction changes them; restores them if the transaction did not commit."""

    def __init__(self, cortex_dir: Path, db_dir: Path, *, durable: bool = False) -> None:
        self.cortex_dir = cortex_dir
        self.root = db_dir / UNDO_DIR
        self.dir = self.root / os.urandom(8).hex()
        self.journal = self.dir / JOURNAL
        self.durable = durable  # fsync each line before the file step it protects (power loss)
        self._fd: int | None = None
        self._saved: set[str] = set()
        self._event = ""  # the event whose file steps come next; written before its first saved path
        self._event_written = ""
        self._count = 0

    # -- during a transaction ------------------------------------------------------------------------------

    def event(self, event_id: str) -> None:
        """The event just stored in this transaction: its file steps follow."""
        self._event = event_id

    def save(self, trace_id: str) -> None:
        """Keep the current state of `<id>.md` in every folder, once per transaction, before it changes."""
        if trace_id in self._saved:
            return
        self._saved.add(trace_id)
        fd, undo_dir = self._open()
        lines = []
        if self._event != self._event_written:
            lines.append(f"E {self._event}\n")
            self._event_written = self._event
        for trace_folder in traces.FOLDERS:
            relative = f"{trace_folder}/{trace_id}.md"
            source = os.path.join(self.cortex_dir, relative)
            self._count += 1
            backup = os.path.join(undo_dir, str(self._count))
            try:
                _link_or_copy(source, backup)
            except FileExistsError:
                # The undo folder starts empty; a leftover can only be a foreign file: replace it.
                os.unlink(backup)
                _link_or_copy(source, backup)
            except FileNotFoundError:
                lines.append(f"A {relative}\n")
            else:
                lines.append(f"B {self._count} {relative}\n")
        os.write(fd, "".join(lines).encode("utf-8"))
        if self.durable:
            os.fsync(fd)

    def _open(self) -> tuple[int, str]:
        """The journal (opened on the transaction's first save) and the undo folder."""
        if self._fd is None:
            if not self._event:
                # Without an event to look up, recovery could not tell a committed transaction from a lost one.
                raise RuntimeError("FileUndo.save before FileUndo.event")
            self.dir.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            if self.durable:
                fsync_dir(self.dir)
        return self._fd, str(self.dir)

    # -- at the end of a transaction -----------------------------------------------------------------------

    def discard(self) -> None:
        """After COMMIT (or when nothing was saved): the saved state is not needed any more."""
        had_log = self._fd is not None
        self._reset()
        if had_log:
            _clear(self.dir)

    def abandon(self) -> None:
        """A crash in this process (BaseException): leave the log on disk for the next transaction's recover."""
        self._reset()

    def restore(self) -> None:
        """Before a rollback in this process (still holding the write lock): put every saved path back."""
        had_log = self._fd is not None
        self._reset()
        if had_log:
            _put_back(self.cortex_dir, self.dir)

    def recover(self, conn: sqlite3.Connection) -> int:
        """At the start of a transaction, under the write lock: finish what transactions that did not discard
        their log left. Returns how many logs put files back."""
        if self._fd is not None or not self.root.is_dir():
            return 0
        restored = 0
        for entry in os.scandir(self.root):
            folder = Path(entry.path)
            journal = folder / JOURNAL
            if journal.exists():
                events = [line[2:] for line in _lines(journal) if line.startswith("E ")]
                if any(
                    conn.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone() is not None
                    for event_id in events
                ):
                    _clear(folder)  # committed: the log outlived its transaction by a moment
                else:
                    _put_back(self.cortex_dir, folder)
                    restored += 1
            else:
                _clear(folder)  # backups without a journal: a crash before the first line; nothing changed
            with contextlib.suppress(OSError):
                folder.rmdir()
        return restored

    def _reset(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
        self._saved.clear()
        self._event = self._event_written = ""
        self._count = 0


def _link_or_copy(source: str, backup: str) -> None:
    """Hard-link `source` as `backup` (the undo folder starts each transaction empty)."""
    try:
        os.link(source, backup)
    except (FileNotFoundError, FileExistsError):
        raise
    except OSError:
        shutil.copy2(source, backup)  # a file system without hard links


def _put_back(cortex_dir: Path, folder: Path) -> None:
    """Every path a log saved, as it was: links renamed back, paths that did not exist removed."""
    journal = folder / JOURNAL
    for line in _lines(journal) if journal.exists() else []:
        kind, _, rest = line.partition(" ")
        if kind == "B":
            number, _, relative = rest.partition(" ")
            with contextlib.suppress(FileNotFoundError):  # already put back by an interrupted restore
                os.replace(folder / number, cortex_dir / relative)
        elif kind == "A":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(cortex_dir / rest)
    _clear(folder)


def _lines(journal: Path) -> list[str]:
    # A crash mid-write can leave a last line without its newline: its file step never ran.
    text = journal.read_text(encoding="utf-8", errors="replace")
    return [line for line in text.split("\n")[:-1] if line]


def _clear(folder: Path) -> None:
    """The journal goes last: until it is gone, a crash here is recovered (or discarded) again."""
    journal = folder / JOURNAL
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return  # another replayer's recover cleared it first
    for entry in entries:
        if entry.name != JOURNAL:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(journal)
