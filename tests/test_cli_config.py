"""The configuration commands (add-peer, set-peer, remove-peer, set-interval, set-verify, set-mode, peers):
every value checked where it is given, exact texts and exit codes, and cortex.md and the database unchanged
after every refusal. Also `--cortex` after the command, confirmation without a terminal, `--version` and shell
completion."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import PYZ, REPO, db, make_cortex, put_state, run_cli, set_federation, state_rows
from peers.tls import make_tls

from noemafed.cli.completion import completion_script
from noemafed.commands import peers as peer_commands
from noemafed.cortex.manifest import read_manifest

PEERS_SCHEMA = json.loads((REPO / "docs" / "peers.schema.json").read_text())
PINNED_B = "01PEERBETA0000000000000000"
PINNED_C = "01PEERGAMMA000000000000000"
OTHER = "01OTHERCORTEX0000000000000"
CURSOR = "01JQH4HPD0B8E9WCXGFN1A33VE"
KEY = "ed25519:0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc="
APPLY = "Restart `noema serve` if it serves this cortex; the next `noemafed sync` reads cortex.md.\n"
BETA_STATE = {
    "peer:beta:cortex_id": PINNED_B,
    "peer:beta:last_event": CURSOR,
    "peer:beta:last_seen": "2026-04-20T12:00:30Z",
    "peer:beta:last_usage": "2026-04-20T12:00:30Z",
    "peer:beta:health": '{"consecutive_failures":2}',
    "peer:beta:consolidation_rank": '{"cortex_id":"x","rank":3,"observed_at":"y"}',
    f"cortexkey:{PINNED_B}": KEY,
    "peer:gamma:cortex_id": PINNED_C,
    "vclock": f'{{"{PINNED_B}":7,"{OTHER}":3}}',
}


def cortex_with_peers(tmp_path: Path, **fed: str) -> Path:
    path = make_cortex(
        tmp_path,
        "alpha",
        peers=[
            {"name": "beta", "endpoint": "https://beta.lan:3000"},
            {"name": "gamma", "endpoint": "https://gamma.lan:3000", "x-note": "kept"},
        ],
        **fed,
    )
    put_state(path, **BETA_STATE)
    return path


def fingerprint(path: Path) -> tuple[str, str]:
    """cortex.md's bytes and the database's content, as two digests: what "nothing changed" compares."""
    conn = db(path)
    dump = "\n".join(conn.iterdump())
    conn.close()
    manifest = (path / "cortex.md").read_bytes()
    return hashlib.sha256(manifest).hexdigest(), hashlib.sha256(dump.encode()).hexdigest()


def refused(
    path: Path, args: list[str], code: int, first_line: str, *, plan_shown: bool = False, **kwargs: Any
) -> str:
    """Run a command that must refuse: its exit code, its first stderr line, nothing on stdout (unless it
    failed after showing its plan), nothing changed. Returns stderr for further checks."""
    before = fingerprint(path)
    result = run_cli(["--cortex", str(path), *args], **kwargs)
    assert result.exit_code == code, result.stderr
    assert result.stderr.splitlines()[0] == first_line
    assert (result.stdout != "") == plan_shown
    assert fingerprint(path) == before
    return result.stderr


def peer_entries(path: Path) -> list[dict[str, str]]:
    return list(read_manifest(path).raw["federation"]["peers"])


# ---- add-peer: every bad value refused before cortex.md is touched --------------------------------------

ADD_PEER_REFUSALS = [
    (["beta2", "ftp://x"], 'Error: endpoint "ftp://x" is not an http:// or https:// URL'),
    (["beta2", "127.0.0.1:3000"], 'Error: endpoint "127.0.0.1:3000" has no scheme'),
    (
        ["beta2", "https://beta lan"],
        'Error: endpoint "https://beta lan" contains whitespace or a control character',
    ),
    (["beta2", "https://u:hunter2@h"], 'Error: endpoint "https://***@h" holds a user name or password'),
    (["beta2", "https://h:99999"], 'Error: endpoint "https://h:99999" has an invalid port "99999"'),
    (["beta2", "https://h/?k=v"], 'Error: endpoint "https://h/?k=v" has a query or fragment'),
    (
        ["beta2", "https://h/mcp"],
        'Error: endpoint "https://h/mcp" ends in /mcp, but noemafed appends /mcp itself',
    ),
    (["", "https://h"], "Error: peer name is empty"),
    (["two words", "https://h"], 'Error: peer name "two words" contains whitespace or a control character'),
    (["tab\tname", "https://h"], 'Error: peer name "tab\\tname" contains whitespace or a control character'),
    (
        ["beta2", "https://h", "--pubkey", "ed25519:short"],
        'Error: pubkey "ed25519:short" is not a valid signing key: '
        "eventsig: malformed public key: base64: illegal base64 data at input byte 4",
    ),
]


@pytest.mark.parametrize(
    ("args", "first_line"), ADD_PEER_REFUSALS, ids=[a[1] or "empty" for a, _ in ADD_PEER_REFUSALS]
)
def test_add_peer_refuses_a_bad_value_with_exit_2_and_changes_nothing(
    tmp_path: Path, args: list[str], first_line: str
) -> None:
    path = cortex_with_peers(tmp_path)
    stderr = refused(path, ["add-peer", *args], 2, first_line)
    assert stderr.splitlines()[1].startswith("Hint: ")
    assert "hunter2" not in stderr


def test_add_peer_checks_values_before_looking_for_the_cortex(tmp_path: Path) -> None:
    result = run_cli(["--cortex", str(tmp_path / "missing"), "add-peer", "b", "ftp://x"])
    assert result.exit_code == 2
    assert result.stderr.startswith('Error: endpoint "ftp://x" is not an http:// or https:// URL\n')


def test_add_peer_refuses_a_ca_file_it_could_not_use(tmp_path: Path) -> None:
    path = cortex_with_peers(tmp_path)
    missing, empty, key_only = tmp_path / "nope.pem", tmp_path / "empty.pem", tmp_path / "key.pem"
    empty.write_text("")
    make_tls().leaf.private_key_pem.write_to_path(str(key_only))
    hint = (
        "Hint: give the PEM file of the certificate authority that signed the peer's TLS certificate "
        "(one or more -----BEGIN CERTIFICATE----- blocks)"
    )
    for ca, first_line in [
        (missing, f"Error: CA file {missing} does not exist"),
        (empty, f"Error: CA file {empty} holds no PEM certificate"),
        (key_only, f"Error: CA file {key_only} holds no PEM certificate"),
        (tmp_path, f"Error: CA file {tmp_path} cannot be read: is a directory"),
    ]:
        stderr = refused(path, ["add-peer", "delta", "https://d", "--ca", str(ca)], 2, first_line)
        if ca != tmp_path:
            assert stderr.splitlines()[1] == hint


def test_add_peer_keeps_noemas_refusals_and_exit_1(tmp_path: Path) -> None:
    path = cortex_with_peers(tmp_path)
    refused(path, ["add-peer", "beta", "https://x"], 1, 'Error: peer "beta" is already configured')
    refused(
        path,
        ["add-peer", "alpha", "https://x"],
        1,
        'Error: peer name "alpha" matches this cortex\'s own name; '
        "pick a different label to avoid federation identity collisions",
    )


def test_add_peer_with_ca_and_pubkey_writes_go_order_and_an_absolute_ca_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_cortex(tmp_path, "alpha")
    make_tls().write_ca(tmp_path / "ca.pem")
    monkeypatch.chdir(tmp_path)
    result = run_cli(
        ["--cortex", str(path), "add-peer", "delta", "HTTPS://d.lan:3000/", "--ca", "ca.pem", "--pubkey", KEY]
    )
    assert result.exit_code == 0, result.stderr
    ca = str(tmp_path / "ca.pem")
    assert result.stdout == (
        f'Added peer "delta" (https://d.lan:3000) to cortex.md\n  ca:     {ca}\n  pubkey: {KEY}\n'
    )
    assert (
        "        - name: delta\n"
        "          endpoint: https://d.lan:3000\n"
        f"          ca: {ca}\n"
        f"          pubkey: {KEY}\n"
    ) in (path / "cortex.md").read_text()


# ---- set-peer ----------------------------------------------------------------------------------------------


def test_set_peer_changes_endpoint_ca_and_pubkey_keeping_unknown_keys(tmp_path: Path) -> None:
    path = cortex_with_peers(tmp_path)
    ca = make_tls().write_ca(tmp_path / "ca.pem")
    result = run_cli(
        ["--cortex", str(path), "set-peer", "gamma", "--endpoint", "https://g.vpn", "--ca", str(ca)]
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        'Peer "gamma" updated in cortex.md:\n'
        "  endpoint: https://gamma.lan:3000 -> https://g.vpn\n"
        f"  ca:       (none) -> {ca}\n" + APPLY
    )
    assert peer_entries(path)[1] == {
        "name": "gamma",
        "endpoint": "https://g.vpn",
        "ca": str(ca),
        "x-note": "kept",
    }
    result = run_cli(["--cortex", str(path), "set-peer", "gamma", "--no-ca", "--pubkey", KEY])
    assert result.stdout == (
        'Peer "gamma" updated in cortex.md:\n'
        f"  ca:       {ca} -> (none)\n"
        f"  pubkey:   (none) -> {KEY}\n" + APPLY
    )
    assert peer_entries(path)[1] == {
        "name": "gamma",
        "endpoint": "https://g.vpn",
        "pubkey": KEY,
        "x-note": "kept",
    }
    result = run_cli(["--cortex", str(path), "set-peer", "gamma", "--no-pubkey"])
    assert "  pubkey:   " + KEY + " -> (none)\n" in result.stdout
    assert state_rows(path) == BETA_STATE  # only a rename touches the database


def test_set_peer_without_a_change_writes_nothing(tmp_path: Path) -> None:
    path = cortex_with_peers(tmp_path)
    before = (path / "cortex.md").stat().st_mtime_ns, fingerprint(path)
    result = run_cli(["--cortex", str(path), "set-peer", "beta", "--endpoint", "https://beta.lan:3000/"])
    assert (result.exit_code, result.stdout) == (0, 'Peer "beta" already has these settings — no change.\n')
    assert ((path / "cortex.md").stat().st_mtime_ns, fingerprint(path)) == before


SET_PEER_REFUSALS = [
    ([], 2, 'Error: nothing to change for peer "beta"'),
    (["--endpoint", "ftp://b"], 2, 'Error: endpoint "ftp://b" is not an http:// or https:// URL'),
    (["--rename", "b c"], 2, 'Error: peer name "b c" contains whitespace or a control character'),
    (["--rename", ""], 2, "Error: peer name is empty"),
    (
        ["--pubkey", "nope"],
        2,
        'Error: pubkey "nope" is not a valid signing key: eventsig: malformed public key: missing "ed25519" scheme prefix',
    ),
    (["--ca", "x.pem", "--no-ca"], 2, "Error: --ca and --no-ca exclude each other"),
    (["--pubkey", KEY, "--no-pubkey"], 2, "Error: --pubkey and --no-pubkey exclude each other"),
    (["--rename", "gamma"], 1, 'Error: peer "gamma" is already configured'),
    (
        ["--rename", "alpha"],
        1,
        'Error: peer name "alpha" matches this cortex\'s own name; pick a different label to avoid federation identity collisions',
    ),
]


@pytest.mark.parametrize(
    ("args", "code", "first_line"), SET_PEER_REFUSALS, ids=[line for _, _, line in SET_PEER_REFUSALS]
)
def test_set_peer_refusals_change_nothing(
    tmp_path: Path, args: list[str], code: int, first_line: str
) -> None:
    path = cortex_with_peers(tmp_path)
    refused(path, ["set-peer", "beta", *args], code, first_line)


def test_set_peer_on_an_unknown_peer(tmp_path: Path) -> None:
    path = cortex_with_peers(tmp_path)
    refused(
        path,
        ["set-peer", "delta", "--endpoint", "https://d"],
        1,
        'Error: peer "delta" is not configured in cortex.md (known: beta, gamma)',
    )


def test_a_rename_carries_the_state_in_one_act(tmp_path: Path) -> None:
    path = cortex_with_peers(tmp_path)
    # Kept state of a peer removed earlier under the new name is replaced, not merged.
    put_state(path, **{"peer:laptop:last_event": "01OLDCURSOR000000000000000", "peer:laptop:health": "{}"})
    result = run_cli(["--cortex", str(path), "set-peer", "beta", "--rename", "laptop"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        'Peer "beta" updated in cortex.md:\n'
        "  name:     beta -> laptop (its federation state moved with it)\n" + APPLY
    )
    rows = state_rows(path)
    moved = {key.replace("peer:beta:", "peer:laptop:"): value for key, value in BETA_STATE.items()}
    assert rows == moved
    assert [entry["name"] for entry in peer_entries(path)] == ["laptop", "gamma"]
    # gamma has only a pin: the kept cursor of an earlier "delta" must not become its cursor.
    put_state(path, **{"peer:delta:last_event": "01OLDCURSOR000000000000000"})
    assert run_cli(["--cortex", str(path), "set-peer", "gamma", "--rename", "delta"]).exit_code == 0
    assert {key: value for key, value in state_rows(path).items() if key.startswith("peer:delta:")} == {
        "peer:delta:cortex_id": PINNED_C
    }


def test_a_rename_whose_manifest_write_fails_leaves_the_state_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = cortex_with_peers(tmp_path)
    before = fingerprint(path)

    def full_disk(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(peer_commands, "write_manifest_raw", full_disk)
    result = run_cli(["--cortex", str(path), "set-peer", "beta", "--rename", "laptop"])
    assert result.exit_code != 0
    assert fingerprint(path) == before


class _CommitFails:
    """A connection whose COMMIT fails, as on a full disk; everything else goes to the real one."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _failing_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    real = peer_commands.open_cortex

    def open_cortex(cortex_dir: Path) -> Any:
        cortex = real(cortex_dir)
        cortex.conn = _CommitFails(cortex.conn)  # type: ignore[assignment]
        return cortex

    monkeypatch.setattr(peer_commands, "open_cortex", open_cortex)


