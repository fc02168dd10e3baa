"""cortex.md: the typed model, noema's validation (federation.md §1.3), and round-trip rewrites."""

from __future__ import annotations

import errno
import stat
from pathlib import Path
from typing import Any

from noemafed.cortex import frontmatter
from noemafed.cortex.files import replace_file
from noemafed.errors import FrontmatterError, ManifestError
from noemafed.records import Record
from noemafed.text.durations import parse_go_duration
from noemafed.text.gotext import go_quote
from noemafed.text.keys import KeyFormatError, parse_public_key

MANIFEST_FILE = "cortex.md"
MANIFEST_VERSION = 2
DEFAULT_INTERVAL_SECONDS = 30.0

FEDERATION_MODES = ("sync", "publish", "subscribe")
VERIFY_MODES = ("off", "warn", "enforce")
PEER_MODE_SYNC = "sync"
PEER_MODE_PAUSED = "paused"
PEER_MODES = (PEER_MODE_SYNC, PEER_MODE_PAUSED)

# Go's output order for the blocks noemafed writes (federation.md §1.1).
_FEDERATION_KEY_ORDER = ("mode", "peers", "interval", "verify")
_PEER_KEY_ORDER = ("name", "endpoint", "ca", "mode", "pubkey")
_SIGNING_KEY_ORDER = ("public_key", "private_key_file")


class PeerConfig(Record):
    """One `federation.peers[]` entry; `mode` is the raw text (empty means sync)."""

    name: str
    endpoint: str
    ca: str = ""
    mode: str = ""
    pubkey: str = ""

    @property
    def effective_mode(self) -> str:
        return self.mode or PEER_MODE_SYNC

    @property
    def paused(self) -> bool:
        # Exact comparison, like Go: only the literal "paused" skips a peer.
        return self.mode == PEER_MODE_PAUSED


class FederationConfig(Record):
    """The `federation` block with raw texts kept for display and effective values derived."""

    mode: str = ""
    interval: str = ""
    verify: str = ""
    peers: tuple[PeerConfig, ...] = ()

    @property
    def effective_mode(self) -> str:
        return self.mode or "sync"

    @property
    def effective_verify(self) -> str:
        return self.verify or "off"

    @property
    def interval_seconds(self) -> float:
        """Go's EffectiveInterval: a parse error or a non-positive value means the 30 s default."""
        parsed = parse_go_duration(self.interval) if self.interval else None
        if parsed is None or parsed <= 0:
            return DEFAULT_INTERVAL_SECONDS
        return parsed

    def peer(self, name: str) -> PeerConfig | None:
        return next((p for p in self.peers if p.name == name), None)


class AccessConfig(Record):
    """The `access` block: where the shared key and the server's TLS material live."""

    shared_key_file: str = ""
    tls_cert_path: str = ""
    tls_key_path: str = ""


class Manifest(Record):
    """A parsed cortex.md; `raw` and `body` keep everything else so a rewrite loses nothing."""

    path: Path
    id: str
    name: str
    version: int
    created: str
    access: AccessConfig
    federation: FederationConfig | None
    signing_public_key: str
    signing_private_key_file: str
    raw: dict[str, Any]
    body: str = ""

    @property
    def peers(self) -> tuple[PeerConfig, ...]:
        return self.federation.peers if self.federation else ()

    @property
    def federation_mode(self) -> str:
        return self.federation.effective_mode if self.federation else "sync"


def _text(value: Any, where: str) -> str:
    """A scalar field as text; a mapping or list where a string belongs is a parse error."""
    if value is None:
        return ""
    if isinstance(value, str):
        return str(value)
    raise ManifestError(f"parsing cortex.md: {where} must be a string")


