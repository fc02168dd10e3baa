"""One poll of one peer, step by step, through PeerPoller itself: what mutation testing of the syncer found
unpinned (docs/testing.md). Real peers on 127.0.0.1, real SQLite; every text and field asserted exactly."""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import db, put_state, state_rows
from peers import hostile_peer
from peers.stdlib_peer import StdlibPeer
from sync_helpers import check_db, events, source, target_with
from ulid import ULID

from noemafed.cortex.access import AccessKey
from noemafed.cortex.events import EVENT_COLUMNS, Event, event_from_row, page_json
from noemafed.cortex.manifest import read_manifest
from noemafed.cortex.open import open_cortex
from noemafed.errors import ExitCode
from noemafed.federation import syncer
from noemafed.federation.classify import Phase, Reason
from noemafed.federation.replay import PageResult
from noemafed.federation.syncer import PeerPoller, PollResult, SyncContext, SyncOptions
from noemafed.logs import Level, Log
from noemafed.mcp.client import Deadline
from noemafed.text.clock import REAL_CLOCK, Clock

Logs = list[tuple[Level, str]]
Page = list[dict[str, Any]]

PEER = "src"
NOT_CANONICAL = "is not a canonical ULID (26 upper-case Crockford base32 characters)"
DEADLINE_TEXT = "deadline exceeded (the run's --max-duration ran out)"


def run_poll(
    target: Path,
    options: SyncOptions | None = None,
    *,
    stop: threading.Event | None = None,
    deadline: Deadline | None = None,
    on_batch: Callable[[Sequence[Event], PageResult], None] | None = None,
    clock: Clock = REAL_CLOCK,
    failing_log: tuple[str, int] | None = None,
) -> tuple[PollResult, Logs]:
    """One poll of the target's only peer, as `sync --once` makes it, with its log lines kept; with
    `failing_log` (a prefix and an errno), writing a line that starts with the prefix fails with that errno, as
    a full disk under the log or a reader gone from its pipe makes it fail."""
    manifest = read_manifest(target)
    logs: Logs = []

    def sink(level: Level, line: str) -> None:
        if failing_log is not None and line.startswith(failing_log[0]):
            raise OSError(failing_log[1], os.strerror(failing_log[1]))
        logs.append((level, line))

    ctx = SyncContext(target, manifest, AccessKey(), options or SyncOptions(), Log(sink), clock)
    [peer] = manifest.peers
    cortex = open_cortex(target)
    try:
        poller = PeerPoller(cortex, peer, ctx, stop)
        poller.on_batch = on_batch
        result = poller.poll(deadline or Deadline(None))
    finally:
        cortex.close()
    return result, logs


def source_page(src: Path) -> Page:
    """The source's whole log, as a peer serves it (JSON objects, so a test can bend one)."""
    conn = db(src)
    rows = conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY id").fetchall()
    conn.close()
    return json.loads(page_json(event_from_row(row) for row in rows))


def serve(page: Page) -> Callable[[str, int], str]:
    """A page_override that serves `page` by cursor, in its order, as a peer serves its log."""

    def answer(since: str, limit: int) -> str:
        rest = [event for event in page if event["id"] > since][:limit]
        return json.dumps(rest) if rest else "null"

    return answer


def identity_line(src: Path) -> tuple[Level, str]:
    return (Level.INFO, f'[federation] peer "{PEER}" identity pinned: {src.name} ({read_manifest(src).id})')


def page_line(page: int, applied: int, cursor: str) -> tuple[Level, str]:
    return (Level.INFO, f'[sync] peer "{PEER}": page {page}, {applied} events applied, cursor {cursor}')


def batches_seen(into: list[list[str]]) -> Callable[[Sequence[Event], PageResult], None]:
    """An on_batch that records each batch's ids, checking the result it is given is that batch's."""

    def seen(batch: Sequence[Event], result: PageResult) -> None:
        ids = [event.id for event in batch]
        assert [outcome.event_id for outcome in result.outcomes] == ids[: len(result.outcomes)]
        into.append(ids)

    return seen


def health(target: Path) -> dict[str, Any]:
    return json.loads(state_rows(target)[f"peer:{PEER}:health"])


# ---- pages with nothing in them -------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "[]", "null"])
def test_an_empty_answer_is_caught_up_without_a_page(tmp_path: Path, text: str) -> None:
    """The three texts a peer with nothing new sends: caught up, and no page line in the log."""
    src = source(tmp_path, count=1)
    with StdlibPeer(src, page_override=text) as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        result, logs = run_poll(target)
    assert (result.ok, result.caught_up, result.pages, result.events_applied) == (True, True, 1, 0)
    assert logs == [identity_line(src)]


def test_an_empty_array_with_whitespace_is_a_page_of_no_events(tmp_path: Path) -> None:
    """`[ ]` is no short-cut text: it is parsed, logged as a page of nothing, and the poll is caught up."""
    src = source(tmp_path, count=1)
    with StdlibPeer(src, page_override=" [ ]\n") as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        result, logs = run_poll(target)
    assert (result.ok, result.caught_up, result.pages, result.events_applied) == (True, True, 1, 0)
    assert logs == [identity_line(src), page_line(1, 0, "")]