@pytest.mark.parametrize(
    "args", [["set-peer", "beta", "--rename", "laptop"], ["remove-peer", "beta", "--yes"]]
)
def test_a_failed_commit_puts_cortex_md_back_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    path = cortex_with_peers(tmp_path)
    # Hand-written bytes a rewrite would not reproduce (a comment, CRLF): they must come back exactly.
    manifest = path / "cortex.md"
    manifest.write_bytes(manifest.read_bytes().replace(b"name: alpha\n", b"name: alpha # mine\r\n"))
    _failing_commits(monkeypatch)
    refused(
        path,
        args,
        1,
        "Error: writing federation_state: database or disk is full; cortex.md was put back as it was",
        plan_shown=args[0] == "remove-peer",
    )


# ---- remove-peer -------------------------------------------------------------------------------------------


def test_remove_peer_takes_the_entry_and_its_state_together(tmp_path: Path) -> None:
    path = cortex_with_peers(tmp_path, interval="1m")
    result = run_cli(["--cortex", str(path), "remove-peer", "beta", "--yes"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        'About to remove 1 peer(s) from cortex "alpha":\n'
        "  beta (https://beta.lan:3000)\n"
        f"    pinned cortex_id: {PINNED_B}\n"
        f"    last_event:       {CURSOR}\n"
        "    last_seen:        2026-04-20T12:00:30Z\n"
        "Their federation state goes with them: cursor, pinned identity and key, health,\n"
        "usage cursor and rank.\n"
        "\n"
        "Removed from cortex.md:\n"
        "  beta: state cleared\n"
        "  vector-clock buckets dropped: 1\n" + APPLY
    )
    # Every key of beta, its key pin and its clock bucket; gamma's state and the other bucket stay.
    assert state_rows(path) == {"peer:gamma:cortex_id": PINNED_C, "vclock": f'{{"{OTHER}":3}}'}
    federation = read_manifest(path).raw["federation"]
    assert federation == {
        "peers": [{"name": "gamma", "endpoint": "https://gamma.lan:3000", "x-note": "kept"}],
        "interval": "1m",
    }


def test_removing_the_last_peers_drops_the_empty_block(tmp_path: Path) -> None:
    path = cortex_with_peers(tmp_path)
    result = run_cli(["--cortex", str(path), "remove-peer", "beta", "gamma", "beta", "-y"])
    assert result.exit_code == 0, result.stderr
    assert (
        "  beta: state cleared\n  gamma: state cleared\n  vector-clock buckets dropped: 1\n" in result.stdout
    )
    assert "federation" not in read_manifest(path).raw
    assert state_rows(path) == {"vclock": f'{{"{OTHER}":3}}'}
    assert run_cli(["--cortex", str(path), "status"]).stdout.endswith(
        "Federation: not configured (no peers in cortex.md)\n"
    )


def test_remove_peer_keep_state_never_opens_the_database(tmp_path: Path) -> None:
    path = cortex_with_peers(tmp_path)
    rows = state_rows(path)
    parked = tmp_path / "parked-db"
    shutil.move(path / "db", parked)  # without a database any open would fail (exit 69)
    result = run_cli(["--cortex", str(path), "remove-peer", "beta", "--keep-state", "--yes"])
    shutil.move(parked, path / "db")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        'About to remove 1 peer(s) from cortex "alpha":\n'
        "  beta (https://beta.lan:3000)\n"
        "Their federation state is kept (--keep-state): a peer added later under the same name\n"
        "resumes from its cursor and keeps its pinned identity.\n"
        "\n"
        "Removed from cortex.md:\n"
        "  beta: state kept\n" + APPLY
    )
    assert [entry["name"] for entry in peer_entries(path)] == ["gamma"]
    assert state_rows(path) == rows


