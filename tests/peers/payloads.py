"""What a noema peer serves, built from a real cortex: identity, event pages and usage rows as JSON text.

Shared by the stdlib peer and the SDK peer so both serve byte-identical payloads for the same cortex.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from noemafed.cortex import frontmatter

# Interface strings (wire.md §5.6, §6.2); the client matches on them.
BAD_CURSOR = "since must be a valid ULID cursor (26-char Crockford base32)"
SUBSCRIBE_EVENTS = "this cortex is in subscribe mode and does not serve events"
SUBSCRIBE_SIGNAL = "this cortex is in subscribe mode and does not serve read signal"

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
TOOL_NAMES = ("cortex_identity", "sync_events", "sync_read_signal")

# Go's IsValidULID: exactly 26 characters of upper-case Crockford base32 (no I, L, O, U).
_ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")

Encoder = Callable[[Any], str]


def rust_json(value: Any) -> str:
    """serde_json's compact form: no spaces, non-ASCII literal, no HTML escaping."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def go_json(value: Any) -> str:
    """encoding/json's compact form: like serde, but <, >, &, U+2028 and U+2029 escaped.

    Replacing after encoding is safe because these characters can only occur inside strings.
    """
    text = rust_json(value)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


@dataclass(frozen=True)
class CortexInfo:
    """The manifest and state facts a peer advertises in cortex_identity."""

    id: str
    name: str
    version: int
    mode: str
    pubkey: str
    rank: dict[str, Any] | None


def database_path(cortex_dir: Path) -> Path:
    return cortex_dir / "db" / "noema.db"


def connect_readonly(cortex_dir: Path) -> sqlite3.Connection:
    """A fresh query-only connection; unlike `mode=ro` it leaves no -wal/-shm files behind on close."""
    path = database_path(cortex_dir)
    if not path.is_file():
        raise FileNotFoundError(path)
    conn = sqlite3.connect(path, timeout=5, isolation_level=None)
    conn.execute("PRAGMA query_only=ON")
    return conn


def _manifest(cortex_dir: Path) -> dict[str, Any]:
    yaml_text, _body = frontmatter.split_manifest((cortex_dir / "cortex.md").read_text(encoding="utf-8"))
    return frontmatter.loads(yaml_text)


def read_info(cortex_dir: Path) -> CortexInfo:
    """Read what cortex_identity needs, re-read per call so tests may edit the manifest between polls."""
    raw = _manifest(cortex_dir)
    federation = raw.get("federation")
    signing = raw.get("signing")
    mode = federation.get("mode") if isinstance(federation, dict) else None
    pubkey = signing.get("public_key") if isinstance(signing, dict) else None
    version = str(raw.get("version") or "0")
    conn = connect_readonly(cortex_dir)
    try:
        row = conn.execute("SELECT value FROM federation_state WHERE key = 'consolidation:rank'").fetchone()
    finally:
        conn.close()
    return CortexInfo(
        id=str(raw.get("id") or ""),
        name=str(raw.get("name") or ""),
        version=int(version) if version.isdigit() else 0,
        mode=str(mode or "sync"),
        pubkey=str(pubkey or ""),
        rank=json.loads(row[0]) if row else None,
    )


def identity_payload(info: CortexInfo) -> dict[str, Any]:
    """The cortex_identity object in noema's key order; pubkey and rank only when set."""
    payload: dict[str, Any] = {"id": info.id, "name": info.name, "version": info.version, "mode": info.mode}
    if info.pubkey:
        payload["pubkey"] = info.pubkey
    if info.rank is not None:
        payload["rank"] = info.rank
    return payload


def valid_cursor(since: str) -> bool:
    return bool(_ULID.fullmatch(since))


def effective_limit(limit: int) -> int:
    """Out-of-range limits become the default, not the maximum (wire.md P13)."""
    return limit if 0 < limit <= MAX_LIMIT else DEFAULT_LIMIT


def _vclock_json(text: str) -> str | None:
    """The vclock as Go re-encodes its map (sorted keys); None when empty or null, so the key is omitted."""
    try:
        clock = json.loads(text) if text else None
    except ValueError:
        return text  # a corrupt column is served as stored: the client must cope with what it gets
    if not clock:
        return None
    if not isinstance(clock, dict):
        return text
    return rust_json(dict(sorted(clock.items())))


