"""Our own stdout and stderr failing: never a peer's fault, never a traceback, never log lines in the report.

A real `noemafed` process (python -m noemafed) against a real peer, its streams real pipes whose reader has gone
(EPIPE, as `noemafed sync --once -v 2>&1 | head -1` makes them) or closed before it started (`2>&-`).
docs/exit-codes.md says what each does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, make_cortex, state_rows
from peers.stdlib_peer import StdlibPeer
from sync_helpers import check_db, comparable_trace_files, events, source, target_with

READER_GONE = 141  # what a shell shows for a process its pipe's reader left: 128 + SIGPIPE


def noemafed(*args: str, **streams: Any) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "noemafed", *args], env=env, check=False, timeout=120, **streams
    )


@pytest.fixture
def reader_gone() -> Iterator[int]:
    """The write end of a pipe whose read end is closed: every write to it fails with EPIPE."""
    read, write = os.pipe()
    os.close(read)
    yield write
    os.close(write)


def test_a_log_whose_reader_has_gone_ends_the_run_quietly_and_charges_no_peer(
    tmp_path: Path, reader_gone: int
) -> None:
    """Bug: the failed log line was the poll's failure, recorded in the peer's health as `network_reset` (a
    broken pipe is a connection reset to the classifier): one more failure, and backoff, for a healthy peer."""
    src = source(tmp_path, count=30)
    with StdlibPeer(src) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        cut = noemafed(
            "--cortex", str(target), "-v", "sync", "--once", stdout=subprocess.PIPE, stderr=reader_gone
        )
        assert (cut.returncode, cut.stdout) == (READER_GONE, b"")
        assert "peer:src:health" not in state_rows(target)
        check_db(target)
        # What the run left is what a kill -9 leaves: the next run completes it.
        rerun = noemafed("--cortex", str(target), "sync", "--once", "--json", capture_output=True)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["peers"][0]["status"] == "ok"
    assert events(target) == events(src)
    assert comparable_trace_files(target) == comparable_trace_files(src)
    check_db(target)


def test_a_report_whose_reader_has_gone_ends_quietly_after_the_polls(
    tmp_path: Path, reader_gone: int
) -> None:
    """`noemafed sync --once | head -c1`: the polls are done and recorded; the report is what fails. Bug: it
    said `Error: writing standard output: Broken pipe` and told the operator to check the disk (exit 74)."""
    src = source(tmp_path, count=3)
    with StdlibPeer(src) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        done = noemafed(
            "--cortex", str(target), "sync", "--once", "--json", stdout=reader_gone, stderr=subprocess.PIPE
        )
    assert (done.returncode, done.stderr) == (READER_GONE, b"")
    assert json.loads(state_rows(target)["peer:src:health"])["last_success"]
    assert events(target) == events(src)


@pytest.mark.parametrize("command", [["status"], ["peers", "--json"], ["--version"]])
def test_any_command_whose_reader_has_gone_ends_quietly(
    tmp_path: Path, reader_gone: int, command: list[str]
) -> None:
    cortex = make_cortex(tmp_path)
    done = noemafed("--cortex", str(cortex), *command, stdout=reader_gone, stderr=subprocess.PIPE)
    assert (done.returncode, done.stderr) == (READER_GONE, b"")


def test_a_closed_stderr_drops_the_log_and_keeps_the_report_clean(tmp_path: Path) -> None:
    """`2>&-`: Python leaves sys.stderr None, and click then wrote each log line to stdout, into the JSON
    report; the run ended with exit 1 (flushing None at exit). Now the lines go nowhere, as under 2>/dev/null."""
    src = source(tmp_path, count=3)
    with StdlibPeer(src) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        argv = [sys.executable, "-m", "noemafed", "--cortex", str(target), "-v", "sync", "--once", "--json"]
        done = subprocess.run(
            ["sh", "-c", 'exec "$@" 2>&-', "sh", *argv],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            check=False,
            timeout=120,
        )
    assert done.returncode == 0
    assert json.loads(done.stdout)["peers"][0]["status"] == "ok"  # the whole of stdout is the report
    assert events(target) == events(src)
