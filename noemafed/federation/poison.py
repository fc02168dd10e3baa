"""Poison events: an event a peer serves that replay keeps refusing, and the operator's audited way past it.

A poll whose replay fails on one identifiable event records that event under `noemafed:poison:<peer>`, in the
transaction that writes the peer's health (syncer's error boundary). The same event failing again counts up;
another event starts the count again; a poll that succeeds, or whose cursor has passed the event (it was
applied, or `skip-event` stored it), clears the record. Network, identity and page failures neither count nor
clear: they say nothing about the event.

Once the count reaches `--block-after` (default 5) the peer is blocked: its next attempt is set an hour after
each failed one (BLOCKED_RETRY_SECONDS, in the peer's persisted backoff, where `sync --once` plans with it,
`retry-now` and `--ignore-backoff` end it, and status shows it) instead of by the doubling backoff, so it neither
floods the log nor holds the run; the run defers it with the reason `blocked`, and status names the event. `skip-event` (commands.skip) is the only way past it; each skip is
kept for ever under `noemafed:skipped:<event id>`.

Everything here but the two readers and writers is pure, so the rules are tested exhaustively.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from noemafed.cortex import state
from noemafed.records import Record
from noemafed.text.gotext import go_json_dumps
from noemafed.text.sanitize import one_line, short

DEFAULT_BLOCK_AFTER = 5  # `--block-after`: failed replays of the same event in a row that block a peer
BLOCKED_RETRY_SECONDS = 3600.0  # a blocked peer is tried again this long after its last failed attempt
ERROR_LIMIT = 300  # characters of the failure's text kept in the record (peer text: one line, scrubbed)


class PoisonRecord(Record):
    """`noemafed:poison:<peer>`: the event the peer's replay keeps failing on."""

    event_id: str
    trace_id: str
    action: str
    reason: str  # the health reason of the failure (classify.Reason)
    error: str  # the poll's failure text, one line, at most ERROR_LIMIT characters
    failures: int  # failed polls on this event in a row
    first_seen: str  # RFC3339: the first of them
    last_seen: str  # RFC3339: the latest of them (the base of the hourly retry)
    blocked_at: str = ""  # RFC3339: when the count reached --block-after; "" while it has not

    def encode(self) -> str:
        return go_json_dumps(self._asdict())


class ReplayFailure(Record):
    """A poll that ended on one event its replay refused: what the record needs of it."""

    event_id: str
    trace_id: str
    action: str
    reason: str
    error: str


class PollOutcome(Record):
    """What the record needs of one poll: whether it succeeded, the event its replay refused, the cursor after."""

    ok: bool
    failure: ReplayFailure | None  # None: no replay failure (a success, or a failure elsewhere)
    cursor: str


class SkippedEvent(Record):
    """`noemafed:skipped:<event id>`: one `skip-event`, kept for ever."""

    peer: str
    event_id: str
    trace_id: str
    action: str
    reason: str
    error: str
    note: str
    skipped_at: str  # RFC3339
    user: str  # the operator's user name, from the OS
    cursor_before: str

    def encode(self) -> str:
        return go_json_dumps(self._asdict())


# ---- the rules (pure) -------------------------------------------------------------------------------------


def reached(record: PoisonRecord, block_after: int) -> bool:
    """The same event has failed `block_after` polls in a row (or more): the poll that finds it blocks the peer."""
    return record.failures >= block_after


def blocked(record: PoisonRecord | None) -> bool:
    """Whether the peer is blocked, as the poll that wrote the record judged it (with that run's --block-after):
    every reader (the run's plan, the daemon, status, skip-event) asks this, so none judges with its own K."""
    return record is not None and bool(record.blocked_at)


def after_poll(
    previous: PoisonRecord | None, poll: PollOutcome, now: str, block_after: int
) -> PoisonRecord | None:
    """The record after one poll (`now`: its RFC3339 time)."""
    failure, cursor = poll.failure, poll.cursor
    if failure is not None and failure.event_id:
        if previous is not None and previous.event_id == failure.event_id:
            record = previous._replace(
                reason=failure.reason, error=failure.error, failures=previous.failures + 1, last_seen=now
            )
        else:  # a first failure, or another event: the count starts again
            record = PoisonRecord(
                failure.event_id, failure.trace_id, failure.action, failure.reason, failure.error, 1, now, now
            )
        if not reached(record, block_after):
            return record._replace(blocked_at="")
        return record if record.blocked_at else record._replace(blocked_at=now)
    if previous is None or poll.ok or (cursor and cursor >= previous.event_id):
        return None  # applied, skipped, or the peer no longer stops there
    return previous  # a failure that says nothing about the event (network, identity, a bad page)


def replay_failure(event_id: str, trace_id: str, action: str, reason: str, message: str) -> ReplayFailure:
    """The facts of a replay failure as stored: peer text made safe and short."""
    return ReplayFailure(
        short(event_id), short(trace_id), short(action), reason, one_line(message, ERROR_LIMIT)
    )


# ---- the records in federation_state ---------------------------------------------------------------------


def _texts(obj: dict[str, Any], names: Sequence[str]) -> list[str] | None:
    """The text fields, read as every record of federation_state reads them (state.text_field); None when one
    is not a text."""
    try:
        return [state.text_field(obj, name) for name in names]
    except TypeError:
        return None


def decode_record(text: str) -> PoisonRecord | None:
    """None for a missing, empty or malformed value (nothing recorded)."""
    obj = state.decode_object(text)
    if obj is None:
        return None
    names = ("event_id", "trace_id", "action", "reason", "error", "first_seen", "last_seen", "blocked_at")
    texts = _texts(obj, names)
    count = obj.get("failures")
    if texts is None or isinstance(count, bool) or not isinstance(count, int):
        return None
    if not texts[0] or count < 1:
        return None
    event_id, trace_id, action, reason, error, first_seen, last_seen, blocked_at = texts
    return PoisonRecord(event_id, trace_id, action, reason, error, count, first_seen, last_seen, blocked_at)


def decode_skipped(text: str) -> SkippedEvent | None:
    obj = state.decode_object(text)
    if obj is None:
        return None
    texts = _texts(obj, SkippedEvent._fields)
    return None if texts is None or not texts[1] else SkippedEvent(*texts)


def get_record(conn: state.Reader, peer: str) -> PoisonRecord | None:
    return decode_record(state.get(conn, state.poison_key(peer)))


def get_records(conn: state.Reader) -> dict[str, PoisonRecord]:
    """Every peer's record, by label, in one read (what a run plans with)."""
    records = {}
    for key, value in state.get_prefixed(conn, state.POISON_PREFIX):
        record = decode_record(value)
        if record is not None:
            records[key[len(state.POISON_PREFIX) :]] = record
    return records


def put_record(conn: sqlite3.Connection, peer: str, record: PoisonRecord | None) -> None:
    """Write the record, or delete it for None (inside the caller's transaction)."""
    if record is None:
        state.delete(conn, state.poison_key(peer))
    else:
        state.put(conn, state.poison_key(peer), record.encode())


def get_skipped(conn: state.Reader) -> list[SkippedEvent]:
    """Every skip ever recorded, oldest first."""
    skipped = [decode_skipped(value) for _, value in state.get_prefixed(conn, state.SKIPPED_PREFIX)]
    return sorted(
        (skip for skip in skipped if skip is not None), key=lambda skip: (skip.skipped_at, skip.event_id)
    )


def put_skipped(conn: sqlite3.Connection, skip: SkippedEvent) -> None:
    state.put(conn, state.skipped_key(skip.event_id), skip.encode())
