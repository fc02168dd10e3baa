"""`noemafed serve`: the wire a peer sees, its guards, and real clients (ours and the official SDK) pulling."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import db, make_cortex, run_cli
from peers.tls import make_tls
from sync_helpers import check_db, comparable_trace_files, events, source, target_with

from noemafed.cortex.access import AccessKey
from noemafed.logs import Level, Log
from noemafed.mcp import http as mcp_http
from noemafed.mcp import server as mcp_server
from noemafed.mcp.http import NoemafedHTTPServer, ServeConfig, make_server
from noemafed.mcp.server import CortexReader, McpApp, Reply


def wait_for(condition: Any, seconds: float = 3.0) -> None:
    """The server logs a request after answering it; give the log line a moment to land."""
    import time

    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


@contextmanager
def served(cortex: Path, **config: Any) -> Iterator[NoemafedHTTPServer]:
    """The real server on 127.0.0.1:0 in a thread, logging into lists the test can read (lines, and with levels)."""
    logs: list[str] = []
    records: list[tuple[Level, str]] = []

    def sink(level: Level, line: str) -> None:
        records.append((level, line))
        logs.append(line)

    server = make_server(ServeConfig(cortex_dir=cortex, port=0, **config), Log(sink))
    server.logs = logs  # type: ignore[attr-defined]
    server.records = records  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class Raw:
    """A hand-written client: exact headers, so each guard can be poked on its own."""

    def __init__(
        self, server: NoemafedHTTPServer, context: ssl.SSLContext | None = None, host: str | None = None
    ):
        self.port = server.server_address[1]
        self.context = context
        self.host = host or f"127.0.0.1:{self.port}"
        self.session: str | None = None
        self.next_id = 1

    def send(
        self, method: str, path: str = "/mcp", body: object = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        if self.context is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "localhost", self.port, context=self.context, timeout=10
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
        all_headers = {
            "Host": self.host,
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        if self.session:
            all_headers["Mcp-Session-Id"] = self.session
        all_headers.update(headers or {})
        conn.request(method, path, body=data, headers=all_headers)
        response = conn.getresponse()
        payload = response.read()
        result = response.status, {k.lower(): v for k, v in response.getheaders()}, payload
        conn.close()
        return result

    def rpc(
        self, method: str, params: dict[str, Any] | None = None, path: str = "/mcp", **headers: str
    ) -> Any:
        request = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}}
        self.next_id += 1
        status, response_headers, payload = self.send("POST", path, request, headers)
        assert status == 200, payload
        if method == "initialize":
            self.session = response_headers["mcp-session-id"]
        return json.loads(payload)

    def tool(self, name: str, **arguments: Any) -> dict[str, Any]:
        return self.rpc("tools/call", {"name": name, "arguments": arguments})["result"]

    def start(self, path: str = "/mcp") -> dict[str, Any]:
        result = self.rpc(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
            path,
        )
        status, _, body = self.send("POST", path, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert (status, body) == (202, b"")
        return result["result"]


def test_initialize_and_tools(tmp_path: Path) -> None:
    cortex = source(tmp_path, count=3)
    with served(cortex) as server:
        raw = Raw(server)
        result = raw.start()
        assert result["protocolVersion"] == "2025-11-25"
        assert result["serverInfo"]["name"] == "noema"
        assert "tools" in result["capabilities"]
        older = Raw(server).rpc("initialize", {"protocolVersion": "2025-03-26"})["result"]
        assert older["protocolVersion"] == "2025-03-26"
        future = Raw(server).rpc("initialize", {"protocolVersion": "2026-07-28"})["result"]
        assert future["protocolVersion"] == "2025-11-25"
        tools = raw.rpc("tools/list")["result"]["tools"]
        assert [tool["name"] for tool in tools] == ["cortex_identity", "sync_events", "sync_read_signal"]
        # As the live build advertises its read tools.
        assert [tool["annotations"] for tool in tools] == [{"readOnlyHint": True}] * 3
        identity = json.loads(raw.tool("cortex_identity")["content"][0]["text"])
        manifest_id = (cortex / "cortex.md").read_text().split("id: ", 1)[1].split("\n", 1)[0]
        assert identity == {"id": manifest_id, "name": "source", "version": 2, "mode": "sync"}


def test_sync_events_pages_with_noemas_rules(tmp_path: Path) -> None:
    cortex = source(tmp_path, count=4)
    ids = [row[0] for row in events(cortex)]
    with served(cortex) as server:
        raw = Raw(server)
        raw.start()

        def page(**arguments: Any) -> list[dict[str, Any]]:
            result = raw.tool("sync_events", **arguments)
            assert result["isError"] is False
            return json.loads(result["content"][0]["text"])

        assert [e["id"] for e in page()] == ids
        served_all = rf"\[serve\] 127\.0\.0\.1 POST /mcp 200 sync_events {len(ids)} events \d+ms"
        wait_for(lambda: any(re.fullmatch(served_all, line) for line in server.logs))  # type: ignore[attr-defined]
        assert any(re.fullmatch(served_all, line) for line in server.logs)  # type: ignore[attr-defined]
        assert [e["id"] for e in page(limit=2)] == ids[:2]
        assert [e["id"] for e in page(since=ids[1], limit=2)] == ids[2:4]
        assert [e["id"] for e in page(limit=0)] == ids  # ≤0 means the default 100
        assert [e["id"] for e in page(limit=5000)] == ids  # >1000 means 100, not 1000
        assert page(since=ids[-1]) == []
        bad = raw.tool("sync_events", since="not-a-ulid")
        assert bad == {
            "content": [
                {"type": "text", "text": "since must be a valid ULID cursor (26-char Crockford base32)"}
            ],
            "isError": True,
        }
        assert raw.tool("sync_events", since=ids[0].lower())["isError"] is True
        unknown = raw.rpc("tools/call", {"name": "announce_peer", "arguments": {}})
        assert unknown["error"] == {
            "code": -32602,
            "message": "tool 'announce_peer' not found: tool not found",
        }


def test_stored_bytes_are_served_unchanged(tmp_path: Path) -> None:
    """Signature-bearing fields and odd escapes go out exactly as stored."""
    cortex = make_cortex(tmp_path, "relay")
    data = '{"title":"a \\u003cb\\u003e \\u0026 c","type":"note","body":"é \u2028 日本","tier":"short"}'
    conn = db(cortex)
    conn.execute(
        "INSERT INTO events(id, action, trace_id, origin, timestamp, data, vclock, cortex_id, signature, pubkey) "
        "VALUES ('01JQH4HPD0B8E9WCXGFN1A33VE', 'create', '20250329-x', 'far', '2025-03-29T14:23:00Z', ?, "
        "'{\"01JQ7X2B9C4D5E6F7G8H9JKMNP\":1}', '01JQ7X2B9C4D5E6F7G8H9JKMNP', 'ed25519:c2ln', 'ed25519:cHVi')",
        (data,),
    )
    conn.close()
    with served(cortex) as server:
        raw = Raw(server)
        raw.start()
        text = raw.tool("sync_events")["content"][0]["text"]
    assert text == (
        '[{"id":"01JQH4HPD0B8E9WCXGFN1A33VE","action":"create","trace_id":"20250329-x",'
        '"cortex_id":"01JQ7X2B9C4D5E6F7G8H9JKMNP","origin":"far","timestamp":"2025-03-29T14:23:00Z",'
        f'"data":{data},"vclock":{{"01JQ7X2B9C4D5E6F7G8H9JKMNP":1}},'
        '"signature":"ed25519:c2ln","pubkey":"ed25519:cHVi"}]'
    )


def test_an_event_relayed_after_the_cursor_passed_its_id_is_never_served_on(tmp_path: Path) -> None:
    """cortex.md §9.2, inherited: cursors are event ids and pages are `id > since`, so an event a relay receives
    after a reader's cursor passed its id is never served to that reader by that relay. A full mesh still
    delivers it from its author; a chain loses it (docs/compatibility.md, Replay)."""
    import authoring

    from noemafed.cortex.events import parse_page
    from noemafed.cortex.open import open_cortex
    from noemafed.federation.replay import Replayer

    author, relay, reader = (
        open_cortex(make_cortex(tmp_path, name)) for name in ("author", "relay", "reader")
    )

    def pull(into: Any, source: Any, peer: str) -> list[str]:
        since = into.conn.execute(
            "SELECT value FROM federation_state WHERE key = ?", (f"peer:{peer}:last_event",)
        ).fetchone()
        pieces, _ = CortexReader(source.path).events_page(since[0] if since else "", 1000)
        page = parse_page("".join(pieces))
        result = Replayer(into).apply_page(page, cursor_peer=peer)
        assert result.error is None
        return [event.id for event in page]

    try:
        _, old = authoring.create_trace(author, "Written first", "note", "a\n")
        _, new = authoring.create_trace(relay, "Written later", "note", "b\n")
        assert old.id < new.id
        assert pull(reader, relay, "relay") == [new.id]  # the reader's cursor for the relay is now new.id
        assert pull(relay, author, "author") == [old.id]  # the relay receives the older event afterwards
        assert pull(reader, relay, "relay") == []  # ... and never serves it to the reader
        assert reader.conn.execute("SELECT 1 FROM events WHERE id = ?", (old.id,)).fetchone() is None
        assert pull(reader, author, "author") == [old.id]  # a full mesh heals it: the author serves it
    finally:
        for cortex in (author, relay, reader):
            cortex.close()


def test_subscribe_mode_refuses_both_tools(tmp_path: Path) -> None:
    cortex = source(tmp_path, count=1)
    assert run_cli(["--cortex", str(cortex), "set-mode", "subscribe"]).exit_code == 0
    with served(cortex) as server:
        raw = Raw(server)
        raw.start()
        assert raw.tool("sync_events")["content"][0]["text"] == (
            "this cortex is in subscribe mode and does not serve events"
        )
        assert raw.tool("sync_read_signal")["content"][0]["text"] == (
            "this cortex is in subscribe mode and does not serve read signal"
        )
        assert json.loads(raw.tool("cortex_identity")["content"][0]["text"])["mode"] == "subscribe"


def test_sessions(tmp_path: Path) -> None:
    cortex = source(tmp_path, count=1)
    with served(cortex) as server:
        raw = Raw(server)
        status, _, _ = raw.send("POST", "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert status == 400  # no session yet
        raw.start()
        raw.session, good = "0" * 32, raw.session
        assert raw.send("POST", "/mcp", {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})[0] == 404
        raw.session = good
        # Sessions belong to the endpoint that created them.
        assert (
            raw.send("POST", "/mcp/federation", {"jsonrpc": "2.0", "id": 3, "method": "tools/list"})[0] == 404
        )
        assert raw.send("DELETE")[0] == 200
        assert raw.send("POST", "/mcp", {"jsonrpc": "2.0", "id": 4, "method": "tools/list"})[0] == 404
        fed = Raw(server)
        fed.start("/mcp/federation/")
        assert (
            fed.rpc("tools/list", path="/mcp/federation")["result"]["tools"][0]["name"] == "cortex_identity"
        )


def _exchange(port: int, request: bytes) -> bytes:
    """Bytes in, the whole answer out: for requests http.client will not write (no Content-Length)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_guards(tmp_path: Path) -> None:
    text, json_type = "text/plain; charset=utf-8", "application/json"
    cortex = source(tmp_path, count=1)
    with served(cortex) as server:
        raw = Raw(server)

        def refused(*args: Any, via: Raw = raw) -> tuple[int, str | None, bytes]:
            status, headers, body = via.send(*args)
            return status, headers.get("content-type"), body

        assert refused("POST", "/mcp", {}, {"Origin": "https://evil.example"}) == (403, None, b"")
        assert raw.send("POST", "/mcp", {}, {"Origin": "app://obsidian.md"})[0] != 403
        host_refusal = (403, text, mcp_http.HOST_FORBIDDEN_BODY)
        assert refused("POST", "/mcp", {}, via=Raw(server, host="evil.example:80")) == host_refusal
        assert (
            Raw(server, host="localhost:1").send(
                "POST", "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
            )[0]
            == 200
        )
        assert refused("POST", "/other", {}) == (404, text, mcp_http.NOT_FOUND_BODY)
        # The size is refused from the header, before any of the body is read.
        head = f"POST /mcp HTTP/1.1\r\nHost: {raw.host}\r\nContent-Type: application/json\r\n"
        too_large = _exchange(raw.port, f"{head}Content-Length: {4 * 1024 * 1024 + 1}\r\n\r\n".encode())
        assert too_large.startswith(b"HTTP/1.1 413 ")
        assert too_large.endswith(b"\r\n\r\n" + mcp_http.TOO_LARGE_BODY)
        no_length = _exchange(raw.port, f"{head}\r\n".encode())
        assert no_length.startswith(b"HTTP/1.1 411 ")
        assert no_length.endswith(b"\r\n\r\n" + mcp_http.LENGTH_REQUIRED_BODY)
        unsupported = (415, text, mcp_http.UNSUPPORTED_MEDIA_BODY)
        assert refused("POST", "/mcp", b"{}", {"Content-Type": "text/plain"}) == unsupported
        parse_error = b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error"}}'
        assert refused("POST", "/mcp", b"{not json") == (400, json_type, parse_error)
        assert refused("POST", "/mcp", b"[]")[:2] == (400, json_type)
        assert refused("GET") == (405, text, mcp_http.NO_STREAM_BODY)
        assert raw.send("OPTIONS")[0] == 204
        wait_for(lambda: any(" 413 " in line for line in server.logs))  # type: ignore[attr-defined]
    logs: list[str] = server.logs  # type: ignore[attr-defined]
    assert any(line.startswith("[serve] 127.0.0.1 POST /mcp 413") for line in logs), logs


