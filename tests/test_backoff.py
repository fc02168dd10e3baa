"""The persisted backoff of `sync --once` (issue 14): a failing peer is left alone until it is due, across runs,
with a fake clock (NOEMAFED_TEST_NOW) and real peers on 127.0.0.1 that count how often they are dialled."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import jsonschema
import pytest
from conftest import REPO, run_cli, state_rows
from peers.counting import CountingPeer
from peers.stdlib_peer import StdlibPeer
from sync_helpers import seed, source, target_with

from noemafed.cortex.access import AccessKey
from noemafed.cortex.manifest import read_manifest
from noemafed.federation import schedule
from noemafed.federation.syncer import SyncContext, SyncOptions
from noemafed.logs import SILENT
from noemafed.text.clock import Clock, format_epoch, parse_rfc3339

SYNC_SCHEMA = json.loads((REPO / "docs" / "sync.schema.json").read_text())
# A fixed start, on a whole minute, so every time below is exact; near the real time, so the events the
# sources mint now are neither far in the future nor far in the past of it.
T0 = float(int(time.time()) // 60 * 60)


def at(offset: float) -> str:
    return format_epoch(T0 + offset)


def sync(target: Path, offset: float, *args: str) -> tuple[int, dict]:
    result = run_cli(
        ["--cortex", str(target), "sync", "--once", "--json", *args], env={"NOEMAFED_TEST_NOW": at(offset)}
    )
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, SYNC_SCHEMA)
    return result.exit_code, doc


def streak(target: Path, name: str) -> dict | None:
    value = state_rows(target).get(f"noemafed:backoff:{name}")
    return json.loads(value) if value else None


def test_a_dead_peer_is_dialled_only_when_due_across_20_runs_while_a_live_peer_syncs_every_run(
    tmp_path: Path,
) -> None:
    src = source(tmp_path, count=2)
    with StdlibPeer(src) as live, CountingPeer() as dead:
        target = target_with(
            tmp_path,
            [{"name": "live", "endpoint": live.endpoint}, {"name": "dead", "endpoint": dead.endpoint}],
            interval="10s",
        )
        contacted_runs = []
        for run in range(20):
            now = run * 60.0
            before = streak(target, "dead")
            due = before is None or parse_rfc3339(before["next_attempt_at"]) <= T0 + now
            dials, live_calls = dead.count(), len(live.calls())
            seed(src, 1, prefix=f"run{run}")  # something new for the live peer every run
            code, doc = sync(target, now)
            assert len(live.calls()) > live_calls, f"run {run}: the live peer was not synced"
            [live_report] = [p for p in doc["peers"] if p["name"] == "live"]
            assert live_report["status"] == "ok"
            assert live_report["events_applied"] > 0
            after = streak(target, "dead")
            if due:
                contacted_runs.append(run)
                assert dead.count() > dials, f"run {run}: due but not dialled"
                assert code == 3, f"run {run}: a failed poll exits 3"
                assert doc["deferred"] == []
                # The wait doubles from the interval (the first failure already waits 2x, as noema's daemon),
                # with +-20 % jitter (times are stored to the second), capped at --max-backoff (1h).
                failures = after["failures"]
                assert failures == (before["failures"] if before else 0) + 1
                base = min(10 * 2**failures, 3600)
                wait = parse_rfc3339(after["next_attempt_at"]) - (T0 + now)
                assert base * 0.8 - 1 <= wait <= min(base * 1.2, 3600), (run, failures, wait)
                assert after["failing_since"] == (before["failing_since"] if before else at(now))
            else:
                assert dead.count() == dials, f"run {run}: not due, yet dialled"
                assert code == 0, f"run {run}: a deferred peer is not a failure"
                assert after == before
                assert doc["deferred"] == [
                    {
                        "name": "dead",
                        "endpoint": dead.endpoint,
                        "reason": "backoff",
                        "event_id": None,
                        "next_attempt_at": before["next_attempt_at"],
                        "consecutive_failures": before["failures"],
                        "failing_since": before["failing_since"],
                    }
                ]
                assert [p["name"] for p in doc["peers"]] == ["live"]
    # Dialled at once, then ever more rarely: 20 runs a minute apart reach the peer 6 to 8 times.
    assert contacted_runs[:3] == [0, 1, 2]
    assert 6 <= len(contacted_runs) <= 8, contacted_runs


def _failing_twice(tmp_path: Path, dead: CountingPeer) -> Path:
    target = target_with(tmp_path, [{"name": "dead", "endpoint": dead.endpoint}], interval="1m")
    assert sync(target, 0)[0] == 3
    assert sync(target, 0)[0] == 0  # deferred
    assert dead.count() == 1
    return target


def test_retry_now_makes_the_next_run_dial_at_once(tmp_path: Path) -> None:
    with CountingPeer() as dead:
        target = _failing_twice(tmp_path, dead)
        health_before = state_rows(target)["peer:dead:health"]
        result = run_cli(["--cortex", str(target), "retry-now", "dead"])
        assert (result.exit_code, result.stdout, result.stderr) == (
            0,
            "dead: backoff cleared; the next `sync --once` contacts it\n",
            "",
        )
        assert streak(target, "dead") is None
        assert state_rows(target)["peer:dead:health"] == health_before  # only the backoff goes
        assert sync(target, 1)[0] == 3
        assert dead.count() == 2
        again = run_cli(["--cortex", str(target), "retry-now", "dead", "dead"])
        assert again.stdout == "dead: backoff cleared; the next `sync --once` contacts it\n"
        assert run_cli(["--cortex", str(target), "retry-now", "dead"]).stdout == (
            "dead: not in backoff; the next `sync --once` contacts it anyway\n"
        )


def test_retry_now_refuses_an_unknown_peer_and_changes_nothing(tmp_path: Path) -> None:
    with CountingPeer() as dead:
        target = _failing_twice(tmp_path, dead)
        before = state_rows(target)
        result = run_cli(["--cortex", str(target), "retry-now", "dead", "ghost"])
    assert result.exit_code == 1
    assert result.stderr == 'Error: peer "ghost" is not configured in cortex.md (known: dead)\n'
    assert state_rows(target) == before


def test_ignore_backoff_dials_at_once_and_starts_a_new_streak(tmp_path: Path) -> None:
    with CountingPeer() as dead:
        target = _failing_twice(tmp_path, dead)
        code, doc = sync(target, 2, "--ignore-backoff")
        assert code == 3
        assert doc["deferred"] == []
        assert dead.count() == 2
        assert streak(target, "dead")["failures"] == 1  # cleared first, then this failure
        assert streak(target, "dead")["failing_since"] == at(2)


def test_success_clears_the_streak_and_counts_what_it_applied(tmp_path: Path) -> None:
    src = source(tmp_path, count=3)
    with CountingPeer() as dead:
        target = target_with(tmp_path, [{"name": "p", "endpoint": dead.endpoint}], interval="1m")
        assert sync(target, 0)[0] == 3
    with StdlibPeer(src) as peer:
        run_cli(["--cortex", str(target), "set-peer", "p", "--endpoint", peer.endpoint])
        assert sync(target, 10)[1]["deferred"][0]["name"] == "p"  # still in backoff
        code, doc = sync(target, 600)
        assert code == 0
        applied = doc["peers"][0]["events_applied"]
        assert streak(target, "p") is None
        run = json.loads(state_rows(target)["noemafed:run:p"])
        assert run == {
            "outcome": "ok",
            "caught_up": True,
            "attempted_at": at(600),
            "progressed_at": at(600),
            "events_applied_total": applied,
        }
        seed(src, 2, prefix="more")
        applied_again = sync(target, 700)[1]["peers"][0]["events_applied"]
        assert applied_again > 0
        total = json.loads(state_rows(target)["noemafed:run:p"])["events_applied_total"]
        assert total == applied + applied_again


@pytest.mark.parametrize(
    ("status", "retry_after", "max_backoff", "expected_wait"),
    [
        (503, "600", "1h", 600),
        (429, "120", "1h", 120),
        (503, "date:900", "1h", 900),
        (503, "99999", "30m", 1800),  # capped like the backoff
    ],
)
def test_retry_after_is_honoured_and_capped(
    tmp_path: Path, status: int, retry_after: str, max_backoff: str, expected_wait: int
) -> None:
    if retry_after.startswith("date:"):
        moment = datetime.fromtimestamp(T0 + int(retry_after[5:]), UTC)
        retry_after = format_datetime(moment, usegmt=True)
    with CountingPeer(answer=(status, retry_after)) as busy:
        target = target_with(tmp_path, [{"name": "busy", "endpoint": busy.endpoint}], interval="1s")
        code, doc = sync(target, 0, "--max-backoff", max_backoff)
        assert code == 3, doc
        assert doc["peers"][0]["error"].startswith(f"MCP initialize: {status} ")
        recorded = streak(target, "busy")
        assert recorded["next_attempt_at"] == at(expected_wait)
        assert recorded["retry_after"] is True
        assert sync(target, expected_wait - 1, "--max-backoff", max_backoff)[0] == 0
        assert busy.count() == 1
        assert sync(target, expected_wait, "--max-backoff", max_backoff)[0] == 3
        assert busy.count() == 2


def test_reset_peer_clears_the_backoff_and_a_rename_carries_it(tmp_path: Path) -> None:
    with CountingPeer() as dead:
        target = _failing_twice(tmp_path, dead)
        recorded = state_rows(target)["noemafed:backoff:dead"]
        run = state_rows(target)["noemafed:run:dead"]
        assert run_cli(["--cortex", str(target), "set-peer", "dead", "--rename", "gone"]).exit_code == 0
        rows = state_rows(target)
        assert (rows["noemafed:backoff:gone"], rows["noemafed:run:gone"]) == (recorded, run)
        assert not [key for key in rows if key.endswith(":dead")]
        assert run_cli(["--cortex", str(target), "reset-peer", "gone", "--yes"]).exit_code == 0
        assert not [key for key in state_rows(target) if key.startswith("noemafed:") and "gone" in key]
        assert sync(target, 1)[0] == 3  # due at once
        assert run_cli(["--cortex", str(target), "remove-peer", "gone", "--yes"]).exit_code == 0
        assert not [key for key in state_rows(target) if "gone" in key]


def test_the_jitter_stays_within_20_percent_and_uses_the_whole_range() -> None:
    rng = random.Random(14)
    for failures in range(1, 8):
        base = 30 * 2**failures
        factors = [schedule.backoff_delay(failures, 30, 1e9, rng.uniform) / base for _ in range(2000)]
        assert 0.8 <= min(factors) < 0.82
        assert 1.18 < max(factors) <= 1.2
    assert schedule.backoff_delay(20, 30, 3600, rng.uniform) == 3600  # the cap wins over jitter
    assert schedule.backoff_delay(1, 0, 3600, lambda a, b: 1.0) == 2.0  # a zero interval still waits


def test_retry_after_values() -> None:
    now = 1_700_000_000.0
    assert schedule.retry_after_delay("120", now) == 120
    assert schedule.retry_after_delay(" 7 ", now) == 7
    assert (
        schedule.retry_after_delay(format_datetime(datetime.fromtimestamp(now + 90, UTC), usegmt=True), now)
        == 90
    )
    assert (
        schedule.retry_after_delay(format_datetime(datetime.fromtimestamp(now - 90, UTC), usegmt=True), now)
        == 0
    )
    assert schedule.retry_after_delay("soon", now) is None
    assert schedule.retry_after_delay("-5", now) is None


def test_the_daemon_starts_from_the_persisted_streak(tmp_path: Path) -> None:
    with CountingPeer() as dead:
        target = _failing_twice(tmp_path, dead)  # one failure, next attempt 2 minutes (+-20 %) after T0
    manifest = read_manifest(target)
    recorded = streak(target, "dead")
    ctx = SyncContext(target, manifest, AccessKey(), SyncOptions(), SILENT, Clock(T0))
    wait, backoff = schedule._resume(ctx, manifest.peers[0], 60.0)
    # The daemon waits for the recorded attempt but never longer than its own 5-minute cap.
    assert wait == parse_rfc3339(recorded["next_attempt_at"]) - T0
    assert backoff == 120.0
    late = SyncContext(target, manifest, AccessKey(), SyncOptions(), SILENT, Clock(T0 - 3600))
    assert schedule._resume(late, manifest.peers[0], 60.0) == (300.0, 120.0)
    assert schedule._resume(ctx._replace(clock=Clock(T0 + 3600)), manifest.peers[0], 60.0) == (0.0, 120.0)


def test_the_daemon_records_its_own_schedule(tmp_path: Path) -> None:
    with CountingPeer() as dead:
        target = target_with(tmp_path, [{"name": "dead", "endpoint": dead.endpoint}], interval="1s")
        manifest = read_manifest(target)
        ctx = SyncContext(target, manifest, AccessKey(), SyncOptions(timeout=2), SILENT, Clock(T0))
        stop = threading.Event()
        thread = threading.Thread(target=schedule.run_daemon, args=(ctx, stop))
        thread.start()
        deadline = time.monotonic() + 10
        while (streak(target, "dead") or {}).get("failures", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        thread.join()
    recorded = streak(target, "dead")
    assert recorded["failures"] >= 2
    # noema's in-memory schedule: 2 s after the first failure, 4 s after the second, no jitter.
    assert parse_rfc3339(recorded["next_attempt_at"]) - T0 == 2.0 ** recorded["failures"]


def test_a_failure_that_needs_an_operator_is_recorded_but_retried_on_the_next_run(tmp_path: Path) -> None:
    """Waiting never heals a wrong key: the operator's fix must take effect on the very next run."""
    src = source(tmp_path, count=1)
    with StdlibPeer(src, key="right-key", tls=True) as peer:
        ca = peer.write_ca(tmp_path / "ca.pem")
        target = target_with(tmp_path, [{"name": "p", "endpoint": peer.endpoint, "ca": str(ca)}])
        (target / "mcp.key").write_text("wrong-key\n")
        (target / "mcp.key").chmod(0o600)
        manifest = (target / "cortex.md").read_text()
        (target / "cortex.md").write_text(
            manifest.replace("version: 2\n", "version: 2\naccess:\n    shared_key_file: mcp.key\n")
        )
        code, doc = sync(target, 0)
        assert (code, doc["peers"][0]["reason"]) == (4, "auth")
        recorded = streak(target, "p")
        assert recorded == {
            "failing_since": at(0),
            "failures": 1,
            "next_attempt_at": at(0),
            "needs_operator": True,
            "retry_after": False,
        }
        (target / "mcp.key").write_text("right-key\n")
        code, doc = sync(target, 1)
        assert code == 0, doc
        assert streak(target, "p") is None


