"""`doctor`: every finding on this host and cortex, with its fix."""

from __future__ import annotations

import sys

import click

from noemafed.cli.app import CliContext, Command


@click.command(cls=Command)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (docs/doctor.schema.json).")
@click.option(
    "--online/--offline",
    default=None,
    help="Contact the peers (clocks, certificates, reported ids) [default: online on a terminal, else offline].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    metavar="S",
    help="Per peer, for its whole answer.",
)
@click.pass_obj
def doctor(obj: CliContext, as_json: bool, online: bool | None, timeout: float) -> None:
    """Check the cortex, this host and (online) the peers; each finding says how to fix it.

    Exit codes: 0 nothing to fix, 1 warnings, 2 errors (docs/exit-codes.md).

    Example: noemafed doctor --online --json | jq '.findings[] | select(.severity == "error")'
    """
    from noemafed import reports
    from noemafed.commands.doctor import doctor
    from noemafed.render import config as render

    if as_json:
        obj.json_schema = reports.DOCTOR_SCHEMA_VERSION
    contact = obj.env.stdout_isatty if online is None else online
    report = doctor(obj.cortex_dir(), obj.env.environ, online=contact, timeout=timeout)
    obj.emit(render.json(report) if as_json else render.human(report))
    if report.exit_code:
        sys.exit(report.exit_code)
