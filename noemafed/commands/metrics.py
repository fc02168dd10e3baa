"""`--metrics-file`: the Prometheus text file for node_exporter's textfile collector, written atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from noemafed.cortex.state import LastSync
from noemafed.cortex.traces import fsync_dir
from noemafed.reports.status import MetricsReport, StatusReport
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
    """Replace `path` whole or not at all: a temp file in the same folder (never named *.prom, so the collector
    skips it), written and fsynced, then renamed over the old file; a reader sees the old file or the new one."""
    folder = path.parent
    descriptor, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), METRICS_FILE_MODE)
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    # The rename itself survives a crash once the folder is synced; a folder that cannot be opened (some
    # network file systems) still has the file in place.
    with contextlib.suppress(OSError):
        fsync_dir(folder)
