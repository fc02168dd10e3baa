"""`peers`, `add-peer`, `set-peer` and `remove-peer`: the peer list in cortex.md, checked where it is written."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from noemafed.commands import not_configured
from noemafed.commands.reset import ABORTED, clear_state, no_sync_running, peer_state_keys, plan_reset
from noemafed.cortex import state
from noemafed.cortex.manifest import (
    Manifest,
    read_manifest,
    with_added_peer,
    with_peer_fields,
    with_removed_peers,
    write_manifest_raw,
    write_manifest_text,
)
from noemafed.cortex.open import Cortex, open_cortex
from noemafed.errors import ArgumentError, CommandError, NoemafedError, StateError
from noemafed.federation.lock import sync_running
from noemafed.records import Record
from noemafed.reports.config import (
    AddedPeer,
    FieldChange,
    PeerEntry,
    PeersReport,
    PeerUpdate,
    RemovePlan,
    RemoveResult,
    ResetTarget,
)
from noemafed.text.endpoints import EndpointError, check_endpoint
from noemafed.text.gotext import go_quote
from noemafed.text.keys import KeyFormatError, parse_public_key

T = TypeVar("T")

# noema's texts (federation.md §6.3, §6.4).
OWN_NAME = (
    "peer name {name} matches this cortex's own name; "
    "pick a different label to avoid federation identity collisions"
)
ALREADY_CONFIGURED = "peer {name} is already configured"

# noemafed's own checks: noema writes whatever it is given (docs/compatibility.md).
NAME_EMPTY = "peer name is empty"
NAME_EMPTY_HINT = "a peer's name is its local label, such as laptop"
NAME_BAD_CHARACTER = "peer name {name} contains whitespace or a control character"
NAME_BAD_CHARACTER_HINT = (
    "use a label such as laptop-2: it names the peer in cortex.md, in logs and in its state keys"
)
CA_MISSING = "CA file {path} does not exist"
CA_UNREADABLE = "CA file {path} cannot be read: {reason}"
CA_NO_CERTIFICATE = "CA file {path} holds no PEM certificate"
CA_HINT = (
    "give the PEM file of the certificate authority that signed the peer's TLS certificate "
    "(one or more -----BEGIN CERTIFICATE----- blocks)"
)
CA_UNREADABLE_HINT = "check the file's permissions: whoever runs noemafed sync must be able to read it"
PUBKEY_INVALID = "pubkey {key} is not a valid signing key: {reason}"
PUBKEY_HINT = "copy signing.public_key from the peer's cortex.md: ed25519: followed by 44 base64 characters"
NOTHING_TO_CHANGE = "nothing to change for peer {name}"
NOTHING_TO_CHANGE_HINT = "pass at least one of --endpoint, --ca, --no-ca, --pubkey, --no-pubkey, --rename"


# ---- argument checks: each runs before the cortex is even located -----------------------------------------


def check_name(name: str) -> str:
    """noemafed's rule for a new peer label: non-empty, no whitespace or control characters."""
    if not name:
        raise ArgumentError(NAME_EMPTY, NAME_EMPTY_HINT)
    if any(char.isspace() or not char.isprintable() for char in name):
        raise ArgumentError(NAME_BAD_CHARACTER.format(name=go_quote(name)), NAME_BAD_CHARACTER_HINT)
    return name


def check_endpoint_argument(endpoint: str) -> str:
    """The endpoint as stored, or exit 2 with what to write instead (never echoing a password)."""
    try:
        return check_endpoint(endpoint)
    except EndpointError as exc:
        raise ArgumentError(exc.message, exc.hint) from None


def check_ca(given: str) -> str:
    """The CA file's absolute path, once it is known to hold a certificate the sync client will load (the
    same test as mcp.client.tls_context).

    Stored absolute: noema opens `ca` relative to its working directory, noemafed relative to the cortex, so
    only an absolute path means the same file to both.
    """
    import ssl  # noqa: PLC0415 (lazy: only --ca pays for loading the TLS module)

    path = os.path.abspath(os.path.expanduser(given))
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            pem = handle.read()
    except FileNotFoundError:
        raise ArgumentError(CA_MISSING.format(path=path), CA_HINT) from None
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise ArgumentError(CA_UNREADABLE.format(path=path, reason=reason), CA_UNREADABLE_HINT) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if "-----BEGIN CERTIFICATE-----" not in pem:
            raise ssl.SSLError("no certificate block")
        context.load_verify_locations(cadata=pem)
    except ssl.SSLError:
        raise ArgumentError(CA_NO_CERTIFICATE.format(path=path), CA_HINT) from None
    return path


