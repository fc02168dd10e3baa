"""`keygen`: this cortex's Ed25519 event-signing key, made as `noema keygen` makes it (cortex.md §8)."""

from __future__ import annotations

import base64
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

from noemafed.cortex.access import fingerprint_of, sidecar_path
from noemafed.cortex.manifest import read_manifest, with_signing_key, write_manifest_raw
from noemafed.errors import CommandError
from noemafed.federation.lock import sync_running
from noemafed.reports.config import KeygenReport
from noemafed.signing import ed25519
from noemafed.text.keys import KEY_PREFIX, SEED_SIZE, KeyFormatError, parse_public_key

DEFAULT_KEY_FILE = "noema-signing.key"  # noema keygen's name, in the cortex folder
KEY_MODE = 0o600

KEY_EXISTS = "this cortex already has a signing key: {what}"
KEY_EXISTS_HINT = (
    "pass --force to replace it; peers that pinned the old key then refuse this cortex until each runs "
    "`noemafed reset-peer <name>` (or `noema federation reset-peer <name>`) for it"
)
EXISTS_SEED = "the seed file {path}"
EXISTS_PUBLIC = "signing.public_key in cortex.md"
EXISTS_FILE = "signing.private_key_file in cortex.md"


def public_key_fingerprint(public_key: str) -> str:
    """noema's fingerprint format (`SHA256:` + hex pairs) over the key's 32 raw bytes, so two base64 spellings
    of one key agree; noema defines no fingerprint for signing keys (docs/compatibility.md)."""
    return fingerprint_of(parse_public_key(public_key))


def _existing(public_key: str, key_file: str, seed_path: Path) -> list[str]:
    found = []
    if os.path.lexists(seed_path):
        found.append(EXISTS_SEED.format(path=seed_path))
    if public_key:
        found.append(EXISTS_PUBLIC)
    if key_file:
        found.append(EXISTS_FILE)
    return found


def keygen(locate: Callable[[], Path], force: bool) -> KeygenReport:
    """Create a seed file (0600 from birth) and record its public key in cortex.md; refuse to replace a key
    (its file or either manifest entry) unless `force`."""
    cortex_dir = locate()
    manifest = read_manifest(cortex_dir)
    key_file = manifest.signing_private_key_file or DEFAULT_KEY_FILE
    seed_path = Path(sidecar_path(cortex_dir, key_file)).absolute()
    existing = _existing(manifest.signing_public_key, manifest.signing_private_key_file, seed_path)
    if existing and not force:
        raise CommandError(KEY_EXISTS.format(what=", ".join(existing)), KEY_EXISTS_HINT)
    seed = secrets.token_bytes(SEED_SIZE)
    public_key = KEY_PREFIX + base64.b64encode(ed25519.public_key(seed)).decode("ascii")
    raw = with_signing_key(manifest, public_key, key_file)
    _install(
        seed_path, seed, replace=force, then=lambda: write_manifest_raw(manifest.path, raw, manifest.body)
    )
    try:
        replaced = public_key_fingerprint(manifest.signing_public_key) if manifest.signing_public_key else ""
    except KeyFormatError:
        replaced = manifest.signing_public_key  # noema would have refused it; shown as it was
    return KeygenReport(
        seed_path=seed_path,
        key_file=key_file,
        public_key=public_key,
        fingerprint=public_key_fingerprint(public_key),
        replaced=replaced,
        running=sync_running(cortex_dir),
    )


def _install(path: Path, seed: bytes, *, replace: bool, then: Callable[[], None]) -> None:
    """Put the seed file in place, then run `then` (the manifest rewrite); if that fails, put back what was
    there. A crash between the two steps leaves a seed cortex.md does not name (keygen then refuses without
    --force) or, with --force, a seed that disagrees with public_key, which the signer refuses by name."""
    previous = path.read_bytes() if replace and path.is_file() else None
    _place(path, base64.b64encode(seed) + b"\n", replace=replace)
    try:
        then()
    except BaseException:
        if previous is None:
            path.unlink(missing_ok=True)
        else:
            _place(path, previous, replace=True)
        raise


def _place(path: Path, content: bytes, *, replace: bool) -> None:
    """Write `content` to a temp file that mkstemp creates 0600, then rename or link it into place: the seed
    is never readable by others, not even for an instant, and never half-written under its name."""
    fd, tmp = tempfile.mkstemp(prefix=".noemafed-keygen-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), KEY_MODE)  # 0600 whatever the umask, said once more
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if a file appeared since the check: never replaces one
    finally:
        Path(tmp).unlink(missing_ok=True)
