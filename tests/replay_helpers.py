"""Replay test helpers: a replica cortex with a fixed identity, the whole end state, and corpus I/O.

The end state is everything replay may change: trace files (exact text), the rows of traces, trace_tags,
trace_lineage, traces_fts, events (data as stored text, vclock parsed) and federation_state (vclock parsed).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from conftest import make_cortex

from noemafed.cortex import traces
from noemafed.cortex.events import EVENT_COLUMNS, Event, event_from_row, parse_page
from noemafed.cortex.open import Cortex, open_cortex
from noemafed.federation.replay import Replayer, ReplayOutcome
from noemafed.logs import SILENT

DATA = Path(__file__).resolve().parent / "data"
CORPUS = DATA / "replay"
REPLICA_ID = "01JR0000000000000000REP1CA"
REPLICA_NAME = "replica"
# Fixed local time for what replay authors itself (divergence traces); streams are dated 2025.
REPLICA_NOW = "2025-06-01T12:00:00Z"
LOCAL_EVENT = "<LOCAL_EVENT_{n}>"

TRACE_COLUMNS = (
    "id",
    "title",
    "type",
    "author",
    "archived_at",
    "created_at",
    "updated_at",
    "trashed_at",
    "origin",
    "cortex_id",
    "content_hash",
    "source_locked",
    "source_hash",
    "tier",
    "read_count",
    "modify_count",
    "last_read_at",
    "tier_votes",
    "purged_at",
    "purge_reason",
)


def set_manifest_id(path: Path, cortex_id: str) -> None:
    """Give a fresh cortex a fixed id (nothing refers to the id yet), so expected states are exact."""
    manifest = path / "cortex.md"
    text = manifest.read_text()
    manifest.write_text(re.sub(r"(?m)^id: .*$", f"id: {cortex_id}", text, count=1))


def make_replica(root: Path, name: str = REPLICA_NAME, cortex_id: str = REPLICA_ID, **fed: Any) -> Path:
    path = make_cortex(root, name, **fed)
    set_manifest_id(path, cortex_id)
    return path


def all_events(conn: sqlite3.Connection) -> list[Event]:
    rows = conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY id").fetchall()
    return [event_from_row(row) for row in rows]


def _clock(text: str) -> Any:
    return json.loads(text)


def end_state(path: Path) -> dict[str, Any]:
    """Everything replay may change, as plain JSON-able data in a stable order."""
    files = {}
    for folder in traces.FOLDERS:
        for file in sorted((path / folder).iterdir()):
            if file.name.startswith(traces.TEMP_PREFIX):
                continue  # interrupted atomic writes; noema ignores them too
            files[f"{folder}/{file.name}"] = file.read_text(encoding="utf-8")
    conn = sqlite3.connect(path / "db" / "noema.db")
    try:
        state: dict[str, Any] = {"files": files}
        state["traces"] = [
            dict(zip(TRACE_COLUMNS, row, strict=True))
            for row in conn.execute(f"SELECT {', '.join(TRACE_COLUMNS)} FROM traces ORDER BY id")
        ]
        state["trace_tags"] = [
            list(r) for r in conn.execute("SELECT trace_id, tag FROM trace_tags ORDER BY 1, 2")
        ]
        state["trace_lineage"] = [
            list(r) for r in conn.execute("SELECT trace_id, derived_from FROM trace_lineage ORDER BY 1, 2")
        ]
        state["traces_fts"] = [
            list(r) for r in conn.execute("SELECT id, title, body, tags FROM traces_fts ORDER BY 1, 2, 3, 4")
        ]
        events = []
        for row in conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY id"):
            record = dict(zip(EVENT_COLUMNS, row, strict=True))
            record["vclock"] = _clock(record["vclock"])
            events.append(record)
        state["events"] = events
        fed = dict(conn.execute("SELECT key, value FROM federation_state ORDER BY key").fetchall())
        if "vclock" in fed:
            fed["vclock"] = _clock(fed["vclock"])
        state["federation_state"] = fed
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()
    return normalise(state)


def normalise(state: dict[str, Any]) -> dict[str, Any]:
    """Replace the ids of events the replica authored itself (fresh ULIDs) with numbered placeholders."""
    local_ids = [e["id"] for e in state["events"] if e["cortex_id"] == REPLICA_ID]
    if not local_ids:
        return state
    text = json.dumps(state, ensure_ascii=False)
    for n, event_id in enumerate(local_ids, 1):
        text = text.replace(event_id, LOCAL_EVENT.format(n=n))
    out: dict[str, Any] = json.loads(text)
    # Placeholders sort differently from ULIDs: keep events in a stable order after renaming.
    out["events"].sort(key=lambda e: e["id"])
    return out


Delivery = tuple[str, str]  # (peer label, sync_events page text)


def load_stream(name: str) -> tuple[list[Delivery], dict[str, Any]]:
    """A corpus stream: its deliveries (pages from peers, in arrival order) and its expected end state."""
    folder = CORPUS / name
    deliveries = []
    for page in sorted(folder.glob("[0-9][0-9]-*.json")):
        peer = page.stem.split("-", 1)[1]
        deliveries.append((peer, page.read_text(encoding="utf-8")))
    expected = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
    return deliveries, expected


def stream_names() -> list[str]:
    return sorted(p.name for p in CORPUS.iterdir() if (p / "expected.json").is_file())


def open_replica(path: Path, hook: Callable[[str], None] | None = None) -> tuple[Cortex, Replayer]:
    cortex = open_cortex(path)
    return cortex, Replayer(cortex, log=SILENT, hook=hook, now=lambda: REPLICA_NOW)


def apply_one(replayer: Replayer, event: Event, cursor_peer: str | None = None) -> ReplayOutcome:
    """One event in its own transaction, as a page of one; its failure is raised."""
    result = replayer.apply_page([event], cursor_peer)
    if result.error is not None:
        raise result.error
    return result.outcomes[0]


def replay_deliveries(
    path: Path, deliveries: Sequence[Delivery], page_size: int = 0, hook: Callable[[str], None] | None = None
) -> None:
    """Replay like the syncer: per peer, only events after that peer's cursor; page_size 0 = one event each."""
    cortex, replayer = open_replica(path, hook)
    try:
        for peer, text in deliveries:
            cursor = cortex.conn.execute(
                "SELECT value FROM federation_state WHERE key = ?", (f"peer:{peer}:last_event",)
            ).fetchone()
            events = [e for e in parse_page(text) if cursor is None or e.id > cursor[0]]
            if page_size <= 0:
                for event in events:
                    apply_one(replayer, event, cursor_peer=peer)
                continue
            for start in range(0, len(events), page_size):
                result = replayer.apply_page(events[start : start + page_size], cursor_peer=peer)
                if result.error is not None:
                    raise result.error
    finally:
        cortex.close()
