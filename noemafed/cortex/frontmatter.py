"""The YAML subset noema writes in cortex.md and trace files: parse and emit it, nothing else.

noema writes its YAML with Go's gopkg.in/yaml.v3 (4-space indent, sequences indented under their key) or
Rust's serde_yaml (2-space indent, sequences level with their key). Both read each other's output, and so
does this module.

Values stay text. A general YAML loader guesses types (PyYAML turns `verify: off` into False and
`created: 2025-03-29` into a date); here every scalar comes back as a string, and the caller converts by
schema. Unquoted scalars come back as `Plain` (a str subclass) so that a rewrite can write them unquoted again
and every loader reads them exactly as before. An empty `Plain("")` is YAML's null (`key:` with nothing after
it); `~` and `null` stay the texts `Plain("~")` and `Plain("null")`. Mapping keys are always plain `str`.

`dumps` writes a `str` unquoted only when every YAML 1.1 and 1.2 loader reads it back as that same string,
so such a str reads back as a `Plain` of the same text; a str that needs quotes reads back as a str.

Anything outside the subset raises `FrontmatterError` with the 1-based line number within the YAML text: it is
never misread silently. Tabs are allowed only inside quoted scalars, block scalars and comments: elsewhere
PyYAML, libyaml and the YAML spec disagree about them, and neither Go nor Rust writes them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import TypeAlias

from noemafed.errors import FrontmatterError

__all__ = [
    "MISSING_DELIMITER",
    "UNTERMINATED",
    "Emittable",
    "Plain",
    "Value",
    "dumps",
    "format_str",
    "join_manifest",
    "join_trace",
    "loads",
    "split_manifest",
    "split_trace",
]


class Plain(str):
    """A scalar unquoted in the source; whether it means null, bool or number is the caller's call."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Plain({str.__repr__(self)})"


Value: TypeAlias = "dict[str, Value] | list[Value] | str"
"""What `loads` returns: mappings (insertion ordered), lists and string scalars (`Plain` when unquoted)."""

Emittable: TypeAlias = "Mapping[str, Emittable] | Sequence[Emittable] | str | int"
"""What `dumps` accepts: mappings, lists or tuples, str (`Plain` included), int and bool."""

# Error texts for the framing helpers (cortex.md §5.1); tests and callers match on them.
MISSING_DELIMITER = "missing frontmatter delimiter"
UNTERMINATED = "unterminated frontmatter"

_SPACE_OR_TAB = " \t"
_TAB_MESSAGE = "tab character {where} (only spaces are allowed outside quoted and block scalars)"
# Characters that cannot start a plain scalar (YAML c-indicator); `-?:` may when a non-space follows.
_INDICATORS = frozenset("-?:,[]{}#&*!|>'\"%@`")
_WHY_INDICATOR = {
    "&": "anchors (&) are not supported",
    "*": "aliases (*) are not supported",
    "!": "tags (!) are not supported",
    "%": "'%' cannot start a plain scalar (directives are not supported)",
    "@": "'@' is reserved and cannot start a plain scalar",
    "`": "'`' is reserved and cannot start a plain scalar",
    ",": "',' cannot start a plain scalar",
    "]": "']' without a matching '['",
    "}": "'}' without a matching '{'",
    "?": "complex keys ('? ') are not supported",
}

# Double-quoted escapes (YAML 1.2 §5.7) that stand for one character.
_SIMPLE_ESCAPES = {
    "0": "\0",
    "a": "\a",
    "b": "\b",
    "t": "\t",
    "\t": "\t",
    "n": "\n",
    "v": "\v",
    "f": "\f",
    "r": "\r",
    "e": "\x1b",
    " ": " ",
    '"': '"',
    "/": "/",
    "\\": "\\",
    "N": "\x85",
    "_": "\xa0",
    "L": "\u2028",
    "P": "\u2029",
}
_HEX_ESCAPE_WIDTH = {"x": 2, "u": 4, "U": 8}
# Characters the emitter escapes by name; every other unsafe character becomes \xXX, \uXXXX or \UXXXXXXXX.
_EMIT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\0": "\\0",
    "\a": "\\a",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\v": "\\v",
    "\f": "\\f",
    "\r": "\\r",
    "\x1b": "\\e",
    "\x85": "\\N",
    "\u2028": "\\L",
    "\u2029": "\\P",
}

# string.hexdigits, without importing `string` (which compiles a pattern of its own at import).
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")

