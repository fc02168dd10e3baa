"""Peer text made safe to store and to print."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from noemafed.text.sanitize import one_line, scrub


def test_scrub_replaces_each_lone_surrogate_like_go() -> None:
    assert scrub("x\ud800y\udfffz") == "x\ufffdy\ufffdz"
    assert scrub("plain \U0001f600 text") == "plain \U0001f600 text"


def test_one_line_escapes_line_breaks_and_terminal_controls() -> None:
    assert one_line("refused\nfix: ok") == "refused\\nfix: ok"
    assert one_line("name\x1b]0;owned\x07") == "name\\x1b]0;owned\\x07"
    assert one_line("a\u202eb\r\tc\x85") == "a\\u202eb\\r\\tc\\x85"
    assert one_line('keeps "quotes" and \\ and é') == 'keeps "quotes" and \\ and é'


@given(st.text())
def test_one_line_output_is_one_printable_utf8_line(text: str) -> None:
    line = one_line(text)
    line.encode("utf-8")  # no lone surrogate left
    assert not any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in line)
    if text.isprintable() and text == scrub(text) and not any(0x200B <= ord(c) <= 0xFEFF for c in text):
        assert line == text


def test_long_peer_text_is_cut_and_says_how_much_was_left_out() -> None:
    from noemafed.text.sanitize import short

    assert one_line("x" * 1005) == "x" * 1000 + "\u2026 (5 more characters)"
    assert one_line("x" * 1000) == "x" * 1000
    assert short("v" * 250) == "v" * 200 + "\u2026 (50 more characters)"
    assert short("1.2.3\ud800") == "1.2.3\ufffd"
