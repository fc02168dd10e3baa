"""A real MCP peer on 127.0.0.1 built on http.server, answering like Go noema (mcp-go) or Rust noema (rmcp).

It serves a real cortex's event log and usage rows (wire.md §5, §6) and has switches for the ways real peers
misbehave, so sync tests exercise noemafed's client over real sockets instead of mocks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import posixpath
import re
import ssl
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import TCPServer
from typing import Any, Literal

from peers import payloads
from peers.tls import PeerAddress, PeerTLS, make_tls

Flavor = Literal["go", "rust"]
GO: Flavor = "go"
RUST: Flavor = "rust"

UNAUTHORIZED_BODY = b'{"error":"unauthorized: NOEMA_MCP_KEY / access.shared_key_file required"}'
SUPPORTED_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST_VERSION = "2025-11-25"
# rmcp accepts these in MCP-Protocol-Version after initialize; anything else is a 400.
RUST_HEADER_VERSIONS = (*SUPPORTED_VERSIONS, "2026-07-28")
DEFAULT_SERVER_VERSION: Mapping[str, str] = {GO: "0.19.3", RUST: "0.22.2"}
RUST_ALLOWED_ORIGINS = ("app://obsidian.md", "capacitor://localhost")
RUST_ALLOWED_HOSTS = ("localhost", "127.0.0.1", "::1")
MAX_REQUEST_BODY = 4 * 1024 * 1024  # rmcp's limit; mcp-go has none
STREAM_CHUNK = 64 * 1024

# Plain-text answers, as the two libraries word them.
GO_INVALID_SESSION = "Invalid session ID"
GO_BAD_CONTENT_TYPE = "Invalid content type: must be 'application/json'"
GO_NOT_FOUND = "404 page not found"
RUST_NOT_ACCEPTABLE = "Not Acceptable: Client must accept both application/json and text/event-stream"
RUST_UNSUPPORTED_MEDIA = "Unsupported Media Type: Content-Type must be application/json"
RUST_SESSION_NOT_FOUND = "Not Found: Session not found"
RUST_EXPECT_INITIALIZE = "Unexpected message, expect initialize request"
RUST_SESSION_REQUIRED = "Bad Request: Session ID is required"
RUST_HOST_FORBIDDEN = "Forbidden: Host header is not allowed"
RUST_BAD_BODY = "Unprocessable Entity: failed to deserialize request body"

_GO_SESSION = re.compile(r"mcp-session-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

StatusOverride = int | tuple[int, str | bytes] | tuple[int, str | bytes, str]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it reached the peer, before any check, so tests can assert what the client sent."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    header_items: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        """First value of a header, case-insensitively (what Go's Header.Get returns)."""
        return next((value for key, value in self.header_items if key.lower() == name.lower()), None)

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.header_items if key.lower() == name.lower()]

    @property
    def rpc(self) -> dict[str, Any] | None:
        try:
            message = json.loads(self.body) if self.body else None
        except ValueError:
            return None
        return message if isinstance(message, dict) else None

    @property
    def rpc_method(self) -> str | None:
        method = (self.rpc or {}).get("method")
        return method if isinstance(method, str) else None

    @property
    def tool(self) -> str | None:
        if self.rpc_method != "tools/call":
            return None
        name = ((self.rpc or {}).get("params") or {}).get("name")
        return name if isinstance(name, str) else None

    @property
    def target(self) -> str:
        """The tool name for tools/call, else the JSON-RPC method, else the HTTP method (e.g. "DELETE")."""
        return self.tool or self.rpc_method or self.method


