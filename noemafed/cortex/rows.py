"""Local activity authored the way noema does it (cortex.md §4.3, §4.6), and the row writers replay shares.

Every local mutation changes its rows, writes its files and appends exactly one event (fresh monotonic ULID,
this cortex's id and name, RFC3339 now, Go-style compact `data`, the incremented local clock, and a signature
when cortex.md names a signing key file) in one SQLite transaction. Order inside it, as in replay: DB
statements first (a constraint or trigger failure then touches no file), file steps next, COMMIT last; a crash
before COMMIT leaves files ahead of the rows, which the same mutation (or a replay of its event) simply
rewrites.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ulid import LaxMonotonicPolicy, ULIDGenerator

from noemafed.cortex import state, traces, vclock
from noemafed.cortex.events import EMPTY_DATA, Event, event_row
from noemafed.cortex.manifest import Manifest
from noemafed.cortex.open import Cortex
from noemafed.cortex.schema import LONG_TERM_IMMUTABLE_TRIGGER, LONG_TERM_NO_DELETE_TRIGGER
from noemafed.errors import CommandError, InvalidTraceFrontmatterError
from noemafed.text.gotext import format_rfc3339, go_json_dumps

if TYPE_CHECKING:
    from noemafed.signing.signer import EventSigner

__all__ = [
    "TraceRow",
    "archive",
    "consolidate",
    "coordination",
    "create_trace",
    "demote",
    "get_row",
    "new_ulid",
    "promote",
    "purge",
    "purge_hard",
    "purge_long_term",
    "recover",
    "set_tags",
    "snapshot_data",
    "telemetry",
    "trash",
    "unarchive",
    "update_trace",
    "vote",
]

# Same-millisecond ids increase by one, like Go's generator (cortex.md §4.5); shared by the whole process.
_ULIDS = ULIDGenerator(policy=LaxMonotonicPolicy())

COORDINATION_ACTIONS = ("consolidation_claim", "consolidation_success", "consolidation_fail")
_ROW_COLUMNS = (
    "id, title, type, author, archived_at, created_at, updated_at, trashed_at, origin, cortex_id, "
    "content_hash, source_locked, source_hash, tier, tier_votes, purged_at, purge_reason"
)


def new_ulid() -> str:
    return str(_ULIDS.generate())


def now_text() -> str:
    return format_rfc3339(datetime.now(UTC))


# ----------------------------------------------------------------------------------------------------------
# Rows


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


# ----------------------------------------------------------------------------------------------------------
# Events


def snapshot_data(
    *,
    title: str,
    type: str,
    body: str,
    author: str = "",
    tags: Sequence[str] = (),
    derived_from: Sequence[str] = (),
    origin: str = "",
    tier: str = "",
    content_hash: str = "",
    source_hash: str = "",
    source_locked: bool = False,
) -> str:
    """A create/update payload in Go's struct order with its omitempty rules (cortex.md §4.3)."""
    payload: dict[str, Any] = {"title": title, "type": type}
    if author:
        payload["author"] = author
    if tags:
        payload["tags"] = list(tags)
    if derived_from:
        payload["derived_from"] = list(derived_from)
    if origin:
        payload["origin"] = origin
    if tier:
        payload["tier"] = tier
    payload["body"] = body
    if content_hash:
        payload["content_hash"] = content_hash
    if source_hash:
        payload["source_hash"] = source_hash
    if source_locked:
        payload["source_locked"] = True
    return go_json_dumps(payload)


def emit(
    conn: sqlite3.Connection,
    manifest: Manifest,
    signer: EventSigner,
    action: str,
    trace_id: str,
    *,
    data: str,
    now: str,
) -> Event:
    """Append one local event: increment our clock bucket, snapshot the clock into the event, store both.

    A signing cortex signs the event exactly as it is stored (cortex.md §4.7). This runs among the DB
    statements, before any file step, so a key that cannot be loaded rolls back a mutation that touched
    nothing on disk.
    """
    clock = vclock.keep_cortex_id_keys(state.get_clock(conn))
    vclock.increment(clock, manifest.id)
    state.set_clock(conn, clock)
    event = signer.sign(
        Event(
            id=new_ulid(),
            action=action,
            trace_id=trace_id,
            cortex_id=manifest.id,
            origin=manifest.name,
            timestamp=now,
            data=data or EMPTY_DATA,
            vclock=dict(clock),
        )
    )
    insert_event(conn, event)
    return event


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


