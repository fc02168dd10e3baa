"""The HTTP front of `noemafed serve`: guards in noema's order, TLS, and limits on connections, bytes and time,
so a hostile or broken client costs a bounded amount (wire.md §3–§4).

A connection lives in one I/O thread until its request is complete (TLS handshake, request line, headers and body,
all non-blocking and under one deadline), then takes a worker only to compute the answer, and goes back to the
I/O thread to have the answer written. A slow or idle client therefore holds a socket and a few bytes for at most
the deadline, never a worker. After a successful answer to an HTTP/1.1 request that did not ask to close, the
connection stays open for the client's next request (keep-alive) for IDLE_SECONDS, and that request gets a
deadline of its own."""

from __future__ import annotations

import contextlib
import enum
import errno
import hashlib
import hmac
import http.client
import io
import ipaddress
import re
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, cast

from noemafed.cortex.access import AccessKey
from noemafed.cortex.open import open_database
from noemafed.errors import ExitCode, NoemafedError
from noemafed.logs import Log
from noemafed.mcp import certs
from noemafed.mcp.protocol import (
    ENDPOINT_PATH,
    FEDERATION_ENDPOINT_PATH,
    JSON_TYPE,
    PROTOCOL_VERSION_HEADER,
    SESSION_HEADER,
    SSE_TYPE,
)
from noemafed.mcp.server import MAX_PAGE_BYTES, CortexReader, McpApp, Reply
from noemafed.text.sanitize import one_line

ENDPOINTS = frozenset((ENDPOINT_PATH, FEDERATION_ENDPOINT_PATH))
ALLOWED_ORIGINS = ("app://obsidian.md", "capacitor://localhost")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
MAX_REQUEST_BODY = 4 * 1024 * 1024
# The request line and headers together; a federation request's are a few hundred bytes (Go allows 1 MiB).
MAX_REQUEST_HEAD = 64 * 1024
# Request bytes held at once across all connections still being read or waiting for a worker: sixteen bodies of
# the largest size. A request that would pass it is turned away rather than let memory grow with the clients.
MAX_BUFFERED = 16 * MAX_REQUEST_BODY
# Answer bytes handed to the I/O thread and not yet written: a client that does not read keeps its answer in
# memory until the answer's deadline. Past this, workers wait with theirs (one answer alone always goes through),
# so memory stays bounded however many clients stop reading; eight of the largest pages.
MAX_ANSWERING = 8 * MAX_PAGE_BYTES
# After answering a client that may still be sending (a refusal, a body left unread), how long the server keeps
# reading and discarding before it closes, so the close is not a reset that the client sees instead of the answer.
LINGER_SECONDS = 1.0
# Refused plain-HTTP connections being sent their 503 at once (each lingers); beyond this a refusal is a close.
MAX_REFUSING = 64
# How long a kept-alive connection waits for the first byte of its next request before it is closed. A poll's
# requests follow each other within milliseconds; a client that polls again later opens a new connection.
IDLE_SECONDS = 5.0
# One log line per address and this many seconds for refused connections: a flood must not flood the log.
REFUSAL_LOG_SECONDS = 10.0
TEXT_TYPE = "text/plain; charset=utf-8"

# Refusal bodies, byte for byte as noema's servers send them (wire.md §4).
UNAUTHORIZED_BODY = b'{"error":"unauthorized: NOEMA_MCP_KEY / access.shared_key_file required"}'
HOST_FORBIDDEN_BODY = b"Forbidden: Host header is not allowed"
NOT_FOUND_BODY = b"404 page not found\n"
NO_STREAM_BODY = b"Method Not Allowed: no server-initiated stream"
UNSUPPORTED_MEDIA_BODY = b"Unsupported Media Type: Content-Type must be application/json"
LENGTH_REQUIRED_BODY = b"Length Required"
TOO_LARGE_BODY = b"Payload Too Large: request body over 4 MiB"
# Answers the I/O thread sends on its own (noema has no such limits, so no texts to copy). Never on a TLS
# connection before its handshake: there a refusal is a plain close.
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)
TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
HEAD_TOO_LARGE_RESPONSE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)
CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"

