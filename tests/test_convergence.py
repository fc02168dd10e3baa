"""The convergence property (issue 12): replicas that have seen the same events hold the same cortex.

A hypothesis state machine drives 3 to 5 real cortexes in one process. Rules: local activity through
tests/authoring.py (what noema writes), pulls between random pairs (the source's log after our cursor, in id
order, exactly the rows `sync_events` serves, replayed through `Replayer.apply_page` in pages of a random size
with the cursor committed in each page), and crashes (a page abandoned at a random hook step, then a fresh
open). At the end every replica pulls from every other until nothing moves, and `check` compares them.

What cannot converge is named, not ignored: `PROTOCOL_LIMITS` are cases noema's protocol itself cannot converge
(docs/replay.md, "Convergence"). `OUT_OF_ORDER` names the arrival orders that replay's rules exist for (events
before their create, stale changes, changes to a tombstone): they are counted, never excluded, and each has a
plain example at the end of this file.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import authoring
import pytest
from conftest import REPO
from hypothesis import HealthCheck, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule
from replay_helpers import TRACE_COLUMNS, make_replica
from ulid import ULID

from noemafed.cortex import emit, state, traces, vclock
from noemafed.cortex.events import EVENT_COLUMNS, event_from_row
from noemafed.cortex.file_undo import UNDO_DIR
from noemafed.cortex.open import Cortex, database_dir, open_cortex
from noemafed.cortex.rows import allowed_for, get_row
from noemafed.federation.replay import Replayer
from noemafed.logs import SILENT
from noemafed.text.gotext import format_rfc3339

MAX_REPLICAS = 5
CORTEX_IDS = tuple(f"01JR{'0' * 20}C{i}" for i in range(MAX_REPLICAS))
BASE_TIME = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
TAGS = ("alpha", "beta", "gamma")
# Local usage counters: noema bumps them on the replica where the agent reads or edits, and they travel as
# usage rows (`sync_read_signal`), not as events, so replay never touches them.
LOCAL_COLUMNS = ("read_count", "modify_count", "last_read_at")
SETTLE_ROUNDS = 8
REPLICA = st.integers(0, MAX_REPLICAS - 1)
PAGE = st.sampled_from([50, 1, 2, 3])
SETTLE_PAGE = 7
_REAL_NEW_ULID = emit.new_ulid
# Hundreds of small cortexes per run: a RAM disk where there is one (Linux), the default temp dir elsewhere.
SHM = "/dev/shm"  # noqa: S108 - a private mkdtemp inside it, like any temp dir
FAST_TMP = SHM if os.access(SHM, os.W_OK) else None


class Crash(BaseException):
    """A simulated kill: BaseException, so no `except Exception` in replay can absorb it."""


def note(text: str) -> None:
    """A statistic for `--hypothesis-show-statistics`; nothing in the examples, which run outside hypothesis."""
    with suppress(InvalidArgument):
        hypothesis_event(text)


# ----------------------------------------------------------------------------------------------------------
# Time and ids


class Clocks:
    """Deterministic wall clocks, one per replica (each with its own skew), and the ULIDs noema draws from them.

    Event ids are ULIDs of the author's wall clock, monotonic per replica as Go's and Rust's generators are;
    a skewed replica therefore makes id order disagree with causal order, as between real machines.
    """

    def __init__(self, skews: Sequence[int]) -> None:
        self.elapsed = 0  # seconds since BASE_TIME on a clock without skew
        self.skews = list(skews)
        self.current = 0  # the replica whose code runs now (local activity, or replay authoring a divergence)
        self._last: dict[int, tuple[int, int]] = {}

    def wall(self, replica: int) -> datetime:
        return BASE_TIME + timedelta(seconds=self.elapsed + self.skews[replica])

    def now(self, replica: int) -> str:
        return format_rfc3339(self.wall(replica))

    def ulid(self) -> str:
        replica = self.current
        ms = int(self.wall(replica).timestamp() * 1000)
        last_ms, last_random = self._last.get(replica, (-1, 0))
        # The random part: the replica in the top bits, then a counter within the millisecond.
        random = last_random + 1 if ms <= last_ms else replica << 76
        ms = max(ms, last_ms)
        self._last[replica] = (ms, random)
        return str(ULID.from_bytes(ms.to_bytes(6, "big") + random.to_bytes(10, "big")))


# ----------------------------------------------------------------------------------------------------------
# Replicas


@dataclass
class Replica:
    index: int
    name: str
    cortex_id: str
    path: Path
    clocks: Clocks
    cortex: Cortex = field(init=False)
    replayer: Replayer = field(init=False)
    # The peer whose page was abandoned mid-way: files may be ahead of rows until a pull from it completes.
    crashed_on: str = ""
    ever_crashed: bool = False
    # Per source: the event our cursor is pinned before (id, action, error), while its replay fails.
    pins: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.open()

    def open(self) -> None:
        """A fresh process: a new connection, a new Replayer (and a new signer cache in authoring)."""
        self.cortex = open_cortex(self.path)
        # No fsync: this test is about logic, and crashes are simulated in-process (durability: test_replay).
        self.cortex.conn.execute("PRAGMA synchronous=OFF")
        self.replayer = Replayer(self.cortex, log=SILENT, now=lambda: self.clocks.now(self.index))

    def close(self) -> None:
        self.cortex.close()

    @property
    def conn(self) -> sqlite3.Connection:
        return self.cortex.conn

    def trace_ids(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT id FROM traces ORDER BY id")]


def choose(items: Sequence[Any], pick: int) -> Any:
    return items[pick % len(items)] if items else None


# ----------------------------------------------------------------------------------------------------------
# The machine


class ConvergenceMachine(RuleBasedStateMachine):
    """Random local activity, pulls and crashes on 3 to 5 replicas; `finish` settles them and checks."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="noemafed-convergence-", dir=FAST_TMP))
        self.replicas: list[Replica] = []
        self.clocks = Clocks([0] * MAX_REPLICAS)
        self.counter = 0
        self.report = Report()
        emit.new_ulid = self.clocks.ulid

    # -- set-up --------------------------------------------------------------------------------------------

    @initialize(
        n=st.integers(3, MAX_REPLICAS),
        skews=st.lists(
            st.sampled_from([0, 0, 0, 40, -40, -86400]), min_size=MAX_REPLICAS, max_size=MAX_REPLICAS
        ),
    )
    def init(self, n: int, skews: list[int]) -> None:
        self.clocks.skews = list(skews)
        for i in range(n):
            path = make_replica(self.root, f"r{i}", CORTEX_IDS[i])
            self.replicas.append(Replica(i, f"r{i}", CORTEX_IDS[i], path, self.clocks))
        # Something to work on from the first step: one trace per replica, not yet shared.
        for replica in self.replicas:
            self.create(replica.index, [], None)

    def teardown(self) -> None:
        try:
            if self.replicas:
                self.finish()
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        for replica in self.replicas:
            replica.close()
        emit.new_ulid = _REAL_NEW_ULID
        shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------------------------

    def local(self, r: int) -> Replica | None:
        """The replica for local activity, with time moved on; None while a crashed page is not resumed."""
        replica = self.replicas[r % len(self.replicas)]
        if replica.crashed_on:
            return None
        self.clocks.elapsed += 1
        self.clocks.current = replica.index
        return replica

    def now(self, replica: Replica) -> str:
        return self.clocks.now(replica.index)

    def next_text(self, replica: Replica, what: str) -> str:
        self.counter += 1
        return f"{what} {self.counter} by {replica.name}\n"

    def eligible(self, replica: Replica, test: Callable[[Any], bool]) -> list[str]:
        """Trace ids whose row passes `test`; divergence records and soft-purged tombstones are left alone."""
        out = []
        for trace_id in replica.trace_ids():
            row = get_row(replica.conn, trace_id)
            if row is None or row.purged_at is not None or row.type == "divergence":
                continue
            if test(row):
                out.append(trace_id)
        return out

    # -- local activity ------------------------------------------------------------------------------------

    @rule(
        r=REPLICA,
        tags=st.lists(st.sampled_from(TAGS), max_size=2),
        parent=st.none() | st.integers(0, 20),
    )
    def create(self, r: int, tags: list[str], parent: int | None) -> None:
        replica = self.local(r)
        if replica is None:
            return
        derived = []
        if parent is not None:
            derived = [p for p in [choose(self.eligible(replica, lambda _: True), parent)] if p]
        self.counter += 1
        authoring.create_trace(
            replica.cortex,
            f"Note {self.counter}",
            "note",
            f"first body of note {self.counter}\n",
            tags=tags,
            derived_from=derived,
            now=self.now(replica),
        )

    @rule(r1=REPLICA, r2=REPLICA)
    def create_same_title(self, r1: int, r2: int) -> None:
        """Two agents note the same title on the same day, before they see each other: one trace id."""
        self.counter += 1
        title = f"Shared {self.counter}"
        for r in (r1, r1 + 1 + r2 % (len(self.replicas) - 1)):
            replica = self.local(r)
            if replica is not None:
                authoring.create_trace(
                    replica.cortex,
                    title,
                    "fact",
                    self.next_text(replica, "same title"),
                    now=self.now(replica),
                )

    def _update(self, replica: Replica, trace_id: str, tags: list[str] | None, retitle: bool) -> None:
        authoring.update_trace(
            replica.cortex,
            trace_id,
            title=f"Retitled by {replica.name}" if retitle else None,
            body=self.next_text(replica, "edit"),
            tags=tags,
            now=self.now(replica),
        )

    @rule(
        r=REPLICA,
        pick=st.integers(0, 20),
        tags=st.none() | st.lists(st.sampled_from(TAGS), max_size=2),
        retitle=st.booleans(),
    )
    def update(self, r: int, pick: int, tags: list[str] | None, retitle: bool) -> None:
        replica = self.local(r)
        if replica is None:
            return
        trace_id = choose(self.eligible(replica, lambda row: row.tier != "long"), pick)
        if trace_id:
            self._update(replica, trace_id, tags, retitle)

    @rule(r1=REPLICA, r2=REPLICA, pick=st.integers(0, 20))
    def concurrent_update(self, r1: int, r2: int, pick: int) -> None:
        """Two replicas edit the same trace, neither having seen the other's edit."""
        first = self.local(r1)
        second = self.local(r1 + 1 + r2 % (len(self.replicas) - 1))
        if first is None or second is None:
            return
        shared = sorted(
            set(self.eligible(first, lambda row: row.tier != "long"))
            & set(self.eligible(second, lambda row: row.tier != "long"))
        )
        trace_id = choose(shared, pick)
        if trace_id:
            for replica in (first, second):
                self.clocks.current = replica.index
                self._update(replica, trace_id, None, False)

    @rule(r=REPLICA, pick=st.integers(0, 20), tags=st.lists(st.sampled_from(TAGS)))
    def tag(self, r: int, pick: int, tags: list[str]) -> None:
        replica = self.local(r)
        if replica is None:
            return
        trace_id = choose(self.eligible(replica, lambda _: True), pick)
        if trace_id:
            authoring.set_tags(replica.cortex, trace_id, tags, now=self.now(replica))

    @rule(
        r=REPLICA,
        pick=st.integers(0, 20),
        action=st.sampled_from(["trash", "archive", "recover", "unarchive"]),
    )
    def move(self, r: int, pick: int, action: str) -> None:
        replica = self.local(r)
        if replica is None:
            return
        trace_id = choose(self.eligible(replica, lambda row: allowed_for(row, action)), pick)
        if trace_id:
            getattr(authoring, action)(replica.cortex, trace_id, now=self.now(replica))

    @rule(r=REPLICA, pick=st.integers(0, 20))
    def purge(self, r: int, pick: int) -> None:
        replica = self.local(r)
        if replica is None:
            return
        trace_id = choose(
            self.eligible(replica, lambda row: row.trashed_at is not None and row.tier != "long"), pick
        )
        if trace_id:
            authoring.purge(replica.cortex, trace_id, now=self.now(replica))

    @rule(
        r=REPLICA,
        pick=st.integers(0, 20),
        change=st.sampled_from(
            [("promote", "short", "mid"), ("promote", "mid", "long"), ("demote", "mid", "short")]
        ),
    )
    def tier(self, r: int, pick: int, change: tuple[str, str, str]) -> None:
        action, source, target = change
        replica = self.local(r)
        if replica is None:
            return
        trace_id = choose(self.eligible(replica, lambda row: row.tier == source), pick)
        if trace_id:
            getattr(authoring, action)(replica.cortex, trace_id, target, now=self.now(replica))

    @rule(r=REPLICA, pick=st.integers(0, 20), delta=st.sampled_from([1, -1, 2, -2]))
    def vote(self, r: int, pick: int, delta: int) -> None:
        replica = self.local(r)
        if replica is None:
            return
        trace_id = choose(self.eligible(replica, lambda _: True), pick)
        if trace_id:
            authoring.vote(replica.cortex, trace_id, delta, now=self.now(replica))

    @rule(r=REPLICA, pick=st.integers(0, 20), sources=st.integers(1, 3))
    def consolidate(self, r: int, pick: int, sources: int) -> None:
        replica = self.local(r)
        if replica is None:
            return
        held = self.eligible(replica, lambda _: True)
        distilled = choose(held, pick)
        if distilled:
            others = [t for t in held if t != distilled][:sources]
            authoring.consolidate(replica.cortex, distilled, others, model_name="m", now=self.now(replica))

    @rule(r=REPLICA, pick=st.integers(0, 20))
    def purge_long_term(self, r: int, pick: int) -> None:
        """The admin soft purge of a long trace (a tombstone row stays)."""
        replica = self.local(r)
        if replica is None:
            return
        trace_id = choose(self.eligible(replica, lambda row: row.tier == "long"), pick)
        if trace_id:
            authoring.purge_long_term(replica.cortex, trace_id, "test", now=self.now(replica))

    @rule(r=REPLICA, pick=st.integers(0, 20))
    def purge_hard(self, r: int, pick: int) -> None:
        replica = self.local(r)
        if replica is None:
            return
        trace_id = choose(self.eligible(replica, lambda _: True), pick)
        if trace_id:
            authoring.purge_hard(replica.cortex, trace_id, "test", now=self.now(replica))

    @rule(r=REPLICA, pick=st.integers(0, 20))
    def resolve(self, r: int, pick: int) -> None:
        """`noema resolve`: the original gets a normal local update, the divergence record goes to the trash."""
        replica = self.local(r)
        if replica is None:
            return
        records = [
            row[0]
            for row in replica.conn.execute(
                "SELECT t.id FROM traces t JOIN trace_lineage l ON l.trace_id = t.id "
                "WHERE t.type = 'divergence' AND t.trashed_at IS NULL ORDER BY t.id"
            )
        ]
        record = choose(records, pick)
        if not record:
            return
        (original,) = replica.conn.execute(
            "SELECT derived_from FROM trace_lineage WHERE trace_id = ?", (record,)
        ).fetchone()
        row = get_row(replica.conn, original)
        if row is None or row.tier == "long" or row.purged_at is not None:
            return
        self._update(replica, original, None, False)
        authoring.trash(replica.cortex, record, now=self.now(replica))

    @rule()
    def next_day(self) -> None:
        self.clocks.elapsed += 86400

    # -- pulls and crashes ---------------------------------------------------------------------------------

    def pull(self, source: Replica, target: Replica, page: int, crash_at: int = 0) -> int:
        """One poll of `source` by `target`: every event after the cursor, in pages; returns events stored."""
        self.clocks.current = target.index
        cursor = state.get(target.conn, state.peer_key(source.name, state.LAST_EVENT))
        rows = source.conn.execute(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE id > ? ORDER BY id", (cursor,)
        ).fetchall()
        events = [event_from_row(row) for row in rows]
        steps = 0

        def hook(step: str) -> None:
            nonlocal steps
            steps += 1
            if steps == crash_at:
                raise Crash(step)

        target.replayer.hook = hook if crash_at else None
        stored = 0
        try:
            for start in range(0, len(events), page):
                result = target.replayer.apply_page(events[start : start + page], cursor_peer=source.name)
                stored += sum(outcome.stored for outcome in result.outcomes)
                if result.failed is not None:
                    target.pins[source.name] = (result.failed.id, result.failed.action, str(result.error))
                    return stored
        except Crash:
            note("crash")
            target.close()
            target.open()
            target.crashed_on = source.name
            target.ever_crashed = True
            return stored
        finally:
            target.replayer.hook = None
        target.pins.pop(source.name, None)
        if target.crashed_on == source.name:
            target.crashed_on = ""
        return stored

    def pair(self, src: int, dst: int) -> tuple[Replica, Replica]:
        n = len(self.replicas)
        source = self.replicas[src % n]
        return source, self.replicas[(source.index + 1 + dst % (n - 1)) % n]

    @rule(pulls=st.lists(st.tuples(REPLICA, REPLICA, PAGE), min_size=1, max_size=4))
    def sync(self, pulls: list[tuple[int, int, int]]) -> None:
        """A few polls in a row (pulls outnumber the other rules, as in a federation that syncs often)."""
        for src, dst, page in pulls:
            self.clocks.elapsed += 1
            self.pull(*self.pair(src, dst), page)

    @rule(
        src=REPLICA,
        dst=REPLICA,
        page=PAGE,
        crash_at=st.integers(1, 40),
    )
    def sync_and_crash(self, src: int, dst: int, page: int, crash_at: int) -> None:
        self.clocks.elapsed += 1
        self.pull(*self.pair(src, dst), page, crash_at)

    # -- the end -------------------------------------------------------------------------------------------

    def settle(self) -> None:
        """Everyone pulls from everyone until a whole round stores nothing (a pinned cursor stays pinned:
        `check` judges the pins)."""
        for _ in range(SETTLE_ROUNDS):
            self.clocks.elapsed += 1
            moved = 0
            for target in self.replicas:
                for source in self.replicas:
                    if source is not target:
                        moved += self.pull(source, target, SETTLE_PAGE)
            if not moved:
                return
        raise AssertionError(f"replicas still move after {SETTLE_ROUNDS} rounds of pulls")

    def finish(self) -> None:
        self.settle()
        snaps = {replica.name: snapshot(replica) for replica in self.replicas}
        self.report = check(snaps)
        for name in sorted(self.report.excluded):
            note(f"excluded: {name}")
        for name in sorted(self.report.exercised):
            note(f"exercised: {name}")
        assert not self.report.violations, "\n\n".join(self.report.violations)


