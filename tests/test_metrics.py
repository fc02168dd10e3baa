"""`--metrics-file` (issue 14): Prometheus text that prometheus_client's own parser reads back, written so that a
reader never sees half a file."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from conftest import run_cli, state_rows
from peers.counting import CountingPeer
from peers.stdlib_peer import StdlibPeer
from prometheus_client.parser import text_string_to_metric_families
from sync_helpers import source, target_with
from test_backoff import T0, at, sync

from noemafed import __version__
from noemafed.text.clock import parse_rfc3339, ulid_seconds

VERDICTS = (
    "ok",
    "behind",
    "deferred",
    "failing",
    "needs_operator",
    "blocked",
    "paused",
    "never_synced",
    "stale",
)
ODD_NAME = 'quote"back\\slash'


def parse(path: Path) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample by family and labels, as prometheus_client reads them."""
    families: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            families.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return families


def test_the_metrics_of_a_sync_run_parse_and_say_what_status_says(tmp_path: Path) -> None:
    src = source(tmp_path, count=3)
    metrics = tmp_path / "textfile" / "noemafed.prom"
    metrics.parent.mkdir()
    with StdlibPeer(src) as live, CountingPeer() as dead:
        target = target_with(
            tmp_path,
            [{"name": "live", "endpoint": live.endpoint}, {"name": ODD_NAME, "endpoint": dead.endpoint}],
            interval="1m",
        )
        o = int(time.time() - T0) + 5  # just after the source minted its events: the lag is a real figure
        code, doc = sync(target, o, "--metrics-file", str(metrics))
    assert code == 3
    applied = doc["peers"][0]["events_applied"]
    text = metrics.read_text()
    for name in (
        "noemafed_build_info",
        "noemafed_sync_duration_seconds",
        "noemafed_sync_exit_code",
        "noemafed_peer_last_success_timestamp_seconds",
        "noemafed_peer_consecutive_failures",
        "noemafed_peer_lag_seconds",
        "noemafed_peer_next_attempt_timestamp_seconds",
        "noemafed_peer_events_applied_total",
        "noemafed_peer_verdict",
    ):
        assert f"\n# HELP {name} " in "\n" + text
        assert f"\n# TYPE {name} " in text
    assert '{peer="quote\\"back\\\\slash"}' in text  # escaped as the text format says
    samples = parse(metrics)
    live_labels, odd_labels = (("peer", "live"),), (("peer", ODD_NAME),)
    assert samples["noemafed_build_info"] == {(("version", __version__),): 1.0}
    assert samples["noemafed_sync_exit_code"] == {(): 3.0}
    assert 0 < samples["noemafed_sync_duration_seconds"][()] < 60
    assert samples["noemafed_peer_last_success_timestamp_seconds"] == {live_labels: T0 + o}
    assert samples["noemafed_peer_consecutive_failures"] == {live_labels: 0, odd_labels: 1}
    cursor = state_rows(target)["peer:live:last_event"]
    assert samples["noemafed_peer_lag_seconds"] == {live_labels: int(T0 + o - ulid_seconds(cursor))}
    next_attempt = parse_rfc3339(
        json.loads(state_rows(target)[f"noemafed:backoff:{ODD_NAME}"])["next_attempt_at"]
    )
    assert samples["noemafed_peer_next_attempt_timestamp_seconds"] == {odd_labels: next_attempt}
    # prometheus_client names a counter's samples with _total.
    assert samples["noemafed_peer_events_applied_total"] == {live_labels: applied, odd_labels: 0}
    verdicts = samples["noemafed_peer_verdict"]
    assert len(verdicts) == 2 * len(VERDICTS)
    for name, current in (("live", "ok"), (ODD_NAME, "deferred")):
        for verdict in VERDICTS:
            assert verdicts[(("peer", name), ("verdict", verdict))] == (verdict == current)
    assert oct(metrics.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in metrics.parent.iterdir()] == ["noemafed.prom"]


