"""What a `sync --once` run did."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from noemafed.errors import ExitCode
from noemafed.records import Record

if TYPE_CHECKING:
    from noemafed.federation.dryrun import Rehearsal
    from noemafed.federation.schedule import DeferredPeer
    from noemafed.federation.syncer import PollResult


class SyncReport(Record):
    """One `sync --once` run: a result per visited peer, the peers skipped, and the exit code it implies."""

    started_at: str
    seconds: float
    cortex_path: Path
    cortex_id: str
    cortex_name: str
    results: tuple[PollResult, ...]
    paused: tuple[str, ...]
    deferred: tuple[DeferredPeer, ...] = ()  # not contacted: their next attempt (backoff, blocked) is not due
    dry_run: bool = False  # --dry-run: nothing was kept; `rehearsals` says what a run would have done
    rehearsals: tuple[Rehearsal, ...] = ()  # one per result, in the same order

    @property
    def exit_code(self) -> ExitCode:
        """0 all good; 4 if any peer needs an operator (wins); 3 if any failed otherwise; deferred peers count
        for nothing."""
        # The codes are ordered by severity, so the worst result is the largest.
        return max((result.exit_code for result in self.results), default=ExitCode.OK)
