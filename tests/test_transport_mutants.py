"""The keep-alive connection under the client (`mcp/transport.py`) driven on its own, against scripted servers on
127.0.0.1: the exact bytes of each request (direct, through a proxy, in a CONNECT tunnel), the socket timeout of
every connection it opens or reuses, when a connection is given up (bytes between two answers, decrypted or not),
when a request goes again (only when the peer answered nothing) and what the watch does with a socket it meets
late or one the peer reset. Written for the mutants of `mcp/transport.py` that the client's tests let through
(docs/testing.md)."""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest
from peers.tls import PeerTLS, make_tls

import noemafed
from noemafed.mcp.transport import PeerConnection, Proxy, RequestWatch, environment_proxy

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
BIG = (
    b"x" * 20_000_000
)  # a body far over the socket buffers: sending it blocks until the peer reads or resets


@dataclass
class Request:
    connection: int  # which connection carried it, counted from 1 in the order they were accepted
    head: bytes  # the request line and headers, as they came

    @property
    def length(self) -> int:
        for line in self.head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                return int(value)
        return 0


# A step answers one request (the body is its to read) and says whether the connection goes on.
Step = Callable[[socket.socket, BinaryIO, Request], bool]


def answer(sock: socket.socket, rfile: BinaryIO, request: Request) -> bool:
    rfile.read(request.length)
    sock.sendall(OK)
    return True


def answer_late(sock: socket.socket, rfile: BinaryIO, request: Request) -> bool:
    time.sleep(1.0)
    return answer(sock, rfile, request)


def silent(sock: socket.socket, rfile: BinaryIO, request: Request) -> bool:
    """Read the request, answer nothing, and hold the connection until the client lets go of it."""
    rfile.read(request.length)
    with contextlib.suppress(OSError):
        while rfile.read(1):
            pass
    return False


def close_unanswered(sock: socket.socket, rfile: BinaryIO, request: Request) -> bool:
    rfile.read(request.length)
    return False


def reset(sock: socket.socket) -> None:
    """Close with a reset (RST) rather than a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def reset_unanswered(sock: socket.socket, rfile: BinaryIO, request: Request) -> bool:
    """The connection reset before a byte of the body was read: the client's send of a large body fails."""
    reset(sock)
    return False


def start_then_reset(sock: socket.socket, rfile: BinaryIO, request: Request) -> bool:
    """The start of an answer, then a reset while the client is still sending its (large) body."""
    sock.sendall(b"HTTP/1.1 2")
    time.sleep(0.2)
    reset(sock)
    return False


