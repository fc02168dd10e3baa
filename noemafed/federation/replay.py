"""Apply remote events to the cortex the way noema does (cortex.md §6), keeping each event's bytes.

Protocol for one event (docs/replay.md has the per-action reasoning):

1. Inside the page's transaction, run every DB statement first: a trigger, CHECK or constraint failure then
   fails the event before any file is touched.
2. Then the file steps (atomic writes, renames, deletions), each idempotent and tolerant of the state an
   interrupted earlier attempt left (file already moved, already deleted, already written, or gone).
3. Merge the event's clock into ours (in memory; the clock is written once per page); the cursor is written
   once, for the last event that succeeded, right before COMMIT, after the clock.

A crash before COMMIT leaves files ahead of the rows and the cursor before the page: the next poll replays
those events and their file steps converge. Nothing is ever done after COMMIT.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from functools import cached_property
from typing import Any

from noemafed.cortex import rows, state, traces, vclock
from noemafed.cortex.emit import Emitter, TraceDraft
from noemafed.cortex.events import (
    COORDINATION_ACTIONS,
    EVENT_COLUMNS,
    Event,
    EventFormatError,
    event_from_row,
)
from noemafed.cortex.file_undo import FileUndo
from noemafed.cortex.open import Cortex, database_dir
from noemafed.cortex.rows import TraceRow
from noemafed.cortex.schema import LONG_TERM_IMMUTABLE_TRIGGER
from noemafed.errors import (
    InvalidTraceFrontmatterError,
    InvalidTraceIDError,
    ReplayError,
    VClockTooLargeError,
)
from noemafed.logs import SILENT, Log
from noemafed.signing import eventsig
from noemafed.text.gotext import go_quote, rfc3339_now
from noemafed.text.keys import public_keys_equal
from noemafed.text.sanitize import scrub

__all__ = ["ACTIONS", "PageResult", "ReplayOutcome", "Replayer"]

ACTIONS = (
    "create",
    "update",
    "tag_update",
    "archive",
    "unarchive",
    "trash",
    "recover",
    "purge",
    "promote",
    "demote",
    "vote",
    "consolidate",
    "consolidate_fallback",
    "divergence_long_term",
    "purge_long_term",
    "purge_hard",
    *COORDINATION_ACTIONS,
)
SOURCE_LOCK_ACTIONS = ("update", "trash", "purge")
REMOTE_PURGE_REASON = "remote purge"

# Why an event was refused: the poll fails with `replay event <id>: <this>` and the cursor stays before it.
PAYLOAD_ERROR = "parsing {action} payload of event {event_id}: {problem}"
NOT_A_STRING = "{key} must be a string"
NOT_STRINGS = "{key} must be a list of strings"
NOT_A_BOOLEAN = "{key} must be a boolean"
NOT_AN_INTEGER = "{key} must be an integer"
IN_TRANSACTION_ERROR = "replay cannot run inside another open transaction"
INVALID_TRACE_ID_ERROR = "rejecting remote event {event_id}: invalid trace ID: {trace_id}"
UNKNOWN_ACTION_ERROR = "unknown action {action} in event {event_id}"
INVALID_TIER_ERROR = "{action} event {event_id} has invalid tier {tier}"
MISSING_TO_ERROR = "tier-change event {event_id} missing 'to' field"
HASH_MISMATCH_ERROR = "content hash mismatch on {action} event {event_id}"
APPLY_FAILED_ERROR = "replaying {action} event {event_id}: {detail}"
USAGE_ERROR = "merging remote usage: {problem}"
# The live (Rust) build's text for a row that fails validation; the whole page is refused.
INVALID_USAGE_ROW = "invalid remote usage row for trace {trace_id}"
# The signature gate (cortex.md §6.1): under verify=enforce the event fails, under verify=warn it is logged.
SIGNATURE_REJECTED = "rejecting event {event_id} from cortex {cortex_id}: {problem}"
SOURCE_LOCK_REJECTED = (
    "rejecting source-lock violation: event {event_id} ({action}) from cortex {cortex_id} on trace {trace_id} "
    "owned by {owner}"
)
ENFORCE_ERROR = "{rejected} (verify=enforce)"
NO_LOCAL_KEY = "event claims this cortex's id but no local signing key is configured"
PUBKEY_DIFFERS = "event pubkey differs from the key pinned for its cortex"
NO_KEY = "no key pinned for its cortex and the event carries none"
UNSIGNED = "event is unsigned"
BAD_SIGNATURE = "signature does not verify"

WARN_APPLIED_LOG = "[federation] {rejected} (verify=warn, applying anyway)"
LONG_PURGE_LOG = (
    "[federation] purge event {event_id} of long-term trace {trace_id} stored, not applied "
    "(long-term traces are removed by purge_long_term or purge_hard)"
)
MERGE_CLOCK_LOG = "[federation] merge clock: {err}"

# Outcome effects: short, stable words for logs, tests and reports.
CREATED = "created"
UPDATED = "updated"
DIVERGED = "diverged"
TAGGED = "tagged"
ARCHIVED = "archived"
UNARCHIVED = "unarchived"
TRASHED = "trashed"
RECOVERED = "recovered"
PURGED = "purged"
TIER_CHANGED = "tier-changed"
VOTED = "voted"
CONSOLIDATED = "consolidated"
PURGED_LONG_TERM = "purged-long-term"
PURGED_HARD = "purged-hard"
LOGGED = "logged"
STORED_ONLY = "stored-only"
DUPLICATE = "duplicate"


@dataclass(frozen=True)
class ReplayOutcome:
    """What one successful replay did."""

    event_id: str
    action: str
    stored: bool  # the event row was inserted now (False for a benign repeat)
    effect: str


@dataclass(frozen=True)
class PageResult:
    """A page replayed under one transaction: the committed prefix, and the event that stopped it, if any."""

    outcomes: tuple[ReplayOutcome, ...]
    failed: Event | None = None
    error: ReplayError | None = None


@dataclass(frozen=True)
class _Snapshot:
    """A create/update payload (cortex.md §4.3)."""

    title: str
    type: str
    author: str
    tags: tuple[str, ...]
    derived_from: tuple[str, ...]
    origin: str
    tier: str
    body: str
    content_hash: str
    source_hash: str
    source_locked: bool


def _payload_error(event: Event, problem: object) -> ReplayError:
    return ReplayError(PAYLOAD_ERROR.format(action=event.action, event_id=event.id, problem=problem))


def _str(payload: dict[str, Any], key: str, event: Event) -> str:
    value = payload.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _payload_error(event, NOT_A_STRING.format(key=key))
    return value


def _str_list(payload: dict[str, Any], key: str, event: Event) -> tuple[str, ...]:
    value = payload.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _payload_error(event, NOT_STRINGS.format(key=key))
    return tuple(value)


def _payload(event: Event) -> dict[str, Any]:
    try:
        return event.payload()
    except (ValueError, EventFormatError) as exc:
        raise _payload_error(event, exc) from exc


def _snapshot(event: Event) -> _Snapshot:
    payload = _payload(event)
    locked = payload.get("source_locked")
    if locked is not None and not isinstance(locked, bool):
        raise _payload_error(event, NOT_A_BOOLEAN.format(key="source_locked"))
    return _Snapshot(
        title=_str(payload, "title", event),
        type=_str(payload, "type", event),
        author=_str(payload, "author", event),
        # Duplicates would fail the (trace_id, tag) key; Go swallows that UNIQUE error and loses the whole
        # trace (cortex.md §9.3). First-occurrence order keeps the author's order in the file.
        tags=rows.dedupe(_str_list(payload, "tags", event)),
        derived_from=rows.dedupe(_str_list(payload, "derived_from", event)),
        origin=_str(payload, "origin", event),
        tier=_str(payload, "tier", event),
        body=_str(payload, "body", event),
        content_hash=_str(payload, "content_hash", event),
        source_hash=_str(payload, "source_hash", event),
        source_locked=bool(locked),
    )


class Replayer:
    """Applies remote events to one cortex; one instance per open cortex connection."""

    def __init__(
        self,
        cortex: Cortex,
        log: Log = SILENT,
        *,
        durable: bool = False,
        hook: Callable[[str], None] | None = None,
        now: Callable[[], str] = rfc3339_now,
    ) -> None:
        self.cortex = cortex
        self.conn = cortex.conn
        self.dir = cortex.path
        self.log = log
        # durable: fsync every file write and rename (and the WAL at COMMIT) so a power loss cannot lose a
        # committed event's files; the default survives process crashes, see docs/replay.md.
        self.durable = durable
        # Test seam: called at each step boundary ("db", "file", "event", "commit", "committed"); a crash
        # test raises from it.
        self.hook = hook
        # Local time for what replay itself authors (the divergence trace and its create event).
        self.now = now
        manifest = cortex.manifest
        self.own_id = manifest.id
        self.own_name = manifest.name
        self.own_pubkey = manifest.signing_public_key
        self.signatures_checked = (
            0  # by the Ed25519 verifier (noemafed:verifier is recorded after such a poll)
        )
        self.verify = manifest.federation.effective_verify if manifest.federation else "off"
        if durable:
            self.conn.execute("PRAGMA synchronous=FULL")
        # The local clock during a page: read at the first merge, merged in memory, written once before
        # COMMIT (with the cursor). None means the federation_state row is current; `_clock_dirty` means
        # memory is ahead of it. Only clocks that survive the stored text's round trip are kept here, so the
        # row ends up holding the same text as with a read and a write per event.
        self._clock: vclock.VClock | None = None
        self._clock_dirty = False
        # Per trace, the clocks of its current version (see _against_current), kept for one transaction so a
        # trace updated a thousand times is not re-read a thousand times; events stored meanwhile join it.
        self._versions: dict[tuple[str, str], list[_Version]] = {}
        # The trace files a transaction touches are saved first and put back if it does not commit.
        self._undo = FileUndo(self.dir, database_dir(self.dir), durable=durable)

    @cached_property
    def _emitter(self) -> Emitter:
        """Signs divergence records like every local event: an enforcing peer refuses unsigned ones from us."""
        # Made on first use: replay that authors nothing never loads the signer (nor reads the key).
        from noemafed.signing.signer import EventSigner  # noqa: PLC0415 (lazy, see above)

        return Emitter(self.cortex, EventSigner(self.dir, self.cortex.manifest).sign)

    # ------------------------------------------------------------------------------------------------------
    # Public entry points

    def apply_page(self, events: Sequence[Event], cursor_peer: str | None = None) -> PageResult:
        """Apply events in order under one transaction; stop at the first failure.

        The events before a failure commit together with the cursor at the last of them; the failed
        event's rows never commit, so the cursor never passes an event whose rows are not committed.
        There is no per-event SAVEPOINT: FTS5 flushes its pending index at every savepoint, which made a
        page several times slower. Instead a failure rolls the whole page back and the prefix before the
        failed event is applied again and committed (its file steps are idempotent).
        """
        if self.conn.in_transaction:
            raise ReplayError(IN_TRANSACTION_ERROR)
        outcomes, failed, error = self._run(events, cursor_peer)
        if failed is not None and outcomes:
            # Rare path: the page is rolled back; re-apply what succeeded before the failure.
            outcomes, again_failed, again_error = self._run(events[: len(outcomes)], cursor_peer)
            if again_failed is not None:
                # The prefix failed on its own (a concurrent writer changed the cortex): report that.
                failed, error = again_failed, again_error
        return PageResult(tuple(outcomes), failed, error)

    def _run(
        self, events: Sequence[Event], cursor_peer: str | None
    ) -> tuple[list[ReplayOutcome], Event | None, ReplayError | None]:
        """One attempt: BEGIN, every event in order, the cursor, COMMIT; any failure rolls back all of it."""
        conn = self.conn
        outcomes: list[ReplayOutcome] = []
        self._clock, self._clock_dirty = None, False
        self._versions.clear()  # what a rolled-back attempt stored is gone from the rows too
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Files a crashed transaction changed go back first (under the write lock: no other replayer is
            # inside a transaction): its retry may not get the same events.
            self._undo.recover(conn)
            for event in events:
                try:
                    outcomes.append(self._apply_one(event))
                    self._merge_clock(event)
                except Exception as exc:
                    self._undo.restore()  # before the rollback releases the lock
                    conn.rollback()
                    return outcomes, event, _as_replay_error(event, exc)
                self._step("event")
            self._flush_clock()
            if outcomes and cursor_peer is not None:
                state.put(conn, state.peer_key(cursor_peer, state.LAST_EVENT), outcomes[-1].event_id)
            self._step("commit")
            conn.execute("COMMIT")
        except BaseException:
            # A kill: the log stays on disk and the next transaction's recover puts the files back.
            self._undo.abandon()
            if conn.in_transaction:
                conn.rollback()
            raise
        self._step("committed")
        self._undo.discard()
        return outcomes, None, None

    def merge_usage(self, usage: list[dict[str, Any]]) -> int:
        """Merge sync_read_signal rows with MAX per column (federation.md §3.6); returns rows merged.

        Rows carrying our own id are skipped (we are the authority for those), and so are rows for traces
        this cortex does not hold: with foreign keys on, Go's insert of such a row fails the whole batch
        (cortex.md §9.13); skipping keeps the usage cursor moving.
        """
        merged = 0
        with rows.transaction(self.conn):
            for row in usage:
                values = _usage_values(row)
                if values[1] == self.own_id:
                    continue
                if self.conn.execute("SELECT 1 FROM traces WHERE id = ?", (values[0],)).fetchone() is None:
                    continue
                self.conn.execute(_USAGE_UPSERT, values)
                merged += 1
        return merged

    # ------------------------------------------------------------------------------------------------------
    # Gates (cortex.md §6.1)

    def _step(self, name: str) -> None:
        if self.hook is not None:
            self.hook(name)

    def _apply_one(self, event: Event) -> ReplayOutcome:
        # Already-seen runs first, before the signature gate (Go runs it after): an event we hold was
        # accepted or authored already, so re-checking it can only pin the cursor on our own events
        # (verify=enforce without a local key, cortex.md §9.6) or TOFU-pin keys from old events.
        if self.conn.execute("SELECT 1 FROM events WHERE id = ?", (event.id,)).fetchone() is not None:
            return ReplayOutcome(event.id, event.action, False, DUPLICATE)
        if self.verify in ("warn", "enforce"):
            self._check_signature(event)
            self._check_source_lock(event)
        if event.action in COORDINATION_ACTIONS:
            return self._store_only(event, LOGGED)
        if not traces.is_valid_trace_id(event.trace_id):
            if event.action == "purge":
                return self._purge_db_only(event)
            message = INVALID_TRACE_ID_ERROR.format(event_id=event.id, trace_id=go_quote(event.trace_id))
            raise ReplayError(message) from InvalidTraceIDError()
        handler = _HANDLERS.get(event.action)
        if handler is None:
            # Go says "unknown event action: X", which the classifier's "unknown action" never matches
            # (cortex.md §9.5); this text classifies as unknown_action, a schema-widening reason.
            raise ReplayError(UNKNOWN_ACTION_ERROR.format(action=go_quote(event.action), event_id=event.id))
        return handler(self, event)

    def _check_signature(self, event: Event) -> None:
        problem = self._signature_problem(event)
        if problem is None:
            return
        rejected = SIGNATURE_REJECTED.format(event_id=event.id, cortex_id=event.cortex_id, problem=problem)
        if self.verify == "enforce":
            raise ReplayError(ENFORCE_ERROR.format(rejected=rejected))
        self.log.warning(WARN_APPLIED_LOG.format(rejected=rejected))

    def _signature_problem(self, event: Event) -> str | None:
        pin = ""
        if event.cortex_id == self.own_id:
            if not self.own_pubkey:
                return NO_LOCAL_KEY
            key = self.own_pubkey
        else:
            pinned = state.get_cortex_pubkey(self.conn, event.cortex_id)
            if pinned:
                if event.pubkey and not public_keys_equal(event.pubkey, pinned):
                    return PUBKEY_DIFFERS
                key = pinned
            elif event.pubkey:
                key = pin = event.pubkey
            else:
                return NO_KEY
        if not event.signature:
            return UNSIGNED
        self.signatures_checked += 1
        if not eventsig.verify_event(event, key):
            return BAD_SIGNATURE
        if pin:
            # Trust on first use, inside the event's transaction: a failure un-pins it again.
            state.set_cortex_pubkey(self.conn, event.cortex_id, pin)
        return None

    def _check_source_lock(self, event: Event) -> None:
        if event.action not in SOURCE_LOCK_ACTIONS or not traces.is_valid_trace_id(event.trace_id):
            return
        row = rows.get_row(self.conn, event.trace_id)
        if row is None or not row.source_locked or row.cortex_id == event.cortex_id:
            return
        rejected = SOURCE_LOCK_REJECTED.format(
            event_id=event.id,
            action=event.action,
            cortex_id=event.cortex_id,
            trace_id=event.trace_id,
            owner=row.cortex_id,
        )
        if self.verify == "enforce":
            raise ReplayError(rejected)  # unlike a bad signature, without the "(verify=enforce)" suffix
        self.log.warning(WARN_APPLIED_LOG.format(rejected=rejected))

    def _merge_clock(self, event: Event) -> None:
        if not event.vclock:
            return
        if not vclock.round_trips(vclock.keep_cortex_id_keys(event.vclock)):
            # A key or value the stored text would change (or refuse): one read and one write of the row.
            self._flush_clock()
            self._merge_clock_stored(event)
            return
        if self._clock is None:
            self._clock = state.get_clock(self.conn)
        try:
            merged = vclock.merge_for_replay(self._clock, event.vclock)
        except VClockTooLargeError as exc:
            # Like Go: logged, and the event still counts.
            self.log.warning(MERGE_CLOCK_LOG.format(err=exc))
            return
        self._clock, self._clock_dirty = merged, True

    def _merge_clock_stored(self, event: Event) -> None:
        try:
            merged = vclock.merge_for_replay(state.get_clock(self.conn), event.vclock or {})
        except VClockTooLargeError as exc:
            self.log.warning(MERGE_CLOCK_LOG.format(err=exc))
            return
        state.set_clock(self.conn, merged)

    def _flush_clock(self) -> None:
        """Write the in-memory clock to its row (if ahead of it); from here the row is current again."""
        if self._clock is not None and self._clock_dirty:
            state.set_clock(self.conn, self._clock)
        self._clock, self._clock_dirty = None, False

    # ------------------------------------------------------------------------------------------------------
    # Helpers

    def _store(self, event: Event) -> bool:
        stored = rows.insert_event(self.conn, event)
        if stored:
            self._undo.event(event.id)
            clock = vclock.keep_cortex_id_keys(event.vclock or {})
            for aspect, actions in _ASPECTS.items():
                versions = self._versions.get((event.trace_id, aspect))
                if versions is not None and event.action in actions:
                    _add_version(versions, clock, event.id)
        return stored

    def _store_only(self, event: Event, effect: str = STORED_ONLY) -> ReplayOutcome:
        # Stored now: an id the log holds already never gets here (the already-seen gate answers it), and the
        # create fold, which hands stored events back to their handlers, reads no outcome.
        return ReplayOutcome(event.id, event.action, self._store(event), effect)

    def _done(self, event: Event, effect: str) -> ReplayOutcome:
        stored = self._store(event)
        self._step("db")
        return ReplayOutcome(event.id, event.action, stored, effect)

    def _row(self, trace_id: str) -> TraceRow | None:
        return rows.get_row(self.conn, trace_id)

    def _file(self, row: TraceRow) -> traces.Trace:
        """The row's trace file, or (gone) the trace rebuilt from the DB: Go fails and pins the cursor.

        Reading it first (before any DB statement) would not help: with a page under one transaction the
        file steps of later events can be ahead of the committed rows, so a resumed replay must not need
        the file to still exist.
        """
        return rows.current_trace(self.conn, self.dir, row)

    def _write(self, folder: str, trace: traces.Trace) -> None:
        self._undo.save(trace.id)
        traces.write_in(self.dir, folder, trace, durable=self.durable)
        self._step("file")

    # ------------------------------------------------------------------------------------------------------
    # What the stored log says about a trace (docs/replay.md, "Convergence")

    def _versions_of(self, trace_id: str, aspect: str) -> list[_Version]:
        """The stored changes of one aspect of a trace that no other stored change of it has seen.

        Every aspect of the trace is read in one query, kept for one transaction, and joined by every event
        stored meanwhile, so a trace updated a thousand times in one page is read once, not a thousand times.
        """
        found = self._versions.get((trace_id, aspect))
        if found is None:
            by_aspect = {name: self._versions.setdefault((trace_id, name), []) for name in _ASPECTS}
            for event_id, action, text in self.conn.execute(
                f"SELECT id, action, vclock FROM events WHERE trace_id = ? AND action IN ({_ASPECT_MARKS}) "
                "ORDER BY id",
                (trace_id, *_ASPECT_ACTIONS),
            ):
                # A null or unreadable clock counts as none.
                clock = vclock.keep_cortex_id_keys(vclock.decode(text))
                for name, actions in _ASPECTS.items():
                    if action in actions:
                        _add_version(by_aspect[name], clock, event_id)
            found = by_aspect[aspect]
        return found

    def _superseded(self, event: Event, aspect: str) -> bool:
        """Some other stored change of `aspect` has seen this event: its clock dominates the event's.

        Gossip delivers events out of causal order (relays, cursors that skip), so a change can arrive after
        the change that replaced it; applying it would put the older state back on this replica only. An event
        without a clock is never superseded: there is nothing to compare, and Go and Rust apply it. Equal
        clocks do not count (unlike an update's: the Rust rule): every noema event bumps its author's clock,
        so two changes with one clock carry no order, and arrival order decides as before.
        """
        incoming = vclock.keep_cortex_id_keys(event.vclock or {})
        if not incoming:
            return False
        return any(
            kept_id != event.id and kept != incoming and _covers(kept, incoming)
            for kept, kept_id in self._versions_of(event.trace_id, aspect)
        )

    def _newest(self, event: Event, aspect: str) -> bool:
        """The event has seen every other stored change of `aspect` (its clock dominates each of them)."""
        incoming = vclock.keep_cortex_id_keys(event.vclock or {})
        return bool(incoming) and all(
            kept != incoming and _covers(incoming, kept)
            for kept, kept_id in self._versions_of(event.trace_id, aspect)
            if kept_id != event.id
        )

    def _stored_event(self, event_id: str) -> Event:
        found = self.conn.execute(f"SELECT {_EVENT_SELECT} FROM events WHERE id = ?", (event_id,)).fetchone()
        return event_from_row(found)

    def _derived_tier(self, trace_id: str) -> str:
        """The tier the trace's stored events give it, whatever order they arrived in.

        The base is the tier of its first snapshot (its create, else the first update: a row an update made).
        The last promote or demote (by clock; of concurrent ones, the highest id) sets it. A consolidate lifts
        `short` to `mid`, so it counts only when no promote or demote came after it.
        """
        found = self.conn.execute(
            "SELECT data FROM events WHERE trace_id = ? AND action IN ('create', 'update') "
            "ORDER BY action = 'create' DESC, id LIMIT 1",
            (trace_id,),
        ).fetchone()
        base = _loads_object(found[0]).get("tier") if found else None
        tier = base if isinstance(base, str) and base in traces.TIERS else "short"
        last: vclock.VClock = {}
        changes = self._versions_of(trace_id, "tier")
        if changes:
            last, last_id = max(changes, key=lambda version: version[1])
            to = _loads_object(self._stored_event(last_id).data).get("to")
            if isinstance(to, str) and to in traces.TIERS:
                tier = to
        if tier != "short":
            return tier
        for text, data in self.conn.execute(
            "SELECT vclock, data FROM events WHERE trace_id = ? AND action = 'consolidate'", (trace_id,)
        ):
            if _consolidate_target(_loads_object(data), trace_id) != trace_id:
                continue
            clock = vclock.keep_cortex_id_keys(vclock.decode(text))
            if not (last and clock and _covers(last, clock)):
                return "mid"
        return tier

    def _set_tier(self, row: TraceRow, tier: str) -> None:
        """Give the row (and its file, unless a tombstone) the tier; nothing when it already has it."""
        if tier == row.tier:
            return
        self.conn.execute("UPDATE traces SET tier = ? WHERE id = ?", (tier, row.id))
        if row.purged_at is None:
            current = self._file(row)
            self._write(row.folder, replace(current, tier=tier))

    def _fold_stored(self, trace_id: str) -> None:
        """A new row: apply the stored events of the trace that arrived before it (stored only then).

        Each goes through its handler with the rules above, so a change that a later stored one replaced is
        skipped, and a removal the new row's snapshot never saw removes it again.
        """
        found = self.conn.execute(
            f"SELECT {_EVENT_SELECT} FROM events WHERE trace_id = ? AND action IN ({_FOLDED_MARKS}) ORDER BY id",
            (trace_id, *_FOLDED),
        ).fetchall()
        for values in found:
            stored = event_from_row(values)
            if self._row(trace_id) is None:
                return
            _HANDLERS[stored.action](self, stored)  # its event is in the log already: _store finds it there

    # ------------------------------------------------------------------------------------------------------
    # create / update / tag_update

    def _create(self, event: Event, snap: _Snapshot | None = None) -> ReplayOutcome:
        """A create, or an update of a trace this cortex does not hold (yet, or any more)."""
        snap = snap or _snapshot(event)
        tier = snap.tier or "short"
        if tier not in traces.TIERS:
            raise ReplayError(
                INVALID_TIER_ERROR.format(action=event.action, event_id=event.id, tier=go_quote(tier))
            )
        _check_hash(event, snap)
        row = self._row(event.trace_id)
        if row is not None:
            return self._create_of_a_held_trace(event, row)
        earlier = self.conn.execute(
            "SELECT 1 FROM events WHERE trace_id = ? LIMIT 1", (event.trace_id,)
        ).fetchone()
        outcome = self._done(event, CREATED)
        source = event  # the event whose snapshot makes the row
        created, cortex_id = event.timestamp, event.cortex_id
        if earlier is not None:
            # Events of this trace arrived before this one: the row is made from the snapshot no stored
            # snapshot has seen, dated by the trace's create, at the tier its events give it.
            if self._superseded(event, "content"):
                newest = max(self._versions_of(event.trace_id, "content"), key=lambda version: version[1])
                source = self._stored_event(newest[1])
                snap = _snapshot(source)
            found = self.conn.execute(
                "SELECT timestamp, cortex_id FROM events WHERE trace_id = ? AND action = 'create' ORDER BY id "
                "LIMIT 1",
                (event.trace_id,),
            ).fetchone()
            if found is not None:
                created, cortex_id = found
            tier = self._derived_tier(event.trace_id)
        locked = snap.source_locked and source.cortex_id != self.own_id
        trace = traces.Trace(
            id=event.trace_id,
            title=snap.title,
            type=snap.type,
            body=snap.body,
            tier=tier,
            author=snap.author,
            tags=snap.tags,
            derived_from=snap.derived_from,
            origin=snap.origin,
            created=created,
            # The event timestamp, not the local replay time Go stamps (cortex.md §9.4): every peer then
            # holds the same file as the emitter.
            updated=source.timestamp,
            content_hash=snap.content_hash,
            source_hash=snap.source_hash,
            source_locked=locked,
        )
        rows.insert_trace_row(
            self.conn, trace, cortex_id=cortex_id, content_hash=snap.content_hash, tier=tier
        )
        self._write(traces.ACTIVE, trace)
        if earlier is not None:
            self._fold_stored(event.trace_id)
        return outcome

    def _create_of_a_held_trace(self, event: Event, row: TraceRow) -> ReplayOutcome:
        """A create for a row that exists: stored only (the Rust rule), except the trace's own create arriving
        after an update made the row: it dates the row and gives it its owner.

        The Rust rule keeps an existing row (the other side's same-day divergence trace, a backfilled create)
        as is; Go overwrites the file, then swallows the UNIQUE error without storing the event (cortex.md
        §9.3). A backfilled create has a fresh clock that no stored update has seen, so it stays stored only.
        """
        own = self.conn.execute(
            "SELECT 1 FROM events WHERE trace_id = ? AND action = 'create' LIMIT 1", (row.id,)
        ).fetchone() is None and self._superseded(event, "content")
        outcome = self._store_only(event)
        if not own:
            return outcome
        with rows.triggers_dropped(self.conn, (LONG_TERM_IMMUTABLE_TRIGGER,)):
            self.conn.execute(
                "UPDATE traces SET created_at = ?, cortex_id = ? WHERE id = ?",
                (event.timestamp, event.cortex_id, row.id),
            )
        tier = self._derived_tier(row.id)
        if tier != row.tier:
            self.conn.execute("UPDATE traces SET tier = ? WHERE id = ?", (tier, row.id))
        if row.purged_at is None:
            current = self._file(row)
            self._write(row.folder, replace(current, created=event.timestamp, tier=tier))
        return ReplayOutcome(event.id, event.action, True, UPDATED)

    def _update(self, event: Event) -> ReplayOutcome:
        snap = _snapshot(event)
        row = self._row(event.trace_id)
        if row is None:
            return self._create(event, snap)
        _check_hash(event, snap)
        relation = self._against_current(event)
        if relation is _Relation.STALE:
            return self._store_only(event)
        if relation is _Relation.CONCURRENT:
            return self._diverge(event, row, snap)
        restore_long = False
        if row.tier == "long":
            if not self._promoted_to_long_after(event):
                return self._store_only(event)
            # A causally older update that arrived after the promote to long: apply it under `mid`, then
            # put `long` back, inside the transaction (the immutability trigger only guards long -> long).
            self.conn.execute("UPDATE traces SET tier = 'mid' WHERE id = ?", (row.id,))
            restore_long = True
        locked = snap.source_locked and event.cortex_id != self.own_id
        # A tombstone (purge_long_term) keeps its row's columns, not its time, tags, text or file: an edit made
        # before the purge that arrives after it changes only what the purge kept.
        updated_at = event.timestamp if row.purged_at is None else row.updated_at
        self.conn.execute(
            "UPDATE traces SET title = ?, type = ?, author = ?, origin = ?, updated_at = ?, content_hash = ?, "
            "source_locked = ?, source_hash = ? WHERE id = ?",
            (
                snap.title,
                snap.type,
                snap.author,
                snap.origin,
                updated_at,
                snap.content_hash,
                int(locked),
                snap.source_hash or None,
                row.id,
            ),
        )
        if restore_long:
            self.conn.execute("UPDATE traces SET tier = 'long' WHERE id = ?", (row.id,))
        rows.replace_lineage(self.conn, row.id, snap.derived_from)
        if row.purged_at is not None:
            return self._done(event, UPDATED)
        try:
            current = rows.read_file_for(self.dir, row)
        except (InvalidTraceFrontmatterError, OSError, UnicodeDecodeError):
            current = None  # an update rewrites the whole file; only unknown keys would have been kept
        tags = snap.tags
        if self._superseded(event, "tags"):
            # A tag change made after this edit is in already: the edit's content, the newer tags.
            tags = current.tags if current is not None else rows.rebuild_from_db(self.conn, row).tags
        rows.replace_tags(self.conn, row.id, tags)
        rows.replace_fts(self.conn, row.id, snap.title, snap.body, tags)
        outcome = self._done(event, UPDATED)
        trace = traces.Trace(
            id=row.id,
            title=snap.title,
            type=snap.type,
            body=snap.body,
            tier=row.tier,
            author=snap.author,
            tags=tags,
            derived_from=snap.derived_from,
            origin=snap.origin,
            created=row.created_at,
            updated=event.timestamp,
            content_hash=snap.content_hash,
            source_hash=snap.source_hash,
            source_locked=locked,
            # Keys noema does not know survive the rewrite, as in the Rust build.
            extra=current.extra if current is not None else (),
        )
        self._write(row.folder, trace)
        return outcome

    def _against_current(self, event: Event) -> _Relation:
        """How an update's clock stands to the trace's current version (cortex.md §6.4, as the live build).

        The current version is not "the newest stored snapshot event": a stale update is stored too, and a
        later comparison against its clock would let a concurrent edit through unnoticed. It is the set of
        snapshot events (create, update) that no other one dominates: one event while edits are ordered,
        several once concurrent edits met. An update that dominates all of them is applied; one that some of
        them dominates or equals is stale and only stored; anything else is concurrent: a divergence.
        """
        incoming = vclock.keep_cortex_id_keys(event.vclock or {})
        if not incoming:
            return _Relation.APPLY  # nothing to compare with: Go and Rust apply it
        current = [clock for clock, _ in self._versions_of(event.trace_id, "content")]
        if not current:
            return _Relation.APPLY
        if any(_covers(kept, incoming) for kept in current):
            return _Relation.STALE
        if all(_covers(incoming, kept) for kept in current):
            return _Relation.APPLY
        return _Relation.CONCURRENT

    def _promoted_to_long_after(self, event: Event) -> bool:
        """A stored promote to `long` came after this update: by clock (it has seen the update), or by id as Go
        decides (which also covers a promote concurrent with the update, a protocol limit)."""
        incoming = vclock.keep_cortex_id_keys(event.vclock or {})
        for promote_id, text, data in self.conn.execute(
            "SELECT id, vclock, data FROM events WHERE trace_id = ? AND action = 'promote'", (event.trace_id,)
        ):
            if _loads_object(data).get("to") != "long":
                continue
            clock = vclock.keep_cortex_id_keys(vclock.decode(text))
            if promote_id > event.id or (incoming and clock and _covers(clock, incoming)):
                return True
        return False

    def _diverge(self, event: Event, row: TraceRow, snap: _Snapshot) -> ReplayOutcome:
        """cortex.md §6.4: record both versions in a new divergence trace; the original keeps local content."""
        self._flush_clock()  # the local version's clock and the local create event read and bump the row
        local_body = self._file(row).body
        versions = [
            (self.own_id, self.own_name, state.get_clock(self.conn), local_body),
            (event.cortex_id, event.origin, event.vclock or {}, snap.body),
        ]
        versions.sort(key=lambda version: version[0])
        labels = [_label(name, cortex_id) for cortex_id, name, _, _ in versions]
        parts = [
            "## Concurrent edits detected\n",
            f"\n**Trace:** {row.id}\n",
            f"**Conflicting origins:** {', '.join(labels)}\n",
        ]
        for label, (_, _, clock, body) in zip(labels, versions, strict=True):
            parts.append(f"\n### Version from {label}\n")
            parts.append(f"**Vector clock:** {vclock.encode(clock)}\n")
            parts.append("\n" + body + ("" if body.endswith("\n") else "\n"))
        divergence_body = "".join(parts).rstrip("\n")
        # The remote update is stored, not applied; the original keeps the local content.
        stored = self._store(event)
        draft = TraceDraft(
            title=f"Divergence: {row.title}",
            type="divergence",
            body=divergence_body,
            tags=("divergence", "needs-resolution"),
            author="system",
            derived_from=(row.id,),
            id_source=f"divergence-{row.id}",
            with_content_hash=False,
        )
        # A second conflict on the same UTC day gets `-2`, `-3` ... (Go collides, cortex.md §9.17).
        self._emitter.create(draft, self.now(), durable=self.durable, before_write=self._undo.save)
        self._step("file")
        return ReplayOutcome(event.id, event.action, stored, DIVERGED)

    def _tag_update(self, event: Event) -> ReplayOutcome:
        payload = _payload(event)
        tags = rows.dedupe(_str_list(payload, "tags", event))
        row = self._row(event.trace_id)
        if row is None:
            # Go fails here and pins the cursor for good (cortex.md §9.8); the create folds it in later.
            return self._store_only(event)
        if row.purged_at is not None or self._superseded(event, "tags"):
            # A later edit, tag change or soft purge set the tags since: this change is history.
            return self._store_only(event)
        current = self._file(row)
        rows.replace_tags(self.conn, row.id, tags)
        rows.replace_fts(self.conn, row.id, row.title, current.body, tags)
        outcome = self._done(event, TAGGED)
        self._write(
            row.folder,
            replace(
                current,
                tags=tags,
                tier=row.tier,
                content_hash=row.content_hash or "",
                source_hash=row.source_hash or "",
            ),
        )
        return outcome

    # ------------------------------------------------------------------------------------------------------
    # Visibility

    def _visibility(self, event: Event) -> ReplayOutcome:
        """archive / unarchive / trash / recover: the state the newest of them gives, or store only.

        Each leaves one whole visibility (trash clears `archived_at`, so a recover leaves an active trace), so
        the newest by clock decides, in any arrival order; an older one that arrives after it is stored only.
        A change that is neither (concurrent with another, or without a clock) applies where it makes sense
        for the row's state: Go renames an archive of a trashed trace from traces/ and pins the cursor on the
        missing file; here it is stored only.
        """
        row = self._row(event.trace_id)
        if row is None or self._superseded(event, "visibility"):
            return self._store_only(event)
        if self._newest(event, "visibility"):
            # It has seen every other visibility change stored here: it sets the whole state, whatever state
            # the row is in (a change between them may still be on its way).
            sets, target = _WHOLE_VISIBILITY[event.action]
        elif rows.allowed_for(row, event.action):
            sets, target = rows.VISIBILITY[event.action]
        else:
            return self._store_only(event)
        effect = _VISIBILITY_EFFECTS[event.action]
        params = (event.timestamp, row.id) if "?" in sets else (row.id,)
        self.conn.execute(f"UPDATE traces SET {sets} WHERE id = ?", params)
        outcome = self._done(event, effect)
        if row.purged_at is not None:
            return outcome  # a tombstone has no file to move
        if traces.locate(self.dir, row.id, (row.folder,)) is None:
            # Gone from every folder: a later event of an interrupted page (a purge) removed it before the
            # crash. Rebuild it where this event puts it; the purge, replayed next, removes it again.
            self._write(target, rows.rebuild_from_db(self.conn, row))
            return outcome
        self._undo.save(row.id)
        traces.move(self.dir, row.id, row.folder, target, durable=self.durable)
        self._step("file")
        return outcome

    # ------------------------------------------------------------------------------------------------------
    # Deletion

    def _purge(self, event: Event) -> ReplayOutcome:
        row = self._row(event.trace_id)
        if row is not None and row.tier == "long":
            # Promoted to long here while its author purged it (or before the purge reached us): Go and Rust
            # abort on the trigger and pin the cursor for good, so nothing that peer serves after it ever
            # arrives. Long-term traces are removed by purge_long_term and purge_hard; this one stays.
            self.log.warning(LONG_PURGE_LOG.format(event_id=event.id, trace_id=event.trace_id))
            return self._store_only(event)
        # Unlike Go, the FTS row and the file in whichever folder it is go too: Go leaves an active or
        # archived file behind as an orphan that `noema sync` re-indexes, and a search hit for a trace that
        # no longer exists (cortex.md §9.9).
        self.conn.execute("DELETE FROM traces WHERE id = ?", (event.trace_id,))
        self.conn.execute("DELETE FROM traces_fts WHERE id = ?", (event.trace_id,))
        outcome = self._done(event, PURGED)
        self._undo.save(event.trace_id)
        traces.remove(self.dir, event.trace_id)
        self._step("file")
        return outcome

    def _purge_db_only(self, event: Event) -> ReplayOutcome:
        """cortex.md §6.3: a legacy id (uppercase, old slug) is purged in the DB; no path is ever built from it."""
        self.conn.execute("DELETE FROM traces WHERE id = ?", (event.trace_id,))
        self.conn.execute("DELETE FROM traces_fts WHERE id = ?", (event.trace_id,))
        return self._done(event, PURGED)

    def _purge_long_term(self, event: Event) -> ReplayOutcome:
        row = self._row(event.trace_id)
        if row is None:
            return self._store_only(event)  # applied when the create arrives (_fold_stored)
        reason = _purge_reason(event)
        with rows.triggers_dropped(self.conn, (LONG_TERM_IMMUTABLE_TRIGGER,)):
            self.conn.execute(
                "UPDATE traces SET purged_at = ?, updated_at = ?, purge_reason = ? WHERE id = ?",
                (event.timestamp, event.timestamp, reason, row.id),
            )
        self.conn.execute("DELETE FROM trace_tags WHERE trace_id = ?", (row.id,))
        rows.replace_fts(self.conn, row.id, "", f"[purged: {reason}]", ())
        outcome = self._done(event, PURGED_LONG_TERM)
        # Every folder, as the live build does (Go: active and archive): a tombstone has no file, so a change
        # made before the purge that arrives after it has no file to bring back.
        self._undo.save(row.id)
        traces.remove(self.dir, row.id)
        self._step("file")
        return outcome

    def _purge_hard(self, event: Event) -> ReplayOutcome:
        row = self._row(event.trace_id)
        if row is None:
            return self._store_only(event)  # applied when the create arrives (_fold_stored)
        rows.delete_everywhere(self.conn, row.id)
        outcome = self._done(event, PURGED_HARD)
        # Go deletes the files after COMMIT; here before it, so a crash in between cannot leave files that
        # `noema sync` would resurrect while the event already counts as applied.
        self._undo.save(row.id)
        traces.remove(self.dir, row.id)
        self._step("file")
        return outcome

    # ------------------------------------------------------------------------------------------------------
    # Tiers and votes

    def _tier_change(self, event: Event) -> ReplayOutcome:
        to = _payload(event).get("to")
        if not isinstance(to, str) or not to:
            raise ReplayError(MISSING_TO_ERROR.format(event_id=event.id))
        row = self._row(event.trace_id)
        if row is None:
            if to not in traces.TIERS:
                # Stored only, it would fail the trace's create later (the fold applies it): it fails itself
                # now, as it does once the trace is here.
                raise ReplayError(
                    INVALID_TIER_ERROR.format(action=event.action, event_id=event.id, tier=go_quote(to))
                )
            return self._store_only(event)
        if to not in traces.TIERS:
            # The CHECK constraint refuses it (the text Go gives) before any file is touched.
            self.conn.execute("UPDATE traces SET tier = ? WHERE id = ?", (to, row.id))
        outcome = self._done(event, TIER_CHANGED)
        # Without a clock the event cannot be placed among the others: it sets the tier, as in Go.
        tier = self._derived_tier(row.id) if vclock.keep_cortex_id_keys(event.vclock or {}) else to
        self._set_tier(row, tier)
        return outcome

    def _vote(self, event: Event) -> ReplayOutcome:
        # Go unmarshals into an int: missing or null leaves it 0, a float or string fails the payload.
        delta = _payload(event).get("delta")
        if delta is None:
            delta = 0
        elif isinstance(delta, bool) or not isinstance(delta, int):
            raise _payload_error(event, NOT_AN_INTEGER.format(key="delta"))
        clamped = (delta > 0) - (delta < 0)  # Go clamps to the sign (cortex.md §9.7)
        row = self._row(event.trace_id)
        if row is None:
            return self._store_only(event)  # counted when the create arrives (_fold_stored)
        self.conn.execute("UPDATE traces SET tier_votes = tier_votes + ? WHERE id = ?", (clamped, row.id))
        return self._done(event, VOTED)

    def _consolidate(self, event: Event) -> ReplayOutcome:
        # As the live (Rust) build: a distilled_id that is not a string reads as absent (the event's own trace),
        # and one that names no trace we can hold is a missing target: stored, not applied, never a pinned cursor.
        target = _consolidate_target(_payload(event), event.trace_id)
        row = self._row(target) if traces.is_valid_trace_id(target) else None
        if row is None:
            return self._store_only(event)
        if target == event.trace_id and vclock.keep_cortex_id_keys(event.vclock or {}):
            # On its own trace, placed among the tier changes by clock (_derived_tier).
            stored = self._store(event)
            tier = self._derived_tier(row.id)
            if tier == row.tier:
                return ReplayOutcome(event.id, event.action, stored, STORED_ONLY)
            self._step("db")
            self._set_tier(row, tier)
            return ReplayOutcome(event.id, event.action, stored, CONSOLIDATED)
        if row.tier != "short":
            return self._store_only(event)
        outcome = self._done(event, CONSOLIDATED)
        self._set_tier(row, "mid")
        return outcome


class _Relation(Enum):
    """An update against the trace's current version."""

    APPLY = "apply"  # it dominates every current version, or there is no clock to compare
    STALE = "stale"  # a current version dominates or equals it: stored only
    CONCURRENT = "concurrent"  # neither: a divergence


# The aspects of a trace and the actions that set each (docs/replay.md, "Convergence"). A change is applied
# only while no stored change of its aspect has seen it. Tiers are derived from their events as a whole
# (_derived_tier), since a consolidate is no setter. Removals are not an aspect: one is applied whenever it
# finds the row, and a row made after it folds it in again (_fold_stored), so the trace ends removed in any
# arrival order.
_ASPECTS: dict[str, tuple[str, ...]] = {
    "content": ("create", "update"),
    "tags": ("create", "update", "tag_update", "purge_long_term"),
    "visibility": ("archive", "unarchive", "trash", "recover"),
    "tier": ("promote", "demote"),
}
_ASPECT_ACTIONS = tuple(sorted({action for actions in _ASPECTS.values() for action in actions}))
_ASPECT_MARKS = ",".join("?" * len(_ASPECT_ACTIONS))
# What a new row takes from events of its trace that arrived before it.
_FOLDED = (
    "tag_update",
    "archive",
    "unarchive",
    "trash",
    "recover",
    "promote",
    "demote",
    "consolidate",
    "vote",
    "purge",
    "purge_hard",
    "purge_long_term",
)
_FOLDED_MARKS = ",".join("?" * len(_FOLDED))
_EVENT_SELECT = ", ".join(EVENT_COLUMNS)

_Version = tuple[vclock.VClock, str]  # a stored change: its clock (cortex-id keys) and its event id


def _add_version(current: list[_Version], clock: vclock.VClock, event_id: str) -> None:
    """Count a stored change into an aspect's newest changes: unless one already there dominates or equals
    it, it joins and drops those it dominates. A change without a clock cannot be placed: it is left out."""
    if not clock:
        return
    if len(current) == 1:  # the usual case, while changes are ordered: kept, replaced or joined
        kept = current[0][0]
        if not _covers(kept, clock):
            if _covers(clock, kept):
                current[0] = (clock, event_id)
            else:
                current.append((clock, event_id))
        return
    if not any(_covers(kept, clock) for kept, _ in current):
        current[:] = [(kept, kept_id) for kept, kept_id in current if not _covers(clock, kept)]
        current.append((clock, event_id))


def _covers(a: vclock.VClock, b: vclock.VClock) -> bool:
    """a >= b at every key (a missing key counts 0): a dominates or equals b."""
    return all(a.get(key, 0) >= count for key, count in b.items())


def _consolidate_target(payload: dict[str, Any], trace_id: str) -> str:
    target = payload.get("distilled_id")
    return target if isinstance(target, str) and target else trace_id


_Handler = Callable[[Replayer, Event], ReplayOutcome]
_HANDLERS: dict[str, _Handler] = {
    "create": Replayer._create,
    "update": Replayer._update,
    "tag_update": Replayer._tag_update,
    "archive": Replayer._visibility,
    "unarchive": Replayer._visibility,
    "trash": Replayer._visibility,
    "recover": Replayer._visibility,
    "purge": Replayer._purge,
    "promote": Replayer._tier_change,
    "demote": Replayer._tier_change,
    "vote": Replayer._vote,
    "consolidate": Replayer._consolidate,
    "consolidate_fallback": Replayer._store_only,
    "divergence_long_term": Replayer._store_only,
    "purge_long_term": Replayer._purge_long_term,
    "purge_hard": Replayer._purge_hard,
}


# The state a visibility change leaves, whatever the state before (the newest change sets all of it).
_WHOLE_VISIBILITY = {
    "archive": ("archived_at = ?, trashed_at = NULL", traces.ARCHIVE),
    "unarchive": ("archived_at = NULL, trashed_at = NULL", traces.ACTIVE),
    "trash": ("trashed_at = ?, archived_at = NULL", traces.TRASH),
    "recover": ("trashed_at = NULL, archived_at = NULL", traces.ACTIVE),
}
_VISIBILITY_EFFECTS = {"archive": ARCHIVED, "unarchive": UNARCHIVED, "trash": TRASHED, "recover": RECOVERED}


def _check_hash(event: Event, snap: _Snapshot) -> None:
    # An empty payload hash is accepted unchecked, as in Go; the row then stores ''.
    if snap.content_hash and snap.content_hash != traces.content_hash(snap.body):
        raise ReplayError(HASH_MISMATCH_ERROR.format(action=event.action, event_id=event.id))


def _loads_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _label(name: str, cortex_id: str) -> str:
    return f"{name} ({cortex_id[:8]})" if cortex_id else name


def _purge_reason(event: Event) -> str:
    try:
        reason = event.payload().get("reason")
    except (ValueError, EventFormatError):
        reason = None
    return reason if isinstance(reason, str) and reason else REMOTE_PURGE_REASON


def _as_replay_error(event: Event, exc: Exception) -> ReplayError:
    """Every failure leaves as a ReplayError; sentinels stay reachable through __cause__."""
    if isinstance(exc, ReplayError):
        return exc
    detail = str(exc) if isinstance(exc, sqlite3.Error | OSError) else f"{type(exc).__name__}: {exc}"
    wrapped = ReplayError(APPLY_FAILED_ERROR.format(action=event.action, event_id=event.id, detail=detail))
    wrapped.__cause__ = exc
    return wrapped


def _usage_values(row: dict[str, Any]) -> tuple[Any, ...]:
    def text(key: str) -> str:
        value = row.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ReplayError(USAGE_ERROR.format(problem=NOT_A_STRING.format(key=key)))
        return value

    def count(key: str) -> int:
        value = row.get(key, 0)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise ReplayError(USAGE_ERROR.format(problem=NOT_AN_INTEGER.format(key=key)))
        return value

    values = (
        text("trace_id"),
        text("peer_cortex_id"),
        count("read_count"),
        count("modify_count"),
        scrub(text("last_read_at")) or None,
        scrub(text("updated_at")),
        count("search_hit_count"),
    )
    trace_id, peer_cortex_id, counters = values[0], values[1], (values[2], values[3], values[6])
    # As the Rust build checks each row; and a counter must fit SQLite's 64-bit integer.
    if (
        not traces.is_valid_trace_id(trace_id)
        or not peer_cortex_id
        or not values[5]
        or not all(0 <= counter <= _INT64_MAX for counter in counters)
    ):
        raise ReplayError(INVALID_USAGE_ROW.format(trace_id=go_quote(scrub(trace_id))))
    return values


_INT64_MAX = 2**63 - 1


_USAGE_UPSERT = """INSERT INTO trace_usage
    (trace_id, peer_cortex_id, read_count, modify_count, last_read_at, updated_at, search_hit_count)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (trace_id, peer_cortex_id) DO UPDATE SET
    read_count = MAX(read_count, excluded.read_count),
    modify_count = MAX(modify_count, excluded.modify_count),
    search_hit_count = MAX(search_hit_count, excluded.search_hit_count),
    last_read_at = CASE WHEN COALESCE(excluded.last_read_at, '') > COALESCE(last_read_at, '')
                        THEN excluded.last_read_at ELSE last_read_at END,
    updated_at = MAX(updated_at, excluded.updated_at)"""
