"""`skip-event`: the operator's explicit, audited way past a poison event (federation.poison); never automatic.

The blocked event is fetched again from the peer through a poll's own session and identity checks, stored as
received (the events row byte for byte, so the log stays complete and is served on) but not applied, and the
cursor moves past it; the skip is recorded for good under `noemafed:skipped:<event id>`. All of it under the
sync lock, and the writes in one transaction.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from noemafed.commands import not_configured
from noemafed.commands.reset import ABORTED, no_sync_running
from noemafed.cortex import rows, state
from noemafed.cortex.access import load_access_key
from noemafed.cortex.events import Event
from noemafed.cortex.open import Cortex, open_cortex
from noemafed.errors import CommandError, ExitCode, NoemafedError
from noemafed.federation import poison
from noemafed.federation.syncer import PeerPoller, PollError, SyncContext, SyncOptions
from noemafed.logs import Log
from noemafed.mcp.client import Deadline
from noemafed.records import Record
from noemafed.reports.config import SkipPlan, SkipResult
from noemafed.text.clock import REAL_CLOCK, Clock
from noemafed.text.gotext import go_quote

COMMAND = "skip-event"

# Refusals (exit 1): nothing is written, the peer is not contacted.
UNKNOWN_PEER_HINT = "`noemafed status` lists the peers, and for a blocked one the event it is stuck on"
NOT_BLOCKED_ERROR = "peer {name} is not blocked on any event"
NOT_BLOCKED_HINT = (
    "skip-event only moves past an event whose replay failed --block-after syncs in a row; "
    "`noemafed status` shows the peer's last error"
)
WRONG_EVENT_ERROR = "peer {name} is blocked on event {blocked}, not {event_id}"
WRONG_EVENT_HINT = (
    "check the event in `noemafed status`, then run: noemafed skip-event {name} {blocked} --yes"
)
# Refusals after contacting the peer (exit 1): its log no longer starts with the blocked event.
NO_EVENT_ERROR = "peer {name} serves no event after the cursor {cursor} any more"
MOVED_ERROR = "peer {name} serves event {served} next, not the blocked event {event_id}"
MOVED_HINT = "the peer's log changed since the last sync: run `noemafed sync --once --peer {name}`, then check `noemafed status`"
# The peer could not be asked (exit 3 or 4, as a sync of it would).
CONTACT_ERROR = "contacting peer {name}: {err}"
CONTACT_HINT = "nothing was changed; `noemafed sync --once --peer {name}` says more about this failure"


class PeerContactError(NoemafedError):
    """skip-event could not fetch the blocked event: the poll failure, with the exit code a sync would give."""

    code = "peer_failed"

    def __init__(self, message: str, hint: str, exit_code: ExitCode) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code


class SkipRequest(Record):
    """What the operator asked for."""

    peer: str
    event_id: str
    note: str = ""
    clock: Clock = REAL_CLOCK  # what dates the skip: the clock sync and status judge time by


def skip_event(
    cortex_dir: Path,
    request: SkipRequest,
    environ: Mapping[str, str],
    confirm: Callable[[SkipPlan], bool],
    log: Log,
) -> SkipResult:
    """Check the request, let `confirm` show the plan and decide, fetch the event, store it unapplied, move the
    cursor, record the skip; the sync lock is held throughout."""
    with no_sync_running(cortex_dir, COMMAND):
        cortex = open_cortex(cortex_dir)
        try:
            plan = plan_skip(cortex, request)
            if not confirm(plan):
                raise CommandError(ABORTED)
            event = fetch_blocked_event(cortex, plan, environ, log)
            return apply_skip(cortex, plan, event, request.clock.rfc3339(), operator_name())
        finally:
            cortex.close()


def plan_skip(cortex: Cortex, request: SkipRequest) -> SkipPlan:
    """Refuse an unknown peer, a peer that is not blocked and an event it is not blocked on; read-only."""
    configured = {peer.name: peer for peer in cortex.manifest.peers}
    name = go_quote(request.peer)
    peer = configured.get(request.peer)
    if peer is None:
        raise CommandError(not_configured(request.peer, configured), UNKNOWN_PEER_HINT)
    record = poison.get_record(cortex.conn, peer.name)
    if record is None or not poison.blocked(record):
        raise CommandError(NOT_BLOCKED_ERROR.format(name=name), NOT_BLOCKED_HINT)
    if record.event_id != request.event_id:
        blocked = record.event_id
        raise CommandError(
            WRONG_EVENT_ERROR.format(name=name, blocked=blocked, event_id=go_quote(request.event_id)),
            WRONG_EVENT_HINT.format(name=peer.name, blocked=blocked),
        )
    cursor = state.get(cortex.conn, state.peer_key(peer.name, state.LAST_EVENT))
    return SkipPlan(cortex.manifest.name, peer, record, cursor, request.note)


def fetch_blocked_event(cortex: Cortex, plan: SkipPlan, environ: Mapping[str, str], log: Log) -> Event:
    """The first event after the cursor, from the peer, through a poll's session and identity checks; it must
    be the blocked one."""
    access = load_access_key(cortex.path, cortex.manifest.access, environ)
    ctx = SyncContext(cortex.path, cortex.manifest, access, SyncOptions(), log)
    peer = plan.peer
    try:
        event = PeerPoller(cortex, peer, ctx).next_event(Deadline(None))
    except PollError as exc:
        raise PeerContactError(
            CONTACT_ERROR.format(name=go_quote(peer.name), err=exc.message),
            CONTACT_HINT.format(name=peer.name),
            exc.outcome.exit_code,
        ) from exc
    if event is None:
        cursor = plan.cursor or "(none)"
        raise CommandError(
            NO_EVENT_ERROR.format(name=go_quote(peer.name), cursor=cursor), MOVED_HINT.format(name=peer.name)
        )
    if event.id != plan.record.event_id:
        message = MOVED_ERROR.format(name=go_quote(peer.name), served=event.id, event_id=plan.record.event_id)
        raise CommandError(message, MOVED_HINT.format(name=peer.name))
    return event


def apply_skip(cortex: Cortex, plan: SkipPlan, event: Event, now: str, user: str) -> SkipResult:
    """In one transaction: the event row as received (not applied), the cursor past it, the poison record
    cleared, the skip recorded. The clock is not merged: the event's changes are not this cortex's state."""
    record, peer = plan.record, plan.peer.name
    skip = poison.SkippedEvent(
        peer=peer,
        event_id=event.id,
        trace_id=record.trace_id,
        action=record.action,
        reason=record.reason,
        error=record.error,
        note=plan.note,
        skipped_at=now,
        user=user,
        cursor_before=plan.cursor,
    )
    conn = cortex.conn
    with state.write_transaction(conn):
        stored = rows.insert_event(conn, event)
        state.put(conn, state.peer_key(peer, state.LAST_EVENT), event.id)
        poison.put_record(conn, peer, None)
        state.clear_backoff(conn, peer)  # its hour was for the event: the next sync contacts it at once
        poison.put_skipped(conn, skip)
    return SkipResult(skip, stored)


def operator_name() -> str:
    """Who ran the command, as the OS knows the process's user (not $USER, which anyone can set)."""
    import pwd  # noqa: PLC0415 (only skip-event needs it)

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (a container): the number is still who it was
        return str(os.getuid())
