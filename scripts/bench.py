#!/usr/bin/env python3
"""Benchmarks: `bench.py replay|sync|startup|status|latency|serve|load|memory|verify` (docs/performance.md has the figures and
verdicts).

`bench.py replay --events N`: replay N `create` events beside a plain-sqlite3 floor.

Both sides run in their own child process (so peak RSS is theirs alone) on a fresh cortex, consume the same
pages of 1,000 events (the sync_events maximum) generated on the fly, and are timed only around the work a
syncer would do with a page: parse it, write rows and files. The parent alternates them page by page (F R,
R F, ...) so a slow spell of the disk hits both alike. Results: events/s of each, the ratio, peak RSS, and
the tracemalloc peak of replay's allocations for one page into an empty cortex and one into the full cortex,
measured after the timed run (tracemalloc never runs while a page is timed).

The floor is the least any correct replay must do: in ONE transaction, insert the traces row, 3 tags, the
FTS row, the events row and the cursor, and write the same file text atomically (temp file, rename, 0640).
It skips everything replay adds: raw-span parsing, gates, the already-seen lookup, tier/tag folding, hash
check, per-event savepoints, clock merge, stray-copy removal.

The network benchmarks (`sync`, `startup`, `latency`, `serve`, `load`) run the BUILT `dist/noemafed.pyz` (`--pyz`) as
separate processes on 127.0.0.1, each with a throwaway SHIV_ROOT, and measure every figure beside a baseline
taken in the same run. Every request loop is bounded by a count and a wall-clock deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import http.client
import io
import json
import math
import os
import platform
import pstats
import queue
import re
import resource
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

# The network benchmarks run their replay-only child on the pyz's own extracted code (NOEMAFED_BENCH_PATH),
# so both sides of a ratio are the same build even while the working tree changes.
sys.path.insert(0, os.environ.get("NOEMAFED_BENCH_PATH") or str(Path(__file__).resolve().parent.parent))

from noemafed.cortex import emit, traces
from noemafed.cortex.events import EVENT_COLUMNS, Event, event_from_row, page_json, parse_page
from noemafed.cortex.open import connect, init_cortex, open_cortex
from noemafed.federation.replay import Replayer
from noemafed.logs import SILENT
from noemafed.signing import ed25519, eventsig, verifier

PAGE = 1000
SOURCE_ID = "01JQ7X2B9C4D5E6F7G8H9JKMNP"
SIGNING_SEED = b"\x11" * 32  # the author of `bench.py verify`'s signed events
SIGNING_KEY = "ed25519:0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc="  # its public key (cortex.md's demo key)
PEER = "research"
BODY = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit; the index & event log <stay> small. " * 11)[
    :1023
] + "\n"


def page_text(start: int, stop: int, text: str = BODY) -> str:
    """One page of realistic `create` events numbered start..stop-1, as a Go peer serves them.

    The payloads are built by the product's own encoder; only ids differ between calls (fresh ULIDs).
    """
    events = []
    for n in range(start, stop):
        trace_id = f"20250401-benchmark-trace-{n}"
        body = f"{n}: {text}"
        snapshot = traces.Trace(
            id=trace_id,
            title=f"Benchmark trace {n}",
            type="note",
            body=body,
            author="bench-agent",
            tags=("bench", f"group-{n % 10}", "replay"),
            origin=PEER,
            tier="short",
            content_hash=traces.content_hash(body),
        )
        events.append(
            Event(
                id=emit.new_ulid(),
                action="create",
                trace_id=trace_id,
                cortex_id=SOURCE_ID,
                origin=PEER,
                timestamp="2025-04-01T12:00:00Z",
                data=emit.snapshot_data(snapshot),
                vclock={SOURCE_ID: n + 1},
            )
        )
    return page_json(events)


def pages(total: int) -> Iterator[str]:
    """Pages of `create` events 0..total-1, PAGE events each (the last one may be shorter)."""
    for start in range(0, total, PAGE):
        yield page_text(start, min(start + PAGE, total))


def fresh_cortex(root: Path) -> Path:
    path = root / "bench"
    init_cortex(path, "bench")
    return path


def malloc_peak(cortex_dir: Path, start: int) -> int:
    """tracemalloc's peak while one page (events start..start+PAGE-1) is replayed; never timed."""
    cortex = open_cortex(cortex_dir)
    replayer = Replayer(cortex, log=SILENT)
    text = page_text(start, start + PAGE)  # the page as received is not counted; parsing it is
    tracemalloc.start()
    try:
        result = replayer.apply_page(parse_page(text), cursor_peer=PEER)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        cortex.close()
    if result.error is not None:
        raise result.error
    return peak


class ReplaySide:
    """The measured side: `Replayer.apply_page` on a fresh cortex, one page per step."""

    def __init__(self, root: Path, total: int, durable: bool, profile: bool) -> None:
        self.root, self.total = root, total
        self.path = fresh_cortex(root)
        self.cortex = open_cortex(self.path)
        self.replayer = Replayer(self.cortex, log=SILENT, durable=durable)
        self.profiler = cProfile.Profile() if profile else None

    def page(self, text: str) -> float:
        if self.profiler:
            self.profiler.enable()
        start = time.perf_counter()
        result = self.replayer.apply_page(parse_page(text), cursor_peer=PEER)
        seconds = time.perf_counter() - start
        if self.profiler:
            self.profiler.disable()
        if result.error is not None:
            raise result.error
        return seconds

    def finish(self) -> dict[str, object]:
        count = self.cortex.conn.execute("SELECT count(*) FROM traces").fetchone()[0]
        assert count == self.total, count
        self.cortex.close()
        out: dict[str, object] = {"seconds": 0.0, "peak_rss_kib": peak_rss_kib()}
        # Allocation peaks, after the timed run and the RSS reading (tracemalloc slows every allocation and
        # holds its own tables): a page into an empty cortex, and one more page into the full one. Equal
        # peaks mean the per-page memory does not grow with the number of events already replayed.
        first = malloc_peak(fresh_cortex(self.root / "first-page"), 0)
        out["malloc_peak_first_last"] = [first, malloc_peak(self.path, self.total)]
        if self.profiler:
            buffer = io.StringIO()
            pstats.Stats(self.profiler, stream=buffer).sort_stats("tottime").print_stats(25)
            out["profile"] = buffer.getvalue()
        return out


def floor_file_text(trace_id: str, payload: dict[str, object], timestamp: str) -> str:
    """The same bytes traces.format_trace writes for these (plain-safe) values, by template."""
    tags = "".join(f"    - {tag}\n" for tag in payload["tags"])  # type: ignore[attr-defined]
    return (
        f"---\nid: {trace_id}\ntitle: {payload['title']}\ntype: {payload['type']}\ntier: {payload['tier']}\n"
        f"author: {payload['author']}\ntags:\n{tags}origin: {payload['origin']}\n"
        f'created: "{timestamp}"\nupdated: "{timestamp}"\ncontent_hash: {payload["content_hash"]}\n---\n\n'
        f"{payload['body']}"
    )


class FloorSide:
    """The floor: plain sqlite3 and atomic file writes, one transaction for the whole run."""

    def __init__(self, root: Path) -> None:
        path = fresh_cortex(root)
        self.conn = connect(path / "db" / "noema.db")
        self.folder = path / "traces"
        self.last = ""
        self.conn.execute("BEGIN IMMEDIATE")

    def page(self, text: str) -> float:
        conn, folder = self.conn, self.folder
        start = time.perf_counter()
        for event in json.loads(text):
            payload = json.loads(json.dumps(event["data"]))
            data_text = json.dumps(event["data"], ensure_ascii=False, separators=(",", ":"))
            trace_id, stamp = event["trace_id"], event["timestamp"]
            conn.execute(
                "INSERT INTO traces (id, title, type, author, created_at, updated_at, origin, cortex_id, "
                "content_hash, tier) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    trace_id,
                    payload["title"],
                    payload["type"],
                    payload["author"],
                    stamp,
                    stamp,
                    payload["origin"],
                    event["cortex_id"],
                    payload["content_hash"],
                    payload["tier"],
                ),
            )
            conn.executemany(
                "INSERT INTO trace_tags (trace_id, tag) VALUES (?, ?)",
                [(trace_id, t) for t in payload["tags"]],
            )
            conn.execute(
                "INSERT INTO traces_fts (id, title, body, tags) VALUES (?, ?, ?, ?)",
                (trace_id, payload["title"], payload["body"], " ".join(payload["tags"])),
            )
            conn.execute(
                "INSERT INTO events (id, action, trace_id, origin, timestamp, data, vclock, cortex_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event["id"],
                    event["action"],
                    trace_id,
                    event["origin"],
                    stamp,
                    data_text,
                    json.dumps(event["vclock"]),
                    event["cortex_id"],
                ),
            )
            final = folder / f"{trace_id}.md"
            temp = folder / f".noema-trace-{event['id']}.tmp"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            os.write(fd, floor_file_text(trace_id, payload, stamp).encode())
            os.close(fd)
            os.replace(temp, final)
            self.last = event["id"]
        return time.perf_counter() - start

    def finish(self) -> dict[str, object]:
        start = time.perf_counter()
        self.conn.execute(
            "INSERT OR REPLACE INTO federation_state (key, value) VALUES (?, ?)",
            (f"peer:{PEER}:last_event", self.last),
        )
        self.conn.execute("COMMIT")
        seconds = time.perf_counter() - start
        self.conn.close()
        return {"seconds": seconds, "peak_rss_kib": peak_rss_kib()}


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(kind: str, total: int, root: Path, durable: bool, profile: bool) -> None:
    """One side, driven by the parent: each line on stdin runs the next page (then the finish) and answers
    one JSON line with its seconds, so the parent can alternate the two sides page by page."""
    side = FloorSide(root) if kind == "floor" else ReplaySide(root, total, durable, profile)
    starts = range(0, total, PAGE)
    for start in starts:
        if not sys.stdin.readline():
            return  # the parent is gone
        text = page_text(start, min(start + PAGE, total))  # generated before the clock starts
        print(json.dumps({"seconds": side.page(text)}), flush=True)
    sys.stdin.readline()
    print(json.dumps(side.finish()), flush=True)


class Side:
    """The parent's handle on one child: send a step, read its answer."""

    def __init__(self, kind: str, args: argparse.Namespace, root: Path) -> None:
        self.kind = kind
        self.root = root / kind
        self.root.mkdir()
        argv = [sys.executable, __file__, "_child", kind, str(args.events), str(self.root)]
        if args.durable and kind == "replay":
            argv.append("--durable")
        if args.profile and kind == "replay":
            argv.append("--profile")
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.seconds: list[float] = []

    def step(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.kind} side exited with {self.process.wait()}")
        answer: dict[str, Any] = json.loads(line)
        self.seconds.append(float(answer["seconds"]))
        return answer

    def close(self) -> None:
        if self.process.wait(timeout=600) != 0:
            raise RuntimeError(f"the {self.kind} side exited with {self.process.returncode}")


