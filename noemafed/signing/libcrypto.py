"""Ed25519 verification by the host's OpenSSL, through ctypes: the libcrypto this very Python links for TLS.

Every CPython that can make a TLS connection has an `_ssl` extension linked against libcrypto. We open `_ssl`'s
own file with `dlopen` (it is already loaded, so this only takes a reference) and look each function up through
that handle: the dynamic linker then searches `_ssl` and the libraries it depends on, so we get the libcrypto
`_ssl` uses, never another one that happens to come first on a library path. The version it reports must be the
one `_ssl` reports and at least 1.1.1 (raw Ed25519 keys), and a known signature must verify and a corrupted one
must not, or we do not use it. The caller (`verifier`) falls back to pure Python when `load` says why not.

Each verification is one `EVP_MD_CTX` (made and freed per call); the `EVP_PKEY` of a key that has verified a
signature is kept (at most KEYS_MAX, never freed: there is one per signing cortex of the ring), any other is
freed after its call. ctypes releases the GIL during each call, so concurrent polls verify in parallel.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

__all__ = ["KEYS_MAX", "MIN_VERSION", "OpenSslEd25519", "load"]

MIN_VERSION = 0x10101000  # OpenSSL 1.1.1, the first with EVP_PKEY_new_raw_public_key and EVP_DigestVerify
EVP_PKEY_ED25519 = 1087  # NID_ED25519 in every OpenSSL since 1.1.1
OPENSSL_VERSION = 0  # OpenSSL_version(OPENSSL_VERSION): "OpenSSL 3.0.19 27 Jan 2026"
KEYS_MAX = 64

# RFC 8032 §7.1, test 2: a one-byte message; the load-time check that the library really verifies Ed25519.
_CHECK_KEY = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
_CHECK_MESSAGE = bytes.fromhex("72")
_CHECK_SIGNATURE = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)

_P = ctypes.c_void_p
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "OpenSSL_version_num": (ctypes.c_ulong, []),
    "OpenSSL_version": (ctypes.c_char_p, [ctypes.c_int]),
    "EVP_PKEY_new_raw_public_key": (_P, [ctypes.c_int, _P, ctypes.c_char_p, ctypes.c_size_t]),
    "EVP_PKEY_free": (None, [_P]),
    "EVP_MD_CTX_new": (_P, []),
    "EVP_MD_CTX_free": (None, [_P]),
    "EVP_DigestVerifyInit": (ctypes.c_int, [_P, _P, _P, _P, _P]),
    "EVP_DigestVerify": (
        ctypes.c_int,
        [_P, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t],
    ),
}


class OpenSslEd25519:
    """libcrypto's Ed25519 verifier. `verify` answers True, False, or None when OpenSSL could not decide."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._fn = {}
        for name, (restype, argtypes) in _SIGNATURES.items():
            function = getattr(lib, name)  # AttributeError when the library lacks it
            function.restype = restype
            function.argtypes = argtypes
            self._fn[name] = function
        self.version_number: int = self._fn["OpenSSL_version_num"]()
        text = self._fn["OpenSSL_version"](OPENSSL_VERSION) or b"OpenSSL"
        self.version = " ".join(text.decode("ascii", "replace").split()[:2])  # "OpenSSL 3.0.19"
        self._keys: dict[bytes, int] = {}
        self._lock = threading.Lock()

    def verify(self, public: bytes, message: bytes, signature: bytes) -> bool | None:
        if len(public) != 32 or len(signature) != 64:
            return False
        fn = self._fn
        kept = self._keys.get(public)
        pkey = kept or fn["EVP_PKEY_new_raw_public_key"](EVP_PKEY_ED25519, None, public, 32)
        if not pkey:
            return None
        ctx = fn["EVP_MD_CTX_new"]()
        result = -1
        try:
            if ctx and fn["EVP_DigestVerifyInit"](ctx, None, None, None, pkey) == 1:
                result = fn["EVP_DigestVerify"](ctx, signature, 64, message, len(message))
        finally:
            fn["EVP_MD_CTX_free"](ctx)  # NULL is a no-op
            if not kept and not (result == 1 and self._keep(public, pkey)):
                fn["EVP_PKEY_free"](pkey)
        return None if result < 0 else result == 1

    def _keep(self, public: bytes, pkey: int) -> bool:
        """Keep the key of a signature that verified, unless full or another thread kept it first."""
        with self._lock:
            if public in self._keys or len(self._keys) >= KEYS_MAX:
                return False
            self._keys[public] = pkey
            return True


def load() -> OpenSslEd25519 | str:
    """The verifier of the libcrypto that `_ssl` links, or why it cannot be used."""
    try:
        import _ssl  # noqa: PLC0415 (inside the try: a Python without OpenSSL has no _ssl)
    except ImportError as exc:
        return f"no _ssl module ({exc})"
    path = getattr(_ssl, "__file__", None)  # None when _ssl is built into the interpreter
    try:
        verifier = OpenSslEd25519(ctypes.CDLL(path))
    except (OSError, AttributeError) as exc:
        return f"libcrypto of {path or 'the interpreter'} not usable ({exc})"
    if verifier.version_number != _ssl.OPENSSL_VERSION_NUMBER:
        return (
            f"found {verifier.version} ({verifier.version_number:#x}), but _ssl runs {_ssl.OPENSSL_VERSION}"
        )
    if verifier.version_number < MIN_VERSION:
        return f"{verifier.version} is older than 1.1.1"
    bad = _CHECK_SIGNATURE[:63] + bytes([_CHECK_SIGNATURE[63] ^ 1])
    if (
        verifier.verify(_CHECK_KEY, _CHECK_MESSAGE, _CHECK_SIGNATURE) is not True
        or verifier.verify(_CHECK_KEY, _CHECK_MESSAGE, bad) is not False
    ):
        return f"{verifier.version} does not verify Ed25519"
    return verifier
