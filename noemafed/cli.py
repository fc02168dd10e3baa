"""The command line: the only module that imports click, and the one place errors become exit codes."""

from __future__ import annotations

import atexit
import contextlib
import errno
import gc
import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO, TypeVar

import click

from noemafed import __version__
from noemafed.errors import (
    ArgumentError,
    ConfirmationRequiredError,
    ExitCode,
    HostError,
    InternalError,
    NoemafedError,
)

if TYPE_CHECKING:
    from noemafed.cortex.manifest import Manifest
    from noemafed.federation.syncer import SyncOptions
    from noemafed.logs import Log
    from noemafed.reports.config import RemovePlan, ResetPlan, SkipPlan
    from noemafed.reports.status import StatusReport
    from noemafed.reports.sync import SyncReport
    from noemafed.text.clock import Clock

    Plan = TypeVar("Plan", ResetPlan, RemovePlan, SkipPlan)

# `sync --once` without --max-duration: long enough for a backlog of several hundred thousand events, short
# enough that a hostile or wedged peer cannot keep a cron run (and so every later one) alive for ever.
ONCE_MAX_DURATION = 600.0

# What the host refused (docs/exit-codes.md: 73, 74, 77); never a traceback.
PERMISSION_DENIED = "permission denied{where}"
PERMISSION_HINT = (
    "check the owner and mode of the file and its folder; the command runs as the user who started it"
)
CANNOT_CREATE = "cannot create{where}: {reason}"
CREATE_HINT = "choose a folder this user can write to (not a read-only file system)"
IO_FAILED = "i/o error{where}: {reason}"
IO_HINT = "check the disk: free space, quota, errors in the system log"
DATABASE_DENIED = "permission denied by the database: {error}"
DATABASE_FAILED = "database error: {error}"
STDOUT_ERROR = "writing standard output: {error}"
STDOUT_FAILED = "Error: " + STDOUT_ERROR + "\n"

SERVE_MODE_LOG = "[serve] federation mode: {mode}"
SERVE_LISTENING_LOG = "[serve] listening on {scheme}://{host}:{port}/mcp (access: {access})"
SERVE_STOPPED_LOG = "[serve] stopped"


def _isatty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except ValueError:  # a closed stream
        return False


