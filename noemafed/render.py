"""Every report as human text (noema's exact layout) or as one JSON document: `human(report)` and
`json(report)`, pure string functions."""

from __future__ import annotations

import json as _json
from typing import TYPE_CHECKING, Any

from noemafed import reports
from noemafed.reports import (
    AddedPeer,
    CheckReport,
    DoctorReport,
    ErrorReport,
    InitReport,
    KeygenReport,
    KeyReport,
    MetricsReport,
    ModeChange,
    PeerModeChange,
    PeersReport,
    PeerStatus,
    PeerUpdate,
    RemovePlan,
    RemoveResult,
    ResetPlan,
    ResetResult,
    ResetTarget,
    RetryNowReport,
    SettingChange,
    SkipPlan,
    SkipResult,
    StatusReport,
    SyncReport,
    VersionReport,
)
from noemafed.text.clock import format_epoch, parse_rfc3339, ulid_seconds
from noemafed.text.durations import format_go_duration
from noemafed.text.endpoints import redact
from noemafed.text.gotext import go_quote

if TYPE_CHECKING:  # value types only; sync's modules stay unloaded for the other commands
    from noemafed.cortex.access import AccessKey
    from noemafed.cortex.state import PeerHealth, RankEntry
    from noemafed.federation.dryrun import Rehearsal
    from noemafed.federation.lock import LockHolder
    from noemafed.federation.poison import PoisonRecord, SkippedEvent
    from noemafed.federation.schedule import DeferredPeer
    from noemafed.federation.syncer import PollResult
    from noemafed.federation.verdict import Judgement

Report = (
    InitReport
    | StatusReport
    | PeersReport
    | AddedPeer
    | ResetPlan
    | ResetResult
    | ModeChange
    | PeerModeChange
    | KeyReport
    | SyncReport
    | PeerUpdate
    | RemovePlan
    | RemoveResult
    | SettingChange
    | VersionReport
    | KeygenReport
    | DoctorReport
    | RetryNowReport
    | SkipPlan
    | SkipResult
)
JsonReport = StatusReport | SyncReport | PeersReport | ErrorReport | DoctorReport

NOT_CONFIGURED = "Federation: not configured (no peers in cortex.md)"
# After a change to cortex.md, what must be restarted, named from the sync lock's holder (commands fill
# `running`): a noemafed daemon read cortex.md when it started; a `sync --once` run reads it on each run; noema
# serve holds no lock of ours, so it is named (in noema's words where noema has them) when no daemon of ours is.
RESTART_HINT = "Restart `noema serve` for the change to take effect."
APPLY_HINT = "Restart `noema serve` if it serves this cortex; the next `noemafed sync` reads cortex.md."
DAEMON_RESTART_HINT = "Restart the `noemafed sync` daemon{pid} for the change to take effect."
ONCE_RUNNING_HINT = (
    "A `noemafed sync --once` run{pid} is under way with the previous settings; the next run reads cortex.md."
)
HEALTH_INDENT = " " * 16

_MODE_BEHAVIOR = {
    "publish": (
        "  - The syncer will NOT start (no pulling from peers)",
        "  - sync_events will continue serving events to peers",
        "  - Write tools (create/update/delete) are blocked on HTTP",
        "  - Local stdio transport retains full write access",
    ),
    "subscribe": (
        "  - The syncer will pull events from peers normally",
        "  - sync_events will refuse to serve events",
        "  - Write tools remain available on all transports",
    ),
    "sync": (
        "  - The syncer will pull events from peers",
        "  - sync_events will serve events to peers",
        "  - Write tools available on all transports",
    ),
}


