"""Vector clock algebra (federation.md §5, cortex.md §7) and its Go-compatible JSON text (§2.4)."""

from __future__ import annotations

import functools
import json
import re
from typing import TypeAlias

from noemafed.errors import VClockTooLargeError

__all__ = [
    "CORTEX_ID_KEY_BYTES",
    "MAX_VCLOCK_ENTRIES",
    "UINT64_MAX",
    "VCLOCK_TOO_LARGE_MESSAGE",
    "VClock",
    "clone",
    "compare",
    "decode",
    "encode",
    "increment",
    "is_cortex_id_key",
    "keep_cortex_id_keys",
    "merge",
    "merge_capped",
    "merge_for_replay",
    "round_trips",
]

# Keys are cortex ULIDs (or legacy display names); values are Go uint64 counters.
VClock: TypeAlias = dict[str, int]

MAX_VCLOCK_ENTRIES = 256
CORTEX_ID_KEY_BYTES = 26
UINT64_MAX = (1 << 64) - 1
VCLOCK_TOO_LARGE_MESSAGE = "vector clock too large ({n} entries, max {max}): possible clock inflation attack"


def increment(vc: VClock, key: str) -> None:
    """Count one local event on `key`, in place, as Go's `vc[key]++` does."""
    # uint64 arithmetic: Go wraps to 0 past UINT64_MAX; so do we, so every value stays encodable.
    vc[key] = (vc.get(key, 0) + 1) & UINT64_MAX


def clone(vc: VClock) -> VClock:
    """An independent copy, so callers can mutate without touching the stored clock."""
    return dict(vc)


def merge(a: VClock, b: VClock) -> VClock:
    """Per-key maximum as Go computes it; neither input is modified."""
    out = dict(a)
    for key, value in b.items():
        # Strictly greater, missing = 0: a key only in b with value 0 is never added (§8.1 item 15),
        # while zero-valued keys already in a are kept.
        if value > out.get(key, 0):
            out[key] = value
    return out


def merge_capped(a: VClock, b: VClock) -> VClock:
    """Merge, refusing results over 256 entries so a peer cannot inflate our clock without bound."""
    out = merge(a, b)
    if len(out) > MAX_VCLOCK_ENTRIES:
        raise VClockTooLargeError(VCLOCK_TOO_LARGE_MESSAGE.format(n=len(out), max=MAX_VCLOCK_ENTRIES))
    return out


def compare(a: VClock, b: VClock) -> int:
    """-1 when a happened before b, +1 when after, 0 for equal or concurrent (Go cannot tell them apart)."""
    a_le_b = True
    b_le_a = True
    for key in a.keys() | b.keys():
        va = a.get(key, 0)
        vb = b.get(key, 0)
        if va > vb:
            a_le_b = False
        elif vb > va:
            b_le_a = False
    if a_le_b and not b_le_a:
        return -1
    if b_le_a and not a_le_b:
        return 1
    return 0


def _utf8_len(key: str) -> int:
    """Byte length as Go's len(string); a lone surrogate counts 3 bytes like the U+FFFD Go would hold."""
    return len(key.encode("utf-8", "surrogatepass"))


def is_cortex_id_key(key: str) -> bool:
    """True for keys of exactly 26 UTF-8 bytes: a length check only, no ULID syntax check."""
    return _utf8_len(key) == CORTEX_ID_KEY_BYTES


def keep_cortex_id_keys(vc: VClock) -> VClock:
    """A new clock without the legacy name-keyed buckets from before the cortex-id migration."""
    return {key: value for key, value in vc.items() if is_cortex_id_key(key)}


def round_trips(vc: VClock) -> bool:
    """Whether `decode(encode(vc)) == vc`: uint64 values and no lone surrogate (decode makes it U+FFFD)."""
    for key, value in vc.items():
        if type(value) is not int or not 0 <= value <= UINT64_MAX or _surrogate().search(key):
            return False
    return True