class ScriptedServer:
    """Answers each request as `steps` says (by its number, counted from 1 over all connections; `answer` when
    none is given) and records them. With `tls` it speaks TLS; with `tunnel` it plays a proxy that accepts a
    CONNECT no step is given for and then serves the requests in the tunnel itself, over TLS with that
    certificate."""

    def __init__(
        self, steps: dict[int, Step] | None = None, tls: PeerTLS | None = None, tunnel: PeerTLS | None = None
    ) -> None:
        self.steps = steps or {}
        self.tls = tls
        self.tunnel = tunnel
        self.requests: list[Request] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])

    def __enter__(self) -> ScriptedServer:
        threading.Thread(target=self._accept, name="scripted-server", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()

    def heads(self) -> list[tuple[int, bytes]]:
        return [(request.connection, request.head) for request in self.requests]

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
            threading.Thread(target=self._serve, args=(sock, number), daemon=True).start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        sock.settimeout(30)
        rfile: BinaryIO | None = None
        try:
            if self.tls is not None:
                sock = self.tls.server_context().wrap_socket(sock, server_side=True)
            rfile = sock.makefile("rb")
            while (head := _read_head(rfile)) is not None:
                request = Request(number, head)
                with self._lock:
                    self.requests.append(request)
                    step = self.steps.get(len(self.requests))
                if step is None and head.startswith(b"CONNECT ") and self.tunnel is not None:
                    sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    rfile.close()
                    sock = self.tunnel.server_context().wrap_socket(sock, server_side=True)
                    rfile = sock.makefile("rb")
                    continue
                if not (step or answer)(sock, rfile, request):
                    return
        except OSError:
            return
        finally:
            if rfile is not None:
                rfile.close()
            sock.close()


def _read_head(rfile: BinaryIO) -> bytes | None:
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = rfile.readline(65537)
        if not line:
            return None
        head += line
    return head


def http_connection(server: ScriptedServer, path: str = "/mcp") -> PeerConnection:
    return PeerConnection(f"http://127.0.0.1:{server.port}{path}", None)


def post(connection: PeerConnection, body: bytes = b"{}", timeout: float = 30.0) -> bytes:
    """One POST on `connection`, its answer read to the end."""
    with connection.send("POST", {"Content-Type": "application/json"}, body, timeout) as response:
        return response.read()


def head_of(target: str, host: str, length: int = 2, extra: bytes = b"") -> bytes:
    """A POST's head as http.client writes it for `post`: its own two headers, then ours, Host last."""
    return (
        f"POST {target} HTTP/1.1\r\nAccept-Encoding: identity\r\nContent-Length: {length}\r\n"
        f"Content-Type: application/json\r\n".encode()
        + extra
        + f"Host: {host}\r\n\r\n".encode()
    )


def der(tls: PeerTLS) -> bytes:
    return ssl.PEM_cert_to_DER_cert(tls.leaf.cert_chain_pems[0].bytes().decode("ascii"))


@contextlib.contextmanager
def watched(connection: PeerConnection, seconds: float) -> Iterator[RequestWatch]:
    """The whole-request watch the client puts on every request, here a backstop that ends a test whose socket
    timeout was lost (a watch ends the read with an EOF, never with the TimeoutError a socket timeout raises)."""
    watch = RequestWatch(seconds)
    connection.watch = watch
    try:
        yield watch
    finally:
        connection.watch = None
        watch.stop()


# ---- the host given to the resolver ----------------------------------------------------------------------


def test_an_ascii_host_goes_to_the_resolver_as_bytes_and_another_through_the_idna_codec() -> None:
    """An ASCII name as bytes: an empty label is the resolver's refusal, as Go reports it (the codec would refuse
    it itself, with its own error). A non-ASCII name still takes the codec, which refuses a label over 63
    characters before any lookup (its ASCII bytes do not exist)."""
    with pytest.raises(socket.gaierror):
        PeerConnection("http://peer..example:9/mcp", None).send("POST", {}, b"{}", 5)
    long_label = "b\u00fccher" + "x" * 70
    # "label empty or too long" up to 3.12, "label too long" from 3.13
    with pytest.raises(UnicodeError, match=r"label (empty or )?too long"):
        PeerConnection(f"http://{long_label}.example:9/mcp", None).send("POST", {}, b"{}", 5)


# ---- the requests, byte for byte ------------------------------------------------------------------------


def test_a_request_goes_to_the_path_and_query_of_its_url_with_host_last() -> None:
    with ScriptedServer() as server:
        host = f"127.0.0.1:{server.port}"
        for path in ("/mcp", "/mcp?key=1"):
            connection = http_connection(server, path)
            assert post(connection) == b"ok"
            connection.close()
    assert server.heads() == [(1, head_of("/mcp", host)), (2, head_of("/mcp?key=1", host))]


def test_plain_http_through_a_proxy_sends_the_absolute_url_and_the_proxys_credentials() -> None:
    with ScriptedServer() as proxy:
        connection = PeerConnection(
            "http://peer.example:8443/mcp?key=1", None, Proxy("http", f"127.0.0.1:{proxy.port}", "Basic dTpw")
        )
        assert post(connection) == b"ok"
        assert post(connection) == b"ok"
        connection.close()
    expected = head_of(
        "http://peer.example:8443/mcp?key=1",
        "peer.example:8443",
        extra=b"Proxy-Authorization: Basic dTpw\r\n",
    )
    assert proxy.heads() == [(1, expected), (1, expected)]


@pytest.mark.parametrize("authorization", ["Basic dTpw", ""])
def test_https_through_a_proxy_opens_a_connect_tunnel_with_the_proxys_credentials(authorization: str) -> None:
    tls = make_tls()
    with ScriptedServer(tunnel=tls) as proxy:
        connection = PeerConnection(
            "https://localhost:4443/mcp",
            tls.client_context(),
            Proxy("http", f"127.0.0.1:{proxy.port}", authorization),
        )
        assert post(connection) == b"ok"
        assert post(connection) == b"ok"
        connection.close()
    credentials = f"Proxy-Authorization: {authorization}\r\n".encode() if authorization else b""
    connect = b"CONNECT localhost:4443 HTTP/1.0\r\n" + credentials + b"\r\n"
    inside = head_of("/mcp", "localhost:4443")
    assert proxy.heads() == [(1, connect), (1, inside), (1, inside)]
    assert connection.peer_certificate == der(tls)  # the peer's, met inside the tunnel


def test_plain_http_through_a_proxy_reached_over_tls_checks_it_against_the_systems_cas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = make_tls()
    # The system's CAs, as OpenSSL finds them, here the test CA alone.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.write_ca(tmp_path / "ca.pem")))
    with ScriptedServer(tls=tls) as proxy:
        connection = PeerConnection(
            "http://peer.example/mcp", None, Proxy("https", f"localhost:{proxy.port}", "")
        )
        assert post(connection) == b"ok"
        connection.close()
    assert proxy.heads() == [(1, head_of("http://peer.example/mcp", "peer.example"))]
    # Bug: the proxy's certificate was taken for the peer's, and doctor warned of its expiry as the peer's.
    assert connection.peer_certificate is None


def test_the_peer_certificate_is_that_of_the_last_tls_handshake_and_none_over_plain_http() -> None:
    tls = make_tls()
    with ScriptedServer() as plain, ScriptedServer(tls=tls) as secure:
        connection = http_connection(plain)
        assert post(connection) == b"ok"
        assert connection.peer_certificate is None
        connection = PeerConnection(f"https://localhost:{secure.port}/mcp", tls.client_context())
        assert post(connection) == b"ok"
        assert connection.peer_certificate == der(tls)


# ---- environment_proxy ----------------------------------------------------------------------------------


def _proxy_env(monkeypatch: pytest.MonkeyPatch, proxy: str) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", proxy)
    monkeypatch.setenv("https_proxy", proxy)


def _basic(pair: str) -> str:
    return "Basic " + base64.b64encode(pair.encode()).decode()


@pytest.mark.parametrize(
    ("proxy", "url", "expected"),
    [
        # No scheme: the request's own.
        ("proxy.example:3128", "https://peer.example/mcp", Proxy("https", "proxy.example:3128", "")),
        # The proxy's scheme wins over the request's.
        ("https://proxy.example:3128", "http://peer.example/mcp", Proxy("https", "proxy.example:3128", "")),
        ("http://proxy.example:3128/", "https://peer.example/mcp", Proxy("http", "proxy.example:3128", "")),
        # Credentials only when both parts are there; the password is everything after the first colon.
        (
            "http://user@proxy.example:3128",
            "http://peer.example/mcp",
            Proxy("http", "proxy.example:3128", ""),
        ),
        (
            "http://:pass@proxy.example:3128",
            "http://peer.example/mcp",
            Proxy("http", "proxy.example:3128", ""),
        ),
        (
            "http://us%40er:p%3Ass@proxy.example:3128",
            "http://peer.example/mcp",
            Proxy("http", "proxy.example:3128", _basic("us@er:p:ss")),
        ),
        (
            "http://u::@proxy.example:3128",
            "http://peer.example/mcp",
            Proxy("http", "proxy.example:3128", _basic("u::")),
        ),
        (
            "http://u:p:@proxy.example:3128",
            "http://peer.example/mcp",
            Proxy("http", "proxy.example:3128", _basic("u:p:")),
        ),
        # The host is after the last `@`, and percent-decoded like the credentials.
        (
            "http://a@b:c@proxy%2Eexample:3128",
            "http://peer.example/mcp",
            Proxy("http", "proxy.example:3128", _basic("a@b:c")),
        ),
    ],
)
def test_the_environments_proxy_is_read_as_urllib_reads_it(
    proxy: str, url: str, expected: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    _proxy_env(monkeypatch, proxy)
    assert environment_proxy(url) == expected


def test_no_proxy_and_an_unset_variable_mean_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    _proxy_env(monkeypatch, "http://proxy.example:3128")
    monkeypatch.setenv("no_proxy", "peer.example")
    assert environment_proxy("http://peer.example/mcp") is None
    assert environment_proxy("http://other.example/mcp") == Proxy("http", "proxy.example:3128", "")
    monkeypatch.delenv("https_proxy")
    assert environment_proxy("https://other.example/mcp") is None


# ---- socket timeouts --------------------------------------------------------------------------------------


def assert_times_out(connection: PeerConnection) -> None:
    """One request that gets no answer ends in the TimeoutError of a 0.3 s socket timeout. (Were the timeout
    lost, the 5 s watch would end it instead, with the EOF of a socket shut down.)"""
    with watched(connection, 5.0), pytest.raises(TimeoutError):
        post(connection, timeout=0.3)
    connection.close()


def test_a_fresh_connection_reads_with_the_requests_timeout() -> None:
    with ScriptedServer({1: silent}) as server:
        assert_times_out(http_connection(server))


def test_a_tls_handshake_reads_with_the_requests_timeout() -> None:
    # A plain server waits for a request head; the client's hello never ends one, so the handshake hangs.
    with ScriptedServer() as server:
        connection = PeerConnection(f"https://localhost:{server.port}/mcp", make_tls().client_context())
        assert_times_out(connection)


def test_a_proxy_and_its_connect_tunnel_read_with_the_requests_timeout() -> None:
    tls = make_tls()
    with ScriptedServer({1: silent}) as plain_proxy, ScriptedServer({1: silent}, tunnel=tls) as tunnel_proxy:
        through = PeerConnection(
            "http://peer.example/mcp", None, Proxy("http", f"127.0.0.1:{plain_proxy.port}", "")
        )
        assert_times_out(through)
        tunnelled = PeerConnection(
            "https://localhost:4443/mcp",
            tls.client_context(),
            Proxy("http", f"127.0.0.1:{tunnel_proxy.port}", ""),
        )
        assert_times_out(tunnelled)


def test_a_proxy_reached_over_tls_reads_with_the_requests_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = make_tls()
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.write_ca(tmp_path / "ca.pem")))
    with ScriptedServer({1: silent}, tls=tls) as proxy:
        connection = PeerConnection(
            "http://peer.example/mcp", None, Proxy("https", f"localhost:{proxy.port}", "")
        )
        assert_times_out(connection)


