"""`serve`: this cortex's event log to peers, over MCP."""

from __future__ import annotations

import gc
import os
import threading

import click

from noemafed.cli.app import CliContext, Command

SERVE_MODE_LOG = "[serve] federation mode: {mode}"


SERVE_LISTENING_LOG = "[serve] listening on {scheme}://{host}:{port}/mcp (access: {access})"


SERVE_STOPPED_LOG = "[serve] stopped"


@click.command(cls=Command)
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
