"""A large JSON-RPC answer read with its page as UTF-8 bytes, never as one str of the whole answer.

CPython stores a str at 1, 2 or 4 bytes a character, by its widest character: a 95 MiB answer with one emoji
decodes to a str of 380 MiB, and the page text parsed out of it is as wide again. Here the answer's big `text`
string is found in the bytes and unescaped at the byte level into the UTF-8 bytes of the page, and only the small
rest of the envelope is parsed as JSON: the answer and the page are each held once, in bytes (docs/performance.md).

The result is exactly what the whole answer decoded and parsed would give (the text then encoded to UTF-8, with a
lone surrogate as U+FFFD, as the client scrubs it): anything this path cannot prove it reads that way (not UTF-8,
not JSON, the big string somewhere else than a tool result's text, a byte-order mark) is left to the caller's
ordinary parse, which also words every error (tests/test_large_answer.py compares the two on arbitrary answers).
"""

from __future__ import annotations

import codecs
import json
import os
import re
from json.decoder import scanstring  # type: ignore[attr-defined]  # C-accelerated; untyped in typeshed
from typing import Any

from noemafed.text.latin_utf8 import json_error

__all__ = ["large_answer_error", "read_large_answer"]

_DECODER = json.JSONDecoder()  # what json.loads uses when given no options

# Where a tool result's text string may start: the key can only be a key, not text inside another string (there
# every '"' is escaped), so each match starts a real string token in a valid answer. Only the first few are looked
# at: an answer holds one or two, and a peer listing millions would otherwise cost a Python loop each.
_TEXT_MEMBER = re.compile(rb'"text"[ \t\n\r]*:[ \t\n\r]*"')
_MAX_CANDIDATES = 16
# The rest of a JSON string token after its opening quote (any escape: validated when unescaped).
_STRING_REST = re.compile(rb'(?:[^"\\]++|\\.)*+"', re.DOTALL)
# A run of string content whose unescaping only yields bytes as they are or ASCII: anything but '"' and '\', and
# every escape but \u escapes of U+0080 and above (decoded one at a time below), before which it stops. The C
# scanner then checks the run as it checks any string (no raw control character, no unknown escape).
_NARROW_RUN = re.compile(rb'(?:[^"\\]++|\\[^u]|\\u00[0-7][0-9a-fA-F])*+')
_WIDE_ESCAPE = re.compile(rb"\\u([0-9a-fA-F]{4})")
# Three bytes that encode a surrogate (what `surrogatepass` lets through); the client makes each U+FFFD.
_ENCODED_SURROGATE = re.compile(rb"\xed[\xa0-\xbf][\x80-\xbf]")
_REPLACEMENT = "\ufffd".encode()
# Content is unescaped this many bytes at a time, so what a step holds beside the answer stays small.
_STEP = 1024 * 1024


def read_large_answer(body: bytearray, errors: str) -> Any:
    """The JSON-RPC message in `body` with the big result text as its UTF-8 bytes, or None to parse it as usual.

    `errors` is how the usual parse decodes the body: "surrogatepass" for an HTTP body (as json.loads does), "strict"
    for an SSE event's data (decoded with replacement there, which only equals this on valid UTF-8). On success the
    body is emptied, the caller's buffer too, so the page's bytes are what is left; on None it is untouched.
    """
    if json.detect_encoding(body) != "utf-8":
        return None  # a byte-order mark, UTF-16 or UTF-32: rare enough to take the usual path
    token = _page_token(body)
    if token is None:
        return None
    start, end = token
    # Unguessable, so no other string in the answer can equal it: secrets.token_hex(16) without the import, which
    # loads hmac, hashlib and OpenSSL's libcrypto (1 ms of every `sync` start, for an answer over 8 MiB).
    marker = os.urandom(16).hex()
    rest = body[:start] + f'"{marker}"'.encode() + body[end:]
    try:
        message = _DECODER.decode(rest.decode("utf-8", errors))
    except (ValueError, RecursionError):
        return None  # not JSON: the usual parse words the error
    item = _text_item(message, marker)
    if item is None:
        return None
    with memoryview(body) as view:
        page = _unescaped(view[start + 1 : end - 1], errors)
    if page is None:
        return None
    body.clear()
    if errors == "surrogatepass" and _ENCODED_SURROGATE.search(page):
        page = bytearray(_ENCODED_SURROGATE.sub(_REPLACEMENT, page))
    item["text"] = page
    return message


def _page_token(body: bytearray) -> tuple[int, int] | None:
    """The longest string that follows a `"text":` key: its opening quote's offset and the offset after its end."""
    best: tuple[int, int] | None = None
    for number, member in enumerate(_TEXT_MEMBER.finditer(body)):
        if number == _MAX_CANDIDATES:
            break
        start = member.end() - 1  # the opening quote
        rest = _STRING_REST.match(body, start + 1)
        if rest is not None and (best is None or rest.end() - start > best[1] - best[0]):
            best = (start, rest.end())
    return best


def _text_item(message: Any, marker: str) -> dict[str, Any] | None:
    """The content item of `message["result"]` whose text is the marker, if that is where the marker ended up."""
    result = message.get("result") if isinstance(message, dict) else None
    content = result.get("content") if isinstance(result, dict) else None
    if not isinstance(content, list):
        return None
    for item in content:
        if isinstance(item, dict) and item.get("text") == marker:
            return item
    return None


