"""The `--metrics-file` text: Prometheus text format 0.0.4, for node_exporter's textfile collector."""

from __future__ import annotations

from typing import TYPE_CHECKING

from noemafed.render import join_lines
from noemafed.text.clock import parse_rfc3339

if TYPE_CHECKING:  # value types only
    from noemafed.reports.metrics import MetricsReport

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


def prometheus(report: MetricsReport) -> str:
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
    for name, kind, help_text in METRICS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples[name]]
    return join_lines(lines)
