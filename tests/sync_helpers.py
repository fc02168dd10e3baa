"""Shared pieces of the sync tests: seeded source cortexes, a target wired to peers, end-state snapshots."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from conftest import db, make_cortex, set_federation
from seed import seed as seed_activity

from noemafed.cortex.open import open_cortex

EVENT_COLUMNS = "id, action, trace_id, cortex_id, origin, timestamp, data, vclock, signature, pubkey"


def seed(path: Path, count: int, prefix: str = "note", body_size: int = 60) -> list[str]:
    """Author `count` traces and some later activity with scripts/seed.py (real local events)."""
    cortex = open_cortex(path)
    try:
        return seed_activity(cortex, count, label=prefix, body_bytes=body_size).created
    finally:
        cortex.close()


def source(tmp_path: Path, name: str = "source", count: int = 5) -> Path:
    path = make_cortex(tmp_path, name)
    seed(path, count, prefix=name)
    return path


def target_with(tmp_path: Path, peers: list[dict[str, str]], name: str = "target", **fed: str) -> Path:
    path = make_cortex(tmp_path, name)
    set_federation(path, peers, **fed)
    return path


def events(path: Path) -> list[tuple[Any, ...]]:
    conn = db(path)
    rows = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY id").fetchall()
    conn.close()
    return rows


def trace_files(path: Path) -> dict[str, str]:
    """Every trace file under the three folders, by relative path, with its exact text."""
    out = {}
    for folder in ("traces", "archive/traces", "trash/traces"):
        for file in sorted((path / folder).glob("*.md")):
            out[f"{folder}/{file.name}"] = file.read_text()
    return out


def state_value(path: Path, key: str) -> str:
    conn = db(path)
    row = conn.execute("SELECT value FROM federation_state WHERE key = ?", (key,)).fetchone()
    conn.close()
    return str(row[0]) if row else ""


def check_db(path: Path) -> None:
    conn = sqlite3.connect(path / "db" / "noema.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()


def comparable_trace_files(path: Path) -> dict[str, str]:
    """Trace files without the `updated:` line, which replay stamps with local time as Go does."""
    return {
        name: "\n".join(line for line in text.split("\n") if not line.startswith("updated:"))
        for name, text in trace_files(path).items()
    }
