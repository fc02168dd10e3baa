"""What `serve` answers, byte for byte, through its JSON-RPC side (`McpApp`) over a real cortex: the usage rows,
the identity with key and rank, pages cut at the byte cap, sessions, ids and every refusal. Written for the
mutants of `mcp/server.py` that test_serve.py let through (docs/testing.md); the HTTP side is test_serve.py's."""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import db
from sync_helpers import events, source

from noemafed.cortex.manifest import read_manifest
from noemafed.mcp import server as mcp_server
from noemafed.mcp.server import CortexReader, McpApp, Reply, Sessions

OTHER_ID = "01JQ7X2B9C4D5E6F7G8H9JKMNP"


@pytest.fixture
def cortex(tmp_path: Path) -> Path:
    return source(tmp_path, count=3)


class Client:
    """One session on an app, as a peer would hold it; `tool` returns the tool's text and whether it refused."""

    def __init__(self, app: McpApp, endpoint: str = "/mcp") -> None:
        self.app = app
        self.endpoint = endpoint
        self.next_id = 1
        opened = self.post({"method": "initialize", "params": {}})
        self.session = opened.session

    def post(self, message: dict[str, Any], session: str | None = None) -> Reply:
        body = {"jsonrpc": "2.0", "id": self.next_id, **message}
        self.next_id += 1
        return self.app.post(self.endpoint, json.dumps(body).encode(), session, None)

    def tool(self, name: str, **arguments: Any) -> tuple[str, bool]:
        reply = self.post(
            {"method": "tools/call", "params": {"name": name, "arguments": arguments}}, self.session
        )
        assert reply.status == 200, reply
        result = json.loads(b"".join(reply.encoded()))["result"]
        return result["content"][0]["text"], result["isError"]


# ---- sync_read_signal ---------------------------------------------------------------------------------