def test_a_failure_without_an_event_records_no_event_or_trace(tmp_path: Path) -> None:
    src = source(tmp_path, count=1)
    with StdlibPeer(src, mode="subscribe") as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        result, _ = run_poll(target)
    assert result == result._replace(
        ok=False,
        reason=Reason.OTHER,
        phase=Phase.EVENTS,
        exit_code=ExitCode.PEER_TRANSIENT,
        event_id="",
        trace_id="",
        retry_after="",  # no HTTP status in its causes
        out_of_time=False,
    )
    assert set(health(target)["last_error"]) == {"reason", "observed_at"}


# ---- batches, and where a page stops -------------------------------------------------------------------


def test_a_page_is_replayed_batch_by_batch_each_event_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(syncer, "REPLAY_BATCH", 2)
    src = source(tmp_path, count=3)
    ids = [event["id"] for event in source_page(src)]
    assert len(ids) == 5
    with StdlibPeer(src) as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        batches: list[list[str]] = []
        result, logs = run_poll(target, on_batch=batches_seen(batches))
    assert batches == [ids[0:2], ids[2:4], ids[4:5]]
    assert (result.ok, result.events_applied, result.caught_up) == (True, 5, True)
    assert logs[1] == page_line(1, 5, ids[-1])
    assert events(target) == events(src)


def test_max_events_cuts_the_last_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syncer, "REPLAY_BATCH", 2)
    src = source(tmp_path, count=3)
    ids = [event["id"] for event in source_page(src)]
    with StdlibPeer(src) as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        batches: list[list[str]] = []
        result, _ = run_poll(target, SyncOptions(max_events=3), on_batch=batches_seen(batches))
        assert batches == [ids[0:2], ids[2:3]]
        assert (result.ok, result.events_applied, result.caught_up) == (True, 3, False)
        assert (result.cursor_before, result.cursor_after) == ("", ids[2])
        assert result.seconds > 0
        result, _ = run_poll(target)  # the rest, from where the first poll stopped
    assert (result.ok, result.events_applied, result.cursor_before, result.cursor_after) == (
        True,
        2,
        ids[2],
        ids[4],
    )


@pytest.mark.parametrize(
    ("bend", "problem"),
    [
        (lambda good: good.lower(), NOT_CANONICAL),
        # Not a ULID, and before the cursor as text: refused for what it is, not as an id that does not advance
        # (ids are compared only once they are known to be ULIDs).
        (lambda good: "0", NOT_CANONICAL),
    ],
)
def test_replay_stops_right_before_a_refused_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bend: Callable[[str], str], problem: str
) -> None:
    monkeypatch.setattr(syncer, "REPLAY_BATCH", 2)
    src = source(tmp_path, count=3)
    page = source_page(src)
    ids = [event["id"] for event in page]
    page[3]["id"] = bad = bend(ids[3])
    with StdlibPeer(src, page_override=json.dumps(page)) as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        batches: list[list[str]] = []
        result, logs = run_poll(target, on_batch=batches_seen(batches))
    assert batches == [ids[0:2], ids[2:3]]
    assert result == result._replace(
        ok=False,
        reason=Reason.INVALID_EVENT_ID,
        phase=Phase.EVENTS,
        message=f"sync_events returned event {bad} whose id {problem}; cursor pinned before it",
        needs_operator=True,
        exit_code=ExitCode.PEER_NEEDS_OPERATOR,
        event_id=bad,
        trace_id=page[3]["trace_id"],
        events_applied=3,
        cursor_after=ids[2],
    )
    assert [row[0] for row in events(target)] == ids[:3]
    assert all(not line.startswith("[sync]") for _, line in logs)  # a refused page is no page
    check_db(target)


def _future_id(seconds: float) -> str:
    return str(ULID.from_timestamp(time.time() + seconds))


def test_the_allowed_skew_is_counted_in_milliseconds_of_the_id(tmp_path: Path) -> None:
    """A skew of 100,000 s allows an id 99,950 s ahead and refuses one 100,050 s ahead, naming both times
    in whole seconds."""
    src = source(tmp_path, count=1)
    page = source_page(src)
    ids = [event["id"] for event in page]
    page[-1]["id"] = _future_id(99_950)
    with StdlibPeer(src, page_override=serve(page)) as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        result, _ = run_poll(target, SyncOptions(max_future_skew=100_000))
        assert (result.ok, result.events_applied) == (True, 2), result
        page.append({**page[-1], "id": _future_id(100_050)})
        result, _ = run_poll(target, SyncOptions(max_future_skew=100_000))
    assert (result.ok, result.reason, result.event_id) == (False, Reason.INVALID_EVENT_ID, page[-1]["id"])
    prefix = f"sync_events returned event {page[-1]['id']} whose id is dated "
    assert result.message.startswith(prefix), result.message
    ahead, rest = result.message[len(prefix) :].split(" ", 1)
    assert ahead.isdigit()  # whole seconds...
    assert 100_040 <= int(ahead) <= 100_050  # ...however long the poll took
    assert rest == "s ahead of this host's clock (at most 100000 s allowed); cursor pinned before it"
    assert ids[0] in [row[0] for row in events(target)]


