"""`kill -9` at seeded random points of a real `sync --once`, then a rerun: it must equal a clean sync byte for byte.

Each trial starts `python -m noemafed ... sync --once` against a real peer serving a few hundred events, kills it
with SIGKILL after a random delay somewhere in a clean run's duration (before the connection, in the handshake,
mid-batch, between a file write and its commit, during usage or health), checks what the kill left (the database
intact, the cursor never ahead of the stored events), reruns the sync to completion and compares the result with a
clean sync of the same source: the events table row for row, the trace files, the trace tables, the state that
must match.

NOEMAFED_CRASH_TRIALS sets the number of trials (default 8, so scripts/test.sh stays fast; the issue asks for at
least 50) and NOEMAFED_CRASH_SEED the seed (default 11); trial N uses the seed `<seed>-<N>`, so a failing trial can
be rerun alone: `NOEMAFED_CRASH_SEED=11 pytest tests/test_crash_trials.py -k 'trial-17'`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from conftest import REPO, db, make_cortex, state_rows
from peers.stdlib_peer import StdlibPeer
from sync_helpers import check_db, comparable_trace_files, events, seed, target_with

TRIALS = int(os.environ.get("NOEMAFED_CRASH_TRIALS", "8"))
SEED = os.environ.get("NOEMAFED_CRASH_SEED", "11")
FLAVORS = ("go", "rust")
PEER = "big"
# State written with this host's clock; everything else in federation_state must equal the clean sync's.
CLOCK_STAMPED_KEYS = {f"peer:{PEER}:last_seen", f"peer:{PEER}:health"}
# noemafed's record of how the runs went (a killed run records nothing, a clean one its own count and times).
RUN_RECORD_KEYS = {f"noemafed:run:{PEER}", "noemafed:last_sync"}
# Columns replay stamps with local time, as Go does (the `updated:` line of a file, likewise).
CLOCK_STAMPED_COLUMNS = {"traces": ("updated_at",)}
TABLES = {
    "traces": "id",
    "trace_tags": "trace_id, tag",
    "trace_lineage": "trace_id, derived_from",
    "traces_fts": "id",
    "trace_usage": "trace_id, peer_cortex_id",
}


def noemafed(*args: str) -> subprocess.Popen[str]:
    """The real program in its own process, as cron starts it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "noemafed", *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def run_to_completion(target: Path) -> None:
    proc = noemafed("--cortex", str(target), "sync", "--once")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err


def tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The trace tables, sorted, without the columns stamped with local time."""
    conn = db(path)
    dump = {}
    for table, order in TABLES.items():
        cursor = conn.execute(f"SELECT * FROM {table} ORDER BY {order}")
        names = [column[0] for column in cursor.description]
        skip = {names.index(column) for column in CLOCK_STAMPED_COLUMNS.get(table, ())}
        dump[table] = [tuple(v for i, v in enumerate(row) if i not in skip) for row in cursor.fetchall()]
    conn.close()
    return dump


def comparable_state(path: Path) -> dict[str, Any]:
    rows = state_rows(path)
    skipped = CLOCK_STAMPED_KEYS | RUN_RECORD_KEYS
    state: dict[str, Any] = {key: value for key, value in rows.items() if key not in skipped}
    health = json.loads(rows[f"peer:{PEER}:health"])
    state["health"] = (health.get("version"), health.get("consecutive_failures", 0), health.get("last_error"))
    return state


class Snapshot(NamedTuple):
    """Everything a rerun after a crash must reproduce exactly."""

    events: list[tuple[Any, ...]]
    files: dict[str, str]
    tables: dict[str, list[tuple[Any, ...]]]
    state: dict[str, Any]

    @classmethod
    def of(cls, path: Path) -> Snapshot:
        return cls(events(path), comparable_trace_files(path), tables(path), comparable_state(path))


class Ring(NamedTuple):
    """The peers (one per flavour) serving the same source, their clean syncs, and a clean run's duration."""

    source: Path
    peers: dict[str, StdlibPeer]
    clean: dict[str, Snapshot]
    seconds: float
    root: Path


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ring]:
    root = tmp_path_factory.mktemp("crash")
    src = make_cortex(root, "source")
    seed(
        src, 620
    )  # about 1,050 events: two pages (the second fetched during the first's replay), five batches
    peers = {flavor: StdlibPeer(src, flavor=flavor).start() for flavor in FLAVORS}
    try:
        clean, durations = {}, []
        for flavor, peer in peers.items():
            target = target_with(root, [{"name": PEER, "endpoint": peer.endpoint}], name=f"clean-{flavor}")
            started = time.monotonic()
            run_to_completion(target)
            durations.append(time.monotonic() - started)
            check_db(target)
            clean[flavor] = Snapshot.of(target)
        assert clean["go"].events == events(src)
        yield Ring(src, peers, clean, max(durations), root)
    finally:
        for peer in peers.values():
            peer.stop()


