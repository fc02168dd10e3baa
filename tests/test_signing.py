"""Local events of a signing cortex: seed file rules, signatures checked with `cryptography`, divergence."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import authoring
import pytest
from conftest import db, make_cortex, run_cli
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from peers.stdlib_peer import StdlibPeer
from replay_helpers import REPLICA_ID, apply_one, end_state, make_replica, set_manifest_id
from sync_helpers import target_with

from noemafed.cortex import frontmatter, state
from noemafed.cortex.events import EVENT_COLUMNS, Event, event_from_row, page_json, parse_page
from noemafed.cortex.manifest import read_manifest
from noemafed.cortex.open import open_cortex
from noemafed.errors import ExitCode, ReplayError, SigningKeyError
from noemafed.federation import classify
from noemafed.federation.classify import Phase
from noemafed.federation.replay import Replayer
from noemafed.logs import SILENT

SOURCE_ID = "01JQ7X2B9C4D5E6F7G8H9JKMNP"
CHECKER_ID = "01JQ9A3C5E7G9J1K3M5N7P9R2T"
KEY_FILE = "noema-signing.key"


def new_seed() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def public_text(seed: bytes) -> str:
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return "ed25519:" + base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def write_seed(path: Path, seed: bytes, mode: int = 0o600, line_end: str = "\n") -> None:
    """The sidecar as `noema keygen` writes it: base64 of the 32-byte seed and a newline, mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((base64.b64encode(seed).decode() + line_end).encode())
    os.chmod(path, mode)


def set_signing(path: Path, **block: str) -> None:
    """Write cortex.md's `signing` block by hand, as noemafed has no keygen (noema's `keygen` does this)."""
    manifest = path / "cortex.md"
    yaml_text, body = frontmatter.split_manifest(manifest.read_text())
    raw = frontmatter.loads(yaml_text)
    raw["signing"] = dict(block)
    manifest.write_text(frontmatter.join_manifest(frontmatter.dumps(raw), body))


def sign_cortex(path: Path, seed: bytes | None = None, key_file: str = KEY_FILE) -> str:
    """Give a cortex a signing key (seed file + manifest block); returns its `ed25519:` public key."""
    seed = seed or new_seed()
    key_path = Path(key_file) if os.path.isabs(key_file) else path / key_file
    write_seed(key_path, seed)
    public = public_text(seed)
    set_signing(path, public_key=public, private_key_file=key_file)
    return public


def stored_rows(path: Path) -> list[dict[str, Any]]:
    conn = db(path)
    rows = conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY id").fetchall()
    conn.close()
    return [dict(zip(EVENT_COLUMNS, row, strict=True)) for row in rows]


def independent_preimage(row: dict[str, Any]) -> bytes:
    """cortex.md §4.7 built from the stored columns, without noemafed's eventsig."""

    def field(value: bytes) -> bytes:
        return struct.pack(">I", len(value)) + value

    clock = json.loads(row["vclock"]) if row["vclock"] else {}
    clock_bytes = b"".join(
        field(key.encode()) + struct.pack(">Q", clock[key]) for key in sorted(clock, key=str.encode)
    )
    data = (row["data"] or "{}").encode()
    texts = (row["id"], row["action"], row["trace_id"], row["cortex_id"], row["origin"], row["timestamp"])
    return (
        b"noema-event-sig-v1\n"
        + b"".join(field(text.encode()) for text in texts)
        + field(clock_bytes)
        + field(hashlib.sha256(data).digest())
    )


def assert_signed_by(row: dict[str, Any], public: str) -> None:
    """Verifies with `cryptography` (raises InvalidSignature otherwise) under the configured key."""
    assert row["pubkey"] == public
    assert row["signature"].startswith("ed25519:")
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public.removeprefix("ed25519:")))
    key.verify(base64.b64decode(row["signature"].removeprefix("ed25519:")), independent_preimage(row))


