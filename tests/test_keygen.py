"""`noemafed keygen`: a seed file noema can read (0600 from birth), cortex.md's signing block, the public key
and its fingerprint printed and the seed never; an existing key kept byte for byte unless --force."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path

import authoring
import pytest
from conftest import make_cortex, run_cli
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from test_signing import assert_signed_by, sign_cortex, stored_rows

from noemafed.commands import keygen as keygen_module
from noemafed.cortex.manifest import read_manifest
from noemafed.cortex.open import open_cortex
from noemafed.signing.signer import load_signing_seed

APPLY = "Restart `noema serve` if it serves this cortex; the next `noemafed sync` reads cortex.md.\n"
KEY_LINE = re.compile(r"ed25519:[A-Za-z0-9+/]{43}=")


def fingerprint(public: str) -> str:
    digest = hashlib.sha256(base64.b64decode(public.removeprefix("ed25519:"))).hexdigest()
    return "SHA256:" + ":".join(digest[i : i + 2] for i in range(0, 64, 2))


def keygen(path: Path, *args: str) -> tuple[int, str, str]:
    result = run_cli(["--cortex", str(path), "keygen", *args])
    return result.exit_code, result.stdout, result.stderr


def test_keygen_writes_a_seed_noema_reads_and_records_its_public_key(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    body = (path / "cortex.md").read_text().split("---\n", 2)[2]
    code, out, err = keygen(path)
    assert (code, err) == (0, "")
    seed_file = path / "noema-signing.key"
    assert oct(seed_file.stat().st_mode & 0o777) == "0o600"
    seed_text = seed_file.read_text()
    assert re.fullmatch(r"[A-Za-z0-9+/]{43}=\n", seed_text)  # base64 of 32 bytes and a newline (cortex.md §8)
    seed = base64.b64decode(seed_text)
    manifest = read_manifest(path)
    public = manifest.signing_public_key
    # The public key is the seed's, by an independent Ed25519.
    derived = (
        Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    assert public == "ed25519:" + base64.b64encode(derived).decode()
    assert manifest.raw["signing"] == {"public_key": public, "private_key_file": "noema-signing.key"}
    assert list(manifest.raw)[-1] == "signing"  # appended after the keys init wrote, which stay
    assert (path / "cortex.md").read_text().endswith(body)
    assert out == (
        f"Signing key written to {seed_file} (mode 0600)\n"
        f"Public key:  {public}\n"
        f"Fingerprint: {fingerprint(public)}\n"
        "cortex.md: signing.public_key set, signing.private_key_file: noema-signing.key\n" + APPLY
    )
    assert seed_text.strip() not in out + err
    assert load_signing_seed(path, manifest) == seed  # our signer loads it without complaint
    assert not list(path.glob(".noemafed-keygen-*"))


def test_events_signed_with_the_new_key_verify_under_its_public_key(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    assert keygen(path)[0] == 0
    public = read_manifest(path).signing_public_key
    cortex = open_cortex(path)
    authoring.create_trace(cortex, "Signed by keygen's key", "note", "x\n")
    cortex.close()
    rows = stored_rows(path)
    assert rows
    for row in rows:
        assert_signed_by(row, public)  # cryptography's verify, over an independent preimage


def test_the_seed_file_is_0600_under_a_permissive_umask(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    old = os.umask(0)
    try:
        assert keygen(path)[0] == 0
    finally:
        os.umask(old)
    assert oct((path / "noema-signing.key").stat().st_mode & 0o777) == "0o600"


def test_a_configured_private_key_file_is_where_the_seed_goes(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    (path / "keys").mkdir()
    text = (path / "cortex.md").read_text()
    (path / "cortex.md").write_text(
        text.replace("version: 2\n", "version: 2\nsigning:\n    private_key_file: keys/sig.key\n")
    )
    code, out, err = keygen(path, "--force")  # the entry alone is a key to replace
    assert code == 0, err
    assert (path / "keys" / "sig.key").stat().st_mode & 0o777 == 0o600
    assert not (path / "noema-signing.key").exists()
    assert read_manifest(path).raw["signing"]["private_key_file"] == "keys/sig.key"
    assert "Replaced:" not in out  # there was no public key to replace


def _state(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and "db" not in p.parts
    }


@pytest.mark.parametrize(
    "existing", ["seed-and-entries", "seed-file-only", "public-key-only", "key-file-only"]
)
def test_an_existing_key_is_refused_and_nothing_changes(tmp_path: Path, existing: str) -> None:
    path = make_cortex(tmp_path, "alpha")
    sign_cortex(path)
    seed_file = path / "noema-signing.key"
    manifest = path / "cortex.md"
    text = manifest.read_text()
    signing_block = text[text.index("signing:\n") : text.index("---\n", 4)]
    public_line = next(line for line in signing_block.splitlines() if "public_key" in line)
    file_line = next(line for line in signing_block.splitlines() if "private_key_file" in line)
    if existing == "seed-file-only":
        manifest.write_text(text.replace(signing_block, ""))
    elif existing == "public-key-only":
        manifest.write_text(text.replace(file_line + "\n", ""))
        seed_file.unlink()
    elif existing == "key-file-only":
        manifest.write_text(text.replace(public_line + "\n", ""))
        seed_file.unlink()
    before = _state(path)
    code, out, err = keygen(path)
    assert code == 1
    assert out == ""
    what = {
        "seed-and-entries": f"the seed file {seed_file}, signing.public_key in cortex.md, "
        "signing.private_key_file in cortex.md",
        "seed-file-only": f"the seed file {seed_file}",
        "public-key-only": "signing.public_key in cortex.md",
        "key-file-only": "signing.private_key_file in cortex.md",
    }[existing]
    assert err == (
        f"Error: this cortex already has a signing key: {what}\n"
        "Hint: pass --force to replace it; peers that pinned the old key then refuse this cortex until each "
        "runs `noemafed reset-peer <name>` (or `noema federation reset-peer <name>`) for it\n"
    )
    assert _state(path) == before  # cortex.md and the seed file byte for byte, no temp file left


def test_force_replaces_the_key_and_names_the_old_fingerprint(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    old_public = sign_cortex(path)
    old_seed = (path / "noema-signing.key").read_bytes()
    code, out, err = keygen(path, "--force")
    assert code == 0, err
    new_public = read_manifest(path).signing_public_key
    assert new_public != old_public
    assert (path / "noema-signing.key").read_bytes() != old_seed
    assert oct((path / "noema-signing.key").stat().st_mode & 0o777) == "0o600"
    lines = out.splitlines()
    assert lines[1] == f"Public key:  {new_public}"
    assert lines[4] == f"Replaced:    {fingerprint(old_public)}"
    assert lines[5].startswith("Peers that pinned the replaced key refuse this cortex until each runs")
    assert len(KEY_LINE.findall(out)) == 1  # only the new public key; never a seed


def test_a_failed_manifest_write_puts_the_old_seed_back(tmp_path: Path) -> None:
    """The seed is placed first; if cortex.md cannot then be written, the file is as it was."""
    seed_file = tmp_path / "noema-signing.key"
    seed_file.write_bytes(b"old seed line\n")
    seed_file.chmod(0o600)

    def fail() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        keygen_module._install(seed_file, b"\x01" * 32, replace=True, then=fail)
    assert seed_file.read_bytes() == b"old seed line\n"
    assert seed_file.stat().st_mode & 0o777 == 0o600
    fresh = tmp_path / "fresh.key"
    with pytest.raises(OSError, match="disk full"):
        keygen_module._install(fresh, b"\x01" * 32, replace=False, then=fail)
    assert not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noema-signing.key"]


def test_keygen_help_has_an_example() -> None:
    result = run_cli(["keygen", "--help"])
    assert result.exit_code == 0
    assert "Example: noemafed keygen" in result.stdout
    assert "--force" in result.stdout