def _lines(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def _apply_hints(running: LockHolder | None, otherwise: str) -> list[str]:
    """What to restart for a change to take effect: the noemafed daemon if one holds the cortex, else
    `otherwise` (noema serve), after a note on a `sync --once` run that is under way."""
    if running is None:
        return [otherwise]
    pid = f" (pid {running.pid})" if running.pid else ""
    if running.restart_needed:
        return [DAEMON_RESTART_HINT.format(pid=pid)]
    if running.run_under_way:
        return [ONCE_RUNNING_HINT.format(pid=pid), otherwise]
    return [otherwise]


def _or(value: str, placeholder: str) -> str:
    return value if value else placeholder


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
        f"    version:    {_or(peer_state.health.version, '(not yet observed)')}",
        f"    rank:       {_format_rank(peer.rank) if peer.rank else '(none)'}",
        f"    last_seen:  {_or(peer_state.last_seen, '(never)')}",
        f"    last_event: {_or(peer_state.last_event, '(none)')}",
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


def _blocked_json(record: PoisonRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "event_id": record.event_id,
        "trace_id": record.trace_id or None,
        "action": record.action or None,
        "reason": record.reason,
        "error": record.error or None,
        "count": record.failures,
        "since": record.first_seen or None,
        "blocked_at": record.blocked_at or None,
        "last_attempt": record.last_seen or None,
    }


def _skipped_json(skip: SkippedEvent) -> dict[str, Any]:
    return {key: value or None for key, value in skip._asdict().items()}


def _status_human(report: StatusReport) -> str:
    """noema's `federation status` layout; the vector clock is sorted (Go's order is random)."""
    lines = [f"Cortex: {report.cortex_name}", _access_line(report.access, report.access_error), ""]
    federation = report.federation
    if federation is None or not federation.peers:
        lines.append(NOT_CONFIGURED)
        return _lines(lines)
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
    return _lines(lines)


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
            "blocked_on": _blocked_json(peer.blocked_on),
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
            "verifier": report.verifier,
        },
        "consolidation_rank": _rank_json(report.local_rank),
        "max_age_seconds": report.max_age,
        "peers": [_peer_json(peer) for peer in report.peers],
        "vclock": {key: report.vclock[key] for key in sorted(report.vclock)},
        "skipped_events": [_skipped_json(skip) for skip in report.skipped_events],
    }
    return _dumps(doc)


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


# ---- --metrics-file -------------------------------------------------------------------------------

# name, type, help; in the order the file lists them (Prometheus text format 0.0.4).
METRICS: tuple[tuple[str, str, str], ...] = (
    ("noemafed_build_info", "gauge", "noemafed's version (label version); always 1."),
    ("noemafed_sync_duration_seconds", "gauge", "How long the last sync --once run took."),
    (
        "noemafed_sync_exit_code",
        "gauge",
        "The exit code of the last sync --once run (0 ok, 3 transient, 4 operator).",
    ),
    ("noemafed_peer_last_success_timestamp_seconds", "gauge", "When the last poll of the peer succeeded."),
    ("noemafed_peer_consecutive_failures", "gauge", "Failed polls of the peer since its last success."),
    (
        "noemafed_peer_lag_seconds",
        "gauge",
        "Now minus the time in the id of the newest event applied from the peer.",
    ),
    (
        "noemafed_peer_next_attempt_timestamp_seconds",
        "gauge",
        "When sync --once contacts the failing peer again.",
    ),
    (
        "noemafed_peer_events_applied_total",
        "counter",
        "Events applied from the peer over all recorded polls.",
    ),
    (
        "noemafed_peer_verdict",
        "gauge",
        "The peer's verdict (label verdict): 1 for the current one, 0 for the others.",
    ),
)


