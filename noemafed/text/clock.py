"""Wall-clock time for what noemafed schedules and judges (backoff, verdicts, lag), with one test hook.

`NOEMAFED_TEST_NOW=<RFC3339>` fixes "now" for the run that sees it: the backoff schedule, the times the run
records (health, next attempts) and status's verdicts and lag all read it, so a test can play twenty cron runs
an hour apart in a second. It is a test hook (docs/testing.md), never needed in production. Durations measured
inside a run (`seconds`, deadlines) stay on the monotonic clock, and the check that refuses event ids dated in
the future stays on the real clock: a fake "now" must never let a bad id in.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime

from noemafed.records import Record
from noemafed.text.gotext import format_rfc3339

TEST_NOW_VARIABLE = "NOEMAFED_TEST_NOW"
BAD_TEST_NOW = TEST_NOW_VARIABLE + "={value!r} is not an RFC3339 time (e.g. 2026-04-20T12:00:00Z)"

_CROCKFORD = {char: value for value, char in enumerate("0123456789ABCDEFGHJKMNPQRSTVWXYZ")}


class Clock(Record):
    """The real clock, or a fixed instant (`fixed`, seconds since the epoch) set by the test hook."""

    fixed: float | None = None

    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time() if self.fixed is None else self.fixed

    def rfc3339(self) -> str:
        """Now as noema's RFC3339 UTC second-precision text."""
        return format_epoch(self.now())


REAL_CLOCK = Clock()


def clock_from(environ: Mapping[str, str]) -> Clock:
    """The real clock, unless the test hook is set; a malformed value raises ValueError (never ignored)."""
    value = environ.get(TEST_NOW_VARIABLE)
    if not value:
        return REAL_CLOCK
    seconds = parse_rfc3339(value)
    if seconds is None:
        raise ValueError(BAD_TEST_NOW.format(value=value))
    return Clock(seconds)


def format_epoch(seconds: float) -> str:
    """Seconds since the epoch as RFC3339 UTC at second precision (noema's only timestamp form)."""
    return format_rfc3339(datetime.fromtimestamp(int(seconds), UTC))


def parse_rfc3339(text: str) -> float | None:
    """Seconds since the epoch, or None for anything that is not an RFC3339 time with an offset or Z."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None or "T" not in text:
        return None
    return moment.timestamp()


def ulid_millis(ulid: str) -> int:
    """The millisecond timestamp in a canonical ULID's first ten characters (KeyError if not Crockford)."""
    millis = 0
    for char in ulid[:10]:
        millis = millis * 32 + _CROCKFORD[char]
    return millis


def ulid_seconds(ulid: str) -> float | None:
    """The time a ULID was minted, in seconds since the epoch; None when the text is no ULID (26 Crockford
    base32 characters, either case, within 128 bits), as python-ulid decides, without loading it."""
    text = ulid.upper()
    if len(text) != 26 or text[0] > "7" or any(char not in _CROCKFORD for char in text):
        return None
    return ulid_millis(text) / 1000
