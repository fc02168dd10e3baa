"""Sync against independent peers and as a real process: the official MCP SDK, the daemon (kill -9: test_crash_trials)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, put_state
from peers.sdk_peer import SdkPeer
from peers.stdlib_peer import StdlibPeer
from sync_helpers import check_db, comparable_trace_files, events, source, state_value, target_with


def noemafed(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    """The real program in its own process, as cron or systemd would start it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "noemafed", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,  # type: ignore[call-overload]
    )


def _run(target: Path) -> tuple[int, dict]:
    proc = noemafed("--cortex", str(target), "sync", "--once", "--json")
    out, err = proc.communicate(timeout=60)
    assert out, err
    return proc.returncode, json.loads(out)


@pytest.mark.parametrize("json_response", [True, False], ids=["sdk-json", "sdk-sse"])
def test_full_sync_against_the_official_sdk(tmp_path: Path, json_response: bool) -> None:
    src = source(tmp_path, count=4)
    with SdkPeer(src, json_response=json_response, key="sdk-key", tls=True) as peer:
        ca = tmp_path / "ca.pem"
        peer.write_ca(ca)
        target = target_with(tmp_path, [{"name": "sdk", "endpoint": peer.endpoint_ip, "ca": str(ca)}])
        # Without the key the keyed SDK peer answers 401: auth, exit 4.
        code, doc = _run(target)
        assert (code, doc["peers"][0]["reason"]) == (4, "auth")
        key_file = target / "mcp.key"
        key_file.write_text("sdk-key\n")
        key_file.chmod(0o600)
        manifest = (target / "cortex.md").read_text()
        (target / "cortex.md").write_text(
            manifest.replace("version: 2\n", "version: 2\naccess:\n    shared_key_file: mcp.key\n")
        )
        code, doc = _run(target)
    assert code == 0, doc
    assert doc["peers"][0]["peer_version"] == "0.22.2"
    assert events(target) == events(src)
    assert comparable_trace_files(target) == comparable_trace_files(src)
    check_db(target)


def test_daemon_logs_friendly_then_brief_and_stops_on_sigterm(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    target = target_with(
        tmp_path,
        [{"name": "down", "endpoint": endpoint}, {"name": "off", "endpoint": endpoint, "mode": "paused"}],
        interval="300ms",
    )
    proc = noemafed("--cortex", str(target), "sync")
    time.sleep(2.2)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=5)
    stopped_in = time.monotonic() - started
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert stopped_in < 1.5
    # Go's logger stamps "YYYY/MM/DD HH:MM:SS " once per message, not on continuation lines.
    lines = [re.sub(r"^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} ", "", line) for line in err.splitlines()]
    assert '[federation] peer "off" is paused, skipping' in lines
    assert "Federation syncer started (2 peers, interval 300ms)" in lines
    friendly = lines.index(f'[federation] cannot reach peer "down" at {endpoint}:')
    assert lines[friendly + 1 : friendly + 6] == [
        "    the host is reachable but nothing is listening on that port",
        "    - is `noema serve --transport http` running on the peer?",
        "    - does the peer's --host/--port match the endpoint above?",
        "    - is a firewall on the peer blocking the port?",
        "    retrying in 600ms",
    ]
    assert '[federation] peer "down" still unreachable (refused); next retry in 1.2s' in lines
    health = json.loads(state_value(target, "peer:down:health"))
    assert health["last_error"]["reason"] == "network_refused"
    assert state_value(target, "peer:off:health") == ""


def test_daemon_recovers_and_says_so(tmp_path: Path) -> None:
    src = source(tmp_path, count=2)
    with StdlibPeer(src, flavor="go", status_override=503) as peer:
        target = target_with(tmp_path, [{"name": "p", "endpoint": peer.endpoint}], interval="200ms")
        proc = noemafed("--cortex", str(target), "sync")
        time.sleep(1.0)
        peer.knobs.status_override = None
        deadline = time.monotonic() + 10

        def recovered() -> bool:
            health = json.loads(state_value(target, "peer:p:health") or "{}")
            return "last_success" in health and health.get("consecutive_failures", 0) == 0

        while time.monotonic() < deadline and not recovered():
            time.sleep(0.05)
        failures_before_stop = json.loads(state_value(target, "peer:p:health")).get("consecutive_failures", 0)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=5)
        _, err = proc.communicate()
    assert events(target) == events(src)
    assert '[federation] peer "p" reachable again' in err
    assert failures_before_stop == 0
    health = json.loads(state_value(target, "peer:p:health"))
    assert health.get("consecutive_failures", 0) == 0  # the stop itself is not a failure
    put_state(target)  # the cortex is still writable after the daemon exits
