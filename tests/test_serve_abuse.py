"""`noemafed serve` against abusive clients on 127.0.0.1: slow and idle connections, floods from one address,
bodies the parser refuses and ids the encoder chokes on. Each test names the bug it exists to catch."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peers.tls import PeerTLS, make_tls
from sync_helpers import source
from test_serve import Raw, served, wait_for

from noemafed.cortex.access import AccessKey
from noemafed.logs import Level
from noemafed.mcp import http as mcp_http
from noemafed.mcp import server as mcp_server
from noemafed.mcp.http import NoemafedHTTPServer
from noemafed.mcp.server import CortexReader, McpApp, Reply

INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}).encode()
PARSE_ERROR = b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error"}}'
# Linux routes all of 127/8 to the loopback: a second client address without a second machine.
OTHER_ADDRESS = "127.0.0.2"


@pytest.fixture(scope="module")
def tls() -> PeerTLS:
    return make_tls()


def ask(
    server: NoemafedHTTPServer, source_address: str = "127.0.0.1", context: ssl.SSLContext | None = None
) -> tuple[int, float]:
    """One real client's initialize: its status and how long it waited for it (an answer, if 200)."""
    port = server.server_address[1]
    started = time.monotonic()
    if context is not None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", port, context=context, timeout=10, source_address=(source_address, 0)
        )
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source_address, 0))
    try:
        conn.request("POST", "/mcp", INITIALIZE, {"Content-Type": "application/json", "Host": "127.0.0.1"})
        response = conn.getresponse()
        body = response.read()
        if response.status == 200:
            assert json.loads(body)["result"]["serverInfo"]["name"] == "noema"
        return response.status, time.monotonic() - started
    finally:
        conn.close()


def connect(server: NoemafedHTTPServer, source_address: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(
        ("127.0.0.1", server.server_address[1]), source_address=(source_address, 0)
    )


def read_all(sock: socket.socket, seconds: float = 5.0) -> bytes:
    """Everything the server sends until it closes (a reset counts as a close)."""
    sock.settimeout(seconds)
    out = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            out += chunk
    return out


@contextlib.contextmanager
def dripping(socks: list[socket.socket], payload: bytes, every: float = 0.1) -> Iterator[None]:
    """Each socket sends `payload` one byte at a time, one byte per socket per `every` seconds: a slowloris."""
    stop = threading.Event()

    def drip() -> None:
        for index in range(len(payload)):
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.send(payload[index : index + 1])
            if stop.wait(every):
                return

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        for sock in socks:
            sock.close()


SLOW_HEAD = (
    b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + b"X-Pad: y\r\n" * 500
)


# ---- slow and idle clients hold no worker --------------------------------------------------------------


def test_slow_headers_hold_no_worker(tmp_path: Path) -> None:
    """Bug: the request is read on a worker, so 80 clients sending a byte at a time take every worker."""
    cortex = source(tmp_path, count=1)
    with served(cortex, workers=2, queue=200, max_per_address=200, timeout=10.0) as server:
        slow = [connect(server) for _ in range(80)]
        with dripping(slow, SLOW_HEAD):
            time.sleep(0.5)  # every slow client has started its head
            status, waited = ask(server)
    assert status == 200
    assert waited < 2.0, waited


def test_slow_bodies_hold_no_worker(tmp_path: Path) -> None:
    """Bug: the body is read on a worker once the head is in (a slow body rather than slow headers)."""
    cortex = source(tmp_path, count=1)
    head = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 999\r\n\r\n"
    with served(cortex, workers=2, queue=200, max_per_address=200, timeout=10.0) as server:
        slow = [connect(server) for _ in range(80)]
        for sock in slow:
            sock.sendall(head)
        with dripping(slow, b" " * 900):
            time.sleep(0.5)
            status, waited = ask(server)
    assert status == 200
    assert waited < 2.0, waited


def test_idle_tls_handshakes_hold_no_worker(tmp_path: Path, tls: PeerTLS) -> None:
    """Bug: the TLS handshake runs on a worker (or the accept thread), so idle connections hold it."""
    cortex = source(tmp_path, count=1)
    cert, key = tls.write_server_files(tmp_path)
    config: dict[str, Any] = {"workers": 2, "queue": 200, "max_per_address": 200, "timeout": 10.0}
    with served(cortex, tls_cert=str(cert), tls_key=str(key), **config) as server:
        idle = [connect(server) for _ in range(80)]
        # Half of them start a ClientHello and stop after five bytes.
        for sock in idle[::2]:
            sock.sendall(b"\x16\x03\x01\x02\x00")
        time.sleep(0.3)
        status, waited = ask(server, context=tls.client_context())
        for sock in idle:
            sock.close()
    assert status == 200
    assert waited < 2.0, waited


# ---- the whole-request deadline --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prelude", [b"", b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"]
)
def test_a_dripping_client_is_closed_at_the_deadline(tmp_path: Path, prelude: bytes) -> None:
    """Bug: the timeout bounds each socket read, so a byte every 0.1 s keeps the connection forever."""
    cortex = source(tmp_path, count=1)
    with served(cortex, timeout=1.0) as server:
        sock = connect(server)
        sock.sendall(prelude)
        started = time.monotonic()
        with dripping([sock], b"X-Drip: " + b"y" * 200, every=0.1):
            answer = read_all(sock)
            elapsed = time.monotonic() - started
        wait_for(lambda: any("timed out" in line for line in server.logs))  # type: ignore[attr-defined]
    assert answer == mcp_http.TIMEOUT_RESPONSE
    assert 0.8 < elapsed < 2.0, elapsed
    assert mcp_http.TIMED_OUT.format(client="127.0.0.1", stage="request", seconds=1) in server.logs  # type: ignore[attr-defined]