# The emitter's patterns below are compiled on first use (functools.cache): compiling is pure Python, about a
# millisecond for all of them at every start, and the commands that only read frontmatter (`status`, a caught-up
# `sync --once`) never emit any.

# Texts some loader (YAML 1.1 or 1.2, PyYAML, yaml.v3, serde_yaml) resolves to null, bool, merge or value.
_TYPED_WORDS = frozenset({"", "~", "null", "y", "n", "yes", "no", "on", "off", "true", "false", "=", "<<"})


# A superset of every number syntax of those loaders: YAML 1.1 ints (0b, 0 octal, 0x, `_`, sexagesimal) and
# floats, YAML 1.2 core (0o, 1e3), Go's ParseInt base 0, and .inf/.nan in any case.
@functools.cache
def _number_like() -> re.Pattern[str]:
    return re.compile(
        r"""[-+]?(?:
            [0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?
          | \.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
          | 0b[01_]+ | 0o[0-7_]+ | 0x[0-9a-f_]+
          | [0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?
          | \.inf | \.nan
        )""",
        re.VERBOSE | re.IGNORECASE,
    )


# libyaml (yaml.v3, serde_yaml) and PyYAML refuse implicit keys longer than this.
_MAX_KEY_LENGTH = 1024


# YAML 1.1 timestamps start like this; quoting every such prefix is a safe superset.
@functools.cache
def _date_prefix() -> re.Pattern[str]:
    return re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}")


@functools.cache
def _plain_chars() -> re.Pattern[str]:
    """Exactly the characters `_is_plain_char` accepts, for a whole-text check at C speed.

    Its Unicode ranges alone take about 3 ms to compile.
    """
    return re.compile(r"[\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]*")


# The emitter's fast path: a text this matches is plain-safe, and `_is_plain_safe_full` answers for every
# other text (tests/test_frontmatter.py checks with hypothesis that the fast path never calls an unsafe text
# plain). ASCII only, so `lower()` and `(?i)` fold alike. Why each part keeps the full check's verdict:
# - a letter first is no whitespace, indicator, `...`, number or date (those start with a digit, sign or
#   '.'); the look-ahead leaves out the typed words, which are all letters;
# - a digit run other than 4 long, then '-', is no date prefix (exactly 4 digits, then '-') and no number
#   (no number syntax has a '-' right after a digit);
# - after that: any printable ASCII but ':' and '#', which are fine in the middle; ':' only before a
#   non-space (no `: `, no final ':'); '#' only after a non-space (no ` #`); a space only before a
#   character other than '#' (no ` #`, no final space).
# The alternatives start with different characters, so every text splits into them one way only: the
# possessive runs (`++`, `*+`) never give up a match that backtracking could have used, and run at C speed.
@functools.cache
def _fast_plain() -> re.Pattern[str]:
    return re.compile(
        r"""(?:
            (?!(?i:y|n|yes|no|on|off|true|false|null)\Z)[A-Za-z]
          | (?:[0-9]{1,3}|[0-9]{5,})-
        )(?:
            [\x21\x22\x24-\x39\x3b-\x7e]++
          | :(?=[^ ])
          | (?<![ ])\#
          | [ ](?=[^\#])
        )*+""",
        re.VERBOSE | re.ASCII,
    )


# The other common case, RFC3339 timestamps: a date prefix is never plain-safe, and printable ASCII without
# '"' and '\' is double-quoted as is.
@functools.cache
def _quoted_as_is_date() -> re.Pattern[str]:
    return re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}[\x20\x21\x23-\x5b\x5d-\x7e]*+")


# Double-quoting changes nothing inside such a text: printable ASCII without '"' and '\'.
@functools.cache
def _quote_as_is() -> re.Pattern[str]:
    return re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")


# ----------------------------------------------------------------------------------------------------------
# Framing


def split_manifest(text: str) -> tuple[str, str]:
    """Split cortex.md into YAML and body as Go reads it; an unframed file is all YAML (older cortexes)."""
    lines = text.split("\n")
    if _strip_cr(lines[0]) != "---":
        return text, ""
    for index in range(1, len(lines)):
        if _strip_cr(lines[index]) == "---":
            yaml_text = "".join(line + "\n" for line in lines[1:index])
            body = "\n".join(lines[index + 1 :])
            return yaml_text, _drop_leading_blank_line(body)
    return text, ""


