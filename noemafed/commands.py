"""The federation commands: each takes an opened cortex and returns a frozen report for render.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from noemafed import __version__
from noemafed.cortex import state, vclock
from noemafed.cortex.access import AccessKey, load_access_key
from noemafed.cortex.manifest import (
    PEER_MODE_PAUSED,
    PEER_MODE_SYNC,
    FederationConfig,
    Manifest,
    PeerConfig,
    with_added_peer,
    with_federation_mode,
    with_peer_mode,
    write_manifest_raw,
)
from noemafed.cortex.open import Cortex
from noemafed.cortex.state import PeerState, RankEntry
from noemafed.errors import AccessKeyError, CommandError, NoemafedError
from noemafed.federation.classify import health_hint
from noemafed.text.gotext import go_quote, rfc3339_now

# ---- status ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerStatus:
    """One peer as status shows it; `state` is None when reading it failed at the database level."""

    config: PeerConfig
    state: PeerState | None
    rank: RankEntry | None  # None: no usable stored rank, shown as "(none)"
    hint: str | None


@dataclass(frozen=True)
class StatusReport:
    """Everything `status` prints, gathered once so the human and JSON renderers agree."""

    generated_at: str
    noemafed_version: str
    sqlite_version: str
    cortex_path: Path
    cortex_id: str
    cortex_name: str
    access: AccessKey | None
    access_error: str
    federation: FederationConfig | None
    local_rank: RankEntry | None  # None when reading it failed
    peers: tuple[PeerStatus, ...]
    vclock: vclock.VClock

    @property
    def configured(self) -> bool:
        return self.federation is not None and bool(self.federation.peers)


def _peer_status(conn: sqlite3.Connection, peer: PeerConfig) -> PeerStatus:
    try:
        peer_state = state.get_peer_state(conn, peer.name, peer.endpoint)
    except NoemafedError:
        return PeerStatus(peer, None, None, None)
    try:
        rank: RankEntry | None = state.get_peer_rank(conn, peer.name)
    except NoemafedError:
        rank = None
    if rank is not None and not rank.observed_at:
        rank = None
    error = peer_state.health.last_error
    return PeerStatus(peer, peer_state, rank, health_hint(error.reason) if error else None)


def status(cortex: Cortex, environ: Mapping[str, str]) -> StatusReport:
    """Gather the federation status of a cortex; a bad access key is reported, not fatal (as in Go)."""
    manifest = cortex.manifest
    access: AccessKey | None
    try:
        access, access_error = load_access_key(cortex.path, manifest.access, environ), ""
    except AccessKeyError as exc:
        access, access_error = None, str(exc)
    try:
        local_rank: RankEntry | None = state.get_local_rank(cortex.conn)
    except NoemafedError:
        local_rank = None
    return StatusReport(
        generated_at=rfc3339_now(),
        noemafed_version=__version__,
        sqlite_version=sqlite3.sqlite_version,
        cortex_path=cortex.path,
        cortex_id=manifest.id,
        cortex_name=manifest.name,
        access=access,
        access_error=access_error,
        federation=manifest.federation,
        local_rank=local_rank,
        peers=tuple(_peer_status(cortex.conn, peer) for peer in manifest.peers),
        vclock=state.get_clock(cortex.conn),
    )


# ---- peers and add-peer ---------------------------------------------------------------------------


def add_peer(manifest: Manifest, name: str, endpoint: str) -> tuple[str, str]:
    """Append a peer to cortex.md; returns the (name, trimmed endpoint) that was written."""
    endpoint = endpoint.rstrip("/")
    if name == manifest.name:
        raise CommandError(
            f"peer name {go_quote(name)} matches this cortex's own name; "
            "pick a different label to avoid federation identity collisions"
        )
    if any(peer.name == name for peer in manifest.peers):
        raise CommandError(f"peer {go_quote(name)} is already configured")
    write_manifest_raw(manifest.path, with_added_peer(manifest, name, endpoint), manifest.body)
    return name, endpoint


# ---- reset-peer -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResetTarget:
    """A peer about to be reset, with the state snapshot shown before the prompt."""

    name: str
    endpoint: str
    pinned_id: str
    last_event: str
    last_seen: str

    @property
    def had_state(self) -> bool:
        # Like Go, only these three count; health, usage cursor and rank are cleared but not counted.
        return bool(self.pinned_id or self.last_event or self.last_seen)


@dataclass(frozen=True)
class ResetPlan:
    cortex_name: str
    targets: tuple[ResetTarget, ...]


@dataclass(frozen=True)
class ResetResult:
    targets: tuple[ResetTarget, ...]
    buckets_dropped: int


def plan_reset(cortex: Cortex, names: tuple[str, ...]) -> ResetPlan:
    """Check every name before touching anything, then snapshot each peer's state."""
    configured = {peer.name: peer for peer in cortex.manifest.peers}
    for name in names:
        if name not in configured:
            known = ", ".join(configured)
            raise CommandError(f"peer {go_quote(name)} is not configured in cortex.md (known: {known})")
    targets = []
    for name in names:
        peer = configured[name]
        try:
            snapshot = state.get_peer_state(cortex.conn, name, peer.endpoint)
        except NoemafedError as exc:
            raise CommandError(f"loading state for peer {go_quote(name)}: {exc}") from exc
        targets.append(
            ResetTarget(name, peer.endpoint, snapshot.cortex_id, snapshot.last_event, snapshot.last_seen)
        )
    return ResetPlan(cortex.manifest.name, tuple(targets))