def test_an_unfinished_tls_handshake_is_closed_at_the_deadline_without_plaintext(
    tmp_path: Path, tls: PeerTLS
) -> None:
    """Bug: the handshake has no deadline of its own, or the deadline answers a TLS client in plain text."""
    cortex = source(tmp_path, count=1)
    cert, key = tls.write_server_files(tmp_path)
    with served(cortex, tls_cert=str(cert), tls_key=str(key), timeout=1.0) as server:
        sock = connect(server)
        started = time.monotonic()
        with dripping([sock], b"\x16\x03\x01\x02\x00" + b"\x01" * 100, every=0.1):
            answer = read_all(sock)
            elapsed = time.monotonic() - started
        wait_for(lambda: any("timed out" in line for line in server.logs))  # type: ignore[attr-defined]
    assert answer == b""
    assert 0.8 < elapsed < 2.0, elapsed
    assert mcp_http.TIMED_OUT.format(client="127.0.0.1", stage="TLS handshake", seconds=1) in server.logs  # type: ignore[attr-defined]


def test_an_answer_the_client_does_not_read_is_dropped_at_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bug: a worker writes the answer and waits on a client that never reads; its session is kept."""
    cortex = source(tmp_path, count=1)
    with served(cortex, workers=1, timeout=1.0) as server:
        real_post = server.app.post
        message = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"x": "y" * (16 << 20)}})
        opened: list[str] = []

        def huge(*args: Any) -> Reply:
            opened.append(server.app.sessions.create("/mcp"))
            return Reply(200, message, streamable=True, session=opened[0])

        monkeypatch.setattr(server.app, "post", huge)
        reader = connect(server)
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.sendall(
            b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(INITIALIZE), INITIALIZE)
        )
        time.sleep(0.3)  # the one worker has answered and the answer is stuck in the socket
        monkeypatch.setattr(server.app, "post", real_post)
        status, waited = ask(server)
        assert (status, waited < 2.0) == (200, True)
        wait_for(lambda: any("answer timed out" in line for line in server.logs))  # type: ignore[attr-defined]
        reader.close()
        assert not server.app.sessions.touch(opened[0], "/mcp")  # the answer that opened it never arrived
    assert mcp_http.TIMED_OUT.format(client="127.0.0.1", stage="answer", seconds=1) in server.logs  # type: ignore[attr-defined]


# ---- limits per address and in all ------------------------------------------------------------------------


def test_one_address_gets_its_share_and_is_refused_at_once_beyond_it(tmp_path: Path) -> None:
    """Bug: no per-address limit, so one host's 80 idle connections take every slot from everyone else."""
    cortex = source(tmp_path, count=1)
    with served(cortex, workers=2, queue=78, timeout=5.0, max_per_address=8) as server:
        held = [connect(server) for _ in range(80)]
        started = time.monotonic()
        answers = [read_all(sock, 1.0) if i >= 8 else b"" for i, sock in enumerate(held)]
        assert time.monotonic() - started < 3.0  # refused at once, not at the deadline (5 s)
        # A 503 each while at most 64 refusals are being answered at once; beyond that a plain close.
        assert set(answers[8:]) <= {mcp_http.BUSY_RESPONSE, b""}
        assert answers[8:].count(mcp_http.BUSY_RESPONSE) >= mcp_http.MAX_REFUSING
        assert b"Retry-After: 5\r\n" in mcp_http.BUSY_RESPONSE
        for sock in held[8:]:
            sock.close()
        wait_for(lambda: server._refusing == 0)
        # Another host is served at once; the flooding one is refused while its 8 are open ...
        assert ask(server, OTHER_ADDRESS)[0] == 200
        assert ask(server)[0] == 503
        for sock in held[:8]:
            sock.close()
        # ... and served again once they are closed.
        wait_for(lambda: server._per_address == {})
        assert ask(server)[0] == 200
    refusals = [line for line in server.logs if "refused" in line]  # type: ignore[attr-defined]
    # One line per address per 10 s: a flood does not flood the log.
    assert refusals == [
        mcp_http.REFUSED.format(
            client="127.0.0.1", why=mcp_http.TOO_MANY_FROM_ADDRESS.format(count=8), more=""
        )
    ]


