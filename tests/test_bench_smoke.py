"""scripts/bench.py runs end to end with tiny sizes and prints its result lines (figures are never asserted)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import PYZ, REPO


def bench(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def bench_pyz(*args: str) -> str:
    if not PYZ.exists():
        pytest.fail("dist/noemafed.pyz is missing: run ./build.sh (scripts/test.sh does)")
    out = bench(*args, "--pyz", str(PYZ))
    assert out.startswith("machine: "), out
    return out


def test_bench_replay_smoke() -> None:
    out = bench("replay", "--events", "200")
    assert re.search(r"^ratio : \d+\.\d\d ", out, re.MULTILINE), out
    assert "floor :" in out
    assert "replay:" in out


@pytest.mark.zipapp
def test_bench_sync_smoke() -> None:
    out = bench_pyz("sync", "--events", "150", "--rounds", "1")
    assert re.search(r"^replay-only: +\d+ events/s", out, re.MULTILINE), out
    assert re.search(r"^sync       : +\d+ events/s .* peak RSS \d+\.\d MiB", out, re.MULTILINE), out
    assert re.search(r"^ratio      : \d+\.\d\d ", out, re.MULTILINE), out
    assert re.search(r"^go noema   : 60 s to drain", out, re.MULTILINE), out


@pytest.mark.zipapp
def test_bench_startup_smoke() -> None:
    out = bench_pyz("startup", "--repeat", "2", "--traces", "2", "--top", "3")
    assert re.search(r"^noemafed.pyz sync --once, 3 caught-up peers +\d+ ms", out, re.MULTILINE), out
    assert re.search(r"^ratio: \d+\.\d\d wall, \d+\.\d\d CPU \(sync --once / floor", out, re.MULTILINE), out
    assert "all imports:" in out


@pytest.mark.zipapp
def test_bench_serve_smoke() -> None:
    out = bench_pyz("serve", "--events", "250", "--limit", "100", "--passes", "1")
    assert re.search(r"^serve : +\d+ events/s", out, re.MULTILINE), out
    assert re.search(r"^target: >= 5000 events/s: (met|MISSED)$", out, re.MULTILINE), out


@pytest.mark.zipapp
def test_bench_load_smoke() -> None:
    out = bench_pyz("load", "--clients", "4", "--events", "250", "--limit", "100", "--timeout", "60")
    assert "errors 0, dropped 0, duplicated 0, not identical to the source's id sequence 0" in out, out
    assert "the run ended by itself: yes" in out, out
    assert "verdict : no error, no dropped and no duplicated event" in out, out


def test_bench_memory_smoke() -> None:
    out = bench("memory", "--cases", "normal")
    assert re.search(
        r"^1 page, 1,000 x 1\.7 KiB events \(a normal page\) +body +\d+\.\d MiB  idle \d+\.\d MiB  "
        r"peak \d+\.\d MiB  delta +-?\d+\.\d MiB  ratio +-?\d+\.\d\d ",
        out,
        re.MULTILINE,
    ), out


@pytest.mark.zipapp
def test_bench_verify_smoke() -> None:
    out = bench_pyz("verify", "--signatures", "40", "--rounds", "1", "--events", "120", "--sync-rounds", "1")
    for name in ("openssl", "python, warm key", "python before issue 15", "python, cold keys"):
        assert re.search(rf"^{name} +: +\d+ /s .* +\d+\.\dx before$", out, re.MULTILINE), out
    assert re.search(
        r"^pyz --version \(NOEMAFED_ED25519=python\): .*, Ed25519: pure Python$", out, re.MULTILINE
    )
    for mode in ("verify: off", "enforce, OpenSSL", "enforce, python"):
        assert re.search(
            rf"^{mode} +: +\d+ events/s .* ratio to off \d+\.\d\d  cpu +\d+ us/event, ratio to off \d+\.\d\d$",
            out,
            re.MULTILINE,
        ), out
