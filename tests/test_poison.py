"""Poison events (issue 14): a peer whose replay keeps failing on one event is blocked, retried once an hour,
never holds up the other peers, and `skip-event` is the operator's audited way past it."""

from __future__ import annotations

import json
import os
import pwd
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import REPO, db, make_cortex, put_state, run_cli, state_rows
from peers.stdlib_peer import StdlibPeer
from sync_helpers import events, seed, target_with, trace_files
from ulid import ULID

from noemafed.cortex.access import AccessKey
from noemafed.cortex.manifest import read_manifest
from noemafed.federation import poison, schedule
from noemafed.federation.poison import PoisonRecord, PollOutcome, ReplayFailure, SkippedEvent
from noemafed.federation.syncer import PollResult, SyncContext, SyncOptions
from noemafed.logs import Log
from noemafed.text.clock import format_epoch, parse_rfc3339

STATUS_SCHEMA = json.loads((REPO / "docs" / "status.schema.json").read_text())
SYNC_SCHEMA = json.loads((REPO / "docs" / "sync.schema.json").read_text())
K = 3  # --block-after in the scenario tests


# ---- the rules, pure --------------------------------------------------------------------------------------

T0, T1, T2 = "2026-04-20T12:00:00Z", "2026-04-20T12:05:00Z", "2026-04-20T12:10:00Z"
E1, E2 = "01JS0000000000000000000001", "01JS0000000000000000000002"
SKIPPED_AT = "2031-05-06T07:08:09Z"


def _failure(event_id: str = E1, reason: str = "unknown_action") -> ReplayFailure:
    return ReplayFailure(event_id, "20260420-note-1", "teleport", reason, "replay event ...")


def test_the_same_event_counts_up_and_blocks_at_k() -> None:
    record = None
    for count, now in enumerate((T0, T1, T2), start=1):
        record = poison.after_poll(record, PollOutcome(False, _failure(), ""), now, block_after=3)
        assert record is not None
        assert (record.failures, record.first_seen, record.last_seen) == (count, T0, now)
        assert poison.blocked(record) is (count == 3)
        assert record.blocked_at == (T2 if count == 3 else "")
    again = poison.after_poll(record, PollOutcome(False, _failure(), ""), "2026-04-20T13:10:00Z", 3)
    assert again is not None
    assert (again.failures, again.blocked_at) == (4, T2)  # blocked once, at the time it was


def test_another_event_restarts_the_count() -> None:
    record = poison.after_poll(None, PollOutcome(False, _failure(E1), ""), T0, 2)
    record = poison.after_poll(record, PollOutcome(False, _failure(E1), ""), T1, 2)
    assert poison.blocked(record)
    moved = poison.after_poll(record, PollOutcome(False, _failure(E2, "other"), E1), T2, 2)
    assert moved == PoisonRecord(
        E2, "20260420-note-1", "teleport", "other", "replay event ...", 1, T2, T2, ""
    )


def test_success_or_a_cursor_past_the_event_clears_and_other_failures_keep() -> None:
    record = poison.after_poll(None, PollOutcome(False, _failure(E1), ""), T0, 1)
    assert poison.after_poll(record, PollOutcome(True, None, ""), T1, 1) is None
    assert poison.after_poll(record, PollOutcome(False, None, E1), T1, 1) is None  # skipped, then a failure
    assert poison.after_poll(record, PollOutcome(False, None, E2), T1, 1) is None
    # A network failure says nothing about the event: neither counted nor cleared.
    assert poison.after_poll(record, PollOutcome(False, None, ""), T1, 1) is record
    assert poison.after_poll(None, PollOutcome(False, None, ""), T1, 1) is None


def test_a_blocked_peer_waits_an_hour_whatever_its_reason_or_the_cap(tmp_path: Path) -> None:
    """The hour replaces every other rule of once_delay: the doubling, --max-backoff's cap, and the
    needs-an-operator rule that would leave an unknown action due on every run."""
    record = PoisonRecord(E1, "", "teleport", "unknown_action", "", K, T0, T1, T1)
    failed = PollResult("src", "http://127.0.0.1:1", False, needs_operator=True, poison_record=record)
    cortex = make_cortex(tmp_path, "target")
    ctx = SyncContext(
        cortex, read_manifest(cortex), AccessKey(), SyncOptions(block_after=K, max_backoff=60.0), Log(_ignore)
    )
    assert schedule.once_delay(ctx)(K, failed) == (3600.0, False)
    assert schedule.blocked_wait(failed) == 3600.0
    not_yet = failed._replace(poison_record=record._replace(failures=K - 1, blocked_at=""))
    assert schedule.blocked_wait(not_yet) is None
    assert schedule.once_delay(ctx)(K, not_yet) == (0.0, False)  # needs an operator: due at once
    assert schedule.blocked_wait(failed._replace(poison_record=None)) is None


