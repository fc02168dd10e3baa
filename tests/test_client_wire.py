"""The MCP client on the wire, against real peers on 127.0.0.1: the exact requests it sends, how it reads
every shape of answer (JSON, SSE with notifications and stray ids, tool results of every shape), its deadlines,
its CA file and proxy rules, and the exact text of each failure. Written for the mutants of `mcp/client.py`
that the rest of the suite let through (docs/testing.md)."""

from __future__ import annotations

import json
import re
import socket
import ssl
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from peers import hostile_peer
from peers.stdlib_peer import DEFAULT_SERVER_VERSION, StdlibPeer
from peers.tls import make_tls
from sync_helpers import source

from noemafed import __version__
from noemafed.mcp import client
from noemafed.mcp.client import (
    Deadline,
    DeadlineExceeded,
    HttpStatusError,
    McpSession,
    PeerTarget,
    RequestTimedOut,
    ResponseTooLarge,
    ServerInfo,
    ToolRefusal,
    WireError,
)
from noemafed.text.sanitize import short


@pytest.fixture(scope="module")
def cortex(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return source(tmp_path_factory.mktemp("wire"), count=2)


def body_of(message: dict[str, Any]) -> bytes:
    """A request body as the client writes it: compact JSON."""
    return json.dumps(message, separators=(",", ":")).encode()


def initialize_fails(cortex: Path, **knobs: Any) -> WireError:
    with StdlibPeer(cortex, "go", **knobs) as peer, pytest.raises(WireError) as info:
        McpSession(PeerTarget("p", peer.endpoint)).initialize()
    return info.value


# ---- what the client sends ------------------------------------------------------------------------------


def test_the_requests_of_a_session_byte_for_byte(cortex: Path) -> None:
    with StdlibPeer(cortex, "go", key="s3cret") as peer:
        # A trailing slash is dropped: Go redirects `//mcp`, which would turn the POST into a GET.
        session = McpSession(PeerTarget("p", peer.endpoint + "//", key="s3cret"))
        assert session.initialize() == ServerInfo("2025-11-25", "noema", DEFAULT_SERVER_VERSION["go"])
        sid = session.session_id
        session.call_tool("cortex_identity", {})
        session.close()
        requests = list(peer.requests)
    assert sid
    assert session.session_id is None
    assert [(r.method, r.path) for r in requests] == [("POST", "/mcp")] * 3 + [("DELETE", "/mcp")]
    assert [r.body for r in requests] == [
        body_of(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "noemafed", "version": __version__},
                },
            }
        ),
        body_of({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        body_of(
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "cortex_identity", "arguments": {}},
            }
        ),
        b"",
    ]
    common = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "User-Agent": f"noemafed/{__version__}",
        "Authorization": "Bearer s3cret",
    }
    after = common | {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
    sent = [{name: r.header(name) for name in after} for r in requests]
    assert sent == [common | {"Mcp-Session-Id": None, "MCP-Protocol-Version": None}, after, after, after]


def test_without_a_key_no_authorization_is_sent_and_without_a_session_no_delete(cortex: Path) -> None:
    with StdlibPeer(cortex, "rust") as peer:
        session = McpSession(PeerTarget("p", peer.endpoint))
        session.close()  # nothing opened: nothing to end
        session.initialize()
        session.abandon()
        session.close()  # abandoned: another thread may still use it, so no DELETE either
        requests = list(peer.requests)
    assert [r.target for r in requests] == ["initialize", "notifications/initialized"]
    assert [r.header("Authorization") for r in requests] == [None, None]


def test_a_delete_that_fails_is_no_error(cortex: Path) -> None:
    """The session expires on the peer anyway: a refused or unanswered DELETE changes nothing."""
    for knobs in (
        {"status_override": (500, "no"), "misbehave_on": "DELETE"},
        {"close_without_answer": True, "misbehave_on": "DELETE"},
    ):
        with StdlibPeer(cortex, "go", **knobs) as peer:
            session = McpSession(PeerTarget("p", peer.endpoint))
            session.initialize()
            session.close()
            assert peer.calls()[-1] == "DELETE"
        assert session.session_id is None
    with StdlibPeer(cortex, "go") as peer:
        session = McpSession(PeerTarget("p", peer.endpoint))
        session.initialize()
    session.close()  # the peer is gone
    assert session.session_id is None


def test_a_forgotten_session_is_opened_again_once(cortex: Path) -> None:
    """A 404 on a session the peer forgot (restart, idle expiry): one fresh initialize and one retry."""
    with StdlibPeer(cortex, "go", drop_sessions_after=3) as peer:
        session = McpSession(PeerTarget("p", peer.endpoint))
        session.initialize()
        first = session.session_id
        session.call_tool("cortex_identity", {})
        assert json.loads(session.call_tool("cortex_identity", {}))["name"] == "source"
        calls = peer.calls()
        bodies = [r.rpc for r in peer.requests]
    assert calls == [
        "initialize",
        "notifications/initialized",
        "cortex_identity",
        "cortex_identity",  # 404: the session is gone
        "initialize",
        "notifications/initialized",
        "cortex_identity",
    ]
    assert [b.get("id") if b else None for b in bodies] == [1, None, 2, 3, 4, None, 5]
    assert session.session_id != first
    # The new initialize starts clean: neither the forgotten session nor the old protocol version goes with it.
    again = peer.requests[4]
    assert (again.header("Mcp-Session-Id"), again.header("MCP-Protocol-Version")) == (None, None)


def test_a_session_forgotten_right_after_initialize_is_a_404(cortex: Path) -> None:
    with StdlibPeer(cortex, "go", drop_sessions_after=1, drop_sessions_repeat=True) as peer:
        session = McpSession(PeerTarget("p", peer.endpoint))
        with pytest.raises(HttpStatusError) as info:
            session.initialize()
        calls = peer.calls()
    # The notification is refused, and a notification is never retried.
    assert calls == ["initialize", "notifications/initialized"]
    assert info.value.status == 404


def test_a_session_forgotten_again_after_the_retry_is_a_404(cortex: Path) -> None:
    """One retry only: a peer that forgets every session after its third request never answers a tool call."""
    with StdlibPeer(cortex, "go", drop_sessions_after=2, drop_sessions_repeat=True) as peer:
        session = McpSession(PeerTarget("p", peer.endpoint))
        session.initialize()
        with pytest.raises(HttpStatusError) as info:
            session.call_tool("cortex_identity", {})
        calls = peer.calls()
    assert calls == ["initialize", "notifications/initialized", "cortex_identity"] * 2
    assert info.value.status == 404


def test_a_404_to_initialize_is_not_retried(cortex: Path) -> None:
    with StdlibPeer(cortex, "go", status_override=(404, "gone")) as peer:
        with pytest.raises(HttpStatusError) as info:
            McpSession(PeerTarget("p", peer.endpoint)).initialize()
        calls = peer.calls()
    assert (calls, str(info.value), info.value.status) == (["initialize"], "404 Not Found: gone", 404)


def test_a_refused_notification_is_an_http_error(cortex: Path) -> None:
    error = initialize_fails(
        cortex, status_override=(500, "no notifications"), misbehave_on="notifications/initialized"
    )
    assert isinstance(error, HttpStatusError)
    assert (str(error), error.status) == ("500 Internal Server Error: no notifications", 500)


def test_an_accepted_notification_may_answer_200(cortex: Path) -> None:
    with StdlibPeer(
        cortex, "go", status_override=(200, "{}"), misbehave_on="notifications/initialized"
    ) as peer:
        McpSession(PeerTarget("p", peer.endpoint)).initialize()


def test_an_error_body_is_stripped_and_cut_to_300_characters(cortex: Path) -> None:
    error = initialize_fails(cortex, status_override=(502, "  " + "é" * 150 + "x" * 400 + "\n"))
    assert isinstance(error, HttpStatusError)
    assert str(error) == "502 Bad Gateway: " + "é" * 150 + "x" * 150
    assert error.body == "é" * 150 + "x" * 150
    assert error.status == 502


def test_an_error_without_a_body_has_no_detail(cortex: Path) -> None:
    error = initialize_fails(cortex, status_override=(503, b"   "))
    assert isinstance(error, HttpStatusError)
    assert (str(error), error.body) == ("503 Service Unavailable", "")


def test_a_bad_byte_in_an_error_body_is_replaced(cortex: Path) -> None:
    assert (
        str(initialize_fails(cortex, status_override=(500, b"a\xffb")))
        == "500 Internal Server Error: a\ufffdb"
    )


def test_an_error_body_over_its_budget_is_refused(cortex: Path) -> None:
    error = initialize_fails(cortex, status_override=(500, b"x" * (client.DEFAULT_BUDGET + 1)))
    assert isinstance(error, ResponseTooLarge)
    assert str(error) == "initialize response too large (over 1048576 bytes, max 1048576)"


# ---- what the client reads --------------------------------------------------------------------------------


def answering(make: Callable[[int], Any], content_type: str = "application/json") -> hostile_peer.Answer:
    """An answer built from the request's JSON-RPC id: a dict is sent as JSON, bytes as they are."""

    def answer(sock: socket.socket, forwarded: hostile_peer.Forwarded) -> None:
        made = make(json.loads(forwarded.request)["id"])
        body = made if isinstance(made, bytes) else json.dumps(made).encode()
        hostile_peer.with_body(body, content_type)(sock, forwarded)

    return answer


def call(cortex: Path, answer: hostile_peer.Answer, tool: str = "sync_events") -> str:
    with StdlibPeer(cortex, "go") as backend, hostile_peer.HostilePeer(backend, tool, answer) as peer:
        session = McpSession(PeerTarget("p", peer.endpoint))
        session.initialize()
        return session.call_tool(tool, {})


def failure(cortex: Path, answer: hostile_peer.Answer, tool: str = "sync_events") -> WireError:
    with pytest.raises(WireError) as info:
        call(cortex, answer, tool)
    return info.value


def result(content: Any, **more: Any) -> Callable[[int], dict[str, Any]]:
    return lambda rid: {"jsonrpc": "2.0", "id": rid, "result": {"content": content, **more}}


def text_item(text: str) -> dict[str, str]:
    return {"type": "text", "text": text}


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ([{"type": "image", "data": "x"}, "text", text_item("first"), text_item("second")], "first"),
        ([{"type": "text"}], ""),
        ([{"type": "text", "text": None}], ""),
        ([text_item("a\ud800b")], "a\ufffdb"),
        ([], ""),
        (None, ""),
    ],
)
def test_a_tool_result_is_the_text_of_its_first_text_item(cortex: Path, content: Any, text: str) -> None:
    assert call(cortex, answering(result(content))) == text


