"""Go's text conventions that noema's interface strings depend on: %q quoting, json.Marshal, RFC3339."""

from __future__ import annotations

import json
from datetime import UTC, datetime

# Go's json.Marshal escapes these inside strings so the output is safe to embed in HTML.
_GO_JSON_HTML_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


_GO_SHORT_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def go_quote(text: str) -> str:
    """Go's %q / strconv.Quote, so names render as noema renders them (`"peer-a"`)."""
    out = ['"']
    for char in text:
        code = ord(char)
        short = _GO_SHORT_ESCAPES.get(char)
        if short is not None:
            out.append(short)
        elif 0xD800 <= code <= 0xDFFF:
            # Go sees invalid UTF-8 here and writes it as a replacement; keep the text printable.
            out.append("\\ufffd")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif char.isprintable():
            # Python's isprintable matches Go's IsPrint: letters, marks, numbers, punctuation,
            # symbols and the ASCII space; other spaces and format characters are escaped.
            out.append(char)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def go_json_dumps(value: object) -> str:
    """Compact JSON the way Go's encoding/json writes it (key order as given, HTML-safe escapes)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # The escaped characters can only occur inside JSON strings, so a plain replace is exact.
    for raw, escaped in _GO_JSON_HTML_ESCAPES.items():
        text = text.replace(raw, escaped)
    return text


def rfc3339_now() -> str:
    """Now in UTC at second precision with a Z suffix, the only timestamp form noema writes."""
    return format_rfc3339(datetime.now(UTC))


def format_rfc3339(moment: datetime) -> str:
    """A datetime as noema's RFC3339 UTC second-precision text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