def test_a_deferred_peer_has_its_own_line_and_a_clean_cron_run_prints_nothing(tmp_path: Path) -> None:
    with CountingPeer() as dead:
        target = _failing_twice(tmp_path, dead)
        recorded = streak(target, "dead")
        args, env = ["--cortex", str(target), "sync", "--once"], {"NOEMAFED_TEST_NOW": at(3)}
        on_a_terminal = run_cli(args, env=env, tty=("stdout",))
        under_cron = run_cli(args, env=env)
    assert (on_a_terminal.exit_code, on_a_terminal.stdout) == (
        0,
        f"dead: deferred, not contacted until {recorded['next_attempt_at']} (1 consecutive failures since {at(0)})\n",
    )
    assert (under_cron.exit_code, under_cron.stdout, under_cron.stderr) == (0, "", "")
    assert dead.count() == 1


def test_a_poll_the_runs_deadline_cut_short_after_progress_is_behind_and_ends_the_streak(
    tmp_path: Path,
) -> None:
    """Health counts it as a failure (noema's record, exit 3), but the peer answered and gave events: its
    backoff must not grow, or a backlog pulled in --max-duration slices would be pulled ever more rarely."""
    from noemafed.cortex.open import Cortex, open_database
    from noemafed.federation.syncer import PeerPoller, PollResult

    target = target_with(tmp_path, [{"name": "p", "endpoint": "http://127.0.0.1:1"}])
    manifest = read_manifest(target)
    ctx = SyncContext(target, manifest, AccessKey(), SyncOptions(), SILENT, Clock(T0))
    poller = PeerPoller(Cortex(target, manifest, open_database(target)), manifest.peers[0], ctx)
    delay = schedule.once_delay(ctx)
    try:
        failed = PollResult("p", "http://127.0.0.1:1", ok=False, exit_code=3)
        schedule.record_outcome(poller, failed, T0, delay)
        assert streak(target, "p")["failures"] == 1
        cut_short = failed._replace(out_of_time=True, events_applied=250)
        schedule.record_outcome(poller, cut_short, T0 + 1, delay)
        assert streak(target, "p") is None
        run = json.loads(state_rows(target)["noemafed:run:p"])
        assert (run["outcome"], run["events_applied_total"], run["progressed_at"]) == ("behind", 250, at(1))
        # Out of time before anything was applied: a failure like any other.
        schedule.record_outcome(poller, failed._replace(out_of_time=True), T0 + 2, delay)
        assert streak(target, "p")["failures"] == 1
        assert json.loads(state_rows(target)["noemafed:run:p"])["outcome"] == "failed"
    finally:
        poller.cortex.close()
