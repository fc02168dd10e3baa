"""The event model: pages parse with each `data` kept byte for byte, and serve back unchanged."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from noemafed.cortex import events as events_module
from noemafed.cortex.events import (
    Event,
    EventFormatError,
    event_from_row,
    event_json,
    event_row,
    page_json,
    parse_page,
    read_page,
)

DATA = Path(__file__).resolve().parent / "data"


def ev(data: str = "{}", **fields: object) -> str:
    base = {
        "id": "01JQH4HPD0B8E9WCXGFN1A33VE",
        "action": "create",
        "trace_id": "20250329-x",
        "cortex_id": "01JQ7X2B9C4D5E6F7G8H9JKMNP",
        "origin": "research",
        "timestamp": "2025-03-29T14:23:00Z",
    }
    base.update(fields)
    text = json.dumps(base)
    return text[:-1] + ', "data": ' + data + "}"


@pytest.mark.parametrize("text", ["", "  ", "null", " null\n", "[]", " [ ] "])
def test_empty_pages(text: str) -> None:
    assert parse_page(text) == []


def test_spec_examples_keep_data_bytes() -> None:
    text = (DATA / "spec_examples.json").read_text()
    events = parse_page(text)
    assert [e.action for e in events] == ["create", "update", "promote"]
    # The exact substrings of the page: \u0026 stays escaped, nothing is re-encoded.
    for event in events:
        assert '"data":' + event.data in text
    assert "\\u0026 event log" in events[1].data
    assert events[1].signature == ""
    assert events[1].pubkey == ""
    assert events[0].vclock == {"01JQ7X2B9C4D5E6F7G8H9JKMNP": 1}


@pytest.mark.parametrize(
    "raw",
    [
        r'{"body":"a \u003cb\u003e \u0026 c"}',
        '{"body":"Größe ✓ \u2028 raw"}',
        r'{"body":"\u2028\u2029 escaped","n":1.50,"e":1E+2}',
        r'{"body":"quote \" backslash \\ slash \/ tab \t"}',
        r'{"lone":"\ud800"}',
        '{"nested":{"a":[1,{"b":null}],"c":true}}',
    ],
)
def test_data_bytes_are_kept(raw: str) -> None:
    (event,) = parse_page("[" + ev(raw) + "]")
    assert event.data == raw
    assert event_json(event).count(raw) == 1


def test_insignificant_whitespace_is_removed_outside_strings_only() -> None:
    raw = '{ "body" : "keep  these \\n spaces" ,\n\t"tags": [ "a", "b" ] }'
    (event,) = parse_page("[" + ev(raw) + "]")
    assert event.data == '{"body":"keep  these \\n spaces","tags":["a","b"]}'


def test_absent_and_null_data() -> None:
    absent = json.dumps({"id": "01A", "action": "archive", "trace_id": "20250101-x"})
    (event,) = parse_page(f"[{absent}]")
    assert event.data == "{}"
    assert event.vclock is None
    assert event.payload() == {}
    (event,) = parse_page("[" + ev("null") + "]")
    assert event.data == "null"
    assert event.payload() == {}
    assert '"data":null' in event_json(event)


def test_unknown_fields_are_ignored_and_last_duplicate_wins() -> None:
    text = ev('{"a":1}', extra={"x": [1, 2]})
    text = text[:-1] + ', "data": {"a":2}}'
    (event,) = parse_page(f"[{text}]")
    assert event.data == '{"a":2}'


def test_vclock_and_signature_fields() -> None:
    text = ev(
        "{}",
        vclock={"01JQ7X2B9C4D5E6F7G8H9JKMNP": 3, "legacy-name": 1},
        signature="ed25519:x",
        pubkey="ed25519:y",
    )
    (event,) = parse_page(f"[{text}]")
    assert event.vclock == {"01JQ7X2B9C4D5E6F7G8H9JKMNP": 3, "legacy-name": 1}
    assert (event.signature, event.pubkey) == ("ed25519:x", "ed25519:y")
    (empty,) = parse_page("[" + ev("{}", vclock={}) + "]")
    assert empty.vclock == {}
    assert '"vclock"' not in event_json(empty)


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        "[1]",
        '["x"]',
        "[" + ev("[]") + "]",
        "[" + ev('"s"') + "]",
        "[" + ev("{}", id=5) + "]",
        "[" + ev("{}", id="") + "]",
        "[" + ev("{}", action=None) + "]",
        "[" + ev("{}", vclock={"k": -1}) + "]",
        "[" + ev("{}", vclock={"k": 1.5}) + "]",
        "[" + ev("{}", vclock={"k": True}) + "]",
        "[" + ev("{}", vclock={"k": 2**64}) + "]",
        "[" + ev("{}", vclock=[1]) + "]",
        "[" + ev('{"x":NaN}') + "]",
        "[" + ev("{}") + ",]",
        "[" + ev("{}") + "] x",
        "[" + ev("{}"),
        "[" + ev('{"x":1') + "]",
    ],
)
def test_malformed_pages(text: str) -> None:
    with pytest.raises(EventFormatError):
        parse_page(text)


def test_page_json_round_trip_and_field_order() -> None:
    text = (DATA / "spec_examples.json").read_text()
    events = parse_page(text)
    served = page_json(events)
    assert parse_page(served) == events
    first = json.loads(served)[0]
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
    assert list(json.loads(served)[1]) == [
        "id",
        "action",
        "trace_id",
        "cortex_id",
        "origin",
        "timestamp",
        "data",
        "vclock",
    ]


def test_row_round_trip() -> None:
    for event in parse_page((DATA / "spec_examples.json").read_text()):
        assert event_from_row(event_row(event)) == event
    no_clock = Event("01A", "archive", "t", "c", "o", "ts", "{}", None)
    assert event_row(no_clock)[6] == "null"
    assert event_from_row(event_row(no_clock)).vclock is None


json_text = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    payload=st.dictionaries(st.text(max_size=8), json_text, max_size=4),
    indent=st.sampled_from([None, 1, "\t"]),
)
def test_any_payload_compacts_to_equal_json(payload: dict[str, object], indent: object) -> None:
    raw = json.dumps(payload, indent=indent, ensure_ascii=False)  # type: ignore[arg-type]
    (event,) = parse_page("[" + ev(raw) + "]")
    assert json.loads(event.data) == payload
    # Compact input is never changed at all.
    compact = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    (same,) = parse_page("[" + ev(compact) + "]")
    assert same.data == compact


def test_parsing_grows_linearly_with_the_page() -> None:
    """A quadratic walk (re-scanning the text from the start for each event) would make 8x the events cost
    about 64x the time; speed itself is measured in scripts/bench.py, not here."""
    import time

    one = ev(json.dumps({"title": "t", "type": "note", "body": "x" * 1000, "tags": ["a", "b", "c"]}))

    def best_of_three(count: int) -> float:
        text = "[" + ",".join([one] * count) + "]"
        times = []
        for _ in range(3):
            start = time.perf_counter()
            assert len(parse_page(text)) == count
            times.append(time.perf_counter() - start)
        return min(times)

    assert best_of_three(4000) < 24 * best_of_three(500)


# The compact-layout fast path of parse_page must return what the general parser returns, or leave the page to
# it: same events, same `data` bytes, same errors. Pages come from page_json (the layout Go serves), from
# json.dumps with any key order and duplicates, and from either with one random edit.

_string = st.text(st.characters(codec="utf-8") | st.sampled_from(['"', "\\", "\u2028", "<", "&"]), max_size=6)
_field_value = st.one_of(
    _string, st.none(), st.integers(), st.booleans(), st.lists(st.integers(), max_size=1)
)
_clock = st.one_of(
    st.none(), st.dictionaries(_string, st.integers(min_value=-1, max_value=2**64)), st.integers(), _string
)


@st.composite
def _data_text(draw: st.DrawFn) -> str:
    value = draw(st.one_of(st.dictionaries(st.text(max_size=5), json_text, max_size=3), st.none(), json_text))
    style = draw(st.sampled_from(["compact", "ascii", "spaced", "indented"]))
    if style == "compact":
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if style == "ascii":
        return json.dumps(value, separators=(",", ":"))
    if style == "spaced":
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, indent=1, ensure_ascii=False)


@st.composite
def _event_object(draw: st.DrawFn) -> str:
    keys = ["id", "action", "trace_id", "cortex_id", "origin", "timestamp", "signature", "pubkey", "extra"]
    chosen = draw(st.lists(st.sampled_from([*keys, "data", "vclock", "id"]), max_size=12))
    members = []
    for key in chosen:
        if key == "data":
            text = draw(_data_text())
        elif key == "vclock":
            text = json.dumps(draw(_clock))
        elif key in ("id", "action") and draw(st.booleans()):
            text = json.dumps(draw(st.sampled_from(["01JQH4HPD0B8E9WCXGFN1A33VE", "create"])))
        else:
            text = json.dumps(draw(_field_value), ensure_ascii=draw(st.booleans()))
        members.append(f"{json.dumps(key)}:{text}")
    return "{" + ",".join(members) + "}"


_event = st.builds(
    Event,
    id=st.text(min_size=1, max_size=4),
    action=st.text(min_size=1, max_size=4),
    trace_id=_string,
    cortex_id=_string,
    origin=_string,
    timestamp=_string,
    data=_data_text().filter(lambda text: text.startswith("{") or text == "null"),
    vclock=st.none() | st.dictionaries(_string, st.integers(min_value=0, max_value=2**64 - 1), max_size=2),
    signature=_string,
    pubkey=_string,
)


@st.composite
def _page(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        text = page_json(draw(st.lists(_event, max_size=3)))
    else:
        text = "[" + ",".join(draw(st.lists(_event_object(), max_size=3))) + "]"
    edit = draw(st.sampled_from(["none", "none", "insert", "delete"]))
    if edit != "none" and text:
        # Half the edits land next to a structural character, where the two parsers' checks differ most.
        marks = [at for at, char in enumerate(text) if char in ",:{}[]"]
        if marks and draw(st.booleans()):
            at = draw(st.sampled_from(marks)) + draw(st.sampled_from([0, 1]))
            at = min(at, len(text) - 1)
        else:
            at = draw(st.integers(min_value=0, max_value=len(text) - 1))
        if edit == "insert":
            text = text[:at] + draw(st.sampled_from([" ", "\n", ",", "}", "]", '"', "{", "x"])) + text[at:]
        else:
            text = text[:at] + text[at + 1 :]
    return text


def _compact_ev(data: str) -> str:
    """ev() as Go lays it out: no whitespace between tokens."""
    return json.dumps(json.loads(ev()), separators=(",", ":"))[: -len('"data":{}}')] + '"data":' + data + "}"


def _outcome(parse: Callable[[str], list[Event]], text: str) -> object:
    try:
        parsed = parse(text)
    except EventFormatError as exc:
        return ("error", str(exc))
    return ("events", parsed, [event.data for event in parsed])


@settings(max_examples=600, deadline=None)
@given(_page())
@example("[" + _compact_ev("{}") + "]," + _compact_ev("{}") + "]")  # text after the array
@example("[" + _compact_ev('{"a":1},"data":null') + "]")  # a later null `data` wins over an object
@example("[" + _compact_ev('{"a":1},"data":{"b":2}') + "]")
def test_compact_fast_path_returns_what_the_general_parser_returns(text: str) -> None:
    scrub = events_module._may_hold_surrogates(text)
    general = _outcome(lambda page: events_module._parse_page(page, scrub), text)
    assert _outcome(parse_page, text) == general
    fast = events_module._parse_compact_page(text, scrub)
    if fast is not None:
        assert general == ("events", fast, [event.data for event in fast])
        for event in fast:
            assert event.payload() == events_module._scrubbed(json.loads(event.data) or {})


@settings(max_examples=300, deadline=None)
@given(st.lists(_event, min_size=1, max_size=3))
def test_pages_as_served_take_the_fast_path(served: list[Event]) -> None:
    text = page_json(served)
    fast = events_module._parse_compact_page(text, False)
    assert fast is not None
    assert fast == events_module._parse_page(text, False)


def _read_lazily(text: str | bytes) -> object:
    """read_page as it reads a large page, whatever the size of this one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(events_module, "LARGE_PAGE_CHARS", -1)
        try:
            page = read_page(text)
        except EventFormatError as exc:
            return ("error", str(exc))
    assert page.large
    whole = page.events()
    # In ranges, as replay asks for them, the same events; no parsed payload is kept beside them.
    for cut in range(len(page) + 1):
        assert page.events(0, cut) + page.events(cut) == whole
    assert page.heads == [(event.id, event.trace_id) for event in whole]
    assert all(event._parsed is None for event in whole)
    return ("events", whole, [event.data for event in whole])


