"""The SQLite schema noema's Go migrations 001..019 leave behind, created in one step by `noemafed init`.

noema (Go) opens `db/noema.db`, runs every embedded migration whose number is not in `schema_migrations`,
and records the number. A database made here must therefore hold exactly the objects those migrations
produce and record every number Go records, so that Go re-runs nothing and the Rust build only adds its own
020..022. The DDL below is written as the final shape (one CREATE per object, columns in the order the ALTERs
left them), not as a replay of the migration history. So the CREATE TABLE text SQLite stores differs from a
Go-migrated file (there it carries the ALTERs' appended columns); noema never reads table text back, only the
trigger text, which matches byte for byte.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from noemafed.errors import CommandError
from noemafed.records import Record

SCHEMA_VERSION: Final = 19
"""The highest migration number Go knows; what `MAX(version)` reads after `create_schema`."""

MIGRATION_VERSIONS: Final[tuple[int, ...]] = tuple(range(1, SCHEMA_VERSION + 1))
"""Every number Go records on a fresh database: 1..19, no gap. Go keys migrations by number alone, so the
lineage-count view, once committed as a second `011_*` file, has to ship as 012: with two 011 files Go applies
the first by name (the view) and never adds the purge columns that later code reads."""

TIERS: Final[tuple[str, ...]] = ("short", "mid", "long")
"""The values the CHECK on `traces.tier` admits."""


class Column(Record):
    """One column as `PRAGMA table_xinfo` reports it (minus cid and hidden), so rows compare directly."""

    name: str
    type: str
    notnull: int
    dflt_value: str | None
    pk: int


class Index(Record):
    """A named index: its table, its columns in order, and the WHERE of a partial index."""

    table: str
    columns: tuple[str, ...]
    where: str | None = None


class ForeignKey(Record):
    """A single-column foreign key as `PRAGMA foreign_key_list` reports it."""

    table: str
    column: str
    ref_table: str
    ref_column: str
    on_delete: str


def _col(name: str, type_: str, *, notnull: bool = False, default: str | None = None, pk: int = 0) -> Column:
    return Column(name, type_, int(notnull), default, pk)


# The expected shape of every ordinary table, in final column order. Defaults are SQL literals exactly as
# PRAGMA table_xinfo prints them ("''", "'{}'", "0").
TABLE_COLUMNS: Final[Mapping[str, tuple[Column, ...]]] = MappingProxyType(
    {
        "schema_migrations": (_col("version", "INTEGER", notnull=True, pk=1),),
        "traces": (
            _col("id", "TEXT", notnull=True, pk=1),
            _col("title", "TEXT", notnull=True),
            _col("type", "TEXT", notnull=True),
            # Nullable since 001, but Go scans it into a plain string: a NULL makes every read of the row
            # fail, so writers must store '' for "no author".
            _col("author", "TEXT"),
            # NULL means "not archived/trashed"; queries test IS NULL, so '' would count as archived.
            _col("archived_at", "TEXT"),
            _col("created_at", "TEXT", notnull=True),
            _col("updated_at", "TEXT", notnull=True),
            _col("trashed_at", "TEXT"),
            _col("origin", "TEXT", notnull=True, default="''"),
            _col("cortex_id", "TEXT", notnull=True, default="''"),
            _col("content_hash", "TEXT"),
            _col("source_locked", "INTEGER", notnull=True, default="0"),
            _col("source_hash", "TEXT"),
            _col("tier", "TEXT", notnull=True, default="'short'"),
            _col("read_count", "INTEGER", notnull=True, default="0"),
            _col("modify_count", "INTEGER", notnull=True, default="0"),
            _col("last_read_at", "TEXT"),
            _col("tier_votes", "INTEGER", notnull=True, default="0"),
            _col("purged_at", "TEXT"),
            _col("purge_reason", "TEXT"),
        ),
        "trace_tags": (
            _col("trace_id", "TEXT", notnull=True, pk=1),
            _col("tag", "TEXT", notnull=True, pk=2),
        ),
        "events": (
            _col("id", "TEXT", notnull=True, pk=1),
            _col("action", "TEXT", notnull=True),
            # No foreign key: coordination events carry a window id, and the log outlives purged traces.
            _col("trace_id", "TEXT", notnull=True),
            _col("origin", "TEXT", notnull=True, default="''"),
            _col("timestamp", "TEXT", notnull=True),
            _col("data", "TEXT", notnull=True, default="'{}'"),
            _col("vclock", "TEXT", notnull=True, default="'{}'"),
            _col("cortex_id", "TEXT", notnull=True, default="''"),
            _col("signature", "TEXT", notnull=True, default="''"),
            _col("pubkey", "TEXT", notnull=True, default="''"),
        ),
        "trace_lineage": (
            _col("trace_id", "TEXT", notnull=True, pk=1),
            # No foreign key: a trace may derive from one this cortex has never seen.
            _col("derived_from", "TEXT", notnull=True, pk=2),
        ),
        "federation_state": (
            _col("key", "TEXT", notnull=True, pk=1),
            _col("value", "TEXT", notnull=True),
        ),
        "trace_usage": (
            _col("trace_id", "TEXT", notnull=True, pk=1),
            _col("peer_cortex_id", "TEXT", notnull=True, pk=2),
            _col("read_count", "INTEGER", notnull=True, default="0"),
            _col("modify_count", "INTEGER", notnull=True, default="0"),
            _col("last_read_at", "TEXT"),
            _col("updated_at", "TEXT", notnull=True),
            _col("search_hit_count", "INTEGER", notnull=True, default="0"),
        ),
        # As migration 016 made it; the Rust build's 022 appends five columns when it first opens the file.
        "trace_embeddings": (
            _col("trace_id", "TEXT", notnull=True, pk=1),
            _col("embedding_model", "TEXT", notnull=True),
            _col("dim", "INTEGER", notnull=True),
            _col("embedding", "BLOB", notnull=True),
            _col("source_hash", "TEXT", notnull=True),
            _col("updated_at", "TEXT", notnull=True),
        ),
    }
)

INDEXES: Final[Mapping[str, Index]] = MappingProxyType(
    {
        "idx_events_trace_id": Index("events", ("trace_id",)),
        "idx_events_timestamp": Index("events", ("timestamp",)),
        "idx_traces_cortex_id": Index("traces", ("cortex_id",)),
        "idx_events_cortex_id": Index("events", ("cortex_id",)),
        "idx_traces_tier": Index("traces", ("tier",)),
        "idx_traces_short_promotable": Index("traces", ("last_read_at",), "tier = 'short'"),
        "idx_trace_usage_updated": Index("trace_usage", ("updated_at",)),
        "idx_trace_usage_trace": Index("trace_usage", ("trace_id",)),
        "idx_trace_embeddings_model": Index("trace_embeddings", ("embedding_model",)),
    }
)

# Only these cascade. Nothing cascades into traces_fts: deleting a trace leaves its FTS row behind.
FOREIGN_KEYS: Final[tuple[ForeignKey, ...]] = (
    ForeignKey("trace_tags", "trace_id", "traces", "id", "CASCADE"),
    ForeignKey("trace_lineage", "trace_id", "traces", "id", "CASCADE"),
    ForeignKey("trace_usage", "trace_id", "traces", "id", "CASCADE"),
    ForeignKey("trace_embeddings", "trace_id", "traces", "id", "CASCADE"),
)

FTS_TABLE: Final = "traces_fts"
FTS_COLUMNS: Final[tuple[str, ...]] = ("id", "title", "body", "tags")
FTS_UNINDEXED: Final[tuple[str, ...]] = ("id",)
FTS_TOKENIZE: Final = "porter ascii"

VIEW_COLUMNS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {"v_derived_from_count": ("trace_id", "n")}
)

# The trigger texts are written exactly as SQLite stores them in sqlite_master (no IF NOT EXISTS, no trailing
# semicolon) and byte-for-byte as a Go-migrated database holds them: noema's purge paths DROP these triggers
# inside their transaction and re-CREATE them from the stored text, so the stored text is itself the contract.
# The update trigger is migration 013's: it fires only while the row stays long and guards content and
# identity; visibility (archived_at, trashed_at), demotion, counters, votes and the purge tombstone pass.
LONG_TERM_IMMUTABLE_TRIGGER: Final = "trg_long_term_immutable"
LONG_TERM_IMMUTABLE_TRIGGER_SQL: Final = (
    "CREATE TRIGGER trg_long_term_immutable\n"
    "BEFORE UPDATE ON traces\n"
    "WHEN OLD.tier = 'long' AND NEW.tier = 'long'\n"
    "  AND (OLD.title IS NOT NEW.title\n"
    "   OR OLD.type IS NOT NEW.type\n"
    "   OR OLD.author IS NOT NEW.author\n"
    "   OR OLD.origin IS NOT NEW.origin\n"
    "   OR OLD.cortex_id IS NOT NEW.cortex_id\n"
    "   OR OLD.content_hash IS NOT NEW.content_hash\n"
    "   OR OLD.source_locked IS NOT NEW.source_locked\n"
    "   OR OLD.source_hash IS NOT NEW.source_hash\n"
    "   OR OLD.created_at IS NOT NEW.created_at\n"
    "   OR OLD.updated_at IS NOT NEW.updated_at)\n"
    "BEGIN\n"
    "    SELECT RAISE(ABORT, 'long-term trace is immutable');\n"
    "END"
)
LONG_TERM_NO_DELETE_TRIGGER: Final = "trg_long_term_no_delete"
LONG_TERM_NO_DELETE_TRIGGER_SQL: Final = (
    "CREATE TRIGGER trg_long_term_no_delete\n"
    "BEFORE DELETE ON traces\n"
    "WHEN OLD.tier = 'long'\n"
    "BEGIN\n"
    "    SELECT RAISE(ABORT, 'long-term trace is immutable');\n"
    "END"
)
TRIGGER_SQL: Final[Mapping[str, str]] = MappingProxyType(
    {
        LONG_TERM_IMMUTABLE_TRIGGER: LONG_TERM_IMMUTABLE_TRIGGER_SQL,
        LONG_TERM_NO_DELETE_TRIGGER: LONG_TERM_NO_DELETE_TRIGGER_SQL,
    }
)

# Creation order follows the order in which the migrations first made each object, so sqlite_master lists
# them as it would in a Go-made file.
_DDL: Final[tuple[str, ...]] = (
    "CREATE TABLE schema_migrations (\n    version INTEGER NOT NULL PRIMARY KEY\n)",
    """CREATE TABLE traces (
    id            TEXT NOT NULL PRIMARY KEY,
    title         TEXT NOT NULL,
    type          TEXT NOT NULL,
    author        TEXT,
    archived_at   TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    trashed_at    TEXT,
    origin        TEXT NOT NULL DEFAULT '',
    cortex_id     TEXT NOT NULL DEFAULT '',
    content_hash  TEXT,
    source_locked INTEGER NOT NULL DEFAULT 0,
    source_hash   TEXT,
    tier          TEXT NOT NULL DEFAULT 'short' CHECK (tier IN ('short', 'mid', 'long')),
    read_count    INTEGER NOT NULL DEFAULT 0,
    modify_count  INTEGER NOT NULL DEFAULT 0,
    last_read_at  TEXT,
    tier_votes    INTEGER NOT NULL DEFAULT 0,
    purged_at     TEXT,
    purge_reason  TEXT
)""",
    """CREATE TABLE trace_tags (
    trace_id TEXT NOT NULL REFERENCES traces(id) ON DELETE CASCADE,
    tag      TEXT NOT NULL,
    PRIMARY KEY (trace_id, tag)
)""",
    """CREATE TABLE events (
    id        TEXT NOT NULL PRIMARY KEY,
    action    TEXT NOT NULL,
    trace_id  TEXT NOT NULL,
    origin    TEXT NOT NULL DEFAULT '',
    timestamp TEXT NOT NULL,
    data      TEXT NOT NULL DEFAULT '{}',
    vclock    TEXT NOT NULL DEFAULT '{}',
    cortex_id TEXT NOT NULL DEFAULT '',
    signature TEXT NOT NULL DEFAULT '',
    pubkey    TEXT NOT NULL DEFAULT ''
)""",
    "CREATE INDEX idx_events_trace_id ON events(trace_id)",
    "CREATE INDEX idx_events_timestamp ON events(timestamp)",
    """CREATE TABLE trace_lineage (
    trace_id     TEXT NOT NULL REFERENCES traces(id) ON DELETE CASCADE,
    derived_from TEXT NOT NULL,
    PRIMARY KEY (trace_id, derived_from)
)""",
    """CREATE TABLE federation_state (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
)""",
    "CREATE INDEX idx_traces_cortex_id ON traces(cortex_id)",
    "CREATE INDEX idx_events_cortex_id ON events(cortex_id)",
    # Stores its own copy of the text and has no key: writers delete the id's rows, then insert one.
    """CREATE VIRTUAL TABLE traces_fts USING fts5(
    id      UNINDEXED,
    title,
    body,
    tags,
    tokenize = 'porter ascii'
)""",
    "CREATE INDEX idx_traces_tier ON traces(tier)",
    "CREATE INDEX idx_traces_short_promotable\n    ON traces(last_read_at) WHERE tier = 'short'",
    LONG_TERM_IMMUTABLE_TRIGGER_SQL,
    LONG_TERM_NO_DELETE_TRIGGER_SQL,
    """CREATE VIEW v_derived_from_count AS
    SELECT derived_from AS trace_id, COUNT(*) AS n
    FROM trace_lineage
    GROUP BY derived_from""",
    """CREATE TABLE trace_usage (
    trace_id         TEXT NOT NULL,
    peer_cortex_id   TEXT NOT NULL,
    read_count       INTEGER NOT NULL DEFAULT 0,
    modify_count     INTEGER NOT NULL DEFAULT 0,
    last_read_at     TEXT,
    updated_at       TEXT NOT NULL,
    search_hit_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (trace_id, peer_cortex_id),
    FOREIGN KEY (trace_id) REFERENCES traces(id) ON DELETE CASCADE
)""",
    "CREATE INDEX idx_trace_usage_updated ON trace_usage(updated_at)",
    "CREATE INDEX idx_trace_usage_trace ON trace_usage(trace_id)",
    """CREATE TABLE trace_embeddings (
    trace_id        TEXT    NOT NULL PRIMARY KEY,
    embedding_model TEXT    NOT NULL,
    dim             INTEGER NOT NULL,
    embedding       BLOB    NOT NULL,
    source_hash     TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL,
    FOREIGN KEY (trace_id) REFERENCES traces(id) ON DELETE CASCADE
)""",
    "CREATE INDEX idx_trace_embeddings_model ON trace_embeddings(embedding_model)",
)


def create_schema(conn: sqlite3.Connection) -> None:
    """Give an empty database noema's version-19 schema in one transaction, so Go finds nothing to migrate.

    Journal mode and foreign_keys are per-connection settings the caller chooses; they cannot change inside
    the transaction this function opens.
    """
    if conn.in_transaction:
        # A caller's open transaction would swallow ours, and a later rollback of theirs would leave a
        # half-made schema that Go would then "migrate" on top of.
        raise CommandError("cannot create the noema schema inside an open transaction")
    conn.execute("BEGIN IMMEDIATE")
    try:
        (objects,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if objects:
            raise CommandError(
                f"the database is not empty: it already holds {objects} schema object(s)",
                hint="noemafed init only creates a new cortex; use an empty directory",
            )
        for statement in _DDL:
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO schema_migrations (version) VALUES (?)", [(v,) for v in MIGRATION_VERSIONS]
        )
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