class Environment:
    """The process's streams and variables, injected (as httpie's) so tests can play a terminal or cron."""

    def __init__(
        self,
        *,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        stdin_isatty: bool | None = None,
        stdout_isatty: bool | None = None,
        stderr_isatty: bool | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.stdin = sys.stdin if stdin is None else stdin
        self.stdout = sys.stdout if stdout is None else stdout
        self.stderr = sys.stderr if stderr is None else stderr
        self.stdin_isatty = _isatty(self.stdin) if stdin_isatty is None else stdin_isatty
        self.stdout_isatty = _isatty(self.stdout) if stdout_isatty is None else stdout_isatty
        self.stderr_isatty = _isatty(self.stderr) if stderr_isatty is None else stderr_isatty
        self.environ = os.environ if environ is None else environ


class CliContext:
    """What the group passes down: the environment, the global options, and what an error must be shown as."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.cortex_option: str | None = None
        self.quiet = False
        self.verbosity = 0
        self.traceback = False
        self.json_schema: int | None = None  # set by a --json command: its errors become JSON documents too
        self.log_format = "text"  # sync --log-format: text (noema's lines) or json (one object per line)

    def cortex_dir(self) -> Path:
        """The --cortex value resolved lazily, so `init` needs none."""
        from noemafed.cortex.open import resolve_cortex

        return resolve_cortex(self.cortex_option, self.env.environ, Path.cwd())

    def emit(self, text: str) -> None:
        try:
            click.echo(text, file=self.env.stdout, nl=False)
            self.env.stdout.flush()  # a full disk or a closed pipe is reported here, by the command, not at exit
        except OSError as exc:
            message = STDOUT_ERROR.format(error=exc.strerror or exc)
            raise HostError(message, ExitCode.IO_ERROR, IO_HINT) from exc

    def log(self, *, progress: bool) -> Log:
        """The one logger setup: warnings always reach stderr (cron mails them); info with -v or `progress`."""
        import time

        from noemafed.logs import Level, Log

        # progress: info is wanted by default (a terminal, the daemon, serve); --quiet is cron's rule everywhere.
        if self.quiet:
            threshold = Level.WARNING
        elif self.verbosity >= 2:
            threshold = Level.DEBUG
        elif self.verbosity == 1 or progress:
            threshold = Level.INFO
        else:
            threshold = Level.WARNING
        lock = threading.Lock()  # peers log from their own threads; keep each message whole
        stderr = self.env.stderr
        as_json = self.log_format == "json"

        def sink(level: Level, message: str) -> None:
            if level < threshold:
                return
            if as_json:  # one object per line, a multi-line message included
                import json

                from noemafed.federation.logfields import log_record
                from noemafed.text.gotext import rfc3339_now

                line = json.dumps(log_record(rfc3339_now(), level.name.lower(), message), ensure_ascii=False)
            else:
                line = f"{time.strftime('%Y/%m/%d %H:%M:%S')} {message}"  # Go's log package, as noema
            with lock:
                click.echo(line, file=stderr)

        return Log(sink)

    def clock(self) -> Clock:
        """The real clock, or the fixed "now" of the NOEMAFED_TEST_NOW test hook (docs/testing.md)."""
        from noemafed.text.clock import clock_from

        try:
            return clock_from(self.env.environ)
        except ValueError as exc:
            raise ArgumentError(str(exc), "unset it: it is a test hook") from None

    def fail(self, exc: NoemafedError) -> NoReturn:
        """The single place an error is shown: on stderr, and as a JSON document too for a --json command."""
        click.echo(f"Error: {exc.message}", file=self.env.stderr)
        if exc.hint:
            click.echo(f"Hint: {exc.hint}", file=self.env.stderr)
        if self.json_schema is not None:
            from noemafed.render import error_json
            from noemafed.reports import ErrorReport

            with contextlib.suppress(HostError):  # stdout itself may be what failed: stderr said it already
                self.emit(error_json(ErrorReport.of(exc, self.json_schema)))
        sys.exit(int(exc.exit_code))


# Commands that take no cortex, so no `--cortex` after them either.
_NO_CORTEX = frozenset({"init", "completion"})
CORTEX_HELP = "Cortex directory or registered name (else NOEMA_CORTEX, the noema registry default, the cwd)."


def _cortex_after_command(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """`noemafed status --cortex X` as `noemafed --cortex X status`; given in both places, the later one wins."""
    obj = ctx.find_object(CliContext)
    if value is not None and obj is not None:
        obj.cortex_option = value


class CortexGroup(click.Group):
    """A group whose commands also accept `--cortex` after their name, where operators tend to type it."""

    group_class = type  # subgroups (`key`) are CortexGroups too

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not isinstance(cmd, click.Group) and (name or cmd.name) not in _NO_CORTEX:
            cmd.params.append(
                click.Option(
                    ["--cortex", "cortex_after_command"],
                    metavar="PATH|NAME",
                    expose_value=False,
                    callback=_cortex_after_command,
                    help=CORTEX_HELP,
                )
            )
        super().add_command(cmd, name)


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """noemafed's version and build commit, and the Python and SQLite it runs on: what a bug report needs."""
    if not value or ctx.resilient_parsing:
        return
    import sqlite3

    from noemafed import __commit__
    from noemafed.render import config as render
    from noemafed.reports.config import VersionReport
    from noemafed.signing import verifier

    python = "{}.{}.{}".format(*sys.version_info[:3])  # platform.python_version() without importing platform
    report = VersionReport(__version__, __commit__, python, sqlite3.sqlite_version, verifier.current().label)
    obj = ctx.find_object(CliContext)
    if obj is None:
        click.echo(render.human(report), nl=False)
    else:
        obj.emit(render.human(report))
    ctx.exit()


def _complete_peers(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Peer names from the cortex the command line names so far; nothing at all if that fails."""
    from noemafed.cortex.manifest import read_manifest
    from noemafed.cortex.open import resolve_cortex

    obj = ctx.find_object(CliContext)
    environ = obj.env.environ if obj else os.environ
    option = (obj.cortex_option if obj else None) or ctx.find_root().params.get("cortex_option")
    try:
        names = [peer.name for peer in read_manifest(resolve_cortex(option, environ, Path.cwd())).peers]
    except Exception:  # a completion must never fail in the operator's shell
        return []
    return [name for name in names if name.startswith(incomplete)]


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A Go duration (90s, 5m, 1h30m) as seconds; it must be positive."""
    if value is None:
        return None
    from noemafed.text.durations import parse_go_duration

    seconds = parse_go_duration(value)
    if seconds is None or seconds <= 0:
        raise click.BadParameter(f"{value!r} is not a positive duration such as 90s, 30m or 1h")
    return seconds


# How long a peer may go without a success before its verdict is `stale` (status, status --check, metrics).
MAX_AGE_DEFAULT = "1h"
METRICS_HELP = "Also write Prometheus metrics to PATH, atomically (for node_exporter's textfile collector)."


def _complete_from(choices: tuple[str, ...]) -> Callable[[click.Context, click.Parameter, str], list[str]]:
    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
        return [choice for choice in choices if choice.startswith(incomplete)]

    return complete


@click.group(cls=CortexGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show noemafed's version and build commit, Python's and SQLite's, and exit.",
)
@click.option(
    "--cortex",
    "cortex_option",
    metavar="PATH|NAME",
    help=CORTEX_HELP + " Also accepted after the command.",
)
@click.option("--quiet", "-q", is_flag=True, help="Log only warnings and errors, as under cron.")
@click.option(
    "--verbose",
    "-v",
    count=True,
    help="Log progress on stderr even when it is not a terminal; -vv for detail.",
)
@click.option(
    "--traceback", is_flag=True, help="Show the Python traceback of an internal error (for bug reports)."
)
@click.pass_obj
def cli(obj: CliContext, cortex_option: str | None, quiet: bool, verbose: int, traceback: bool) -> None:
    """noema federation as one file: keep a cortex in step with its peers.

    Example: noemafed --cortex ~/cortexes/research status
    """
    if quiet and verbose:
        raise click.UsageError("--quiet and --verbose exclude each other")
    obj.cortex_option, obj.quiet, obj.verbosity, obj.traceback = cortex_option, quiet, verbose, traceback


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", help="Display name of the cortex (default: the directory name).")
@click.pass_obj
def init(obj: CliContext, directory: Path, name: str | None) -> None:
    """Create a new, empty cortex that noema can open.

    Example: noemafed init ~/cortexes/research --name research
    """
    from noemafed.commands.init import init
    from noemafed.render import config as render

    obj.emit(render.human(init(directory, name)))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (docs/status.schema.json).")
@click.option(
    "--max-age",
    callback=_duration,
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
@click.option(
    "--metrics-file", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH", help=METRICS_HELP
)
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
        _write_metrics(metrics_file, report, None)
    obj.emit(render.json(report) if as_json else render.human(report))


def _write_metrics(path: Path, status: StatusReport, run: SyncReport | None) -> None:
    """The metrics file of a status (the last run as it recorded itself) or of the run that just ended."""
    from noemafed.commands import metrics
    from noemafed.render import status as render

    report = metrics.from_status(status) if run is None else metrics.after_sync(status, run)
    metrics.write_file(path, render.metrics(report))


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
            _write_metrics(metrics_file, status_report, None)
    except NoemafedError as exc:
        report = CheckReport(CheckState.UNKNOWN, error=exc.message)
    except (OSError, sqlite3.Error) as exc:
        report = CheckReport(CheckState.UNKNOWN, error=host_error(exc).message)
    except Exception as exc:  # a bug: still the plugin's line, so the monitoring shows it
        report = CheckReport(CheckState.UNKNOWN, error=InternalError(exc).message)
    obj.emit(render.check_line(report))
    sys.exit(int(report.state))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (docs/peers.schema.json).")
@click.pass_obj
def peers(obj: CliContext, as_json: bool) -> None:
    """List the peers configured in cortex.md: endpoint, mode and the cortex id each one is pinned to.

    Example: noemafed peers --json | jq -r '.peers[] | select(.mode == "paused") | .name'
    """
    from noemafed import reports
    from noemafed.commands.peers import peers
    from noemafed.render import config as render

    if as_json:
        obj.json_schema = reports.PEERS_SCHEMA_VERSION
    report = peers(obj.cortex_dir())
    obj.emit(render.json(report) if as_json else render.human(report))


@cli.command("add-peer")
@click.argument("name")
@click.argument("endpoint")
@click.option(
    "--ca",
    type=click.Path(),  # any path, so the command's own check says what is wrong with it
    metavar="FILE",
    help="PEM file of the CA that signed the peer's certificate (stored as an absolute path).",
)
@click.option("--pubkey", metavar="KEY", help="Hard-pin the peer's signing key (ed25519:<base64>).")
@click.pass_obj
def add_peer(obj: CliContext, name: str, endpoint: str, ca: str | None, pubkey: str | None) -> None:
    """Add a peer (a local label and its base URL; noemafed appends /mcp) to cortex.md.

    Everything is checked before cortex.md is written: the label, the URL (http:// or https://, a host, no
    user or password, no query), the CA file and the key.

    Example: noemafed add-peer laptop https://laptop.lan:3000 --ca ~/tls/laptop-ca.pem
    """
    from noemafed.commands.peers import add_peer
    from noemafed.render import config as render

    obj.emit(render.human(add_peer(obj.cortex_dir, name, endpoint, ca or "", pubkey or "")))


@cli.command("set-peer")
@click.argument("name", shell_complete=_complete_peers)
@click.option("--endpoint", metavar="URL", help="New base URL (noemafed appends /mcp).")
@click.option(
    "--ca",
    type=click.Path(),  # any path, so the command's own check says what is wrong with it
    metavar="FILE",
    help="PEM file of the CA that signed the peer's certificate (stored as an absolute path).",
)
@click.option("--no-ca", is_flag=True, help="Trust only the system's CAs for this peer.")
@click.option("--pubkey", metavar="KEY", help="Hard-pin the peer's signing key (ed25519:<base64>).")
@click.option("--no-pubkey", is_flag=True, help="Drop the hard pin (the key pinned on first contact stays).")
@click.option("--rename", metavar="NEW", help="New label; the peer's cursor, pins and health move with it.")
@click.pass_obj
def set_peer(
    obj: CliContext,
    name: str,
    endpoint: str | None,
    ca: str | None,
    no_ca: bool,
    pubkey: str | None,
    no_pubkey: bool,
    rename: str | None,
) -> None:
    """Change a peer's endpoint, CA file, signing-key pin or label in cortex.md.

    Each value is checked as add-peer checks it; a rename moves the peer's federation state to the new
    label in the same act. Nothing is written when nothing changes.

    Example: noemafed set-peer laptop --endpoint https://laptop.vpn:3000 --no-ca
    """
    from noemafed.commands.peers import PeerChanges, set_peer
    from noemafed.render import config as render

    if ca is not None and no_ca:
        raise ArgumentError("--ca and --no-ca exclude each other", "pass one of them")
    if pubkey is not None and no_pubkey:
        raise ArgumentError("--pubkey and --no-pubkey exclude each other", "pass one of them")
    changes = PeerChanges(
        endpoint=endpoint,
        ca="" if no_ca else ca,
        pubkey="" if no_pubkey else pubkey,
        rename=rename,
    )
    obj.emit(render.human(set_peer(obj.cortex_dir, name, changes)))


def _confirmed(stdin: TextIO) -> bool:
    """One whitespace-delimited token from stdin; only y, Y and yes proceed (EOF does not)."""
    tokens = stdin.readline().split()
    return bool(tokens) and tokens[0] in ("y", "Y", "yes")


NO_TERMINAL = "{command} asks before it changes anything, and stdin is not a terminal"
NO_TERMINAL_HINT = "pass --yes to {action} without asking"


def _confirmation(obj: CliContext, yes: bool, command: str, action: str) -> Callable[[Plan], bool]:
    """Show the plan and ask on the terminal; without one, refuse (exit 2) rather than read a pipe or cron's
    /dev/null as the answer."""
    from noemafed.render import config as render

    def confirm(plan: Plan) -> bool:
        if not yes and not obj.env.stdin_isatty:
            raise ConfirmationRequiredError(
                NO_TERMINAL.format(command=command), NO_TERMINAL_HINT.format(action=action)
            )
        obj.emit(render.human(plan))
        if yes:
            return True
        obj.emit(render.RESET_PROMPT)
        obj.env.stdout.flush()
        return _confirmed(obj.env.stdin)

    return confirm


@cli.command("reset-peer")
@click.argument("names", nargs=-1, required=True, shell_complete=_complete_peers)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed without a terminal).")
@click.pass_obj
def reset_peer(obj: CliContext, names: tuple[str, ...], yes: bool) -> None:
    """Forget a peer's pinned identity, cursors and health so the next sync re-pins it.

    Example: noemafed reset-peer laptop --yes
    """
    from noemafed.commands.reset import reset_peers
    from noemafed.render import config as render

    confirm = _confirmation(obj, yes, "reset-peer", "reset")
    obj.emit(render.human(reset_peers(obj.cortex_dir(), names, confirm)))


@cli.command("retry-now")
@click.argument("names", nargs=-1, required=True, shell_complete=_complete_peers)
@click.pass_obj
def retry_now(obj: CliContext, names: tuple[str, ...]) -> None:
    """End peers' backoff: the next `sync --once` contacts them at once (their health stays as it is).

    A peer blocked on a poison event is contacted too; it stays blocked until the event applies or is skipped.

    Example: noemafed retry-now laptop
    """
    from noemafed.commands.retry import retry_now
    from noemafed.render import config as render

    obj.emit(render.human(retry_now(obj.cortex_dir(), names)))


@cli.command("remove-peer")
@click.argument("names", nargs=-1, required=True, shell_complete=_complete_peers)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed without a terminal).")
@click.option(
    "--keep-state",
    is_flag=True,
    help="Keep the peers' cursors, pins and health (a peer re-added under the name resumes from them).",
)
@click.pass_obj
def remove_peer(obj: CliContext, names: tuple[str, ...], yes: bool, keep_state: bool) -> None:
    """Remove peers from cortex.md and, in the same act, their federation state.

    The state is each peer's cursor, usage cursor, pinned cortex id and signing key, health and rank, and
    the pinned id's vector-clock bucket, as reset-peer clears them.

    Example: noemafed remove-peer old-laptop --yes
    """
    from noemafed.commands.peers import remove_peers
    from noemafed.render import config as render

    confirm = _confirmation(obj, yes, "remove-peer", "remove")
    obj.emit(render.human(remove_peers(obj.cortex_dir, names, keep_state, confirm)))


@cli.command("skip-event")
@click.argument("peer", shell_complete=_complete_peers)
@click.argument("event_id", metavar="EVENT_ID")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed without a terminal).")
@click.option(
    "--note", default="", metavar="TEXT", help="Why: kept with the skip for good (noemafed status)."
)
@click.pass_obj
def skip_event(obj: CliContext, peer: str, event_id: str, yes: bool, note: str) -> None:
    """Move a blocked peer past the event its replay keeps failing on: stored as received, not applied.

    Only the event `noemafed status` shows the peer blocked on; it is fetched from the peer again, the cursor
    moves past it, and the skip (event, reason, note, time, user) is listed by `status` for good. Never
    automatic (docs/operations.md, "A blocked peer").

    Example: noemafed skip-event laptop 01JRZ5Q4XG7N3C8W2M6V1K9T0B --yes --note 'unknown action from v0.30'
    """
    from noemafed.commands.skip import SkipRequest, skip_event
    from noemafed.render import config as render

    confirm = _confirmation(obj, yes, "skip-event", "skip")
    request = SkipRequest(peer, event_id, note, obj.clock())
    log = obj.log(progress=False)
    obj.emit(render.human(skip_event(obj.cortex_dir(), request, obj.env.environ, confirm, log)))


