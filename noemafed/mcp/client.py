"""An MCP Streamable HTTP client: one session per poll on one keep-alive connection, bounded in time and bytes
(wire.md §5)."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import ssl
import time
from collections.abc import Iterator
from email.message import Message
from typing import Any, NoReturn
from urllib.parse import quote, urljoin, urlparse, urlunparse

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
from noemafed.mcp.transport import REDIRECT_STATUSES, PeerConnection, RequestWatch, environment_proxy
from noemafed.records import Record
from noemafed.text.endpoints import REDACTED, EndpointError, check_request_endpoint, redact, user_info
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
# An answer larger than this has its result text read as UTF-8 bytes (large_answer), not as one str of the
# whole answer: a str is as wide as its widest character, so one emoji makes it four times the bytes.
LARGE_BODY_BYTES = 8 * 1024 * 1024
# Statuses whose Retry-After a client should honour (RFC 9110 §10.2.3): too many requests, unavailable.
RETRY_AFTER_STATUSES = (429, 503)

# What a failed call says; the classifier and operators read these texts.
HTTP_STATUS = "{status} {reason}{detail}"
REDIRECT_REFUSED = "redirect to {url} refused"
DEADLINE_EXCEEDED = "deadline exceeded (the run's --max-duration ran out)"
CA_UNREADABLE = "loading CA for peer {peer}: reading CA file: open {path}: {reason}"
CA_WITHOUT_CERTIFICATES = "loading CA for peer {peer}: CA file {path} contains no valid certificates"
NOT_HTTP_URL = "peer {peer} endpoint {endpoint!r} is not an http:// or https:// URL"
# An endpoint no request can be made to (text.endpoints.check_request_endpoint says why): a configuration error.
ENDPOINT_UNUSABLE = "peer {peer}: {problem} (fix it with: noemafed set-peer {peer} --endpoint URL)"
PROXY_UNUSABLE = "peer {peer}: the {scheme}_proxy variable of the environment is not a valid URL: {reason}"
UNSUPPORTED_VERSION = "peer answered unsupported MCP protocol version {version!r}"
TRANSPORT_FAILED = "{method} {url}: {reason}"
TOO_LARGE = "{what} response too large (over {budget} bytes, max {budget})"
READ_FAILED = "reading {what} response: {reason}"
TRUNCATED = "reading {what} response: unexpected EOF ({short} bytes short of its Content-Length)"
STREAM_ENDED = "{what}: the event stream ended without an answer"
NOT_JSON = "{what}: the peer's answer is not JSON: {error}"
# An answer over LARGE_BODY_BYTES that large_answer cannot read as UTF-8 bytes (a byte-order mark, UTF-16 or
# UTF-32, the page not where a tool result's text goes) and that holds non-ASCII text: decoded whole it would
# take 4 (or 8) times its size. Go's decoder refuses the first three outright; no noema peer sends the last.
LARGE_ANSWER_UNREADABLE = (
    "{what}: the peer's answer of {size} bytes is not UTF-8 JSON with the page as its result's text, as noema "
    "sends a page over 8 MiB; refused rather than decoded whole"
)
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

    def __init__(self, status: int, reason: str, body: str, retry_after: str = "") -> None:
        super().__init__(HTTP_STATUS.format(status=status, reason=reason, detail=f": {body}" if body else ""))
        self.status = status
        self.body = body
        # The raw Retry-After of a 429 or 503 (seconds or an HTTP-date); the scheduler, which knows what time
        # it is, turns it into a wait.
        self.retry_after = retry_after


class ToolRefusal(WireError):
    """The peer refused a call: an `isError` result (Go) or a JSON-RPC error (Rust); same meaning."""


class RequestTimedOut(WireError):
    """A request (connect, TLS handshake, headers and body) took longer than --timeout in all."""


class ResponseTooLarge(WireError):
    """A body went over its byte budget; reading stopped there."""


class DeadlineExceeded(WireError):
    """The run's --max-duration ran out while talking to this peer."""

    def __init__(self) -> None:
        super().__init__(DEADLINE_EXCEEDED)


class PeerTarget(Record):
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


class ServerInfo(Record):
    protocol_version: str
    name: str
    version: str


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
        except (OSError, ValueError) as exc:  # ValueError: a path with a NUL in it (cortex.md may say "\0")
            reason = (getattr(exc, "strerror", None) or str(exc)).lower()
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


