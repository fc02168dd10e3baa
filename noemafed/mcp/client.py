"""An MCP Streamable HTTP client over urllib: one session per poll, bounded in time and bytes (wire.md §5)."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from typing import Any, NamedTuple, NoReturn

from noemafed import __version__
from noemafed.errors import NoemafedError
from noemafed.mcp.protocol import (
    ENDPOINT_PATH,
    INITIALIZE,
    INITIALIZED,
    JSON_TYPE,
    JSONRPC_VERSION,
    LATEST_PROTOCOL_VERSION,
    PROTOCOL_VERSION_HEADER,
    SESSION_HEADER,
    SSE_TYPE,
    SUPPORTED_PROTOCOL_VERSIONS,
    TOOLS_CALL,
)
from noemafed.mcp.sse import SseParser
from noemafed.text.endpoints import REDACTED, redact, user_info
from noemafed.text.sanitize import scrub, short

CLIENT_NAME = "noemafed"
ACCEPT = f"{JSON_TYPE}, {SSE_TYPE}"
DEFAULT_TIMEOUT = 30.0
DELETE_TIMEOUT = 5.0
WATCH_GRACE_SECONDS = 0.5

# Byte budgets, enforced while reading and before anything is parsed.
SYNC_EVENTS_BUDGET = 100 * 1024 * 1024
READ_SIGNAL_BUDGET = 16 * 1024 * 1024
DEFAULT_BUDGET = 1024 * 1024
_CHUNK = 64 * 1024

# What a failed call says; the classifier and operators read these texts.
HTTP_STATUS = "{status} {reason}{detail}"
REDIRECT_REFUSED = "redirect to {url} refused"
DEADLINE_EXCEEDED = "deadline exceeded (the run's --max-duration ran out)"
CA_UNREADABLE = "loading CA for peer {peer}: reading CA file: open {path}: {reason}"
CA_WITHOUT_CERTIFICATES = "loading CA for peer {peer}: CA file {path} contains no valid certificates"
NOT_HTTP_URL = "peer {peer} endpoint {endpoint!r} is not an http:// or https:// URL"
UNSUPPORTED_VERSION = "peer answered unsupported MCP protocol version {version!r}"
TRANSPORT_FAILED = "{method} {url}: {reason}"
TOO_LARGE = "{what} response too large (over {budget} bytes, max {budget})"
READ_FAILED = "reading {what} response: {reason}"
TRUNCATED = "reading {what} response: unexpected EOF ({short} bytes short of its Content-Length)"
STREAM_ENDED = "{what}: the event stream ended without an answer"
NOT_JSON = "{what}: the peer's answer is not JSON: {error}"
NOT_JSONRPC = "{what}: the peer's answer is not a JSON-RPC object"
WRONG_ID = "{what}: the answer's id {got!r} is not {expected}"
NO_RESULT = "{what}: the answer has no result object"
REQUEST_TIMED_OUT = "{what}: no complete answer within {seconds:g}s (i/o timeout)"
CONTENT_NOT_A_LIST = "{what}: the result's content is not a list"


class WireError(NoemafedError):
    """A transport or protocol failure talking to a peer; the cause chain keeps the original exception."""

    code = "wire_error"


class HttpStatusError(WireError):
    """The peer answered with an HTTP status we cannot use (401, 403, 404 after a retry, 5xx ...)."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(HTTP_STATUS.format(status=status, reason=reason, detail=f": {body}" if body else ""))
        self.status = status
        self.body = body


class ToolRefusal(WireError):
    """The peer refused a call: an `isError` result (Go) or a JSON-RPC error (Rust); same meaning."""


class RequestTimedOut(WireError):
    """A request (connect, TLS handshake, headers and body) took longer than --timeout in all."""


class ResponseTooLarge(WireError):
    """A body went over its byte budget; reading stopped there."""


class DeadlineExceeded(WireError):
    """The run's --max-duration ran out while talking to this peer."""

    def __init__(self, message: str = DEADLINE_EXCEEDED) -> None:
        super().__init__(message)


class PeerTarget(NamedTuple):
    """Everything needed to reach one peer."""

    name: str
    endpoint: str
    ca_file: str = ""
    key: str = ""  # the shared bearer key; never logged
    timeout: float = DEFAULT_TIMEOUT
    use_proxy_env: bool = False  # *_proxy variables are ignored unless the operator opts in

    @property
    def url(self) -> str:
        # Trailing slashes are stripped: Go peers redirect `//mcp`, which would break a POST.
        return self.endpoint.rstrip("/") + ENDPOINT_PATH