def test_a_reused_connection_reads_with_the_new_requests_timeout() -> None:
    with ScriptedServer({2: answer_late, 3: silent}) as server:
        connection = http_connection(server)
        assert post(connection, timeout=0.3) == b"ok"
        assert post(connection, timeout=30.0) == b"ok"  # answered after a second, past the first timeout
        assert_times_out(connection)  # and back to a short one
    assert [request.connection for request in server.requests] == [1, 1, 1]


def test_a_request_sent_again_reads_with_the_requests_timeout() -> None:
    with ScriptedServer({2: close_unanswered, 3: silent}) as server:
        connection = http_connection(server)
        assert post(connection) == b"ok"
        assert_times_out(connection)
    assert [request.connection for request in server.requests] == [1, 1, 2]


# ---- a request sent again, or not ------------------------------------------------------------------------


def test_a_request_reset_unanswered_while_its_body_goes_out_on_a_reused_connection_goes_once_more() -> None:
    """The peer reset the idle connection as the request went out: the send fails, nothing came back, so the
    request goes again on a fresh connection."""
    with ScriptedServer({2: reset_unanswered}) as server:
        connection = http_connection(server)
        assert post(connection) == b"ok"
        assert post(connection, BIG) == b"ok"
    assert [(request.connection, request.length) for request in server.requests] == [
        (1, 2),
        (1, len(BIG)),
        (2, len(BIG)),
    ]


