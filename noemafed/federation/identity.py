"""The `cortex_identity` handshake: parse, check, pin the peer's id and signing key (federation.md §3.4)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from noemafed.cortex import state
from noemafed.cortex.state import RankEntry
from noemafed.errors import NoemafedError
from noemafed.federation.classify import IdentityFailure
from noemafed.logs import Log
from noemafed.records import Record
from noemafed.text.gotext import go_quote
from noemafed.text.keys import public_keys_equal
from noemafed.text.sanitize import one_line, scrub

MIN_PEER_MANIFEST_VERSION = 2

# Why the handshake refused a peer (federation.md §3.4); {name} is the peer's name through go_quote (Go's %q),
# {peer} the bare name where Go prints it in a command line.
EMPTY_ERROR = (
    "peer {name} returned empty cortex_identity response \u2014 likely an older version that pre-dates the "
    "cortex-id federation handshake. Upgrade the peer to a binary that exposes cortex_identity"
)
PARSE_ERROR = "parsing cortex_identity response from peer {name}: {err}"
NOT_AN_OBJECT_ERROR = "json: cannot unmarshal a non-object into the identity"
RANK_NOT_AN_OBJECT_ERROR = "json: cannot unmarshal rank: not an object"
FIELD_TYPE_ERROR = "json: cannot unmarshal {got} into field {key} of type {want}"
VERSION_ERROR = (
    "peer {name} is on cortex.md schema version {version} but federation requires version {minimum}. Ask the "
    "peer's operator to run `noema migrate cortex-id` on that cortex before federation can resume"
)
NO_ID_ERROR = (
    "peer {name} reported manifest version {version} but no cortex id \u2014 refusing to federate without a "
    "stable identity"
)
OWN_ID_ERROR = (
    "peer {name} reports this cortex's own id {id}; its endpoint points back at this cortex (or at a copy of "
    "it) \u2014 fix the endpoint in cortex.md"
)
MISMATCH_ERROR = (
    "peer {name} identity mismatch: pinned id is {pinned} but the endpoint now reports {id}. This can happen "
    "if the peer was reset, replaced, or restored from a different cortex's backup. If this change is "
    "intentional, run `noema federation reset-peer {peer}` to clear the pin and cursor \u2014 the next sync "
    "will re-pin the peer's new identity"
)
HARD_PIN_WITHOUT_KEY_ERROR = (
    "peer {name} is hard-pinned to a signing key in cortex.md but advertised none; the peer must run "
    "`noema keygen`, or remove the pubkey pin to fall back to trust-on-first-use"
)
HARD_PIN_MISMATCH_ERROR = (
    "peer {name} signing-key mismatch: the key advertised by cortex {id} does not match the pubkey "
    "hard-pinned for this peer in cortex.md. If the peer intentionally rotated its key, update the pinned "
    "pubkey; otherwise this may be an impersonation attempt"
)
KEY_MISMATCH_ERROR = (
    "peer {name} signing-key mismatch: the pinned key for cortex {id} differs from the one now advertised. "
    "If the peer intentionally rotated its key (`noema keygen --force`), run `noema federation reset-peer "
    "{peer}` to clear the pin \u2014 the next sync re-pins the new key"
)
LOAD_ID_ERROR = "loading pinned cortex id for peer {name}: {err}"
PIN_ID_ERROR = "pinning cortex id for peer {name}: {err}"
LOAD_KEY_ERROR = "loading pinned signing key for peer {name}: {err}"
PIN_KEY_ERROR = "pinning signing key for peer {name}: {err}"
APPLY_HARD_PIN_ERROR = "applying hard-pin for peer {name}: {err}"

RANK_PERSIST_FAILED_LOG = "[federation] peer {name} rank persist failed: {err}"
ID_PINNED_LOG = "[federation] peer {name} identity pinned: {remote} ({id})"
KEY_PINNED_LOG = "[federation] peer {name} signing key pinned ({id})"
KEY_HARD_PINNED_LOG = "[federation] peer {name} signing key hard-pinned from cortex.md ({id})"
HARD_PIN_OVERRODE_LOG = (
    "[federation] peer {name} hard-pin in cortex.md overrode the prior trust-on-first-use key ({id})"
)


class IdentityError(NoemafedError):
    """The handshake refused the peer; `kind` says which check, so classify can give its reason."""

    code = "identity_refused"

    def __init__(self, message: str, kind: IdentityFailure) -> None:
        super().__init__(message)
        self.kind = kind


class PeerIdentity(Record):
    """The fields of a `cortex_identity` answer that federation uses; unknown fields are ignored."""

    id: str
    name: str
    version: int
    pubkey: str = ""
    rank: RankEntry | None = None


def _field(obj: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = obj.get(key)  # missing and null both mean the default
    if value is None:
        return default
    # bool is an int in Python but not in Go's decoder.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(FIELD_TYPE_ERROR.format(got=type(value).__name__, key=key, want=kind.__name__))
    # Stored in pins and health and printed: a lone surrogate becomes U+FFFD, as Go decodes it.
    return scrub(value) if isinstance(value, str) else value


def parse_identity(peer: str, text: str) -> PeerIdentity:
    """Decode the identity text; empty means a peer that predates the handshake."""
    if text == "":
        raise IdentityError(EMPTY_ERROR.format(name=go_quote(peer)), IdentityFailure.EMPTY)
    try:
        obj = json.loads(text)
        if not isinstance(obj, dict):
            raise TypeError(NOT_AN_OBJECT_ERROR)
        rank_obj = obj.get("rank")
        rank = None
        if rank_obj is not None:
            if not isinstance(rank_obj, dict):
                raise TypeError(RANK_NOT_AN_OBJECT_ERROR)
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
    except (ValueError, TypeError, RecursionError) as exc:  # RecursionError: JSON nested past the stack
        raise IdentityError(PARSE_ERROR.format(name=go_quote(peer), err=exc), IdentityFailure.PARSE) from None


def verify_identity(  # noqa: PLR0913 (keyword-only context: own id, hard pin, log)
    conn: sqlite3.Connection,
    peer: str,
    identity: PeerIdentity,
    *,
    own_id: str,
    hard_pin: str,
    log: Log,
) -> None:
    """noema's checks in noema's order, then the pins they call for (none when any check refuses)."""
    quoted = go_quote(peer)
    if identity.rank is not None:
        # Stored before any validation, under the top-level id, exactly as noema does.
        try:
            state.set_peer_rank(
                conn, peer, RankEntry(identity.id, identity.rank.rank, identity.rank.observed_at)
            )
        except NoemafedError as exc:
            log.warning(RANK_PERSIST_FAILED_LOG.format(name=quoted, err=exc))
    if identity.version < MIN_PEER_MANIFEST_VERSION:
        message = VERSION_ERROR.format(
            name=quoted, version=identity.version, minimum=MIN_PEER_MANIFEST_VERSION
        )
        raise IdentityError(message, IdentityFailure.VERSION)
    if not identity.id:
        message = NO_ID_ERROR.format(name=quoted, version=identity.version)
        raise IdentityError(message, IdentityFailure.NO_ID)
    if identity.id == own_id:
        # Go accepts this; Rust refuses. Pulling our own log back from "a peer" is a wiring mistake.
        raise IdentityError(OWN_ID_ERROR.format(name=quoted, id=identity.id), IdentityFailure.OWN_ID)
    # Every check runs before any pin is written (as the live Rust build): a first contact refused for its key
    # must not leave that endpoint's cortex id pinned, or the right peer would then fail as a mismatch.
    pin_id = _check_cortex_id(conn, peer, identity)
    key_pin = _check_signing_key(conn, peer, identity, hard_pin)
    if pin_id:
        try:
            state.put(conn, state.peer_key(peer, state.CORTEX_ID), identity.id)
        except NoemafedError as exc:
            raise IdentityError(PIN_ID_ERROR.format(name=quoted, err=exc), IdentityFailure.DB) from exc
        log.info(ID_PINNED_LOG.format(name=quoted, remote=one_line(identity.name), id=one_line(identity.id)))
    if key_pin is not None:
        key, pinned_log, failure_text = key_pin
        try:
            state.set_cortex_pubkey(conn, identity.id, key)
        except NoemafedError as exc:
            raise IdentityError(failure_text.format(name=quoted, err=exc), IdentityFailure.DB) from exc
        log.info(pinned_log.format(name=quoted, id=one_line(identity.id)))


def _check_cortex_id(conn: sqlite3.Connection, peer: str, identity: PeerIdentity) -> bool:
    """Whether the peer's id must be pinned now (first contact); a different pinned id is refused."""
    quoted = go_quote(peer)
    try:
        pinned = state.get(conn, state.peer_key(peer, state.CORTEX_ID))
    except NoemafedError as exc:
        raise IdentityError(LOAD_ID_ERROR.format(name=quoted, err=exc), IdentityFailure.DB) from exc
    if pinned and pinned != identity.id:
        message = MISMATCH_ERROR.format(name=quoted, pinned=pinned, id=identity.id, peer=peer)
        raise IdentityError(message, IdentityFailure.MISMATCH)
    return not pinned