@cli.command("set-mode")
@click.argument(
    "mode", metavar="sync|publish|subscribe", shell_complete=_complete_from(("sync", "publish", "subscribe"))
)
@click.pass_obj
def set_mode(obj: CliContext, mode: str) -> None:
    """Set the cortex-wide federation mode: sync (pull and serve), publish (serve only) or subscribe (pull
    only).

    Example: noemafed set-mode publish
    """
    from noemafed.commands.modes import set_mode
    from noemafed.render import config as render

    obj.emit(render.human(set_mode(mode, obj.cortex_dir)))


@cli.command("set-interval")
@click.argument("duration")
@click.pass_obj
def set_interval(obj: CliContext, duration: str) -> None:
    """Set how often the daemon polls each peer, as a Go duration (30s, 5m, 1h30m; the default is 30s).

    Example: noemafed set-interval 5m
    """
    from noemafed.commands.settings import set_interval
    from noemafed.render import config as render

    obj.emit(render.human(set_interval(obj.cortex_dir, duration)))


@cli.command("set-verify")
@click.argument("mode", metavar="off|warn|enforce", shell_complete=_complete_from(("off", "warn", "enforce")))
@click.pass_obj
def set_verify(obj: CliContext, mode: str) -> None:
    """Set how replay checks event signatures: off (the default), warn (log a bad or missing signature and
    apply the event anyway) or enforce (refuse the event).

    Example: noemafed set-verify enforce
    """
    from noemafed.commands.settings import set_verify
    from noemafed.render import config as render

    obj.emit(render.human(set_verify(obj.cortex_dir, mode)))


