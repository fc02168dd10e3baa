"""The two cursors a poll moves (events, usage), checked through `sync --once` against real peers on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import db, run_cli
from peers import payloads
from peers.stdlib_peer import StdlibPeer
from sync_helpers import check_db, events, seed, source, state_value, target_with

from noemafed.cortex.manifest import read_manifest
from noemafed.federation import syncer


def sync_json(target: Path) -> tuple[int, dict]:
    result = run_cli(["--cortex", str(target), "sync", "--once", "--json"])
    return result.exit_code, json.loads(result.stdout)


def served_page(src: Path, ids: list[str]) -> str:
    """The sync_events text a Go peer would send for exactly these events of `src`, in this order."""
    by_id = {event.id: event.text for event in payloads.db_events(src, "", 1000, payloads.go_json)}
    return payloads.array_text([by_id[event_id] for event_id in ids], "null")


def test_a_page_that_repeats_the_cursors_id_is_refused(tmp_path: Path) -> None:
    """Bug c: a sync_events page that repeats the cursor's id accepted (`<` for `<=`, or the page checked only
    within itself). A peer that serves `id >= since` would replay the cursor's event on every poll; Rust's
    client refuses it, and so do we, before anything of the page is stored."""
    src = source(tmp_path, count=2)
    with StdlibPeer(src, flavor="go") as peer:
        target = target_with(tmp_path, [{"name": "p", "endpoint": peer.endpoint}])
        assert sync_json(target)[0] == 0
        cursor = state_value(target, "peer:p:last_event")
        before = events(target)
        seed(src, 2, prefix="later")
        newer = [row[0] for row in events(src) if row[0] > cursor]
        assert newer
        peer.knobs.page_override = lambda since, limit: served_page(src, [since, *newer][:limit])
        code, doc = sync_json(target)
    [report] = doc["peers"]
    assert (code, report["reason"], report["phase"]) == (3, "other", "events")
    assert report["error"] == syncer.EVENTS_NOT_ADVANCING_ERROR.format(event_id=cursor, previous=cursor)
    assert report["events_applied"] == 0
    assert state_value(target, "peer:p:last_event") == cursor
    assert events(target) == before
    check_db(target)


def test_a_page_that_repeats_an_id_within_itself_is_refused(tmp_path: Path) -> None:
    """Bug c, inside one page: [e1, e2, e2, e3] is refused at the second e2, and nothing of it is stored."""
    src = source(tmp_path, count=2)
    ids = [row[0] for row in events(src)]
    page = served_page(src, [ids[0], ids[1], ids[1], *ids[2:]])
    with StdlibPeer(src, flavor="go", page_override=page) as peer:
        target = target_with(tmp_path, [{"name": "p", "endpoint": peer.endpoint}])
        code, doc = sync_json(target)
    [report] = doc["peers"]
    assert (code, report["phase"]) == (3, "events")
    assert report["error"] == syncer.EVENTS_NOT_ADVANCING_ERROR.format(event_id=ids[1], previous=ids[1])
    assert state_value(target, "peer:p:last_event") == ""
    assert events(target) == []


@pytest.mark.parametrize("flavor", ["go", "rust"])
def test_the_usage_cursor_is_the_last_rows_updated_at(tmp_path: Path, flavor: str) -> None:
    """Bug d: the usage cursor taken from the first row instead of the last. Rows come in updated_at order; the
    cursor must be the newest, so the next poll asks only for what changed after it."""
    src = source(tmp_path, count=3)
    src_id = read_manifest(src).id
    conn = db(src)
    trace_ids = [row[0] for row in conn.execute("SELECT id FROM traces ORDER BY id").fetchall()]
    stamps = ["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z"]
    for n, (trace_id, stamp) in enumerate(zip(trace_ids, stamps, strict=True), 1):
        conn.execute(
            "INSERT INTO trace_usage(trace_id, peer_cortex_id, read_count, modify_count, last_read_at, "
            "updated_at, search_hit_count) VALUES (?, ?, ?, 0, ?, ?, 0)",
            (trace_id, src_id, n, stamp, stamp),
        )
    conn.close()
    with StdlibPeer(src, flavor=flavor) as peer:  # type: ignore[arg-type]
        target = target_with(tmp_path, [{"name": "a", "endpoint": peer.endpoint}])
        code, doc = sync_json(target)
        assert (code, doc["peers"][0]["usage_rows"]) == (0, 3)
        assert state_value(target, "peer:a:last_usage") == stamps[-1]
        peer.clear_requests()
        code, doc = sync_json(target)
        asked = [r.rpc["params"]["arguments"] for r in peer.requests if r.tool == "sync_read_signal"]
    assert (code, doc["peers"][0]["usage_rows"]) == (0, 0)
    assert asked == [{"limit": syncer.USAGE_LIMIT, "since": stamps[-1]}]
    conn = db(target)
    usage = conn.execute("SELECT trace_id, read_count FROM trace_usage ORDER BY trace_id").fetchall()
    conn.close()
    assert usage == [(trace_id, n) for n, trace_id in enumerate(trace_ids, 1)]