def join_manifest(yaml_text: str, body: str) -> str:
    """Frame cortex.md as Go writes it: delimiters, then one blank line and the body when there is one."""
    framed = f"---\n{_with_final_newline(yaml_text)}---\n"
    trimmed = body.rstrip("\n")
    return f"{framed}\n{trimmed}\n" if trimmed else framed


def split_trace(text: str) -> tuple[str, str]:
    """Split a trace file strictly (cortex.md §5.1); the body is returned untouched because it is hashed."""
    if not text.startswith("---\n"):
        raise FrontmatterError(MISSING_DELIMITER)
    # The search starts after the opening line, so `---\n---\n` (no YAML at all) is unterminated.
    end = text.find("\n---\n", 4)
    if end < 0:
        raise FrontmatterError(UNTERMINATED)
    body = text[end + len("\n---\n") :]
    return text[4 : end + 1], body[1:] if body.startswith("\n") else body


def join_trace(yaml_text: str, body: str) -> str:
    """Frame a trace file byte for byte as noema does: delimiters, one empty line, the body verbatim."""
    return f"---\n{_with_final_newline(yaml_text)}---\n\n{body}"


def _strip_cr(line: str) -> str:
    """A delimiter line may carry a CR when the file was saved with CRLF line ends."""
    return line[:-1] if line.endswith("\r") else line


def _drop_leading_blank_line(body: str) -> str:
    """Go writes one blank line between the closing delimiter and the body; reading removes just that one."""
    for blank in ("\n", "\r\n"):
        if body.startswith(blank):
            return body[len(blank) :]
    return body


def _with_final_newline(yaml_text: str) -> str:
    """Keep the closing delimiter on its own line even when the YAML text lacks its final newline."""
    return yaml_text if not yaml_text or yaml_text.endswith("\n") else yaml_text + "\n"


# ----------------------------------------------------------------------------------------------------------
# Parsing


def loads(yaml_text: str) -> dict[str, Value]:
    """Parse the YAML subset into text-only values; an empty document is an empty mapping."""
    parser = _Parser(yaml_text)
    try:
        return parser.parse_document()
    except RecursionError:
        raise FrontmatterError("nesting is too deep", line=parser.pos + 1) from None