def merge_for_replay(local: VClock, remote: VClock) -> VClock:
    """The cortex's MergeClock (cortex.md §7): drop non-26-byte keys on both sides, then merge_capped."""
    return merge_capped(keep_cortex_id_keys(local), keep_cortex_id_keys(remote))


# Go's encoding/json (1.22+, noema builds with 1.25) with HTML escaping on, as json.Marshal uses.
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


# Both patterns are compiled on first use: their surrogate ranges cost about 1 ms to compile, which every
# `sync --once` would pay even when it writes no clock.
@functools.cache
def _needs_escape() -> re.Pattern[str]:
    return re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029\ud800-\udfff]')


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    if "\ud800" <= char <= "\udfff":
        # Go writes invalid UTF-8 as the escape \ufffd; a lone surrogate is the nearest Python analogue.
        return "\\ufffd"
    return f"\\u{ord(char):04x}"


def _go_json_string(text: str) -> str:
    """A JSON string literal byte-identical to Go's: non-ASCII stays raw except U+2028/U+2029."""
    return '"' + _needs_escape().sub(_escape_char, text) + '"'


def _go_sort_key(key: str) -> bytes:
    """Go sorts map keys by byte order of their UTF-8 encoding."""
    return key.encode("utf-8", "surrogatepass")


def encode(vc: VClock) -> str:
    """The exact text Go's json.Marshal writes for the clock: sorted keys, compact, `{}` when empty."""
    parts: list[str] = []
    for key in sorted(vc, key=_go_sort_key):
        value = vc[key]
        if type(value) is not int or not 0 <= value <= UINT64_MAX:
            raise ValueError(f"vector clock value for {key!r} is not a uint64: {value!r}")
        parts.append(f"{_go_json_string(key)}:{value}")
    return "{" + ",".join(parts) + "}"


class _MalformedError(ValueError):
    """Raised inside json.loads hooks for numbers Go would not unmarshal into a uint64."""


def _parse_uint64(text: str) -> int:
    # Go's strconv.ParseUint: no sign (so `-0` fails too), no overflow past UINT64_MAX.
    if text.startswith("-"):
        raise _MalformedError(text)
    value = int(text)
    if value > UINT64_MAX:
        raise _MalformedError(text)
    return value


def _reject_number(text: str) -> float:
    # Floats and exponents (`1.0`, `1e3`) fail ParseUint; NaN/Infinity are not JSON for Go at all.
    raise _MalformedError(text)


class _Pairs(list[tuple[str, object]]):
    """Every key/value pair of one JSON object in document order, duplicates included."""


@functools.cache
def _surrogate() -> re.Pattern[str]:
    return re.compile("[\ud800-\udfff]")


def decode(text: str | bytes | None) -> VClock:
    """Tolerant read of the stored clock: anything Go's Unmarshal would reject gives an empty clock."""
    # Whole value malformed -> {}: Go fails the entire Unmarshal on one bad value and GetClock then
    # returns an empty clock, so one bad entry drops every entry (never a partial clock).
    if text is None:
        return {}
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not text.strip():
        return {}
    try:
        raw = json.loads(
            text,
            object_pairs_hook=_Pairs,
            parse_int=_parse_uint64,
            parse_float=_reject_number,
            parse_constant=_reject_number,
        )
    except (ValueError, RecursionError):
        return {}
    # `null` (a nil map) and every non-object are treated alike: empty clock.
    if not isinstance(raw, _Pairs):
        return {}
    out: VClock = {}
    # Every pair is checked, duplicates included: Go reports a bad value even when a later duplicate
    # key is fine, and for good duplicates the last one wins, as in Go's map assignment.
    for key, value in raw:
        # bool is an int subclass in Python; Go rejects true/false (and strings, objects, ...).
        if type(value) is not int:
            return {}
        # Go decodes a lone \ud800 escape as U+FFFD; Python keeps the surrogate, so replace it. (Keys are ULIDs:
        # ASCII, with nothing to replace and no need to compile the pattern, 0.3 ms of a status.)
        out[key if key.isascii() else _surrogate().sub("\ufffd", key)] = value
    return out
