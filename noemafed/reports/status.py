"""What `status` found: each peer, the whole report, and the `--check` view of it (`--metrics-file`'s: reports.metrics)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from noemafed.records import Record

if TYPE_CHECKING:  # value types only: status must not load sync's modules
    from noemafed.cortex.access import AccessKey
    from noemafed.cortex.manifest import FederationConfig, PeerConfig
    from noemafed.cortex.state import LastSync, PeerState, RankEntry
    from noemafed.cortex.vclock import VClock
    from noemafed.federation.poison import PoisonRecord, SkippedEvent
    from noemafed.federation.verdict import CheckState, Judgement


class PeerStatus(Record):
    """One peer as status shows it; `state` is None when reading it failed at the database level."""

    config: PeerConfig
    state: PeerState | None
    rank: RankEntry | None  # None: no usable stored rank, shown as "(none)"
    hint: str | None
    judgement: Judgement | None = None  # None with `state`: the records could not be read
    blocked_on: PoisonRecord | None = None  # poison events: the event a blocked peer is stuck on, else None


class StatusReport(Record):
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
    # The Ed25519 verifier `sync` uses on this host: "openssl" or "python"; None under `verify: off` (none runs);
    # "" when not asked (only --json shows it).
    verifier: str | None
    max_age: float = 3600.0  # seconds without a success before a peer is `stale`
    last_sync: LastSync | None = None  # the last `sync --once` run, as it recorded itself
    skipped_events: tuple[SkippedEvent, ...] = ()  # every `skip-event` ever run on this cortex, oldest first

    @property
    def configured(self) -> bool:
        return self.federation is not None and bool(self.federation.peers)


class CheckReport(Record):
    """`status --check`: the monitoring-plugin state and what its line says; with `error` (why the cortex could
    not be read) the state is UNKNOWN and nothing else is known."""

    state: CheckState
    peers: tuple[PeerStatus, ...] = ()  # the peers judged, in manifest order (perfdata)
    problems: tuple[PeerStatus, ...] = ()  # those not OK, worst first
    counts: tuple[
        tuple[str, int], ...
    ] = ()  # peers per verdict ("unreadable" for a state error), in enum order
    error: str = ""
