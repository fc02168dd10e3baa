"""Python twins of the Go syncer tests of federation.md §7 that concern polls, replay batches and key pins."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import authoring
import pytest
from conftest import db, make_cortex
from peers.stdlib_peer import StdlibPeer
from sync_helpers import events, state_value, target_with

from noemafed.cortex.access import AccessKey
from noemafed.cortex.events import EVENT_COLUMNS, event_from_row, page_json
from noemafed.cortex.manifest import read_manifest
from noemafed.cortex.open import Cortex, open_cortex
from noemafed.federation.identity import IdentityError, PeerIdentity, verify_identity
from noemafed.federation.schedule import poll_once, run_daemon
from noemafed.federation.syncer import SyncContext, SyncOptions
from noemafed.logs import SILENT, Log
from noemafed.mcp.client import Deadline

KEY_A = "ed25519:0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc="
KEY_B = "ed25519:LB+0jMLPWjc+6yXzZFm8KOGQCwjA2YzdGgbNEfcDCJo="
CORTEX_1 = "01JQ7X2B9C4D5E6F7G8H9JKMNP"
CORTEX_2 = "01JQ9A3C5E7G9J1K3M5N7P9R2T"


def _page(src: Path, break_index: int | None = None) -> str:
    conn = db(src)
    rows = conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY id").fetchall()
    conn.close()
    page = json.loads(page_json(event_from_row(row) for row in rows))
    if break_index is not None:
        page[break_index]["trace_id"] = "NOT-A-TRACE-ID"
    return json.dumps(page, separators=(",", ":"))


def _poll(target: Path) -> tuple[object, list[str]]:
    manifest = read_manifest(target)
    logs: list[str] = []
    ctx = SyncContext(
        target, manifest, AccessKey(), SyncOptions(), Log(lambda _level, line: logs.append(line))
    )
    [result] = poll_once(ctx, manifest.peers)
    return result, logs


def _five_event_source(tmp_path: Path) -> Path:
    src = make_cortex(tmp_path, "peer-b")
    cortex = open_cortex(src)
    try:
        for n in range(5):
            authoring.create_trace(cortex, f"trace {n}", "fact", f"body {n}\n")
    finally:
        cortex.close()
    return src


def test_TestReplayBatch_PinsCursorOnFailure(tmp_path: Path) -> None:
    src = _five_event_source(tmp_path)
    ids = [row[0] for row in events(src)]
    with StdlibPeer(src, page_override=_page(src, break_index=2)) as peer:
        target = target_with(tmp_path, [{"name": "peer-b", "endpoint": peer.endpoint}])
        result, logs = _poll(target)
    assert result.ok is False  # type: ignore[attr-defined]
    assert result.reason == "invalid_trace_id"  # type: ignore[attr-defined]
    assert result.event_id == ids[2]  # type: ignore[attr-defined]
    assert result.trace_id == "NOT-A-TRACE-ID"  # type: ignore[attr-defined]
    assert [row[0] for row in events(target)] == ids[:2]
    assert state_value(target, "peer:peer-b:last_event") == ids[1]
    assert state_value(target, "peer:peer-b:last_seen") != ""
    [line] = [log for log in logs if "replay of event" in log]
    assert line.startswith(
        f'[federation] peer "peer-b": replay of event {ids[2]} (create on trace NOT-A-TRACE-ID) failed: '
    )
    assert line.endswith(" — cursor pinned, will retry next poll")


def test_TestReplayBatch_AdvancesOnAllSuccess(tmp_path: Path) -> None:
    src = make_cortex(tmp_path, "peer-b")
    cortex = open_cortex(src)
    try:
        for n in range(3):
            authoring.create_trace(cortex, f"trace {n}", "fact", f"body {n}\n")
    finally:
        cortex.close()
    with StdlibPeer(src) as peer:
        target = target_with(tmp_path, [{"name": "peer-b", "endpoint": peer.endpoint}])
        result, _ = _poll(target)
    assert result.ok is True  # type: ignore[attr-defined]
    assert state_value(target, "peer:peer-b:last_event") == events(src)[-1][0]
    assert len(events(target)) == 3


def test_TestReplayBatch_FirstEventFailure_LeavesCursorUnset(tmp_path: Path) -> None:
    src = _five_event_source(tmp_path)
    with StdlibPeer(src, page_override=_page(src, break_index=0)) as peer:
        target = target_with(tmp_path, [{"name": "peer-b", "endpoint": peer.endpoint}])
        result, _ = _poll(target)
    assert result.reason == "invalid_trace_id"  # type: ignore[attr-defined]
    assert events(target) == []
    assert state_value(target, "peer:peer-b:last_event") == ""


def test_TestSyncer_Start_SkipsPausedPeers(tmp_path: Path) -> None:
    target = target_with(
        tmp_path,
        [
            {"name": "active-1", "endpoint": "http://127.0.0.1:9"},
            {"name": "paused-1", "endpoint": "http://127.0.0.1:9", "mode": "paused"},
            {"name": "active-2", "endpoint": "http://127.0.0.1:9", "mode": ""},
        ],
        interval="1h",
    )
    manifest = read_manifest(target)
    logs: list[str] = []
    stop = threading.Event()
    ctx = SyncContext(
        target, manifest, AccessKey(), SyncOptions(timeout=1), Log(lambda _level, line: logs.append(line))
    )
    thread = threading.Thread(target=run_daemon, args=(ctx, stop))
    thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (
        state_value(target, "peer:active-1:health") and state_value(target, "peer:active-2:health")
    ):
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert '[federation] peer "paused-1" is paused, skipping' in logs
    assert "Federation syncer started (3 peers, interval 1h0m0s)" in logs
    assert state_value(target, "peer:paused-1:last_event") == ""
    assert state_value(target, "peer:paused-1:last_seen") == ""
    assert state_value(target, "peer:paused-1:health") == ""
    assert state_value(target, "peer:active-1:health") != ""


# ---- signing-key pins (TestPinSigningKey, TestHardPinSigningKey) ---------------------------------------


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    cortex: Cortex = open_cortex(make_cortex(tmp_path, "local"))
    yield cortex.conn
    cortex.close()


def _verify(
    conn: sqlite3.Connection, cortex_id: str, advertised: str, hard_pin: str = "", peer: str = "peer-b"
) -> list[str]:
    logs: list[str] = []
    identity = PeerIdentity(id=cortex_id, name="remote", version=2, pubkey=advertised)
    verify_identity(
        conn,
        peer,
        identity,
        own_id="01LOCAL0000000000000000000",
        hard_pin=hard_pin,
        log=Log(lambda _level, line: logs.append(line)),
    )
    return logs


def _pin(conn: sqlite3.Connection, cortex_id: str) -> str:
    row = conn.execute(
        "SELECT value FROM federation_state WHERE key = ?", (f"cortexkey:{cortex_id}",)
    ).fetchone()
    return str(row[0]) if row else ""


def test_TestPinSigningKey(conn: sqlite3.Connection) -> None:
    assert _verify(conn, CORTEX_1, KEY_A) == [
        f'[federation] peer "peer-b" identity pinned: remote ({CORTEX_1})',
        f'[federation] peer "peer-b" signing key pinned ({CORTEX_1})',
    ]
    assert _pin(conn, CORTEX_1) == KEY_A
    assert _verify(conn, CORTEX_1, KEY_A) == []  # the same key again is fine
    with pytest.raises(IdentityError) as err:
        _verify(conn, CORTEX_1, KEY_B)
    assert str(err.value) == (
        f'peer "peer-b" signing-key mismatch: the pinned key for cortex {CORTEX_1} differs from the one now '
        "advertised. If the peer intentionally rotated its key (`noema keygen --force`), run "
        "`noema federation reset-peer peer-b` to clear the pin — the next sync re-pins the new key"
    )
    assert _pin(conn, CORTEX_1) == KEY_A
    assert _verify(conn, CORTEX_1, "") == []  # an empty advertisement keeps the pin
    assert _pin(conn, CORTEX_1) == KEY_A
    _verify(conn, CORTEX_2, KEY_B, peer="peer-c")  # a second cortex pins on its own
    assert _pin(conn, CORTEX_2) == KEY_B
    assert _pin(conn, CORTEX_1) == KEY_A


def test_TestHardPinSigningKey_match_pins(conn: sqlite3.Connection) -> None:
    logs = _verify(conn, CORTEX_1, KEY_A, hard_pin=KEY_A)
    assert logs[-1] == f'[federation] peer "peer-b" signing key hard-pinned from cortex.md ({CORTEX_1})'
    assert _pin(conn, CORTEX_1) == KEY_A


def test_TestHardPinSigningKey_mismatch_rejected(conn: sqlite3.Connection) -> None:
    with pytest.raises(IdentityError) as err:
        _verify(conn, CORTEX_1, KEY_B, hard_pin=KEY_A)
    assert str(err.value).startswith(
        f'peer "peer-b" signing-key mismatch: the key advertised by cortex {CORTEX_1} '
    )
    assert _pin(conn, CORTEX_1) == ""


def test_TestHardPinSigningKey_empty_advertisement_rejected(conn: sqlite3.Connection) -> None:
    with pytest.raises(IdentityError) as err:
        _verify(conn, CORTEX_1, "", hard_pin=KEY_A)
    assert str(err.value) == (
        'peer "peer-b" is hard-pinned to a signing key in cortex.md but advertised none; the peer must run '
        "`noema keygen`, or remove the pubkey pin to fall back to trust-on-first-use"
    )


def test_TestHardPinSigningKey_overrides_stale_TOFU_pin(conn: sqlite3.Connection) -> None:
    _verify(conn, CORTEX_1, KEY_B)
    assert _pin(conn, CORTEX_1) == KEY_B
    logs = _verify(conn, CORTEX_1, KEY_A, hard_pin=KEY_A)
    assert logs == [
        f'[federation] peer "peer-b" hard-pin in cortex.md overrode the prior trust-on-first-use key ({CORTEX_1})'
    ]
    assert _pin(conn, CORTEX_1) == KEY_A


def test_rank_is_stored_before_validation_under_the_top_level_id(conn: sqlite3.Connection) -> None:
    """Go's order effect (§3.4 step 5): a refused identity still leaves its rank behind."""
    from noemafed.cortex.state import RankEntry, get_peer_rank

    identity = PeerIdentity(id="", name="x", version=1, rank=RankEntry("01OTHER", 5, "2026-08-15T03:00:00Z"))
    with pytest.raises(IdentityError):
        verify_identity(conn, "peer-b", identity, own_id="01LOCAL", hard_pin="", log=SILENT)
    assert get_peer_rank(conn, "peer-b") == RankEntry("", 5, "2026-08-15T03:00:00Z")