# ----------------------------------------------------------------------------------------------------------
# Create (shared with replay's divergence path)


def unique_trace_id(conn: sqlite3.Connection, base: str) -> str:
    """`base`, or `base-2`, `base-3` ... when a row already holds it; the slug stays within 100 characters."""
    if conn.execute("SELECT 1 FROM traces WHERE id = ?", (base,)).fetchone() is None:
        return base
    date_part, slug = base[:8], base[9:]
    counter = 2
    while True:
        suffix = f"-{counter}"
        candidate = f"{date_part}-{slug[: 100 - len(suffix)].rstrip('-')}{suffix}"
        if conn.execute("SELECT 1 FROM traces WHERE id = ?", (candidate,)).fetchone() is None:
            return candidate
        counter += 1


def create_in_transaction(
    conn: sqlite3.Connection,
    cortex_dir: Path,
    manifest: Manifest,
    *,
    signer: EventSigner,
    title: str,
    type: str,
    body: str,
    tags: Sequence[str] = (),
    author: str = "",
    derived_from: Sequence[str] = (),
    tier: str = "short",
    source_hash: str = "",
    source_locked: bool = False,
    with_content_hash: bool = True,
    now: str | None = None,
    durable: bool = False,
    id_source: str = "",
) -> tuple[str, Event]:
    """Create a trace and its `create` event inside the caller's transaction.

    The id comes from `id_source` when given (a divergence trace is named after `divergence-<trace-id>`,
    not after its title), else from the title.
    """
    if type not in traces.TRACE_TYPES:
        raise InvalidTraceFrontmatterError(
            f"invalid trace frontmatter: type {type!r} is not one of the recognized types"
        )
    if not title:
        raise InvalidTraceFrontmatterError("invalid trace frontmatter: title is required")
    moment = now or now_text()
    today = datetime.strptime(moment[:10], "%Y-%m-%d").date()
    trace_id = unique_trace_id(conn, traces.new_trace_id(id_source or title, today))
    digest = traces.content_hash(body) if with_content_hash else ""
    trace = traces.Trace(
        id=trace_id,
        title=title,
        type=type,
        body=body,
        tier=tier,
        author=author,
        tags=dedupe(tags),
        derived_from=dedupe(derived_from),
        origin=manifest.name,
        created=moment,
        updated=moment,
        content_hash=digest,
        source_hash=source_hash,
        source_locked=source_locked,
    )
    insert_trace_row(conn, trace, cortex_id=manifest.id, content_hash=digest or None, tier=tier)
    data = snapshot_data(
        title=title,
        type=type,
        body=body,
        author=author,
        tags=trace.tags,
        derived_from=trace.derived_from,
        origin=manifest.name,
        tier=tier,
        content_hash=digest,
        source_hash=source_hash,
        source_locked=source_locked,
    )
    event = emit(conn, manifest, signer, "create", trace_id, data=data, now=moment)
    traces.write_in(cortex_dir, traces.ACTIVE, trace, durable=durable)
    return trace_id, event


def create_trace(  # noqa: PLR0917 - the interface other engineers code against
    cortex: Cortex,
    title: str,
    type: str,
    body: str,
    tags: Sequence[str] = (),
    author: str = "",
    derived_from: Sequence[str] = (),
    *,
    tier: str = "short",
    source_hash: str = "",
    source_locked: bool = False,
    now: str | None = None,
) -> tuple[str, Event]:
    """`noema add`: a new active trace with an always-valid id (Rust slug rules) and its `create` event."""
    with transaction(cortex.conn):
        return create_in_transaction(
            cortex.conn,
            cortex.path,
            cortex.manifest,
            signer=cortex.signer,
            title=title,
            type=type,
            body=body,
            tags=tags,
            author=author,
            derived_from=derived_from,
            tier=tier,
            source_hash=source_hash,
            source_locked=source_locked,
            now=now,
        )


# ----------------------------------------------------------------------------------------------------------
# Mutations of an existing trace


