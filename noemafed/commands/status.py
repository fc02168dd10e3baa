"""`status`: the federation state of a cortex, read without changing it."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path

from noemafed import __version__
from noemafed.cortex import state
from noemafed.cortex.access import AccessKey, load_access_key
from noemafed.cortex.manifest import PeerConfig, check_ready_for_federation, read_manifest
from noemafed.cortex.open import open_cortex
from noemafed.cortex.state import RankEntry
from noemafed.errors import AccessKeyError, NoemafedError
from noemafed.federation import poison
from noemafed.federation.classify import health_hint
from noemafed.reports import PeerStatus, StatusReport
from noemafed.signing import verifier
from noemafed.text.gotext import rfc3339_now


def _peer_status(
    conn: sqlite3.Connection, peer: PeerConfig, records: dict[str, poison.PoisonRecord]
) -> PeerStatus:
    try:
        peer_state = state.get_peer_state(conn, peer.name, peer.endpoint)
    except NoemafedError:
        return PeerStatus(peer, None, None, None)
    try:
        rank: RankEntry | None = state.get_peer_rank(conn, peer.name)
    except NoemafedError:
        rank = None
    if rank is not None and not rank.observed_at:
        rank = None
    error = peer_state.health.last_error
    record = records.get(peer.name)
    blocked_on = record if record is not None and record.blocked_at else None  # as the last sync judged it
    return PeerStatus(peer, peer_state, rank, health_hint(error.reason) if error else None, blocked_on)


def _poison(
    conn: sqlite3.Connection,
) -> tuple[dict[str, poison.PoisonRecord], tuple[poison.SkippedEvent, ...]]:
    """The poison records by peer and the skipped events; an unreadable table shows neither."""
    try:
        return poison.get_records(conn), tuple(poison.get_skipped(conn))
    except NoemafedError:
        return {}, ()


def status(cortex_dir: Path, environ: Mapping[str, str]) -> StatusReport:
    """Gather the federation status of a cortex; a bad access key is reported, not fatal (as in Go)."""
    check_ready_for_federation(read_manifest(cortex_dir))  # before the database is touched
    cortex = open_cortex(cortex_dir)
    try:
        manifest = cortex.manifest
        access: AccessKey | None
        try:
            access, access_error = load_access_key(cortex.path, manifest.access, environ), ""
        except AccessKeyError as exc:
            access, access_error = None, str(exc)
        try:
            local_rank: RankEntry | None = state.get_local_rank(cortex.conn)
        except NoemafedError:
            local_rank = None
        records, skipped = _poison(cortex.conn)
        return StatusReport(
            generated_at=rfc3339_now(),
            noemafed_version=__version__,
            sqlite_version=sqlite3.sqlite_version,
            cortex_path=cortex.path,
            cortex_id=manifest.id,
            cortex_name=manifest.name,
            access=access,
            access_error=access_error,
            federation=manifest.federation,
            local_rank=local_rank,
            peers=tuple(_peer_status(cortex.conn, peer, records) for peer in manifest.peers),
            vclock=state.get_clock(cortex.conn),
            verifier=verifier.current().name,
            skipped_events=skipped,
        )
    finally:
        cortex.close()
