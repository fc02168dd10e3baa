"""The group, the process's entry points (`run`, `main`: where errors become exit codes) and what every command
shares: the environment, the context, logging, option callbacks."""

from __future__ import annotations

import atexit
import contextlib
import errno
import gc
import importlib
import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

import click

from noemafed import __version__
from noemafed.errors import ArgumentError, ExitCode, HostError, InternalError, NoemafedError

if TYPE_CHECKING:
    from noemafed.logs import Log
    from noemafed.text.clock import Clock


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


EXIT_READER_GONE = 141  # 128 + SIGPIPE: how a shell reports a process its pipe's reader left (reader_gone)


STDOUT_FAILED = "Error: " + STDOUT_ERROR + "\n"


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
        if self.env.stdout is None:  # closed before we started (`>&-`): nowhere to write, as under >/dev/null
            return
        try:
            click.echo(text, file=self.env.stdout, nl=False)
            self.env.stdout.flush()  # a full disk is reported here, by the command, not at exit
        except BrokenPipeError:
            reader_gone()
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
                write_line(stderr, line)

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
        write_line(self.env.stderr, f"Error: {exc.message}")
        if exc.hint:
            write_line(self.env.stderr, f"Hint: {exc.hint}")
        if self.json_schema is not None:
            from noemafed.render import error_json
            from noemafed.reports.error import ErrorReport

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


HELP_OPTION_NAMES = ["-h", "--help"]


def _show_help(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(ctx.get_help(), color=ctx.color)
        ctx.exit()


def _help_option(command: Command | CortexGroup, ctx: click.Context) -> click.Option | None:
    """`-h, --help` as click makes it, but with its text as is: click words it through gettext, whose first call
    imports `locale` (0.6 ms of every start) for a text nothing here translates. Made once per command: click
    orders the eager options by identity."""
    names = command.get_help_option_names(ctx)
    if not names or not command.add_help_option:
        return None
    if command.help_option is None:
        command.help_option = click.Option(
            names,
            is_flag=True,
            is_eager=True,
            expose_value=False,
            callback=_show_help,
            help="Show this message and exit.",
        )
    return command.help_option


class Command(click.Command):
    """Every noemafed command (`@click.command(cls=Command)`): click's, with the help option made here."""

    help_option: click.Option | None = None

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        return _help_option(self, ctx)


class CortexGroup(click.Group):
    """A group whose commands also accept `--cortex` after their name, where operators tend to type it."""

    command_class = Command  # for `@group.command()`
    help_option: click.Option | None = None

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        return _help_option(self, ctx)

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


def complete_peers(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
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


class FilePath(click.ParamType):  # type: ignore[type-arg]  # generic only since click 8.5; we allow 8.1
    """A path to write a file at, refused when it names a folder: `click.Path(dir_okay=False, path_type=Path)`
    without the gettext call its constructor makes (see _help_option), and without its refusal of an existing
    file this user cannot read, which the file's atomic replacement never reads."""

    name = "file"

    def convert(self, value: str | Path, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        # os.path.isdir, not Path.is_dir: a path this user cannot look into (EACCES, a name too long) is no
        # refusal here, as in click.Path, but the write's failure, which status --check reports as its UNKNOWN.
        if os.path.isdir(value):
            self.fail(f"File {click.format_filename(value)!r} is a directory.", param, ctx)
        return Path(value)

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[click.shell_completion.CompletionItem]:
        from click.shell_completion import CompletionItem

        return [CompletionItem(incomplete, type="file")]


def parse_duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
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


def complete_from(choices: tuple[str, ...]) -> Callable[[click.Context, click.Parameter, str], list[str]]:
    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
        return [choice for choice in choices if choice.startswith(incomplete)]

    return complete


# Every command and the module of noemafed/cli/ that defines it, under its name with `-` as `_`. The root group
# imports a module only when one of its commands is asked for, so a start-up defines one command's options (some
# 80 click objects in all, about a millisecond of every `status --check`).
COMMANDS = {
    "add-peer": "peers",
    "completion": "completion",
    "doctor": "doctor",
    "init": "config",
    "key": "config",
    "keygen": "config",
    "pause-peer": "peers",
    "peers": "peers",
    "remove-peer": "peers",
    "reset-peer": "peers",
    "resume-peer": "peers",
    "retry-now": "peers",
    "serve": "serve",
    "set-interval": "config",
    "set-mode": "config",
    "set-peer": "peers",
    "set-verify": "config",
    "skip-event": "peers",
    "status": "status",
    "sync": "sync",
}


class LazyCortexGroup(CortexGroup):
    """The root group: each command is loaded from its module (COMMANDS) when it is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module = importlib.import_module(f"noemafed.cli.{COMMANDS[cmd_name]}")
            self.add_command(getattr(module, cmd_name.replace("-", "_")), cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in COMMANDS:
            # A name it does not know: click suggests the loaded commands it resembles, so load them all first.
            for name in COMMANDS:
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)


@click.group(cls=LazyCortexGroup, context_settings={"help_option_names": HELP_OPTION_NAMES})
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
        gc.enable()  # the interpreter goes on: as Python left it
        raise SystemExit(code)  # `python -i` wants the interpreter afterwards; threads want to be waited for
    status = _exit_status(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # closed before we started
            continue
        try:
            stream.flush()
        except BrokenPipeError:
            reader_gone()
        except (OSError, ValueError) as exc:
            # stdout on a full disk (or a closed pipe): said once, never a traceback; Python would exit 120.
            if status == 0 and stream is sys.stdout:
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.write(STDOUT_FAILED.format(error=getattr(exc, "strerror", None) or exc))
                    sys.stderr.flush()
            status = status or int(ExitCode.IO_ERROR)
    os._exit(status)


def write_line(stream: TextIO | None, line: str) -> None:
    """One line on stderr (or another stream of our own). A stream closed before we started (`2>&-`: Python
    leaves it None) takes nothing, as under 2>/dev/null; click would send the line to stdout instead, into
    the report. A reader that has gone ends the process (reader_gone)."""
    if stream is None:
        return
    try:
        click.echo(line, file=stream)
    except BrokenPipeError:
        reader_gone()


def reader_gone() -> NoReturn:
    """The reader of our stdout or stderr has gone (EPIPE: `noemafed sync --once -v 2>&1 | head -1`): the process
    ends at once and quietly, with status 141, what a shell shows for a death by SIGPIPE, which is how noema ends
    (Go's runtime does so for a write to stdout or stderr) and coreutils too. Python ignores SIGPIPE so that a
    peer closing its socket is an error to classify, not a death; our own two streams are the exception. Not
    the signal itself: only the main thread may restore its default action, and a log line is written from
    any poll's thread.

    Nothing is left that a kill -9 would not leave, and every write path is built for that: SQLite commits or
    rolls back, replay's files have their undo journal, the sync lock goes with the process. A poll in flight
    records nothing, so its peer is charged with nothing (a log line that fails inside a poll would otherwise be
    recorded as that poll's failure: docs/exit-codes.md)."""
    os._exit(EXIT_READER_GONE)


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
        write_line(obj.env.stderr, "Aborted!")
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