@settings(max_examples=600, deadline=None)
@given(_page())
@example("[" + _compact_ev('{"a":1},"data":null') + "]")  # a later null `data` wins over an object
@example("[" + _compact_ev('{"a":1},"data":{"b":2}') + "]")
@example("[" + ev('{"a" : [1, {"b": " x "}]}') + "," + ev("null") + "]")  # whitespace: the general parser
def test_a_large_page_is_read_lazily_into_the_same_events(text: str) -> None:
    assert _read_lazily(text) == _outcome(parse_page, text)


# Characters of every width in every place a field is read from, and in the ones that are ignored.
_WIDE = "é—😀\\u00e9\\ud83d\\ude00\\u2014\\ud800"
_WIDE_EVENT = (
    '{"id":"01JQH4HPD0B8E9WCXGFN1A33VE","action":"créate","trace_id":"t—😀","cortex_id":"ç","origin":"ö",'
    '"timestamp":"⏰","signature":"s😀","pubkey":"p—","vclock":{"nœud":1,"😀":2},"extra":"ê😀",'
    f'"data":{{"body":"{_WIDE}", "n" : [1, "—"]}}}}'
)


@settings(max_examples=600, deadline=None)
@given(_page())
@example("[" + _WIDE_EVENT + "]")
@example("[" + _WIDE_EVENT + "," + _WIDE_EVENT.replace(":", " : ") + "]")  # the general parser too
@example("[" + _WIDE_EVENT + ",]")  # malformed after a wide event: the error counts characters, not bytes
@example('[{"id":"é","action":"x","data":{"a":1}} "é"]')
@example('[{"id":"x","action":"y","clé😀\\u00e9":tru}]')  # a bad value named by a key with wide characters
@example('[{"id":"x","ç😀":"a\x01"}]')  # a string's error, after wide characters on its line
@example('[{"id":"x"} ,😀]')  # the character found where a token was expected, whole
def test_a_large_page_in_bytes_reads_as_its_text(text: str) -> None:
    """read_page of a page's UTF-8 bytes, parsed over their Latin-1 reading, gives what the text gives."""
    assert _read_lazily(text.encode("utf-8")) == _outcome(parse_page, text)