# Keys reset-peer removes. Go stops at the first three; noemafed also clears health, the usage
# cursor and the rank, which otherwise describe the old identity (docs/compatibility.md).
_RESET_SUFFIXES = (
    state.CORTEX_ID,
    state.LAST_EVENT,
    state.LAST_SEEN,
    state.HEALTH,
    state.LAST_USAGE,
    state.CONSOLIDATION_RANK,
)


def apply_reset(cortex: Cortex, plan: ResetPlan) -> ResetResult:
    """Clear each peer's state and its pinned id's clock bucket and key pin, in one transaction."""
    conn = cortex.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        clock = state.get_clock(conn)
        dropped = 0
        for target in plan.targets:
            for suffix in _RESET_SUFFIXES:
                state.delete(conn, state.peer_key(target.name, suffix))
            # Only a pinned id says which bucket was this peer's; unpinned peers drop nothing.
            if target.pinned_id:
                if target.pinned_id in clock:
                    del clock[target.pinned_id]
                    dropped += 1
                state.delete(conn, state.cortex_key(target.pinned_id))
        if dropped:
            state.set_clock(conn, clock)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return ResetResult(plan.targets, dropped)


# ---- set-mode, pause-peer, resume-peer ------------------------------------------------------------


@dataclass(frozen=True)
class ModeChange:
    """The outcome of set-mode or pause/resume: `previous == current` means nothing changed."""

    subject: str  # "" for the cortex-wide mode, else the peer name
    previous: str
    current: str

    @property
    def changed(self) -> bool:
        return self.previous != self.current


def set_mode(manifest: Manifest, mode: str) -> ModeChange:
    """Set the cortex-wide mode; a no-op leaves cortex.md untouched (Go rewrites it anyway)."""
    previous = manifest.federation_mode
    if previous != mode:
        write_manifest_raw(manifest.path, with_federation_mode(manifest, mode), manifest.body)
    return ModeChange("", previous, mode)


def set_peer_mode(manifest: Manifest, name: str, paused: bool) -> ModeChange:
    """Pause or resume one peer; its federation_state (cursor, pin) is kept."""
    peers = manifest.peers
    if not peers:
        raise CommandError("no federation peers configured in cortex.md")
    peer = next((p for p in peers if p.name == name), None)
    if peer is None:
        known = ", ".join(p.name for p in peers)
        raise CommandError(f"peer {go_quote(name)} is not configured in cortex.md (known: {known})")
    target = PEER_MODE_PAUSED if paused else PEER_MODE_SYNC
    previous = peer.effective_mode
    if previous != target:
        write_manifest_raw(manifest.path, with_peer_mode(manifest, name, target), manifest.body)
    return ModeChange(name, previous, target)


# ---- key fingerprint ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyReport:
    cortex_name: str
    access: AccessKey


def key_fingerprint(cortex_dir: Path, manifest: Manifest, environ: Mapping[str, str]) -> KeyReport:
    """Resolve the shared key exactly as sync and serve will, without ever exposing it."""
    try:
        access = load_access_key(cortex_dir, manifest.access, environ)
    except AccessKeyError as exc:
        raise AccessKeyError(f"loading access key: {exc}") from None
    return KeyReport(manifest.name, access)
