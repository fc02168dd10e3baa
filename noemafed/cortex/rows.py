"""Rows of `traces`, its side tables and the event log, as replay and local writes read and write them.

Order inside a mutation, local or replayed: DB statements first (a constraint or trigger failure then touches
no file), file steps next, COMMIT last; a crash before COMMIT leaves files ahead of the rows, which the same
mutation (or a replay of its event) simply rewrites.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from noemafed.cortex import traces
from noemafed.cortex.events import Event, event_row
from noemafed.cortex.schema import LONG_TERM_IMMUTABLE_TRIGGER, LONG_TERM_NO_DELETE_TRIGGER
from noemafed.errors import CommandError

__all__ = [
    "VISIBILITY",
    "TraceRow",
    "allowed_for",
    "current_trace",
    "dedupe",
    "delete_everywhere",
    "get_row",
    "insert_event",
    "insert_trace_row",
    "read_file_for",
    "rebuild_from_db",
    "replace_fts",
    "replace_lineage",
    "replace_tags",
    "transaction",
    "triggers_dropped",
]

_ROW_COLUMNS = (
    "id, title, type, author, archived_at, created_at, updated_at, trashed_at, origin, cortex_id, "
    "content_hash, source_locked, source_hash, tier, tier_votes, purged_at, purge_reason"
)


@dataclass(frozen=True)
class TraceRow:
    """The columns of a `traces` row that replay and local writes read."""

    id: str
    title: str
    type: str
    author: str
    archived_at: str | None
    created_at: str
    updated_at: str
    trashed_at: str | None
    origin: str
    cortex_id: str
    content_hash: str | None
    source_locked: bool
    source_hash: str | None
    tier: str
    tier_votes: int
    purged_at: str | None
    purge_reason: str | None

    @property
    def folder(self) -> str:
        """The folder this row says its file is in; trashed wins over archived, as in noema."""
        if self.trashed_at is not None:
            return traces.TRASH
        if self.archived_at is not None:
            return traces.ARCHIVE
        return traces.ACTIVE


def get_row(conn: sqlite3.Connection, trace_id: str) -> TraceRow | None:
    row = conn.execute(f"SELECT {_ROW_COLUMNS} FROM traces WHERE id = ?", (trace_id,)).fetchone()
    if row is None:
        return None
    values = list(row)
    values[3] = values[3] or ""  # author: a NULL written by another tool reads as ""
    values[11] = bool(values[11])
    return TraceRow(*values)


def dedupe(items: Iterable[str]) -> tuple[str, ...]:
    """First occurrence order; duplicates would violate the (trace_id, tag) primary key (cortex.md §9.3)."""
    return tuple(dict.fromkeys(items))


def insert_trace_row(
    conn: sqlite3.Connection,
    trace: traces.Trace,
    *,
    cortex_id: str,
    content_hash: str | None,
    tier: str,
) -> None:
    """A new `traces` row with its tags, lineage and FTS row."""
    conn.execute(
        "INSERT INTO traces (id, title, type, author, archived_at, created_at, updated_at, trashed_at, origin, "
        "cortex_id, content_hash, source_locked, source_hash, tier) "
        "VALUES (?, ?, ?, ?, NULL, ?, ?, NULL, ?, ?, ?, ?, ?, ?)",
        (
            trace.id,
            trace.title,
            trace.type,
            trace.author,
            trace.created,
            trace.updated,
            trace.origin,
            cortex_id,
            content_hash,
            int(trace.source_locked),
            trace.source_hash or None,
            tier,
        ),
    )
    insert_tags(conn, trace.id, trace.tags)
    insert_lineage(conn, trace.id, trace.derived_from)
    # A brand-new id gets a plain insert: FTS5 has no key, so a delete would scan the whole table.
    conn.execute(
        "INSERT INTO traces_fts (id, title, body, tags) VALUES (?, ?, ?, ?)",
        (trace.id, trace.title, trace.body, " ".join(trace.tags)),
    )


def insert_tags(conn: sqlite3.Connection, trace_id: str, tags: Sequence[str]) -> None:
    if tags:
        conn.executemany(
            "INSERT INTO trace_tags (trace_id, tag) VALUES (?, ?)", [(trace_id, t) for t in tags]
        )


def insert_lineage(conn: sqlite3.Connection, trace_id: str, parents: Sequence[str]) -> None:
    if parents:
        conn.executemany(
            "INSERT INTO trace_lineage (trace_id, derived_from) VALUES (?, ?)",
            [(trace_id, p) for p in parents],
        )


def replace_tags(conn: sqlite3.Connection, trace_id: str, tags: Sequence[str]) -> None:
    conn.execute("DELETE FROM trace_tags WHERE trace_id = ?", (trace_id,))
    insert_tags(conn, trace_id, tags)


def replace_lineage(conn: sqlite3.Connection, trace_id: str, parents: Sequence[str]) -> None:
    conn.execute("DELETE FROM trace_lineage WHERE trace_id = ?", (trace_id,))
    insert_lineage(conn, trace_id, parents)


def replace_fts(conn: sqlite3.Connection, trace_id: str, title: str, body: str, tags: Sequence[str]) -> None:
    """Delete every FTS row of the id, then insert one: the table has no key (cortex.md §3.4)."""
    conn.execute("DELETE FROM traces_fts WHERE id = ?", (trace_id,))
    conn.execute(
        "INSERT INTO traces_fts (id, title, body, tags) VALUES (?, ?, ?, ?)",
        (trace_id, title, body, " ".join(tags)),
    )


def insert_event(conn: sqlite3.Connection, event: Event) -> bool:
    """Append one event row unchanged; False when the id is already stored (a benign repeat)."""
    try:
        conn.execute(
            "INSERT INTO events (id, action, trace_id, origin, timestamp, data, vclock, cortex_id, signature, "
            "pubkey) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            event_row(event),
        )
    except sqlite3.IntegrityError as exc:
        if "UNIQUE constraint failed: events.id" in str(exc):
            return False
        raise
    return True


def triggers_sql(conn: sqlite3.Connection) -> dict[str, str]:
    """The long-term triggers' stored SQL, to drop and re-create them byte for byte."""
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name IN (?, ?)",
        (LONG_TERM_IMMUTABLE_TRIGGER, LONG_TERM_NO_DELETE_TRIGGER),
    ).fetchall()
    return {name: sql for name, sql in rows if sql}