def _require_row(conn: sqlite3.Connection, trace_id: str) -> TraceRow:
    row = get_row(conn, trace_id)
    if row is None:
        raise CommandError(f"trace {trace_id} not found")
    return row


def _current(cortex: Cortex, row: TraceRow) -> traces.Trace:
    return current_trace(cortex.conn, cortex.path, row)


def update_trace(
    cortex: Cortex,
    trace_id: str,
    *,
    title: str | None = None,
    type: str | None = None,
    body: str | None = None,
    author: str | None = None,
    tags: Sequence[str] | None = None,
    derived_from: Sequence[str] | None = None,
    now: str | None = None,
) -> Event:
    """An edit: the whole snapshot goes into an `update` event; `origin` stays the creator's name."""
    conn = cortex.conn
    with transaction(conn):
        row = _require_row(conn, trace_id)
        if row.tier == "long":
            raise CommandError(f"trace {trace_id} is long-term and immutable")
        current = _current(cortex, row)
        moment = now or now_text()
        new_body = current.body if body is None else body
        digest = traces.content_hash(new_body)
        trace = replace(
            current,
            title=current.title if title is None else title,
            type=current.type if type is None else type,
            body=new_body,
            author=current.author if author is None else author,
            tags=current.tags if tags is None else dedupe(tags),
            derived_from=current.derived_from if derived_from is None else dedupe(derived_from),
            tier=row.tier,
            origin=row.origin,
            created=row.created_at,
            updated=moment,
            content_hash=digest,
        )
        conn.execute(
            "UPDATE traces SET title = ?, type = ?, author = ?, updated_at = ?, content_hash = ? WHERE id = ?",
            (trace.title, trace.type, trace.author, moment, digest, trace_id),
        )
        replace_tags(conn, trace_id, trace.tags)
        replace_lineage(conn, trace_id, trace.derived_from)
        replace_fts(conn, trace_id, trace.title, trace.body, trace.tags)
        conn.execute("UPDATE traces SET modify_count = modify_count + 1 WHERE id = ?", (trace_id,))
        data = snapshot_data(
            title=trace.title,
            type=trace.type,
            body=trace.body,
            author=trace.author,
            tags=trace.tags,
            derived_from=trace.derived_from,
            origin=trace.origin,
            tier=row.tier,
            content_hash=digest,
            source_hash=trace.source_hash,
            source_locked=trace.source_locked,
        )
        event = emit(conn, cortex.manifest, cortex.signer, "update", trace_id, data=data, now=moment)
        traces.write_in(cortex.path, row.folder, trace)
    return event


def set_tags(cortex: Cortex, trace_id: str, tags: Sequence[str], *, now: str | None = None) -> Event:
    """Retrieval tags only: `updated` and the content stay as they are (works on long traces too)."""
    conn = cortex.conn
    with transaction(conn):
        row = _require_row(conn, trace_id)
        current = _current(cortex, row)
        new_tags = dedupe(tags)
        replace_tags(conn, trace_id, new_tags)
        replace_fts(conn, trace_id, row.title, current.body, new_tags)
        event = emit(
            conn,
            cortex.manifest,
            cortex.signer,
            "tag_update",
            trace_id,
            data=go_json_dumps({"tags": list(new_tags)}),
            now=now or now_text(),
        )
        traces.write_in(cortex.path, row.folder, replace(current, tags=new_tags))
    return event


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


def _visibility(cortex: Cortex, trace_id: str, action: str, now: str | None) -> Event:
    sets, target = VISIBILITY[action]
    conn = cortex.conn
    with transaction(conn):
        row = _require_row(conn, trace_id)
        if not allowed_for(row, action):
            raise CommandError(f"cannot {action} trace {trace_id} in its current state")
        moment = now or now_text()
        params = (moment, trace_id) if "?" in sets else (trace_id,)
        conn.execute(f"UPDATE traces SET {sets} WHERE id = ?", params)
        event = emit(conn, cortex.manifest, cortex.signer, action, trace_id, data=EMPTY_DATA, now=moment)
        traces.move(cortex.path, trace_id, row.folder, target)
    return event


def archive(cortex: Cortex, trace_id: str, *, now: str | None = None) -> Event:
    return _visibility(cortex, trace_id, "archive", now)


