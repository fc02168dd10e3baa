"""SSE framing: Go never, Rust always (LF, priming, keep-alives), the Python SDK with CRLF; any chunking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from noemafed.mcp.sse import SseEvent, SseParser

RUST = b'data: \nid: 0\nretry: 3000\n\n:\n\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\nid: 1/0\n\n'
SDK = b'event: message\r\ndata: {"jsonrpc":"2.0","id":2,"result":{}}\r\n\r\n'


def parse_all(body: bytes) -> list[SseEvent]:
    """A whole stream in one feed: the reference the chunked feeds must agree with."""
    parser = SseParser()
    return [*parser.feed(body), *parser.close()]


def test_rust_framing_with_priming_and_keepalive() -> None:
    events = parse_all(RUST)
    # The priming event has an empty data line: it dispatches with data "" and callers skip it.
    assert events == [
        SseEvent("", "message", "0"),
        SseEvent('{"jsonrpc":"2.0","id":1,"result":{}}', "message", "1/0"),
    ]


def test_sdk_crlf_framing() -> None:
    assert parse_all(SDK) == [SseEvent('{"jsonrpc":"2.0","id":2,"result":{}}', "message", None)]


def test_multi_line_data_joins_with_newline_and_cr_only_lines() -> None:
    assert parse_all(b"data: a\rdata:b\r\rdata: c\n\n") == [SseEvent("a\nb"), SseEvent("c")]


def test_field_without_space_and_unknown_fields() -> None:
    assert parse_all(b"data:x\nfoo: bar\nretry: 5\n\n") == [SseEvent("x")]


def test_unterminated_event_is_dropped() -> None:
    assert parse_all(b"data: complete\n\ndata: partial") == [SseEvent("complete")]


def _frame(payloads: list[str], newline: bytes) -> bytes:
    out = b""
    for payload in payloads:
        for line in payload.split("\n"):
            out += b"data: " + line.encode() + newline
        out += newline + b":keep-alive" + newline + newline
    return out


PAYLOAD = st.text(
    alphabet=st.characters(blacklist_characters="\r\x00", blacklist_categories=("Cs",)), min_size=1
)


@given(
    payloads=st.lists(PAYLOAD, min_size=1, max_size=5),
    newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_any_chunking_gives_the_same_events(payloads: list[str], newline: bytes, cuts: list[int]) -> None:
    body = _frame(payloads, newline)
    whole = parse_all(body)
    parser = SseParser()
    got: list[SseEvent] = []
    start = 0
    for cut in sorted({c for c in cuts if c < len(body)}):
        got += parser.feed(body[start:cut])
        start = cut
    got += parser.feed(body[start:])
    got += parser.close()
    assert got == whole
    # A payload with LF inside travels as several data lines and comes back joined with LF.
    assert [event.data for event in whole] == payloads


# Tests written for mutants that survived tests/test_sse.py (docs/testing.md).


def feed_chunks(*chunks: bytes) -> list[SseEvent]:
    parser = SseParser()
    events: list[SseEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return [*events, *parser.close()]


def test_invalid_utf8_becomes_the_replacement_character() -> None:
    """A peer's stray byte decodes to U+FFFD, as Go's and the WHATWG decoders do; it never raises."""
    assert parse_all(b"data: a\xffb\n\n") == [SseEvent("a\ufffdb")]
    # Split inside a multi-byte character: the decoder holds the first byte for the next chunk.
    assert feed_chunks("data: é\n".encode()[:7], "data: é\n\n".encode()[7:]) == [SseEvent("é")]


def test_crlf_inside_an_event_is_one_line_end() -> None:
    assert parse_all(b"data: a\r\ndata: b\r\n\r\n") == [SseEvent("a\nb")]


@pytest.mark.parametrize(
    "chunks",
    [
        (b"data: a\r", b"\ndata: b\r\n\r\n"),  # CR | LF: the pair is split across chunks
        (b"data: a\r\n", b"data: b\r\n\r\n"),  # CRLF at the very end of a chunk
        (b"data: a\r", b"\n", b"data: b\r", b"\n\r", b"\n"),  # every pair split
    ],
)
def test_a_crlf_split_across_chunks_is_one_line_end(chunks: tuple[bytes, ...]) -> None:
    assert feed_chunks(*chunks) == [SseEvent("a\nb")]


def test_a_held_cr_pairs_with_one_lf_only() -> None:
    """After a CR held back at the end of a chunk, only the next chunk's first LF is eaten, not later ones."""
    assert feed_chunks(b"data: a\r", b"\n", b"\n", b"data: b\n\n") == [SseEvent("a"), SseEvent("b")]