@contextmanager
def triggers_dropped(conn: sqlite3.Connection, names: Sequence[str]) -> Iterator[None]:
    """Drop the named long-term triggers for the body, then re-create them from their stored SQL.

    Must run inside a transaction: a failure rolls back the DROP with everything else.
    """
    stored = triggers_sql(conn)
    present = [name for name in names if name in stored]
    for name in present:
        conn.execute(f'DROP TRIGGER "{name}"')
    yield
    for name in present:
        conn.execute(stored[name])


def trace_of_row(
    row: TraceRow, body: str, tags: Sequence[str], parents: Sequence[str], **changes: Any
) -> traces.Trace:
    trace = traces.Trace(
        id=row.id,
        title=row.title,
        type=row.type,
        body=body,
        tier=row.tier,
        author=row.author,
        tags=tuple(tags),
        derived_from=tuple(parents),
        origin=row.origin,
        created=row.created_at,
        updated=row.updated_at,
        content_hash=row.content_hash or "",
        source_hash=row.source_hash or "",
        source_locked=row.source_locked,
    )
    return replace(trace, **changes)


def row_tags(conn: sqlite3.Connection, trace_id: str) -> tuple[str, ...]:
    # trace_tags has no order column; the file keeps the author's order, the DB answers sorted.
    return tuple(
        r[0] for r in conn.execute("SELECT tag FROM trace_tags WHERE trace_id = ? ORDER BY tag", (trace_id,))
    )


def row_parents(conn: sqlite3.Connection, trace_id: str) -> tuple[str, ...]:
    return tuple(
        r[0]
        for r in conn.execute(
            "SELECT derived_from FROM trace_lineage WHERE trace_id = ? ORDER BY derived_from", (trace_id,)
        )
    )


def read_file_for(cortex_dir: Path, row: TraceRow) -> traces.Trace | None:
    """The trace file the row points at (or, after an interrupted move, wherever it is), parsed."""
    path = traces.locate(cortex_dir, row.id, (row.folder,))
    return traces.read(path) if path is not None else None


def rebuild_from_db(conn: sqlite3.Connection, row: TraceRow) -> traces.Trace:
    """The trace as the DB knows it, for when its file is gone.

    That happens when the file steps of a batch ran ahead of its commit (a purge removed the file, then a
    crash lost the purge's rows: the events before it need the file again), or when a user deleted the
    file. The body comes from the FTS row; so does the tag order when it agrees with trace_tags.
    """
    tags = row_tags(conn, row.id)
    found = conn.execute("SELECT body, tags FROM traces_fts WHERE id = ? LIMIT 1", (row.id,)).fetchone()
    body = found[0] if found else ""
    if found and sorted(found[1].split()) == list(tags):
        tags = tuple(found[1].split())
    return trace_of_row(row, body, tags, row_parents(conn, row.id))


def current_trace(conn: sqlite3.Connection, cortex_dir: Path, row: TraceRow) -> traces.Trace:
    """The row's trace file, or the trace rebuilt from the DB when the file is gone."""
    found = read_file_for(cortex_dir, row)
    return found if found is not None else rebuild_from_db(conn, row)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT: the write lock is taken up front, so no later statement hits BUSY midway."""
    if conn.in_transaction:
        raise CommandError("a local mutation cannot run inside another open transaction")
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.execute("COMMIT")


# Per visibility action: the SET clause (`?` is the event time when present) and the target folder.
VISIBILITY = {
    "archive": ("archived_at = ?", traces.ARCHIVE),
    "unarchive": ("archived_at = NULL", traces.ACTIVE),
    "trash": ("trashed_at = ?, archived_at = NULL", traces.TRASH),
    "recover": ("trashed_at = NULL", traces.ACTIVE),
}


def allowed_for(row: TraceRow, action: str) -> bool:
    """Which visibility changes make sense from the row's state (local commands refuse the others)."""
    if action == "archive":
        return row.archived_at is None and row.trashed_at is None
    if action == "unarchive":
        return row.archived_at is not None and row.trashed_at is None
    if action == "trash":
        return row.trashed_at is None
    return action == "recover" and row.trashed_at is not None


def delete_everywhere(conn: sqlite3.Connection, trace_id: str) -> None:
    """The hard-purge row deletion, long-term triggers dropped for it and re-created from their stored SQL."""
    with triggers_dropped(conn, (LONG_TERM_IMMUTABLE_TRIGGER, LONG_TERM_NO_DELETE_TRIGGER)):
        conn.execute("DELETE FROM trace_lineage WHERE trace_id = ? OR derived_from = ?", (trace_id, trace_id))
        conn.execute("DELETE FROM trace_tags WHERE trace_id = ?", (trace_id,))
        conn.execute("DELETE FROM traces_fts WHERE id = ?", (trace_id,))
        conn.execute("DELETE FROM traces WHERE id = ?", (trace_id,))
