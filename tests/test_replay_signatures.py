"""Signature gate: pure-Python Ed25519 against `cryptography`, the spec vectors, warn/enforce, TOFU, locks."""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st
from replay_helpers import DATA, apply_one, make_replica

from noemafed.cortex import state
from noemafed.cortex.events import parse_page
from noemafed.cortex.open import open_cortex
from noemafed.errors import ReplayError
from noemafed.federation.replay import Replayer
from noemafed.logs import Level, Log
from noemafed.signing import ed25519
from noemafed.signing.eventsig import preimage, sign_event, verify_event

SEED = b"\x11" * 32
A_KEY = "ed25519:0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc="
A_ID = "01JQ7X2B9C4D5E6F7G8H9JKMNP"


def spec_events() -> list:  # type: ignore[type-arg]
    return parse_page((DATA / "spec_examples.json").read_text())


def test_demo_key_and_spec_vectors() -> None:
    assert "ed25519:" + base64.b64encode(ed25519.public_key(SEED)).decode() == A_KEY
    create, update, promote = spec_events()
    assert verify_event(create, A_KEY)
    assert verify_event(promote, A_KEY)
    assert not verify_event(update, A_KEY)  # unsigned
    # Re-signing reproduces the published signatures (Ed25519 is deterministic).
    assert sign_event(replace(create, signature="", pubkey=""), SEED) == create
    # One changed byte of data breaks it.
    assert not verify_event(replace(create, data=create.data.replace("SQLite", "SQLitE")), A_KEY)


@settings(max_examples=15, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=200))
def test_pure_python_matches_cryptography(seed: bytes, message: bytes) -> None:
    private = Ed25519PrivateKey.from_private_bytes(seed)
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert ed25519.public_key(seed) == public
    signature = ed25519.sign(seed, message)
    assert signature == private.sign(message)
    Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    assert ed25519.verify(public, message, signature)
    assert not ed25519.verify(public, message + b"x", signature)
    tampered = signature[:10] + bytes([signature[10] ^ 1]) + signature[11:]
    assert not ed25519.verify(public, message, tampered)


def test_verify_rejects_malformed_inputs() -> None:
    public = ed25519.public_key(SEED)
    signature = ed25519.sign(SEED, b"m")
    assert not ed25519.verify(public[:31], b"m", signature)
    assert not ed25519.verify(public, b"m", signature[:63])
    # s >= L is refused (malleability), as Go does.
    high_s = signature[:32] + (int.from_bytes(signature[32:], "little") + ed25519.L).to_bytes(32, "little")
    assert not ed25519.verify(public, b"m", high_s)


def test_preimage_layout() -> None:
    create = spec_events()[0]
    blob = preimage(create)
    assert blob.startswith(b"noema-event-sig-v1\n\x00\x00\x00\x1a01JQH4HPD0B8E9WCXGFN1A33VE")
    assert blob.endswith(bytes.fromhex("81f52dd79ac25b914250a733f791517956f66c20737914a51a86a1783c973a03"))


def replica(tmp_path: Path, verify: str) -> tuple[Replayer, list[tuple[Level, str]]]:
    logs: list[tuple[Level, str]] = []
    cortex = open_cortex(make_replica(tmp_path, verify=verify))
    return Replayer(cortex, log=Log(lambda level, line: logs.append((level, line)))), logs


def test_enforce_accepts_signed_and_pins_on_first_use(tmp_path: Path) -> None:
    replayer, _ = replica(tmp_path, "enforce")
    create, _, promote = spec_events()
    apply_one(replayer, create)
    assert state.get_cortex_pubkey(replayer.conn, A_ID) == A_KEY
    apply_one(replayer, promote)


def test_enforce_rejects_unsigned_bad_and_conflicting_keys(tmp_path: Path) -> None:
    replayer, _ = replica(tmp_path, "enforce")
    create, update, _ = spec_events()
    with pytest.raises(ReplayError) as unsigned:
        apply_one(replayer, update)
    assert str(unsigned.value) == (
        "rejecting event 01JQK4RGA01D2F5AE1W39NPXRJ from cortex 01JQ9A3C5E7G9J1K3M5N7P9R2T: no key pinned for its "
        "cortex and the event carries none (verify=enforce)"
    )
    with pytest.raises(ReplayError) as bad:
        apply_one(replayer, replace(create, timestamp="2025-03-29T14:23:01Z"))
    assert str(bad.value) == (
        f"rejecting event 01JQH4HPD0B8E9WCXGFN1A33VE from cortex {A_ID}: signature does not verify (verify=enforce)"
    )
    # A failed event pins nothing: the TOFU pin is inside the rolled-back savepoint.
    assert state.get_cortex_pubkey(replayer.conn, A_ID) == ""
    other = "ed25519:" + base64.b64encode(ed25519.public_key(b"\x22" * 32)).decode()
    state.set_cortex_pubkey(replayer.conn, A_ID, other)
    with pytest.raises(ReplayError) as conflicting:
        apply_one(replayer, create)
    assert str(conflicting.value) == (
        f"rejecting event 01JQH4HPD0B8E9WCXGFN1A33VE from cortex {A_ID}: event pubkey differs from the key "
        "pinned for its cortex (verify=enforce)"
    )
    with pytest.raises(ReplayError) as unsigned_with_pin:
        apply_one(replayer, replace(create, signature="", pubkey=""))
    assert str(unsigned_with_pin.value) == (
        f"rejecting event 01JQH4HPD0B8E9WCXGFN1A33VE from cortex {A_ID}: event is unsigned (verify=enforce)"
    )


def test_warn_logs_and_applies(tmp_path: Path) -> None:
    replayer, logs = replica(tmp_path, "warn")
    _, update, _ = spec_events()
    assert apply_one(replayer, update).effect == "created"  # an update on a missing trace creates it
    # A warning: cron mails it, where an info line would be dropped.
    assert logs == [
        (
            Level.WARNING,
            "[federation] rejecting event 01JQK4RGA01D2F5AE1W39NPXRJ from cortex 01JQ9A3C5E7G9J1K3M5N7P9R2T: no key "
            "pinned for its cortex and the event carries none (verify=warn, applying anyway)",
        )
    ]


def test_source_lock_gate_under_enforce(tmp_path: Path) -> None:
    replayer, _ = replica(tmp_path, "enforce")
    create = spec_events()[0]
    import json

    from noemafed.text.gotext import go_json_dumps

    payload = json.loads(create.data) | {"source_locked": True}
    locked = sign_event(replace(create, data=go_json_dumps(payload), signature="", pubkey=""), SEED)
    apply_one(replayer, locked)
    intruder_seed = b"\x33" * 32
    trash = sign_event(
        replace(
            create,
            id="01JQK7WV80KW0C7MMADCF4Y8MZ",
            action="trash",
            data="{}",
            cortex_id="01JQ9A3C5E7G9J1K3M5N7P9R2T",
            signature="",
            pubkey="",
        ),
        intruder_seed,
    )
    with pytest.raises(ReplayError) as violation:
        apply_one(replayer, trash)
    assert str(violation.value) == (
        "rejecting source-lock violation: event 01JQK7WV80KW0C7MMADCF4Y8MZ (trash) from cortex "
        f"01JQ9A3C5E7G9J1K3M5N7P9R2T on trace 20250329-why-we-chose-sqlite owned by {A_ID}"
    )
