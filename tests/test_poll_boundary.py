"""What a poll does with what no step expects: ids it must not store, text it must not print, answers that break
HTTP itself. Real peers on 127.0.0.1; every case checks the exit code, the recorded health and the cursor."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import db, run_cli, state_rows
from peers import hostile_peer
from peers.stdlib_peer import StdlibPeer
from sync_helpers import check_db, events, source, target_with, trace_files
from ulid import ULID

from noemafed.cortex.events import EVENT_COLUMNS, event_from_row, page_json
from noemafed.cortex.traces import content_hash


def _source_page(src: Path) -> list[dict[str, Any]]:
    conn = db(src)
    rows = conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY id").fetchall()
    conn.close()
    return json.loads(page_json(event_from_row(row) for row in rows))


def _serve(page: list[dict[str, Any]]) -> Any:
    """A page_override that serves `page` by cursor, as a peer serves its log."""

    def answer(since: str, limit: int) -> str:
        rest = [event for event in page if event["id"] > since][:limit]
        return json.dumps(rest) if rest else "null"

    return answer


def _sync(target: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    result = run_cli(["--cortex", str(target), "sync", "--once", "--json", *args])
    [peer] = json.loads(result.stdout)["peers"]
    return result.exit_code, peer, result.stderr


def _health(target: Path, peer: str = "src") -> dict[str, Any]:
    return json.loads(state_rows(target)[f"peer:{peer}:health"])


def _future_id(seconds: float) -> str:
    return str(ULID.from_timestamp(time.time() + seconds))


@pytest.mark.parametrize(
    ("bad_id", "problem"),
    [
        (lambda good: good.lower(), "is not a canonical ULID"),
        (lambda good: good[:-1] + "U", "is not a canonical ULID"),  # U is not Crockford base32
        (lambda good: good + "0", "is not a canonical ULID"),
        (lambda good: _future_id(3600), "ahead of this host's clock"),
    ],
)
def test_an_event_id_we_must_not_serve_on_pins_the_cursor_before_it(
    tmp_path: Path, bad_id: Any, problem: str
) -> None:
    """Bug: non-canonical or far-future ids stored and served on poison every peer that pulls from us."""
    src = source(tmp_path, count=4)
    page = _source_page(src)
    good_before = [event["id"] for event in page[:2]]
    page[2]["id"] = bad_id(page[2]["id"])
    if problem.startswith("ahead"):
        page = page[:3]  # a future id sorts after the rest of the log
    with StdlibPeer(src, page_override=_serve(page)) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        code, report, _ = _sync(target)
    assert code == 4
    assert (report["reason"], report["phase"], report["needs_operator"]) == (
        "invalid_event_id",
        "events",
        True,
    )
    assert report["event_id"] == page[2]["id"]
    assert problem in report["error"]
    assert report["events_applied"] == 2
    assert [row[0] for row in events(target)] == good_before
    assert state_rows(target)["peer:src:last_event"] == good_before[-1]
    health = _health(target)
    assert health["last_error"]["reason"] == "invalid_event_id"
    assert health["last_error"]["event_id"] == page[2]["id"]
    check_db(target)


def test_an_id_a_few_minutes_ahead_is_within_the_allowed_skew(tmp_path: Path) -> None:
    src = source(tmp_path, count=1)
    page = _source_page(src)
    page[-1]["id"] = _future_id(120)
    with StdlibPeer(src, page_override=_serve(page)) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        code, _, err = _sync(target)
        assert code == 0, err
        refused, report, _ = _sync(target, "--max-future-skew", "60")
    assert refused == 0  # already stored: a caught-up peer is not re-judged
    assert report["events_applied"] == 0


def test_a_lone_surrogate_in_an_event_body_decodes_to_u_fffd_and_keeps_its_bytes(tmp_path: Path) -> None:
    """Bug: `"x\\ud800y"` (valid JSON) failed replay on every run with a transient reason."""
    src = source(tmp_path, count=1)
    page = _source_page(src)
    create = next(event for event in page if event["action"] == "create")
    create["data"]["body"] = "x\ud800y\n"
    create["data"]["content_hash"] = content_hash("x\ufffdy\n")  # what a Go sender hashes: it decodes U+FFFD
    text = json.dumps(page, ensure_ascii=True)  # the surrogate travels as the escape \ud800
    with StdlibPeer(src, page_override=text) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        code, report, err = _sync(target)
    assert code == 0, (report, err)
    stored = {row[0]: row[6] for row in events(target)}[create["id"]]
    assert "\\ud800" in stored  # the data text as received: signatures and what we serve on are unchanged
    [content] = [text for name, text in trace_files(target).items() if create["trace_id"] in name]
    assert "x\ufffdy" in content
    check_db(target)


def test_peer_text_with_a_line_break_cannot_forge_a_line_of_output(tmp_path: Path) -> None:
    """Bug: a refusal with a newline printed a second, forged line in cron mail."""
    src = source(tmp_path, count=1)
    forged = "no\nsrc: ok, 0 events applied, cursor (none)\x1b]0;owned\x07"
    with StdlibPeer(src, identity_error=forged) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        result = run_cli(["--cortex", str(target), "sync", "--once"])
    assert result.exit_code == 3
    [line] = result.stdout.splitlines()
    assert line.startswith("src: failed (other), 0 events applied, cursor (none): ")
    assert "\\nsrc: ok" in line
    assert "\x1b" not in result.stdout


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (hostile_peer.raw(b"HTTP/1.1 2OO OK\r\n\r\n"), "other"),  # a bad status line
        (
            hostile_peer.raw(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: a\r\n" * 101 + b"\r\n"),
            "other",
        ),  # > 100 headers
        (hostile_peer.with_body(b'{"jsonrpc":"2.0","id":1,"result":{"content":5}}'), "other"),
        (hostile_peer.with_body(b"[" * 100_000 + b"]" * 100_000), "other"),  # nested past the stack
        (hostile_peer.truncated(0.5), "network_eof"),
    ],
)
def test_a_broken_answer_is_a_recorded_failure_not_a_crash(tmp_path: Path, answer: Any, reason: str) -> None:
    """Bug: these escaped the poll's error type: phase `internal`, no health, `status` showing a healthy peer."""
    src = source(tmp_path, count=2)
    with StdlibPeer(src) as backend, hostile_peer.HostilePeer(backend, "cortex_identity", answer) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        code, report, _ = _sync(target)
    assert code == 3
    assert (report["reason"], report["phase"]) == (reason, "identity")
    assert _health(target)["last_error"]["reason"] == reason
    assert _health(target)["consecutive_failures"] == 1
    assert events(target) == []