def test_remove_peer_without_a_terminal_asks_for_yes_and_reads_nothing(tmp_path: Path) -> None:
    path = cortex_with_peers(tmp_path)
    stderr = refused(
        path,
        ["remove-peer", "beta"],
        2,
        "Error: remove-peer asks before it changes anything, and stdin is not a terminal",
        stdin="y\n",  # a pipe is no terminal: its "y" is not an answer
    )
    assert stderr.splitlines()[1] == "Hint: pass --yes to remove without asking"


def test_remove_peer_on_a_terminal_asks_and_only_y_proceeds(tmp_path: Path) -> None:
    path = cortex_with_peers(tmp_path)
    before = fingerprint(path)
    result = run_cli(["--cortex", str(path), "remove-peer", "beta"], stdin="n\n", tty=("stdin",))
    assert (result.exit_code, result.stderr) == (1, "Error: aborted by user\n")
    assert result.stdout.endswith("usage cursor and rank.\nProceed? [y/N]: ")
    assert fingerprint(path) == before
    result = run_cli(["--cortex", str(path), "remove-peer", "beta"], stdin="y\n", tty=("stdin",))
    assert result.exit_code == 0
    assert "peer:beta:cortex_id" not in state_rows(path)


def test_remove_peer_refuses_an_unknown_name_before_anything(tmp_path: Path) -> None:
    path = cortex_with_peers(tmp_path)
    refused(
        path,
        ["remove-peer", "beta", "delta", "--yes"],
        1,
        'Error: peer "delta" is not configured in cortex.md (known: beta, gamma)',
    )
    refused(
        path,
        ["remove-peer", "delta", "--keep-state", "--yes"],
        1,
        'Error: peer "delta" is not configured in cortex.md (known: beta, gamma)',
    )