def test_content_that_is_not_a_list_is_refused(cortex: Path) -> None:
    error = failure(cortex, answering(result(text_item("x"))))
    assert (type(error), str(error)) == (WireError, "sync_events: the result's content is not a list")


@pytest.mark.parametrize(("flag", "refused"), [(True, True), (False, False), ("true", False), (1, False)])
def test_only_is_error_true_is_a_refusal(cortex: Path, flag: object, refused: bool) -> None:
    answer = answering(result([text_item("no")], isError=flag))
    if refused:
        error = failure(cortex, answer)
        assert (type(error), str(error)) == (ToolRefusal, "no")
    else:
        assert call(cortex, answer) == "no"


@pytest.mark.parametrize(
    ("error", "text"),
    [({"code": -32601, "message": "Unknown tool"}, "Unknown tool"), ({"code": 1}, ""), ("plain", "plain")],
)
def test_a_jsonrpc_error_is_a_refusal_with_its_message(cortex: Path, error: object, text: str) -> None:
    refusal = failure(cortex, answering(lambda rid: {"jsonrpc": "2.0", "id": rid, "error": error}))
    assert (type(refusal), str(refusal)) == (ToolRefusal, text)


def sse(*events: object) -> bytes:
    """An SSE body: a str is an event's data as it is, anything else goes as JSON."""
    datas = [event if isinstance(event, str) else json.dumps(event) for event in events]
    return b"".join(f"data: {data}\n\n".encode() for data in datas)


