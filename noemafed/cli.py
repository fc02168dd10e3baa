"""The command line: the only module that imports click, and the one place errors become exit codes."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from noemafed import __version__
from noemafed.errors import CommandError, ExitCode, NoemafedError

if TYPE_CHECKING:
    from noemafed.cortex.open import Cortex
    from noemafed.logs import Log

F = TypeVar("F", bound=Callable[..., Any])


class CliContext:
    """What the group passes down: the --cortex value, resolved lazily so `init` needs none."""

    def __init__(self, cortex_option: str | None) -> None:
        self.cortex_option = cortex_option

    def cortex_dir(self) -> Path:
        from noemafed.cortex.open import resolve_cortex

        return resolve_cortex(self.cortex_option, os.environ, Path.cwd())

    def open(self) -> Cortex:
        from noemafed.cortex.open import open_cortex

        return open_cortex(self.cortex_dir())


def _emit(text: str) -> None:
    click.echo(text, nl=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="noemafed", message="%(prog)s %(version)s")
@click.option(
    "--cortex",
    "cortex_option",
    metavar="PATH|NAME",
    help="Cortex directory or registered name (else NOEMA_CORTEX, the noema registry default, the cwd).",
)
@click.pass_context
def cli(ctx: click.Context, cortex_option: str | None) -> None:
    """noema federation as one file: keep a cortex in step with its peers.

    Example: noemafed --cortex ~/cortexes/research status
    """
    ctx.obj = CliContext(cortex_option)


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", help="Display name of the cortex (default: the directory name).")
def init(directory: Path, name: str | None) -> None:
    """Create a new, empty cortex that noema can open.

    Example: noemafed init ~/cortexes/research --name research
    """
    from noemafed import render
    from noemafed.cortex.open import init_cortex

    manifest = init_cortex(directory, name)
    _emit(render.initialized(str(directory), manifest.id, manifest.name))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (docs/status.schema.json).")
@click.pass_obj
def status(obj: CliContext, as_json: bool) -> None:
    """Show access mode, peers, cursors, health and the vector clock.

    Example: noemafed status --json | jq '.peers[].health'
    """
    from noemafed import commands, render

    cortex = obj.open()
    try:
        report = commands.status(cortex, os.environ)
    finally:
        cortex.close()
    _emit(render.status_json(report) if as_json else render.status_human(report))


@cli.command()
@click.pass_obj
def peers(obj: CliContext) -> None:
    """List the peers configured in cortex.md.

    Example: noemafed peers
    """
    from noemafed import render
    from noemafed.cortex.manifest import read_manifest

    _emit(render.peers_human(read_manifest(obj.cortex_dir()).peers))


@cli.command("add-peer")
@click.argument("name")
@click.argument("endpoint")
@click.pass_obj
def add_peer(obj: CliContext, name: str, endpoint: str) -> None:
    """Add a peer (a local label and its base URL) to cortex.md.

    Example: noemafed add-peer laptop https://laptop.lan:3000
    """
    from noemafed import commands, render
    from noemafed.cortex.manifest import read_manifest

    added = commands.add_peer(read_manifest(obj.cortex_dir()), name, endpoint)
    _emit(render.added_peer(*added))


def _confirmed() -> bool:
    """One whitespace-delimited token from stdin; only y, Y and yes proceed (EOF does not)."""
    line = sys.stdin.readline()
    tokens = line.split()
    return bool(tokens) and tokens[0] in ("y", "Y", "yes")


@cli.command("reset-peer")
@click.argument("names", nargs=-1, required=True)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def reset_peer(obj: CliContext, names: tuple[str, ...], yes: bool) -> None:
    """Forget a peer's pinned identity, cursors and health so the next sync re-pins it.

    Example: noemafed reset-peer laptop --yes
    """
    from noemafed import commands, render

    cortex = obj.open()
    try:
        plan = commands.plan_reset(cortex, names)
        _emit(render.reset_plan(plan))
        if not yes:
            _emit(render.RESET_PROMPT)
            sys.stdout.flush()
            if not _confirmed():
                raise CommandError("aborted by user")
        _emit(render.reset_result(commands.apply_reset(cortex, plan)))
    finally:
        cortex.close()


@cli.command("set-mode")
@click.argument("mode")
@click.pass_obj
def set_mode(obj: CliContext, mode: str) -> None:
    """Set the cortex-wide federation mode: sync, publish or subscribe.

    Example: noemafed set-mode publish
    """
    from noemafed import commands, render
    from noemafed.cortex.manifest import FEDERATION_MODES, read_manifest
    from noemafed.text.gotext import go_quote

    # Validated before the cortex is resolved, as in noema.
    if mode not in FEDERATION_MODES:
        raise CommandError(f"invalid mode {go_quote(mode)}; use sync, publish, or subscribe")
    _emit(render.mode_change(commands.set_mode(read_manifest(obj.cortex_dir()), mode)))


def _peer_mode_command(name: str, paused: bool, obj: CliContext) -> None:
    from noemafed import commands, render
    from noemafed.cortex.manifest import read_manifest

    _emit(render.peer_mode_change(commands.set_peer_mode(read_manifest(obj.cortex_dir()), name, paused)))


@cli.command("pause-peer")
@click.argument("name")
@click.pass_obj
def pause_peer(obj: CliContext, name: str) -> None:
    """Stop syncing with a peer without forgetting its cursor or pin.

    Example: noemafed pause-peer laptop
    """
    _peer_mode_command(name, True, obj)


@cli.command("resume-peer")
@click.argument("name")
@click.pass_obj
def resume_peer(obj: CliContext, name: str) -> None:
    """Resume syncing with a paused peer.

    Example: noemafed resume-peer laptop
    """
    _peer_mode_command(name, False, obj)


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
    from noemafed import commands, render
    from noemafed.cortex.manifest import read_manifest

    cortex_dir = obj.cortex_dir()
    _emit(render.key_fingerprint(commands.key_fingerprint(cortex_dir, read_manifest(cortex_dir), os.environ)))


def _stderr_logger(enabled: bool) -> Log:
    """Go's standard logger format on stderr (`YYYY/MM/DD HH:MM:SS message`); warnings always, the rest if enabled."""
    import threading
    import time

    from noemafed.logs import Level, Log

    lock = threading.Lock()  # peers log from their own threads; keep each message whole
    threshold = Level.INFO if enabled else Level.WARNING

    def sink(level: Level, message: str) -> None:
        if level < threshold:
            return
        stamp = time.strftime("%Y/%m/%d %H:%M:%S")
        with lock:
            click.echo(f"{stamp} {message}", err=True)

    return Log(sink)