class _Parser:
    """Recursive descent over lines; `pos` is the index of the first line not yet consumed."""

    def __init__(self, text: str) -> None:
        text = text.removeprefix("\ufeff").replace("\r\n", "\n")
        self.lines = text.split("\n")
        # A final newline yields one empty last element; drop it so that `ends_with_break` tells the truth.
        self.ends_with_break = text.endswith("\n")
        if self.ends_with_break:
            self.lines.pop()
        self.pos = 0
        self.plain_line: int | None = None  # line of the last value read if it was a plain scalar
        for index, line in enumerate(self.lines):
            if "\r" in line:
                raise FrontmatterError("carriage return without line feed", line=index + 1)

    # -- line helpers ---------------------------------------------------------------------------------------

    def error(self, index: int, message: str) -> FrontmatterError:
        """Build the error for line `index` (0-based here, 1-based in the message)."""
        return FrontmatterError(message, line=index + 1)

    def reject_tab(self, index: int, text: str, where: str) -> None:
        """Tabs outside quoted and block scalars are read differently by different loaders; refuse them."""
        if "\t" in text:
            raise self.error(index, _TAB_MESSAGE.format(where=where))

    def next_significant(self) -> int | None:
        """Skip blank and comment lines; return the index of the next line that carries content."""
        while self.pos < len(self.lines):
            line = self.lines[self.pos]
            stripped = line.lstrip(" ")
            self.reject_tab(self.pos, stripped[:1], "used for indentation")
            if stripped and not stripped.startswith("#"):
                self.check_markers(self.pos)
                return self.pos
            self.pos += 1
        return None

    def check_markers(self, index: int) -> None:
        """Document markers and directives belong to multi-document YAML, which frontmatter never is."""
        line = self.lines[index]
        for marker in ("---", "..."):
            if line.startswith(marker) and (len(line) == 3 or line[3] in _SPACE_OR_TAB):
                raise self.error(index, f"document marker '{marker}' is not supported (one document only)")
        if line.startswith("%"):
            raise self.error(index, "directives ('%') are not supported")

    def indent_of(self, index: int) -> int:
        """Indentation is spaces only; a tab there would make the nesting ambiguous."""
        line = self.lines[index]
        indent = len(line) - len(line.lstrip(" "))
        self.reject_tab(index, line[indent : indent + 1], "used for indentation")
        return indent

    def indentation_error(self, index: int, expected: int, found: int) -> FrontmatterError:
        """Name the likely cause: a deeper line after a plain value is a multi-line plain scalar in YAML."""
        message = f"unexpected indentation: expected {expected} spaces, found {found}"
        if self.plain_line is not None and found > self.indent_of(self.plain_line):
            message += " (multi-line plain scalars are not supported; quote the value)"
        return self.error(index, message)

    # -- block structure ------------------------------------------------------------------------------------

    def parse_document(self) -> dict[str, Value]:
        """The top level must be a mapping (or `{}`); nothing may follow it."""
        index = self.next_significant()
        if index is None:
            return {}
        indent = self.indent_of(index)
        content = self.lines[index][indent:]
        if _is_sequence_item(content):
            raise self.error(index, "the top level must be a mapping, found a sequence item")
        result: dict[str, Value]
        if _strip_comment(content) == "{}":
            self.pos = index + 1
            result = {}
        else:
            result = self.parse_mapping(indent)
        leftover = self.next_significant()
        if leftover is not None:
            raise self.error(leftover, "unexpected indentation: less indented than the first line")
        return result

    def parse_mapping(self, indent: int) -> dict[str, Value]:
        """Read `key: value` lines at exactly `indent` until a line is less indented."""
        result: dict[str, Value] = {}
        while (index := self.next_significant()) is not None:
            found = self.indent_of(index)
            if found < indent:
                break
            if found > indent:
                raise self.indentation_error(index, indent, found)
            content = self.lines[index][indent:]
            if _is_sequence_item(content):
                raise self.error(index, "expected 'key: value', found a sequence item")
            key, after_colon = self.parse_key(index, indent)
            if key in result:
                raise self.error(index, f"duplicate key {key!r}")
            result[key] = self.parse_value(index, after_colon, indent, key_value=True)
        return result

    def parse_sequence(self, indent: int) -> list[Value]:
        """Read `- item` lines at exactly `indent`; a non-item line at that indent belongs to the parent."""
        items: list[Value] = []
        while (index := self.next_significant()) is not None:
            found = self.indent_of(index)
            if found < indent:
                break
            if found > indent:
                raise self.indentation_error(index, indent, found)
            if not _is_sequence_item(self.lines[index][indent:]):
                break
            items.append(self.parse_item(index, indent))
        return items

    def parse_item(self, index: int, indent: int) -> Value:
        """One sequence item; `- key: v` and `- - v` open a compact block at the column after the dash."""
        line = self.lines[index]
        column = indent + 1
        while line[column : column + 1] == " ":
            column += 1
        if line[column : column + 1] == "\t":
            raise self.error(index, "tab character after '-' (use spaces)")
        content = line[column:]
        if content and (_is_sequence_item(content) or self.find_key_colon(index, content) is not None):
            # Blank out the dash: the compact block then reads like a block whose first line is at `column`.
            self.lines[index] = " " * column + content
            if _is_sequence_item(content):
                return self.parse_sequence(column)
            return self.parse_mapping(column)
        return self.parse_value(index, indent + 1, indent, key_value=False)

    def parse_key(self, index: int, indent: int) -> tuple[str, int]:
        """Return the key of a mapping line and the column just after its ':'."""
        line = self.lines[index]
        content = line[indent:]
        colon = self.find_key_colon(index, content)
        if colon is None:
            if content[0] not in "\"'":
                # Name the construct (`? `, `&`, `!`) when there is one.
                self.check_plain_start(index, content)
            raise self.error(index, "expected 'key: value' but found no ':'")
        if content[0] in "\"'":
            key, end = _scan_quoted(content, 0, index + 1)
            self.reject_tab(index, content[end:colon], "before ':'")
            return key, indent + colon + 1
        self.reject_tab(index, content[:colon], "in a key")
        raw = content[:colon].rstrip(" ")
        if not raw:
            raise self.error(index, "empty key")
        self.check_plain_start(index, raw)
        return raw, indent + colon + 1

    def find_key_colon(self, index: int, content: str) -> int | None:
        """Index of the ':' that makes `content` a `key: value` line, or None when it is not one."""
        if content[:1] in ('"', "'"):
            _, end = _scan_quoted(content, 0, index + 1)
            rest = content[end:].lstrip(_SPACE_OR_TAB)
            colon = len(content) - len(rest)
            return colon if _is_value_colon(content, colon) else None
        if content[:1] in ("[", "{", "#"):
            return None
        for position, char in enumerate(content):
            if char == "#" and position > 0 and content[position - 1] in _SPACE_OR_TAB:
                return None
            if _is_value_colon(content, position):
                return position
        return None

    # -- values ---------------------------------------------------------------------------------------------

    def parse_value(self, index: int, column: int, parent_indent: int, *, key_value: bool) -> Value:
        """Parse what follows ':' or '-' at `column`: scalar, flow sequence, block scalar or nested block."""
        line = self.lines[index]
        rest = line[column:].lstrip(" ")
        start = len(line) - len(rest)
        self.pos = index + 1
        self.plain_line = None
        self.reject_tab(index, rest[:1], "after ':' or '-'")
        if not rest or rest.startswith("#"):
            return self.parse_nested_block(parent_indent, same_indent_sequence=key_value)
        first = rest[0]
        if first in "|>":
            return self.parse_block_scalar(index, start, parent_indent)
        if first in "\"'":
            value, end = _scan_quoted(line, start, index + 1)
            self.expect_line_end(index, end, "quoted scalar")
            return value
        if first == "[":
            return self.parse_flow_sequence(index, start)
        if first == "{":
            if not re.fullmatch(r"\{ *\}", _strip_comment(rest)):
                raise self.error(index, "flow mappings ('{...}') are not supported, only the empty '{}'")
            return {}
        if _is_sequence_item(rest):
            raise self.error(index, "a block sequence cannot start on the same line as its key")
        return self.parse_plain(index, rest)

    def parse_nested_block(self, parent_indent: int, *, same_indent_sequence: bool) -> Value:
        """A value on the following lines: deeper block, serde_yaml's sequence level with its key, or null."""
        index = self.next_significant()
        if index is None:
            return Plain("")
        found = self.indent_of(index)
        content = self.lines[index][found:]
        if found > parent_indent:
            if _is_sequence_item(content):
                return self.parse_sequence(found)
            return self.parse_mapping(found)
        if found == parent_indent and same_indent_sequence and _is_sequence_item(content):
            return self.parse_sequence(found)
        return Plain("")

    def parse_plain(self, index: int, text: str) -> Plain:
        """A single-line unquoted scalar; a trailing ` # comment` is not part of it."""
        self.check_plain_start(index, text)
        value = _strip_comment(text)
        self.reject_tab(index, value, "in a plain scalar")
        colon = value.find(":")
        while colon >= 0:
            if _is_value_colon(value, colon):
                raise self.error(index, "':' followed by a space inside a plain scalar (quote the value)")
            colon = value.find(":", colon + 1)
        self.plain_line = index
        return Plain(value)

    def check_plain_start(self, index: int, text: str) -> None:
        """Refuse indicators that would start an anchor, alias, tag or other construct outside the subset."""
        first = text[0]
        if first not in _INDICATORS:
            return
        if first in "-?:" and len(text) > 1 and text[1] not in _SPACE_OR_TAB:
            return
        raise self.error(index, _WHY_INDICATOR.get(first, f"{first!r} cannot start a plain scalar"))

    def expect_line_end(self, index: int, end: int, what: str) -> None:
        """After a closed scalar or flow sequence only spaces and a comment may follow on the line."""
        rest = self.lines[index][end:]
        # A comment needs a space before its '#'; _strip_comment would also take one at position 0.
        left = _strip_comment(rest) if rest.startswith(" ") else rest
        self.reject_tab(index, left, f"after {what}")
        if left:
            raise self.error(index, f"unexpected text after {what}: {left.strip()!r}")

    def parse_flow_sequence(self, index: int, start: int) -> list[Value]:
        """`[a, "b c", 'd']` of scalars on one line; nesting and flow mappings are outside the subset."""
        line = self.lines[index]
        items: list[Value] = []
        position = start + 1
        expect_item = True  # True at the start and after each ','
        while True:
            while line[position : position + 1] == " ":
                position += 1
            self.reject_tab(index, line[position : position + 1], "in a flow sequence")
            if position >= len(line):
                raise self.error(index, "unterminated flow sequence (it must close on the same line)")
            char = line[position]
            if char == "]":  # also after a trailing ',', which YAML allows
                position += 1
                break
            if not expect_item:
                if char != ",":
                    raise self.error(index, "expected ',' or ']' in flow sequence")
                expect_item = True
                position += 1
                continue
            if char == ",":
                raise self.error(index, "empty entry in flow sequence")
            item, position = self.flow_item(index, position)
            items.append(item)
            expect_item = False
        self.expect_line_end(index, position, "flow sequence")
        return items

    def flow_item(self, index: int, position: int) -> tuple[str, int]:
        """One scalar inside `[...]`, and the position just after it."""
        line = self.lines[index]
        char = line[position]
        if char in "\"'":
            return _scan_quoted(line, position, index + 1)
        if char in "[{":
            raise self.error(index, "nested flow collections are not supported")
        if char == "#":
            raise self.error(index, "unterminated flow sequence (it must close on the same line)")
        self.check_plain_start(index, line[position:])
        end = position
        while end < len(line):
            char = line[end]
            if char in ",]":
                break
            if char in "[{}":
                raise self.error(index, f"unexpected {char!r} inside a flow sequence")
            if char == ":" and line[end + 1 : end + 2] in ("", " ", "\t", ",", "]"):
                raise self.error(index, "'key: value' pairs inside a flow sequence are not supported")
            if char == "#" and line[end - 1] in _SPACE_OR_TAB:
                raise self.error(index, "unterminated flow sequence (it must close on the same line)")
            end += 1
        item = line[position:end].rstrip(" ")
        self.reject_tab(index, item, "in a flow sequence")
        return Plain(item), end

    def parse_block_scalar(self, index: int, start: int, parent_indent: int) -> str:
        """Literal `|` or folded `>` with optional chomping and indentation indicators (Go writes `|-`)."""
        style, chomping, explicit = self.block_header(index, self.lines[index][start:])
        first = index + 1
        content_indent = parent_indent + explicit if explicit else self.detect_indent(first, parent_indent)
        end = first
        while end < len(self.lines):
            line = self.lines[end]
            if line.strip(" ") and len(line) - len(line.lstrip(" ")) < content_indent:
                break
            end += 1
        self.pos = end
        lines = [line[content_indent:] for line in self.lines[first:end]]
        # Trailing empty lines are line breaks that only `|+`/`>+` keep; the last line of a text that does
        # not end with a newline has no break of its own.
        trailing = 0
        while lines and not lines[-1]:
            lines.pop()
            trailing += 1
        unbroken = 0 if end < len(self.lines) or self.ends_with_break else 1
        kept = "\n" * max(trailing - unbroken, 0) if chomping == "+" else ""
        if not lines:
            return kept
        text = "\n".join(lines) if style == "|" else _fold(lines)
        if chomping == "-":
            return text
        return text + ("" if unbroken and not trailing else "\n") + kept

    def block_header(self, index: int, header: str) -> tuple[str, str, int]:
        """Parse `|`/`>` plus chomping (`-`, `+`) and indentation (1-9) indicators in either order."""
        chomping = ""
        explicit = 0
        position = 1
        while position < len(header) and position <= 2:
            char = header[position]
            if char in "+-" and not chomping:
                chomping = char
            elif char in "123456789" and not explicit:
                explicit = int(char)
            else:
                break
            position += 1
        rest = header[position:]
        left = _strip_comment(rest) if rest.startswith(" ") else rest
        self.reject_tab(index, left, "after a block scalar indicator")
        if left:
            raise self.error(index, f"unexpected text after block scalar indicator: {left.strip()!r}")
        return header[0], chomping, explicit

    def detect_indent(self, first: int, parent_indent: int) -> int:
        """The first non-empty line fixes the indentation; leading empty lines may not be deeper than it."""
        longest_blank, longest_index = 0, first
        for index in range(first, len(self.lines)):
            line = self.lines[index]
            if line.strip(" "):
                indent = len(line) - len(line.lstrip(" "))
                if indent <= parent_indent:
                    break  # the block scalar is empty
                if longest_blank > indent:
                    raise self.error(longest_index, "leading empty line is deeper than the block scalar")
                return indent
            if len(line) > longest_blank:
                longest_blank, longest_index = len(line), index
        # No content line: every line so far is empty, however many spaces it holds.
        return max(longest_blank, parent_indent + 1)