def _peer_mode_command(obj: CliContext, name: str, paused: bool) -> None:
    from noemafed.commands.modes import set_peer_mode
    from noemafed.render import config as render

    obj.emit(render.human(set_peer_mode(obj.cortex_dir(), name, paused)))


@cli.command("pause-peer")
@click.argument("name", shell_complete=_complete_peers)
@click.pass_obj
def pause_peer(obj: CliContext, name: str) -> None:
    """Stop syncing with a peer without forgetting its cursor or pin.

    Example: noemafed pause-peer laptop
    """
    _peer_mode_command(obj, name, True)


@cli.command("resume-peer")
@click.argument("name", shell_complete=_complete_peers)
@click.pass_obj
def resume_peer(obj: CliContext, name: str) -> None:
    """Resume syncing with a paused peer.

    Example: noemafed resume-peer laptop
    """
    _peer_mode_command(obj, name, False)


@cli.group()
def key() -> None:
    """Inspect the shared bearer key without revealing it.

    Example: noemafed key fingerprint
    """


@key.command("fingerprint")
@click.pass_obj
def key_fingerprint(obj: CliContext) -> None:
    """Show where the shared key comes from and its SHA-256 fingerprint.

    Example: noemafed key fingerprint
    """
    from noemafed.commands.key import key_fingerprint
    from noemafed.render import config as render

    obj.emit(render.human(key_fingerprint(obj.cortex_dir(), obj.env.environ)))