# ---- a poll stopped between batches ---------------------------------------------------------------------


def test_a_stop_signal_ends_the_poll_between_batches_unrecorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(syncer, "REPLAY_BATCH", 2)
    src = source(tmp_path, count=3)
    ids = [event["id"] for event in source_page(src)]
    stop = threading.Event()
    with StdlibPeer(src) as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        result, _ = run_poll(target, stop=stop, on_batch=lambda _batch, _result: stop.set())
    assert result == result._replace(
        ok=False,
        reason=Reason.OTHER,
        phase=Phase.EVENTS,
        message="stopped",
        needs_operator=False,
        exit_code=ExitCode.PEER_TRANSIENT,
        events_applied=2,
        cursor_after=ids[1],
        out_of_time=False,
        poison_record=None,
    )
    assert f"peer:{PEER}:health" not in state_rows(target)  # shutdown is not the peer's failure
    assert [row[0] for row in events(target)] == ids[:2]


def test_the_runs_deadline_ends_the_poll_between_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(syncer, "REPLAY_BATCH", 2)
    src = source(tmp_path, count=3)
    ids = [event["id"] for event in source_page(src)]
    deadline = Deadline(1.5)

    def outlast(_batch: Sequence[Event], _result: PageResult) -> None:
        time.sleep(max(0.0, deadline.remaining() or 0.0) + 0.01)

    with StdlibPeer(src) as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        result, _ = run_poll(target, deadline=deadline, on_batch=outlast)
    assert result == result._replace(
        ok=False,
        reason=Reason.NETWORK_TIMEOUT,
        phase=Phase.EVENTS,
        message=f"syncing events: {DEADLINE_TEXT}",
        exit_code=ExitCode.PEER_TRANSIENT,
        events_applied=2,
        cursor_after=ids[1],
        out_of_time=True,
    )
    assert health(target)["last_error"]["reason"] == "network_timeout"


# ---- the page fetched ahead ---------------------------------------------------------------------------


def test_the_page_ahead_is_fetched_on_a_named_daemon_thread(tmp_path: Path) -> None:
    src = source(tmp_path, count=3)
    page = source_page(src)
    fetchers: list[list[tuple[str, bool]]] = []
    pages = serve(page)

    def answer(since: str, limit: int) -> str:
        if since:  # page 2 and on: asked for by the thread that fetches ahead, which is waiting for this
            fetchers.append([(t.name, t.daemon) for t in threading.enumerate() if t.name.endswith("-ahead")])
        return pages(since, limit)

    with StdlibPeer(src, page_override=answer) as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        result, _ = run_poll(target, SyncOptions(page_size=2))
    assert (result.ok, result.events_applied, result.pages) == (True, 5, 3)
    assert fetchers == [[(f"peer-{PEER}-ahead", True)]] * 2


def test_a_page_ahead_whose_fetch_fails_fails_the_poll(tmp_path: Path) -> None:
    src = source(tmp_path, count=3)
    page = source_page(src)
    ids = [event["id"] for event in page]

    def cut_page_two(client: socket.socket, forwarded: hostile_peer.Forwarded) -> None:
        if json.loads(forwarded.request)["params"]["arguments"].get("since"):
            hostile_peer.truncated(0.5)(client, forwarded)
        else:
            client.sendall(forwarded.whole())

    with (
        StdlibPeer(src, page_override=serve(page)) as backend,
        hostile_peer.HostilePeer(backend, "sync_events", cut_page_two) as peer,
    ):
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        result, _ = run_poll(target, SyncOptions(page_size=2))
    assert (result.ok, result.reason, result.phase) == (False, Reason.NETWORK_EOF, Phase.EVENTS)
    assert result.message.startswith("calling sync_events: "), result.message
    assert (result.events_applied, result.cursor_after) == (2, ids[1])


# ---- a failure no step names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("refusal", "message", "reason"),
    [
        # A constraint: the write was refused, not failed; named with its type, as anything unexpected is.
        (
            "SELECT RAISE(ABORT, 'read-only here')",
            "replay: unexpected StateError: writing federation_state 'peer:src:last_event': read-only here",
            Reason.OTHER,
        ),
        # SQLite failing at run time (as a full or locked database does): this host's storage, not the peer.
        (
            "SELECT abs(-9223372036854775808)",
            "replay: local storage: writing federation_state 'peer:src:last_event': integer overflow",
            Reason.LOCAL_STORAGE,
        ),
    ],
)
def test_storage_failing_under_replay_is_named_with_the_replay_phase(
    tmp_path: Path, refusal: str, message: str, reason: Reason
) -> None:
    """The cursor's row cannot be written (a real SQLite failure, from a trigger): no step names that failure,
    so the poll does, with the phase it was in."""
    src = source(tmp_path, count=1)
    with StdlibPeer(src) as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        conn = db(target)
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON federation_state WHEN NEW.key = 'peer:src:last_event' "
            f"BEGIN {refusal}; END"
        )
        conn.close()
        result, _ = run_poll(target)
    assert (result.ok, result.phase, result.reason, result.message) == (False, Phase.REPLAY, reason, message)
    assert (result.exit_code, result.events_applied, result.category) == (ExitCode.PEER_TRANSIENT, 0, "other")
    assert health(target)["last_error"]["reason"] == reason
    assert events(target) == []