# ----------------------------------------------------------------------------------------------------------
# End states


@dataclass
class Snapshot:
    """One replica after settling: its log (in arrival order), clock, cursors and every trace's state."""

    name: str
    events: dict[str, tuple[Any, ...]]  # id -> (value, typeof) per column
    arrival: dict[str, int]  # id -> position in this replica's log (rowid order)
    clock: str
    cursors: dict[str, str]  # peer name -> last_event
    rows: dict[str, dict[str, Any]]
    tags: dict[str, list[str]]
    lineage: dict[str, list[str]]
    fts: dict[str, list[tuple[str, str, str]]]
    files: dict[str, list[tuple[str, str]]]  # trace id -> [(folder, text)]
    ever_crashed: bool
    pins: dict[str, tuple[str, str, str]]


def snapshot(replica: Replica) -> Snapshot:
    conn = replica.conn
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    columns = ", ".join(f"{c}, typeof({c})" for c in EVENT_COLUMNS)
    events: dict[str, tuple[Any, ...]] = {}
    arrival: dict[str, int] = {}
    for position, row in enumerate(conn.execute(f"SELECT {columns} FROM events ORDER BY rowid")):
        events[row[0]] = tuple(row)
        arrival[row[0]] = position
    cursors = {
        key.split(":")[1]: value
        for key, value in conn.execute(
            "SELECT key, value FROM federation_state WHERE key LIKE 'peer:%:last_event'"
        )
    }
    rows = {
        row[0]: dict(zip(TRACE_COLUMNS, row, strict=True))
        for row in conn.execute(f"SELECT {', '.join(TRACE_COLUMNS)} FROM traces")
    }
    tags: dict[str, list[str]] = {}
    for trace_id, tag in conn.execute("SELECT trace_id, tag FROM trace_tags ORDER BY 1, 2"):
        tags.setdefault(trace_id, []).append(tag)
    lineage: dict[str, list[str]] = {}
    for trace_id, parent in conn.execute("SELECT trace_id, derived_from FROM trace_lineage ORDER BY 1, 2"):
        lineage.setdefault(trace_id, []).append(parent)
    fts: dict[str, list[tuple[str, str, str]]] = {}
    for trace_id, title, body, tag_text in conn.execute(
        "SELECT id, title, body, tags FROM traces_fts ORDER BY 1, 2, 3, 4"
    ):
        fts.setdefault(trace_id, []).append((title, body, tag_text))
    assert not any((database_dir(replica.path) / UNDO_DIR).glob("*/journal")), (
        f"{replica.name}: undo log left"
    )
    files: dict[str, list[tuple[str, str]]] = {}
    for folder in traces.FOLDERS:
        for path in sorted((replica.path / folder).iterdir()):
            assert path.name.endswith(".md"), f"{replica.name}: stray file {folder}/{path.name}"
            files.setdefault(path.name[:-3], []).append((folder, path.read_text(encoding="utf-8")))
    return Snapshot(
        name=replica.name,
        events=events,
        arrival=arrival,
        clock=state.get(conn, state.VCLOCK_KEY),
        cursors=cursors,
        rows=rows,
        tags=tags,
        lineage=lineage,
        fts=fts,
        files=files,
        ever_crashed=replica.ever_crashed,
        pins=dict(replica.pins),
    )


