"""The event model (cortex.md §4): parse `sync_events` pages keeping each `data` text byte for byte.

Signatures hash the exact `data` bytes (wire.md §7, P16), and an event is served on to other peers unchanged,
so `data` is never re-encoded: `parse_page` records the text span of every `data` value and only removes
insignificant whitespace outside strings. Everything else about an event is plain JSON.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from json.decoder import scanstring  # type: ignore[attr-defined]  # C-accelerated; untyped in typeshed
from typing import Any

from noemafed.cortex import vclock
from noemafed.errors import NoemafedError
from noemafed.records import Record
from noemafed.text.clock import ulid_millis
from noemafed.text.gotext import go_json_dumps
from noemafed.text.latin_utf8 import character_at, characters_before, decoded, json_error
from noemafed.text.sanitize import scrub

__all__ = [
    "COORDINATION_ACTIONS",
    "EMPTY_DATA",
    "Event",
    "EventFormatError",
    "EventHead",
    "Page",
    "event_from_row",
    "event_json",
    "page_json",
    "parse_page",
    "read_page",
    "served_event_json",
]

EMPTY_DATA = "{}"
NULL_DATA = "null"
# Consolidation-election events: keyed by a window id instead of a trace id, they change no trace.
COORDINATION_ACTIONS = ("consolidation_claim", "consolidation_success", "consolidation_fail")

# The column order of the `events` table (cortex.md §3.5); event_from_row reads rows selected in this order.
EVENT_COLUMNS = (
    "id",
    "action",
    "trace_id",
    "origin",
    "timestamp",
    "data",
    "vclock",
    "cortex_id",
    "signature",
    "pubkey",
)
_STRING_FIELDS = ("id", "action", "trace_id", "cortex_id", "origin", "timestamp", "signature", "pubkey")


# An event id as noema mints it: a ULID in upper-case Crockford base32, whose first character keeps it in 128 bits.
_CANONICAL_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
NOT_CANONICAL_ID = "is not a canonical ULID (26 upper-case Crockford base32 characters)"
FUTURE_ID_FORMAT = "is dated {ahead} s ahead of this host's clock (at most {limit} s allowed)"


def event_id_problem(event_id: str, now_millis: int, max_ahead_millis: int) -> str | None:
    """Why an id must not be stored (and so served on to the ring), or None when it is fine.

    A non-canonical id breaks every peer that pulls it from us (`since` must be a ULID), and an id far in the
    future puts everything later behind the cursor of whoever stores it.
    """
    if not _CANONICAL_ULID.fullmatch(event_id):
        return NOT_CANONICAL_ID
    ahead = ulid_millis(event_id) - now_millis
    if ahead > max_ahead_millis:
        return FUTURE_ID_FORMAT.format(ahead=ahead // 1000, limit=max_ahead_millis // 1000)
    return None


class EventFormatError(NoemafedError):
    """A sync_events page or one of its events is not the JSON shape noema serves."""

    code = "event_format"


@dataclass(frozen=True)
class Event:
    """One replicated event; `data` is the payload's exact JSON text and is never rebuilt."""

    id: str
    action: str
    trace_id: str
    cortex_id: str
    origin: str
    timestamp: str
    # "{}" when the field is absent; "null" when the peer sent null (cortex.md §9.12).
    data: str
    # None when absent or null; {} when the peer sent an empty object.
    vclock: dict[str, int] | None
    signature: str = ""
    pubkey: str = ""
    # (data, its parsed value) when parse_page had the value at hand, so payload() need not parse it again.
    # Only trusted while `data` is that same object (a `replace(data=...)` drops it); not part of the value.
    _parsed: tuple[str, Any] | None = field(default=None, compare=False, repr=False)

    def payload(self) -> dict[str, Any]:
        """The parsed payload; `null` reads as {} (Go unmarshals null into a struct as a no-op).

        It may be the same dict on every call: read it, never change it.
        """
        parsed = self._parsed
        if parsed is not None and parsed[0] is self.data:
            value = parsed[1]
        else:
            value = json.loads(self.data) if self.data else {}
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise EventFormatError(f"event {self.id}: data is not a JSON object")
        if _may_hold_surrogates(self.data):
            # Files, rows and FTS get U+FFFD, as Go's decoder gives noema; `data` itself stays as received.
            scrubbed: dict[str, Any] = _scrubbed(value)
            return scrubbed
        return value


