"""text/clock.py: the test hook's parsing, and the time in a ULID decoded as python-ulid decodes it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ulid import ULID

from noemafed.render.status import _ulid_time
from noemafed.text.clock import REAL_CLOCK, Clock, clock_from, parse_rfc3339, ulid_seconds
from noemafed.text.gotext import format_rfc3339

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Mostly real ULIDs, in upper, lower or mixed case, some dated past 128 bits, some with a foreign character or
# the wrong length: where a hand-written decoder goes wrong.
ULID_LIKE = st.one_of(
    st.text(alphabet=CROCKFORD, min_size=26, max_size=26),
    st.text(alphabet=CROCKFORD + CROCKFORD.lower(), min_size=26, max_size=26),
    st.text(alphabet=CROCKFORD + "ILOU", min_size=25, max_size=27),
)


def _python_ulid_seconds(text: str) -> float | None:
    try:
        return ULID.from_str(text).milliseconds / 1000
    except ValueError:
        return None


@given(ULID_LIKE)
def test_a_ulids_time_is_python_ulids(text: str) -> None:
    assert ulid_seconds(text) == _python_ulid_seconds(text)
    try:
        expected = format_rfc3339(ULID.from_str(text).datetime)
    except ValueError:
        expected = None
    assert _ulid_time(text) == expected


@given(st.integers(min_value=0, max_value=2**48 - 1), st.binary(min_size=10, max_size=10))
def test_ulid_seconds_reads_the_timestamp(millis: int, randomness: bytes) -> None:
    assert ulid_seconds(str(ULID.from_bytes(millis.to_bytes(6, "big") + randomness))) == millis / 1000


def test_the_test_hook() -> None:
    assert clock_from({}) is REAL_CLOCK
    assert clock_from({"NOEMAFED_TEST_NOW": ""}) is REAL_CLOCK
    assert clock_from({"NOEMAFED_TEST_NOW": "2026-04-20T12:00:00Z"}) == Clock(1776686400.0)
    assert clock_from({"NOEMAFED_TEST_NOW": "2026-04-20T14:00:00+02:00"}).rfc3339() == "2026-04-20T12:00:00Z"
    for bad in ("yesterday", "2026-04-20", "2026-04-20T12:00:00"):
        with pytest.raises(ValueError, match="is not an RFC3339 time"):
            clock_from({"NOEMAFED_TEST_NOW": bad})
    assert parse_rfc3339("2026-04-20 12:00:00Z") is None