def test_a_host_that_only_checks_writes_the_last_recorded_run(tmp_path: Path) -> None:
    metrics = tmp_path / "noemafed.prom"
    with CountingPeer() as dead:
        target = target_with(tmp_path, [{"name": "dead", "endpoint": dead.endpoint}])
        assert sync(target, 0)[0] == 3
    result = run_cli(
        ["--cortex", str(target), "status", "--check", "--metrics-file", str(metrics)],
        env={"NOEMAFED_TEST_NOW": at(1)},
    )
    assert result.exit_code == 1
    samples = parse(metrics)
    assert samples["noemafed_sync_exit_code"] == {(): 3.0}
    assert samples["noemafed_peer_verdict"][(("peer", "dead"), ("verdict", "deferred"))] == 1
    result = run_cli(
        ["--cortex", str(target), "status", "--metrics-file", str(tmp_path / "b.prom")],
        env={"NOEMAFED_TEST_NOW": at(1)},
    )
    assert result.exit_code == 0
    assert parse(tmp_path / "b.prom") == samples


def test_before_any_run_the_run_metrics_have_no_sample(tmp_path: Path) -> None:
    target = target_with(tmp_path, [{"name": "new", "endpoint": "http://127.0.0.1:1"}])
    metrics = tmp_path / "noemafed.prom"
    assert run_cli(["--cortex", str(target), "status", "--metrics-file", str(metrics)]).exit_code == 0
    samples = parse(metrics)
    assert "noemafed_sync_exit_code" not in samples
    assert "noemafed_peer_lag_seconds" not in samples
    assert samples["noemafed_peer_verdict"][(("peer", "new"), ("verdict", "never_synced"))] == 1


def test_a_metrics_file_that_cannot_be_written_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    target = target_with(tmp_path, [])
    result = run_cli(["--cortex", str(target), "status", "--metrics-file", str(tmp_path / "no" / "m.prom")])
    assert result.exit_code == 73
    assert result.stderr.startswith("Error: cannot create")


def test_a_reader_polling_the_file_during_100_runs_never_sees_a_partial_file(tmp_path: Path) -> None:
    peers = [{"name": f"peer-{n:02d}", "endpoint": "http://127.0.0.1:1"} for n in range(40)]
    target = target_with(tmp_path, peers)
    metrics = tmp_path / "noemafed.prom"
    last_line = 'noemafed_peer_verdict{peer="peer-39",verdict="stale"} 0\n'
    stop = threading.Event()
    reads: list[int] = []
    partial: list[str] = []

    def poll() -> None:
        while not stop.is_set():
            try:
                text = metrics.read_text()
            except FileNotFoundError:
                continue
            reads.append(len(text))
            if not text.endswith(last_line) or text.count("# HELP ") != 9:
                partial.append(text)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for run in range(100):
            # The first run fails every peer, the others defer them: each run rewrites the whole file.
            code, _ = sync(target, 0, "--metrics-file", str(metrics))
            assert code == (3 if run == 0 else 0)
    finally:
        stop.set()
        reader.join()
    assert not partial, f"{len(partial)} of {len(reads)} reads saw a partial file"
    assert len(reads) > 100
    assert list(text_string_to_metric_families(metrics.read_text()))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".prom"))) == [
        "noemafed.prom"
    ]


@pytest.mark.parametrize("name", ["plain", 'a"b', "a\\b"])
def test_label_values_round_trip(tmp_path: Path, name: str) -> None:
    target = target_with(tmp_path, [{"name": name, "endpoint": "http://127.0.0.1:1"}])
    metrics = tmp_path / "m.prom"
    assert run_cli(["--cortex", str(target), "status", "--metrics-file", str(metrics)]).exit_code == 0
    assert set(parse(metrics)["noemafed_peer_consecutive_failures"]) == {(("peer", name),)}
