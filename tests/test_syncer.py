"""One poll's texts and levels, byte for byte: what it logs (warnings reach cron) and why the handshake refuses."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import authoring
import pytest
from conftest import db, make_cortex
from peers.stdlib_peer import StdlibPeer
from sync_helpers import events, target_with

from noemafed.cortex.access import AccessKey
from noemafed.cortex.manifest import read_manifest
from noemafed.cortex.open import open_cortex
from noemafed.cortex.state import RankEntry
from noemafed.errors import ExitCode
from noemafed.federation.classify import IdentityFailure, Phase, Reason
from noemafed.federation.identity import IdentityError, PeerIdentity, verify_identity
from noemafed.federation.schedule import poll_once
from noemafed.federation.syncer import PollResult, SyncContext, SyncOptions
from noemafed.logs import SILENT, Level, Log

LOCAL_ID = "01LOCAL0000000000000000000"
REMOTE_ID = "01JQ7X2B9C4D5E6F7G8H9JKMNP"
KEY_A = "ed25519:0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc="
KEY_B = "ed25519:LB+0jMLPWjc+6yXzZFm8KOGQCwjA2YzdGgbNEfcDCJo="

Logs = list[tuple[Level, str]]


def refuse_writes(conn: sqlite3.Connection, *keys: str) -> None:
    """A real SQLite failure for writes of these federation_state keys only."""
    marks = ", ".join(f"'{key}'" for key in keys)
    conn.execute(
        f"CREATE TRIGGER refuse BEFORE INSERT ON federation_state WHEN NEW.key IN ({marks}) "
        "BEGIN SELECT RAISE(ABORT, 'read-only here'); END"
    )
    conn.commit()


def poll(target: Path) -> tuple[PollResult, Logs]:
    manifest = read_manifest(target)
    logs: Logs = []
    ctx = SyncContext(
        target, manifest, AccessKey(), SyncOptions(), Log(lambda level, line: logs.append((level, line)))
    )
    [result] = poll_once(ctx, manifest.peers)
    return result, logs


def one_trace_source(tmp_path: Path) -> Path:
    src = make_cortex(tmp_path, "peer-b")
    cortex = open_cortex(src)
    try:
        authoring.create_trace(cortex, "trace", "fact", "body\n")
    finally:
        cortex.close()
    return src


# ---- what a poll logs, at which level ------------------------------------------------------------------


def test_a_poll_that_cannot_write_its_bookkeeping_warns_and_still_succeeds(tmp_path: Path) -> None:
    src = one_trace_source(tmp_path)
    remote_id = read_manifest(src).id
    with StdlibPeer(src, close_without_answer=True, misbehave_on="sync_read_signal") as peer:
        target = target_with(tmp_path, [{"name": "peer-b", "endpoint": peer.endpoint}])
        conn = db(target)
        refuse_writes(conn, "peer:peer-b:health", "peer:peer-b:last_seen")
        conn.close()
        result, logs = poll(target)
    [(event_id, *_)] = events(src)
    assert (result.ok, result.reason, result.phase, result.exit_code) == (True, None, None, ExitCode.OK)
    assert logs == [
        (Level.INFO, f'[federation] peer "peer-b" identity pinned: peer-b ({remote_id})'),
        (Level.INFO, f'[sync] peer "peer-b": page 1, 1 events applied, cursor {event_id}'),
        (
            Level.WARNING,
            '[federation] peer "peer-b": read-signal sync failed (events already applied): '
            f"POST {peer.endpoint}/mcp: Remote end closed connection without response",
        ),
        (
            Level.WARNING,
            '[federation] peer "peer-b": could not record last_seen: writing federation_state '
            "'peer:peer-b:last_seen': read-only here",
        ),
        (
            Level.WARNING,
            '[federation] peer "peer-b": could not persist health: writing federation_state '
            "'peer:peer-b:health': read-only here",
        ),
    ]


def test_a_replay_failure_logs_the_event_and_pins_the_cursor(tmp_path: Path) -> None:
    src = one_trace_source(tmp_path)
    page = (
        '[{"id":"01JQH4HPD0B8E9WCXGFN1A33VE","action":"teleport","trace_id":"20250101-a",'
        f'"cortex_id":"{REMOTE_ID}","origin":"peer-b","timestamp":"2025-01-01T00:00:00Z","data":{{}}}}]'
    )
    with StdlibPeer(src, page_override=page) as peer:
        target = target_with(tmp_path, [{"name": "peer-b", "endpoint": peer.endpoint}])
        result, logs = poll(target)
    assert result == result._replace(
        ok=False,
        reason=Reason.UNKNOWN_ACTION,
        phase=Phase.REPLAY,
        message='replay event 01JQH4HPD0B8E9WCXGFN1A33VE: unknown action "teleport" in event '
        "01JQH4HPD0B8E9WCXGFN1A33VE",
        needs_operator=True,
        exit_code=ExitCode.PEER_NEEDS_OPERATOR,
        category="other",
        event_id="01JQH4HPD0B8E9WCXGFN1A33VE",
        trace_id="20250101-a",
    )
    assert logs[-1] == (
        Level.INFO,
        '[federation] peer "peer-b": replay of event 01JQH4HPD0B8E9WCXGFN1A33VE (teleport on trace 20250101-a) '
        'failed: unknown action "teleport" in event 01JQH4HPD0B8E9WCXGFN1A33VE \u2014 cursor pinned, will '
        "retry next poll",
    )


def test_a_database_that_cannot_be_opened_fails_the_peer_in_phase_open(tmp_path: Path) -> None:
    target = target_with(tmp_path, [{"name": "peer-b", "endpoint": "http://127.0.0.1:9"}])
    (target / "db" / "noema.db").unlink()
    result, _ = poll(target)
    assert (
        result.ok,
        result.reason,
        result.phase,
        result.needs_operator,
        result.exit_code,
        result.category,
    ) == (
        False,
        "other",
        "open",
        False,
        3,
        "other",
    )


# ---- why the handshake refuses a peer -------------------------------------------------------------------


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    cortex = open_cortex(make_cortex(tmp_path, "local"))
    yield cortex.conn
    cortex.close()


def verify(
    conn: sqlite3.Connection, identity: PeerIdentity, hard_pin: str = "", logs: Logs | None = None
) -> None:
    log = SILENT if logs is None else Log(lambda level, line: logs.append((level, line)))
    verify_identity(conn, "peer-b", identity, own_id=LOCAL_ID, hard_pin=hard_pin, log=log)


def refusal(
    conn: sqlite3.Connection, identity: PeerIdentity, hard_pin: str = ""
) -> tuple[IdentityFailure, str]:
    with pytest.raises(IdentityError) as info:
        verify(conn, identity, hard_pin)
    return info.value.kind, str(info.value)


def test_a_too_old_manifest_a_missing_id_and_our_own_id(conn: sqlite3.Connection) -> None:
    assert refusal(conn, PeerIdentity(REMOTE_ID, "remote", 1)) == (
        IdentityFailure.VERSION,
        'peer "peer-b" is on cortex.md schema version 1 but federation requires version 2. Ask the peer\'s '
        "operator to run `noema migrate cortex-id` on that cortex before federation can resume",
    )
    assert refusal(conn, PeerIdentity("", "remote", 2)) == (
        IdentityFailure.NO_ID,
        'peer "peer-b" reported manifest version 2 but no cortex id \u2014 refusing to federate without a stable '
        "identity",
    )
    assert refusal(conn, PeerIdentity(LOCAL_ID, "remote", 2)) == (
        IdentityFailure.OWN_ID,
        f'peer "peer-b" reports this cortex\'s own id {LOCAL_ID}; its endpoint points back at this cortex (or at '
        "a copy of it) \u2014 fix the endpoint in cortex.md",
    )


def test_a_changed_id_and_a_key_that_is_not_the_hard_pin(conn: sqlite3.Connection) -> None:
    verify(conn, PeerIdentity(REMOTE_ID, "remote", 2))
    other = "01JQ9A3C5E7G9J1K3M5N7P9R2T"
    assert refusal(conn, PeerIdentity(other, "remote", 2)) == (
        IdentityFailure.MISMATCH,
        f'peer "peer-b" identity mismatch: pinned id is {REMOTE_ID} but the endpoint now reports {other}. This '
        "can happen if the peer was reset, replaced, or restored from a different cortex's backup. If this "
        "change is intentional, run `noema federation reset-peer peer-b` to clear the pin and cursor \u2014 the "
        "next sync will re-pin the peer's new identity",
    )
    assert refusal(conn, PeerIdentity(REMOTE_ID, "remote", 2, pubkey=KEY_B), hard_pin=KEY_A) == (
        IdentityFailure.SIGNING,
        f'peer "peer-b" signing-key mismatch: the key advertised by cortex {REMOTE_ID} does not match the pubkey '
        "hard-pinned for this peer in cortex.md. If the peer intentionally rotated its key, update the pinned "
        "pubkey; otherwise this may be an impersonation attempt",
    )


def test_pins_that_cannot_be_written(conn: sqlite3.Connection) -> None:
    refuse_writes(conn, "peer:peer-b:cortex_id", f"cortexkey:{REMOTE_ID}")
    assert refusal(conn, PeerIdentity(REMOTE_ID, "remote", 2)) == (
        IdentityFailure.DB,
        "pinning cortex id for peer \"peer-b\": writing federation_state 'peer:peer-b:cortex_id': read-only here",
    )
    conn.execute("DROP TRIGGER refuse")
    refuse_writes(conn, f"cortexkey:{REMOTE_ID}")
    assert refusal(conn, PeerIdentity(REMOTE_ID, "remote", 2, pubkey=KEY_A)) == (
        IdentityFailure.DB,
        f"pinning signing key for peer \"peer-b\": writing federation_state 'cortexkey:{REMOTE_ID}': read-only here",
    )
    assert refusal(conn, PeerIdentity(REMOTE_ID, "remote", 2, pubkey=KEY_A), hard_pin=KEY_A) == (
        IdentityFailure.DB,
        f"applying hard-pin for peer \"peer-b\": writing federation_state 'cortexkey:{REMOTE_ID}': read-only here",
    )


def test_a_rank_that_cannot_be_stored_is_a_warning(conn: sqlite3.Connection) -> None:
    refuse_writes(conn, "peer:peer-b:consolidation_rank")
    logs: Logs = []
    verify(
        conn,
        PeerIdentity(REMOTE_ID, "remote", 2, rank=RankEntry(REMOTE_ID, 3, "2026-01-01T00:00:00Z")),
        logs=logs,
    )
    assert logs[0] == (
        Level.WARNING,
        '[federation] peer "peer-b" rank persist failed: writing federation_state '
        "'peer:peer-b:consolidation_rank': read-only here",
    )
