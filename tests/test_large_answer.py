"""A large answer read with its page as UTF-8 bytes (mcp/large_answer.py) reads exactly as the whole answer decoded
and parsed: the same message, the same page text (scrubbed as the client scrubs it), the same errors.

LARGE_BODY_BYTES is set below every answer here, so small answers take the large path; nothing else is changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import make_cortex, run_cli
from hypothesis import example, given, settings
from hypothesis import strategies as st
from peers import hostile_peer
from peers.stdlib_peer import StdlibPeer
from sync_helpers import comparable_trace_files, events, seed, source, target_with

from noemafed.cortex import events as events_module
from noemafed.cortex.events import parse_page, read_page
from noemafed.mcp import client
from noemafed.mcp import large_answer as large_module
from noemafed.mcp.client import McpSession, PeerTarget, ToolRefusal, WireError
from noemafed.mcp.large_answer import read_large_answer
from noemafed.mcp.sse import SseEvent, SseParser
from noemafed.text.sanitize import scrub

_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "/": "\\/",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}

# Page text: anything a str can hold, lone surrogates included, with the characters escapes are made of.
_TEXT = st.text(
    st.characters(blacklist_categories=())
    | st.sampled_from(['"', "\\", "/", "\n", "\x00", "\x1f", "\x7f", "é", "\u2014", "\u2028", "😀"])
    | st.sampled_from(["\ud83d", "\ude00", "\udbff", "\udc00"]),
    max_size=12,
)


@st.composite
def _json_string(draw: st.DrawFn, text: str) -> str:
    """`text` as a JSON string token, each character written raw or escaped in any way JSON allows."""
    out = ['"']
    for char in text:
        how = draw(st.sampled_from(["raw", "short", "u", "U"]))
        code = ord(char)
        if how == "short" and char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif how in ("u", "U") or char in '"\\' or code < 0x20:
            units = [code] if code < 0x10000 else [0xD800 + ((code - 0x10000) >> 10), 0xDC00 + (code & 0x3FF)]
            out.extend(f"\\u{unit:04x}" if how != "U" else f"\\u{unit:04X}" for unit in units)
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


@st.composite
def _answer(draw: st.DrawFn) -> bytes:
    """A tool answer as some peer might write it, then maybe edited, in any encoding json.loads reads."""
    page = draw(_TEXT)
    text = draw(_json_string(page))
    items = [f'{{"type":"text","text":{text}}}']
    shape = draw(st.sampled_from(["plain", "two items", "other first", "duplicate text", "error", "dumps"]))
    if shape == "two items":
        items.append('{"type":"text","text":"second"}')
    elif shape == "other first":
        items.insert(0, '{"type":"image","text":"not this"}')
    elif shape == "duplicate text":
        items[0] = f'{{"type":"text","text":{text},"text":"later"}}'
    is_error = draw(st.sampled_from(["false", "true"]))
    space = draw(st.sampled_from(["", " ", "\n\t"]))
    result = f'{{"content":{space}[{",".join(items)}],{space}"isError":{is_error}}}'
    answer = f'{{"jsonrpc":"2.0","id":{space}1,"result":{result}}}'
    if shape == "error":
        answer = f'{{"jsonrpc":"2.0","id":1,"error":{{"code":-1,"message":{text}}}}}'
    elif shape == "dumps":
        envelope = {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": page}]}}
        answer = json.dumps(
            envelope, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 1]))
        )
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["utf-8-sig", "utf-16", "utf-16-le", "utf-32-be"]))
    body = answer.encode(encoding, "surrogatepass")
    edit = draw(st.sampled_from(["none"] * 4 + ["truncate", "insert", "delete"]))
    if edit != "none" and body:
        at = draw(st.integers(min_value=0, max_value=len(body) - 1))
        if edit == "truncate":
            body = body[:at]
        elif edit == "insert":
            byte = draw(
                st.sampled_from([b"\\", b'"', b"\xff", b"\x80", b"\xc3", b"\xed\xa0\x80", b"\x00", b"x"])
            )
            body = body[:at] + byte + body[at:]
        else:
            body = body[:at] + body[at + 1 :]
    return body


def _outcome(message: Any) -> str:
    """What the client makes of a message: its repr, with every result text as call_tool returns it."""
    result = message.get("result") if isinstance(message, dict) else None
    content = result.get("content") if isinstance(result, dict) else None
    for item in content if isinstance(content, list) else []:
        if isinstance(item, dict) and isinstance(item.get("text"), (str, bytearray)):
            text = item["text"]
            item["text"] = text.decode("utf-8") if isinstance(text, bytearray) else scrub(text)
    return repr(message)


def _parsed(parse: Any, body: Any) -> tuple[str, str]:
    try:
        return ("message", _outcome(parse(body)))
    except WireError as exc:
        return ("error", str(exc))


def _parse_as_large(body: bytes, step: int = 1024 * 1024) -> Any:
    """client._parse_body with every body large, in steps of `step` bytes (small ones cut escapes and
    characters everywhere)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(client, "LARGE_BODY_BYTES", -1)
        patch.setattr(large_module, "_STEP", step)
        buffer = bytearray(body)
        try:
            return client._parse_body(buffer, "x")
        finally:
            assert buffer == bytearray()  # emptied whatever the outcome: the caller's buffer is freed too


