"""Go duration text: Duration.String golden values and ParseDuration acceptance (federation.md §1.4, §4.4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from noemafed.text.durations import (
    MAX_DURATION_NS,
    MIN_DURATION_NS,
    format_go_duration,
    format_go_duration_ns,
    parse_go_duration,
    parse_go_duration_ns,
)

S = 1_000_000_000


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (30, "30s"),
        (60, "1m0s"),
        (120, "2m0s"),
        (300, "5m0s"),
        (5400, "1h30m0s"),
        (3600, "1h0m0s"),
        (1.5, "1.5s"),
        (0.3, "300ms"),
        (0, "0s"),
        (-5, "-5s"),
        (-0.25, "-250ms"),
        (61.25, "1m1.25s"),
        (90061, "25h1m1s"),
    ],
)
def test_format_go_duration(seconds: float, text: str) -> None:
    assert format_go_duration(seconds) == text


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (1, "1ns"),
        (999, "999ns"),
        (1000, "1\u00b5s"),
        (1500, "1.5\u00b5s"),
        (1_000_000, "1ms"),
        (1_234_567, "1.234567ms"),
        (999_999_999, "999.999999ms"),
        (S, "1s"),
        (S + 1, "1.000000001s"),
        (-1, "-1ns"),
        (MAX_DURATION_NS, "2562047h47m16.854775807s"),
        (MIN_DURATION_NS, "-2562047h47m16.854775808s"),
    ],
)
def test_format_go_duration_ns(ns: int, text: str) -> None:
    assert format_go_duration_ns(ns) == text


def test_format_rejects_values_outside_int64() -> None:
    with pytest.raises(ValueError, match="int64"):
        format_go_duration_ns(MAX_DURATION_NS + 1)


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("30s", 30 * S),
        ("1m", 60 * S),
        ("1h30m", 5400 * S),
        ("1.5h", 5400 * S),
        ("300ms", 300_000_000),
        ("0", 0),
        ("+0", 0),
        ("-0", 0),
        ("0s", 0),
        ("-5s", -5 * S),
        ("+5s", 5 * S),
        ("1us", 1000),
        ("1\u00b5s", 1000),
        ("1\u03bcs", 1000),
        ("1ns", 1),
        (".5s", S // 2),
        ("5.s", 5 * S),
        ("1h1m1s1ms1us1ns", 3661 * S + 1_001_001),
        ("1.0000000001s", S),  # precision below a nanosecond is dropped
        ("2562047h47m16.854775807s", MAX_DURATION_NS),
        ("-2562047h47m16.854775808s", MIN_DURATION_NS),
    ],
)
def test_parse_go_duration_ns(text: str, ns: int) -> None:
    assert parse_go_duration_ns(text) == ns


@pytest.mark.parametrize(
    "text",
    [
        "",
        "+",
        "-",
        "30",  # YAML int 30 read back as text: no unit, invalid (the 30s default applies)
        "00",
        "0.0",
        "1d",
        "1 s",
        " 1s",
        "1s ",
        "1S",
        "1sec",
        "s",
        ".s",
        "-.s",
        "1..5s",
        "1.5.s",
        "--1s",
        "1s-1s",
        "2562047h47m16.854775808s",  # one past int64
        "9223372036854775808ns",
        "99999999999999999999ns",
    ],
)
def test_parse_go_duration_rejects(text: str) -> None:
    assert parse_go_duration_ns(text) is None
    assert parse_go_duration(text) is None


def test_parse_go_duration_seconds() -> None:
    assert parse_go_duration("1m30s") == 90.0
    assert parse_go_duration("250ms") == 0.25
    assert parse_go_duration("0") == 0.0


@given(st.integers(min_value=MIN_DURATION_NS, max_value=MAX_DURATION_NS))
def test_format_parse_round_trip(ns: int) -> None:
    assert parse_go_duration_ns(format_go_duration_ns(ns)) == ns
