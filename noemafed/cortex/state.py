"""The `federation_state` table: cursors, pins, health, ranks and the local vector clock (federation.md §2)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from noemafed.cortex import vclock
from noemafed.errors import StateError
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


def get(conn: sqlite3.Connection, key: str) -> str:
    """The value, or "" when there is no row; "" and missing both mean unset."""
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


def get_clock(conn: sqlite3.Connection) -> vclock.VClock:
    """The local clock; missing, empty, `null` or malformed JSON all read as an empty clock."""
    return vclock.decode(get(conn, VCLOCK_KEY))


def set_clock(conn: sqlite3.Connection, clock: vclock.VClock) -> None:
    put(conn, VCLOCK_KEY, vclock.encode(clock))


class PeerError(NamedTuple):
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


class PeerHealth(NamedTuple):
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


def _str_field(obj: dict[str, Any], key: str) -> str:
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
                reason=_str_field(err_obj, "reason"),
                observed_at=_str_field(err_obj, "observed_at"),
                event_id=_str_field(err_obj, "event_id"),
                trace_id=_str_field(err_obj, "trace_id"),
            )
        elif err_obj is not None:
            return PeerHealth()
        return PeerHealth(
            version=_str_field(obj, "version"),
            version_observed_at=_str_field(obj, "version_observed_at"),
            last_success=_str_field(obj, "last_success"),
            consecutive_failures=failures,
            last_error=last_error,
        )
    except (ValueError, TypeError):
        return PeerHealth()


def get_health(conn: sqlite3.Connection, peer: str) -> PeerHealth:
    return decode_health(get(conn, peer_key(peer, HEALTH)))


def set_health(conn: sqlite3.Connection, peer: str, health: PeerHealth) -> None:
    put(conn, peer_key(peer, HEALTH), health.encode())


class RankEntry(NamedTuple):
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
        return RankEntry(_str_field(obj, "cortex_id"), rank, _str_field(obj, "observed_at"))
    except (ValueError, TypeError):
        return RankEntry()


def get_local_rank(conn: sqlite3.Connection) -> RankEntry:
    return decode_rank(get(conn, LOCAL_RANK_KEY))


def get_peer_rank(conn: sqlite3.Connection, peer: str) -> RankEntry:
    return decode_rank(get(conn, peer_key(peer, CONSOLIDATION_RANK)))


def set_peer_rank(conn: sqlite3.Connection, peer: str, entry: RankEntry) -> None:
    put(conn, peer_key(peer, CONSOLIDATION_RANK), entry.encode())


class PeerState(NamedTuple):
    """The composite read behind status: cursor, last contact, pinned id and health."""

    name: str
    endpoint: str
    last_event: str = ""
    last_seen: str = ""
    cortex_id: str = ""
    health: PeerHealth = PeerHealth()
    last_usage: str = ""


def get_peer_state(conn: sqlite3.Connection, name: str, endpoint: str) -> PeerState:
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


def get_cortex_pubkey(conn: sqlite3.Connection, cortex_id: str) -> str:
    return get(conn, cortex_key(cortex_id))


def set_cortex_pubkey(conn: sqlite3.Connection, cortex_id: str, pubkey: str) -> None:
    put(conn, cortex_key(cortex_id), pubkey)


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


def get_prefixed(conn: sqlite3.Connection, prefix: str) -> list[tuple[str, str]]:
    """Every (key, value) whose key starts with `prefix`, by key: one range scan of the primary key."""
    try:
        rows = conn.execute(
            "SELECT key, value FROM federation_state WHERE key >= ? AND key < ? ORDER BY key",
            (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)),
        ).fetchall()
    except sqlite3.Error as exc:
        raise StateError(f"reading federation_state {prefix!r}*: {exc}") from exc
    return [(str(key), str(value)) for key, value in rows]


# ---- noemafed's own keys: poison events and skipped events (issue 14) ------------------------------------
# Under a prefix noema never reads or writes (docs/operations.md, "A blocked peer"). Values are compact JSON
# objects (federation.poison reads and writes them); a missing or unreadable value means "nothing recorded".

NOEMAFED_PREFIX = "noemafed:"
# + peer label: the event that peer's replay keeps failing on, how often, since when. Cleared when the cursor
# passes it (applied or skipped), by a successful poll, and by reset-peer; moved by a rename.
POISON_PREFIX = NOEMAFED_PREFIX + "poison:"
# + event id: one `skip-event`, kept for ever (an audit list: no command deletes it).
SKIPPED_PREFIX = NOEMAFED_PREFIX + "skipped:"


def poison_key(peer: str) -> str:
    """`noemafed:poison:<label>`."""
    return POISON_PREFIX + peer


def skipped_key(event_id: str) -> str:
    """`noemafed:skipped:<event id>`."""
    return SKIPPED_PREFIX + event_id


def poison_peer_keys(peer: str) -> tuple[str, ...]:
    """The poison keys that describe one peer: reset-peer and remove-peer delete them, a rename moves them (the
    skipped-event audit is not per peer state and stays)."""
    return (poison_key(peer),)
