#!/usr/bin/env python3
"""Benchmarks. `bench.py replay --events N`: replay N `create` events beside a plain-sqlite3 floor.

Both sides run in their own child process (so peak RSS is theirs alone) on a fresh cortex, consume the same
pages of 1,000 events (the sync_events maximum) generated on the fly, and are timed only around the work a
syncer would do with a page: parse it, write rows and files. Results: events/s of each, the ratio, peak RSS
and the tracemalloc peak of the replay side's own allocations per page.

The floor is the least any correct replay must do: in ONE transaction, insert the traces row, 3 tags, the
FTS row, the events row and the cursor, and write the same file text atomically (temp file, rename, 0640).
It skips everything replay adds: raw-span parsing, gates, the already-seen lookup, tier/tag folding, hash
check, per-event savepoints, clock merge, stray-copy removal.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from noemafed import local, traces
from noemafed.cortex import connect, init_cortex, open_cortex
from noemafed.events import Event, page_json, parse_page
from noemafed.replay import Replayer

PAGE = 1000
SOURCE_ID = "01JQ7X2B9C4D5E6F7G8H9JKMNP"
PEER = "research"
BODY = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit; the index & event log <stay> small. " * 11)[
    :1023
] + "\n"


def pages(total: int) -> Iterator[str]:
    """Pages of realistic `create` events, as a Go peer serves them (payloads built by local.py's encoder)."""
    for start in range(0, total, PAGE):
        events = []
        for n in range(start, min(start + PAGE, total)):
            title = f"Benchmark trace {n}"
            body = f"{n}: {BODY}"
            data = local.snapshot_data(
                title=title,
                type="note",
                body=body,
                author="bench-agent",
                tags=["bench", f"group-{n % 10}", "replay"],
                origin=PEER,
                tier="short",
                content_hash=traces.content_hash(body),
            )
            events.append(
                Event(
                    id=local.new_ulid(),
                    action="create",
                    trace_id=f"20250401-benchmark-trace-{n}",
                    cortex_id=SOURCE_ID,
                    origin=PEER,
                    timestamp="2025-04-01T12:00:00Z",
                    data=data,
                    vclock={SOURCE_ID: n + 1},
                )
            )
        yield page_json(events)


def fresh_cortex(root: Path) -> Path:
    path = root / "bench"
    init_cortex(path, "bench")
    return path


def run_replay(total: int, durable: bool, profile: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        cortex = open_cortex(fresh_cortex(Path(tmp)))
        replayer = Replayer(cortex, log=lambda _: None, durable=durable)
        profiler = cProfile.Profile() if profile else None
        elapsed = 0.0
        malloc_peaks = []
        for n, text in enumerate(pages(total)):
            trace_malloc = n in (0, total // PAGE - 1)  # first and last page only: tracemalloc is slow
            if trace_malloc:
                tracemalloc.start()
            if profiler:
                profiler.enable()
            start = time.perf_counter()
            result = replayer.apply_page(parse_page(text), cursor_peer=PEER)
            elapsed += time.perf_counter() - start
            if profiler:
                profiler.disable()
            if trace_malloc:
                malloc_peaks.append(tracemalloc.get_traced_memory()[1])
                tracemalloc.stop()
            if result.error is not None:
                raise result.error
        count = cortex.conn.execute("SELECT count(*) FROM traces").fetchone()[0]
        assert count == total, count
        cortex.close()
        out: dict[str, object] = {"seconds": elapsed, "malloc_peak_first_last": malloc_peaks}
        if profiler:
            buffer = io.StringIO()
            pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(25)
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


def run_floor(total: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        path = fresh_cortex(Path(tmp))
        conn = connect(path / "db" / "noema.db")
        folder = path / "traces"
        elapsed = 0.0
        conn.execute("BEGIN IMMEDIATE")
        last = ""
        for text in pages(total):
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
                last = event["id"]
            elapsed += time.perf_counter() - start
        start = time.perf_counter()
        conn.execute(
            "INSERT OR REPLACE INTO federation_state (key, value) VALUES (?, ?)",
            (f"peer:{PEER}:last_event", last),
        )
        conn.execute("COMMIT")
        elapsed += time.perf_counter() - start
        conn.close()
        return {"seconds": elapsed}


def child(kind: str, total: int, durable: bool, profile: bool) -> None:
    result = run_floor(total) if kind == "floor" else run_replay(total, durable, profile)
    result["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result))


def spawn(kind: str, args: argparse.Namespace) -> dict[str, object]:
    argv = [sys.executable, __file__, "_child", kind, str(args.events)]
    if args.durable:
        argv.append("--durable")
    if args.profile and kind == "replay":
        argv.append("--profile")
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def replay_command(args: argparse.Namespace) -> int:
    floor = spawn("floor", args)
    replay = spawn("replay", args)
    n = args.events
    floor_rate = n / float(floor["seconds"])  # type: ignore[arg-type]
    replay_rate = n / float(replay["seconds"])  # type: ignore[arg-type]
    print(f"events: {n} create events (1 KiB body, 3 tags), pages of {PAGE}")
    print(
        f"floor : {floor_rate:10.0f} events/s  ({float(floor['seconds']):.2f} s)  peak RSS {floor['peak_rss_kib']} KiB"
    )  # type: ignore[arg-type]
    print(
        f"replay: {replay_rate:10.0f} events/s  ({float(replay['seconds']):.2f} s)  peak RSS {replay['peak_rss_kib']} KiB"  # type: ignore[arg-type]
        f"  tracemalloc peak first/last page {replay['malloc_peak_first_last']} B"
        + ("  [durable]" if args.durable else "")
    )
    print(f"ratio : {replay_rate / floor_rate:.2f} (replay rate / floor rate; target >= 0.50)")
    if args.profile:
        print(replay["profile"])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    replay = sub.add_parser("replay", help="replay N create events beside a plain-sqlite3 floor")
    replay.add_argument("--events", type=int, default=10_000)
    replay.add_argument("--durable", action="store_true", help="replay with fsync of every file and the WAL")
    replay.add_argument("--profile", action="store_true", help="print a cProfile of the replay side")
    hidden = sub.add_parser("_child")
    hidden.add_argument("kind", choices=["floor", "replay"])
    hidden.add_argument("events", type=int)
    hidden.add_argument("--durable", action="store_true")
    hidden.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "_child":
        child(args.kind, args.events, args.durable, args.profile)
        return 0
    return replay_command(args)


if __name__ == "__main__":
    sys.exit(main())
