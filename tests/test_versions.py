"""Version-skew baseline: Go test twins TestVersionSeriesMatches and TestSemverBaseline (federation.md §7)."""

from __future__ import annotations

import pytest

from noemafed.text.versions import semver_baseline, version_series_matches


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("v0.9.2", "v0.9.2", True),
        ("v0.9.2-10-g2473442", "v0.9.2-5-gabcd123", True),
        ("v0.9.2", "v0.9.2-10-g2473442", True),
        ("0.9.2", "v0.9.2", True),
        ("v0.9.1", "v0.9.2", False),
        ("v0.9.1", "v0.9.2-10-g2473442", False),
        ("v0.9.0", "v0.10.0", False),
        ("v0.9.0", "v1.0.0", False),
        ("dev", "v0.9.1", True),
        ("1cc3be6-dirty", "v0.9.1", True),
        ("dev", "dev", True),
        ("", "", True),
    ],
)
def test_TestVersionSeriesMatches(a: str, b: str, expected: bool) -> None:
    assert version_series_matches(a, b) is expected
    # The relation is symmetric.
    assert version_series_matches(b, a) is expected


@pytest.mark.parametrize(
    ("version", "baseline"),
    [
        ("v0.9.2", "0.9.2"),
        ("v0.9.1", "0.9.1"),
        ("0.9.0", "0.9.0"),
        ("v1.2", "1.2"),
        ("v0.9.2-10-g2473442", "0.9.2"),
        ("v0.9.2-10-g2473442-dirty", "0.9.2"),
        ("v0.9.2-dirty", "0.9.2"),
        ("dev", None),
        ("", None),
        ("abc", None),
        ("v", None),
        ("v.1", None),
        ("1", None),
    ],
)
def test_TestSemverBaseline(version: str, baseline: str | None) -> None:
    assert semver_baseline(version) == baseline


@pytest.mark.parametrize(
    ("version", "baseline"),
    [
        ("vv1.2", None),  # only one leading v is stripped
        ("V1.2", None),
        ("1.2.3.4", "1.2.3.4"),  # no upper bound on parts
        ("1.", None),
        ("1..2", None),
        ("-1.2", None),
        ("1.2-", "1.2"),
        ("1.2+build", None),  # no build-metadata handling, as in Go
        ("1.٢", None),  # Arabic-Indic digit: ASCII digits only
        ("1.²", None),
        (" 1.2", None),
        ("01.002", "01.002"),  # leading zeros kept verbatim
    ],
)
def test_semver_baseline_edges(version: str, baseline: str | None) -> None:
    assert semver_baseline(version) == baseline


def test_baselines_compare_as_exact_text() -> None:
    assert not version_series_matches("v1.2", "v1.2.0")
    assert not version_series_matches("v1.02.0", "v1.2.0")
    assert version_series_matches("v1.2", "garbage")
