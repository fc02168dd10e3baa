"""`noemafed serve` keeps a connection open after a successful answer to an HTTP/1.1 request that did not ask to
close, under every limit: an idle one closes after IDLE_SECONDS, each request has its own deadline, refusals and
errors still close. Each test names the bug it exists to catch."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from peers.tls import PeerTLS, make_tls
from sync_helpers import source
from test_serve import served, wait_for
from test_serve_abuse import INITIALIZE, connect, dripping, read_all

from noemafed.mcp import client
from noemafed.mcp import http as mcp_http
from noemafed.mcp.client import McpSession, PeerTarget
from noemafed.mcp.http import NoemafedHTTPServer


@pytest.fixture(scope="module")
def tls() -> PeerTLS:
    return make_tls()


def request(body: bytes = INITIALIZE, version: str = "HTTP/1.1", extra: str = "") -> bytes:
    return (
        f"POST /mcp {version}\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Answers:
    """Reads the answers one connection carries, one at a time, as a client on that connection would: one
    buffered reader for all of them, so no byte of the next answer is lost with the previous one."""

    def __init__(self, sock: socket.socket) -> None:
        self.reader = sock.makefile("rb")

    def makefile(self, mode: str) -> Answers:
        return self  # http.client's response reads through here

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader, name)

    def close(self) -> None:
        """A response closes its reader once its body is read; the next answer still needs it."""

    def next(self) -> http.client.HTTPResponse:
        response = http.client.HTTPResponse(self)  # type: ignore[arg-type]
        response.begin()
        response.read()
        return response


def open_connection(server: NoemafedHTTPServer, context: ssl.SSLContext | None) -> socket.socket:
    sock = connect(server)
    sock.settimeout(10)
    return context.wrap_socket(sock, server_hostname="localhost") if context is not None else sock


@pytest.mark.parametrize("use_tls", [False, True], ids=["http", "tls"])
def test_two_requests_on_one_connection(tmp_path: Path, tls: PeerTLS, use_tls: bool) -> None:
    """Bug: every answer says `Connection: close`, so each of a poll's requests pays a new connection."""
    cortex = source(tmp_path, count=1)
    config = {}
    if use_tls:
        cert, key = tls.write_server_files(tmp_path)
        config = {"tls_cert": str(cert), "tls_key": str(key)}
    with served(cortex, **config) as server:
        sock = open_connection(server, tls.client_context() if use_tls else None)
        answers = Answers(sock)
        sock.sendall(request())
        first = answers.next()
        sock.sendall(request())
        second = answers.next()
        # Pipelined: both requests before either answer; the second waits in the buffer for its turn.
        sock.sendall(request() + request())
        third, fourth = answers.next(), answers.next()
        sock.close()
    assert [r.status for r in (first, second, third, fourth)] == [200] * 4
    assert [r.getheader("Connection") for r in (first, second, third, fourth)] == [None] * 4
    assert [r.will_close for r in (first, second, third, fourth)] == [False] * 4


@pytest.mark.parametrize(
    ("version", "extra"),
    [("HTTP/1.1", "Connection: close\r\n"), ("HTTP/1.0", ""), ("HTTP/1.0", "Connection: keep-alive\r\n")],
)
def test_a_client_that_did_not_ask_for_keep_alive_is_closed_after_its_answer(
    tmp_path: Path, version: str, extra: str
) -> None:
    cortex = source(tmp_path, count=1)
    with served(cortex) as server:
        sock = connect(server)
        sock.sendall(request(version=version, extra=extra))
        answer = read_all(sock, seconds=2.0)  # ends at the server's close, long before IDLE_SECONDS
        sock.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in answer


