"""`set-mode`, `pause-peer` and `resume-peer`: the federation modes in cortex.md."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from noemafed.commands import not_configured
from noemafed.cortex.manifest import (
    FEDERATION_MODES,
    PEER_MODE_PAUSED,
    PEER_MODE_SYNC,
    read_manifest,
    with_federation_mode,
    with_peer_mode,
    write_manifest_raw,
)
from noemafed.errors import ArgumentError, CommandError
from noemafed.federation.lock import sync_running
from noemafed.reports.config import ModeChange, PeerModeChange
from noemafed.text.gotext import go_quote


def set_mode(mode: str, locate: Callable[[], Path]) -> ModeChange:
    """Set the cortex-wide mode, checked before the cortex is located (as in noema); a no-op writes nothing."""
    if mode not in FEDERATION_MODES:
        # noema's text (federation.md §6.5); exit 2 rather than noema's 1, as for any bad argument.
        raise ArgumentError(f"invalid mode {go_quote(mode)}; use sync, publish, or subscribe")
    cortex_dir = locate()
    manifest = read_manifest(cortex_dir)
    previous = manifest.federation_mode
    if previous == mode:
        return ModeChange(previous, mode)
    write_manifest_raw(manifest.path, with_federation_mode(manifest, mode), manifest.body)
    return ModeChange(previous, mode, sync_running(cortex_dir))


def set_peer_mode(cortex_dir: Path, name: str, paused: bool) -> PeerModeChange:
    """Pause or resume one peer; its federation_state (cursor, pin) is kept."""
    manifest = read_manifest(cortex_dir)
    peers = manifest.peers
    if not peers:
        raise CommandError("no federation peers configured in cortex.md")
    peer = next((p for p in peers if p.name == name), None)
    if peer is None:
        raise CommandError(not_configured(name, (p.name for p in peers)))
    target = PEER_MODE_PAUSED if paused else PEER_MODE_SYNC
    previous = peer.effective_mode
    if previous == target:
        return PeerModeChange(name, previous, target)
    write_manifest_raw(manifest.path, with_peer_mode(manifest, name, target), manifest.body)
    return PeerModeChange(name, previous, target, sync_running(cortex_dir))
