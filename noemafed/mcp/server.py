"""`noemafed serve`: this cortex's event log to peers over MCP Streamable HTTP, guarded like noema (wire.md §3–§6)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import socket
import sqlite3
import ssl
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from noemafed import __version__
from noemafed.cortex import state
from noemafed.cortex.access import AccessKey
from noemafed.cortex.events import EVENT_COLUMNS, event_from_row, event_json
from noemafed.cortex.manifest import Manifest, read_manifest
from noemafed.cortex.open import DB_FILE, connect, database_dir, open_database
from noemafed.errors import ExitCode, NoemafedError
from noemafed.logs import Log
from noemafed.mcp.client import SUPPORTED_PROTOCOL_VERSIONS
from noemafed.text.gotext import go_json_dumps

LATEST_PROTOCOL_VERSION = "2025-11-25"
SERVER_NAME = "noema"  # noema clients expect it; serverInfo.version says which build this is
UNAUTHORIZED_BODY = b'{"error":"unauthorized: NOEMA_MCP_KEY / access.shared_key_file required"}'
BAD_SINCE = "since must be a valid ULID cursor (26-char Crockford base32)"
SUBSCRIBE_EVENTS = "this cortex is in subscribe mode and does not serve events"
SUBSCRIBE_READ_SIGNAL = "this cortex is in subscribe mode and does not serve read signal"
ALLOWED_ORIGINS = ("app://obsidian.md", "capacitor://localhost")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
MAX_REQUEST_BODY = 4 * 1024 * 1024
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# A page stops growing past this many bytes (rmcp clients cap one SSE event at 16 MiB); the client then
# sees a short page and carries on at its next poll.
MAX_PAGE_BYTES = 8 * 1024 * 1024
SESSION_IDLE_SECONDS = 30 * 60
MAX_SESSIONS = 10_000

ENDPOINTS = {"/mcp": "all", "/mcp/federation": "federation"}
_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")

_SINCE_LIMIT_SCHEMA = {
    "type": "object",
    "properties": {
        "since": {"type": "string", "description": "exclusive cursor"},
        "limit": {"type": "integer", "description": "1..1000, default 100"},
    },
}
TOOLS = [
    {
        "name": "cortex_identity",
        "description": "This cortex's stable identity for federation: id, name, manifest version, mode, signing key.",
        "inputSchema": {"type": "object", "properties": {}},
    },
    {
        "name": "sync_events",
        "description": "Events with id greater than `since`, ascending, every origin; `limit` 1..1000 (default 100).",
        "inputSchema": _SINCE_LIMIT_SCHEMA,
    },
    {
        "name": "sync_read_signal",
        "description": "This cortex's own usage rows with updated_at greater than `since`, ascending.",
        "inputSchema": _SINCE_LIMIT_SCHEMA,
    },
]


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


class _Refusal(Exception):
    """A tool-level refusal: an `isError` result, as Go noema answers it."""


class _RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Sessions:
    """Session ids per endpoint, expiring when idle; bounded so a flood cannot grow memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def create(self, endpoint: str) -> str:
        session = uuid.uuid4().hex
        with self._lock:
            self._sessions[session] = (endpoint, time.monotonic())
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return session

    def touch(self, session: str, endpoint: str) -> bool:
        """True when the session exists for this endpoint and has not expired."""
        now = time.monotonic()
        with self._lock:
            entry = self._sessions.get(session)
            if entry is None or entry[0] != endpoint or now - entry[1] > SESSION_IDLE_SECONDS:
                self._sessions.pop(session, None)
                return False
            self._sessions[session] = (endpoint, now)
            self._sessions.move_to_end(session)
            return True

    def end(self, session: str) -> None:
        with self._lock:
            self._sessions.pop(session, None)