@dataclass
class Knobs:
    """Misbehaviour and identity switches; all off by default. Mutable: tests may flip them between polls."""

    mode: str | None = None  # sync|publish|subscribe; None means the manifest's federation.mode
    identity: Mapping[str, Any] | str | None = None  # replaces the payload; a str is sent as the raw text
    identity_error: str | None = None  # refuse cortex_identity with this message
    server_version: str | None = None  # serverInfo.version; None means the flavour's default
    protocol_version: str | None = None  # answer initialize with this version whatever was asked
    no_read_signal: bool = False  # an old peer without sync_read_signal
    drop_sessions_after: int | None = None  # forget every session once N requests were served (a restart)
    drop_sessions_repeat: bool = False  # ...and again after every further N
    status_override: StatusOverride | None = None  # answer with this status (and body, content type)
    close_without_answer: bool = False  # read the request, close the socket: RemoteDisconnected
    hang_seconds: float = 0.0  # sleep before answering (woken early by shutdown)
    huge_response_bytes: int = 0  # sync_events payload of this many bytes, streamed
    redirect_to: str | None = None  # answer redirect_status with this Location
    redirect_status: int = 307
    page_override: Callable[[str, int], str] | str | None = None  # sync_events payload text, (since, limit)
    extra_events: list[Mapping[str, Any] | str] = field(default_factory=list)  # served as if in the log
    sse_crlf: bool = False  # Rust flavour: CRLF line ends, like the Python SDK
    keepalives: int = 0  # Rust flavour: ":" comments before the response
    sse_delay: float = 0.0  # Rust flavour: pause before each keep-alive comment
    misbehave_on: str | None = None  # limit close/hang/redirect/status knobs to one tool or JSON-RPC method


class _Refusal(Exception):
    """A tool refusal; the flavour decides its shape (isError result for Go, -32602 error for Rust)."""


@dataclass(frozen=True)
class _Huge:
    """A sync_events answer too big to build in memory: streamed by the writer."""

    size: int


Reply = dict[str, Any] | tuple[Any, _Huge]


