"""Local authoring: one event per mutation, Go-shaped payloads, the clock, and files agreeing with rows."""

from __future__ import annotations

import json
from pathlib import Path

import authoring
import pytest
from replay_helpers import end_state, make_replica

from noemafed.cortex import rows, state, traces
from noemafed.cortex.open import Cortex, open_cortex
from noemafed.errors import CommandError, InvalidTraceFrontmatterError

LOCAL_ID = "01JR0000000000000000REP1CA"


@pytest.fixture
def cortex(tmp_path: Path) -> Cortex:
    opened = open_cortex(make_replica(tmp_path))
    yield opened  # type: ignore[misc]
    opened.close()


def test_create_event_shape(cortex: Cortex) -> None:
    tid, event = authoring.create_trace(
        cortex,
        "Why <we> chose & SQLite",
        "decision",
        "body\n",
        ["b", "a", "b"],
        "agent",
        now="2025-03-29T14:23:00Z",
    )
    assert tid == "20250329-why-we-chose-sqlite"
    assert (event.action, event.trace_id, event.cortex_id, event.origin) == (
        "create",
        tid,
        LOCAL_ID,
        "replica",
    )
    assert event.timestamp == "2025-03-29T14:23:00Z"
    assert event.vclock == {LOCAL_ID: 1}
    assert event.data == (
        '{"title":"Why \\u003cwe\\u003e chose \\u0026 SQLite","type":"decision","author":"agent","tags":["b","a"],'
        '"origin":"replica","tier":"short","body":"body\\n","content_hash":"'
        + traces.content_hash("body\n")
        + '"}'
    )
    trace = traces.read(cortex.path / "traces" / f"{tid}.md")
    assert (trace.tags, trace.created, trace.updated, trace.tier) == (
        ("b", "a"),
        event.timestamp,
        event.timestamp,
        "short",
    )


def test_every_mutation_emits_one_event_and_increments_the_clock(cortex: Cortex) -> None:
    tid, _ = authoring.create_trace(cortex, "T", "note", "x")
    other, _ = authoring.create_trace(
        cortex, "T", "note", "y"
    )  # same title, same day: a suffix keeps ids unique
    assert other == tid + "-2"
    steps = [
        lambda: authoring.update_trace(cortex, tid, body="z"),
        lambda: authoring.set_tags(cortex, tid, ["k"]),
        lambda: authoring.promote(cortex, tid, "mid"),
        lambda: authoring.demote(cortex, tid, "short"),
        lambda: authoring.vote(cortex, tid, -2),
        lambda: authoring.archive(cortex, tid),
        lambda: authoring.unarchive(cortex, tid),
        lambda: authoring.trash(cortex, tid),
        lambda: authoring.recover(cortex, tid),
        lambda: authoring.consolidate(cortex, tid, [other]),
        lambda: authoring.trash(cortex, other),
        lambda: authoring.purge(cortex, other),
        lambda: authoring.coordination(cortex, "consolidation_claim", "w1"),
    ]
    ids = []
    for n, step in enumerate(steps, start=3):
        event = step()
        ids.append(event.id)
        assert event.vclock == {LOCAL_ID: n} == state.get_clock(cortex.conn)
    assert ids == sorted(ids)  # monotonic within the process
    actions = [r[0] for r in cortex.conn.execute("SELECT action FROM events ORDER BY id")]
    assert len(actions) == 2 + len(steps)
    assert actions[-3:] == ["trash", "purge", "consolidation_claim"]
    row = rows.get_row(cortex.conn, tid)
    assert row is not None
    assert (row.tier, row.tier_votes) == ("mid", -2)
    assert json.loads(cortex.conn.execute("SELECT data FROM events WHERE action='vote'").fetchone()[0]) == {
        "delta": -2,
        "actor": "agent",
    }


def test_files_agree_with_rows(cortex: Cortex) -> None:
    tid, _ = authoring.create_trace(cortex, "T", "note", "x")
    authoring.archive(cortex, tid)
    assert (cortex.path / "archive/traces" / f"{tid}.md").is_file()
    authoring.trash(cortex, tid)
    row = rows.get_row(cortex.conn, tid)
    assert row is not None
    assert row.archived_at is None
    assert row.trashed_at is not None
    assert [p.parent.parent.name for p in cortex.path.rglob(f"{tid}.md")] == ["trash"]


def test_refusals(cortex: Cortex) -> None:
    with pytest.raises(InvalidTraceFrontmatterError):
        authoring.create_trace(cortex, "T", "reference", "x")
    tid, _ = authoring.create_trace(cortex, "T", "note", "x")
    with pytest.raises(CommandError):
        authoring.unarchive(cortex, tid)
    with pytest.raises(CommandError):
        authoring.purge(cortex, tid)
    authoring.promote(cortex, tid, "long")
    with pytest.raises(CommandError, match="immutable"):
        authoring.update_trace(cortex, tid, body="no")
    before = end_state(cortex.path)
    with pytest.raises(CommandError):
        authoring.vote(cortex, tid, 3)
    assert end_state(cortex.path) == before


def test_purges_of_long_traces(cortex: Cortex) -> None:
    soft, _ = authoring.create_trace(cortex, "Soft", "fact", "s", ["t"])
    hard, _ = authoring.create_trace(cortex, "Hard", "fact", "h")
    child, _ = authoring.create_trace(cortex, "Child", "fact", "c", derived_from=[hard])
    for tid in (soft, hard):
        authoring.promote(cortex, tid, "long")
    authoring.purge_long_term(cortex, soft, "superseded")
    authoring.purge_hard(cortex, hard, "wrong")
    row = rows.get_row(cortex.conn, soft)
    assert row is not None
    assert row.purge_reason == "superseded"
    assert rows.get_row(cortex.conn, hard) is None
    assert cortex.conn.execute("SELECT count(*) FROM trace_lineage").fetchone() == (0,)
    names = {r[0] for r in cortex.conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    assert names == {"trg_long_term_immutable", "trg_long_term_no_delete"}
    assert not list(cortex.path.rglob(f"{soft}.md"))
    assert not list(cortex.path.rglob(f"{hard}.md"))
    assert (cortex.path / "traces" / f"{child}.md").is_file()
