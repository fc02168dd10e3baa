"""One keep-alive HTTP connection to one peer over http.client (the layer under urllib), each request watched.

A poll's requests (initialize, the notification, the tool calls, the DELETE) travel on one TCP and TLS
connection instead of one connection each: against a peer 25 ms away that saves a round trip per request for
TCP and one or two more for TLS. The connection is opened again only when the peer closed it (it answered
`Connection: close`, or closed an idle keep-alive between two requests), and dropped after any failure or an
answer not read to its end, so no request ever reads what another one left on the wire.

A request is sent again, once, on a fresh connection only when that is safe: the connection was a reused one
and the peer closed it before sending a single byte of an answer. A peer that answered part of something is
never asked twice.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import ssl
import threading
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from noemafed.records import Record

# The statuses urllib's redirect handler follows (noema peers never redirect: the client refuses them).
REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))


class RequestWatch:
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


class Proxy(Record):
    """Where requests go instead of the peer, as urllib's ProxyHandler read it from the *_proxy variables."""

    scheme: str
    hostport: str
    authorization: str  # the Proxy-Authorization value; "" without credentials


def environment_proxy(url: str) -> Proxy | None:
    """The proxy the environment names for `url` (http_proxy, https_proxy, no_proxy), chosen as urllib chose it."""
    import base64  # noqa: PLC0415 (this function runs only with --use-proxy-env)
    import urllib.request  # noqa: PLC0415 (its import would cost every other start about 7 ms)

    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(unquote(parts.netloc)):
        return None
    # urllib's reading: `[scheme://][user:password@]host:port[/]`, the scheme defaulting to the request's.
    where = urlsplit(proxy if "://" in proxy else f"//{proxy}")
    user_info, _, hostport = where.netloc.rpartition("@")
    user, _, password = user_info.partition(":")
    authorization = ""
    if user and password:  # urllib sends credentials only when both are given
        pair = f"{unquote(user)}:{unquote(password)}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    return Proxy(where.scheme or parts.scheme, unquote(hostport), authorization)


class _Response(http.client.HTTPResponse):
    """http.client's response, remembering whether it was closed before its end (the rest is still on the wire)."""

    cut_short = False

    def close(self) -> None:
        # Read to its end, a chunked body lets go of fp and one with a Content-Length has none left (read1
        # keeps fp even then).
        if self.fp is not None and self.length != 0:
            self.cut_short = True
        super().close()