def test_sse_skips_priming_notifications_and_other_ids_until_the_answer(cortex: Path) -> None:
    def stream(rid: int) -> bytes:
        return sse(
            " ",  # rmcp's priming event: blank data
            {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}},
            {"jsonrpc": "2.0", "id": rid + 1, "result": {"content": [text_item("another id")]}},
            {"jsonrpc": "2.0", "id": rid},  # neither a result nor an error
            [1],
            {"jsonrpc": "2.0", "id": rid, "result": {"content": [text_item("ok")]}},
            {"jsonrpc": "2.0", "id": rid, "result": {"content": [text_item("too late")]}},
        )

    assert call(cortex, answering(stream, "text/event-stream; charset=utf-8")) == "ok"


def test_an_sse_error_answer_is_a_refusal(cortex: Path) -> None:
    def stream(rid: int) -> bytes:
        return sse({"jsonrpc": "2.0", "id": rid, "error": {"message": "nope"}})

    refusal = failure(cortex, answering(stream, "Text/Event-Stream"))
    assert (type(refusal), str(refusal)) == (ToolRefusal, "nope")


def test_an_sse_stream_that_ends_without_the_answer_says_so(cortex: Path) -> None:
    error = failure(
        cortex, answering(lambda rid: sse({"jsonrpc": "2.0", "method": "x"}), "text/event-stream")
    )
    assert (type(error), str(error)) == (WireError, "sync_events: the event stream ended without an answer")