def _may_hold_surrogates(text: str) -> bool:
    """Cheap (two C substring searches) and never wrong the other way: a lone surrogate needs a \\uD escape."""
    return "\\ud" in text or "\\uD" in text


def _scrubbed(value: Any) -> Any:
    """A copy of a decoded JSON value with every lone surrogate (in keys too) replaced by U+FFFD."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(key): _scrubbed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrubbed(item) for item in value]
    return value


def _reject_constant(name: str) -> Any:
    # Python's decoder accepts NaN and Infinity; Go's does not, so neither do we.
    raise ValueError(f"invalid JSON constant {name}")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_raw_decode = _DECODER.raw_decode
_WS = re.compile(r"[ \t\n\r]*")
_ws_match = _WS.match


def _skip_ws(text: str, position: int) -> int:
    """The offset of the next non-whitespace character (the pattern always matches, possibly empty)."""
    match = _ws_match(text, position)
    return match.end() if match else position


# A JSON string literal (unrolled loop, so re stays in C); splitting on it leaves the structural text between.
_STRING = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*")')
_WS_CHARS = str.maketrans("", "", " \t\n\r")


def _compact(span: str) -> str:
    """Remove whitespace outside strings; string contents (and so every escape) keep their bytes."""
    if '\\"' not in span:
        # No escaped quote, so every '"' opens or closes a string: the even pieces are the text between them.
        # Go's compact output passes here without the regex split below.
        outside = "".join(span.split('"')[0::2])
        if " " not in outside and "\t" not in outside and "\n" not in outside and "\r" not in outside:
            return span
    parts = _STRING.split(span)
    # Even indexes are the structural text between string literals.
    structural = "".join(parts[0::2])
    if " " not in structural and "\t" not in structural and "\n" not in structural and "\r" not in structural:
        return span
    for index in range(0, len(parts), 2):
        parts[index] = parts[index].translate(_WS_CHARS)
    return "".join(parts)


def _fail(message: str, text: str, position: int, utf8: bool) -> EventFormatError:
    """The error at `position`; with `utf8` (text is the Latin-1 reading of UTF-8 bytes) at the offset the
    decoded text would give."""
    offset = characters_before(text, position) if utf8 else position
    return EventFormatError(f"malformed sync_events page at offset {offset}: {message}")


def _expect(text: str, position: int, char: str, what: str, utf8: bool) -> None:
    if text[position : position + 1] != char:
        found = (character_at(text, position) if utf8 else text[position : position + 1]) or "end of text"
        raise _fail(f"expected {what}, found {found!r}", text, position, utf8)


def _json_error_text(text: str, exc: ValueError | RecursionError, utf8: bool) -> str:
    return json_error(text, exc) if utf8 and isinstance(exc, json.JSONDecodeError) else str(exc)


# Where each event's `data` object sits in a page read lazily (see Page); None for an absent or null `data`.
_Spans = list[tuple[int, int] | None]


def _parse_event(  # noqa: PLR0913, PLR0917 (the parser's state, passed down as _parse_page has it)
    text: str, start: int, index: int, scrub_strings: bool, spans: _Spans | None, utf8: bool = False
) -> tuple[Event, int]:
    """One event object starting at `start` (a `{`); returns the event and the offset after its `}`.

    With `spans`, the event's `data` is left out (a placeholder) and its span appended there instead. With
    `utf8`, `text` is the Latin-1 reading of a page's UTF-8 bytes (see _read_utf8_page).
    """
    fields: dict[str, Any] = {}
    data, parsed, span = EMPTY_DATA, None, None
    position = _skip_ws(text, start + 1)
    if text[position : position + 1] == "}":
        position += 1
    else:
        while True:
            _expect(text, position, '"', "an object key", utf8)
            key_start = position
            try:
                key, key_end = scanstring(text, position + 1, True)
            except ValueError as exc:
                raise _fail(_json_error_text(text, exc, utf8), text, key_start, utf8) from None
            position = _skip_ws(text, key_end)
            _expect(text, position, ":", "':'", utf8)
            position = _skip_ws(text, position + 1)
            try:
                value, end = _raw_decode(text, position)
            except (ValueError, RecursionError) as exc:
                if utf8:  # the key as the decoded text has it (a field name a peer made up may be anything)
                    key = scanstring(decoded(text[key_start:key_end]), 1)[0]
                message = f"event {index}, field {key!r}: {_json_error_text(text, exc, utf8)}"
                raise _fail(message, text, position, utf8) from None
            # Duplicate keys: the last one wins, as in Go's decoder.
            if key == "data":
                if value is None:
                    data, parsed, span = NULL_DATA, None, None
                elif not isinstance(value, dict):
                    raise EventFormatError(f"event {index}: data must be a JSON object or null")
                elif spans is not None:
                    data, parsed, span = _NOT_CUT, None, (position, end)
                else:
                    data = _compact(text[position:end])
                    parsed = (data, value)
            else:
                fields[key] = _recoded(text, position, end, key, value) if utf8 else value
            position = _skip_ws(text, end)
            char = text[position : position + 1]
            if char == ",":
                position = _skip_ws(text, position + 1)
                continue
            _expect(text, position, "}", "',' or '}'", utf8)
            position += 1
            break
    if spans is not None:
        spans.append(span)
    return _event_from_fields(fields, data, index, parsed, scrub_strings), position


def _event_from_fields(
    fields: dict[str, Any], data: str, index: int, parsed: tuple[str, Any] | None, scrub_strings: bool
) -> Event:
    strings: dict[str, str] = {}
    for name in _STRING_FIELDS:
        value = fields.get(name)
        if value is None:
            value = ""  # Go decodes null (and absence) into a string field as ""
        elif not isinstance(value, str):
            raise EventFormatError(f"event {index}: {name} must be a string, not {type(value).__name__}")
        elif scrub_strings:
            value = scrub(value)  # as Go decodes it; these fields are stored as text, never as received bytes
        strings[name] = value
    if not strings["id"]:
        raise EventFormatError(f"event {index}: missing id")
    if not strings["action"]:
        raise EventFormatError(f"event {strings['id']}: missing action")
    return Event(
        id=strings["id"],
        action=strings["action"],
        trace_id=strings["trace_id"],
        cortex_id=strings["cortex_id"],
        origin=strings["origin"],
        timestamp=strings["timestamp"],
        data=data,
        vclock=_clock_field(fields.get("vclock"), strings["id"]),
        signature=strings["signature"],
        pubkey=strings["pubkey"],
        _parsed=parsed,
    )


def _clock_field(value: Any, event_id: str) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise EventFormatError(f"event {event_id}: vclock must be a JSON object")
    for key, count in value.items():
        # Go unmarshals into uint64: no bool, no float, no negative, no overflow.
        if type(count) is not int or not 0 <= count <= vclock.UINT64_MAX:
            raise EventFormatError(f"event {event_id}: vclock[{key!r}] is not a uint64: {count!r}")
    return value


# A page of more than this many characters is read lazily (see Page). Normal pages (1,000 events) are 1-2 MB, and
# `serve` writes at most 8 MiB; the client takes answers of up to 100 MiB.
LARGE_PAGE_CHARS = 8 * 1024 * 1024
# The `data` of an event of a lazy page until it is cut from the page: never seen outside Page.
_NOT_CUT = ""


class EventHead(Record):
    """What the checks before replay need of an event, without its `data`."""

    id: str
    trace_id: str


class Page:
    """A sync_events page, parsed and checked whole, whose events are handed out a range at a time.

    A normal page keeps its events as parsed, each with its parsed payload (so replay parses every payload
    once, not twice: about 7 % of its time). A large page (`large`, over LARGE_PAGE_CHARS) keeps its text and
    where each `data` sits in it, and cuts the `data` texts of a range of events only when that range is
    asked for: the page is then held about once during its replay, not three times (the text, every `data`
    text and every parsed payload), and what a range held is freed with it (bench.py memory). A large page read
    from bytes keeps their Latin-1 reading (`utf8`), one byte a character whatever the page holds, and decodes
    each `data` it cuts.
    """

    __slots__ = ("_events", "_spans", "_text", "_utf8", "heads", "large")

    def __init__(
        self, events: list[Event], text: str = "", spans: _Spans | None = None, utf8: bool = False
    ) -> None:
        self._events = events
        self._text = text
        self._spans = spans
        self._utf8 = utf8
        self.large = spans is not None
        self.heads = [EventHead(event.id, event.trace_id) for event in events]

    def __len__(self) -> int:
        return len(self._events)

    def events(self, start: int = 0, stop: int | None = None) -> list[Event]:
        """Events start..stop-1, whole."""
        chosen = self._events[start:stop]
        if self._spans is None:
            return chosen
        return [
            event if span is None else replace(event, data=self._data(*span))
            for event, span in zip(chosen, self._spans[start:stop], strict=True)
        ]

    def _data(self, start: int, end: int) -> str:
        data = _compact(self._text[start:end])
        # _compact only removed whitespace between tokens, so the bytes are still whole characters.
        return decoded(data) if self._utf8 else data


def read_page(text: str | bytes | bytearray) -> Page:
    """A sync_events text as a Page: a JSON array of events; "", "null" and "[]" are an empty page.

    The same events and the same errors as parse_page, whatever the page's size. Bytes read as their UTF-8
    decoding would (invalid UTF-8 raises what decoding raises); a large page in bytes is never decoded whole.
    """
    if not isinstance(text, str):
        if len(text) > LARGE_PAGE_CHARS:
            return _read_utf8_page(text)
        text = text.decode("utf-8")
    scrub_strings = _may_hold_surrogates(text)
    large = len(text) > LARGE_PAGE_CHARS
    spans: _Spans | None = [] if large else None
    events = _parse_compact_page(text, scrub_strings, spans)
    if events is None:
        spans = [] if large else None  # the fast path may have stopped halfway
        events = _parse_page(text, scrub_strings, spans)
    return Page(events, text, spans) if spans is not None else Page(events)


def _read_utf8_page(page: bytes | bytearray) -> Page:
    """read_page(page.decode()) for a large page, without a str as wide as the page's widest character.

    The page is parsed over its Latin-1 reading: one character a byte, so the structure (all ASCII) is found
    where it is, and every non-ASCII byte sits inside a string. The fields replay reads are decoded from their
    own bytes, each `data` when its range is asked for (Page). A malformed page fails here as it would decoded,
    with the same error text (noemafed.text.latin_utf8 turns its offsets and characters back).
    """
    _check_utf8(page)
    latin = page.decode("latin-1")
    scrub_strings = _may_hold_surrogates(latin)
    spans: _Spans = []
    events: list[Event] | None
    try:
        events = _parse_compact_page(latin, scrub_strings, spans, utf8=True)
        if events is None:
            spans = []  # the fast path may have stopped halfway
            events = _parse_page(latin, scrub_strings, spans, utf8=True)
    except EventFormatError as exc:
        # Worded as the decoded page's error (offsets in characters, characters whole): no decoded copy of the
        # page is made even for this. Raised outside the handler so that its traceback does not hold the text.
        error = EventFormatError(exc.message, exc.hint)
    else:
        return Page(events, latin, spans, utf8=True)
    del latin, spans
    raise error


_UTF8_STEP = 1024 * 1024


def _check_utf8(page: bytes | bytearray) -> None:
    """Raise what page.decode("utf-8") raises, without keeping a decoded copy of the page."""
    check = codecs.getincrementaldecoder("utf-8")()
    try:
        with memoryview(page) as view:
            for start in range(0, len(page), _UTF8_STEP):
                check.decode(view[start : start + _UTF8_STEP])
        check.decode(b"", True)
    except UnicodeDecodeError:
        page.decode("utf-8")  # the same error, worded with the page's own offsets
        raise  # not reached: the page is not UTF-8


# The fields an event is built from; any other field is ignored, so its value needs no decoding.
_READ_FIELDS = frozenset((*_STRING_FIELDS, "vclock"))
_NON_ASCII = re.compile("[^\x00-\x7f]")


def _recoded(text: str, start: int, end: int, key: str, value: Any) -> Any:
    """The value at text[start:end] of a Latin-1 read page as its UTF-8 bytes decode, where it is read."""
    if key not in _READ_FIELDS or not _NON_ASCII.search(text, start, end):
        return value
    return _raw_decode(decoded(text[start:end]))[0]


def parse_page(text: str) -> list[Event]:
    """A sync_events text: a JSON array of events; "", "null" and "[]" are an empty page."""
    return read_page(text).events()


# C scanner: one JSON value at an offset; absent from typeshed's JSONDecoder.
_scan_once = _DECODER.scan_once  # type: ignore[attr-defined]


def _parse_compact_page(
    text: str, scrub_strings: bool, spans: _Spans | None = None, utf8: bool = False
) -> list[Event] | None:
    """parse_page for the layout Go and `serve` write (no whitespace between tokens), or None.

    None hands the page to the general parser, which also words every error: this path only ever returns
    what the general one would, and so never raises (tests/test_events.py checks both with hypothesis).
    Per field it is one C scan of the key and one of the value, with no whitespace skipping in between.
    """
    if not (text.startswith("[{") and text.endswith("}]")):
        return None
    events: list[Event] = []
    position = 1  # at the '{' of an event
    try:
        while True:
            fields: dict[str, Any] = {}
            data, parsed, span = EMPTY_DATA, None, None
            position += 1
            while True:
                if text[position] != '"':
                    return None
                key, position = scanstring(text, position + 1, True)
                if text[position] != ":":
                    return None
                value, end = _scan_once(text, position + 1)
                if key == "data":  # duplicate keys: the last one wins, as in Go's decoder
                    if type(value) is not dict:
                        if value is not None:
                            return None
                        data, parsed, span = NULL_DATA, None, None
                    elif spans is not None:
                        data, parsed, span = _NOT_CUT, None, (position + 1, end)
                    else:
                        data = _compact(text[position + 1 : end])
                        parsed = (data, value)
                else:
                    fields[key] = _recoded(text, position + 1, end, key, value) if utf8 else value
                char = text[end]
                position = end + 1
                if char == "}":
                    break
                if char != ",":
                    return None
            events.append(_event_from_fields(fields, data, len(events), parsed, scrub_strings))
            if spans is not None:
                spans.append(span)
            char = text[position]
            if char == "]":
                return events if position == len(text) - 1 else None
            if char != "," or text[position + 1] != "{":
                return None
            position += 1
    except (ValueError, IndexError, StopIteration, RecursionError, EventFormatError):
        return None


def _parse_page(
    text: str, scrub_strings: bool, spans: _Spans | None = None, utf8: bool = False
) -> list[Event]:
    """The general parser: any JSON whitespace, and a precise error for a malformed page."""
    length = len(text)
    position = _skip_ws(text, 0)
    if position == length:
        return []
    if text.startswith("null", position) and _skip_ws(text, position + 4) == length:
        return []
    _expect(text, position, "[", "a JSON array", utf8)
    position = _skip_ws(text, position + 1)
    events: list[Event] = []
    if text[position : position + 1] == "]":
        position += 1
    else:
        while True:
            if text[position : position + 1] != "{":
                raise _fail(f"event {len(events)} is not a JSON object", text, position, utf8)
            event, position = _parse_event(text, position, len(events), scrub_strings, spans, utf8)
            events.append(event)
            position = _skip_ws(text, position)
            char = text[position : position + 1]
            if char == ",":
                position = _skip_ws(text, position + 1)
                continue
            _expect(text, position, "]", "',' or ']'", utf8)
            position += 1
            break
    if _skip_ws(text, position) != length:
        raise _fail("extra text after the array", text, position, utf8)
    return events


def event_json(event: Event) -> str:
    """The wire object as Go serves it: `data` spliced verbatim, empty optional fields omitted."""
    parts = [
        '{"id":',
        go_json_dumps(event.id),
        ',"action":',
        go_json_dumps(event.action),
        ',"trace_id":',
        go_json_dumps(event.trace_id),
        ',"cortex_id":',
        go_json_dumps(event.cortex_id),
        ',"origin":',
        go_json_dumps(event.origin),
        ',"timestamp":',
        go_json_dumps(event.timestamp),
        ',"data":',
        event.data or EMPTY_DATA,
    ]
    if event.vclock:
        parts += [',"vclock":', vclock.encode(event.vclock)]
    if event.signature:
        parts += [',"signature":', go_json_dumps(event.signature)]
    if event.pubkey:
        parts += [',"pubkey":', go_json_dumps(event.pubkey)]
    parts.append("}")
    return "".join(parts)


def page_json(events: Iterable[Event]) -> str:
    """A sync_events page text."""
    return "[" + ",".join(event_json(event) for event in events) + "]"


def _row_clock(text: str | None) -> dict[str, int] | None:
    # Go stores a nil map as `null`; keep the difference between "no clock" and "{}".
    if text is None or not text.strip() or text.strip() == NULL_DATA:
        return None
    return vclock.decode(text)


def event_from_row(row: Sequence[Any]) -> Event:
    """An Event from an `events` row selected in EVENT_COLUMNS order."""
    event_id, action, trace_id, origin, timestamp, data, clock, cortex_id, signature, pubkey = row
    return Event(
        id=event_id,
        action=action,
        trace_id=trace_id,
        cortex_id=cortex_id or "",
        origin=origin or "",
        timestamp=timestamp,
        data=data or EMPTY_DATA,
        vclock=_row_clock(clock),
        signature=signature or "",
        pubkey=pubkey or "",
    )


# Text Go's encoder writes between quotes unchanged: printable ASCII except `"`, `\\` and its HTML escapes `<>&`.
_VERBATIM_CHARS = r"[ !#-%'-;=?-\[\]-~]"
_VERBATIM = re.compile(_VERBATIM_CHARS + "*")
# A stored clock in the form vclock.encode writes (once its keys are known to ascend): keys that need no
# escaping, values of at most 19 digits (so within uint64) without a leading zero.
_CLOCK_ENTRY = f'"{_VERBATIM_CHARS}*":(?:0|[1-9][0-9]{{0,18}})'
_CANONICAL_CLOCK = re.compile(rf"\{{{_CLOCK_ENTRY}(?:,{_CLOCK_ENTRY})*\}}")
_CLOCK_KEY = re.compile(r'"([^"]*)":')
# Stored clock texts that are served as no clock at all: a nil map (`null`) and an empty one.
_NO_CLOCK = ("", NULL_DATA, EMPTY_DATA)


def _served_clock(text: object) -> str | None:
    """The `vclock` text serve writes for a stored one: "" for none, the stored text itself when it is already
    canonical, None when it must be decoded and encoded again (event_json's way)."""
    if text is None or text in _NO_CLOCK:
        return ""
    if type(text) is not str or not _CANONICAL_CLOCK.fullmatch(text):
        return None
    keys = _CLOCK_KEY.findall(text)
    # ASCII keys: str order is byte order, Go's order for map keys; strictly ascending also rules out duplicates.
    return text if all(a < b for a, b in pairwise(keys)) else None


def served_event_json(row: Sequence[Any]) -> str:
    """event_json(event_from_row(row)), spliced from the stored texts where nothing needs escaping or
    re-encoding (ids, actions, stamps, canonical clocks): serve's hot path, held to event_json by a test."""
    event_id, action, trace_id, origin, timestamp, data, clock, cortex_id, signature, pubkey = row
    cortex_id, origin, signature, pubkey = cortex_id or "", origin or "", signature or "", pubkey or ""
    data = data or EMPTY_DATA
    strings = (event_id, action, trace_id, cortex_id, origin, timestamp, signature, pubkey, data)
    clock_text = _served_clock(clock)
    if (
        clock_text is None
        or not all(type(value) is str for value in strings)
        or not _VERBATIM.fullmatch("".join(strings[:-1]))
    ):
        return event_json(event_from_row(row))
    text = (
        f'{{"id":"{event_id}","action":"{action}","trace_id":"{trace_id}","cortex_id":"{cortex_id}",'
        f'"origin":"{origin}","timestamp":"{timestamp}","data":{data}'
    )
    if clock_text:
        text += ',"vclock":' + clock_text
    if signature:
        text += f',"signature":"{signature}"'
    if pubkey:
        text += f',"pubkey":"{pubkey}"'
    return text + "}"


def clock_column(event: Event) -> str:
    """The `events.vclock` text: Go's encoding of the map, `null` for a nil one (cortex.md §9.12)."""
    return NULL_DATA if event.vclock is None else vclock.encode(event.vclock)


def event_row(event: Event) -> tuple[str, ...]:
    """The values of an `events` row in EVENT_COLUMNS order; `data` is stored exactly as held."""
    return (
        event.id,
        event.action,
        event.trace_id,
        event.origin,
        event.timestamp,
        event.data or EMPTY_DATA,
        clock_column(event),
        event.cortex_id,
        event.signature,
        event.pubkey,
    )