def disk_files(path: Path) -> list[str]:
    """Every file of the cortex outside the database folder (whose WAL files change on any open)."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and "db" not in p.parts)


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, str]:
    path = make_replica(tmp_path / "signed")
    return path, sign_cortex(path)


# ---------------------------------------------------------------------------------------------------------
# Every local action


def test_every_local_action_is_signed_over_its_stored_bytes(signed: tuple[Path, str]) -> None:
    path, public = signed
    cortex = open_cortex(path)
    tid, created = authoring.create_trace(
        cortex, "Why <we> chose & SQLite", "decision", "café\u2028\n", ["a"]
    )
    other, _ = authoring.create_trace(cortex, "Other", "note", "y\n")
    long_soft, _ = authoring.create_trace(cortex, "Soft", "fact", "s\n")
    long_hard, _ = authoring.create_trace(cortex, "Hard", "fact", "h\n")
    returned = [created]
    for step in (
        lambda: authoring.update_trace(cortex, tid, body="z & <z>\n"),
        lambda: authoring.set_tags(cortex, tid, ["k"]),
        lambda: authoring.promote(cortex, tid, "mid"),
        lambda: authoring.demote(cortex, tid, "short"),
        lambda: authoring.vote(cortex, tid, -2),
        lambda: authoring.archive(cortex, tid),
        lambda: authoring.unarchive(cortex, tid),
        lambda: authoring.trash(cortex, tid),
        lambda: authoring.recover(cortex, tid),
        lambda: authoring.consolidate(cortex, tid, [other], model_name="m"),
        lambda: authoring.trash(cortex, other),
        lambda: authoring.purge(cortex, other),
        lambda: authoring.promote(cortex, long_soft, "long"),
        lambda: authoring.purge_long_term(cortex, long_soft, "gdpr"),
        lambda: authoring.purge_hard(cortex, long_hard, "leak"),
        lambda: authoring.telemetry(cortex, "consolidate_fallback", tid, {"reason": "x"}),
        lambda: authoring.coordination(cortex, "consolidation_fail", "w1", reason="llm_error"),
    ):
        returned.append(step())
    cortex.close()
    rows = stored_rows(path)
    assert {row["action"] for row in rows} == {
        *("create", "update", "tag_update", "promote", "demote", "vote", "archive", "unarchive", "trash"),
        *("recover", "consolidate", "purge", "purge_long_term", "purge_hard", "consolidate_fallback"),
        "consolidation_fail",
    }
    for row in rows:
        assert_signed_by(row, public)
    # What the functions return is what is stored, signature included.
    by_id = {row["id"]: event_from_row([row[c] for c in EVENT_COLUMNS]) for row in rows}
    assert all(by_id[event.id] == event for event in returned)


def test_unsigned_cortexes_emit_unsigned_events(tmp_path: Path) -> None:
    plain = make_replica(tmp_path / "plain")
    # Only a public_key: Go's LoadSigningKey reads no file and signs nothing, and neither do we.
    public_only = make_replica(tmp_path / "public-only")
    set_signing(public_only, public_key=public_text(new_seed()))
    for path in (plain, public_only):
        cortex = open_cortex(path)
        _, event = authoring.create_trace(cortex, "T", "note", "x\n")
        cortex.close()
        assert (event.signature, event.pubkey) == ("", "")
        assert [(row["signature"], row["pubkey"]) for row in stored_rows(path)] == [("", "")]


@pytest.mark.parametrize("where", ["relative subfolder", "absolute", "crlf"])
def test_key_file_locations_and_line_ends(tmp_path: Path, where: str) -> None:
    path = make_replica(tmp_path / "c")
    seed = new_seed()
    if where == "relative subfolder":
        public = sign_cortex(path, seed, "keys/signing.key")
    elif where == "absolute":
        public = sign_cortex(path, seed, str(tmp_path / "elsewhere" / "k.key"))
    else:
        public = sign_cortex(path, seed)
        write_seed(path / KEY_FILE, seed, line_end="\r\n\r\n")
    cortex = open_cortex(path)
    authoring.create_trace(cortex, "T", "note", "x\n")
    cortex.close()
    [row] = stored_rows(path)
    assert_signed_by(row, public)


# ---------------------------------------------------------------------------------------------------------
# Seed file rules: each failure names the file, and the mutation leaves the cortex as it was


def _break(kind: str, path: Path, key: Path) -> None:
    if kind == "missing":
        key.unlink()
    elif kind == "directory":
        key.unlink()
        key.mkdir()
    elif kind == "too large":
        key.write_bytes(b"A" * 4097)
    elif kind == "group readable":
        os.chmod(key, 0o640)
    elif kind == "empty":
        key.write_bytes(b" \r\n\t\n")
    elif kind == "two lines":
        key.write_bytes(b"one\ntwo\n")
    elif kind == "not base64":
        key.write_bytes(b"not*base64\n")
    elif kind == "31 bytes":
        key.write_bytes(base64.b64encode(b"\x01" * 31) + b"\n")
    elif kind == "public_key mismatch":
        set_signing(path, public_key=public_text(new_seed()), private_key_file=KEY_FILE)


RULES = {
    "missing": "reading signing key file {p}: stat {p}: no such file or directory",
    "directory": "signing key file {p} is a directory",
    "too large": "signing key file {p} is 4097 bytes; maximum is 4096",
    "group readable": "refusing to read signing key file {p}: mode 0640 is too permissive; chmod 600 {p}",
    "empty": "signing key file {p} is empty or whitespace-only",
    "two lines": "signing key file {p} contains 2 non-empty lines; v1 supports a single key per file",
    "not base64": "parsing signing key {p}: eventsig: malformed seed: illegal base64 data at input byte 3",
    "31 bytes": "parsing signing key {p}: eventsig: malformed seed: seed is 31 bytes, want 32",
    "public_key mismatch": (
        "signing key mismatch: cortex.md public_key does not match the key derived from {p} "
        "(re-run `noema keygen --force` to regenerate, or fix public_key)"
    ),
}


@pytest.mark.parametrize("kind", list(RULES))
def test_each_seed_file_rule_has_its_error_and_changes_nothing(signed: tuple[Path, str], kind: str) -> None:
    path, _ = signed
    cortex = open_cortex(path)
    tid, _ = authoring.create_trace(cortex, "Short", "note", "x\n")
    cortex.close()
    key = path / KEY_FILE
    _break(kind, path, key)
    before, files = end_state(path), disk_files(path)
    cortex = open_cortex(path)  # opening never reads the key
    attempts: list[Callable[[], object]] = [
        lambda: authoring.create_trace(cortex, "New", "note", "n\n"),
        lambda: authoring.update_trace(cortex, tid, body="changed\n"),
        lambda: authoring.consolidate(cortex, tid, []),  # rewrites the file of a short trace
        lambda: authoring.trash(cortex, tid),
    ]
    for attempt in attempts:
        with pytest.raises(SigningKeyError) as err:
            attempt()
        assert str(err.value) == RULES[kind].format(p=key)
        assert err.value.exit_code == ExitCode.CONFIG
    cortex.close()
    assert end_state(path) == before
    assert disk_files(path) == files


def test_the_key_is_read_only_to_sign_and_then_kept(tmp_path: Path) -> None:
    source = make_cortex(tmp_path / "src", "research")
    set_manifest_id(source, SOURCE_ID)
    src = open_cortex(source)
    _, remote = authoring.create_trace(src, "Remote", "note", "r\n")
    src.close()
    path = make_replica(tmp_path / "dst")
    seed = new_seed()
    public = sign_cortex(path, seed)
    key = path / KEY_FILE
    key.unlink()
    cortex = open_cortex(path)
    # Replay that authors nothing never needs the key: a caught-up or plain sync works without it.
    assert apply_one(Replayer(cortex, log=SILENT), remote).effect == "created"
    with pytest.raises(SigningKeyError):
        authoring.create_trace(cortex, "Mine", "note", "m\n")
    # A failed load is not remembered: once the file is back, the same open cortex signs.
    write_seed(key, seed)
    authoring.create_trace(cortex, "Mine", "note", "m\n")
    # From then on the seed is kept: the file is not read again for this open cortex.
    key.unlink()
    authoring.create_trace(cortex, "Mine too", "note", "m\n")
    cortex.close()
    mine = [row for row in stored_rows(path) if row["cortex_id"] == REPLICA_ID]
    assert len(mine) == 2
    for row in mine:
        assert_signed_by(row, public)


# ---------------------------------------------------------------------------------------------------------
# The divergence trace replay authors


def _concurrent_update(tmp_path: Path, replica: Path) -> tuple[Event, str]:
    """A source trace replayed into the replica, edited on both sides: returns the remote edit."""
    source = make_cortex(tmp_path / "src", "research")
    set_manifest_id(source, SOURCE_ID)
    src = open_cortex(source)
    tid, created = authoring.create_trace(src, "Contested", "note", "base\n")
    cortex = open_cortex(replica)
    apply_one(Replayer(cortex, log=SILENT), created)
    authoring.update_trace(cortex, tid, body="replica edit\n")
    cortex.close()
    remote = authoring.update_trace(src, tid, body="source edit\n")
    src.close()
    return remote, tid


def _divergence_row(path: Path, cortex_id: str = REPLICA_ID) -> dict[str, Any]:
    [row] = [
        row
        for row in stored_rows(path)
        if row["cortex_id"] == cortex_id and row["action"] == "create" and "divergence" in row["trace_id"]
    ]
    return row


def test_divergence_event_is_signed_and_an_enforcing_peer_accepts_it(tmp_path: Path) -> None:
    replica = make_replica(tmp_path / "dst")
    public = sign_cortex(replica)
    remote, _ = _concurrent_update(tmp_path, replica)
    cortex = open_cortex(replica)
    assert apply_one(Replayer(cortex, log=SILENT), remote).effect == "diverged"
    cortex.close()
    row = _divergence_row(replica)
    assert_signed_by(row, public)

    # Over the wire (page JSON) to a cortex that enforces signatures and has pinned our key.
    [sent] = parse_page(page_json([event_from_row([row[c] for c in EVENT_COLUMNS])]))
    checker = open_cortex(make_replica(tmp_path / "checker", "checker", CHECKER_ID, verify="enforce"))
    state.set_cortex_pubkey(checker.conn, REPLICA_ID, public)
    replayer = Replayer(checker, log=SILENT)
    with pytest.raises(ReplayError, match=r"event is unsigned \(verify=enforce\)"):
        apply_one(replayer, replace(sent, signature="", pubkey=""))  # what we used to send
    with pytest.raises(ReplayError, match="signature does not verify"):
        apply_one(replayer, replace(sent, timestamp="2025-01-01T00:00:00Z"))
    assert apply_one(replayer, sent).effect == "created"
    checker.close()
    assert stored_rows(tmp_path / "checker" / "checker") == [row]


def test_divergence_without_a_usable_key_fails_the_event_touches_nothing_and_retries(tmp_path: Path) -> None:
    replica = make_replica(tmp_path / "dst")
    seed = new_seed()
    public = sign_cortex(replica, seed)
    remote, _ = _concurrent_update(tmp_path, replica)
    (replica / KEY_FILE).unlink()
    before, files = end_state(replica), disk_files(replica)
    cortex = open_cortex(replica)
    replayer = Replayer(cortex, log=SILENT)
    result = replayer.apply_page([remote], cursor_peer="src")
    assert result.failed == remote
    assert isinstance(result.error, ReplayError)
    assert f"reading signing key file {replica / KEY_FILE}" in str(result.error)
    # Only an operator can fix it: reported like a signing-key mismatch, so `sync` exits 4.
    reason = classify.classify_replay_error(result.error)
    assert reason == "identity_mismatch"
    assert classify.outcome(Phase.REPLAY, reason) == ("identity_mismatch", True, 4)
    assert end_state(replica) == before  # the remote update is not stored, no divergence trace, no cursor
    assert disk_files(replica) == files
    # The key comes back: the same event is replayed again and diverges, signed.
    write_seed(replica / KEY_FILE, seed)
    assert apply_one(replayer, remote, cursor_peer="src").effect == "diverged"
    cortex.close()
    assert_signed_by(_divergence_row(replica), public)


def test_sync_exits_4_while_a_divergence_cannot_be_signed_and_heals_with_the_key(tmp_path: Path) -> None:
    source = make_cortex(tmp_path, "source")
    src = open_cortex(source)
    tid, _ = authoring.create_trace(src, "Contested", "note", "base\n")
    src.close()

    def sync(target: Path) -> tuple[int, dict[str, Any]]:
        result = run_cli(["--cortex", str(target), "sync", "--once", "--json"])
        doc = json.loads(result.stdout)
        return result.exit_code, doc["peers"][0]

    with StdlibPeer(source, flavor="go") as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        seed = new_seed()
        public = sign_cortex(target, seed)
        key = target / KEY_FILE
        key.unlink()
        assert sync(target)[0] == 0  # nothing to author: a sync without local events never reads the key
        write_seed(key, seed)
        mine = open_cortex(target)
        authoring.update_trace(mine, tid, body="target edit\n")
        mine.close()
        src = open_cortex(source)
        authoring.update_trace(src, tid, body="source edit\n")
        src.close()
        key.unlink()
        code, report = sync(target)
        assert code == 4
        assert (report["reason"], report["phase"], report["needs_operator"]) == (
            "identity_mismatch",
            "replay",
            True,
        )
        assert f"reading signing key file {key}" in report["error"]
        write_seed(key, seed)
        assert sync(target)[0] == 0
    assert_signed_by(_divergence_row(target, read_manifest(target).id), public)