def unarchive(cortex: Cortex, trace_id: str, *, now: str | None = None) -> Event:
    return _visibility(cortex, trace_id, "unarchive", now)


def trash(cortex: Cortex, trace_id: str, *, now: str | None = None) -> Event:
    return _visibility(cortex, trace_id, "trash", now)


def recover(cortex: Cortex, trace_id: str, *, now: str | None = None) -> Event:
    return _visibility(cortex, trace_id, "recover", now)


def purge(cortex: Cortex, trace_id: str, *, now: str | None = None) -> Event:
    """Empty one trashed trace (what noema's trash expiry does): row, FTS row and file go; event `{}`."""
    conn = cortex.conn
    with transaction(conn):
        row = _require_row(conn, trace_id)
        if row.trashed_at is None:
            raise CommandError(f"trace {trace_id} is not in the trash")
        conn.execute("DELETE FROM traces WHERE id = ?", (trace_id,))
        conn.execute("DELETE FROM traces_fts WHERE id = ?", (trace_id,))
        event = emit(
            conn, cortex.manifest, cortex.signer, "purge", trace_id, data=EMPTY_DATA, now=now or now_text()
        )
        traces.remove(cortex.path, trace_id)
    return event


def _tier_change(cortex: Cortex, trace_id: str, action: str, to: str, now: str | None) -> Event:
    if to not in traces.TIERS:
        raise CommandError(f"{to!r} is not a tier")
    conn = cortex.conn
    with transaction(conn):
        row = _require_row(conn, trace_id)
        current = _current(cortex, row)
        conn.execute("UPDATE traces SET tier = ? WHERE id = ?", (to, trace_id))
        event = emit(
            conn,
            cortex.manifest,
            cortex.signer,
            action,
            trace_id,
            data=go_json_dumps({"from": row.tier, "to": to}),
            now=now or now_text(),
        )
        traces.write_in(cortex.path, row.folder, replace(current, tier=to))
    return event


def promote(cortex: Cortex, trace_id: str, to: str, *, now: str | None = None) -> Event:
    return _tier_change(cortex, trace_id, "promote", to, now)


def demote(cortex: Cortex, trace_id: str, to: str, *, now: str | None = None) -> Event:
    return _tier_change(cortex, trace_id, "demote", to, now)


def vote(cortex: Cortex, trace_id: str, delta: int, actor: str = "agent", *, now: str | None = None) -> Event:
    """A tier vote; local votes may be ±2 (a toggle flip), which replay clamps to ±1 (cortex.md §9.7)."""
    if delta not in (-2, -1, 1, 2):
        raise CommandError("a vote is -2, -1, +1 or +2")
    conn = cortex.conn
    with transaction(conn):
        _require_row(conn, trace_id)
        conn.execute("UPDATE traces SET tier_votes = tier_votes + ? WHERE id = ?", (delta, trace_id))
        return emit(
            conn,
            cortex.manifest,
            cortex.signer,
            "vote",
            trace_id,
            data=go_json_dumps({"delta": delta, "actor": actor}),
            now=now or now_text(),
        )


def consolidate(
    cortex: Cortex,
    distilled_id: str,
    source_ids: Sequence[str],
    *,
    model_name: str = "",
    now: str | None = None,
) -> Event:
    """Record a distillation: the distilled trace goes to `mid` if still short; event on the distilled id."""
    conn = cortex.conn
    with transaction(conn):
        row = _require_row(conn, distilled_id)
        payload: dict[str, Any] = {"source_ids": list(source_ids), "distilled_id": distilled_id}
        if model_name:
            payload["model_name"] = model_name
        # Still short: it goes to mid (file written after the event, like every other mutation).
        current = _current(cortex, row) if row.tier == "short" else None
        if current is not None:
            conn.execute("UPDATE traces SET tier = 'mid' WHERE id = ?", (distilled_id,))
        event = emit(
            conn,
            cortex.manifest,
            cortex.signer,
            "consolidate",
            distilled_id,
            data=go_json_dumps(payload),
            now=now or now_text(),
        )
        if current is not None:
            traces.write_in(cortex.path, row.folder, replace(current, tier="mid"))
    return event