def test_a_full_tls_server_closes_without_plaintext(tmp_path: Path, tls: PeerTLS) -> None:
    """Bug: the 503 of a full server goes out in plain text on the TLS port (clients see a protocol error)."""
    cortex = source(tmp_path, count=1)
    cert, key = tls.write_server_files(tmp_path)
    with served(cortex, tls_cert=str(cert), tls_key=str(key), workers=1, queue=1, timeout=5.0) as server:
        held = [connect(server) for _ in range(2)]
        time.sleep(0.2)
        refused = connect(server)
        assert read_all(refused, 2.0) == b""
        refused.close()
        # EOF in the handshake, or a reset: never a plaintext answer (WRONG_VERSION_NUMBER)
        with pytest.raises((ssl.SSLEOFError, ConnectionResetError, BrokenPipeError)):
            ask(server, context=tls.client_context())
        for sock in held:
            sock.close()
        wait_for(lambda: server._per_address == {})
        assert ask(server, context=tls.client_context())[0] == 200


def test_request_bytes_held_at_once_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug: bodies being read are buffered without a total, so many large slow bodies exhaust memory."""
    monkeypatch.setattr(mcp_http, "MAX_BUFFERED", 4000)
    cortex = source(tmp_path, count=1)
    head = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 3000\r\n\r\n"
    with served(cortex, timeout=5.0) as server:
        first = connect(server)
        first.sendall(head + b" " * 2000)
        time.sleep(0.2)
        second = connect(server, OTHER_ADDRESS)
        second.sendall(head + b" " * 2000)
        assert read_all(second, 2.0) == mcp_http.BUSY_RESPONSE
        first.close()
        second.close()
        wait_for(lambda: server._per_address == {})
        assert ask(server)[0] == 200


# ---- what the I/O thread answers itself ------------------------------------------------------------------


def test_a_head_over_64_kib_gets_431(tmp_path: Path) -> None:
    cortex = source(tmp_path, count=1)
    with served(cortex) as server:
        sock = connect(server)
        sock.sendall(SLOW_HEAD + b"X-Big: " + b"z" * (64 * 1024) + b"\r\n\r\n")
        assert read_all(sock) == mcp_http.HEAD_TOO_LARGE_RESPONSE
        sock.close()


def test_expect_100_continue_is_answered_before_the_body(tmp_path: Path) -> None:
    """curl sends `Expect: 100-continue` for large bodies and waits for it (a second, then sends anyway)."""
    cortex = source(tmp_path, count=1)
    with served(cortex) as server:
        sock = connect(server)
        sock.sendall(  # Connection: close, so the answer ends with the server's close (else it keeps it alive)
            b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(INITIALIZE)
        )
        sock.settimeout(2)
        assert sock.recv(100) == mcp_http.CONTINUE_RESPONSE
        sock.sendall(INITIALIZE)
        answer = read_all(sock)
        sock.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.count(b"100 Continue") == 0


# ---- bodies the parser refuses, ids the encoder chokes on --------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # RecursionError in the parser
        b'{"jsonrpc":"2.0","id":1,"method":"' + b'\xff"}',  # invalid UTF-8
        '{"jsonrpc":"2.0","id":1,"method":"ping"}'.encode("utf-16"),  # json.loads would guess UTF-16
        b'\xef\xbb\xbf{"jsonrpc":"2.0","id":1,"method":"ping"}',  # a BOM
        b'{"jsonrpc":"2.0","id":NaN,"method":"ping"}',
        b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"method":"ping"}',  # over Python's int digit limit
    ],
    ids=["deep", "utf8", "utf16", "bom", "nan", "digits"],
)
def test_any_body_the_parser_rejects_is_a_400_parse_error(tmp_path: Path, body: bytes) -> None:
    """Bug: only ValueError is caught, so nesting 100,000 deep ends the connection without an answer."""
    cortex = source(tmp_path, count=1)
    with served(cortex) as server:
        status, headers, answer = Raw(server).send("POST", "/mcp", body)
    assert (status, headers["content-type"], answer) == (400, "application/json", PARSE_ERROR)


def test_a_lone_surrogate_id_gets_a_well_formed_answer(tmp_path: Path) -> None:
    """Bug: the id is echoed as decoded, "\\ud800" cannot be encoded, the answer is never sent."""
    cortex = source(tmp_path, count=1)
    with served(cortex) as server:
        raw = Raw(server)
        body = b'{"jsonrpc":"2.0","id":"a\\ud800b","method":"initialize","params":{}}'
        status, headers, answer = raw.send("POST", "/mcp", body)
        assert status == 200
        assert json.loads(answer.decode("utf-8"))["id"] == "a\ufffdb"
        assert len(server.app.sessions) == 1
        raw.session = headers["mcp-session-id"]
        ping = b'{"jsonrpc":"2.0","id":"\\udc00","method":"ping"}'
        status, _, answer = raw.send("POST", "/mcp", ping)
        assert (status, json.loads(answer)) == (200, {"jsonrpc": "2.0", "id": "\ufffd", "result": {}})


def test_a_request_whose_answer_fails_leaves_no_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bug: the session is opened before the answer is framed, and stays when framing it fails."""
    cortex = source(tmp_path, count=1)

    def broken(self: Any, reply: Reply) -> None:
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    with served(cortex) as server:
        monkeypatch.setattr(mcp_http.Handler, "_answer", broken)
        with pytest.raises(http.client.RemoteDisconnected):
            Raw(server).send("POST", "/mcp", INITIALIZE)
        wait_for(lambda: any("dropped" in line for line in server.logs))  # type: ignore[attr-defined]
        assert len(server.app.sessions) == 0


