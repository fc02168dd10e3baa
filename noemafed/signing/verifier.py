"""Which Ed25519 verifier checks event signatures: the host's OpenSSL (`libcrypto`) when it loads, else pure
Python (`ed25519`); both give Go's verdict on every input.

The choice is made once per process, on the first verification, so commands that verify nothing never load
libcrypto. `NOEMAFED_ED25519=python` forces the pure-Python verifier and `=openssl` asks for OpenSSL (falling back,
with the reason in the label, when it cannot load); any other value, or none, means OpenSSL when it loads.
Tests and `scripts/bench.py` use it; `status --json` (`federation.verifier`) and `--version` say which one runs.

Where OpenSSL and Go could disagree, Go (noema's verifier) wins. OpenSSL 3.0 and Go agree on every vector of
tests/data/ed25519/, but what a library does with non-canonical encodings has changed between versions of
several libraries, so those inputs never reach OpenSSL: `decided_by_go_rules` settles them in Python first.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from noemafed.records import Record
from noemafed.signing import OPENSSL, PYTHON, VERIFIER_ENV, ed25519

__all__ = [
    "ENV",
    "Verifier",
    "chosen",
    "current",
    "decided_by_go_rules",
    "openssl",
    "python",
    "verify",
]

ENV = VERIFIER_ENV

_X_IS_ZERO = (1, ed25519.P - 1)  # the only y with x = 0: the identity and the point of order 2


class Verifier(Record):
    name: str  # "openssl" or "python": the `verifier` field of `status --json`
    label: str  # what `--version` shows: "OpenSSL 3.0.19", "pure Python"
    verify: Callable[[bytes, bytes, bytes], bool]


def _non_canonical(encoding: bytes) -> bool:
    """y >= p, or the sign bit set on x = 0: encodings RFC 8032 forbids and libraries treat differently."""
    value = int.from_bytes(encoding, "little")
    y = value & ((1 << 255) - 1)
    return y >= ed25519.P or (value >> 255 == 1 and y in _X_IS_ZERO)


def decided_by_go_rules(public: bytes, message: bytes, signature: bytes) -> bool | None:
    """Go's verdict where it follows from the encodings alone or depends on how A is decoded; None otherwise.

    Go rejects S >= L, and a non-canonical R (it compares R's bytes with the canonical encoding of [S]B - [k]A).
    It accepts a non-canonical A (y mod p, -0 allowed), which RFC 8032 forbids: the pure-Python verifier, which
    decodes A as Go does, decides those. Honest signers never produce any of these.
    """
    if len(public) != 32 or len(signature) != 64:
        return False
    if int.from_bytes(signature[32:], "little") >= ed25519.L or _non_canonical(signature[:32]):
        return False
    if _non_canonical(public):
        return ed25519.verify(public, message, signature)
    return None


def python() -> Verifier:
    return Verifier(PYTHON, "pure Python", ed25519.verify)


def openssl() -> Verifier | str:
    """The OpenSSL verifier with Go's rules in front, or why OpenSSL cannot be used."""
    try:
        from noemafed.signing import libcrypto  # noqa: PLC0415 (ctypes is loaded only when a signature is checked)
    except ImportError as exc:  # no ctypes in this Python
        return f"no ctypes ({exc})"
    library = libcrypto.load()
    if isinstance(library, str):
        return library

    def verify(public: bytes, message: bytes, signature: bytes) -> bool:
        decided = decided_by_go_rules(public, message, signature)
        if decided is not None:
            return decided
        verdict = library.verify(public, message, signature)
        # None: OpenSSL could not run the check (memory, a provider refusing); the answer still has to be Go's.
        return ed25519.verify(public, message, signature) if verdict is None else verdict

    return Verifier(OPENSSL, library.version, verify)


_chosen: list[Verifier] = []
_choosing = threading.Lock()


def current() -> Verifier:
    """The verifier of this process, chosen on first use from NOEMAFED_ED25519 and what loads."""
    if _chosen:
        return _chosen[0]
    with _choosing:
        if not _chosen:
            choice = os.environ.get(ENV, "")
            loaded = python() if choice == PYTHON else openssl()
            if isinstance(loaded, str):
                label = f"pure Python (OpenSSL not used: {loaded})" if choice == OPENSSL else "pure Python"
                loaded = Verifier(PYTHON, label, ed25519.verify)
            _chosen.append(loaded)
        return _chosen[0]


def chosen() -> Verifier | None:
    """The verifier this process has chosen, or None while it has checked no signature (and not asked)."""
    return _chosen[0] if _chosen else None


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature of `message` under `public`, as Go decides."""
    return current().verify(public, message, signature)
