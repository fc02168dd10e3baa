"""Incremental Server-Sent Events parsing (WHATWG): Go never sends it, Rust always does, the SDK uses CRLF."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple


class SseEvent(NamedTuple):
    """One dispatched event; `event` defaults to "message" as the standard says."""

    data: str
    event: str = "message"
    id: str | None = None


class SseParser:
    """Feed bytes as they arrive, get events as soon as each blank line dispatches one.

    Lines may end in CRLF, LF or CR; a CR at the end of one chunk may pair with an LF at the start of
    the next, so a lone trailing CR is held back until the next chunk decides.
    """

    def __init__(self) -> None:
        # Bytes after the last line end seen, kept undecoded: a long line (a whole page of events is one `data:`
        # line) is decoded once, when it ends, not re-joined with every chunk (quadratic in its length).
        self._raw = bytearray()
        self._pending_cr = False
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, chunk: bytes) -> Iterator[SseEvent]:
        if self._pending_cr and chunk:
            self._pending_cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        # CR and LF bytes only ever stand for themselves in UTF-8, so lines can be found before decoding.
        end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) + 1
        if not end:
            self._raw += chunk
            return
        self._raw += chunk[:end]
        # Whole lines: they end in a CR or LF, so no multi-byte character is cut here. (An incremental
        # decoder would copy the bytes first.)
        text = self._raw.decode("utf-8", "replace")
        self._raw = bytearray(chunk[end:])
        yield from self._consume(text)
        if self._raw:
            # The chunk went on after its last line end without an LF there: a CR that ended the text was a
            # line end of its own, and whatever comes next continues the line in `_raw`.
            self._pending_cr = False

    def close(self) -> Iterator[SseEvent]:
        """End of stream: nothing more is dispatched. An undispatched event is dropped (WHATWG), and so is a
        last line without terminator: only an empty line dispatches, and an empty line has a terminator."""
        return iter(())

    def _consume(self, text: str) -> Iterator[SseEvent]:
        """Every line of `text`, which ends with a line end."""
        start = 0
        length = len(text)
        while start < length:
            cr = text.find("\r", start)
            lf = text.find("\n", start)
            end = min(p for p in (cr, lf) if p != -1)
            line_start = start
            if text[end] == "\r":
                if end + 1 < length:
                    start = end + 2 if text[end + 1] == "\n" else end + 1
                else:
                    self._pending_cr = True  # maybe half of a CRLF split across chunks
                    start = end + 1
            else:
                start = end + 1
            event = self._line(text, line_start, end)
            if event is not None:
                yield event

    def _line(self, text: str, start: int, end: int) -> SseEvent | None:
        """The line text[start:end]; only its value is copied out (a `data:` line may be a whole page)."""
        if start == end:
            return self._dispatch()
        if text[start] == ":":
            return None  # a comment: rmcp's keep-alives
        colon = text.find(":", start, end)
        if colon == -1:
            field, value = text[start:end], ""
        else:
            field = text[start:colon]
            begin = colon + 2 if text.startswith(" ", colon + 1, end) else colon + 1
            value = text[begin:end]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\x00" not in value:
            self._id = value
        return None  # `retry` and unknown fields are ignored

    def _dispatch(self) -> SseEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SseEvent("\n".join(self._data), self._event or "message", self._id)
        self._data = []
        self._event = ""
        return event