def check_pubkey(key: str) -> str:
    """A hard pin that noema's manifest validation will accept (federation.md §1.3)."""
    try:
        parse_public_key(key)
    except KeyFormatError as exc:
        raise ArgumentError(PUBKEY_INVALID.format(key=go_quote(key), reason=exc), PUBKEY_HINT) from None
    return key.strip()


def _check_new_label(manifest: Manifest, name: str) -> None:
    """noema's two refusals for a label being added, in its order (exit 1 with its texts)."""
    if name == manifest.name:
        raise CommandError(OWN_NAME.format(name=go_quote(name)))
    if any(peer.name == name for peer in manifest.peers):
        raise CommandError(ALREADY_CONFIGURED.format(name=go_quote(name)))


def check_known(manifest: Manifest, names: tuple[str, ...]) -> None:
    """Refuse (exit 1, noema's text) a name that is not a configured peer."""
    configured = [peer.name for peer in manifest.peers]
    for name in names:
        if name not in configured:
            raise CommandError(not_configured(name, configured))


# ---- the commands ------------------------------------------------------------------------------------------


def peers(cortex_dir: Path) -> PeersReport:
    """The configured peers, as cortex.md lists them, with the cortex id each one is pinned to."""
    cortex = open_cortex(cortex_dir)
    try:
        manifest = cortex.manifest
        entries = []
        for peer in manifest.peers:
            try:
                pinned = state.get(cortex.conn, state.peer_key(peer.name, state.CORTEX_ID))
            except NoemafedError as exc:
                raise CommandError(f"loading state for peer {go_quote(peer.name)}: {exc}") from exc
            entries.append(PeerEntry(peer, pinned))
        return PeersReport(cortex.path, manifest.id, manifest.name, tuple(entries))
    finally:
        cortex.close()


def add_peer(
    locate: Callable[[], Path], name: str, endpoint: str, ca: str = "", pubkey: str = ""
) -> AddedPeer:
    """Check every argument, then append the peer under a label that is neither this cortex's name nor taken."""
    check_name(name)
    endpoint = check_endpoint_argument(endpoint)
    ca = check_ca(ca) if ca else ""
    pubkey = check_pubkey(pubkey) if pubkey else ""
    cortex_dir = locate()
    manifest = read_manifest(cortex_dir)
    _check_new_label(manifest, name)
    write_manifest_raw(manifest.path, with_added_peer(manifest, name, endpoint, ca, pubkey), manifest.body)
    return AddedPeer(name, endpoint, ca, pubkey, sync_running(cortex_dir))


class PeerChanges(Record):
    """What set-peer was asked to change: None leaves a key alone, "" removes it (`--no-ca`, `--no-pubkey`)."""

    endpoint: str | None = None
    ca: str | None = None
    pubkey: str | None = None
    rename: str | None = None


def _checked(changes: PeerChanges) -> dict[str, str]:
    """The requested keys, each checked as add-peer checks it; `name` last, as the rename is applied last."""
    fields: dict[str, str] = {}
    if changes.endpoint is not None:
        fields["endpoint"] = check_endpoint_argument(changes.endpoint)
    if changes.ca is not None:
        fields["ca"] = check_ca(changes.ca) if changes.ca else ""
    if changes.pubkey is not None:
        fields["pubkey"] = check_pubkey(changes.pubkey) if changes.pubkey else ""
    if changes.rename is not None:
        fields["name"] = check_name(changes.rename)
    return fields


