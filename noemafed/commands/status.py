"""`status`: the federation state of a cortex, read without changing it."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path

from noemafed import __version__
from noemafed.commands import not_configured
from noemafed.cortex import state
from noemafed.cortex.access import AccessKey, load_access_key
from noemafed.cortex.manifest import FederationConfig, PeerConfig, check_ready_for_federation, read_manifest
from noemafed.cortex.open import open_cortex
from noemafed.cortex.state import RankEntry
from noemafed.errors import AccessKeyError, CommandError, NoemafedError
from noemafed.federation import poison
from noemafed.federation.classify import health_hint
from noemafed.federation.verdict import (
    DEFAULT_MAX_AGE_SECONDS,
    SEVERITY,
    WORSE,
    CheckState,
    PeerRecords,
    Verdict,
    judge,
    worst,
)
from noemafed.reports.status import CheckReport, PeerStatus, StatusReport
from noemafed.text.clock import REAL_CLOCK, Clock


def _peer_status(
    conn: state.Reader,
    peer: PeerConfig,
    records: dict[str, poison.PoisonRecord],
    now: float,
    max_age: float,
) -> PeerStatus:
    record = records.get(peer.name)
    blocked_on = record if poison.blocked(record) else None
    try:
        peer_state = state.get_peer_state(conn, peer.name, peer.endpoint)
        # The verdict from the records; noemafed's own are read here, noema's came with the peer state.
        streak, run = state.get_backoff(conn, peer.name), state.get_run(conn, peer.name)
        judgement = judge(PeerRecords(peer.paused, peer_state, streak, run, blocked_on), now, max_age)
    except NoemafedError:
        return PeerStatus(peer, None, None, None)
    try:
        rank: RankEntry | None = state.get_peer_rank(conn, peer.name)
    except NoemafedError:
        rank = None
    if rank is not None and not rank.observed_at:
        rank = None
    error = peer_state.health.last_error
    hint = health_hint(error.reason) if error else None
    return PeerStatus(peer, peer_state, rank, hint, judgement, blocked_on)


def _poison(
    conn: state.Reader,
) -> tuple[dict[str, poison.PoisonRecord], tuple[poison.SkippedEvent, ...]]:
    """The poison records by peer and the skipped events; an unreadable table shows neither."""
    try:
        return poison.get_records(conn), tuple(poison.get_skipped(conn))
    except NoemafedError:
        return {}, ()


def _last_sync(conn: state.Reader) -> state.LastSync | None:
    try:
        return state.get_last_sync(conn)
    except NoemafedError:
        return None


def status(
    cortex_dir: Path,
    environ: Mapping[str, str],
    max_age: float = DEFAULT_MAX_AGE_SECONDS,
    clock: Clock = REAL_CLOCK,
    with_verifier: bool = False,
) -> StatusReport:
    """Gather the federation status of a cortex, judged at the clock's now; a bad access key is reported, not
    fatal (as in Go). `with_verifier` names the Ed25519 verifier too (only `--json` shows it)."""
    manifest = read_manifest(cortex_dir)
    check_ready_for_federation(manifest)  # before the database is touched
    cortex = open_cortex(cortex_dir, manifest)
    try:
        access: AccessKey | None
        try:
            access, access_error = load_access_key(cortex.path, manifest.access, environ), ""
        except AccessKeyError as exc:
            access, access_error = None, str(exc)
        reader = state.snapshot(cortex.conn)  # one scan for every key read below
        try:
            local_rank: RankEntry | None = state.get_local_rank(reader)
        except NoemafedError:
            local_rank = None
        now = clock.now()
        records, skipped = _poison(reader)
        return StatusReport(
            generated_at=clock.rfc3339(),
            noemafed_version=__version__,
            sqlite_version=sqlite3.sqlite_version,
            cortex_path=cortex.path,
            cortex_id=manifest.id,
            cortex_name=manifest.name,
            access=access,
            access_error=access_error,
            federation=manifest.federation,
            local_rank=local_rank,
            peers=tuple(_peer_status(reader, peer, records, now, max_age) for peer in manifest.peers),
            vclock=state.get_clock(reader),
            verifier=_verifier(reader, environ, manifest.federation) if with_verifier else "",
            max_age=max_age,
            last_sync=_last_sync(reader),
            skipped_events=skipped,
        )
    finally:
        cortex.close()


def _verifier(
    conn: state.Reader, environ: Mapping[str, str], federation: FederationConfig | None
) -> str | None:
    """The Ed25519 verifier `sync` uses here, None under `verify: off` (none runs: replay checks no signature).
    As the last poll that checked a signature recorded it, else (or when NOEMAFED_ED25519 asks for one) found out
    now, which loads the host's OpenSSL (some 4 ms of a 50 ms `status --json`)."""
    if federation is None or federation.effective_verify == "off":
        return None
    from noemafed.signing import VERIFIER_ENV, VERIFIER_NAMES  # noqa: PLC0415 (only --json names the verifier)

    try:
        recorded = "" if environ.get(VERIFIER_ENV) else state.get_verifier(conn)
    except NoemafedError:
        recorded = ""
    if recorded in VERIFIER_NAMES:
        return recorded
    from noemafed.signing import verifier  # noqa: PLC0415 (only when nothing is recorded)

    return verifier.current().name


UNREADABLE = "unreadable"  # a peer whose records could not be read


def check(report: StatusReport, names: tuple[str, ...]) -> CheckReport:
    """`status --check`: the worst state of the chosen peers (all when none are named); an unknown name is
    refused like every other command refuses it."""
    by_name = {peer.config.name: peer for peer in report.peers}
    for name in names:
        if name not in by_name:
            raise CommandError(not_configured(name, by_name))
    chosen = tuple(by_name[name] for name in dict.fromkeys(names)) if names else report.peers
    states = [_state(peer) for peer in chosen]
    problems = sorted(
        (peer for peer, peer_state in zip(chosen, states, strict=True) if peer_state is not CheckState.OK),
        key=lambda peer: -WORSE.index(_state(peer)),  # sorted() is stable: manifest order within a state
    )
    verdicts = [UNREADABLE if peer.judgement is None else str(peer.judgement.verdict) for peer in chosen]
    counts = tuple(
        (verdict, verdicts.count(verdict))
        for verdict in (*(str(v) for v in Verdict), UNREADABLE)
        if verdict in verdicts
    )
    return CheckReport(worst(states), chosen, tuple(problems), counts)


def _state(peer: PeerStatus) -> CheckState:
    return CheckState.UNKNOWN if peer.judgement is None else SEVERITY[peer.judgement.verdict]