def test_texts_from_the_spec_are_word_for_word() -> None:
    """Peers and operators match on these (wire.md §4.2, §5.4); the ones asserted in place elsewhere are not repeated."""
    assert mcp_http.HOST_FORBIDDEN_BODY == b"Forbidden: Host header is not allowed"
    assert mcp_server.MISSING_SESSION == "Bad Request: Missing session ID"
    assert mcp_server.UNKNOWN_SESSION == "Session not found"


def test_the_app_answers_without_a_socket(tmp_path: Path) -> None:
    """The JSON-RPC side alone, byte for byte: results compact and UTF-8, errors in json.dumps' default spacing."""
    cortex = source(tmp_path, count=2)
    app = McpApp(CortexReader(cortex))

    def post(message: Any, session: str | None = None, version: str | None = None) -> Reply:
        return app.post("/mcp", json.dumps(message).encode(), session, version)

    def error(request_id: int, code: int, text: str) -> str:
        return f'{{"jsonrpc": "2.0", "id": {request_id}, "error": {{"code": {code}, "message": "{text}"}}}}'

    opened = post(
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}}
    )
    assert opened == Reply(
        200,
        '{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":'
        f'{{"listChanged":false}}}},"serverInfo":{{"name":"noema","version":"{mcp_server.__version__}"}}}}}}',
        streamable=True,
        session=opened.session,
        note="initialize",
    )
    assert re.fullmatch("[0-9a-f]{32}", opened.session)
    session = opened.session
    assert post({"jsonrpc": "2.0", "method": "notifications/initialized"}) == Reply(
        202, note="notifications/initialized"
    )
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    assert post(ping) == Reply(400, error(2, -32600, mcp_server.MISSING_SESSION), note="error -32600")
    assert post(ping, "0" * 32) == Reply(
        404, error(2, -32600, mcp_server.UNKNOWN_SESSION), note="error -32600"
    )
    unsupported = mcp_server.UNSUPPORTED_VERSION.format(version="2026-07-28")
    assert post(ping, session, "2026-07-28") == Reply(400, error(2, -32600, unsupported), note="error -32600")
    assert post(ping, session, "2025-06-18") == Reply(
        200, '{"jsonrpc":"2.0","id":2,"result":{}}', streamable=True, note="ping"
    )
    unknown = mcp_server.UNKNOWN_METHOD.format(method="resources/list")
    assert post({"jsonrpc": "2.0", "id": 3, "method": "resources/list"}, session) == Reply(
        200, error(3, -32601, unknown), note="error -32601"
    )
    call = {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "sync_events"}}
    assert post(call, session).note == mcp_server.NOTE_EVENTS.format(
        tool="sync_events", count=len(events(cortex))
    )
    call["params"] = {"name": "sync_events", "arguments": {"since": "x"}}
    assert post(call, session) == Reply(
        200,
        f'{{"jsonrpc":"2.0","id":4,"result":{{"content":[{{"type":"text","text":"{mcp_server.BAD_SINCE}"}}],'
        '"isError":true}}',
        streamable=True,
        note=mcp_server.NOTE_REFUSED.format(tool="sync_events"),
    )
    assert post({"jsonrpc": "2.0", "id": 5, "method": "ping", "params": [1]}, session) == Reply(
        200, error(5, -32602, mcp_server.PARAMS_NOT_OBJECT), note="error -32602"
    )
    # A session belongs to its endpoint; used on another one it ends.
    assert app.post("/mcp/federation", json.dumps(ping).encode(), session, None).status == 404
    assert post(ping, session).status == 404


