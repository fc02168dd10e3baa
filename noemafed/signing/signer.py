"""This cortex's event signing key (cortex.md §8): read from its sidecar file on first use, then kept."""

from __future__ import annotations

import base64
from pathlib import Path

from noemafed.cortex.access import load_sidecar_line, sidecar_path
from noemafed.cortex.events import Event
from noemafed.cortex.manifest import Manifest
from noemafed.errors import SigningKeyError
from noemafed.signing import ed25519, eventsig
from noemafed.text.keys import KEY_PREFIX, KeyFormatError, parse_seed, public_keys_equal

__all__ = ["SIGNING_KEY_LABEL", "EventSigner", "load_signing_seed"]

SIGNING_KEY_LABEL = "signing key file"


def load_signing_seed(cortex_dir: Path, manifest: Manifest) -> bytes | None:
    """Go's LoadSigningKey: None (unsigned) without `signing.private_key_file`; errors name the file."""
    if not manifest.signing_private_key_file:
        return None
    path = sidecar_path(cortex_dir, manifest.signing_private_key_file)
    line = load_sidecar_line(path, SIGNING_KEY_LABEL, SigningKeyError)
    try:
        seed = parse_seed(line)
    except KeyFormatError as exc:
        raise SigningKeyError(f"parsing signing key {path}: {exc}") from None
    derived = KEY_PREFIX + base64.b64encode(ed25519.public_key(seed)).decode("ascii")
    # A public_key that disagrees with the seed would make every event we sign fail on our peers.
    if manifest.signing_public_key and not public_keys_equal(manifest.signing_public_key, derived):
        raise SigningKeyError(
            f"signing key mismatch: cortex.md public_key does not match the key derived from {path} "
            "(re-run `noema keygen --force` to regenerate, or fix public_key)"
        )
    return seed


class EventSigner:
    """Signs the events this cortex authors; one per open cortex, which keeps the seed once it has read it."""

    def __init__(self, cortex_dir: Path, manifest: Manifest) -> None:
        self._dir = cortex_dir
        self._manifest = manifest
        self._seed: bytes | None = None

    def sign(self, event: Event) -> Event:
        """The event as stored: unchanged for an unsigned cortex, else with `signature` and `pubkey` set."""
        if self._seed is None:
            # Read on the first event, not at open: a sync that only replays never needs the key. A failure
            # is not remembered, so a fixed file is picked up by the next attempt without a restart.
            self._seed = load_signing_seed(self._dir, self._manifest)
            if self._seed is None:
                return event
        return eventsig.sign_event(event, self._seed)