def test_reset_peer_without_a_terminal_asks_for_yes(tmp_path: Path) -> None:
    path = cortex_with_peers(tmp_path)
    stderr = refused(
        path,
        ["reset-peer", "beta"],
        2,
        "Error: reset-peer asks before it changes anything, and stdin is not a terminal",
        stdin="y\n",
    )
    assert stderr.splitlines()[1] == "Hint: pass --yes to reset without asking"


# ---- set-interval, set-verify, set-mode --------------------------------------------------------------------


def test_set_interval(tmp_path: Path) -> None:
    path = cortex_with_peers(tmp_path)
    result = run_cli(["--cortex", str(path), "set-interval", "1h30m"])
    assert (result.exit_code, result.stdout) == (0, "Federation interval: (not set: 30s) -> 1h30m\n" + APPLY)
    assert read_manifest(path).federation.interval == "1h30m"  # type: ignore[union-attr]
    before = fingerprint(path), (path / "cortex.md").stat().st_mtime_ns
    result = run_cli(["--cortex", str(path), "set-interval", "1h30m"])
    assert result.stdout == 'Federation interval is already "1h30m" — no change.\n'
    assert (fingerprint(path), (path / "cortex.md").stat().st_mtime_ns) == before
    result = run_cli(["--cortex", str(path), "set-interval", "45s"])
    assert result.stdout == "Federation interval: 1h30m -> 45s\n" + APPLY


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o600])
def test_a_rewrite_of_cortex_md_keeps_its_mode_and_leaves_no_temp_file(tmp_path: Path, mode: int) -> None:
    """The operator's mode survives the temp file and the rename (mkstemp alone makes 0600)."""
    path = cortex_with_peers(tmp_path)
    (path / "cortex.md").chmod(mode)
    assert run_cli(["--cortex", str(path), "set-interval", "2m"]).exit_code == 0
    assert (path / "cortex.md").stat().st_mode & 0o777 == mode
    assert read_manifest(path).federation.interval == "2m"  # type: ignore[union-attr]
    assert sorted(p.name for p in path.iterdir() if p.name.startswith(".cortex.md.")) == []