def _ignore(level: str, line: str) -> None:
    pass


def test_records_decode_tolerantly() -> None:
    record = PoisonRecord(E1, "t", "teleport", "unknown_action", "err", 2, T0, T1, "")
    assert poison.decode_record(record.encode()) == record
    for text in ("", "null", "[]", "{", '{"event_id":"x","failures":"2"}', '{"event_id":"","failures":1}'):
        assert poison.decode_record(text) is None
    # A text field: missing and null are "" (as in every record of federation_state); another type is malformed.
    assert poison.decode_record('{"event_id":"x","failures":1,"trace_id":null}') == PoisonRecord(
        "x", "", "", "", "", 1, "", "", ""
    )
    for field in ("trace_id", "blocked_at"):
        assert poison.decode_record(f'{{"event_id":"x","failures":1,"{field}":5}}') is None
    assert poison.decode_skipped('{"peer":"a","event_id":"x","note":null}') == SkippedEvent(
        "a", "x", *[""] * 8
    )
    assert poison.decode_skipped('{"peer":"a","event_id":"x","note":false}') is None


# ---- the scenario: a real peer that serves an event no noemafed can replay --------------------------------


def _poisoned_source(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A source cortex with 2 traces, then (in id order) an event of an action nobody knows, then 3 more."""
    src = make_cortex(tmp_path, "source")
    seed(src, 2, prefix="early")
    first = events(src)[0]
    poison_event = {
        "id": str(ULID()),
        "action": "teleport",  # unknown_action: schema-widening, exit 4, never heals by waiting
        "trace_id": first[2],
        "cortex_id": read_manifest(src).id,
        "origin": "source",
        "timestamp": "2026-04-20T12:00:00Z",
        "data": {"to": "mars"},
        "vclock": {read_manifest(src).id: 99},
        "signature": "c2lnbmF0dXJl",
        "pubkey": "ed25519:cHVia2V5",
    }
    time.sleep(0.01)
    seed(src, 3, prefix="later")
    return src, poison_event


def _sync(target: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = run_cli(["--cortex", str(target), "sync", "--once", "--json", "--block-after", str(K), *args])
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, SYNC_SCHEMA)
    return result.exit_code, doc


def _status(target: Path) -> dict[str, Any]:
    result = run_cli(["--cortex", str(target), "status", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, STATUS_SCHEMA)
    return doc


def _peer(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(peer for peer in doc["peers"] if peer["name"] == name)


def _record(target: Path) -> dict[str, Any]:
    return json.loads(state_rows(target)["noemafed:poison:src"])


def _backoff(target: Path) -> dict[str, Any]:
    return json.loads(state_rows(target)["noemafed:backoff:src"])


def _an_hour_passes(target: Path) -> None:
    """Move the streak's next attempt (a blocked peer's: an hour after its last) into the past, as if the hour
    were up; test_the_test_clock_drives_the_hourly_retry plays the hour with NOEMAFED_TEST_NOW instead."""
    streak = _backoff(target)
    put_state(target, **{"noemafed:backoff:src": json.dumps({**streak, "next_attempt_at": format_epoch(0)})})


def _contacts(peer: StdlibPeer) -> int:
    return len(peer.requests)


def test_a_poison_event_blocks_its_peer_the_others_sync_and_skip_event_moves_on(tmp_path: Path) -> None:
    src, bad = _poisoned_source(tmp_path)
    good = make_cortex(tmp_path, "good")
    seed(good, 1, prefix="good")
    with StdlibPeer(src, extra_events=[bad]) as src_peer, StdlibPeer(good) as good_peer:
        target = target_with(
            tmp_path,
            [
                {"name": "src", "endpoint": src_peer.endpoint},
                {"name": "other", "endpoint": good_peer.endpoint},
            ],
        )
        before_poison = [row[0] for row in events(src) if row[0] < bad["id"]]
        # K runs in a row fail on the same event; the other peer syncs on each.
        for run in range(1, K + 1):
            seed(good, 1, prefix=f"good{run}")
            code, doc = _sync(target)
            src_result, other_result = _peer(doc, "src"), _peer(doc, "other")
            assert code == 4
            assert (src_result["reason"], src_result["event_id"]) == ("unknown_action", bad["id"])
            assert other_result["status"] == "ok"
            assert other_result["events_applied"] > 0
            assert (src_result["blocked_on"] is None) is (run < K)
            assert _record(target)["failures"] == run
        assert src_result["blocked_on"]["count"] == K
        assert [row[0] for row in events(target) if row[3] == read_manifest(src).id] == before_poison

        # Blocked: the next run leaves it alone (not contacted, not a failure) and still syncs the other.
        seed(good, 1, prefix="good-after")
        contacts = _contacts(src_peer)
        code, doc = _sync(target)
        assert code == 0
        assert [result["name"] for result in doc["peers"]] == ["other"]
        assert _peer(doc, "other")["events_applied"] > 0
        [deferred] = doc["deferred"]
        record, streak = _record(target), _backoff(target)
        # The hour is the streak's next attempt: an hour after the last failed one.
        next_at = format_epoch(parse_rfc3339(record["last_seen"]) + 3600)  # type: ignore[operator]
        assert streak["next_attempt_at"] == next_at
        assert deferred == {
            "name": "src",
            "endpoint": src_peer.endpoint,
            "reason": "blocked",
            "event_id": bad["id"],
            "next_attempt_at": next_at,
            "consecutive_failures": K,
            "failing_since": streak["failing_since"],
        }
        assert _contacts(src_peer) == contacts
        text = run_cli(["--cortex", str(target), "sync", "--once", "-v", "--block-after", str(K)]).stdout
        assert text.endswith(
            f"src: deferred, blocked on event {bad['id']}, not contacted until {next_at} "
            f"({K} consecutive failures since {streak['failing_since']})\n"
        )

        # status names the event, its trace and the reason.
        blocked_on = _peer(_status(target), "src")["blocked_on"]
        assert blocked_on == {
            "event_id": bad["id"],
            "trace_id": bad["trace_id"],
            "action": "teleport",
            "reason": "unknown_action",
            "error": f'replay event {bad["id"]}: unknown action "teleport" in event {bad["id"]}',
            "count": K,
            "since": record["first_seen"],
            "blocked_at": record["blocked_at"],
            "last_attempt": record["last_seen"],
        }
        assert _peer(_status(target), "other")["blocked_on"] is None
        human = run_cli(["--cortex", str(target), "status"]).stdout
        assert (
            f"    blocked:    ✖ on event {bad['id']} (teleport on trace {bad['trace_id']}) "
            f"since {record['first_seen']}\n"
        ) in human
        assert f"                noemafed skip-event src {bad['id']} --yes --note 'why'\n" in human

        # Once the hour is up it is tried again, fails again, stays blocked.
        _an_hour_passes(target)
        code, doc = _sync(target)
        assert (code, _peer(doc, "src")["reason"], _record(target)["failures"]) == (
            4,
            "unknown_action",
            K + 1,
        )

        # skip-event: fetched again, stored as received, cursor past it, recorded.
        record_before_skip = _record(target)
        result = run_cli(
            ["--cortex", str(target), "skip-event", "src", bad["id"], "--yes", "--note", "teleport is v9's"],
            env={"NOEMAFED_TEST_NOW": SKIPPED_AT},  # the skip is dated by the clock sync and status use
        )
        assert result.exit_code == 0, result.stderr
        record = record_before_skip
        assert result.stdout == (
            f'About to skip event {bad["id"]} from peer "src" in cortex "target":\n'
            "  action:     teleport\n"
            f"  trace:      {bad['trace_id']}\n"
            f"  reason:     unknown_action ({K + 1} failed replays in a row since {record['first_seen']})\n"
            f"  error:      {blocked_on['error']}\n"
            f"  cursor:     {before_poison[-1]}\n"
            "  note:       teleport is v9's\n"
            "The event is fetched from the peer again and stored as received, but not applied: this cortex\n"
            "never gets its change. The cursor moves past it and the skip is recorded for good (noemafed status).\n"
            f'Skipped event {bad["id"]} from peer "src": stored, not applied; '
            f"cursor {before_poison[-1]} -> {bad['id']}.\n"
            "The next `noemafed sync --once` pulls the events after it.\n"
        )
        conn = db(target)
        row = conn.execute(
            "SELECT id, action, trace_id, cortex_id, origin, timestamp, data, vclock, signature, pubkey "
            "FROM events WHERE id = ?",
            (bad["id"],),
        ).fetchone()
        conn.close()
        assert row == (
            bad["id"],
            "teleport",
            bad["trace_id"],
            bad["cortex_id"],
            "source",
            bad["timestamp"],
            '{"to":"mars"}',
            json.dumps(bad["vclock"], separators=(",", ":")),
            bad["signature"],
            bad["pubkey"],
        )
        rows = state_rows(target)
        assert rows["peer:src:last_event"] == bad["id"]
        assert "noemafed:poison:src" not in rows
        assert json.loads(rows["vclock"]).get(bad["cortex_id"], 0) < 99  # not applied: its clock not merged
        skipped = json.loads(rows[f"noemafed:skipped:{bad['id']}"])
        assert skipped == {
            "peer": "src",
            "event_id": bad["id"],
            "trace_id": bad["trace_id"],
            "action": "teleport",
            "reason": "unknown_action",
            "error": blocked_on["error"],
            "note": "teleport is v9's",
            "skipped_at": SKIPPED_AT,
            "user": pwd.getpwuid(os.getuid()).pw_name,
            "cursor_before": before_poison[-1],
        }

        # The next sync pulls the rest; the log is the source's, the skipped event included.
        code, doc = _sync(target)
        assert code == 0, doc
        assert _peer(doc, "src")["events_applied"] == len(events(src)) - len(before_poison)
        src_ids = [row[0] for row in events(target) if row[3] == read_manifest(src).id]
        assert src_ids == sorted([*(row[0] for row in events(src)), bad["id"]])
        assert {name for name in trace_files(target) if "later" in trace_files(target)[name]}

    status = _status(target)
    assert _peer(status, "src")["blocked_on"] is None
    assert status["skipped_events"] == [{**skipped, "cursor_before": before_poison[-1]}]
    human = run_cli(["--cortex", str(target), "status"]).stdout
    assert human.endswith(
        "Skipped Events:\n"
        f"  {skipped['skipped_at']} src: event {bad['id']} (teleport on trace {bad['trace_id']}), "
        f"reason unknown_action, by {skipped['user']}: teleport is v9's\n"
    )


def test_a_blocked_peers_hour_runs_from_its_last_attempt_as_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poll writes the record's last attempt, the run then the streak's next one, each reading the clock: a
    clock that moves on between the two (here a second a reading) must not put the next attempt an hour and a
    second or more after the attempt status shows."""
    from noemafed.text import clock

    class TickingTime:
        def __init__(self) -> None:
            self.now = int(time.time()) + 0.5

        def time(self) -> float:
            self.now += 1.0
            return self.now

    monkeypatch.setattr(clock, "time", TickingTime())
    src, bad = _poisoned_source(tmp_path)
    with StdlibPeer(src, extra_events=[bad]) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        code, doc = _sync(target, "--block-after", "1")
    assert (code, _peer(doc, "src")["blocked_on"]["count"]) == (4, 1)
    last_attempt = parse_rfc3339(_record(target)["last_seen"])
    assert last_attempt is not None
    assert _backoff(target)["next_attempt_at"] == format_epoch(last_attempt + 3600)