def _block(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    if value is None or (isinstance(value, str) and value == ""):
        return {}
    if not isinstance(value, dict):
        raise ManifestError(f"parsing cortex.md: {key} must be a mapping")
    return value


def _version(raw: dict[str, Any]) -> int:
    """`version` is the one integer the federation reads; missing or empty counts as 0, as in Go."""
    text = _text(raw.get("version"), "version")
    if text == "":
        return 0
    try:
        return int(text, 10)
    except ValueError:
        raise ManifestError(f"parsing cortex.md: version {go_quote(text)} is not an integer") from None


def _parse_peers(value: Any) -> tuple[PeerConfig, ...]:
    if value is None or (isinstance(value, str) and value == ""):
        return ()
    if not isinstance(value, list):
        raise ManifestError("parsing cortex.md: federation.peers must be a list")
    peers = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise ManifestError(f"parsing cortex.md: federation.peers[{index}] must be a mapping")
        fields = {key: _text(item.get(key), f"federation.peers[{index}].{key}") for key in _PEER_KEY_ORDER}
        peers.append(PeerConfig(**fields))
    return tuple(peers)


def _parse_federation(raw: dict[str, Any]) -> FederationConfig | None:
    if raw.get("federation") is None:
        return None
    block = _block(raw, "federation")
    return FederationConfig(
        mode=_text(block.get("mode"), "federation.mode"),
        interval=_text(block.get("interval"), "federation.interval"),
        verify=_text(block.get("verify"), "federation.verify"),
        peers=_parse_peers(block.get("peers")),
    )


def validate(federation: FederationConfig | None) -> None:
    """noema's manifest validation, in its order; the first failure wins (federation.md §1.3)."""
    if federation is None:
        return
    if federation.mode and federation.mode not in FEDERATION_MODES:
        raise ManifestError(
            f"federation.mode {go_quote(federation.mode)} is not valid; use sync, publish, or subscribe"
        )
    if federation.verify and federation.verify not in VERIFY_MODES:
        raise ManifestError(
            f"federation.verify {go_quote(federation.verify)} is not valid; use off, warn, or enforce"
        )
    for peer in federation.peers:
        if peer.mode and peer.mode not in PEER_MODES:
            raise ManifestError(
                f"federation.peers[{peer.name}].mode {go_quote(peer.mode)} is not valid; use sync or paused"
            )
        if peer.pubkey:
            try:
                parse_public_key(peer.pubkey)
            except KeyFormatError as exc:
                raise ManifestError(
                    f"federation.peers[{peer.name}].pubkey is not a valid signing key: {exc}"
                ) from None


# What `status` and `sync` need before they trust a manifest (the configuration commands still read it, so an
# operator can repair it with them).
MISSING_FIELD_ERROR = "cortex.md has no {field}: {why}"
MISSING_FIELD_HINT = "restore it from a backup of cortex.md; noema writes it when the cortex is created"
OLD_VERSION_ERROR = (
    "cortex.md version {version} is older than {minimum}, the first with a cortex id for federation"
)
OLD_VERSION_HINT = "open the cortex once with a current noema, which migrates cortex.md"
BAD_INTERVAL_ERROR = "federation.interval {interval} is not a duration (such as 30s, 5m, 1h30m)"
BAD_INTERVAL_HINT = "set it with `noemafed set-interval 5m`"


def check_ready_for_federation(manifest: Manifest) -> None:
    """Refuse what noema would silently work around: no id or name (peers pin the id), an old version, an
    interval that is not a duration (Go falls back to 30 s while status prints the bad text)."""
    if not manifest.id:
        raise ManifestError(
            MISSING_FIELD_ERROR.format(field="id", why="peers pin it"), hint=MISSING_FIELD_HINT
        )
    if not manifest.name:
        raise ManifestError(
            MISSING_FIELD_ERROR.format(field="name", why="events and logs carry it"), hint=MISSING_FIELD_HINT
        )
    if manifest.version < MANIFEST_VERSION:
        raise ManifestError(
            OLD_VERSION_ERROR.format(version=manifest.version, minimum=MANIFEST_VERSION),
            hint=OLD_VERSION_HINT,
        )
    federation = manifest.federation
    if federation is not None and federation.interval and parse_go_duration(federation.interval) is None:
        raise ManifestError(
            BAD_INTERVAL_ERROR.format(interval=go_quote(federation.interval)), hint=BAD_INTERVAL_HINT
        )


def parse_manifest(text: str, path: Path) -> Manifest:
    """Parse and validate cortex.md text; every failure is a ManifestError with noema's wording."""
    yaml_text, body = frontmatter.split_manifest(text)
    try:
        raw = frontmatter.loads(yaml_text)
    except FrontmatterError as exc:
        raise ManifestError(f"parsing cortex.md: {exc}") from None
    federation = _parse_federation(raw)
    access = _block(raw, "access")
    signing = _block(raw, "signing")
    manifest = Manifest(
        path=path,
        id=_text(raw.get("id"), "id"),
        name=_text(raw.get("name"), "name"),
        version=_version(raw),
        created=_text(raw.get("created"), "created"),
        access=AccessConfig(
            shared_key_file=_text(access.get("shared_key_file"), "access.shared_key_file"),
            tls_cert_path=_text(access.get("tls_cert_path"), "access.tls_cert_path"),
            tls_key_path=_text(access.get("tls_key_path"), "access.tls_key_path"),
        ),
        federation=federation,
        signing_public_key=_text(signing.get("public_key"), "signing.public_key"),
        signing_private_key_file=_text(signing.get("private_key_file"), "signing.private_key_file"),
        raw=raw,
        body=body,
    )
    validate(federation)
    return manifest


def _go_os_error(exc: OSError, op: str, path: Path) -> str:
    """An OSError in Go's `op path: lowercase reason` form."""
    reason = exc.strerror or str(exc)
    return f"{op} {path}: {reason[:1].lower()}{reason[1:]}"


def read_manifest(cortex_dir: Path) -> Manifest:
    """Read `<cortex>/cortex.md`; a missing or unreadable file is a ManifestError too."""
    path = cortex_dir / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"reading cortex.md: {_go_os_error(exc, 'open', path)}") from None
    except UnicodeDecodeError:
        raise ManifestError(f"parsing cortex.md: {path} is not UTF-8 text") from None
    return parse_manifest(text, path)