@pytest.mark.parametrize(
    ("error", "reason", "message"),
    [
        # A full disk under the daemon's log: this host's storage.
        (errno.ENOSPC, Reason.LOCAL_STORAGE, "events: local storage: [Errno 28] No space left on device"),
        # Out of file descriptors: named with its type, and no network reason (nothing here came from the peer).
        (errno.EMFILE, Reason.OTHER, "events: unexpected OSError: [Errno 24] Too many open files"),
        # Bug: our own log's reader gone (EPIPE) was the peer's network_reset. The peer's own socket errors all
        # come wrapped as WireError; a bare OSError is this host's.
        (errno.EPIPE, Reason.OTHER, "events: unexpected BrokenPipeError: [Errno 32] Broken pipe"),
        (
            errno.ECONNRESET,
            Reason.OTHER,
            "events: unexpected ConnectionResetError: [Errno 104] Connection reset by peer",
        ),
    ],
)
def test_a_failure_after_a_batch_is_named_with_the_events_phase(
    tmp_path: Path, error: int, reason: Reason, message: str
) -> None:
    """Replay is over once its batch is: the log line after it failing is a failure of the events phase."""
    src = source(tmp_path, count=1)
    ids = [event["id"] for event in source_page(src)]
    with StdlibPeer(src) as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        result, _ = run_poll(target, failing_log=("[sync]", error))
    assert (result.ok, result.phase, result.reason, result.message) == (False, Phase.EVENTS, reason, message)
    assert (result.events_applied, result.cursor_after, result.category) == (2, ids[-1], "other")
    assert health(target)["last_error"]["reason"] == reason


def test_a_failure_before_any_batch_is_named_with_the_events_phase(tmp_path: Path) -> None:
    """A page of nothing (`[ ]`) is logged with no batch replayed: the events phase is the poll's own."""
    src = source(tmp_path, count=1)
    with StdlibPeer(src, page_override=" [ ]\n") as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        result, _ = run_poll(target, failing_log=("[sync]", errno.ENOSPC))
    assert (result.ok, result.phase, result.reason, result.message) == (
        False,
        Phase.EVENTS,
        Reason.LOCAL_STORAGE,
        "events: local storage: [Errno 28] No space left on device",
    )


def test_a_failure_in_the_handshake_is_named_with_the_identity_phase(tmp_path: Path) -> None:
    """The pin's log line is written while the identity is checked: its failure is the identity phase's."""
    src = source(tmp_path, count=1)
    with StdlibPeer(src, server_version="9.9.9") as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        result, _ = run_poll(target, failing_log=(identity_line(src)[1], errno.ENOSPC))
    assert (result.ok, result.phase, result.reason, result.message) == (
        False,
        Phase.IDENTITY,
        Reason.LOCAL_STORAGE,
        "identity: local storage: [Errno 28] No space left on device",
    )
    assert (result.peer_version, result.peer_cortex_id, result.events_applied) == ("9.9.9", "", 0)


# ---- usage rows (best effort: only logged) ---------------------------------------------------------------


def _usage_answer(src: Path, answer: hostile_peer.Answer) -> tuple[PollResult, Logs, Path]:
    """A poll of `src` whose sync_read_signal is answered by `answer`; the target is made next to `src`."""
    with (
        StdlibPeer(src) as backend,
        hostile_peer.HostilePeer(backend, "sync_read_signal", answer) as peer,
    ):
        target = target_with(src.parent, [{"name": PEER, "endpoint": peer.endpoint}])
        result, logs = run_poll(target)
    return result, logs, target


def usage_warning(err: str) -> tuple[Level, str]:
    return (
        Level.WARNING,
        f'[federation] peer "{PEER}": read-signal sync failed (events already applied): {err}',
    )


def test_a_failure_of_this_host_while_merging_usage_is_named_with_the_usage_phase(tmp_path: Path) -> None:
    """Usage is best effort, but this host's storage failing there fails the poll, in the usage phase."""
    src = source(tmp_path, count=1)
    with (
        StdlibPeer(src) as backend,
        hostile_peer.HostilePeer(backend, "sync_read_signal", hostile_peer.tool_text("{}")) as peer,
    ):
        target = target_with(src.parent, [{"name": PEER, "endpoint": peer.endpoint}])
        result, _ = run_poll(target, failing_log=(usage_warning("")[1], errno.ENOSPC))
    assert (result.ok, result.phase, result.reason, result.message) == (
        False,
        Phase.USAGE,
        Reason.LOCAL_STORAGE,
        "usage: local storage: [Errno 28] No space left on device",
    )
    assert result.events_applied == 2