def test_a_dropped_connection_is_a_warning_only_when_serving_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that fails its handshake is routine (info); an exception from our own code is a bug to report."""
    cortex = source(tmp_path, count=1)
    tls = make_tls()
    cert, key = tls.write_server_files(tmp_path)

    def broken(*args: Any) -> Reply:
        raise RuntimeError("boom")

    with served(cortex, tls_cert=str(cert), tls_key=str(key)) as server:
        port = server.server_address[1]
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /mcp HTTP/1.1\r\n\r\n")  # plain HTTP to a TLS port
            with contextlib.suppress(ConnectionResetError):
                sock.recv(64)
        monkeypatch.setattr(server.app, "post", broken)
        raw = Raw(server, context=tls.client_context())
        with pytest.raises(http.client.RemoteDisconnected):
            raw.send("POST", "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "ping"})
        records: list[tuple[Level, str]] = server.records  # type: ignore[attr-defined]
        wait_for(lambda: len([r for r in records if "dropped" in r[1]]) == 2)
    dropped = [(level, line) for level, line in records if "dropped" in line]
    assert dropped[0][0] == Level.INFO
    assert dropped[0][1].startswith("[serve] 127.0.0.1 connection dropped: SSLError: ")
    assert dropped[1] == (
        Level.WARNING,
        mcp_http.CONNECTION_DROPPED.format(client="127.0.0.1", kind="RuntimeError", error="boom"),
    )


def test_sse_only_when_the_client_asks_for_it_alone(tmp_path: Path) -> None:
    cortex = source(tmp_path, count=1)
    with served(cortex) as server:
        raw = Raw(server)
        request = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25"},
        }
        _, headers, body = raw.send("POST", "/mcp", request, {"Accept": "text/event-stream"})
        assert headers["content-type"] == "text/event-stream"
        assert body.startswith(b"event: message\ndata: {")
        _, headers, _ = raw.send("POST", "/mcp", request)
        assert headers["content-type"] == "application/json"


def test_keyed_serving_needs_tls_and_the_exact_key(tmp_path: Path) -> None:
    cortex = source(tmp_path, count=2)
    result = run_cli(["--cortex", str(cortex), "serve", "--port", "0"], env={"NOEMA_MCP_KEY": "k"})
    assert result.exit_code == 78
    assert result.stderr.startswith("Error: a keyed cortex never serves plain HTTP")
    tls = make_tls()
    cert, key = tls.write_server_files(tmp_path)
    access = AccessKey("ring-key", "env", "")
    with served(cortex, tls_cert=str(cert), tls_key=str(key), access=access) as server:
        raw = Raw(server, context=tls.client_context())
        status, headers, body = raw.send("POST", "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "initialize"})
        assert (status, headers["content-type"], body) == (
            401,
            "application/json",
            b'{"error":"unauthorized: NOEMA_MCP_KEY / access.shared_key_file required"}',
        )
        for wrong in ("bearer ring-key", "Bearer  ring-key", "Bearer ring-key ", "Bearer ring-ke"):
            assert raw.send("POST", "/mcp", {}, {"Authorization": wrong})[0] == 401
        raw_ok = Raw(server, context=tls.client_context())
        status, _, _ = raw_ok.send(
            "POST",
            "/mcp",
            {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
            {"Authorization": "Bearer ring-key"},
        )
        assert status == 200
        # Our own client pulls over TLS with the key.
        ca = tmp_path / "ca.pem"
        tls.write_ca(ca)
        target = target_with(
            tmp_path,
            [{"name": "src", "endpoint": f"https://localhost:{server.server_address[1]}", "ca": str(ca)}],
        )
        sync = run_cli(["--cortex", str(target), "sync", "--once"], env={"NOEMA_MCP_KEY": "ring-key"})
        assert sync.exit_code == 0, sync.stdout + sync.stderr
    assert events(target) == events(cortex)
    assert comparable_trace_files(target) == comparable_trace_files(cortex)
    assert not any("ring-key" in line for line in server.logs)  # type: ignore[attr-defined]
    check_db(target)


def test_the_official_sdk_client_pulls_from_serve(tmp_path: Path) -> None:
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    cortex = source(tmp_path, count=3)
    expected = [row[0] for row in events(cortex)]

    async def pull(url: str) -> tuple[str, list[str], list[str]]:
        async with streamable_http_client(url) as streams, ClientSession(streams[0], streams[1]) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            result = await session.call_tool("sync_events", {"limit": 1000})
            text = result.content[0].text  # type: ignore[union-attr]
            return init.server_info.name, [t.name for t in tools.tools], [e["id"] for e in json.loads(text)]

    with served(cortex) as server:
        name, tools, ids = asyncio.run(pull(f"http://127.0.0.1:{server.server_address[1]}/mcp"))
    assert name == "noema"
    assert tools == ["cortex_identity", "sync_events", "sync_read_signal"]
    assert ids == expected


def test_a_flood_of_idle_connections_is_turned_away_not_queued_forever(tmp_path: Path) -> None:
    import time

    cortex = source(tmp_path, count=1)
    with served(cortex, workers=2, queue=2, timeout=1.0) as server:
        port = server.server_address[1]
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(12)]
        time.sleep(0.3)
        # Beyond workers + queue, connections get an immediate 503 instead of a thread each.
        refused = 0
        for sock in idle:
            sock.settimeout(3)
            try:
                if sock.recv(64).startswith(b"HTTP/1.1 503"):
                    refused += 1
            except OSError:
                pass
        assert refused >= 6
        for sock in idle:
            sock.close()
        time.sleep(1.5)  # the idle ones time out and free their workers
        raw = Raw(server)
        assert raw.start()["serverInfo"]["name"] == "noema"


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_wildcard_hosts_are_refused(tmp_path: Path, host: str) -> None:
    cortex = make_cortex(tmp_path)
    result = run_cli(["--cortex", str(cortex), "serve", "--host", host, "--port", "0"])
    assert result.exit_code == 78
    assert "is not allowed" in result.stderr


def test_publish_and_sync_modes_serve_both_tools(tmp_path: Path) -> None:
    cortex = source(tmp_path, count=1)
    for mode in ("publish", "sync"):
        assert run_cli(["--cortex", str(cortex), "set-mode", mode]).exit_code == 0
        with served(cortex) as server:
            raw = Raw(server)
            raw.start()
            assert raw.tool("sync_events")["isError"] is False
            assert raw.tool("sync_read_signal")["isError"] is False