# ----------------------------------------------------------------------------------------------------------
# The property


@dataclass(frozen=True)
class Logged:
    """An event of the settled history, with its clock reduced to cortex-id keys."""

    id: str
    action: str
    trace_id: str
    origin: str
    clock: dict[str, int]
    payload: dict[str, Any]

    @classmethod
    def of(cls, values: tuple[Any, ...]) -> Logged:
        event = event_from_row(values[0::2])
        try:
            payload = event.payload()
        except ValueError:
            payload = {}
        clock = vclock.keep_cortex_id_keys(event.vclock or {})
        return cls(event.id, event.action, event.trace_id, event.origin, clock, payload)


def before(a: Logged, b: Logged) -> bool:
    """a happened before b: b's clock dominates a's."""
    return vclock.compare(a.clock, b.clock) == -1


def concurrent(a: Logged, b: Logged) -> bool:
    return vclock.compare(a.clock, b.clock) == 0


@dataclass
class History:
    """Every event any replica holds, by trace, and the replicas' snapshots."""

    snaps: dict[str, Snapshot]
    events: dict[str, Logged]
    by_trace: dict[str, list[Logged]]

    @classmethod
    def of(cls, snaps: dict[str, Snapshot]) -> History:
        events: dict[str, Logged] = {}
        for snap in snaps.values():
            for event_id, values in snap.events.items():
                events.setdefault(event_id, Logged.of(values))
        by_trace: dict[str, list[Logged]] = {}
        for event in sorted(events.values(), key=lambda e: e.id):
            by_trace.setdefault(event.trace_id, []).append(event)
        return cls(snaps, events, by_trace)

    def of_trace(self, trace_id: str, actions: Iterable[str]) -> list[Logged]:
        wanted = set(actions)
        return [e for e in self.by_trace.get(trace_id, []) if e.action in wanted]

    def arrived_after(self, trace_id: str, actions: Iterable[str], after_actions: Iterable[str]) -> list[str]:
        """Some replica stored an event of `actions` after one of `after_actions`, whatever their causal order."""
        found = []
        for snap in self.snaps.values():
            for a in self.of_trace(trace_id, actions):
                for b in self.of_trace(trace_id, after_actions):
                    if (
                        a.id in snap.arrival
                        and b.id in snap.arrival
                        and snap.arrival[b.id] < snap.arrival[a.id]
                    ):
                        found.append(f"{snap.name}: {a.action} {a.id} after {b.action} {b.id}")
        return found

    def late(self, trace_id: str, late_actions: Iterable[str], after_actions: Iterable[str]) -> list[str]:
        """Arrivals out of causal order: a replica stored an event of `late_actions` after one of
        `after_actions` on the same trace that happened after it. Returns `replica: late <- later` lines."""
        lates = self.of_trace(trace_id, late_actions)
        afters = self.of_trace(trace_id, after_actions)
        found = []
        for snap in self.snaps.values():
            for a in lates:
                for b in afters:
                    if (
                        a.id in snap.arrival
                        and b.id in snap.arrival
                        and snap.arrival[b.id] < snap.arrival[a.id]
                        and before(a, b)
                    ):
                        found.append(f"{snap.name}: {a.action} {a.id} after {b.action} {b.id}")
        return found


