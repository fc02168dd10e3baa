"""`status`: the text, `--json`, the `--check` plugin line and `--metrics-file`."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from noemafed.cli.app import (
    MAX_AGE_DEFAULT,
    METRICS_HELP,
    CliContext,
    Command,
    FilePath,
    host_error,
    parse_duration,
)
from noemafed.errors import InternalError, NoemafedError

if TYPE_CHECKING:
    from noemafed.reports.status import StatusReport
    from noemafed.reports.sync import SyncReport


@click.command(cls=Command)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (docs/status.schema.json).")
@click.option(
    "--max-age",
    callback=parse_duration,
    metavar="DURATION",
    default=MAX_AGE_DEFAULT,
    show_default=True,
    help="A peer without a success for longer than this is `stale`.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Print one monitoring-plugin line (NOEMAFED OK|WARNING|CRITICAL|UNKNOWN) and exit 0, 1, 2 or 3.",
)
@click.option("--peer", "peer_names", multiple=True, metavar="NAME", help="With --check: only these peers.")
@click.option("--metrics-file", type=FilePath(), metavar="PATH", help=METRICS_HELP)
@click.pass_obj
def status(
    obj: CliContext,
    as_json: bool,
    max_age: float,
    check: bool,
    peer_names: tuple[str, ...],
    metrics_file: Path | None,
) -> None:
    """Show access mode, peers, cursors, health, the vector clock and a verdict per peer.

    With --check, print one line for Nagios or Icinga instead: OK (exit 0), WARNING (1: a peer failing,
    deferred or behind), CRITICAL (2: a peer that needs an operator or is stale), UNKNOWN (3: the cortex
    cannot be read). docs/operations.md has the details.

    Example: noemafed status --json | jq '.peers[] | {name, verdict, lag_seconds}'
    """
    from noemafed import reports
    from noemafed.commands.status import status
    from noemafed.render import status as render

    if check:
        if as_json:
            raise click.UsageError("--check and --json exclude each other")
        _status_check(obj, max_age, peer_names, metrics_file)
    if peer_names:
        raise click.UsageError("--peer needs --check")
    if as_json:
        obj.json_schema = reports.STATUS_SCHEMA_VERSION
    report = status(obj.cortex_dir(), obj.env.environ, max_age, obj.clock(), with_verifier=as_json)
    if metrics_file is not None:
        write_metrics(metrics_file, report, None)
    obj.emit(render.json(report) if as_json else render.human(report))


def write_metrics(path: Path, status: StatusReport, run: SyncReport | None) -> None:
    """The metrics file of a status (the last run as it recorded itself) or of the run that just ended."""
    from noemafed.commands import metrics
    from noemafed.render import metrics as render

    report = metrics.from_status(status) if run is None else metrics.after_sync(status, run)
    metrics.write_file(path, render.prometheus(report))


def _status_check(
    obj: CliContext, max_age: float, names: tuple[str, ...], metrics_file: Path | None
) -> NoReturn:
    """The plugin line and its exit code; whatever stops the cortex being read is UNKNOWN, never a traceback."""
    from noemafed.commands.status import check, status
    from noemafed.federation.verdict import CheckState
    from noemafed.render import status as render
    from noemafed.reports.status import CheckReport

    try:
        status_report = status(obj.cortex_dir(), obj.env.environ, max_age, obj.clock())
        report = check(status_report, names)
        if metrics_file is not None:
            write_metrics(metrics_file, status_report, None)
    except NoemafedError as exc:
        report = CheckReport(CheckState.UNKNOWN, error=exc.message)
    except (OSError, sqlite3.Error) as exc:
        report = CheckReport(CheckState.UNKNOWN, error=host_error(exc).message)
    except Exception as exc:  # a bug: still the plugin's line, so the monitoring shows it
        report = CheckReport(CheckState.UNKNOWN, error=InternalError(exc).message)
    obj.emit(render.check_line(report))
    sys.exit(int(report.state))
