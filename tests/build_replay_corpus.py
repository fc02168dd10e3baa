"""Build tests/data/replay/: realistic event streams made with authoring.py, and expected states from the model.

Run by hand after a deliberate change of semantics: `.venv/bin/python tests/build_replay_corpus.py`.
Each stream is a folder of pages (`NN-<peer>.json`, the exact text a peer serves, replayed in name order)
and `expected.json`, computed by tests/replay_model.py (which does not import replay.py). Source cortexes
sync with each other through the real Replayer, as two noema nodes would; the replica under test never
appears here.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import authoring
from replay_helpers import (
    CORPUS,
    REPLICA_ID,
    REPLICA_NAME,
    REPLICA_NOW,
    all_events,
    apply_one,
    set_manifest_id,
)
from replay_model import expected_state
from ulid import ULID

from noemafed.cortex import traces
from noemafed.cortex.events import Event, page_json
from noemafed.cortex.open import Cortex, init_cortex, open_cortex
from noemafed.federation.replay import Replayer
from noemafed.logs import SILENT
from noemafed.text.gotext import go_json_dumps

A_ID = "01JQ7X2B9C4D5E6F7G8H9JKMNP"
B_ID = "01JQ9A3C5E7G9J1K3M5N7P9R2T"


class Clock:
    """Deterministic event timestamps: one minute apart from a fixed start."""

    def __init__(self, day: str = "2025-04-01") -> None:
        self.day = day
        self.minute = 0

    def __call__(self) -> str:
        self.minute += 1
        return f"{self.day}T{self.minute // 60:02d}:{self.minute % 60:02d}:00Z"


def source(root: Path, name: str, cortex_id: str) -> Cortex:
    path = root / name
    init_cortex(path, name)
    set_manifest_id(path, cortex_id)
    return open_cortex(path)


def sync(target: Cortex, origin: Cortex, peer: str, now: str) -> None:
    """One poll of `origin` by `target`: every event after the cursor, as the syncer does."""
    cursor = target.conn.execute(
        "SELECT value FROM federation_state WHERE key = ?", (f"peer:{peer}:last_event",)
    ).fetchone()
    events = [e for e in all_events(origin.conn) if cursor is None or e.id > cursor[0]]
    replayer = Replayer(target, log=SILENT, now=lambda: now)
    for event in events:
        apply_one(replayer, event, cursor_peer=peer)


def page(cortex: Cortex, after: str = "") -> str:
    return page_json(e for e in all_events(cortex.conn) if e.id > after)


Builder = Callable[[Path], list[tuple[str, str]]]
STREAMS: dict[str, Builder] = {}


def stream(fn: Builder) -> Builder:
    STREAMS[fn.__name__] = fn
    return fn


BODY = "We index traces in SQLite (WAL mode) because it is embedded & needs no server.\n"


def one(root: Path) -> tuple[Cortex, Clock, str]:
    a = source(root, "research", A_ID)
    t = Clock()
    trace_id, _ = authoring.create_trace(
        a, "Why we chose SQLite", "decision", BODY, ["architecture", "storage"], "agent-1", now=t()
    )
    return a, t, trace_id


@stream
def create(root: Path) -> list[tuple[str, str]]:
    a = source(root, "research", A_ID)
    t = Clock()
    parent, _ = authoring.create_trace(a, "Parent note", "note", "p\n", now=t())
    # Go's HTML escapes (<, >, &), non-ASCII, U+2028/2029, duplicate tags, lineage, a locked source.
    authoring.create_trace(
        a,
        "Angle <brackets> & ampersands",
        "fact",
        'Größe <b>&amp;</b> \u2028line\u2029para — ✓\n\tTabbed "quoted" \\ backslash',
        ["x", "y", "x"],
        "agent <1>",
        [parent, "20200101-never-seen-here"],
        source_hash="sha256:00ff",
        source_locked=True,
        now=t(),
    )
    authoring.create_trace(a, "Empty body", "context", "", now=t())
    return [("research", page(a))]


@stream
def update(root: Path) -> list[tuple[str, str]]:
    a, t, tid = one(root)
    authoring.update_trace(
        a,
        tid,
        body=BODY + "\nRevisited: still right for the index & event log.\n",
        tags=["storage", "db"],
        now=t(),
    )
    authoring.update_trace(a, tid, title="Why SQLite", type="fact", author="agent-2", now=t())
    return [("research", page(a))]


@stream
def tag_update(root: Path) -> list[tuple[str, str]]:
    a, t, tid = one(root)
    authoring.set_tags(a, tid, ["search", "index", "search"], now=t())
    authoring.set_tags(a, tid, [], now=t())
    return [("research", page(a))]


@stream
def visibility(root: Path) -> list[tuple[str, str]]:
    a, t, tid = one(root)
    other, _ = authoring.create_trace(a, "Other", "note", "o\n", now=t())
    authoring.archive(a, tid, now=t())
    authoring.unarchive(a, tid, now=t())
    authoring.archive(a, tid, now=t())
    authoring.trash(a, tid, now=t())  # trash from the archive clears archived_at
    authoring.recover(a, tid, now=t())
    authoring.trash(a, other, now=t())
    return [("research", page(a))]


@stream
def purge(root: Path) -> list[tuple[str, str]]:
    a, t, tid = one(root)
    keep, _ = authoring.create_trace(a, "Keep me", "note", "k\n", derived_from=[tid], now=t())
    authoring.trash(a, tid, now=t())
    authoring.purge(a, tid, now=t())
    authoring.update_trace(a, keep, body="still here\n", now=t())
    return [("research", page(a))]


@stream
def tiers(root: Path) -> list[tuple[str, str]]:
    a, t, tid = one(root)
    authoring.promote(a, tid, "mid", now=t())
    authoring.demote(a, tid, "short", now=t())
    authoring.promote(a, tid, "mid", now=t())
    authoring.vote(a, tid, 2, now=t())
    authoring.vote(a, tid, -1, "human", now=t())
    return [("research", page(a))]


@stream
def consolidation(root: Path) -> list[tuple[str, str]]:
    a, t, s1 = one(root)
    s2, _ = authoring.create_trace(a, "Second source", "observation", "two\n", now=t())
    authoring.coordination(a, "consolidation_claim", "window-2025-04-01", now=t())
    distilled, _ = authoring.create_trace(a, "Distilled", "fact", "both\n", derived_from=[s1, s2], now=t())
    authoring.consolidate(a, distilled, [s1, s2], model_name="small-1", now=t())
    authoring.coordination(a, "consolidation_success", "window-2025-04-01", now=t())
    authoring.coordination(a, "consolidation_fail", "window-2025-04-02", reason="llm_error", now=t())
    authoring.telemetry(a, "consolidate_fallback", s1, {"reason": "llm_error"}, now=t())
    authoring.telemetry(a, "divergence_long_term", s2, {"note": "telemetry"}, now=t())
    return [("research", page(a))]


@stream
def long_term(root: Path) -> list[tuple[str, str]]:
    a = source(root, "research", A_ID)
    b = source(root, "laptop", B_ID)
    t = Clock()
    tid, _ = authoring.create_trace(a, "Core principle", "decision", "v1\n", ["core"], now=t())
    soft, _ = authoring.create_trace(a, "Old principle", "decision", "old\n", ["old"], now=t())
    hard, _ = authoring.create_trace(a, "Hard purge me", "fact", "h\n", now=t())
    child, _ = authoring.create_trace(a, "Child", "note", "c\n", derived_from=[hard], now=t())
    authoring.promote(a, tid, "mid", now=t())
    sync(b, a, "research", REPLICA_NOW)
    authoring.update_trace(b, tid, body="v2 from laptop\n", now=t())  # causally before the promote to long
    authoring.promote(a, tid, "long", now=t())
    authoring.update_trace(
        b, tid, body="v3 from laptop\n", now=t()
    )  # after the promote: long content is immutable
    authoring.promote(a, soft, "mid", now=t())
    authoring.promote(a, soft, "long", now=t())
    authoring.purge_long_term(a, soft, "superseded", now=t())
    authoring.purge_hard(a, hard, "wrong data", now=t())
    authoring.set_tags(a, child, ["orphaned"], now=t())
    return [("research", page(a)), ("laptop", page(b))]


@stream
def two_cortexes(root: Path) -> list[tuple[str, str]]:
    a = source(root, "research", A_ID)
    b = source(root, "laptop", B_ID)
    t = Clock()
    t1, _ = authoring.create_trace(a, "Shared plan", "intent", "plan v1\n", ["plan"], now=t())
    t2, _ = authoring.create_trace(a, "Scratch", "note", "scratch\n", now=t())
    sync(b, a, "research", REPLICA_NOW)
    authoring.update_trace(b, t1, body="plan v2 (laptop)\n", now=t())
    authoring.archive(b, t2, now=t())
    authoring.vote(b, t1, 1, now=t())
    t3, _ = authoring.create_trace(b, "Laptop idea", "observation", "idea\n", ["idea"], now=t())
    sync(a, b, "laptop", REPLICA_NOW)
    authoring.trash(a, t2, now=t())
    authoring.promote(a, t1, "mid", now=t())
    authoring.set_tags(a, t3, ["idea", "reviewed"], now=t())
    sync(b, a, "research", REPLICA_NOW)
    authoring.purge(b, t2, now=t())
    authoring.update_trace(b, t3, body="idea, refined\n", now=t())
    sync(a, b, "laptop", REPLICA_NOW)
    return [("research", page(a)), ("laptop", page(b))]


@stream
def conflict(root: Path) -> list[tuple[str, str]]:
    a = source(root, "research", A_ID)
    b = source(root, "laptop", B_ID)
    t = Clock()
    tid, _ = authoring.create_trace(a, "Contested", "decision", "base\n", now=t())
    sync(b, a, "research", "2025-05-01T00:00:00Z")
    authoring.update_trace(a, tid, body="research says <A>\n", now=t())
    authoring.update_trace(b, tid, body="laptop says B", now=t())
    # Both sides see the concurrent edit on the same day: both create `20250501-divergence-...`.
    sync(a, b, "laptop", "2025-05-01T00:00:00Z")
    sync(b, a, "research", "2025-05-01T00:00:00Z")
    # A second round: another pair of concurrent edits.
    authoring.update_trace(a, tid, body="research again\n", now=t())
    authoring.update_trace(b, tid, body="laptop again\n", now=t())
    return [("research", page(a)), ("laptop", page(b))]


@stream
def out_of_order(root: Path) -> list[tuple[str, str]]:
    a = source(root, "research", A_ID)
    b = source(root, "laptop", B_ID)
    t = Clock()
    tid, create_event = authoring.create_trace(a, "Late create", "fact", "late\n", ["first"], now=t())
    sync(b, a, "research", REPLICA_NOW)
    authoring.promote(b, tid, "mid", now=t())
    authoring.set_tags(b, tid, ["retagged"], now=t())
    # The replica's cursor for laptop is already past the create (cortex.md §9.2): tier and tag events
    # arrive before the create they belong to.
    return [("laptop", page(b, after=create_event.id)), ("research", page(a))]


# ---------------------------------------------------------------------------------------------------------
# Issue 12: the same events in different arrival orders. Each delivery is a page from its own "relay" (its
# own cursor), so a stream can hand the replica any order; the model computes each end state on its own.


def relayed(events: list[Event]) -> list[tuple[str, str]]:
    """One page per event, each from its own relay: the replica receives them in exactly this order."""
    return [(f"relay{n}", page_json([event])) for n, event in enumerate(events, 1)]


def twin_of(event: Event, body: str, twin_id: str) -> Event:
    """Another update with the same clock and a different body (no noema build makes one; a peer could)."""
    payload = json.loads(event.data)
    payload.update(body=body, content_hash=traces.content_hash(body))
    return replace(event, id=twin_id, data=go_json_dumps(payload))


def _update_events(root: Path) -> dict[str, Event]:
    a = source(root, "research", A_ID)
    b = source(root, "laptop", B_ID)
    t = Clock()
    tid, created = authoring.create_trace(a, "Ordered", "fact", "v0\n", ["t"], now=t())
    sync(b, a, "research", REPLICA_NOW)
    u1 = authoring.update_trace(a, tid, body="v1\n", now=t())
    u2 = authoring.update_trace(a, tid, body="v2\n", tags=["t", "newer"], now=t())
    concurrent = authoring.update_trace(b, tid, body="laptop's v1\n", now=t())
    twin = twin_of(u2, "v2, twin\n", _next_id(u2.id))
    return {"create": created, "u1": u1, "u2": u2, "twin": twin, "concurrent": concurrent}


def _next_id(event_id: str) -> str:
    """The ULID one after `event_id` (same millisecond): an id that sorts right after it."""
    return str(ULID.from_int(int(ULID.from_str(event_id)) + 1))


def _ordered(names: tuple[str, ...]) -> Builder:
    def builder(root: Path) -> list[tuple[str, str]]:
        events = _update_events(root)
        return relayed([events["create"], *(events[name] for name in names)])

    return builder


# Stale, equal and concurrent updates in every arrival order: u1 < u2 by clock, `twin` has u2's clock,
# `concurrent` is laptop's edit that saw neither.
for _order in itertools.permutations(("u1", "u2", "twin")):
    STREAMS["updates_" + "_".join(_order)] = _ordered(_order)
for _order in itertools.permutations(("u1", "concurrent")):
    STREAMS["updates_" + "_".join(_order)] = _ordered(_order)


@stream
def before_create(root: Path) -> list[tuple[str, str]]:
    """Laptop's vote, tags, promote and trash of research's trace arrive before the create."""
    a = source(root, "research", A_ID)
    b = source(root, "laptop", B_ID)
    t = Clock()
    tid, _ = authoring.create_trace(a, "Arrives late", "fact", "late\n", ["first"], now=t())
    sync(b, a, "research", REPLICA_NOW)
    later = [
        authoring.vote(b, tid, 1, now=t()),
        authoring.set_tags(b, tid, ["retagged"], now=t()),
        authoring.promote(b, tid, "mid", now=t()),
        authoring.trash(b, tid, now=t()),
    ]
    return [*relayed(later), ("research", page(a))]


@stream
def removal_before_create(root: Path) -> list[tuple[str, str]]:
    """A hard purge, then the create and an older edit: the trace must not come back."""
    a = source(root, "research", A_ID)
    t = Clock()
    tid, created = authoring.create_trace(a, "Purged early", "note", "x\n", now=t())
    edit = authoring.update_trace(a, tid, body="edited\n", now=t())
    gone = authoring.purge_hard(a, tid, "wrong", now=t())
    return relayed([gone, created, edit])


@stream
def create_after_update(root: Path) -> list[tuple[str, str]]:
    """Laptop's edit reaches the replica before research's create: the create still dates the row."""
    a = source(root, "research", A_ID)
    b = source(root, "laptop", B_ID)
    t = Clock()
    tid, _ = authoring.create_trace(a, "Edited first", "decision", "v0\n", now=t())
    authoring.promote(a, tid, "mid", now=t())
    sync(b, a, "research", REPLICA_NOW)
    edit = authoring.update_trace(b, tid, body="laptop's edit\n", now=t())
    return [*relayed([edit]), ("research", page(a))]


@stream
def stale_changes(root: Path) -> list[tuple[str, str]]:
    """Tag, tier and visibility changes of one trace, each pair delivered newest first."""
    a = source(root, "research", A_ID)
    t = Clock()
    tid, created = authoring.create_trace(a, "Changed often", "note", "n\n", ["a"], now=t())
    tags1 = authoring.set_tags(a, tid, ["b"], now=t())
    tags2 = authoring.set_tags(a, tid, ["c"], now=t())
    up = authoring.promote(a, tid, "mid", now=t())
    down = authoring.demote(a, tid, "short", now=t())
    distilled = authoring.consolidate(a, tid, [], model_name="m", now=t())
    archived = authoring.archive(a, tid, now=t())
    back = authoring.unarchive(a, tid, now=t())
    edit = authoring.update_trace(a, tid, body="edited\n", now=t())
    retag = authoring.set_tags(a, tid, ["d"], now=t())
    # A second trace: trashed, recovered, archived; the archive arrives while the replica still has it trashed.
    other, other_created = authoring.create_trace(a, "Moved often", "note", "m\n", now=t())
    trashed = authoring.trash(a, other, now=t())
    recovered = authoring.recover(a, other, now=t())
    archived_again = authoring.archive(a, other, now=t())
    first = [created, tags2, tags1, distilled, down, up, back, archived, retag, edit]
    return relayed([*first, other_created, trashed, archived_again, recovered])


@stream
def soft_purge_late(root: Path) -> list[tuple[str, str]]:
    """The soft purge arrives first, then the changes made before it: the tombstone gets no file back."""
    a = source(root, "research", A_ID)
    t = Clock()
    tid, created = authoring.create_trace(a, "Soft purged", "decision", "s\n", ["k"], now=t())
    edit = authoring.update_trace(a, tid, title="Soft purged, edited", body="s2\n", now=t())
    tags = authoring.set_tags(a, tid, ["k", "l"], now=t())
    mid = authoring.promote(a, tid, "mid", now=t())
    long = authoring.promote(a, tid, "long", now=t())
    trashed = authoring.trash(a, tid, now=t())
    gone = authoring.purge_long_term(a, tid, "superseded", now=t())
    return relayed([created, gone, trashed, tags, edit, long, mid])


@stream
def invalid_consolidate(root: Path) -> list[tuple[str, str]]:
    """Consolidates whose distilled_id is not a valid id, names a missing trace, or is not a string."""
    a, t, tid = one(root)
    base = authoring.consolidate(a, tid, [], model_name="m", now=t())
    bad = [
        ("NOT A VALID ID", "01M890PG8Z0000000000000001"),
        ("20250401-never-seen-here", "01M890PG8Z0000000000000002"),
        (7, "01M890PG8Z0000000000000003"),
    ]
    crafted = []
    for target, event_id in bad:
        payload = json.loads(base.data) | {"distilled_id": target}
        crafted.append(replace(base, id=event_id, data=go_json_dumps(payload)))
    # The first event creates the trace; the valid consolidate comes last, after the crafted ones.
    first = [e for e in all_events(a.conn) if e.action == "create"]
    return relayed([*first, *crafted[:2], base, crafted[2]])


def build(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or sorted(STREAMS):
            root = Path(tmp) / name
            root.mkdir()
            deliveries = STREAMS[name](root)
            folder = CORPUS / name
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            for index, (peer, text) in enumerate(deliveries, 1):
                (folder / f"{index:02d}-{peer}.json").write_text(text, encoding="utf-8")
            expected = expected_state(deliveries, REPLICA_ID, REPLICA_NAME, REPLICA_NOW)
            (folder / "expected.json").write_text(
                json.dumps(expected, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
            )
            print(f"{name}: {sum(len(_events(text)) for _, text in deliveries)} events")


def _events(text: str) -> list[Event]:
    from noemafed.cortex.events import parse_page

    return parse_page(text)


if __name__ == "__main__":
    build(sys.argv[1:])
