"""Three cortexes in full mesh, each served by `noemafed serve` in its own process, converging by `sync --once`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import authoring
from conftest import REPO, db, make_cortex, run_cli, set_federation
from seed import seed as seed_activity
from sync_helpers import check_db, events, trace_files

from noemafed.cortex.open import open_cortex
from noemafed.cortex.vclock import decode

NAMES = ("alpha", "beta", "gamma")


@contextmanager
def serve_process(cortex: Path) -> Iterator[str]:
    """`noemafed serve --port 0` as a real process; yields its endpoint once it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "noemafed", "--cortex", str(cortex), "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        endpoint = ""
        while time.monotonic() < deadline and not endpoint:
            line = proc.stderr.readline()
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+)/mcp", line)
            if match:
                endpoint = match.group(1)
            elif not line and proc.poll() is not None:
                break
        assert endpoint, "noemafed serve did not start"
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def sync_round(cortexes: dict[str, Path]) -> None:
    for name, path in cortexes.items():
        result = run_cli(["--cortex", str(path), "sync", "--once"])
        assert result.exit_code == 0, f"{name}: {result.stdout}{result.stderr}"


def clock(path: Path) -> dict[str, int]:
    conn = db(path)
    row = conn.execute("SELECT value FROM federation_state WHERE key = 'vclock'").fetchone()
    conn.close()
    return decode(row[0] if row else "")


def divergence_ids(path: Path) -> set[str]:
    conn = db(path)
    rows = {row[0] for row in conn.execute("SELECT id FROM traces WHERE type = 'divergence'")}
    conn.close()
    return rows


def test_full_mesh_converges_with_a_divergence(tmp_path: Path) -> None:
    cortexes = {name: make_cortex(tmp_path, name) for name in NAMES}
    for index, (name, path) in enumerate(cortexes.items()):
        cortex = open_cortex(path)
        try:
            seed_activity(cortex, 6, rng_seed=index, label=name, body_bytes=200)
        finally:
            cortex.close()
    with ExitStack() as stack:
        endpoints = {name: stack.enter_context(serve_process(path)) for name, path in cortexes.items()}
        for name, path in cortexes.items():
            set_federation(
                path, [{"name": peer, "endpoint": endpoints[peer]} for peer in NAMES if peer != name]
            )
        sync_round(cortexes)

        # alpha and beta edit the same trace, each before seeing the other's edit: a concurrent update.
        shared = open_cortex(cortexes["alpha"])
        try:
            trace_id, _ = authoring.create_trace(shared, "Shared plan", "decision", "v1\n", tags=("plan",))
        finally:
            shared.close()
        sync_round(cortexes)
        for name, body in (("alpha", "alpha's v2\n"), ("beta", "beta's v2\n")):
            cortex = open_cortex(cortexes[name])
            try:
                authoring.update_trace(cortex, trace_id, body=body)
            finally:
                cortex.close()
        for _ in range(3):
            sync_round(cortexes)

    logs = {name: events(path) for name, path in cortexes.items()}
    assert logs["alpha"] == logs["beta"] == logs["gamma"]
    actions = [row[1] for row in logs["alpha"]]
    assert actions.count("update") >= 2

    # noema records the conflict on both cortexes that saw the other's edit as concurrent.
    for name in ("alpha", "beta"):
        assert divergence_ids(cortexes[name]), name
    assert (
        divergence_ids(cortexes["alpha"])
        == divergence_ids(cortexes["beta"])
        == divergence_ids(cortexes["gamma"])
    )

    # Until someone resolves it, each side of a conflict keeps its own content, as in noema.
    shared_file = f"traces/{trace_id}.md"
    assert trace_files(cortexes["alpha"])[shared_file].endswith("alpha's v2\n")
    assert trace_files(cortexes["beta"])[shared_file].endswith("beta's v2\n")
    # Every other trace file agrees everywhere; each divergence trace keeps its local author's copy.
    divergent = {f"traces/{trace}.md" for trace in divergence_ids(cortexes["alpha"])} | {shared_file}
    files = {
        name: {k: v for k, v in trace_files(path).items() if k not in divergent}
        for name, path in cortexes.items()
    }
    assert files["alpha"] == files["beta"] == files["gamma"]

    clocks = {name: clock(path) for name, path in cortexes.items()}
    assert clocks["alpha"] == clocks["beta"] == clocks["gamma"]
    assert len(clocks["alpha"]) == 3
    for path in cortexes.values():
        check_db(path)