def test_a_request_whose_answer_had_begun_when_its_send_failed_is_never_sent_again() -> None:
    with ScriptedServer({2: start_then_reset}) as server:
        connection = http_connection(server)
        assert post(connection) == b"ok"
        with pytest.raises(ConnectionResetError):
            post(connection, BIG)
    assert [request.connection for request in server.requests] == [1, 1]


def test_a_send_that_fails_on_a_fresh_connection_is_a_failure_not_a_retry() -> None:
    with ScriptedServer({1: reset_unanswered}) as server, pytest.raises(ConnectionError):
        post(http_connection(server), BIG)
    assert server.connections == 1


def test_a_request_sent_again_and_unanswered_again_fails_as_the_peer_closing() -> None:
    with ScriptedServer({2: close_unanswered, 3: close_unanswered}) as server:
        connection = http_connection(server)
        assert post(connection) == b"ok"
        with pytest.raises(http.client.RemoteDisconnected):
            post(connection)
    assert [request.connection for request in server.requests] == [1, 1, 2]


# ---- when a kept connection is given up ------------------------------------------------------------------

STRAY = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"


def test_bytes_that_arrive_between_two_answers_end_the_connection() -> None:
    """Nothing may arrive between two requests (some servers send a 408 before they close an idle connection):
    the next request goes on a fresh connection, and never reads those bytes as its answer."""
    sent = threading.Event()

    def answer_then_stray(sock: socket.socket, rfile: BinaryIO, request: Request) -> bool:
        answer(sock, rfile, request)
        time.sleep(0.2)  # after the client read its answer, so the stray bytes wait on the socket
        sock.sendall(STRAY)
        sent.set()
        return True

    with ScriptedServer({1: answer_then_stray}) as server:
        connection = http_connection(server)
        assert post(connection) == b"ok"
        assert sent.wait(10)
        time.sleep(0.1)
        assert post(connection) == b"ok"
    assert [request.connection for request in server.requests] == [1, 2]


