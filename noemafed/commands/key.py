"""`key fingerprint`: where the shared bearer key comes from, without revealing it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from noemafed.cortex.access import load_access_key
from noemafed.cortex.manifest import read_manifest
from noemafed.errors import AccessKeyError
from noemafed.reports.config import KeyReport


def key_fingerprint(cortex_dir: Path, environ: Mapping[str, str]) -> KeyReport:
    """Resolve the shared key exactly as sync and serve will, without ever exposing it."""
    manifest = read_manifest(cortex_dir)
    try:
        access = load_access_key(cortex_dir, manifest.access, environ)
    except AccessKeyError as exc:
        raise AccessKeyError(f"loading access key: {exc}") from None
    return KeyReport(manifest.name, access)
