"""The hostile-peer corpus (issue 11): real peers on 127.0.0.1 that lie, stall, poison and attack.

Every case runs the real `sync --once --json` (or `serve`) against a real peer or a socket-level proxy in front of
one, then checks the same aftermath: the exit code, the reason recorded in the peer's health and printed in the
report, the cursor, `PRAGMA integrity_check`, no file written outside the cortex and no partial trace file.

docs/robustness.md is generated from this file (scripts/robustness_report.py): a test's docstring, or a case's
`what`/`expect`, is its description there, so keep them precise. A case still marked xfail is a known hole.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import jsonschema
import pytest
import ulid
from authoring import create_trace, set_tags
from conftest import REPO, db, make_cortex, run_cli
from peers import hostile_peer as hostile
from peers.hostile_peer import HostilePeer
from peers.stdlib_peer import StdlibPeer
from peers.tls import expired_tls, make_tls
from sync_helpers import check_db, events, seed, source, state_value, target_with

from noemafed.cortex import traces
from noemafed.cortex.events import EVENT_COLUMNS, Event, event_from_row, page_json
from noemafed.cortex.manifest import read_manifest
from noemafed.cortex.open import TRACE_FOLDERS, open_cortex
from noemafed.logs import SILENT
from noemafed.mcp.http import ServeConfig, make_server

SYNC_SCHEMA = json.loads((REPO / "docs" / "sync.schema.json").read_text())
PEER = "evil"
DEEP = 100_000  # nesting depth: far past Python's recursion limit, a few hundred KiB on the wire
TIMEOUT = "2"  # --timeout for the cases that hang: each must end within a few seconds of it
HANG_BUDGET = (
    8.0  # seconds a hanging case may take in all (timeout, grace, start-up) before it counts as a hang
)


# ---- running a sync and checking its aftermath -----------------------------------------------------------


@dataclass
class Run:
    """One `sync --once` of the target and what it left behind."""

    target: Path
    code: int
    doc: dict[str, Any]
    stdout: str
    stderr: str
    seconds: float
    health: dict[str, Any]  # the peer's health record right after the run
    cursor: str  # the peer's cursor right after the run

    @property
    def report(self) -> dict[str, Any]:
        [peer] = self.doc["peers"]
        return peer


def sync(target: Path, *args: str, env: dict[str, str] | None = None, as_json: bool = True) -> Run:
    """The real CLI in-process; with --json the document is validated against docs/sync.schema.json."""
    argv = ["--cortex", str(target), "sync", "--once", *(["--json"] if as_json else []), *args]
    started = time.monotonic()
    result = run_cli(argv, env=env)
    seconds = time.monotonic() - started
    doc: dict[str, Any] = {}
    if as_json:
        doc = json.loads(result.stdout)
        jsonschema.validate(doc, SYNC_SCHEMA)
        assert doc["exit_code"] == result.exit_code, result.stderr
    health = json.loads(state_value(target, f"peer:{PEER}:health") or "{}")
    cursor = state_value(target, f"peer:{PEER}:last_event")
    return Run(target, result.exit_code, doc, result.stdout, result.stderr, seconds, health, cursor)


class Outside:
    """Every file outside the target cortex (the test's tmp dir and HOME): what a hostile peer must not touch."""

    def __init__(self, roots: list[Path], target: Path) -> None:
        self.roots = roots
        self.target = target
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, tuple[int, int]]:
        files = {}
        for root in self.roots:
            for path in root.rglob("*"):
                if path.is_relative_to(self.target) or not path.is_file():
                    continue
                if path.name.endswith(("-wal", "-shm", "-journal")):
                    continue  # a peer's own SQLite files change as it serves
                stat = path.stat()
                files[str(path)] = (stat.st_size, stat.st_mtime_ns)
        return files

    def unchanged(self) -> None:
        assert self.snapshot() == self.before, "a file outside the cortex was created, changed or removed"


def assert_whole_traces(target: Path) -> None:
    """No temp file and no partial trace: every file in a trace folder is `<id>.md`, parses, and has its row."""
    conn = db(target)
    ids = {row[0] for row in conn.execute("SELECT id FROM traces")}
    conn.close()
    assert not [p for p in target.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".noemafed")]
    for folder in TRACE_FOLDERS:
        for path in (target / folder).iterdir():
            assert path.suffix == ".md", path
            assert not path.name.startswith("."), path
            assert path.stem in ids, f"{path} has no row"
            traces.read(path)  # a half-written file would not parse


def assert_aftermath(
    run: Run,
    outside: Outside,
    *,
    code: int,
    reason: str | None,
    cursor: str,
    event_id: str | None = None,
) -> None:
    """The checks every case shares; `reason` None means a clean poll (no last_error, status ok)."""
    report, health = run.report, run.health
    assert run.code == code, (run.stderr, report)
    if reason is None:
        assert report["status"] == "ok", report
        assert "last_error" not in health, health
    else:
        assert (report["status"], report["reason"]) == ("failed", reason), report
        assert health["last_error"]["reason"] == reason, health
        assert health["consecutive_failures"] >= 1
        if event_id is not None:
            assert report["event_id"] == event_id
            assert health["last_error"]["event_id"] == event_id
    assert run.cursor == cursor
    assert (report["cursor_after"] or "") == cursor
    assert report["events_applied"] == len(
        [
            row
            for row in events(run.target)
            if report["cursor_before"] is None or row[0] > report["cursor_before"]
        ]
    ), "events_applied must count what was committed"
    check_db(run.target)
    outside.unchanged()
    assert_whole_traces(run.target)
    assert "Traceback" not in run.stderr


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A small real cortex (a few creates and later activity) that the honest peer serves."""
    return source(tmp_path / "ring", "source", count=3)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cortex with more than one page of events (1,000 a page): about 1,050 events. Read-only: shared."""
    path = make_cortex(tmp_path_factory.mktemp("big"), "big")
    seed(path, 620)
    return path


@pytest.fixture
def outside_roots(tmp_path: Path, isolated_env: Path) -> list[Path]:
    return [tmp_path, isolated_env]


def through(
    proxy: HostilePeer | StdlibPeer, tmp_path: Path, roots: list[Path], **peer: str
) -> tuple[Path, Outside]:
    """A target cortex with one peer, PEER, at this endpoint, and the snapshot of everything outside it."""
    target = target_with(tmp_path, [{"name": PEER, "endpoint": proxy.endpoint, **peer}])
    return target, Outside(roots, target)


