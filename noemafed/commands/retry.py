"""`retry-now`: end peers' backoff, so the next `sync --once` contacts them whatever their streak."""

from __future__ import annotations

from pathlib import Path

from noemafed.commands.peers import check_known
from noemafed.cortex import state
from noemafed.cortex.open import open_cortex
from noemafed.reports.config import RetryNowReport


def retry_now(cortex_dir: Path, names: tuple[str, ...]) -> RetryNowReport:
    """Clear the named peers' backoff in one transaction; their health and counters stay as they are."""
    names = tuple(dict.fromkeys(names))
    cortex = open_cortex(cortex_dir)
    try:
        check_known(cortex.manifest, names)
        cleared = []
        with state.write_transaction(cortex.conn):
            for name in names:
                if state.get_backoff(cortex.conn, name) is not None:
                    cleared.append(name)
                state.clear_backoff(cortex.conn, name)
        return RetryNowReport(names, tuple(cleared))
    finally:
        cortex.close()
