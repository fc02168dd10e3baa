"""Signing-key refusals of the handshake, end to end: `sync --once` against a real peer on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from peers import payloads
from peers.stdlib_peer import StdlibPeer
from sync_helpers import events, source, state_value, target_with

from noemafed.cortex.manifest import read_manifest
from noemafed.federation import identity as ident

KEY_A = "ed25519:0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc="
KEY_B = "ed25519:LB+0jMLPWjc+6yXzZFm8KOGQCwjA2YzdGgbNEfcDCJo="


def sync_json(target: Path) -> tuple[int, dict]:
    result = run_cli(["--cortex", str(target), "sync", "--once", "--json"])
    return result.exit_code, json.loads(result.stdout)


def advertising(src: Path, pubkey: str) -> dict[str, object]:
    """The source's own identity answer, advertising `pubkey` (none when empty)."""
    answer = payloads.identity_payload(payloads.read_info(src))
    answer.pop("pubkey", None)
    return answer | ({"pubkey": pubkey} if pubkey else {})


@pytest.mark.parametrize(
    ("hard_pin", "first", "then", "message"),
    [
        ("", KEY_A, KEY_B, ident.KEY_MISMATCH_ERROR),
        (KEY_A, KEY_A, KEY_B, ident.HARD_PIN_MISMATCH_ERROR),
        (KEY_A, KEY_A, "", ident.HARD_PIN_WITHOUT_KEY_ERROR),
    ],
    ids=["pinned-key-changed", "hard-pin-mismatch", "hard-pin-without-key"],
)
def test_a_signing_key_refusal_needs_an_operator(
    tmp_path: Path, hard_pin: str, first: str, then: str, message: str
) -> None:
    """Bug h: the signing-key identity failure downgraded to a transient reason. A peer whose key no longer
    matches its pin may be an impersonator: identity_mismatch, needs an operator, exit 4, recorded in health,
    and nothing pulled; a transient reason would retry it for ever and never tell anyone."""
    src = source(tmp_path, count=2)
    src_id = read_manifest(src).id
    with StdlibPeer(src, flavor="go", identity=advertising(src, first)) as peer:
        peer_config = {"name": "p", "endpoint": peer.endpoint} | ({"pubkey": hard_pin} if hard_pin else {})
        target = target_with(tmp_path, [peer_config])
        assert sync_json(target)[0] == 0
        before = events(target)
        cursor = state_value(target, "peer:p:last_event")
        peer.knobs.identity = advertising(src, then)
        code, doc = sync_json(target)
    [report] = doc["peers"]
    assert (code, doc["exit_code"]) == (4, 4)
    assert (report["reason"], report["phase"], report["needs_operator"]) == (
        "identity_mismatch",
        "identity",
        True,
    )
    assert report["error"] == message.format(name='"p"', id=src_id, peer="p")
    health = json.loads(state_value(target, "peer:p:health"))
    assert (health["consecutive_failures"], health["last_error"]["reason"]) == (1, "identity_mismatch")
    assert (events(target), state_value(target, "peer:p:last_event")) == (before, cursor)