def _refusal(text: str) -> hostile_peer.Answer:
    def change(message: Any) -> Any:
        message["result"] = {"content": [{"type": "text", "text": text}], "isError": True}
        return message

    return hostile_peer.bent(change)


@pytest.mark.parametrize(
    ("answer", "warning"),
    [
        (_refusal("reads are private here"), "peer sync_read_signal refused: reads are private here"),
        (hostile_peer.tool_text("[1]"), "parsing sync_read_signal response: not an array of objects"),
        (hostile_peer.tool_text("{}"), "parsing sync_read_signal response: not an array of objects"),
        (
            hostile_peer.tool_text("{"),
            "parsing sync_read_signal response: Expecting property name enclosed in double quotes: line 1 "
            "column 2 (char 1)",
        ),
    ],
)
def test_a_usage_answer_that_is_no_rows_is_a_warning_and_the_poll_succeeds(
    tmp_path: Path, answer: hostile_peer.Answer, warning: str
) -> None:
    src = source(tmp_path, count=1)
    result, logs, target = _usage_answer(src, answer)
    assert (result.ok, result.usage_rows, result.events_applied) == (True, 0, 2)
    assert logs[-1] == usage_warning(warning)
    assert f"peer:{PEER}:last_usage" not in state_rows(target)


@pytest.mark.parametrize(
    "refusal",
    [
        "tool 'sync_read_signal' not found: tool not found",
        "Tool not found: sync_read_signal",
        "-32601",
        "method not found",
        "Method not found",
        "Unknown tool: sync_read_signal",
    ],
)
def test_a_peer_without_the_usage_tool_is_not_warned_about(tmp_path: Path, refusal: str) -> None:
    src = source(tmp_path, count=1)
    result, logs, _ = _usage_answer(src, _refusal(refusal))
    assert (result.ok, result.usage_rows) == (True, 0)
    assert all(level is not Level.WARNING for level, _ in logs), logs


@pytest.mark.parametrize("text", ["", "[]", "null"])
def test_an_empty_usage_answer_is_nothing_to_merge(tmp_path: Path, text: str) -> None:
    src = source(tmp_path, count=1)
    result, logs, target = _usage_answer(src, hostile_peer.tool_text(text))
    assert (result.ok, result.usage_rows) == (True, 0)
    assert all(level is not Level.WARNING for level, _ in logs), logs
    assert f"peer:{PEER}:last_usage" not in state_rows(target)


def _usage_rows(src: Path, count: int) -> str:
    conn = db(src)
    trace = conn.execute("SELECT id FROM traces LIMIT 1").fetchone()[0]
    conn.close()
    own = read_manifest(src).id
    rows = [
        {
            "trace_id": trace,
            "peer_cortex_id": own,
            "read_count": n + 1,
            "modify_count": 0,
            "updated_at": f"2026-01-02T00:{n // 60:02d}:{n % 60:02d}Z",
        }
        for n in range(count)
    ]
    return json.dumps(rows)


def test_a_usage_page_of_exactly_the_limit_is_merged(tmp_path: Path) -> None:
    src = source(tmp_path, count=1)
    result, logs, target = _usage_answer(src, hostile_peer.tool_text(_usage_rows(src, 500)))
    assert (result.ok, result.usage_rows) == (True, 500)
    assert all(level is not Level.WARNING for level, _ in logs), logs
    assert state_rows(target)[f"peer:{PEER}:last_usage"] == "2026-01-02T00:08:19Z"


def test_a_usage_answer_may_be_larger_than_other_answers(tmp_path: Path) -> None:
    """sync_read_signal has its own budget (16 MiB), above the 1 MiB of a handshake's answers."""
    src = source(tmp_path, count=1)
    [row] = json.loads(_usage_rows(src, 1))
    padded = json.dumps([{**row, "padding": "x" * (2 * 1024 * 1024)}])  # a field replay does not read
    result, logs, target = _usage_answer(src, hostile_peer.tool_text(padded))
    assert (result.ok, result.usage_rows) == (True, 1)
    assert all(level is not Level.WARNING for level, _ in logs), logs
    assert state_rows(target)[f"peer:{PEER}:last_usage"] == row["updated_at"]


def test_a_usage_page_over_the_limit_is_refused_with_its_text(tmp_path: Path) -> None:
    src = source(tmp_path, count=1)
    result, logs, _ = _usage_answer(src, hostile_peer.tool_text(_usage_rows(src, 501)))
    assert (result.ok, result.usage_rows) == (True, 0)
    assert logs[-1] == usage_warning("peer returned too many usage rows")


@pytest.mark.parametrize(
    "bend",
    [
        lambda row: {**row, "peer_cortex_id": "01JQ9A3C5E7G9J1K3M5N7P9R2T"},  # another cortex, with a cursor
        lambda row: {**row, "updated_at": ""},  # its own, without a cursor
    ],
)
def test_usage_rows_not_the_peers_own_are_refused_with_their_text(tmp_path: Path, bend: Any) -> None:
    src = source(tmp_path, count=1)
    rows = [bend(row) for row in json.loads(_usage_rows(src, 1))]
    result, logs, _ = _usage_answer(src, hostile_peer.tool_text(json.dumps(rows)))
    assert (result.ok, result.usage_rows) == (True, 0)
    assert logs[-1] == usage_warning("peer returned usage rows with invalid ownership or cursor")