@pytest.mark.parametrize(
    ("value", "first_line"),
    [
        ("abc", 'Error: invalid interval "abc": not a Go duration'),
        ("30", 'Error: invalid interval "30": not a Go duration'),
        ("1d", 'Error: invalid interval "1d": not a Go duration'),
        ("", 'Error: invalid interval "": not a Go duration'),
        ("0", 'Error: invalid interval "0": it must be more than zero'),
        ("-5s", 'Error: invalid interval "-5s": it must be more than zero'),
    ],
)
def test_set_interval_refuses_what_go_would_silently_turn_into_30s(
    tmp_path: Path, value: str, first_line: str
) -> None:
    path = cortex_with_peers(tmp_path)
    stderr = refused(path, ["set-interval", "--", value], 2, first_line)
    assert stderr.splitlines()[1] == (
        "Hint: write a number and a unit (ns, us, ms, s, m, h), such as 30s, 5m or 1h30m; there is no day unit"
    )


def test_set_verify(tmp_path: Path) -> None:
    path = cortex_with_peers(tmp_path)
    result = run_cli(["--cortex", str(path), "set-verify", "off"])
    assert result.stdout == 'Signature verification is already "off" — no change.\n'
    result = run_cli(["--cortex", str(path), "set-verify", "enforce"])
    assert result.stdout == "Signature verification: off -> enforce\n" + APPLY
    assert "    verify: enforce\n" in (path / "cortex.md").read_text()
    result = run_cli(["--cortex", str(path), "set-verify", "off"])
    assert result.stdout == "Signature verification: enforce -> off\n" + APPLY
    assert "verify" not in (path / "cortex.md").read_text()  # off is the default, so it is omitted
    refused(
        path, ["set-verify", "Enforce"], 2, 'Error: invalid verify mode "Enforce"; use off, warn, or enforce'
    )


