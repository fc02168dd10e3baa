"""What the configuration commands print: init, the peer commands, the settings, keys, skip-event,
retry-now, doctor and --version."""

from __future__ import annotations

from typing import TYPE_CHECKING

from noemafed import reports
from noemafed.render import dumps, join_lines, or_else
from noemafed.reports.config import (
    AddedPeer,
    DoctorReport,
    InitReport,
    KeygenReport,
    KeyReport,
    ModeChange,
    PeerModeChange,
    PeersReport,
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
    VersionReport,
)
from noemafed.text.endpoints import redact
from noemafed.text.gotext import go_quote

if TYPE_CHECKING:  # value types only
    from noemafed.federation.lock import LockHolder

Report = (
    InitReport
    | PeersReport
    | AddedPeer
    | ResetPlan
    | ResetResult
    | ModeChange
    | PeerModeChange
    | KeyReport
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

# After a change to cortex.md, what must be restarted, named from the sync lock's holder (commands fill
# `running`): a noemafed daemon read cortex.md when it started; a `sync --once` run reads it on each run; noema
# serve holds no lock of ours, so it is named (in noema's words where noema has them) when no daemon of ours is.
RESTART_HINT = "Restart `noema serve` for the change to take effect."
APPLY_HINT = "Restart `noema serve` if it serves this cortex; the next `noemafed sync` reads cortex.md."
DAEMON_RESTART_HINT = "Restart the `noemafed sync` daemon{pid} for the change to take effect."
ONCE_RUNNING_HINT = (
    "A `noemafed sync --once` run{pid} is under way with the previous settings; the next run reads cortex.md."
)

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


# ---- the other federation commands ----------------------------------------------------------------


def _peers(report: PeersReport) -> str:
    """Aligned columns: noema's `  <name>  <endpoint>` with the mode and the pinned id after them."""
    if not report.peers:
        return "No peers configured. Add peers to cortex.md under the federation section.\n"
    rows = [("NAME", "ENDPOINT", "MODE", "PINNED CORTEX ID")]
    rows += [
        (e.config.name, redact(e.config.endpoint), e.config.effective_mode, or_else(e.pinned_id, "(none)"))
        for e in report.peers
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return join_lines(
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
    return dumps(doc)


def _added_peer(added: AddedPeer) -> str:
    lines = [f"Added peer {go_quote(added.name)} ({added.endpoint}) to cortex.md"]
    if added.ca:
        lines.append(f"  ca:     {added.ca}")
    if added.pubkey:
        lines.append(f"  pubkey: {added.pubkey}")
    if added.running is not None:  # noema says nothing here; a noemafed sync running must be told
        lines += _apply_hints(added.running, APPLY_HINT)
    return join_lines(lines)


def _peer_update(update: PeerUpdate) -> str:
    if not update.changes:
        return f"Peer {go_quote(update.name)} already has these settings — no change.\n"
    lines = [f"Peer {go_quote(update.name)} updated in cortex.md:"]
    for change in update.changes:
        shown = redact if change.key == "endpoint" else str
        line = f"  {change.key + ':':<10}{or_else(shown(change.before), '(none)')} -> {or_else(change.after, '(none)')}"
        if change.key == "name" and update.state_moved:
            line += " (its federation state moved with it)"
        lines.append(line)
    lines += _apply_hints(update.running, APPLY_HINT)
    return join_lines(lines)


def _target_lines(target: ResetTarget, with_state: bool) -> list[str]:
    lines = [f"  {target.name} ({redact(target.endpoint)})"]
    if with_state:
        lines += [
            f"    pinned cortex_id: {or_else(target.pinned_id, '(none)')}",
            f"    last_event:       {or_else(target.last_event, '(none)')}",
            f"    last_seen:        {or_else(target.last_seen, '(none)')}",
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
    return join_lines(lines)


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
    return join_lines(lines)


_SETTING_LABELS = {"interval": "Federation interval", "verify": "Signature verification"}


def _setting_change(change: SettingChange) -> str:
    label = _SETTING_LABELS[change.setting]
    if not change.changed:
        return f"{label} is already {go_quote(change.current)} — no change.\n"
    previous = change.previous or "(not set: 30s)"
    return join_lines([f"{label}: {previous} -> {change.current}", *_apply_hints(change.running, APPLY_HINT)])


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
    return join_lines(lines)


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
        "cursor": or_else(plan.cursor, "(none)"),
        "note": or_else(plan.note, "(none)"),
        "trace_id": or_else(record.trace_id, "(none)"),
    }
    return join_lines([line.format(**fields) for line in SKIP_PLAN_LINES])


def _skip_result(result: SkipResult) -> str:
    skip = result.skip
    lines = [
        SKIP_DONE.format(
            event_id=skip.event_id,
            peer=go_quote(skip.peer),
            before=or_else(skip.cursor_before, "(none)"),
            after=skip.event_id,
        )
    ]
    if not result.stored:
        lines.append(SKIP_ALREADY_STORED)
    return join_lines([*lines, SKIP_NEXT])


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
    return join_lines(lines)


RETRY_CLEARED = "{name}: backoff cleared; the next `sync --once` contacts it"
RETRY_NOTHING = "{name}: not in backoff; the next `sync --once` contacts it anyway"


def _retry_now(report: RetryNowReport) -> str:
    return join_lines(
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
    return join_lines(lines)


def _peer_mode_change(change: PeerModeChange) -> str:
    if not change.changed:
        return f"Peer {go_quote(change.peer)} is already {change.current} — no change.\n"
    lines = [f"Peer {go_quote(change.peer)}: {change.previous} -> {change.current}"]
    return join_lines([*lines, *_apply_hints(change.running, RESTART_HINT)])


def _key_fingerprint(report: KeyReport) -> str:
    access = report.access
    lines = [f"{'Cortex:':<13}{report.cortex_name}"]
    if not access.keyed:
        lines.append(f"{'Access:':<13}open mode (no key configured)")
        return join_lines(lines)
    lines.append(f"{'Source:':<13}{access.source}")
    if access.path:
        lines.append(f"{'Path:':<13}{access.path}")
    lines.append(f"{'Fingerprint:':<13}{access.fingerprint}")
    if access.env_override:
        lines.append(f"{'Note:':<13}NOEMA_MCP_KEY is overriding access.shared_key_file")
    return join_lines(lines)


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
    return join_lines(lines)


def _initialized(report: InitReport) -> str:
    return join_lines([f"Initialized cortex {go_quote(report.name)} ({report.cortex_id}) at {report.path}"])


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
    return join_lines(lines)


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
    return dumps(doc)


def human(report: Report) -> str:
    """The report as noema prints it."""
    match report:
        case InitReport():
            return _initialized(report)
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


def json(report: PeersReport | DoctorReport) -> str:
    """The report as one JSON document for scripts (docs/peers.schema.json, docs/doctor.schema.json)."""
    match report:
        case PeersReport():
            return _peers_json(report)
        case DoctorReport():
            return _doctor_json(report)
