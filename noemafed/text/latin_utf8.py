"""Offsets and errors in the Latin-1 reading of UTF-8 bytes, as the decoded text would give them.

A large page or answer is parsed over `bytes.decode("latin-1")`: one character a byte, so the JSON structure (all
ASCII) sits where it sits in the bytes, and no str as wide as the widest character is ever made (up to 4 bytes a
character for the whole text, when one emoji is in it). An error found there must still read as the decoded
text's error: these turn byte offsets into character offsets, and read a whole character back at an offset.
"""

from __future__ import annotations

import json

_STEP = 1024 * 1024  # characters counted a slice at a time, so no copy of the whole text is made
_CONTINUATION = bytes(range(0x80, 0xC0))
_NOT_CONTINUATION = bytes(set(range(256)) - set(_CONTINUATION))


def characters_before(latin: str, offset: int) -> int:
    """How many characters the UTF-8 bytes before `offset` decode to: bytes minus continuation bytes."""
    count = 0
    for start in range(0, offset, _STEP):
        count += len(
            latin[start : min(start + _STEP, offset)].encode("latin-1").translate(None, _NOT_CONTINUATION)
        )
    return offset - count


def character_at(latin: str, offset: int) -> str:
    """The character whose UTF-8 encoding starts at `offset` ("" at the end), decoded: the first of the four
    bytes there (a character's most), whatever the next character that the four may cut."""
    return latin[offset : offset + 4].encode("latin-1").decode("utf-8", "replace")[:1]


def decoded(latin: str) -> str:
    """A piece of the Latin-1 reading that holds whole characters (a quoted key, a value) as its bytes decode."""
    return latin if latin.isascii() else latin.encode("latin-1").decode("utf-8")


def json_error(latin: str, exc: json.JSONDecodeError) -> str:
    """The JSONDecodeError's text as the decoded text would give it: line, column and offset in characters."""
    position = characters_before(latin, exc.pos)
    # Counted from the last newline before the error; without one, rfind's -1 is the place before the text
    # (characters_before(latin, -1) is -1), as json counts from -1 then.
    newline = latin.rfind("\n", 0, exc.pos)
    column = position - characters_before(latin, newline)
    line = latin.count("\n", 0, exc.pos) + 1
    return f"{exc.msg}: line {line} column {column} (char {position})"
