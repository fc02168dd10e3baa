"""`sync --once --dry-run` (issue 14): a real poll whose every change is undone; the cortex stays byte-identical
and the report says what the real run then applies."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
from authoring import archive, purge, trash, update_trace
from conftest import REPO, run_cli, state_rows
from peers.stdlib_peer import StdlibPeer
from sync_helpers import events, seed, source, target_with
from ulid import ULID

from noemafed.cortex.manifest import read_manifest
from noemafed.cortex.open import open_cortex

SYNC_SCHEMA = json.loads((REPO / "docs" / "sync.schema.json").read_text())
WAL_FILES = ("noema.db-wal", "noema.db-shm", "noema.db")


def _cortex_bytes(path: Path) -> dict[str, Any]:
    """Every file under the cortex by relative path, with the database as its sha256 after a checkpoint (its WAL
    and shared-memory files say how SQLite works, not what the cortex holds)."""
    conn = sqlite3.connect(path / "db" / "noema.db")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    files: dict[str, Any] = {
        str(file.relative_to(path)): file.read_bytes()
        for file in sorted(path.rglob("*"))
        if file.is_file() and file.name not in WAL_FILES
    }
    files["db/noema.db sha256"] = hashlib.sha256((path / "db" / "noema.db").read_bytes()).hexdigest()
    return files


def _sync(target: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = run_cli(["--cortex", str(target), "sync", "--once", "--json", *args])
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, SYNC_SCHEMA)
    assert doc["exit_code"] == result.exit_code, result.stderr
    return result.exit_code, doc


def _edit(path: Path, trace_id: str, body: str) -> None:
    cortex = open_cortex(path)
    try:
        update_trace(cortex, trace_id, body=body)
    finally:
        cortex.close()


def _move_and_remove(path: Path, keep: str) -> None:
    """Archive one active trace and trash then purge another: file renames and removals to replay."""
    cortex = open_cortex(path)
    try:
        active = [
            row[0]
            for row in cortex.conn.execute(
                "SELECT id FROM traces WHERE archived_at IS NULL AND trashed_at IS NULL AND tier != 'long' "
                "AND id != ? ORDER BY id",
                (keep,),
            )
        ]
        archive(cortex, active[0])
        trash(cortex, active[1])
        purge(cortex, active[1])
    finally:
        cortex.close()


def _new_remote_events(target: Path, before: list[Any]) -> Counter[str]:
    """Events the real run stored that came from elsewhere (not replay's own divergence records), by action."""
    own = read_manifest(target).id
    known = {row[0] for row in before}
    return Counter(row[1] for row in events(target) if row[0] not in known and row[3] != own)


def _diverged(target: Path) -> list[str]:
    conn = sqlite3.connect(target / "db" / "noema.db")
    rows = conn.execute(
        "SELECT l.derived_from FROM traces t JOIN trace_lineage l ON l.trace_id = t.id "
        "WHERE t.type = 'divergence' ORDER BY l.derived_from"
    ).fetchall()
    conn.close()
    return [row[0] for row in rows]


def test_a_dry_run_changes_no_byte_and_reports_what_the_real_run_applies(tmp_path: Path) -> None:
    src = source(tmp_path, count=6)
    with StdlibPeer(src) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        assert _sync(target)[0] == 0
        # Then both sides edit the same trace (a divergence to come), and the source adds and changes more.
        shared = events(src)[0][2]
        _edit(src, shared, "the source's version")
        _edit(target, shared, "the target's version")
        _move_and_remove(src, keep=shared)  # traces the target holds too
        seed(src, 4, prefix="more")
        # A killed writer's temp file: a real run removes it, a dry run deletes nothing.
        (target / "traces" / ".noemafed-trace-0123456789abcdef-0.tmp").write_text("half a file")
        before, cursor = _cortex_bytes(target), state_rows(target)["peer:src:last_event"]
        old_events = events(target)

        code, dry = _sync(target, "--dry-run")
        assert _cortex_bytes(target) == before
        assert code == 0
        assert dry["dry_run"] is True
        [would] = dry["peers"]
        assert would["status"] == "ok"
        assert would["cursor_before"] == cursor
        assert would["would"]["diverging_traces"] == [shared]
        assert would["would"]["effects"]["diverged"] == 1
        assert would["would"]["trace_files"] > 0
        assert {"archive", "trash", "purge"} <= set(would["would"]["actions"])

        code, real = _sync(target)
        assert code == 0
        [done] = real["peers"]
        assert real["dry_run"] is False
        assert done["would"] is None
    assert dict(_new_remote_events(target, old_events)) == would["would"]["actions"]
    assert _diverged(target) == would["would"]["diverging_traces"]
    for key in ("status", "events_applied", "cursor_before", "cursor_after", "caught_up", "pages"):
        assert done[key] == would[key], key


def test_a_dry_run_predicts_a_failure_and_records_nothing(tmp_path: Path) -> None:
    src = source(tmp_path, count=2)
    bad = {
        "id": str(ULID()),
        "action": "teleport",
        "trace_id": events(src)[0][2],
        "cortex_id": read_manifest(src).id,
        "origin": "source",
        "timestamp": "2026-04-20T12:00:00Z",
        "data": {},
    }
    time.sleep(0.01)
    seed(src, 2, prefix="later")
    with StdlibPeer(src, extra_events=[bad]) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        # A first real run leaves its state: health, a poison record, the lock file.
        assert _sync(target)[0] == 4
        seed(src, 1, prefix="after")
        before = _cortex_bytes(target)
        result = run_cli(["--cortex", str(target), "sync", "--once", "--dry-run"])
        assert _cortex_bytes(target) == before
        assert result.exit_code == 4
        assert result.stdout == (
            "Dry run: nothing was written; a run now would do this:\n"
            f"src: would fail (unknown_action, event {bad['id']}) after applying 0 events (none): "
            f'replay event {bad["id"]}: unknown action "teleport" in event {bad["id"]}\n'
        )
        code, dry = _sync(target, "--dry-run")
        code_real, real = _sync(target)
    assert (code, code_real) == (4, 4)
    for key in ("status", "reason", "event_id", "events_applied", "cursor_after", "error"):
        assert dry["peers"][0][key] == real["peers"][0][key], key


def test_a_dry_run_plans_with_the_backoff_and_ignore_backoff_there_clears_nothing(tmp_path: Path) -> None:
    """A rehearsal defers a peer as the real run would; --ignore-backoff contacts it without clearing the
    streak (a dry run writes nothing); a rehearsal's exit code must never reach a metrics file."""
    import socket

    with socket.socket() as probe:  # a port nothing listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = target_with(tmp_path, [{"name": "dead", "endpoint": f"http://127.0.0.1:{port}"}])
    assert _sync(target)[0] == 3  # the real run records a streak
    streak = state_rows(target)["noemafed:backoff:dead"]
    before = _cortex_bytes(target)
    code, dry = _sync(target, "--dry-run")
    assert (code, dry["peers"], [peer["reason"] for peer in dry["deferred"]]) == (0, [], ["backoff"])
    code, dry = _sync(target, "--dry-run", "--ignore-backoff")
    assert (code, dry["peers"][0]["reason"], dry["deferred"]) == (3, "network_refused", [])
    assert _cortex_bytes(target) == before
    assert state_rows(target)["noemafed:backoff:dead"] == streak
    metrics = tmp_path / "noemafed.prom"
    refused = run_cli(
        ["--cortex", str(target), "sync", "--once", "--dry-run", "--metrics-file", str(metrics)]
    )
    assert (refused.exit_code, metrics.exists()) == (2, False)
    assert "--dry-run and --metrics-file exclude each other" in refused.stderr
