"""The `cortex_identity` handshake: parse, check, pin the peer's id and signing key (federation.md §3.4)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any, NamedTuple

from noemafed.cortex import state
from noemafed.cortex.state import RankEntry
from noemafed.errors import NoemafedError
from noemafed.logs import Log
from noemafed.text.gotext import go_quote
from noemafed.text.keys import public_keys_equal

MIN_PEER_MANIFEST_VERSION = 2


class IdentityError(NoemafedError):
    """The handshake refused the peer; `kind` says which check, so the syncer can classify it."""

    code = "identity_refused"

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = (
            kind  # "refused", "empty", "parse", "version", "no_id", "own_id", "mismatch", "signing", "db"
        )


class PeerIdentity(NamedTuple):
    """The fields of a `cortex_identity` answer that federation uses; unknown fields are ignored."""

    id: str
    name: str
    version: int
    pubkey: str = ""
    rank: RankEntry | None = None


def _field(obj: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = obj.get(key, default)
    if value is None:
        return default
    # bool is an int in Python but not in Go's decoder.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(
            f"json: cannot unmarshal {type(value).__name__} into field {key} of type {kind.__name__}"
        )
    return value


def parse_identity(peer: str, text: str) -> PeerIdentity:
    """Decode the identity text; empty means a peer that predates the handshake."""
    if text == "":
        raise IdentityError(
            f"peer {go_quote(peer)} returned empty cortex_identity response — likely an older version that "
            "pre-dates the cortex-id federation handshake. Upgrade the peer to a binary that exposes cortex_identity",
            "empty",
        )
    try:
        obj = json.loads(text)
        if not isinstance(obj, dict):
            raise TypeError("json: cannot unmarshal a non-object into the identity")
        rank_obj = obj.get("rank")
        rank = None
        if rank_obj is not None:
            if not isinstance(rank_obj, dict):
                raise TypeError("json: cannot unmarshal rank: not an object")
            rank = RankEntry(
                str(_field(rank_obj, "cortex_id", str, "")),
                int(_field(rank_obj, "rank", int, 0)),
                str(_field(rank_obj, "observed_at", str, "")),
            )
        return PeerIdentity(
            id=_field(obj, "id", str, ""),
            name=_field(obj, "name", str, ""),
            version=_field(obj, "version", int, 0),
            pubkey=_field(obj, "pubkey", str, ""),
            rank=rank,
        )
    except (ValueError, TypeError) as exc:
        raise IdentityError(
            f"parsing cortex_identity response from peer {go_quote(peer)}: {exc}", "parse"
        ) from None


def verify_identity(  # noqa: PLR0913 (keyword-only context: own id, hard pin, log)
    conn: sqlite3.Connection,
    peer: str,
    identity: PeerIdentity,
    *,
    own_id: str,
    hard_pin: str,
    log: Log,
) -> None:
    """noema's checks in noema's order; pins are written as they pass (a later failure keeps them, as in Go)."""
    quoted = go_quote(peer)
    if identity.rank is not None:
        # Stored before any validation, under the top-level id, exactly as noema does.
        try:
            state.set_peer_rank(
                conn, peer, RankEntry(identity.id, identity.rank.rank, identity.rank.observed_at)
            )
        except NoemafedError as exc:
            log.warning(f"[federation] peer {quoted} rank persist failed: {exc}")
    if identity.version < MIN_PEER_MANIFEST_VERSION:
        raise IdentityError(
            f"peer {quoted} is on cortex.md schema version {identity.version} but federation requires version "
            f"{MIN_PEER_MANIFEST_VERSION}. Ask the peer's operator to run `noema migrate cortex-id` on that cortex "
            "before federation can resume",
            "version",
        )
    if not identity.id:
        raise IdentityError(
            f"peer {quoted} reported manifest version {identity.version} but no cortex id — refusing to federate "
            "without a stable identity",
            "no_id",
        )
    if identity.id == own_id:
        # Go accepts this; Rust refuses. Pulling our own log back from "a peer" is a wiring mistake.
        raise IdentityError(
            f"peer {quoted} reports this cortex's own id {identity.id}; its endpoint points back at this cortex "
            "(or at a copy of it) — fix the endpoint in cortex.md",
            "own_id",
        )
    _pin_cortex_id(conn, peer, identity, log)
    _pin_signing_key(conn, peer, identity, hard_pin, log)


def _pin_cortex_id(conn: sqlite3.Connection, peer: str, identity: PeerIdentity, log: Log) -> None:
    quoted = go_quote(peer)
    try:
        pinned = state.get(conn, state.peer_key(peer, state.CORTEX_ID))
    except NoemafedError as exc:
        raise IdentityError(f"loading pinned cortex id for peer {quoted}: {exc}", "db") from exc
    if not pinned:
        try:
            state.put(conn, state.peer_key(peer, state.CORTEX_ID), identity.id)
        except NoemafedError as exc:
            raise IdentityError(f"pinning cortex id for peer {quoted}: {exc}", "db") from exc
        log.info(f"[federation] peer {quoted} identity pinned: {identity.name} ({identity.id})")
        return
    if pinned != identity.id:
        raise IdentityError(
            f"peer {quoted} identity mismatch: pinned id is {pinned} but the endpoint now reports {identity.id}. "
            "This can happen if the peer was reset, replaced, or restored from a different cortex's backup. "
            f"If this change is intentional, run `noema federation reset-peer {peer}` to clear the pin and "
            "cursor — the next sync will re-pin the peer's new identity",
            "mismatch",
        )


def _pin_signing_key(
    conn: sqlite3.Connection, peer: str, identity: PeerIdentity, hard_pin: str, log: Log
) -> None:
    """Trust on first use, or the hard pin from cortex.md; an empty advertisement never clears a pin."""
    quoted = go_quote(peer)
    advertised = identity.pubkey
    try:
        pinned = state.get_cortex_pubkey(conn, identity.id)
    except NoemafedError as exc:
        raise IdentityError(f"loading pinned signing key for peer {quoted}: {exc}", "db") from exc
    if hard_pin:
        if not advertised:
            raise IdentityError(
                f"peer {quoted} is hard-pinned to a signing key in cortex.md but advertised none; the peer must "
                "run `noema keygen`, or remove the pubkey pin to fall back to trust-on-first-use",
                "signing",
            )
        if not public_keys_equal(advertised, hard_pin):
            raise IdentityError(
                f"peer {quoted} signing-key mismatch: the key advertised by cortex {identity.id} does not match "
                "the pubkey hard-pinned for this peer in cortex.md. If the peer intentionally rotated its key, "
                "update the pinned pubkey; otherwise this may be an impersonation attempt",
                "signing",
            )
        if pinned == hard_pin:
            return
        try:
            state.set_cortex_pubkey(conn, identity.id, hard_pin)
        except NoemafedError as exc:
            raise IdentityError(f"applying hard-pin for peer {quoted}: {exc}", "db") from exc
        if pinned:
            log.info(
                f"[federation] peer {quoted} hard-pin in cortex.md overrode the prior trust-on-first-use key ({identity.id})"
            )
        else:
            log.info(f"[federation] peer {quoted} signing key hard-pinned from cortex.md ({identity.id})")
        return
    if not advertised:
        return  # downgrade protection: neither pin nor clear
    if not pinned:
        try:
            state.set_cortex_pubkey(conn, identity.id, advertised)
        except NoemafedError as exc:
            raise IdentityError(f"pinning signing key for peer {quoted}: {exc}", "db") from exc
        log.info(f"[federation] peer {quoted} signing key pinned ({identity.id})")
        return
    if not public_keys_equal(pinned, advertised):
        raise IdentityError(
            f"peer {quoted} signing-key mismatch: the pinned key for cortex {identity.id} differs from the one "
            "now advertised. If the peer intentionally rotated its key (`noema keygen --force`), run "
            f"`noema federation reset-peer {peer}` to clear the pin — the next sync re-pins the new key",
            "signing",
        )