def add_usage(cortex: Path, rows: list[tuple[Any, ...]]) -> None:
    conn = db(cortex)
    conn.execute("PRAGMA foreign_keys=OFF")  # usage rows without trace rows are enough here
    with conn:
        conn.executemany(
            "INSERT INTO trace_usage(trace_id, peer_cortex_id, read_count, modify_count, last_read_at, updated_at,"
            " search_hit_count) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    conn.close()


def test_usage_rows_are_this_cortexs_own_after_the_cursor_in_order_byte_for_byte(cortex: Path) -> None:
    own = read_manifest(cortex).id
    add_usage(
        cortex,
        [
            ("t-b", own, 3, 1, "2026-08-15T03:10:00Z", "2026-08-15T03:10:00Z", 2),
            ("t-a", own, 1, 0, None, "2026-08-15T03:00:00Z", 0),
            ("t-d", own, 0, 4, "", "2026-08-15T03:20:00Z", 0),
            ("t-c", OTHER_ID, 9, 9, "2026-08-15T04:00:00Z", "2026-08-15T04:00:00Z", 9),
        ],
    )
    client = Client(McpApp(CortexReader(cortex)))
    # Go's field order; search_hit_count and last_read_at left out when zero or empty (omitempty).
    a = f'{{"trace_id":"t-a","peer_cortex_id":"{own}","read_count":1,"modify_count":0,"updated_at":"2026-08-15T03:00:00Z"}}'
    b = (
        f'{{"trace_id":"t-b","peer_cortex_id":"{own}","read_count":3,"modify_count":1,"search_hit_count":2,'
        '"last_read_at":"2026-08-15T03:10:00Z","updated_at":"2026-08-15T03:10:00Z"}'
    )
    d = f'{{"trace_id":"t-d","peer_cortex_id":"{own}","read_count":0,"modify_count":4,"updated_at":"2026-08-15T03:20:00Z"}}'
    assert client.tool("sync_read_signal") == (f"[{a},{b},{d}]", False)
    assert client.tool("sync_read_signal", since="2026-08-15T03:00:00Z") == (f"[{b},{d}]", False)
    assert client.tool("sync_read_signal", limit=2) == (f"[{a},{b}]", False)
    assert client.tool("sync_read_signal", since="2026-08-15T03:20:00Z") == ("[]", False)
    reply = client.post(
        {"method": "tools/call", "params": {"name": "sync_read_signal", "arguments": {"limit": 1}}},
        client.session,
    )
    assert reply.note == "sync_read_signal 1 rows"


def test_usage_rows_are_served_in_publish_mode_and_refused_in_subscribe_mode(cortex: Path) -> None:
    from conftest import run_cli

    assert run_cli(["--cortex", str(cortex), "set-mode", "publish"]).exit_code == 0
    client = Client(McpApp(CortexReader(cortex)))
    assert client.tool("sync_read_signal") == ("[]", False)
    assert run_cli(["--cortex", str(cortex), "set-mode", "subscribe"]).exit_code == 0
    assert client.tool("sync_read_signal") == (
        "this cortex is in subscribe mode and does not serve read signal",
        True,
    )
    assert client.tool("sync_events") == ("this cortex is in subscribe mode and does not serve events", True)


def test_events_after_the_cursor_with_the_note_that_counts_them(cortex: Path) -> None:
    ids = [row[0] for row in events(cortex)]
    client = Client(McpApp(CortexReader(cortex)))
    text, refused = client.tool("sync_events", since=ids[0], limit=1)
    assert (refused, [event["id"] for event in json.loads(text)]) == (False, ids[1:2])
    reply = client.post(
        {"method": "tools/call", "params": {"name": "sync_events", "arguments": {"since": ids[-1]}}},
        client.session,
    )
    assert (json.loads(b"".join(reply.encoded()))["result"]["content"][0]["text"], reply.note) == (
        "[]",
        "sync_events 0 events",
    )


# ---- cortex_identity ------------------------------------------------------------------------------------

A_KEY = "ed25519:0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc="


def test_the_identity_advertises_the_key_and_the_rank_when_there_are_some(cortex: Path) -> None:
    manifest = cortex / "cortex.md"
    own = read_manifest(cortex).id
    client = Client(McpApp(CortexReader(cortex)))
    plain = f'{{"id":"{own}","name":"source","version":2,"mode":"sync"}}'
    assert client.tool("cortex_identity") == (plain, False)
    conn = db(cortex)
    with conn:
        conn.execute(
            "INSERT INTO federation_state(key, value) VALUES ('consolidation:rank', ?)",
            (f'{{"cortex_id":"{OTHER_ID}","rank":7,"observed_at":"2026-08-15T03:00:00Z"}}',),
        )
    conn.close()
    text = manifest.read_text()
    manifest.write_text(text.replace("version: 2\n", f"version: 2\nsigning:\n    public_key: {A_KEY}\n"))
    # The rank goes out under this cortex's own id, whatever id the stored bid names.
    assert client.tool("cortex_identity") == (
        f'{{"id":"{own}","name":"source","version":2,"mode":"sync","pubkey":"{A_KEY}",'
        f'"rank":{{"cortex_id":"{own}","rank":7,"observed_at":"2026-08-15T03:00:00Z"}}}}',
        False,
    )


def test_a_rank_never_observed_is_not_advertised(cortex: Path) -> None:
    conn = db(cortex)
    with conn:
        conn.execute(
            "INSERT INTO federation_state(key, value) VALUES ('consolidation:rank', ?)",
            (f'{{"cortex_id":"{OTHER_ID}","rank":7,"observed_at":""}}',),
        )
    conn.close()
    text, _ = Client(McpApp(CortexReader(cortex))).tool("cortex_identity")
    assert "rank" not in json.loads(text)


def test_the_manifest_is_read_again_only_when_it_changes(cortex: Path) -> None:
    reader = CortexReader(cortex)
    first = reader.manifest()
    assert reader.manifest() is first  # unchanged: the cached one
    manifest = cortex / "cortex.md"
    manifest.write_text(manifest.read_text().replace("name: source", "name: renamed"))
    assert reader.manifest().name == "renamed"


# ---- sessions ---------------------------------------------------------------------------------------------


def test_sessions_are_bounded_and_the_least_recently_used_goes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mcp_server, "MAX_SESSIONS", 3)
    sessions = Sessions()
    a, b, c = (sessions.create("/mcp") for _ in range(3))
    assert sessions.touch(a, "/mcp")  # a is now the most recently used
    d = sessions.create("/mcp")
    assert len(sessions) == 3
    assert [sessions.touch(s, "/mcp") for s in (a, b, c, d)] == [True, False, True, True]


def test_a_session_idle_too_long_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mcp_server, "SESSION_IDLE_SECONDS", 0.2)
    sessions = Sessions()
    kept, idle = sessions.create("/mcp"), sessions.create("/mcp")
    for _ in range(3):  # each use starts its idle time again
        time.sleep(0.1)
        assert sessions.touch(kept, "/mcp")
    assert not sessions.touch(idle, "/mcp")
    assert len(sessions) == 1  # an expired session is dropped when it is found, not kept
    sessions.end(kept)
    assert len(sessions) == 0


def test_a_session_used_on_another_endpoint_ends() -> None:
    sessions = Sessions()
    session = sessions.create("/mcp")
    assert not sessions.touch(session, "/mcp/federation")
    assert not sessions.touch(session, "/mcp")


# ---- the page cap -----------------------------------------------------------------------------------------


