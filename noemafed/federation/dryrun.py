"""`sync --once --dry-run`: each peer polled exactly as a real run polls it, then every change undone.

Nothing here replays: the real poll runs (handshake, pages, signature checks, replay, usage, health) on two
seams of the cortex layer. Its database connection is a `RehearsalConnection`, whose transactions nest inside
one that is rolled back at the end, and its trace file steps run inside `traces.recorded()`, which keeps them in
memory (and serves later reads of those files from there). What the poll applied is tallied from the replayed
batches before the rollback.

Peers are rehearsed one after another: each holds the cortex's write lock from its first write to its rollback,
so each sees the cortex as it is, without the others' changes (a real run applies them concurrently).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from noemafed.cortex import traces
from noemafed.cortex.manifest import PeerConfig
from noemafed.cortex.open import RehearsalConnection
from noemafed.federation.classify import Phase, Reason
from noemafed.federation.schedule import open_poller
from noemafed.federation.syncer import PollError, PollResult, SyncContext
from noemafed.mcp.client import Deadline
from noemafed.records import Record

if TYPE_CHECKING:
    from noemafed.cortex.events import Event
    from noemafed.federation.replay import PageResult

DIVERGED = "diverged"  # replay.DIVERGED, without loading replay for the import


class Rehearsal(Record):
    """What a real run would have done with one peer."""

    result: PollResult  # as the real poll reports it (its cursor_after: where the cursor would stand)
    actions: dict[str, int]  # events that would be stored, by action
    effects: dict[str, int]  # what applying them would do, by replay effect (created, updated, diverged, ...)
    diverging: tuple[str, ...]  # traces a remote update would diverge (each gets a divergence trace)
    trace_files: int  # trace files that would be written, moved or removed


class _Tally:
    """The replayed batches of one poll, as replay reported them."""

    def __init__(self) -> None:
        self.actions: Counter[str] = Counter()
        self.effects: Counter[str] = Counter()
        self.diverging: list[str] = []

    def add(self, events: Sequence[Event], page: PageResult) -> None:
        by_id = {event.id: event for event in events[: len(page.outcomes)]}
        for outcome in page.outcomes:
            if outcome.stored:
                self.actions[outcome.action] += 1
            self.effects[outcome.effect] += 1
            if outcome.effect == DIVERGED:
                self.diverging.append(by_id[outcome.event_id].trace_id)


def rehearse_once(ctx: SyncContext, peers: Sequence[PeerConfig]) -> list[Rehearsal]:
    """Each peer in turn, under one deadline for the run, as `poll_once` would poll them."""
    deadline = Deadline(ctx.options.max_duration)
    return [_rehearse(ctx, peer, deadline) for peer in peers]


def _rehearse(ctx: SyncContext, peer: PeerConfig, deadline: Deadline) -> Rehearsal:
    poller = open_poller(ctx, peer, None, rehearsal=True)
    if isinstance(poller, PollResult):
        return Rehearsal(poller, {}, {}, (), 0)
    conn = poller.conn
    assert isinstance(conn, RehearsalConnection)  # noqa: S101 (open_poller was asked for one)
    tally = _Tally()
    poller.on_batch = tally.add
    try:
        with traces.recorded() as files:
            conn.rehearse()
            try:
                result = poller.poll(deadline)
            except Exception as exc:  # as poll_once: a bug must not take the other peers down with it
                result = PollResult.failed(peer, PollError(repr(exc), Phase.INTERNAL, Reason.OTHER))
            finally:
                conn.discard()
    finally:
        poller.cortex.close()
    return Rehearsal(
        result._replace(poison_record=None),  # what the poll recorded is gone with the rollback
        dict(sorted(tally.actions.items())),
        dict(sorted(tally.effects.items())),
        tuple(dict.fromkeys(tally.diverging)),
        len(files),
    )