@settings(max_examples=1500, deadline=None)
@given(_answer())
@example(b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"a\\ud83d\\ude00b"}]}}')
@example(b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"\\ud83d\\u0041\\ude00"}]}}')
@example(b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"\\ud83d\\u00zz"}]}}')
@example(b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"\xed\xa0\xbd\xed\xb8\x80"}]}}')
@example(b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"\xc3\\u00e9"}]}}')
@example(b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"\\u00e9\\u2014\\\\u2014"}]}}')
@example(b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"x\\\\"}]}}')
@example(b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"\x01"}]}}')
@example(b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"\\x"}]}}')
@example(b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"\\u12"}]}')
@example(b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"a"}]}} x')
def test_a_large_answer_reads_as_the_whole_answer_parsed(body: bytes) -> None:
    expected = _parsed(lambda raw: client._parse_json(raw, "x"), body)
    assert _as_large_or_refused(_parsed(_parse_as_large, body), body) == expected


def _as_large_or_refused(got: tuple[str, str], body: bytes) -> Any:
    """`got`, or, when it is the refusal of a large non-ASCII answer the byte path cannot read (which the usual
    path would have decoded whole), a value equal to anything: the rule allows that refusal, of nothing else."""
    if got == ("error", client.LARGE_ANSWER_UNREADABLE.format(what="x", size=len(body))):
        assert not body.isascii()  # ASCII decodes at a byte a character: never refused
        return _REFUSED
    return got


_REFUSED: Any = type("_Refused", (), {"__eq__": lambda self, other: True})()


@settings(max_examples=800, deadline=None)
@given(_answer(), st.integers(min_value=1, max_value=9))
@example(b"[1,\xc3x]", 3)  # a character cut by a step, bad in the next one
@example(b"[1,\xc3", 3)  # cut at the very end
def test_a_large_answer_read_in_small_steps_reads_the_same(body: bytes, step: int) -> None:
    expected = _parsed(lambda raw: client._parse_json(raw, "x"), body)
    assert _as_large_or_refused(_parsed(lambda raw: _parse_as_large(raw, step), body), body) == expected


def _sse_message(data: str | bytearray) -> tuple[str, str]:
    """What the client makes of an SSE event's data, handed over as the parser's bytes or as its str."""
    return _parsed(lambda raw: client._event_message(raw, "x"), data)


@settings(max_examples=800, deadline=None)
@given(_answer())
@example(b"\xef\xbb\xbf{}")  # a BOM: json.loads reads the data's bytes then
@example(b"   ")  # blank: skipped, as rmcp's priming event
@example(b"\x1c \xe3\x80\x80\xc2\x85")  # blank too, as str.strip() sees it: Unicode spaces
@example(b"\x1c{]")  # not JSON after an ASCII space str.strip() removes
@example(b"{]\xff")  # not JSON, and not UTF-8: the replacement character is what is not JSON
@example(b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"\xed\xa0\x80"}]}}')
def test_large_sse_data_reads_as_its_decoding_with_replacement(body: bytes) -> None:
    """The SSE parser decodes with replacement; bytes it left undecoded must read the same."""
    expected = _sse_message(body.decode("utf-8", "replace"))
    assert _as_large_or_refused(_sse_message(bytearray(body)), body) == expected


def test_a_valid_answer_takes_the_byte_path_and_empties_the_body() -> None:
    """The equivalence above would also hold if the large path always gave up: here it must not."""
    page = '[{"id":"x","data":{"b":"\u2014 😀 \\"q\\" \\\\n"}}]'
    for ensure_ascii in (False, True):
        body = bytearray(
            json.dumps(
                {"id": 1, "result": {"content": [{"type": "text", "text": page}]}}, ensure_ascii=ensure_ascii
            ).encode()
        )
        message = read_large_answer(body, "surrogatepass")
        assert message["result"]["content"][0]["text"] == bytearray(page.encode())
        assert body == bytearray()


