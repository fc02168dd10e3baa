"""federation_state on a real cortex database: keys, tolerant reads, Go-compatible encodings."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_cortex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from noemafed.cortex import state
from noemafed.cortex.open import open_database
from noemafed.cortex.state import PeerError, PeerHealth, RankEntry
from noemafed.errors import StateError


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = open_database(make_cortex(tmp_path))
    yield connection
    connection.close()


def test_get_set_delete(conn: sqlite3.Connection) -> None:
    assert state.get(conn, "peer:b:last_event") == ""
    state.put(conn, "peer:b:last_event", "01A")
    state.put(conn, "peer:b:last_event", "01B")
    assert state.get(conn, "peer:b:last_event") == "01B"
    state.delete(conn, "peer:b:last_event")
    state.delete(conn, "peer:b:last_event")  # idempotent
    assert state.get(conn, "peer:b:last_event") == ""


def test_exact_key_layout() -> None:
    assert state.peer_key("peer-b", state.LAST_EVENT) == "peer:peer-b:last_event"
    assert state.peer_key("peer-b", state.LAST_SEEN) == "peer:peer-b:last_seen"
    assert state.peer_key("peer-b", state.LAST_USAGE) == "peer:peer-b:last_usage"
    assert state.peer_key("peer-b", state.CORTEX_ID) == "peer:peer-b:cortex_id"
    assert state.peer_key("peer-b", state.HEALTH) == "peer:peer-b:health"
    assert state.peer_key("peer-b", state.CONSOLIDATION_RANK) == "peer:peer-b:consolidation_rank"
    assert state.cortex_key("01X") == "cortexkey:01X"
    assert state.VCLOCK_KEY == "vclock"
    assert state.LOCAL_RANK_KEY == "consolidation:rank"


def test_db_errors_are_errors_not_empty_values(tmp_path: Path) -> None:
    connection = open_database(make_cortex(tmp_path))
    connection.close()
    with pytest.raises(StateError):
        state.get(connection, "vclock")


@pytest.mark.parametrize("raw", ["", "null", "{", "[1,2]", '{"a":-1}', '{"a":"x"}', "garbage"])
def test_clock_reads_are_tolerant(conn: sqlite3.Connection, raw: str) -> None:
    state.put(conn, "vclock", raw)
    assert state.get_clock(conn) == {}


def test_clock_encoding_is_go_compatible(conn: sqlite3.Connection) -> None:
    state.set_clock(conn, {"01BBBBBBBBBBBBBBBBBBBBBBBB": 7, "01AAAAAAAAAAAAAAAAAAAAAAAA": 3})
    assert state.get(conn, "vclock") == '{"01AAAAAAAAAAAAAAAAAAAAAAAA":3,"01BBBBBBBBBBBBBBBBBBBBBBBB":7}'
    state.set_clock(conn, {})
    assert state.get(conn, "vclock") == "{}"


def test_TestPeerHealth_RoundTrip(conn: sqlite3.Connection) -> None:
    health = PeerHealth(
        version="v0.4.1-19-g1cc3be6",
        version_observed_at="2026-04-20T12:00:00Z",
        last_success="2026-04-20T11:00:00Z",
        consecutive_failures=3,
        last_error=PeerError(
            reason="invalid_trace_id",
            observed_at="2026-04-20T12:00:30Z",
            event_id="01FIRSTFAIL0000000000000001",
            trace_id="20260420-bad-trace",
        ),
    )
    state.set_health(conn, "peer-b", health)
    back = state.get_health(conn, "peer-b")
    assert back.version == "v0.4.1-19-g1cc3be6"
    assert back.consecutive_failures == 3
    assert back.last_error is not None
    assert back.last_error.reason == "invalid_trace_id"
    assert back.last_error.event_id == "01FIRSTFAIL0000000000000001"
    assert back == health
    # Go's field order and omissions, byte for byte.
    assert state.get(conn, "peer:peer-b:health") == (
        '{"version":"v0.4.1-19-g1cc3be6","version_observed_at":"2026-04-20T12:00:00Z",'
        '"last_success":"2026-04-20T11:00:00Z","consecutive_failures":3,'
        '"last_error":{"reason":"invalid_trace_id","event_id":"01FIRSTFAIL0000000000000001",'
        '"trace_id":"20260420-bad-trace","observed_at":"2026-04-20T12:00:30Z"}}'
    )


def test_health_omits_empty_fields_but_keeps_observed_at() -> None:
    assert PeerHealth().encode() == "{}"
    assert PeerHealth(last_error=PeerError(reason="other")).encode() == (
        '{"last_error":{"reason":"other","observed_at":""}}'
    )


def test_TestPeerHealth_MissingReturnsEmpty(conn: sqlite3.Connection) -> None:
    assert state.get_health(conn, "never-contacted") == PeerHealth()


@pytest.mark.parametrize(
    "raw",
    ["", "null", "{not json", "[]", '{"consecutive_failures":"3"}', '{"version":5}', '{"last_error":"x"}'],
)
def test_malformed_health_reads_as_zero(conn: sqlite3.Connection, raw: str) -> None:
    state.put(conn, "peer:b:health", raw)
    assert state.get_health(conn, "b") == PeerHealth()


def test_TestGetPeerState_IncludesHealth(conn: sqlite3.Connection) -> None:
    state.set_health(conn, "peer-c", PeerHealth(version="v0.5.0"))
    state.put(conn, "peer:peer-c:last_event", "01E")
    state.put(conn, "peer:peer-c:last_seen", "2026-04-20T12:00:30Z")
    state.put(conn, "peer:peer-c:cortex_id", "01C")
    peer = state.get_peer_state(conn, "peer-c", "https://c")
    assert peer.health.version == "v0.5.0"
    assert (peer.name, peer.endpoint, peer.last_event, peer.last_seen, peer.cortex_id) == (
        "peer-c",
        "https://c",
        "01E",
        "2026-04-20T12:00:30Z",
        "01C",
    )


def test_health_transitions_record_poll_outcomes() -> None:
    """recordPollOutcome (a gap in the Go suite): counters, version kept on failure, error cleared."""
    start = PeerHealth()
    failed = start.after_failure("t1", "0.22.2", PeerError("network_refused", "t1"))
    assert failed == PeerHealth("0.22.2", "t1", "", 1, PeerError("network_refused", "t1"))
    # A failure before initialize (no version) keeps the known version.
    failed_again = failed.after_failure("t2", "", PeerError("network_timeout", "t2"))
    assert failed_again.version == "0.22.2"
    assert failed_again.version_observed_at == "t1"
    assert failed_again.consecutive_failures == 2
    ok = failed_again.after_success("t3", "0.22.3")
    assert ok == PeerHealth("0.22.3", "t3", "t3", 0, None)
    ok_no_version = ok.after_success("t4", "")
    assert ok_no_version == PeerHealth("0.22.3", "t3", "t4", 0, None)


def test_rank_encoding_and_tolerance(conn: sqlite3.Connection) -> None:
    entry = RankEntry("01C", 57, "2026-08-15T03:00:00Z")
    state.set_peer_rank(conn, "b", entry)
    assert state.get(conn, "peer:b:consolidation_rank") == (
        '{"cortex_id":"01C","rank":57,"observed_at":"2026-08-15T03:00:00Z"}'
    )
    assert state.get_peer_rank(conn, "b") == entry
    assert RankEntry().encode() == '{"cortex_id":"","rank":0,"observed_at":""}'
    for raw in ("", "x", "[]", '{"rank":"5"}'):
        state.put(conn, "consolidation:rank", raw)
        assert state.get_local_rank(conn) == RankEntry()


def test_cortex_pubkey_pins(conn: sqlite3.Connection) -> None:
    state.set_cortex_pubkey(conn, "01C", "ed25519:AAA=")
    assert state.get_cortex_pubkey(conn, "01C") == "ed25519:AAA="
    assert state.get(conn, "cortexkey:01C") == "ed25519:AAA="
    assert state.get_cortex_pubkey(conn, "01D") == ""


def test_the_verifier_record_is_written_when_it_changes(conn: sqlite3.Connection) -> None:
    """Every poll that checked a signature records its verifier; only a change (another verifier, an OpenSSL
    upgrade's label) writes the row."""
    assert state.get_verifier(conn) == ""
    state.set_verifier(conn, "openssl", "OpenSSL 3.0.1")
    before = conn.total_changes
    state.set_verifier(conn, "openssl", "OpenSSL 3.0.1")
    assert conn.total_changes == before
    state.set_verifier(conn, "openssl", "OpenSSL 3.0.2")
    assert conn.total_changes == before + 1
    assert state.get(conn, state.VERIFIER_KEY) == '{"name":"openssl","label":"OpenSSL 3.0.2"}'
    assert state.get_verifier(conn) == "openssl"
    for malformed in ("", "[]", '{"name":5}', "{"):
        state.put(conn, state.VERIFIER_KEY, malformed)
        assert state.get_verifier(conn) == ""


# Keys over a small alphabet so that prefixes collide often, with characters on both sides of the ASCII range and
# of the prefix's last character (where a range scan's upper bound lies).
_KEY_TEXT = st.text(alphabet="ab:;\x7fé\u20ac\U0001f600", max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.dictionaries(_KEY_TEXT, _KEY_TEXT, max_size=12), probes=st.lists(_KEY_TEXT, max_size=6))
def test_a_snapshot_reads_what_the_table_reads(
    conn: sqlite3.Connection, rows: dict[str, str], probes: list[str]
) -> None:
    """status reads through a snapshot (one scan): every get and every prefix read, ordered as SQLite orders
    keys, must give what the single-row queries give."""
    conn.execute("DELETE FROM federation_state")
    for key, value in rows.items():
        state.put(conn, key, value)
    snapshot = state.snapshot(conn)
    assert isinstance(snapshot, state.Snapshot)
    for probe in [*probes, *rows]:
        assert state.get(snapshot, probe) == state.get(conn, probe)
        if probe:
            assert state.get_prefixed(snapshot, probe) == state.get_prefixed(conn, probe)


def test_a_table_that_cannot_be_scanned_is_read_key_by_key(tmp_path: Path) -> None:
    """The snapshot falls back to the connection, so each read fails on its own, as status reports it."""
    connection = open_database(make_cortex(tmp_path))
    try:
        connection.execute("DROP TABLE federation_state")
        reader = state.snapshot(connection)
        assert reader is connection
        with pytest.raises(StateError, match="reading federation_state 'vclock'"):
            state.get(reader, state.VCLOCK_KEY)
    finally:
        connection.close()


def test_a_row_sqlite_cannot_decode_leaves_the_snapshot_to_key_by_key_reads(conn: sqlite3.Connection) -> None:
    """A value that is not UTF-8 fails the whole scan; each other key still reads on its own (status then shows
    every peer but the one whose row it is)."""
    state.put(conn, "peer:a:last_event", "01A")
    conn.execute("INSERT INTO federation_state(key, value) VALUES ('peer:b:last_event', CAST(x'ff' AS TEXT))")
    reader = state.snapshot(conn)
    assert reader is conn
    assert state.get(reader, "peer:a:last_event") == "01A"
    with pytest.raises(StateError):
        state.get(reader, "peer:b:last_event")