def test_ids_are_echoed_encodable_or_refused(tmp_path: Path) -> None:
    """JSON-RPC ids are strings, numbers or null; anything else is an Invalid Request answered with id null."""
    app = McpApp(CortexReader(source(tmp_path, count=1)))

    def answer(raw_id: str) -> tuple[int, Any]:
        body = f'{{"jsonrpc":"2.0","id":{raw_id},"method":"initialize","params":{{}}}}'.encode()
        reply = app.post("/mcp", body, None, None)
        return reply.status, json.loads(reply.message.encode("utf-8"))["id"]

    assert answer('"\\ud800"') == (200, "\ufffd")
    assert answer('"\\ud83d\\ude00"') == (200, "\U0001f600")  # a valid pair stays
    assert answer("null") == (200, None)
    assert answer("1.5") == (200, 1.5)
    assert answer(str(2**70)) == (200, 2**70)
    sessions = len(app.sessions)
    for bad in ("1e999", "true", "[1]", '{"a":1}', "[" * 500 + "]" * 500):
        reply = app.post("/mcp", f'{{"jsonrpc":"2.0","id":{bad},"method":"initialize"}}'.encode(), None, None)
        assert reply == Reply(
            400,
            json.dumps(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": mcp_server.INVALID_ID}}
            ),
            note="error -32600",
        )
    assert len(app.sessions) == sessions  # a refused initialize opens nothing