# ---- skip-event's fetch of the one event after the cursor ---------------------------------------------------


def next_event(target: Path, deadline: Deadline | None = None) -> Event | None:
    manifest = read_manifest(target)
    ctx = SyncContext(target, manifest, AccessKey(), SyncOptions(), Log())
    [peer] = manifest.peers
    cortex = open_cortex(target)
    try:
        return PeerPoller(cortex, peer, ctx).next_event(deadline or Deadline(None))
    finally:
        cortex.close()


def next_event_refusal(target: Path, deadline: Deadline | None = None) -> syncer.PollError:
    with pytest.raises(syncer.PollError) as info:
        next_event(target, deadline)
    return info.value


def test_next_event_is_the_first_event_after_the_cursor(tmp_path: Path) -> None:
    src = source(tmp_path, count=3)
    rows = events(src)
    with StdlibPeer(src) as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        put_state(target, **{f"peer:{PEER}:last_event": rows[1][0]})
        event = next_event(target)
        [asked] = [request.rpc for request in peer.requests if request.tool == "sync_events"]
    assert event is not None
    assert (event.id, event.action, event.trace_id, event.data) == (
        rows[2][0],
        rows[2][1],
        rows[2][2],
        rows[2][6],
    )
    assert asked is not None
    assert asked["params"]["arguments"] == {"limit": 1, "since": rows[1][0]}
    assert events(target) == []  # fetched, not stored


@pytest.mark.parametrize("text", ["", "[]", "null", " [ ]\n"])
def test_next_event_is_none_when_the_peer_serves_nothing_after_the_cursor(tmp_path: Path, text: str) -> None:
    """Bug: `[ ]` (an empty page, however written) failed skip-event with an IndexError."""
    src = source(tmp_path, count=1)
    with StdlibPeer(src, page_override=text) as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        assert next_event(target) is None


def test_next_event_keeps_to_its_deadline(tmp_path: Path) -> None:
    src = source(tmp_path, count=1)
    with StdlibPeer(src) as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        error = next_event_refusal(target, Deadline(0.0))
    assert (error.message, error.phase, error.outcome.reason) == (
        f"MCP initialize: {DEADLINE_TEXT}",
        Phase.INITIALIZE,
        Reason.NETWORK_TIMEOUT,
    )


def _broken_page_text() -> str:
    from noemafed.cortex.events import EventFormatError, read_page

    with pytest.raises(EventFormatError) as info:
        read_page("[{")
    return str(info.value)


@pytest.mark.parametrize(
    ("bend", "message", "reason", "names_the_event"),
    [
        (
            lambda page, cursor: "[{",
            f"parsing sync_events response: {_broken_page_text()}",
            Reason.OTHER,
            False,
        ),
        (
            lambda page, cursor: json.dumps([{**page[2], "id": page[2]["id"].lower()}]),
            "sync_events returned event {lower} whose id " + NOT_CANONICAL + "; cursor pinned before it",
            Reason.INVALID_EVENT_ID,
            True,
        ),
        (
            lambda page, cursor: json.dumps(page[2:4]),
            "sync_events returned 2 events for a limit of 1",
            Reason.OTHER,
            False,
        ),
        (
            lambda page, cursor: json.dumps(page[1:2]),
            "sync_events returned non-advancing event id {cursor} after {cursor}",
            Reason.OTHER,
            False,
        ),
    ],
)
def test_next_event_refuses_what_a_poll_refuses(
    tmp_path: Path, bend: Callable[[Page, str], str], message: str, reason: Reason, names_the_event: bool
) -> None:
    src = source(tmp_path, count=3)
    page = source_page(src)
    cursor = page[1]["id"]
    with StdlibPeer(src, page_override=bend(page, cursor)) as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        put_state(target, **{f"peer:{PEER}:last_event": cursor})
        error = next_event_refusal(target)
    lower = page[2]["id"].lower()
    assert (error.message, error.phase, error.outcome.reason) == (
        message.format(lower=lower, cursor=cursor),
        Phase.EVENTS,
        reason,
    )
    named = (lower, page[2]["trace_id"]) if names_the_event else ("", "")
    assert (error.event_id, error.trace_id) == named


def test_a_usage_cursor_that_is_not_text_refuses_the_page(tmp_path: Path) -> None:
    """The usage cursor is the last row's updated_at, and only ever text: a page with a number there is refused."""
    src = source(tmp_path, count=1)
    [row] = json.loads(_usage_rows(src, 1))
    result, logs, target = _usage_answer(src, hostile_peer.tool_text(json.dumps([{**row, "updated_at": 5}])))
    assert (result.ok, result.usage_rows) == (True, 0)
    assert logs[-1] == usage_warning("merging remote usage: updated_at must be a string")
    assert f"peer:{PEER}:last_usage" not in state_rows(target)


