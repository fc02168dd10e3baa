"""A verdict per peer in `status` (issue 14): each one produced by a scenario with real peers on 127.0.0.1, real
syncs and the fake clock (NOEMAFED_TEST_NOW); the figures beside it; the precedence between them."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import REPO, put_state, run_cli, state_rows
from peers.counting import CountingPeer
from peers.stdlib_peer import StdlibPeer
from sync_helpers import source, target_with
from test_backoff import T0, at, sync

from noemafed.cortex import state
from noemafed.federation.verdict import PeerRecords, Verdict, judge
from noemafed.text.clock import ulid_seconds

STATUS_SCHEMA = json.loads((REPO / "docs" / "status.schema.json").read_text())


def status_json(target: Path, offset: float, *args: str) -> dict[str, Any]:
    result = run_cli(
        ["--cortex", str(target), "status", "--json", *args], env={"NOEMAFED_TEST_NOW": at(offset)}
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, STATUS_SCHEMA)
    return doc


def peer_doc(target: Path, offset: float, name: str, *args: str) -> dict[str, Any]:
    [peer] = [p for p in status_json(target, offset, *args)["peers"] if p["name"] == name]
    return peer


def check(target: Path, offset: float, *args: str) -> tuple[int, str]:
    """`status --check`: its exit code and its one line (nothing on stderr)."""
    result = run_cli(
        ["--cortex", str(target), "status", "--check", *args], env={"NOEMAFED_TEST_NOW": at(offset)}
    )
    assert result.stderr == ""
    assert result.stdout.count("\n") == 1
    return result.exit_code, result.stdout


def figures(peer: dict[str, Any]) -> dict[str, Any]:
    keys = ("verdict", "consecutive_failures", "failing_since", "next_attempt_at", "caught_up")
    return {key: peer[key] for key in keys}


def test_never_synced(tmp_path: Path) -> None:
    target = target_with(tmp_path, [{"name": "new", "endpoint": "http://127.0.0.1:1"}])
    peer = peer_doc(target, 0, "new")
    assert figures(peer) == {
        "verdict": "never_synced",
        "consecutive_failures": 0,
        "failing_since": None,
        "next_attempt_at": None,
        "caught_up": None,
    }
    assert (peer["lag_seconds"], peer["events_applied_total"]) == (None, 0)
    assert check(target, 0) == (0, "NOEMAFED OK - 1 peer: 1 never_synced | 'new_lag'=U 'new_failures'=0\n")


def test_ok_then_stale_when_no_success_for_longer_than_max_age(tmp_path: Path) -> None:
    src = source(tmp_path, count=3)
    # The fake clock starts just after the source minted its events, so the lag is a real figure.
    o = int(time.time() - T0) + 5
    with StdlibPeer(src) as live:
        target = target_with(tmp_path, [{"name": "live", "endpoint": live.endpoint}])
        code, doc = sync(target, o)
    assert code == 0
    applied = doc["peers"][0]["events_applied"]
    peer = peer_doc(target, o + 60, "live")
    assert figures(peer) == {
        "verdict": "ok",
        "consecutive_failures": 0,
        "failing_since": None,
        "next_attempt_at": None,
        "caught_up": True,
    }
    minted = ulid_seconds(peer["last_event"])
    assert peer["lag_seconds"] == int(T0 + o + 60 - minted) >= 60
    assert peer["events_applied_total"] == applied
    # No failure at all, but no success either for longer than --max-age (cron stopped): stale.
    assert peer_doc(target, o + 3600, "live")["verdict"] == "ok"
    assert peer_doc(target, o + 3601, "live")["verdict"] == "stale"
    assert check(target, o + 60) == (
        0,
        f"NOEMAFED OK - 1 peer: 1 ok | 'live_lag'={int(T0 + o + 60 - minted)}s 'live_failures'=0\n",
    )
    assert check(target, o + 3601) == (
        2,
        f"NOEMAFED CRITICAL - live stale; 1 peer: 1 stale | 'live_lag'={int(T0 + o + 3601 - minted)}s"
        " 'live_failures'=0\n",
    )
    assert check(target, o + 3601, "--max-age", "2h")[0] == 0
    assert peer_doc(target, o + 3601, "live", "--max-age", "2h")["verdict"] == "ok"
    assert status_json(target, o, "--max-age", "2h")["max_age_seconds"] == 7200


def test_behind_when_the_last_run_stopped_with_more_to_pull(tmp_path: Path) -> None:
    src = source(tmp_path, count=3)
    with StdlibPeer(src) as live:
        target = target_with(tmp_path, [{"name": "live", "endpoint": live.endpoint}])
        assert sync(target, 0, "--max-events", "2")[0] == 0
        peer = peer_doc(target, 10, "live")
        assert (peer["verdict"], peer["caught_up"], peer["events_applied_total"]) == ("behind", False, 2)
        assert check(target, 10) == (
            1,
            f"NOEMAFED WARNING - live behind; 1 peer: 1 behind | 'live_lag'={peer['lag_seconds']}s 'live_failures'=0\n",
        )
        assert sync(target, 20)[0] == 0
        assert peer_doc(target, 30, "live")["verdict"] == "ok"


def test_failing_deferred_then_stale_for_a_dead_peer(tmp_path: Path) -> None:
    with CountingPeer() as dead:
        target = target_with(tmp_path, [{"name": "dead", "endpoint": dead.endpoint}], interval="1m")
        assert sync(target, 0)[0] == 3
    next_attempt = state.decode_backoff(state_rows(target)["noemafed:backoff:dead"]).next_attempt_at
    deferred = peer_doc(target, 1, "dead")
    assert figures(deferred) == {
        "verdict": "deferred",
        "consecutive_failures": 1,
        "failing_since": at(0),
        "next_attempt_at": next_attempt,
        "caught_up": False,
    }
    assert peer_doc(target, 150, "dead")["verdict"] == "failing"  # 2 minutes +-20 % later: due again
    # Never synced, failing for longer than --max-age: stale (critical), not merely failing.
    assert peer_doc(target, 3601, "dead")["verdict"] == "stale"
    perf = "'dead_lag'=U 'dead_failures'=1"
    assert check(target, 1) == (1, f"NOEMAFED WARNING - dead deferred; 1 peer: 1 deferred | {perf}\n")
    assert check(target, 150) == (1, f"NOEMAFED WARNING - dead failing; 1 peer: 1 failing | {perf}\n")
    assert check(target, 3601) == (2, f"NOEMAFED CRITICAL - dead stale; 1 peer: 1 stale | {perf}\n")


def test_needs_operator_for_an_exit_4_reason(tmp_path: Path) -> None:
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
        assert sync(target, 0)[0] == 4
    doc = peer_doc(target, 10, "p")
    assert (doc["verdict"], doc["consecutive_failures"], doc["health"]["last_error"]["reason"]) == (
        "needs_operator",
        1,
        "auth",
    )
    # Only an operator fixes it, however long it lasts.
    assert peer_doc(target, 86400, "p")["verdict"] == "needs_operator"
    assert check(target, 10) == (
        2,
        "NOEMAFED CRITICAL - p needs_operator; 1 peer: 1 needs_operator | 'p_lag'=U 'p_failures'=1\n",
    )


def test_paused_whatever_its_records_say(tmp_path: Path) -> None:
    with CountingPeer() as dead:
        target = target_with(tmp_path, [{"name": "dead", "endpoint": dead.endpoint}])
        assert sync(target, 0)[0] == 3
    assert run_cli(["--cortex", str(target), "pause-peer", "dead"]).exit_code == 0
    assert peer_doc(target, 86400, "dead")["verdict"] == "paused"
    assert check(target, 86400) == (0, "NOEMAFED OK - 1 peer: 1 paused | 'dead_lag'=U 'dead_failures'=1\n")


def test_the_text_layout_ends_with_a_verdict_per_peer(tmp_path: Path) -> None:
    with CountingPeer() as dead:
        target = target_with(
            tmp_path,
            [{"name": "dead", "endpoint": dead.endpoint}, {"name": "new", "endpoint": "http://127.0.0.1:1"}],
            interval="1m",
        )
        assert sync(target, 0, "--peer", "dead")[0] == 3
    next_attempt = state.decode_backoff(state_rows(target)["noemafed:backoff:dead"]).next_attempt_at
    result = run_cli(["--cortex", str(target), "status"], env={"NOEMAFED_TEST_NOW": at(1)})
    assert result.stdout.endswith(
        "\n\nVerdicts (stale after 1h0m0s without a success):\n"
        f"  dead: deferred; 1 consecutive failures since {at(0)}; next attempt {next_attempt}\n"
        "  new: never_synced\n"
    )


# ---- the precedence, on records written by hand ----------------------------------------------------------

NOW = 1_800_000_000.0
HOUR = 3600.0


def _at(offset: float) -> str:
    from noemafed.text.clock import format_epoch

    return format_epoch(NOW + offset)


FAILED_AUTH = state.PeerHealth(
    last_success=_at(-60), consecutive_failures=2, last_error=state.PeerError("auth", _at(-10))
)
FAILED_NETWORK = FAILED_AUTH._replace(last_error=state.PeerError("network_refused", _at(-10)))


@pytest.mark.parametrize(
    ("paused", "health", "streak", "run", "expected"),
    [
        (True, FAILED_AUTH, None, state.PeerRun(), Verdict.PAUSED),
        # noema's record alone (no streak of noemafed's): classify's rule on the reason.
        (False, FAILED_AUTH, None, state.PeerRun(), Verdict.NEEDS_OPERATOR),
        (False, FAILED_NETWORK, None, state.PeerRun(), Verdict.FAILING),
        # needs_operator beats stale.
        (
            False,
            FAILED_AUTH._replace(last_success=_at(-2 * HOUR)),
            None,
            state.PeerRun(),
            Verdict.NEEDS_OPERATOR,
        ),
        # stale beats failing and deferred.
        (
            False,
            FAILED_NETWORK._replace(last_success=_at(-2 * HOUR)),
            state.Backoff(_at(-HOUR), 5, _at(60)),
            state.PeerRun(state.RUN_FAILED),
            Verdict.STALE,
        ),
        (False, FAILED_NETWORK, state.Backoff(_at(-60), 2, _at(60)), state.PeerRun(), Verdict.DEFERRED),
        (False, FAILED_NETWORK, state.Backoff(_at(-60), 2, _at(0)), state.PeerRun(), Verdict.FAILING),
        # A run cut short by --max-duration after progress: health counts a failure, the peer is behind.
        (
            False,
            FAILED_NETWORK,
            None,
            state.PeerRun(state.RUN_BEHIND, attempted_at=_at(-10), progressed_at=_at(-10)),
            Verdict.BEHIND,
        ),
        (False, state.PeerHealth(last_success=_at(-10)), None, state.PeerRun(state.RUN_OK, True), Verdict.OK),
        (False, state.PeerHealth(), None, state.PeerRun(), Verdict.NEVER_SYNCED),
    ],
)
def test_the_first_verdict_that_holds_wins(
    paused: bool,
    health: state.PeerHealth,
    streak: state.Backoff | None,
    run: state.PeerRun,
    expected: Verdict,
) -> None:
    peer = state.PeerState("p", "http://p", health=health)
    assert judge(PeerRecords(paused, peer, streak, run), NOW, HOUR).verdict is expected


def test_a_record_noemafed_cannot_read_is_no_crash(tmp_path: Path) -> None:
    target = target_with(tmp_path, [{"name": "p", "endpoint": "http://127.0.0.1:1"}])
    put_state(target, **{"noemafed:backoff:p": "{not json", "noemafed:run:p": '{"events_applied_total":"x"}'})
    assert peer_doc(target, 0, "p")["verdict"] == "never_synced"


# ---- status --check over several peers, and when the cortex cannot be read ---------------------------------


def test_check_names_the_worst_peers_first_and_can_be_limited_to_some(tmp_path: Path) -> None:
    with CountingPeer() as dead:
        target = target_with(
            tmp_path,
            [
                {"name": "new", "endpoint": "http://127.0.0.1:1"},
                {"name": "it's=odd|name", "endpoint": dead.endpoint},
                {"name": "gone", "endpoint": dead.endpoint},
            ],
            interval="1m",
        )
        assert sync(target, -7200, "--peer", "gone")[0] == 3
        assert sync(target, 0, "--peer", "it's=odd|name")[0] == 3
    perf = "'new_lag'=U 'new_failures'=0 'it''s_odd|name_lag'=U 'it''s_odd|name_failures'=1 'gone_lag'=U 'gone_failures'=1"
    assert check(target, 1) == (
        2,
        "NOEMAFED CRITICAL - gone stale, it's=odd/name deferred; 3 peers: 1 deferred, 1 never_synced, 1 stale"
        f" | {perf}\n",
    )
    assert check(target, 1, "--peer", "new", "--peer", "new") == (
        0,
        "NOEMAFED OK - 1 peer: 1 never_synced | 'new_lag'=U 'new_failures'=0\n",
    )
    assert check(target, 1, "--peer", "it's=odd|name")[0] == 1


def test_check_with_no_peers_is_ok(tmp_path: Path) -> None:
    target = target_with(tmp_path, [])
    assert check(target, 0) == (0, "NOEMAFED OK - no peers configured\n")


@pytest.mark.parametrize(
    ("breakage", "summary"),
    [
        ("missing", "no cortex at --cortex"),
        ("bad-manifest", 'federation.mode "mirror" is not valid'),
        ("no-database", "noema.db does not exist"),
        ("old-schema", "schema"),
        ("unknown-peer", 'peer "zz" is not configured in cortex.md (known: a)'),
        ("bad-test-now", "NOEMAFED_TEST_NOW='yesterday' is not an RFC3339 time"),
    ],
)
def test_check_says_unknown_with_exit_3_when_the_cortex_cannot_be_read(
    tmp_path: Path, breakage: str, summary: str
) -> None:
    target = target_with(tmp_path, [{"name": "a", "endpoint": "http://127.0.0.1:1"}])
    args, env = ["--cortex", str(target), "status", "--check"], {"NOEMAFED_TEST_NOW": at(0)}
    if breakage == "missing":
        args[1] = str(tmp_path / "missing")
    elif breakage == "bad-manifest":
        text = (target / "cortex.md").read_text()
        (target / "cortex.md").write_text(text.replace("federation:\n", "federation:\n    mode: mirror\n"))
    elif breakage == "no-database":
        (target / "db" / "noema.db").unlink()
    elif breakage == "old-schema":
        conn = sqlite3.connect(target / "db" / "noema.db")
        conn.execute("DELETE FROM schema_migrations WHERE version >= 19")
        conn.commit()
        conn.close()
    elif breakage == "unknown-peer":
        args += ["--peer", "zz"]
    elif breakage == "bad-test-now":
        env = {"NOEMAFED_TEST_NOW": "yesterday"}
    result = run_cli(args, env=env)
    assert (result.exit_code, result.stderr) == (3, "")
    assert result.stdout.startswith("NOEMAFED UNKNOWN - ")
    assert summary in result.stdout
    assert "internal error" not in result.stdout  # named as the error it is, not as a bug
    assert result.stdout.count("\n") == 1
    assert "|" not in result.stdout


def test_check_says_unknown_for_a_bug_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object) -> None:
        raise ValueError("boom")

    monkeypatch.setattr("noemafed.commands.status.status", boom)
    target = target_with(tmp_path, [{"name": "a", "endpoint": "http://127.0.0.1:1"}])
    result = run_cli(["--cortex", str(target), "status", "--check"])
    assert (result.exit_code, result.stdout) == (3, "NOEMAFED UNKNOWN - internal error: ValueError: boom\n")