def test_network_failures_of_a_blocked_peer_neither_count_nor_clear(tmp_path: Path) -> None:
    src, bad = _poisoned_source(tmp_path)
    with StdlibPeer(src, extra_events=[bad]) as src_peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": src_peer.endpoint}])
        for _ in range(K):
            _sync(target)
    record = _record(target)
    # Two hours on (the test clock): the hourly retry meets a peer that is gone (connection refused).
    later = parse_rfc3339(record["last_seen"]) + 7200  # type: ignore[operator]
    result = run_cli(
        ["--cortex", str(target), "sync", "--once", "--json", "--block-after", str(K)],
        env={"NOEMAFED_TEST_NOW": format_epoch(later)},
    )
    assert (result.exit_code, json.loads(result.stdout)["peers"][0]["reason"]) == (3, "network_refused")
    assert {**_record(target), "last_seen": record["last_seen"]} == record
    assert _peer(_status(target), "src")["blocked_on"]["count"] == K
    # Its next attempt is an hour after this one, not after the record's last attempt (already past: every run
    # would contact the peer again).
    assert _backoff(target)["next_attempt_at"] == format_epoch(later + 3600)


# ---- skip-event's refusals: exact texts, nothing changed, the peer not contacted --------------------------


def _snapshot(target: Path) -> tuple[Any, ...]:
    return state_rows(target), events(target), trace_files(target)