def test_sse_data_that_is_not_json_is_named(cortex: Path) -> None:
    error = failure(cortex, answering(lambda rid: sse("{oops"), "text/event-stream"))
    assert str(error) == (
        "sync_events: the peer's answer is not JSON: Expecting property name enclosed in double quotes: line 1 "
        "column 2 (char 1)"
    )


def initialize_answered(cortex: Path, server_info: Any) -> tuple[ServerInfo, str | None, list[str | None]]:
    """What the session makes of an initialize answer (version 2025-06-18) with this serverInfo, and the
    protocol version header of each request the peer behind saw."""

    def make(rid: int) -> dict[str, Any]:
        return {
            "jsonrpc": "2.0",
            "id": rid,
            "result": {"protocolVersion": "2025-06-18", "serverInfo": server_info},
        }

    with (
        StdlibPeer(cortex, "go") as backend,
        hostile_peer.HostilePeer(backend, "initialize", answering(make)) as peer,
    ):
        session = McpSession(PeerTarget("p", peer.endpoint))
        info = session.initialize()
        return info, session.protocol_version, [r.header("MCP-Protocol-Version") for r in backend.requests]


def test_the_initialize_answer_is_read_and_kept_short(cortex: Path) -> None:
    assert initialize_answered(cortex, {"name": "n", "version": "v"}) == (
        ServerInfo("2025-06-18", "n", "v"),
        "2025-06-18",
        [None, "2025-06-18"],  # initialize has none; the notification carries the version the peer chose
    )
    assert initialize_answered(cortex, ["not", "an", "object"])[0] == ServerInfo("2025-06-18", "", "")
    assert initialize_answered(cortex, {"name": None, "version": 7})[0] == ServerInfo("2025-06-18", "", "7")
    long = initialize_answered(cortex, {"name": "n" * 1000, "version": "v" * 1000})[0]
    assert (long.name, long.version) == (short("n" * 1000), short("v" * 1000))
    assert len(long.version) < 1000


def test_a_transport_failure_names_the_request_and_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(WireError) as info:
        McpSession(PeerTarget("p", f"http://127.0.0.1:{port}")).initialize()
    assert str(info.value) == f"POST http://127.0.0.1:{port}/mcp: [Errno 111] Connection refused"


def test_a_body_cut_short_of_its_content_length_says_how_short(cortex: Path) -> None:
    error = failure(cortex, hostile_peer.truncated(0.5), tool="cortex_identity")
    missing = int(str(error).split("(")[1].split(" ")[0])
    assert missing > 0
    assert str(error) == (
        f"reading cortex_identity response: unexpected EOF ({missing} bytes short of its Content-Length)"
    )


# ---- deadlines ----------------------------------------------------------------------------------------


