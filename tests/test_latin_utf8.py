"""Offsets and errors of a Latin-1 reading turned back into the decoded text's (text/latin_utf8.py), case by case.

Each function against its oracle, the decoded text: characters of every UTF-8 width and at both ends of each
width's range, in every place. tests/test_events.py and tests/test_large_answer.py check the same through the
large page and the large answer as a whole, on generated pages.
"""

from __future__ import annotations

import json
import tracemalloc

import pytest

from noemafed.cortex import events as events_module
from noemafed.cortex.events import EventFormatError, parse_page, read_page
from noemafed.text import latin_utf8
from noemafed.text.latin_utf8 import character_at, characters_before, decoded, json_error

# The first and last character of each UTF-8 width, and a common one of each.
WIDE = ["a", "\x7f", "\x80", "é", "\u07ff", "\u0800", "\u2014", "\uffff", "\U00010000", "😀", "\U0010ffff"]
TEXT = "".join(f"{char}x{char}" for char in WIDE) + "\n" + "".join(WIDE)


def latin(text: str) -> str:
    return text.encode("utf-8").decode("latin-1")


def starts(text: str) -> list[tuple[int, int]]:
    """Each character's index in the text and the byte offset its UTF-8 encoding starts at."""
    return [(index, len(text[:index].encode())) for index in range(len(text) + 1)]


def test_the_character_at_a_byte_offset_is_the_decoded_one() -> None:
    reading = latin(TEXT)
    for index, offset in starts(TEXT):
        assert character_at(reading, offset) == TEXT[index : index + 1], (index, offset)


@pytest.mark.parametrize("char", WIDE)
@pytest.mark.parametrize(
    "after", ["", "y", "\x80", "é", "\u2014", "😀"], ids=["end", "a", "2", "2b", "3", "4"]
)
def test_the_character_at_an_offset_is_whole_whatever_follows(char: str, after: str) -> None:
    """The four bytes read may cut the next character: that is not the character found."""
    assert character_at(latin(char + after), 0) == char


def test_the_character_at_an_offset_reads_only_that_character() -> None:
    """A page's error names one character: it is never decoded from there to the end of the page."""
    reading = latin("é" + "😀" * 1_000_000)
    tracemalloc.start()
    try:
        assert character_at(reading, 0) == "é"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4096, peak


@pytest.mark.parametrize("step", [1, 2, 3, 5, 1024 * 1024])
def test_characters_before_an_offset_are_the_decoded_ones(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Counted a step at a time: small steps cut characters everywhere."""
    monkeypatch.setattr(latin_utf8, "_STEP", step)
    reading = latin(TEXT)
    for index, offset in starts(TEXT):
        assert characters_before(reading, offset) == index, (index, offset)
    assert characters_before(reading, -1) == -1  # before the text: what json_error counts a first line from


@pytest.mark.parametrize("piece", ['"plain"', '"é—😀"', '[1, "\U0010ffff"]', ""])
def test_a_piece_of_whole_characters_decodes_as_its_bytes(piece: str) -> None:
    assert decoded(latin(piece)) == piece


@pytest.mark.parametrize(
    "text",
    [
        "[1,",
        "\n[",  # a newline at the very start: line 2, its column counted from it
        '\n\n{"é": x}',
        '{"😀—": [1,\n "é", \n tru]}',
        '["é😀\x01"]',  # a string's error, after wide characters on its line
        '{"a":\n1}\n😀',  # extra data on the last line
        "😀" * 3 + "\n" + "é" * 3 + "x",
    ],
)
def test_a_json_error_reads_as_the_decoded_texts(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    reading = latin(text)
    with pytest.raises(json.JSONDecodeError) as found:
        json.loads(reading)
    assert json_error(reading, found.value) == str(expected.value)


@pytest.mark.parametrize("char", WIDE[1:])
@pytest.mark.parametrize(
    "template",
    ['[{"id":"x",{c}:1}]', '[{"id":"x" {c}}]', '[{{c}"id":1}]', '[{"id":"x","action":"a"}{c}]', "{c}"],
    ids=["key", "comma", "first-key", "after-event", "start"],
)
def test_a_large_page_names_the_character_it_found_whole(char: str, template: str) -> None:
    """Where a token was expected, the character found is named as the decoded page names it."""
    text = template.replace("{c}", char)
    with pytest.raises(EventFormatError) as expected:
        parse_page(text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(events_module, "LARGE_PAGE_CHARS", -1)
        with pytest.raises(EventFormatError) as found:
            read_page(text.encode())
    assert str(found.value) == str(expected.value)
    assert repr(char) in str(found.value) or char == "\x7f"