@pytest.fixture
def blocked(tmp_path: Path) -> Any:
    src, bad = _poisoned_source(tmp_path)
    good = make_cortex(tmp_path, "good")
    with StdlibPeer(src, extra_events=[bad]) as src_peer, StdlibPeer(good) as good_peer:
        target = target_with(
            tmp_path,
            [
                {"name": "src", "endpoint": src_peer.endpoint},
                {"name": "other", "endpoint": good_peer.endpoint},
            ],
        )
        for _ in range(K):
            _sync(target)
        yield target, bad, src_peer


def _skip(target: Path, *args: str, **kwargs: Any) -> Any:
    return run_cli(["--cortex", str(target), "skip-event", *args], **kwargs)


@pytest.mark.parametrize(
    ("args", "code", "stderr"),
    [
        (
            ("nope", "{id}", "--yes"),
            1,
            'Error: peer "nope" is not configured in cortex.md (known: src, other)\n'
            "Hint: `noemafed status` lists the peers, and for a blocked one the event it is stuck on\n",
        ),
        (
            ("other", "{id}", "--yes"),
            1,
            'Error: peer "other" is not blocked on any event\n'
            "Hint: skip-event only moves past an event whose replay failed --block-after syncs in a row; "
            "`noemafed status` shows the peer's last error\n",
        ),
        (
            ("src", "01JS0000000000000000000000", "--yes"),
            1,
            'Error: peer "src" is blocked on event {id}, not "01JS0000000000000000000000"\n'
            "Hint: check the event in `noemafed status`, then run: noemafed skip-event src {id} --yes\n",
        ),
        (
            ("src", "{id}"),
            2,
            "Error: skip-event asks before it changes anything, and stdin is not a terminal\n"
            "Hint: pass --yes to skip without asking\n",
        ),
    ],
    ids=["unknown-peer", "not-blocked", "other-event", "no-yes-no-terminal"],
)
def test_refusals_change_nothing_and_contact_no_one(
    blocked: Any, args: tuple[str, ...], code: int, stderr: str
) -> None:
    target, bad, src_peer = blocked
    before, contacts = _snapshot(target), _contacts(src_peer)
    result = _skip(target, *(arg.format(id=bad["id"]) for arg in args))
    assert (result.exit_code, result.stdout, result.stderr) == (code, "", stderr.format(id=bad["id"]))
    assert _snapshot(target) == before
    assert _contacts(src_peer) == contacts