def test_a_deadline_gives_each_call_at_most_what_is_left() -> None:
    assert Deadline(None).remaining() is None
    assert Deadline(None).timeout(30.0) == 30.0
    Deadline(None).check()
    deadline = Deadline(10.0)
    assert 9.0 < deadline.timeout(30.0) <= 10.0
    assert deadline.timeout(2.0) == 2.0
    deadline.check()
    spent = Deadline(0.0)
    with pytest.raises(DeadlineExceeded) as info:
        spent.timeout(30.0)
    assert str(info.value) == "deadline exceeded (the run's --max-duration ran out)"
    with pytest.raises(DeadlineExceeded):
        spent.check()


def test_a_dripping_answer_ends_at_the_request_timeout(cortex: Path) -> None:
    """Every read succeeds (a byte each 0.05 s), so only the whole-request watch can end it."""
    with (
        StdlibPeer(cortex, "go") as backend,
        hostile_peer.HostilePeer(backend, "cortex_identity", hostile_peer.drip(0.05, 4)) as peer,
    ):
        session = McpSession(PeerTarget("p", peer.endpoint, timeout=0.5))
        session.initialize()
        started = time.monotonic()
        with pytest.raises(RequestTimedOut) as info:
            session.call_tool("cortex_identity", {})
        took = time.monotonic() - started
    assert str(info.value) == "cortex_identity: no complete answer within 0.5s (i/o timeout)"
    assert isinstance(info.value.__cause__, TimeoutError)
    assert 0.5 <= took < 0.5 + client.WATCH_GRACE_SECONDS + 1.5


def test_the_run_deadline_shortens_the_request_timeout(cortex: Path) -> None:
    with (
        StdlibPeer(cortex, "go") as backend,
        hostile_peer.HostilePeer(backend, "initialize", hostile_peer.drip(0.05, 4)) as peer,
    ):
        session = McpSession(PeerTarget("p", peer.endpoint, timeout=30.0), Deadline(0.44))
        with pytest.raises(RequestTimedOut) as info:
            session.initialize()
    # What was left of the 0.44 s when the request started, to a tenth: less on a busy host.
    assert re.fullmatch(r"initialize: no complete answer within 0\.[1-4]s \(i/o timeout\)", str(info.value))


def test_a_slow_answer_within_its_time_is_read_whole(cortex: Path) -> None:
    """The watch is stopped when the request ends: a later request on the same session is not cut off."""
    with (
        StdlibPeer(cortex, "go") as backend,
        hostile_peer.HostilePeer(backend, "cortex_identity", hostile_peer.drip(0.0, 4)) as peer,
    ):
        session = McpSession(PeerTarget("p", peer.endpoint, timeout=0.5))
        session.initialize()
        assert json.loads(session.call_tool("cortex_identity", {}))["name"] == "source"
        time.sleep(0.5 + client.WATCH_GRACE_SECONDS + 0.1)
        assert json.loads(session.call_tool("cortex_identity", {}))["name"] == "source"


def slow_body(sock: socket.socket, forwarded: hostile_peer.Forwarded) -> None:
    """The head at once, then a body of one byte every 10 ms: every read succeeds."""
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(400):
        sock.sendall(b" ")
        time.sleep(0.01)


def test_the_run_deadline_is_checked_between_reads(cortex: Path) -> None:
    """Before the request's own watch (its timeout plus a grace) would end it: the run's time is up."""
    with (
        StdlibPeer(cortex, "go") as backend,
        hostile_peer.HostilePeer(backend, "sync_events", slow_body) as peer,
    ):
        deadline = Deadline(2.0)
        session = McpSession(PeerTarget("p", peer.endpoint, timeout=30.0), deadline)
        session.initialize()
        left = deadline.remaining() or 0.0
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            session.call_tool("sync_events", {}, client.SYNC_EVENTS_BUDGET)
        assert time.monotonic() - started < left + client.WATCH_GRACE_SECONDS


# ---- the CA file and proxies ------------------------------------------------------------------------------


def test_an_endpoint_no_request_can_be_made_to_is_named_before_any_request() -> None:
    with pytest.raises(WireError) as info:
        McpSession(PeerTarget("p", "http://[::1"))
    assert str(info.value) == (
        'peer p: endpoint "http://[::1" is not a valid URL: Invalid IPv6 URL '
        "(fix it with: noemafed set-peer p --endpoint URL)"
    )


