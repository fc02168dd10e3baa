"""`status` as noema prints it (plus noemafed's verdicts) and as one JSON document; the `--check` line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from noemafed import reports
from noemafed.render import NOT_CONFIGURED, blocked_json, dumps, join_lines, or_else
from noemafed.reports.status import CheckReport, PeerStatus, StatusReport
from noemafed.text.clock import format_epoch, ulid_seconds
from noemafed.text.durations import format_go_duration
from noemafed.text.endpoints import redact

if TYPE_CHECKING:  # value types only
    from noemafed.cortex.access import AccessKey
    from noemafed.cortex.state import PeerHealth, RankEntry
    from noemafed.federation.poison import PoisonRecord, SkippedEvent
    from noemafed.federation.verdict import Judgement

HEALTH_INDENT = " " * 16


# ---- status ---------------------------------------------------------------------------------------


def _access_line(access: AccessKey | None, error: str) -> str:
    if access is None:
        return f"Access: error loading key: {error}"
    if not access.keyed:
        return "Access: open"
    return f"Access: keyed (source={access.source}, fingerprint={access.fingerprint})"


def _format_rank(rank: RankEntry) -> str:
    """Go's formatFederationRank: rank 0 or no observation time means ineligible."""
    if rank.rank == 0 or not rank.observed_at:
        return "(ineligible)"
    return f"{rank.rank} (observed {rank.observed_at})"


def _health_lines(health: PeerHealth, hint: str | None) -> list[str]:
    """The health block, shown only for peers with a recorded error or a failure count."""
    error = health.last_error
    if error is None and health.consecutive_failures == 0:
        return []
    lines = [f"    health:     ⚠ {health.consecutive_failures} consecutive failures since last success"]
    if error is not None:
        lines.append(f"{HEALTH_INDENT}reason: {error.reason}")
        if error.event_id:
            lines.append(f"{HEALTH_INDENT}event:  {error.event_id}")
        if error.trace_id:
            lines.append(f"{HEALTH_INDENT}trace:  {error.trace_id}")
        if hint:
            lines.append(f"{HEALTH_INDENT}{hint}")
    return lines


def _peer_lines(peer: PeerStatus) -> list[str]:
    config, peer_state = peer.config, peer.state
    if peer_state is None:
        return [f"  {config.name} ({redact(config.endpoint)}): error loading state"]
    return [
        f"  {config.name}",
        f"    endpoint:   {redact(config.endpoint)}",
        f"    mode:       {config.effective_mode}",
        f"    version:    {or_else(peer_state.health.version, '(not yet observed)')}",
        f"    rank:       {_format_rank(peer.rank) if peer.rank else '(none)'}",
        f"    last_seen:  {or_else(peer_state.last_seen, '(never)')}",
        f"    last_event: {or_else(peer_state.last_event, '(none)')}",
        *_health_lines(peer_state.health, peer.hint),
        *_blocked_lines(config.name, peer.blocked_on),
    ]


# ---- poison events: a blocked peer and the skipped events (issue 14) ----

BLOCKED_LINE = "    blocked:    ✖ on event {event_id} ({action} on trace {trace_id}) since {since}"
BLOCKED_DETAIL_LINES = (
    HEALTH_INDENT + "{failures} failed replays in a row, retried once an hour; reason: {reason}",
    HEALTH_INDENT + "error:  {error}",
    HEALTH_INDENT
    + "fix the cause (upgrade this noemafed, or have the peer's operator fix the event), or skip it:",
    HEALTH_INDENT + "noemafed skip-event {name} {event_id} --yes --note 'why'",
)
SKIPPED_HEADER = "Skipped Events:"
SKIPPED_LINE = "  {skipped_at} {peer}: event {event_id} ({action} on trace {trace_id}), reason {reason}, by {user}: {note}"


def _blocked_lines(name: str, record: PoisonRecord | None) -> list[str]:
    if record is None:
        return []
    fields = {**record._asdict(), "since": record.first_seen, "name": name}
    return [BLOCKED_LINE.format(**fields), *(line.format(**fields) for line in BLOCKED_DETAIL_LINES)]


def _skipped_lines(skipped: tuple[SkippedEvent, ...]) -> list[str]:
    if not skipped:
        return []
    lines = ["", SKIPPED_HEADER]
    for skip in skipped:
        fields = skip._asdict()
        lines.append(SKIPPED_LINE.format(**{**fields, "note": skip.note or "(no note)"}))
    return lines


