"""The shared key: env first, sidecar file rules with noema's error texts, fingerprint format."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from noemafed.cortex.access import AccessKey, key_fingerprint, load_access_key
from noemafed.cortex.manifest import AccessConfig
from noemafed.errors import AccessKeyError


def _sidecar(tmp_path: Path, content: str | bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "noema-mcp.key"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    os.chmod(path, mode)
    return path


def test_fingerprint_format() -> None:
    digest = hashlib.sha256(b"k7Qm2v9x").hexdigest()
    fp = key_fingerprint("k7Qm2v9x")
    assert fp.startswith("SHA256:")
    assert fp[7:].replace(":", "") == digest
    assert len(fp[7:].split(":")) == 32


def test_open_mode(tmp_path: Path) -> None:
    assert load_access_key(tmp_path, AccessConfig(), {}) == AccessKey()
    assert not AccessKey().keyed


def test_env_wins_and_records_the_overridden_file(tmp_path: Path) -> None:
    _sidecar(tmp_path, "file-key\n")
    key = load_access_key(
        tmp_path, AccessConfig(shared_key_file="noema-mcp.key"), {"NOEMA_MCP_KEY": "  S3CRET-VALUE \n"}
    )
    assert (key.value, key.source, key.path) == ("S3CRET-VALUE", "env", str(tmp_path / "noema-mcp.key"))
    assert key.env_override
    assert "S3CRET" not in repr(key)


def test_empty_env_falls_through_to_the_file(tmp_path: Path) -> None:
    _sidecar(tmp_path, "\n\n  file-key \r\n\n")
    key = load_access_key(tmp_path, AccessConfig(shared_key_file="noema-mcp.key"), {"NOEMA_MCP_KEY": ""})
    assert (key.value, key.source, key.fingerprint) == ("file-key", "file", key_fingerprint("file-key"))
    assert not key.env_override


def test_absolute_sidecar_path(tmp_path: Path) -> None:
    path = _sidecar(tmp_path, "abs")
    key = load_access_key(Path("/nonexistent"), AccessConfig(shared_key_file=str(path)), {})
    assert key.value == "abs"


def test_whitespace_env_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AccessKeyError) as err:
        load_access_key(tmp_path, AccessConfig(), {"NOEMA_MCP_KEY": " \t "})
    assert str(err.value) == "NOEMA_MCP_KEY is set but contains only whitespace"


def _error(tmp_path: Path) -> str:
    with pytest.raises(AccessKeyError) as err:
        load_access_key(tmp_path, AccessConfig(shared_key_file="noema-mcp.key"), {})
    return str(err.value)


def test_sidecar_rules(tmp_path: Path) -> None:
    path = tmp_path / "noema-mcp.key"
    assert _error(tmp_path) == (f"reading access key file {path}: stat {path}: no such file or directory")
    path.mkdir()
    assert _error(tmp_path) == f"access key file {path} is a directory"
    path.rmdir()
    _sidecar(tmp_path, "k", mode=0o640)
    assert _error(tmp_path) == (
        f"refusing to read access key file {path}: mode 0640 is too permissive; chmod 600 {path}"
    )
    _sidecar(tmp_path, "k", mode=0o604)
    assert "mode 0604 is too permissive" in _error(tmp_path)
    _sidecar(tmp_path, "x" * 4097)
    assert _error(tmp_path) == f"access key file {path} is 4097 bytes; maximum is 4096"
    _sidecar(tmp_path, "x" * 4096)
    assert load_access_key(tmp_path, AccessConfig(shared_key_file="noema-mcp.key"), {}).value == "x" * 4096
    _sidecar(tmp_path, " \n\t\n")
    assert _error(tmp_path) == f"access key file {path} is empty or whitespace-only"
    _sidecar(tmp_path, "one\ntwo\n\nthree")
    assert _error(tmp_path) == (
        f"access key file {path} contains 3 non-empty lines; v1 supports a single key per file"
    )
    _sidecar(tmp_path, "only\n", mode=0o400)
    assert load_access_key(tmp_path, AccessConfig(shared_key_file="noema-mcp.key"), {}).value == "only"