def event_json(row: Mapping[str, str], encode: Encoder, *, omit_empty_data: bool = False) -> str:
    """One event object (cortex.md §4.1) with the stored `data` text spliced in byte for byte."""
    parts = [f'"{key}":{encode(row[key])}' for key in ("id", "action", "trace_id", "cortex_id", "origin")]
    parts.append(f'"timestamp":{encode(row["timestamp"])}')
    data = row["data"] or "{}"  # Go normalises an empty column to {} on append and on serve
    if not (omit_empty_data and data.strip() == "{}"):  # Rust drops data:{} (wire.md P17)
        parts.append(f'"data":{data}')
    vclock = _vclock_json(row["vclock"])
    if vclock is not None:
        parts.append(f'"vclock":{vclock}')
    for key in ("signature", "pubkey"):
        if row[key]:
            parts.append(f'"{key}":{encode(row[key])}')
    return "{" + ",".join(parts) + "}"


@dataclass(frozen=True)
class RawEvent:
    """An event ready to serve: its id for ordering and its exact JSON text."""

    id: str
    text: str


def raw_event(item: Mapping[str, Any] | str, encode: Encoder) -> RawEvent:
    """An extra event given by a test, as a dict (encoded here) or as exact JSON text (served as is)."""
    if isinstance(item, str):
        return RawEvent(str(json.loads(item)["id"]), item)
    return RawEvent(str(item["id"]), encode(dict(item)))


def db_events(
    cortex_dir: Path, since: str, limit: int, encode: Encoder, *, omit_empty_data: bool = False
) -> list[RawEvent]:
    """Events of every origin after the exclusive cursor, ascending by id, as the Go and Rust servers read them."""
    conn = connect_readonly(cortex_dir)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT id, action, trace_id, cortex_id, origin, timestamp, data, vclock, signature, pubkey "
            "FROM events WHERE id > ? ORDER BY id LIMIT ?",
            (since, limit),
        ).fetchall()
    finally:
        conn.close()
    return [RawEvent(row["id"], event_json(row, encode, omit_empty_data=omit_empty_data)) for row in rows]


def merge_events(db: list[RawEvent], extra: Iterable[RawEvent], since: str, limit: int) -> list[RawEvent]:
    """The DB page plus test-supplied extras, re-filtered and re-limited as if they were all in the log."""
    merged = db + [event for event in extra if event.id > since]
    return sorted(merged, key=lambda event: event.id)[:limit]


def array_text(items: list[str], empty: str) -> str:
    """A JSON array from already-encoded items; `empty` is "null" for Go (a nil slice) and "[]" for Rust."""
    return "[" + ",".join(items) + "]" if items else empty


def usage_rows(cortex_dir: Path, own_id: str, since: str, limit: int) -> list[dict[str, Any]]:
    """trace_usage rows this cortex owns, `updated_at > since` ascending, in the wire shape of §6.3."""
    conn = connect_readonly(cortex_dir)
    try:
        rows = conn.execute(
            "SELECT trace_id, peer_cortex_id, read_count, modify_count, search_hit_count, last_read_at, "
            "updated_at FROM trace_usage WHERE peer_cortex_id = ? AND updated_at > ? "
            "ORDER BY updated_at, trace_id LIMIT ?",
            (own_id, since, limit),
        ).fetchall()
    finally:
        conn.close()
    return [_usage_row(row) for row in rows]


def _usage_row(row: tuple[Any, ...]) -> dict[str, Any]:
    trace_id, peer, reads, modifies, hits, last_read_at, updated_at = row
    wire: dict[str, Any] = {"trace_id": trace_id, "peer_cortex_id": peer, "read_count": reads}
    wire["modify_count"] = modifies
    if hits:  # omitted when zero, like Go's omitempty
        wire["search_hit_count"] = hits
    if last_read_at:
        wire["last_read_at"] = last_read_at
    wire["updated_at"] = updated_at
    return wire