@pytest.mark.parametrize(
    "raw", [b'[{"id":"\xff"}]', b'[{"id":"\xc3"}]', b'[{"id":"\xed\xa0\x80"}]', b"[\xe2\x80]", b"\xc3"]
)
@pytest.mark.parametrize("step", [2, 1024 * 1024])
def test_a_large_page_that_is_not_utf8_raises_what_decoding_raises(raw: bytes, step: int) -> None:
    """Checked a step at a time (steps of 2 bytes cut characters and find every bad byte), worded as decoding."""
    with pytest.raises(UnicodeDecodeError) as decoding:
        raw.decode("utf-8")
    page = '[{"id":"é😀","action":"—","data":{}}]'.encode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(events_module, "LARGE_PAGE_CHARS", -1)
        patch.setattr(events_module, "_UTF8_STEP", step)
        with pytest.raises(UnicodeDecodeError) as reading:
            read_page(raw)
        assert read_page(page).events() == parse_page(page.decode())
    assert str(reading.value) == str(decoding.value)


@settings(max_examples=300, deadline=None)
@given(st.lists(_event, min_size=1, max_size=3))
def test_pages_as_served_take_the_fast_path_in_bytes(served: list[Event]) -> None:
    """Wide characters in a page as Go lays it out do not send it to the general parser."""
    text = page_json(served)
    latin = text.encode().decode("latin-1")
    spans: list[tuple[int, int] | None] = []
    fast = events_module._parse_compact_page(
        latin, events_module._may_hold_surrogates(text), spans, utf8=True
    )
    assert fast is not None
    as_text = events_module._parse_compact_page(text, events_module._may_hold_surrogates(text), [])
    assert fast == as_text


