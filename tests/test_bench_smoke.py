"""scripts/bench.py replay runs end to end with a small N and prints the ratio line."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO


def test_bench_replay_smoke() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), "replay", "--events", "200"],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert re.search(r"^ratio : \d+\.\d\d ", done.stdout, re.MULTILINE), done.stdout
    assert "floor :" in done.stdout
    assert "replay:" in done.stdout
