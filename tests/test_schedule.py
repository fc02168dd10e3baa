"""The daemon's log texts: golden friendly, brief and recovered messages (federation.md §4.4); its waits."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import db, make_cortex, run_cli
from peers.stdlib_peer import StdlibPeer
from sync_helpers import source, state_value, target_with

from noemafed.cortex.access import AccessKey
from noemafed.cortex.events import EVENT_COLUMNS, event_from_row, page_json
from noemafed.cortex.manifest import read_manifest
from noemafed.federation import schedule
from noemafed.federation.syncer import SyncContext, SyncOptions
from noemafed.logs import Log

# ----- the daemon's failure texts (§4.4) -------------------------------------------------------------

ENDPOINT = "http://10.0.0.2:8765"

FRIENDLY_GOLDEN = {
    "refused": (
        '[federation] cannot reach peer "beta" at http://10.0.0.2:8765:\n'
        "    the host is reachable but nothing is listening on that port\n"
        "    - is `noema serve --transport http` running on the peer?\n"
        "    - does the peer's --host/--port match the endpoint above?\n"
        "    - is a firewall on the peer blocking the port?\n"
        "    retrying in 1m0s"
    ),
    "timeout": (
        '[federation] cannot reach peer "beta" at http://10.0.0.2:8765:\n'
        "    the connection attempt timed out\n"
        "    - is the peer host online and reachable on the network?\n"
        "    - check for firewalls, VPNs, or routing issues between hosts\n"
        "    retrying in 1m0s"
    ),
    "dns": (
        '[federation] cannot reach peer "beta" at http://10.0.0.2:8765:\n'
        "    the peer's hostname could not be resolved\n"
        "    - is the hostname spelled correctly in cortex.md?\n"
        "    - is your DNS resolver working? try `dig` or `nslookup` against it\n"
        "    - if it's a LAN-only name, is mDNS / your hosts file set up?\n"
        "    retrying in 1m0s"
    ),
    "tls": (
        '[federation] cannot reach peer "beta" at http://10.0.0.2:8765:\n'
        "    the TLS handshake failed\n"
        "    - if the peer uses a self-signed cert, add `ca: /path/to/ca.pem` under that peer in cortex.md\n"
        "    - does the cert's SAN match the endpoint hostname?\n"
        "    - is the cert expired or signed by an unknown CA?\n"
        "    retrying in 1m0s"
    ),
    "reset": (
        '[federation] cannot reach peer "beta" at http://10.0.0.2:8765:\n'
        "    the connection was reset by the peer\n"
        "    - the peer may be restarting; will retry automatically\n"
        "    - check the peer's logs for crashes or panics\n"
        "    retrying in 1m0s"
    ),
    "eof": (
        '[federation] cannot reach peer "beta" at http://10.0.0.2:8765:\n'
        "    the peer closed the connection unexpectedly\n"
        "    - the peer may not be a Noema MCP server, or may be on an incompatible version\n"
        "    - check the peer's logs for startup errors\n"
        "    retrying in 1m0s"
    ),
    "other": (
        '[federation] cannot reach peer "beta" at http://10.0.0.2:8765:\n'
        "    replay event 01X: invalid trace ID\n"
        "    retrying in 1m0s"
    ),
}


@pytest.mark.parametrize("category", sorted(FRIENDLY_GOLDEN))
def test_friendly_message_golden(category: str) -> None:
    text = schedule.friendly_message("beta", ENDPOINT, category, "replay event 01X: invalid trace ID", "1m0s")
    assert text == FRIENDLY_GOLDEN[category]


def test_friendly_message_unknown_category_is_other() -> None:
    text = schedule.friendly_message("beta", ENDPOINT, "auth", "401 Unauthorized", "5m0s")
    assert text == (
        '[federation] cannot reach peer "beta" at http://10.0.0.2:8765:\n'
        "    401 Unauthorized\n"
        "    retrying in 5m0s"
    )


def test_friendly_message_quotes_name_like_go() -> None:
    text = schedule.friendly_message('we"ird', ENDPOINT, "refused", "x", "30s")
    assert text.splitlines()[0] == '[federation] cannot reach peer "we\\"ird" at http://10.0.0.2:8765:'


def test_brief_and_recovered_messages() -> None:
    assert (
        schedule.brief_message("beta", "refused", "2m0s")
        == '[federation] peer "beta" still unreachable (refused); next retry in 2m0s'
    )
    assert schedule.recovered_message("beta") == '[federation] peer "beta" reachable again'


# ----- the daemon's waits and what it logs (federation.md §3.2, §8.1 items 1, 4, 5) --------------------


def run_daemon_until(target: Path, done: Callable[[list[str]], bool], seconds: float = 15.0) -> list[str]:
    """The daemon in a thread until `done(logs)` holds, then stopped as SIGTERM stops it."""
    logs: list[str] = []
    stop = threading.Event()
    ctx = SyncContext(
        target, read_manifest(target), AccessKey(), SyncOptions(), Log(lambda _level, line: logs.append(line))
    )
    thread = threading.Thread(target=schedule.run_daemon, args=(ctx, stop))
    thread.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not done(logs):
        time.sleep(0.02)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    return logs


def closed_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def friendly(logs: list[str]) -> list[str]:
    return [line for line in logs if line.startswith("[federation] cannot reach peer ")]


@pytest.mark.parametrize("interval", ["-5s", "0s", "0", "-1h"])
def test_a_negative_or_zero_interval_means_the_default_not_a_loop_without_sleep(
    tmp_path: Path, interval: str
) -> None:
    """Go replaces only an interval of exactly 0: `-5s` gave waits of -10s, -20s ... and a loop that never
    sleeps. noemafed reads any interval that is not positive as the 30 s default, as for an invalid one."""
    target = target_with(tmp_path, [{"name": "down", "endpoint": closed_endpoint()}], interval=interval)
    logs = run_daemon_until(target, lambda logs: bool(friendly(logs)))
    assert "Federation syncer started (1 peers, interval 30s)" in logs
    [message] = friendly(logs)
    assert message.endswith("\n    retrying in 1m0s")  # the first failure doubles the 30 s default
    assert not [line for line in logs if "still unreachable" in line]


def test_a_replay_failure_says_cannot_reach_and_an_hour_interval_retries_in_five_minutes(
    tmp_path: Path,
) -> None:
    """Copied from Go (federation.md §8.1 items 1 and 5): the friendly block opens with "cannot reach peer"
    whatever failed (its second line is then the error itself), and backoff is capped at 5 minutes, so an
    interval over 5 minutes retries a failure sooner than it polls a healthy peer (as Rust does too)."""
    src = source(tmp_path, count=1)
    conn = db(src)
    rows = conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY id").fetchall()
    conn.close()
    page = json.loads(page_json(event_from_row(row) for row in rows))
    page[0]["trace_id"] = "NOT-A-TRACE-ID"
    with StdlibPeer(src, page_override=json.dumps(page)) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}], interval="1h")
        logs = run_daemon_until(target, lambda logs: bool(friendly(logs)))
    assert "Federation syncer started (1 peers, interval 1h0m0s)" in logs
    [message] = friendly(logs)
    header, error, retry = message.split("\n")
    assert header == f'[federation] cannot reach peer "src" at {peer.endpoint}:'
    assert error.startswith(f"    replay event {page[0]['id']}: rejecting remote event ")
    assert retry == "    retrying in 5m0s"


def test_a_poll_cut_short_by_shutdown_records_no_failure(tmp_path: Path) -> None:
    """federation.md §8.1.4: Go records the interrupted poll as one more failure (reason `other`)."""
    src = source(tmp_path, count=1)
    with StdlibPeer(src, hang_seconds=60, misbehave_on="sync_events") as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        logs = run_daemon_until(target, lambda _logs: "sync_events" in peer.calls())
    # Leaving the peer drops the hanging request: the abandoned poll ends now, after the stop.
    for thread in threading.enumerate():
        if thread.name == "peer-src":
            thread.join(timeout=10)
            assert not thread.is_alive()
    assert state_value(target, "peer:src:health") == ""
    assert state_value(target, "peer:src:cortex_id")  # the poll did run, up to the page
    assert not friendly(logs)


def test_the_daemon_with_nothing_to_poll_says_so_and_exits_0(tmp_path: Path) -> None:
    """A daemon that idles for ever with no peer looks healthy to systemd while doing nothing."""
    alone = make_cortex(tmp_path, "alone")
    result = run_cli(["--cortex", str(alone), "sync"])
    assert result.exit_code == 0
    assert result.stderr.endswith(" " + schedule.NO_PEERS_LOG + "\n")
    paused = make_cortex(
        tmp_path, "paused", peers=[{"name": "p", "endpoint": closed_endpoint(), "mode": "paused"}]
    )
    result = run_cli(["--cortex", str(paused), "sync"])
    assert result.exit_code == 0
    assert result.stderr.endswith(" " + schedule.ALL_PAUSED_LOG + "\n")


def test_the_daemon_says_when_it_stops(tmp_path: Path) -> None:
    target = make_cortex(tmp_path, "target", peers=[{"name": "p", "endpoint": closed_endpoint()}])
    logs = run_daemon_until(
        target, lambda logs: any(line.startswith("Federation syncer started") for line in logs)
    )
    assert logs[-1] == schedule.STOPPED_LOG