def test_a_missing_ca_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(WireError) as info:
        McpSession(PeerTarget("p", "https://127.0.0.1:1", ca_file=str(missing)))
    assert (
        str(info.value)
        == f"loading CA for peer p: reading CA file: open {missing}: no such file or directory"
    )


@pytest.mark.parametrize(
    "pem", ["", "not a certificate\n", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]
)
def test_a_ca_file_without_certificates_is_named(tmp_path: Path, pem: str) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(pem)
    with pytest.raises(WireError) as info:
        McpSession(PeerTarget("p", "https://127.0.0.1:1", ca_file=str(ca)))
    assert str(info.value) == f"loading CA for peer p: CA file {ca} contains no valid certificates"


def test_the_ca_file_is_trusted_beside_the_system_roots(cortex: Path, tmp_path: Path) -> None:
    tls = make_tls()
    with StdlibPeer(cortex, "go", tls=tls) as peer:
        ca = tls.write_ca(tmp_path / "ca.pem")
        assert McpSession(PeerTarget("p", peer.endpoint, ca_file=str(ca))).initialize().name == "noema"
        with pytest.raises(WireError) as info:
            McpSession(PeerTarget("p", peer.endpoint)).initialize()
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)


def test_tls_below_1_2_is_refused_and_hostnames_are_checked() -> None:
    context = client.tls_context(PeerTarget("p", "https://x"))
    assert (context.minimum_version, context.check_hostname) == (ssl.TLSVersion.TLSv1_2, True)


def test_proxy_variables_are_ignored_unless_the_operator_opts_in(
    cortex: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{dead}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with StdlibPeer(cortex, "go") as peer:
        McpSession(PeerTarget("p", peer.endpoint)).initialize()
        with pytest.raises(WireError) as info:
            McpSession(PeerTarget("p", peer.endpoint, use_proxy_env=True)).initialize()
    assert "Connection refused" in str(info.value)


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://admin:s3cret@127.0.0.1",  # no port: http.client takes "s3cret@127.0.0.1" for the port
        "http://admin:pa:s3cret@127.0.0.1",
        "http://admin:p@s3cret@127.0.0.1",
        "http://admin:s3cret@127.0.0.1:1",
        "http://s3cret@127.0.0.1",
    ],
)
def test_a_password_in_the_endpoint_never_reaches_a_transport_error(endpoint: str) -> None:
    with pytest.raises(WireError) as info:
        McpSession(PeerTarget("p", endpoint, timeout=2.0)).initialize()
    assert "s3cret" not in str(info.value)
    assert str(info.value).startswith("POST http://***@127.0.0.1")


def test_a_session_used_as_a_context_manager_is_ended(cortex: Path) -> None:
    with StdlibPeer(cortex, "go") as peer:
        with McpSession(PeerTarget("p", peer.endpoint)) as session:
            session.initialize()
        assert peer.calls()[-1] == "DELETE"
    assert session.session_id is None


def test_a_chunked_body_that_breaks_its_framing_is_a_read_failure(cortex: Path) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    error = failure(cortex, hostile_peer.raw(head + b"5\r\n[1,2,\r\nzz\r\n"))
    assert str(error) == "reading sync_events response: IncompleteRead: IncompleteRead(0 bytes read)"


def reset_mid_body(sock: socket.socket, forwarded: hostile_peer.Forwarded) -> None:
    """Half the body, then a TCP reset (SO_LINGER 0) instead of a close."""
    sock.sendall(forwarded.head() + forwarded.body[:10])
    time.sleep(0.2)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_a_connection_reset_mid_body_is_a_read_failure(cortex: Path) -> None:
    error = failure(cortex, reset_mid_body, tool="cortex_identity")
    assert str(error) == "reading cortex_identity response: [Errno 104] Connection reset by peer"


