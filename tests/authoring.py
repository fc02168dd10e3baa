"""Local activity authored the way noema does it (cortex.md §4.3, §4.6), for tests, the demo and the benchmarks.

noemafed never authors traces itself (only replay's divergence records), so this API lives beside its callers,
not in the package. Every mutation changes its rows, writes its files and appends exactly one event (see
`noemafed.cortex.emit`), signed when cortex.md names a signing key file, in one SQLite transaction: DB
statements first, file steps next, COMMIT last, as in replay.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from typing import Any
from weakref import WeakKeyDictionary

from noemafed.cortex import traces
from noemafed.cortex.emit import Emitter, TraceDraft, snapshot_data
from noemafed.cortex.events import COORDINATION_ACTIONS, EMPTY_DATA, Event
from noemafed.cortex.open import Cortex
from noemafed.cortex.rows import (
    VISIBILITY,
    TraceRow,
    allowed_for,
    current_trace,
    dedupe,
    delete_everywhere,
    get_row,
    replace_fts,
    replace_lineage,
    replace_tags,
    transaction,
    triggers_dropped,
)
from noemafed.cortex.schema import LONG_TERM_IMMUTABLE_TRIGGER
from noemafed.errors import CommandError
from noemafed.signing.signer import EventSigner
from noemafed.text.gotext import go_json_dumps, rfc3339_now

TELEMETRY_ACTIONS = ("consolidate_fallback", "divergence_long_term")

_EMITTERS: WeakKeyDictionary[Cortex, Emitter] = WeakKeyDictionary()


def emitter(cortex: Cortex) -> Emitter:
    """One signer per open cortex, as noema keeps its key: read on the first event, then kept."""
    found = _EMITTERS.get(cortex)
    if found is None:
        found = _EMITTERS[cortex] = Emitter(cortex, EventSigner(cortex.path, cortex.manifest).sign)
    return found


def create_trace(  # noqa: PLR0917 - reads like `noema add TITLE TYPE BODY`
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
    draft = TraceDraft(
        title=title,
        type=type,
        body=body,
        tags=tags,
        author=author,
        derived_from=derived_from,
        tier=tier,
        source_hash=source_hash,
        source_locked=source_locked,
    )
    with transaction(cortex.conn):
        return emitter(cortex).create(draft, now or rfc3339_now())


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
        moment = now or rfc3339_now()
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
        event = emitter(cortex).emit("update", trace_id, snapshot_data(trace), moment)
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
        data = go_json_dumps({"tags": list(new_tags)})
        event = emitter(cortex).emit("tag_update", trace_id, data, now or rfc3339_now())
        traces.write_in(cortex.path, row.folder, replace(current, tags=new_tags))
    return event


def _visibility(cortex: Cortex, trace_id: str, action: str, now: str | None) -> Event:
    sets, target = VISIBILITY[action]
    conn = cortex.conn
    with transaction(conn):
        row = _require_row(conn, trace_id)
        if not allowed_for(row, action):
            raise CommandError(f"cannot {action} trace {trace_id} in its current state")
        moment = now or rfc3339_now()
        params = (moment, trace_id) if "?" in sets else (trace_id,)
        conn.execute(f"UPDATE traces SET {sets} WHERE id = ?", params)
        event = emitter(cortex).emit(action, trace_id, EMPTY_DATA, moment)
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
        event = emitter(cortex).emit("purge", trace_id, EMPTY_DATA, now or rfc3339_now())
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
        data = go_json_dumps({"from": row.tier, "to": to})
        event = emitter(cortex).emit(action, trace_id, data, now or rfc3339_now())
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
        data = go_json_dumps({"delta": delta, "actor": actor})
        return emitter(cortex).emit("vote", trace_id, data, now or rfc3339_now())


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
        event = emitter(cortex).emit(
            "consolidate", distilled_id, go_json_dumps(payload), now or rfc3339_now()
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
        moment = now or rfc3339_now()
        with triggers_dropped(conn, (LONG_TERM_IMMUTABLE_TRIGGER,)):
            conn.execute(
                "UPDATE traces SET purged_at = ?, updated_at = ?, purge_reason = ? WHERE id = ?",
                (moment, moment, reason, trace_id),
            )
        conn.execute("DELETE FROM trace_tags WHERE trace_id = ?", (trace_id,))
        replace_fts(conn, trace_id, row.title, f"[purged: {reason}]", ())
        data = _purge_payload(row, reason, actor, False)
        event = emitter(cortex).emit("purge_long_term", trace_id, data, moment)
        # Every folder, as the live (Rust) build does; Go v0.9.1 keeps a trash copy, which no peer can
        # reproduce when the purge reaches it before the trash (docs/compatibility.md).
        traces.remove(cortex.path, trace_id)
    return event


def purge_hard(
    cortex: Cortex, trace_id: str, reason: str, actor: str = "human", *, now: str | None = None
) -> Event:
    """Admin hard purge: row, lineage on both sides, tags, FTS row and every file go."""
    conn = cortex.conn
    with transaction(conn):
        row = _require_row(conn, trace_id)
        delete_everywhere(conn, trace_id)
        data = _purge_payload(row, reason, actor, True)
        event = emitter(cortex).emit("purge_hard", trace_id, data, now or rfc3339_now())
        traces.remove(cortex.path, trace_id)
    return event


def telemetry(
    cortex: Cortex, action: str, trace_id: str, payload: dict[str, Any], *, now: str | None = None
) -> Event:
    """A telemetry event (`consolidate_fallback`, `divergence_long_term`): logged, no trace change."""
    if action not in TELEMETRY_ACTIONS:
        raise CommandError(f"{action!r} is not a telemetry action")
    with transaction(cortex.conn):
        return emitter(cortex).emit(action, trace_id, go_json_dumps(payload), now or rfc3339_now())


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
        return emitter(cortex).emit(action, window_id, go_json_dumps(payload), now or rfc3339_now())