@cli.command()
@click.option(
    "--force", is_flag=True, help="Replace an existing signing key (its seed file and cortex.md entries)."
)
@click.pass_obj
def keygen(obj: CliContext, force: bool) -> None:
    """Create this cortex's Ed25519 event-signing key, as `noema keygen` does.

    The seed goes to signing.private_key_file (default noema-signing.key in the cortex folder), mode 0600;
    cortex.md gets signing.public_key and signing.private_key_file. Prints the public key and its
    fingerprint, never the seed. An existing key is kept unless --force is given.

    Example: noemafed keygen && noemafed set-verify warn
    """
    from noemafed.commands.keygen import keygen
    from noemafed.render import config as render

    obj.emit(render.human(keygen(obj.cortex_dir, force)))


@cli.command()
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


# Where noemafed's completion scripts differ from click's: they run noemafed the way `completion` was run (a
# pyz under its Python, which no `$+commands` or `$1` would find behind an alias) and complete every name it
# goes by. Each edit must apply, so a click upgrade that moves a line fails the completion tests, not a shell.
_COMPLETION_EDITS: dict[str, tuple[tuple[str, str], ...]] = {
    "bash": (
        ("%(complete_var)s=bash_complete $1)", "%(complete_var)s=bash_complete %(run)s)"),
        ("-F %(complete_func)s %(prog_name)s", "-F %(complete_func)s %(names)s"),
    ),
    "zsh": (
        ("#compdef %(prog_name)s", "#compdef %(names)s"),
        ("(( ! $+commands[%(prog_name)s] )) && return 1\n", ""),
        ("%(complete_var)s=zsh_complete %(prog_name)s)", "%(complete_var)s=zsh_complete %(run)s)"),
        ("compdef %(complete_func)s %(prog_name)s", "compdef %(complete_func)s %(names)s"),
    ),
    "fish": (
        ("COMP_CWORD=(commandline -t) %(prog_name)s)", "COMP_CWORD=(commandline -t) %(run)s)"),
        ("--command %(prog_name)s", "%(fish_commands)s"),
    ),
}


