"""`sync`: lock the cortex and poll its peers, once (for cron) or until stopped (the daemon)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from noemafed.commands import not_configured
from noemafed.cortex import state
from noemafed.cortex.access import load_access_key
from noemafed.cortex.manifest import Manifest, PeerConfig
from noemafed.cortex.open import TEMP_PREFIX, TEMP_SUFFIX, TRACE_FOLDERS, database_dir, open_database
from noemafed.cortex.storage_lock import StorageBusyError
from noemafed.errors import CommandError, NoemafedError
from noemafed.federation.lock import ROLE_DAEMON, ROLE_ONCE, SyncLock
from noemafed.federation.schedule import plan_once, poll_once, run_daemon
from noemafed.federation.syncer import SyncContext, SyncOptions
from noemafed.logs import Log
from noemafed.records import Record
from noemafed.reports.sync import SyncReport
from noemafed.text.clock import REAL_CLOCK, Clock

LAST_SYNC_FAILED_LOG = "[federation] could not record the run: {err}"

if TYPE_CHECKING:
    from noemafed.federation.dryrun import Rehearsal


def remove_stale_temp_files(cortex_dir: Path) -> int:
    """Temp files of a killed noemafed writer; only ours (noema uses its own prefix), only under the lock."""
    removed = 0
    for folder in TRACE_FOLDERS:
        for path in (cortex_dir / folder).glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def select_peers(manifest: Manifest, names: tuple[str, ...]) -> tuple[list[PeerConfig], list[str]]:
    """The peers to visit (named ones, else all) and the paused ones left out; unknown names are refused."""
    configured = {peer.name: peer for peer in manifest.peers}
    for name in names:
        if name not in configured:
            raise CommandError(not_configured(name, configured))
    chosen = [configured[name] for name in dict.fromkeys(names)] if names else list(manifest.peers)
    return [p for p in chosen if not p.paused], [p.name for p in chosen if p.paused]


class SyncRun(Record):
    """What a `sync` invocation brings: the cortex and its manifest, the run's limits, the environment, the log."""

    cortex_dir: Path
    manifest: Manifest
    options: SyncOptions
    environ: Mapping[str, str]
    log: Log
    wait_seconds: float = 0.0  # how long to wait for another sync's lock
    clock: Clock = REAL_CLOCK  # NOEMAFED_TEST_NOW's fixed time, else the real one


@contextmanager
def _locked(run: SyncRun, role: str = ROLE_ONCE) -> Iterator[tuple[SyncContext, sqlite3.Connection | None]]:
    """The key loaded and the database checked before the lock is taken, then the lock held throughout; `role`
    is written into the lock so configuration commands can name what is running.

    The connection that checked the database stays open for the run's own bookkeeping (the backoff plan, the
    run record); it is None when the storage is busy, and the run then does no bookkeeping (each poll meets
    the busy storage itself and reports it), so it waits out the busy timeout once, not once per step.
    """
    access = load_access_key(run.cortex_dir, run.manifest.access, run.environ)
    conn: sqlite3.Connection | None = None
    with suppress(StorageBusyError):  # busy storage fails each peer (exit 3, in its health), not the run
        conn = open_database(run.cortex_dir)  # refuse an unusable cortex before taking the lock
    try:
        with SyncLock(database_dir(run.cortex_dir), role) as lock:
            lock.acquire(run.wait_seconds)
            if not run.options.dry_run:  # a dry run deletes nothing
                remove_stale_temp_files(run.cortex_dir)
            yield SyncContext(run.cortex_dir, run.manifest, access, run.options, run.log, run.clock), conn
    finally:
        if conn is not None:
            conn.close()


def sync_once(run: SyncRun, names: tuple[str, ...], ignore_backoff: bool = False) -> SyncReport:
    """Lock the cortex, poll each chosen peer that is due once in its own error boundary, and report.

    A peer whose backoff has not run out is deferred: not contacted, not a failure. `ignore_backoff` clears
    the chosen peers' backoff first, so every one of them is contacted.
    """
    started_at, started = run.clock.rfc3339(), time.monotonic()
    peers, paused = select_peers(run.manifest, names)
    with _locked(run) as (ctx, conn):
        # Backoff and poison events: a peer whose next attempt is not due (a blocked one: its hour) is deferred.
        due, deferred = plan_once(ctx, conn, peers, ignore_backoff) if conn else (peers, [])
        rehearsals: tuple[Rehearsal, ...] = ()
        if run.options.dry_run:
            from noemafed.federation.dryrun import rehearse_once  # noqa: PLC0415 (cron runs never load it)

            rehearsals = tuple(rehearse_once(ctx, due))
            results = [rehearsal.result for rehearsal in rehearsals]
        else:
            results = poll_once(ctx, due)
        report = SyncReport(
            started_at=started_at,
            seconds=time.monotonic() - started,
            cortex_path=run.cortex_dir,
            cortex_id=run.manifest.id,
            cortex_name=run.manifest.name,
            results=tuple(results),
            paused=tuple(paused),
            deferred=tuple(deferred),
            dry_run=run.options.dry_run,
            rehearsals=rehearsals,
        )
        if conn is not None and not run.options.dry_run:  # a dry run records nothing
            _record_last_sync(run, conn, report)
    return report


def _record_last_sync(run: SyncRun, conn: sqlite3.Connection, report: SyncReport) -> None:
    """The run as a whole, for `status --metrics-file` on hosts that only check; best effort, like health."""
    try:
        state.set_last_sync(conn, state.LastSync(run.clock.rfc3339(), report.seconds, int(report.exit_code)))
    except NoemafedError as exc:
        run.log.warning(LAST_SYNC_FAILED_LOG.format(err=exc))


def sync_daemon(run: SyncRun, stop: threading.Event) -> None:
    """The foreground daemon for systemd: holds the sync lock until stopped; it reports only through `log`."""
    with _locked(run, ROLE_DAEMON) as (ctx, _):
        run_daemon(ctx, stop)