def test_a_malformed_large_page_in_bytes_is_refused_without_a_decoded_copy() -> None:
    """A refused page is worded from its Latin-1 reading: an emoji in every event once widened the page's
    decoded text to 4 bytes a character, 5 times the page in all while its error was worded."""
    import tracemalloc

    event = '{"id":"01JQH4HPD0B8E9WCXGFN1A33VE","action":"create","data":{"body":"😀' + "x" * 900 + '"}}'
    raw = ("[" + ",".join([event] * 12_000) + ",]").encode()  # 11 MB, malformed at its very end
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(events_module, "LARGE_PAGE_CHARS", 1024)
        tracemalloc.start()
        try:
            with pytest.raises(EventFormatError) as refused:
                read_page(raw)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    with pytest.raises(EventFormatError) as decoded:
        parse_page(raw.decode())
    assert str(refused.value) == str(decoded.value)
    assert peak < 2 * len(raw), peak / len(raw)


def test_a_large_page_in_bytes_keeps_one_byte_a_character() -> None:
    """The page is held as its Latin-1 reading (as many characters as bytes), never as a wide str."""
    raw = ("[" + _WIDE_EVENT + "]").encode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(events_module, "LARGE_PAGE_CHARS", -1)
        page = read_page(raw)
    assert len(page._text) == len(raw)
    assert page._text.isascii() or max(page._text) <= "\xff"
    (event,) = page.events()
    assert event.vclock == {"nœud": 1, "😀": 2}
    assert (event.action, event.trace_id, event.signature) == ("créate", "t—😀", "s😀")
    assert json.loads(event.data)["body"] == "é—😀é😀—\ud800"  # data as received: its lone surrogate too