EDITS = ("create", "update")
TAGGING = ("update", "tag_update")
TIERING = ("promote", "demote", "consolidate")
VISIBILITY = ("archive", "unarchive", "trash", "recover")
REMOVALS = ("purge", "purge_hard", "purge_long_term")
CHANGES = ("update", "tag_update", *TIERING, *VISIBILITY, *REMOVALS)

# A predicate takes the history and a trace id and returns its evidence: non-empty when the case applies.
Predicate = Callable[[History, str], list[str]]


def colliding_creates(history: History, trace_id: str) -> list[str]:
    """Two cortexes made the same trace id (same title, same UTC day) before seeing each other: trace ids
    are not globally unique, and a `create` on an existing row is stored only, so each replica keeps the
    copy that reached it first."""
    creates = history.of_trace(trace_id, ["create"])
    return [f"creates {[e.id for e in creates]}"] if len(creates) > 1 else []


def unresolved_conflict(history: History, trace_id: str) -> list[str]:
    """Concurrent edits that no later edit supersedes: each side keeps its local content (cortex.md §6.4)
    until someone resolves the divergence; a third replica keeps whichever arrived first."""
    edits = history.of_trace(trace_id, EDITS)
    maximal = [e for e in edits if not any(before(e, other) for other in edits)]
    return [f"maximal edits {[e.id for e in maximal]}"] if len(maximal) > 1 else []


def concurrent_changes(first: Sequence[str], second: Sequence[str]) -> Predicate:
    """Concurrent changes of one aspect with no conflict rule: whichever a replica applies last wins."""

    def predicate(history: History, trace_id: str) -> list[str]:
        found = []
        for a in history.of_trace(trace_id, first):
            for b in history.of_trace(trace_id, second):
                if a.id != b.id and concurrent(a, b) and not (a.action == b.action == "update"):
                    found.append(f"{a.action} {a.id} || {b.action} {b.id}")
        return found

    return predicate


def clamped_vote(history: History, trace_id: str) -> list[str]:
    """A ±2 vote (a toggle flip) counts 2 on its author and 1 everywhere else (cortex.md §9.7, copied)."""
    return [e.id for e in history.of_trace(trace_id, ["vote"]) if abs(e.payload.get("delta", 0)) == 2]


def hard_purged_parent(history: History, trace_id: str) -> list[str]:
    """`purge_hard` of a parent deletes its children's lineage rows, but only where the parent's row
    exists, and a child's later snapshot (or a create that arrives after it) inserts them again."""
    parents = {p for e in history.of_trace(trace_id, EDITS) for p in e.payload.get("derived_from") or []}
    return sorted(p for p in parents if history.of_trace(p, ["purge_hard"]))


def clock_ahead_of_delivery(history: History, trace_id: str) -> list[str]:
    """An edit whose clock dominates an edit its author had not received: replay merges every event's clock,
    and delivery is not causal (cursors skip, relays reorder), so a clock can claim events that never
    arrived. The superseded edit then looks stale rather than concurrent, and no replica records a
    divergence for it."""
    edits = history.of_trace(trace_id, EDITS)
    found = []
    for w in edits:
        author = history.snaps.get(w.origin)
        if author is None:
            continue
        for u in edits:
            if before(u, w) and author.arrival.get(u.id, len(author.arrival)) > author.arrival[w.id]:
                found.append(f"{w.origin}: {w.id} claims {u.id}")
    return found


def soft_purged(history: History, trace_id: str) -> list[str]:
    """`purge_long_term` keeps the title in the author's FTS row and blanks it in every peer's (cortex.md
    §3.4, §6.2; copied)."""
    return [e.id for e in history.of_trace(trace_id, ["purge_long_term"])]


# Cases noema's protocol cannot converge (docs/replay.md, "Convergence"): excluded for good. Each names the
# aspect it excludes: "trace" (files, row, tags, lineage, FTS) or one column or side table.
PROTOCOL_LIMITS: dict[str, tuple[Predicate, tuple[str, ...]]] = {
    "colliding creates": (colliding_creates, ("trace", "divergence")),
    "unresolved conflict": (unresolved_conflict, ("trace",)),
    "concurrent tag changes": (concurrent_changes(TAGGING, ["tag_update"]), ("trace",)),
    "concurrent tier changes": (concurrent_changes(TIERING, TIERING), ("trace",)),
    "concurrent visibility changes": (concurrent_changes(VISIBILITY, VISIBILITY), ("trace",)),
    "concurrent removal": (concurrent_changes(REMOVALS, CHANGES), ("trace",)),
    "concurrent edit and promotion": (concurrent_changes(["update"], ["promote"]), ("trace",)),
    "clock ahead of delivery": (clock_ahead_of_delivery, ("divergence",)),
    "clamped vote": (clamped_vote, ("tier_votes",)),
    "hard-purged parent": (hard_purged_parent, ("lineage",)),
    "soft-purged title": (soft_purged, ("fts",)),
}