def test_a_lone_surrogate_since_is_read_as_go_reads_it(tmp_path: Path) -> None:
    """Bug: sqlite3 cannot bind "\\ud800", so `sync_read_signal` with it ended without an answer."""
    cortex = source(tmp_path, count=1)
    with served(cortex) as server:
        raw = Raw(server)
        raw.start()
        body = (
            b'{"jsonrpc":"2.0","id":2,"method":"tools/call",'
            b'"params":{"name":"sync_read_signal","arguments":{"since":"\\ud800"}}}'
        )
        status, _, answer = raw.send("POST", "/mcp", body)
    assert status == 200
    assert json.loads(answer)["result"] == {"content": [{"type": "text", "text": "[]"}], "isError": False}


def test_the_access_log_escapes_what_a_client_controls(tmp_path: Path) -> None:
    """Bug: a path or a notification's method with a newline or an escape forges or colours log lines."""
    cortex = source(tmp_path, count=1)
    with served(cortex) as server:
        raw = Raw(server)
        raw.send("POST", "/mcp", {"jsonrpc": "2.0", "method": "x\n2025/01/01 00:00:00 forged\x1b[31m"})
        wait_for(lambda: any("forged" in line for line in server.logs))  # type: ignore[attr-defined]
    line = next(line for line in server.logs if "forged" in line)  # type: ignore[attr-defined]
    assert line.startswith("[serve] 127.0.0.1 POST /mcp 202 x\\n2025/01/01 00:00:00 forged\\x1b[31m ")


def test_a_bug_in_the_io_thread_costs_one_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug: an exception escapes the I/O thread's loop; the thread dies and no client is ever served again."""
    real = mcp_http._body_to_read

    def boom(head: bytes, authorized: Any) -> tuple[int, bool]:
        if b"X-Boom" in head:
            raise RuntimeError("boom")
        return real(head, authorized)

    monkeypatch.setattr(mcp_http, "_body_to_read", boom)
    cortex = source(tmp_path, count=1)
    with served(cortex) as server:
        sock = connect(server)
        sock.sendall(b"POST /mcp HTTP/1.1\r\nX-Boom: 1\r\n\r\n")
        assert read_all(sock) == b""
        sock.close()
        assert ask(server)[0] == 200
    assert (Level.WARNING, "[serve] 127.0.0.1 connection dropped: RuntimeError: boom") in server.records  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # the same /64: one host as far as the limit goes
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::/64"),
    ],
)
def test_the_per_address_limit_counts_an_ipv6_64_as_one_address(address: str, key: str) -> None:
    """Bug: IPv6 addresses counted one by one, so a host with a /64 has 2^64 shares."""
    assert mcp_http.address_key(address) == key


def test_a_refusal_reaches_a_client_still_sending_its_body(tmp_path: Path) -> None:
    """Bug: the server closes with the client's body unread; the kernel answers the rest with a reset, and a
    client that sends its whole body before reading (http.client, urllib) sees a broken pipe, not the 413."""
    cortex = source(tmp_path, count=1)
    with served(cortex) as server:
        status, _, body = Raw(server).send("POST", "/mcp", b" " * (5 * 1024 * 1024))
    assert (status, body) == (413, mcp_http.TOO_LARGE_BODY)