def test_answering_no_on_a_terminal_aborts(blocked: Any) -> None:
    target, bad, _src_peer = blocked
    before = _snapshot(target)
    result = _skip(target, "src", bad["id"], stdin="n\n", tty=("stdin",))
    assert result.exit_code == 1
    assert result.stdout.startswith(f'About to skip event {bad["id"]} from peer "src" in cortex "target":\n')
    assert result.stdout.endswith("Proceed? [y/N]: ")
    assert result.stderr == "Error: aborted by user\n"
    assert _snapshot(target) == before


def test_a_peer_whose_log_moved_on_is_refused_after_asking_it(blocked: Any) -> None:
    target, bad, src_peer = blocked
    src_peer.knobs.extra_events = []  # the peer's operator removed the event: the next one is a later event
    before = _snapshot(target)
    result = _skip(target, "src", bad["id"], "--yes")
    served = next(row[0] for row in events(src_peer.cortex_dir) if row[0] > bad["id"])
    assert result.exit_code == 1
    assert result.stderr == (
        f'Error: peer "src" serves event {served} next, not the blocked event {bad["id"]}\n'
        "Hint: the peer's log changed since the last sync: run `noemafed sync --once --peer src`, "
        "then check `noemafed status`\n"
    )
    after = _snapshot(target)
    assert (after[1], after[2]) == (before[1], before[2])
    assert {k: v for k, v in after[0].items() if "rank" not in k} == {
        k: v for k, v in before[0].items() if "rank" not in k
    }