def test_a_ca_file_with_text_that_is_not_ascii_around_the_certificate_still_loads(
    cortex: Path, tmp_path: Path
) -> None:
    tls = make_tls()
    ca = tmp_path / "ca.pem"
    ca.write_bytes("# the ring's CA, made by Zoë \u2014 keep it safe\n".encode() + tls.ca.cert_pem.bytes())
    with StdlibPeer(cortex, "go", tls=tls) as peer:
        assert McpSession(PeerTarget("p", peer.endpoint, ca_file=str(ca))).initialize().name == "noema"


def test_a_peer_that_stops_answering_trips_the_read_timeout_first(cortex: Path) -> None:
    """The socket timeout names the read it hung in; the whole-request watch is for peers that keep each read
    short."""
    with StdlibPeer(cortex, "go", hang_seconds=10, misbehave_on="cortex_identity") as peer:
        session = McpSession(PeerTarget("p", peer.endpoint, timeout=0.5))
        session.initialize()
        with pytest.raises(WireError) as info:
            session.call_tool("cortex_identity", {})
    assert (type(info.value), str(info.value)) == (WireError, f"POST {peer.endpoint}/mcp: timed out")


def test_a_peer_that_closes_without_an_answer_is_named(cortex: Path) -> None:
    error = initialize_fails(cortex, close_without_answer=True)
    assert str(error).endswith("/mcp: Remote end closed connection without response")


def test_the_session_id_is_taken_without_surrounding_blanks(cortex: Path) -> None:
    padded = hostile_peer.with_headers([b"Mcp-Session-Id:   padded-id   "])
    with StdlibPeer(cortex, "go") as backend, hostile_peer.HostilePeer(backend, "initialize", padded) as peer:
        session = McpSession(PeerTarget("p", peer.endpoint))
        with pytest.raises(HttpStatusError):  # the backend never opened that session
            session.initialize()
        sent = backend.requests[-1]
    assert (sent.target, sent.header("Mcp-Session-Id")) == ("notifications/initialized", "padded-id")


def test_a_redirect_with_a_body_names_the_body(cortex: Path) -> None:
    moved = b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere.example/mcp\r\nContent-Length: 5\r\n\r\nmoved"
    error = failure(cortex, hostile_peer.raw(moved), tool="cortex_identity")
    assert (type(error), str(error)) == (
        HttpStatusError,
        "302 redirect to http://elsewhere.example/mcp refused: moved",
    )


def test_a_status_line_without_a_reason_phrase(cortex: Path) -> None:
    error = failure(cortex, hostile_peer.raw(b"HTTP/1.1 500 \r\nContent-Length: 4\r\n\r\nsick"))
    assert (type(error), str(error)) == (HttpStatusError, "500 : sick")


def test_a_delete_answered_without_end_is_read_no_further_than_its_budget(cortex: Path) -> None:
    with (
        StdlibPeer(cortex, "go") as backend,
        hostile_peer.HostilePeer(backend, "DELETE", hostile_peer.endless_body(seconds=10)) as peer,
    ):
        session = McpSession(PeerTarget("p", peer.endpoint))
        session.initialize()
        started = time.monotonic()
        session.close()
        assert time.monotonic() - started < 2.0  # not until the DELETE's own 5 s are up


def test_an_abandoned_session_has_no_id(cortex: Path) -> None:
    with StdlibPeer(cortex, "go") as peer:
        session = McpSession(PeerTarget("p", peer.endpoint))
        session.initialize()
        session.abandon()
    assert session.session_id is None


@pytest.mark.parametrize(
    ("credentials", "reason"),
    [
        ("admin:s3cret", "nonnumeric port: '***@127.0.0.1'"),
        ("admin:", "nonnumeric port: '@127.0.0.1'"),  # an empty password: nothing to hide but the user info
    ],
)
def test_the_user_info_of_an_endpoint_without_a_port_is_hidden_exactly(credentials: str, reason: str) -> None:
    with pytest.raises(WireError) as info:
        McpSession(PeerTarget("p", f"http://{credentials}@127.0.0.1")).initialize()
    assert str(info.value) == f"POST http://***@127.0.0.1/mcp: {reason}"


def test_an_sse_stream_that_breaks_its_chunked_framing_is_a_read_failure(cortex: Path) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    error = failure(cortex, hostile_peer.raw(head + b"6\r\n: ping\r\nzz\r\n"))
    assert str(error) == "reading sync_events response: IncompleteRead: IncompleteRead(0 bytes read)"


