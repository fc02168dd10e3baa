"""Incremental Server-Sent Events parsing (WHATWG): Go never sends it, Rust always does, the SDK uses CRLF."""

from __future__ import annotations

from collections.abc import Iterator

from noemafed.records import Record


class SseEvent(Record):
    """One dispatched event; `event` defaults to "message" as the standard says.

    `data` is bytes (a bytearray) only when the parser was asked to leave a large data line undecoded: the bytes
    as received, whose decoding with replacement is the str it would otherwise be.
    """

    data: str | bytearray
    event: str = "message"
    id: str | None = None


class SseParser:
    """Feed bytes as they arrive, get events as soon as each blank line dispatches one.

    Lines may end in CRLF, LF or CR; a CR at the end of one chunk may pair with an LF at the start of
    the next, so a lone trailing CR is held back until the next chunk decides. A `data` line longer than
    `large_data` bytes keeps its value as bytes (see SseEvent): a whole page of events is one such line, and a
    str of it would be as wide as its widest character.
    """

    def __init__(self, large_data: int | None = None) -> None:
        # Bytes after the last line end seen, kept undecoded: a long line (a whole page of events is one `data:`
        # line) is decoded once, when it ends, not re-joined with every chunk (quadratic in its length).
        self._raw = bytearray()
        self._pending_cr = False
        self._large_data = large_data
        self._data: list[str | bytearray] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, chunk: bytes) -> Iterator[SseEvent]:
        if self._pending_cr and chunk:
            self._pending_cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        # CR and LF bytes only ever stand for themselves in UTF-8, so lines can be found before decoding, and
        # each line decoded on its own reads as the whole run would (no multi-byte character spans a line end).
        end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) + 1
        if not end:
            self._raw += chunk
            return
        self._raw += chunk[:end]
        lines = self._raw
        self._raw = bytearray(chunk[end:])
        yield from self._consume(lines)
        if self._raw:
            # The chunk went on after its last line end without an LF there: a CR that ended the text was a
            # line end of its own, and whatever comes next continues the line in `_raw`.
            self._pending_cr = False

    def close(self) -> Iterator[SseEvent]:
        """End of stream: nothing more is dispatched. An undispatched event is dropped (WHATWG), and so is a
        last line without terminator: only an empty line dispatches, and an empty line has a terminator."""
        return iter(())

    def _consume(self, raw: bytearray) -> Iterator[SseEvent]:
        """Every line of `raw`, which ends with a line end."""
        start = 0
        while start < len(raw):
            cr = raw.find(b"\r", start)
            lf = raw.find(b"\n", start)
            end = min(p for p in (cr, lf) if p != -1)
            line_start = start
            if raw[end] == _CR:
                if end + 1 < len(raw):
                    start = end + 2 if raw[end + 1] == _LF else end + 1
                else:
                    self._pending_cr = True  # maybe half of a CRLF split across chunks
                    start = end + 1
            else:
                start = end + 1
            if line_start == end:
                event = self._dispatch()
                if event is not None:
                    yield event
            elif self._line(raw, line_start, end):
                # A large value was copied out: drop the lines read so far, so the page is not held twice
                # while the event is handled.
                del raw[:start]
                start = 0

    def _line(self, raw: bytearray, start: int, end: int) -> bool:
        """The line raw[start:end], not blank; only its value is copied out. True when it was kept as bytes."""
        if raw[start] == _COLON:
            return False  # a comment: rmcp's keep-alives
        colon = raw.find(b":", start, end)
        if colon == -1:
            field, begin = _decoded(raw, start, end), end
        else:
            field = _decoded(raw, start, colon)
            begin = colon + 2 if raw.startswith(b" ", colon + 1, end) else colon + 1
        if field == "data":
            if self._large_data is not None and end - begin > self._large_data:
                self._data.append(raw[begin:end])
                return True
            self._data.append(_decoded(raw, begin, end))
        elif field == "event":
            self._event = _decoded(raw, begin, end)
        elif field == "id":
            value = _decoded(raw, begin, end)
            if "\x00" not in value:
                self._id = value
        return False  # `retry` and unknown fields are ignored

    def _dispatch(self) -> SseEvent | None:
        if not self._data:
            self._event = ""
            return None
        data: str | bytearray
        if len(self._data) == 1:
            data = self._data[0]
        elif all(isinstance(part, str) for part in self._data):
            data = "\n".join(part for part in self._data if isinstance(part, str))
        else:
            # Parts decoded with replacement encode back to valid UTF-8 that decodes to themselves again.
            data = bytearray(b"\n").join(
                part if isinstance(part, bytearray) else part.encode() for part in self._data
            )
        event = SseEvent(data, self._event or "message", self._id)
        self._data = []
        self._event = ""
        return event


_CR, _LF, _COLON = ord("\r"), ord("\n"), ord(":")


def _decoded(raw: bytearray, start: int, end: int) -> str:
    # Through a view: a slice of the bytearray would be one more copy (of a whole page, for a page's line).
    with memoryview(raw) as view:
        return str(view[start:end], "utf-8", "replace")
