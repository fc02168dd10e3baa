"""The MCP side of `noemafed serve`: sessions, JSON-RPC and the three tools over the cortex, with no socket in
sight, so the answers can be tested byte for byte without a server (wire.md §5–§6)."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, replace
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

from noemafed import __version__
from noemafed.cortex import state
from noemafed.cortex.events import EVENT_COLUMNS, served_event_json
from noemafed.cortex.manifest import Manifest, read_manifest
from noemafed.cortex.open import DB_FILE, connect, database_dir
from noemafed.errors import NoemafedError
from noemafed.mcp.protocol import (
    CORTEX_IDENTITY,
    INITIALIZE,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    JSONRPC_VERSION,
    LATEST_PROTOCOL_VERSION,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    PING,
    SUPPORTED_PROTOCOL_VERSIONS,
    SYNC_EVENTS,
    SYNC_READ_SIGNAL,
    TOOLS_CALL,
    TOOLS_LIST,
)
from noemafed.text.gotext import go_json_dumps
from noemafed.text.sanitize import scrub

SERVER_NAME = "noema"  # noema clients expect it; serverInfo.version says which build this is
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# A page stops growing past this many bytes (rmcp clients cap one SSE event at 16 MiB); the client then
# sees a short page and carries on at its next poll.
MAX_PAGE_BYTES = 8 * 1024 * 1024
# A page is built, escaped into its answer and encoded in pieces of about this many characters: a request holds
# its page about once (as the bytes it sends), not as rows, text, answer and bytes at once.
PIECE_CHARS = 64 * 1024
READER_CACHE_KIB = 256
SESSION_IDLE_SECONDS = 30 * 60
MAX_SESSIONS = 10_000

# Tool refusals (`isError` results), word for word as Go noema sends them.
BAD_SINCE = "since must be a valid ULID cursor (26-char Crockford base32)"
SUBSCRIBE_EVENTS = "this cortex is in subscribe mode and does not serve events"
SUBSCRIBE_READ_SIGNAL = "this cortex is in subscribe mode and does not serve read signal"
# JSON-RPC error messages; the session ones are the Python SDK's.
PARSE_ERROR_TEXT = "Parse error"
INVALID_REQUEST_TEXT = "Invalid Request (batches are not supported)"
INVALID_ID = "Invalid Request (id must be a string, a number or null)"
PARAMS_NOT_OBJECT = "params must be an object"
MISSING_SESSION = "Bad Request: Missing session ID"
UNKNOWN_SESSION = "Session not found"
UNSUPPORTED_VERSION = "Bad Request: unsupported MCP-Protocol-Version {version}"
BAD_CALL_PARAMS = "invalid tools/call params"
UNKNOWN_METHOD = "Method not found: {method}"
UNKNOWN_TOOL = "tool '{name}' not found: tool not found"
# What the access log says about a request beyond its status.
NOTE_REFUSED = "{tool} refused"
NOTE_EVENTS = "{tool} {count} events"
NOTE_ROWS = "{tool} {count} rows"
NOTE_ERROR = "error {code}"

_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")

_SINCE_LIMIT_SCHEMA = {
    "type": "object",
    "properties": {
        "since": {"type": "string", "description": "exclusive cursor"},
        "limit": {"type": "integer", "description": "1..1000, default 100"},
    },
}
# As the live build advertises its read tools: a client may call them without asking its user first.
_READ_ONLY = {"readOnlyHint": True}
TOOLS = [
    {
        "name": CORTEX_IDENTITY,
        "description": "This cortex's stable identity for federation: id, name, manifest version, mode, signing key.",
        "inputSchema": {"type": "object", "properties": {}},
        "annotations": _READ_ONLY,
    },
    {
        "name": SYNC_EVENTS,
        "description": "Events with id greater than `since`, ascending, every origin; `limit` 1..1000 (default 100).",
        "inputSchema": _SINCE_LIMIT_SCHEMA,
        "annotations": _READ_ONLY,
    },
    {
        "name": SYNC_READ_SIGNAL,
        "description": "This cortex's own usage rows with updated_at greater than `since`, ascending.",
        "inputSchema": _SINCE_LIMIT_SCHEMA,
        "annotations": _READ_ONLY,
    },
]


@dataclass(frozen=True)
class Reply:
    """The answer to one POSTed message, for the transport to frame: MCP fixes the HTTP status as well."""

    status: int
    message: str = ""  # the JSON-RPC response; empty for an accepted notification
    streamable: bool = False  # a result may travel as an SSE event; errors always go as plain JSON
    session: str = ""  # a session this message opened: the transport returns it as Mcp-Session-Id
    note: str = ""  # for the access log
    # A long answer already encoded, in pieces whose concatenation is the UTF-8 of the message (which is then
    # empty): the transport writes them in turn and the answer never exists as one text.
    pieces: tuple[bytes, ...] = ()

    def encoded(self) -> tuple[bytes, ...]:
        """The message as the UTF-8 pieces to send."""
        return self.pieces or (self.message.encode(),)


class TextPieces(list[str]):
    """A long text held as consecutive pieces (a sync_events page, a run of whole events each), so that its
    answer can be escaped and encoded piece by piece."""


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

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


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
            # Pages are read once, in id order: the OS caches the file, and a 2 MiB SQLite cache in each of
            # 16 workers would only add to serve's memory under load.
            conn.execute(f"PRAGMA cache_size=-{READER_CACHE_KIB}")
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

    def events_page(self, since: str, limit: int) -> tuple[TextPieces, int]:
        """A page of stored events with `data`, `signature` and `pubkey` exactly as stored, in pieces."""
        cursor = self.conn().execute(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE id > ? ORDER BY id LIMIT ?", (since, limit)
        )
        pieces, piece, piece_chars = TextPieces(), ["["], 1
        size, count = 2, 0  # the brackets
        try:
            for row in cursor:
                text = served_event_json(row)
                # Bytes, not characters: CJK text is 3 bytes a character on the wire, and an rmcp client takes
                # at most 16 MiB in one SSE event (the page, escaped into its answer).
                length = len(text) if text.isascii() else len(text.encode())
                grown = size + length + (1 if count else 0)  # a comma before every event but the first
                if count and grown > MAX_PAGE_BYTES:
                    break  # the first event always goes, however large: the reader must be able to advance
                if count:
                    piece.append(",")
                piece.append(text)
                piece_chars += len(text) + 1
                size = grown
                count += 1
                if piece_chars >= PIECE_CHARS:
                    pieces.append("".join(piece))
                    piece, piece_chars = [], 0
        finally:
            cursor.close()  # the read transaction ends here, also when the page stops early: no lock outlives it
        piece.append("]")
        pieces.append("".join(piece))
        return pieces, count

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
    value = arguments.get("since")  # missing and null both mean no cursor
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Refusal(BAD_SINCE)
    return scrub(value)  # SQLite cannot bind a lone surrogate; Go's decoder would have made it U+FFFD


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse(body: bytes) -> Any:
    """The message, or ValueError for anything Go's decoder would refuse: invalid UTF-8 (a BOM or UTF-16 too,
    which json.loads would guess), NaN and Infinity, and nesting too deep for the parser (RecursionError)."""
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except RecursionError as exc:
        raise ValueError("nested too deep") from exc


def _request_id(value: Any) -> Any:
    """The id to echo, made encodable (a lone surrogate becomes U+FFFD, as Go decodes it); ValueError unless a
    string, a finite number or null (JSON-RPC 2.0 §4)."""
    if value is None or type(value) is int:
        return value
    if isinstance(value, str):
        return scrub(value)
    if type(value) is float and math.isfinite(value):
        return value
    raise ValueError(INVALID_ID)


def _result(request_id: Any, result: dict[str, Any], note: str) -> Reply:
    content = result.get("content")
    if content and isinstance(content[0]["text"], TextPieces):
        return _pieced_result(request_id, result, content[0]["text"], note)
    message = json.dumps(
        {"jsonrpc": JSONRPC_VERSION, "id": request_id, "result": result},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return Reply(200, message, streamable=True, note=note)


def _pieced_result(request_id: Any, result: dict[str, Any], text: TextPieces, note: str) -> Reply:
    """_result's answer, byte for byte, for a text in pieces: each is escaped as json.dumps escapes a string
    (escaping is per character, so pieces escape to the pieces of the escaped whole) and encoded in turn."""
    shell = _result(request_id, {**result, "content": [{"type": "text", "text": ""}]}, note).message
    # The text is the last string of the answer: only `}],"isError":...}}` follows it.
    head, _, tail = shell.rpartition('"text":""')
    encoded = [f'{head}"text":"'.encode()]
    for index, piece in enumerate(text):
        encoded.append(encode_basestring(piece)[1:-1].encode())
        text[index] = ""  # freed once encoded
    encoded.append(f'"{tail}'.encode())
    return Reply(200, streamable=True, note=note, pieces=tuple(encoded))


def _error(request_id: Any, code: int, text: str, status: int) -> Reply:
    # json.dumps' defaults (ASCII, spaces after separators): these bytes have always gone out like this.
    message = json.dumps(
        {"jsonrpc": JSONRPC_VERSION, "id": request_id, "error": {"code": code, "message": text}}
    )
    return Reply(status, message, note=NOTE_ERROR.format(code=code))


class McpApp:
    """The JSON-RPC side: methods, tools and sessions, independent of HTTP details."""

    def __init__(self, reader: CortexReader) -> None:
        self.reader = reader
        self.sessions = Sessions()

    def post(self, endpoint: str, body: bytes, session: str | None, protocol_version: str | None) -> Reply:
        """One message POSTed to `endpoint`, with the session and protocol version headers that came with it."""
        try:
            message = _parse(body)
        except ValueError:
            return _error(None, PARSE_ERROR, PARSE_ERROR_TEXT, 400)
        if (
            not isinstance(message, dict)
            or message.get("jsonrpc") != JSONRPC_VERSION
            or not isinstance(message.get("method"), str)
        ):
            return _error(None, INVALID_REQUEST, INVALID_REQUEST_TEXT, 400)
        try:
            request_id = _request_id(message.get("id"))
        except ValueError:
            return _error(None, INVALID_REQUEST, INVALID_ID, 400)
        method = message["method"]
        params = message.get("params") or {}
        if not isinstance(params, dict):
            return _error(request_id, INVALID_PARAMS, PARAMS_NOT_OBJECT, 200)
        if "id" not in message:  # a notification: accepted, nothing to say
            return Reply(202, note=method)
        if method == INITIALIZE:
            # The session is opened only once its answer exists: a request that fails leaves none behind.
            opened = _result(request_id, self.initialize(params), method)
            return replace(opened, session=self.sessions.create(endpoint))
        if not session:
            return _error(request_id, INVALID_REQUEST, MISSING_SESSION, 400)
        if not self.sessions.touch(session, endpoint):
            return _error(request_id, INVALID_REQUEST, UNKNOWN_SESSION, 404)
        if protocol_version is not None and protocol_version not in SUPPORTED_PROTOCOL_VERSIONS:
            return _error(
                request_id, INVALID_REQUEST, UNSUPPORTED_VERSION.format(version=protocol_version), 400
            )
        try:
            result, note = self.call(method, params)
        except _RpcError as exc:
            return _error(request_id, exc.code, str(exc), 200)
        except (NoemafedError, sqlite3.Error) as exc:
            return _error(request_id, INTERNAL_ERROR, str(exc), 200)
        return _result(request_id, result, note or method)

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
        if method == PING:
            return {}, ""
        if method == TOOLS_LIST:
            return {"tools": TOOLS}, ""
        if method == TOOLS_CALL:
            name = params.get("name")
            arguments = params.get("arguments") or {}
            if not isinstance(name, str) or not isinstance(arguments, dict):
                raise _RpcError(INVALID_PARAMS, BAD_CALL_PARAMS)
            try:
                text, note = self.tool(name, arguments)
            except _Refusal as exc:
                return {
                    "content": [{"type": "text", "text": str(exc)}],
                    "isError": True,
                }, NOTE_REFUSED.format(tool=name)
            return {"content": [{"type": "text", "text": text}], "isError": False}, note
        raise _RpcError(METHOD_NOT_FOUND, UNKNOWN_METHOD.format(method=method))

    def tool(self, name: str, arguments: dict[str, Any]) -> tuple[str | TextPieces, str]:
        if name == CORTEX_IDENTITY:
            return self.reader.identity(), name
        if name == SYNC_EVENTS:
            if self.reader.manifest().federation_mode == "subscribe":
                raise _Refusal(SUBSCRIBE_EVENTS)
            since = _since(arguments)
            if since and not _ULID.match(since):
                raise _Refusal(BAD_SINCE)
            page, count = self.reader.events_page(since, _limit(arguments.get("limit")))
            return page, NOTE_EVENTS.format(tool=name, count=count)
        if name == SYNC_READ_SIGNAL:
            if self.reader.manifest().federation_mode == "subscribe":
                raise _Refusal(SUBSCRIBE_READ_SIGNAL)
            rows, count = self.reader.usage_page(_since(arguments), _limit(arguments.get("limit")))
            return rows, NOTE_ROWS.format(tool=name, count=count)
        raise _RpcError(INVALID_PARAMS, UNKNOWN_TOOL.format(name=name))