def test_an_answer_over_many_steps_is_unescaped_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps of 7 bytes cut escapes and characters everywhere; the page comes out whole."""
    monkeypatch.setattr(large_module, "_STEP", 7)
    page = "".join(f'{{"n":{n},"t":"é\u2014😀\\u00e9\\ud83d\\ude00\\n\\\\"}}' for n in range(50))
    for ensure_ascii in (False, True):
        body = json.dumps(
            {"result": {"content": [{"type": "text", "text": page}]}}, ensure_ascii=ensure_ascii
        )
        message = read_large_answer(bytearray(body.encode()), "surrogatepass")
        assert message["result"]["content"][0]["text"] == bytearray(page.encode())


@pytest.mark.parametrize("flavor", ["go", "rust"])
def test_a_page_from_a_real_peer_comes_as_bytes_that_read_as_its_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flavor: str
) -> None:
    """Over HTTP, as JSON (Go) and as SSE (Rust): the page's bytes, and the events read from them."""
    src = source(tmp_path, count=30)
    arguments = {"limit": 1000}
    with StdlibPeer(src, flavor) as peer:
        session = McpSession(PeerTarget("p", peer.endpoint))
        session.initialize()
        expected = session.call_page_tool("sync_events", arguments, client.SYNC_EVENTS_BUDGET)
        monkeypatch.setattr(client, "LARGE_BODY_BYTES", 1000)
        got = session.call_page_tool("sync_events", arguments, client.SYNC_EVENTS_BUDGET)
        text = session.call_tool("sync_events", arguments, client.SYNC_EVENTS_BUDGET)
    assert isinstance(expected, str)
    assert isinstance(got, bytearray)
    assert got.decode("utf-8") == expected == text
    assert read_page(got).events() == parse_page(expected)


def _refusing(text: str) -> hostile_peer.Answer:
    def change(message: Any) -> Any:
        message["result"] = {"content": [{"type": "text", "text": text}], "isError": True}
        return json.dumps(message, ensure_ascii=False).encode("utf-8", "surrogatepass")

    return hostile_peer.bent(change)


def test_a_large_refusal_is_its_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "no — 😀 \ud800 " * 20
    monkeypatch.setattr(client, "LARGE_BODY_BYTES", 100)
    with (
        StdlibPeer(source(tmp_path, count=2)) as backend,
        hostile_peer.HostilePeer(backend, "sync_events", _refusing(text)) as peer,
    ):
        session = McpSession(PeerTarget("p", peer.endpoint))
        session.initialize()
        with pytest.raises(ToolRefusal) as refused:
            session.call_page_tool("sync_events", {"limit": 10})
    assert str(refused.value) == scrub(text)


def test_a_body_just_over_the_limit_gives_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"\xc3\xa9"}]}}'
    monkeypatch.setattr(client, "LARGE_BODY_BYTES", len(body))
    assert client._parse_body(bytearray(body), "x")["result"]["content"][0]["text"] == "\xe9"
    monkeypatch.setattr(client, "LARGE_BODY_BYTES", len(body) - 1)
    assert client._parse_body(bytearray(body), "x")["result"]["content"][0]["text"] == bytearray(b"\xc3\xa9")


def test_a_large_data_line_is_left_as_bytes_that_decode_as_the_line() -> None:
    value = b'{"a":"\xc3\xa9\xff"}'
    stream = b"event: message\ndata: " + value + b"\ndata: two\n\ndata: " + value + b"\n\n"
    small, large = SseParser(), SseParser(large_data=5)
    events = [*large.feed(stream), *large.close()]
    assert [type(event.data) for event in events] == [bytearray, bytearray]
    decoded = [event._replace(data=bytes(event.data).decode("utf-8", "replace")) for event in events]
    assert decoded == [*small.feed(stream), *small.close()]


_SSE_LINE = st.one_of(
    st.builds(lambda value: b"data: " + value, st.binary(max_size=12)),
    st.builds(lambda value: b"data:" + value, st.binary(max_size=12)),
    st.sampled_from([b"", b"", b":keep-alive", b"event: message", b"id: 7", b"data", b"retry: 3"]),
).filter(lambda line: b"\r" not in line and b"\n" not in line)


