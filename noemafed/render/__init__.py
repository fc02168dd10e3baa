"""Every report as human text (noema's exact layout) or as one JSON document, pure string functions: one module
per family of reports (`status`, `sync`, `config`), each with its `human(report)` and `json(report)`, so a
command loads only its own renderers (docs/performance.md, status). Here: what they share, and the error
document every `--json` command prints when it fails."""

from __future__ import annotations

import json as _json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # value types only
    from noemafed.federation.poison import PoisonRecord
    from noemafed.reports.error import ErrorReport

NOT_CONFIGURED = "Federation: not configured (no peers in cortex.md)"


def join_lines(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def or_else(value: str, placeholder: str) -> str:
    return value if value else placeholder


def dumps(doc: dict[str, Any]) -> str:
    return _json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def blocked_json(record: PoisonRecord | None) -> dict[str, Any] | None:
    """The event a blocked peer is stuck on, as the status and sync documents both show it."""
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


def error_json(report: ErrorReport) -> str:
    """What a `--json` command prints instead of its document when it fails (the error variant of its schema)."""
    error = {
        "code": report.code,
        "message": report.message,
        "hint": report.hint,
        "exit_code": report.exit_code,
    }
    return dumps({"schema_version": report.schema_version, "error": error})
