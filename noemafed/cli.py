"""The command line: the only module that imports click, and the one place errors become exit codes."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

import click

from noemafed import __version__
from noemafed.errors import ExitCode, InternalError, NoemafedError

if TYPE_CHECKING:
    from noemafed.cortex.manifest import Manifest
    from noemafed.federation.syncer import SyncOptions
    from noemafed.logs import Log
    from noemafed.reports import ResetPlan

# `sync --once` without --max-duration: long enough for a backlog of several hundred thousand events, short
# enough that a hostile or wedged peer cannot keep a cron run (and so every later one) alive for ever.
ONCE_MAX_DURATION = 600.0


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
        stdout_isatty: bool | None = None,
        stderr_isatty: bool | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.stdin = sys.stdin if stdin is None else stdin
        self.stdout = sys.stdout if stdout is None else stdout
        self.stderr = sys.stderr if stderr is None else stderr
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

    def cortex_dir(self) -> Path:
        """The --cortex value resolved lazily, so `init` needs none."""
        from noemafed.cortex.open import resolve_cortex

        return resolve_cortex(self.cortex_option, self.env.environ, Path.cwd())

    def emit(self, text: str) -> None:
        click.echo(text, file=self.env.stdout, nl=False)

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

        def sink(level: Level, message: str) -> None:
            if level < threshold:
                return
            stamp = time.strftime("%Y/%m/%d %H:%M:%S")
            with lock:
                click.echo(f"{stamp} {message}", file=stderr)

        return Log(sink)

    def fail(self, exc: NoemafedError) -> NoReturn:
        """The single place an error is shown: on stderr, and as a JSON document too for a --json command."""
        click.echo(f"Error: {exc.message}", file=self.env.stderr)
        if exc.hint:
            click.echo(f"Hint: {exc.hint}", file=self.env.stderr)
        if self.json_schema is not None:
            from noemafed import render
            from noemafed.reports import ErrorReport

            self.emit(render.json(ErrorReport.of(exc, self.json_schema)))
        sys.exit(int(exc.exit_code))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="noemafed", message="%(prog)s %(version)s")
@click.option(
    "--cortex",
    "cortex_option",
    metavar="PATH|NAME",
    help="Cortex directory or registered name (else NOEMA_CORTEX, the noema registry default, the cwd).",
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
    from noemafed import render
    from noemafed.commands.init import init

    obj.emit(render.human(init(directory, name)))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (docs/status.schema.json).")
@click.pass_obj
def status(obj: CliContext, as_json: bool) -> None:
    """Show access mode, peers, cursors, health and the vector clock.

    Example: noemafed status --json | jq '.peers[].health'
    """
    from noemafed import render
    from noemafed.commands.status import status
    from noemafed.reports import StatusReport

    if as_json:
        obj.json_schema = StatusReport.SCHEMA_VERSION
    report = status(obj.cortex_dir(), obj.env.environ)
    obj.emit(render.json(report) if as_json else render.human(report))


@cli.command()
@click.pass_obj
def peers(obj: CliContext) -> None:
    """List the peers configured in cortex.md.

    Example: noemafed peers
    """
    from noemafed import render
    from noemafed.commands.peers import peers

    obj.emit(render.human(peers(obj.cortex_dir())))


@cli.command("add-peer")
@click.argument("name")
@click.argument("endpoint")
@click.pass_obj
def add_peer(obj: CliContext, name: str, endpoint: str) -> None:
    """Add a peer (a local label and its base URL) to cortex.md.

    Example: noemafed add-peer laptop https://laptop.lan:3000
    """
    from noemafed import render
    from noemafed.commands.peers import add_peer

    obj.emit(render.human(add_peer(obj.cortex_dir(), name, endpoint)))


def _confirmed(stdin: TextIO) -> bool:
    """One whitespace-delimited token from stdin; only y, Y and yes proceed (EOF does not)."""
    tokens = stdin.readline().split()
    return bool(tokens) and tokens[0] in ("y", "Y", "yes")


@cli.command("reset-peer")
@click.argument("names", nargs=-1, required=True)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def reset_peer(obj: CliContext, names: tuple[str, ...], yes: bool) -> None:
    """Forget a peer's pinned identity, cursors and health so the next sync re-pins it.

    Example: noemafed reset-peer laptop --yes
    """
    from noemafed import render
    from noemafed.commands.reset import reset_peers

    def confirm(plan: ResetPlan) -> bool:
        obj.emit(render.human(plan))
        if yes:
            return True
        obj.emit(render.RESET_PROMPT)
        obj.env.stdout.flush()
        return _confirmed(obj.env.stdin)

    obj.emit(render.human(reset_peers(obj.cortex_dir(), names, confirm)))


@cli.command("set-mode")
@click.argument("mode")
@click.pass_obj
def set_mode(obj: CliContext, mode: str) -> None:
    """Set the cortex-wide federation mode: sync, publish or subscribe.

    Example: noemafed set-mode publish
    """
    from noemafed import render
    from noemafed.commands.modes import set_mode

    obj.emit(render.human(set_mode(mode, obj.cortex_dir)))


def _peer_mode_command(obj: CliContext, name: str, paused: bool) -> None:
    from noemafed import render
    from noemafed.commands.modes import set_peer_mode

    obj.emit(render.human(set_peer_mode(obj.cortex_dir(), name, paused)))


@cli.command("pause-peer")
@click.argument("name")
@click.pass_obj
def pause_peer(obj: CliContext, name: str) -> None:
    """Stop syncing with a peer without forgetting its cursor or pin.

    Example: noemafed pause-peer laptop
    """
    _peer_mode_command(obj, name, True)


@cli.command("resume-peer")
@click.argument("name")
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
    from noemafed import render
    from noemafed.commands.key import key_fingerprint

    obj.emit(render.human(key_fingerprint(obj.cortex_dir(), obj.env.environ)))


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
) -> None:
    """Pull and replay peers' events: once for cron, or as a foreground daemon for systemd.

    Exit codes: 0 all peers synced, 3 a peer failed but may recover, 4 a peer needs an operator,
    75 another sync holds the cortex, 78 cortex.md is invalid (docs/exit-codes.md).

    Example: noemafed sync --once --max-duration 300
    """
    from noemafed.cortex.manifest import read_manifest
    from noemafed.federation.syncer import SyncOptions
    from noemafed.reports import SyncReport

    if as_json:
        obj.json_schema = SyncReport.SCHEMA_VERSION
    if obj.quiet and verbose:
        raise click.UsageError("--quiet and --verbose exclude each other")
    obj.verbosity += verbose
    cortex_dir = obj.cortex_dir()
    manifest = read_manifest(cortex_dir)
    if once and max_duration is None:
        max_duration = ONCE_MAX_DURATION  # a cron run always ends, whatever its peers do
    options = SyncOptions(
        timeout=timeout,
        max_duration=max_duration,
        max_events=max_events,
        use_proxy_env=use_proxy_env,
        max_future_skew=max_future_skew,
        jobs=jobs,
    )
    if not once:
        if as_json or peer_names or max_events:
            raise click.UsageError("--json, --peer and --max-events need --once")
        _run_daemon(obj, cortex_dir, manifest, options, wait_seconds)
        return
    from noemafed.commands.sync import SyncRun, sync_once

    log = obj.log(progress=obj.env.stderr_isatty)
    report = sync_once(SyncRun(cortex_dir, manifest, options, obj.env.environ, log, wait_seconds), peer_names)
    # Under cron (no terminal) or --quiet, a clean run prints nothing: cron mails only what went wrong. It then
    # never loads the renderer either (start-up time: docs/performance.md).
    if as_json:
        from noemafed import render

        obj.emit(render.json(report))
    elif report.exit_code != ExitCode.OK or (not obj.quiet and (obj.verbosity > 0 or obj.env.stdout_isatty)):
        from noemafed import render

        obj.emit(render.human(report))
    if report.exit_code != ExitCode.OK:
        sys.exit(int(report.exit_code))


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
    sync_daemon(
        SyncRun(cortex_dir, manifest, options, obj.env.environ, obj.log(progress=True), wait_seconds), stop
    )


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
        max_per_address=max_per_address,
        timeout=request_timeout,
        allow_expired=insecure_allow_expired,
    )
    log = obj.log(progress=True)
    server = make_server(config, log)
    scheme = "https" if config.tls_cert else "http"
    bound_port = server.server_address[1]
    log.info(f"[serve] federation mode: {manifest.federation_mode}")
    log.info(
        f"[serve] listening on {scheme}://{host}:{bound_port}/mcp (access: {'keyed' if access.keyed else 'open'})"
    )

    def on_signal(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    log.info("[serve] stopped")


def run() -> NoReturn:
    """The process entry point (console script, `python -m noemafed`, the pyz): main(), then a quick exit.

    By the time main() returns, every command has committed what it wrote, closed its files and released its
    lock (the kernel drops a flock with the process anyway), so the interpreter's teardown (freeing the objects
    of some 300 modules: 10-20 ms, about a tenth of a cron run) buys nothing, and `os._exit` skips it after
    flushing stdout and stderr. atexit handlers still run, and under `python -i` or while a non-daemon thread is
    alive the normal exit is taken instead. Tests call main() in-process.
    """
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
        except (OSError, ValueError):
            status = status or 120  # what Python exits with when it cannot flush stdout at exit
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
    except Exception as exc:
        if obj.traceback:
            raise
        obj.fail(InternalError(exc))
    sys.exit(int(ExitCode.OK))