def port_free_of(digits: str = "401") -> int:
    """A free port on 127.0.0.1 whose number does not contain `digits`.

    The classifier matches Go's texts in an error message, and a transport error's message holds the endpoint's
    URL: on a port such as 34015, an unrecognised failure reads as `auth` (see
    test_the_endpoints_port_does_not_decide_the_reason). The other cases must not depend on the port they got.
    """
    while True:
        with socket.create_server(("127.0.0.1", 0)) as probe:
            port = int(probe.getsockname()[1])
        if digits not in str(port):
            return port


def hostile_proxy(backend: StdlibPeer, on: str, answer: Any) -> HostilePeer:
    """A HostilePeer in front of `backend`, answering `on` with `answer`, on a port that decides nothing."""
    return HostilePeer(backend, on, answer, port=port_free_of())


def src_events(path: Path) -> list[Event]:
    conn = db(path)
    rows = conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY id").fetchall()
    conn.close()
    return [event_from_row(row) for row in rows]


def has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(char) <= 0xDFFF for char in text)


def text_result(text: str, is_error: bool = False) -> Callable[[Any], Any]:
    """A `bent` change: the tool's result becomes this text (a refusal when is_error)."""

    def change(message: Any) -> Any:
        message["result"] = {
            "content": [{"type": "text", "text": text}],
            **({"isError": True} if is_error else {}),
        }
        return message

    return change


