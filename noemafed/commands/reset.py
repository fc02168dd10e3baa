"""`reset-peer`: forget peers' pins, cursors and health so the next sync re-pins them."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from noemafed.commands import not_configured
from noemafed.cortex import state
from noemafed.cortex.open import Cortex, database_dir, open_cortex
from noemafed.errors import CommandError, NoemafedError
from noemafed.federation.lock import ROLE_CONFIG, ROLE_DAEMON, ROLE_ONCE, LockHeldError, LockHolder, SyncLock
from noemafed.reports.config import ResetPlan, ResetResult, ResetTarget
from noemafed.text.gotext import go_quote

ABORTED = "aborted by user"

# A peer's keys: reset-peer and remove-peer delete them, a rename moves them. Go's reset stops at the first
# three; noemafed also clears health, the usage cursor and the rank, which otherwise describe the old identity
# (docs/compatibility.md).
PEER_STATE_SUFFIXES = (
    state.CORTEX_ID,
    state.LAST_EVENT,
    state.LAST_SEEN,
    state.HEALTH,
    state.LAST_USAGE,
    state.CONSOLIDATION_RANK,
)


# What to do when a sync holds the lock: these commands have no --wait, and a daemon never lets go by itself.
LOCKED_BY_DAEMON_HINT = (
    "stop the `noemafed sync` daemon (pid {pid}) first (under systemd: systemctl stop <its unit>), "
    "run {command} again, then start the daemon"
)
LOCKED_BY_ONCE_HINT = "wait for that `noemafed sync --once` (pid {pid}) to end (at most its --max-duration), then run {command} again"
LOCKED_BY_CONFIG_HINT = (
    "another remove-peer or reset-peer (pid {pid}) is changing this cortex; run {command} again"
)
LOCKED_HINT = "wait for that sync to end, or stop the `noemafed sync` daemon, then run {command} again"
_LOCKED_HINTS = {
    ROLE_DAEMON: LOCKED_BY_DAEMON_HINT,
    ROLE_ONCE: LOCKED_BY_ONCE_HINT,
    ROLE_CONFIG: LOCKED_BY_CONFIG_HINT,
}


def locked_hint(holder: LockHolder | None, command: str) -> str:
    """The hint for a configuration command refused by the sync lock, naming what holds it."""
    if holder is None:
        return LOCKED_HINT.format(command=command)
    return _LOCKED_HINTS.get(holder.role, LOCKED_HINT).format(pid=holder.pid, command=command)


@contextmanager
def no_sync_running(cortex_dir: Path, command: str) -> Iterator[None]:
    """Hold the sync lock while `command` reads and changes a peer's state, so no sync writes it meanwhile
    (a sync running would otherwise write back the cursor or pin just cleared). Refused at once, exit 75."""
    with SyncLock(database_dir(cortex_dir), ROLE_CONFIG) as lock:
        try:
            lock.acquire()
        except LockHeldError as exc:
            raise LockHeldError(exc.message, locked_hint(exc.holder, command), exc.holder) from None
        yield


def peer_state_keys(name: str) -> tuple[str, ...]:
    """Every key that describes one peer: noema's (PEER_STATE_SUFFIXES) and noemafed's own (its backoff and
    its last run), in an order that is the same for every name, so a rename can pair old and new keys."""
    return (
        *(state.peer_key(name, suffix) for suffix in PEER_STATE_SUFFIXES),
        *state.noemafed_peer_keys(name),
    )


def reset_peers(
    cortex_dir: Path, names: tuple[str, ...], confirm: Callable[[ResetPlan], bool]
) -> ResetResult:
    """Plan, let `confirm` show the plan and decide, then clear: the one open cortex spans all three, and the
    sync lock is held throughout."""
    with no_sync_running(cortex_dir, "reset-peer"):
        return _reset_peers(cortex_dir, names, confirm)


def _reset_peers(
    cortex_dir: Path, names: tuple[str, ...], confirm: Callable[[ResetPlan], bool]
) -> ResetResult:
    cortex = open_cortex(cortex_dir)
    try:
        plan = plan_reset(cortex, names)
        if not confirm(plan):
            raise CommandError(ABORTED)
        return apply_reset(cortex, plan)
    finally:
        cortex.close()


def plan_reset(cortex: Cortex, names: tuple[str, ...]) -> ResetPlan:
    """Check every name before touching anything, then snapshot each peer's state."""
    configured = {peer.name: peer for peer in cortex.manifest.peers}
    for name in names:
        if name not in configured:
            raise CommandError(not_configured(name, configured))
    targets = []
    for name in names:
        peer = configured[name]
        try:
            snapshot = state.get_peer_state(cortex.conn, name, peer.endpoint)
        except NoemafedError as exc:
            raise CommandError(f"loading state for peer {go_quote(name)}: {exc}") from exc
        targets.append(
            ResetTarget(name, peer.endpoint, snapshot.cortex_id, snapshot.last_event, snapshot.last_seen)
        )
    return ResetPlan(cortex.manifest.name, tuple(targets))


def apply_reset(cortex: Cortex, plan: ResetPlan) -> ResetResult:
    """Clear each peer's state and its pinned id's clock bucket and key pin, in one transaction."""
    conn = cortex.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        dropped = clear_state(conn, plan.targets)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return ResetResult(plan.targets, dropped)


def clear_state(conn: sqlite3.Connection, targets: tuple[ResetTarget, ...]) -> int:
    """Delete the peers' keys, their pinned ids' key pins and clock buckets (counted) inside the caller's
    transaction."""
    clock = state.get_clock(conn)
    dropped = 0
    for target in targets:
        for key in peer_state_keys(target.name):
            state.delete(conn, key)
        # Only a pinned id says which bucket was this peer's; unpinned peers drop nothing.
        if target.pinned_id:
            if target.pinned_id in clock:
                del clock[target.pinned_id]
                dropped += 1
            state.delete(conn, state.cortex_key(target.pinned_id))
    if dropped:
        state.set_clock(conn, clock)
    return dropped