def late(late_actions: Sequence[str], after_actions: Sequence[str]) -> Predicate:
    """Causal order broken on arrival: some replica stored an event of `late_actions` after an event of
    `after_actions` that happened after it."""

    def predicate(history: History, trace_id: str) -> list[str]:
        return history.late(trace_id, late_actions, after_actions)

    return predicate


def edits_out_of_id_order(history: History, trace_id: str) -> list[str]:
    """Edits whose id order is not their causal order (a skewed clock): comparing with the last edit *by id*
    missed concurrent edits and let stale ones through."""
    edits = history.of_trace(trace_id, EDITS)
    return [f"{a.id} before {b.id}" for a in edits for b in edits if before(a, b) and a.id > b.id]


def change_after_soft_purge(history: History, trace_id: str) -> list[str]:
    """An edit, tag, tier or visibility change that reaches a soft-purged tombstone after the purge."""
    return history.arrived_after(
        trace_id, ["update", "tag_update", *TIERING, *VISIBILITY], ["purge_long_term"]
    )


def either(*predicates: Predicate) -> Predicate:
    def predicate(history: History, trace_id: str) -> list[str]:
        return [found for p in predicates for found in p(history, trace_id)]

    return predicate


# Arrival orders that replay's rules (docs/replay.md, "Convergence") exist for. Before issue 12 each of these
# ended with replicas that disagree; now they are part of the property: counted (`--hypothesis-show-statistics`
# lists them as "exercised: ..."), never excluded. Each has a plain example at the end of this file.
OUT_OF_ORDER: dict[str, Predicate] = {
    "stale edit": late(["update"], EDITS),
    "edits out of id order": edits_out_of_id_order,
    "create after its update": late(["create"], ["update"]),
    "removal before create": late(EDITS, REMOVALS),
    "vote before create": late(["create"], ["vote"]),
    "visibility before create": late(["create"], VISIBILITY),
    "stale tags": either(late(["tag_update"], TAGGING), late(["update"], ["tag_update"])),
    "stale tier": late(TIERING, TIERING),
    "stale visibility": late(VISIBILITY, VISIBILITY),
    "stale removal": late(REMOVALS, (*EDITS, *CHANGES)),
    "tier change before create": late(["create"], TIERING),
    "tags before create": late(["create"], ["tag_update"]),
    "change to a soft-purged trace": change_after_soft_purge,
}


@dataclass
class Report:
    violations: list[str] = field(default_factory=list)
    excluded: set[str] = field(default_factory=set)
    exercised: set[str] = field(default_factory=set)


def check(snaps: dict[str, Snapshot]) -> Report:
    """The convergence property over settled replicas; the named cases are excluded, everything else must agree."""
    report = Report()
    history = History.of(snaps)
    names = sorted(snaps)
    lost = check_events(history, report)
    if not lost:
        clocks = {name: snaps[name].clock for name in names}
        if len(set(clocks.values())) != 1:
            report.violations.append(f"vector clocks differ: {clocks}")
    for trace_id in history.by_trace:
        report.exercised.update(
            name for name, predicate in OUT_OF_ORDER.items() if predicate(history, trace_id)
        )
    skips: dict[str, set[str]] = {}
    for trace_id in sorted({t for s in snaps.values() for t in (*s.rows, *s.files)}):
        skip = skips[trace_id] = set()
        for name, (predicate, aspects) in PROTOCOL_LIMITS.items():
            if predicate(history, trace_id):
                report.excluded.add(name)
                skip.update(aspects)
        if is_divergence_record(snaps, trace_id):
            continue
        if trace_id in lost:
            report.excluded.add("lost event")
            continue
        if "trace" not in skip:
            compare_trace(snaps, trace_id, skip, history, report)
    check_divergences(history, lost, skips, report)
    for snap in snaps.values():
        check_local_consistency(snap, history, skips, report)
    return report


def check_events(history: History, report: Report) -> set[str]:
    """Identical logs, byte for byte; returns the traces of events that cannot arrive: lost to cursor
    skipping (cortex.md §9.2) or stuck behind a cursor pinned for good."""
    lost: set[str] = set()
    for snap in history.snaps.values():
        for source, (event_id, _, error) in snap.pins.items():
            report.violations.append(f"{snap.name}: replay from {source} fails at {event_id}: {error}")
    for event_id, event in sorted(history.events.items()):
        holders = [s for s in history.snaps.values() if event_id in s.events]
        values = {s.events[event_id] for s in holders}
        if len(values) != 1:
            report.violations.append(f"event {event_id} differs between replicas: {sorted(map(str, values))}")
        missing = [s for s in history.snaps.values() if event_id not in s.events]
        for snap in missing:
            # Every holder already served this peer past the event's id (cursor skipping), or is pinned
            # before it (the pin is judged above).
            cursors = {h.name: snap.cursors.get(h.name, "") for h in holders}
            pinned = {h.name for h in holders if h.name in snap.pins and snap.pins[h.name][0] <= event_id}
            if all(cursor >= event_id or name in pinned for name, cursor in cursors.items()):
                report.excluded.add(
                    "cursor skipped an event" if not pinned else "stuck behind a pinned cursor"
                )
                lost.add(event.trace_id)
            else:
                report.violations.append(
                    f"event {event_id} ({event.action}) never reached {snap.name}: {cursors}"
                )
    return lost


def is_divergence_record(snaps: dict[str, Snapshot], trace_id: str) -> bool:
    """A divergence trace: each replica keeps its recorder's local copy (same-day records of one conflict
    share an id), so only its existence everywhere is part of the property (check_divergences)."""
    for snap in snaps.values():
        row = snap.rows.get(trace_id)
        if row is not None and row["type"] == "divergence":
            return True
        if any("\ntype: divergence\n" in text for _, text in snap.files.get(trace_id, [])):
            return True
    return False


def compare_trace(
    snaps: dict[str, Snapshot], trace_id: str, skip: set[str], history: History, report: Report
) -> None:
    def aspect(snap: Snapshot) -> dict[str, Any]:
        row = snap.rows.get(trace_id)
        if row is not None:
            row = {k: v for k, v in row.items() if k not in LOCAL_COLUMNS and k not in skip}
        return {
            "row": row,
            "tags": snap.tags.get(trace_id, []),
            "lineage": snap.lineage.get(trace_id, []),
            "fts": snap.fts.get(trace_id, []),
            "files": snap.files.get(trace_id, []),
        }

    states = {name: {k: v for k, v in aspect(snap).items() if k not in skip} for name, snap in snaps.items()}
    first = next(iter(states.values()))
    for key in first:
        values = {name: s[key] for name, s in states.items()}
        if any(v != first[key] for v in values.values()):
            lines = [f"trace {trace_id}: {key} differs"]
            lines += [f"  {name}: {value!r}" for name, value in values.items()]
            lines.append(describe(history, trace_id))
            report.violations.append("\n".join(lines))


def describe(history: History, trace_id: str) -> str:
    lines = ["  history (id order):"]
    for e in history.by_trace.get(trace_id, []):
        lines.append(f"    {e.id} {e.action} by {e.origin} clock={vclock.encode(e.clock)} {short(e.payload)}")
    for snap in history.snaps.values():
        order = sorted(
            (snap.arrival[e.id], e.id) for e in history.by_trace.get(trace_id, []) if e.id in snap.arrival
        )
        lines.append(f"  arrival on {snap.name}: {[event_id for _, event_id in order]}")
    return "\n".join(lines)