def test_set_mode_and_set_verify_list_their_choices_in_help() -> None:
    assert (
        "Usage: noemafed set-mode [OPTIONS] sync|publish|subscribe\n"
        in run_cli(["set-mode", "--help"]).stdout
    )
    assert (
        "Usage: noemafed set-verify [OPTIONS] off|warn|enforce\n" in run_cli(["set-verify", "--help"]).stdout
    )


def test_set_mode_refuses_a_bad_mode_with_exit_2_and_noemas_text(tmp_path: Path) -> None:
    path = cortex_with_peers(tmp_path)
    refused(path, ["set-mode", "mirror"], 2, 'Error: invalid mode "mirror"; use sync, publish, or subscribe')


# ---- peers -------------------------------------------------------------------------------------------------


def test_peers_json_validates_and_shows_pins_modes_and_files(tmp_path: Path) -> None:
    path = cortex_with_peers(tmp_path)
    set_federation(
        path,
        [
            {"name": "beta", "endpoint": "https://beta.lan:3000", "ca": "/etc/ca.pem", "pubkey": KEY},
            {"name": "gamma", "endpoint": "https://u:hunter2@gamma.lan", "mode": "paused"},
        ],
    )
    result = run_cli(["--cortex", str(path), "peers", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, PEERS_SCHEMA)
    assert doc == {
        "schema_version": 1,
        "cortex": {"id": read_manifest(path).id, "name": "alpha", "path": str(path)},
        "peers": [
            {
                "name": "beta",
                "endpoint": "https://beta.lan:3000",
                "mode": "sync",
                "ca": "/etc/ca.pem",
                "pubkey": KEY,
                "cortex_id": PINNED_B,
            },
            {
                "name": "gamma",
                "endpoint": "https://***@gamma.lan",
                "mode": "paused",
                "ca": None,
                "pubkey": None,
                "cortex_id": PINNED_C,
            },
        ],
    }


def test_peers_json_error_is_a_document_too(tmp_path: Path) -> None:
    result = run_cli(["--cortex", str(tmp_path / "missing"), "peers", "--json"])
    assert result.exit_code == 66
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, PEERS_SCHEMA)
    assert doc["error"]["code"] == "cortex_not_found"
    empty = json.loads(run_cli(["--cortex", str(make_cortex(tmp_path, "e")), "peers", "--json"]).stdout)
    jsonschema.validate(empty, PEERS_SCHEMA)
    assert empty["peers"] == []