def write_manifest_raw(path: Path, raw: dict[str, Any], body: str) -> None:
    """Rewrite cortex.md atomically (temp file in the same folder, then rename), keeping its mode."""
    write_manifest_text(path, frontmatter.join_manifest(frontmatter.dumps(raw), body))


def write_manifest_text(path: Path, text: str) -> None:
    """Replace cortex.md with `text` atomically, keeping its mode; also puts back a saved copy byte for byte."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    if not mode & stat.S_IWUSR:
        # Replacing it by rename would succeed all the same: a file its owner made read-only is refused instead.
        raise PermissionError(errno.EACCES, f"read-only (mode {mode:04o})", str(path))
    replace_file(path, text, mode)


def _ordered(block: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    """Known keys in Go's order first, unknown keys after them in their original order."""
    known = {key: block[key] for key in order if key in block}
    rest = {key: value for key, value in block.items() if key not in order}
    return {**known, **rest}


def _set_or_clear(block: dict[str, Any], key: str, value: str) -> None:
    """Go omits empty optional fields on write, so an empty value removes the key."""
    if value:
        block[key] = value
    else:
        block.pop(key, None)


def with_federation_mode(manifest: Manifest, mode: str) -> dict[str, Any]:
    """A copy of the raw manifest with `federation.mode` set (sync, the default, is omitted)."""
    return with_federation_setting(manifest, "mode", "" if mode == "sync" else mode)


def with_federation_setting(manifest: Manifest, key: str, value: str) -> dict[str, Any]:
    """A copy of the raw manifest with one `federation` key set, or removed when `value` is empty."""
    raw = dict(manifest.raw)
    block = dict(_block(raw, "federation"))
    _set_or_clear(block, key, value)
    raw["federation"] = _ordered(block, _FEDERATION_KEY_ORDER)
    return raw


def with_peer_mode(manifest: Manifest, peer_name: str, mode: str) -> dict[str, Any]:
    """A copy of the raw manifest with one peer's `mode` set (sync, the default, is omitted)."""
    return with_peer_fields(manifest, peer_name, {"mode": "" if mode == PEER_MODE_SYNC else mode})


def with_peer_fields(manifest: Manifest, peer_name: str, fields: dict[str, str]) -> dict[str, Any]:
    """A copy of the raw manifest with some of one peer's keys set (`name` renames it); an empty value
    removes the key. The peer's other keys, known or not, stay as they are."""
    raw = dict(manifest.raw)
    block = dict(_block(raw, "federation"))
    peers = []
    for item in block.get("peers") or []:
        entry = dict(item)
        if _text(entry.get("name"), "name") == peer_name:
            for key, value in fields.items():
                _set_or_clear(entry, key, value)
            entry = _ordered(entry, _PEER_KEY_ORDER)
        peers.append(entry)
    block["peers"] = peers
    raw["federation"] = _ordered(block, _FEDERATION_KEY_ORDER)
    return raw


def with_removed_peers(manifest: Manifest, names: tuple[str, ...]) -> dict[str, Any]:
    """A copy of the raw manifest without these peers; an empty `peers` (and then an empty `federation`) is
    dropped, as Go omits empty fields."""
    raw = dict(manifest.raw)
    block = dict(_block(raw, "federation"))
    peers = [item for item in block.get("peers") or [] if _text(item.get("name"), "name") not in names]
    if peers:
        block["peers"] = peers
    else:
        block.pop("peers", None)
    if block:
        raw["federation"] = _ordered(block, _FEDERATION_KEY_ORDER)
    else:
        raw.pop("federation", None)  # nothing left to configure: as if federation had never been set up
    return raw


def with_added_peer(
    manifest: Manifest, name: str, endpoint: str, ca: str = "", pubkey: str = ""
) -> dict[str, Any]:
    """A copy of the raw manifest with a `{name, endpoint[, ca][, pubkey]}` peer appended, creating the block
    if needed."""
    raw = dict(manifest.raw)
    block = dict(_block(raw, "federation"))
    peers = list(block.get("peers") or [])
    entry = {"name": name, "endpoint": endpoint}
    _set_or_clear(entry, "ca", ca)
    _set_or_clear(entry, "pubkey", pubkey)
    peers.append(entry)
    block["peers"] = peers
    raw["federation"] = _ordered(block, _FEDERATION_KEY_ORDER)
    return raw


def with_signing_key(manifest: Manifest, public_key: str, private_key_file: str) -> dict[str, Any]:
    """A copy of the raw manifest with `signing.public_key` and `signing.private_key_file` set, as `noema
    keygen` records them; other keys of the block stay."""
    raw = dict(manifest.raw)
    block = dict(_block(raw, "signing"))
    block["public_key"] = public_key
    block["private_key_file"] = private_key_file
    raw["signing"] = _ordered(block, _SIGNING_KEY_ORDER)
    return raw