def test_a_busy_peers_retry_after_reaches_the_result(tmp_path: Path) -> None:
    """The Retry-After of a 429 is found in the failure's causes (the status error under the poll's)."""
    from peers.counting import CountingPeer

    with CountingPeer(answer=(429, "120")) as busy:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": busy.endpoint}])
        result, _ = run_poll(target)
    assert (result.ok, result.phase, result.retry_after) == (False, Phase.INITIALIZE, "120")


# ---- the handshake ---------------------------------------------------------------------------------------

KEY_A = "ed25519:0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc="
KEY_B = "ed25519:LB+0jMLPWjc+6yXzZFm8KOGQCwjA2YzdGgbNEfcDCJo="


def test_the_identity_call_sends_an_empty_map_of_arguments(tmp_path: Path) -> None:
    """Both noemas deserialize the arguments as a map (rmcp refuses null)."""
    src = source(tmp_path, count=1)
    with StdlibPeer(src) as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        result, _ = run_poll(target)
        [asked] = [request.rpc for request in peer.requests if request.tool == "cortex_identity"]
    assert result.ok
    assert asked is not None
    assert asked["params"] == {"name": "cortex_identity", "arguments": {}}


def test_a_refused_identity_is_the_identity_phases_failure(tmp_path: Path) -> None:
    src = source(tmp_path, count=1)
    with StdlibPeer(src, identity_error="not for you") as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        result, _ = run_poll(target)
    assert (result.ok, result.phase, result.message) == (
        False,
        Phase.IDENTITY,
        f'peer "{PEER}" cortex_identity refused: not for you',
    )


def test_an_identity_call_cut_short_names_what_broke(tmp_path: Path) -> None:
    src = source(tmp_path, count=1)
    with (
        StdlibPeer(src) as backend,
        hostile_peer.HostilePeer(backend, "cortex_identity", hostile_peer.truncated()) as peer,
    ):
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        result, _ = run_poll(target)
    assert (result.ok, result.phase, result.reason) == (False, Phase.IDENTITY, Reason.NETWORK_EOF)
    assert result.message.startswith(
        "calling cortex_identity: reading cortex_identity response: unexpected EOF ("
    ), result.message


def test_the_peers_hard_pinned_key_is_checked(tmp_path: Path) -> None:
    from peers import payloads

    src = source(tmp_path, count=1)
    answer = payloads.identity_payload(payloads.read_info(src)) | {"pubkey": KEY_B}
    with StdlibPeer(src, identity=answer) as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint, "pubkey": KEY_A}])
        result, _ = run_poll(target)
    assert (result.ok, result.phase, result.reason) == (False, Phase.IDENTITY, "identity_mismatch")
    assert events(target) == []


# ---- poison records ----------------------------------------------------------------------------------------


def test_a_poison_record_is_cleared_by_success_or_a_cursor_past_its_event(tmp_path: Path) -> None:
    src = source(tmp_path, count=3)
    page = source_page(src)
    served: list[str] = []
    with StdlibPeer(src, page_override=lambda since, limit: served[-1]) as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        key = f"noemafed:poison:{PEER}"
        teleport = [*page[:1], {**page[1], "action": "teleport"}]
        served.append(json.dumps(teleport))
        result, _ = run_poll(target)
        assert (result.ok, result.event_id) == (False, page[1]["id"])
        assert key in state_rows(target)
        served.append("null")  # a success that never reached the event: the peer no longer stops there
        result, _ = run_poll(target)
        assert result.ok
        assert key not in state_rows(target)
        served.append(json.dumps(teleport[1:]))  # from the cursor on, as a peer serves it
        run_poll(target)
        assert key in state_rows(target)
        # A failure that names no replayed event, after the cursor passed the recorded one: cleared too.
        served.append(json.dumps([*page[1:3], {**page[3], "id": page[3]["id"].lower()}]))
        result, _ = run_poll(target)
        assert (result.ok, result.reason, result.cursor_after) == (
            False,
            Reason.INVALID_EVENT_ID,
            page[2]["id"],
        )
        assert key not in state_rows(target)


# ---- a stopped poll does not wait for the page fetched ahead -----------------------------------------------


def test_a_stopped_poll_leaves_a_hanging_page_ahead_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(syncer, "REPLAY_BATCH", 2)
    src = source(tmp_path, count=3)
    page = source_page(src)
    pages = serve(page)
    stop = threading.Event()
    stopped_at: list[float] = []
    with StdlibPeer(src) as peer:

        def answer(since: str, limit: int) -> str:
            if since:  # page 2, fetched ahead: hangs until the peer stops
                peer._stopping.wait(30)
            return pages(since, limit)

        def stop_now(_batch: Sequence[Event], _result: PageResult) -> None:
            stopped_at.append(time.monotonic())
            stop.set()

        peer.knobs.page_override = answer
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        result, _ = run_poll(target, SyncOptions(page_size=4), stop=stop, on_batch=stop_now)
        returned = time.monotonic()
    assert (result.ok, result.message, result.events_applied) == (False, "stopped", 2)
    # Shutdown does not give the fetch its grace (AHEAD_GRACE_SECONDS): the session is left to expire.
    assert returned - stopped_at[0] < 0.9