def short(payload: dict[str, Any]) -> str:
    keep = {k: v for k, v in payload.items() if k in ("title", "tags", "body", "to", "delta", "distilled_id")}
    return repr(keep) if keep else ""


TRACE_LINE = re.compile(r"\*\*Trace:\*\* (\S+)")
VERSION = re.compile(
    r"### Version from [^\n]*\n\*\*Vector clock:\*\* ([^\n]*)\n\n(.*?)(?=\n\n### Version from |\Z)", re.S
)


def check_divergences(history: History, lost: set[str], skips: dict[str, set[str]], report: Report) -> None:
    """Every pair of concurrent edits is recorded as a divergence on at least one replica, and every
    replica holds that record."""
    records: dict[str, list[tuple[str, set[tuple[str, str]]]]] = {}  # original -> [(record id, versions)]
    for snap in history.snaps.values():
        for record_id, original in divergence_originals(snap).items():
            for _, body, _ in snap.fts[record_id]:
                versions = {(clock, text.rstrip("\n")) for clock, text in VERSION.findall(body)}
                records.setdefault(original, []).append((record_id, versions))
    for trace_id, events in history.by_trace.items():
        if trace_id in lost or "divergence" in skips.get(trace_id, ()):
            continue
        if any(e.action in REMOVALS for e in events):
            # A replica records a divergence only if it still holds the row when the second edit arrives.
            continue
        edits = [e for e in events if e.action == "update"]
        for i, a in enumerate(edits):
            for b in edits[i + 1 :]:
                if not concurrent(a, b):
                    continue
                wanted = {
                    (vclock.encode(e.clock), str(e.payload.get("body", "")).rstrip("\n")) for e in (a, b)
                }
                covering = [rid for rid, versions in records.get(trace_id, []) if versions & wanted]
                if not covering:
                    report.violations.append(
                        f"concurrent edits {a.id} and {b.id} of {trace_id} are recorded nowhere\n"
                        + describe(history, trace_id)
                    )
                    continue
                everywhere = [rid for rid in covering if all(rid in s.rows for s in history.snaps.values())]
                if not everywhere:
                    report.violations.append(
                        f"the divergence records {covering} of {trace_id} are not on every replica"
                    )


def divergence_originals(snap: Snapshot) -> dict[str, str]:
    """Divergence record id -> the trace it records, from the record's FTS body."""
    out = {}
    for record_id, row in snap.rows.items():
        if row["type"] == "divergence":
            for _, body, _ in snap.fts.get(record_id, []):
                match = TRACE_LINE.search(body)
                if match:
                    out[record_id] = match.group(1)
    return out


def check_local_consistency(
    snap: Snapshot, history: History, skips: dict[str, set[str]], report: Report
) -> None:
    """One file per trace, in the folder its row names (a soft-purged tombstone keeps at most a trash file);
    no file without a row: the files a crashed page wrote go back before the next page (FileUndo)."""
    for trace_id, row in snap.rows.items():
        if "local" in skips[trace_id]:
            continue
        folders = [folder for folder, _ in snap.files.get(trace_id, [])]
        if row["purged_at"] is not None:
            expected_ok = folders in ([], [traces.TRASH])
        else:
            expected = (
                traces.TRASH if row["trashed_at"] else traces.ARCHIVE if row["archived_at"] else traces.ACTIVE
            )
            expected_ok = folders == [expected]
        if not expected_ok:
            report.violations.append(
                f"{snap.name}: trace {trace_id} has files in {folders}, row {row}\n"
                + describe(history, trace_id)
            )
    for trace_id, found in snap.files.items():
        if trace_id in snap.rows:
            continue
        report.violations.append(f"{snap.name}: file without a row: {trace_id} in {[f for f, _ in found]}")


# ----------------------------------------------------------------------------------------------------------
# The test


def _settings() -> settings:
    """CI budget by default; `--hypothesis-profile=deep` (tests/conftest.py) runs the profile's numbers."""
    common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much]}
    if settings.get_current_profile_name() == "deep":
        return settings(settings.get_profile("deep"), **common)
    return settings(max_examples=100, stateful_step_count=40, **common)


# pytest runs the machine through its TestCase, so `--hypothesis-show-statistics` lists how often each named
# case and crash occurred. The machine restores `emit.new_ulid` in its cleanup.
TestReplicasConverge = ConvergenceMachine.TestCase
TestReplicasConverge.settings = _settings()


@contextmanager
def example(monkeypatch: pytest.MonkeyPatch) -> Iterator[ConvergenceMachine]:
    """A run written out step by step (a shrunk example), then settled and checked."""
    monkeypatch.setattr(emit, "new_ulid", emit.new_ulid)
    state = ConvergenceMachine()
    try:
        yield state
        state.finish()
    finally:
        state.cleanup()


def divergence_records(state: ConvergenceMachine) -> list[list[str]]:
    return [
        [row[0] for row in r.conn.execute("SELECT id FROM traces WHERE type = 'divergence' ORDER BY id")]
        for r in state.replicas
    ]