def test_a_normal_page_keeps_its_parsed_payloads_and_not_its_text() -> None:
    page = read_page("[" + ev('{"a":1}') + "," + ev("null") + "]")
    assert not page.large
    first, second = page.events()
    assert first._parsed is not None
    assert first.payload() is first.payload()
    assert second.data == "null"
    assert page._text == ""


def _compact_reference(span: str) -> str:
    """Whitespace removed between the string literals, found by the regex alone."""
    parts = events_module._STRING.split(span)
    for index in range(0, len(parts), 2):
        parts[index] = "".join(parts[index].split())
    return "".join(parts)


@settings(max_examples=500, deadline=None)
@given(_data_text())
def test_compact_keeps_strings_and_drops_the_whitespace_between(text: str) -> None:
    assert events_module._compact(text) == _compact_reference(text)


def test_payload_is_parsed_again_when_data_is_replaced() -> None:
    (event,) = parse_page("[" + ev('{"a":1}') + "]")
    assert event.payload() == {"a": 1}
    assert event.payload() is event.payload()  # kept from parse_page, not parsed again
    changed = replace(event, data='{"a":2}')
    assert changed.payload() == {"a": 2}
    assert changed == replace(event, data='{"a":2}', _parsed=None)


def test_a_lone_surrogate_decodes_to_u_fffd_and_data_keeps_its_bytes() -> None:
    data = '{"title":"x\\ud800y","type":"fact","body":"b\\uDFFF","tags":["\\ud83d\\ude00"]}'
    text = '[{"id":"01J0000000000000000000000A","action":"create","trace_id":"t\\ud800","data":' + data + "}]"
    for page in (text, text.replace(",", ", ")):  # the fast path and the general parser
        [event] = parse_page(page)
        assert event.data == data  # stored and served on exactly as received (signatures hash these bytes)
        assert event.payload() == {
            "title": "x\ufffdy",
            "type": "fact",
            "body": "b\ufffd",
            "tags": ["\U0001f600"],
        }
        assert event.trace_id == "t\ufffd"