def edit(path: Path, trace_id: str, **change: object) -> None:
    cortex = open_cortex(path)
    try:
        if "archive" in change:
            authoring.archive(cortex, trace_id)
        elif "tags" in change and len(change) == 1:
            authoring.set_tags(cortex, trace_id, change["tags"])  # type: ignore[arg-type]
        else:
            authoring.update_trace(cortex, trace_id, **change)  # type: ignore[arg-type]
    finally:
        cortex.close()


def pull(cortexes: dict[str, Path], target: str, source: str) -> None:
    result = run_cli(["--cortex", str(cortexes[target]), "sync", "--once", "--peer", source])
    assert result.exit_code == 0, f"{target} <- {source}: {result.stdout}{result.stderr}"


def arrival(path: Path) -> list[str]:
    """Event ids in the order this cortex stored them."""
    conn = db(path)
    ids = [row[0] for row in conn.execute("SELECT id FROM events ORDER BY rowid")]
    conn.close()
    return ids


def trace_rows(path: Path) -> list[tuple[object, ...]]:
    """Every trace row, without the local usage counters (they travel as usage rows, not events)."""
    conn = db(path)
    conn.row_factory = None
    cursor = conn.execute("SELECT * FROM traces ORDER BY id")
    names = [column[0] for column in cursor.description]
    local = {names.index(name) for name in ("read_count", "modify_count", "last_read_at")}
    rows = [tuple(v for i, v in enumerate(row) if i not in local) for row in cursor.fetchall()]
    conn.close()
    return rows


def test_the_same_updates_in_different_orders_end_identical(tmp_path: Path) -> None:
    """alpha edits, retags and archives one trace; gamma's cursor on beta passes alpha's first edit before
    beta holds it, so gamma receives the later edit and the archive (from beta) before the first edit and
    tag change (from alpha). The stale edit and tag change must be stored, not applied: all three end with
    the same files, rows and log (before issue 12 gamma ended with the older tags)."""
    cortexes = {name: make_cortex(tmp_path, name) for name in NAMES}
    cortex = open_cortex(cortexes["alpha"])
    try:
        trace_id, _ = authoring.create_trace(cortex, "Ordered plan", "decision", "v1\n", tags=("plan",))
    finally:
        cortex.close()
    with ExitStack() as stack:
        endpoints = {name: stack.enter_context(serve_process(path)) for name, path in cortexes.items()}
        for name, path in cortexes.items():
            set_federation(
                path, [{"name": peer, "endpoint": endpoints[peer]} for peer in NAMES if peer != name]
            )
        sync_round(cortexes)
        edit(cortexes["alpha"], trace_id, body="v2\n")
        edit(cortexes["alpha"], trace_id, tags=["plan", "old"])
        first = arrival(cortexes["alpha"])[-2:]
        cortex = open_cortex(cortexes["beta"])
        try:
            authoring.create_trace(cortex, "Beta's note", "note", "b\n")  # an id after alpha's two events
        finally:
            cortex.close()
        pull(cortexes, "gamma", "beta")  # gamma's cursor on beta passes alpha's two events
        pull(cortexes, "beta", "alpha")
        edit(cortexes["alpha"], trace_id, body="v3\n", tags=["plan", "new"])
        edit(cortexes["alpha"], trace_id, archive=True)
        later = arrival(cortexes["alpha"])[-2:]
        pull(cortexes, "beta", "alpha")
        pull(cortexes, "gamma", "beta")  # the later edit and the archive, not the first two
        pull(cortexes, "gamma", "alpha")  # now the first two
        for _ in range(2):
            sync_round(cortexes)

    order = {name: arrival(path) for name, path in cortexes.items()}
    assert all(order["gamma"].index(e) > order["gamma"].index(x) for e in first for x in later)
    assert all(order["beta"].index(e) < order["beta"].index(x) for e in first for x in later)
    logs = {name: events(path) for name, path in cortexes.items()}
    assert logs["alpha"] == logs["beta"] == logs["gamma"]
    files = {name: trace_files(path) for name, path in cortexes.items()}
    assert files["alpha"] == files["beta"] == files["gamma"]
    assert files["gamma"][f"archive/traces/{trace_id}.md"].endswith("\nv3\n")
    assert "    - new\n" in files["gamma"][f"archive/traces/{trace_id}.md"]
    rows = {name: trace_rows(path) for name, path in cortexes.items()}
    assert rows["alpha"] == rows["beta"] == rows["gamma"]
    for path in cortexes.values():
        check_db(path)