# Log lines: one per request, and one per connection an exception, a deadline or a limit ended.
ACCESS_LOG = "[serve] {client} {method} {path} {status}{detail} {elapsed_ms:.0f}ms"
CONNECTION_DROPPED = "[serve] {client} connection dropped: {kind}: {error}"
TIMED_OUT = "[serve] {client} {stage} timed out after {seconds:g}s"
REFUSED = "[serve] {client} refused: {why}{more}"
REFUSED_MORE = " ({count} more since the last line)"
TOO_MANY_OPEN = "{count} connections open (workers + queue)"
TOO_MANY_FROM_ADDRESS = "{count} connections open from its address (--max-per-address)"
TOO_MANY_BYTES = "requests being read hold {held} bytes"
HEAD_TOO_LARGE = "request head over {limit} bytes"

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
PORT_IN_USE_HINT = "another program listens there (another `noemafed serve` or `noema serve`?): stop it, or choose another --port"

# The blank line that ends a request head, as http.client's header reader sees it (lines end at "\n").
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_DIGITS = re.compile(r"[0-9]+")
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ServeConfig:
    """How to listen, whom to let in, and how much any one client may cost."""

    cortex_dir: Path
    host: str = "127.0.0.1"
    port: int = 3000
    tls_cert: str = ""
    tls_key: str = ""
    access: AccessKey = field(default_factory=AccessKey)
    extra_hosts: tuple[str, ...] = ()
    workers: int = 16
    # Connections open beyond the workers (being read, waiting for a worker, being answered); past
    # workers + queue a new connection is turned away at once. An open connection costs a socket, not a thread.
    queue: int = 240
    # Connections open at once from one address (an IPv6 /64 counts as one). A cortex polling us uses one or two
    # (a request and the next page), and each closed one can hold its slot a moment longer while it drains; a
    # host with several cortexes (or a NAT) needs more. 32 still leaves most of the 256 open connections to
    # others, and the workers are never held by an open connection, only by a complete request.
    max_per_address: int = 32
    # The whole request, TLS handshake, request line, headers and body together, in seconds; writing the
    # answer gets as long again.
    timeout: float = 15.0
    # Start with an expired or not yet valid certificate (noema's --insecure-allow-expired), to rotate it in place.
    allow_expired: bool = False


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