def _unescaped(content: memoryview, errors: str) -> bytearray | None:
    """The UTF-8 bytes of a JSON string's content (between its quotes); None if it is not valid.

    Valid means what the usual parse accepts: UTF-8 (with encoded surrogates under "surrogatepass"), no raw control
    character, only JSON's escapes. A \\u escape of a lone surrogate becomes U+FFFD, a pair the character it encodes.
    """
    check = codecs.getincrementaldecoder("utf-8")(errors)
    # One buffer grown in place (realloc; mremap once it is large), not pieces joined at the end: the pieces
    # would be held twice while joined, and their freed heap memory stays with the process.
    unescaped = bytearray()
    position, length = 0, len(content)
    try:
        while position < length:
            run = _NARROW_RUN.match(content, position, min(position + _STEP, length))
            stop = run.end() if run else position  # the pattern always matches, possibly empty
            if stop > position:
                # Latin-1 keeps every byte as one character, and the C scanner undoes the escapes, which here
                # only yield ASCII: encoding back to Latin-1 gives the run's bytes, unescaped. The run holds no
                # unescaped quote, so the scanner ends at the one added.
                text = scanstring(str(content[position:stop], "latin-1") + '"', 0, True)[0]
                piece = text.encode("latin-1")
                position = stop
            else:
                decoded = _wide_escape(content, position)
                if decoded is None:
                    return None
                piece, position = decoded
            check.decode(piece)
            unescaped += piece
        check.decode(b"", True)
    except ValueError:  # UnicodeDecodeError; or the scanner's own refusal, not reached after _NARROW_RUN
        return None
    return unescaped


def _wide_escape(content: memoryview, position: int) -> tuple[bytes, int] | None:
    """The UTF-8 of the \\u escape at `position` (a surrogate pair: both escapes) and the offset after it.

    As the C scanner reads it: a high surrogate pairs with a \\u escape right after it when that is a low one;
    a surrogate that does not pair is U+FFFD, as the client scrubs it.
    """
    first = _WIDE_ESCAPE.match(content, position)
    if first is None:
        return None
    code, after = int(first.group(1), 16), first.end()
    if 0xD800 <= code <= 0xDBFF:
        second = _WIDE_ESCAPE.match(content, after)
        low = int(second.group(1), 16) if second else 0
        if second and 0xDC00 <= low <= 0xDFFF:
            return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)).encode(), second.end()
    if 0xD800 <= code <= 0xDFFF:
        return _REPLACEMENT, after
    return chr(code).encode(), after


def large_answer_error(body: bytearray, errors: str) -> str | None:
    """The text of the error json.loads(body) raises, found without a str as wide as the body; None when it
    would not raise, or for an encoding other than plain UTF-8 (the usual parse then runs as it would).

    For an answer read_large_answer could not read: one that is refused anyway would otherwise be held decoded, at
    up to 4 bytes a character, and again in the part parsed before the error. `errors` as for read_large_answer:
    under "strict" (SSE data, decoded with replacement) a body that is not UTF-8 is left to the usual parse. The
    body is emptied when this returns an error; it is left as it was otherwise.
    """
    if json.detect_encoding(body) != "utf-8":
        return None
    bad = _first_bad_step(body, errors)
    if bad is not None:
        if errors == "strict":
            return None
        error = _decoding_error(body, bad)
        body.clear()
        return error
    # Valid UTF-8 read as Latin-1: the same JSON structure, every character one byte, so the scanner fails where
    # (and as) it fails on the decoded text, at a byte offset turned into a character offset below.
    latin = body.decode("latin-1")
    body.clear()
    try:
        _DECODER.decode(latin)
    except json.JSONDecodeError as exc:
        return json_error(latin, exc)
    except RecursionError as exc:  # nesting deeper than the parser's stack: its text names no offset
        return str(exc)
    body += latin.encode("latin-1")  # valid JSON the large path did not read: back for the usual parse
    return None


def _first_bad_step(body: bytearray, errors: str) -> int | None:
    """Where decoding the body first fails, to within a step of _STEP bytes: the offset of the step's first
    character (a character the step before cut begins there), or None if it does not fail."""
    check = codecs.getincrementaldecoder("utf-8")(errors)
    with memoryview(body) as view:
        for start in range(0, len(body), _STEP):
            pending = len(check.getstate()[0])  # the start of a character the step before cut
            try:
                check.decode(view[start : start + _STEP], start + _STEP >= len(body))
            except UnicodeDecodeError:
                return start - pending
    return None


def _decoding_error(body: bytearray, start: int) -> str:
    """The text of the UnicodeDecodeError body.decode() raises, whose first error is in the step at `start`."""
    window = bytes(
        body[start : start + _STEP + 8]
    )  # the step, what it continued, and enough to end the error
    try:
        window.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        first, end = start + exc.start, start + exc.end
        # UnicodeDecodeError's own wording (Objects/exceptions.c), at the body's offsets.
        if end == first + 1:
            return f"'utf-8' codec can't decode byte 0x{body[first]:02x} in position {first}: {exc.reason}"
        return f"'utf-8' codec can't decode bytes in position {first}-{end - 1}: {exc.reason}"
    raise AssertionError("the step decoded this time")  # pragma: no cover (bytes do not change)