def test_answers_nobody_reads_are_bounded_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug: the I/O thread takes every answer, so clients that never read keep any number of pages in memory."""
    monkeypatch.setattr(mcp_http, "MAX_ANSWERING", 1 << 20)
    cortex = source(tmp_path, count=1)
    with served(cortex, timeout=1.0) as server:
        message = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"x": "y" * (8 << 20)}})
        monkeypatch.setattr(server.app, "post", lambda *args: Reply(200, message, streamable=True))
        reader = connect(server)
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.sendall(
            b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(INITIALIZE), INITIALIZE)
        )
        wait_for(lambda: server.answering.used > 0)
        held = server.answering.used
        monkeypatch.undo()
        # The next answer waits for room: until the stuck one is dropped at its deadline.
        status, waited = ask(server)
        reader.close()
    assert held > 8 << 20
    assert status == 200
    assert 0.5 < waited < 3.0, waited
    assert server.answering.used == 0


def test_a_client_without_the_key_cannot_make_the_server_buffer_a_body(tmp_path: Path, tls: PeerTLS) -> None:
    """Bug: the body is read before the key is checked, so anyone can park 4 MiB per connection in memory."""
    cortex = source(tmp_path, count=1)
    cert, key = tls.write_server_files(tmp_path)
    access = AccessKey("ring-key", "env", "")
    head = (
        b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer wrong\r\nContent-Length: 4000000\r\n\r\n"
    )
    with served(cortex, tls_cert=str(cert), tls_key=str(key), access=access, timeout=5.0) as server:
        context = tls.client_context()
        with context.wrap_socket(connect(server), server_hostname="localhost") as sock:
            sock.sendall(head)  # and no body
            started = time.monotonic()
            answer = read_all(sock)
            waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert answer.endswith(mcp_http.UNAUTHORIZED_BODY)
    assert waited < 2.0  # at once, not at the deadline


@contextlib.contextmanager
def serve_command(cortex: Path, *options: str) -> Iterator[int]:
    """`noemafed serve` as an operator starts it, on a free port; yields the port it listens on."""
    import os
    import re
    import subprocess
    import sys

    from conftest import REPO

    argv = ["--cortex", str(cortex), "serve", "--port", "0", *options]
    proc = subprocess.Popen(
        [sys.executable, "-m", "noemafed", *argv],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stderr is not None
        port = 0
        while not port:
            line = proc.stderr.readline()
            assert line, "noemafed serve did not start"
            if match := re.search(r"listening on http://127\.0\.0\.1:(\d+)/mcp", line):
                port = int(match.group(1))
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_serve_command_passes_its_limits_on(tmp_path: Path) -> None:
    """Bug: `--request-timeout` or `--max-per-address` parsed but never reach the server."""
    cortex = source(tmp_path, count=1)
    options = ("--request-timeout", "1", "--max-per-address", "1")
    with serve_command(cortex, *options) as port, socket.create_connection(("127.0.0.1", port)) as first:
        with socket.create_connection(("127.0.0.1", port)) as second:
            assert read_all(second) == mcp_http.BUSY_RESPONSE
        started = time.monotonic()
        assert read_all(first) == mcp_http.TIMEOUT_RESPONSE
        assert time.monotonic() - started < 2.0


def test_the_serve_command_caps_open_connections_in_all(tmp_path: Path) -> None:
    """Bug: `--max-connections` parsed but the server keeps its built-in total (workers + 240)."""
    cortex = source(tmp_path, count=1)
    options = (
        "--workers",
        "1",
        "--max-connections",
        "3",
        "--max-per-address",
        "100",
        "--request-timeout",
        "5",
    )
    with serve_command(cortex, *options) as port:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            time.sleep(0.2)  # the server has accepted all three before the fourth arrives
            with socket.create_connection(("127.0.0.1", port)) as refused:
                started = time.monotonic()
                assert read_all(refused) == mcp_http.BUSY_RESPONSE
                assert time.monotonic() - started < 2.0  # at once, not at the request deadline
        finally:
            for sock in held:
                sock.close()


def test_max_connections_below_workers_is_refused(tmp_path: Path) -> None:
    """Bug: a total below the workers leaves a negative queue and a server that refuses everyone."""
    from conftest import run_cli

    cortex = source(tmp_path, count=1)
    result = run_cli(["--cortex", str(cortex), "serve", "--workers", "4", "--max-connections", "2"])
    assert result.exit_code == 2
    assert "Invalid value for '--max-connections': 2 is fewer than --workers (4)." in result.stderr


def test_a_port_in_use_is_named_with_a_hint_not_an_internal_error(tmp_path: Path) -> None:
    """Bug: binding a port another program holds ended in `internal error: AttributeError` (exit 1): the server
    was closed before the parts its close stops existed."""
    from conftest import run_cli

    cortex = source(tmp_path, count=1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(["--cortex", str(cortex), "serve", "--port", str(port)])
    assert result.exit_code == 78
    assert result.stderr.splitlines() == [
        f"Error: listening on 127.0.0.1:{port}: Address already in use",
        f"Hint: {mcp_http.PORT_IN_USE_HINT}",
    ]