def test_no_output_shows_a_password_from_a_hand_edited_endpoint(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha", peers=[{"name": "beta", "endpoint": "https://me:hunter2@beta.lan"}])
    for args in (
        ["peers"],
        ["peers", "--json"],
        ["status"],
        ["status", "--json"],
        ["reset-peer", "-y", "beta"],
    ):
        result = run_cli(["--cortex", str(path), *args])
        assert result.exit_code == 0, (args, result.stderr)
        assert "***@beta.lan" in result.stdout
        assert "hunter2" not in result.stdout + result.stderr, args


# ---- --cortex after the command ----------------------------------------------------------------------------


def test_cortex_is_accepted_after_the_command(tmp_path: Path) -> None:
    path = cortex_with_peers(tmp_path)
    before = run_cli(["--cortex", str(path), "status"])
    after = run_cli(["status", "--cortex", str(path)])
    assert (after.exit_code, after.stdout) == (0, before.stdout)
    assert run_cli(["key", "fingerprint", "--cortex", str(path)]).stdout.startswith("Cortex:      alpha\n")
    # Given twice, the one after the command wins.
    elsewhere = run_cli(["--cortex", str(tmp_path / "nowhere"), "peers", "--cortex", str(path)])
    assert elsewhere.exit_code == 0, elsewhere.stderr
    wrong = run_cli(["--cortex", str(path), "peers", "--cortex", str(tmp_path / "nowhere")])
    assert wrong.exit_code == 66


def test_init_takes_no_cortex_option(tmp_path: Path) -> None:
    result = run_cli(["init", str(tmp_path / "c"), "--cortex", str(tmp_path)])
    assert result.exit_code == 2
    assert "Error: No such option '--cortex'.\n" in result.stderr
    assert not (tmp_path / "c").exists()


# ---- completion --------------------------------------------------------------------------------------------


def _pyz_like(tmp_path: Path) -> Path:
    archive = tmp_path / "bin" / "noemafed.pyz"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("__main__.py", "")
    return archive


def test_completion_scripts_run_noemafed_as_it_was_run(tmp_path: Path) -> None:
    pyz = _pyz_like(tmp_path)
    for shell in ("bash", "zsh", "fish"):
        script = completion_script(shell, str(pyz))
        assert f"_NOEMAFED_COMPLETE={shell}_complete" in script
        assert f" {sys.executable} {pyz})" in script
        assert "%(" not in script
        assert "$1)" not in script
        assert "$+commands" not in script  # zsh: a pyz behind an alias is no command on PATH
    assert "complete -o nosort -F _noemafed_completion noemafed noemafed.pyz\n" in completion_script(
        "bash", str(pyz)
    )
    assert "#compdef noemafed noemafed.pyz\n" in completion_script("zsh", str(pyz))
    assert "--command noemafed --command noemafed.pyz" in completion_script("fish", str(pyz))
    module = completion_script("bash", str(REPO / "noemafed" / "__main__.py"))
    assert f"bash_complete {sys.executable} -m noemafed)" in module
    assert "bash_complete noemafed)" in completion_script("bash", "noemafed")


def test_completion_prints_the_script_and_refuses_other_shells() -> None:
    result = run_cli(["completion", "bash"])
    assert result.exit_code == 0
    assert result.stdout.startswith("_noemafed_completion() {\n")
    bad = run_cli(["completion", "tcsh"])
    assert bad.exit_code == 2
    assert "'tcsh' is not one of 'bash', 'zsh', 'fish'" in bad.stderr


def _bash_complete(script: Path, words: list[str], cwd: Path) -> list[str]:
    program = (
        f"source {script}\n"
        f"COMP_WORDS=({' '.join(repr(word) for word in words)}); COMP_CWORD={len(words) - 1}\n"
        "_noemafed_completion noemafed\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        ["bash", "-c", program], capture_output=True, text=True, cwd=cwd, env=env, timeout=60, check=True
    )
    return done.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_commands_choices_and_peer_names(tmp_path: Path) -> None:
    path = cortex_with_peers(tmp_path)
    script = tmp_path / "noemafed.bash"
    script.write_text(completion_script("bash", str(REPO / "noemafed" / "__main__.py")))
    assert _bash_complete(script, ["noemafed", "set-"], tmp_path) == [
        "set-interval",
        "set-mode",
        "set-peer",
        "set-verify",
    ]
    assert _bash_complete(script, ["noemafed", "set-verify", ""], tmp_path) == ["off", "warn", "enforce"]
    assert _bash_complete(script, ["noemafed", "--cortex", str(path), "remove-peer", ""], tmp_path) == [
        "beta",
        "gamma",
    ]
    assert _bash_complete(script, ["noemafed", "pause-peer", "--cortex", str(path), "g"], tmp_path) == [
        "gamma"
    ]
    assert _bash_complete(script, ["noemafed", "pause-peer", ""], tmp_path) == []  # no cortex: no names


@pytest.mark.zipapp
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_pyz_completion_script_calls_the_pyz_behind_an_alias(tmp_path: Path) -> None:
    """`alias noemafed='python3 /opt/noemafed.pyz'` and the script `python3 /opt/noemafed.pyz completion bash`
    printed: Tab runs that pyz with that Python, wherever the shell is and whatever is on PATH."""
    if not PYZ.exists():
        pytest.fail("dist/noemafed.pyz is missing: run ./build.sh (scripts/test.sh does)")
    path = cortex_with_peers(tmp_path)
    pyz = tmp_path / "opt" / "noemafed.pyz"
    pyz.parent.mkdir()
    shutil.copy(PYZ, pyz)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(pyz), "completion", "bash"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    script = tmp_path / "noemafed.bash"
    script.write_text(done.stdout)
    program = (
        f"source {script}\ncomplete -p noemafed.pyz\n"
        f"COMP_WORDS=(noemafed --cortex {path} remove-peer ''); COMP_CWORD=4\n"
        '_noemafed_completion noemafed\nprintf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", program],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=True,
    )
    assert done.stdout.split("\n", 1)[1].split() == ["beta", "gamma"]


PYZ_REFUSALS = [
    (["add-peer", "b2", "ftp://x"], 2, 'Error: endpoint "ftp://x" is not an http:// or https:// URL'),
    (
        ["add-peer", "b2", "https://u:hunter2@h"],
        2,
        'Error: endpoint "https://***@h" holds a user name or password',
    ),
    (["set-peer", "beta", "--ca", "/nonexistent.pem"], 2, "Error: CA file /nonexistent.pem does not exist"),
    (["set-interval", "abc"], 2, 'Error: invalid interval "abc": not a Go duration'),
    (["set-verify", "on"], 2, 'Error: invalid verify mode "on"; use off, warn, or enforce'),
    (
        ["remove-peer", "beta"],
        2,
        "Error: remove-peer asks before it changes anything, and stdin is not a terminal",
    ),
    (
        ["remove-peer", "zeta", "--yes"],
        1,
        'Error: peer "zeta" is not configured in cortex.md (known: beta, gamma)',
    ),
]


@pytest.mark.zipapp
@pytest.mark.parametrize(
    ("args", "code", "first_line"), PYZ_REFUSALS, ids=[" ".join(a) for a, _, _ in PYZ_REFUSALS]
)
def test_the_pyz_refuses_bad_values_and_changes_nothing(
    tmp_path: Path, args: list[str], code: int, first_line: str
) -> None:
    path = cortex_with_peers(tmp_path)
    before = fingerprint(path)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(PYZ), *args, "--cortex", str(path)],
        stdin=subprocess.DEVNULL,  # as under cron
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stderr.splitlines()[0], done.stdout) == (code, first_line, "")
    assert "hunter2" not in done.stderr
    assert fingerprint(path) == before