def test_event_ids_are_canonical_ulids_not_far_in_the_future() -> None:
    from ulid import ULID

    now = 1_780_000_000_000
    fine = str(ULID.from_timestamp(now / 1000))
    assert events_module.ulid_millis(fine) == now
    assert events_module.event_id_problem(fine, now, 600_000) is None
    for bad in (fine.lower(), fine[:-1], fine + "0", fine[:-1] + "U", fine[:-1] + "I", "8" + fine[1:], ""):
        assert events_module.event_id_problem(bad, now, 600_000) == events_module.NOT_CANONICAL_ID, bad
    ahead = str(ULID.from_timestamp((now + 600_001) / 1000))
    assert events_module.event_id_problem(ahead, now, 600_000) == (
        "is dated 600 s ahead of this host's clock (at most 600 s allowed)"
    )
    assert events_module.event_id_problem(ahead, now, 600_001) is None
    assert events_module.event_id_problem("7ZZZZZZZZZZZZZZZZZZZZZZZZZ", now, 600_000) is not None


# Tests written for mutants that survived tests/test_events.py (docs/testing.md): the error texts of the general
# parser, the edges of the compact path, and the columns of a row.

_A = '{"id":"01JQH4HPD0B8E9WCXGFN1A33VE","action":"create"'
_B = '{"id":"01JQH4HPD0B8E9WCXGFN1A33VF","action":"create"'
_AT = "malformed sync_events page at offset {}: "


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x", _AT.format(0) + "expected a JSON array, found 'x'"),
        ("nullx", _AT.format(0) + "expected a JSON array, found 'n'"),
        # Ends like a compact page but does not start like one: the fast path must not take it.
        ('{x"id":"A","action":"b"}]', _AT.format(0) + "expected a JSON array, found '{'"),
        ("[1]", _AT.format(1) + "event 0 is not a JSON object"),
        ("[ {} ]", "event 0: missing id"),
        ("[{1:2}]", _AT.format(2) + "expected an object key, found '1'"),
        ('[{"id" "x"}]', _AT.format(7) + "expected ':', found '\"'"),
        ('[{"id": x}]', _AT.format(8) + "event 0, field 'id': Expecting value: line 1 column 9 (char 8)"),
        ('[{"id":"x" "y"}]', _AT.format(11) + "expected ',' or '}', found '\"'"),
        ('[{"id":"x"', _AT.format(10) + "expected ',' or '}', found 'end of text'"),
        ('[{"i\td":"x"}]', _AT.format(2) + "Invalid control character at: line 1 column 5 (char 4)"),
        (f'[{_A},"x\ty":1}}]', _AT.format(54) + "Invalid control character at: line 1 column 57 (char 56)"),
        ('[ {"id": 1} ]', "event 0: id must be a string, not int"),
        ('[{"id":1}]', "event 0: id must be a string, not int"),
        (f"[{_A}}} {_B}}}]", _AT.format(55) + "expected ',' or ']', found '{'"),
        (f"[{_A}}}x{_B}}}]", _AT.format(54) + "expected ',' or ']', found 'x'"),
        (f"[{_A}}}]x", _AT.format(55) + "extra text after the array"),
        ("[]x", _AT.format(2) + "extra text after the array"),
        (f'[{_A},"vclock":[1]}}]', "event 01JQH4HPD0B8E9WCXGFN1A33VE: vclock must be a JSON object"),
        (
            f'[{_A},"vclock":{{"k":-1}}}}]',
            "event 01JQH4HPD0B8E9WCXGFN1A33VE: vclock['k'] is not a uint64: -1",
        ),
        (f'[{_A},"data":{{"x":NaN}}}}]', _AT.format(61) + "event 0, field 'data': invalid JSON constant NaN"),
        (f'[{_A},"data":[1]}}]', "event 0: data must be a JSON object or null"),
    ],
)
def test_a_malformed_page_says_where_and_what(text: str, message: str) -> None:
    """The operator reads this text in `sync` output: the offset and the expectation must be right."""
    with pytest.raises(EventFormatError) as info:
        parse_page(text)
    assert str(info.value) == message