def _fold(lines: list[str]) -> str:
    """Folded-scalar folding: one break between two normal lines becomes a space (YAML 1.2 §8.1.3)."""
    out: list[str] = []
    previous = ""  # "" before the first line, else "normal" or "more" (more indented lines are never folded)
    empty = 0
    for line in lines:
        if not line:
            empty += 1
            continue
        kind = "more" if line[0] in _SPACE_OR_TAB else "normal"
        if not previous:
            out.append("\n" * empty)
        elif previous == kind == "normal":
            out.append("\n" * empty if empty else " ")
        else:
            out.append("\n" * (empty + 1))
        out.append(line)
        previous, empty = kind, 0
    return "".join(out)


def _is_sequence_item(content: str) -> bool:
    """A block sequence entry is '-' followed by white space or the end of the line."""
    return content.startswith("-") and (len(content) == 1 or content[1] in _SPACE_OR_TAB)


def _is_value_colon(text: str, position: int) -> bool:
    """A ':' ends a key (or breaks a plain scalar) only when white space or the line end follows it."""
    return text[position : position + 1] == ":" and text[position + 1 : position + 2] in ("", " ", "\t")


def _strip_comment(text: str) -> str:
    """Drop a ` # comment` (a '#' at the start or after a space) and trailing spaces from an unquoted text."""
    for position, char in enumerate(text):
        if char == "#" and (position == 0 or text[position - 1] == " "):
            text = text[:position]
            break
    return text.rstrip(" ")