# ---- health, at a fixed time ------------------------------------------------------------------------------


def test_health_records_the_failure_and_then_the_success_at_the_polls_time(tmp_path: Path) -> None:
    src = source(tmp_path, count=1)
    page = source_page(src)
    served = [json.dumps([{**page[0], "action": "teleport"}])]
    at = "2026-04-20T12:00:00Z"
    clock = Clock(fixed=1776686400.0)
    assert clock.rfc3339() == at
    with StdlibPeer(src, page_override=lambda since, limit: served[-1], server_version="9.9.9") as peer:
        target = target_with(tmp_path, [{"name": PEER, "endpoint": peer.endpoint}])
        result, _ = run_poll(target, clock=clock)
        assert result.reason == Reason.UNKNOWN_ACTION
        assert health(target) == {
            "version": "9.9.9",
            "version_observed_at": at,
            "consecutive_failures": 1,
            "last_error": {
                "reason": "unknown_action",
                "event_id": page[0]["id"],
                "trace_id": page[0]["trace_id"],
                "observed_at": at,
            },
        }
        served.append("null")
        result, _ = run_poll(target, clock=clock)
    assert result.ok
    assert health(target) == {"version": "9.9.9", "version_observed_at": at, "last_success": at}


def test_a_failed_poll_is_categorized_and_a_health_it_cannot_store_leaves_no_poison_record(
    tmp_path: Path,
) -> None:
    target = target_with(tmp_path, [{"name": PEER, "endpoint": "http://127.0.0.1:1"}])
    conn = db(target)
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON federation_state WHEN NEW.key = 'peer:src:health' "
        "BEGIN SELECT RAISE(ABORT, 'read-only here'); END"
    )
    conn.close()
    result, logs = run_poll(target)
    assert (result.ok, result.reason, result.category, result.poison_record) == (
        False,
        Reason.NETWORK_REFUSED,
        "refused",
        None,
    )
    assert logs[-1] == (
        Level.WARNING,
        f"[federation] peer \"{PEER}\": could not persist health: writing federation_state 'peer:src:health': "
        "read-only here",
    )


# ---- this cortex's own records unreadable (a real SQLite error for one key, through a view) ------------------


def test_a_cursor_that_cannot_be_read_is_warned_about_and_the_report_falls_back_to_none(
    tmp_path: Path,
) -> None:
    """The report's bookkeeping reads the cursor before and after the poll: a read that fails is a warning,
    twice, and the result says no cursor rather than crashing."""
    from test_identity import refuse_reads

    target = target_with(tmp_path, [{"name": PEER, "endpoint": "http://127.0.0.1:1"}])
    put_state(target, **{f"peer:{PEER}:last_event": "01ARZ3NDEKTSV4RRFFQ69G5FAV"})
    conn = db(target)
    refuse_reads(conn, f"peer:{PEER}:last_event")
    conn.close()
    result, logs = run_poll(target)
    unreadable = (
        Level.WARNING,
        f'[federation] peer "{PEER}": could not read last_event: reading federation_state '
        f"'peer:{PEER}:last_event': malformed JSON",
    )
    assert logs[:2] == [unreadable, unreadable]
    # A poll that never got past connecting: no version, no identity, no cursor either side.
    assert (result.ok, result.reason, result.phase) == (False, Reason.NETWORK_REFUSED, Phase.INITIALIZE)
    assert (result.cursor_before, result.cursor_after, result.peer_version, result.peer_cortex_id) == (
        "",
        "",
        "",
        "",
    )


def test_prior_health_that_cannot_be_read_is_warned_about_and_a_fresh_record_is_made(tmp_path: Path) -> None:
    from test_identity import refuse_reads

    target = target_with(tmp_path, [{"name": PEER, "endpoint": "http://127.0.0.1:1"}])
    put_state(target, **{f"peer:{PEER}:health": "{}"})
    conn = db(target)
    refuse_reads(conn, f"peer:{PEER}:health")
    conn.close()
    result, logs = run_poll(target)
    assert result.reason == Reason.NETWORK_REFUSED
    assert logs == [
        (
            Level.WARNING,
            f'[federation] peer "{PEER}": could not load prior health: reading federation_state '
            f"'peer:{PEER}:health': malformed JSON",
        ),
        (
            Level.WARNING,
            f'[federation] peer "{PEER}": could not persist health: writing federation_state '
            f"'peer:{PEER}:health': cannot modify federation_state because it is a view",
        ),
    ]


def test_a_ca_path_is_read_relative_to_the_cortex_folder_unless_absolute(tmp_path: Path) -> None:
    home = Path.home()
    assert syncer._resolve(tmp_path, "") == ""
    assert syncer._resolve(tmp_path, "certs/ca.pem") == str(tmp_path / "certs" / "ca.pem")
    assert syncer._resolve(tmp_path, "/etc/ca.pem") == "/etc/ca.pem"
    assert syncer._resolve(tmp_path, "~/ca.pem") == str(home / "ca.pem")