class CortexReader:
    """Read-only access for request handlers: one connection per worker thread, manifest cached by mtime."""

    def __init__(self, cortex_dir: Path) -> None:
        self.cortex_dir = cortex_dir
        self.db_path = database_dir(cortex_dir) / DB_FILE
        self._local = threading.local()
        self._manifest_lock = threading.Lock()
        self._manifest: tuple[float, Manifest] | None = None

    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.db_path)
            self._local.conn = conn
        return conn

    def manifest(self) -> Manifest:
        """The current manifest, re-read when cortex.md changes so set-mode applies without a restart."""
        path = self.cortex_dir / "cortex.md"
        mtime = path.stat().st_mtime_ns
        with self._manifest_lock:
            if self._manifest is None or self._manifest[0] != mtime:
                self._manifest = (mtime, read_manifest(self.cortex_dir))
            return self._manifest[1]

    def identity(self) -> str:
        manifest = self.manifest()
        payload: dict[str, Any] = {
            "id": manifest.id,
            "name": manifest.name,
            "version": manifest.version,
            "mode": manifest.federation_mode,
        }
        if manifest.signing_public_key:
            payload["pubkey"] = manifest.signing_public_key
        rank = state.get_local_rank(self.conn())
        if rank.observed_at:
            payload["rank"] = {"cortex_id": manifest.id, "rank": rank.rank, "observed_at": rank.observed_at}
        return go_json_dumps(payload)

    def events_page(self, since: str, limit: int) -> tuple[str, int]:
        """A page of stored events with `data`, `signature` and `pubkey` exactly as stored."""
        rows = (
            self.conn()
            .execute(
                f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE id > ? ORDER BY id LIMIT ?",
                (since, limit),
            )
            .fetchall()  # fetch all: the implicit read transaction ends here, no lock outlives the request
        )
        parts: list[str] = []
        size = 2
        for row in rows:
            text = event_json(event_from_row(row))
            if parts and size + len(text) + 1 > MAX_PAGE_BYTES:
                break
            parts.append(text)
            size += len(text) + 1
        return "[" + ",".join(parts) + "]", len(parts)

    def usage_page(self, since: str, limit: int) -> tuple[str, int]:
        own = self.manifest().id
        rows = (
            self.conn()
            .execute(
                "SELECT trace_id, peer_cortex_id, read_count, modify_count, search_hit_count, last_read_at, updated_at "
                "FROM trace_usage WHERE peer_cortex_id = ? AND updated_at > ? ORDER BY updated_at LIMIT ?",
                (own, since, limit),
            )
            .fetchall()
        )
        out = []
        for trace_id, peer_id, reads, modifies, hits, last_read, updated in rows:
            row: dict[str, Any] = {
                "trace_id": trace_id,
                "peer_cortex_id": peer_id,
                "read_count": reads,
                "modify_count": modifies,
            }
            if hits:
                row["search_hit_count"] = hits
            if last_read:
                row["last_read_at"] = last_read
            row["updated_at"] = updated
            out.append(row)
        return go_json_dumps(out), len(out)