@pytest.mark.parametrize(
    ("head", "status"),
    [
        ("POST /elsewhere HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", 404),
        ("POST /mcp HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 0\r\n\r\n", 403),
        (
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\n{x}",
            400,
        ),
        ("GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 405),
    ],
)
def test_refusals_and_errors_still_close(tmp_path: Path, head: str, status: int) -> None:
    cortex = source(tmp_path, count=1)
    with served(cortex) as server:
        sock = connect(server)
        sock.sendall(head.encode())
        answer = read_all(sock, seconds=2.0)
        sock.close()
    assert answer.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"\r\nConnection: close\r\n" in answer


def test_an_idle_kept_alive_connection_is_closed_after_the_idle_time_without_a_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bug: a kept-alive connection waits for its next request for ever, holding its slot."""
    monkeypatch.setattr(mcp_http, "IDLE_SECONDS", 0.5)
    cortex = source(tmp_path, count=1)
    with served(cortex, timeout=5.0) as server:
        sock = connect(server)
        sock.settimeout(3.0)
        answers = Answers(sock)
        sock.sendall(request())
        assert answers.next().status == 200
        started = time.monotonic()
        rest = answers.reader.read()  # EOF when the server closes
        elapsed = time.monotonic() - started
        sock.close()
        lines = list(server.logs)  # type: ignore[attr-defined]
    assert rest == b""
    assert 0.4 < elapsed < 1.5, elapsed
    assert not [line for line in lines if "timed out" in line or "dropped" in line]


def test_a_slowloris_on_a_kept_alive_connection_ends_at_the_request_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bug: the request after a kept-alive answer has no deadline of its own (or only the idle wait's), so a
    client that sends its next request a byte every 0.1 s holds the connection as long as it likes."""
    monkeypatch.setattr(mcp_http, "IDLE_SECONDS", 0.5)
    cortex = source(tmp_path, count=1)
    with served(cortex, timeout=1.5) as server:
        sock = connect(server)
        sock.settimeout(4.0)
        answers = Answers(sock)
        sock.sendall(request())
        assert answers.next().status == 200
        started = time.monotonic()
        with dripping([sock], b"POST /mcp HTTP/1.1\r\n" + b"X-Drip: y\r\n" * 100, every=0.1):
            rest = answers.reader.read()
            elapsed = time.monotonic() - started
        wait_for(lambda: any("timed out" in line for line in server.logs))  # type: ignore[attr-defined]
    assert rest == mcp_http.TIMEOUT_RESPONSE
    assert 1.3 < elapsed < 2.5, elapsed
    assert mcp_http.TIMED_OUT.format(client="127.0.0.1", stage="request", seconds=1.5) in server.logs  # type: ignore[attr-defined]


def test_a_kept_alive_connection_holds_its_slot_of_the_per_address_limit(tmp_path: Path) -> None:
    """Bug: a connection waiting for its next request is not counted, so one address can keep any number open."""
    cortex = source(tmp_path, count=1)
    with served(cortex, max_per_address=1) as server:
        kept = connect(server)
        kept.settimeout(10)
        kept.sendall(request())
        assert Answers(kept).next().status == 200
        refused = connect(server)
        turned_away = read_all(refused, seconds=2.0)
        refused.close()
        kept.close()  # the client hangs up: the slot is free again
        wait_for(lambda: not server._per_address)  # type: ignore[attr-defined]
        again = connect(server)
        again.sendall(request(extra="Connection: close\r\n"))
        answer = read_all(again, seconds=2.0)
        again.close()
    assert turned_away == mcp_http.BUSY_RESPONSE
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")


def test_a_kept_alive_session_is_a_real_mcp_session(tmp_path: Path) -> None:
    """initialize, then tools/list with the session on the same connection: state carries across requests."""
    cortex = source(tmp_path, count=1)
    with served(cortex) as server:
        sock = connect(server)
        sock.settimeout(10)
        answers = Answers(sock)
        sock.sendall(request())
        first = answers.next()
        session = first.getheader("Mcp-Session-Id")
        listing = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).encode()
        sock.sendall(
            request(listing, extra=f"Mcp-Session-Id: {session}\r\nMCP-Protocol-Version: 2025-11-25\r\n")
        )
        second = answers.next()
        sock.close()
    assert (first.status, second.status) == (200, 200)
    assert session


def test_a_noemafed_poll_against_serve_is_one_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both sides together: every request of a poll (initialize to DELETE) on the one connection accepted."""
    cortex = source(tmp_path, count=3)
    with served(cortex) as server:
        accepted: list[Any] = []
        admit = server.process_request

        def counted(request: Any, client_address: Any) -> None:
            accepted.append(client_address)
            admit(request, client_address)

        monkeypatch.setattr(server, "process_request", counted)
        session = McpSession(PeerTarget("p", f"http://127.0.0.1:{server.server_address[1]}"))
        session.initialize()
        session.call_tool("cortex_identity", {})
        page = session.call_tool("sync_events", {"limit": 1000}, client.SYNC_EVENTS_BUDGET)
        session.call_tool("sync_read_signal", {"limit": 500}, client.READ_SIGNAL_BUDGET)
        session.close()
        wait_for(lambda: len([line for line in server.logs if " DELETE " in line]) == 1)  # type: ignore[attr-defined]
        requests = [line for line in server.logs if line.startswith("[serve] 127.0.0.1 ")]  # type: ignore[attr-defined]
    assert json.loads(page)  # a whole page of events came back
    assert len(requests) == 6
    assert len(accepted) == 1


def test_answers_after_the_first_on_a_kept_alive_connection_are_not_held_back(tmp_path: Path) -> None:
    """Bug: an answer leaves in pieces (head, body) and Nagle's algorithm holds the body until the client ACKs
    the head, which a client past its first exchange delays up to 40 ms: every kept-alive answer took 44 ms."""
    cortex = source(tmp_path, count=1)
    with served(cortex) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        waited = []
        for _ in range(10):
            started = time.monotonic()
            conn.request(
                "POST", "/mcp", INITIALIZE, {"Content-Type": "application/json", "Host": "127.0.0.1"}
            )
            response = conn.getresponse()
            response.read()
            waited.append(time.monotonic() - started)
        conn.close()
    assert response.status == 200
    assert sorted(waited[1:])[4] < 0.02, waited  # the median of the reused ones; a stall is 40 ms or more