def deep_json(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


# ---- 1. failures that used to escape classification ------------------------------------------------------


class Malformed(NamedTuple):
    """A peer answers one call with something no parser should trust; the poll must fail as `other`, exit 3."""

    what: str
    on: str
    answer: Any


def _deep_envelope(message: Any) -> bytes:
    return (
        b'{"jsonrpc":"2.0","id":'
        + json.dumps(message["id"]).encode()
        + b',"result":'
        + deep_json().encode()
        + b"}"
    )


def _content_number(message: Any) -> Any:
    message["result"]["content"] = 5
    return message


MALFORMED = [
    Malformed(
        "the initialize answer is JSON nested 100,000 deep", "initialize", hostile.bent(_deep_envelope)
    ),
    Malformed(
        "the cortex_identity answer is JSON nested 100,000 deep",
        "cortex_identity",
        hostile.bent(_deep_envelope),
    ),
    Malformed(
        "the sync_events answer is JSON nested 100,000 deep", "sync_events", hostile.bent(_deep_envelope)
    ),
    Malformed(
        "the cortex_identity tool's text is JSON nested 100,000 deep",
        "cortex_identity",
        hostile.bent(text_result(deep_json())),
    ),
    Malformed(
        "the sync_events tool's text (the page) is JSON nested 100,000 deep",
        "sync_events",
        hostile.bent(text_result(deep_json())),
    ),
    Malformed(
        "`result.content` of cortex_identity is a number", "cortex_identity", hostile.bent(_content_number)
    ),
    Malformed("`result.content` of sync_events is a number", "sync_events", hostile.bent(_content_number)),
    Malformed(
        "sync_events answers with a status line that is not HTTP (`HTTP/1.1 2x0 OK`)",
        "sync_events",
        hostile.raw(b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n"),
    ),
    Malformed(
        "sync_events answers `200` with a 70,000-byte header line",
        "sync_events",
        hostile.with_headers([b"X-Long: " + b"a" * 70_000]),
    ),
    Malformed(
        "sync_events answers `200` with 101 headers",
        "sync_events",
        hostile.with_headers([b"X-H%d: v" % n for n in range(101)]),
    ),
    Malformed(
        "initialize answers with a status line that is not HTTP",
        "initialize",
        hostile.raw(b"SPDY/9 200\r\n\r\n"),
    ),
]


@pytest.mark.parametrize(
    "case", [pytest.param(case, id=f"{case.on}-{n}") for n, case in enumerate(MALFORMED)]
)
def test_malformed_answers_are_other_and_exit_3(
    tmp_path: Path, src: Path, outside_roots: list[Path], case: Malformed
) -> None:
    """A peer answers one call with JSON nested 100,000 deep, a non-list `content`, a broken status line, an
    over-long header line or 101 headers. Expected: exit 3, reason `other`, the cursor where it was, nothing
    stored."""
    with StdlibPeer(src, flavor="go") as backend, hostile_proxy(backend, case.on, case.answer) as proxy:
        target, outside = through(proxy, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=3, reason="other", cursor="")
    assert events(target) == []
    assert run.seconds < 10


def port_with_401() -> int:
    """A free port on 127.0.0.1 whose number contains 401."""
    for port in (*range(34010, 34020), *range(40100, 40200), *range(44010, 44020)):
        try:
            with socket.create_server(("127.0.0.1", port)):
                return port
        except OSError:
            continue
    pytest.skip("no free port containing 401")


def test_the_endpoints_port_does_not_decide_the_reason(
    tmp_path: Path, src: Path, outside_roots: list[Path]
) -> None:
    """A peer on a port whose number contains `401` answers sync_events with a status line that is not HTTP.
    Expected: exit 3, reason `other`, as on any other port (not `auth`, which tells the operator to check the
    shared key and exits 4)."""
    answer = hostile.raw(b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n")
    with (
        StdlibPeer(src, flavor="go") as backend,
        HostilePeer(backend, "sync_events", answer, port=port_with_401()) as proxy,
    ):
        target, outside = through(proxy, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=3, reason="other", cursor="")


def test_deep_json_in_an_events_data_refuses_the_page(
    tmp_path: Path, src: Path, outside_roots: list[Path]
) -> None:
    """The last event of a page carries `data` nested 100,000 deep. Expected: exit 3, reason `other` in phase
    `events`: the page does not parse, so none of it is stored and the cursor stays where it was."""
    good = src_events(src)
    bad = replace(good[-1], id=str(ulid.ULID()), data='{"title":' + deep_json() + "}")
    with StdlibPeer(src, flavor="go", page_override=page_json([*good, bad])) as peer:
        target, outside = through(peer, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=3, reason="other", cursor="")
    assert run.report["phase"] == "events"
    assert events(target) == []


def test_a_deep_usage_answer_is_logged_and_the_poll_succeeds(
    tmp_path: Path, src: Path, outside_roots: list[Path]
) -> None:
    """The sync_read_signal answer itself (the JSON-RPC envelope) is nested 100,000 deep. Usage counters are
    best effort (federation.md §3.6). Expected: exit 0, every event applied, the read-signal failure logged,
    the usage cursor not moved."""
    with (
        StdlibPeer(src, flavor="go") as backend,
        hostile_proxy(backend, "sync_read_signal", hostile.bent(_deep_envelope)) as proxy,
    ):
        target, outside = through(proxy, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=0, reason=None, cursor=events(src)[-1][0])
    assert "read-signal sync failed" in run.stderr
    assert state_value(target, f"peer:{PEER}:last_usage") == ""


def test_deep_json_in_usage_rows_is_logged_and_the_poll_succeeds(
    tmp_path: Path, src: Path, outside_roots: list[Path]
) -> None:
    """sync_read_signal answers with rows nested 100,000 deep. Usage counters are best effort (federation.md
    §3.6). Expected: exit 0, every event applied, the read-signal failure logged, the usage cursor not moved."""
    with (
        StdlibPeer(src, flavor="go") as backend,
        hostile_proxy(backend, "sync_read_signal", hostile.bent(text_result(deep_json()))) as proxy,
    ):
        target, outside = through(proxy, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=0, reason=None, cursor=events(src)[-1][0])
    assert "read-signal sync failed" in run.stderr
    assert state_value(target, f"peer:{PEER}:last_usage") == ""


def test_usage_counters_past_int64_are_logged_and_the_poll_succeeds(
    tmp_path: Path, src: Path, outside_roots: list[Path]
) -> None:
    """A usage row's read_count is 2^63 (SQLite's INTEGER is 64-bit signed). Expected: exit 0, every event
    applied, the read-signal failure logged, no usage row changed and the usage cursor not moved."""
    trace_id = events(src)[0][2]
    row = {
        "trace_id": trace_id,
        "peer_cortex_id": read_manifest(src).id,
        "read_count": 2**63,
        "modify_count": 1,
        "updated_at": "2026-01-02T00:00:00Z",
    }
    with (
        StdlibPeer(src, flavor="go") as backend,
        hostile_proxy(backend, "sync_read_signal", hostile.bent(text_result(json.dumps([row])))) as proxy,
    ):
        target, outside = through(proxy, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=0, reason=None, cursor=events(src)[-1][0])
    assert "read-signal sync failed" in run.stderr
    assert state_value(target, f"peer:{PEER}:last_usage") == ""
    conn = db(target)
    assert conn.execute("SELECT COUNT(*) FROM trace_usage").fetchone()[0] == 0
    conn.close()


def _surrogate_page(good: list[Event], field: str) -> tuple[str, Event]:
    """The page `good` plus a last event (a new create) whose `field` is the lone surrogate `"\\ud800"`."""
    bad = replace(good[0], id=str(ulid.ULID()), trace_id="20250101-fresh", signature="", pubkey="")
    marker = "LONE-SURROGATE-MARKER"
    bad = replace(bad, **{field: marker})
    return page_json([*good, bad]).replace(f'"{marker}"', '"\\ud800"'), bad


def test_a_lone_surrogate_in_a_trace_id_is_invalid_trace_id(
    tmp_path: Path, src: Path, outside_roots: list[Path]
) -> None:
    """The last event's trace_id is the lone surrogate `"\\ud800"` (valid JSON, not UTF-8). Expected: exit 4,
    reason `invalid_trace_id` naming the event, the cursor before it, and no lone surrogate in the health
    record or the report."""
    good = src_events(src)
    page, bad = _surrogate_page(good, "trace_id")
    with StdlibPeer(src, flavor="go", page_override=page) as peer:
        target, outside = through(peer, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=4, reason="invalid_trace_id", cursor=good[-1].id, event_id=bad.id)
    assert not has_surrogate(json.dumps(run.health, ensure_ascii=False))
    assert not has_surrogate(run.report["trace_id"] or "")


def test_a_lone_surrogate_in_an_event_id_is_invalid_event_id(
    tmp_path: Path, src: Path, outside_roots: list[Path]
) -> None:
    """The last event's id is the lone surrogate `"\\ud800"`. Expected: exit 4, reason `invalid_event_id`, the
    cursor before it, nothing of it stored, no lone surrogate in the health record or the report."""
    good = src_events(src)
    page, _bad = _surrogate_page(good, "id")
    with StdlibPeer(src, flavor="go", page_override=page) as peer:
        target, outside = through(peer, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=4, reason="invalid_event_id", cursor=good[-1].id)
    assert run.report["event_id"] == run.health["last_error"]["event_id"] == "\ufffd"
    assert [row[0] for row in events(target)] == [event.id for event in good]


def test_a_lone_surrogate_in_the_server_version_is_scrubbed(
    tmp_path: Path, src: Path, outside_roots: list[Path]
) -> None:
    """initialize's `serverInfo.version` is the lone surrogate `"\\ud800"`. Expected: exit 0, every event
    applied, the version recorded in health as U+FFFD."""

    def change(message: Any) -> Any:
        message["result"]["serverInfo"]["version"] = "\ud800"
        return message

    with (
        StdlibPeer(src, flavor="go") as backend,
        hostile_proxy(backend, "initialize", hostile.bent(change)) as proxy,
    ):
        target, outside = through(proxy, tmp_path, outside_roots)
        run = sync(target)
        again = sync(target)  # an otherwise complete sync must not fail on every later run
    assert_aftermath(run, outside, code=0, reason=None, cursor=events(src)[-1][0])
    assert again.code == 0
    assert run.health["version"] == "\ufffd"
    assert run.report["peer_version"] == "\ufffd"


def test_database_locked_between_two_batches_is_local_storage(
    tmp_path: Path, big: Path, outside_roots: list[Path]
) -> None:
    """Another process takes the database's write lock after the first page (1,000 events) committed and holds
    it past the busy timeout (5 s). Expected: exit 3, reason `local_storage`, the 1,000 events kept and counted,
    the cursor on the last of them, the health written once the lock is free."""
    log = src_events(big)
    assert len(log) > 1000
    target = target_with(tmp_path, [{"name": PEER, "endpoint": "http://127.0.0.1:1"}])

    def pages(since: str, limit: int) -> str:
        rest = [event for event in log if event.id > since][:limit]
        if since:  # page 2, fetched ahead: wait for page 1 to commit, then lock the database
            deadline = time.monotonic() + 30
            while (
                state_value(target, f"peer:{PEER}:last_event") != log[999].id and time.monotonic() < deadline
            ):
                time.sleep(0.01)
            conn = sqlite3.connect(target / "db" / "noema.db", isolation_level=None, check_same_thread=False)
            conn.execute("BEGIN IMMEDIATE")
            # Past the syncer's 5 s busy timeout with room for a slow machine; short enough that the health
            # record, written after the failure, waits less than its own busy timeout.
            threading.Timer(7.0, lambda: (conn.execute("ROLLBACK"), conn.close())).start()
        return page_json(rest)

    with StdlibPeer(big, flavor="go", page_override=pages) as peer:
        from conftest import set_federation

        set_federation(target, [{"name": PEER, "endpoint": peer.endpoint}])
        outside = Outside(outside_roots, target)
        run = sync(target)
    assert_aftermath(run, outside, code=3, reason="local_storage", cursor=log[999].id)
    assert run.report["events_applied"] == 1000


# ---- 2. peers that would hang a run ----------------------------------------------------------------------


class Hang(NamedTuple):
    """A peer keeps every single read short but never finishes its answer."""

    what: str
    on: str
    answer: Any


HANGS = [
    Hang("initialize is answered one byte a second", "initialize", hostile.drip(1.0)),
    Hang("sync_events is answered one byte a second", "sync_events", hostile.drip(1.0)),
    Hang(
        "sync_events opens an SSE stream and sends a keep-alive comment every second, never the answer",
        "sync_events",
        hostile.endless_keepalives(1.0),
    ),
]


@pytest.mark.parametrize("case", [pytest.param(case, id=f"{case.on}-{n}") for n, case in enumerate(HANGS)])
def test_a_peer_that_never_finishes_is_network_timeout(
    tmp_path: Path, src: Path, outside_roots: list[Path], case: Hang
) -> None:
    """With `--timeout 2`, a peer drips its answer a byte at a time (during initialize, cortex_identity or
    sync_events) or holds an SSE stream open with keep-alives: every read is short, so only a whole-request
    deadline ends it. Expected: the run ends within a few seconds, exit 3, reason `network_timeout`, the cursor
    where it was."""
    with StdlibPeer(src, flavor="go") as backend, hostile_proxy(backend, case.on, case.answer) as proxy:
        target, outside = through(proxy, tmp_path, outside_roots)
        run = sync(target, "--timeout", TIMEOUT)
    assert_aftermath(run, outside, code=3, reason="network_timeout", cursor="")
    assert run.seconds < HANG_BUDGET
    assert events(target) == []


def test_a_hang_after_a_page_keeps_what_was_applied(
    tmp_path: Path, big: Path, outside_roots: list[Path]
) -> None:
    """The peer answers the first page (1,000 events) and drips the second one. Expected: exit 3, reason
    `network_timeout`, the first page kept, counted and the cursor on its last event, within a few seconds."""
    log = events(big)
    dripping = hostile.drip(0.5)
    served = []

    def second_page_drips(client: socket.socket, forwarded: hostile.Forwarded) -> None:
        served.append(1)
        if len(served) == 1:
            client.sendall(forwarded.whole())
        else:
            dripping(client, forwarded)

    with (
        StdlibPeer(big, flavor="go") as backend,
        hostile_proxy(backend, "sync_events", second_page_drips) as proxy,
    ):
        target, outside = through(proxy, tmp_path, outside_roots)
        run = sync(target, "--timeout", TIMEOUT)
    assert_aftermath(run, outside, code=3, reason="network_timeout", cursor=log[999][0])
    assert run.report["events_applied"] == 1000
    assert run.seconds < HANG_BUDGET + 5  # plus replaying 1,000 events


# ---- 3. event ids that would poison the ring through us ---------------------------------------------------


def _future_ulid(seconds: float) -> str:
    return str(ulid.ULID.from_timestamp(time.time() + seconds))


class BadId(NamedTuple):
    """An event id a noema peer would never mint; `make(last)` derives it from the page's last good id."""

    what: str
    make: Callable[[str], str]


BAD_IDS = [
    BadId("the id in lower case", lambda last: _future_ulid(1).lower()),
    BadId("an id with a character outside Crockford base32 (`U`)", lambda last: _future_ulid(1)[:25] + "U"),
    BadId("an id of 25 characters", lambda last: _future_ulid(1)[:25]),
    BadId("an id of 27 characters", lambda last: _future_ulid(1) + "0"),
    BadId("an id dated a day ahead of this host's clock", lambda last: _future_ulid(86_400)),
    BadId("the largest ULID, `7ZZZZZZZZZZZZZZZZZZZZZZZZZ`", lambda last: "7" + "Z" * 25),
]


@contextmanager
def serving(cortex: Path) -> Iterator[str]:
    """`noemafed serve` for this cortex on 127.0.0.1, in a thread; yields its endpoint."""
    server = make_server(ServeConfig(cortex_dir=cortex, port=0), SILENT)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def assert_not_poisoned(tmp_path: Path, target: Path) -> None:
    """A cortex pulling from `target` gets its whole log, and keeps getting what `target` authors later."""
    with serving(target) as endpoint:
        downstream = target_with(tmp_path, [{"name": "mid", "endpoint": endpoint}], name="downstream")
        first = run_cli(["--cortex", str(downstream), "sync", "--once"])
        assert first.exit_code == 0, first.stdout + first.stderr
        assert events(downstream) == events(target)
        cortex = open_cortex(target)
        try:
            create_trace(cortex, "authored after the hostile page", "note", "later\n")
        finally:
            cortex.close()
        second = run_cli(["--cortex", str(downstream), "sync", "--once"])
        assert second.exit_code == 0, second.stdout + second.stderr
        assert events(downstream) == events(target)


@pytest.mark.parametrize("case", [pytest.param(case, id=str(n)) for n, case in enumerate(BAD_IDS)])
def test_an_event_id_noema_would_not_mint_is_refused(
    tmp_path: Path, src: Path, outside_roots: list[Path], case: BadId
) -> None:
    """The last event of a page has an id that is not a canonical ULID (lower case, not Crockford, 25 or 27
    characters) or is dated far in the future. Stored, it would be served on: a noema pulling from us would
    fail every run (`since must be a valid ULID cursor`) or, after `7ZZZ…`, never receive anything again.
    Expected: exit 4, reason `invalid_event_id` naming the event, nothing of it stored, the cursor on the event
    before it, and a cortex pulling from us afterwards gets everything, including what we author later."""
    good = src_events(src)
    bad = replace(good[0], id=case.make(good[-1].id), trace_id="20250101-poisoned", signature="", pubkey="")
    assert bad.id > good[-1].id  # the page still advances: only the id check may refuse it
    with StdlibPeer(src, flavor="go", page_override=page_json([*good, bad])) as peer:
        target, outside = through(peer, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=4, reason="invalid_event_id", cursor=good[-1].id, event_id=bad.id)
    assert run.report["needs_operator"] is True
    assert [row[0] for row in events(target)] == [event.id for event in good]
    assert not (target / "traces" / "20250101-poisoned.md").exists()
    assert_not_poisoned(tmp_path, target)


def test_an_id_a_minute_ahead_is_within_the_allowed_skew(
    tmp_path: Path, src: Path, outside_roots: list[Path]
) -> None:
    """The last event's id is dated one minute ahead of this host's clock (clocks on a ring drift). Expected:
    exit 0, applied, the cursor on it (the refusal is for ids beyond the allowed skew, 10 minutes)."""
    good = src_events(src)
    ahead = replace(good[0], id=_future_ulid(60), trace_id="20250101-a-minute-ahead", signature="", pubkey="")
    with StdlibPeer(src, flavor="go", page_override=page_json([*good, ahead])) as peer:
        target, outside = through(peer, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=0, reason=None, cursor=ahead.id)
    assert (target / "traces" / "20250101-a-minute-ahead.md").exists()


# ---- 4. a lone surrogate in an event body ---------------------------------------------------------------


def test_a_lone_surrogate_in_an_event_body_is_applied_as_u_fffd(
    tmp_path: Path, src: Path, outside_roots: list[Path]
) -> None:
    """A create's body is `"x\\ud800y"` (valid JSON; Go's decoder reads U+FFFD). Expected: exit 0, applied, the
    file, the row and the full-text index hold `x\\ufffdy`, and the stored `data` is byte for byte what the peer
    sent (so its signature still checks and it is served on unchanged)."""
    good = src_events(src)
    payload = json.loads(good[0].data)
    payload["body"] = "x\ud800y\n"
    payload["content_hash"] = traces.content_hash("x\ufffdy\n")  # what Go's author would have hashed
    data = json.dumps(payload, separators=(",", ":"))  # ensure_ascii: the surrogate travels as \ud800
    assert "\\ud800" in data
    odd = replace(
        good[0], id=str(ulid.ULID()), trace_id="20250101-surrogate", data=data, signature="", pubkey=""
    )
    with StdlibPeer(src, flavor="go", page_override=page_json([*good, odd])) as peer:
        target, outside = through(peer, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=0, reason=None, cursor=odd.id)
    conn = db(target)
    [(stored_data,)] = conn.execute("SELECT data FROM events WHERE id = ?", (odd.id,)).fetchall()
    [(fts_body,)] = conn.execute(
        "SELECT body FROM traces_fts WHERE id = ?", ("20250101-surrogate",)
    ).fetchall()
    conn.close()
    assert stored_data == data
    assert "x\ufffdy" in (target / "traces" / "20250101-surrogate.md").read_text(encoding="utf-8")
    assert "x\ufffdy" in fts_body


# ---- 7. peer text printed raw -------------------------------------------------------------------------------


FORGED_LINE = "evil: ok, 99 events applied, cursor 01JQ7X2B9C4D5E6F7G8H9JKMNP"


def test_a_refusal_with_a_newline_does_not_forge_an_output_line(
    tmp_path: Path, src: Path, outside_roots: list[Path]
) -> None:
    """sync_events is refused with a text holding a newline and a line that looks like a healthy peer's (cron
    mails one line per peer). Expected: exit 3, reason `other`, exactly one output line for the peer, with the
    newline escaped."""
    refusal = hostile.bent(text_result(f"no\n{FORGED_LINE}\r\x1b[2K", is_error=True))
    with StdlibPeer(src, flavor="go") as backend, hostile_proxy(backend, "sync_events", refusal) as proxy:
        target, outside = through(proxy, tmp_path, outside_roots)
        run = sync(target, as_json=False)
        json_run = sync(target, "--ignore-backoff")  # the failure above put the peer in backoff
    lines = run.stdout.splitlines()
    assert run.code == 3
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"{PEER}: failed (other), 0 events applied, cursor (none): peer sync_events refused: no"
    )
    assert "\x1b" not in run.stdout
    assert "\r" not in run.stdout
    assert_aftermath(json_run, outside, code=3, reason="other", cursor="")


def test_an_identity_name_with_a_newline_does_not_forge_a_log_line(
    tmp_path: Path, src: Path, outside_roots: list[Path]
) -> None:
    """The peer's cortex_identity `name` holds a newline, a forged `[federation]` log line and an OSC escape
    (`ESC ] 0 ; … BEL`, which retitles a terminal). Expected: exit 0, and with --verbose every log line is one of
    ours: no forged line, no escape character on stderr."""
    info = read_manifest(src)
    name = f'x\n[federation] peer "{PEER}" reachable again\x1b]0;owned\x07'
    identity = {"id": info.id, "name": name, "version": 2}
    with StdlibPeer(src, flavor="go", identity=identity) as peer:
        target, outside = through(peer, tmp_path, outside_roots)
        run = sync(target, "--verbose", as_json=False)
    assert run.code == 0, run.stderr
    assert "\x1b" not in run.stderr
    assert "\x07" not in run.stderr
    assert not [
        line for line in run.stderr.splitlines() if line.startswith(f'[federation] peer "{PEER}" reachable')
    ]
    check_db(target)
    outside.unchanged()


LONG_TEXT = 900_000  # under initialize's 1 MiB cap, so the answer itself is accepted
LINE_CAP = 4096  # what a cron mail line or a health record may reasonably hold


def test_a_huge_refusal_text_does_not_flood_the_output(
    tmp_path: Path, src: Path, outside_roots: list[Path]
) -> None:
    """sync_events is refused with a 900,000-character text. Expected: exit 3, reason `other`, and the peer's
    output line (what cron mails) stays under 4 KiB."""
    refusal = hostile.bent(text_result("A" * LONG_TEXT, is_error=True))
    with StdlibPeer(src, flavor="go") as backend, hostile_proxy(backend, "sync_events", refusal) as proxy:
        target, outside = through(proxy, tmp_path, outside_roots)
        run = sync(target, as_json=False)
    assert run.code == 3
    assert len(run.stdout) < LINE_CAP
    outside.unchanged()


def test_a_huge_server_version_is_not_stored_whole(
    tmp_path: Path, src: Path, outside_roots: list[Path]
) -> None:
    """initialize's `serverInfo.version` is 900,000 characters (a peer's text, rewritten into health on every
    poll and printed by `status`). Expected: exit 0, the health record and `status` output stay under 4 KiB."""

    def change(message: Any) -> Any:
        message["result"]["serverInfo"]["version"] = "9" * LONG_TEXT
        return message

    with (
        StdlibPeer(src, flavor="go") as backend,
        hostile_proxy(backend, "initialize", hostile.bent(change)) as proxy,
    ):
        target, outside = through(proxy, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=0, reason=None, cursor=events(src)[-1][0])
    assert len(state_value(target, f"peer:{PEER}:health")) < LINE_CAP
    assert len(run_cli(["--cortex", str(target), "status"]).stdout) < LINE_CAP


# ---- 8. a truncated body --------------------------------------------------------------------------------------


@pytest.mark.parametrize("on", ["initialize", "sync_events"])
def test_a_truncated_body_is_network_eof(
    tmp_path: Path, src: Path, outside_roots: list[Path], on: str
) -> None:
    """The peer sends the honest head (with the full Content-Length) and half the body, then closes. Expected:
    exit 3, reason `network_eof` (as Go reports `unexpected EOF`), nothing stored."""
    with StdlibPeer(src, flavor="go") as backend, hostile_proxy(backend, on, hostile.truncated(0.5)) as proxy:
        target, outside = through(proxy, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=3, reason="network_eof", cursor="")
    assert events(target) == []


def test_a_connection_closed_without_an_answer_is_network_eof(
    tmp_path: Path, src: Path, outside_roots: list[Path]
) -> None:
    """The peer reads the sync_events request and closes without a byte. Expected: exit 3, `network_eof`."""
    with (
        StdlibPeer(src, flavor="go") as backend,
        hostile_proxy(backend, "sync_events", hostile.raw(b"")) as proxy,
    ):
        target, outside = through(proxy, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=3, reason="network_eof", cursor="")


# ---- what already holds: path traversal, injection, size, encoding, redirects, TLS, identity, keys -------


TRAVERSING_IDS = [
    "../x",
    "../../outside",
    "/tmp/absolute",  # noqa: S108 (a path a hostile peer names, never opened)
    "20250101-../../escape",
    "..",
    ".hidden",
    "a\\b",
    "nul\x00byte",
]


TRAVERSALS = [("create", trace_id) for trace_id in TRAVERSING_IDS] + [
    (action, "../x") for action in ("update", "archive", "trash", "tag_update")
]


@pytest.mark.parametrize(("action", "trace_id"), [pytest.param(a, t, id=f"{a}-{t!r}") for a, t in TRAVERSALS])
def test_a_trace_id_that_leaves_the_folder_is_invalid_trace_id(
    tmp_path: Path, src: Path, outside_roots: list[Path], action: str, trace_id: str
) -> None:
    """The last event of a page (a create, update, tag_update, archive or trash) names a trace id that would leave the
    traces folder: `../x`, an absolute path, `..`, a dot file, a backslash, a NUL byte. Expected: exit 4, reason
    `invalid_trace_id` naming the event, the cursor before it, no file outside the cortex."""
    good = src_events(src)
    bad = replace(good[0], id=str(ulid.ULID()), action=action, trace_id=trace_id, signature="", pubkey="")
    with StdlibPeer(src, flavor="go", page_override=page_json([*good, bad])) as peer:
        target, outside = through(peer, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=4, reason="invalid_trace_id", cursor=good[-1].id, event_id=bad.id)


def test_a_purge_of_a_path_outside_touches_nothing_outside(
    tmp_path: Path, src: Path, outside_roots: list[Path]
) -> None:
    """A purge names `../../victim` and a file `victim.md` exists there. noema purges ids that fail the pattern
    from the database only. Expected: exit 0, the event stored, the victim file untouched."""
    good = src_events(src)
    victim = tmp_path / "victim.md"
    victim.write_text("not yours\n")
    purge = replace(
        good[0],
        id=str(ulid.ULID()),
        action="purge",
        trace_id="../../victim",
        data="{}",
        signature="",
        pubkey="",
    )
    with StdlibPeer(src, flavor="go", page_override=page_json([*good, purge])) as peer:
        target, outside = through(peer, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=0, reason=None, cursor=purge.id)
    assert victim.read_text() == "not yours\n"


def test_paths_in_every_other_field_are_only_data(
    tmp_path: Path, src: Path, outside_roots: list[Path]
) -> None:
    """A create with a valid trace id carries path-like text in every other field: origin, cortex_id, author,
    title, body, tags, derived_from, type and tier stay plain strings (`../../x`, `/etc/passwd`, `~/.ssh`).
    Expected: the event is applied or refused by its payload checks, never used as a path: no file outside the
    cortex, exactly one new trace file, in `traces/`."""
    good = src_events(src)
    path = "../../../x"
    payload = json.loads(good[0].data)
    payload.update(
        title=path,
        author="/etc/passwd",
        body=f"{path}\n",
        origin="~/.ssh/id_ed25519",
        tags=[path, "/tmp"],  # noqa: S108 (data, never opened)
        derived_from=[path],
    )
    payload["content_hash"] = traces.content_hash(payload["body"])
    odd = replace(
        good[0],
        id=str(ulid.ULID()),
        trace_id="20250101-paths",
        origin=path,
        cortex_id=path,
        data=json.dumps(payload, separators=(",", ":")),
        signature="",
        pubkey="",
    )
    with StdlibPeer(src, flavor="go", page_override=page_json([*good, odd])) as peer:
        target, outside = through(peer, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=0, reason=None, cursor=odd.id)
    assert (target / "traces" / "20250101-paths.md").exists()
    assert not [p for p in target.rglob("*") if p.name in {"x", "id_ed25519"}]


INJECTIONS = [
    "title\n---\ntier: long\nsource_locked: true\n---",
    "---",
    "key: value",
    "- list item",
    "'single' \"double\" `back`",
    "#comment & anchor *alias !!python/object:os.system [",
    "  leading and trailing  ",
    "tab\there, CR\rhere, U+2028\u2028here",
]


def test_frontmatter_injection_in_titles_and_bodies_round_trips(
    tmp_path: Path, outside_roots: list[Path]
) -> None:
    """A peer's traces have titles and bodies written to break out of the YAML frontmatter (`\\n---\\n`,
    `key: value`, YAML tags and anchors, CR, U+2028) and bodies that start with their own frontmatter block.
    Expected: exit 0, the files equal the peer's, and each parses back to exactly its title, body and the
    tier/lock the event set (nothing injected)."""
    peer_dir = make_cortex(tmp_path / "ring", "injector")
    cortex = open_cortex(peer_dir)
    try:
        ids = [
            create_trace(cortex, title, "note", f"---\ntier: long\nsource_locked: true\n---\n{title}\n")[0]
            for title in INJECTIONS
        ]
    finally:
        cortex.close()
    with StdlibPeer(peer_dir, flavor="go") as peer:
        target, outside = through(peer, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=0, reason=None, cursor=events(peer_dir)[-1][0])
    for trace_id, title in zip(ids, INJECTIONS, strict=True):
        mine = (target / "traces" / f"{trace_id}.md").read_bytes().decode()
        theirs = (peer_dir / "traces" / f"{trace_id}.md").read_bytes().decode()
        assert mine.split("\nupdated:")[0] == theirs.split("\nupdated:")[0]
        trace = traces.parse_trace(mine)  # not traces.read: see the CR test below
        assert (trace.title, trace.tier, trace.source_locked) == (title, "short", False)
        assert trace.body == f"---\ntier: long\nsource_locked: true\n---\n{title}\n"


def test_cr_and_crlf_in_a_body_survive_a_later_event(tmp_path: Path, outside_roots: list[Path]) -> None:
    """A peer's trace body holds CRLF and a lone CR (text pasted from Windows), and a later tag_update rewrites
    the file from what is on disk. Expected: exit 0, and the body, the full-text row and the content hash still
    hold the CR bytes exactly, as in Go (os.ReadFile does not translate newlines)."""
    body = "one\r\ntwo\rthree\n"
    peer_dir = make_cortex(tmp_path / "ring", "windows")
    cortex = open_cortex(peer_dir)
    try:
        trace_id, _ = create_trace(cortex, "pasted", "note", body)
        set_tags(cortex, trace_id, ["pasted"])
    finally:
        cortex.close()
    with StdlibPeer(peer_dir, flavor="go") as peer:
        target, outside = through(peer, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=0, reason=None, cursor=events(peer_dir)[-1][0])
    text = (target / "traces" / f"{trace_id}.md").read_bytes().decode()
    assert traces.parse_trace(text).body == body
    conn = db(target)
    [(fts_body,)] = conn.execute("SELECT body FROM traces_fts WHERE id = ?", (trace_id,)).fetchall()
    conn.close()
    assert fts_body == body


class Flood(NamedTuple):
    what: str
    on: str
    answer: Any
    error: str  # a fragment of the reported error


def _gzip_bomb() -> bytes:
    """1 GiB of zeros once decoded, in about 1 MiB: gzip members concatenate."""
    member = gzip.compress(b"\0" * (16 * 1024 * 1024), compresslevel=9)
    return member * 64


FLOODS = [
    Flood("initialize answers with an endless body", "initialize", hostile.endless_body(), "too large"),
    Flood(
        "sync_events answers with an endless body (past the 100 MiB page cap)",
        "sync_events",
        hostile.endless_body(),
        "too large",
    ),
    Flood(
        "sync_events answers with a gzip bomb (1 GiB of zeros, `Content-Encoding: gzip`)",
        "sync_events",
        hostile.encoded(_gzip_bomb()),
        "not JSON",
    ),
    Flood(
        "initialize answers with a gzip-encoded honest body nobody asked for", "initialize", None, "not JSON"
    ),
]


@pytest.mark.parametrize("case", [pytest.param(case, id=f"{case.on}-{n}") for n, case in enumerate(FLOODS)])
def test_huge_endless_and_encoded_bodies_are_bounded(
    tmp_path: Path, src: Path, outside_roots: list[Path], case: Flood
) -> None:
    """A peer answers with a body that never ends, or with a gzip bomb the client never asked for (noemafed
    sends no Accept-Encoding and must never inflate). Expected: reading stops at the call's byte cap (1 MiB,
    100 MiB for sync_events) or at the first byte that is not JSON: exit 3, reason `other`, within seconds."""
    answer = case.answer
    if answer is None:

        def answer(client: socket.socket, forwarded: hostile.Forwarded) -> None:
            hostile.encoded(gzip.compress(forwarded.body))(client, forwarded)

    with StdlibPeer(src, flavor="go") as backend, hostile_proxy(backend, case.on, answer) as proxy:
        target, outside = through(proxy, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=3, reason="other", cursor="")
    assert case.error in run.report["error"]
    assert run.seconds < 20


def test_a_huge_page_over_the_cap_is_refused(tmp_path: Path, src: Path, outside_roots: list[Path]) -> None:
    """sync_events answers with a well-formed page of 101 MiB (over the 100 MiB cap). Expected: exit 3, reason
    `other` (`response too large`), nothing stored."""
    with StdlibPeer(src, flavor="go", huge_response_bytes=101 * 1024 * 1024) as peer:
        target, outside = through(peer, tmp_path, outside_roots)
        run = sync(target)
    assert_aftermath(run, outside, code=3, reason="other", cursor="")
    assert "too large" in run.report["error"]


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_to_another_host_is_refused_and_the_key_stays_home(
    tmp_path: Path, src: Path, outside_roots: list[Path], status: int
) -> None:
    """A keyed peer answers sync_events with a redirect (301, 302, 307, 308) to another host. Expected: exit 3,
    reason `other`, the redirect not followed (the other host gets no connection, so never the bearer key), the
    cursor where it was."""
    with socket.create_server(("127.0.0.1", port_free_of())) as elsewhere:
        other_url = f"http://localhost:{elsewhere.getsockname()[1]}/mcp"
        with StdlibPeer(
            src,
            flavor="go",
            key="ring-key",
            redirect_to=other_url,
            redirect_status=status,
            misbehave_on="sync_events",
        ) as peer:
            target, outside = through(peer, tmp_path, outside_roots)
            run = sync(target, env={"NOEMA_MCP_KEY": "ring-key"})
        elsewhere.settimeout(0.2)
        with pytest.raises(TimeoutError):
            elsewhere.accept()  # a followed redirect would have connected
    assert_aftermath(run, outside, code=3, reason="other", cursor="")
    assert "redirect" in run.report["error"]


def _wrong_ca(tmp_path: Path) -> tuple[Any, Path]:
    return make_tls(), make_tls().write_ca(tmp_path / "other-ca.pem")


def _expired(tmp_path: Path) -> tuple[Any, Path]:
    tls = expired_tls()
    return tls, tls.write_ca(tmp_path / "ca.pem")


def _wrong_host(tmp_path: Path) -> tuple[Any, Path]:
    tls = make_tls(("peer.example",))
    return tls, tls.write_ca(tmp_path / "ca.pem")


@pytest.mark.parametrize(
    "make", [_wrong_ca, _expired, _wrong_host], ids=["wrong-ca", "expired", "wrong-hostname"]
)
def test_tls_failures_are_network_tls(
    tmp_path: Path, src: Path, outside_roots: list[Path], make: Any
) -> None:
    """The peer's certificate is signed by a CA we were not given, has expired, or names another host.
    Expected: exit 4 (a certificate the configured trust rejects is an operator's to fix), reason `network_tls`,
    in the initialize phase, no request body sent, nothing stored."""
    tls, ca = make(tmp_path)
    with StdlibPeer(src, flavor="go", tls=tls) as peer:
        target, outside = through(peer, tmp_path, outside_roots, ca=str(ca))
        run = sync(target)
        assert peer.requests == []
    assert_aftermath(run, outside, code=4, reason="network_tls", cursor="")
    assert run.report["phase"] == "initialize"


def test_a_peer_that_changes_identity_is_refused(
    tmp_path: Path, src: Path, outside_roots: list[Path]
) -> None:
    """The endpoint synced once, then reports another cortex id (a reset, a restore, an impostor). Expected:
    exit 4, reason `identity_mismatch`, the pin and the cursor unchanged, nothing of the new cortex stored."""
    other = source(tmp_path / "ring", "impostor", count=2)
    with StdlibPeer(src, flavor="go") as peer:
        target, outside = through(peer, tmp_path, outside_roots)
        assert sync(target).code == 0
        before = events(target)
        peer.cortex_dir = other
        outside = Outside(outside_roots, target)
        run = sync(target)
    assert_aftermath(run, outside, code=4, reason="identity_mismatch", cursor=before[-1][0])
    assert events(target) == before
    assert state_value(target, f"peer:{PEER}:cortex_id") == read_manifest(src).id


def test_a_peer_that_changes_signing_key_is_refused(
    tmp_path: Path, src: Path, outside_roots: list[Path]
) -> None:
    """The peer advertised a signing key, then advertises another one for the same cortex id. Expected: exit 4,
    reason `identity_mismatch` (only an operator can tell a rotation from an impostor), the pinned key kept."""
    info = read_manifest(src)
    first_key = "ed25519:" + "A" * 43 + "="
    second_key = "ed25519:" + "B" * 43 + "="
    with StdlibPeer(
        src, flavor="go", identity={"id": info.id, "name": "s", "version": 2, "pubkey": first_key}
    ) as peer:
        target, outside = through(peer, tmp_path, outside_roots)
        assert sync(target).code == 0
        cursor = state_value(target, f"peer:{PEER}:last_event")
        peer.knobs.identity = {"id": info.id, "name": "s", "version": 2, "pubkey": second_key}
        outside = Outside(outside_roots, target)
        run = sync(target)
    assert_aftermath(run, outside, code=4, reason="identity_mismatch", cursor=cursor)
    from noemafed.cortex import state

    conn = db(target)
    pinned = state.get_cortex_pubkey(conn, info.id)
    conn.close()
    assert pinned == first_key


# ---- abusive clients against serve --------------------------------------------------------------------------


WRONG_KEYS = 10_000
CLIENT_THREADS = (
    4  # each with its own TLS session, resumed: the server's work per request is what is measured
)
UNAUTHORIZED = b'{"error":"unauthorized: NOEMA_MCP_KEY / access.shared_key_file required"}'


@contextmanager
def serve_process(
    cortex: Path, tmp_path: Path, tls: Any, key: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`python -m noemafed serve --port 0` with TLS and a key, as an operator runs it; yields (process, port)."""
    cert, key_file = tls.write_server_files(tmp_path)
    log = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "NOEMA_MCP_KEY": key}
    argv = [sys.executable, "-m", "noemafed", "--cortex", str(cortex), "serve", "--port", "0"]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [*argv, "--tls-cert", str(cert), "--tls-key", str(key_file)], stdout=sink, stderr=sink, env=env
        )
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"listening on https://127\.0\.0\.1:(\d+)/mcp", log.read_text())):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield proc, int(found[1])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_ten_thousand_wrong_keys_are_all_401_and_serve_stays_up(tmp_path: Path) -> None:
    """10,000 requests with wrong bearer keys against a keyed `noemafed serve` (TLS, its own process), from 4
    threads. Expected: every one answered 401 with noema's body, the process still up, and a sync with the
    right key then pulls the whole log."""
    cortex = source(tmp_path, "served", count=1)
    tls = make_tls()
    context = tls.client_context()
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}).encode()
    statuses: dict[bytes, int] = {}
    lock = threading.Lock()

    def hammer(port: int, worker: int) -> None:
        session: ssl.SSLSession | None = None
        seen: dict[bytes, int] = {}
        for n in range(worker, WRONG_KEYS, CLIENT_THREADS):
            head = (
                f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer wrong-{n}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            with context.wrap_socket(raw, server_hostname="localhost", session=session) as conn:
                conn.sendall(head.encode() + body)
                answer = b""
                while chunk := conn.recv(65536):
                    answer += chunk
                session = conn.session
            status = answer.split(b" ", 2)[1] if answer else b"(nothing)"
            seen[status] = seen.get(status, 0) + 1
            assert answer.endswith(b"\r\n\r\n" + UNAUTHORIZED), answer
        with lock:
            for status, count in seen.items():
                statuses[status] = statuses.get(status, 0) + count

    with serve_process(cortex, tmp_path, tls, "ring-key") as (proc, port):
        workers = [threading.Thread(target=hammer, args=(port, n)) for n in range(CLIENT_THREADS)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        assert statuses == {b"401": WRONG_KEYS}
        assert proc.poll() is None
        ca = tls.write_ca(tmp_path / "ca.pem")
        target = target_with(
            tmp_path, [{"name": "served", "endpoint": f"https://localhost:{port}", "ca": str(ca)}]
        )
        done = run_cli(["--cortex", str(target), "sync", "--once"], env={"NOEMA_MCP_KEY": "ring-key"})
        assert done.exit_code == 0, done.stdout + done.stderr
    assert events(target) == events(cortex)