class StdlibPeer(PeerAddress):
    """A Go- or Rust-flavoured noema peer for one cortex; use as a context manager."""

    def __init__(
        self,
        cortex_dir: Path,
        flavor: Flavor = GO,
        key: str | None = None,
        tls: PeerTLS | bool | None = None,
        **knobs: Any,
    ) -> None:
        if flavor not in (GO, RUST):
            raise ValueError(f"flavor must be 'go' or 'rust', not {flavor!r}")
        self.cortex_dir = Path(cortex_dir)
        self.flavor: Flavor = flavor
        self.key = key
        self.tls: PeerTLS | None = make_tls() if tls is True else (tls or None)
        self.knobs = Knobs(**knobs)
        self.requests: list[RecordedRequest] = []
        # session id -> number of SSE streams served on it (rmcp numbers its event ids per stream)
        self.sessions: dict[str, int] = {}
        self._expected = hashlib.sha256(f"Bearer {key}".encode()).digest() if key is not None else None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._since_drop = 0
        self._dropped = False
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> StdlibPeer:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.peer = self
        if self.tls is not None:
            # Lazy handshake: it runs in the handler thread, so a stalled client cannot block accept().
            server.socket = self.tls.server_context().wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="stdlib-peer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop promptly: hanging handlers wake on the event and every handler thread is a daemon."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def __enter__(self) -> StdlibPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("peer not started")
        return int(self._server.server_address[1])

    # -- what tests inspect --------------------------------------------------------------------------------

    def calls(self) -> list[str]:
        """Targets in arrival order, e.g. ["initialize", "notifications/initialized", "cortex_identity", ...]."""
        with self._lock:
            return [request.target for request in self.requests]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- internals used by the handler ----------------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _authorized(self, value: str | None) -> bool:
        """Hash-and-compare like noema, so only the exact `Bearer <key>` passes (wire.md §4.1)."""
        if self._expected is None:
            return True
        given = hashlib.sha256((value or "").encode("latin-1", "replace")).digest()
        return value is not None and hmac.compare_digest(given, self._expected)

    def _count_request(self) -> None:
        """Forget all sessions after N served requests, like a peer restart (or every N with repeat)."""
        limit = self.knobs.drop_sessions_after
        if limit is None:
            return
        with self._lock:
            self._since_drop += 1
            if self._since_drop > limit and (self.knobs.drop_sessions_repeat or not self._dropped):
                self.sessions.clear()
                self._dropped = True
                self._since_drop = 0  # the refused request belongs to the old period

    def _new_session(self) -> str:
        sid = f"mcp-session-{uuid.uuid4()}" if self.flavor == GO else str(uuid.uuid4())
        with self._lock:
            self.sessions[sid] = 0
        return sid

    def _known_session(self, sid: str) -> bool:
        with self._lock:
            return sid in self.sessions

    def _forget_session(self, sid: str) -> bool:
        with self._lock:
            return self.sessions.pop(sid, None) is not None

    def _next_stream(self, sid: str) -> int:
        with self._lock:
            index = self.sessions.get(sid, 0)
            self.sessions[sid] = index + 1
            return index

    def _encode(self, value: Any) -> str:
        return payloads.go_json(value) if self.flavor == GO else payloads.rust_json(value)

    def _empty(self) -> str:
        return "null" if self.flavor == GO else "[]"

    def _info(self) -> payloads.CortexInfo:
        info = payloads.read_info(self.cortex_dir)
        return dataclasses.replace(info, mode=self.knobs.mode) if self.knobs.mode else info

    # -- JSON-RPC ------------------------------------------------------------------------------------------

    def _answer(self, message: dict[str, Any]) -> Reply:
        rid, method = message.get("id"), message.get("method")
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        if method == "initialize":
            return _ok(rid, self._initialize_result(params))
        if method == "ping":
            return _ok(rid, {})
        if method == "tools/list":
            return _ok(rid, {"tools": [_tool_schema(name) for name in self._tool_names()]})
        if method == "tools/call":
            return self._call(rid, params)
        return _error(rid, -32601, "Method not found")

    def _initialize_result(self, params: Mapping[str, Any]) -> dict[str, Any]:
        requested = params.get("protocolVersion")
        version = self.knobs.protocol_version or (
            requested if requested in SUPPORTED_VERSIONS else LATEST_VERSION
        )
        tools: dict[str, Any] = {"listChanged": True} if self.flavor == GO else {}
        server_version = self.knobs.server_version or DEFAULT_SERVER_VERSION[self.flavor]
        return {
            "protocolVersion": version,
            "capabilities": {"tools": tools},
            "serverInfo": {"name": "noema", "version": server_version},
        }

    def _tool_names(self) -> tuple[str, ...]:
        if self.knobs.no_read_signal:
            return tuple(name for name in payloads.TOOL_NAMES if name != "sync_read_signal")
        return payloads.TOOL_NAMES

    def _call(self, rid: Any, params: Mapping[str, Any]) -> Reply:
        name = params.get("name")
        if name not in self._tool_names():
            text = f"tool '{name}' not found: tool not found" if self.flavor == GO else "tool not found"
            return _error(rid, -32602, text)
        arguments = params.get("arguments")
        tools: dict[str, Callable[[Any], str | _Huge]] = {
            "cortex_identity": self._identity,
            "sync_events": self._sync_events,
            "sync_read_signal": self._sync_read_signal,
        }
        try:
            text = tools[str(name)](arguments)
        except _Refusal as refusal:
            if self.flavor == RUST:
                return _error(rid, -32602, str(refusal))
            return _ok(rid, {"content": [{"type": "text", "text": str(refusal)}], "isError": True})
        if isinstance(text, _Huge):
            return (rid, text)
        return _ok(rid, self._tool_result(text))

    def _tool_result(self, text: str) -> dict[str, Any]:
        result: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
        if self.flavor == RUST:
            result["isError"] = False  # rmcp always sends it; mcp-go omits it when false
        return result

    def _arguments(self, arguments: Any) -> tuple[str, int]:
        """(since, limit): mcp-go coerces leniently; rmcp deserializes strictly (wire.md §5.5, P19)."""
        if self.flavor == GO:
            args = arguments if isinstance(arguments, dict) else {}
            since = args.get("since")
            return (since if isinstance(since, str) else ""), _go_int(args.get("limit"))
        if not isinstance(arguments, dict | None):
            raise _Refusal("failed to deserialize parameters: invalid type: expected a map")
        args = arguments or {}
        since = args.get("since", "")
        limit = args.get("limit", payloads.DEFAULT_LIMIT)
        if not isinstance(since, str):
            raise _Refusal("failed to deserialize parameters: invalid type for `since`, expected a string")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise _Refusal("failed to deserialize parameters: invalid type for `limit`, expected u32")
        return since, limit

    def _identity(self, arguments: Any) -> str:
        if self.knobs.identity_error is not None:
            raise _Refusal(self.knobs.identity_error)
        identity = self.knobs.identity
        if isinstance(identity, str):
            return identity
        return self._encode(
            dict(identity) if identity is not None else payloads.identity_payload(self._info())
        )

    def _sync_events(self, arguments: Any) -> str | _Huge:
        if self._info().mode == "subscribe":
            raise _Refusal(payloads.SUBSCRIBE_EVENTS)
        since, limit = self._arguments(arguments)
        if since and not payloads.valid_cursor(since):
            raise _Refusal(payloads.BAD_CURSOR)
        limit = payloads.effective_limit(limit)
        override = self.knobs.page_override
        if self.knobs.huge_response_bytes:
            return _Huge(max(self.knobs.huge_response_bytes, 4))  # room for the [""] around the filler
        if callable(override):
            return override(since, limit)
        if override is not None:
            return override
        rust = self.flavor == RUST
        page = payloads.db_events(self.cortex_dir, since, limit, self._encode, omit_empty_data=rust)
        extra = [payloads.raw_event(item, self._encode) for item in self.knobs.extra_events]
        merged = payloads.merge_events(page, extra, since, limit)
        return payloads.array_text([event.text for event in merged], self._empty())

    def _sync_read_signal(self, arguments: Any) -> str:
        info = self._info()
        if info.mode == "subscribe":
            raise _Refusal(payloads.SUBSCRIBE_SIGNAL)
        since, limit = self._arguments(arguments)
        rows = payloads.usage_rows(self.cortex_dir, info.id, since, payloads.effective_limit(limit))
        return payloads.array_text([self._encode(row) for row in rows], self._empty())