def _media_type(headers: Message) -> str:
    return (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()


class McpSession:
    """One MCP session with one peer: initialize, tool calls, DELETE, all on one keep-alive connection.

    Not thread-safe: one per poll, used by one thread at a time (the page fetched ahead runs in another thread,
    never while this one makes a call)."""

    def __init__(self, target: PeerTarget, deadline: Deadline | None = None) -> None:
        if not target.url.startswith(("http://", "https://")):
            raise WireError(NOT_HTTP_URL.format(peer=target.name, endpoint=redact(target.endpoint)))
        try:
            check_request_endpoint(target.endpoint)
        except EndpointError as exc:
            raise WireError(ENDPOINT_UNUSABLE.format(peer=target.name, problem=exc.message)) from None
        self.target = target
        self.deadline = deadline or Deadline(None)
        context = tls_context(target) if target.url.startswith("https:") else None
        try:
            # *_proxy variables are read only on request; urllib read them the same way.
            proxy = environment_proxy(target.url) if target.use_proxy_env else None
        except ValueError as exc:
            scheme = target.url.split(":", 1)[0]
            raise WireError(PROXY_UNUSABLE.format(peer=target.name, scheme=scheme, reason=exc)) from exc
        self._connection = PeerConnection(target.url, context, proxy)
        self._abandoned = False
        self._next_id = 1
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self.server: ServerInfo | None = None
        self.date: str | None = None  # the HTTP Date header of the initialize answer (doctor's clock check)

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
        text = self.call_page_tool(name, arguments, budget)
        return text if isinstance(text, str) else text.decode("utf-8")

    def call_page_tool(
        self, name: str, arguments: dict[str, Any], budget: int = DEFAULT_BUDGET
    ) -> str | bytearray:
        """call_tool for a tool that answers a page of events: the text of an answer over LARGE_BODY_BYTES comes
        back as its UTF-8 bytes (cortex.events.read_page reads either), never having been one wide str."""
        result = self._request(TOOLS_CALL, {"name": name, "arguments": arguments}, budget, label=name)
        text: str | bytearray = ""
        content = result.get("content") or []
        if not isinstance(content, list):
            raise WireError(CONTENT_NOT_A_LIST.format(what=name))
        for item in content:
            if isinstance(item, dict) and item.get("type") == "text":
                value = item.get("text")
                # A lone surrogate escaped in the envelope decodes to U+FFFD, as in Go (bytes from
                # large_answer already have it); the page's own escapes are left for the event parser.
                text = value if isinstance(value, bytearray) else scrub(str(value or ""))
                break
        if result.get("isError") is True:
            raise ToolRefusal(text if isinstance(text, str) else text.decode("utf-8"))
        return text

    def close(self) -> None:
        """DELETE the session (the answer, 200, 202, 405 or an error, does not matter), then hang up."""
        if self._abandoned:
            return
        if self.session_id:
            try:
                with (
                    self._watched("DELETE", DELETE_TIMEOUT) as timeout,
                    self._open("DELETE", None, timeout) as response,
                ):
                    response.read(DEFAULT_BUDGET)
            except (OSError, WireError, ValueError, http.client.HTTPException):
                pass  # the session expires on the peer anyway
            self.session_id = None
        self._connection.close()

    def abandon(self) -> None:
        """Leave the session without a DELETE (another thread may still be in a call); close() then does nothing.

        The connection is left to that thread too: it is closed once the call ends and the session is dropped."""
        self.session_id = None
        self._abandoned = True

    @property
    def peer_certificate(self) -> bytes | None:
        """The DER certificate the peer presented (https only), for doctor's expiry check."""
        return self._connection.peer_certificate

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
        watch = RequestWatch(seconds + WATCH_GRACE_SECONDS)
        self._connection.watch = watch
        try:
            yield seconds
        except Exception as exc:
            if watch.expired:
                # Whatever the cut-off read raised (EOF, a truncated body) is the watch's doing.
                _timed_out(what, seconds)
            raise exc from exc.__cause__
        finally:
            self._connection.watch = None
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

    def _open(self, method: str, body: dict[str, Any] | None, timeout: float) -> Any:
        """Send a request and return the response, whatever its status: the caller reads it and decides (a
        redirect is refused, never followed); a transport failure raises."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")
        try:
            response = self._connection.send(method, self._headers(), data, timeout)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise WireError(
                TRANSPORT_FAILED.format(
                    method=method, url=redact(self.target.url), reason=self._hide(_describe(exc))
                )
            ) from exc
        return response

    def _notify(self, method: str) -> None:
        with self._watched(method, self.target.timeout) as timeout:
            response = self._open("POST", {"jsonrpc": JSONRPC_VERSION, "method": method}, timeout)
            with response:
                status = response.status
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
        body = {"jsonrpc": JSONRPC_VERSION, "id": request_id, "method": method, "params": params}
        with self._watched(what, self.target.timeout) as timeout:
            response = self._open("POST", body, timeout)
            with response:
                status = response.status
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
                        self.date = response.headers.get("Date")
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
        retry_after = ""
        if status in RETRY_AFTER_STATUSES:
            retry_after = short(str(response.headers.get("Retry-After") or "").strip())
        return HttpStatusError(status, _refusal_reason(self.target.url, response), text, retry_after)


def _timed_out(what: str, seconds: float) -> NoReturn:
    """Fail a request its watch cut off; the cause is a TimeoutError, so it classifies as a timeout."""
    timed_out = TimeoutError(REQUEST_TIMED_OUT.format(what=what, seconds=round(seconds, 1)))
    raise RequestTimedOut(str(timed_out)) from timed_out


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _refusal_reason(url: str, response: http.client.HTTPResponse) -> str:
    """The status line's reason, "" when it has none; for a redirect, where it pointed (refused), as urllib said it."""
    headers = response.headers
    location = headers["Location"] if "Location" in headers else headers.get("URI")
    if response.status not in REDIRECT_STATUSES or location is None:
        return response.reason
    # urllib's reading of the Location: a path for a bare host, non-ASCII and spaces percent-encoded, then
    # made absolute against the request's URL.
    import string  # noqa: PLC0415 (only for a redirect)

    parts = urlparse(location)
    if not parts.path and parts.netloc:
        parts = parts._replace(path="/")
    quoted = quote(urlunparse(parts), encoding="iso-8859-1", safe=string.punctuation)
    return REDIRECT_REFUSED.format(url=urljoin(url, quoted))


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
        data: bytes = response.read1(_CHUNK)
    except (OSError, ValueError) as exc:
        raise WireError(READ_FAILED.format(what=what, reason=_describe(exc))) from exc
    except Exception as exc:  # http.client.IncompleteRead and friends are not OSErrors
        raise WireError(READ_FAILED.format(what=what, reason=f"{type(exc).__name__}: {exc}")) from exc
    return data


def _read_sse_response(response: Any, request_id: int, budget: int, deadline: Deadline, what: str) -> Any:
    """Read SSE events until the JSON-RPC answer to `request_id`; skip priming, keep-alives, notifications."""
    parser = SseParser(large_data=LARGE_BODY_BYTES)
    total = 0
    while True:
        deadline.check()
        chunk = _read_chunk(response, what)
        events = list(parser.feed(chunk)) if chunk else list(parser.close())
        total += len(chunk)
        if total > budget:
            raise ResponseTooLarge(TOO_LARGE.format(what=what, budget=budget))
        for event in events:
            message = _event_message(event.data, what)
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
    """json.loads(body), without holding the body's bytes while the JSON is parsed.

    A body over LARGE_BODY_BYTES comes back with its result text as UTF-8 bytes where large_answer can read it
    so (the same message otherwise).
    """
    if len(body) > LARGE_BODY_BYTES:
        # Loaded here: its patterns compile at import, 0.5 ms of every run for an answer few runs receive.
        from noemafed.mcp.large_answer import large_answer_error, read_large_answer  # noqa: PLC0415

        message = read_large_answer(body, "surrogatepass")
        if message is not None:
            return message
        error = large_answer_error(body, "surrogatepass")  # a refusal worded as below, without one wide str
        if error is not None:
            raise WireError(NOT_JSON.format(what=what, error=error))
        if not body.isascii():  # ASCII decodes at one byte a character: no wider than the usual 2x
            size = len(body)
            body.clear()  # as every other outcome leaves it
            raise WireError(LARGE_ANSWER_UNREADABLE.format(what=what, size=size))
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


_BLANK = None  # what an SSE event without JSON (rmcp's priming event) reads as: never an answer
# The ASCII characters str.strip() removes.
_LEADING_SPACE = re.compile(rb"[ \t\n\r\x0b\x0c\x1c-\x1f]*+")


def _event_message(data: str | bytearray, what: str) -> Any:
    """The JSON-RPC message an SSE event's data holds, or _BLANK; data the parser left as bytes (a large line)
    reads exactly as its decoding with replacement would."""
    if isinstance(data, bytearray):
        from noemafed.mcp.large_answer import large_answer_error, read_large_answer  # noqa: PLC0415 (as above)

        message = read_large_answer(data, "strict")
        if message is not None:
            return message
        first = _LEADING_SPACE.match(data)
        # Not blank as str.strip() sees it (a non-ASCII first character might be a space: the usual path decides).
        if first and first.end() < len(data) and data[first.end()] < 0x80:
            error = large_answer_error(data, "strict")
            if error is not None:
                raise WireError(NOT_JSON.format(what=what, error=error))
            if not data.isascii():
                raise WireError(LARGE_ANSWER_UNREADABLE.format(what=what, size=len(data)))
        data = data.decode("utf-8", "replace")
    if not data.strip():
        return _BLANK
    return _parse_event_data(data, what)


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