def _skipped_json(skip: SkippedEvent) -> dict[str, Any]:
    return {key: value or None for key, value in skip._asdict().items()}


def _status_human(report: StatusReport) -> str:
    """noema's `federation status` layout; the vector clock is sorted (Go's order is random)."""
    lines = [f"Cortex: {report.cortex_name}", _access_line(report.access, report.access_error), ""]
    federation = report.federation
    if federation is None or not federation.peers:
        lines.append(NOT_CONFIGURED)
        return join_lines(lines)
    lines += [f"Mode: {federation.effective_mode}", f"Peers: {len(federation.peers)}"]
    if federation.interval:
        lines.append(f"Interval: {federation.interval}")
    if report.local_rank is not None:
        lines.append(f"Consolidation Rank: {_format_rank(report.local_rank)}")
    lines.append("")
    for peer in report.peers:
        lines += _peer_lines(peer)
    if report.vclock:
        lines += ["", "Vector Clock:"]
        lines += [f"  {key}: {report.vclock[key]}" for key in sorted(report.vclock)]
    # noemafed's own section, after every line of noema's layout, so a reader of noema's text is not disturbed.
    lines += ["", VERDICTS_HEADER.format(max_age=format_go_duration(report.max_age))]
    lines += [_verdict_line(peer) for peer in report.peers]
    lines += _skipped_lines(report.skipped_events)
    return join_lines(lines)


VERDICTS_HEADER = "Verdicts (stale after {max_age} without a success):"
VERDICT_UNKNOWN = "  {name}: (error loading state)"


def _verdict_line(peer: PeerStatus) -> str:
    """`  <name>: <verdict>`, then what stands beside it, each part after "; "."""
    judged = peer.judgement
    if judged is None:
        return VERDICT_UNKNOWN.format(name=peer.config.name)
    # A blocked peer names its event right after the verdict: it is what skip-event needs.
    on_event = (
        f" on event {peer.blocked_on.event_id}" if peer.blocked_on and judged.verdict == "blocked" else ""
    )
    parts = [f"  {peer.config.name}: {judged.verdict}{on_event}"]
    if judged.consecutive_failures:
        since = f" since {judged.failing_since}" if judged.failing_since else ""
        parts.append(f"{judged.consecutive_failures} consecutive failures{since}")
    if judged.next_attempt_at:
        parts.append(f"next attempt {judged.next_attempt_at}")
    if judged.lag_seconds is not None:
        parts.append(f"lag {format_go_duration(judged.lag_seconds)}")
    return "; ".join(parts)


def _ulid_time(value: str) -> str | None:
    """The RFC3339 time encoded in a ULID cursor, or None when it is not a ULID."""
    seconds = ulid_seconds(value)
    try:
        return None if seconds is None else format_epoch(seconds)
    except (ValueError, OverflowError):  # a ULID dated past the year 9999
        return None


def _health_json(health: PeerHealth) -> dict[str, Any]:
    error = health.last_error
    return {
        "version": health.version or None,
        "version_observed_at": health.version_observed_at or None,
        "last_success": health.last_success or None,
        "consecutive_failures": health.consecutive_failures,
        "last_error": None
        if error is None
        else {
            "reason": error.reason,
            "event_id": error.event_id or None,
            "trace_id": error.trace_id or None,
            "observed_at": error.observed_at or None,
        },
    }


def _rank_json(rank: RankEntry | None) -> dict[str, Any] | None:
    if rank is None:
        return None
    return {"cortex_id": rank.cortex_id, "rank": rank.rank, "observed_at": rank.observed_at}


def _peer_json(peer: PeerStatus) -> dict[str, Any]:
    config, peer_state = peer.config, peer.state
    doc: dict[str, Any] = {
        "name": config.name,
        "endpoint": redact(config.endpoint),
        "mode": config.effective_mode,
        "state_error": peer_state is None,
    }
    if peer_state is None:
        return doc
    doc.update(
        {
            "cortex_id": peer_state.cortex_id or None,
            "last_event": peer_state.last_event or None,
            "last_event_time": _ulid_time(peer_state.last_event) if peer_state.last_event else None,
            "last_seen": peer_state.last_seen or None,
            "last_usage": peer_state.last_usage or None,
            "rank": _rank_json(peer.rank),
            "health": _health_json(peer_state.health),
            "hint": peer.hint,
            "blocked_on": blocked_json(peer.blocked_on),
        }
    )
    if peer.judgement is not None:
        doc.update(_judgement_json(peer.judgement))
    return doc


