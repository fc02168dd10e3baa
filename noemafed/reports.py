"""What each command found or did, as frozen values: commands/ builds them, render.py prints them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from noemafed.errors import ExitCode, NoemafedError

if TYPE_CHECKING:  # value types only; importing them for real would load sync's modules for every command
    from noemafed.cortex.access import AccessKey
    from noemafed.cortex.manifest import FederationConfig, PeerConfig
    from noemafed.cortex.state import PeerState, RankEntry
    from noemafed.cortex.vclock import VClock
    from noemafed.federation.syncer import PollResult


@dataclass(frozen=True)
class InitReport:
    """The cortex `init` created."""

    path: Path
    cortex_id: str
    name: str


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

    SCHEMA_VERSION: ClassVar[int] = 1  # docs/status.schema.json

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

    @property
    def configured(self) -> bool:
        return self.federation is not None and bool(self.federation.peers)


# ---- peers, add-peer, set-peer, remove-peer --------------------------------------------------------


@dataclass(frozen=True)
class PeerEntry:
    """One configured peer and the cortex id pinned for it ("" when none is)."""

    config: PeerConfig
    pinned_id: str


@dataclass(frozen=True)
class PeersReport:
    """The peers configured in cortex.md, in file order, with their pins."""

    SCHEMA_VERSION: ClassVar[int] = 1  # docs/peers.schema.json

    cortex_path: Path
    cortex_id: str
    cortex_name: str
    peers: tuple[PeerEntry, ...]


@dataclass(frozen=True)
class AddedPeer:
    """The peer add-peer wrote, with its endpoint as written (trailing slashes trimmed)."""

    name: str
    endpoint: str
    ca: str = ""
    pubkey: str = ""


@dataclass(frozen=True)
class FieldChange:
    """One key of a peer entry before and after set-peer ("" is unset)."""

    key: str
    before: str
    after: str


@dataclass(frozen=True)
class PeerUpdate:
    """What set-peer changed; no changes means nothing was written. `state_moved`: a rename carried state."""

    name: str
    changes: tuple[FieldChange, ...]
    state_moved: bool = False


@dataclass(frozen=True)
class RemovePlan:
    """What remove-peer will take out of cortex.md (and of federation_state unless `keep_state`)."""

    cortex_name: str
    targets: tuple[ResetTarget, ...]
    keep_state: bool


@dataclass(frozen=True)
class RemoveResult:
    """What remove-peer did."""

    targets: tuple[ResetTarget, ...]
    keep_state: bool
    buckets_dropped: int


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
    """What reset-peer will clear, shown before it asks."""

    cortex_name: str
    targets: tuple[ResetTarget, ...]


@dataclass(frozen=True)
class ResetResult:
    """What reset-peer cleared."""

    targets: tuple[ResetTarget, ...]
    buckets_dropped: int


# ---- set-mode, pause-peer, resume-peer ------------------------------------------------------------


@dataclass(frozen=True)
class ModeChange:
    """The outcome of set-mode: `previous == current` means nothing changed."""

    previous: str
    current: str

    @property
    def changed(self) -> bool:
        return self.previous != self.current


@dataclass(frozen=True)
class PeerModeChange:
    """The outcome of pause-peer or resume-peer: `previous == current` means nothing changed."""

    peer: str
    previous: str
    current: str

    @property
    def changed(self) -> bool:
        return self.previous != self.current


# ---- set-interval, set-verify ---------------------------------------------------------------------


@dataclass(frozen=True)
class SettingChange:
    """A cortex-wide federation setting before and after; `previous == current` means nothing was written."""

    setting: str  # "interval" or "verify"
    previous: str  # the raw text, "" when unset
    current: str

    @property
    def changed(self) -> bool:
        return self.previous != self.current


# ---- key fingerprint ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyReport:
    """Where the shared key comes from; `access` carries its fingerprint, never shown in full."""

    cortex_name: str
    access: AccessKey


# ---- --version ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionReport:
    """What `--version` shows: enough to tell builds apart in a bug report."""

    version: str
    commit: str  # "" outside a build made by build.sh
    python: str
    sqlite: str


# ---- sync -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncReport:
    """One `sync --once` run: a result per visited peer, the peers skipped, and the exit code it implies."""

    SCHEMA_VERSION: ClassVar[int] = 1  # docs/sync.schema.json

    started_at: str
    seconds: float
    cortex_path: Path
    cortex_id: str
    cortex_name: str
    results: tuple[PollResult, ...]
    paused: tuple[str, ...]

    @property
    def exit_code(self) -> ExitCode:
        """0 all good; 4 if any peer needs an operator (wins); 3 if any failed otherwise."""
        # The codes are ordered by severity, so the worst result is the largest.
        return max((result.exit_code for result in self.results), default=ExitCode.OK)


# ---- errors ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorReport:
    """A failed command as a `--json` caller sees it: the error's stable code, its texts and the exit code."""

    schema_version: int  # the document the command would have printed (status or sync)
    code: str
    message: str
    hint: str | None
    exit_code: int

    @classmethod
    def of(cls, exc: NoemafedError, schema_version: int) -> ErrorReport:
        return cls(schema_version, exc.code, exc.message, exc.hint, int(exc.exit_code))