def test_a_notification_is_bounded_in_time_like_a_request(cortex: Path) -> None:
    """A peer that stops answering trips the read timeout; one that drips trips the request's watch."""
    with (
        StdlibPeer(cortex, "go", hang_seconds=10, misbehave_on="notifications/initialized") as peer,
        pytest.raises(WireError) as hung,
    ):
        McpSession(PeerTarget("p", peer.endpoint, timeout=0.5)).initialize()
    assert (type(hung.value), str(hung.value)) == (WireError, f"POST {peer.endpoint}/mcp: timed out")
    with (
        StdlibPeer(cortex, "go") as backend,
        hostile_peer.HostilePeer(
            backend, "notifications/initialized", hostile_peer.drip(0.05, 4)
        ) as dripping,
        pytest.raises(RequestTimedOut) as dripped,
    ):
        McpSession(PeerTarget("p", dripping.endpoint, timeout=0.5)).initialize()
    assert str(dripped.value) == "notifications/initialized: no complete answer within 0.5s (i/o timeout)"


def test_a_notification_answer_cut_short_names_the_notification(cortex: Path) -> None:
    cut = b"HTTP/1.1 202 Accepted\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabc"
    with (
        StdlibPeer(cortex, "go") as backend,
        hostile_peer.HostilePeer(backend, "notifications/initialized", hostile_peer.raw(cut)) as peer,
        pytest.raises(WireError) as info,
    ):
        McpSession(PeerTarget("p", peer.endpoint)).initialize()
    assert str(info.value) == (
        "reading notifications/initialized response: unexpected EOF (7 bytes short of its Content-Length)"
    )


def test_a_session_with_less_than_a_second_left_still_works(cortex: Path) -> None:
    """The run's deadline stops a read only once no time is left, not before."""
    with StdlibPeer(cortex, "go") as peer:
        session = McpSession(PeerTarget("p", peer.endpoint), Deadline(0.9))
        assert session.initialize().name == "noema"
        assert json.loads(session.call_tool("cortex_identity", {}))["name"] == "source"


def test_a_failed_initialize_leaves_no_session_and_no_version(cortex: Path) -> None:
    with StdlibPeer(cortex, "go") as peer:
        session = McpSession(PeerTarget("p", peer.endpoint))
        session.initialize()
        peer.knobs.status_override = (503, "busy")
        with pytest.raises(HttpStatusError):
            session.initialize()
    assert (session.session_id, session.protocol_version) == (None, None)


def test_a_new_session_has_no_id_version_or_server_yet() -> None:
    session = McpSession(PeerTarget("p", "http://127.0.0.1:1"))
    assert (session.session_id, session.protocol_version, session.server) == (None, None, None)


def test_a_ca_file_is_only_read_for_https(cortex: Path, tmp_path: Path) -> None:
    with StdlibPeer(cortex, "go") as peer:
        session = McpSession(PeerTarget("p", peer.endpoint, ca_file=str(tmp_path / "absent.pem")))
        assert session.initialize().name == "noema"


def forgotten_then(then: bytes) -> hostile_peer.Answer:
    """A 404 for the first call (the session is forgotten), then `then` for the retry."""
    calls = 0

    def answer(sock: socket.socket, forwarded: hostile_peer.Forwarded) -> None:
        nonlocal calls
        calls += 1
        sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n" if calls == 1 else then)

    return answer


def test_a_retried_call_is_named_by_its_tool(cortex: Path) -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{"
    error = failure(cortex, forgotten_then(cut), tool="cortex_identity")
    assert (
        str(error)
        == "reading cortex_identity response: unexpected EOF (19 bytes short of its Content-Length)"
    )


def test_the_body_of_a_forgotten_sessions_404_is_read_under_the_calls_name(cortex: Path) -> None:
    cut = b"HTTP/1.1 404 Not Found\r\nContent-Length: 20\r\n\r\nshort"
    error = failure(cortex, hostile_peer.raw(cut), tool="cortex_identity")
    assert (
        str(error)
        == "reading cortex_identity response: unexpected EOF (15 bytes short of its Content-Length)"
    )