def replay_command(args: argparse.Namespace) -> int:
    n = args.events
    print(f"machine: {machine()}")
    # Flush what earlier work left in the page cache and the journal (deleted trees cost discards here), so
    # neither side pays for it during its first pages.
    os.sync()
    with tempfile.TemporaryDirectory(prefix="noemafed-bench-") as tmp:
        floor, replay = Side("floor", args, Path(tmp)), Side("replay", args, Path(tmp))
        try:
            steps = math.ceil(n / PAGE) + 1  # every page, then the finish (the floor's COMMIT)
            for step in range(steps):
                # Floor and replay alternate page by page, first one then the other leading (F R, R F, ...),
                # so both see the same disk and cache conditions; a slow spell hits both sides alike.
                order = (floor, replay) if step % 2 == 0 else (replay, floor)
                finals = {side.kind: side.step() for side in order}
        finally:
            for side in (floor, replay):
                if side.process.stdin is not None:
                    side.process.stdin.close()
        floor.close()
        replay.close()
        # The floor is only a floor if it writes what replay writes: compare one file byte for byte.
        name = Path("bench", traces.ACTIVE, "20250401-benchmark-trace-0.md")
        if (floor.root / name).read_bytes() != (replay.root / name).read_bytes():
            raise RuntimeError("the floor and replay wrote different trace files")
    floor_seconds, replay_seconds = sum(floor.seconds), sum(replay.seconds)
    floor_rate, replay_rate = n / floor_seconds, n / replay_seconds
    per_page = sorted(f / r for f, r in zip(floor.seconds[:-1], replay.seconds[:-1], strict=True))
    result = finals["replay"]
    print(f"events: {n} create events (1 KiB body, 3 tags), pages of {PAGE}, floor and replay alternating")
    print(
        f"floor : {floor_rate:10.0f} events/s  ({floor_seconds:.2f} s)  peak RSS {finals['floor']['peak_rss_kib']} KiB"
    )
    print(
        f"replay: {replay_rate:10.0f} events/s  ({replay_seconds:.2f} s)  peak RSS {result['peak_rss_kib']} KiB"
        f"  tracemalloc peak first/last page {result['malloc_peak_first_last']} B"
        + ("  [durable]" if args.durable else "")
    )
    print(f"ratio : {replay_rate / floor_rate:.2f} (replay rate / floor rate; target >= 0.50)")
    print(
        f"per page: ratio median {statistics.median(per_page):.2f}, "
        f"min {per_page[0]:.2f}, max {per_page[-1]:.2f} over {len(per_page)} page pairs"
    )
    if args.profile:
        print(result["profile"])
    return 0


# ---- the network benchmarks: shared pieces -------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PYZ = REPO / "dist" / "noemafed.pyz"
LISTENING = re.compile(r"listening on (https?://127\.0\.0\.1:(\d+))/mcp")
GO_PAGE, GO_INTERVAL = 100, 30.0  # Go noema's syncer: one page of 100 events per 30 s interval

# Runs one command and reports its wall time, peak RSS and CPU time (user + system). RUSAGE_CHILDREN of this
# small wrapper covers only the command (shiv runs the app in the same process), never the benchmark's other
# children.
MEASURE = """
import json, resource, subprocess, sys, time
out, err, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
with open(out, "wb") as stdout, open(err, "wb") as stderr:
    start = time.perf_counter()
    code = subprocess.run(sys.argv[4:], stdout=stdout, stderr=stderr, timeout=timeout, check=False).returncode
    seconds = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = usage.ru_utime + usage.ru_stime
print(json.dumps({"returncode": code, "seconds": seconds, "peak_rss_kib": usage.ru_maxrss, "cpu_seconds": cpu}))
"""


def machine() -> str:
    """One line describing where the figures come from."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    # The load average says whether something else shared the 2 cores when the run began.
    return (
        f"{os.cpu_count()} cores ({model or platform.machine()}), Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}; "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )


class Pyz:
    """The built zipapp run as its own processes, with a throwaway SHIV_ROOT and a clean environment."""

    def __init__(self, path: Path, root: Path, bytecode: bool = True, python: str = sys.executable) -> None:
        if not path.exists():
            raise SystemExit(f"{path} is missing: run ./build.sh first")
        self.path = path
        self.root = root
        self.python = python
        env = {
            name: value
            for name, value in os.environ.items()
            # PYTHONPATH too: a source tree on it (PYTHONPATH=$PWD, as tests run) would shadow the pyz's code.
            if name not in ("NOEMA_MCP_KEY", "NOEMA_CORTEX", "SHIV_ROOT", "PYTHONPATH", verifier.ENV)
            and not name.lower().endswith("_proxy")
        }
        if bytecode:
            # A normal host caches the extracted modules' bytecode after the first run; this sandbox sets
            # PYTHONDONTWRITEBYTECODE, which would make every run compile click and noemafed from source.
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        else:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["SHIV_ROOT"] = str(root / "shiv")
        env["XDG_CONFIG_HOME"] = str(root / "config")  # never the real noema registry
        self.env = env
        # The first run extracts the zipapp (and writes bytecode); no timed run pays for that.
        self.run("--version", timeout=120)
        extracted = sorted((root / "shiv").glob("*/site-packages"))
        if len(extracted) != 1:
            raise RuntimeError(f"expected one extracted site-packages under {root / 'shiv'}: {extracted}")
        self.site_packages = extracted[0]

    def argv(self, *args: str) -> list[str]:
        return [self.python, str(self.path), *args]

    def run(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(*args), capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"noemafed {' '.join(args)} exited {done.returncode}: {done.stdout}{done.stderr}"
            )
        return done

    def measure(self, args: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
        """Run `noemafed ARGS` under the RUSAGE_CHILDREN wrapper: wall seconds, peak RSS, stdout, stderr."""
        out, err = self.root / "measured.out", self.root / "measured.err"
        done = subprocess.run(
            [sys.executable, "-c", MEASURE, str(out), str(err), str(timeout), *self.argv(*args)],
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=timeout + 30,
            check=True,
        )
        result: dict[str, Any] = json.loads(done.stdout)
        result["stdout"] = out.read_text()
        result["stderr"] = err.read_text()
        return result

    @contextlib.contextmanager
    def serve(self, cortex: Path, name: str, *extra: str) -> Iterator[Server]:
        """`noemafed serve --port 0` in its own process; its log goes to a file so a full pipe never blocks it."""
        log_path = self.root / f"serve-{name}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                self.argv("--cortex", str(cortex), "serve", "--port", "0", *extra),
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=self.env,
            )
        try:
            deadline = time.monotonic() + 30
            match = None
            while match is None and time.monotonic() < deadline and proc.poll() is None:
                match = LISTENING.search(log_path.read_text())
                if match is None:
                    time.sleep(0.02)
            if match is None:
                raise RuntimeError(f"noemafed serve did not start: {log_path.read_text()}")
            yield Server(match.group(1), int(match.group(2)), proc.pid, log_path)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@dataclass(frozen=True)
class Server:
    endpoint: str
    port: int
    pid: int
    log: Path

    def status_kib(self, field: str) -> int:
        """A VmHWM/VmRSS figure of the live server process, from /proc (0 where there is no /proc)."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
        return 0


def build_source(
    pyz: Pyz, path: Path, total: int, replay_of: Path | None = None, signed: bool = False
) -> dict[str, Any]:
    """Replay `total` realistic create events into a new cortex at `path`, in a child process.

    The child runs the pyz's own noemafed code and times parse + apply_page of each page of 1,000 exactly as
    `replay` does (without tracemalloc), so every build is also a replay-only measurement. The events are
    generated (a new source), or with `replay_of` read back from that cortex's log, untimed: the same events.
    """
    init_cortex(path, path.name)
    argv = [sys.executable, __file__, "_source", str(path), str(total)]
    if replay_of is not None:
        argv += ["--replay-of", str(replay_of)]
    if signed:
        argv.append("--signed")
    done = subprocess.run(
        argv,
        env={**pyz.env, "NOEMAFED_BENCH_PATH": str(pyz.site_packages)},
        check=True,
        capture_output=True,
        text=True,
        timeout=120 + total * (0.1 if signed else 0.05),
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if not str(result["replay_module"]).startswith(str(pyz.site_packages)):
        raise RuntimeError(f"the replay-only side ran {result['replay_module']}, not the pyz's code")
    return result


def stored_pages(cortex_dir: Path) -> Iterator[str]:
    """A cortex's event log as sync_events pages of 1,000, exactly as serve renders them."""
    conn = connect(cortex_dir / "db" / "noema.db")
    try:
        since = ""
        while True:
            rows = conn.execute(
                f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE id > ? ORDER BY id LIMIT ?",
                (since, PAGE),
            ).fetchall()
            if not rows:
                return
            yield page_json(event_from_row(row) for row in rows)
            since = rows[-1][0]
    finally:
        conn.close()


def signed_pages(total: int) -> Iterator[str]:
    """The pages of `pages`, every event signed by SIGNING_SEED as its author would."""
    for text in pages(total):
        yield page_json(eventsig.sign_event(event, SIGNING_SEED) for event in parse_page(text))


def load_source(path: Path, total: int, replay_of: Path | None, signed: bool = False) -> None:
    cortex = open_cortex(path)
    replayer = Replayer(cortex, log=SILENT)
    elapsed = cpu = 0.0
    generated = signed_pages(total) if signed else pages(total)
    for text in generated if replay_of is None else stored_pages(replay_of):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = replayer.apply_page(parse_page(text), cursor_peer=PEER)
        elapsed += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        if result.error is not None:
            raise result.error
    count = cortex.conn.execute("SELECT count(*) FROM events").fetchone()[0]
    assert count == total, count
    cortex.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    module = sys.modules[Replayer.__module__].__file__
    print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu, "peak_rss_kib": peak, "replay_module": module}))


def pinned_key(cortex_dir: Path) -> str:
    """The key a cortex pinned for the benchmark's author (TOFU on its first verified event), or ""."""
    from noemafed.cortex.state import get_cortex_pubkey

    conn = connect(cortex_dir / "db" / "noema.db")
    try:
        return get_cortex_pubkey(conn, SOURCE_ID)
    finally:
        conn.close()


def event_ids(cortex_dir: Path) -> list[str]:
    conn = connect(cortex_dir / "db" / "noema.db")
    try:
        return [row[0] for row in conn.execute("SELECT id FROM events ORDER BY id")]
    finally:
        conn.close()


