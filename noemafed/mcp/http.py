"""The HTTP front of `noemafed serve`: guards in noema's order, TLS, and limits on workers, bodies and time, so a
hostile or broken client costs a bounded amount (wire.md §3–§4)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from noemafed.cortex.access import AccessKey
from noemafed.cortex.open import open_database
from noemafed.errors import ExitCode, NoemafedError
from noemafed.logs import Log
from noemafed.mcp.protocol import (
    ENDPOINT_PATH,
    FEDERATION_ENDPOINT_PATH,
    JSON_TYPE,
    PROTOCOL_VERSION_HEADER,
    SESSION_HEADER,
    SSE_TYPE,
)
from noemafed.mcp.server import CortexReader, McpApp, Reply

ENDPOINTS = frozenset((ENDPOINT_PATH, FEDERATION_ENDPOINT_PATH))
ALLOWED_ORIGINS = ("app://obsidian.md", "capacitor://localhost")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
MAX_REQUEST_BODY = 4 * 1024 * 1024
TEXT_TYPE = "text/plain; charset=utf-8"

# Refusal bodies, byte for byte as noema's servers send them (wire.md §4).
UNAUTHORIZED_BODY = b'{"error":"unauthorized: NOEMA_MCP_KEY / access.shared_key_file required"}'
HOST_FORBIDDEN_BODY = b"Forbidden: Host header is not allowed"
NOT_FOUND_BODY = b"404 page not found\n"
NO_STREAM_BODY = b"Method Not Allowed: no server-initiated stream"
UNSUPPORTED_MEDIA_BODY = b"Unsupported Media Type: Content-Type must be application/json"
LENGTH_REQUIRED_BODY = b"Length Required"
TOO_LARGE_BODY = b"Payload Too Large: request body over 4 MiB"
BUSY_RESPONSE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

# Log lines: one per request, and one per connection an exception ended.
ACCESS_LOG = "[serve] {client} {method} {path} {status}{detail} {elapsed_ms:.0f}ms"
CONNECTION_DROPPED = "[serve] {client} connection dropped: {kind}: {error}"

# Why the server will not start.
WILDCARD_HOST = "--host {host!r} is not allowed: name the address peers dial (it is also the allowed Host)"
TLS_HALF_PAIR = "--tls-cert and --tls-key go together"
KEYED_PLAIN_HTTP = (
    "a keyed cortex never serves plain HTTP: the shared key would cross the network in clear text"
)
KEYED_PLAIN_HTTP_HINT = (
    "pass --tls-cert and --tls-key, or set access.tls_cert_path and access.tls_key_path in cortex.md"
)
TLS_UNLOADABLE = "loading TLS certificate {cert} and key {key}: {error}"
CANNOT_LISTEN = "listening on {host}:{port}: {error}"

# What a client does to a connection (hang up, stall, fail the handshake): routine, unlike an exception from our code.
_CLIENT_FAULTS = (ConnectionError, TimeoutError, ssl.SSLError)


@dataclass(frozen=True)
class ServeConfig:
    """How to listen and whom to let in."""

    cortex_dir: Path
    host: str = "127.0.0.1"
    port: int = 3000
    tls_cert: str = ""
    tls_key: str = ""
    access: AccessKey = field(default_factory=AccessKey)
    extra_hosts: tuple[str, ...] = ()
    workers: int = 16
    queue: int = 64  # connections waiting for a worker; beyond this they are turned away
    timeout: float = 15.0  # per connection: TLS handshake, reading the request, writing the answer


class ServeError(NoemafedError):
    """The server cannot start as configured."""

    code = "serve_config"
    exit_code = ExitCode.CONFIG


def _host_only(host_header: str) -> str:
    """The Host header without its port; IPv6 literals lose their brackets."""
    host = host_header.strip()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Handler(BaseHTTPRequestHandler):
    """One HTTP request; guards in noema's order: Origin, bearer key, Host, then the MCP exchange."""

    server: NoemafedHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "noemafed"
    sys_version = ""

    # ---- plumbing ----------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        """http.server's own noise is dropped; each request is logged once by `_log`."""

    def _log(self, status: int, note: str = "") -> None:
        self.server.log.info(
            ACCESS_LOG.format(
                client=self.client_address[0],
                method=self.command,
                path=self.path,
                status=status,
                detail=f" {note}" if note else "",
                elapsed_ms=(time.monotonic() - self._started) * 1000,
            )
        )

    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str | None = None,
        extra: dict[str, str] | None = None,
        note: str = "",
    ) -> None:
        # Logged first: a client that hangs up mid-answer must not erase the record of the decision.
        self._log(status, note)
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def _guard(self) -> str | None:
        """The endpoint path when the request may proceed; otherwise the refusal has been sent."""
        self._started = time.monotonic()
        origin = self.headers.get("Origin")
        if origin is not None and origin not in ALLOWED_ORIGINS:
            self._send(403)
            return None
        if not self.server.authorized(self.headers.get("Authorization")):
            self._send(401, UNAUTHORIZED_BODY, JSON_TYPE)
            return None
        if _host_only(self.headers.get("Host") or "") not in self.server.allowed_hosts:
            self._send(403, HOST_FORBIDDEN_BODY, TEXT_TYPE)
            return None
        path = self.path.split("?", 1)[0]
        path = path[:-1] if path.endswith("/") and len(path) > 1 else path
        if path not in ENDPOINTS:
            self._send(404, NOT_FOUND_BODY, TEXT_TYPE)
            return None
        return path

    # ---- methods -----------------------------------------------------------------------------------

    def do_OPTIONS(self) -> None:
        self._started = time.monotonic()
        self._send(204, extra={"Access-Control-Allow-Origin": "*"})

    def do_GET(self) -> None:
        if self._guard() is not None:
            self._send(405, NO_STREAM_BODY, TEXT_TYPE)

    def do_DELETE(self) -> None:
        endpoint = self._guard()
        if endpoint is None:
            return
        session = self.headers.get(SESSION_HEADER)
        if session:
            self.server.app.sessions.end(session)
        self._send(200)

    def do_POST(self) -> None:
        endpoint = self._guard()
        if endpoint is None:
            return
        body = self._read_body()
        if body is None:
            return
        reply = self.server.app.post(
            endpoint, body, self.headers.get(SESSION_HEADER), self.headers.get(PROTOCOL_VERSION_HEADER)
        )
        if reply.streamable:
            self._answer(reply)
        elif reply.message:
            self._send(reply.status, reply.message.encode(), JSON_TYPE, note=reply.note)
        else:
            self._send(reply.status, note=reply.note)

    def _read_body(self) -> bytes | None:
        if (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower() != JSON_TYPE:
            self._send(415, UNSUPPORTED_MEDIA_BODY, TEXT_TYPE)
            return None
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self._send(411, LENGTH_REQUIRED_BODY, TEXT_TYPE)
            return None
        length = int(length_text)
        if length > MAX_REQUEST_BODY:
            self._send(413, TOO_LARGE_BODY, TEXT_TYPE)
            return None
        return self.rfile.read(length)

    def _wants_sse(self) -> bool:
        """JSON unless the client accepts SSE and not JSON: every noema client reads JSON."""
        accept = (self.headers.get("Accept") or "").lower()
        return SSE_TYPE in accept and JSON_TYPE not in accept

    def _answer(self, reply: Reply) -> None:
        extra = {SESSION_HEADER: reply.session} if reply.session else {}
        if self._wants_sse():
            body = f"event: message\ndata: {reply.message}\n\n".encode()
            self._send(reply.status, body, SSE_TYPE, {**extra, "Cache-Control": "no-cache"}, reply.note)
        else:
            self._send(reply.status, reply.message.encode() + b"\n", JSON_TYPE, extra, reply.note)


class NoemafedHTTPServer(HTTPServer):
    """http.server with a bounded worker pool; TLS handshakes happen in the workers, not the accept loop."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, config: ServeConfig, app: McpApp, log: Log, tls: ssl.SSLContext | None) -> None:
        self.config = config
        self.app = app
        self.log = log
        self.tls = tls
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="serve")
        self._slots = threading.BoundedSemaphore(config.workers + config.queue)
        key = config.access.value
        self._expected = hashlib.sha256(f"Bearer {key}".encode()).digest() if key else None
        self.allowed_hosts = frozenset((config.host, *LOOPBACK_HOSTS, *config.extra_hosts))
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        self.address_family = family
        super().__init__((config.host, config.port), Handler)

    def authorized(self, header: str | None) -> bool:
        """Constant-time comparison of digests, so neither the key nor its length leaks through timing."""
        if self._expected is None:
            return True
        offered = hashlib.sha256((header or "").encode("utf-8", errors="surrogateescape")).digest()
        return hmac.compare_digest(offered, self._expected)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            # Every worker busy and the queue full: turn the connection away instead of piling up threads.
            with contextlib.suppress(OSError):
                request.sendall(BUSY_RESPONSE)
            self.shutdown_request(request)
            return
        self._pool.submit(self._work, request, client_address)

    def _work(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(self.config.timeout)
            if self.tls is not None:
                request = self.tls.wrap_socket(request, server_side=True)
            self.finish_request(request, client_address)
        except Exception as exc:  # a broken or hostile client must never take the server down
            line = CONNECTION_DROPPED.format(client=client_address[0], kind=type(exc).__name__, error=exc)
            if isinstance(exc, _CLIENT_FAULTS):
                self.log.info(line)
            else:
                self.log.warning(line)  # a bug in serving: the operator should see it even under cron
        finally:
            self.shutdown_request(request)
            self._slots.release()

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def tls_server_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ServeError(TLS_UNLOADABLE.format(cert=cert, key=key, error=exc)) from exc
    return context


def make_server(config: ServeConfig, log: Log) -> NoemafedHTTPServer:
    """Check the configuration like noema does, then bind."""
    if config.host in ("0.0.0.0", "::", ""):  # noqa: S104 (this is the check that refuses them)
        raise ServeError(WILDCARD_HOST.format(host=config.host))
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ServeError(TLS_HALF_PAIR)
    if config.access.keyed and not config.tls_cert:
        raise ServeError(KEYED_PLAIN_HTTP, hint=KEYED_PLAIN_HTTP_HINT)
    open_database(config.cortex_dir).close()  # fail now, not at the first request, if the DB is unusable
    tls = tls_server_context(config.tls_cert, config.tls_key) if config.tls_cert else None
    try:
        return NoemafedHTTPServer(config, McpApp(CortexReader(config.cortex_dir)), log, tls)
    except OSError as exc:
        raise ServeError(
            CANNOT_LISTEN.format(host=config.host, port=config.port, error=exc.strerror or exc)
        ) from exc
