"""serve's sync_events fast path (issue 15): rows spliced into event texts, the page built, escaped and encoded in
pieces. Each is held to the plain path it replaces (event_json of the decoded row, one json.dumps of the whole
answer) byte for byte, over arbitrary rows and real cortexes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sync_helpers import source

from noemafed.cortex.events import EVENT_COLUMNS, event_from_row, event_json, page_json, served_event_json
from noemafed.mcp import server as mcp_server
from noemafed.mcp.server import CortexReader, McpApp

ULID_CHARS = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Strings that take the spliced path and strings that must not: quotes, backslashes, Go's HTML escapes,
# control characters, U+2028, non-ASCII, lone surrogates.
plain = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
awkward = st.text(
    alphabet=st.sampled_from(
        ['"', "\\", "<", ">", "&", "\n", "\x00", "\x7f", "\u2028", "é", "😀", "\ud800", "a"]
    ),
    max_size=6,
)
field = st.one_of(plain, awkward, st.just(""))
ulid = st.text(alphabet=ULID_CHARS, min_size=26, max_size=26)
clock_key = st.one_of(ulid, plain, awkward)
clock_value = st.one_of(
    st.integers(0, 10**19 - 1), st.integers(10**19, 2**64 + 5), st.sampled_from(["007", "-1", "1.5", "true"])
)


@st.composite
def clock_texts(draw: st.DrawFn) -> Any:
    """Stored clocks: canonical ones, the same out of order or duplicated, odd spacing, junk, null and none."""
    entries = draw(st.lists(st.tuples(clock_key, clock_value), max_size=4))
    if draw(st.booleans()):
        entries.sort(key=lambda entry: entry[0].encode("utf-8", "surrogatepass"))
    if entries and draw(st.booleans()):
        entries.append(entries[0])
    separator = draw(st.sampled_from([",", ", "]))
    body = separator.join(f"{json.dumps(key)}:{value}" for key, value in entries)
    return draw(
        st.one_of(
            st.just("{" + body + "}"),
            st.sampled_from([None, "", "null", "{}", " null", "{ }", "[]", "x", '{"A":1']),
        )
    )


rows = st.tuples(
    st.one_of(ulid, field),  # id
    st.one_of(st.sampled_from(["create", "update", "tag_update"]), field),  # action
    st.one_of(ulid, field),  # trace_id
    st.one_of(st.none(), ulid, field),  # origin
    st.one_of(st.just("2025-06-01T09:00:00Z"), field),  # timestamp
    st.one_of(
        st.none(), st.just(""), st.sampled_from(['{"title":"a"}', '{"b":"<&>\\u2028"}', "null"])
    ),  # data
    clock_texts(),
    st.one_of(st.none(), ulid, field),  # cortex_id
    st.one_of(st.none(), field),  # signature
    st.one_of(st.none(), field),  # pubkey
)


@settings(max_examples=400, deadline=None)
@given(rows)
def test_a_spliced_event_is_the_encoded_one(row: tuple[Any, ...]) -> None:
    """Bug: the fast path splices a text Go would escape, a clock it would re-encode, or a field it would drop."""
    assert served_event_json(row) == event_json(event_from_row(row))


@pytest.mark.parametrize(
    ("clock", "served"),
    [
        ('{"01JR000000000000000000000A":3,"01JR000000000000000000000B":1}', "verbatim"),
        ('{"01JR000000000000000000000B":1,"01JR000000000000000000000A":3}', "sorted"),  # out of order
        ('{"01JR000000000000000000000A":3,"01JR000000000000000000000A":4}', "last"),  # duplicated key
        ('{"01JR000000000000000000000A":03}', "dropped"),  # a leading zero: Go refuses the whole clock
        ('{"01JR000000000000000000000A":18446744073709551616}', "dropped"),  # past uint64
        ("null", "dropped"),
    ],
)
def test_stored_clocks_are_served_as_go_would_encode_them(clock: str, served: str) -> None:
    """The edges of the canonical-clock check, spelled out (the property above finds them only by chance)."""
    row = ("01JR000000000000000000000E", "create", "01JR000000000000000000000T", "", "2025-06-01T09:00:00Z")
    text = served_event_json((*row, "{}", clock, "01JR000000000000000000000C", "", ""))
    expected = {
        "verbatim": clock,
        "sorted": '{"01JR000000000000000000000A":3,"01JR000000000000000000000B":1}',
        "last": '{"01JR000000000000000000000A":4}',
        "dropped": None,
    }[served]
    assert json.loads(text).get("vclock") == (None if expected is None else json.loads(expected))
    assert (expected is None) == ('"vclock"' not in text)
    if expected is not None:
        assert text.endswith(f',"vclock":{expected}}}')


def awkward_source(tmp_path: Path, count: int) -> Path:
    """A real cortex whose events carry text every escaping rule applies to (in data, origin and a clock)."""
    cortex = source(tmp_path, count=count)
    conn = sqlite3.connect(cortex / "db" / "noema.db")
    with conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM events ORDER BY id")]
        for index, event_id in enumerate(ids):
            data = json.dumps({"body": f'line "{index}"\n<tag> & \u2028 é 😀 \\'}, ensure_ascii=False)
            conn.execute("UPDATE events SET data = ? WHERE id = ?", (data, event_id))
            if index % 3 == 0:
                conn.execute("UPDATE events SET origin = ? WHERE id = ?", ("a<b>&\"c'", event_id))
            if index % 4 == 1:
                conn.execute("UPDATE events SET vclock = ? WHERE id = ?", ('{"B":1, "A":2}', event_id))
    conn.close()
    return cortex


def plain_answer(cortex: Path, since: str, limit: int, request_id: Any) -> bytes:
    """The answer as serve wrote it before the fast path: every row decoded, one page text, one json.dumps."""
    conn = sqlite3.connect(cortex / "db" / "noema.db")
    rows = conn.execute(
        f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE id > ? ORDER BY id LIMIT ?", (since, limit)
    ).fetchall()
    conn.close()
    texts: list[str] = []
    size = 2
    for row in rows:
        text = event_json(event_from_row(row))
        grown = size + len(text.encode()) + (1 if texts else 0)
        if texts and grown > mcp_server.MAX_PAGE_BYTES:
            break
        texts.append(text)
        size = grown
    result = {"content": [{"type": "text", "text": "[" + ",".join(texts) + "]"}], "isError": False}
    message = {"jsonrpc": "2.0", "id": request_id, "result": result}
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("piece_chars", "page_bytes"), [(1, 8 * 1024 * 1024), (700, 8 * 1024 * 1024), (10**6, 3000)]
)
@pytest.mark.parametrize("request_id", [7, 'x"text":""', None])
def test_a_page_in_pieces_is_the_answer_in_one_piece(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece_chars: int, page_bytes: int, request_id: Any
) -> None:
    """Bug: a piece boundary drops or doubles a comma, an escape is cut in two, the answer's shell is split at the
    wrong `"text":""`, or the 8 MiB cut moves."""
    monkeypatch.setattr(mcp_server, "PIECE_CHARS", piece_chars)
    monkeypatch.setattr(mcp_server, "MAX_PAGE_BYTES", page_bytes)
    cortex = awkward_source(tmp_path, count=12)
    app = McpApp(CortexReader(cortex))
    opened = app.post("/mcp", b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}', None, None)
    for since, limit in (("", 1000), ("", 5), ("01JR", 3), ("7ZZZZZZZZZZZZZZZZZZZZZZZZZ", 10)):
        call = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": "sync_events", "arguments": {"since": since, "limit": limit}},
        }
        if since == "01JR":  # a real cursor: the id of the 4th event
            call["params"]["arguments"]["since"] = json.loads(  # type: ignore[index]
                "".join(CortexReader(cortex).events_page("", 4)[0])
            )[3]["id"]
        reply = app.post("/mcp", json.dumps(call).encode(), opened.session, None)
        assert reply.message == ""
        assert len(reply.pieces) >= 3  # the shell's head, the page, the shell's tail
        arguments = call["params"]["arguments"]  # type: ignore[index]
        expected = plain_answer(cortex, arguments["since"], limit, request_id)
        assert b"".join(reply.encoded()) == expected


def test_page_is_the_page_json_of_its_rows(tmp_path: Path) -> None:
    """The pieces of a page join to page_json of the same rows (the text a noema peer would serve)."""
    cortex = awkward_source(tmp_path, count=5)
    pieces, count = CortexReader(cortex).events_page("", 1000)
    conn = sqlite3.connect(cortex / "db" / "noema.db")
    rows = conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY id").fetchall()
    conn.close()
    assert count == len(rows)
    assert "".join(pieces) == page_json(event_from_row(row) for row in rows)


def test_the_page_cap_counts_bytes_not_characters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug: the cap compared characters, so a page of CJK text went out at three times MAX_PAGE_BYTES, past the
    16 MiB an rmcp client takes in one SSE event."""
    cortex = source(tmp_path, count=6)
    conn = sqlite3.connect(cortex / "db" / "noema.db")
    with conn:
        conn.execute(
            "UPDATE events SET data = ?", (json.dumps({"body": "\u65e5" * 300}, ensure_ascii=False),)
        )
    conn.close()
    pieces, count = CortexReader(cortex).events_page("", 1000)
    one = len(json.loads("".join(pieces))[0]["data"]["body"].encode()) + 300  # an event's bytes, roughly
    monkeypatch.setattr(mcp_server, "MAX_PAGE_BYTES", 3 * one)
    pieces, count = CortexReader(cortex).events_page("", 1000)
    page = "".join(pieces)
    assert 1 <= count < 6
    assert len(page.encode()) <= 3 * one
    assert len(page) < 3 * one / 2  # by characters it would have taken far more events
