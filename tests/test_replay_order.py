"""The same events of one trace, replayed in every arrival order, end in the same state (issue 12).

Gossip delivers events out of causal order: a relay serves what it holds in id order, a cursor skips what a
relay receives late, and the author's own events then arrive from someone else. Each scenario is a causal
chain of one trace (every event's clock dominates the one before); every permutation is replayed, one event
per page, into a copy of one fresh replica, and must end exactly where delivery in causal order ends: rows,
tags, lineage, FTS, files and the log. The chains mix the authors A and B, so clocks are not one counter.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest
from replay_helpers import apply_one, end_state, make_replica, open_replica
from test_replay import A_ID, B_ID, create_event, event

from noemafed.cortex.events import Event

T = "20250101-a"
_ids = (f"01JQH4HPD0B8E9WCXGFN1A34{chr(c)}{chr(d)}" for c in b"0123456789" for d in b"ABCDEFGHJK")


def chain(*steps: tuple[str, object]) -> list[Event]:
    """A causal chain: a create, then each step by A or B (alternating), each clock dominating the last."""
    clock = {A_ID: 1}
    events = [create_event(T, body="b\n", id=next(_ids), vclock=dict(clock))]
    for n, (action, data) in enumerate(steps):
        author = (A_ID, B_ID)[n % 2]
        clock = {**clock, author: clock.get(author, 0) + 1}
        events.append(
            event(action, T, data, id=next(_ids), vclock=dict(clock), cortex_id=author, timestamp=_time(n))
        )
    return events


def _time(n: int) -> str:
    return f"2025-01-01T00:{n + 1:02d}:00Z"


def snapshot(data: dict[str, object]) -> dict[str, object]:
    return {"title": "A", "type": "note", "origin": "research", "body": "b\n"} | data


SCENARIOS = {
    "tags": chain(
        ("tag_update", {"tags": ["x"]}),
        ("update", snapshot({"tags": ["x", "y"], "body": "edit\n"})),
        ("tag_update", {"tags": ["z"]}),
        ("update", snapshot({"tags": ["z"], "body": "edit 2\n"})),
    ),
    "tiers": chain(
        ("promote", {"from": "short", "to": "mid"}),
        ("demote", {"from": "mid", "to": "short"}),
        ("consolidate", {"distilled_id": T, "source_ids": []}),
        ("promote", {"from": "mid", "to": "long"}),
    ),
    "tiers, consolidate last": chain(
        ("promote", {"from": "short", "to": "mid"}),
        ("demote", {"from": "mid", "to": "short"}),
        ("consolidate", {"distilled_id": T, "source_ids": []}),
        ("vote", {"delta": 1}),
    ),
    "consolidate, then demote": chain(
        ("consolidate", {"distilled_id": T, "source_ids": []}),
        ("demote", {"from": "mid", "to": "short"}),
        ("vote", {"delta": 1}),
        ("tag_update", {"tags": ["x"]}),
    ),
    "visibility": chain(
        ("archive", None),
        ("unarchive", None),
        ("archive", None),
        ("trash", None),
    ),
    "visibility and recover": chain(
        ("trash", None),
        ("recover", None),
        ("archive", None),
        ("vote", {"delta": -1}),
    ),
    "purge": chain(
        ("tag_update", {"tags": ["x"]}),
        ("trash", None),
        ("vote", {"delta": 1}),
        ("purge", None),
    ),
    "hard purge": chain(
        ("update", snapshot({"body": "edit\n"})),
        ("archive", None),
        ("promote", {"from": "short", "to": "mid"}),
        ("purge_hard", {"reason": "x"}),
    ),
    "soft purge": chain(
        ("tag_update", {"tags": ["x"]}),
        ("promote", {"from": "short", "to": "long"}),
        ("trash", None),
        ("purge_long_term", {"reason": "x"}),
    ),
    "soft purge after an edit": chain(
        ("update", snapshot({"title": "Edited", "body": "edit\n", "derived_from": ["20250101-p"]})),
        ("vote", {"delta": 1}),
        ("promote", {"from": "short", "to": "long"}),
        ("purge_long_term", {"reason": "x"}),
    ),
}


# What the causal order itself must give (every order giving the same wrong answer would pass the test alone).
CAUSAL_TIER = {"tiers": "long", "tiers, consolidate last": "mid", "consolidate, then demote": "short"}
CAUSAL_FILES = {
    "visibility": [f"trash/traces/{T}.md"],
    "visibility and recover": [f"archive/traces/{T}.md"],
    "purge": [],
    "hard purge": [],
    "soft purge": [],
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_replica(tmp_path_factory.mktemp("template"))


def replay(template: Path, target: Path, events: list[Event]) -> dict[str, object]:
    shutil.copytree(template, target)
    cortex, replayer = open_replica(target)
    try:
        for one in events:
            apply_one(replayer, one, cursor_peer="p")
    finally:
        cortex.close()
    state = end_state(target)
    state["federation_state"].pop("peer:p:last_event")  # type: ignore[attr-defined]  # the last one delivered
    return state


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_arrival_order_ends_where_causal_order_ends(template: Path, tmp_path: Path, name: str) -> None:
    events = SCENARIOS[name]
    expected = replay(template, tmp_path / "causal", events)
    if name in CAUSAL_TIER:
        assert [row["tier"] for row in expected["traces"]] == [CAUSAL_TIER[name]]  # type: ignore[index]
    if name in CAUSAL_FILES:
        assert sorted(expected["files"]) == CAUSAL_FILES[name]  # type: ignore[arg-type]
    for n, order in enumerate(itertools.permutations(events)):
        got = replay(template, tmp_path / f"p{n}", list(order))
        assert got == expected, f"{name}: order {[e.action for e in order]}"


def test_a_change_concurrent_with_a_soft_purge_writes_no_file_for_the_tombstone(
    template: Path, tmp_path: Path
) -> None:
    """Concurrent changes are a protocol limit (docs/replay.md), but a tombstone never gets a file back."""
    create, promote, purge = chain(
        ("promote", {"from": "short", "to": "long"}), ("purge_long_term", {"reason": "x"})
    )
    clock = {**promote.vclock, A_ID: 9} if promote.vclock else {}  # has seen the promote, not the purge
    late = [
        event("tag_update", T, {"tags": ["late"]}, id=next(_ids), vclock=clock),
        event("archive", T, None, id=next(_ids), vclock={**clock, A_ID: 10}),
        event("demote", T, {"from": "long", "to": "mid"}, id=next(_ids), vclock={**clock, A_ID: 11}),
    ]
    state = replay(template, tmp_path / "r", [create, promote, purge, *late])
    assert state["files"] == {}
    assert state["trace_tags"] == []


def test_a_stale_update_of_a_trace_removed_without_an_event_brings_back_the_newest_content(
    template: Path, tmp_path: Path
) -> None:
    """`noema remove --force` deletes a trace and emits no event (cortex.md §9.10). An older update that
    arrives later makes the row again, from the newest snapshot the log holds, not from its own."""
    create, older, newer = chain(
        ("update", snapshot({"body": "older\n"})), ("update", snapshot({"body": "newer\n"}))
    )
    target = tmp_path / "r"
    shutil.copytree(template, target)
    cortex, replayer = open_replica(target)
    for one in (create, newer):
        apply_one(replayer, one, cursor_peer="p")
    cortex.conn.execute("DELETE FROM traces_fts WHERE id = ?", (T,))
    cortex.conn.execute("DELETE FROM traces WHERE id = ?", (T,))
    (target / "traces" / f"{T}.md").unlink()
    assert apply_one(replayer, older, cursor_peer="q").effect == "created"
    cortex.close()
    state = end_state(target)
    assert state["files"][f"traces/{T}.md"].endswith("\nnewer\n")  # type: ignore[index]
    assert [row["updated_at"] for row in state["traces"]] == [newer.timestamp]  # type: ignore[index]