def committed(target: Path) -> int:
    """Events a running sync has committed so far (WAL: a reader never blocks it)."""
    conn = db(target)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        conn.close()


def assert_consistent_after_kill(target: Path) -> None:
    """What a kill may leave: an intact database whose cursor is the last stored event (or no cursor at all)."""
    check_db(target)
    cursor = state_rows(target).get(f"peer:{PEER}:last_event", "")
    stored = [row[0] for row in events(target)]
    assert cursor == (stored[-1] if stored else ""), (
        "the cursor must never run ahead of (or behind) what committed"
    )


@pytest.mark.slow
@pytest.mark.parametrize("trial", [pytest.param(n, id=f"trial-{n}") for n in range(TRIALS)])
def test_kill_9_at_a_random_point_then_rerun_equals_a_clean_sync(ring: Ring, trial: int) -> None:
    """`sync --once` of about 1,050 events (two pages, from a Go- or Rust-flavoured peer) is killed with SIGKILL
    at a seeded random moment: after a random delay within 90 % of a clean run's duration, or (trial 0 and
    about a third of the others) as soon as a random number of events has committed, which lands in a later
    batch. Then it is run again to completion. Expected: right after the kill the database passes integrity_check and the cursor
    is the last stored event; after the rerun (exit 0) the events table, the trace files (but their `updated:`
    line), the trace tables and federation_state equal a clean sync's, with no temp file left."""
    rng = random.Random(f"{SEED}-{trial}")
    flavor = rng.choice(FLAVORS)
    delay = rng.uniform(0.0, 0.9 * ring.seconds)  # a run that ends before its kill tests nothing
    after_commit = trial == 0 or rng.random() < 1 / 3
    threshold = rng.randrange(1, len(ring.clean[flavor].events))
    endpoint = ring.peers[flavor].endpoint
    target = target_with(ring.root, [{"name": PEER, "endpoint": endpoint}], name=f"killed-{trial}")
    proc = noemafed("--cortex", str(target), "sync", "--once")
    started = time.monotonic()
    if after_commit:
        while proc.poll() is None and committed(target) < threshold and time.monotonic() - started < 60:
            time.sleep(0.005)
    else:
        time.sleep(delay)
    finished_first = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    when = f"once {threshold} events committed" if after_commit else f"after {delay:.3f}s"
    stored, files = len(events(target)), len(comparable_trace_files(target))
    where = f"trial {trial} ({flavor}, killed {when}: {stored} events stored, {files} files, seed {SEED})"
    assert_consistent_after_kill(target)
    run_to_completion(target)
    check_db(target)
    after = Snapshot.of(target)
    clean = ring.clean[flavor]
    assert after.events == clean.events, where
    assert after.files == clean.files, where
    assert after.tables == clean.tables, where
    assert after.state == clean.state, where
    assert not list(target.rglob("*.tmp")), where
    # Not an assertion: which stage the kill hit, for the report (-rA shows it).
    print(f"{where}{'; the run had already ended' if finished_first else ''}")