def test_a_page_parses_into_every_field() -> None:
    text = (
        '[{"id":"01JQH4HPD0B8E9WCXGFN1A33VE","action":"create","trace_id":"20250329-x","cortex_id":"C",'
        '"origin":"research","timestamp":"2025-03-29T14:23:00Z","data":{"a":1},"vclock":{"C":18446744073709551615},'
        '"signature":"ed25519:s","pubkey":"ed25519:p"}]'
    )
    expected = Event(
        "01JQH4HPD0B8E9WCXGFN1A33VE",
        "create",
        "20250329-x",
        "C",
        "research",
        "2025-03-29T14:23:00Z",
        '{"a":1}',
        {"C": 2**64 - 1},  # the largest uint64 is a valid count
        "ed25519:s",
        "ed25519:p",
    )
    for page in (text, text.replace(",", ", ")):  # the fast path and the general parser
        [event] = parse_page(page)
        assert event == expected
        assert event.payload() is event.payload()  # the value parse_page had at hand, not parsed again


@pytest.mark.parametrize("escape", ["\\ud800", "\\uD800"], ids=["lower", "upper"])
def test_a_lone_surrogate_in_either_case_is_scrubbed(escape: str) -> None:
    data = '{"title":"x' + escape + '"}'
    page = (
        '[{"id":"01J0000000000000000000000A","action":"create","trace_id":"t'
        + escape
        + '","data":'
        + data
        + "}]"
    )
    [event] = parse_page(page)
    assert (event.data, event.payload(), event.trace_id) == (data, {"title": "x\ufffd"}, "t\ufffd")


@pytest.mark.parametrize("space", [" ", "\t", "\n", "\r"], ids=["space", "tab", "lf", "cr"])
@pytest.mark.parametrize("quote", ["", '\\"'], ids=["plain", "escaped-quote"])
def test_whitespace_between_tokens_goes_even_next_to_an_escaped_quote(space: str, quote: str) -> None:
    raw = '{"a":"x' + quote + 'y",' + space + '"b":1}'
    (event,) = parse_page("[" + ev(raw) + "]")
    assert event.data == '{"a":"x' + quote + 'y","b":1}'


def test_a_row_with_null_columns_and_its_payload() -> None:
    event = event_from_row(("01A", "archive", "t", None, "ts", None, None, None, None, None))
    assert event == Event("01A", "archive", "t", "", "", "ts", "{}", None)
    for clock in ("", " ", "null", " null "):
        assert event_from_row(("01A", "archive", "t", "o", "ts", "{}", clock, "c", "", "")).vclock is None
    with pytest.raises(EventFormatError) as info:
        event_from_row(("01A", "archive", "t", "o", "ts", "[1]", "null", "c", "", "")).payload()
    assert str(info.value) == "event 01A: data is not a JSON object"
    assert replace(event, data="").payload() == {}


def test_a_page_as_served_never_reaches_the_general_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compact layout Go and `serve` write takes the fast path; the general parser is for anything else."""
    text = page_json(parse_page((DATA / "spec_examples.json").read_text()))

    def general(page: str, scrub: bool) -> list[Event]:
        raise AssertionError("the general parser ran on a compact page")

    expected = parse_page(text)
    monkeypatch.setattr(events_module, "_parse_page", general)
    assert parse_page(text) == expected
