"""Log lines as data, for `sync --log-format json`: each federation log text is a template constant, so a line
is matched back to its template, which names its event and gives its fields. The text lines themselves stay
noema's; this is read only when a JSON log is asked for."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

from noemafed.federation import identity, replay, schedule, syncer

# noemafed's own line, logged by `sync --once --log-format json` for each peer it visited: the run's outcome
# reaches a log pipeline, not only the report on stdout.
RESULT_LOG = "[sync] peer {name}: {status} ({reason}), {applied} events applied, cursor {cursor}"

# (event, template): the event names are the `event` field of a JSON log line, stable for log pipelines.
TEMPLATES: tuple[tuple[str, str], ...] = (
    ("poll_result", RESULT_LOG),
    ("page_applied", syncer.PAGE_LOG),
    ("replay_failed", syncer.REPLAY_FAILED_LOG),
    ("read_signal_failed", syncer.READ_SIGNAL_FAILED_LOG),
    ("health_load_failed", syncer.LOAD_HEALTH_FAILED_LOG),
    ("health_persist_failed", syncer.PERSIST_HEALTH_FAILED_LOG),
    ("state_record_failed", syncer.RECORD_FAILED_LOG),
    ("state_read_failed", syncer.READ_FAILED_LOG),
    ("identity_pinned", identity.ID_PINNED_LOG),
    ("signing_key_pinned", identity.KEY_PINNED_LOG),
    ("signing_key_hard_pinned", identity.KEY_HARD_PINNED_LOG),
    ("hard_pin_overrode", identity.HARD_PIN_OVERRODE_LOG),
    ("rank_persist_failed", identity.RANK_PERSIST_FAILED_LOG),
    ("signature_warning", replay.WARN_APPLIED_LOG),
    ("clock_merge_failed", replay.MERGE_CLOCK_LOG),
    ("peer_paused", schedule.PAUSED_LOG),
    ("syncer_started", schedule.STARTED_LOG),
    ("syncer_stopped", schedule.STOPPED_LOG),
    ("no_peers", schedule.NO_PEERS_LOG),
    ("all_paused", schedule.ALL_PAUSED_LOG),
    ("peer_unreachable", schedule.FRIENDLY_HEADER_LOG),  # the first line of the friendly block
    ("peer_still_unreachable", schedule.BRIEF_LOG),
    ("peer_recovered", schedule.RECOVERED_LOG),
)
UNKNOWN_EVENT = "log"  # a line no template matches: its text is still there, in `message`
_FIELD = re.compile(r"\{(\w+)(?::[^}]*)?\}")


@cache
def _patterns() -> tuple[tuple[str, re.Pattern[str]], ...]:
    """Each template as a regular expression whose named groups are its fields."""
    compiled = []
    for event, template in TEMPLATES:
        parts, position = [], 0
        for match in _FIELD.finditer(template):
            parts += [re.escape(template[position : match.start()]), f"(?P<{match.group(1)}>.*?)"]
            position = match.end()
        parts.append(re.escape(template[position:]))
        compiled.append((event, re.compile("".join(parts), re.DOTALL)))
    return tuple(compiled)


def _unquote(text: str) -> str:
    """A name as Go's %q wrote it, back to the name."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            return str(json.loads(re.sub(r"\\x([0-9a-fA-F]{2})", r"\\u00\1", text)))
        except ValueError:
            return text[1:-1]
    return text


def log_record(time: str, level: str, message: str) -> dict[str, Any]:
    """One JSON log object: time, level, peer, event, reason, the message's own fields, and its text."""
    first_line = message.split("\n", 1)[0]
    event, fields = UNKNOWN_EVENT, {}
    for name, pattern in _patterns():
        match = pattern.fullmatch(first_line)
        if match:
            event, fields = name, match.groupdict()
            break
    peer = fields.pop("name", None)
    reason = fields.pop("reason", None) or fields.pop("category", None)
    return {
        "time": time,
        "level": level,
        "peer": _unquote(peer) if peer is not None else None,
        "event": event,
        "reason": reason or None,
        **fields,
        "message": message,
    }