def _check_signing_key(
    conn: sqlite3.Connection, peer: str, identity: PeerIdentity, hard_pin: str
) -> tuple[str, str, str] | None:
    """Trust on first use, or the hard pin from cortex.md; an empty advertisement never clears a pin.

    Returns the key to pin with its log line and its failure text, or None when nothing is to be written.
    """
    quoted = go_quote(peer)
    advertised = identity.pubkey
    try:
        pinned = state.get_cortex_pubkey(conn, identity.id)
    except NoemafedError as exc:
        raise IdentityError(LOAD_KEY_ERROR.format(name=quoted, err=exc), IdentityFailure.DB) from exc
    if hard_pin:
        if not advertised:
            raise IdentityError(HARD_PIN_WITHOUT_KEY_ERROR.format(name=quoted), IdentityFailure.SIGNING)
        if not public_keys_equal(advertised, hard_pin):
            message = HARD_PIN_MISMATCH_ERROR.format(name=quoted, id=identity.id)
            raise IdentityError(message, IdentityFailure.SIGNING)
        if pinned == hard_pin:
            return None
        return hard_pin, HARD_PIN_OVERRODE_LOG if pinned else KEY_HARD_PINNED_LOG, APPLY_HARD_PIN_ERROR
    if not advertised:
        return None  # downgrade protection: neither pin nor clear
    if not pinned:
        return advertised, KEY_PINNED_LOG, PIN_KEY_ERROR
    if not public_keys_equal(pinned, advertised):
        message = KEY_MISMATCH_ERROR.format(name=quoted, id=identity.id, peer=peer)
        raise IdentityError(message, IdentityFailure.SIGNING)
    return None
