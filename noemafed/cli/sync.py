"""`sync`: once for cron, or as a foreground daemon."""

from __future__ import annotations

import gc
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

from noemafed.cli.app import MAX_AGE_DEFAULT, METRICS_HELP, CliContext, Command, FilePath, parse_duration
from noemafed.errors import ExitCode

if TYPE_CHECKING:
    from noemafed.cortex.manifest import Manifest
    from noemafed.federation.syncer import SyncOptions
    from noemafed.logs import Log
    from noemafed.reports.sync import SyncReport


# `sync --once` without --max-duration: long enough for a backlog of several hundred thousand events, short
# enough that a hostile or wedged peer cannot keep a cron run (and so every later one) alive for ever.
ONCE_MAX_DURATION = 600.0


@click.command(cls=Command)
@click.option(
    "--once", is_flag=True, help="Poll each peer once and exit (for cron); without it, run as a daemon."
)
@click.option("--peer", "peer_names", multiple=True, metavar="NAME", help="Only these peers (repeatable).")
@click.option(
    "--max-duration",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help=f"Give up after S seconds in all [default with --once: {ONCE_MAX_DURATION:g}].",
)
@click.option(
    "--max-events", type=click.IntRange(min=1), metavar="N", help="Apply at most N events per peer this run."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    metavar="S",
    help="Per request: connect, TLS handshake, headers and body together.",
)
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    metavar="N",
    help="Poll at most N peers at once (each holds a page of events in memory).",
)
@click.option(
    "--max-future-skew",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    metavar="S",
    help="Refuse event ids dated more than S seconds ahead of this host's clock.",
)
@click.option(
    "--wait",
    "wait_seconds",
    type=click.FloatRange(min=0),
    default=0.0,
    metavar="S",
    help="Wait up to S seconds for another sync to finish.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON report (docs/sync.schema.json); with --once."
)
@click.option(
    "--verbose",
    "-v",
    count=True,
    help="Log progress and pins on stderr and print the report even when it is not a terminal (as noemafed -v).",
)
@click.option(
    "--use-proxy-env", is_flag=True, help="Honour *_proxy environment variables (ignored by default)."
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="With --once: fetch, verify and replay as a run would, then undo it all; report what it would apply.",
)
@click.option(
    "--block-after",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    metavar="K",
    help="Block a peer whose replay fails on the same event K syncs in a row: retried once an hour, until skip-event.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines on stderr as noema's text, or as one JSON object per line (time, level, peer, event, reason).",
)
@click.option(
    "--max-backoff",
    callback=parse_duration,
    metavar="DURATION",
    default="1h",
    show_default=True,
    help="With --once: the longest a failing peer is left alone between attempts (Retry-After included).",
)
@click.option(
    "--ignore-backoff",
    is_flag=True,
    help="With --once: contact every chosen peer now (a blocked one too) and clear its backoff.",
)
@click.option("--metrics-file", type=FilePath(), metavar="PATH", help=METRICS_HELP)
@click.option(
    "--max-age",
    callback=parse_duration,
    metavar="DURATION",
    default=MAX_AGE_DEFAULT,
    show_default=True,
    help="With --metrics-file: a peer without a success for longer than this is `stale`.",
)
@click.pass_obj
def sync(
    obj: CliContext,
    once: bool,
    peer_names: tuple[str, ...],
    max_duration: float | None,
    max_events: int | None,
    timeout: float,
    jobs: int,
    max_future_skew: float,
    wait_seconds: float,
    as_json: bool,
    verbose: int,
    use_proxy_env: bool,
    block_after: int,
    dry_run: bool,
    log_format: str,
    max_backoff: float,
    ignore_backoff: bool,
    metrics_file: Path | None,
    max_age: float,
) -> None:
    """Pull and replay peers' events: once for cron, or as a foreground daemon for systemd.

    With --once, a peer that keeps failing is left alone for a while (the manifest's interval, doubled per
    failure, up to --max-backoff, or what its Retry-After asks): such a peer is reported `deferred`, which
    is not a failure. `retry-now NAME` or --ignore-backoff ends the wait.

    Exit codes: 0 all peers synced (or deferred), 3 a peer failed but may recover, 4 a peer needs an
    operator, 75 another sync holds the cortex, 78 cortex.md is invalid (docs/exit-codes.md).

    Example: noemafed sync --once --max-duration 300
    """
    from noemafed import reports
    from noemafed.cortex.manifest import check_ready_for_federation, read_manifest
    from noemafed.federation.syncer import SyncOptions

    gc.enable()  # run() turned it off for the start-up; a sync's work can be long and large
    if as_json:
        obj.json_schema = reports.SYNC_SCHEMA_VERSION
    if obj.quiet and verbose:
        raise click.UsageError("--quiet and --verbose exclude each other")
    obj.verbosity += verbose
    obj.log_format = log_format
    cortex_dir = obj.cortex_dir()
    manifest = read_manifest(cortex_dir)
    check_ready_for_federation(manifest)
    if once and max_duration is None:
        max_duration = ONCE_MAX_DURATION  # a cron run always ends, whatever its peers do
    options = SyncOptions(
        timeout=timeout,
        max_duration=max_duration,
        max_events=max_events,
        use_proxy_env=use_proxy_env,
        max_future_skew=max_future_skew,
        jobs=jobs,
        max_backoff=max_backoff,
        block_after=block_after,
        dry_run=dry_run,
    )
    if dry_run and metrics_file:
        # A rehearsal's exit code and duration are not a run's: monitoring must never read them as one.
        raise click.UsageError("--dry-run and --metrics-file exclude each other")
    if not once:
        if as_json or peer_names or max_events or ignore_backoff or metrics_file or dry_run:
            raise click.UsageError(
                "--json, --peer, --max-events, --ignore-backoff, --metrics-file and --dry-run need --once"
            )
        _run_daemon(obj, cortex_dir, manifest, options, wait_seconds)
        return
    from noemafed.commands.sync import SyncRun, sync_once

    log = obj.log(progress=obj.env.stderr_isatty)
    run = SyncRun(cortex_dir, manifest, options, obj.env.environ, log, wait_seconds, obj.clock())
    report = sync_once(run, peer_names, ignore_backoff)
    if log_format == "json":
        _log_results(log, report)
    if metrics_file is not None:
        from noemafed.cli.status import write_metrics
        from noemafed.commands.status import status

        write_metrics(metrics_file, status(cortex_dir, obj.env.environ, max_age, run.clock), report)
    # Under cron (no terminal) or --quiet, a clean run prints nothing: cron mails only what went wrong. It then
    # never loads the renderer either (start-up time: docs/performance.md).
    if as_json:
        from noemafed.render import sync as render

        obj.emit(render.json(report))
    elif (
        report.exit_code != ExitCode.OK
        or report.dry_run
        or (not obj.quiet and (obj.verbosity > 0 or obj.env.stdout_isatty))
    ):
        from noemafed.render import sync as render

        obj.emit(render.human(report))
    if report.exit_code != ExitCode.OK:
        sys.exit(int(report.exit_code))


def _log_results(log: Log, report: SyncReport) -> None:
    """Each peer's outcome as a log event too, so a JSON log pipeline sees failures without reading stdout."""
    from noemafed.federation.logfields import RESULT_LOG
    from noemafed.text.gotext import go_quote

    for result in report.results:
        line = RESULT_LOG.format(
            name=go_quote(result.peer),
            status="ok" if result.ok else "failed",
            reason=result.reason or "",
            applied=result.events_applied,
            cursor=result.cursor_after or "(none)",
        )
        (log.info if result.ok else log.warning)(line)


def _run_daemon(
    obj: CliContext, cortex_dir: Path, manifest: Manifest, options: SyncOptions, wait_seconds: float
) -> None:
    """SIGTERM and SIGINT stop the loops; an interrupted poll is not recorded as a failure."""
    import signal

    from noemafed.commands.sync import SyncRun, sync_daemon

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run = SyncRun(
        cortex_dir, manifest, options, obj.env.environ, obj.log(progress=True), wait_seconds, obj.clock()
    )
    sync_daemon(run, stop)
