"""Go `time.Duration` text: ParseDuration for `federation.interval`, String() for log and status lines."""

from __future__ import annotations

__all__ = [
    "MAX_DURATION_NS",
    "MIN_DURATION_NS",
    "format_go_duration",
    "format_go_duration_ns",
    "parse_go_duration",
    "parse_go_duration_ns",
]

# A Go Duration is an int64 count of nanoseconds.
MAX_DURATION_NS = (1 << 63) - 1
MIN_DURATION_NS = -(1 << 63)

_NANOSECOND = 1
_MICROSECOND = 1000 * _NANOSECOND
_MILLISECOND = 1000 * _MICROSECOND
_SECOND = 1000 * _MILLISECOND
_MINUTE = 60 * _SECOND
_HOUR = 60 * _MINUTE

# Go's unitMap; both micro spellings (U+00B5 micro sign, U+03BC Greek mu) are accepted.
_UNITS: dict[str, int] = {
    "ns": _NANOSECOND,
    "us": _MICROSECOND,
    "\u00b5s": _MICROSECOND,
    "\u03bcs": _MICROSECOND,
    "ms": _MILLISECOND,
    "s": _SECOND,
    "m": _MINUTE,
    "h": _HOUR,
}

_DIGITS = "0123456789"


def _fmt_frac(value: int, prec: int) -> tuple[str, int]:
    """Go's fmtFrac: the fraction of value/10**prec without trailing zeros, and the integer part."""
    digits: list[str] = []
    printed = False
    for _ in range(prec):
        digit = value % 10
        printed = printed or digit != 0
        if printed:
            digits.append(str(digit))
        value //= 10
    if not printed:
        return "", value
    return "." + "".join(reversed(digits)), value


def format_go_duration_ns(ns: int) -> str:
    """Render nanoseconds exactly as Go's Duration.String does (`1m0s`, `1.5s`, `300ms`, `0s`)."""
    if not MIN_DURATION_NS <= ns <= MAX_DURATION_NS:
        raise ValueError(f"duration {ns}ns is outside Go's int64 range")
    neg = ns < 0
    u = -ns if neg else ns
    if u < _SECOND:
        # Below one second Go switches to the largest sub-second unit that fits.
        if u == 0:
            return "0s"
        if u < _MICROSECOND:
            unit, prec = "ns", 0
        elif u < _MILLISECOND:
            unit, prec = "\u00b5s", 3
        else:
            unit, prec = "ms", 6
        frac, whole = _fmt_frac(u, prec)
        text = f"{whole}{frac}{unit}"
    else:
        frac, whole = _fmt_frac(u, 9)
        text = f"{whole % 60}{frac}s"
        minutes = whole // 60
        if minutes > 0:
            text = f"{minutes % 60}m{text}"
            hours = minutes // 60
            # Go stops at hours: days are not a fixed length.
            if hours > 0:
                text = f"{hours}h{text}"
    return "-" + text if neg else text


def format_go_duration(seconds: float) -> str:
    """Render seconds as Go's Duration.String; rounds to the nearest nanosecond first."""
    return format_go_duration_ns(round(seconds * _SECOND))


def _leading_int(text: str) -> tuple[int, str] | None:
    """Go's leadingInt: consume [0-9]*, None on overflow past 1<<63."""
    value = 0
    i = 0
    while i < len(text) and text[i] in _DIGITS:
        if value > (1 << 63) // 10:
            return None
        value = value * 10 + ord(text[i]) - ord("0")
        if value > 1 << 63:
            return None
        i += 1
    return value, text[i:]


def _leading_fraction(text: str) -> tuple[int, float, str]:
    """Go's leadingFraction: consume [0-9]*, silently dropping precision on overflow."""
    value = 0
    scale = 1.0
    overflow = False
    i = 0
    while i < len(text) and text[i] in _DIGITS:
        if not overflow:
            if value > ((1 << 63) - 1) // 10:
                overflow = True
            else:
                candidate = value * 10 + ord(text[i]) - ord("0")
                if candidate > 1 << 63:
                    overflow = True
                else:
                    value = candidate
                    scale *= 10
        i += 1
    return value, scale, text[i:]


def parse_go_duration_ns(text: str) -> int | None:
    """Parse Go ParseDuration syntax to nanoseconds; None wherever Go returns an error."""
    rest = text
    neg = False
    if rest and rest[0] in "+-":
        neg = rest[0] == "-"
        rest = rest[1:]
    # Go special-cases a bare "0" (with optional sign); "00" or "0.0" still need a unit.
    if rest == "0":
        return 0
    if not rest:
        return None
    total = 0
    while rest:
        if rest[0] != "." and rest[0] not in _DIGITS:
            return None
        before = len(rest)
        leading = _leading_int(rest)
        if leading is None:
            return None
        whole, rest = leading
        pre = len(rest) != before
        frac, scale, post = 0, 1.0, False
        if rest and rest[0] == ".":
            rest = rest[1:]
            before = len(rest)
            frac, scale, rest = _leading_fraction(rest)
            post = len(rest) != before
        if not pre and not post:
            return None
        # The unit is everything up to the next digit or dot; it must be an exact unitMap key.
        i = 0
        while i < len(rest) and rest[i] != "." and rest[i] not in _DIGITS:
            i += 1
        if i == 0:
            return None
        unit = _UNITS.get(rest[:i])
        rest = rest[i:]
        if unit is None:
            return None
        if whole > (1 << 63) // unit:
            return None
        value = whole * unit
        if frac > 0:
            # Go uses float64 here too, so fractional hours round the same way.
            value += int(float(frac) * (float(unit) / scale))
            if value > 1 << 63:
                return None
        total += value
        if total > 1 << 63:
            return None
    if neg:
        return -total
    if total > MAX_DURATION_NS:
        return None
    return total


def parse_go_duration(text: str) -> float | None:
    """Parse Go ParseDuration syntax to seconds; None wherever Go returns an error."""
    ns = parse_go_duration_ns(text)
    return None if ns is None else ns / _SECOND