def add_peers(cortex_dir: Path, peers: dict[str, str]) -> None:
    from noemafed.commands.peers import add_peer

    for name, endpoint in peers.items():
        add_peer(
            lambda: cortex_dir, name, endpoint
        )  # add_peer checks its values before it locates the cortex


def sync_report(measured: dict[str, Any]) -> dict[str, Any]:
    if measured["returncode"] != 0:
        raise RuntimeError(
            f"sync --once exited {measured['returncode']}: {measured['stdout']}{measured['stderr']}"
        )
    report: dict[str, Any] = json.loads(measured["stdout"])
    return report


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


# ---- sync ---------------------------------------------------------------------------------------------------


def sync_round(  # noqa: PLR0913 (the keyword-only verify mode and environment of `bench.py verify`)
    pyz: Pyz,
    server: Server,
    source: Path,
    work: Path,
    total: int,
    *,
    verify: str = "off",
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One cold `sync --once` of the whole source into a new cortex, from the pyz, under the RSS wrapper."""
    from noemafed.commands.settings import set_verify

    target = work / "target"
    init_cortex(target, "target")
    add_peers(target, {"source": server.endpoint})
    if verify != "off":
        set_verify(lambda: target, verify)
    timeout = 120 + total * 0.02
    measured = pyz.measure(
        ["--cortex", str(target), "sync", "--once", "--json", "--max-duration", str(timeout)],
        timeout + 10,
        env,
    )
    peer = sync_report(measured)["peers"][0]
    if peer["status"] != "ok" or peer["events_applied"] != total:
        raise RuntimeError(f"sync did not apply {total} events: {peer}")
    if event_ids(target) != event_ids(source):
        raise RuntimeError("the target's event log differs from the source's")
    if verify != "off" and pinned_key(target) != SIGNING_KEY:
        raise RuntimeError(
            f"verify={verify}: the target did not pin the signing key, so nothing was verified"
        )
    shutil.rmtree(target)
    return {
        "seconds": float(measured["seconds"]),
        "inside": float(peer["seconds"]),
        "rss": measured["peak_rss_kib"],
        "cpu": float(measured["cpu_seconds"]),
    }


def sync_size(pyz: Pyz, root: Path, total: int, rounds: int) -> dict[str, Any]:
    """Cold syncs of `total` events beside replay-only runs of the same events, alternating in order."""
    work = root / f"n{total}"
    work.mkdir()
    source = work / "source"
    built = build_source(pyz, source, total)  # generated events: a replay-only sample of its own
    replays: list[dict[str, Any]] = [built]
    syncs: list[dict[str, Any]] = []
    with pyz.serve(source, f"sync-{total}") as server:
        for number in range(rounds):
            # Replay-only then sync, then the other way round: drift on a noisy disk hits both sides alike.
            order = ("sync", "replay") if number % 2 == 0 else ("replay", "sync")
            for side in order:
                if side == "sync":
                    syncs.append(sync_round(pyz, server, source, work, total))
                elif number > 0:  # round 1's replay-only sample is the source build itself
                    replays.append(build_source(pyz, work / "replay", total, replay_of=source))
                    shutil.rmtree(work / "replay")
        serve_hwm = server.status_kib("VmHWM")
    shutil.rmtree(work)
    replay_rates = [total / float(r["seconds"]) for r in replays]
    sync_rates = [total / r["seconds"] for r in syncs]
    # CPU time: what each side computes, whatever the disk's fsyncs and the other work on the machine cost in
    # waiting (the wall-clock ratio swings 0.6 to 1.1 from run to run on a shared machine; this one does not).
    replay_cpu_rates = [total / float(r["cpu_seconds"]) for r in replays]
    sync_cpu_rates = [total / r["cpu"] for r in syncs]
    wall = statistics.median(r["seconds"] for r in syncs)
    return {
        "events": total,
        "rounds": rounds,
        "replay_rates": replay_rates,
        "sync_rates": sync_rates,
        "replay_rate": statistics.median(replay_rates),
        "sync_rate": statistics.median(sync_rates),
        "replay_cpu_rate": statistics.median(replay_cpu_rates),
        "sync_cpu_rate": statistics.median(sync_cpu_rates),
        "cpu_rates": (replay_cpu_rates, sync_cpu_rates),
        "wall": wall,
        "inside": statistics.median(r["inside"] for r in syncs),
        "sync_rss": max(int(r["rss"]) for r in syncs),
        "replay_rss": max(int(r["peak_rss_kib"]) for r in replays),
        "serve_rss": serve_hwm,
        "go_seconds": math.ceil(total / GO_PAGE) * GO_INTERVAL,
    }


def spread(rates: list[float]) -> str:
    return f"{min(rates):.0f}-{max(rates):.0f}"


def sync_command(args: argparse.Namespace) -> int:
    print(f"machine: {machine()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="noemafed-bench-") as tmp:
        pyz = Pyz(args.pyz, Path(tmp), bytecode=not args.no_bytecode)
        for total in args.events:
            row = sync_size(pyz, Path(tmp), total, args.rounds)
            rows.append(row)
            ratio = row["sync_rate"] / row["replay_rate"]
            print(
                f"events: {total} create events (1 KiB body, 3 tags) served by `noemafed serve` (pyz); "
                f"{row['rounds']} rounds, replay-only and sync alternating; medians (min-max)"
            )
            print(
                f"replay-only: {row['replay_rate']:10.0f} events/s  ({spread(row['replay_rates'])}; parse + "
                f"apply_page in pages of {PAGE})  peak RSS {mib(row['replay_rss'])}"
            )
            print(
                f"sync       : {row['sync_rate']:10.0f} events/s  ({spread(row['sync_rates'])}; {row['wall']:.2f} s "
                f"wall of `sync --once`, {row['inside']:.2f} s inside the poll)  peak RSS {mib(row['sync_rss'])}  "
                f"serve peak RSS {mib(row['serve_rss'])}"
            )
            print(f"ratio      : {ratio:.2f} (sync rate / replay-only rate, medians; target >= 0.80)")
            replay_cpu, sync_cpu = row["cpu_rates"]
            print(
                f"CPU time   : replay-only {row['replay_cpu_rate']:.0f} events per CPU second ({spread(replay_cpu)}), "
                f"sync {row['sync_cpu_rate']:.0f} ({spread(sync_cpu)}; the whole process: start-up, HTTP, replay); "
                f"ratio {row['sync_cpu_rate'] / row['replay_cpu_rate']:.2f}"
            )
            print(
                f"go noema   : {row['go_seconds']:.0f} s to drain (ceil(N/{GO_PAGE}) x {GO_INTERVAL:.0f} s); "
                f"{row['go_seconds'] / row['wall']:.0f}x our wall time"
            )
    if len(rows) > 1:
        low, high = rows[0], rows[-1]
        print(
            f"rss growth : {mib(high['sync_rss'] - low['sync_rss'])} from {low['events']} to {high['events']} "
            f"events (target: < 100 MiB and flat)"
        )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


# ---- verify ---------------------------------------------------------------------------------------------------


class OldEd25519:
    """The pure-Python verifier noemafed shipped before issue 15 (double-and-add, two scalar multiplications,
    RFC 8032 decoding of A), kept here only as the baseline of `verify`."""

    P = 2**255 - 19
    L = 2**252 + 27742317777372353535851937790883648493
    D = -121665 * pow(121666, P - 2, P) % P
    SQRT_M1 = pow(2, (P - 1) // 4, P)
    Point = tuple[int, int, int, int]

    @classmethod
    def add(cls, p: Point, q: Point) -> Point:
        P = cls.P
        a = (p[1] - p[0]) * (q[1] - q[0]) % P
        b = (p[1] + p[0]) * (q[1] + q[0]) % P
        c = 2 * p[3] * q[3] * cls.D % P
        d = 2 * p[2] * q[2] % P
        e, f, g, h = b - a, d - c, d + c, b + a
        return (e * f % P, g * h % P, f * g % P, e * h % P)

    @classmethod
    def multiply(cls, scalar: int, point: Point) -> Point:
        result: OldEd25519.Point = (0, 1, 1, 0)
        while scalar:
            if scalar & 1:
                result = cls.add(result, point)
            point = cls.add(point, point)
            scalar >>= 1
        return result

    @classmethod
    def recover_x(cls, y: int, sign: int) -> int | None:
        P = cls.P
        if y >= P:
            return None
        x2 = (y * y - 1) * pow(cls.D * y * y + 1, P - 2, P) % P
        if x2 == 0:
            return None if sign else 0
        x = pow(x2, (P + 3) // 8, P)
        if (x * x - x2) % P:
            x = x * cls.SQRT_M1 % P
        if (x * x - x2) % P:
            return None
        return P - x if (x & 1) != sign else x

    @classmethod
    def compress(cls, point: Point) -> bytes:
        z_inv = pow(point[2], cls.P - 2, cls.P)
        x, y = point[0] * z_inv % cls.P, point[1] * z_inv % cls.P
        return int.to_bytes(y | ((x & 1) << 255), 32, "little")

    @classmethod
    def verify(cls, public: bytes, message: bytes, signature: bytes) -> bool:
        P = cls.P
        y = int.from_bytes(public, "little")
        x = cls.recover_x(y & ((1 << 255) - 1), y >> 255)
        if x is None:
            return False
        y &= (1 << 255) - 1
        s = int.from_bytes(signature[32:], "little")
        if s >= cls.L:
            return False
        digest = hashlib.sha512(signature[:32] + public + message).digest()
        k = int.from_bytes(digest, "little") % cls.L
        gy = 4 * pow(5, P - 2, P) % P
        gx = cls.recover_x(gy, 0)
        assert gx is not None
        base = (gx, gy, 1, gx * gy % P)
        minus_a = ((P - x) % P, y, 1, (P - x * y % P) % P)
        check = cls.add(cls.multiply(s, base), cls.multiply(k, minus_a))
        return cls.compress(check) == signature[:32]


def verify_rates(count: int, rounds: int) -> dict[str, list[float]]:
    """Verifications per second of each verifier on `count` signatures of event-sized messages, the verifiers
    alternating round by round. "warm": one key, as in a ring (the first verification of a key is not timed);
    "cold": a new key for every signature (every verification pays for the key)."""
    loaded = verifier.openssl()
    if isinstance(loaded, str):
        raise RuntimeError(f"OpenSSL is not loadable here: {loaded}")
    messages = [os.urandom(240) for _ in range(count)]  # an event preimage is about 240 bytes
    signatures = [ed25519.sign(SIGNING_SEED, message) for message in messages]
    public = ed25519.public_key(SIGNING_SEED)
    cold_count = max(count // 10, 10)
    cold_seeds = [os.urandom(32) for _ in range(cold_count * rounds)]
    cold = [(ed25519.public_key(seed), ed25519.sign(seed, b"m")) for seed in cold_seeds]
    old_count = max(count // 5, 10)  # the old code is slow: a fifth of the signatures
    checks: dict[str, Any] = {
        "openssl": lambda: [
            loaded.verify(public, m, sig) for m, sig in zip(messages, signatures, strict=True)
        ],
        "python, warm key": lambda: [
            ed25519.verify(public, m, sig) for m, sig in zip(messages, signatures, strict=True)
        ],
        "python before issue 15": lambda: [
            OldEd25519.verify(public, m, sig)
            for m, sig in zip(messages[:old_count], signatures, strict=False)
        ],
    }
    sizes = {"openssl": count, "python, warm key": count, "python before issue 15": old_count}
    rates: dict[str, list[float]] = {name: [] for name in [*checks, "python, cold keys"]}
    assert ed25519.verify(public, b"warm", ed25519.sign(SIGNING_SEED, b"warm"))  # the key's table, untimed
    for number in range(rounds):
        names = list(checks) if number % 2 == 0 else list(reversed(checks))
        for name in names:
            start = time.perf_counter()
            verdicts = checks[name]()
            rates[name].append(sizes[name] / (time.perf_counter() - start))
            if not all(verdicts):
                raise RuntimeError(f"{name} rejected a valid signature")
        batch = cold[number * cold_count : (number + 1) * cold_count]
        start = time.perf_counter()
        if not all(ed25519.verify(key, b"m", sig) for key, sig in batch):
            raise RuntimeError("python rejected a valid signature of a new key")
        rates["python, cold keys"].append(cold_count / (time.perf_counter() - start))
    return rates


PYTHON_VERIFIER = "python"  # NOEMAFED_ED25519's value that forces the pure-Python verifier


def add_verify_parser(sub: Any) -> None:
    verify = sub.add_parser(
        "verify", help="Ed25519 verifications/s, and cold syncs of signed events with verify off and enforce"
    )
    verify.add_argument("--signatures", type=int, default=2000)
    verify.add_argument("--rounds", type=int, default=3, help="rounds of the verifiers, alternating")
    verify.add_argument("--events", type=int, nargs="*", default=[3000], help="signed events per cold sync")
    verify.add_argument("--sync-rounds", type=int, default=3, help="syncs per mode and size, alternating")
    add_pyz_options(verify)


def verify_command(args: argparse.Namespace) -> int:
    print(f"machine: {machine()}")
    rates = verify_rates(args.signatures, args.rounds)
    old = statistics.median(rates["python before issue 15"])
    print(
        f"verifications/s on {args.signatures} signatures of 240-byte messages, {args.rounds} rounds alternating; medians (min-max)"
    )
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:<24}: {rate:9.0f} /s  ({spread(values)})  {rate / old:6.1f}x before")
    with tempfile.TemporaryDirectory(prefix="noemafed-bench-") as tmp:
        pyz = Pyz(args.pyz, Path(tmp), bytecode=not args.no_bytecode)
        for value in ("", PYTHON_VERIFIER):
            env = {**pyz.env, verifier.ENV: value}
            done = subprocess.run(
                pyz.argv("--version"), capture_output=True, text=True, env=env, timeout=60, check=True
            )
            print(f"pyz --version ({verifier.ENV}={value}): {done.stdout.strip()}")
        for total in args.events:
            verify_sync_size(pyz, Path(tmp), total, args.sync_rounds)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


def verify_sync_size(pyz: Pyz, root: Path, total: int, rounds: int) -> None:
    """Cold syncs of `total` signed events: verify off, enforce with OpenSSL, enforce in pure Python."""
    work = root / f"signed{total}"
    work.mkdir()
    source = work / "source"
    build_source(pyz, source, total, signed=True)
    modes = {
        "verify: off": ("off", None),
        "enforce, OpenSSL": ("enforce", None),
        "enforce, python": ("enforce", {verifier.ENV: PYTHON_VERIFIER}),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in modes}
    with pyz.serve(source, f"verify-{total}") as server:
        for number in range(rounds):
            names = list(modes) if number % 2 == 0 else list(reversed(modes))
            for name in names:
                verify, env = modes[name]
                runs[name].append(sync_round(pyz, server, source, work, total, verify=verify, env=env))
    shutil.rmtree(work)
    off = total / statistics.median(run["seconds"] for run in runs["verify: off"])
    off_cpu = statistics.median(run["cpu"] for run in runs["verify: off"])
    print(
        f"cold sync of {total} signed events (pyz against serve), {rounds} rounds alternating; medians (min-max); "
        "cpu: user + system time of the sync process"
    )
    for name, measured in runs.items():
        rates = [total / run["seconds"] for run in measured]
        rate = statistics.median(rates)
        cpu = statistics.median(run["cpu"] for run in measured)
        print(
            f"{name:<24}: {rate:9.0f} events/s  ({spread(rates)})  ratio to off {rate / off:.2f}  "
            f"cpu {1e6 * cpu / total:5.0f} us/event, ratio to off {off_cpu / cpu:.2f}"
        )


# ---- startup ------------------------------------------------------------------------------------------------

FLOOR_CODE = "import click, sqlite3, json"


def clean_interpreter(root: Path) -> str:
    """A Python as a host has it: a bare venv of the base interpreter holding only click (for the floor).

    The dev venv is no fair place to time start-up: its editable install's `.pth` file runs an import hook
    (pathlib and more) at every start, in the floor and the pyz alike, and would shrink the ratio.
    """
    venv = root / "clean-venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    shutil.copytree(Path(click.__file__).parent, Path(site) / "click")
    return str(python)


def timed(
    argv: list[str],
    env: dict[str, str],
    timeout: float = 60,
    cpu: list[float] | None = None,
    ok_codes: tuple[int, ...] = (0,),
) -> float:
    """Wall seconds of one run; with `cpu`, the child's CPU seconds (user + system) are appended there: on a
    machine shared with other work, they hardly move while wall time follows the load."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in ok_codes:
        raise RuntimeError(f"{argv} exited {done.returncode}: {done.stdout}{done.stderr}")
    if cpu is not None:
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return seconds


def print_series(
    labels: list[tuple[str, str]], samples: dict[str, list[float]], cpu: dict[str, list[float]]
) -> tuple[dict[str, float], dict[str, float]]:
    """One line per series: median wall time (min-max) and its ratio to `floor`, then the median CPU time and
    its ratio; returns the two tables of medians."""
    median = {name: statistics.median(values) for name, values in samples.items()}
    cpu_median = {name: statistics.median(values) for name, values in cpu.items()}
    for label, key in labels:
        values = samples[key]
        print(
            f"{label:46s} {median[key] * 1000:7.0f} ms  ({min(values) * 1000:.0f}-{max(values) * 1000:.0f})"
            f"  {median[key] / median['floor']:.2f}x floor;  CPU {cpu_median[key] * 1000:5.0f} ms"
            f"  {cpu_median[key] / cpu_median['floor']:.2f}x floor"
        )
    return median, cpu_median


def importtime_summary(stderr: str, top: int) -> list[str]:
    """The top-level imports of a `-X importtime` run by cumulative time, and noemafed's own modules."""
    rows: list[tuple[int, int, str]] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line[len("import time:") :].split("|")
        rows.append((int(own), int(cumulative), name.rstrip()))
    top_level = sorted((r for r in rows if not r[2].startswith("  ")), key=lambda r: -r[1])
    total = sum(r[1] for r in top_level)
    out = [f"all imports: {total / 1000:.1f} ms; largest top-level imports (cumulative ms):"]
    out += [f"  {cum / 1000:6.1f}  {name.strip()}" for _, cum, name in top_level[:top]]
    ours = sorted((r for r in rows if r[2].strip().startswith("noemafed")), key=lambda r: -r[0])
    out.append(
        f"noemafed's own modules, self time: {sum(r[0] for r in ours) / 1000:.1f} ms in {len(ours)} modules"
    )
    out += [f"  {own / 1000:6.1f}  {name.strip()}" for own, _, name in ours[:top]]
    return out


def startup_command(args: argparse.Namespace) -> int:
    from seed import seed  # scripts/seed.py: real local events, as tests and the demo make them

    print(f"machine: {machine()}")
    names = ("alpha", "beta", "gamma")
    with tempfile.TemporaryDirectory(prefix="noemafed-bench-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        python = clean_interpreter(root)
        pyz = Pyz(args.pyz, root, bytecode=not args.no_bytecode, python=python)
        endpoints = {}
        for index, name in enumerate(names):
            init_cortex(root / name, name)
            cortex = open_cortex(root / name)
            try:
                seed(cortex, args.traces, rng_seed=index, label=name)
            finally:
                cortex.close()
            endpoints[name] = stack.enter_context(pyz.serve(root / name, name)).endpoint
        target = root / "target"
        init_cortex(target, "target")
        add_peers(target, endpoints)
        sync = ["--cortex", str(target), "sync", "--once"]
        first = sync_report(pyz.measure([*sync, "--json"], 120))
        if any(peer["status"] != "ok" for peer in first["peers"]):
            raise RuntimeError(f"the first sync failed: {first}")
        applied = sum(peer["events_applied"] for peer in first["peers"])

        # Every series runs once per round, side by side, so drift on the machine hits them alike.
        series: dict[str, tuple[list[str], dict[str, str]]] = {
            "bare": ([python, "-c", "pass"], pyz.env),
            "floor": ([python, "-c", FLOOR_CODE], pyz.env),
            "version": (pyz.argv("--version"), pyz.env),
            "sync": (pyz.argv(*sync), pyz.env),
        }
        for number, other_path in enumerate(args.compare):
            # Another build against the same peers, with its own extraction root and its own caught-up target.
            other = Pyz(other_path, root / f"compare-{number}", bytecode=not args.no_bytecode, python=python)
            other_target = root / f"compare-{number}" / "target"
            init_cortex(other_target, "target")
            add_peers(other_target, endpoints)
            other.run("--cortex", str(other_target), "sync", "--once", timeout=120)
            series[f"compare-{number}"] = (
                other.argv("--cortex", str(other_target), "sync", "--once"),
                other.env,
            )
        for argv, env in series.values():  # warm the page cache; not counted
            timed(argv, env)
        samples: dict[str, list[float]] = {name: [] for name in series}
        cpu: dict[str, list[float]] = {name: [] for name in series}
        for _ in range(args.repeat):
            for name, (argv, env) in series.items():
                samples[name].append(timed(argv, env, cpu=cpu[name]))
        inside = [
            max(peer["seconds"] for peer in sync_report(pyz.measure([*sync, "--json"], 60))["peers"])
            for _ in range(min(3, args.repeat))
        ]
        profile = subprocess.run(
            [python, "-X", "importtime", *pyz.argv(*sync)[1:]],
            capture_output=True,
            text=True,
            env=pyz.env,
            timeout=60,
            check=True,
        )
    print(
        f"peers: 3 `noemafed serve` processes (pyz), {args.traces} seeded traces each; first sync applied {applied}"
    )
    # CPU time is the process's own (the serve processes are not its children): on a shared machine it moves far
    # less with the load than wall time does.
    print(f"runs : {args.repeat}, interleaved; medians (min-max) of wall time, then the median CPU time")
    labels = [
        ("python -c pass", "bare"),
        (f"floor: python -c '{FLOOR_CODE}'", "floor"),
        ("noemafed.pyz --version", "version"),
        ("noemafed.pyz sync --once, 3 caught-up peers", "sync"),
    ]
    labels += [
        (f"{path.name} sync --once (--compare)", f"compare-{n}") for n, path in enumerate(args.compare)
    ]
    median, cpu_median = print_series(labels, samples, cpu)
    ratio = median["sync"] / median["floor"]
    print(
        f"slowest poll inside sync --once (from --json, median of {len(inside)}): {statistics.median(inside) * 1000:.0f} ms"
    )
    print(
        f"ratio: {ratio:.2f} wall, {cpu_median['sync'] / cpu_median['floor']:.2f} CPU (sync --once / floor; "
        "target <= 2.50)"
    )
    print("\n".join(importtime_summary(profile.stderr, args.top)))
    return 0


# ---- status: what running unattended costs ---------------------------------------------------------------------

STATUS_PEERS = 20


def judged_peers(cortex_dir: Path, count: int) -> None:
    """`count` peers with the records a long-running host has: cursors, health, streaks, runs, several verdicts."""
    from noemafed.cortex import state
    from noemafed.text.clock import format_epoch

    ids = event_ids(cortex_dir)
    add_peers(cortex_dir, {f"peer-{n:02d}": f"http://127.0.0.1:{20000 + n}" for n in range(count)})
    now = time.time()
    conn = connect(cortex_dir / "db" / "noema.db")
    try:
        with state.write_transaction(conn):
            for n in range(count):
                name = f"peer-{n:02d}"
                state.put(conn, state.peer_key(name, state.LAST_EVENT), ids[(n * 4999) % len(ids)])
                state.put(conn, state.peer_key(name, state.LAST_SEEN), format_epoch(now - 60))
                failing = n % 3 == 0
                error = state.PeerError("network_refused", format_epoch(now - 60)) if failing else None
                health = state.PeerHealth(
                    "0.22.2", format_epoch(now), format_epoch(now - 600), 2 if failing else 0, error
                )
                state.set_health(conn, name, health)
                if failing:
                    streak = state.Backoff(format_epoch(now - 600), 2, format_epoch(now + 120 * (n % 2)))
                    state.set_backoff(conn, name, streak)
                outcome = state.RUN_FAILED if failing else (state.RUN_BEHIND if n % 3 == 1 else state.RUN_OK)
                run = state.PeerRun(outcome, outcome == state.RUN_OK, format_epoch(now - 60), "", 5000 * n)
                state.set_run(conn, name, run)
    finally:
        conn.close()


def record_verifier(cortex_dir: Path, name: str) -> None:
    """What a sync that checked a signature records: the verifier it used."""
    from noemafed.cortex import state

    conn = connect(cortex_dir / "db" / "noema.db")
    try:
        with state.write_transaction(conn):
            state.set_verifier(conn, name, name)
    finally:
        conn.close()


def defer_every_peer(cortex_dir: Path, names: list[str]) -> None:
    """A streak for each peer whose next attempt lies a day ahead: every run now defers them all."""
    from noemafed.cortex import state
    from noemafed.text.clock import format_epoch

    now = time.time()
    conn = connect(cortex_dir / "db" / "noema.db")
    try:
        with state.write_transaction(conn):
            for name in names:
                state.set_backoff(conn, name, state.Backoff(format_epoch(now), 3, format_epoch(now + 86400)))
    finally:
        conn.close()


def two_sync_targets(
    pyz: Pyz, root: Path, traces: int, stack: contextlib.ExitStack
) -> tuple[Path, Path, dict[str, str]]:
    """A caught-up target and a deferring one (every peer in backoff for a day), against the same 3 live peers."""
    from seed import seed

    endpoints = {}
    for index, name in enumerate(("alpha", "beta", "gamma")):
        init_cortex(root / name, name)
        cortex = open_cortex(root / name)
        try:
            seed(cortex, traces, rng_seed=index, label=name)
        finally:
            cortex.close()
        endpoints[name] = stack.enter_context(pyz.serve(root / name, name)).endpoint
    caught_up, deferring = root / "caught-up", root / "deferring"
    for target in (caught_up, deferring):
        init_cortex(target, target.name)
        add_peers(target, endpoints)
        pyz.run("--cortex", str(target), "sync", "--once", timeout=120)
    defer_every_peer(deferring, list(endpoints))
    return caught_up, deferring, endpoints


def status_command(args: argparse.Namespace) -> int:
    """`status --json` and `status --check` on a cortex of N events and 20 judged peers, beside the start-up
    floor; then `sync --once` that defers every peer beside one against the same peers caught up."""
    from noemafed.commands.settings import set_verify

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="noemafed-bench-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        python = clean_interpreter(root)
        pyz = Pyz(args.pyz, root, bytecode=not args.no_bytecode, python=python)
        big = root / "big"
        built = build_source(pyz, big, args.events)
        judged_peers(big, STATUS_PEERS)
        # The same cortex under verify: warn, with the record a sync that checked signatures leaves
        # (noemafed:verifier): status --json reads it rather than load OpenSSL to find out. (Its events are not
        # signed: status reads none.)
        recorded = root / "recorded"
        shutil.copytree(big, recorded)
        version = subprocess.run(
            pyz.argv("--version"), capture_output=True, text=True, env=pyz.env, check=True
        )
        record_verifier(recorded, "python" if "pure Python" in version.stdout else "openssl")
        set_verify(lambda: recorded, "warn")  # under verify: off status names no verifier, recorded or not
        check = subprocess.run(
            pyz.argv("--cortex", str(big), "status", "--check"),
            capture_output=True,
            text=True,
            env=pyz.env,
            check=False,
        )
        print(f"cortex: {args.events} events (built in {built['seconds']:.0f} s), {STATUS_PEERS} peers")
        print(f"status --check (exit {check.returncode}): {check.stdout.strip()[:150]}...")

        caught_up, deferring, endpoints = two_sync_targets(pyz, root, args.traces, stack)
        series: dict[str, list[str]] = {
            "floor": [python, "-c", FLOOR_CODE],
            "json": pyz.argv("--cortex", str(big), "status", "--json"),
            "json-recorded": pyz.argv("--cortex", str(recorded), "status", "--json"),
            "check": pyz.argv("--cortex", str(big), "status", "--check"),
            "caught-up": pyz.argv("--cortex", str(caught_up), "sync", "--once"),
            "deferred": pyz.argv("--cortex", str(deferring), "sync", "--once"),
        }
        envs = dict.fromkeys(series, pyz.env)
        for number, other_path in enumerate(args.compare):
            # Another build's `status --json` on the same cortex (it ignores records it does not know).
            other = Pyz(other_path, root / f"compare-{number}", bytecode=not args.no_bytecode, python=python)
            series[f"compare-{number}"] = other.argv("--cortex", str(big), "status", "--json")
            envs[f"compare-{number}"] = other.env

        ok_codes = {
            name: (0, 1, 2) if name == "check" else (0,) for name in series
        }  # --check: OK, WARNING, CRITICAL
        for name, argv in series.items():  # warm the page cache; not counted
            timed(argv, envs[name], ok_codes=ok_codes[name])
        samples: dict[str, list[float]] = {name: [] for name in series}
        cpu: dict[str, list[float]] = {name: [] for name in series}
        for _ in range(args.repeat):
            for name, argv in series.items():
                samples[name].append(timed(argv, envs[name], cpu=cpu[name], ok_codes=ok_codes[name]))
        deferred_run = pyz.run("--cortex", str(deferring), "sync", "--once", "--json", timeout=60)
        deferred_doc = json.loads(deferred_run.stdout)
        if deferred_doc["peers"] or len(deferred_doc["deferred"]) != len(endpoints):
            raise RuntimeError(f"the deferring target contacted a peer: {deferred_doc}")
    print(f"runs : {args.repeat}, interleaved; medians (min-max) of wall time, then the median CPU time")
    labels = [
        (f"floor: python -c '{FLOOR_CODE}'", "floor"),
        (f"status --json, {STATUS_PEERS} peers", "json"),
        (f"status --json, {STATUS_PEERS} peers, verifier recorded", "json-recorded"),
        (f"status --check, {STATUS_PEERS} peers", "check"),
        ("sync --once, 3 caught-up peers", "caught-up"),
        ("sync --once, 3 deferred peers", "deferred"),
    ]
    labels += [
        (f"{path.name} status --json (--compare)", f"compare-{n}") for n, path in enumerate(args.compare)
    ]
    median, cpu_median = print_series(labels, samples, cpu)
    for what, table in (("wall", median), ("CPU", cpu_median)):
        print(
            f"ratio ({what}): status --json {table['json'] / table['floor']:.2f} (verifier recorded "
            f"{table['json-recorded'] / table['floor']:.2f}), status --check "
            f"{table['check'] / table['floor']:.2f} (/ floor; target <= 1.30); deferred / caught-up sync --once "
            f"{table['deferred'] / table['caught-up']:.2f} (target <= 1.00)"
        )
    return 0


# ---- latency: sync --once against caught-up peers through a delaying proxy --------------------------------------

SERVE_REQUEST = re.compile(r"\[serve\] \S+ (?:POST|DELETE|GET|OPTIONS) /")


class DelayLine:
    """A TCP proxy in front of one server that delivers every write `delay` seconds after it was read, in each
    direction, as a link with that one-way latency would (writes do not queue behind each other's delay).

    A connection's first bytes from the client also wait one round trip more, the TCP handshake's: the proxy
    accepts at once, where a real connect() returns only after SYN and SYN-ACK. The proxy counts the
    connections it accepted; the server's access log counts requests.
    """

    def __init__(self, port: int, delay: float) -> None:
        self.port = port
        self.delay = delay
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint_port(self) -> int:
        return int(self._listener.getsockname()[1])

    def close(self) -> None:
        self._stopping.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            opened = time.monotonic()
            try:
                upstream = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):  # a link does not hold small writes back; Nagle would
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            handshake = opened + 2 * self.delay  # when a real client could first send
            self._pump(client, upstream, handshake)
            self._pump(upstream, client, 0.0)

    def _pump(self, source: socket.socket, sink: socket.socket, not_before: float) -> None:
        pending: queue.Queue[tuple[float, bytes]] = queue.Queue()

        def read() -> None:
            with contextlib.suppress(OSError):
                while data := source.recv(65536):
                    pending.put((max(time.monotonic(), not_before) + self.delay, data))
            pending.put((time.monotonic() + self.delay, b""))  # the close travels as late as the data

        def write() -> None:
            while True:
                due, data = pending.get()
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    if not data:
                        sink.shutdown(socket.SHUT_WR)
                        return
                    sink.sendall(data)
                except OSError:
                    return

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()


class LatencyPeers:
    """Three `serve` processes of one build, each behind a DelayLine, and a caught-up target cortex."""

    def __init__(self, pyz: Pyz, root: Path, stack: contextlib.ExitStack, args: argparse.Namespace) -> None:
        from seed import seed  # scripts/seed.py

        tls: list[str] = []
        ca = ""
        if args.tls:
            import trustme  # a dev dependency (docs/dependencies.md): test certificates

            authority = trustme.CA()
            leaf = authority.issue_cert("127.0.0.1")
            cert, key, ca_path = root / "server.pem", root / "server.key", root / "ca.pem"
            cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
            leaf.private_key_pem.write_to_path(str(key))
            authority.cert_pem.write_to_path(str(ca_path))
            tls, ca = ["--tls-cert", str(cert), "--tls-key", str(key)], str(ca_path)
        self.servers: list[Server] = []
        self.lines: list[DelayLine] = []
        scheme = "https" if args.tls else "http"
        from noemafed.commands.peers import add_peer

        self.target = root / "target"
        init_cortex(self.target, "target")
        for index, name in enumerate(("alpha", "beta", "gamma")):
            init_cortex(root / name, name)
            cortex = open_cortex(root / name)
            try:
                seed(cortex, args.traces, rng_seed=index, label=name)
            finally:
                cortex.close()
            server = stack.enter_context(pyz.serve(root / name, name, *tls))
            line = DelayLine(server.port, args.delay_ms / 1000)
            stack.callback(line.close)
            self.servers.append(server)
            self.lines.append(line)
            add_peer(lambda: self.target, name, f"{scheme}://127.0.0.1:{line.endpoint_port}", ca=ca)
        self.argv = pyz.argv("--cortex", str(self.target), "sync", "--once")
        self.env = pyz.env
        first = sync_report(pyz.measure(["--cortex", str(self.target), "sync", "--once", "--json"], 120))
        if any(peer["status"] != "ok" for peer in first["peers"]):
            raise RuntimeError(f"the first sync failed: {first}")

    def counts(self) -> tuple[int, int]:
        """Connections accepted and requests answered so far, over the three peers."""
        requests = sum(len(SERVE_REQUEST.findall(server.log.read_text())) for server in self.servers)
        return sum(line.connections for line in self.lines), requests

    def run(self) -> tuple[float, int, int]:
        """One timed `sync --once`: wall seconds, connections opened, requests made."""
        connections, requests = self.counts()
        seconds = timed(self.argv, self.env)
        time.sleep(0.3)  # the access log line of the last request lands after the client has its answer
        after = self.counts()
        return seconds, after[0] - connections, after[1] - requests


def latency_command(args: argparse.Namespace) -> int:
    print(f"machine: {machine()}")
    builds = [args.pyz, *args.compare]
    with tempfile.TemporaryDirectory(prefix="noemafed-bench-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        peers = []
        for number, path in enumerate(builds):
            home = root / f"build-{number}"
            home.mkdir()
            pyz = Pyz(path, home, bytecode=not args.no_bytecode)
            peers.append(LatencyPeers(pyz, home, stack, args))
        # Every build runs once per round, side by side, so drift on the machine hits them alike.
        samples: list[list[tuple[float, int, int]]] = [[] for _ in builds]
        for _ in range(args.repeat):
            for number, side in enumerate(peers):
                samples[number].append(side.run())
    scheme = "TLS" if args.tls else "plain HTTP"
    print(
        f"peers: 3 `noemafed serve` processes per build ({scheme}), {args.traces} seeded traces each, caught up; "
        f"{args.delay_ms:g} ms added each way per write (a round trip: {2 * args.delay_ms:g} ms), "
        f"{args.repeat} interleaved runs; medians (min-max)"
    )
    for path, runs in zip(builds, samples, strict=True):
        seconds = [run[0] for run in runs]
        connections = statistics.median(run[1] for run in runs)
        requests = statistics.median(run[2] for run in runs)
        print(
            f"{path.name:32s} sync --once {statistics.median(seconds) * 1000:6.0f} ms "
            f"({min(seconds) * 1000:.0f}-{max(seconds) * 1000:.0f}); per run: {connections:g} connections, "
            f"{requests:g} requests, {connections + requests:g} round trips (a connect and each request)"
        )
    return 0


# ---- a raw MCP client for serve and load ---------------------------------------------------------------------


class ClientError(Exception):
    """The server answered something a well-behaved peer would not."""


class RawClient:
    """A minimal MCP client over plain http.client: initialize once, then sync_events page after page."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port = port
        self.timeout = timeout
        self.session = ""
        self.version = ""
        self.next_id = 1
        self.parse_seconds = 0.0

    def _post(self, message: dict[str, Any]) -> tuple[int, str, bytes]:
        # One connection per request: the server answers every request with `Connection: close`.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
            if self.session:
                headers["Mcp-Session-Id"] = self.session
                headers["MCP-Protocol-Version"] = self.version
            conn.request("POST", "/mcp", body=json.dumps(message).encode(), headers=headers)
            response = conn.getresponse()
            return response.status, response.getheader("Mcp-Session-Id") or "", response.read()
        finally:
            conn.close()

    def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        request_id = self.next_id
        self.next_id += 1
        status, session, body = self._post(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        )
        if status != 200:
            raise ClientError(f"{method}: HTTP {status}: {body[:200]!r}")
        start = time.perf_counter()
        message = json.loads(body)
        self.parse_seconds += time.perf_counter() - start
        if message.get("id") != request_id or "result" not in message:
            raise ClientError(f"{method}: unexpected answer {body[:200]!r}")
        if method == "initialize":
            self.session = session
        result: dict[str, Any] = message["result"]
        return result

    def initialize(self) -> None:
        result = self._call(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "0"},
            },
        )
        self.version = result["protocolVersion"]
        status, _, body = self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        if status not in (200, 202):
            raise ClientError(f"notifications/initialized: HTTP {status}: {body[:200]!r}")

    def pull_raw(self, limit: int, cursors: list[str]) -> list[bytes]:
        """The answer bodies for these cursors, read whole but not parsed (the same request id each time, so
        the answers of two passes are byte-identical): what serving costs, without the client's JSON work."""
        bodies = []
        for since in cursors:
            arguments: dict[str, Any] = {"limit": limit, "since": since} if since else {"limit": limit}
            params = {"name": "sync_events", "arguments": arguments}
            status, _, body = self._post(
                {"jsonrpc": "2.0", "id": 0, "method": "tools/call", "params": params}
            )
            if status != 200:
                raise ClientError(f"sync_events: HTTP {status}: {body[:200]!r}")
            bodies.append(body)
        return bodies

    def pull(self, limit: int, max_pages: int, deadline: float) -> list[str]:
        """Every event id the server holds, page by page; bounded by `max_pages` and `deadline`."""
        ids: list[str] = []
        since = ""
        for _ in range(max_pages):
            if time.monotonic() > deadline:
                raise ClientError(f"deadline passed after {len(ids)} events")
            arguments: dict[str, Any] = {"limit": limit}
            if since:
                arguments["since"] = since
            result = self._call("tools/call", {"name": "sync_events", "arguments": arguments})
            text = result["content"][0]["text"]
            if result.get("isError"):
                raise ClientError(f"sync_events refused: {text}")
            start = time.perf_counter()
            page = json.loads(text)
            ids.extend(event["id"] for event in page)
            self.parse_seconds += time.perf_counter() - start
            if len(page) < limit:
                return ids
            since = ids[-1]
        raise ClientError(f"still not caught up after {max_pages} pages")


def serving_floor(cortex_dir: Path, limit: int) -> float:
    """Seconds to do in-process the least a server must do for every page (no HTTP, no Go escaping per field).

    The same SELECT, one JSON text per row by f-string, the JSON-RPC envelope, UTF-8 bytes.
    """
    conn = connect(cortex_dir / "db" / "noema.db")
    try:
        start = time.perf_counter()
        since = ""
        while True:
            rows = conn.execute(
                "SELECT id, action, trace_id, cortex_id, origin, timestamp, data, vclock FROM events "
                "WHERE id > ? ORDER BY id LIMIT ?",
                (since, limit),
            ).fetchall()
            text = (
                "["
                + ",".join(
                    f'{{"id":"{r[0]}","action":"{r[1]}","trace_id":"{r[2]}","cortex_id":"{r[3]}",'
                    f'"origin":"{r[4]}","timestamp":"{r[5]}","data":{r[6]},"vclock":{r[7]}}}'
                    for r in rows
                )
                + "]"
            )
            result = {"content": [{"type": "text", "text": text}], "isError": False}
            json.dumps({"jsonrpc": "2.0", "id": 1, "result": result}, ensure_ascii=False).encode()
            if len(rows) < limit:
                return time.perf_counter() - start
            since = rows[-1][0]
    finally:
        conn.close()


# ---- serve --------------------------------------------------------------------------------------------------


def serve_command(args: argparse.Namespace) -> int:
    print(f"machine: {machine()}")
    total, limit = args.events, args.limit
    max_pages = total // limit + 3
    with tempfile.TemporaryDirectory(prefix="noemafed-bench-") as tmp:
        root = Path(tmp)
        pyz = Pyz(args.pyz, root, bytecode=not args.no_bytecode)
        source = root / "source"
        build_source(pyz, source, total)
        expected = event_ids(source)
        floors, passes = [], []
        with pyz.serve(source, "serve") as server:
            client = RawClient(server.port, timeout=60)
            client.initialize()
            # The warm-up pass is parsed and checked; the timed passes must return the same bytes.
            if client.pull(limit, max_pages, time.monotonic() + 600) != expected:
                raise RuntimeError("the warm-up pass did not return the source's events in order")
            cursors = ["", *expected[limit - 1 :: limit]]
            reference = client.pull_raw(limit, cursors)
            for _ in range(args.passes):  # floor and serve alternate, so load from elsewhere falls on both
                floors.append(serving_floor(source, limit))
                start = time.perf_counter()
                bodies = client.pull_raw(limit, cursors)
                passes.append(time.perf_counter() - start)
                if bodies != reference:
                    raise RuntimeError("a pass did not return the same answers as the checked one")
            hwm = server.status_kib("VmHWM")
    seconds = statistics.median(passes)
    rate = total / seconds
    floor_rate = total / statistics.median(floors)
    print(
        f"events: {total} stored events (1 KiB body creates), sync_events limit {limit}, {args.passes} passes"
    )
    print(f"floor : {floor_rate:10.0f} events/s  (in-process SELECT + JSON text, no HTTP; median pass)")
    print(
        f"serve : {rate:10.0f} events/s  ({seconds:.2f} s median pass, one client reading every answer "
        f"whole, parsing none)  serve peak RSS {mib(hwm)}"
    )
    print(f"ratio : {rate / floor_rate:.2f} (serve rate / floor rate; target >= 0.50)")
    print(f"target: >= 5000 events/s: {'met' if rate >= 5000 else 'MISSED'}")
    return 0


# ---- load ---------------------------------------------------------------------------------------------------


def one_client(
    port: int, limit: int, max_pages: int, deadline: float, timeout: float
) -> tuple[list[str], str]:
    """One client's whole pull; any failure is returned, never raised, so every client is accounted for."""
    try:
        client = RawClient(port, timeout)
        client.initialize()
        return client.pull(limit, max_pages, deadline), ""
    except Exception as exc:  # counted and reported as an error of this client
        return [], f"{type(exc).__name__}: {exc}"


def load_command(args: argparse.Namespace) -> int:
    print(f"machine: {machine()}")
    total, limit, clients = args.events, args.limit, args.clients
    max_pages = total // limit + 3
    with tempfile.TemporaryDirectory(prefix="noemafed-bench-") as tmp:
        root = Path(tmp)
        pyz = Pyz(args.pyz, root, bytecode=not args.no_bytecode)
        source = root / "source"
        build_source(pyz, source, total)
        expected = event_ids(source)
        # Every client comes from 127.0.0.1: lift the per-address cap that protects serve from one hostile host. A
        # client opens a connection per request, and its next may arrive while serve still counts the last one
        # (closed by the client, not yet by the worker): up to two per client at an instant, and the cap refuses
        # the third with a 503 (which one client in 50 met on a quiet machine with a cap of one per client).
        with pyz.serve(source, "load", "--max-per-address", str(max(64, 3 * clients))) as server:
            idle_rss = server.status_kib("VmRSS")
            start = time.perf_counter()
            alone, error = one_client(server.port, limit, max_pages, time.monotonic() + args.timeout, 60)
            single = time.perf_counter() - start
            if error or alone != expected:
                raise RuntimeError(f"the single-client baseline failed: {error or 'wrong events'}")
            single_hwm = server.status_kib("VmHWM")
            deadline = time.monotonic() + args.timeout
            start = time.perf_counter()
            pool = ThreadPoolExecutor(max_workers=clients, thread_name_prefix="client")
            futures = [
                pool.submit(one_client, server.port, limit, max_pages, deadline, 60) for _ in range(clients)
            ]
            done, pending = wait(futures, timeout=args.timeout + 5)
            elapsed = time.perf_counter() - start
            pool.shutdown(wait=False, cancel_futures=True)
            hwm = server.status_kib("VmHWM")
            alive = server.status_kib("VmRSS") > 0
    results = [future.result() for future in done]
    errors = [error for _, error in results if error]
    dropped = sum(1 for ids, error in results if not error and len(set(ids)) < len(expected))
    duplicated = sum(1 for ids, error in results if not error and len(ids) != len(set(ids)))
    wrong = sum(1 for ids, error in results if not error and ids != expected)
    aggregate = clients * total / elapsed
    print(
        f"events: {total} stored events, sync_events limit {limit}; server: `noemafed serve` (pyz), 16 workers"
    )
    print(
        f"baseline: 1 client alone  {total / single:10.0f} events/s  ({single:.2f} s)  server peak RSS {mib(single_hwm)}"
    )
    print(
        f"load    : {clients} clients     {aggregate:10.0f} events/s in all  ({elapsed:.2f} s for "
        f"{clients} x {total} events)  server peak RSS {mib(hwm)} (idle {mib(idle_rss)})"
    )
    print(f"ratio   : {aggregate / (total / single):.2f} (aggregate rate under load / single-client rate)")
    print(
        f"clients : {len(done)} finished, {len(pending)} still running at the deadline; errors {len(errors)}, "
        f"dropped {dropped}, duplicated {duplicated}, not identical to the source's id sequence {wrong}"
    )
    for error in sorted(set(errors))[:5]:
        print(f"  error: {error}")
    print(
        f"bounded : each client <= {max_pages} pages and {args.timeout:.0f} s; the run ended by itself: "
        f"{'yes' if not pending else 'NO'}; server still up afterwards: {'yes' if alive else 'no'}"
    )
    ok = not pending and not errors and not wrong
    print(f"verdict : {'no error, no dropped and no duplicated event' if ok else 'FAILED'}")
    return 0 if ok else 1


# ---- memory -------------------------------------------------------------------------------------------------

MIB = 1024 * 1024
# A markdown-ish body line: plain ASCII (Go escapes none of it) and a newline (2 bytes in the page, 3 in the
# envelope), so the body on the wire is close to the page text in size.
BIG_LINE = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.\n"
)


@dataclass(frozen=True)
class MemoryCase:
    label: str
    pages: int  # full pages of 1,000 events served in a row (2: the second one is fetched ahead)
    mib: float  # the aimed-for size of each answer body
    # go: one JSON body with a Content-Length; go-chunked: the same body chunked, as Go's net/http sends a large
    # one; rust: a chunked SSE stream
    flavor: str = "go"
    # One such character per body: Python then holds a text as 2 ("\u2014") or 4 ("\U0001f600") bytes a character.
    wide: str = ""


def big_pages(case: MemoryCase) -> list[str]:
    """`case.pages` pages of PAGE create events whose answers are each about `case.mib` MiB on the wire."""
    per_event = int(case.mib * MIB / PAGE)
    probe = page_text(0, 1, "")
    # The event without body, as it sits in the envelope (each '"' gains a backslash), plus the separator.
    overhead = len(json.dumps(probe, ensure_ascii=False)) + 1
    length = max(per_event - overhead, 1)
    line_wire = len(BIG_LINE) + 2  # the newline is `\n` in the page and `\\n` in the envelope
    text = BIG_LINE * (length // line_wire)
    if case.wide:
        text = case.wide + text[len(case.wide.encode()) :]  # the size on the wire is unchanged
    return [page_text(n * PAGE, (n + 1) * PAGE, text) for n in range(case.pages)]


def proc_status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


class PagesByCursor:
    """A StdlibPeer page_override serving `texts` by cursor; at the first ask it reads the syncing process's
    memory, which is then everything a sync holds before any page: interpreter, imports, session, handshake."""

    def __init__(self, texts: list[str], ids: list[tuple[str, str]]) -> None:
        self.texts, self.ids = texts, ids
        self.pid = 0
        self.idle_hwm = self.idle_rss = 0

    def __call__(self, since: str, limit: int) -> str:
        if not since and self.pid:
            # The child is blocked on this answer, so its memory is not moving.
            self.idle_hwm = proc_status_kib(self.pid, "VmHWM")
            self.idle_rss = proc_status_kib(self.pid, "VmRSS")
        for text, (_, last) in zip(self.texts, self.ids, strict=True):
            if last > since:
                return text
        return "null"


# Starts the sync and reports its pid, then its exit status and its own peak RSS. The sync must not be spawned
# by the benchmark itself: a spawned child's ru_maxrss starts from its parent's resident size at exec (Linux
# records the old image's high-water mark), and the benchmark holds the pages it serves. This wrapper is small.
SPAWN_AND_WAIT = """
import json, os, subprocess, sys, threading
out, err, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
with open(out, "wb") as stdout, open(err, "wb") as stderr:
    child = subprocess.Popen(sys.argv[4:], stdout=stdout, stderr=stderr)
print(child.pid, flush=True)
killer = threading.Timer(timeout, child.kill)
killer.start()
_, status, usage = os.wait4(child.pid, 0)
killer.cancel()
print(json.dumps({"returncode": os.waitstatus_to_exitcode(status), "peak_rss_kib": usage.ru_maxrss}))
"""


def memory_run(case: MemoryCase, root: Path, code: Path, timeout: float) -> dict[str, Any]:
    """One cold `sync --once` of `case` in its own process: its peak RSS above its RSS before the first page."""
    sys.path.insert(0, str(REPO / "tests"))
    from peers.stdlib_peer import StdlibPeer  # a Go- or Rust-flavoured test peer, real HTTP on 127.0.0.1

    texts = big_pages(case)
    ids = [(parse_page(t)[0].id, parse_page(t)[-1].id) for t in texts]
    wire = [len(json.dumps(t, ensure_ascii=False).encode()) for t in texts]
    source, target = root / "source", root / "target"
    init_cortex(source, "source")
    init_cortex(target, "target")
    pages = PagesByCursor(texts, ids)
    env = {k: v for k, v in os.environ.items() if k not in ("NOEMA_MCP_KEY", "NOEMA_CORTEX")}
    env["PYTHONPATH"] = str(code)
    env["XDG_CONFIG_HOME"] = str(root / "config")
    out, err = root / "sync.out", root / "sync.err"
    argv = [sys.executable, "-m", "noemafed", "--cortex", str(target), "sync", "--once", "--json"]
    flavor = "rust" if case.flavor == "rust" else "go"
    with contextlib.ExitStack() as stack:
        peer: Any = stack.enter_context(StdlibPeer(source, flavor=flavor, page_override=pages))
        if case.flavor == "go-chunked":
            from peers.hostile_peer import HostilePeer  # a socket-level proxy that re-frames one answer

            peer = stack.enter_context(HostilePeer(peer, "sync_events", chunked_answer))
        add_peers(target, {"source": peer.endpoint})
        wrapper = subprocess.Popen(
            [sys.executable, "-c", SPAWN_AND_WAIT, str(out), str(err), str(timeout), *argv],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=root,  # not this checkout: `-m` puts the working directory first on sys.path
        )
        assert wrapper.stdout is not None
        pages.pid = int(wrapper.stdout.readline())
        measured: dict[str, Any] = json.loads(wrapper.communicate(timeout=timeout + 30)[0])
    measured["stdout"], measured["stderr"] = out.read_text(), err.read_text()
    peer_report = sync_report(measured)["peers"][0]
    if peer_report["status"] != "ok" or peer_report["events_applied"] != PAGE * case.pages:
        raise RuntimeError(f"sync did not apply {PAGE * case.pages} events: {peer_report}")
    if not pages.idle_hwm:
        raise RuntimeError("the peer never saw the first sync_events request")
    shutil.rmtree(source)
    shutil.rmtree(target)
    return {
        "wire": max(wire),
        "text": max(len(t) for t in texts),
        "idle_rss": pages.idle_rss,
        "idle_hwm": pages.idle_hwm,
        "peak": measured["peak_rss_kib"],
        "seconds": peer_report["seconds"],
    }


def chunked_answer(sock: Any, forwarded: Any) -> None:
    """The honest answer with `Transfer-Encoding: chunked` (chunks of 32 KiB) instead of a Content-Length."""
    body = forwarded.body
    sock.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n"
    )
    step = 32 * 1024
    for at in range(0, len(body), step):
        piece = body[at : at + step]
        sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
    sock.sendall(b"0\r\n\r\n")


MEMORY_CASES = {
    "normal": MemoryCase("1 page, 1,000 x 1.7 KiB events (a normal page)", 1, 1.7),
    "25": MemoryCase("1 page of 25 MiB", 1, 25),
    "50": MemoryCase("1 page of 50 MiB", 1, 50),
    "95": MemoryCase("1 page of 95 MiB", 1, 95),
    "2x50": MemoryCase("2 full pages of 50 MiB in a row", 2, 50),
    "2x95": MemoryCase("2 full pages of 95 MiB in a row", 2, 95),
    "95-chunked": MemoryCase("1 page of 95 MiB, chunked (no Content-Length)", 1, 95, flavor="go-chunked"),
    "2x95-chunked": MemoryCase("2 full pages of 95 MiB in a row, chunked", 2, 95, flavor="go-chunked"),
    "95-sse": MemoryCase("1 page of 95 MiB as SSE (a Rust peer)", 1, 95, flavor="rust"),
    "95-bmp": MemoryCase("1 page of 95 MiB, one '\u2014' per event", 1, 95, wide="\u2014"),
    "95-emoji": MemoryCase("1 page of 95 MiB, one '\U0001f600' per event", 1, 95, wide="\U0001f600"),
    "95-sse-bmp": MemoryCase(
        "1 page of 95 MiB as SSE, one '\u2014' per event", 1, 95, flavor="rust", wide="\u2014"
    ),
    "95-sse-emoji": MemoryCase(
        "1 page of 95 MiB as SSE, one '\U0001f600' per event", 1, 95, flavor="rust", wide="\U0001f600"
    ),
}


def memory_command(args: argparse.Namespace) -> int:
    """Peak RSS of `sync --once` above its RSS before the first page, for pages up to the 100 MiB cap."""
    print(f"machine: {machine()}")
    code = args.code.resolve()
    probe = subprocess.run(
        [sys.executable, "-c", "import noemafed; print(noemafed.__file__)"],
        env={**os.environ, "PYTHONPATH": str(code)},
        cwd=tempfile.gettempdir(),  # not this checkout: `-c` and `-m` put the working directory first
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not probe.startswith(str(code)):
        raise RuntimeError(f"the child would run {probe}, not the code under {code}")
    print(f"code: {code} (python -m noemafed)")
    print(
        "delta = the child's peak RSS (wait4 ru_maxrss) minus its VmHWM when its first sync_events request "
        "reached the peer; ratio = delta / the answer's body size"
    )
    failed = False
    with tempfile.TemporaryDirectory(prefix="noemafed-bench-") as tmp:
        for name in args.cases:
            case = MEMORY_CASES[name]
            runs = []
            try:
                for number in range(args.repeat):
                    root = Path(tmp) / f"{name}-{number}"
                    root.mkdir()
                    runs.append(memory_run(case, root, code, args.timeout))
                    shutil.rmtree(root)
            except RuntimeError as exc:  # a sync that failed: say how, and go on with the other cases
                print(f"{case.label:56s} FAILED: {one_line_error(exc)}")
                failed = True
                continue
            ratios = sorted((r["peak"] - r["idle_hwm"]) * 1024 / r["wire"] for r in runs)
            run = sorted(runs, key=lambda r: r["peak"] - r["idle_hwm"])[len(runs) // 2]
            delta = (run["peak"] - run["idle_hwm"]) * 1024
            spread = f"; {len(runs)} runs, ratio {ratios[0]:.2f}-{ratios[-1]:.2f}" if len(runs) > 1 else ""
            print(
                f"{case.label:56s} body {run['wire'] / MIB:6.1f} MiB  idle {mib(run['idle_hwm'])}  "
                f"peak {mib(run['peak'])}  delta {delta / MIB:6.1f} MiB  ratio {delta / run['wire']:5.2f}  "
                f"({run['seconds']:.1f} s{spread})"
            )
    return 1 if failed else 0


def one_line_error(exc: Exception) -> str:
    """A failed sync's reason and message from its --json report, or the exception's first line."""
    text = str(exc)
    with contextlib.suppress(ValueError):
        peer = json.JSONDecoder().raw_decode(text, text.index("{"))[0]["peers"][0]
        return f"{peer.get('reason')}: {peer.get('message')} ({peer.get('seconds', 0):.1f} s)"
    return text.splitlines()[0]


def add_pyz_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pyz", type=Path, default=DEFAULT_PYZ, help="the built zipapp (default: dist/noemafed.pyz)"
    )
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="run the pyz with PYTHONDONTWRITEBYTECODE=1 (every run compiles its modules from source)",
    )


def add_status_parser(sub: Any) -> None:
    """`bench.py status` and its options."""
    status = sub.add_parser(
        "status",
        help="status --json/--check on N events and 20 peers, and a deferring sync --once, beside floors",
    )
    status.add_argument("--events", type=int, default=100_000)
    status.add_argument("--repeat", type=int, default=20)
    status.add_argument("--traces", type=int, default=20, help="seeded traces per live peer")
    status.add_argument(
        "--compare",
        type=Path,
        nargs="*",
        default=[],
        metavar="PYZ",
        help="other builds' status --json beside",
    )
    add_pyz_options(status)


def add_latency_parser(sub: Any) -> None:
    latency = sub.add_parser(
        "latency", help="`sync --once` against 3 caught-up peers through a proxy that adds latency"
    )
    latency.add_argument("--delay-ms", type=float, default=25.0, help="added one-way latency, per write")
    latency.add_argument("--repeat", type=int, default=10)
    latency.add_argument("--traces", type=int, default=20, help="seeded traces per peer")
    latency.add_argument("--tls", action="store_true", help="serve over TLS (certificates made with trustme)")
    latency.add_argument(
        "--compare",
        type=Path,
        nargs="*",
        default=[],
        metavar="PYZ",
        help="other builds, each with its own peers",
    )
    add_pyz_options(latency)


def add_serve_parser(sub: Any) -> None:
    serve = sub.add_parser("serve", help="sync_events serving rate to one raw HTTP client")
    serve.add_argument("--events", type=int, default=20_000)
    serve.add_argument("--limit", type=int, default=1000)
    serve.add_argument("--passes", type=int, default=3)
    add_pyz_options(serve)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    replay = sub.add_parser("replay", help="replay N create events beside a plain-sqlite3 floor")
    replay.add_argument("--events", type=int, default=10_000)
    replay.add_argument("--durable", action="store_true", help="replay with fsync of every file and the WAL")
    replay.add_argument("--profile", action="store_true", help="print a cProfile of the replay side")
    sync = sub.add_parser(
        "sync", help="cold `sync --once` of N events from a local serve, beside replay-only"
    )
    sync.add_argument("--events", type=int, nargs="+", default=[10_000], help="one or more sizes, in order")
    sync.add_argument("--rounds", type=int, default=3, help="sync runs (and replay-only runs) per size")
    add_pyz_options(sync)
    startup = sub.add_parser(
        "startup", help="`sync --once` against 3 caught-up peers beside a click start-up floor"
    )
    startup.add_argument("--repeat", type=int, default=10)
    startup.add_argument("--traces", type=int, default=20, help="seeded traces per peer")
    startup.add_argument("--top", type=int, default=12, help="lines of the import-time profile")
    startup.add_argument(
        "--compare", type=Path, nargs="*", default=[], metavar="PYZ", help="other builds to time side by side"
    )
    add_pyz_options(startup)
    add_status_parser(sub)
    add_latency_parser(sub)
    add_serve_parser(sub)
    load = sub.add_parser("load", help="many concurrent clients each pulling every event from one serve")
    load.add_argument("--clients", type=int, default=50)
    load.add_argument("--events", type=int, default=10_000)
    load.add_argument("--limit", type=int, default=1000)
    load.add_argument("--timeout", type=float, default=600.0, help="wall-clock bound of the whole load")
    add_pyz_options(load)
    memory = sub.add_parser(
        "memory", help="peak RSS of `sync --once` above idle, for pages up to the 100 MiB cap"
    )
    memory.add_argument(
        "--cases", nargs="+", choices=list(MEMORY_CASES), default=["normal", "25", "50", "95", "2x50", "2x95"]
    )
    memory.add_argument("--repeat", type=int, default=1, help="runs per case (the median delta is shown)")
    memory.add_argument(
        "--timeout", type=float, default=600.0, help="seconds a sync may take before it is killed"
    )
    memory.add_argument(
        "--code",
        type=Path,
        default=REPO,
        help="the tree whose noemafed package the sync runs (default: this one)",
    )
    add_verify_parser(sub)
    hidden = sub.add_parser("_child")
    hidden.add_argument("kind", choices=["floor", "replay"])
    hidden.add_argument("events", type=int)
    hidden.add_argument("root", type=Path)
    hidden.add_argument("--durable", action="store_true")
    hidden.add_argument("--profile", action="store_true")
    source = sub.add_parser("_source")
    source.add_argument("path", type=Path)
    source.add_argument("events", type=int)
    source.add_argument("--replay-of", type=Path)
    source.add_argument("--signed", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "_child":
        child(args.kind, args.events, args.root, args.durable, args.profile)
        return 0
    if args.command == "_source":
        load_source(args.path, args.events, args.replay_of, args.signed)
        return 0
    commands = {
        "replay": replay_command,
        "sync": sync_command,
        "startup": startup_command,
        "status": status_command,
        "latency": latency_command,
        "serve": serve_command,
        "load": load_command,
        "memory": memory_command,
        "verify": verify_command,
    }
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