class PeerConnection:
    """The connection a session's requests share; not thread-safe (a session is used by one thread at a time)."""

    def __init__(self, url: str, context: ssl.SSLContext | None, proxy: Proxy | None = None) -> None:
        parts = urlsplit(url)
        # What urllib connected to and named in Host: http.client parses the port, and refuses a bad one.
        self._host = unquote(parts.netloc)
        self._https = parts.scheme == "https"
        self._context = context
        self._proxy = proxy
        self._target = parts.path + (f"?{parts.query}" if parts.query else "")
        self._extra: dict[str, str] = {}
        if proxy is not None and not self._https:
            self._target = url  # plain HTTP through a proxy: the absolute URL, as urllib sent it
            if proxy.authorization:
                self._extra["Proxy-Authorization"] = proxy.authorization
        self._http: http.client.HTTPConnection | None = None
        # A duplicate of the TCP socket's descriptor, ours to keep: TLS takes over the original (which is left
        # without a descriptor), and the watch and the idle check need the socket under the TLS one.
        self._raw: socket.socket | None = None
        self._last: _Response | None = None
        self.watch: RequestWatch | None = None
        self.peer_certificate: bytes | None = (
            None  # DER of the last TLS handshake's peer certificate (doctor)
        )

    def send(self, method: str, headers: dict[str, str], body: bytes | None, timeout: float) -> _Response:
        """Send one request and read the head of its answer; the body is the caller's to read, then close."""
        headers = {**headers, **self._extra, "Host": self._host}
        reused = self._reusable()
        try:
            connection = self._http if reused else self._connect(timeout)
            assert connection is not None  # noqa: S101 (_reusable found it open)
            if reused:
                # The socket's timeout: the connection's own is read only when it connects.
                if connection.sock is not None:
                    connection.sock.settimeout(timeout)
                if self.watch is not None and self._raw is not None:
                    self.watch.attach(self._raw)
            response = self._exchange(connection, reused, method, headers, body)
            if response is None:  # the peer had closed the reused connection before answering a byte
                response = self._exchange(self._connect(timeout), False, method, headers, body)
            assert response is not None  # noqa: S101 (a fresh connection never asks for another try)
        except BaseException:
            self.close()
            raise
        self._last = cast(_Response, response)  # http.client makes its response_class
        return self._last

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._raw is not None:
            self._raw.close()
        self._http = None
        self._raw = None
        self._last = None

    # ---- plumbing ---------------------------------------------------------------------------------

    def _exchange(
        self,
        connection: http.client.HTTPConnection,
        reused: bool,
        method: str,
        headers: dict[str, str],
        body: bytes | None,
    ) -> http.client.HTTPResponse | None:
        """The request sent and the head of its answer read; None when it may go again on a fresh connection."""
        try:
            connection.request(method, self._target, body, headers)
        except OSError:
            if not reused or self._answer_started():
                raise
            return None
        try:
            return connection.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            # The peer closed the idle connection as we reused it: its FIN was not yet in when the idle check
            # looked, and our request met a reset. Sending it again is safe: every request a session makes
            # reads (initialize, the tools, DELETE), and a peer that resets never processed it.
            if not reused:
                raise
            return None

    def _reusable(self) -> bool:
        """Whether the open connection can carry the next request; drops it when it cannot."""
        connection, last = self._http, self._last
        if connection is None or connection.sock is None:  # never opened, or the last answer said close
            self.close()
            return False
        # (An answer that said close has already closed the connection: http.client drops the socket.)
        if last is not None and (last.cut_short or not last.isclosed()):
            self.close()  # part of the last answer may still be on the wire
            return False
        if self._readable(connection):
            # Between requests nothing may arrive: this is the peer closing an idle connection (or a TLS
            # alert, or bytes no request asked for). Either way the connection is done.
            self.close()
            return False
        return True

    def _readable(self, connection: http.client.HTTPConnection) -> bool:
        tls = connection.sock
        if isinstance(tls, ssl.SSLSocket) and tls.pending():  # decrypted bytes no request asked for
            return True
        return self._raw is None or _waiting(self._raw)

    def _answer_started(self) -> bool:
        """After a send failed on a reused connection: did the peer send anything back (then it was no idle close)?"""
        sock = self._raw
        try:
            return (
                sock is not None
                and _waiting(sock)
                and bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
            )
        except OSError:  # a reset with nothing before it
            return False

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        self.close()
        proxy = self._proxy
        if proxy is None:
            connection = self._connection(self._https, self._host, timeout, self._context)
        elif self._https:
            # A CONNECT tunnel through the proxy, and TLS with the peer inside it, as urllib did.
            connection = self._connection(True, proxy.hostport, timeout, self._context)
            tunnel = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else None
            connection.set_tunnel(self._host, headers=tunnel)
        else:
            # Plain HTTP: the request itself goes to the proxy, over TLS when the proxy's URL says https, checked
            # against the system's CAs by http.client's default context (as urllib did).
            connection = self._connection(proxy.scheme == "https", proxy.hostport, timeout, None)
        self._http = connection
        connection.connect()
        # The peer's own certificate: a proxy reached over TLS for plain HTTP shows its own, which doctor would
        # otherwise check as the peer's.
        if self._https and isinstance(connection.sock, ssl.SSLSocket):
            self.peer_certificate = connection.sock.getpeercert(binary_form=True)
        return connection

    def _connection(
        self, https: bool, host: str, timeout: float, context: ssl.SSLContext | None
    ) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection
        if https:
            connection = http.client.HTTPSConnection(host, timeout=timeout, context=context)
        else:
            connection = http.client.HTTPConnection(host, timeout=timeout)
        connection.response_class = _Response
        # Every new socket joins the current request's watch before the TLS handshake (and the proxy's
        # CONNECT), which then run under the watch too.
        connection._create_connection = self._create_connection  # type: ignore[attr-defined]
        return connection

    def _create_connection(
        self, address: tuple[str, int], timeout: float | None, source_address: Any = None
    ) -> socket.socket:
        host, port = address
        # getaddrinfo encodes a str host with the idna codec: for an ASCII name that is its ASCII bytes, or an
        # error for an empty or over-long label, which as bytes is the resolver's "no such host" instead, as Go
        # reports it. Bytes also spare a plain-HTTP run the codec's imports (stringprep, unicodedata: 1.3 ms).
        target = (host.encode("ascii"), port) if host.isascii() else address
        sock = socket.create_connection(target, timeout, source_address)  # type: ignore[arg-type]
        self._raw = sock.dup()
        if self.watch is not None:
            self.watch.attach(sock)
        return sock


def _waiting(sock: socket.socket) -> bool:
    """Whether bytes, an end of stream or a reset wait on `sock`, without waiting.

    poll, not select: select refuses a descriptor past 1023 (a process with many files open), and then every
    check failed, keep-alive was off and a request the peer had begun to answer was sent again."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))