def _ok(rid: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "result": result}


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


def _go_int(value: Any) -> int:
    """mcp-go's GetInt: numbers truncate, numeric strings parse, anything else is the default."""
    if isinstance(value, bool) or value is None:
        return payloads.DEFAULT_LIMIT
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    return payloads.DEFAULT_LIMIT


def _tool_schema(name: str) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    if name != "cortex_identity":
        properties = {"since": {"type": "string"}, "limit": {"type": "integer"}}
    return {"name": name, "inputSchema": {"type": "object", "properties": properties}}


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _host_name(host: str) -> str:
    """The Host header without its port; IPv6 literals lose their brackets."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if ":" in host else host


def _clean_path(path: str) -> str:
    """Go's ServeMux cleanPath: collapse slashes and dot segments, keep a trailing slash."""
    cleaned = posixpath.normpath(re.sub("/+", "/", path)) if path else "/"
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # hanging handlers must never block shutdown
    peer: StdlibPeer

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), which can stall in sandboxes.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up or failing TLS are test scenarios; anything else is a peer bug worth a traceback."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # As Go and rmcp do: head and body go out at once, so a kept-alive client is not held up by delayed ACKs.
    disable_nagle_algorithm = True
    timeout = 30  # idle keep-alive connections end; a handler never waits forever on a silent client
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the recorded requests are the log."""

    def setup(self) -> None:
        super().setup()
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    # -- the pipeline ---------------------------------------------------------------------------------------

    @property
    def peer(self) -> StdlibPeer:
        return self.server.peer

    @property
    def rust(self) -> bool:
        return self.peer.flavor == RUST

    def _handle(self) -> None:
        try:
            body = self._read_body()
            if body is None:
                return
            request = RecordedRequest(
                self.command, self._target(), dict(self.headers.items()), body, tuple(self.headers.items())
            )
            self.peer._record(request)
            if not self._misbehave(request) and not self._guard():
                self._dispatch(request)
        except OSError:
            # The client hung up mid-answer (byte budget, timeout): nothing left to say.
            self.close_connection = True

    def _target(self) -> str:
        """The request target as sent: http.server rewrites a leading `//` in self.path, Go's mux does not."""
        parts = self.requestline.split(" ")
        return parts[1] if len(parts) >= 2 else self.path

    def _read_body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.rust and length > MAX_REQUEST_BODY:
            self.close_connection = True
            self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"Payload Too Large")
            return None
        return self.rfile.read(length) if length else b""

    def _misbehave(self, request: RecordedRequest) -> bool:
        """The knobs that make the peer fail at the HTTP level; True when the request was answered."""
        knobs = self.peer.knobs
        if knobs.misbehave_on is not None and knobs.misbehave_on != request.target:
            return False
        if knobs.close_without_answer:
            self.close_connection = True
            return True
        if knobs.hang_seconds and self.peer._stopping.wait(knobs.hang_seconds):
            self.close_connection = True  # shutting down: abandon the request
            return True
        if knobs.redirect_to:
            self._send(knobs.redirect_status, b"", headers={"Location": knobs.redirect_to})
            return True
        if knobs.status_override is not None:
            self._send_override(knobs.status_override)
            return True
        return False

    def _send_override(self, override: StatusOverride) -> None:
        if isinstance(override, int):
            if override == HTTPStatus.UNAUTHORIZED:
                self._send(override, UNAUTHORIZED_BODY, "application/json")
            else:
                self._send(override, HTTPStatus(override).phrase.encode(), "text/plain; charset=utf-8")
            return
        status, body = override[0], override[1]
        raw = body.encode() if isinstance(body, str) else body
        default_type = "application/json" if raw.lstrip().startswith(b"{") else "text/plain; charset=utf-8"
        self._send(status, raw, override[2] if len(override) == 3 else default_type)

    def _guard(self) -> bool:
        """CORS, Origin, bearer, path and Host checks in each server's order; True when the request was refused."""
        if not self.rust and self.command == "OPTIONS":
            self._send(HTTPStatus.NO_CONTENT, b"")  # Go's CORS layer answers preflights before auth
            return True
        origin = self.headers.get("Origin")
        if self.rust and origin is not None and origin not in RUST_ALLOWED_ORIGINS:
            self._send(HTTPStatus.FORBIDDEN, b"")
            return True
        if not self.peer._authorized(self.headers.get("Authorization")):
            self._send(HTTPStatus.UNAUTHORIZED, UNAUTHORIZED_BODY, "application/json")
            return True
        return self._refuse_path() or self._refuse_host()

    def _refuse_path(self) -> bool:
        path = self._target().split("?", 1)[0]
        if self.rust:
            if path in ("/mcp", "/mcp/"):
                return False
            self._send(HTTPStatus.NOT_FOUND, b"")
            return True
        if path == "/mcp":
            return False
        cleaned = _clean_path(path)
        if cleaned != path:
            self._send(HTTPStatus.MOVED_PERMANENTLY, b"", headers={"Location": cleaned})
        else:
            self._text(HTTPStatus.NOT_FOUND, GO_NOT_FOUND)
        return True

    def _refuse_host(self) -> bool:
        if not self.rust or _host_name(self.headers.get("Host") or "") in RUST_ALLOWED_HOSTS:
            return False
        self._text(HTTPStatus.FORBIDDEN, RUST_HOST_FORBIDDEN)
        return True

    def _dispatch(self, request: RecordedRequest) -> None:
        self.peer._count_request()
        if self.command == "POST":
            self._post(request.body)
        elif self.command == "DELETE":
            self._delete()
        elif self.command == "GET" or self.rust:
            # Neither noema client opens the GET stream; a 405 keeps the peer from holding sockets open.
            self._send(
                HTTPStatus.METHOD_NOT_ALLOWED, b"Method Not Allowed", headers={"Allow": "POST, DELETE"}
            )
        else:
            self._text(HTTPStatus.NOT_FOUND, GO_NOT_FOUND)

    def _delete(self) -> None:
        sid = self.headers.get("Mcp-Session-Id")
        if not self.rust:
            if sid:
                self.peer._forget_session(sid)
            self._send(HTTPStatus.OK, b"")  # mcp-go terminates nothing and answers 200
        elif not sid:
            self._text(HTTPStatus.BAD_REQUEST, RUST_SESSION_REQUIRED)
        elif not self.peer._forget_session(sid):
            self._text(HTTPStatus.NOT_FOUND, RUST_SESSION_NOT_FOUND)
        else:
            self._send(HTTPStatus.ACCEPTED, b"")

    def _post(self, body: bytes) -> None:
        if self._refuse_content():
            return
        try:
            message = json.loads(body)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self._bad_body()
            return
        is_init = message.get("method") == "initialize"
        sid = self._session(message) if is_init else self._existing_session()
        if sid is None:
            return
        if "id" not in message:
            self._send(HTTPStatus.ACCEPTED, b"")  # notifications (and client responses) get 202, no body
            return
        reply = self.peer._answer(message)
        if self.rust:
            self._write_sse(reply, sid, is_init)
        else:
            self._write_json(reply, sid if is_init else None)

    def _refuse_content(self) -> bool:
        content_type = self.headers.get("Content-Type") or ""
        if not self.rust:
            if content_type.startswith("application/json"):
                return False
            self._text(HTTPStatus.BAD_REQUEST, GO_BAD_CONTENT_TYPE)
            return True
        accept = self.headers.get("Accept") or ""
        if "application/json" not in accept or "text/event-stream" not in accept:
            self._text(HTTPStatus.NOT_ACCEPTABLE, RUST_NOT_ACCEPTABLE)
            return True
        if _media_type(content_type) != "application/json":
            self._text(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, RUST_UNSUPPORTED_MEDIA)
            return True
        return False

    def _bad_body(self) -> None:
        if self.rust:
            self._text(HTTPStatus.UNPROCESSABLE_ENTITY, RUST_BAD_BODY)
            return
        error = _error(None, -32700, "Parse error")
        self._send(HTTPStatus.BAD_REQUEST, (payloads.go_json(error) + "\n").encode(), "application/json")

    def _session(self, message: dict[str, Any]) -> str | None:
        """A new session for initialize; rmcp first insists the version header matches the body."""
        header = self.headers.get("MCP-Protocol-Version")
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        if self.rust and header is not None and header != params.get("protocolVersion"):
            self._text(
                HTTPStatus.BAD_REQUEST,
                "Bad Request: MCP-Protocol-Version header does not match initialize params.protocolVersion",
            )
            return None
        return self.peer._new_session()

    def _existing_session(self) -> str | None:
        """The session a non-initialize POST names, or None after answering 404/422/400."""
        sid = self.headers.get("Mcp-Session-Id")
        if not self.rust:
            # mcp-go v0.46 only checks the format; with drop_sessions_after it acts like the stateful ≤0.43.
            tracking = self.peer.knobs.drop_sessions_after is not None
            if sid and _GO_SESSION.fullmatch(sid) and (not tracking or self.peer._known_session(sid)):
                return sid
            self._text(HTTPStatus.NOT_FOUND, GO_INVALID_SESSION)
            return None
        version = self.headers.get("MCP-Protocol-Version")
        if version is not None and version not in RUST_HEADER_VERSIONS:
            self._text(HTTPStatus.BAD_REQUEST, f"Bad Request: Unsupported MCP-Protocol-Version: {version}")
            return None
        if sid is None:
            self._text(HTTPStatus.UNPROCESSABLE_ENTITY, RUST_EXPECT_INITIALIZE)
            return None
        if not self.peer._known_session(sid):
            self._text(HTTPStatus.NOT_FOUND, RUST_SESSION_NOT_FOUND)
            return None
        return sid

    # -- writers ----------------------------------------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        if not self.rust:
            self.send_header("Access-Control-Allow-Origin", "*")  # Go's CORS layer, on every response
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _text(self, status: int, text: str) -> None:
        """Go's http.Error (text/plain, newline) or rmcp's bare body."""
        if self.rust:
            self._send(status, text.encode())
        else:
            headers = {"X-Content-Type-Options": "nosniff"}
            self._send(status, (text + "\n").encode(), "text/plain; charset=utf-8", headers)

    def _write_json(self, reply: Reply, sid: str | None) -> None:
        """mcp-go: one JSON object from json.Encoder (HTML-escaped, newline), session header on initialize."""
        headers = {"Mcp-Session-Id": sid} if sid else {}
        if isinstance(reply, dict):
            self._send(HTTPStatus.OK, (payloads.go_json(reply) + "\n").encode(), "application/json", headers)
            return
        prefix, suffix = self._huge_envelope(reply)
        size = reply[1].size
        length = len(prefix) + size + 2 + len(suffix) + 1  # the payload's two quotes gain backslashes
        self.send_response(HTTPStatus.OK)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        for piece in self._huge_pieces(prefix, size, suffix + b"\n"):
            self.wfile.write(piece)

    def _write_sse(self, reply: Reply, sid: str, is_init: bool) -> None:
        """rmcp: a chunked SSE stream: priming event, optional keep-alives, the response, end of stream."""
        knobs = self.peer.knobs
        eol = b"\r\n" if knobs.sse_crlf else b"\n"
        stream = "0" if is_init else str(self.peer._next_stream(sid))
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Accel-Buffering", "no")
        if is_init:
            self.send_header("Mcp-Session-Id", sid)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        priming_id = b"0" if is_init else f"0/{stream}".encode()
        self._chunk(b"data: " + eol + b"id: " + priming_id + eol + b"retry: 3000" + eol + eol)
        for _ in range(knobs.keepalives):
            if knobs.sse_delay and self.peer._stopping.wait(knobs.sse_delay):
                return
            self._chunk(b":" + eol + eol)
        trailer = eol if is_init else f"id: 1/{stream}".encode() + eol + eol
        if isinstance(reply, dict):
            self._chunk(b"data: " + payloads.rust_json(reply).encode() + eol + trailer)
        else:
            prefix, suffix = self._huge_envelope(reply)
            for piece in self._huge_pieces(b"data: " + prefix, reply[1].size, suffix + eol + trailer):
                self._chunk(piece)
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        """One chunk of a chunked body; the empty chunk ends the body."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _huge_envelope(self, reply: Reply) -> tuple[bytes, bytes]:
        """The JSON-RPC text around a huge payload, split where the payload goes."""
        assert isinstance(reply, tuple)
        marker = "\x00huge\x00"
        encoded = self.peer._encode(_ok(reply[0], self.peer._tool_result(marker)))
        prefix, suffix = encoded.split(self.peer._encode(marker)[1:-1])
        return prefix.encode(), suffix.encode()

    @staticmethod
    def _huge_pieces(prefix: bytes, size: int, suffix: bytes) -> Iterator[bytes]:
        """The payload `["xxx…"]` (size bytes once decoded) as it sits JSON-escaped inside the envelope."""
        filler = max(size - 4, 0)
        yield prefix + b'[\\"'
        block = b"x" * STREAM_CHUNK
        for _ in range(filler // STREAM_CHUNK):
            yield block
        yield b"x" * (filler % STREAM_CHUNK) + b'\\"]' + suffix


__all__ = ["GO", "RUST", "UNAUTHORIZED_BODY", "Knobs", "RecordedRequest", "StdlibPeer"]
