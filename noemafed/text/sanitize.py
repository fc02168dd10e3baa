"""Text that came from a peer, made safe to store (valid UTF-8) and to print (one line, no terminal escapes)."""

from __future__ import annotations

import functools
import re

# The patterns are compiled on first use (functools.cache): their Unicode ranges cost about 0.4 ms to compile,
# at every start of every command, and most runs never meet a text from a peer.


# A str decoded from JSON can hold lone surrogates (`"\ud800"` is valid JSON); UTF-8 cannot, so SQLite, files and
# stdout refuse them. Go's decoder turns each into U+FFFD; so do we.
@functools.cache
def _surrogate() -> re.Pattern[str]:
    return re.compile("[\ud800-\udfff]")


# C0 and C1 controls, DEL, and the format characters that reorder or hide text (bidi overrides, zero widths).
@functools.cache
def _unprintable() -> re.Pattern[str]:
    return re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def scrub(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD, as Go decodes it; unchanged otherwise."""
    surrogate = _surrogate()
    return surrogate.sub("\ufffd", text) if surrogate.search(text) else text


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


# Longer peer text is cut: one cron mail line per peer, one health record per peer, whatever a peer sends.
MAX_LINE = 1000
CUT_MARK = "… ({count} more characters)"


def one_line(text: str, limit: int = MAX_LINE) -> str:
    """Peer text fit for a log or report line: scrubbed, with line breaks and terminal controls escaped, and
    cut after `limit` characters."""
    text = short(text, limit)
    unprintable = _unprintable()
    return unprintable.sub(_escape, text) if unprintable.search(text) else text


def short(text: str, limit: int = 200) -> str:
    """A short field from a peer (a version, a name) as stored: scrubbed and cut, never a page of text."""
    return scrub(text if len(text) <= limit else text[:limit] + CUT_MARK.format(count=len(text) - limit))
