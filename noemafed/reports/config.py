"""What the commands that read or change the configuration report: init, the peer commands, the settings,
keys, skip-event, retry-now, doctor and --version."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from noemafed.records import Record

if TYPE_CHECKING:  # value types only
    from noemafed.cortex.access import AccessKey
    from noemafed.cortex.manifest import PeerConfig
    from noemafed.federation.doctor import Finding
    from noemafed.federation.lock import LockHolder
    from noemafed.federation.poison import PoisonRecord, SkippedEvent


class InitReport(Record):
    """The cortex `init` created."""

    path: Path
    cortex_id: str
    name: str


# ---- peers, add-peer, set-peer, remove-peer --------------------------------------------------------


class PeerEntry(Record):
    """One configured peer and the cortex id pinned for it ("" when none is)."""

    config: PeerConfig
    pinned_id: str


class PeersReport(Record):
    """The peers configured in cortex.md, in file order, with their pins."""

    cortex_path: Path
    cortex_id: str
    cortex_name: str
    peers: tuple[PeerEntry, ...]


class AddedPeer(Record):
    """The peer add-peer wrote, with its endpoint as written (trailing slashes trimmed)."""

    name: str
    endpoint: str
    ca: str = ""
    pubkey: str = ""
    running: LockHolder | None = None  # the noemafed sync that read cortex.md before this change


class FieldChange(Record):
    """One key of a peer entry before and after set-peer ("" is unset)."""

    key: str
    before: str
    after: str


class PeerUpdate(Record):
    """What set-peer changed; no changes means nothing was written. `state_moved`: a rename carried state."""

    name: str
    changes: tuple[FieldChange, ...]
    state_moved: bool = False
    running: LockHolder | None = None


class RemovePlan(Record):
    """What remove-peer will take out of cortex.md (and of federation_state unless `keep_state`)."""

    cortex_name: str
    targets: tuple[ResetTarget, ...]
    keep_state: bool


class RemoveResult(Record):
    """What remove-peer did."""

    targets: tuple[ResetTarget, ...]
    keep_state: bool
    buckets_dropped: int
    running: LockHolder | None = None  # --keep-state takes no lock: a sync may be running


# ---- reset-peer -----------------------------------------------------------------------------------


class ResetTarget(Record):
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


class ResetPlan(Record):
    """What reset-peer will clear, shown before it asks."""

    cortex_name: str
    targets: tuple[ResetTarget, ...]


class ResetResult(Record):
    """What reset-peer cleared."""

    targets: tuple[ResetTarget, ...]
    buckets_dropped: int


# ---- retry-now ------------------------------------------------------------------------------------


class RetryNowReport(Record):
    """The peers retry-now was given, and those of them that were in a backoff it ended."""

    names: tuple[str, ...]
    cleared: tuple[str, ...]


# ---- skip-event -----------------------------------------------------------------------------------


class SkipPlan(Record):
    """The event skip-event will store unapplied and move the cursor past, shown before it asks."""

    cortex_name: str
    peer: PeerConfig
    record: PoisonRecord  # the peer is blocked on this event
    cursor: str  # the peer's cursor now, just before the event
    note: str


class SkipResult(Record):
    """What skip-event did: the skip as recorded, and whether the event row was stored now."""

    skip: SkippedEvent
    stored: bool  # False: the row was already there (another peer relayed it), only the cursor moved


# ---- set-mode, pause-peer, resume-peer ------------------------------------------------------------


class ModeChange(Record):
    """The outcome of set-mode: `previous == current` means nothing changed."""

    previous: str
    current: str
    running: LockHolder | None = None

    @property
    def changed(self) -> bool:
        return self.previous != self.current


class PeerModeChange(Record):
    """The outcome of pause-peer or resume-peer: `previous == current` means nothing changed."""

    peer: str
    previous: str
    current: str
    running: LockHolder | None = None

    @property
    def changed(self) -> bool:
        return self.previous != self.current


# ---- set-interval, set-verify ---------------------------------------------------------------------


class SettingChange(Record):
    """A cortex-wide federation setting before and after; `previous == current` means nothing was written."""

    setting: str  # "interval" or "verify"
    previous: str  # the raw text, "" when unset
    current: str
    running: LockHolder | None = None

    @property
    def changed(self) -> bool:
        return self.previous != self.current


# ---- key fingerprint ------------------------------------------------------------------------------


class KeyReport(Record):
    """Where the shared key comes from; `access` carries its fingerprint, never shown in full."""

    cortex_name: str
    access: AccessKey


# ---- keygen ---------------------------------------------------------------------------------------


class KeygenReport(Record):
    """The signing key keygen made: where its seed is, its public key and fingerprint (never the seed)."""

    seed_path: Path
    key_file: str  # signing.private_key_file as written in cortex.md
    public_key: str
    fingerprint: str
    replaced: str  # the fingerprint of the key --force replaced, "" when there was none
    running: LockHolder | None = None


# ---- doctor ---------------------------------------------------------------------------------------


class DoctorReport(Record):
    """Every finding of one doctor run, errors first; its exit code says the worst severity."""

    generated_at: str
    cortex_path: Path
    cortex_id: str  # "" when cortex.md could not be read
    online: bool
    findings: tuple[Finding, ...]

    def count(self, severity: str) -> int:
        return sum(1 for finding in self.findings if finding.severity == severity)

    @property
    def exit_code(self) -> int:
        """0 with no error or warning, 1 with warnings, 2 with errors (docs/exit-codes.md, `doctor`)."""
        return 2 if self.count("error") else 1 if self.count("warning") else 0


# ---- --version ------------------------------------------------------------------------------------


class VersionReport(Record):
    """What `--version` shows: enough to tell builds apart in a bug report."""

    version: str
    commit: str  # "" outside a build made by build.sh
    python: str
    sqlite: str
    ed25519: str  # the Ed25519 verifier: "OpenSSL 3.0.19", "pure Python" (signing.verifier)
