"""`ed25519:<base64>` parsing with Go's error texts, including base64 error offsets."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from noemafed.text.keys import (
    KeyFormatError,
    _decode_scheme,
    parse_public_key,
    parse_signature,
    public_keys_equal,
)

KEY = "ed25519:0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc="


def test_valid_key() -> None:
    assert len(parse_public_key(KEY)) == 32
    assert parse_public_key("  " + KEY + "\n") == parse_public_key(KEY)


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc=", 'missing "ed25519" scheme prefix'),
        ("ED25519:AAAA", 'missing "ed25519" scheme prefix'),
        ("ed25519:", "decoded 0 bytes, want 32"),
        ("ed25519:AAAA", "decoded 3 bytes, want 32"),
        ("ed25519:A", "base64: illegal base64 data at input byte 0"),
        ("ed25519:AB", "base64: illegal base64 data at input byte 0"),
        ("ed25519:ABC", "base64: illegal base64 data at input byte 0"),
        ("ed25519:AAAAA", "base64: illegal base64 data at input byte 4"),
        ("ed25519:AB=", "base64: illegal base64 data at input byte 3"),
        ("ed25519:AB=A", "base64: illegal base64 data at input byte 2"),
        ("ed25519:A===", "base64: illegal base64 data at input byte 1"),
        ("ed25519:====", "base64: illegal base64 data at input byte 0"),
        ("ed25519:AAA=AAAA", "base64: illegal base64 data at input byte 4"),
        ("ed25519:AA-A", "base64: illegal base64 data at input byte 2"),
        ("ed25519:AA A", "base64: illegal base64 data at input byte 2"),
        ("ed25519:AAAé", "base64: illegal base64 data at input byte 3"),
        (KEY + "=", "base64: illegal base64 data at input byte 44"),
    ],
)
def test_malformed_keys_name_the_problem_like_go(text: str, detail: str) -> None:
    with pytest.raises(KeyFormatError) as err:
        parse_public_key(text)
    assert str(err.value) == f"eventsig: malformed public key: {detail}"


def test_the_c_fast_path_decodes_only_what_go_decodes() -> None:
    """Python's strict base64 accepts padding after a whole quantum ("sFg4==" -> 3 bytes), which Go refuses;
    keys (32 bytes) and signatures (64) never end on a whole quantum, so the length check that keeps the fast
    path to the canonical length is seen only at a length that does."""
    with pytest.raises(KeyFormatError, match="illegal base64 data at input byte 4"):
        _decode_scheme("ed25519:sFg4==", 3)
    assert _decode_scheme("ed25519:sFg4", 3) == b"\xb0X8"


def test_signature_length() -> None:
    sig = "ed25519:" + base64.b64encode(bytes(64)).decode()
    assert parse_signature(sig) == bytes(64)
    with pytest.raises(KeyFormatError, match="eventsig: malformed signature: decoded 32 bytes, want 64"):
        parse_signature(KEY)


def test_keys_compare_by_value() -> None:
    assert public_keys_equal(KEY, " " + KEY)
    assert not public_keys_equal(KEY, "ed25519:" + base64.b64encode(bytes(32)).decode())
    assert not public_keys_equal(KEY, "garbage")


@given(st.binary(max_size=64))
def test_valid_padded_base64_always_decodes(raw: bytes) -> None:
    text = "ed25519:" + base64.b64encode(raw).decode()
    if len(raw) == 32:
        assert parse_public_key(text) == raw
    else:
        with pytest.raises(KeyFormatError, match=f"decoded {len(raw)} bytes, want 32"):
            parse_public_key(text)