def _invocation(argv0: str) -> tuple[list[str], list[str]]:
    """How this process was started (the argv that runs noemafed again) and the command names to complete."""
    import zipfile

    if argv0 and os.path.isfile(argv0) and zipfile.is_zipfile(argv0):
        path = os.path.abspath(argv0)  # the pyz, run as `python3 noemafed.pyz` or as an executable
        return [sys.executable, path], list(dict.fromkeys(["noemafed", os.path.basename(path)]))
    if os.path.basename(argv0) == "__main__.py":
        return [sys.executable, "-m", "noemafed"], ["noemafed"]
    if argv0 and os.path.isfile(argv0):  # a console script: this very one, even if it is not on PATH
        path = os.path.abspath(argv0)
        return [path], list(dict.fromkeys(["noemafed", os.path.basename(path)]))
    return ["noemafed"], ["noemafed"]


def completion_script(shell: str, argv0: str) -> str:
    """click's completion script for `shell`, calling noemafed as `argv0` was called."""
    import shlex

    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None or shell not in _COMPLETION_EDITS:
        raise click.UsageError(f"no completion for {shell}")
    template = cls.source_template
    for old, new in _COMPLETION_EDITS[shell]:
        if old not in template:
            raise RuntimeError(f"click's {shell} completion script changed: {old!r} is gone")
        template = template.replace(old, new, 1)
    run, names = _invocation(argv0)
    variables = cls(cli, {}, "noemafed", "_NOEMAFED_COMPLETE").source_vars()
    return template % {
        **variables,
        "run": shlex.join(run),
        "names": " ".join(shlex.quote(name) for name in names),
        "fish_commands": " ".join(f"--command {shlex.quote(name)}" for name in names),
    }


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_obj
def completion(obj: CliContext, shell: str) -> None:
    """Print the shell completion script for commands, options and peer names.

    The script runs noemafed the way this command was run, so generate it the way you run noemafed:
    `noemafed completion bash` for a `noemafed` on PATH, `python3 /opt/noemafed.pyz completion bash` with
    `alias noemafed='python3 /opt/noemafed.pyz'` (README.md, "Shell completion").

    Example: noemafed completion bash > ~/.local/share/bash-completion/completions/noemafed
    """
    obj.emit(completion_script(shell, sys.argv[0] if sys.argv else ""))


