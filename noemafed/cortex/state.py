"""The `federation_state` table: cursors, pins, health, ranks and the local vector clock (federation.md §2)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

from noemafed.cortex import vclock
from noemafed.errors import StateError
from noemafed.records import Record
from noemafed.text.gotext import go_json_dumps

VCLOCK_KEY = "vclock"
LOCAL_RANK_KEY = "consolidation:rank"
CORTEX_KEY_PREFIX = "cortexkey:"

# Per-peer key suffixes; the peer part is the local label from cortex.md, never the remote's name.
LAST_EVENT = "last_event"
LAST_SEEN = "last_seen"
LAST_USAGE = "last_usage"
CORTEX_ID = "cortex_id"
HEALTH = "health"
CONSOLIDATION_RANK = "consolidation_rank"


def peer_key(peer: str, suffix: str) -> str:
    """`peer:<label>:<suffix>`, the exact key layout noema reads."""
    return f"peer:{peer}:{suffix}"


def cortex_key(cortex_id: str) -> str:
    """`cortexkey:<cortex_id>`: signing-key pins are per cortex, because events are relayed."""
    return CORTEX_KEY_PREFIX + cortex_id


class Snapshot:
    """Every row of federation_state, read in one scan, for a reader that looks up many keys and writes none:
    status reads eight keys per peer, some 170 single-row queries for 20 peers (0.3 ms) where one scan of the
    table takes 0.05 ms."""

    def __init__(self, rows: dict[str, str]) -> None:
        self.rows = rows


Reader: TypeAlias = "sqlite3.Connection | Snapshot"  # what the get_* functions read from


def snapshot(conn: sqlite3.Connection) -> Reader:
    """A Snapshot of the table, or `conn` itself when it cannot be scanned: each read then fails on its own, as
    it would have without the snapshot (status shows one peer unreadable, not the whole cortex)."""
    try:
        rows = conn.execute("SELECT key, value FROM federation_state").fetchall()
    except sqlite3.Error:
        return conn
    return Snapshot({str(key): str(value) for key, value in rows})


def get(conn: Reader, key: str) -> str:
    """The value, or "" when there is no row; "" and missing both mean unset."""
    if isinstance(conn, Snapshot):
        return conn.rows.get(key, "")
    try:
        row = conn.execute("SELECT value FROM federation_state WHERE key = ?", (key,)).fetchone()
    except sqlite3.Error as exc:
        raise StateError(f"reading federation_state {key!r}: {exc}") from exc
    return str(row[0]) if row else ""


def put(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Upsert one key."""
    try:
        conn.execute(
            "INSERT INTO federation_state(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
    except sqlite3.Error as exc:
        raise StateError(f"writing federation_state {key!r}: {exc}") from exc


def delete(conn: sqlite3.Connection, key: str) -> None:
    """Remove one key; deleting a missing key is not an error."""
    try:
        conn.execute("DELETE FROM federation_state WHERE key = ?", (key,))
    except sqlite3.Error as exc:
        raise StateError(f"deleting federation_state {key!r}: {exc}") from exc


def get_prefixed(conn: Reader, prefix: str) -> list[tuple[str, str]]:
    """Every (key, value) whose key starts with `prefix`, by key: one range scan of the primary key."""
    if isinstance(conn, Snapshot):  # keys compare by code point in Python as by UTF-8 byte in SQLite
        return sorted((key, value) for key, value in conn.rows.items() if key.startswith(prefix))
    try:
        rows = conn.execute(
            "SELECT key, value FROM federation_state WHERE key >= ? AND key < ? ORDER BY key",
            (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)),
        ).fetchall()
    except sqlite3.Error as exc:
        raise StateError(f"reading federation_state {prefix!r}*: {exc}") from exc
    return [(str(key), str(value)) for key, value in rows]


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """Several keys as one write: BEGIN IMMEDIATE ... COMMIT, rolled back on any error; a database error is a
    StateError like every other in this module."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise StateError(f"writing federation_state: {exc}") from exc
    try:
        yield
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise StateError(f"writing federation_state: {exc}") from exc
        raise


def get_clock(conn: Reader) -> vclock.VClock:
    """The local clock; missing, empty, `null` or malformed JSON all read as an empty clock."""
    return vclock.decode(get(conn, VCLOCK_KEY))


def set_clock(conn: sqlite3.Connection, clock: vclock.VClock) -> None:
    put(conn, VCLOCK_KEY, vclock.encode(clock))


class PeerError(Record):
    """The last failure of a peer: a reason from the enum plus stable ids, never free text."""

    reason: str
    observed_at: str = ""
    event_id: str = ""
    trace_id: str = ""

    def to_json_obj(self) -> dict[str, Any]:
        # Go field order; reason and observed_at are always present, the ids only when set.
        obj: dict[str, Any] = {"reason": self.reason}
        if self.event_id:
            obj["event_id"] = self.event_id
        if self.trace_id:
            obj["trace_id"] = self.trace_id
        obj["observed_at"] = self.observed_at
        return obj


class PeerHealth(Record):
    """`peer:<name>:health`, written after every poll (federation.md §2.5)."""

    version: str = ""
    version_observed_at: str = ""
    last_success: str = ""
    consecutive_failures: int = 0
    last_error: PeerError | None = None

    def to_json_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        if self.version:
            obj["version"] = self.version
        if self.version_observed_at:
            obj["version_observed_at"] = self.version_observed_at
        if self.last_success:
            obj["last_success"] = self.last_success
        if self.consecutive_failures:
            obj["consecutive_failures"] = self.consecutive_failures
        if self.last_error is not None:
            obj["last_error"] = self.last_error.to_json_obj()
        return obj

    def encode(self) -> str:
        return go_json_dumps(self.to_json_obj())

    def after_success(self, now: str, peer_version: str) -> PeerHealth:
        """The record after a fully successful poll (federation.md §3.9)."""
        return self._with_version(now, peer_version)._replace(
            last_success=now, consecutive_failures=0, last_error=None
        )

    def after_failure(self, now: str, peer_version: str, error: PeerError) -> PeerHealth:
        """The record after a failed poll; a version seen before the failure is still recorded."""
        return self._with_version(now, peer_version)._replace(
            consecutive_failures=self.consecutive_failures + 1,
            last_error=error,
        )

    def _with_version(self, now: str, peer_version: str) -> PeerHealth:
        # A blank version never overwrites a known one.
        if not peer_version:
            return self
        return self._replace(version=peer_version, version_observed_at=now)


def text_field(obj: dict[str, Any], key: str) -> str:
    """A text field of a recorded JSON object: missing and null both mean "" (unset); any other type is
    malformed (TypeError), so the record reads as nothing recorded."""
    value = obj.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(key)
    return value


def decode_health(text: str) -> PeerHealth:
    """Tolerant like Go: missing, empty or malformed JSON gives a zero record."""
    try:
        obj = json.loads(text) if text else None
        if not isinstance(obj, dict):
            return PeerHealth()
        failures = obj.get("consecutive_failures", 0)
        if failures is None:
            failures = 0
        if isinstance(failures, bool) or not isinstance(failures, int):
            return PeerHealth()
        last_error = None
        err_obj = obj.get("last_error")
        if isinstance(err_obj, dict):
            last_error = PeerError(
                reason=text_field(err_obj, "reason"),
                observed_at=text_field(err_obj, "observed_at"),
                event_id=text_field(err_obj, "event_id"),
                trace_id=text_field(err_obj, "trace_id"),
            )
        elif err_obj is not None:
            return PeerHealth()
        return PeerHealth(
            version=text_field(obj, "version"),
            version_observed_at=text_field(obj, "version_observed_at"),
            last_success=text_field(obj, "last_success"),
            consecutive_failures=failures,
            last_error=last_error,
        )
    except (ValueError, TypeError):
        return PeerHealth()


def get_health(conn: Reader, peer: str) -> PeerHealth:
    return decode_health(get(conn, peer_key(peer, HEALTH)))


def set_health(conn: sqlite3.Connection, peer: str, health: PeerHealth) -> None:
    put(conn, peer_key(peer, HEALTH), health.encode())


class RankEntry(Record):
    """A consolidation-election bid; rank 0 means not participating."""

    cortex_id: str = ""
    rank: int = 0
    observed_at: str = ""

    def encode(self) -> str:
        # No field is omitted, in this order (federation.md §2.6).
        return go_json_dumps(
            {"cortex_id": self.cortex_id, "rank": self.rank, "observed_at": self.observed_at}
        )


def decode_rank(text: str) -> RankEntry:
    """Missing, empty or malformed values give a zero entry."""
    try:
        obj = json.loads(text) if text else None
        if not isinstance(obj, dict):
            return RankEntry()
        rank = obj.get("rank", 0)
        if rank is None:
            rank = 0
        if isinstance(rank, bool) or not isinstance(rank, int):
            return RankEntry()
        return RankEntry(text_field(obj, "cortex_id"), rank, text_field(obj, "observed_at"))
    except (ValueError, TypeError):
        return RankEntry()


def get_local_rank(conn: Reader) -> RankEntry:
    return decode_rank(get(conn, LOCAL_RANK_KEY))


def get_peer_rank(conn: Reader, peer: str) -> RankEntry:
    return decode_rank(get(conn, peer_key(peer, CONSOLIDATION_RANK)))


def set_peer_rank(conn: sqlite3.Connection, peer: str, entry: RankEntry) -> None:
    put(conn, peer_key(peer, CONSOLIDATION_RANK), entry.encode())


class PeerState(Record):
    """The composite read behind status: cursor, last contact, pinned id and health."""

    name: str
    endpoint: str
    last_event: str = ""
    last_seen: str = ""
    cortex_id: str = ""
    health: PeerHealth = PeerHealth()
    last_usage: str = ""


def get_peer_state(conn: Reader, name: str, endpoint: str) -> PeerState:
    """Reads in Go's order (last_event, last_seen, cortex_id, health); the first DB error stops it.

    noemafed also reads `last_usage`, which Go's PeerState leaves out, because status shows it.
    """
    return PeerState(
        name=name,
        endpoint=endpoint,
        last_event=get(conn, peer_key(name, LAST_EVENT)),
        last_seen=get(conn, peer_key(name, LAST_SEEN)),
        cortex_id=get(conn, peer_key(name, CORTEX_ID)),
        health=get_health(conn, name),
        last_usage=get(conn, peer_key(name, LAST_USAGE)),
    )


def get_cortex_pubkey(conn: Reader, cortex_id: str) -> str:
    return get(conn, cortex_key(cortex_id))


def set_cortex_pubkey(conn: sqlite3.Connection, cortex_id: str, pubkey: str) -> None:
    put(conn, cortex_key(cortex_id), pubkey)


# ---- noemafed's own keys ---------------------------------------------------------------------------------
# Under a prefix noema never reads or writes (docs/operations.md, "What noemafed keeps in federation_state"):
# what noemafed knows between two cron runs. Values are compact JSON objects; a missing, empty or malformed
# value reads as "nothing recorded", like noema's own records.

NOEMAFED_PREFIX = "noemafed:"
BACKOFF_PREFIX = NOEMAFED_PREFIX + "backoff:"  # + peer label: the current failure streak, absent when none
RUN_PREFIX = NOEMAFED_PREFIX + "run:"  # + peer label: the last poll's outcome and the cumulative counter
LAST_SYNC_KEY = NOEMAFED_PREFIX + "last_sync"  # the last `sync --once` run as a whole (for status metrics)
# + peer label: the event that peer's replay keeps failing on, how often, since when (federation.poison reads
# and writes it). Cleared when the cursor passes it (applied or skipped), by a successful poll, and by
# reset-peer; moved by a rename.
POISON_PREFIX = NOEMAFED_PREFIX + "poison:"
# + event id: one `skip-event`, kept for ever (an audit list: no command deletes it, and it is not per peer).
SKIPPED_PREFIX = NOEMAFED_PREFIX + "skipped:"
# The Ed25519 verifier ("openssl" or "python") of the last sync that checked a signature: `status --json`
# reports it without loading OpenSSL itself (docs/performance.md, status).
VERIFIER_KEY = NOEMAFED_PREFIX + "verifier"


def backoff_key(peer: str) -> str:
    """`noemafed:backoff:<label>`."""
    return BACKOFF_PREFIX + peer


def run_key(peer: str) -> str:
    """`noemafed:run:<label>`."""
    return RUN_PREFIX + peer


def poison_key(peer: str) -> str:
    """`noemafed:poison:<label>`."""
    return POISON_PREFIX + peer


def skipped_key(event_id: str) -> str:
    """`noemafed:skipped:<event id>`."""
    return SKIPPED_PREFIX + event_id


def noemafed_peer_keys(peer: str) -> tuple[str, ...]:
    """noemafed's per-peer keys: reset-peer and remove-peer delete them, a rename moves them (the
    skipped-event audit is not per-peer state and stays)."""
    return (backoff_key(peer), run_key(peer), poison_key(peer))


def decode_object(text: str) -> dict[str, Any] | None:
    """A JSON object, or None for a missing, empty, malformed or non-object value (nothing recorded)."""
    try:
        obj = json.loads(text) if text else None
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _int_field(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(key)
    return value


class Backoff(Record):
    """A peer's current failure streak: when it began, how many polls failed, when the next one is due.

    `needs_operator` keeps what classify said of the last failure (the reason alone does not tell: the phase
    decides), so status can say `needs_operator` without guessing.
    """

    failing_since: str
    failures: int
    next_attempt_at: str
    needs_operator: bool = False
    retry_after: bool = False  # next_attempt_at came from the peer's Retry-After

    def encode(self) -> str:
        return go_json_dumps(
            {
                "failing_since": self.failing_since,
                "failures": self.failures,
                "next_attempt_at": self.next_attempt_at,
                "needs_operator": self.needs_operator,
                "retry_after": self.retry_after,
            }
        )


def decode_backoff(text: str) -> Backoff | None:
    """None when nothing (or nothing readable) is recorded: the peer is due."""
    obj = decode_object(text)
    if obj is None:
        return None
    try:
        return Backoff(
            failing_since=text_field(obj, "failing_since"),
            failures=_int_field(obj, "failures"),
            next_attempt_at=text_field(obj, "next_attempt_at"),
            needs_operator=obj.get("needs_operator") is True,
            retry_after=obj.get("retry_after") is True,
        )
    except TypeError:
        return None


def get_backoff(conn: Reader, peer: str) -> Backoff | None:
    return decode_backoff(get(conn, backoff_key(peer)))


def set_backoff(conn: sqlite3.Connection, peer: str, backoff: Backoff) -> None:
    put(conn, backoff_key(peer), backoff.encode())


def clear_backoff(conn: sqlite3.Connection, peer: str) -> None:
    delete(conn, backoff_key(peer))


# The last poll's outcome in noemafed:run:<peer>; `behind` is a poll that stopped with more to pull
# (--max-events, or the run's --max-duration after it had applied events).
RUN_OK = "ok"
RUN_BEHIND = "behind"
RUN_FAILED = "failed"
_RUN_OUTCOMES = (RUN_OK, RUN_BEHIND, RUN_FAILED)


class PeerRun(Record):
    """The last poll of a peer as noemafed recorded it, and what it has applied from the peer over all runs."""

    outcome: str = ""  # RUN_OK, RUN_BEHIND, RUN_FAILED; "" when never recorded
    caught_up: bool = False
    attempted_at: str = ""
    progressed_at: str = ""  # the last poll that ended ok or behind: the link worked
    events_applied_total: int = 0

    def encode(self) -> str:
        return go_json_dumps(
            {
                "outcome": self.outcome,
                "caught_up": self.caught_up,
                "attempted_at": self.attempted_at,
                "progressed_at": self.progressed_at,
                "events_applied_total": self.events_applied_total,
            }
        )


def decode_run(text: str) -> PeerRun:
    """A zero record for a missing, empty or malformed value."""
    obj = decode_object(text)
    if obj is None:
        return PeerRun()
    try:
        outcome = text_field(obj, "outcome")
        return PeerRun(
            outcome=outcome if outcome in _RUN_OUTCOMES else "",
            caught_up=obj.get("caught_up") is True,
            attempted_at=text_field(obj, "attempted_at"),
            progressed_at=text_field(obj, "progressed_at"),
            events_applied_total=max(0, _int_field(obj, "events_applied_total")),
        )
    except TypeError:
        return PeerRun()


def get_run(conn: Reader, peer: str) -> PeerRun:
    return decode_run(get(conn, run_key(peer)))


def set_run(conn: sqlite3.Connection, peer: str, run: PeerRun) -> None:
    put(conn, run_key(peer), run.encode())


class LastSync(Record):
    """The last `sync --once` run: when it ended, how long it took, what it exited with."""

    finished_at: str = ""
    seconds: float = 0.0
    exit_code: int = 0

    def encode(self) -> str:
        return go_json_dumps(
            {"finished_at": self.finished_at, "seconds": round(self.seconds, 3), "exit_code": self.exit_code}
        )


def get_last_sync(conn: Reader) -> LastSync | None:
    """None when no run was recorded (or the record is unreadable)."""
    obj = decode_object(get(conn, LAST_SYNC_KEY))
    if obj is None:
        return None
    seconds = obj.get("seconds", 0)
    try:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            return None
        return LastSync(text_field(obj, "finished_at"), float(seconds), _int_field(obj, "exit_code"))
    except TypeError:
        return None


def set_last_sync(conn: sqlite3.Connection, last: LastSync) -> None:
    put(conn, LAST_SYNC_KEY, last.encode())


def get_verifier(conn: Reader) -> str:
    """The recorded verifier's name ("openssl", "python"), or "" when none (or nothing readable) is recorded."""
    obj = decode_object(get(conn, VERIFIER_KEY))
    name = obj.get("name") if obj is not None else None
    return name if isinstance(name, str) else ""


def set_verifier(conn: sqlite3.Connection, name: str, label: str) -> None:
    """Record the verifier a sync checked signatures with (its `label` says which OpenSSL, or why not); written
    only when it differs from the record (an OpenSSL upgrade changes the label)."""
    record = go_json_dumps({"name": name, "label": label})
    if get(conn, VERIFIER_KEY) != record:
        put(conn, VERIFIER_KEY, record)