def _scan_quoted(line: str, start: int, lineno: int) -> tuple[str, int]:
    """Read a single- or double-quoted scalar starting at `start`; return it and the position after it."""
    if line[start] == "'":
        return _scan_single(line, start, lineno)
    return _scan_double(line, start, lineno)


def _scan_single(line: str, start: int, lineno: int) -> tuple[str, int]:
    """Single quotes have one escape: '' for a quote."""
    out: list[str] = []
    position = start + 1
    while position < len(line):
        char = line[position]
        if char == "'":
            if line[position + 1 : position + 2] != "'":
                return "".join(out), position + 1
            position += 1
        out.append(char)
        position += 1
    raise FrontmatterError("unterminated single-quoted scalar (multi-line quotes are not supported)", lineno)


def _scan_double(line: str, start: int, lineno: int) -> tuple[str, int]:
    """Double quotes with the YAML escapes; line continuations are outside the subset."""
    out: list[str] = []
    position = start + 1
    while position < len(line):
        char = line[position]
        if char == '"':
            return "".join(out), position + 1
        if char == "\\":
            decoded, position = _decode_escape(line, position, lineno)
            out.append(decoded)
            continue
        out.append(char)
        position += 1
    raise FrontmatterError("unterminated double-quoted scalar (multi-line quotes are not supported)", lineno)