def address_key(host: str) -> str:
    """What the per-address limit counts: an IPv4 address, or the /64 an IPv6 host is given as a whole."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class _Stage(enum.Enum):
    HANDSHAKE = "TLS handshake"
    IDLE = "idle"  # kept alive after an answer, waiting for the next request
    REQUEST = "request"
    WORK = "work"
    ANSWER = "answer"
    LINGER = "linger"


class Connection:
    """One accepted connection: owned by the I/O thread, except that a worker reads `data` in the WORK stage."""

    __slots__ = (
        "address",
        "alone",
        "answer",
        "answer_bytes",
        "data",
        "deadline",
        "events",
        "head_end",
        "keep",
        "key",
        "linger",
        "need",
        "scanned",
        "session",
        "sock",
        "stage",
    )

    def __init__(
        self, sock: socket.socket, address: Any, key: str | None, stage: _Stage, deadline: float
    ) -> None:
        self.sock = sock
        self.address = address
        self.key = key  # what the per-address limit counts it as; None for a refused one
        self.stage = stage
        self.deadline = deadline
        self.events = 0  # what the selector watches for; 0 when unregistered
        self.data = bytearray()
        self.scanned = 0  # how far the search for the end of the head has come
        self.head_end = -1
        self.need = -1  # head and body, once the head is known
        self.answer: deque[memoryview] = deque()
        self.answer_bytes = 0  # what the answer holds of MAX_ANSWERING until it is written or dropped
        self.session = ""  # a session the answer opens: ended if the answer cannot be delivered
        self.alone = False  # the answer is the I/O thread's own (408, 431, 503)
        self.linger = False  # the client may still be sending after the answer: read it out before closing
        self.keep = False  # the handler's answer keeps the connection open for the next request

    @property
    def client(self) -> str:
        return str(self.address[0])


class _AnswerWriter:
    """The handler's wfile: collects the answer's pieces for the I/O thread, without copying them."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def write(self, data: bytes) -> int:
        if data:
            self.pieces.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: the I/O thread writes the answer once the handler is done."""


class Handler(BaseHTTPRequestHandler):
    """One HTTP request; guards in noema's order: Origin, bearer key, Host, then the MCP exchange."""

    server: NoemafedHTTPServer
    request: Connection
    wfile: _AnswerWriter  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"
    server_version = "noemafed"
    sys_version = ""

    # ---- plumbing ----------------------------------------------------------------------------------

    def setup(self) -> None:
        # The request is complete before a worker sees it, and the answer goes back to the I/O thread: a worker
        # never waits on a socket.
        self.rfile = io.BytesIO(self.request.data)
        self.wfile = _AnswerWriter()

    def finish(self) -> None:
        """The I/O thread owns the socket; nothing to close here."""

    def handle(self) -> None:
        """One request per hand-over (http.server would read on for keep-alive): the I/O thread reads the next one."""
        self.close_connection = True
        self.handle_one_request()

    def handle_expect_100(self) -> bool:
        """The I/O thread answered `Expect: 100-continue` when it read the head."""
        return True

    def log_message(self, format: str, *args: Any) -> None:
        """http.server's own noise is dropped; each request is logged once by `_log`."""

    def _log(self, status: int, note: str = "") -> None:
        self.server.log.info(
            ACCESS_LOG.format(
                client=self.client_address[0],
                method=self.command,
                path=one_line(self.path),
                status=status,
                detail=f" {one_line(note)}" if note else "",
                elapsed_ms=(time.monotonic() - self._started) * 1000,
            )
        )

    def _send(
        self,
        status: int,
        body: bytes | tuple[bytes, ...] = b"",
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
        pieces = (body,) if isinstance(body, bytes) else body
        self.send_header("Content-Length", str(sum(map(len, pieces))))
        # Kept alive: a successful answer to an HTTP/1.1 request without `Connection: close` (http.server's
        # parse_request read that header). Refusals and errors close, as before.
        keep = 200 <= status < 300 and self.request_version == "HTTP/1.1" and not self.close_connection
        if not keep:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            for piece in pieces:
                if piece:
                    self.wfile.write(piece)
        self.request.keep = keep
        self.close_connection = not keep

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
        # Recorded before the answer is framed: if framing or delivery fails, the session is ended.
        self.request.session = reply.session
        if reply.streamable:
            self._answer(reply)
        elif reply.message:
            self._send(reply.status, reply.message.encode(), JSON_TYPE, note=reply.note)
        else:
            self._send(reply.status, note=reply.note)

    def _read_body(self) -> bytes | None:
        if _media_type(self.headers.get("Content-Type")) != JSON_TYPE:
            self._send(415, UNSUPPORTED_MEDIA_BODY, TEXT_TYPE)
            return None
        length = _body_length(self.headers.get("Content-Length"))
        if length is None:
            self._send(411, LENGTH_REQUIRED_BODY, TEXT_TYPE)
            return None
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
            body = (b"event: message\ndata: ", *reply.encoded(), b"\n\n")
            self._send(reply.status, body, SSE_TYPE, {**extra, "Cache-Control": "no-cache"}, reply.note)
        else:
            self._send(reply.status, (*reply.encoded(), b"\n"), JSON_TYPE, extra, reply.note)


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _body_length(text: str | None) -> int | None:
    """Content-Length as ASCII digits only (`str.isdigit` would take "²", which int() refuses)."""
    if text is None or not _DIGITS.fullmatch(text):
        return None
    return int(text)


def _body_to_read(head: bytes, authorized: Callable[[str | None], bool]) -> tuple[int, bool]:
    """How many body bytes the handler will read after this head (the rules of `Handler._read_body`, and none
    for a request it refuses with 401, so a client without the key cannot make the server buffer a body), and
    whether the head announces a body the handler leaves unread (a refusal then lingers before closing)."""
    line_end = head.find(b"\n")
    words = head[:line_end].split()
    try:
        headers = http.client.parse_headers(io.BytesIO(head[line_end + 1 :]))
    except http.client.HTTPException:  # too many headers: the handler refuses them without reading a body
        return 0, True
    length = _body_length(headers.get("Content-Length"))
    announced = bool(length) or headers.get("Transfer-Encoding") is not None
    if (
        words[:1] != [b"POST"]
        or _media_type(headers.get("Content-Type")) != JSON_TYPE
        or length is None
        or length > MAX_REQUEST_BODY
        or not authorized(headers.get("Authorization"))
    ):
        return 0, announced
    return length, False


def _expects_continue(head: bytes) -> bool:
    return re.search(rb"\nexpect:[ \t]*100-continue[ \t]*\r?\n", head, re.IGNORECASE) is not None


class _Budget:
    """Bytes in use out of a limit; a taker waits for room, except when nothing is in use."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._room = threading.Condition()

    def take(self, size: int, patience: float) -> int:
        """Take `size` bytes once they fit (or after `patience` seconds, to never wait on a stopped loop)."""
        with self._room:
            self._room.wait_for(lambda: self.used == 0 or self.used + size <= self.limit, patience)
            self.used += size
        return size

    def give(self, size: int) -> None:
        if size:
            with self._room:
                self.used -= size
                self._room.notify_all()


class _IOLoop:
    """The one thread that touches client sockets: handshakes, reads requests, writes answers, enforces deadlines.

    Every socket is non-blocking, so no client can make this thread wait; other threads hand it work through
    `_inbox` and wake it with a byte on a socketpair."""

    def __init__(self, server: NoemafedHTTPServer) -> None:
        self._server = server
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._inbox: deque[tuple[Connection, Callable[[Connection], None]]] = deque()
        self._inbox_lock = threading.Lock()
        self._connections: set[Connection] = set()
        self._held = 0  # request bytes buffered across connections (MAX_BUFFERED)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="serve-io", daemon=True)
        self._thread.start()

    # ---- called from other threads ----------------------------------------------------------------

    def post(self, connection: Connection, job: Callable[[Connection], None]) -> None:
        with self._inbox_lock:
            self._inbox.append((connection, job))
        self._wake()

    def stop(self) -> None:
        self._stopping = True
        self._wake()
        self._thread.join(timeout=5)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full wake pipe already wakes the loop
            self._wake_w.send(b"\0")

    # ---- the loop ---------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, _ in self._selector.select(self._wait()):
                    if key.data is None:
                        with contextlib.suppress(OSError):
                            while self._wake_r.recv(4096):
                                pass
                    else:
                        self._guarded(key.data, self._step)
                self._drain_inbox()
                self._expire()
        finally:
            for connection in list(self._connections):
                self._close(connection)
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _wait(self) -> float:
        """Seconds until the next deadline (at most one: a stop request also wakes the loop)."""
        now = time.monotonic()
        waiting = [c.deadline for c in self._connections if c.stage is not _Stage.WORK]
        return max(0.0, min([now + 1.0, *waiting]) - now)

    def _guarded(self, connection: Connection, step: Callable[[Connection], None]) -> None:
        try:
            step(connection)
        except Exception as exc:  # a bug here must cost one connection, never the thread every client needs
            self._server.log.warning(
                CONNECTION_DROPPED.format(client=connection.client, kind=type(exc).__name__, error=exc)
            )
            self._close(connection)

    def _drain_inbox(self) -> None:
        while True:
            with self._inbox_lock:
                if not self._inbox:
                    return
                connection, job = self._inbox.popleft()
            self._guarded(connection, job)

    def _expire(self) -> None:
        now = time.monotonic()
        for connection in [c for c in self._connections if c.stage is not _Stage.WORK and c.deadline <= now]:
            self._guarded(connection, self._deadline_passed)

    def _deadline_passed(self, connection: Connection) -> None:
        stage = connection.stage
        if stage is _Stage.IDLE:  # a kept-alive connection the client did not use again: routine, not logged
            self._close(connection)
            return
        if stage is not _Stage.LINGER and not connection.alone:  # a reply of our own was logged already
            self._server.log.info(
                TIMED_OUT.format(
                    client=connection.client, stage=stage.value, seconds=self._server.config.timeout
                )
            )
        if stage is _Stage.REQUEST:
            # Nothing of an answer has gone out: say why the connection ends, if the socket still takes it.
            self._reply_alone(connection, TIMEOUT_RESPONSE)
        else:
            self._close(connection)

    def _watch(self, connection: Connection, events: int) -> None:
        if connection.events == events:
            return
        if connection.events == 0:
            self._selector.register(connection.sock, events, connection)
        elif events == 0:
            self._selector.unregister(connection.sock)
        else:
            self._selector.modify(connection.sock, events, connection)
        connection.events = events

    # ---- stages -----------------------------------------------------------------------------------

    def add(self, connection: Connection) -> None:
        self._connections.add(connection)
        if connection.stage is _Stage.HANDSHAKE:
            self._handshake(connection)
        else:
            self._watch(connection, selectors.EVENT_READ)

    def _step(self, connection: Connection) -> None:
        if connection.stage is _Stage.HANDSHAKE:
            self._handshake(connection)
        elif connection.stage in (_Stage.REQUEST, _Stage.IDLE):
            self._read(connection)
        elif connection.stage is _Stage.ANSWER:
            self._write(connection)
        elif connection.stage is _Stage.LINGER:
            self._linger(connection)

    def _handshake(self, connection: Connection) -> None:
        sock = cast(ssl.SSLSocket, connection.sock)  # only TLS connections start in this stage
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(connection, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(connection, selectors.EVENT_WRITE)
            return
        except OSError as exc:
            self._drop(connection, exc)
            return
        connection.stage = _Stage.REQUEST
        self._watch(connection, selectors.EVENT_READ)
        self._read(connection)  # the request may have come with the handshake's last flight

    def _read(self, connection: Connection) -> None:
        while connection.stage in (_Stage.REQUEST, _Stage.IDLE):
            try:
                chunk = connection.sock.recv(_CHUNK)
            except (BlockingIOError, ssl.SSLWantReadError):
                self._watch(connection, selectors.EVENT_READ)
                return
            except ssl.SSLWantWriteError:
                self._watch(connection, selectors.EVENT_WRITE)
                return
            except OSError as exc:
                self._drop(connection, exc)
                return
            if not chunk:  # the client gave up before its request was whole, or hung up while idle
                self._close(connection)
                return
            if connection.stage is _Stage.IDLE:  # the next request has begun: its deadline starts now
                connection.stage = _Stage.REQUEST
                connection.deadline = time.monotonic() + self._server.config.timeout
            if self._held + len(chunk) > MAX_BUFFERED:
                self._server.refused(connection.client, TOO_MANY_BYTES.format(held=self._held))
                self._reply_alone(connection, BUSY_RESPONSE)
                return
            connection.data += chunk
            self._held += len(chunk)
            self._parse(connection)

    def _parse(self, connection: Connection) -> None:
        data = connection.data
        if connection.head_end < 0:
            found = _HEAD_END.search(data, max(0, connection.scanned - 3))
            connection.scanned = len(data)
            if found is None or found.end() > MAX_REQUEST_HEAD:
                if found is not None or len(data) > MAX_REQUEST_HEAD:
                    self._server.refused(connection.client, HEAD_TOO_LARGE.format(limit=MAX_REQUEST_HEAD))
                    self._reply_alone(connection, HEAD_TOO_LARGE_RESPONSE)
                return
            connection.head_end = found.end()
            head = bytes(data[: connection.head_end])
            body, connection.linger = _body_to_read(head, self._server.authorized)
            connection.need = connection.head_end + body
            if connection.need > len(data) and _expects_continue(head):
                with contextlib.suppress(OSError):  # best effort: a client that waits for it sends anyway
                    connection.sock.send(CONTINUE_RESPONSE)
        if len(data) >= connection.need:
            connection.stage = _Stage.WORK
            self._watch(connection, 0)
            if not self._server.submit(connection):
                self._close(connection)

    def answer(self, connection: Connection) -> None:
        """Write what the worker produced (`connection.answer`; nothing: just close), within its own deadline."""
        if connection not in self._connections:
            return
        connection.stage = _Stage.ANSWER
        connection.deadline = time.monotonic() + self._server.config.timeout
        self._write(connection)

    def _reply_alone(self, connection: Connection, response: bytes) -> None:
        """An answer from the I/O thread itself (408, 431, 503): short, so it gets only the linger time."""
        self._held -= len(connection.data)
        connection.data = bytearray()
        connection.alone = True
        connection.linger = True
        connection.stage = _Stage.ANSWER
        connection.deadline = time.monotonic() + LINGER_SECONDS
        connection.answer = deque([memoryview(response)])
        self._write(connection)

    def _write(self, connection: Connection) -> None:
        pending = connection.answer
        while pending:
            try:
                sent = connection.sock.send(pending[0])
            except (BlockingIOError, ssl.SSLWantWriteError):
                self._watch(connection, selectors.EVENT_WRITE)
                return
            except ssl.SSLWantReadError:
                self._watch(connection, selectors.EVENT_READ)
                return
            except OSError as exc:
                self._drop(connection, exc)
                return
            # TLS writes all or nothing; a plain socket may take part of the piece.
            pending[0] = pending[0][sent:]
            if not pending[0]:
                pending.popleft()
        connection.session = ""  # delivered
        self._finish(connection)

    def _finish(self, connection: Connection) -> None:
        """Keep the connection for the next request, or half-close; where the client may still be sending, read
        that out first so the close is not a reset that destroys the answer in flight."""
        self._server.answering.give(connection.answer_bytes)
        connection.answer_bytes = 0
        if connection.keep and not connection.linger:
            self._next_request(connection)
            return
        self._held -= len(connection.data)
        connection.data = bytearray()
        try:
            connection.sock.shutdown(socket.SHUT_WR)  # on TLS: no close_notify, as before
        except OSError:
            self._close(connection)
            return
        if not connection.linger:  # the request was read whole: close now, its slot is free for the next one
            self._close(connection)
            return
        connection.stage = _Stage.LINGER
        connection.deadline = time.monotonic() + LINGER_SECONDS
        self._watch(connection, selectors.EVENT_READ)
        self._linger(connection)

    def _next_request(self, connection: Connection) -> None:
        """Keep-alive: wait up to IDLE_SECONDS for the next request, which then has the whole deadline again."""
        # What a pipelining client already sent of its next request stays; the answered request goes.
        self._held -= connection.need
        del connection.data[: connection.need]
        connection.scanned = 0
        connection.head_end = -1
        connection.need = -1
        connection.keep = False
        if connection.data:
            connection.stage = _Stage.REQUEST
            connection.deadline = time.monotonic() + self._server.config.timeout
            self._watch(connection, selectors.EVENT_READ)
            self._parse(connection)
        else:
            connection.stage = _Stage.IDLE
            connection.deadline = time.monotonic() + IDLE_SECONDS
        # Read now: TLS may hold decrypted bytes of the next request that the selector would never report.
        self._read(connection)

    def _linger(self, connection: Connection) -> None:
        while True:
            try:
                if not connection.sock.recv(_CHUNK):
                    break
            except (BlockingIOError, ssl.SSLWantReadError):
                return
            except OSError:
                break
        self._close(connection)

    def _drop(self, connection: Connection, exc: BaseException) -> None:
        """A client hung up, stalled or failed its handshake: routine, logged at info."""
        self._server.log.info(
            CONNECTION_DROPPED.format(client=connection.client, kind=type(exc).__name__, error=exc)
        )
        self._close(connection)

    def _close(self, connection: Connection) -> None:
        if connection not in self._connections:
            return
        self._connections.discard(connection)
        if connection.events:
            connection.events = 0
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(connection.sock)
        with contextlib.suppress(OSError):
            connection.sock.close()
        self._held -= len(connection.data)
        connection.data = bytearray()
        self._server.answering.give(connection.answer_bytes)
        connection.answer_bytes = 0
        connection.answer.clear()
        if connection.session:  # the answer that opened it never arrived: no session is left behind
            self._server.app.sessions.end(connection.session)
            connection.session = ""
        self._server.release(connection.key)

    def refuse(self, connection: Connection) -> None:
        """A connection over a limit: its 503 is written and the socket lingers, so the client reads it."""
        self._connections.add(connection)
        self._reply_alone(connection, BUSY_RESPONSE)


class NoemafedHTTPServer(HTTPServer):
    """http.server's accept loop, with an I/O thread for client sockets and a bounded pool of workers."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, config: ServeConfig, app: McpApp, log: Log, tls: ssl.SSLContext | None) -> None:
        self.config = config
        self.app = app
        self.log = log
        self.tls = tls
        key = config.access.value
        self._expected = hashlib.sha256(f"Bearer {key}".encode()).digest() if key else None
        self.allowed_hosts = frozenset((config.host, *LOOPBACK_HOSTS, *config.extra_hosts))
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        self.address_family = family
        self._lock = threading.Lock()
        self._open = 0
        self._per_address: dict[str, int] = {}
        self._refusing = 0
        self._refusals: dict[str, tuple[float, int]] = {}
        super().__init__((config.host, config.port), Handler, bind_and_activate=False)
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="serve")
        self.answering = _Budget(MAX_ANSWERING)
        self._io = _IOLoop(self)
        # Bound only once everything server_close() stops exists: a port in use must not end in an AttributeError.
        try:
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise

    def authorized(self, header: str | None) -> bool:
        """Constant-time comparison of digests, so neither the key nor its length leaks through timing."""
        if self._expected is None:
            return True
        offered = hashlib.sha256((header or "").encode("utf-8", errors="surrogateescape")).digest()
        return hmac.compare_digest(offered, self._expected)

    # ---- the accept thread ------------------------------------------------------------------------

    def get_request(self) -> tuple[Any, Any]:
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                time.sleep(0.1)  # out of descriptors: wait for some to close instead of spinning on accept
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        """Admit the connection or turn it away at once; either way this thread never waits on the client."""
        key = address_key(str(client_address[0]))
        why = self._admit(key)
        if why:
            self.refused(str(client_address[0]), why)
            self._turn_away(request, client_address)
            return
        try:
            request.setblocking(False)
            # An answer goes out in pieces (head, then the body): with Nagle's algorithm the second waits for the
            # client's ACK of the first, which a client delays up to 40 ms once a connection is past its first
            # exchange. On a kept-alive connection that stalled every answer after the first (Go sets it too).
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stage = _Stage.REQUEST
            if self.tls is not None:
                # The handshake happens in the I/O thread, step by step, under the request's deadline.
                request = self.tls.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
                stage = _Stage.HANDSHAKE
        except OSError:
            request.close()
            self.release(key)
            return
        connection = Connection(request, client_address, key, stage, time.monotonic() + self.config.timeout)
        self._io.post(connection, self._io.add)

    def _admit(self, key: str) -> str:
        """Count the connection in, or say why not."""
        with self._lock:
            if self._open >= self.config.workers + self.config.queue:
                return TOO_MANY_OPEN.format(count=self._open)
            count = self._per_address.get(key, 0)
            if count >= self.config.max_per_address:
                return TOO_MANY_FROM_ADDRESS.format(count=count)
            self._open += 1
            self._per_address[key] = count + 1
            return ""

    def release(self, key: str | None) -> None:
        with self._lock:
            if key is None:  # a refused connection: counted apart
                self._refusing -= 1
                return
            self._open -= 1
            count = self._per_address.pop(key, 1) - 1
            if count > 0:
                self._per_address[key] = count

    def _turn_away(self, request: socket.socket, client_address: Any) -> None:
        """503 on plain HTTP; on TLS a plain close (no handshake for a connection we refuse, no plaintext)."""
        with self._lock:
            answer = self.tls is None and self._refusing < MAX_REFUSING
            self._refusing += answer
        with contextlib.suppress(OSError):
            request.setblocking(False)
            if answer:
                deadline = time.monotonic() + LINGER_SECONDS
                connection = Connection(request, client_address, None, _Stage.ANSWER, deadline)
                self._io.post(connection, self._io.refuse)
                return
            with contextlib.suppress(BlockingIOError):
                request.recv(_CHUNK)  # what already arrived, so the close is a FIN rather than a reset
            request.shutdown(socket.SHUT_WR)
        request.close()

    def refused(self, client: str, why: str) -> None:
        """Log a refusal, at most one line per address per REFUSAL_LOG_SECONDS."""
        now = time.monotonic()
        with self._lock:
            last, skipped = self._refusals.get(client, (-REFUSAL_LOG_SECONDS, 0))
            if now - last < REFUSAL_LOG_SECONDS:
                self._refusals[client] = (last, skipped + 1)
                return
            if len(self._refusals) >= 1024:
                self._refusals = {k: v for k, v in self._refusals.items() if now - v[0] < REFUSAL_LOG_SECONDS}
            self._refusals[client] = (now, 0)
        more = REFUSED_MORE.format(count=skipped) if skipped else ""
        self.log.info(REFUSED.format(client=client, why=why, more=more))

    # ---- workers ----------------------------------------------------------------------------------

    def submit(self, connection: Connection) -> bool:
        try:
            self._pool.submit(self._work, connection)
        except RuntimeError:  # the pool is shut down: the server is stopping
            return False
        return True

    def _work(self, connection: Connection) -> None:
        pieces: list[bytes] = []
        try:
            # The handler gets the Connection, not a socket: its setup() reads the request from it.
            handler = Handler(connection, connection.address, self)  # type: ignore[arg-type]
            pieces = handler.wfile.pieces
        except Exception as exc:  # a bug in serving must never take the server down
            # The operator should see it even under cron; the client gets a close, no partial answer.
            line = CONNECTION_DROPPED.format(client=connection.client, kind=type(exc).__name__, error=exc)
            self.log.warning(line)
            if connection.session:  # opened by a request that got no answer
                self.app.sessions.end(connection.session)
                connection.session = ""
        connection.answer_bytes = self.answering.take(sum(map(len, pieces)), self.config.timeout)
        connection.answer = deque(memoryview(piece) for piece in pieces)
        self._io.post(connection, self._io.answer)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """socketserver prints tracebacks to stderr; the log says it in one line instead."""
        self.log.warning(f"[serve] {client_address[0]} accept failed")

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._io.stop()


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
    if config.tls_cert:
        try:
            warning = certs.gate_startup(config.tls_cert, config.allow_expired, datetime.now(UTC))
        except certs.CertificateRefused as exc:
            raise ServeError(str(exc)) from None
        if warning is not None:
            log.warning(warning)
    tls = tls_server_context(config.tls_cert, config.tls_key) if config.tls_cert else None
    try:
        return NoemafedHTTPServer(config, McpApp(CortexReader(config.cortex_dir)), log, tls)
    except OSError as exc:
        raise ServeError(
            CANNOT_LISTEN.format(host=config.host, port=config.port, error=exc.strerror or exc),
            hint=PORT_IN_USE_HINT if exc.errno == errno.EADDRINUSE else None,
        ) from exc