def _label_value(value: str) -> str:
    """A label value as the text format escapes it: backslash, double quote and newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def metrics(report: MetricsReport) -> str:
    """Prometheus text: HELP and TYPE for every metric, then its samples; a value not known has no sample."""
    from noemafed.federation.verdict import Verdict  # noqa: PLC0415 (lazy: only metrics list every verdict)

    samples: dict[str, list[str]] = {name: [] for name, _, _ in METRICS}

    def add(name: str, labels: dict[str, str], value: float | None) -> None:
        if value is None:
            return
        text = ",".join(f'{key}="{_label_value(text)}"' for key, text in labels.items())
        samples[name].append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")

    status, last = report.status, report.last_sync
    add("noemafed_build_info", {"version": status.noemafed_version}, 1)
    add("noemafed_sync_duration_seconds", {}, round(last.seconds, 3) if last else None)
    add("noemafed_sync_exit_code", {}, last.exit_code if last else None)
    for peer in status.peers:
        judged, labels = peer.judgement, {"peer": peer.config.name}
        if judged is None:
            continue  # its records could not be read: no sample says anything false
        add("noemafed_peer_last_success_timestamp_seconds", labels, parse_rfc3339(judged.last_success or "-"))
        add("noemafed_peer_consecutive_failures", labels, judged.consecutive_failures)
        add("noemafed_peer_lag_seconds", labels, judged.lag_seconds)
        add(
            "noemafed_peer_next_attempt_timestamp_seconds",
            labels,
            parse_rfc3339(judged.next_attempt_at or "-"),
        )
        add("noemafed_peer_events_applied_total", labels, judged.events_applied_total)
        for verdict in Verdict:
            add("noemafed_peer_verdict", {**labels, "verdict": str(verdict)}, int(verdict is judged.verdict))
    lines = []
    for name, kind, text in METRICS:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *samples[name]]
    return _lines(lines)


# ---- the other federation commands ----------------------------------------------------------------


def _peers(report: PeersReport) -> str:
    """Aligned columns: noema's `  <name>  <endpoint>` with the mode and the pinned id after them."""
    if not report.peers:
        return "No peers configured. Add peers to cortex.md under the federation section.\n"
    rows = [("NAME", "ENDPOINT", "MODE", "PINNED CORTEX ID")]
    rows += [
        (e.config.name, redact(e.config.endpoint), e.config.effective_mode, _or(e.pinned_id, "(none)"))
        for e in report.peers
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return _lines(
        [
            "  " + "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[3]])
            for row in rows
        ]
    )


def _peers_json(report: PeersReport) -> str:
    """docs/peers.schema.json; unset values are null."""
    doc = {
        "schema_version": reports.PEERS_SCHEMA_VERSION,
        "cortex": {"id": report.cortex_id, "name": report.cortex_name, "path": str(report.cortex_path)},
        "peers": [
            {
                "name": entry.config.name,
                "endpoint": redact(entry.config.endpoint),
                "mode": entry.config.effective_mode,
                "ca": entry.config.ca or None,
                "pubkey": entry.config.pubkey or None,
                "cortex_id": entry.pinned_id or None,
            }
            for entry in report.peers
        ],
    }
    return _dumps(doc)


def _added_peer(added: AddedPeer) -> str:
    lines = [f"Added peer {go_quote(added.name)} ({added.endpoint}) to cortex.md"]
    if added.ca:
        lines.append(f"  ca:     {added.ca}")
    if added.pubkey:
        lines.append(f"  pubkey: {added.pubkey}")
    if added.running is not None:  # noema says nothing here; a noemafed sync running must be told
        lines += _apply_hints(added.running, APPLY_HINT)
    return _lines(lines)


def _peer_update(update: PeerUpdate) -> str:
    if not update.changes:
        return f"Peer {go_quote(update.name)} already has these settings — no change.\n"
    lines = [f"Peer {go_quote(update.name)} updated in cortex.md:"]
    for change in update.changes:
        shown = redact if change.key == "endpoint" else str
        line = (
            f"  {change.key + ':':<10}{_or(shown(change.before), '(none)')} -> {_or(change.after, '(none)')}"
        )
        if change.key == "name" and update.state_moved:
            line += " (its federation state moved with it)"
        lines.append(line)
    lines += _apply_hints(update.running, APPLY_HINT)
    return _lines(lines)


def _target_lines(target: ResetTarget, with_state: bool) -> list[str]:
    lines = [f"  {target.name} ({redact(target.endpoint)})"]
    if with_state:
        lines += [
            f"    pinned cortex_id: {_or(target.pinned_id, '(none)')}",
            f"    last_event:       {_or(target.last_event, '(none)')}",
            f"    last_seen:        {_or(target.last_seen, '(none)')}",
        ]
    return lines


def _remove_plan(plan: RemovePlan) -> str:
    lines = [f"About to remove {len(plan.targets)} peer(s) from cortex {go_quote(plan.cortex_name)}:"]
    for target in plan.targets:
        lines += _target_lines(target, not plan.keep_state)
    if plan.keep_state:
        lines.append("Their federation state is kept (--keep-state): a peer added later under the same name")
        lines.append("resumes from its cursor and keeps its pinned identity.")
    else:
        lines.append("Their federation state goes with them: cursor, pinned identity and key, health,")
        lines.append("usage cursor and rank.")
    return _lines(lines)


def _remove_result(result: RemoveResult) -> str:
    lines = ["", "Removed from cortex.md:"]
    for target in result.targets:
        if result.keep_state:
            lines.append(f"  {target.name}: state kept")
        elif target.had_state:
            lines.append(f"  {target.name}: state cleared")
        else:
            lines.append(f"  {target.name}: nothing to clear (peer had no stored state)")
    if result.buckets_dropped:
        lines.append(f"  vector-clock buckets dropped: {result.buckets_dropped}")
    lines += _apply_hints(result.running, APPLY_HINT)
    return _lines(lines)


_SETTING_LABELS = {"interval": "Federation interval", "verify": "Signature verification"}


def _setting_change(change: SettingChange) -> str:
    label = _SETTING_LABELS[change.setting]
    if not change.changed:
        return f"{label} is already {go_quote(change.current)} — no change.\n"
    previous = change.previous or "(not set: 30s)"
    return _lines([f"{label}: {previous} -> {change.current}", *_apply_hints(change.running, APPLY_HINT)])


def _version(report: VersionReport) -> str:
    commit = report.commit or "unknown"
    return (
        f"noemafed {report.version} (commit {commit}) on Python {report.python}, SQLite {report.sqlite}, "
        f"Ed25519: {report.ed25519}\n"
    )


def _reset_plan(plan: ResetPlan) -> str:
    lines = [
        f"About to reset federation state for {len(plan.targets)} peer(s) in cortex {go_quote(plan.cortex_name)}:"
    ]
    for target in plan.targets:
        lines += _target_lines(target, with_state=True)
    lines += [
        "After reset, the next sync will re-pin the peer's current cortex_id",
        "and replay events from the beginning of its log.",
    ]
    return _lines(lines)


RESET_PROMPT = "Proceed? [y/N]: "

SKIP_PLAN_LINES = (
    "About to skip event {event_id} from peer {peer} in cortex {cortex}:",
    "  action:     {action}",
    "  trace:      {trace_id}",
    "  reason:     {reason} ({failures} failed replays in a row since {first_seen})",
    "  error:      {error}",
    "  cursor:     {cursor}",
    "  note:       {note}",
    "The event is fetched from the peer again and stored as received, but not applied: this cortex",
    "never gets its change. The cursor moves past it and the skip is recorded for good (noemafed status).",
)
SKIP_DONE = "Skipped event {event_id} from peer {peer}: stored, not applied; cursor {before} -> {after}."
SKIP_ALREADY_STORED = "The event was already stored (another peer relayed it); only the cursor moved."
SKIP_NEXT = "The next `noemafed sync --once` pulls the events after it."


def _skip_plan(plan: SkipPlan) -> str:
    record = plan.record
    fields = {
        **record._asdict(),
        "peer": go_quote(plan.peer.name),
        "cortex": go_quote(plan.cortex_name),
        "cursor": _or(plan.cursor, "(none)"),
        "note": _or(plan.note, "(none)"),
        "trace_id": _or(record.trace_id, "(none)"),
    }
    return _lines([line.format(**fields) for line in SKIP_PLAN_LINES])


def _skip_result(result: SkipResult) -> str:
    skip = result.skip
    lines = [
        SKIP_DONE.format(
            event_id=skip.event_id,
            peer=go_quote(skip.peer),
            before=_or(skip.cursor_before, "(none)"),
            after=skip.event_id,
        )
    ]
    if not result.stored:
        lines.append(SKIP_ALREADY_STORED)
    return _lines([*lines, SKIP_NEXT])


def _reset_result(result: ResetResult) -> str:
    lines = ["", "Reset complete."]
    for target in result.targets:
        if target.had_state:
            lines.append(f"  {target.name}: state cleared")
        else:
            lines.append(f"  {target.name}: nothing to clear (peer had no stored state)")
    if result.buckets_dropped:
        lines.append(f"  vector-clock buckets dropped: {result.buckets_dropped}")
    lines.append("Restart `noema serve` (or wait for the next syncer poll) to re-pin the peers.")
    return _lines(lines)


RETRY_CLEARED = "{name}: backoff cleared; the next `sync --once` contacts it"
RETRY_NOTHING = "{name}: not in backoff; the next `sync --once` contacts it anyway"


def _retry_now(report: RetryNowReport) -> str:
    return _lines(
        [
            (RETRY_CLEARED if name in report.cleared else RETRY_NOTHING).format(name=name)
            for name in report.names
        ]
    )


def _mode_change(change: ModeChange) -> str:
    if not change.changed:
        return f"Federation mode is already {go_quote(change.current)} — no change.\n"
    lines = [f"Federation mode changed: {change.previous} -> {change.current}", "", "Behavior:"]
    lines += [*_MODE_BEHAVIOR[change.current], "", *_apply_hints(change.running, RESTART_HINT)]
    return _lines(lines)


def _peer_mode_change(change: PeerModeChange) -> str:
    if not change.changed:
        return f"Peer {go_quote(change.peer)} is already {change.current} — no change.\n"
    lines = [f"Peer {go_quote(change.peer)}: {change.previous} -> {change.current}"]
    return _lines([*lines, *_apply_hints(change.running, RESTART_HINT)])


def _key_fingerprint(report: KeyReport) -> str:
    access = report.access
    lines = [f"{'Cortex:':<13}{report.cortex_name}"]
    if not access.keyed:
        lines.append(f"{'Access:':<13}open mode (no key configured)")
        return _lines(lines)
    lines.append(f"{'Source:':<13}{access.source}")
    if access.path:
        lines.append(f"{'Path:':<13}{access.path}")
    lines.append(f"{'Fingerprint:':<13}{access.fingerprint}")
    if access.env_override:
        lines.append(f"{'Note:':<13}NOEMA_MCP_KEY is overriding access.shared_key_file")
    return _lines(lines)


KEY_REPLACED = "{label:<13}{fingerprint}"
KEY_REPLACED_NOTE = (
    "Peers that pinned the replaced key refuse this cortex until each runs `noemafed reset-peer <name>` "
    "(or `noema federation reset-peer <name>`) for it."
)


def _keygen(report: KeygenReport) -> str:
    """The public key and its fingerprint; the seed never leaves its file."""
    lines = [
        f"Signing key written to {report.seed_path} (mode 0600)",
        f"{'Public key:':<13}{report.public_key}",
        f"{'Fingerprint:':<13}{report.fingerprint}",
        f"cortex.md: signing.public_key set, signing.private_key_file: {report.key_file}",
    ]
    if report.replaced:
        lines += [KEY_REPLACED.format(label="Replaced:", fingerprint=report.replaced), KEY_REPLACED_NOTE]
    lines += _apply_hints(report.running, APPLY_HINT)
    return _lines(lines)


def _initialized(report: InitReport) -> str:
    return _lines([f"Initialized cortex {go_quote(report.name)} ({report.cortex_id}) at {report.path}"])


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
        since=_or(peer.failing_since, "(unknown)"),
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
    return _lines(lines)


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
        "blocked_on": _blocked_json(_blocked(result)),
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
    return _dumps(doc)


# ---- doctor ---------------------------------------------------------------------------------------------

DOCTOR_CLEAN = "No problems found."
DOCTOR_SUMMARY = "{errors} error(s), {warnings} warning(s), {infos} note(s)"


def _doctor_human(report: DoctorReport) -> str:
    """One block per finding, errors first: severity and subject, what is wrong, then the fix."""
    lines = []
    for finding in report.findings:
        lines += [
            f"{finding.severity.upper()}: {finding.subject}",
            f"  {finding.message}",
            f"  fix: {finding.fix}",
        ]
    counts = DOCTOR_SUMMARY.format(
        errors=report.count("error"), warnings=report.count("warning"), infos=report.count("info")
    )
    lines.append(counts if report.exit_code else f"{DOCTOR_CLEAN} ({counts})")
    return _lines(lines)


def _doctor_json(report: DoctorReport) -> str:
    """docs/doctor.schema.json."""
    doc = {
        "schema_version": reports.DOCTOR_SCHEMA_VERSION,
        "generated_at": report.generated_at,
        "cortex": {"id": report.cortex_id or None, "path": str(report.cortex_path)},
        "online": report.online,
        "exit_code": report.exit_code,
        "counts": {severity: report.count(severity) for severity in ("error", "warning", "info")},
        "findings": [
            {
                "severity": str(finding.severity),
                "code": finding.code,
                "subject": finding.subject,
                "message": finding.message,
                "fix": finding.fix,
            }
            for finding in report.findings
        ],
    }
    return _dumps(doc)


# ---- errors and dispatch ------------------------------------------------------------------------------


def _error_json(report: ErrorReport) -> str:
    """What a `--json` command prints instead of its document when it fails (the error variant of its schema)."""
    error = {
        "code": report.code,
        "message": report.message,
        "hint": report.hint,
        "exit_code": report.exit_code,
    }
    return _dumps({"schema_version": report.schema_version, "error": error})


def _dumps(doc: dict[str, Any]) -> str:
    return _json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def human(report: Report) -> str:
    """The report as noema prints it."""
    match report:
        case InitReport():
            return _initialized(report)
        case StatusReport():
            return _status_human(report)
        case PeersReport():
            return _peers(report)
        case AddedPeer():
            return _added_peer(report)
        case ResetPlan():
            return _reset_plan(report)
        case ResetResult():
            return _reset_result(report)
        case ModeChange():
            return _mode_change(report)
        case PeerModeChange():
            return _peer_mode_change(report)
        case KeyReport():
            return _key_fingerprint(report)
        case SyncReport():
            return _sync_human(report)
        case PeerUpdate():
            return _peer_update(report)
        case RemovePlan():
            return _remove_plan(report)
        case RemoveResult():
            return _remove_result(report)
        case SettingChange():
            return _setting_change(report)
        case VersionReport():
            return _version(report)
        case KeygenReport():
            return _keygen(report)
        case DoctorReport():
            return _doctor_human(report)
        case RetryNowReport():
            return _retry_now(report)
        case SkipPlan():
            return _skip_plan(report)
        case SkipResult():
            return _skip_result(report)


def json(report: JsonReport) -> str:
    """The report as one JSON document for scripts (docs/status.schema.json, docs/sync.schema.json)."""
    match report:
        case StatusReport():
            return _status_json(report)
        case SyncReport():
            return _sync_json(report)
        case PeersReport():
            return _peers_json(report)
        case ErrorReport():
            return _error_json(report)
        case DoctorReport():
            return _doctor_json(report)
