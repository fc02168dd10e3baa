"""What a metrics file says (`--metrics-file`, commands.metrics)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from noemafed.records import Record

if TYPE_CHECKING:  # value types only
    from noemafed.cortex.state import LastSync
    from noemafed.reports.status import StatusReport


class MetricsReport(Record):
    """What a metrics file says: every peer as status judged it, and the sync run it follows (None: none
    recorded)."""

    status: StatusReport
    last_sync: LastSync | None