@pytest.mark.parametrize("on", ["initialize", "sync_events"])
def test_a_peer_that_drips_its_answer_ends_within_the_timeout(tmp_path: Path, on: str) -> None:
    """Bug: --timeout bounded each read, so one byte a second kept `sync --once` alive for ever."""
    src = source(tmp_path, count=2)
    with (
        StdlibPeer(src) as backend,
        hostile_peer.HostilePeer(backend, on, hostile_peer.drip(0.2, 30)) as peer,
    ):
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        started = time.monotonic()
        code, report, _ = _sync(target, "--timeout", "1.5")
        elapsed = time.monotonic() - started
    assert code == 3
    assert report["reason"] == "network_timeout"
    assert elapsed < 6
    assert _health(target)["last_error"]["reason"] == "network_timeout"


def test_keep_alives_without_an_answer_end_within_the_timeout(tmp_path: Path) -> None:
    src = source(tmp_path, count=2)
    keepalives = hostile_peer.endless_keepalives(0.3, 30)
    with StdlibPeer(src) as backend, hostile_peer.HostilePeer(backend, "sync_events", keepalives) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        started = time.monotonic()
        code, report, _ = _sync(target, "--timeout", "1.5")
        elapsed = time.monotonic() - started
    assert (code, report["reason"], report["phase"]) == (3, "network_timeout", "events")
    assert elapsed < 6


def _usage_row(trace_id: str, peer_cortex_id: str, **fields: Any) -> dict[str, Any]:
    row = {
        "trace_id": trace_id,
        "peer_cortex_id": peer_cortex_id,
        "read_count": 3,
        "modify_count": 1,
        "updated_at": "2026-01-02T00:00:00Z",
    }
    return {**row, **fields}


@pytest.mark.parametrize(
    ("rows", "refusal"),
    [
        # A peer speaks only for its own reads: counters in a third cortex's name are refused.
        (lambda trace, own: [_usage_row(trace, "01JQ9A3C5E7G9J1K3M5N7P9R2T")], "invalid ownership or cursor"),
        (lambda trace, own: [_usage_row(trace, own, updated_at="")], "invalid ownership or cursor"),
        (lambda trace, own: [_usage_row(trace, own)] * 501, "too many usage rows"),
        (lambda trace, own: [_usage_row(trace, own, read_count=2**63)], "invalid remote usage row"),
        (lambda trace, own: [_usage_row(trace, own, read_count=-1)], "invalid remote usage row"),
        (lambda trace, own: [_usage_row("../x", own)], "invalid remote usage row"),
    ],
)
def test_a_usage_page_that_fails_a_check_is_refused_whole_and_only_logged(
    tmp_path: Path, rows: Any, refusal: str
) -> None:
    """Bug: a peer could plant usage counters attributed to a third cortex; counters >= 2^63 crashed the poll."""
    from noemafed.cortex.manifest import read_manifest

    src = source(tmp_path, count=1)
    conn = db(src)
    trace = conn.execute("SELECT id FROM traces LIMIT 1").fetchone()[0]
    conn.close()
    page = json.dumps(rows(trace, read_manifest(src).id))
    answer = hostile_peer.tool_text(page)
    with StdlibPeer(src) as backend, hostile_peer.HostilePeer(backend, "sync_read_signal", answer) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        code, report, stderr = _sync(target)
    assert code == 0  # best effort, as in noema: the events are applied and the poll succeeds
    assert report["usage_rows"] == 0
    assert refusal in stderr  # a warning: cron mails it
    assert "peer:src:last_usage" not in state_rows(target)
    conn = db(target)
    assert conn.execute("SELECT COUNT(*) FROM trace_usage").fetchone() == (0,)
    conn.close()


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://admin:s3cret@127.0.0.1:1",
        "ftp://admin:s3cret@127.0.0.1:1",
        "http://admin:p@s3cret@127.0.0.1:1",
    ],
)
def test_credentials_in_a_hand_edited_endpoint_never_reach_the_output(tmp_path: Path, endpoint: str) -> None:
    """`add-peer` refuses them; a hand edit must not print the password in cron mail or store it in health."""
    target = target_with(tmp_path, [{"name": "src", "endpoint": endpoint}])
    for args in ((), ("--json", "--ignore-backoff")):  # the second run must reach the peer too
        result = run_cli(["--cortex", str(target), "sync", "--once", *args])
        assert result.exit_code in (3, 4)
        assert "s3cret" not in result.stdout + result.stderr
    assert "s3cret" not in json.dumps(state_rows(target))