def _decode_escape(line: str, position: int, lineno: int) -> tuple[str, int]:
    """Decode the escape whose backslash is at `position`; return the character and the position after it."""
    code = line[position + 1 : position + 2]
    if not code:
        raise FrontmatterError("escaped line break in a double-quoted scalar is not supported", lineno)
    if code in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[code], position + 2
    width = _HEX_ESCAPE_WIDTH.get(code)
    if width is None:
        raise FrontmatterError(f"unknown escape '\\{code}' in a double-quoted scalar", lineno)
    digits = line[position + 2 : position + 2 + width]
    if len(digits) != width or not all(digit in _HEX_DIGITS for digit in digits):
        raise FrontmatterError(f"escape '\\{code}' needs {width} hex digits", lineno)
    codepoint = int(digits, 16)
    if codepoint > 0x10FFFF:
        raise FrontmatterError(f"escape '\\{code}{digits}' is beyond U+10FFFF", lineno)
    return chr(codepoint), position + 2 + width


# ----------------------------------------------------------------------------------------------------------
# Emitting


def dumps(mapping: Mapping[str, Emittable], indent: int = 4) -> str:
    """Write yaml.v3-style YAML that Go, Rust, PyYAML and `loads` all read back as the same text."""
    if not isinstance(mapping, Mapping):
        raise TypeError(f"the top level must be a mapping, not {type(mapping).__name__}")
    if not 2 <= indent <= 9:
        raise ValueError(f"indent must be between 2 and 9, not {indent}")
    if not mapping:
        return "{}\n"
    return "\n".join(_mapping_lines(mapping, indent)) + "\n"


def format_str(text: str) -> str:
    """One `str` scalar exactly as `dumps` writes it as a value or a sequence item, for fixed layouts."""
    if _fast_plain().fullmatch(text) is not None:
        return text
    if _quoted_as_is_date().fullmatch(text) is not None:
        return f'"{text}"'
    return text if _is_plain_safe_full(text) else _double_quoted(text)


