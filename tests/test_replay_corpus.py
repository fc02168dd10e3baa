"""Every corpus stream replayed into a fresh replica reaches the model's end state: once, twice, in pages,
and after a crash at any step followed by a resume from the cursor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from replay_helpers import (
    REPLICA_ID,
    REPLICA_NAME,
    REPLICA_NOW,
    end_state,
    load_stream,
    make_replica,
    replay_deliveries,
    stream_names,
)
from replay_model import expected_state

STREAMS = stream_names()


def test_corpus_is_present() -> None:
    # One stream per action family plus the mixed ones; an empty glob must not pass silently.
    assert len(STREAMS) >= 10


@pytest.mark.parametrize("name", STREAMS)
def test_expected_state_matches_the_model(name: str) -> None:
    """The committed expectation is what the independent model computes from the committed pages."""
    deliveries, expected = load_stream(name)
    computed = expected_state(deliveries, REPLICA_ID, REPLICA_NAME, REPLICA_NOW)
    assert json.loads(json.dumps(computed)) == expected


@pytest.mark.parametrize("name", STREAMS)
def test_replay_reaches_expected_state(tmp_path: Path, name: str) -> None:
    deliveries, expected = load_stream(name)
    replica = make_replica(tmp_path)
    replay_deliveries(replica, deliveries)
    assert end_state(replica) == expected


@pytest.mark.parametrize("name", STREAMS)
def test_replaying_twice_equals_once(tmp_path: Path, name: str) -> None:
    deliveries, expected = load_stream(name)
    replica = make_replica(tmp_path)
    replay_deliveries(replica, deliveries)
    # A peer serving everything again (cursor reset): every event is a benign repeat.
    for peer, _ in deliveries:
        import sqlite3

        conn = sqlite3.connect(replica / "db" / "noema.db", isolation_level=None)
        conn.execute("DELETE FROM federation_state WHERE key = ?", (f"peer:{peer}:last_event",))
        conn.close()
    replay_deliveries(replica, deliveries)
    assert end_state(replica) == expected


@pytest.mark.parametrize("name", STREAMS)
def test_replay_in_pages_equals_one_by_one(tmp_path: Path, name: str) -> None:
    deliveries, expected = load_stream(name)
    replica = make_replica(tmp_path)
    replay_deliveries(replica, deliveries, page_size=4)
    assert end_state(replica) == expected


class Crash(BaseException):
    """A simulated kill: BaseException, so no `except Exception` in replay can absorb it."""


_STEP_COUNTS: dict[tuple[str, int], int] = {}


def step_count(tmp: Path, name: str, page_size: int) -> int:
    """How many hook steps a clean replay of the stream takes (cached per stream and page size)."""
    key = (name, page_size)
    if key not in _STEP_COUNTS:
        deliveries, _ = load_stream(name)
        steps: list[str] = []
        replay_deliveries(make_replica(tmp), deliveries, page_size=page_size, hook=steps.append)
        _STEP_COUNTS[key] = len(steps)
    return _STEP_COUNTS[key]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name=st.sampled_from(STREAMS), page_size=st.sampled_from([0, 3, 50]), data=st.data())
def test_crash_at_any_step_then_resume(
    tmp_path_factory: pytest.TempPathFactory, name: str, page_size: int, data: st.DataObject
) -> None:
    deliveries, expected = load_stream(name)
    total = step_count(tmp_path_factory.mktemp("count"), name, page_size)
    crash_at = data.draw(st.integers(min_value=1, max_value=total), label="crash_at")
    replica = make_replica(tmp_path_factory.mktemp("crash"))
    steps = 0
    crashed = ""

    def hook(step: str) -> None:
        nonlocal steps, crashed
        steps += 1
        if steps == crash_at:
            crashed = step
            raise Crash(step)

    with pytest.raises(Crash):
        replay_deliveries(replica, deliveries, page_size=page_size, hook=hook)
    assert crashed
    # Restart: a new process opens the cortex and polls again from each peer's cursor.
    replay_deliveries(replica, deliveries, page_size=page_size)
    assert end_state(replica) == expected


def test_every_step_kind_is_a_crash_point(tmp_path: Path) -> None:
    """The hook sees DB, file, per-event, pre-commit and post-commit boundaries, so crashes land everywhere."""
    deliveries, _ = load_stream("two_cortexes")
    steps: list[str] = []
    replay_deliveries(make_replica(tmp_path), deliveries, page_size=3, hook=steps.append)
    assert set(steps) == {"db", "file", "event", "commit", "committed"}
