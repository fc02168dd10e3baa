"""`noemafed sync`: the cron run (`--once`) and the foreground daemon, both under the cortex's sync lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from noemafed.cortex.access import load_access_key
from noemafed.cortex.manifest import Manifest, PeerConfig
from noemafed.cortex.open import TEMP_PREFIX, TEMP_SUFFIX, TRACE_FOLDERS, database_dir, open_database
from noemafed.errors import CommandError, ExitCode
from noemafed.federation.lock import SyncLock
from noemafed.federation.syncer import PollResult, SyncContext, SyncOptions, poll_once, run_daemon
from noemafed.text.gotext import go_quote, rfc3339_now


@dataclass(frozen=True)
class SyncReport:
    """One `sync --once` run: a result per visited peer, the peers skipped, and the exit code it implies."""

    started_at: str
    seconds: float
    cortex_path: Path
    cortex_id: str
    cortex_name: str
    results: tuple[PollResult, ...]
    paused: tuple[str, ...]

    @property
    def exit_code(self) -> ExitCode:
        """0 all good; 4 if any peer needs an operator (wins); 3 if any failed otherwise."""
        failed = [result for result in self.results if not result.ok]
        if any(result.needs_operator for result in failed):
            return ExitCode.PEER_NEEDS_OPERATOR
        return ExitCode.PEER_TRANSIENT if failed else ExitCode.OK


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
            known = ", ".join(configured)
            raise CommandError(f"peer {go_quote(name)} is not configured in cortex.md (known: {known})")
    chosen = [configured[name] for name in dict.fromkeys(names)] if names else list(manifest.peers)
    return [p for p in chosen if not p.paused], [p.name for p in chosen if p.paused]


def sync_once(
    cortex_dir: Path,
    manifest: Manifest,
    names: tuple[str, ...],
    *,
    options: SyncOptions,
    environ: Mapping[str, str],
    log: Callable[[str], None],
    wait_seconds: float = 0.0,
) -> SyncReport:
    """Lock the cortex, poll each chosen peer once in its own error boundary, and report."""
    started_at, started = rfc3339_now(), time.monotonic()
    peers, paused = select_peers(manifest, names)
    access = load_access_key(cortex_dir, manifest.access, environ)
    open_database(cortex_dir).close()  # refuse an unusable cortex before taking the lock
    with SyncLock(database_dir(cortex_dir)) as lock:
        lock.acquire(wait_seconds)
        remove_stale_temp_files(cortex_dir)
        results = poll_once(SyncContext(cortex_dir, manifest, access, options, log), peers)
    return SyncReport(
        started_at=started_at,
        seconds=time.monotonic() - started,
        cortex_path=cortex_dir,
        cortex_id=manifest.id,
        cortex_name=manifest.name,
        results=tuple(results),
        paused=tuple(paused),
    )


def sync_daemon(
    cortex_dir: Path,
    manifest: Manifest,
    *,
    options: SyncOptions,
    environ: Mapping[str, str],
    log: Callable[[str], None],
    stop: threading.Event,
    wait_seconds: float = 0.0,
) -> None:
    """The foreground daemon for systemd: holds the sync lock until stopped."""
    access = load_access_key(cortex_dir, manifest.access, environ)
    open_database(cortex_dir).close()
    with SyncLock(database_dir(cortex_dir)) as lock:
        lock.acquire(wait_seconds)
        remove_stale_temp_files(cortex_dir)
        run_daemon(SyncContext(cortex_dir, manifest, access, options, log), stop)