@cli.command()
@click.option(
    "--once", is_flag=True, help="Poll each peer once and exit (for cron); without it, run as a daemon."
)
@click.option("--peer", "peer_names", multiple=True, metavar="NAME", help="Only these peers (repeatable).")
@click.option(
    "--max-duration",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="Give up after S seconds in all.",
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
    help="Per connect and per read.",
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
    "--verbose", "-v", is_flag=True, help="Log progress and pins on stderr even when it is not a terminal."
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
    wait_seconds: float,
    as_json: bool,
    verbose: bool,
    use_proxy_env: bool,
) -> None:
    """Pull and replay peers' events: once for cron, or as a foreground daemon for systemd.

    Exit codes: 0 all peers synced, 3 a peer failed but may recover, 4 a peer needs an operator,
    75 another sync holds the cortex, 78 cortex.md is invalid (docs/exit-codes.md).

    Example: noemafed sync --once --max-duration 300
    """
    from noemafed.cortex.manifest import read_manifest
    from noemafed.federation.schedule import sync_daemon, sync_once
    from noemafed.federation.syncer import SyncOptions

    cortex_dir = obj.cortex_dir()
    manifest = read_manifest(cortex_dir)
    options = SyncOptions(
        timeout=timeout, max_duration=max_duration, max_events=max_events, use_proxy_env=use_proxy_env
    )
    if not once:
        if as_json or peer_names or max_events:
            raise click.UsageError("--json, --peer and --max-events need --once")
        _run_daemon(cortex_dir, manifest, options, wait_seconds, sync_daemon)
        return
    log = _stderr_logger(verbose or sys.stderr.isatty())
    report = sync_once(
        cortex_dir,
        manifest,
        peer_names,
        options=options,
        environ=os.environ,
        log=log,
        wait_seconds=wait_seconds,
    )
    # Under cron (no terminal) a clean run prints nothing: cron mails only what went wrong. It then never
    # loads the renderer either (start-up time: docs/performance.md).
    if as_json:
        from noemafed import render

        _emit(render.sync_json(report))
    elif report.exit_code != ExitCode.OK or verbose or sys.stdout.isatty():
        from noemafed import render

        _emit(render.sync_human(report))
    if report.exit_code != ExitCode.OK:
        sys.exit(int(report.exit_code))


def _run_daemon(
    cortex_dir: Path, manifest: Any, options: Any, wait_seconds: float, daemon: Callable[..., None]
) -> None:
    """SIGTERM and SIGINT stop the loops; an interrupted poll is not recorded as a failure."""
    import signal
    import threading

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    daemon(
        cortex_dir,
        manifest,
        options=options,
        environ=os.environ,
        log=_stderr_logger(True),
        stop=stop,
        wait_seconds=wait_seconds,
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
@click.pass_obj
def serve(
    obj: CliContext,
    host: str,
    port: int,
    tls_cert: str | None,
    tls_key: str | None,
    allow_hosts: tuple[str, ...],
    workers: int,
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
    )
    log = _stderr_logger(True)
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


def report_error(exc: NoemafedError) -> None:
    """The single place an error is shown: `Error: <message>`, then the hint, on stderr."""
    click.echo(f"Error: {exc.message}", err=True)
    if exc.hint:
        click.echo(f"Hint: {exc.hint}", err=True)


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


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with a documented code (docs/exit-codes.md)."""
    try:
        cli.main(args=argv, prog_name="noemafed", standalone_mode=False)
    except NoemafedError as exc:
        report_error(exc)
        sys.exit(int(exc.exit_code))
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(int(ExitCode.ERROR))
    except click.ClickException as exc:
        exc.show()
        sys.exit(int(ExitCode.USAGE))
    sys.exit(int(ExitCode.OK))
