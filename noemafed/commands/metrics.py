"""`--metrics-file`: the Prometheus text file for node_exporter's textfile collector, written atomically."""

from __future__ import annotations

from pathlib import Path

from noemafed.cortex.files import replace_file
from noemafed.cortex.state import LastSync
from noemafed.reports.metrics import MetricsReport
from noemafed.reports.status import StatusReport
from noemafed.reports.sync import SyncReport

# node_exporter runs as another user: the file must be readable by others (mkstemp makes it 0600).
METRICS_FILE_MODE = 0o644


def after_sync(status: StatusReport, run: SyncReport) -> MetricsReport:
    """The metrics of a `sync --once` run: its own figures, and every peer as status now judges it."""
    return MetricsReport(status, LastSync(status.generated_at, run.seconds, int(run.exit_code)))


def from_status(status: StatusReport) -> MetricsReport:
    """The metrics of a host that only checks: the last run as it recorded itself."""
    return MetricsReport(status, status.last_sync)


def write_file(path: Path, text: str) -> None:
    """Replace the metrics file whole or not at all (its temp file is never named *.prom, so the collector
    skips it)."""
    replace_file(path, text, METRICS_FILE_MODE)
