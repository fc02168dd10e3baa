"""`peers` and `add-peer`: the peer list in cortex.md."""

from __future__ import annotations

from pathlib import Path

from noemafed.cortex.manifest import read_manifest, with_added_peer, write_manifest_raw
from noemafed.errors import CommandError
from noemafed.reports import AddedPeer, PeersReport
from noemafed.text.gotext import go_quote


def peers(cortex_dir: Path) -> PeersReport:
    """The configured peers, as cortex.md lists them."""
    return PeersReport(read_manifest(cortex_dir).peers)


def add_peer(cortex_dir: Path, name: str, endpoint: str) -> AddedPeer:
    """Append a peer to cortex.md under a label that is neither this cortex's name nor taken."""
    manifest = read_manifest(cortex_dir)
    endpoint = endpoint.rstrip("/")
    if name == manifest.name:
        raise CommandError(
            f"peer name {go_quote(name)} matches this cortex's own name; "
            "pick a different label to avoid federation identity collisions"
        )
    if any(peer.name == name for peer in manifest.peers):
        raise CommandError(f"peer {go_quote(name)} is already configured")
    write_manifest_raw(manifest.path, with_added_peer(manifest, name, endpoint), manifest.body)
    return AddedPeer(name, endpoint)
