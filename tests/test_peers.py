"""The test peers behave as wire.md says real peers do, checked with raw http.client requests (not noemafed's client)."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import db, make_cortex, put_state
from peers import payloads
from peers.sdk_peer import SdkPeer
from peers.stdlib_peer import UNAUTHORIZED_BODY, StdlibPeer
from peers.tls import expired_tls

from noemafed.cortex.manifest import read_manifest

ACCEPT_BOTH = "application/json, text/event-stream"
VERSION = "2025-11-25"
GO_SESSION = re.compile(r"mcp-session-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")
RUST_SESSION = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")

# cortex.md §4.8 events (data texts are the exact signed bytes), then one whose data holds Go escapes, a literal
# `>`, non-ASCII and a raw U+2028, then an archive with empty data.
A_ID, B_ID = "01JQ7X2B9C4D5E6F7G8H9JKMNP", "01JQ9A3C5E7G9J1K3M5N7P9R2T"
A_KEY = "ed25519:0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc="
TRACE = "20250329-why-we-chose-sqlite"
SPECIAL_DATA = '{"title":"escapes","body":"1 \\u003c 2 \\u0026 3 > 0, café 日本\u2028next"}'
EVENTS: list[dict[str, str]] = [
    {
        "id": "01JQH4HPD0B8E9WCXGFN1A33VE",
        "action": "create",
        "trace_id": TRACE,
        "cortex_id": A_ID,
        "origin": "research",
        "timestamp": "2025-03-29T14:23:00Z",
        "data": '{"title":"Why we chose SQLite","type":"decision","author":"research-agent-1","tags":["architecture","storage"],"origin":"research","tier":"short","body":"We index traces in SQLite (WAL mode) because it is embedded and needs no server.","content_hash":"sha256:e258ea3677c1ad03f7240f148c3c5e3e1c53925e2cb922bc21bf89c0605c8c0c"}',
        "vclock": '{"01JQ7X2B9C4D5E6F7G8H9JKMNP":1}',
        "signature": "ed25519:hMEWzswnEK3tBUgaFAMmj9BOT8++AYYWIRYO6DLaGJD7+AgYkJ7Np2HgveCSwSlr/MPBEBZ1ddtRo7lAFfA2Ag==",
        "pubkey": A_KEY,
    },
    {
        "id": "01JQK4RGA01D2F5AE1W39NPXRJ",
        "action": "update",
        "trace_id": TRACE,
        "cortex_id": B_ID,
        "origin": "laptop",
        "timestamp": "2025-03-30T09:05:12Z",
        "data": '{"title":"Why we chose SQLite","type":"decision","author":"laptop-agent","tags":["architecture","storage"],"origin":"research","tier":"short","body":"We index traces in SQLite (WAL mode) because it is embedded and needs no server.\\n\\nRevisited: still right for the index \\u0026 event log.","content_hash":"sha256:404daf7faab0a7609fe6eb21983b239f4fd0fedbb2bd243a69b7cd24c5659013"}',
        "vclock": '{"01JQ9A3C5E7G9J1K3M5N7P9R2T":1,"01JQ7X2B9C4D5E6F7G8H9JKMNP":1}',
        "signature": "",
        "pubkey": "",
    },
    {
        "id": "01JQK7WV80KW0C7MMADCF4Y8MG",
        "action": "promote",
        "trace_id": TRACE,
        "cortex_id": A_ID,
        "origin": "research",
        "timestamp": "2025-03-30T10:00:00Z",
        "data": '{"from":"short","to":"mid"}',
        "vclock": '{"01JQ7X2B9C4D5E6F7G8H9JKMNP":2,"01JQ9A3C5E7G9J1K3M5N7P9R2T":1}',
        "signature": "ed25519:2dhNeiArKQ7MaVIWSK9klgqxr/ffNI4i38ju9rMkxp+2ulAONh17DLj734/1T8wI9jrhWDNoHqBvrZlHYZ1WAw==",
        "pubkey": A_KEY,
    },
    {
        "id": "01JQM0000000000000000000SP",
        "action": "update",
        "trace_id": TRACE,
        "cortex_id": B_ID,
        "origin": "laptop",
        "timestamp": "2025-03-31T08:00:00Z",
        "data": SPECIAL_DATA,
        "vclock": "null",
        "signature": "",
        "pubkey": "",
    },
    {
        "id": "01JQN0000000000000000000AR",
        "action": "archive",
        "trace_id": TRACE,
        "cortex_id": A_ID,
        "origin": "research",
        "timestamp": "2025-04-01T08:00:00Z",
        "data": "{}",
        "vclock": "{}",
        "signature": "",
        "pubkey": "",
    },
]


def insert_events(cortex: Path, events: list[dict[str, str]]) -> None:
    conn = db(cortex)
    with conn:
        conn.executemany(
            "INSERT INTO events(id, action, trace_id, cortex_id, origin, timestamp, data, vclock, signature, pubkey)"
            " VALUES (:id, :action, :trace_id, :cortex_id, :origin, :timestamp, :data, :vclock, :signature, :pubkey)",
            events,
        )
    conn.close()


@pytest.fixture
def cortex(tmp_path: Path) -> Path:
    path = make_cortex(tmp_path, "alpha")
    insert_events(path, EVENTS)
    return path


# -- a raw client, deliberately independent of noemafed.mcp.client ----------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def messages(self) -> list[dict[str, Any]]:
        """JSON-RPC messages from a JSON or SSE body (skipping empty-data priming events)."""
        if (self.header("Content-Type") or "").startswith("application/json"):
            return [json.loads(self.body)]
        return [json.loads(data) for data in sse_data(self.body) if data.strip()]

    def rpc(self) -> dict[str, Any]:
        (message,) = self.messages()
        return message

    def text(self) -> str:
        """The tool payload: the first text content item of a successful result."""
        result = self.rpc()["result"]
        assert not result.get("isError"), result
        return next(item["text"] for item in result["content"] if item["type"] == "text")


def sse_data(body: bytes) -> list[str]:
    """SSE per WHATWG: CR, LF or CRLF line ends; comments skipped; data lines joined; blank line dispatches."""
    events: list[str] = []
    data: list[str] = []
    for line in re.split(rb"\r\n|\r|\n", body):
        if not line:
            if data:
                events.append("\n".join(data))
            data = []
        elif line.startswith(b"data:"):
            value = line[5:]
            data.append((value[1:] if value.startswith(b" ") else value).decode())
    return events


def send(
    url: str,
    method: str = "POST",
    *,
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 5,
) -> Answer:
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 0
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    try:
        conn.request(method, parts.path or "/", body=raw, headers=headers or {})
        response = conn.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        conn.close()


def post_headers(key: str | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def initialize_body(version: str = VERSION) -> dict[str, Any]:
    params = {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}
    return {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}


def call_body(rid: int, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    params = {"name": name, "arguments": arguments or {}}
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}


@dataclass
class Session:
    """One MCP session done by hand: the headers a correct client sends (wire.md §5.1)."""

    url: str
    key: str | None = None
    context: ssl.SSLContext | None = None
    sid: str | None = None
    version: str | None = None
    next_id: int = 2
    answers: list[Answer] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        headers = post_headers(self.key)
        if self.sid:
            headers["Mcp-Session-Id"] = self.sid
        if self.version:
            headers["MCP-Protocol-Version"] = self.version
        return headers

    def post(self, body: dict[str, Any]) -> Answer:
        answer = send(self.url, body=body, headers=self.headers(), context=self.context)
        self.answers.append(answer)
        return answer

    def initialize(self) -> Answer:
        answer = self.post(initialize_body())  # no session or version header yet: rmcp 400s a mismatch
        assert answer.status == 200, answer
        self.sid = answer.header("Mcp-Session-Id")
        self.version = answer.rpc()["result"]["protocolVersion"]
        assert self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}).status == 202
        return answer

    def call(self, name: str, **arguments: Any) -> Answer:
        self.next_id += 1
        return self.post(call_body(self.next_id, name, arguments))

    def payload(self, name: str, **arguments: Any) -> str:
        answer = self.call(name, **arguments)
        assert answer.status == 200, answer
        return answer.text()

    def delete(self) -> Answer:
        headers = self.headers()
        del headers["Content-Type"]
        return send(self.url, "DELETE", headers=headers, context=self.context)


def refusal(answer: Answer) -> tuple[str, str]:
    """("result", text) for an isError result, ("error:<code>", message) for a JSON-RPC error."""
    message = answer.rpc()
    if "error" in message:
        return f"error:{message['error']['code']}", message["error"]["message"]
    assert message["result"]["isError"] is True
    return "result", message["result"]["content"][0]["text"]


def manifest_id(cortex: Path) -> str:
    return read_manifest(cortex).id


def page_ids(text: str) -> list[str]:
    return [event["id"] for event in json.loads(text) or []]


# -- the stdlib peer: a whole poll per flavour ---------------------------------------------------------------


@pytest.mark.parametrize("flavor", ["go", "rust"])
def test_full_poll(cortex: Path, flavor: str) -> None:
    with StdlibPeer(cortex, flavor) as peer:
        session = Session(peer.url)
        init = session.initialize()
        result = init.rpc()["result"]
        assert result["protocolVersion"] == VERSION
        assert result["serverInfo"] == {"name": "noema", "version": "0.19.3" if flavor == "go" else "0.22.2"}
        assert "tools" in result["capabilities"]
        identity = json.loads(session.payload("cortex_identity"))
        assert identity == {"id": manifest_id(cortex), "name": "alpha", "version": 2, "mode": "sync"}
        pages = [session.payload("sync_events", limit=2)]
        for _ in range(3):  # bounded: 5 events at 2 per page
            pages.append(session.payload("sync_events", since=page_ids(pages[-1])[-1], limit=2))
        assert [page_ids(page) for page in pages] == [
            [EVENTS[0]["id"], EVENTS[1]["id"]],
            [EVENTS[2]["id"], EVENTS[3]["id"]],
            [EVENTS[4]["id"]],
            [],
        ]
        assert pages[-1] == ("null" if flavor == "go" else "[]")
        delete = session.delete()
    assert delete.status == (200 if flavor == "go" else 202)
    assert peer.calls() == [
        "initialize",
        "notifications/initialized",
        "cortex_identity",
        "sync_events",
        "sync_events",
        "sync_events",
        "sync_events",
        "DELETE",
    ]


@pytest.mark.parametrize("flavor", ["go", "rust"])
def test_event_data_is_served_verbatim(cortex: Path, flavor: str) -> None:
    with StdlibPeer(cortex, flavor) as peer:
        session = Session(peer.url)
        session.initialize()
        text = session.payload("sync_events")
    for event in EVENTS[:4]:
        assert f'"data":{event["data"]}' in text  # byte for byte, escapes and U+2028 untouched
    served = {event["id"]: event for event in json.loads(text)}
    first = served[EVENTS[0]["id"]]
    assert list(first) == [
        "id",
        "action",
        "trace_id",
        "cortex_id",
        "origin",
        "timestamp",
        "data",
        "vclock",
        "signature",
        "pubkey",
    ]
    assert served[EVENTS[1]["id"]]["vclock"] == {A_ID: 1, B_ID: 1}
    assert "signature" not in served[EVENTS[1]["id"]]
    assert "pubkey" not in served[EVENTS[1]["id"]]
    assert "vclock" not in served[EVENTS[3]["id"]]  # a null clock is omitted
    archive = served[EVENTS[4]["id"]]
    assert "vclock" not in archive
    # Go always sends data; Rust drops data:{} (wire.md P17).
    assert archive.get("data", "absent") == ({} if flavor == "go" else "absent")


def test_go_answers_plain_json_with_session_only_on_initialize(cortex: Path) -> None:
    with StdlibPeer(cortex, "go") as peer:
        session = Session(peer.url)
        init = session.initialize()
        call = session.call("cortex_identity")
        notification = session.answers[1]
    assert init.header("Content-Type") == "application/json"
    assert init.body.endswith(b"}\n")
    assert GO_SESSION.fullmatch(init.header("Mcp-Session-Id") or "")
    assert call.header("Mcp-Session-Id") is None
    assert "isError" not in call.rpc()["result"]
    assert notification.body == b""
    assert notification.header("Content-Type") is None


def test_rust_answers_sse_with_priming_event(cortex: Path) -> None:
    with StdlibPeer(cortex, "rust") as peer:
        session = Session(peer.url)
        init = session.initialize()
        first = session.call("cortex_identity")
        second = session.call("cortex_identity")
    assert init.header("Content-Type") == "text/event-stream"
    assert init.header("Transfer-Encoding") == "chunked"
    assert RUST_SESSION.fullmatch(init.header("Mcp-Session-Id") or "")
    assert init.body.startswith(b"data: \nid: 0\nretry: 3000\n\ndata: {")
    assert first.body.startswith(b"data: \nid: 0/0\nretry: 3000\n\n")
    assert first.body.endswith(b"\nid: 1/0\n\n")
    assert second.body.startswith(b"data: \nid: 0/1\n")
    assert first.rpc()["result"]["isError"] is False


# -- requests as recorded ----------------------------------------------------------------------------------------


def test_requests_are_recorded_with_headers(cortex: Path) -> None:
    with StdlibPeer(cortex, "rust", key="k1") as peer:
        session = Session(peer.url, key="k1")
        session.initialize()
        session.call("sync_events", limit=5)
    init, notified, call = peer.requests
    assert init.method == "POST"
    assert init.path == "/mcp"
    assert init.header("mcp-protocol-version") is None
    assert notified.header("MCP-Protocol-Version") == VERSION
    assert call.header("Mcp-Session-Id") == session.sid
    assert call.header_values("Authorization") == ["Bearer k1"]
    assert call.header("Origin") is None
    assert call.tool == "sync_events"
    assert call.rpc == call_body(3, "sync_events", {"limit": 5})


# -- auth -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flavor", ["go", "rust"])
@pytest.mark.parametrize(
    "authorization", [None, "bearer k7Qm2v9x", "Bearer  k7Qm2v9x", "Bearer k7Qm2v9x ", "Bearer x"]
)
def test_wrong_or_missing_key_gets_noemas_401(cortex: Path, flavor: str, authorization: str | None) -> None:
    headers = post_headers()
    if authorization is not None:
        headers["Authorization"] = authorization
    with StdlibPeer(cortex, flavor, key="k7Qm2v9x") as peer:
        answer = send(peer.url, body=initialize_body(), headers=headers)
        delete = send(peer.url, "DELETE", headers={k: v for k, v in headers.items() if k != "Content-Type"})
    for refused in (answer, delete):
        assert refused.status == 401
        assert refused.header("Content-Type") == "application/json"
        assert refused.header("WWW-Authenticate") is None
        assert refused.body == UNAUTHORIZED_BODY


@pytest.mark.parametrize("flavor", ["go", "rust"])
def test_right_key_passes(cortex: Path, flavor: str) -> None:
    with StdlibPeer(cortex, flavor, key="k7Qm2v9x") as peer:
        session = Session(peer.url, key="k7Qm2v9x")
        session.initialize()
        assert page_ids(session.payload("sync_events"))[0] == EVENTS[0]["id"]


# -- the Rust guards ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "status", "body"),
    [
        ({"Accept": "application/json"}, 406, b"Not Acceptable: Client must accept both"),
        ({"Accept": "*/*"}, 406, b"Not Acceptable"),
        ({"Content-Type": "text/plain"}, 415, b"Unsupported Media Type"),
        ({"Origin": "http://127.0.0.1"}, 403, b""),
        ({"Host": "evil.example:3000"}, 403, b"Forbidden: Host header is not allowed"),
        ({"MCP-Protocol-Version": "2025-06-18"}, 400, b"Bad Request: MCP-Protocol-Version"),
    ],
)
def test_rust_refuses_bad_initialize(cortex: Path, change: dict[str, str], status: int, body: bytes) -> None:
    with StdlibPeer(cortex, "rust") as peer:
        answer = send(peer.url, body=initialize_body(), headers={**post_headers(), **change})
    assert answer.status == status
    assert answer.body.startswith(body)
    assert peer.sessions == {}


def test_rust_allows_the_obsidian_origin(cortex: Path) -> None:
    with StdlibPeer(cortex, "rust") as peer:
        answer = send(
            peer.url, body=initialize_body(), headers={**post_headers(), "Origin": "app://obsidian.md"}
        )
    assert answer.status == 200


def test_rust_origin_is_checked_before_auth(cortex: Path) -> None:
    with StdlibPeer(cortex, "rust", key="k") as peer:
        answer = send(peer.url, body=initialize_body(), headers={**post_headers(), "Origin": "https://x"})
    assert (answer.status, answer.body) == (403, b"")


def test_rust_session_rules(cortex: Path) -> None:
    with StdlibPeer(cortex, "rust") as peer:
        without = send(peer.url, body=call_body(2, "cortex_identity"), headers=post_headers())
        unknown_headers = {**post_headers(), "Mcp-Session-Id": str(uuid.uuid4())}
        unknown = send(peer.url, body=call_body(2, "cortex_identity"), headers=unknown_headers)
        session = Session(peer.url)
        session.initialize()
        bad_version = send(
            peer.url,
            body=call_body(3, "cortex_identity"),
            headers={**session.headers(), "MCP-Protocol-Version": "1999-01-01"},
        )
        closed = session.delete()
        after_close = session.call("cortex_identity")
        delete_unknown = session.delete()
        wrong_path = send(peer.endpoint + "/other", body=initialize_body(), headers=post_headers())
        slash_path = send(peer.endpoint + "/mcp/", body=initialize_body(), headers=post_headers())
    assert (without.status, without.body) == (422, b"Unexpected message, expect initialize request")
    assert (unknown.status, unknown.body) == (404, b"Not Found: Session not found")
    assert (bad_version.status, bad_version.body) == (
        400,
        b"Bad Request: Unsupported MCP-Protocol-Version: 1999-01-01",
    )
    assert closed.status == 202
    assert after_close.status == 404
    assert delete_unknown.status == 404
    assert wrong_path.status == 404
    assert slash_path.status == 200


# -- the Go session and routing rules ----------------------------------------------------------------------------


def test_go_session_rules(cortex: Path) -> None:
    with StdlibPeer(cortex, "go") as peer:
        without = send(peer.url, body=call_body(2, "cortex_identity"), headers=post_headers())
        malformed = send(
            peer.url,
            body=call_body(2, "cortex_identity"),
            headers={**post_headers(), "Mcp-Session-Id": "abc"},
        )
        # mcp-go v0.46 checks only the format, so a well-formed id from "before a restart" still works.
        stranger = {**post_headers(), "Mcp-Session-Id": f"mcp-session-{uuid.uuid4()}"}
        accepted = send(peer.url, body=call_body(2, "cortex_identity"), headers=stranger)
    assert (without.status, without.body) == (404, b"Invalid session ID\n")
    assert without.header("Content-Type") == "text/plain; charset=utf-8"
    assert malformed.status == 404
    assert accepted.status == 200
    assert json.loads(accepted.text())["id"] == manifest_id(cortex)


def test_go_routing_and_content_type(cortex: Path) -> None:
    with StdlibPeer(cortex, "go", key="k") as peer:
        slash = send(peer.endpoint + "/mcp/", body=initialize_body(), headers=post_headers("k"))
        double = send(peer.endpoint + "//mcp", body=initialize_body(), headers=post_headers("k"))
        plain = send(
            peer.url, body=initialize_body(), headers={**post_headers("k"), "Content-Type": "text/plain"}
        )
        preflight = send(peer.url, "OPTIONS")  # CORS answers before auth
        delete = send(peer.url, "DELETE", headers={"Authorization": "Bearer k"})
    assert (slash.status, slash.body) == (404, b"404 page not found\n")
    assert (double.status, double.header("Location")) == (301, "/mcp")
    assert (plain.status, plain.body) == (400, b"Invalid content type: must be 'application/json'\n")
    assert preflight.status == 204
    assert preflight.header("Access-Control-Allow-Origin") == "*"
    assert delete.status == 200


# -- refusals and tool errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("flavor", ["go", "rust"])
@pytest.mark.parametrize(
    ("knobs", "call", "text"),
    [
        ({}, ("sync_events", {"since": "01jqh4hpd0b8e9wcxgfn1a33ve"}), payloads.BAD_CURSOR),  # lower case
        ({}, ("sync_events", {"since": "01JQH4HPD0B8E9WCXGFN1A33V"}), payloads.BAD_CURSOR),  # 25 characters
        (
            {},
            ("sync_events", {"since": "01JQH4HPD0B8E9WCXGFN1A33VU"}),
            payloads.BAD_CURSOR,
        ),  # U is not Crockford
        ({"mode": "subscribe"}, ("sync_events", {}), payloads.SUBSCRIBE_EVENTS),
        ({"mode": "subscribe"}, ("sync_read_signal", {}), payloads.SUBSCRIBE_SIGNAL),
        ({"identity_error": "manifest unreadable"}, ("cortex_identity", {}), "manifest unreadable"),
    ],
)
def test_refusals_take_each_flavours_shape(
    cortex: Path, flavor: str, knobs: dict[str, Any], call: tuple[str, dict[str, Any]], text: str
) -> None:
    tool, arguments = call
    with StdlibPeer(cortex, flavor, **knobs) as peer:
        session = Session(peer.url)
        session.initialize()
        answer = session.call(tool, **arguments)
    assert answer.status == 200
    assert refusal(answer) == (("result", text) if flavor == "go" else ("error:-32602", text))


@pytest.mark.parametrize(
    ("flavor", "knobs", "tool", "message"),
    [
        ("go", {}, "no_such_tool", "tool 'no_such_tool' not found: tool not found"),
        (
            "go",
            {"no_read_signal": True},
            "sync_read_signal",
            "tool 'sync_read_signal' not found: tool not found",
        ),
        ("rust", {}, "no_such_tool", "tool not found"),
        ("rust", {"no_read_signal": True}, "sync_read_signal", "tool not found"),
    ],
)
def test_unknown_tool_is_invalid_params(
    cortex: Path, flavor: str, knobs: dict[str, Any], tool: str, message: str
) -> None:
    with StdlibPeer(cortex, flavor, **knobs) as peer:
        session = Session(peer.url)
        session.initialize()
        answer = session.call(tool)
    assert refusal(answer) == ("error:-32602", message)


@pytest.mark.parametrize("flavor", ["go", "rust"])
def test_limit_rules(tmp_path: Path, flavor: str) -> None:
    cortex = make_cortex(tmp_path)
    many = [{**EVENTS[2], "id": f"01JQK7WV80KW0C7MMADCF{n:05d}"} for n in range(105)]
    insert_events(cortex, many)
    with StdlibPeer(cortex, flavor) as peer:
        session = Session(peer.url)
        session.initialize()
        sizes = {
            limit: len(page_ids(session.payload("sync_events", limit=limit))) for limit in (0, 1001, 1000, 3)
        }
        numeric_string = session.call("sync_events", limit="3")
        negative = session.call("sync_events", limit=-1)
    assert sizes == {0: 100, 1001: 100, 1000: 105, 3: 3}
    if flavor == "go":  # mcp-go's GetInt coerces; ≤0 becomes the default
        assert len(page_ids(numeric_string.text())) == 3
        assert len(page_ids(negative.text())) == 100
    else:  # rmcp deserializes strictly (wire.md §5.5)
        assert refusal(numeric_string)[0] == "error:-32602"
        assert refusal(negative)[0] == "error:-32602"


@pytest.mark.parametrize("flavor", ["go", "rust"])
def test_read_signal_serves_own_rows_after_the_cursor(cortex: Path, flavor: str) -> None:
    own = manifest_id(cortex)
    conn = db(cortex)
    conn.execute("PRAGMA foreign_keys=OFF")  # usage rows without trace rows are enough here
    with conn:
        conn.executemany(
            "INSERT INTO trace_usage(trace_id, peer_cortex_id, read_count, modify_count, last_read_at, updated_at,"
            " search_hit_count) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                ("t-b", own, 3, 1, "2026-08-15T03:10:00Z", "2026-08-15T03:10:00Z", 2),
                ("t-a", own, 1, 0, None, "2026-08-15T03:00:00Z", 0),
                ("t-c", B_ID, 9, 9, "2026-08-15T04:00:00Z", "2026-08-15T04:00:00Z", 9),
            ],
        )
    conn.close()
    with StdlibPeer(cortex, flavor) as peer:
        session = Session(peer.url)
        session.initialize()
        everything = session.payload("sync_read_signal", limit=500)
        after = session.payload("sync_read_signal", since="2026-08-15T03:00:00Z")
        empty = session.payload("sync_read_signal", since="2026-08-15T03:10:00Z")
    assert json.loads(everything) == [
        {
            "trace_id": "t-a",
            "peer_cortex_id": own,
            "read_count": 1,
            "modify_count": 0,
            "updated_at": "2026-08-15T03:00:00Z",
        },
        {
            "trace_id": "t-b",
            "peer_cortex_id": own,
            "read_count": 3,
            "modify_count": 1,
            "search_hit_count": 2,
            "last_read_at": "2026-08-15T03:10:00Z",
            "updated_at": "2026-08-15T03:10:00Z",
        },
    ]
    assert [row["trace_id"] for row in json.loads(after)] == ["t-b"]
    assert empty == ("null" if flavor == "go" else "[]")


# -- identity ---------------------------------------------------------------------------------------------


def test_identity_carries_pubkey_and_rank_when_set(cortex: Path) -> None:
    manifest = cortex / "cortex.md"
    manifest.write_text(
        manifest.read_text().replace("version: 2\n", f"version: 2\nsigning:\n    public_key: {A_KEY}\n")
    )
    rank = {"cortex_id": manifest_id(cortex), "rank": 57, "observed_at": "2026-08-15T03:00:00Z"}
    put_state(cortex, **{"consolidation:rank": json.dumps(rank)})
    with StdlibPeer(cortex, "rust") as peer:
        session = Session(peer.url)
        session.initialize()
        identity = json.loads(session.payload("cortex_identity"))
    assert identity == {
        "id": manifest_id(cortex),
        "name": "alpha",
        "version": 2,
        "mode": "sync",
        "pubkey": A_KEY,
        "rank": rank,
    }


@pytest.mark.parametrize(
    ("identity", "text"),
    [
        (
            {"id": A_ID, "name": "x", "version": 1, "mode": "sync"},
            f'{{"id":"{A_ID}","name":"x","version":1,"mode":"sync"}}',
        ),
        ({"version": "2"}, '{"version":"2"}'),
        ("not json", "not json"),
        ("", ""),
    ],
)
def test_identity_knob_replaces_the_payload(cortex: Path, identity: Any, text: str) -> None:
    with StdlibPeer(cortex, "go", identity=identity) as peer:
        session = Session(peer.url)
        session.initialize()
        assert session.payload("cortex_identity") == text


def test_knobs_can_change_between_polls(cortex: Path) -> None:
    with StdlibPeer(cortex, "go") as peer:
        first = Session(peer.url)
        first.initialize()
        before = json.loads(first.payload("cortex_identity"))["id"]
        peer.knobs.identity = {"id": B_ID, "name": "impostor", "version": 2, "mode": "sync"}
        second = Session(peer.url)
        second.initialize()
        after = json.loads(second.payload("cortex_identity"))["id"]
    assert (before, after) == (manifest_id(cortex), B_ID)


def test_version_knobs(cortex: Path) -> None:
    with StdlibPeer(cortex, "go", server_version="dev", protocol_version="2024-01-01") as peer:
        answer = send(peer.url, body=initialize_body(), headers=post_headers())
        echoed_old = send(peer.url, body=initialize_body("2025-03-26"), headers=post_headers())
    result = answer.rpc()["result"]
    assert (result["serverInfo"]["version"], result["protocolVersion"]) == ("dev", "2024-01-01")
    assert echoed_old.rpc()["result"]["protocolVersion"] == "2024-01-01"
    with StdlibPeer(cortex, "rust") as peer:
        unknown = send(peer.url, body=initialize_body("2099-01-01"), headers=post_headers())
        older = send(peer.url, body=initialize_body("2025-03-26"), headers=post_headers())
    assert unknown.rpc()["result"]["protocolVersion"] == VERSION
    assert older.rpc()["result"]["protocolVersion"] == "2025-03-26"


# -- misbehaviour knobs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flavor", "not_found"), [("go", b"Invalid session ID\n"), ("rust", b"Not Found: Session not found")]
)
def test_drop_sessions_after_forgets_once_like_a_restart(cortex: Path, flavor: str, not_found: bytes) -> None:
    with StdlibPeer(cortex, flavor, drop_sessions_after=3) as peer:
        session = Session(peer.url)
        session.initialize()  # requests 1 and 2
        assert session.call("cortex_identity").status == 200  # 3
        dropped = session.call("sync_events")  # 4: the peer "restarted"
        again = Session(peer.url)
        again.initialize()
        later = [again.call("sync_events").status for _ in range(4)]
    assert (dropped.status, dropped.body) == (404, not_found)
    assert later == [200, 200, 200, 200]


def test_drop_sessions_repeat(cortex: Path) -> None:
    with StdlibPeer(cortex, "rust", drop_sessions_after=4, drop_sessions_repeat=True) as peer:
        statuses = []
        for _ in range(2):  # each session lives for exactly four requests
            session = Session(peer.url)
            session.initialize()
            statuses.append(
                [session.call(tool).status for tool in ("cortex_identity", "sync_events", "sync_events")]
            )
    assert statuses == [[200, 200, 404], [200, 200, 404]]


@pytest.mark.parametrize(
    ("override", "status", "body", "content_type"),
    [
        (500, 500, b"Internal Server Error", "text/plain; charset=utf-8"),
        (401, 401, UNAUTHORIZED_BODY, "application/json"),
        ((503, "busy"), 503, b"busy", "text/plain; charset=utf-8"),
        ((400, '{"x":1}'), 400, b'{"x":1}', "application/json"),
        ((200, b"<html>", "text/html"), 200, b"<html>", "text/html"),
    ],
)
def test_status_override(cortex: Path, override: Any, status: int, body: bytes, content_type: str) -> None:
    with StdlibPeer(cortex, "go", status_override=override) as peer:
        answer = send(peer.endpoint + "/anywhere", body=initialize_body(), headers=post_headers())
    assert (answer.status, answer.body, answer.header("Content-Type")) == (status, body, content_type)


def test_misbehave_on_limits_knobs_to_one_tool(cortex: Path) -> None:
    with StdlibPeer(cortex, "go", status_override=500, misbehave_on="sync_events") as peer:
        session = Session(peer.url)
        session.initialize()
        identity = session.call("cortex_identity")
        events = session.call("sync_events")
    assert (identity.status, events.status) == (200, 500)


def test_close_without_answer(cortex: Path) -> None:
    with (
        StdlibPeer(cortex, "rust", close_without_answer=True) as peer,
        pytest.raises(http.client.RemoteDisconnected),
    ):
        send(peer.url, body=initialize_body(), headers=post_headers())
    assert len(peer.requests) == 1


def test_hang_times_out_the_client_and_not_the_shutdown(cortex: Path) -> None:
    peer = StdlibPeer(cortex, "go", hang_seconds=60).start()
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            send(peer.url, body=initialize_body(), headers=post_headers(), timeout=0.3)
        assert time.monotonic() - started < 2
        # a second client is still waiting when the peer stops
        waiter = threading.Thread(target=_swallow, args=(peer.url,), daemon=True)
        waiter.start()
        time.sleep(0.1)
    finally:
        stopping = time.monotonic()
        peer.stop()
    assert time.monotonic() - stopping < 1.0
    waiter.join(timeout=5)
    assert not waiter.is_alive()


def _swallow(url: str) -> None:
    with contextlib.suppress(OSError, http.client.HTTPException):
        send(url, body=initialize_body(), headers=post_headers(), timeout=10)


def test_redirect(cortex: Path) -> None:
    with StdlibPeer(cortex, "go", redirect_to="http://127.0.0.1:9/mcp", redirect_status=302) as peer:
        answer = send(peer.url, body=initialize_body(), headers=post_headers())
    assert (answer.status, answer.header("Location")) == (302, "http://127.0.0.1:9/mcp")


@pytest.mark.parametrize("flavor", ["go", "rust"])
def test_huge_response_is_streamed_to_the_exact_size(cortex: Path, flavor: str) -> None:
    size = 300_000
    with StdlibPeer(cortex, flavor, huge_response_bytes=size) as peer:
        session = Session(peer.url)
        session.initialize()
        text = session.payload("sync_events")
    assert len(text) == size
    assert json.loads(text) == ["x" * (size - 4)]


def test_huge_response_survives_a_client_that_stops_reading(cortex: Path) -> None:
    """A client enforcing a byte budget hangs up early; the peer must neither buffer 1 GiB nor crash."""
    with StdlibPeer(cortex, "go", huge_response_bytes=1 << 30) as peer:
        session = Session(peer.url)
        session.initialize()
        parts = urlsplit(peer.url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
        conn.request("POST", "/mcp", json.dumps(call_body(9, "sync_events")), session.headers())
        response = conn.getresponse()
        assert int(response.getheader("Content-Length") or 0) > 1 << 30
        head = response.read(1 << 20)
        conn.close()
        assert head.startswith(b'{"jsonrpc":"2.0","id":9,"result":{"content":[{"type":"text","text":"[\\"xxx')
        assert session.call("cortex_identity").status == 200  # still serving


@pytest.mark.parametrize("flavor", ["go", "rust"])
def test_page_override(cortex: Path, flavor: str) -> None:
    seen: list[tuple[str, int]] = []

    def page(since: str, limit: int) -> str:
        seen.append((since, limit))
        return '[{"id":"00000000000000000000000000"}]'

    with StdlibPeer(cortex, flavor, page_override="{not json") as peer:
        session = Session(peer.url)
        session.initialize()
        raw = session.payload("sync_events")
        peer.knobs.page_override = page
        called = session.payload("sync_events", since=EVENTS[0]["id"], limit=7)
    assert raw == "{not json"
    assert called == '[{"id":"00000000000000000000000000"}]'
    assert seen == [(EVENTS[0]["id"], 7)]


def test_extra_events_merge_into_the_log_order(cortex: Path) -> None:
    extra_text = '{"id":"01JQK5000000000000000000XT","action":"vote","trace_id":"t","data":{"a":"\\u003c"}}'
    extras = [{"id": "01JQJ0000000000000000000XD", "action": "trash", "trace_id": TRACE}, extra_text]
    with StdlibPeer(cortex, "rust", extra_events=extras) as peer:
        session = Session(peer.url)
        session.initialize()
        text = session.payload("sync_events", since=EVENTS[0]["id"], limit=4)
    assert page_ids(text) == [
        "01JQJ0000000000000000000XD",
        EVENTS[1]["id"],
        "01JQK5000000000000000000XT",
        EVENTS[2]["id"],
    ]
    assert extra_text in text


def test_sse_crlf_and_keepalives(cortex: Path) -> None:
    with StdlibPeer(cortex, "rust", sse_crlf=True, keepalives=2, sse_delay=0.01) as peer:
        session = Session(peer.url)
        session.initialize()
        answer = session.call("cortex_identity")
    assert answer.body.startswith(b"data: \r\nid: 0/0\r\nretry: 3000\r\n\r\n:\r\n\r\n:\r\n\r\ndata: {")
    assert answer.body.endswith(b"\r\nid: 1/0\r\n\r\n")
    assert json.loads(answer.text())["name"] == "alpha"


def test_knob_names_are_checked(cortex: Path) -> None:
    with pytest.raises(TypeError):
        StdlibPeer(cortex, "go", no_such_knob=True)


# -- TLS --------------------------------------------------------------------------------------------------


def test_tls_peer_verifies_with_its_ca_only(cortex: Path, tmp_path: Path) -> None:
    with StdlibPeer(cortex, "go", key="k", tls=True) as peer:
        assert peer.endpoint.startswith("https://localhost:")
        assert peer.tls is not None
        ca_file = peer.write_ca(tmp_path / "ca.pem")
        with_ca = ssl.create_default_context(cafile=str(ca_file))
        by_name = Session(peer.url, key="k", context=with_ca)
        by_name.initialize()
        by_ip = send(
            peer.endpoint_ip + "/mcp", body=initialize_body(), headers=post_headers("k"), context=with_ca
        )
        with pytest.raises(ssl.SSLCertVerificationError):
            send(
                peer.url,
                body=initialize_body(),
                headers=post_headers("k"),
                context=ssl.create_default_context(),
            )
        after_failure = send(peer.url, body=initialize_body(), headers=post_headers("k"), context=with_ca)
        identity = json.loads(by_name.payload("cortex_identity"))
    assert identity["id"] == manifest_id(cortex)
    assert by_ip.status == 200
    assert after_failure.status == 200


def test_expired_cert_fails_verification(cortex: Path) -> None:
    tls = expired_tls()
    with (
        StdlibPeer(cortex, "rust", tls=tls) as peer,
        pytest.raises(ssl.SSLCertVerificationError, match="expired"),
    ):
        send(peer.url, body=initialize_body(), headers=post_headers(), context=tls.client_context())


# -- the official SDK as a peer ---------------------------------------------------------------------------


def test_sdk_peer_json_mode(cortex: Path) -> None:
    with SdkPeer(cortex, json_response=True) as peer:
        session = Session(peer.url)
        init = session.initialize()
        identity = json.loads(session.payload("cortex_identity"))
        first = session.payload("sync_events", limit=4)
        rest = session.payload("sync_events", since=page_ids(first)[-1], limit=4)
        caught_up = session.payload("sync_events", since=page_ids(rest)[-1])
        bad_cursor = session.call("sync_events", since="nope")
        unknown = session.call("no_such_tool")
        bad_host = send(peer.url, body=initialize_body(), headers={**post_headers(), "Host": "evil.example"})
        delete = session.delete()
    assert init.header("Content-Type") == "application/json"
    assert re.fullmatch(r"[0-9a-f]{32}", session.sid or "")
    assert init.rpc()["result"]["serverInfo"] == {"name": "noema", "version": "0.22.2"}
    assert identity == {"id": manifest_id(cortex), "name": "alpha", "version": 2, "mode": "sync"}
    assert page_ids(first) + page_ids(rest) == [event["id"] for event in EVENTS]
    assert f'"data":{SPECIAL_DATA}' in first
    assert caught_up == "null"
    assert refusal(bad_cursor) == ("result", f"Error executing tool sync_events: {payloads.BAD_CURSOR}")
    assert refusal(unknown) == ("result", "Unknown tool: no_such_tool")
    assert bad_host.status == 421
    assert delete.status == 200


def test_sdk_peer_sse_mode_with_key_and_tls(cortex: Path) -> None:
    with SdkPeer(cortex, json_response=False, key="k7Qm2v9x", tls=True) as peer:
        assert peer.tls is not None
        context = peer.tls.client_context()
        keyless = send(peer.url, body=initialize_body(), headers=post_headers(), context=context)
        session = Session(peer.url, key="k7Qm2v9x", context=context)
        init = session.initialize()
        text = session.payload("sync_events")
        bad_cursor = session.call("sync_events", since="nope")
        by_ip = send(
            peer.endpoint_ip + "/mcp",
            body=initialize_body(),
            headers=post_headers("k7Qm2v9x"),
            context=context,
        )
        with pytest.raises(ssl.SSLCertVerificationError):
            send(
                peer.url,
                body=initialize_body(),
                headers=post_headers("k7Qm2v9x"),
                context=ssl.create_default_context(),
            )
        delete = session.delete()
    assert (keyless.status, keyless.body, keyless.header("Content-Type")) == (
        401,
        UNAUTHORIZED_BODY,
        "application/json",
    )
    assert init.header("Content-Type") == "text/event-stream"
    assert init.body.startswith(b"event: message\r\ndata: {")
    assert f'"data":{SPECIAL_DATA}' in text
    assert page_ids(text) == [event["id"] for event in EVENTS]
    assert refusal(bad_cursor) == ("error:-32602", payloads.BAD_CURSOR)
    assert by_ip.status == 200
    assert delete.status == 200


def test_sdk_peer_reports_a_failed_start(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="sdk peer did not start"):
        SdkPeer(tmp_path / "missing", json_response=True, server_version="x").start()
