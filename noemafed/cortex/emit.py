"""The events this cortex authors itself (cortex.md §4.3, §4.5), and the trace create replay's divergence needs.

Each local event gets a fresh monotonic ULID, this cortex's id and name, the incremented local clock, a
Go-style compact `data`, and whatever the caller's signing step adds. Signing stays outside this layer: the
caller passes `sign` (an `EventSigner`'s, or the identity for a cortex that does not sign).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ulid import LaxMonotonicPolicy, ULIDGenerator

from noemafed.cortex import state, traces, vclock
from noemafed.cortex.events import EMPTY_DATA, Event
from noemafed.cortex.open import Cortex
from noemafed.cortex.rows import dedupe, insert_event, insert_trace_row
from noemafed.errors import InvalidTraceFrontmatterError
from noemafed.text.gotext import go_json_dumps

__all__ = ["Emitter", "Sign", "TraceDraft", "new_ulid", "snapshot_data"]

# Same-millisecond ids increase by one, like Go's generator (cortex.md §4.5); shared by the whole process.
_ULIDS = ULIDGenerator(policy=LaxMonotonicPolicy())

# The last step before an event is stored: returns it signed, or unchanged for a cortex without a key.
Sign = Callable[[Event], Event]


def new_ulid() -> str:
    return str(_ULIDS.generate())


@dataclass(frozen=True)
class TraceDraft:
    """What a new trace is made of before it has an id, an origin and timestamps."""

    title: str
    type: str
    body: str
    tags: Sequence[str] = ()
    author: str = ""
    derived_from: Sequence[str] = ()
    tier: str = "short"
    source_hash: str = ""
    source_locked: bool = False
    # The text the id's slug comes from when not the title (a divergence trace is `divergence-<trace-id>`).
    id_source: str = ""
    # Divergence traces carry no content_hash, as in noema.
    with_content_hash: bool = True


def snapshot_data(trace: traces.Trace) -> str:
    """A create/update payload in Go's struct order with its omitempty rules (cortex.md §4.3)."""
    payload: dict[str, Any] = {"title": trace.title, "type": trace.type}
    if trace.author:
        payload["author"] = trace.author
    if trace.tags:
        payload["tags"] = list(trace.tags)
    if trace.derived_from:
        payload["derived_from"] = list(trace.derived_from)
    if trace.origin:
        payload["origin"] = trace.origin
    if trace.tier:
        payload["tier"] = trace.tier
    payload["body"] = trace.body
    if trace.content_hash:
        payload["content_hash"] = trace.content_hash
    if trace.source_hash:
        payload["source_hash"] = trace.source_hash
    if trace.source_locked:
        payload["source_locked"] = True
    return go_json_dumps(payload)


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


class Emitter:
    """Appends this cortex's own events; every call runs inside the caller's transaction."""

    def __init__(self, cortex: Cortex, sign: Sign) -> None:
        self.cortex = cortex
        self.sign = sign

    def emit(self, action: str, trace_id: str, data: str, now: str) -> Event:
        """Append one local event: increment our clock bucket, snapshot the clock into the event, store both.

        A signing cortex signs the event exactly as it is stored (cortex.md §4.7). This runs among the DB
        statements, before any file step, so a key that cannot be loaded rolls back a mutation that touched
        nothing on disk.
        """
        conn, manifest = self.cortex.conn, self.cortex.manifest
        clock = vclock.keep_cortex_id_keys(state.get_clock(conn))
        vclock.increment(clock, manifest.id)
        state.set_clock(conn, clock)
        event = self.sign(
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

    def create(
        self,
        draft: TraceDraft,
        now: str,
        *,
        durable: bool = False,
        before_write: Callable[[str], None] | None = None,
    ) -> tuple[str, Event]:
        """A new active trace with an always-valid id (Rust slug rules), its rows, file and `create` event.

        `before_write` gets the new id before the file is written (replay saves the folders' state there).
        """
        if draft.type not in traces.TRACE_TYPES:
            raise InvalidTraceFrontmatterError(
                f"invalid trace frontmatter: type {draft.type!r} is not one of the recognized types"
            )
        if not draft.title:
            raise InvalidTraceFrontmatterError("invalid trace frontmatter: title is required")
        conn, manifest = self.cortex.conn, self.cortex.manifest
        today = datetime.strptime(now[:10], "%Y-%m-%d").date()
        trace_id = unique_trace_id(conn, traces.new_trace_id(draft.id_source or draft.title, today))
        digest = traces.content_hash(draft.body) if draft.with_content_hash else ""
        trace = traces.Trace(
            id=trace_id,
            title=draft.title,
            type=draft.type,
            body=draft.body,
            tier=draft.tier,
            author=draft.author,
            tags=dedupe(draft.tags),
            derived_from=dedupe(draft.derived_from),
            origin=manifest.name,
            created=now,
            updated=now,
            content_hash=digest,
            source_hash=draft.source_hash,
            source_locked=draft.source_locked,
        )
        insert_trace_row(conn, trace, cortex_id=manifest.id, content_hash=digest or None, tier=draft.tier)
        event = self.emit("create", trace_id, snapshot_data(trace), now)
        if before_write is not None:
            before_write(trace_id)
        traces.write_in(self.cortex.path, traces.ACTIVE, trace, durable=durable)
        return trace_id, event