def test_a_concurrent_edit_is_recorded_and_the_record_reaches_every_replica(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with example(monkeypatch) as state:
        state.init(n=3, skews=[0] * MAX_REPLICAS)
        state.sync(pulls=[(0, 0, 50)])  # r0 -> r1: r1 now holds r0's trace
        state.concurrent_update(r1=0, r2=0, pick=0)  # r0 and r1 edit it, neither seeing the other's edit
        state.settle()
        records = divergence_records(state)
        assert records[0]
        assert records[0] == records[1] == records[2]


def test_an_edit_made_on_a_clock_ahead_of_delivery_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """r0 gets r2's create, then (through r1, whose cursor passed r2's edit) r2's next event but not the
    edit: r0's clock claims the edit, so r0's own edit dominates it. No replica records a divergence; with
    a stale-is-stored-only rule r2's edit is gone everywhere, although r0 never saw it."""
    with example(monkeypatch) as state:
        state.init(n=3, skews=[0] * MAX_REPLICAS)
        state.sync(pulls=[(2, 0, 50)])  # r2 -> r0
        state.update(r=2, pick=0, tags=None, retitle=False)
        state.create(r=1, tags=[], parent=None)
        state.sync(pulls=[(1, 1, 50)])  # r1 -> r0: r0's cursor on r1 passes r2's edit
        state.create(r=2, tags=[], parent=None)
        state.sync(pulls=[(2, 1, 50), (1, 1, 50)])  # r2 -> r1, r1 -> r0 (r2's create, not its edit)
        state.update(r=0, pick=2, tags=None, retitle=False)  # r0 edits r2's trace
        state.settle()
        assert divergence_records(state) == [[], [], []]
        # Decided (docs/compatibility.md, "a clock ahead of delivery"): hidden, not lost. r2's edit is in every
        # log, so an operator can bring it back, and its text is in no file.
        (hidden,) = [
            row
            for row in state.replicas[2].conn.execute("SELECT id, data FROM events WHERE action = 'update'")
            if "edit" in row[1] and "by r2" in row[1]
        ]
        for replica in state.replicas:
            assert replica.conn.execute("SELECT 1 FROM events WHERE id = ?", (hidden[0],)).fetchone()
            texts = [
                path.read_text() for folder in traces.FOLDERS for path in (replica.path / folder).iterdir()
            ]
            assert not [text for text in texts if "by r2" in text and "edit" in text]
    assert "clock ahead of delivery" in state.report.excluded


def test_a_purge_concurrent_with_a_promotion_to_long_is_stored_and_nothing_is_pinned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """r0 trashes and purges its trace while r1 promotes it to long. Go and Rust abort the purge on r1's
    trigger and pin r1's cursors on r0 and r2 before it for good (this example named that case until issue
    12 decided it, docs/compatibility.md). Now r1 stores the purge and keeps the long trace: no cursor is
    pinned, every event reaches every replica, and only the trace is a protocol limit (concurrent removal)."""
    with example(monkeypatch) as state:
        state.init(n=3, skews=[0] * MAX_REPLICAS)
        state.sync(pulls=[(0, 0, 50)])  # r0 -> r1
        state.move(r=0, pick=0, action="trash")
        state.purge(r=0, pick=0)
        state.tier(r=1, pick=0, change=("promote", "short", "mid"))  # r0's trace
        state.tier(r=1, pick=0, change=("promote", "mid", "long"))
    assert "concurrent removal" in state.report.excluded
    assert state.replicas[1].pins == {}
    assert "cursor skipped an event" not in state.report.excluded


@pytest.mark.parametrize("crash_at", range(1, 23, 2))
@pytest.mark.parametrize("page", [1, 3, 50])
def test_a_page_abandoned_mid_way_then_resumed_converges(
    monkeypatch: pytest.MonkeyPatch, page: int, crash_at: int
) -> None:
    with example(monkeypatch) as state:
        state.init(n=3, skews=[0] * MAX_REPLICAS)
        state.sync(pulls=[(1, 1, 50), (0, 1, 50)])  # r1 -> r0, then r0 -> r2
        state.update(r=0, pick=0, tags=["alpha"], retitle=True)
        state.tag(r=0, pick=1, tags=["beta", "gamma"])
        state.move(r=0, pick=0, action="archive")
        state.tier(r=0, pick=0, change=("promote", "short", "mid"))
        state.move(r=0, pick=1, action="trash")
        state.purge(r=0, pick=0)
        state.concurrent_update(r1=0, r2=1, pick=0)  # r0 and r2 edit r0's trace: r2 records a divergence
        state.sync_and_crash(src=0, dst=1, page=page, crash_at=crash_at)  # r0 -> r2, killed mid-way
        assert state.replicas[2].ever_crashed


def test_a_divergence_written_by_a_crashed_page_leaves_no_file_when_the_retry_records_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shrunk by hypothesis. r2's pull from r0 is killed after it wrote a divergence record's file; before it
    pulls from r0 again, other events (r1's purge among them) reach it, so the retry records no divergence.
    The record's file stayed in traces/ without a row until files a crashed page wrote were put back
    (FileUndo) before the next page."""
    with example(monkeypatch) as state:
        state.init(n=3, skews=[0] * MAX_REPLICAS)
        state.create_same_title(r1=0, r2=0)
        state.create_same_title(r1=0, r2=0)
        state.sync_and_crash(src=0, dst=0, page=50, crash_at=8)
        state.create_same_title(r1=0, r2=0)
        state.create_same_title(r1=0, r2=1)
        state.sync_and_crash(src=1, dst=0, page=50, crash_at=20)
        state.concurrent_update(r1=1, r2=0, pick=3)
        state.move(r=1, pick=3, action="trash")
        state.sync_and_crash(src=1, dst=0, page=50, crash_at=1)
        state.create_same_title(r1=0, r2=0)
        state.create_same_title(r1=0, r2=0)
        state.purge(r=1, pick=0)
        state.sync_and_crash(src=0, dst=1, page=50, crash_at=13)  # r0 -> r2, killed after the record's file
        assert state.replicas[2].ever_crashed


# ----------------------------------------------------------------------------------------------------------
# Examples of the OUT_OF_ORDER cases (issue 12): before its rule landed each ended with replicas that disagree
# (a strict xfail); now each converges, and asserts the case occurred.


def test_an_edit_that_arrives_after_the_edit_that_supersedes_it_is_not_applied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """r0 edits its trace twice (u1, u2). r2's cursor on r1 is past u1 when r1 gets both, so r2 receives u2
    from r1 and only then u1 from r0: u1 (dominated by u2) was applied again, and r2 ended with u1."""
    with example(monkeypatch) as state:
        state.init(n=3, skews=[0] * MAX_REPLICAS)
        state.sync(pulls=[(0, 0, 50), (0, 1, 50)])  # r0 -> r1, r0 -> r2
        state.update(r=0, pick=0, tags=None, retitle=False)  # u1
        state.create(r=1, tags=[], parent=None)  # an id after u1 in r1's log
        state.sync(pulls=[(1, 0, 50)])  # r1 -> r2: r2's cursor on r1 passes u1's id
        state.update(r=0, pick=0, tags=None, retitle=False)  # u2
        state.sync(pulls=[(0, 0, 50), (1, 0, 50), (0, 1, 50)])  # r0 -> r1, r1 -> r2 (u2), r0 -> r2 (u1)
    assert "stale edit" in state.report.exercised


def test_a_create_that_arrives_after_its_update_keeps_the_trace_s_identity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shrunk by hypothesis. r1's cursor on r0 passes r2's create (r0 does not hold it yet); r0 then relays
    r2's create and update, and r1 gets only the update from r0: the row is made from it (`created` was the
    update's time), and the create that arrived next from r2 was stored only; now it dates the row."""
    with example(monkeypatch) as state:
        state.init(n=3, skews=[0] * MAX_REPLICAS)
        state.update(r=0, pick=0, tags=None, retitle=False)
        state.sync(pulls=[(0, 0, 50)])  # r0 -> r1
        state.update(r=2, pick=0, tags=None, retitle=False)
    assert "create after its update" in state.report.exercised


def test_a_create_that_arrives_after_the_hard_purge_does_not_bring_the_trace_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shape of the example above, with r2 hard-purging its trace: r1 stores the purge (no row yet),
    then the create arrived from r2 and made the trace again, on r1 only; now the row folds the purge in."""
    with example(monkeypatch) as state:
        state.init(n=3, skews=[0] * MAX_REPLICAS)
        state.update(r=0, pick=0, tags=None, retitle=False)
        state.sync(pulls=[(0, 0, 50)])  # r0 -> r1
        state.purge_hard(r=2, pick=0)
    assert "removal before create" in state.report.exercised


def test_a_vote_that_arrives_before_its_create_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrunk by hypothesis; the same shape: r1 stores r2's vote before the trace exists (store only), and
    the create did not fold it in (it folded tier and tag events only), so r1's tier_votes stayed 0."""
    with example(monkeypatch) as state:
        state.init(n=3, skews=[0] * MAX_REPLICAS)
        state.consolidate(r=0, pick=0, sources=1)
        state.sync(pulls=[(0, 0, 50)])  # r0 -> r1
        state.vote(r=2, pick=0, delta=1)
    assert "vote before create" in state.report.exercised


def test_a_trash_that_arrives_before_its_create_is_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrunk by hypothesis; the same shape: r1 stores r2's trash before the trace exists, and the create
    did not fold it in, so the trace was active on r1 and trashed elsewhere."""
    with example(monkeypatch) as state:
        state.init(n=3, skews=[0] * MAX_REPLICAS)
        state.consolidate(r=0, pick=0, sources=1)
        state.sync(pulls=[(0, 0, 50)])  # r0 -> r1
        state.move(r=2, pick=0, action="trash")
    assert "visibility before create" in state.report.exercised


def test_an_archive_that_arrives_after_the_unarchive_is_not_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shape of the stale edit example with a move: r2 gets r0's unarchive (from r1) before its archive
    (from r0), stored the unarchive (the trace is active) and applied the archive: archived on r2 only."""
    with example(monkeypatch) as state:
        state.init(n=3, skews=[0] * MAX_REPLICAS)
        state.sync(pulls=[(0, 0, 50), (0, 1, 50)])  # r0 -> r1, r0 -> r2
        state.move(r=0, pick=0, action="archive")
        state.create(r=1, tags=[], parent=None)
        state.sync(pulls=[(1, 0, 50)])  # r1 -> r2
        state.move(r=0, pick=0, action="unarchive")
        state.sync(pulls=[(0, 0, 50), (1, 0, 50), (0, 1, 50)])  # r0 -> r1, r1 -> r2, r0 -> r2
    assert "stale visibility" in state.report.exercised


def test_a_tier_change_that_arrives_after_a_later_one_is_not_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrunk by hypothesis. r0's clock runs 40 s ahead: r1's promote, made after r0's promote and demote,
    has the smaller id, so r2 received it first and ended at `short`; everyone else at `mid`."""
    with example(monkeypatch) as state:
        state.init(n=3, skews=[40, 0, 0, 0, 0])
        state.next_day()
        state.tier(r=0, pick=0, change=("promote", "short", "mid"))
        state.tier(r=0, pick=0, change=("demote", "mid", "short"))
        state.sync_and_crash(src=0, dst=0, page=50, crash_at=1)
        state.sync(pulls=[(0, 0, 50)])  # r0 -> r1
        state.tier(r=1, pick=0, change=("promote", "short", "mid"))
    assert "stale tier" in state.report.exercised


def test_a_hard_purge_that_arrives_after_an_edit_that_claims_it_still_removes_the_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """r2 hard-purges its trace. r0's cursor on r1 passes the purge before r1 holds it, then r0 gets r2's
    next event from r1: r0's clock now claims the purge, and r0's edit of the trace dominates it. r1 and r2
    turned that edit into a new row (no row), and r0 deleted its row when the purge arrived. A removal is
    applied whenever it finds the row, and a row made later folds it in again: the trace is gone everywhere."""
    with example(monkeypatch) as state:
        state.init(n=3, skews=[0] * MAX_REPLICAS)
        state.sync(pulls=[(2, 0, 50)])  # r2 -> r0
        state.purge_hard(r=2, pick=0)
        state.create(r=1, tags=[], parent=None)
        state.sync(pulls=[(1, 1, 50)])  # r1 -> r0: r0's cursor on r1 passes the purge's id
        state.create(r=2, tags=[], parent=None)
        state.sync(pulls=[(2, 1, 50), (1, 1, 50)])  # r2 -> r1, r1 -> r0 (r2's create, not the purge)
        state.update(r=0, pick=2, tags=None, retitle=False)  # r0 edits r2's trace
    assert "stale removal" in state.report.exercised


def test_an_edit_that_arrives_after_a_later_tag_change_keeps_the_new_tags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shrunk by hypothesis. r2 gets r1's tag change before r1's earlier edit, whose snapshot then puts the
    old tags back: r2 ended without the tag."""
    with example(monkeypatch) as state:
        state.init(n=3, skews=[0] * MAX_REPLICAS)
        state.update(r=1, pick=0, tags=None, retitle=False)
        state.create_same_title(r1=0, r2=0)
        state.sync_and_crash(src=1, dst=0, page=1, crash_at=5)  # r1 -> r2, killed mid-way
        state.sync(pulls=[(0, 1, 50)])  # r0 -> r2
        state.tag(r=1, pick=0, tags=["alpha"])
    assert "stale tags" in state.report.exercised


def test_a_promote_with_an_id_below_its_create_is_folded_into_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """r1's clock runs a day behind: its promote of r0's trace has a smaller id than the create, so r1 serves
    it first. r2 stores it (no row yet), and the create folded only tier events with a *larger* id."""
    with example(monkeypatch) as state:
        state.init(n=3, skews=[0, -86400, 0, 0, 0])
        state.sync(pulls=[(0, 0, 50)])  # r0 -> r1
        state.tier(r=1, pick=1, change=("promote", "short", "mid"))  # r0's trace (r1's own sorts first)
        state.sync(pulls=[(1, 0, 50)])  # r1 -> r2
    assert "tier change before create" in state.report.exercised


def test_a_tag_change_with_an_id_below_its_create_is_folded_into_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example above with a tag change: folded only when its id was larger than the create's."""
    with example(monkeypatch) as state:
        state.init(n=3, skews=[0, -86400, 0, 0, 0])
        state.sync(pulls=[(0, 0, 50)])  # r0 -> r1
        state.tag(r=1, pick=1, tags=["alpha"])
        state.sync(pulls=[(1, 0, 50)])  # r1 -> r2
    assert "tags before create" in state.report.exercised


def test_concurrent_edits_with_ids_below_the_create_are_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    """r0 and r2 run 40 s behind r1 and edit r1's trace concurrently; both edits have smaller ids than the
    create. Each compares the other's edit with the last create/update *by id*, the create, which both
    dominate: each applies the other's edit, no replica records a divergence, and r0 and r2 swap contents."""
    with example(monkeypatch) as state:
        state.init(n=3, skews=[-40, 0, -40, 0, 0])
        state.sync(pulls=[(1, 1, 50), (1, 0, 50)])  # r1 -> r0, r1 -> r2
        state.concurrent_update(r1=0, r2=1, pick=1)  # r0 and r2 edit r1's trace
    assert "edits out of id order" in state.report.exercised


def test_a_promote_that_arrives_after_the_soft_purge_does_not_rewrite_the_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shrunk by hypothesis. r1 promotes r0's trace to long and soft-purges it; r2 gets the purge first
    (applied: the tier is not checked), then the promotes, which rebuilt the file from the DB and wrote it
    again: a `traces/` file with the body `[purged: test]`, on r2 only."""
    with example(monkeypatch) as state:
        state.init(n=3, skews=[0] * MAX_REPLICAS)
        state.sync(pulls=[(0, 0, 50)])  # r0 -> r1
        state.tier(r=1, pick=0, change=("promote", "short", "mid"))
        state.tier(r=1, pick=0, change=("promote", "mid", "long"))
        state.create_same_title(r1=0, r2=0)
        state.sync(pulls=[(0, 1, 50)])  # r0 -> r2
        state.purge_long_term(r=1, pick=0)
    assert "change to a soft-purged trace" in state.report.exercised


# ----------------------------------------------------------------------------------------------------------
# Drift guards for the named cases


def test_every_out_of_order_case_has_an_example() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    missing = [name for name in OUT_OF_ORDER if f'assert "{name}" in state.report.exercised' not in source]
    assert not missing, f"write an example that shows each case converges: {missing}"


def test_every_protocol_limit_is_explained_in_docs() -> None:
    section = (REPO / "docs" / "replay.md").read_text().split("## Convergence", 1)[1]
    missing = [name for name in PROTOCOL_LIMITS if f"**{name}**" not in section]
    assert not missing, f"explain in docs/replay.md (Convergence): {missing}"
