"""Vector clock algebra: Go test twins (federation.md §7), spec edge cases and hypothesis laws."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from noemafed.cortex import vclock
from noemafed.errors import VClockTooLargeError

ULID_A = "01JQ7X2B9C4D5E6F7G8H9JKMNP"
ULID_B = "01JQ9A3C5E7G9J1K3M5N7P9R2T"


# ----- Go test twins ------------------------------------------------------------------------------------


def test_TestVClock_Increment() -> None:
    vc = {"a": 5, "b": 3}
    vclock.increment(vc, "a")
    assert vc["a"] == 6
    vclock.increment(vc, "c")
    assert vc["c"] == 1
    assert vc == {"a": 6, "b": 3, "c": 1}


def test_TestVClock_Clone() -> None:
    original = {"a": 1, "b": 2}
    copy = vclock.clone(original)
    copy["a"] = 99
    copy["z"] = 1
    vclock.increment(copy, "b")
    assert original == {"a": 1, "b": 2}


def test_TestKeepCortexIDKeys_DropsLegacyNameBuckets() -> None:
    vc = {ULID_A: 4, "mycortex": 7, "peer-a": 2}
    assert vclock.keep_cortex_id_keys(vc) == {ULID_A: 4}
    assert vc == {ULID_A: 4, "mycortex": 7, "peer-a": 2}


def test_TestMerge() -> None:
    a = {"a": 10, "b": 7, "c": 3}
    b = {"a": 9, "b": 8, "c": 3}
    assert vclock.merge(a, b) == {"a": 10, "b": 8, "c": 3}
    assert a == {"a": 10, "b": 7, "c": 3}
    assert b == {"a": 9, "b": 8, "c": 3}


def test_TestMerge_DisjointKeys() -> None:
    assert vclock.merge({"a": 5}, {"b": 3}) == {"a": 5, "b": 3}


def test_TestMergeCapped_UnderLimit() -> None:
    merged = vclock.merge_capped({"a": 1, "b": 2}, {"c": 3})
    assert merged == {"a": 1, "b": 2, "c": 3}
    assert len(merged) == 3


def test_TestMergeCapped_OverLimit() -> None:
    full = {f"k{i:03d}": 1 for i in range(256)}
    with pytest.raises(VClockTooLargeError) as info:
        vclock.merge_capped(full, {"new": 1})
    assert str(info.value) == "vector clock too large (257 entries, max 256): possible clock inflation attack"
    assert "too large" in str(info.value)
    assert info.value.code == "vclock_too_large"


def test_TestCompare_HappenedBefore() -> None:
    assert vclock.compare({"x": 1, "y": 2}, {"x": 2, "y": 3}) == -1


def test_TestCompare_HappenedAfter() -> None:
    assert vclock.compare({"x": 3, "y": 4}, {"x": 2, "y": 3}) == 1


def test_TestCompare_Concurrent() -> None:
    assert vclock.compare({"x": 3, "y": 2}, {"x": 2, "y": 3}) == 0


def test_TestCompare_Equal() -> None:
    assert vclock.compare({"x": 1, "y": 2}, {"x": 1, "y": 2}) == 0


def test_TestCompare_MissingKeys() -> None:
    assert vclock.compare({"x": 1}, {"x": 1, "y": 1}) == -1


# ----- spec edge cases ----------------------------------------------------------------------------------


def test_merge_drops_zero_key_only_in_b_keeps_zero_key_of_a() -> None:
    # federation.md §5 / §8.1 item 15: strictly greater, missing = 0.
    assert vclock.merge({"a": 1}, {"z": 0}) == {"a": 1}
    assert vclock.merge({"z": 0}, {"a": 1}) == {"z": 0, "a": 1}
    assert vclock.merge({}, {"z": 0}) == {}


def test_merge_capped_allows_exactly_256() -> None:
    a = {f"k{i:03d}": 1 for i in range(255)}
    merged = vclock.merge_capped(a, {"last": 1})
    assert len(merged) == vclock.MAX_VCLOCK_ENTRIES == 256


def test_merge_capped_counts_result_not_inputs() -> None:
    # 256 + 256 overlapping keys merge to 256 entries: allowed.
    full = {f"k{i:03d}": 1 for i in range(256)}
    assert len(vclock.merge_capped(full, dict.fromkeys(full, 2))) == 256
    # A zero-valued extra key in b is not added, so it cannot push the result over the cap.
    assert len(vclock.merge_capped(full, {"extra": 0})) == 256


def test_merge_capped_error_reports_entry_count() -> None:
    with pytest.raises(VClockTooLargeError) as info:
        vclock.merge_capped({f"a{i}": 1 for i in range(200)}, {f"b{i}": 1 for i in range(100)})
    assert str(info.value) == "vector clock too large (300 entries, max 256): possible clock inflation attack"


def test_compare_empty_and_zero_keys() -> None:
    assert vclock.compare({}, {}) == 0
    assert vclock.compare({}, {"x": 0}) == 0
    assert vclock.compare({"x": 0}, {}) == 0
    assert vclock.compare({}, {"x": 1}) == -1
    assert vclock.compare({"x": 1}, {}) == 1


def test_increment_wraps_like_go_uint64() -> None:
    vc = {"a": vclock.UINT64_MAX}
    vclock.increment(vc, "a")
    assert vc == {"a": 0}


def test_is_cortex_id_key_counts_utf8_bytes() -> None:
    assert vclock.is_cortex_id_key(ULID_A)
    assert not vclock.is_cortex_id_key(ULID_A[:-1])
    assert not vclock.is_cortex_id_key(ULID_A + "X")
    # Length only, no ULID syntax check: 26 lower-case letters pass.
    assert vclock.is_cortex_id_key("abcdefghijklmnopqrstuvwxyz")
    # 24 ASCII + "é" (2 bytes) = 25 characters but 26 bytes: kept.
    accented = "A" * 24 + "é"
    assert len(accented) == 25
    assert vclock.is_cortex_id_key(accented)
    # 26 characters, 27 bytes: dropped.
    assert not vclock.is_cortex_id_key("A" * 25 + "é")
    # 23 ASCII + a 4-byte emoji = 27 bytes; 22 + emoji = 26 bytes.
    assert vclock.is_cortex_id_key("A" * 22 + "😀")
    assert not vclock.is_cortex_id_key("A" * 23 + "😀")


def test_keep_cortex_id_keys_uses_byte_length() -> None:
    vc = {"A" * 24 + "é": 1, "A" * 25 + "é": 2, ULID_A: 3}
    assert vclock.keep_cortex_id_keys(vc) == {"A" * 24 + "é": 1, ULID_A: 3}


def test_merge_for_replay_filters_both_sides_then_caps() -> None:
    local = {ULID_A: 3, "mycortex": 9}
    remote = {ULID_A: 2, ULID_B: 5, "peer-a": 4}
    assert vclock.merge_for_replay(local, remote) == {ULID_A: 3, ULID_B: 5}
    assert local == {ULID_A: 3, "mycortex": 9}
    # Legacy keys do not count towards the cap.
    big_local = {f"{i:026d}": 1 for i in range(256)} | {"legacy": 1}
    assert len(vclock.merge_for_replay(big_local, {"peer-a": 1})) == 256
    with pytest.raises(VClockTooLargeError):
        vclock.merge_for_replay(big_local, {ULID_B: 1})


# ----- encode / decode ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clock", "text"),
    [
        ({}, "{}"),
        ({"b": 2, "a": 1}, '{"a":1,"b":2}'),
        ({ULID_B: 1, ULID_A: 2}, '{"01JQ7X2B9C4D5E6F7G8H9JKMNP":2,"01JQ9A3C5E7G9J1K3M5N7P9R2T":1}'),
        ({"a": 0, "big": vclock.UINT64_MAX}, '{"a":0,"big":18446744073709551615}'),
        # Go escapes <, > and & (HTML-safe) but leaves other non-ASCII as raw UTF-8.
        ({"<a&b>": 1}, '{"\\u003ca\\u0026b\\u003e":1}'),
        ({"café": 1, "日本": 2}, '{"café":1,"日本":2}'),
        ({"x\u2028y\u2029": 1}, '{"x\\u2028y\\u2029":1}'),
        ({'q"b\\': 1}, '{"q\\"b\\\\":1}'),
        ({"\b\f\n\r\t": 1}, '{"\\b\\f\\n\\r\\t":1}'),
        ({"\x00\x01\x1f\x7f": 1}, '{"\\u0000\\u0001\\u001f\x7f":1}'),
        ({"/": 1}, '{"/":1}'),
    ],
)
def test_encode_golden(clock: dict[str, int], text: str) -> None:
    assert vclock.encode(clock) == text
    assert vclock.decode(text) == clock


def test_encode_sorts_by_utf8_bytes() -> None:
    # Code point order equals UTF-8 byte order; capitals before lower case, ASCII before non-ASCII,
    # BMP before astral planes.
    clock = {"😀": 1, "\uffff": 2, "é": 3, "b": 4, "B": 5, "": 6}
    assert vclock.encode(clock) == '{"":6,"B":5,"b":4,"é":3,"\uffff":2,"😀":1}'


def test_encode_rejects_values_outside_uint64() -> None:
    with pytest.raises(ValueError, match="not a uint64"):
        vclock.encode({"a": -1})
    with pytest.raises(ValueError, match="not a uint64"):
        vclock.encode({"a": 1 << 64})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, {}),
        ("", {}),
        ("   \n", {}),
        (b"", {}),
        (b'{"a":1}', {"a": 1}),
        ("null", {}),
        ("  null  ", {}),
        ("{}", {}),
        (' { "a" : 1 , "b":2 } ', {"a": 1, "b": 2}),
        ("{", {}),
        ("not json", {}),
        ('{"a":1,}', {}),
        ('{"a":1} trailing', {}),
        ("[]", {}),
        ("[1,2]", {}),
        ("3", {}),
        ('"text"', {}),
        ("true", {}),
        # One bad value makes Go's whole Unmarshal fail, so the whole clock is dropped.
        ('{"a":1,"b":-1}', {}),
        ('{"a":-0}', {}),
        ('{"a":1.5}', {}),
        ('{"a":1.0}', {}),
        ('{"a":1e3}', {}),
        ('{"a":"1"}', {}),
        ('{"a":true}', {}),
        ('{"a":null}', {}),
        ('{"a":{}}', {}),
        ('{"a":[1]}', {}),
        ('{"a":NaN}', {}),
        ('{"a":Infinity}', {}),
        ('{"a":01}', {}),
        ('{"a":18446744073709551615}', {"a": 18446744073709551615}),
        ('{"a":18446744073709551616}', {}),
        # Duplicates: last wins, but a bad earlier duplicate still fails the whole value.
        ('{"a":1,"a":2}', {"a": 2}),
        ('{"a":"x","a":2}', {}),
        ("\ufeff{}", {}),
        ('{"\\ud800":1}', {"\ufffd": 1}),
        ('{"\\ud83d\\ude00":1}', {"😀": 1}),
        ('{"\\u003c":1}', {"<": 1}),
        ("[" * 100_000 + "]" * 100_000, {}),
    ],
)
def test_decode_tolerance(text: str | bytes | None, expected: dict[str, int]) -> None:
    assert vclock.decode(text) == expected


# ----- hypothesis laws ----------------------------------------------------------------------------------

# Lone surrogates cannot occur in Go strings (decode maps them to U+FFFD), so they are left out here.
keys = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30)
small_keys = st.sampled_from(["a", "b", "c", "d", ULID_A, ULID_B])
values = st.integers(min_value=0, max_value=vclock.UINT64_MAX)
small_values = st.integers(min_value=0, max_value=3)
# Small key and value pools make overlaps, ties and zero values common.
clocks = st.dictionaries(small_keys, small_values) | st.dictionaries(keys, values, max_size=8)


def _nonzero(vc: dict[str, int]) -> dict[str, int]:
    return {key: value for key, value in vc.items() if value != 0}


@given(clocks, clocks)
def test_merge_commutative_modulo_zero_values(a: dict[str, int], b: dict[str, int]) -> None:
    # Only zero-valued keys may differ: merge keeps a's zero keys but never adds b's.
    ab = vclock.merge(a, b)
    ba = vclock.merge(b, a)
    assert _nonzero(ab) == _nonzero(ba)
    assert vclock.compare(ab, ba) == 0
    assert set(ab) == set(a) | set(_nonzero(b))
    if 0 not in a.values() and 0 not in b.values():
        assert ab == ba


@given(clocks, clocks, clocks)
def test_merge_associative(a: dict[str, int], b: dict[str, int], c: dict[str, int]) -> None:
    assert vclock.merge(vclock.merge(a, b), c) == vclock.merge(a, vclock.merge(b, c))


@given(clocks)
def test_merge_idempotent(a: dict[str, int]) -> None:
    assert vclock.merge(a, a) == a
    assert vclock.merge(a, {}) == a
    assert vclock.merge({}, a) == _nonzero(a)


@given(clocks, clocks)
def test_merge_dominates_inputs(a: dict[str, int], b: dict[str, int]) -> None:
    a_before, b_before = dict(a), dict(b)
    merged = vclock.merge(a, b)
    assert a == a_before
    assert b == b_before
    assert vclock.compare(a, merged) in (-1, 0)
    assert vclock.compare(b, merged) in (-1, 0)
    assert vclock.compare(merged, a) in (0, 1)
    for key in a.keys() | b.keys():
        assert merged.get(key, 0) == max(a.get(key, 0), b.get(key, 0))


@given(clocks, clocks)
def test_compare_antisymmetric(a: dict[str, int], b: dict[str, int]) -> None:
    assert vclock.compare(a, b) == -vclock.compare(b, a)


@given(clocks)
def test_compare_reflexive(a: dict[str, int]) -> None:
    assert vclock.compare(a, a) == 0
    assert vclock.compare(a, vclock.clone(a)) == 0


@given(clocks, small_keys)
def test_increment_happens_after(a: dict[str, int], key: str) -> None:
    bumped = vclock.clone(a)
    vclock.increment(bumped, key)
    assert vclock.compare(a, bumped) == -1


@given(clocks)
def test_encode_decode_round_trip(a: dict[str, int]) -> None:
    text = vclock.encode(a)
    assert vclock.decode(text) == a
    # Any JSON reader agrees, and the text is Go's compact form.
    assert json.loads(text) == a
    assert text == _oracle_encode(a)


def _oracle_encode(vc: dict[str, int]) -> str:
    """An independent model of Go's Marshal: Python's escaping plus Go's HTML-safe extras."""

    def quote(key: str) -> str:
        text = json.dumps(key, ensure_ascii=False)
        for char in "<>&\u2028\u2029":
            text = text.replace(char, f"\\u{ord(char):04x}")
        return text

    ordered = sorted(vc, key=lambda key: key.encode("utf-8"))
    return "{" + ",".join(f"{quote(key)}:{vc[key]}" for key in ordered) + "}"


@given(clocks)
def test_encode_key_order_is_utf8_byte_order(a: dict[str, int]) -> None:
    decoded_order = list(json.loads(vclock.encode(a), object_pairs_hook=lambda pairs: [k for k, _ in pairs]))
    assert decoded_order == sorted(a, key=lambda key: key.encode("utf-8"))


@given(
    st.dictionaries(
        st.one_of(st.text(max_size=30), st.sampled_from(["\ud800", "a\udfffb", "<&>\u2028"])),
        st.one_of(st.integers(min_value=-1, max_value=vclock.UINT64_MAX + 1), st.booleans()),
        max_size=5,
    )
)
def test_round_trips_says_exactly_when_the_stored_text_reads_back_as_the_clock(vc: dict[str, int]) -> None:
    try:
        again = vclock.decode(vclock.encode(vc))
    except ValueError:
        assert not vclock.round_trips(vc)
        return
    assert vclock.round_trips(vc) == (again == vc)
