"""The certificate-expiry gate of noema serve: refuse to start on an expired (or not yet valid) certificate.

Clients refuse an expired certificate, so a server that starts with one looks unreachable to its whole ring.
The validity window is read from the first CERTIFICATE block of the file with a minimal DER reader (the
standard library has no X.509 parser); the texts are the live Rust build's (`tlsutil::gate_startup`).
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta

from noemafed.records import Record
from noemafed.text.gotext import format_rfc3339

NEAR_EXPIRY = timedelta(days=7)
_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.DOTALL)

CANNOT_READ = "refusing to start: cannot read TLS certificate: {error}"
READ_FAILED = "tlsutil: reading {path}: {error}"
NO_BLOCK = "tlsutil: no CERTIFICATE block in {path}"
NOT_A_CERTIFICATE = "tlsutil: parsing certificate from {path}: {error}"
EXPIRED = (
    "refusing to start: TLS certificate at {path} expired {days} day(s) ago (NotAfter={not_after}).\n"
    "  Clients reject expired certificates and the server would appear unreachable.\n"
    "  Rotate the certificate and restart, or pass --insecure-allow-expired briefly to rotate it in place"
)
EXPIRED_ALLOWED = "[serve] WARN --insecure-allow-expired: TLS cert at {path} expired {days} day(s) ago (NotAfter={not_after})"
NOT_YET_VALID = (
    "refusing to start: TLS certificate at {path} NotBefore is in the future (NotAfter={not_after}).\n"
    "  This is usually clock skew or the wrong certificate path.\n"
    "  Pass --insecure-allow-expired to bypass this check"
)
NOT_YET_VALID_ALLOWED = (
    "[serve] WARN --insecure-allow-expired: TLS cert at {path} not yet valid (NotAfter={not_after})"
)
EXPIRES_SOON = "[serve] WARN TLS cert at {path} expires in {days} day(s) (NotAfter={not_after}) - rotate soon"


class CertificateRefused(Exception):
    """The server must not start with this certificate; the message is noema's text."""


class Validity(Record):
    not_before: datetime
    not_after: datetime


def gate_startup(path: str, allow_expired: bool, now: datetime) -> str | None:
    """Refuse (CertificateRefused) or return the warning to log, as noema serve does at start-up."""
    validity = read_validity(path)
    not_after = format_rfc3339(validity.not_after)
    if now >= validity.not_after:
        days = int((now - validity.not_after).total_seconds()) // 86_400
        if not allow_expired:
            raise CertificateRefused(EXPIRED.format(path=path, days=days, not_after=not_after))
        return EXPIRED_ALLOWED.format(path=path, days=days, not_after=not_after)
    if now < validity.not_before:
        if not allow_expired:
            raise CertificateRefused(NOT_YET_VALID.format(path=path, not_after=not_after))
        return NOT_YET_VALID_ALLOWED.format(path=path, not_after=not_after)
    left = validity.not_after - now
    if left <= NEAR_EXPIRY:
        return EXPIRES_SOON.format(path=path, days=int(left.total_seconds()) // 86_400, not_after=not_after)
    return None


def read_validity(path: str) -> Validity:
    """NotBefore and NotAfter of the first certificate in a PEM file (the flag never bypasses a bad file)."""
    try:
        with open(path, "rb") as handle:
            pem = handle.read()
    except OSError as exc:
        error = READ_FAILED.format(path=path, error=exc.strerror or exc)
        raise CertificateRefused(CANNOT_READ.format(error=error)) from None
    block = _PEM_BLOCK.search(pem)
    if block is None:
        raise CertificateRefused(CANNOT_READ.format(error=NO_BLOCK.format(path=path)))
    try:
        return _validity(base64.b64decode(block.group(1), validate=False))
    except (ValueError, IndexError) as exc:
        error = NOT_A_CERTIFICATE.format(path=path, error=exc)
        raise CertificateRefused(CANNOT_READ.format(error=error)) from None


def der_validity(der: bytes) -> Validity:
    """NotBefore and NotAfter of a DER certificate (a peer's, as its TLS handshake presented it)."""
    return _validity(der)


def _element(der: bytes, position: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at `position`."""
    tag, length = der[position], der[position + 1]
    position += 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(der[position : position + count], "big")
        position += count
    if position + length > len(der):
        raise ValueError("truncated DER")
    return tag, position, position + length


def _validity(der: bytes) -> Validity:
    """Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version?, serial, signature, issuer,
    validity SEQUENCE { notBefore, notAfter }, ... }, ... }"""
    tag, start, _ = _element(der, 0)
    if tag != 0x30:
        raise ValueError("not a DER certificate")
    tag, position, _ = _element(der, start)  # tbsCertificate
    if tag != 0x30:
        raise ValueError("no tbsCertificate")
    tag, _, end = _element(der, position)
    if tag == 0xA0:  # explicit version
        position = end
    for _ in range(3):  # serialNumber, signature algorithm, issuer
        position = _element(der, position)[2]
    tag, position, _ = _element(der, position)
    if tag != 0x30:
        raise ValueError("no validity")
    not_before_tag, start, end = _element(der, position)
    not_before = _time(not_before_tag, der[start:end])
    not_after_tag, start, end = _element(der, end)
    return Validity(not_before, _time(not_after_tag, der[start:end]))


def _time(tag: int, value: bytes) -> datetime:
    text = value.decode("ascii")
    if tag == 0x17:  # UTCTime, YYMMDDHHMMSSZ; RFC 5280: YY < 50 is 20YY
        year = int(text[:2])
        text = f"{2000 + year if year < 50 else 1900 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime, YYYYMMDDHHMMSSZ
        raise ValueError("validity time is neither UTCTime nor GeneralizedTime")
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)