def _mapping_lines(mapping: Mapping[str, Emittable], indent: int) -> list[str]:
    """Lines of a block mapping at column 0; the caller shifts them to where the mapping sits."""
    pad = " " * indent
    out: list[str] = []
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise TypeError(f"mapping keys must be str, not {type(key).__name__}")
        head = f"{_format_key(key)}:"
        if type(value) is str:
            # The common case, decided as _format_scalar would: a str is never a block and never written empty.
            out.append(f"{head} {format_str(value)}")
            continue
        nested = _block_lines(value, indent)
        if nested is None:
            scalar = _format_scalar(value)
            out.append(f"{head} {scalar}" if scalar else head)
        else:
            out.append(head)
            out.extend(pad + line for line in nested)
    return out


def _sequence_lines(items: Sequence[Emittable], indent: int) -> list[str]:
    """Lines of a block sequence at column 0; a compound item continues aligned after its `- `."""
    out: list[str] = []
    for item in items:
        if type(item) is str:
            out.append(f"- {format_str(item)}")
            continue
        nested = _block_lines(item, indent)
        if nested is None:
            scalar = _format_scalar(item)
            out.append(f"- {scalar}" if scalar else "-")
        else:
            out.append("- " + nested[0])
            out.extend("  " + line for line in nested[1:])
    return out


def _block_lines(value: Emittable, indent: int) -> list[str] | None:
    """Block lines for a non-empty mapping or sequence; None for what fits on one line."""
    if isinstance(value, Mapping) and value:
        return _mapping_lines(value, indent)
    if isinstance(value, list | tuple) and value:
        return _sequence_lines(value, indent)
    return None


def _format_scalar(value: Emittable) -> str:
    """One-line text of a scalar or empty collection; "" only for Plain(""), YAML's null."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, Plain):
        text = str.__str__(value)
        return text if text == "" or _is_plain_syntax(text) else _double_quoted(text)
    if isinstance(value, str):
        return format_str(str.__str__(value))
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list | tuple):
        return "[]"
    raise TypeError(f"cannot write {type(value).__name__} as YAML frontmatter")


def _format_key(key: str) -> str:
    """Keys follow the str rule, so no loader turns a key like `on` or `1` into a bool or an int."""
    written = format_str(str.__str__(key))
    if len(written) > _MAX_KEY_LENGTH:
        raise ValueError(f"a key longer than {_MAX_KEY_LENGTH} characters cannot be read back by libyaml")
    return written


def _is_plain_safe_full(text: str) -> bool:
    """A str may go unquoted only if every YAML 1.1 and 1.2 loader reads it back as this same string."""
    if not _is_plain_syntax(text) or text[0] in _INDICATORS or text.startswith("..."):
        return False
    if text.lower() in _TYPED_WORDS or _number_like().fullmatch(text):
        return False
    return not _date_prefix().match(text)


def _is_plain_syntax(text: str) -> bool:
    """Whether `text` can be written unquoted at all and read back unchanged as a plain scalar."""
    if not text or text[0].isspace() or text[-1].isspace():
        return False
    if _plain_chars().fullmatch(text) is None:
        return False
    if text[0] in _INDICATORS and not (text[0] in "-?:" and len(text) > 1 and text[1] != " "):
        return False
    return ": " not in text and " #" not in text and not text.endswith(":")


def _is_plain_char(char: str) -> bool:
    """Printable and no line break, tab or BOM in any YAML version (NEL, LS, PS break lines in YAML 1.1)."""
    codepoint = ord(char)
    if 0x20 <= codepoint <= 0x7E:
        return True
    if codepoint in (0x2028, 0x2029, 0xFEFF):
        return False
    return 0xA0 <= codepoint <= 0xD7FF or 0xE000 <= codepoint <= 0xFFFD or 0x10000 <= codepoint <= 0x10FFFF


def _double_quoted(text: str) -> str:
    """Double-quote with escapes so the scalar stays on one line and holds only printable characters."""
    if _quote_as_is().fullmatch(text):
        return f'"{text}"'
    return _double_quoted_full(text)


def _double_quoted_full(text: str) -> str:
    """Character by character, for texts that need at least one escape or hold non-ASCII."""
    out = ['"']
    for char in text:
        if char in _EMIT_ESCAPES:
            out.append(_EMIT_ESCAPES[char])
        elif _is_plain_char(char):
            out.append(char)
        else:
            codepoint = ord(char)
            if codepoint <= 0xFF:
                out.append(f"\\x{codepoint:02x}")
            elif codepoint <= 0xFFFF:
                out.append(f"\\u{codepoint:04x}")
            else:
                out.append(f"\\U{codepoint:08x}")
    out.append('"')
    return "".join(out)