def test_decrypted_bytes_no_request_asked_for_end_a_tls_connection() -> None:
    """The answer and stray bytes in one TLS record: http.client reads 8 KiB of it, the rest waits decrypted in
    the TLS layer, where no select on the socket sees it."""
    tls = make_tls()

    def answer_and_stray(sock: socket.socket, rfile: BinaryIO, request: Request) -> bool:
        rfile.read(request.length)
        padding = b"x" * (8192 - len(OK))
        sock.sendall(OK + padding + STRAY)  # under 16 KiB: one record
        return True

    with ScriptedServer({1: answer_and_stray}, tls=tls) as server:
        connection = PeerConnection(f"https://localhost:{server.port}/mcp", tls.client_context())
        assert post(connection) == b"ok"
        assert post(connection) == b"ok"
    assert [request.connection for request in server.requests] == [1, 2]


def test_a_connection_the_last_answer_was_left_unread_on_is_never_reused() -> None:
    with ScriptedServer() as server:
        connection = http_connection(server)
        response = connection.send("POST", {"Content-Type": "application/json"}, b"{}", 30.0)
        response.read(1)
        response.close()
        assert post(connection) == b"ok"
        # And one its caller never closed.
        connection.send("POST", {"Content-Type": "application/json"}, b"{}", 30.0)
        assert post(connection) == b"ok"
    assert [request.connection for request in server.requests] == [1, 2, 2, 3]