def _limit(value: Any) -> int:
    """noema's rule: a missing, non-integer, ≤0 or >1000 limit means 100 (not clamped to 1000)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value > MAX_LIMIT:
        return DEFAULT_LIMIT
    return value


def _since(arguments: dict[str, Any]) -> str:
    value = arguments.get("since", "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Refusal(BAD_SINCE)
    return value


class McpApp:
    """The JSON-RPC side: methods, tools and sessions, independent of HTTP details."""

    def __init__(self, reader: CortexReader, log: Log) -> None:
        self.reader = reader
        self.sessions = Sessions()
        self.log = log

    def initialize(self, params: dict[str, Any]) -> dict[str, Any]:
        requested = params.get("protocolVersion")
        version = requested if requested in SUPPORTED_PROTOCOL_VERSIONS else LATEST_PROTOCOL_VERSION
        return {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": SERVER_NAME, "version": __version__},
        }

    def call(self, method: str, params: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The result of one method and a short note for the request log."""
        if method == "ping":
            return {}, ""
        if method == "tools/list":
            return {"tools": TOOLS}, ""
        if method == "tools/call":
            name = params.get("name")
            arguments = params.get("arguments") or {}
            if not isinstance(name, str) or not isinstance(arguments, dict):
                raise _RpcError(-32602, "invalid tools/call params")
            try:
                text, note = self.tool(name, arguments)
            except _Refusal as exc:
                return {"content": [{"type": "text", "text": str(exc)}], "isError": True}, f"{name} refused"
            return {"content": [{"type": "text", "text": text}], "isError": False}, note
        raise _RpcError(-32601, f"Method not found: {method}")

    def tool(self, name: str, arguments: dict[str, Any]) -> tuple[str, str]:
        if name == "cortex_identity":
            return self.reader.identity(), name
        if name == "sync_events":
            if self.reader.manifest().federation_mode == "subscribe":
                raise _Refusal(SUBSCRIBE_EVENTS)
            since = _since(arguments)
            if since and not _ULID.match(since):
                raise _Refusal(BAD_SINCE)
            text, count = self.reader.events_page(since, _limit(arguments.get("limit")))
            return text, f"{name} {count} events"
        if name == "sync_read_signal":
            if self.reader.manifest().federation_mode == "subscribe":
                raise _Refusal(SUBSCRIBE_READ_SIGNAL)
            text, count = self.reader.usage_page(_since(arguments), _limit(arguments.get("limit")))
            return text, f"{name} {count} rows"
        raise _RpcError(-32602, f"tool '{name}' not found: tool not found")


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
        elapsed = (time.monotonic() - self._started) * 1000
        detail = f" {note}" if note else ""
        self.server.log.info(
            f"[serve] {self.client_address[0]} {self.command} {self.path} {status}{detail} {elapsed:.0f}ms"
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
        """The endpoint kind when the request may proceed; otherwise the refusal has been sent."""
        self._started = time.monotonic()
        origin = self.headers.get("Origin")
        if origin is not None and origin not in ALLOWED_ORIGINS:
            self._send(403)
            return None
        if not self.server.authorized(self.headers.get("Authorization")):
            self._send(401, UNAUTHORIZED_BODY, "application/json")
            return None
        if _host_only(self.headers.get("Host") or "") not in self.server.allowed_hosts:
            self._send(403, b"Forbidden: Host header is not allowed", "text/plain; charset=utf-8")
            return None
        path = self.path.split("?", 1)[0]
        path = path[:-1] if path.endswith("/") and len(path) > 1 else path
        kind = ENDPOINTS.get(path)
        if kind is None:
            self._send(404, b"404 page not found\n", "text/plain; charset=utf-8")
            return None
        return path

    # ---- methods -----------------------------------------------------------------------------------

    def do_OPTIONS(self) -> None:
        self._started = time.monotonic()
        self._send(204, extra={"Access-Control-Allow-Origin": "*"})

    def do_GET(self) -> None:
        if self._guard() is not None:
            self._send(405, b"Method Not Allowed: no server-initiated stream", "text/plain; charset=utf-8")

    def do_DELETE(self) -> None:
        endpoint = self._guard()
        if endpoint is None:
            return
        session = self.headers.get("Mcp-Session-Id")
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
        try:
            message = json.loads(body)
        except ValueError:
            self._rpc_error(None, -32700, "Parse error", 400)
            return
        if (
            not isinstance(message, dict)
            or message.get("jsonrpc") != "2.0"
            or not isinstance(message.get("method"), str)
        ):
            self._rpc_error(None, -32600, "Invalid Request (batches are not supported)", 400)
            return
        self._dispatch(endpoint, message)

    def _read_body(self) -> bytes | None:
        if (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower() != "application/json":
            self._send(
                415,
                b"Unsupported Media Type: Content-Type must be application/json",
                "text/plain; charset=utf-8",
            )
            return None
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self._send(411, b"Length Required", "text/plain; charset=utf-8")
            return None
        length = int(length_text)
        if length > MAX_REQUEST_BODY:
            self._send(413, b"Payload Too Large: request body over 4 MiB", "text/plain; charset=utf-8")
            return None
        return self.rfile.read(length)

    def _dispatch(self, endpoint: str, message: dict[str, Any]) -> None:
        method = message["method"]
        params = message.get("params") or {}
        if not isinstance(params, dict):
            self._rpc_error(message.get("id"), -32602, "params must be an object", 200)
            return
        app = self.server.app
        if "id" not in message:  # a notification: accepted, nothing to say
            self._send(202, note=method)
            return
        request_id = message["id"]
        if method == "initialize":
            new_session = app.sessions.create(endpoint)
            self._answer(request_id, app.initialize(params), {"Mcp-Session-Id": new_session}, note=method)
            return
        session = self.headers.get("Mcp-Session-Id")
        if not session:
            self._rpc_error(request_id, -32600, "Bad Request: Missing session ID", 400)
            return
        if not app.sessions.touch(session, endpoint):
            self._rpc_error(request_id, -32600, "Session not found", 404)
            return
        version = self.headers.get("MCP-Protocol-Version")
        if version is not None and version not in SUPPORTED_PROTOCOL_VERSIONS:
            self._rpc_error(
                request_id, -32600, f"Bad Request: unsupported MCP-Protocol-Version {version}", 400
            )
            return
        try:
            result, note = app.call(method, params)
        except _RpcError as exc:
            self._rpc_error(request_id, exc.code, str(exc), 200)
            return
        except (NoemafedError, sqlite3.Error) as exc:
            self._rpc_error(request_id, -32603, str(exc), 200)
            return
        self._answer(request_id, result, note=note or method)

    def _wants_sse(self) -> bool:
        """JSON unless the client accepts SSE and not JSON: every noema client reads JSON."""
        accept = (self.headers.get("Accept") or "").lower()
        return "text/event-stream" in accept and "application/json" not in accept

    def _answer(
        self, request_id: Any, result: dict[str, Any], extra: dict[str, str] | None = None, note: str = ""
    ) -> None:
        payload = json.dumps(
            {"jsonrpc": "2.0", "id": request_id, "result": result}, ensure_ascii=False, separators=(",", ":")
        )
        if self._wants_sse():
            self._send(
                200,
                f"event: message\ndata: {payload}\n\n".encode(),
                "text/event-stream",
                {**(extra or {}), "Cache-Control": "no-cache"},
                note,
            )
        else:
            self._send(200, payload.encode() + b"\n", "application/json", extra, note)

    def _rpc_error(self, request_id: Any, code: int, message: str, status: int) -> None:
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}})
        self._send(status, body.encode(), "application/json", note=f"error {code}")


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
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
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
            self.log.info(f"[serve] {client_address[0]} connection dropped: {type(exc).__name__}: {exc}")
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
        raise ServeError(f"loading TLS certificate {cert} and key {key}: {exc}") from exc
    return context


def make_server(config: ServeConfig, log: Log) -> NoemafedHTTPServer:
    """Check the configuration like noema does, then bind."""
    if config.host in ("0.0.0.0", "::", ""):  # noqa: S104 (this is the check that refuses them)
        raise ServeError(
            f"--host {config.host!r} is not allowed: name the address peers dial (it is also the allowed Host)",
        )
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ServeError("--tls-cert and --tls-key go together")
    if config.access.keyed and not config.tls_cert:
        raise ServeError(
            "a keyed cortex never serves plain HTTP: the shared key would cross the network in clear text",
            hint="pass --tls-cert and --tls-key, or set access.tls_cert_path and access.tls_key_path in cortex.md",
        )
    open_database(config.cortex_dir).close()  # fail now, not at the first request, if the DB is unusable
    reader = CortexReader(config.cortex_dir)
    tls = tls_server_context(config.tls_cert, config.tls_key) if config.tls_cert else None
    try:
        return NoemafedHTTPServer(config, McpApp(reader, log), log, tls)
    except OSError as exc:
        raise ServeError(f"listening on {config.host}:{config.port}: {exc.strerror or exc}") from exc
