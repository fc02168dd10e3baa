"""The shared bearer key: NOEMA_MCP_KEY first, then the sidecar file, else open mode (federation.md §1.5)."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from noemafed.cortex.manifest import AccessConfig
from noemafed.errors import AccessKeyError, NoemafedError
from noemafed.records import Record

ACCESS_KEY_ENV = "NOEMA_MCP_KEY"
SIDECAR_MAX_BYTES = 4 * 1024
SOURCE_ENV = "env"
SOURCE_FILE = "file"


class AccessKey(Record):
    """The resolved key; `value` must never be printed or logged, only `fingerprint`."""

    value: str = ""
    source: str = ""  # "env", "file", or "" in open mode
    path: str = ""  # the file read, or the file that the env variable overrides

    @property
    def fingerprint(self) -> str:
        # Computed when shown (status, key fingerprint), so a cron sync never loads hashlib for it.
        return key_fingerprint(self.value) if self.value else ""

    @property
    def keyed(self) -> bool:
        return self.value != ""

    @property
    def env_override(self) -> bool:
        return self.source == SOURCE_ENV and self.path != ""

    def __repr__(self) -> str:  # keeps the secret out of tracebacks and debug output
        return f"AccessKey(source={self.source!r}, path={self.path!r}, fingerprint={self.fingerprint!r})"


def key_fingerprint(key: str) -> str:
    """`SHA256:` and the digest as 32 lowercase hex pairs joined by `:`; safe to show."""
    return fingerprint_of(key.encode("utf-8"))


def fingerprint_of(data: bytes) -> str:
    """noema's fingerprint format over any bytes: `SHA256:` and 32 lowercase hex pairs joined by `:`."""
    import hashlib  # noqa: PLC0415 (lazy: see AccessKey.fingerprint)

    digest = hashlib.sha256(data).hexdigest()
    return "SHA256:" + ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _go_stat_error(exc: OSError, path: str) -> str:
    reason = exc.strerror or str(exc)
    return f"stat {path}: {reason[:1].lower()}{reason[1:]}"


def sidecar_path(cortex_dir: Path, configured: str) -> str:
    """A sidecar path from cortex.md: relative paths resolve against the cortex dir, as in noema."""
    return configured if os.path.isabs(configured) else os.path.join(cortex_dir, configured)


def load_sidecar_line(path: str, label: str, error: type[NoemafedError] = AccessKeyError) -> str:
    """The single secret line of a 0600 sidecar file, under noema's size and format rules.

    The shared key and the signing seed obey the same rules (cortex.md §8); `error` is the class raised.
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        raise error(f"reading {label} {path}: {_go_stat_error(exc, path)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{label} {path} is a directory")
    if info.st_size > SIDECAR_MAX_BYTES:
        raise error(f"{label} {path} is {info.st_size} bytes; maximum is {SIDECAR_MAX_BYTES}")
    mode = stat.S_IMODE(info.st_mode) & 0o777
    if mode & 0o077:
        raise error(f"refusing to read {label} {path}: mode 0{mode:o} is too permissive; chmod 600 {path}")
    try:
        data = Path(path).read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise error(f"reading {label} {path}: {exc.strerror or exc}") from None
    # Each line is trimmed, so CRLF files work; exactly one non-empty line is the secret.
    lines = [line.strip() for line in data.split("\n") if line.strip()]
    if not lines:
        raise error(f"{label} {path} is empty or whitespace-only")
    if len(lines) > 1:
        raise error(
            f"{label} {path} contains {len(lines)} non-empty lines; v1 supports a single key per file"
        )
    return lines[0]


def load_access_key(cortex_dir: Path, access: AccessConfig, environ: Mapping[str, str]) -> AccessKey:
    """Resolve the key the way noema does; the configured path is kept even when env overrides it."""
    configured = sidecar_path(cortex_dir, access.shared_key_file) if access.shared_key_file else ""
    raw = environ.get(ACCESS_KEY_ENV, "")
    if raw:
        trimmed = raw.strip()
        if not trimmed:
            raise AccessKeyError(f"{ACCESS_KEY_ENV} is set but contains only whitespace")
        return AccessKey(trimmed, SOURCE_ENV, configured)
    if not configured:
        return AccessKey()
    key = load_sidecar_line(configured, "access key file")
    return AccessKey(key, SOURCE_FILE, configured)
