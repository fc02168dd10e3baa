"""`sync --log-format json`: every stderr line of a failing and a succeeding run, and of the daemon, is one JSON
object with time, level, peer, event and reason; `text` stays noema's lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, make_cortex, run_cli
from peers.stdlib_peer import StdlibPeer
from sync_helpers import source

from noemafed.federation import logfields
from noemafed.text.gotext import go_quote

TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
TEXT_STAMP = re.compile(r"\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} ")


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Each line one object with the common fields, its event one of the templates."""
    records = []
    for line in stderr.splitlines():
        record = json.loads(line)
        assert list(record)[:5] == ["time", "level", "peer", "event", "reason"], record
        assert list(record)[-1] == "message"
        assert TIME.fullmatch(record["time"])
        assert record["level"] in ("debug", "info", "warning", "error")
        assert record["event"] != logfields.UNKNOWN_EVENT, record
        records.append(record)
    return records


def test_a_failing_sync_logs_its_failure_as_json(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha", peers=[{"name": "dead", "endpoint": "http://127.0.0.1:1"}])
    result = run_cli(["--cortex", str(path), "sync", "--once", "--log-format", "json"])
    assert result.exit_code == 3
    (record,) = json_lines(result.stderr)  # under cron only warnings: the failure
    assert record == {
        "time": record["time"],
        "level": "warning",
        "peer": "dead",
        "event": "poll_result",
        "reason": "network_refused",
        "status": "failed",
        "applied": "0",
        "cursor": "(none)",
        "message": '[sync] peer "dead": failed (network_refused), 0 events applied, cursor (none)',
    }


def test_a_succeeding_sync_logs_every_line_as_json(tmp_path: Path) -> None:
    origin = source(tmp_path, "origin", count=4)
    with StdlibPeer(origin) as peer:
        path = make_cortex(tmp_path, "alpha", peers=[{"name": "tab\tpeer", "endpoint": peer.endpoint}])
        result = run_cli(["--cortex", str(path), "sync", "--once", "--log-format", "json", "-v"])
    assert result.exit_code == 0, result.stderr
    records = json_lines(result.stderr)
    assert [r["event"] for r in records] == ["identity_pinned", "page_applied", "poll_result"]
    assert {r["peer"] for r in records} == {"tab\tpeer"}  # Go's %q undone
    pinned, page, outcome = records
    assert pinned["id"]
    assert pinned["remote"] == "origin"
    assert int(page["applied"]) > 0
    assert (outcome["status"], outcome["reason"], outcome["level"]) == ("ok", None, "info")


def test_text_stays_noemas_lines(tmp_path: Path) -> None:
    origin = source(tmp_path, "origin", count=2)
    with StdlibPeer(origin) as peer:
        path = make_cortex(tmp_path, "alpha", peers=[{"name": "p", "endpoint": peer.endpoint}])
        result = run_cli(["--cortex", str(path), "sync", "--once", "-v"])
    lines = result.stderr.splitlines()
    assert all(TEXT_STAMP.match(line) for line in lines)
    texts = [TEXT_STAMP.sub("", line, count=1) for line in lines]
    assert texts[0].startswith('[federation] peer "p" identity pinned: origin (')
    assert texts[1].startswith('[sync] peer "p": page 1, ')
    assert len(texts) == 2  # no result line in text mode


def test_the_daemon_logs_json_from_start_to_stop(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha", peers=[{"name": "dead", "endpoint": "http://127.0.0.1:1"}])
    proc = subprocess.Popen(
        [sys.executable, "-m", "noemafed", "--cortex", str(path), "sync", "--log-format", "json"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    second = proc.stderr.readline()  # the first failure follows at once
    time.sleep(0.2)
    proc.terminate()
    rest = proc.stderr.read()
    proc.wait(timeout=30)
    records = json_lines(first + second + rest)
    assert [r["event"] for r in records] == ["syncer_started", "peer_unreachable", "syncer_stopped"]
    started, unreachable, _ = records
    assert (started["count"], started["interval"]) == ("1", "30s")
    assert (unreachable["peer"], unreachable["endpoint"], unreachable["level"]) == (
        "dead",
        "http://127.0.0.1:1",
        "warning",
    )
    assert unreachable["message"].startswith('[federation] cannot reach peer "dead" at http://127.0.0.1:1:\n')


@pytest.mark.parametrize(("event", "template"), logfields.TEMPLATES, ids=[e for e, _ in logfields.TEMPLATES])
def test_every_template_is_recognised_with_its_fields(event: str, template: str) -> None:
    names = re.findall(r"\{(\w+)", template)
    values = {name: f"<{name}>" for name in names}
    if "name" in values:
        values["name"] = go_quote('a "quoted" peer')
    record = logfields.log_record("2026-01-01T00:00:00Z", "info", template.format(**values))
    assert record["event"] == event
    if "name" in names:
        assert record["peer"] == 'a "quoted" peer'
    for name in names:
        if name in ("reason", "category"):  # both are the `reason` field
            assert record["reason"] == f"<{name}>"
        elif name != "name":
            assert record[name] == f"<{name}>"