# ---- the watch ---------------------------------------------------------------------------------------------


def test_a_socket_that_joins_an_expired_watch_is_shut_down_at_once() -> None:
    """A connect that outlasted the request's deadline (several addresses, each timing out): the socket arrives
    after the watch expired and is shut down as it joins, so nothing is sent."""
    with ScriptedServer() as server:
        connection = http_connection(server)
        with watched(connection, 0.0) as watch:
            deadline = time.monotonic() + 10
            while not watch.expired and time.monotonic() < deadline:
                time.sleep(0.01)
            with pytest.raises(BrokenPipeError):
                post(connection)
        # On a reused connection too.
        assert post(connection) == b"ok"
        with watched(connection, 0.0) as watch:
            while not watch.expired and time.monotonic() < deadline:
                time.sleep(0.01)
            with pytest.raises(BrokenPipeError):
                post(connection)
    assert [request.connection for request in server.requests] == [2]


def test_the_watch_ends_a_request_sent_again_although_the_first_socket_was_reset() -> None:
    """The watch holds the reused socket (reset by the peer: shutting it down fails) and the fresh one the
    request went again on: it still shuts the fresh one down when the time is up."""

    def reset_after_reading(sock: socket.socket, rfile: BinaryIO, request: Request) -> bool:
        rfile.read(request.length)
        reset(sock)
        return False

    with ScriptedServer({2: reset_after_reading, 3: silent}) as server:
        connection = http_connection(server)
        assert post(connection) == b"ok"
        started = time.monotonic()
        with watched(connection, 1.0) as watch, pytest.raises(http.client.RemoteDisconnected):
            post(connection, timeout=30.0)
        assert watch.expired
        assert time.monotonic() - started < 10
    assert [request.connection for request in server.requests] == [1, 1, 2]


# ---- many files open ---------------------------------------------------------------------------------------


@pytest.fixture
def descriptors_past_1023() -> Iterator[None]:
    """Enough files open that the next socket's descriptor is past 1023, which select refuses."""
    import resource  # POSIX only, like the transport's MSG_DONTWAIT

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        if hard != resource.RLIM_INFINITY and hard < 1200:
            pytest.skip(f"at most {hard} files may be open")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    opened = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        yield
    finally:
        for descriptor in opened:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_with_many_files_open_a_connection_is_still_kept_and_a_begun_answer_never_asked_twice(
    descriptors_past_1023: None,
) -> None:
    """Bug: the checks used select, which refuses a descriptor past 1023; every check then failed, so each
    request opened a connection of its own and a request the peer had begun to answer was sent again."""
    with ScriptedServer({3: start_then_reset}) as server:
        connection = http_connection(server)
        assert post(connection) == b"ok"
        assert post(connection) == b"ok"
        with pytest.raises(ConnectionResetError):
            post(connection, BIG)
    assert [request.connection for request in server.requests] == [1, 1, 1]


def test_a_watch_runs_its_timer_on_a_daemon_thread() -> None:
    """A call abandoned at the run's deadline (the page fetched ahead, on its own thread) still has its watch
    running when the run ends; a daemon timer lets the process exit all the same."""
    before = set(threading.enumerate())
    watch = RequestWatch(60.0)
    try:
        timers = set(threading.enumerate()) - before
        assert timers
        assert all(timer.daemon for timer in timers)
    finally:
        watch.stop()


def test_a_watch_still_running_never_holds_the_process_at_exit() -> None:
    """What the daemon timer is for: the process exits at once, not when the watch fires."""
    package = Path(noemafed.__file__).parent.parent  # the noemafed under test, wherever it was imported from
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", "from noemafed.mcp.transport import RequestWatch; RequestWatch(60.0)"],
        env={**os.environ, "PYTHONPATH": str(package)},
        check=True,
        timeout=30,
    )
    assert time.monotonic() - started < 20
