"""What each command found or did, as frozen values: commands/ builds them, render.py prints them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from noemafed.errors import ExitCode, NoemafedError

if TYPE_CHECKING:  # value types only; importing them for real would load sync's modules for every command
    from noemafed.cortex.access import AccessKey
    from noemafed.cortex.manifest import FederationConfig, PeerConfig
    from noemafed.cortex.state import LastSync, PeerState, RankEntry
    from noemafed.cortex.vclock import VClock
    from noemafed.federation.doctor import Finding
    from noemafed.federation.dryrun import Rehearsal
    from noemafed.federation.lock import LockHolder
    from noemafed.federation.poison import PoisonRecord, SkippedEvent
    from noemafed.federation.schedule import DeferredPeer
    from noemafed.federation.syncer import PollResult
    from noemafed.federation.verdict import CheckState, Judgement


# The `schema_version` of each JSON document (docs/*.schema.json).
STATUS_SCHEMA_VERSION = 2  # docs/status.schema.json
PEERS_SCHEMA_VERSION = 1  # docs/peers.schema.json
SYNC_SCHEMA_VERSION = 2  # docs/sync.schema.json
DOCTOR_SCHEMA_VERSION = 1  # docs/doctor.schema.json


class InitReport(NamedTuple):
    """The cortex `init` created."""

    path: Path
    cortex_id: str
    name: str


# ---- status ---------------------------------------------------------------------------------------


class PeerStatus(NamedTuple):
    """One peer as status shows it; `state` is None when reading it failed at the database level."""

    config: PeerConfig
    state: PeerState | None
    rank: RankEntry | None  # None: no usable stored rank, shown as "(none)"
    hint: str | None
    judgement: Judgement | None = None  # None with `state`: the records could not be read
    blocked_on: PoisonRecord | None = None  # poison events: the event a blocked peer is stuck on, else None


class StatusReport(NamedTuple):
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
    vclock: VClock
    verifier: str  # the Ed25519 verifier `sync` uses on this host: "openssl" or "python"; "" when not asked
    max_age: float = 3600.0  # seconds without a success before a peer is `stale`
    last_sync: LastSync | None = None  # the last `sync --once` run, as it recorded itself
    skipped_events: tuple[SkippedEvent, ...] = ()  # every `skip-event` ever run on this cortex, oldest first

    @property
    def configured(self) -> bool:
        return self.federation is not None and bool(self.federation.peers)


class MetricsReport(NamedTuple):
    """What a metrics file says: every peer as status judged it, and the sync run it follows (None: none
    recorded)."""

    status: StatusReport
    last_sync: LastSync | None


class CheckReport(NamedTuple):
    """`status --check`: the monitoring-plugin state and what its line says; with `error` (why the cortex could
    not be read) the state is UNKNOWN and nothing else is known."""

    state: CheckState
    peers: tuple[PeerStatus, ...] = ()  # the peers judged, in manifest order (perfdata)
    problems: tuple[PeerStatus, ...] = ()  # those not OK, worst first
    counts: tuple[
        tuple[str, int], ...
    ] = ()  # peers per verdict ("unreadable" for a state error), in enum order
    error: str = ""


# ---- peers, add-peer, set-peer, remove-peer --------------------------------------------------------


class PeerEntry(NamedTuple):
    """One configured peer and the cortex id pinned for it ("" when none is)."""

    config: PeerConfig
    pinned_id: str


class PeersReport(NamedTuple):
    """The peers configured in cortex.md, in file order, with their pins."""

    cortex_path: Path
    cortex_id: str
    cortex_name: str
    peers: tuple[PeerEntry, ...]


class AddedPeer(NamedTuple):
    """The peer add-peer wrote, with its endpoint as written (trailing slashes trimmed)."""

    name: str
    endpoint: str
    ca: str = ""
    pubkey: str = ""
    running: LockHolder | None = None  # the noemafed sync that read cortex.md before this change


class FieldChange(NamedTuple):
    """One key of a peer entry before and after set-peer ("" is unset)."""

    key: str
    before: str
    after: str


class PeerUpdate(NamedTuple):
    """What set-peer changed; no changes means nothing was written. `state_moved`: a rename carried state."""

    name: str
    changes: tuple[FieldChange, ...]
    state_moved: bool = False
    running: LockHolder | None = None


class RemovePlan(NamedTuple):
    """What remove-peer will take out of cortex.md (and of federation_state unless `keep_state`)."""

    cortex_name: str
    targets: tuple[ResetTarget, ...]
    keep_state: bool


class RemoveResult(NamedTuple):
    """What remove-peer did."""

    targets: tuple[ResetTarget, ...]
    keep_state: bool
    buckets_dropped: int
    running: LockHolder | None = None  # --keep-state takes no lock: a sync may be running


# ---- reset-peer -----------------------------------------------------------------------------------


class ResetTarget(NamedTuple):
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


class ResetPlan(NamedTuple):
    """What reset-peer will clear, shown before it asks."""

    cortex_name: str
    targets: tuple[ResetTarget, ...]


class ResetResult(NamedTuple):
    """What reset-peer cleared."""

    targets: tuple[ResetTarget, ...]
    buckets_dropped: int


# ---- retry-now ------------------------------------------------------------------------------------


class RetryNowReport(NamedTuple):
    """The peers retry-now was given, and those of them that were in a backoff it ended."""

    names: tuple[str, ...]
    cleared: tuple[str, ...]


# ---- skip-event -----------------------------------------------------------------------------------


class SkipPlan(NamedTuple):
    """The event skip-event will store unapplied and move the cursor past, shown before it asks."""

    cortex_name: str
    peer: PeerConfig
    record: PoisonRecord  # the peer is blocked on this event
    cursor: str  # the peer's cursor now, just before the event
    note: str


class SkipResult(NamedTuple):
    """What skip-event did: the skip as recorded, and whether the event row was stored now."""

    skip: SkippedEvent
    stored: bool  # False: the row was already there (another peer relayed it), only the cursor moved


# ---- set-mode, pause-peer, resume-peer ------------------------------------------------------------


class ModeChange(NamedTuple):
    """The outcome of set-mode: `previous == current` means nothing changed."""

    previous: str
    current: str
    running: LockHolder | None = None

    @property
    def changed(self) -> bool:
        return self.previous != self.current


class PeerModeChange(NamedTuple):
    """The outcome of pause-peer or resume-peer: `previous == current` means nothing changed."""

    peer: str
    previous: str
    current: str
    running: LockHolder | None = None

    @property
    def changed(self) -> bool:
        return self.previous != self.current


# ---- set-interval, set-verify ---------------------------------------------------------------------


class SettingChange(NamedTuple):
    """A cortex-wide federation setting before and after; `previous == current` means nothing was written."""

    setting: str  # "interval" or "verify"
    previous: str  # the raw text, "" when unset
    current: str
    running: LockHolder | None = None

    @property
    def changed(self) -> bool:
        return self.previous != self.current


# ---- key fingerprint ------------------------------------------------------------------------------


class KeyReport(NamedTuple):
    """Where the shared key comes from; `access` carries its fingerprint, never shown in full."""

    cortex_name: str
    access: AccessKey


# ---- keygen ---------------------------------------------------------------------------------------


class KeygenReport(NamedTuple):
    """The signing key keygen made: where its seed is, its public key and fingerprint (never the seed)."""

    seed_path: Path
    key_file: str  # signing.private_key_file as written in cortex.md
    public_key: str
    fingerprint: str
    replaced: str  # the fingerprint of the key --force replaced, "" when there was none
    running: LockHolder | None = None


# ---- doctor ---------------------------------------------------------------------------------------


class DoctorReport(NamedTuple):
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


class VersionReport(NamedTuple):
    """What `--version` shows: enough to tell builds apart in a bug report."""

    version: str
    commit: str  # "" outside a build made by build.sh
    python: str
    sqlite: str
    ed25519: str  # the Ed25519 verifier: "OpenSSL 3.0.19", "pure Python" (signing.verifier)


# ---- sync -----------------------------------------------------------------------------------------


class SyncReport(NamedTuple):
    """One `sync --once` run: a result per visited peer, the peers skipped, and the exit code it implies."""

    started_at: str
    seconds: float
    cortex_path: Path
    cortex_id: str
    cortex_name: str
    results: tuple[PollResult, ...]
    paused: tuple[str, ...]
    deferred: tuple[DeferredPeer, ...] = ()  # not contacted: their next attempt (backoff, blocked) is not due
    dry_run: bool = False  # --dry-run: nothing was kept; `rehearsals` says what a run would have done
    rehearsals: tuple[Rehearsal, ...] = ()  # one per result, in the same order

    @property
    def exit_code(self) -> ExitCode:
        """0 all good; 4 if any peer needs an operator (wins); 3 if any failed otherwise; deferred peers count
        for nothing."""
        # The codes are ordered by severity, so the worst result is the largest.
        return max((result.exit_code for result in self.results), default=ExitCode.OK)


# ---- errors ---------------------------------------------------------------------------------------


class ErrorReport(NamedTuple):
    """A failed command as a `--json` caller sees it: the error's stable code, its texts and the exit code."""

    schema_version: int  # the document the command would have printed (status or sync)
    code: str
    message: str
    hint: str | None
    exit_code: int

    @classmethod
    def of(cls, exc: NoemafedError, schema_version: int) -> ErrorReport:
        return cls(schema_version, exc.code, exc.message, exc.hint, int(exc.exit_code))