def set_peer(locate: Callable[[], Path], name: str, changes: PeerChanges) -> PeerUpdate:
    """Change some of one peer's keys; a rename moves its federation state to the new label in the same act."""
    if changes == PeerChanges():
        raise ArgumentError(NOTHING_TO_CHANGE.format(name=go_quote(name)), NOTHING_TO_CHANGE_HINT)
    fields = _checked(changes)
    cortex_dir = locate()
    manifest = read_manifest(cortex_dir)
    check_known(manifest, (name,))
    peer = next(p for p in manifest.peers if p.name == name)
    current = peer._asdict()
    wanted = {key: value for key, value in fields.items() if value != current[key]}
    if "name" in wanted:
        _check_new_label(manifest, wanted["name"])
    update = PeerUpdate(name, tuple(FieldChange(key, current[key], value) for key, value in wanted.items()))
    if not wanted:
        return update  # a no-op writes nothing
    raw = with_peer_fields(manifest, name, wanted)
    if "name" not in wanted:
        write_manifest_raw(manifest.path, raw, manifest.body)
        return update._replace(running=sync_running(cortex_dir))
    with no_sync_running(cortex_dir, "set-peer --rename"):  # a sync would write state under the old name
        cortex = open_cortex(cortex_dir)
        try:
            _rewrite_in_transaction(cortex, raw, lambda conn: _move_state(conn, name, wanted["name"]))
        finally:
            cortex.close()
    return update._replace(state_moved=True)


def _move_state(conn: sqlite3.Connection, old: str, new: str) -> None:
    """Carry every key of `old` to `new`; whatever `new` had (a removed peer's kept state) is replaced."""
    for old_key, new_key in zip(peer_state_keys(old), peer_state_keys(new), strict=True):
        value = state.get(conn, old_key)
        state.delete(conn, new_key)
        if value:
            state.put(conn, new_key, value)
        state.delete(conn, old_key)


def remove_peers(
    locate: Callable[[], Path],
    names: tuple[str, ...],
    keep_state: bool,
    confirm: Callable[[RemovePlan], bool],
) -> RemoveResult:
    """Plan, let `confirm` show the plan and decide, then remove the entries and (unless kept) their state."""
    names = tuple(dict.fromkeys(names))
    cortex_dir = locate()
    if keep_state:  # the database is never opened and the lock not taken: only cortex.md changes
        manifest = read_manifest(cortex_dir)
        check_known(manifest, names)
        targets = tuple(
            ResetTarget(peer.name, peer.endpoint, "", "", "") for peer in manifest.peers if peer.name in names
        )
        plan = RemovePlan(manifest.name, _in_order(targets, names), keep_state=True)
        if not confirm(plan):
            raise CommandError(ABORTED)
        write_manifest_raw(manifest.path, with_removed_peers(manifest, names), manifest.body)
        return RemoveResult(
            plan.targets, keep_state=True, buckets_dropped=0, running=sync_running(cortex_dir)
        )
    # Under the sync lock from plan to commit: a sync would write back the state being cleared.
    with no_sync_running(cortex_dir, "remove-peer"):
        cortex = open_cortex(cortex_dir)
        try:
            check_known(cortex.manifest, names)
            reset = plan_reset(cortex, names)
            plan = RemovePlan(reset.cortex_name, reset.targets, keep_state=False)
            if not confirm(plan):
                raise CommandError(ABORTED)
            raw = with_removed_peers(cortex.manifest, names)
            dropped = _rewrite_in_transaction(cortex, raw, lambda conn: clear_state(conn, plan.targets))
            return RemoveResult(plan.targets, keep_state=False, buckets_dropped=dropped)
        finally:
            cortex.close()


def _in_order(targets: tuple[ResetTarget, ...], names: tuple[str, ...]) -> tuple[ResetTarget, ...]:
    by_name = {target.name: target for target in targets}
    return tuple(by_name[name] for name in names)


def _rewrite_in_transaction(
    cortex: Cortex, raw: dict[str, Any], change_state: Callable[[sqlite3.Connection], T]
) -> T:
    """Change federation_state and rewrite cortex.md as one act: both happen or neither does.

    Order: the state changes inside an open IMMEDIATE transaction, then the manifest is replaced (atomically),
    then the transaction commits. A failed manifest write rolls the state back; a failed COMMIT (a full disk)
    puts the saved manifest back byte for byte. Either half alone is worse than neither: a configured peer
    without its pin would be re-pinned to whoever answers, and state left behind would be inherited by a peer
    added later under the same name.
    """
    path = cortex.manifest.path
    with open(path, encoding="utf-8", newline="") as handle:
        saved = handle.read()
    conn = cortex.conn
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise StateError(f"writing federation_state: {exc}") from None
    try:
        result = change_state(conn)
        write_manifest_raw(path, raw, cortex.manifest.body)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        write_manifest_text(path, saved)
        raise StateError(f"writing federation_state: {exc}; cortex.md was put back as it was") from None
    return result