def _judgement_json(judged: Judgement) -> dict[str, Any]:
    return {
        "verdict": str(judged.verdict),
        "consecutive_failures": judged.consecutive_failures,
        "failing_since": judged.failing_since or None,
        "next_attempt_at": judged.next_attempt_at or None,
        "caught_up": judged.caught_up,
        "lag_seconds": judged.lag_seconds,
        "events_applied_total": judged.events_applied_total,
    }


def _status_json(report: StatusReport) -> str:
    """One document for scripts; docs/status.schema.json describes it. Never contains the key."""
    federation = report.federation
    access = report.access
    doc = {
        "schema_version": reports.STATUS_SCHEMA_VERSION,
        "generated_at": report.generated_at,
        "noemafed_version": report.noemafed_version,
        "sqlite_version": report.sqlite_version,
        "cortex": {"id": report.cortex_id, "name": report.cortex_name, "path": str(report.cortex_path)},
        "access": {
            "mode": "error" if access is None else ("keyed" if access.keyed else "open"),
            "source": access.source or None if access else None,
            "fingerprint": access.fingerprint or None if access else None,
            "error": report.access_error or None,
        },
        "federation": {
            "configured": report.configured,
            "mode": federation.effective_mode if federation else "sync",
            "interval": federation.interval or None if federation else None,
            "interval_seconds": federation.interval_seconds if federation else 30.0,
            "verify": federation.effective_verify if federation else "off",
            "verifier": report.verifier or None,
        },
        "consolidation_rank": _rank_json(report.local_rank),
        "max_age_seconds": report.max_age,
        "peers": [_peer_json(peer) for peer in report.peers],
        "vclock": {key: report.vclock[key] for key in sorted(report.vclock)},
        "skipped_events": [_skipped_json(skip) for skip in report.skipped_events],
    }
    return dumps(doc)


# ---- status --check ------------------------------------------------------------------------------


CHECK_LINE = "NOEMAFED {state} - {summary}"
NO_PEERS_SUMMARY = "no peers configured"


def check_line(report: CheckReport) -> str:
    """The monitoring-plugin line: `NOEMAFED <STATE> - <summary> | <perfdata>` (the monitoring-plugins
    development guidelines); the exit code is the state's value."""
    if report.error:
        return CHECK_LINE.format(state=report.state.name, summary=_plugin_text(report.error)) + "\n"
    if not report.peers:
        return CHECK_LINE.format(state=report.state.name, summary=NO_PEERS_SUMMARY) + "\n"
    problems = ", ".join(
        f"{peer.config.name} {peer.judgement.verdict if peer.judgement else 'unreadable'}"
        for peer in report.problems
    )
    total = len(report.peers)
    counts = ", ".join(f"{count} {verdict}" for verdict, count in report.counts)
    summary = f"{total} peer{'s' if total != 1 else ''}: {counts}"
    if problems:
        summary = f"{problems}; {summary}"
    line = CHECK_LINE.format(state=report.state.name, summary=_plugin_text(summary))
    return f"{line} | {' '.join(_perfdata(peer) for peer in report.peers)}\n"


def _plugin_text(text: str) -> str:
    """One line without `|`, which would start the perfdata."""
    return " ".join(text.replace("|", "/").split())


def _perfdata(peer: PeerStatus) -> str:
    """`'<name>_lag'=<seconds>s '<name>_failures'=<n>`; U where the value is not known."""
    label = peer.config.name.replace("'", "''").replace("=", "_")  # a quote doubled; `=` never in a label
    judged = peer.judgement
    lag = "U" if judged is None or judged.lag_seconds is None else f"{judged.lag_seconds}s"
    failures = "U" if judged is None else str(judged.consecutive_failures)
    return f"'{label}_lag'={lag} '{label}_failures'={failures}"


def human(report: StatusReport) -> str:
    return _status_human(report)


def json(report: StatusReport) -> str:
    return _status_json(report)