def test_an_unreachable_peer_exits_as_a_sync_would(blocked: Any) -> None:
    target, bad, src_peer = blocked
    src_peer.stop()
    before = _snapshot(target)
    result = _skip(target, "src", bad["id"], "--yes")
    assert result.exit_code == 3
    assert result.stderr.startswith('Error: contacting peer "src": MCP initialize: ')
    assert result.stderr.endswith(
        "Hint: nothing was changed; `noemafed sync --once --peer src` says more about this failure\n"
    )
    assert _snapshot(target) == before


def test_skip_event_takes_the_sync_lock(blocked: Any) -> None:
    from noemafed.cortex.open import database_dir
    from noemafed.federation.lock import ROLE_ONCE, SyncLock

    target, bad, _src_peer = blocked
    before = _snapshot(target)
    with SyncLock(database_dir(target), ROLE_ONCE) as lock:
        lock.acquire()
        result = _skip(target, "src", bad["id"], "--yes")
    assert result.exit_code == 75
    assert result.stderr.startswith("Error: another noemafed sync (pid ")
    assert _snapshot(target) == before


def test_reset_peer_clears_the_poison_record_and_keeps_the_skips(blocked: Any) -> None:
    target, bad, _src_peer = blocked
    assert _skip(target, "src", bad["id"], "--yes").exit_code == 0
    put_state(target, **{"noemafed:poison:src": _blocked_record(bad)})  # as if it were blocked again
    renamed = run_cli(["--cortex", str(target), "set-peer", "src", "--rename", "laptop"])
    assert renamed.exit_code == 0, renamed.stderr
    rows = state_rows(target)
    assert "noemafed:poison:src" not in rows
    assert json.loads(rows["noemafed:poison:laptop"])["event_id"] == bad["id"]
    assert run_cli(["--cortex", str(target), "reset-peer", "laptop", "--yes"]).exit_code == 0
    rows = state_rows(target)
    assert not [key for key in rows if key.startswith("noemafed:poison:")]
    assert f"noemafed:skipped:{bad['id']}" in rows


def _blocked_record(bad: dict[str, Any]) -> str:
    return PoisonRecord(bad["id"], bad["trace_id"], "teleport", "unknown_action", "", K, T0, T1, T1).encode()


def test_the_daemon_retries_a_blocked_peer_once_an_hour(tmp_path: Path) -> None:
    import re
    import threading

    from noemafed.federation import schedule

    src, bad = _poisoned_source(tmp_path)
    with StdlibPeer(src, extra_events=[bad]) as src_peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": src_peer.endpoint}], interval="100ms")
        logs: list[str] = []
        options = SyncOptions(block_after=2)
        ctx = SyncContext(
            target, read_manifest(target), AccessKey(), options, Log(lambda _l, line: logs.append(line))
        )
        stop = threading.Event()
        thread = threading.Thread(target=schedule.run_daemon, args=(ctx, stop))
        thread.start()
        time.sleep(2.0)  # without the rule: polls after 0.2 s, 0.4 s, 0.8 s ... (the doubling backoff)
        stop.set()
        thread.join(timeout=5)
        polls = src_peer.calls().count("sync_events")
    assert polls == 2
    assert re.fullmatch(r'.*"src" still unreachable \(other\); next retry in (59m5\ds|1h0m0s)', logs[-2])


# ---- merged with the persisted backoff: the verdict, status --check and the test clock (issue 14) ---------