@settings(max_examples=500, deadline=None)
@given(
    lines=st.lists(_SSE_LINE, max_size=10),
    newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
    large_data=st.integers(min_value=0, max_value=8),
)
def test_data_left_as_bytes_decodes_to_the_events_however_chunked(
    lines: list[bytes], newline: bytes, cuts: list[int], large_data: int
) -> None:
    """Data lines over `large_data` bytes stay bytes; decoded with replacement, the events are the usual ones."""
    body = b"".join(line + newline for line in lines)
    usual = SseParser()
    expected = [*usual.feed(body), *usual.close()]
    parser = SseParser(large_data=large_data)
    got: list[Any] = []
    start = 0
    for cut in sorted({c for c in cuts if c < len(body)}):
        got += parser.feed(body[start:cut])
        start = cut
    got += [*parser.feed(body[start:]), *parser.close()]
    decoded = [
        event._replace(data=event.data.decode("utf-8", "replace"))
        if isinstance(event.data, bytearray)
        else event
        for event in got
    ]
    assert decoded == expected


def test_only_data_longer_than_the_limit_stays_bytes() -> None:
    parser = SseParser(large_data=5)
    events = [*parser.feed(b"data: 12345\n\ndata: 123456\n\nevent: 1234567\ndata: x\n\n"), *parser.close()]
    assert events == [SseEvent("12345"), SseEvent(bytearray(b"123456")), SseEvent("x", "1234567")]


@pytest.mark.parametrize("flavor", ["go", "rust"])
def test_a_sync_of_pages_read_as_bytes_stores_what_a_normal_sync_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flavor: str
) -> None:
    """The whole way through `sync --once`: client, page in bytes, replay; traces titled with wide characters."""
    src = make_cortex(tmp_path, "source")
    seed(src, 30, prefix="\u2014\U0001f600 é")
    read_as_bytes: list[int] = []
    utf8_page = events_module._read_utf8_page

    def counted(page: bytes | bytearray) -> events_module.Page:
        read_as_bytes.append(len(page))
        return utf8_page(page)

    with StdlibPeer(src, flavor) as peer:
        normal = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}], name="normal")
        assert run_cli(["--cortex", str(normal), "sync", "--once"]).exit_code == 0
        monkeypatch.setattr(client, "LARGE_BODY_BYTES", 1000)
        monkeypatch.setattr(events_module, "LARGE_PAGE_CHARS", 1000)
        monkeypatch.setattr(events_module, "_read_utf8_page", counted)
        large = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}], name="large")
        assert run_cli(["--cortex", str(large), "sync", "--once"]).exit_code == 0
    assert read_as_bytes  # the page did come as bytes
    assert events(large) == events(normal) == events(src)
    assert comparable_trace_files(large) == comparable_trace_files(normal)
    assert any("\U0001f600" in text for text in comparable_trace_files(large).values())


@pytest.mark.parametrize(
    ("encoding", "text", "refused"),
    [
        ("utf-16", "\u2014 page", True),  # Go refuses UTF-16 outright; decoded whole it would be 4x its size
        ("utf-8-sig", "\U0001f600 page", True),  # a byte-order mark: the same
        ("utf-16-le", "ascii page", False),  # no BOM, ASCII: decodes at a byte a character, read as before
        ("utf-8", "\u2014 page", False),  # the usual layout: read as bytes
    ],
)
def test_a_large_non_ascii_answer_the_byte_path_cannot_read_is_refused(
    monkeypatch: pytest.MonkeyPatch, encoding: str, text: str, refused: bool
) -> None:
    """Bug: a hostile peer sent its 100 MiB page as UTF-16 (or behind a BOM) to take the usual path, which holds
    the answer as a str four times (an emoji: eight times) its UTF-8 size, twice."""
    monkeypatch.setattr(client, "LARGE_BODY_BYTES", 10)
    answer = {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": text}]}}
    body = bytearray(json.dumps(answer, ensure_ascii=False).encode(encoding))
    size = len(body)
    if refused:
        with pytest.raises(WireError) as caught:
            client._parse_body(body, "sync_events")
        assert str(caught.value) == client.LARGE_ANSWER_UNREADABLE.format(what="sync_events", size=size)
    else:
        message = client._parse_body(body, "sync_events")
        page = message["result"]["content"][0]["text"]
        assert (page.decode() if isinstance(page, bytearray) else page) == text


def test_large_sse_data_the_byte_path_cannot_read_is_refused_if_not_ascii() -> None:
    """The same for an SSE event's data left as bytes: invalid UTF-8 beside wide text would be decoded whole."""
    answer = {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "\U0001f600"}]}}
    data = bytearray(json.dumps(answer, ensure_ascii=False).encode() + b" \xff")
    size = len(data)
    with pytest.raises(WireError) as caught:
        client._event_message(data, "sync_events")
    assert str(caught.value) == client.LARGE_ANSWER_UNREADABLE.format(what="sync_events", size=size)
