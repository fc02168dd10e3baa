"""An MCP Streamable HTTP client over urllib: one session per poll, bounded in time and bytes (wire.md §5)."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from email.message import Message
from typing import Any, NamedTuple

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

CLIENT_NAME = "noemafed"
ACCEPT = f"{JSON_TYPE}, {SSE_TYPE}"
DEFAULT_TIMEOUT = 30.0
DELETE_TIMEOUT = 5.0

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
STREAM_ENDED = "{what}: the event stream ended without an answer"
NOT_JSON = "{what}: the peer's answer is not JSON: {error}"
NOT_JSONRPC = "{what}: the peer's answer is not a JSON-RPC object"
WRONG_ID = "{what}: the answer's id {got!r} is not {expected}"
NO_RESULT = "{what}: the answer has no result object"


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
            with open(target.ca_file, encoding="ascii", errors="replace") as handle:
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


def _media_type(headers: Message) -> str:
    return (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()


class McpSession:
    """One MCP session with one peer: initialize, tool calls, DELETE. Not thread-safe; one per poll."""

    def __init__(self, target: PeerTarget, deadline: Deadline | None = None) -> None:
        if not target.url.startswith(("http://", "https://")):
            # Only http(s) ever reaches urllib, which would otherwise also open file: and ftp: URLs.
            raise WireError(NOT_HTTP_URL.format(peer=target.name, endpoint=target.endpoint))
        self.target = target
        self.deadline = deadline or Deadline(None)
        handlers: list[urllib.request.BaseHandler] = [_RefuseRedirects()]
        if not target.use_proxy_env:
            handlers.append(urllib.request.ProxyHandler({}))
        if target.url.startswith("https:"):
            handlers.append(urllib.request.HTTPSHandler(context=tls_context(target)))
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
            str(info.get("name") or ""),
            str(info.get("version") or ""),
        )
        self._notify(INITIALIZED)
        return self.server

    def call_tool(self, name: str, arguments: dict[str, Any], budget: int = DEFAULT_BUDGET) -> str:
        """The text of the first text item of a tool result; a refusal raises ToolRefusal."""
        result = self._request(TOOLS_CALL, {"name": name, "arguments": arguments}, budget, label=name)
        text = ""
        for item in result.get("content") or []:
            if isinstance(item, dict) and item.get("type") == "text":
                text = str(item.get("text") or "")
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
            timeout = min(DELETE_TIMEOUT, self.deadline.timeout(DELETE_TIMEOUT))
            with self._opener.open(request, timeout=timeout) as response:
                response.read(DEFAULT_BUDGET)
        except (OSError, WireError, urllib.error.URLError, ValueError):
            pass
        self.session_id = None

    def abandon(self) -> None:
        """Leave the session without a DELETE (another thread may still be in a call); close() then does nothing."""
        self.session_id = None

    def __enter__(self) -> McpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing ---------------------------------------------------------------------------------

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

    def _open(self, request: urllib.request.Request) -> Any:
        """Open a request; HTTP errors come back as responses so the caller decides, transport errors raise."""
        timeout = self.deadline.timeout(self.target.timeout)
        try:
            return self._opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            return exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise WireError(
                TRANSPORT_FAILED.format(
                    method=request.get_method(), url=self.target.url, reason=_describe(exc)
                )
            ) from exc

    def _notify(self, method: str) -> None:
        response = self._open(self._post({"jsonrpc": JSONRPC_VERSION, "method": method}))
        with response:
            status = response.status if hasattr(response, "status") else response.code
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
        response = self._open(
            self._post({"jsonrpc": JSONRPC_VERSION, "id": request_id, "method": method, "params": params})
        )
        with response:
            status = response.status if hasattr(response, "status") else response.code
            if status == 404 and retry_on_404 and self.session_id:
                # The peer forgot our session (restart, idle expiry): one fresh initialize, one retry.
                _read_bounded(response, DEFAULT_BUDGET, self.deadline, what)
                self.initialize()
                return self._request(method, params, budget, retry_on_404=False, label=label)
            if status != 200:
                raise self._status_error(
                    response, status, _read_bounded(response, DEFAULT_BUDGET, self.deadline, what)
                )
            if method == INITIALIZE:
                session = response.headers.get(SESSION_HEADER)
                self.session_id = session.strip() if session else None
            if _media_type(response.headers) == SSE_TYPE:
                message = _read_sse_response(response, request_id, budget, self.deadline, what)
            else:
                body = _read_bounded(response, budget, self.deadline, what)
                message = _parse_json(body, what)
        return _unwrap(message, request_id, what)

    def _status_error(self, response: Any, status: int, body: bytes) -> HttpStatusError:
        text = body.decode("utf-8", errors="replace").strip()[:300]
        error = HttpStatusError(status, getattr(response, "reason", "") or "", text)
        if isinstance(response, urllib.error.HTTPError):
            error.__cause__ = response  # lets the classifier see a real HTTP 401
        return error


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _read_bounded(response: Any, budget: int, deadline: Deadline, what: str) -> bytes:
    """Read a whole body, never more than `budget` bytes, never past the deadline."""
    chunks: list[bytes] = []
    total = 0
    while True:
        deadline.check()
        chunk = _read_chunk(response, what)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > budget:
            raise ResponseTooLarge(TOO_LARGE.format(what=what, budget=budget))
        chunks.append(chunk)


def _read_chunk(response: Any, what: str) -> bytes:
    try:
        data: bytes = response.read1(_CHUNK) if hasattr(response, "read1") else response.read(_CHUNK)
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
            message = _parse_json(event.data.encode("utf-8"), what)
            if (
                isinstance(message, dict)
                and message.get("id") == request_id
                and ("result" in message or "error" in message)
            ):
                return message
        if not chunk:
            raise WireError(STREAM_ENDED.format(what=what))


def _parse_json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
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
