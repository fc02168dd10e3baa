"""Incremental Server-Sent Events parsing (WHATWG): Go never sends it, Rust always does, the SDK uses CRLF."""

from __future__ import annotations

import codecs
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
        self._buffer = ""
        # A multi-byte character may be split between two chunks.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending_cr = False
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, chunk: bytes) -> Iterator[SseEvent]:
        text = self._decoder.decode(chunk)
        if self._pending_cr:
            self._pending_cr = False
            if text.startswith("\n"):
                text = text[1:]
        yield from self._consume(self._buffer + text)

    def close(self) -> Iterator[SseEvent]:
        """End of stream: a final line without terminator counts; an undispatched event is dropped."""
        self._buffer += self._decoder.decode(b"", final=True)
        if self._buffer:
            self._line(self._buffer)
            self._buffer = ""
        return iter(())

    def _consume(self, text: str) -> Iterator[SseEvent]:
        start = 0
        length = len(text)
        while True:
            cr = text.find("\r", start)
            lf = text.find("\n", start)
            if cr == -1 and lf == -1:
                break
            end = min(p for p in (cr, lf) if p != -1)
            line = text[start:end]
            if text[end] == "\r":
                if end + 1 < length:
                    start = end + 2 if text[end + 1] == "\n" else end + 1
                else:
                    self._pending_cr = True  # maybe half of a CRLF split across chunks
                    start = end + 1
            else:
                start = end + 1
            event = self._line(line)
            if event is not None:
                yield event
        self._buffer = text[start:]

    def _line(self, line: str) -> SseEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: rmcp's keep-alives
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
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
