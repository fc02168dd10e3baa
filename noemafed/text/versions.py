"""Release-baseline comparison behind the `⚠ differs from local` version warning (federation.md §6.1)."""

from __future__ import annotations

__all__ = ["semver_baseline", "version_series_matches"]

_ASCII_DIGITS = frozenset("0123456789")


def semver_baseline(v: str) -> str | None:
    """The `X.Y[.Z...]` release a version string is built from, or None when it is not a release tag."""
    # One leading `v` only; `vv1.2` stays unparseable.
    text = v.removeprefix("v")
    if not text:
        return None
    # git-describe suffixes (`-10-g2473442`, `-dirty`) are not part of the release.
    text = text.partition("-")[0]
    parts = text.split(".")
    if len(parts) < 2:
        return None
    # ASCII digits only: str.isdigit would also accept other scripts' digits and superscripts.
    if not all(part and set(part) <= _ASCII_DIGITS for part in parts):
        return None
    return text


def version_series_matches(a: str, b: str) -> bool:
    """False only when both sides are releases with different baselines, so `dev` builds never warn."""
    base_a = semver_baseline(a)
    base_b = semver_baseline(b)
    if base_a is None or base_b is None:
        return True
    # Exact text: `1.2` and `1.2.0` differ, as in Go.
    return base_a == base_b