def page_under_cap(cortex: Path, cap: int, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(mcp_server, "MAX_PAGE_BYTES", cap)
    pieces, count = CortexReader(cortex).events_page("", 1000)
    text = "".join(pieces)
    assert count == len(json.loads(text))
    return text


def test_a_page_stops_at_the_first_event_that_would_take_it_past_the_cap(
    cortex: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = CortexReader(cortex)
    count = len(events(cortex))
    pages = ["".join(reader.events_page("", limit)[0]) for limit in range(1, count + 1)]  # 1 event, 2, ...
    for shorter, page in itertools.pairwise(pages):
        assert page_under_cap(cortex, len(page), monkeypatch) == page  # exactly the cap: it fits
        assert page_under_cap(cortex, len(page) - 1, monkeypatch) == shorter
    # A first event larger than the cap still goes alone: a reader must always be able to move on.
    assert page_under_cap(cortex, 10, monkeypatch) == pages[0]


# ---- requests and their refusals ------------------------------------------------------------------------


def error_reply(request_id: int, code: int, text: str) -> Reply:
    message = f'{{"jsonrpc": "2.0", "id": {request_id}, "error": {{"code": {code}, "message": "{text}"}}}}'
    return Reply(200, message, note=f"error {code}")


@pytest.mark.parametrize("params", [{"name": 5, "arguments": {}}, {"name": "sync_events", "arguments": [1]}])
def test_tools_call_params_of_the_wrong_shape_are_invalid_params(
    cortex: Path, params: dict[str, Any]
) -> None:
    client = Client(McpApp(CortexReader(cortex)))
    reply = client.post({"method": "tools/call", "params": params}, client.session)
    assert reply == error_reply(2, -32602, "invalid tools/call params")


def test_a_list_of_tools_and_a_ping_are_logged_by_their_method(cortex: Path) -> None:
    client = Client(McpApp(CortexReader(cortex)))
    assert client.post({"method": "tools/list"}, client.session).note == "tools/list"
    assert client.post({"method": "ping"}, client.session).note == "ping"


def test_a_null_since_is_no_cursor_and_any_other_non_text_is_refused(cortex: Path) -> None:
    own = read_manifest(cortex).id
    add_usage(cortex, [("t-a", own, 1, 0, None, "2026-08-15T03:00:00Z", 0)])
    client = Client(McpApp(CortexReader(cortex)))
    assert client.tool("sync_events", since=None) == client.tool("sync_events")
    assert len(json.loads(client.tool("sync_events", since=None)[0])) == len(events(cortex))
    assert json.loads(client.tool("sync_read_signal", since=None)[0])[0]["trace_id"] == "t-a"
    bad_since = ("since must be a valid ULID cursor (26-char Crockford base32)", True)
    for tool in ("sync_events", "sync_read_signal"):
        assert client.tool(tool, since=5) == bad_since
        assert client.tool(tool, since=["x"]) == bad_since


def test_one_database_connection_per_worker_thread(cortex: Path) -> None:
    """Opened on a thread's first request and kept for the next ones: not one per request."""
    reader = CortexReader(cortex)
    mine = reader.conn()
    assert reader.conn() is mine
    theirs: list[Any] = []
    worker = threading.Thread(target=lambda: theirs.extend([reader.conn(), reader.conn()]))
    worker.start()
    worker.join()
    assert theirs[0] is theirs[1]
    assert theirs[0] is not mine


@pytest.mark.parametrize(
    "message",
    [
        [],
        {"jsonrpc": "1.0", "id": 1, "method": "ping"},
        {"id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": 1, "method": 5},
        {"jsonrpc": "2.0", "id": 1},
    ],
)
def test_a_message_that_is_not_a_jsonrpc_request_is_an_invalid_request(cortex: Path, message: Any) -> None:
    reply = McpApp(CortexReader(cortex)).post("/mcp", json.dumps(message).encode(), None, None)
    assert reply == Reply(
        400,
        '{"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": '
        '"Invalid Request (batches are not supported)"}}',
        note="error -32600",
    )


def test_results_go_out_in_utf8_not_escaped(cortex: Path) -> None:
    """Compact UTF-8, as Go's encoder writes them: a peer's byte budget counts these bytes."""
    own = read_manifest(cortex).id
    add_usage(cortex, [("t-\u00e9\u65e5", own, 1, 0, None, "2026-08-15T03:00:00Z", 0)])
    client = Client(McpApp(CortexReader(cortex)))
    reply = client.post(
        {"method": "tools/call", "params": {"name": "sync_read_signal", "arguments": {}}}, client.session
    )
    assert '\\"trace_id\\":\\"t-\u00e9\u65e5\\"' in reply.message


def test_a_database_failure_is_an_internal_error_with_its_text(cortex: Path) -> None:
    """A real SQLite failure under a tool call (the events table gone): JSON-RPC -32603 with SQLite's words, HTTP
    200 as for any JSON-RPC error, and the session stays usable."""
    client = Client(McpApp(CortexReader(cortex)))
    conn = db(cortex)
    conn.execute("DROP TABLE events")
    conn.close()
    reply = client.post(
        {"method": "tools/call", "params": {"name": "sync_events", "arguments": {}}}, client.session
    )
    assert reply == error_reply(2, -32603, "no such table: events")
    assert client.post({"method": "ping"}, client.session).status == 200