@cli.command()
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
    callback=_duration,
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
@click.option(
    "--metrics-file", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH", help=METRICS_HELP
)
@click.option(
    "--max-age",
    callback=_duration,
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
        from noemafed.commands.status import status

        _write_metrics(metrics_file, status(cortex_dir, obj.env.environ, max_age, run.clock), report)
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


@cli.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on; also the allowed Host."
)
@click.option("--port", type=click.IntRange(0, 65535), default=3000, show_default=True)
@click.option(
    "--tls-cert", type=click.Path(dir_okay=False), help="PEM certificate (else access.tls_cert_path)."
)
@click.option(
    "--tls-key", type=click.Path(dir_okay=False), help="PEM private key (else access.tls_key_path)."
)
@click.option(
    "--allow-host", "allow_hosts", multiple=True, metavar="NAME", help="Another Host name peers may dial."
)
@click.option(
    "--workers", type=click.IntRange(1, 256), default=16, show_default=True, help="Concurrent requests."
)
@click.option(
    "--request-timeout",
    type=click.FloatRange(0.1, 3600),
    default=15.0,
    show_default=True,
    metavar="S",
    help="Seconds for a whole request (TLS handshake, headers, body); as long again to write the answer.",
)
@click.option(
    "--max-per-address",
    type=click.IntRange(1, 10_000),
    default=32,
    show_default=True,
    metavar="N",
    help="Connections open at once from one address (an IPv6 /64 is one); more are refused at once.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1, 100_000),
    default=256,
    show_default=True,
    metavar="N",
    help="Connections open at once in all (at least --workers); more are refused at once.",
)
@click.option(
    "--insecure-allow-expired",
    is_flag=True,
    help="Start even with an expired or not yet valid TLS certificate (briefly, to rotate it in place).",
)
@click.pass_obj
def serve(
    obj: CliContext,
    host: str,
    port: int,
    tls_cert: str | None,
    tls_key: str | None,
    allow_hosts: tuple[str, ...],
    workers: int,
    request_timeout: float,
    max_per_address: int,
    max_connections: int,
    insecure_allow_expired: bool,
) -> None:
    """Serve this cortex's event log to peers (MCP at /mcp and /mcp/federation) until SIGTERM.

    A keyed cortex (NOEMA_MCP_KEY or access.shared_key_file) serves HTTPS only.

    Example: noemafed serve --host 10.0.0.5 --port 3000 --tls-cert tls/cert.pem --tls-key tls/key.pem
    """
    import signal
    import threading

    from noemafed.cortex.access import load_access_key
    from noemafed.cortex.manifest import read_manifest
    from noemafed.mcp.http import ServeConfig, make_server

    gc.enable()  # run() turned it off for the start-up; a server runs for days
    if max_connections < workers:
        raise click.BadParameter(
            f"{max_connections} is fewer than --workers ({workers}).", param_hint="'--max-connections'"
        )
    cortex_dir = obj.cortex_dir()
    manifest = read_manifest(cortex_dir)
    access = load_access_key(cortex_dir, manifest.access, os.environ)

    def in_cortex(path: str) -> str:
        return path if not path or os.path.isabs(path) else str(cortex_dir / path)

    config = ServeConfig(
        cortex_dir=cortex_dir,
        host=host,
        port=port,
        tls_cert=tls_cert or in_cortex(manifest.access.tls_cert_path),
        tls_key=tls_key or in_cortex(manifest.access.tls_key_path),
        access=access,
        extra_hosts=allow_hosts,
        workers=workers,
        queue=max_connections - workers,
        max_per_address=max_per_address,
        timeout=request_timeout,
        allow_expired=insecure_allow_expired,
    )
    log = obj.log(progress=True)
    server = make_server(config, log)
    scheme = "https" if config.tls_cert else "http"
    bound_port = server.server_address[1]
    log.info(SERVE_MODE_LOG.format(mode=manifest.federation_mode))
    log.info(
        SERVE_LISTENING_LOG.format(
            scheme=scheme, host=host, port=bound_port, access="keyed" if access.keyed else "open"
        )
    )

    def on_signal(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    log.info(SERVE_STOPPED_LOG)


def run() -> NoReturn:
    """The process entry point (console script, `python -m noemafed`, the pyz): main(), then a quick exit.

    By the time main() returns, every command has committed what it wrote, closed its files and released its
    lock (the kernel drops a flock with the process anyway), so the interpreter's teardown (freeing the objects
    of some 300 modules: 10-20 ms, about a tenth of a cron run) buys nothing, and `os._exit` skips it after
    flushing stdout and stderr. atexit handlers still run, and under `python -i` or while a non-daemon thread is
    alive the normal exit is taken instead. Tests call main() in-process.

    Python's cyclic garbage collector is off while the modules load and the command runs: a start-up makes
    some 100,000 objects and no garbage, and the collections they trigger cost a few milliseconds of every
    `status --check` (docs/performance.md). `sync` and `serve`, whose work is long and large, turn it back on.
    """
    gc.disable()
    try:
        main()
        code: object = None
    except SystemExit as exc:
        code = exc.code
    if sys.flags.inspect or os.environ.get("PYTHONINSPECT") or _live_non_daemon_threads():
        raise SystemExit(code)  # `python -i` wants the interpreter afterwards; threads want to be waited for
    status = _exit_status(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError) as exc:
            # stdout on a full disk (or a closed pipe): said once, never a traceback; Python would exit 120.
            if status == 0 and stream is sys.stdout:
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.write(STDOUT_FAILED.format(error=getattr(exc, "strerror", None) or exc))
                    sys.stderr.flush()
            status = status or int(ExitCode.IO_ERROR)
    os._exit(status)


def _live_non_daemon_threads() -> bool:
    main_thread = threading.main_thread()
    return any(t is not main_thread and t.is_alive() and not t.daemon for t in threading.enumerate())


def _exit_status(code: object) -> int:
    """SystemExit's code as Python turns it into a status: None is 0, an int is itself, anything else is
    printed to stderr and is 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def main(argv: list[str] | None = None, env: Environment | None = None) -> None:
    """Run the CLI and exit with a documented code (docs/exit-codes.md)."""
    obj = CliContext(env or Environment())
    try:
        cli.main(args=argv, prog_name="noemafed", standalone_mode=False, obj=obj)
    except NoemafedError as exc:
        obj.fail(exc)
    except click.exceptions.Abort:
        click.echo("Aborted!", file=obj.env.stderr)
        sys.exit(int(ExitCode.ERROR))
    except click.ClickException as exc:
        exc.show(file=obj.env.stderr)
        sys.exit(int(ExitCode.USAGE))
    except (OSError, sqlite3.Error) as exc:
        if obj.traceback:
            raise
        obj.fail(host_error(exc))
    except Exception as exc:
        if obj.traceback:
            raise
        obj.fail(InternalError(exc))
    sys.exit(int(ExitCode.OK))


def host_error(exc: OSError | sqlite3.Error) -> HostError:
    """What the host refused, with the exit code of its kind: 77 permission, 73 cannot create, 74 I/O."""
    if isinstance(exc, sqlite3.Error):
        text = str(exc)
        if "readonly" in text or "unable to open" in text:
            return HostError(DATABASE_DENIED.format(error=text), ExitCode.NO_PERMISSION, PERMISSION_HINT)
        return HostError(DATABASE_FAILED.format(error=text), ExitCode.IO_ERROR, IO_HINT)
    where = f": {exc.filename}" if exc.filename else ""
    reason = (exc.strerror or str(exc)).lower()
    if exc.errno in (errno.EACCES, errno.EPERM):
        return HostError(PERMISSION_DENIED.format(where=where), ExitCode.NO_PERMISSION, PERMISSION_HINT)
    if exc.errno in (errno.EROFS, errno.EEXIST, errno.ENOENT, errno.ENOTDIR):
        return HostError(CANNOT_CREATE.format(reason=reason, where=where), ExitCode.CANT_CREATE, CREATE_HINT)
    return HostError(IO_FAILED.format(reason=reason, where=where), ExitCode.IO_ERROR, IO_HINT)
