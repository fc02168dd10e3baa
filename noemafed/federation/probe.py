"""`doctor`'s I/O: gather the facts its checks (federation/doctor.py) judge, from the cortex, this host and,
online, each peer (one MCP session: initialize and cortex_identity, under a per-peer timeout)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

from noemafed.cortex import state
from noemafed.cortex.access import load_access_key, sidecar_path
from noemafed.cortex.manifest import MANIFEST_FILE, Manifest, check_ready_for_federation, read_manifest
from noemafed.cortex.open import DB_FILE, database_dir, open_database
from noemafed.errors import NoemafedError
from noemafed.federation.classify import certificate_expired
from noemafed.federation.doctor import CertFacts, DoctorFacts, FileFacts, LockFacts, PeerFacts
from noemafed.federation.identity import parse_identity
from noemafed.federation.lock import LOCK_FILE, lock_holder
from noemafed.mcp.certs import CertificateRefused, der_validity, read_validity
from noemafed.mcp.client import Deadline, McpSession, PeerTarget
from noemafed.mcp.protocol import CORTEX_IDENTITY
from noemafed.text.sanitize import one_line


def gather(cortex_dir: Path, environ: Mapping[str, str], *, online: bool, timeout: float) -> DoctorFacts:
    """Every fact doctor needs; a failure to read one becomes a fact too, never an exception."""
    now = datetime.now(UTC)
    manifest, manifest_errors = _manifest(cortex_dir)
    quick_check: tuple[str, ...] = ()
    database_error = ""
    peers: list[PeerFacts] = []
    try:
        conn = open_database(cortex_dir, environ)
    except NoemafedError as exc:
        database_error = str(exc)
        conn = None
    if conn is not None:
        try:
            quick_check = tuple(str(row[0]) for row in conn.execute("PRAGMA quick_check").fetchall())
            if manifest is not None:
                peers = [_stored_peer(conn, manifest, index) for index in range(len(manifest.peers))]
        except sqlite3.Error as exc:
            database_error = f"reading the database: {exc}"
        finally:
            conn.close()
    if manifest is not None and not database_error and not peers:
        peers = [PeerFacts(p.name, p.paused, "", "", p.pubkey) for p in manifest.peers]
    if online and manifest is not None and peers:
        peers = _contact(cortex_dir, manifest, environ, peers, timeout)
    return DoctorFacts(
        now=now,
        cortex_id=manifest.id if manifest else "",
        manifest_errors=manifest_errors,
        verify=manifest.federation.effective_verify if manifest and manifest.federation else "off",
        peers=tuple(peers),
        own_cert=_own_cert(cortex_dir, manifest) if manifest else None,
        files=_files(cortex_dir, manifest),
        lock=_lock(cortex_dir),
        quick_check=quick_check,
        database_error=database_error,
        disk_free=_disk_free(cortex_dir),
        online=online,
    )


def _manifest(cortex_dir: Path) -> tuple[Manifest | None, tuple[str, ...]]:
    try:
        manifest = read_manifest(cortex_dir)
    except NoemafedError as exc:
        return None, (str(exc),)
    try:
        check_ready_for_federation(manifest)
    except NoemafedError as exc:
        return manifest, (str(exc),)
    return manifest, ()


def _stored_peer(conn: sqlite3.Connection, manifest: Manifest, index: int) -> PeerFacts:
    """What federation_state remembers of a peer: its pin, last seen version and the key pinned for it."""
    peer = manifest.peers[index]
    try:
        remembered = state.get_peer_state(conn, peer.name, peer.endpoint)
        pinned_key = state.get(conn, state.cortex_key(remembered.cortex_id)) if remembered.cortex_id else ""
    except NoemafedError:
        return PeerFacts(peer.name, peer.paused, "", "", peer.pubkey)
    return PeerFacts(
        peer.name, peer.paused, remembered.cortex_id, remembered.health.version, peer.pubkey or pinned_key
    )


def _contact(
    cortex_dir: Path, manifest: Manifest, environ: Mapping[str, str], peers: list[PeerFacts], timeout: float
) -> list[PeerFacts]:
    """Ask every peer that is not paused, all at once, each within `timeout` seconds in all."""
    try:
        key = load_access_key(cortex_dir, manifest.access, environ).value
    except NoemafedError:
        key = ""  # the manifest check reports the key; peers may still answer in open mode
    configs = {peer.name: peer for peer in manifest.peers}
    results = list(peers)

    def run(index: int) -> None:
        config = configs[peers[index].name]
        ca = sidecar_path(cortex_dir, os.path.expanduser(config.ca)) if config.ca else ""
        target = PeerTarget(config.name, config.endpoint, ca_file=ca, key=key, timeout=timeout)
        results[index] = probe_peer(peers[index], target)

    threads = [
        threading.Thread(target=run, args=(index,), daemon=True)
        for index, peer in enumerate(peers)
        if not peer.paused
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout * 2 + 1)  # a peer past its deadline is left behind, reported as not contacted
    return results


def probe_peer(peer: PeerFacts, target: PeerTarget) -> PeerFacts:
    """One MCP session: initialize (its Date header and, over TLS, its certificate) and cortex_identity."""
    try:
        session = McpSession(target, Deadline(target.timeout))
    except NoemafedError as exc:
        return peer._replace(contacted=True, reach_error=str(exc))
    try:
        info = session.initialize()
        answered = time.time()
        identity = parse_identity(target.name, session.call_tool(CORTEX_IDENTITY, {}))
    except (NoemafedError, OSError) as exc:
        return peer._replace(
            contacted=True, reach_error=one_line(str(exc)), cert_expired=certificate_expired(exc)
        )
    finally:
        session.close()
    return peer._replace(
        contacted=True,
        reported_id=identity.id,
        reported_version=info.version,
        reported_key=identity.pubkey,
        clock_skew=_skew(session.date, answered),
        cert_not_after=_not_after(session.peer_certificate),
    )


def _skew(date: str | None, answered: float) -> float | None:
    """How far the peer's Date header is ahead of this host's clock when the answer arrived (1 s steps)."""
    if not date:
        return None
    try:
        return parsedate_to_datetime(date).timestamp() - answered
    except (TypeError, ValueError):
        return None


def _not_after(der: bytes | None) -> datetime | None:
    if der is None:
        return None
    try:
        return der_validity(der).not_after
    except (ValueError, IndexError):
        return None


def _own_cert(cortex_dir: Path, manifest: Manifest) -> CertFacts | None:
    configured = manifest.access.tls_cert_path
    if not configured:
        return None
    path = sidecar_path(cortex_dir, configured)
    try:
        return CertFacts(path, read_validity(path).not_after)
    except CertificateRefused as exc:
        return CertFacts(path, None, str(exc).removeprefix("refusing to start: "))


def _mode(path: str) -> int | None:
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return None


def _files(cortex_dir: Path, manifest: Manifest | None) -> tuple[FileFacts, ...]:
    """The key files (0600 or noema refuses them) and the cortex's own folder, manifest and database."""
    files = []
    if manifest is not None:
        for label, configured in (
            ("access key file", manifest.access.shared_key_file),
            ("signing key file", manifest.signing_private_key_file),
        ):
            if configured:
                path = sidecar_path(cortex_dir, configured)
                files.append(FileFacts(label, path, _mode(path), secret=True))
    with contextlib.suppress(NoemafedError):
        db_path = str(database_dir(cortex_dir) / DB_FILE)
        files.append(FileFacts("database", db_path, _mode(db_path), secret=False))
    for label, path in (("cortex folder", str(cortex_dir)), ("manifest", str(cortex_dir / MANIFEST_FILE))):
        files.append(FileFacts(label, path, _mode(path), secret=False))
    return tuple(files)


def _lock(cortex_dir: Path) -> LockFacts | None:
    try:
        db_dir = database_dir(cortex_dir)
    except NoemafedError:
        return None
    path = db_dir / LOCK_FILE
    try:
        fields = path.read_text(encoding="ascii", errors="replace").split()
    except OSError:
        return None
    pid = int(fields[0]) if fields and fields[0].isdigit() else 0
    holder = lock_holder(db_dir)
    return LockFacts(str(path), pid, holder is not None, holder is not None and _alive(holder.pid or pid))


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _disk_free(cortex_dir: Path) -> float | None:
    try:
        stats = os.statvfs(cortex_dir)
    except OSError:
        return None
    return stats.f_bavail / stats.f_blocks if stats.f_blocks else None
