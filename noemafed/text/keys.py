"""`ed25519:<base64>` key texts: parsing with Go's exact error messages, and comparison by value."""

from __future__ import annotations

import contextlib

KEY_PREFIX = "ed25519:"
PUBLIC_KEY_SIZE = 32
SEED_SIZE = 32
SIGNATURE_SIZE = 64

_BASE64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_PAD = ord("=")
_NEWLINES = (ord("\n"), ord("\r"))


class KeyFormatError(ValueError):
    """A key or signature text that is not `ed25519:` + standard padded base64 of the right length."""


def _go_base64_error_offset(data: bytes) -> int | None:
    """Where Go's base64.StdEncoding.DecodeString would report corrupt input, or None if it decodes.

    Go reads 4-character quanta, skips CR/LF, requires padding, and reports the byte offset of the
    first problem; the operator sees that offset in the manifest validation error.
    """
    si = 0
    n = len(data)
    while True:
        j = 0
        while j < 4:
            if si == n:
                if j == 0:
                    return None
                return si - j  # a partial quantum without padding
            ch = data[si]
            si += 1
            if ch in _BASE64_ALPHABET:
                j += 1
                continue
            if ch in _NEWLINES:
                continue
            if ch != _PAD or j in (0, 1):
                return si - 1
            if j == 2:  # a second '=' must follow, after optional newlines
                while si < n and data[si] in _NEWLINES:
                    si += 1
                if si == n:
                    return n
                if data[si] != _PAD:
                    return si - 1
                si += 1
            while si < n and data[si] in _NEWLINES:
                si += 1
            return si if si < n else None


def _decode_scheme(text: str, want_len: int) -> bytes:
    """Strip the scheme prefix and decode, with eventsig's error texts."""
    text = text.strip()
    if not text.startswith(KEY_PREFIX):
        raise KeyFormatError('missing "ed25519" scheme prefix')
    rest = text[len(KEY_PREFIX) :].encode("utf-8")
    import binascii  # noqa: PLC0415 (an extension module, 0.2 ms: only a manifest with keys needs it)

    if len(rest) == (want_len + 2) // 3 * 4:
        with contextlib.suppress(binascii.Error):
            # The common case, in C: at exactly the canonical length, strict base64 (the alphabet, padding only
            # at the end) that gives want_len bytes is what Go decodes too, to the same bytes. Anything else
            # takes the walk below, which finds Go's error offset.
            raw = binascii.a2b_base64(rest, strict_mode=True)
            if len(raw) == want_len:
                return raw
    offset = _go_base64_error_offset(rest)
    if offset is not None:
        raise KeyFormatError(f"base64: illegal base64 data at input byte {offset}")
    raw = binascii.a2b_base64(rest.replace(b"\n", b"").replace(b"\r", b""))
    if len(raw) != want_len:
        raise KeyFormatError(f"decoded {len(raw)} bytes, want {want_len}")
    return raw


def parse_public_key(text: str) -> bytes:
    """The 32 raw bytes of an `ed25519:<base64>` public key; KeyFormatError says what is wrong."""
    try:
        return _decode_scheme(text, PUBLIC_KEY_SIZE)
    except KeyFormatError as exc:
        raise KeyFormatError(f"eventsig: malformed public key: {exc}") from None


def parse_signature(text: str) -> bytes:
    """The 64 raw bytes of an `ed25519:<base64>` signature."""
    try:
        return _decode_scheme(text, SIGNATURE_SIZE)
    except KeyFormatError as exc:
        raise KeyFormatError(f"eventsig: malformed signature: {exc}") from None


def parse_seed(text: str) -> bytes:
    """The 32 raw bytes of a base64 signing seed (no prefix), with the texts of Go's PrivateFromSeed."""
    data = text.strip().encode("utf-8")
    offset = _go_base64_error_offset(data)
    if offset is not None:
        raise KeyFormatError(f"eventsig: malformed seed: illegal base64 data at input byte {offset}")
    import binascii  # noqa: PLC0415 (see _decode_scheme)

    raw = binascii.a2b_base64(data.replace(b"\n", b"").replace(b"\r", b""))
    if len(raw) != SEED_SIZE:
        raise KeyFormatError(f"eventsig: malformed seed: seed is {len(raw)} bytes, want {SEED_SIZE}")
    return raw


def public_keys_equal(a: str, b: str) -> bool:
    """Keys compare by decoded value, so base64 spelling differences do not matter (public: no timing concern)."""
    try:
        return parse_public_key(a) == parse_public_key(b)
    except KeyFormatError:
        return False