def test_the_event_field_names_the_event() -> None:
    body = b"event: endpoint\ndata: x\n\ndata: y\n\n"
    assert parse_all(body) == [SseEvent("x", "endpoint"), SseEvent("y", "message")]


def test_an_id_with_nul_is_ignored() -> None:
    assert parse_all(b"id: 7\ndata: x\n\nid: a\x00b\ndata: y\n\n") == [
        SseEvent("x", id="7"),
        SseEvent("y", id="7"),
    ]


@given(
    lines=st.lists(st.binary(max_size=30).filter(lambda b: b"\r" not in b and b"\n" not in b), max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=250), max_size=8),
)
def test_any_bytes_decode_as_utf8_with_replacement_however_chunked(
    lines: list[bytes], cuts: list[int]
) -> None:
    """Lines are found in the bytes and decoded whole, so a character cut by a chunk is never broken."""
    body = b"".join(b"data: " + line + b"\n\n" for line in lines)
    parser = SseParser()
    got: list[SseEvent] = []
    start = 0
    for cut in sorted({c for c in cuts if c < len(body)}):
        got += parser.feed(body[start:cut])
        start = cut
    got += parser.feed(body[start:])
    got += parser.close()
    assert got == parse_all(body)
    assert [event.data for event in got] == [line.decode("utf-8", "replace") for line in lines]


def test_a_crlf_split_by_an_empty_chunk_is_still_one_line_end() -> None:
    parser = SseParser()
    got = [*parser.feed(b"data: a\r"), *parser.feed(b""), *parser.feed(b"\ndata: b\r\n\r\n"), *parser.close()]
    assert got == [SseEvent("a\nb")]


def test_a_long_line_in_many_chunks_is_one_value() -> None:
    """A whole page is one `data:` line; it arrives in thousands of reads and is decoded once."""
    value = "[" + "é" * 300_000 + "]"
    body = b"event: message\ndata: " + value.encode() + b"\nid: 1/0\n\n"
    parser = SseParser()
    got: list[SseEvent] = []
    for at in range(0, len(body), 1000):
        got += parser.feed(body[at : at + 1000])
    assert got == [SseEvent(value, "message", "1/0")]


def test_a_cr_before_more_text_in_the_same_chunk_ends_its_line_alone() -> None:
    """The next chunk's LF then ends the following line; it is not the second half of a CRLF."""
    body = b"data: a\rdata: b\n\n"
    parser = SseParser()
    got = [*parser.feed(body[:15]), *parser.feed(body[15:]), *parser.close()]
    assert got == parse_all(body) == [SseEvent("a\nb")]


def test_a_field_name_alone_is_that_field_with_an_empty_value() -> None:
    """WHATWG: a line without a colon is a field name with the empty string as its value. The colon is looked
    for in that line only, never in the lines after it."""
    assert parse_all(b"data\n\n") == [SseEvent("")]
    assert parse_all(b"data\ndata\n\n") == [SseEvent("\n")]
    assert parse_all(b"data\nfoo: bar\ndata: x\n\n") == [SseEvent("\nx")]
    assert parse_all(b"event\ndata: x\n\n") == [SseEvent("x", "message")]


def test_a_last_line_without_terminator_is_dropped_whatever_its_bytes() -> None:
    """The stream ends: an event not yet dispatched is dropped, and bytes that are not UTF-8 do not raise."""
    parser = SseParser()
    assert [*parser.feed(b"data: a\n\ndata: b\n\xff\xfe"), *parser.close()] == [SseEvent("a")]
