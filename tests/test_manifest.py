"""cortex.md validation with noema's exact texts, and rewrites that lose nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_cortex, run_cli

from noemafed.cortex.manifest import parse_manifest, read_manifest
from noemafed.errors import ManifestError

GOOD_KEY = "ed25519:0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc="

HEADER = '---\nid: 01JQ7X2B9C4D5E6F7G8H9JKMNP\nname: research\ncreated: "2025-03-29"\nversion: 2\n'

INVALID = [
    (
        "federation:\n    mode: mirror\n",
        'federation.mode "mirror" is not valid; use sync, publish, or subscribe',
    ),
    (
        "federation:\n    mode: Sync\n",
        'federation.mode "Sync" is not valid; use sync, publish, or subscribe',
    ),
    (
        "federation:\n    verify: strict\n",
        'federation.verify "strict" is not valid; use off, warn, or enforce',
    ),
    (
        'federation:\n    verify: "tab\\there"\n',
        'federation.verify "tab\\there" is not valid; use off, warn, or enforce',
    ),
    (
        "federation:\n    peers:\n        - name: beta\n          endpoint: http://b\n          mode: active\n",
        'federation.peers[beta].mode "active" is not valid; use sync or paused',
    ),
    (
        "federation:\n    peers:\n        - name: beta\n          endpoint: http://b\n          pubkey: rsa:abc\n",
        "federation.peers[beta].pubkey is not a valid signing key: eventsig: malformed public key: "
        'missing "ed25519" scheme prefix',
    ),
    (
        "federation:\n    peers:\n        - name: beta\n          endpoint: http://b\n          pubkey: ed25519:abc$\n",
        "federation.peers[beta].pubkey is not a valid signing key: eventsig: malformed public key: "
        "base64: illegal base64 data at input byte 3",
    ),
    (
        "federation:\n    peers:\n        - name: beta\n          endpoint: http://b\n          pubkey: ed25519:AAAA\n",
        "federation.peers[beta].pubkey is not a valid signing key: eventsig: malformed public key: "
        "decoded 3 bytes, want 32",
    ),
    # First failure wins: mode before verify before peers.
    (
        "federation:\n    mode: x\n    verify: y\n    peers:\n        - name: b\n          mode: z\n",
        'federation.mode "x" is not valid; use sync, publish, or subscribe',
    ),
    (
        "federation:\n    verify: y\n    peers:\n        - name: b\n          mode: z\n",
        'federation.verify "y" is not valid; use off, warn, or enforce',
    ),
    (
        "federation:\n    peers:\n        - name: a\n          mode: paused\n          pubkey: bad\n"
        "        - name: b\n          mode: z\n",
        "federation.peers[a].pubkey is not a valid signing key: eventsig: malformed public key: "
        'missing "ed25519" scheme prefix',
    ),
]


@pytest.mark.parametrize(("federation", "message"), INVALID)
def test_each_invalid_value_gives_the_exact_error_and_leaves_the_file(
    tmp_path: Path, federation: str, message: str
) -> None:
    path = make_cortex(tmp_path, "research")
    (path / "cortex.md").write_text(HEADER + federation + "---\n\nHand-written notes.\n")
    before = (path / "cortex.md").read_bytes()
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert str(err.value) == message
    for command in (
        ["status"],
        ["peers"],
        ["status", "--json"],
        ["add-peer", "x", "http://x"],
        ["pause-peer", "b"],
    ):
        result = run_cli(["--cortex", str(path), *command])
        assert result.exit_code == 78, command
        assert result.stderr == f"Error: {message}\n"
        error = {"code": "manifest_invalid", "message": message, "hint": None, "exit_code": 78}
        expected = {"schema_version": 2, "error": error} if "--json" in command else None
        assert (json.loads(result.stdout) if result.stdout else None) == expected
    assert (path / "cortex.md").read_bytes() == before


@pytest.mark.parametrize(
    "text",
    [
        "\x00\x01 this is not yaml at all: [\n",
        "---\nname: [unterminated\n---\n",
        "just a sentence without structure\n",
        "---\nid: a\n  name: bad indent\n---\n",
    ],
)
def test_a_file_that_is_not_yaml_is_a_parse_error(tmp_path: Path, text: str) -> None:
    path = make_cortex(tmp_path, "research")
    (path / "cortex.md").write_text(text)
    before = (path / "cortex.md").read_bytes()
    result = run_cli(["--cortex", str(path), "status"])
    assert result.exit_code == 78
    assert result.stderr.startswith("Error: parsing cortex.md: line ")
    assert (path / "cortex.md").read_bytes() == before


def test_missing_manifest_is_a_reading_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as err:
        read_manifest(tmp_path)
    assert str(err.value) == f"reading cortex.md: open {tmp_path / 'cortex.md'}: no such file or directory"


def test_values_stay_text_and_defaults_apply(tmp_path: Path) -> None:
    text = (
        HEADER + "federation:\n    verify: off\n    interval: 30\n    peers:\n"
        "        - name: no\n          endpoint: https://no.lan:3000/\n"
        "        - name: on\n          endpoint: https://on.lan\n          mode: paused\n"
        f"          pubkey: {GOOD_KEY}\n---\n"
    )
    manifest = parse_manifest(text, tmp_path / "cortex.md")
    assert manifest.created == "2025-03-29"
    assert manifest.version == 2
    assert manifest.federation is not None
    fed = manifest.federation
    assert (fed.verify, fed.effective_verify, fed.effective_mode) == ("off", "off", "sync")
    # A bare number is not a Go duration: the 30 s default applies.
    assert fed.interval == "30"
    assert fed.interval_seconds == 30.0
    assert [p.name for p in fed.peers] == ["no", "on"]
    assert fed.peers[0].endpoint == "https://no.lan:3000/"  # hand edits are not normalised here
    assert fed.peers[1].paused
    assert not fed.peers[0].paused


@pytest.mark.parametrize(
    ("interval", "seconds"),
    [
        ("", 30.0),
        ("1m", 60.0),
        ("1h30m", 5400.0),
        ("300ms", 0.3),
        ("bogus", 30.0),
        ("0", 30.0),
        ("-5s", 30.0),
    ],
)
def test_effective_interval(tmp_path: Path, interval: str, seconds: float) -> None:
    text = HEADER + (
        f"federation:\n    interval: {interval}\n" if interval else "federation:\n    mode: sync\n"
    )
    manifest = parse_manifest(text + "---\n", tmp_path / "cortex.md")
    assert manifest.federation is not None
    assert manifest.federation.interval_seconds == pytest.approx(seconds)


def test_rust_style_manifest_reads_the_same(tmp_path: Path) -> None:
    go = parse_manifest(
        HEADER + "federation:\n    peers:\n        - name: b\n          endpoint: http://b\n---\n", tmp_path
    )
    rust = parse_manifest(
        "---\nid: 01JQ7X2B9C4D5E6F7G8H9JKMNP\nname: research\ncreated: '2025-03-29'\nversion: 2\n"
        "federation:\n  peers:\n  - name: b\n    endpoint: http://b\n---\n",
        tmp_path,
    )
    assert go.peers == rust.peers
    assert (go.id, go.name, go.created, go.version) == (rust.id, rust.name, rust.created, rust.version)


def test_rewrite_keeps_unknown_keys_and_body(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "research")
    original = (
        HEADER
        + "purpose: Shared research memory\nowner: alice\naccess:\n    shared_key_file: noema-mcp.key\n"
        + "federation:\n    peers:\n        - name: laptop\n          endpoint: https://laptop:8765\n"
        + "          ca: tls/ca.pem\n          future_field: keep me\n    interval: 30s\n    verify: warn\n"
        + "signing:\n    public_key: "
        + GOOD_KEY
        + "\n    private_key_file: noema-signing.key\n"
        + "watch:\n    enabled: true\n    debounce_ms: 300\n"
        + "consolidation:\n    graduation:\n        min_age_days: 14\n"
        + "---\n\nNotes kept by hand below the manifest survive rewrites.\n"
    )
    (path / "cortex.md").write_text(original)
    result = run_cli(["--cortex", str(path), "pause-peer", "laptop"])
    assert result.exit_code == 0, result.stderr
    rewritten = (path / "cortex.md").read_text()
    assert rewritten.endswith("---\n\nNotes kept by hand below the manifest survive rewrites.\n")
    for fragment in (
        "purpose: Shared research memory\n",
        "owner: alice\n",
        "    shared_key_file: noema-mcp.key\n",
        "          ca: tls/ca.pem\n          mode: paused\n          future_field: keep me\n",
        "    interval: 30s\n    verify: warn\n",
        "    enabled: true\n    debounce_ms: 300\n",
        "        min_age_days: 14\n",
        'created: "2025-03-29"\n',
        "version: 2\n",
    ):
        assert fragment in rewritten, fragment
    reread = read_manifest(path)
    assert reread.peers[0].mode == "paused"
    assert reread.raw["watch"] == {"enabled": "true", "debounce_ms": "300"}