def _id_pin(conn: sqlite3.Connection, peer: str = "peer-b") -> str:
    row = conn.execute(
        "SELECT value FROM federation_state WHERE key = ?", (f"peer:{peer}:cortex_id",)
    ).fetchone()
    return str(row[0]) if row else ""


def test_a_refused_signing_key_leaves_no_cortex_id_pin(conn: sqlite3.Connection) -> None:
    """Go pins the cortex id, then checks the key: a refused first contact (the wrong endpoint behind a
    hard-pinned key) leaves the wrong id pinned, and the right peer then fails as an identity mismatch."""
    from noemafed.cortex.state import set_cortex_pubkey

    with pytest.raises(IdentityError):
        _verify(conn, CORTEX_1, KEY_B, hard_pin=KEY_A)
    assert _id_pin(conn) == ""
    set_cortex_pubkey(conn, CORTEX_2, KEY_A)  # pinned earlier, e.g. from that cortex's signed events
    with pytest.raises(IdentityError):
        _verify(conn, CORTEX_2, KEY_B, peer="peer-c")
    assert _id_pin(conn, "peer-c") == ""


def test_a_peer_id_is_pinned_as_reported_without_a_ulid_check(conn: sqlite3.Connection) -> None:
    """federation.md §8.1.17, copied: Go and Rust pin the id the peer reports, whatever its shape (Go's own
    fixtures use 27 characters). Cursors are another matter: only a canonical ULID is ever stored as one."""
    odd = "01PEER000000000000000BETA00"
    assert len(odd) == 27
    _verify(conn, odd, "")
    assert _id_pin(conn) == odd


def test_deadline_helper_is_bounded() -> None:
    deadline = Deadline(0.05)
    assert deadline.timeout(30) <= 0.05
    time.sleep(0.06)
    with pytest.raises(Exception, match="deadline exceeded"):
        deadline.check()
