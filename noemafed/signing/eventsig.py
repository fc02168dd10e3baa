"""Event signatures (wire.md §7, cortex.md §4.7): the preimage over the stored bytes, signing and verifying."""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import replace

from noemafed.cortex.events import EMPTY_DATA, NULL_DATA, Event
from noemafed.signing import ed25519, verifier
from noemafed.text.keys import KEY_PREFIX, KeyFormatError, parse_public_key, parse_signature

__all__ = ["PREIMAGE_PREFIX", "preimage", "sign_event", "verify_event"]

PREIMAGE_PREFIX = b"noema-event-sig-v1\n"


def _field(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _clock_blob(clock: dict[str, int] | None) -> bytes:
    # The unfiltered event clock, keys in byte order; legacy name keys are signed too.
    if not clock:
        return b""
    out = bytearray()
    for key in sorted(clock, key=lambda k: k.encode("utf-8", "surrogatepass")):
        out += _field(key.encode("utf-8", "surrogatepass")) + struct.pack(">Q", clock[key])
    return bytes(out)


def data_bytes(event: Event) -> bytes:
    """The hashed payload bytes: the stored text, `{}` when absent or null (wire.md §7.2)."""
    text = event.data if event.data and event.data != NULL_DATA else EMPTY_DATA
    return text.encode("utf-8", "surrogatepass")


def preimage(event: Event) -> bytes:
    """The exact bytes an emitter signs; `signature` and `pubkey` are not part of it."""
    parts = [PREIMAGE_PREFIX]
    for text in (event.id, event.action, event.trace_id, event.cortex_id, event.origin, event.timestamp):
        parts.append(_field(text.encode("utf-8", "surrogatepass")))
    parts.append(_field(_clock_blob(event.vclock)))
    parts.append(_field(hashlib.sha256(data_bytes(event)).digest()))
    return b"".join(parts)


def verify_event(event: Event, pubkey: str) -> bool:
    """True when the event's signature verifies under `pubkey` (`ed25519:<base64>`)."""
    try:
        public = parse_public_key(pubkey)
        signature = parse_signature(event.signature)
    except KeyFormatError:
        return False
    return verifier.verify(public, preimage(event), signature)


def sign_event(event: Event, seed: bytes) -> Event:
    """The event with `signature` and `pubkey` set, as a signing cortex emits it."""
    signature = ed25519.sign(seed, preimage(event))
    public = ed25519.public_key(seed)
    return replace(
        event,
        signature=KEY_PREFIX + base64.b64encode(signature).decode("ascii"),
        pubkey=KEY_PREFIX + base64.b64encode(public).decode("ascii"),
    )