def test_the_test_clock_drives_the_hourly_retry_and_a_blocked_peer_is_critical(tmp_path: Path) -> None:
    """A blocked peer's hour is counted on NOEMAFED_TEST_NOW's clock (here ten days ahead of the real one, so
    a rule that read time.time() anywhere would be off by ten days), its verdict is `blocked`, and
    `status --check` is CRITICAL naming it."""
    base = int(time.time()) + 10 * 86400

    def at(seconds: int) -> dict[str, str]:
        return {"NOEMAFED_TEST_NOW": format_epoch(base + seconds)}

    def sync(seconds: int, *args: str) -> dict[str, Any]:
        argv = ["--cortex", str(target), "sync", "--once", "--json", "--block-after", str(K), *args]
        doc: dict[str, Any] = json.loads(run_cli(argv, env=at(seconds)).stdout)
        jsonschema.validate(doc, SYNC_SCHEMA)
        return doc

    src, bad = _poisoned_source(tmp_path)
    with StdlibPeer(src, extra_events=[bad]) as src_peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": src_peer.endpoint}])
        for run in range(K):  # an unknown action needs an operator: due on every run until blocked
            assert _peer(sync(60 * run), "src")["reason"] == "unknown_action"
        blocked_at = 60 * (K - 1)
        assert _backoff(target)["next_attempt_at"] == format_epoch(base + blocked_at + 3600)

        status = run_cli(["--cortex", str(target), "status", "--json"], env=at(blocked_at + 60))
        peer = _peer(json.loads(status.stdout), "src")
        jsonschema.validate(json.loads(status.stdout), STATUS_SCHEMA)
        assert (peer["verdict"], peer["blocked_on"]["event_id"]) == ("blocked", bad["id"])
        assert peer["next_attempt_at"] == format_epoch(base + blocked_at + 3600)
        check = run_cli(["--cortex", str(target), "status", "--check"], env=at(blocked_at + 60))
        assert (check.exit_code, check.stdout) == (
            2,
            f"NOEMAFED CRITICAL - src blocked; 1 peer: 1 blocked | 'src_lag'={_lag(target, base + blocked_at + 60)}s"
            f" 'src_failures'={K}\n",
        )
        human = run_cli(["--cortex", str(target), "status"], env=at(blocked_at + 60)).stdout
        assert f"  src: blocked on event {bad['id']}; {K} consecutive failures since " in human

        # A second before the hour is up: deferred, not contacted; at the hour: contacted, blocked again.
        contacts = _contacts(src_peer)
        early = sync(blocked_at + 3599)
        assert (early["peers"], early["deferred"][0]["reason"]) == ([], "blocked")
        assert _contacts(src_peer) == contacts
        again = sync(blocked_at + 3600)
        assert _peer(again, "src")["reason"] == "unknown_action"
        assert _record(target)["failures"] == K + 1
        assert _record(target)["last_seen"] == format_epoch(base + blocked_at + 3600)  # the poison record too
        assert _backoff(target)["next_attempt_at"] == format_epoch(base + blocked_at + 7200)

        # retry-now ends the hour (the operator asked for an attempt now); the block stays.
        assert run_cli(["--cortex", str(target), "retry-now", "src"]).exit_code == 0
        contacts = _contacts(src_peer)
        assert _peer(sync(blocked_at + 3660), "src")["blocked_on"]["event_id"] == bad["id"]
        assert _contacts(src_peer) > contacts
        # --ignore-backoff does the same within the next hour.
        contacts = _contacts(src_peer)
        assert sync(blocked_at + 3720)["deferred"][0]["reason"] == "blocked"
        assert _peer(sync(blocked_at + 3720, "--ignore-backoff"), "src")["reason"] == "unknown_action"
        assert _contacts(src_peer) > contacts


def _lag(target: Path, now: int) -> int:
    """The peer's lag at `now`: from the time in its cursor's id (the last event applied before the poison)."""
    from noemafed.text.clock import ulid_seconds

    cursor = state_rows(target)["peer:src:last_event"]
    minted = ulid_seconds(cursor)
    assert minted is not None
    return int(now - minted)


def test_blocked_is_what_the_blocking_poll_recorded_not_this_runs_block_after() -> None:
    """Bug: the run's plan judged `failures >= --block-after` with its own K while status and skip-event read
    `blocked_at`, so a cron run and a daemon with different K disagreed about the same peer."""
    record = None
    for now in (T0, T1):
        record = poison.after_poll(record, PollOutcome(False, _failure(), ""), now, block_after=2)
    assert record is not None
    assert poison.blocked(record)
    # Another run with a larger K reads the same record: the peer is blocked for it too.
    assert poison.blocked(record._replace(failures=2))
    assert not poison.reached(record, 5)
    assert not poison.blocked(record._replace(blocked_at=""))
