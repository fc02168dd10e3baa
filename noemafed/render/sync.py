"""A `sync --once` run (and a dry run) as text, one line per peer, and as one JSON document."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from noemafed import reports
from noemafed.render import NOT_CONFIGURED, blocked_json, dumps, join_lines, or_else
from noemafed.reports.sync import SyncReport
from noemafed.text.endpoints import redact

if TYPE_CHECKING:  # value types only; sync's modules are loaded by the run itself
    from noemafed.federation.dryrun import Rehearsal
    from noemafed.federation.poison import PoisonRecord
    from noemafed.federation.schedule import DeferredPeer
    from noemafed.federation.syncer import PollResult

# ---- sync ---------------------------------------------------------------------------------------------


def _poll_line(result: PollResult) -> str:
    cursor = result.cursor_after or "(none)"
    if result.ok:
        more = "" if result.caught_up else " (more to pull)"
        return f"{result.peer}: ok, {result.events_applied} events applied, cursor {cursor}{more}"
    where = f", event {result.event_id}" if result.event_id else ""
    blocked = POLL_BLOCKED if _blocked(result) is not None else ""
    return (
        f"{result.peer}: failed ({result.reason}{where}{blocked}), {result.events_applied} events applied, "
        f"cursor {cursor}: {result.message}"
    )


DEFERRED_LINE = "{name}: deferred{why}, not contacted until {next_attempt_at} ({failures} consecutive failures since {since})"
DEFERRED_BLOCKED_TEXT = ", blocked on event {event_id}"  # the reason, said only when it is not the backoff


POLL_BLOCKED = ", blocked: retried once an hour until skip-event"


def _blocked(result: PollResult) -> PoisonRecord | None:
    """The poison record of a poll that left its peer blocked."""
    record = result.poison_record
    return record if record is not None and record.blocked_at else None  # poison.blocked, without its import


def _deferred_line(peer: DeferredPeer) -> str:
    return DEFERRED_LINE.format(
        name=peer.name,
        why=DEFERRED_BLOCKED_TEXT.format(event_id=peer.event_id) if peer.event_id else "",
        next_attempt_at=peer.next_attempt_at,
        failures=peer.failures,
        since=or_else(peer.failing_since, "(unknown)"),
    )


def _deferred_json(peer: DeferredPeer) -> dict[str, Any]:
    return {
        "name": peer.name,
        "endpoint": redact(peer.endpoint),
        "reason": peer.reason,
        "event_id": peer.event_id or None,
        "next_attempt_at": peer.next_attempt_at or None,
        "consecutive_failures": peer.failures,
        "failing_since": peer.failing_since or None,
    }


DRY_RUN_HEADER = "Dry run: nothing was written; a run now would do this:"
WOULD_APPLY = "{peer}: would apply {count} events ({actions}), cursor {cursor}{more}"
WOULD_FAIL = "{peer}: would fail ({reason}{where}) after applying {count} events ({actions}): {message}"
WOULD_DIVERGE = "  would diverge: {traces}"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in counts.items()) or "none"


def _rehearsal_lines(rehearsal: Rehearsal) -> list[str]:
    result = rehearsal.result
    count = sum(rehearsal.actions.values())
    if result.ok:
        more = "" if result.caught_up else " (more to pull)"
        cursor = result.cursor_after or "(none)"
        line = WOULD_APPLY.format(
            peer=result.peer, count=count, actions=_counts(rehearsal.actions), cursor=cursor, more=more
        )
    else:
        line = WOULD_FAIL.format(
            peer=result.peer,
            reason=result.reason,
            where=f", event {result.event_id}" if result.event_id else "",
            count=count,
            actions=_counts(rehearsal.actions),
            message=result.message,
        )
    if not rehearsal.diverging:
        return [line]
    return [line, WOULD_DIVERGE.format(traces=", ".join(rehearsal.diverging))]


def _rehearsal_json(rehearsal: Rehearsal) -> dict[str, Any]:
    return {
        "actions": rehearsal.actions,
        "effects": rehearsal.effects,
        "diverging_traces": list(rehearsal.diverging),
        "trace_files": rehearsal.trace_files,
    }


def _sync_human(report: SyncReport) -> str:
    """One line per visited peer, then the deferred and the paused ones."""
    if report.dry_run:
        lines = [DRY_RUN_HEADER]
        for rehearsal in report.rehearsals:
            lines += _rehearsal_lines(rehearsal)
    else:
        lines = [_poll_line(result) for result in report.results]
    lines += [_deferred_line(peer) for peer in report.deferred]
    lines += [f"{name}: paused, skipped" for name in report.paused]
    if not lines:
        lines = [NOT_CONFIGURED]
    return join_lines(lines)


def _poll_json(result: PollResult) -> dict[str, Any]:
    return {
        "name": result.peer,
        "endpoint": redact(result.endpoint),
        "status": "ok" if result.ok else "failed",
        "reason": result.reason or None,
        "needs_operator": result.needs_operator,
        "phase": result.phase or None,
        "error": result.message or None,
        "event_id": result.event_id or None,
        "trace_id": result.trace_id or None,
        "events_applied": result.events_applied,
        "pages": result.pages,
        "usage_rows": result.usage_rows,
        "cursor_before": result.cursor_before or None,
        "cursor_after": result.cursor_after or None,
        "caught_up": result.caught_up,
        "blocked_on": blocked_json(_blocked(result)),
        "peer_version": result.peer_version or None,
        "peer_cortex_id": result.peer_cortex_id or None,
        "seconds": round(result.seconds, 3),
    }


def _sync_json(report: SyncReport) -> str:
    """The run as one document (docs/sync.schema.json)."""
    doc = {
        "schema_version": reports.SYNC_SCHEMA_VERSION,
        "started_at": report.started_at,
        "seconds": round(report.seconds, 3),
        "exit_code": int(report.exit_code),
        "cortex": {"id": report.cortex_id, "name": report.cortex_name, "path": str(report.cortex_path)},
        "dry_run": report.dry_run,
        "peers": [
            {**_poll_json(result), "would": _rehearsal_json(rehearsal) if rehearsal else None}
            for result, rehearsal in zip(
                report.results, report.rehearsals or [None] * len(report.results), strict=True
            )
        ],
        "deferred": [_deferred_json(peer) for peer in report.deferred],
        "paused": list(report.paused),
    }
    return dumps(doc)


def human(report: SyncReport) -> str:
    return _sync_human(report)


def json(report: SyncReport) -> str:
    return _sync_json(report)