class ServerInfo(NamedTuple):
    protocol_version: str
    name: str
    version: str


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """urllib would turn a redirected POST into a GET; noema peers never redirect, so refuse."""

    def redirect_request(  # noqa: PLR0913, PLR0917 (the signature is urllib's)
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> None:
        raise urllib.error.HTTPError(req.full_url, code, REDIRECT_REFUSED.format(url=newurl), headers, fp)


def tls_context(target: PeerTarget) -> ssl.SSLContext:
    """System roots plus the peer's `ca:` bundle, TLS 1.2 or newer, hostnames checked."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if target.ca_file:
        try:
            # Text around the PEM blocks may be anything, a comment in the operator's language say, as for Go;
            # ssl takes only ASCII, and the blocks themselves are ASCII.
            with open(target.ca_file, encoding="ascii", errors="ignore") as handle:
                pem = handle.read()
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise WireError(
                CA_UNREADABLE.format(peer=target.name, path=target.ca_file, reason=reason)
            ) from exc
        try:
            if "-----BEGIN CERTIFICATE-----" not in pem:
                raise ssl.SSLError("no certificate block")
            context.load_verify_locations(cadata=pem)
        except ssl.SSLError as exc:
            raise WireError(CA_WITHOUT_CERTIFICATES.format(peer=target.name, path=target.ca_file)) from exc
    return context


class Deadline:
    """The whole run's time budget; every connect and read gets at most what is left."""

    def __init__(self, seconds: float | None) -> None:
        self._end = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        return None if self._end is None else self._end - time.monotonic()

    def timeout(self, per_call: float) -> float:
        left = self.remaining()
        if left is None:
            return per_call
        if left <= 0:
            raise DeadlineExceeded()
        return min(per_call, left)

    def check(self) -> None:
        left = self.remaining()
        if left is not None and left <= 0:
            raise DeadlineExceeded()


class _RequestWatch:
    """Ends one request at its deadline: connect, TLS handshake, headers and body, an SSE stream included.

    A socket timeout bounds each read, so a peer that sends one byte a second, or a keep-alive now and then,
    never trips it. This shuts the request's socket down when its time is up, which wakes whatever read is
    blocked on it, and remembers that it did so the failure is reported as a timeout, not as the EOF it causes.
    It holds a duplicate of the socket's descriptor, so it can never shut down a socket that reused the number.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            watched = sock.dup()
            if self.expired:
                watched.shutdown(socket.SHUT_RDWR)
            self._sockets.append(watched)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for watched in self._sockets:
                with contextlib.suppress(OSError):  # already closed by the peer
                    watched.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._timer.cancel()
        with self._lock:
            for watched in self._sockets:
                watched.close()
            self._sockets.clear()


class _WatchedConnections:
    """urllib handlers whose connections hand each new socket to the current request's watch."""

    def __init__(self) -> None:
        self.watch: _RequestWatch | None = None

    def _create_connection(
        self,
        address: tuple[str, int],
        timeout: float | None,
        source_address: Any = None,
    ) -> socket.socket:
        sock = socket.create_connection(address, timeout, source_address)
        if self.watch is not None:
            self.watch.attach(sock)  # before the TLS handshake, which then runs under the watch too
        return sock

    def connection_class(self, base: type[http.client.HTTPConnection]) -> Any:
        watched = self

        def make(*args: Any, **kwargs: Any) -> http.client.HTTPConnection:
            connection = base(*args, **kwargs)
            connection._create_connection = watched._create_connection  # type: ignore[attr-defined]
            return connection

        return make

    def handlers(self, context: ssl.SSLContext | None) -> list[urllib.request.BaseHandler]:
        connections = self

        class Http(urllib.request.HTTPHandler):
            def http_open(self, req: Any) -> Any:
                return self.do_open(connections.connection_class(http.client.HTTPConnection), req)

        handlers: list[urllib.request.BaseHandler] = [Http()]
        if context is not None:

            class Https(urllib.request.HTTPSHandler):
                def https_open(self, req: Any) -> Any:
                    return self.do_open(
                        connections.connection_class(http.client.HTTPSConnection), req, context=context
                    )

            handlers.append(Https())
        return handlers


def _media_type(headers: Message) -> str:
    return (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()


class McpSession:
    """One MCP session with one peer: initialize, tool calls, DELETE. Not thread-safe; one per poll."""

    def __init__(self, target: PeerTarget, deadline: Deadline | None = None) -> None:
        if not target.url.startswith(("http://", "https://")):
            # Only http(s) ever reaches urllib, which would otherwise also open file: and ftp: URLs.
            raise WireError(NOT_HTTP_URL.format(peer=target.name, endpoint=redact(target.endpoint)))
        self.target = target
        self.deadline = deadline or Deadline(None)
        handlers: list[urllib.request.BaseHandler] = [_RefuseRedirects()]
        if not target.use_proxy_env:
            handlers.append(urllib.request.ProxyHandler({}))
        self._connections = _WatchedConnections()
        context = tls_context(target) if target.url.startswith("https:") else None
        handlers.extend(self._connections.handlers(context))
        self._opener = urllib.request.build_opener(*handlers)
        self._next_id = 1
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self.server: ServerInfo | None = None

    # ---- public calls -----------------------------------------------------------------------------

    def initialize(self) -> ServerInfo:
        """initialize + notifications/initialized; checks the negotiated protocol version."""
        self.session_id = None
        self.protocol_version = None
        params = {
            "protocolVersion": LATEST_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": CLIENT_NAME, "version": __version__},
        }
        result = self._request(INITIALIZE, params, DEFAULT_BUDGET, retry_on_404=False)
        answered = result.get("protocolVersion")
        if answered not in SUPPORTED_PROTOCOL_VERSIONS:
            raise WireError(UNSUPPORTED_VERSION.format(version=answered))
        info = result.get("serverInfo") if isinstance(result.get("serverInfo"), dict) else {}
        self.protocol_version = str(answered)
        self.server = ServerInfo(
            self.protocol_version,
            short(str(info.get("name") or "")),
            short(str(info.get("version") or "")),  # stored in health and printed by status: kept short
        )
        self._notify(INITIALIZED)
        return self.server

    def call_tool(self, name: str, arguments: dict[str, Any], budget: int = DEFAULT_BUDGET) -> str:
        """The text of the first text item of a tool result; a refusal raises ToolRefusal."""
        result = self._request(TOOLS_CALL, {"name": name, "arguments": arguments}, budget, label=name)
        text = ""
        content = result.get("content") or []
        if not isinstance(content, list):
            raise WireError(CONTENT_NOT_A_LIST.format(what=name))
        for item in content:
            if isinstance(item, dict) and item.get("type") == "text":
                # A lone surrogate escaped in the envelope decodes to U+FFFD, as in Go; the page's own
                # escapes are left for the event parser.
                text = scrub(str(item.get("text") or ""))
                break
        if result.get("isError") is True:
            raise ToolRefusal(text)
        return text

    def close(self) -> None:
        """DELETE the session; the answer (200, 202, 405, an error) does not matter."""
        if not self.session_id:
            return
        request = urllib.request.Request(self.target.url, method="DELETE", headers=self._headers())  # noqa: S310 (scheme checked in __init__)
        try:
            with (
                self._watched("DELETE", DELETE_TIMEOUT) as timeout,
                self._opener.open(request, timeout=timeout) as response,
            ):
                response.read(DEFAULT_BUDGET)
        except (OSError, WireError, ValueError, http.client.HTTPException):
            pass  # the session expires on the peer anyway
        self.session_id = None

    def abandon(self) -> None:
        """Leave the session without a DELETE (another thread may still be in a call); close() then does nothing."""
        self.session_id = None

    def __enter__(self) -> McpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing ---------------------------------------------------------------------------------

    def _hide(self, text: str) -> str:
        """A transport error's text without the credentials a hand-edited endpoint may carry."""
        secret = user_info(self.target.endpoint)
        if not secret:
            return text
        # http.client splits `user:password@host` at its last colon, so without a port it fails with the
        # password's tail as the port ("nonnumeric port: 'password@host'"), not the whole user info.
        tail = secret.rpartition(":")[2]
        text = text.replace(secret, REDACTED)
        return text.replace(tail + "@", REDACTED + "@") if tail else text

    @contextlib.contextmanager
    def _watched(self, what: str, seconds: float) -> Iterator[float]:
        """Run one request under a whole-request deadline; yields the per-read timeout to use inside it."""
        seconds = self.deadline.timeout(seconds)
        # A peer that simply stops answering trips the socket timeout first, which names the read it hung in;
        # the watch is for the peer that keeps every single read short.
        watch = _RequestWatch(seconds + WATCH_GRACE_SECONDS)
        self._connections.watch = watch
        try:
            yield seconds
        except Exception as exc:
            if watch.expired:
                # Whatever the cut-off read raised (EOF, a truncated body) is the watch's doing.
                _timed_out(what, seconds)
            raise exc from exc.__cause__
        finally:
            self._connections.watch = None
            watch.stop()
        if watch.expired:
            # Cut off, and what had come still read as an answer (a status line cut short reads as a whole one,
            # a notification's answer has no body): the peer did not answer within its time all the same.
            _timed_out(what, seconds)

    def _headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": JSON_TYPE,
            "Accept": ACCEPT,
            "User-Agent": f"{CLIENT_NAME}/{__version__}",
        }
        if self.target.key:
            headers["Authorization"] = f"Bearer {self.target.key}"
        if self.session_id:
            headers[SESSION_HEADER] = self.session_id
        # Only after initialize: rmcp answers 400 when it disagrees with params.protocolVersion.
        if self.protocol_version:
            headers[PROTOCOL_VERSION_HEADER] = self.protocol_version
        return headers

    def _post(self, body: dict[str, Any]) -> urllib.request.Request:
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        return urllib.request.Request(self.target.url, data=data, method="POST", headers=self._headers())  # noqa: S310 (scheme checked in __init__)

    def _open(self, request: urllib.request.Request, timeout: float) -> Any:
        """Open a request; HTTP errors come back as responses so the caller decides, transport errors raise."""
        try:
            return self._opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            return exc
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            raise WireError(
                TRANSPORT_FAILED.format(
                    method=request.get_method(),
                    url=redact(self.target.url),
                    reason=self._hide(_describe(exc)),
                )
            ) from exc

    def _notify(self, method: str) -> None:
        with self._watched(method, self.target.timeout) as timeout:
            response = self._open(self._post({"jsonrpc": JSONRPC_VERSION, "method": method}), timeout)
            with response:
                status = response.status  # an HTTPResponse, or an HTTPError (which has it since 3.9)
                body = _read_bounded(response, DEFAULT_BUDGET, self.deadline, method)
        if status not in (200, 202):
            raise self._status_error(response, status, body)

    def _request(
        self, method: str, params: dict[str, Any], budget: int, retry_on_404: bool = True, label: str = ""
    ) -> Any:
        """One JSON-RPC request; `label` (the tool name) is how errors name it."""
        what = label or method
        request_id = self._next_id
        self._next_id += 1
        body = self._post({"jsonrpc": JSONRPC_VERSION, "id": request_id, "method": method, "params": params})
        with self._watched(what, self.target.timeout) as timeout:
            response = self._open(body, timeout)
            with response:
                status = response.status  # an HTTPResponse, or an HTTPError (which has it since 3.9)
                forgotten = status == 404 and retry_on_404 and self.session_id
                if forgotten:
                    _read_bounded(response, DEFAULT_BUDGET, self.deadline, what)
                elif status != 200:
                    raise self._status_error(
                        response, status, _read_bounded(response, DEFAULT_BUDGET, self.deadline, what)
                    )
                else:
                    if method == INITIALIZE:
                        session = response.headers.get(SESSION_HEADER)
                        self.session_id = session.strip() if session else None
                    if _media_type(response.headers) == SSE_TYPE:
                        message = _read_sse_response(response, request_id, budget, self.deadline, what)
                    else:
                        message = _parse_body(_read_bounded(response, budget, self.deadline, what), what)
        if forgotten:
            # The peer forgot our session (restart, idle expiry): one fresh initialize, one retry.
            self.initialize()
            return self._request(method, params, budget, retry_on_404=False, label=label)
        return _unwrap(message, request_id, what)

    def _status_error(self, response: Any, status: int, body: bytes | bytearray) -> HttpStatusError:
        text = body.decode("utf-8", errors="replace").strip()[:300]
        # `response` is an HTTPResponse or an HTTPError: both have a reason, "" when the status line has none.
        error = HttpStatusError(status, response.reason, text)
        if isinstance(response, urllib.error.HTTPError):
            error.__cause__ = response  # lets the classifier see a real HTTP 401
        return error


def _timed_out(what: str, seconds: float) -> NoReturn:
    """Fail a request its watch cut off; the cause is a TimeoutError, so it classifies as a timeout."""
    timed_out = TimeoutError(REQUEST_TIMED_OUT.format(what=what, seconds=round(seconds, 1)))
    raise RequestTimedOut(str(timed_out)) from timed_out


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _read_bounded(response: Any, budget: int, deadline: Deadline, what: str) -> bytearray:
    """Read a whole body, never more than `budget` bytes, never past the deadline."""
    # One growing buffer, not chunks joined at the end (which held the body twice). Sizing it from the
    # Content-Length measured no better (bench.py memory) and would commit the promised size before a byte came.
    body = bytearray()
    while True:
        deadline.check()
        chunk = _read_chunk(response, what)
        if not chunk:
            short = getattr(response, "length", None)  # http.client: what the Content-Length still promised
            if short:
                raise WireError(TRUNCATED.format(what=what, short=short)) from http.client.IncompleteRead(
                    b"", short
                )
            return body
        if len(body) + len(chunk) > budget:
            raise ResponseTooLarge(TOO_LARGE.format(what=what, budget=budget))
        body += chunk


def _read_chunk(response: Any, what: str) -> bytes:
    try:
        data: bytes = response.read1(_CHUNK)  # an HTTPError hands read1 on to the response it wraps
    except (OSError, ValueError) as exc:
        raise WireError(READ_FAILED.format(what=what, reason=_describe(exc))) from exc
    except Exception as exc:  # http.client.IncompleteRead and friends are not OSErrors
        raise WireError(READ_FAILED.format(what=what, reason=f"{type(exc).__name__}: {exc}")) from exc
    return data


def _read_sse_response(response: Any, request_id: int, budget: int, deadline: Deadline, what: str) -> Any:
    """Read SSE events until the JSON-RPC answer to `request_id`; skip priming, keep-alives, notifications."""
    parser = SseParser()
    total = 0
    while True:
        deadline.check()
        chunk = _read_chunk(response, what)
        events = list(parser.feed(chunk)) if chunk else list(parser.close())
        total += len(chunk)
        if total > budget:
            raise ResponseTooLarge(TOO_LARGE.format(what=what, budget=budget))
        for event in events:
            if not event.data.strip():
                continue  # rmcp's priming event
            message = _parse_event_data(event.data, what)
            if (
                isinstance(message, dict)
                and message.get("id") == request_id
                and ("result" in message or "error" in message)
            ):
                return message
        if not chunk:
            raise WireError(STREAM_ENDED.format(what=what))


_DECODER = json.JSONDecoder()  # what json.loads uses when given no options


def _parse_body(body: bytearray, what: str) -> Any:
    """json.loads(body), without holding the body's bytes while the JSON is parsed."""
    # Exactly what json.loads does with bytes (UTF-8, -16 or -32, a UTF-8 BOM dropped, then its decoder, which
    # unlike json.loads of a str does not name a BOM left over), done here so the buffer can be emptied first:
    # the parser then holds one copy of the body (the str), not two.
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    except ValueError as exc:
        raise WireError(NOT_JSON.format(what=what, error=exc)) from exc
    finally:
        body.clear()  # the caller's buffer too: nothing else needs it
    try:
        return _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser's stack
        raise WireError(NOT_JSON.format(what=what, error=exc)) from exc


def _parse_event_data(data: str, what: str) -> Any:
    """json.loads(data.encode()), without making those bytes (the data may be a whole page).

    The same result and the same errors: json.loads guesses the encoding of bytes, and the UTF-8 of a str
    can only look like something else when it starts with a BOM or has a NUL in its first two characters.
    """
    if data.startswith("\ufeff") or "\x00" in data[:2]:
        return _parse_json(data.encode("utf-8"), what)
    return _parse_json(data, what)


def _parse_json(body: bytes | str, what: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser's stack
        raise WireError(NOT_JSON.format(what=what, error=exc)) from exc


def _unwrap(message: Any, request_id: int, what: str) -> Any:
    """The `result` of a JSON-RPC response; an `error` member is a refusal with its message."""
    if not isinstance(message, dict):
        raise WireError(NOT_JSONRPC.format(what=what))
    error = message.get("error")
    if error is not None:
        raise ToolRefusal(str(error.get("message") or "") if isinstance(error, dict) else str(error))
    if message.get("id") != request_id:
        raise WireError(WRONG_ID.format(what=what, got=message.get("id"), expected=request_id))
    result = message.get("result")
    if not isinstance(result, dict):
        raise WireError(NO_RESULT.format(what=what))
    return result