def _purge_payload(row: TraceRow, reason: str, actor: str, hard: bool) -> str:
    payload: dict[str, Any] = {"reason": reason, "tier": row.tier}
    if row.content_hash:
        payload["content_hash"] = row.content_hash
    payload["actor"] = actor
    if hard:
        payload["hard"] = True
    return go_json_dumps(payload)


def purge_long_term(
    cortex: Cortex, trace_id: str, reason: str, actor: str = "human", *, now: str | None = None
) -> Event:
    """Admin soft purge: a tombstone row stays; tags go; FTS keeps the title with `[purged: reason]`."""
    conn = cortex.conn
    with transaction(conn):
        row = _require_row(conn, trace_id)
        moment = now or now_text()
        with triggers_dropped(conn, (LONG_TERM_IMMUTABLE_TRIGGER,)):
            conn.execute(
                "UPDATE traces SET purged_at = ?, updated_at = ?, purge_reason = ? WHERE id = ?",
                (moment, moment, reason, trace_id),
            )
        conn.execute("DELETE FROM trace_tags WHERE trace_id = ?", (trace_id,))
        replace_fts(conn, trace_id, row.title, f"[purged: {reason}]", ())
        event = emit(
            conn,
            cortex.manifest,
            cortex.signer,
            "purge_long_term",
            trace_id,
            data=_purge_payload(row, reason, actor, False),
            now=moment,
        )
        traces.remove(cortex.path, trace_id, (traces.ACTIVE, traces.ARCHIVE))
    return event


def purge_hard(
    cortex: Cortex, trace_id: str, reason: str, actor: str = "human", *, now: str | None = None
) -> Event:
    """Admin hard purge: row, lineage on both sides, tags, FTS row and every file go."""
    conn = cortex.conn
    with transaction(conn):
        row = _require_row(conn, trace_id)
        delete_everywhere(conn, trace_id)
        event = emit(
            conn,
            cortex.manifest,
            cortex.signer,
            "purge_hard",
            trace_id,
            data=_purge_payload(row, reason, actor, True),
            now=now or now_text(),
        )
        traces.remove(cortex.path, trace_id)
    return event


def delete_everywhere(conn: sqlite3.Connection, trace_id: str) -> None:
    """The hard-purge row deletion, long-term triggers dropped for it and re-created from their stored SQL."""
    with triggers_dropped(conn, (LONG_TERM_IMMUTABLE_TRIGGER, LONG_TERM_NO_DELETE_TRIGGER)):
        conn.execute("DELETE FROM trace_lineage WHERE trace_id = ? OR derived_from = ?", (trace_id, trace_id))
        conn.execute("DELETE FROM trace_tags WHERE trace_id = ?", (trace_id,))
        conn.execute("DELETE FROM traces_fts WHERE id = ?", (trace_id,))
        conn.execute("DELETE FROM traces WHERE id = ?", (trace_id,))


TELEMETRY_ACTIONS = ("consolidate_fallback", "divergence_long_term")


def telemetry(
    cortex: Cortex, action: str, trace_id: str, payload: dict[str, Any], *, now: str | None = None
) -> Event:
    """A telemetry event (`consolidate_fallback`, `divergence_long_term`): logged, no trace change."""
    if action not in TELEMETRY_ACTIONS:
        raise CommandError(f"{action!r} is not a telemetry action")
    with transaction(cortex.conn):
        return emit(
            cortex.conn,
            cortex.manifest,
            cortex.signer,
            action,
            trace_id,
            data=go_json_dumps(payload),
            now=now or now_text(),
        )


def coordination(
    cortex: Cortex, action: str, window_id: str, *, reason: str = "", now: str | None = None
) -> Event:
    """A consolidation-election event: log only, keyed by the window id instead of a trace id."""
    if action not in COORDINATION_ACTIONS:
        raise CommandError(f"{action!r} is not a coordination action")
    payload: dict[str, Any] = {"window_id": window_id, "cortex_id": cortex.manifest.id}
    if action == "consolidation_fail":
        payload["reason"] = reason
    with transaction(cortex.conn):
        return emit(
            cortex.conn,
            cortex.manifest,
            cortex.signer,
            action,
            window_id,
            data=go_json_dumps(payload),
            now=now or now_text(),
        )
