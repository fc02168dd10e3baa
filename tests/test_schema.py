"""create_schema makes the database noema's migrations 001..019 would: checked against cortex.md §3 itself."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from noemafed.cortex import open as open_module
from noemafed.cortex import schema
from noemafed.errors import CommandError

IMMUTABLE = "long-term trace is immutable"

# Written out from cortex.md §3 (not imported from schema.py): (name, type, notnull, dflt_value, pk) as
# PRAGMA table_xinfo reports them.
SPEC_COLUMNS: dict[str, list[tuple[str, str, int, str | None, int]]] = {
    "schema_migrations": [("version", "INTEGER", 1, None, 1)],
    "traces": [
        ("id", "TEXT", 1, None, 1),
        ("title", "TEXT", 1, None, 0),
        ("type", "TEXT", 1, None, 0),
        ("author", "TEXT", 0, None, 0),
        ("archived_at", "TEXT", 0, None, 0),
        ("created_at", "TEXT", 1, None, 0),
        ("updated_at", "TEXT", 1, None, 0),
        ("trashed_at", "TEXT", 0, None, 0),
        ("origin", "TEXT", 1, "''", 0),
        ("cortex_id", "TEXT", 1, "''", 0),
        ("content_hash", "TEXT", 0, None, 0),
        ("source_locked", "INTEGER", 1, "0", 0),
        ("source_hash", "TEXT", 0, None, 0),
        ("tier", "TEXT", 1, "'short'", 0),
        ("read_count", "INTEGER", 1, "0", 0),
        ("modify_count", "INTEGER", 1, "0", 0),
        ("last_read_at", "TEXT", 0, None, 0),
        ("tier_votes", "INTEGER", 1, "0", 0),
        ("purged_at", "TEXT", 0, None, 0),
        ("purge_reason", "TEXT", 0, None, 0),
    ],
    "trace_tags": [("trace_id", "TEXT", 1, None, 1), ("tag", "TEXT", 1, None, 2)],
    "trace_lineage": [("trace_id", "TEXT", 1, None, 1), ("derived_from", "TEXT", 1, None, 2)],
    "events": [
        ("id", "TEXT", 1, None, 1),
        ("action", "TEXT", 1, None, 0),
        ("trace_id", "TEXT", 1, None, 0),
        ("origin", "TEXT", 1, "''", 0),
        ("timestamp", "TEXT", 1, None, 0),
        ("data", "TEXT", 1, "'{}'", 0),
        ("vclock", "TEXT", 1, "'{}'", 0),
        ("cortex_id", "TEXT", 1, "''", 0),
        ("signature", "TEXT", 1, "''", 0),
        ("pubkey", "TEXT", 1, "''", 0),
    ],
    "federation_state": [("key", "TEXT", 1, None, 1), ("value", "TEXT", 1, None, 0)],
    "trace_usage": [
        ("trace_id", "TEXT", 1, None, 1),
        ("peer_cortex_id", "TEXT", 1, None, 2),
        ("read_count", "INTEGER", 1, "0", 0),
        ("modify_count", "INTEGER", 1, "0", 0),
        ("last_read_at", "TEXT", 0, None, 0),
        ("updated_at", "TEXT", 1, None, 0),
        ("search_hit_count", "INTEGER", 1, "0", 0),
    ],
    # The spec names this table without columns; these are migration 016's (noema internal/db/migrations).
    "trace_embeddings": [
        ("trace_id", "TEXT", 1, None, 1),
        ("embedding_model", "TEXT", 1, None, 0),
        ("dim", "INTEGER", 1, None, 0),
        ("embedding", "BLOB", 1, None, 0),
        ("source_hash", "TEXT", 1, None, 0),
        ("updated_at", "TEXT", 1, None, 0),
    ],
}

# Named indexes: name -> (table, columns, WHERE of a partial index). trace_usage's two are named in the spec
# only by column; the names are noema's.
SPEC_INDEXES: dict[str, tuple[str, list[str], str | None]] = {
    "idx_traces_cortex_id": ("traces", ["cortex_id"], None),
    "idx_traces_tier": ("traces", ["tier"], None),
    "idx_traces_short_promotable": ("traces", ["last_read_at"], "tier = 'short'"),
    "idx_events_trace_id": ("events", ["trace_id"], None),
    "idx_events_timestamp": ("events", ["timestamp"], None),
    "idx_events_cortex_id": ("events", ["cortex_id"], None),
    "idx_trace_usage_updated": ("trace_usage", ["updated_at"], None),
    "idx_trace_usage_trace": ("trace_usage", ["trace_id"], None),
    "idx_trace_embeddings_model": ("trace_embeddings", ["embedding_model"], None),
}

GUARDED = [
    ("title", "'edited'"),
    ("type", "'fact'"),
    ("author", "'someone-else'"),
    ("origin", "'elsewhere'"),
    ("cortex_id", "'01JQ7X2B9C4D5E6F7G8H9JKMNQ'"),
    ("content_hash", "'sha256:ffff'"),
    ("source_locked", "1"),
    ("source_hash", "'sha256:eeee'"),
    ("created_at", "'2025-01-01T00:00:00Z'"),
    ("updated_at", "'2025-01-02T00:00:00Z'"),
]
PERMITTED = [
    ("archived_at", "'2025-03-30T00:00:00Z'"),
    ("trashed_at", "'2025-03-30T00:00:00Z'"),
    ("read_count", "read_count + 1"),
    ("modify_count", "modify_count + 1"),
    ("last_read_at", "'2025-03-30T00:00:00Z'"),
    ("tier_votes", "tier_votes - 1"),
    ("purged_at", "'2025-03-30T00:00:00Z'"),
    ("purge_reason", "'gdpr'"),
]


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "cortex" / "db" / "noema.db"
    path.parent.mkdir(parents=True)
    conn = _connect(path)
    schema.create_schema(conn)
    conn.close()
    return path


@pytest.fixture
def conn(db_path: Path):
    # A second connection: everything checked below was committed to the file, not held by the creator.
    c = _connect(db_path)
    yield c
    c.close()


def _insert_trace(conn: sqlite3.Connection, trace_id: str, tier: str = "short") -> None:
    conn.execute(
        "INSERT INTO traces (id, title, type, author, created_at, updated_at, content_hash, tier)"
        " VALUES (?, 'A title', 'note', '', '2025-03-29T14:23:00Z', '2025-03-29T14:23:00Z', 'sha256:aa', ?)",
        (trace_id, tier),
    )


def _sql(conn: sqlite3.Connection, name: str) -> str:
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    return str(sql)


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# ---- tables and columns ----


def test_exactly_the_spec_objects_exist(conn: sqlite3.Connection) -> None:
    rows = conn.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
    tables = {n for t, n in rows if t == "table" and not n.startswith("traces_fts_")}
    assert tables == set(SPEC_COLUMNS) | {"traces_fts"}
    assert {n for t, n in rows if t == "view"} == {"v_derived_from_count"}
    assert {n for t, n in rows if t == "trigger"} == {"trg_long_term_immutable", "trg_long_term_no_delete"}
    assert {n for t, n in rows if t == "index"} == set(SPEC_INDEXES)


@pytest.mark.parametrize("table", sorted(SPEC_COLUMNS))
def test_table_columns_match_spec(conn: sqlite3.Connection, table: str) -> None:
    rows = conn.execute(f"PRAGMA table_xinfo({table})").fetchall()
    assert [r[1:6] for r in rows] == SPEC_COLUMNS[table]
    assert all(r[6] == 0 for r in rows)  # no hidden or generated columns


def test_schema_module_shape_matches_the_database(conn: sqlite3.Connection) -> None:
    # Drift guard: the constants other modules validate against describe what create_schema really made.
    for table, columns in schema.TABLE_COLUMNS.items():
        got = [schema.Column(*r[1:6]) for r in conn.execute(f"PRAGMA table_xinfo({table})")]
        assert got == list(columns), table
    for name, index in schema.INDEXES.items():
        cols = tuple(r[2] for r in conn.execute(f"PRAGMA index_info({name})"))
        assert (
            conn.execute("SELECT tbl_name FROM sqlite_master WHERE name=?", (name,)).fetchone()[0],
            cols,
        ) == (
            index.table,
            index.columns,
        )
    fks = {
        schema.ForeignKey(table, r[3], r[2], r[4], r[6])
        for table in schema.TABLE_COLUMNS
        for r in conn.execute(f"PRAGMA foreign_key_list({table})")
    }
    assert fks == set(schema.FOREIGN_KEYS)
    for name, sql in schema.TRIGGER_SQL.items():
        assert _sql(conn, name) == sql
    fts = [r[1] for r in conn.execute(f"PRAGMA table_xinfo({schema.FTS_TABLE})") if r[6] == 0]
    assert tuple(fts) == schema.FTS_COLUMNS
    for view, columns in schema.VIEW_COLUMNS.items():
        assert tuple(r[1] for r in conn.execute(f"PRAGMA table_info({view})")) == columns


def test_defaults_fill_a_minimal_trace_and_event(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO traces (id, title, type, created_at, updated_at) VALUES ('t', 'T', 'note', 'c', 'u')"
    )
    row = conn.execute(
        "SELECT origin, cortex_id, source_locked, tier, read_count, modify_count, tier_votes, author,"
        " archived_at, trashed_at FROM traces"
    ).fetchone()
    assert row == ("", "", 0, "short", 0, 0, 0, None, None, None)
    conn.execute("INSERT INTO events (id, action, trace_id, timestamp) VALUES ('e', 'create', 't', 'ts')")
    assert conn.execute(
        "SELECT origin, data, vclock, cortex_id, signature, pubkey FROM events"
    ).fetchone() == (
        "",
        "{}",
        "{}",
        "",
        "",
        "",
    )


def test_tier_check_rejects_unknown_tier(conn: sqlite3.Connection) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
        _insert_trace(conn, "bogus-tier", tier="bogus")
    for tier in ("short", "mid", "long"):
        _insert_trace(conn, f"t-{tier}", tier=tier)
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
        conn.execute("UPDATE traces SET tier = 'archived' WHERE id = 't-short'")


# ---- foreign keys ----


@pytest.mark.parametrize("table", ["trace_tags", "trace_lineage", "trace_usage", "trace_embeddings"])
def test_foreign_key_cascades_from_traces(conn: sqlite3.Connection, table: str) -> None:
    rows = conn.execute(f"PRAGMA foreign_key_list({table})").fetchall()
    # (id, seq, table, from, to, on_update, on_delete, match)
    assert [r[2:7] for r in rows] == [("traces", "trace_id", "id", "NO ACTION", "CASCADE")]


@pytest.mark.parametrize("table", ["traces", "events", "federation_state", "schema_migrations"])
def test_tables_without_foreign_keys(conn: sqlite3.Connection, table: str) -> None:
    # events.trace_id and trace_lineage.derived_from deliberately reference nothing.
    assert conn.execute(f"PRAGMA foreign_key_list({table})").fetchall() == []


def test_insert_for_unknown_trace_fails_with_foreign_keys_on(conn: sqlite3.Connection) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        conn.execute(
            "INSERT INTO trace_usage (trace_id, peer_cortex_id, updated_at) VALUES ('nope', 'p', 'now')"
        )


def test_deleting_a_trace_cascades_but_not_into_fts(conn: sqlite3.Connection) -> None:
    _insert_trace(conn, "parent")
    _insert_trace(conn, "child")
    conn.execute("INSERT INTO trace_tags VALUES ('child', 'go'), ('child', 'db')")
    conn.execute("INSERT INTO trace_lineage VALUES ('child', 'parent'), ('child', 'ghost')")
    conn.execute(
        "INSERT INTO trace_usage (trace_id, peer_cortex_id, updated_at) VALUES ('child', 'p', 'now')"
    )
    conn.execute(
        "INSERT INTO trace_embeddings VALUES ('child', 'm', 3, x'00', 'sha256:aa', '2025-03-29T14:23:00Z')"
    )
    conn.execute(
        "INSERT INTO traces_fts (id, title, body, tags) VALUES ('child', 'A title', 'body', 'go db')"
    )
    conn.execute("DELETE FROM traces WHERE id = 'child'")
    for table in ("trace_tags", "trace_lineage", "trace_usage", "trace_embeddings"):
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
    assert conn.execute("SELECT id FROM traces_fts").fetchall() == [("child",)]


def test_deleting_a_parent_keeps_lineage_rows_that_name_it(conn: sqlite3.Connection) -> None:
    _insert_trace(conn, "parent")
    _insert_trace(conn, "child")
    conn.execute("INSERT INTO trace_lineage VALUES ('child', 'parent')")
    conn.execute("DELETE FROM traces WHERE id = 'parent'")
    assert conn.execute("SELECT * FROM trace_lineage").fetchall() == [("child", "parent")]


# ---- indexes ----


@pytest.mark.parametrize("name", sorted(SPEC_INDEXES))
def test_named_index(conn: sqlite3.Connection, name: str) -> None:
    table, columns, where = SPEC_INDEXES[name]
    listed = {r[1]: r for r in conn.execute(f"PRAGMA index_list({table})")}
    # (seq, name, unique, origin, partial)
    assert listed[name][2:] == (0, "c", int(where is not None))
    assert [r[2] for r in conn.execute(f"PRAGMA index_info({name})")] == columns
    sql = _squash(_sql(conn, name))
    if where is None:
        assert "WHERE" not in sql
    else:
        assert sql.endswith(f"WHERE {where}")


def test_partial_index_covers_only_short_rows(conn: sqlite3.Connection) -> None:
    # INDEXED BY fails with "no query solution" unless the query's WHERE implies the index's WHERE.
    # Literals, not parameters: the planner proves the implication only from constants.
    query = (
        "SELECT id FROM traces INDEXED BY idx_traces_short_promotable"
        " WHERE tier = '{tier}' AND last_read_at < '2025'"
    )
    _insert_trace(conn, "s", tier="short")
    conn.execute("UPDATE traces SET last_read_at = '2024-12-31T00:00:00Z'")
    assert conn.execute(query.format(tier="short")).fetchall() == [("s",)]
    with pytest.raises(sqlite3.OperationalError, match="no query solution"):
        conn.execute(query.format(tier="mid"))


# ---- full-text index ----


def test_fts_columns_and_options(conn: sqlite3.Connection) -> None:
    visible = [r[1] for r in conn.execute("PRAGMA table_xinfo(traces_fts)") if r[6] == 0]
    assert visible == ["id", "title", "body", "tags"]
    sql = _squash(_sql(conn, "traces_fts"))
    assert sql.startswith("CREATE VIRTUAL TABLE traces_fts USING fts5(")
    assert "id UNINDEXED," in sql
    assert re.search(r"tokenize\s*=\s*'porter ascii'", sql)


def test_fts_tokenizer_is_porter_over_ascii(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO traces_fts (id, title, body, tags) VALUES (?, 'Running notes', 'café', 'x')",
        ("20250329-alpha",),
    )

    def hits(query: str) -> list[str]:
        return [r[0] for r in conn.execute("SELECT id FROM traces_fts WHERE traces_fts MATCH ?", (query,))]

    assert hits("run") == ["20250329-alpha"]  # porter stems "running"
    assert hits("tags:x") == ["20250329-alpha"]
    assert hits("cafe") == []  # ascii keeps "é" as a token byte; unicode61 would fold it to "cafe"
    assert hits("alpha") == []  # id is UNINDEXED


# ---- view ----


def test_derived_from_count_view(conn: sqlite3.Connection) -> None:
    assert [r[1] for r in conn.execute("PRAGMA table_info(v_derived_from_count)")] == ["trace_id", "n"]
    for trace_id in ("root", "a", "b"):
        _insert_trace(conn, trace_id)
    conn.execute("INSERT INTO trace_lineage VALUES ('a', 'root'), ('b', 'root'), ('b', 'a'), ('b', 'gone')")
    rows = conn.execute("SELECT trace_id, n FROM v_derived_from_count ORDER BY trace_id").fetchall()
    assert rows == [("a", 1), ("gone", 1), ("root", 2)]


# ---- long-term triggers ----


def test_triggers_are_on_traces_and_named_exactly(conn: sqlite3.Connection) -> None:
    rows = conn.execute(
        "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
    ).fetchall()
    assert rows == [("trg_long_term_immutable", "traces"), ("trg_long_term_no_delete", "traces")]


@pytest.mark.parametrize(("column", "value"), GUARDED)
def test_long_row_content_is_immutable(conn: sqlite3.Connection, column: str, value: str) -> None:
    _insert_trace(conn, "stone", tier="long")
    with pytest.raises(sqlite3.IntegrityError, match=f"^{IMMUTABLE}$"):
        conn.execute(f"UPDATE traces SET {column} = {value} WHERE id = 'stone'")


def test_guard_compares_with_is_not_so_null_changes_count(conn: sqlite3.Connection) -> None:
    _insert_trace(conn, "stone", tier="long")
    conn.execute("UPDATE traces SET source_hash = NULL WHERE id = 'stone'")  # NULL -> NULL: no change
    conn.execute("UPDATE traces SET title = title, author = author WHERE id = 'stone'")  # same values pass
    with pytest.raises(sqlite3.IntegrityError, match=f"^{IMMUTABLE}$"):
        conn.execute("UPDATE traces SET content_hash = NULL WHERE id = 'stone'")  # value -> NULL
    with pytest.raises(sqlite3.IntegrityError, match=f"^{IMMUTABLE}$"):
        conn.execute("UPDATE traces SET source_hash = 'sha256:bb' WHERE id = 'stone'")  # NULL -> value


@pytest.mark.parametrize(("column", "value"), PERMITTED)
def test_long_row_visibility_counters_and_tombstone_may_change(
    conn: sqlite3.Connection, column: str, value: str
) -> None:
    _insert_trace(conn, "stone", tier="long")
    conn.execute(f"UPDATE traces SET {column} = {value} WHERE id = 'stone'")
    assert conn.execute("SELECT tier FROM traces WHERE id = 'stone'").fetchone() == ("long",)


def test_long_row_may_be_demoted_even_with_content(conn: sqlite3.Connection) -> None:
    # NEW.tier is no longer 'long', so the guard does not fire (the demotion escape hatch).
    _insert_trace(conn, "stone", tier="long")
    conn.execute("UPDATE traces SET tier = 'mid', title = 'rewritten' WHERE id = 'stone'")
    assert conn.execute("SELECT tier, title FROM traces WHERE id = 'stone'").fetchone() == (
        "mid",
        "rewritten",
    )


def test_promotion_to_long_with_content_change_passes(conn: sqlite3.Connection) -> None:
    _insert_trace(conn, "rising", tier="mid")
    conn.execute("UPDATE traces SET tier = 'long', title = 'final words' WHERE id = 'rising'")
    assert conn.execute("SELECT tier, title FROM traces WHERE id = 'rising'").fetchone() == (
        "long",
        "final words",
    )


def test_long_row_cannot_be_deleted(conn: sqlite3.Connection) -> None:
    _insert_trace(conn, "stone", tier="long")
    with pytest.raises(sqlite3.IntegrityError, match=f"^{IMMUTABLE}$"):
        conn.execute("DELETE FROM traces WHERE id = 'stone'")
    assert conn.execute("SELECT count(*) FROM traces").fetchone() == (1,)


@pytest.mark.parametrize("tier", ["short", "mid"])
def test_non_long_rows_are_free(conn: sqlite3.Connection, tier: str) -> None:
    _insert_trace(conn, "flex", tier=tier)
    for column, value in GUARDED:
        conn.execute(f"UPDATE traces SET {column} = {value} WHERE id = 'flex'")
    conn.execute("DELETE FROM traces WHERE id = 'flex'")
    assert conn.execute("SELECT count(*) FROM traces").fetchone() == (0,)


def test_purge_path_recreates_triggers_from_sqlite_master(db_path: Path) -> None:
    # What noema's purge paths do: read both trigger texts, drop them inside the transaction, delete the long
    # row, then execute the stored texts to put the triggers back.
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    _insert_trace(conn, "stone", tier="long")
    conn.execute("INSERT INTO trace_tags VALUES ('stone', 'keep')")
    before = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall())
    conn.execute("BEGIN")
    conn.execute("DROP TRIGGER IF EXISTS trg_long_term_immutable")
    conn.execute("DROP TRIGGER IF EXISTS trg_long_term_no_delete")
    conn.execute("DELETE FROM traces WHERE id = 'stone'")
    for name in ("trg_long_term_immutable", "trg_long_term_no_delete"):
        conn.execute(before[name])
    conn.execute("COMMIT")
    after = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall())
    assert after == before
    assert conn.execute("SELECT count(*) FROM trace_tags").fetchone() == (0,)
    _insert_trace(conn, "stone2", tier="long")
    with pytest.raises(sqlite3.IntegrityError, match=f"^{IMMUTABLE}$"):
        conn.execute("DELETE FROM traces WHERE id = 'stone2'")
    conn.close()


# ---- migrations bookkeeping and integrity ----


def test_schema_migrations_records_1_to_19(conn: sqlite3.Connection) -> None:
    versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == list(schema.MIGRATION_VERSIONS)
    assert versions == list(range(1, 20))
    assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone() == (19,)
    assert schema.SCHEMA_VERSION == open_module.MIN_SCHEMA_VERSION == 19


def test_integrity_and_foreign_key_checks_are_clean(conn: sqlite3.Connection) -> None:
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_create_schema_refuses_a_migrated_database(conn: sqlite3.Connection) -> None:
    before = conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
    with pytest.raises(CommandError, match="not empty"):
        schema.create_schema(conn)
    assert not conn.in_transaction
    assert conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall() == before


def test_create_schema_refuses_a_database_with_any_object(tmp_path: Path) -> None:
    conn = _connect(tmp_path / "other.db")
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    with pytest.raises(CommandError, match="not empty"):
        schema.create_schema(conn)
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("notes",)]
    conn.close()


def test_create_schema_refuses_an_open_transaction(tmp_path: Path) -> None:
    conn = _connect(tmp_path / "busy.db")
    conn.execute("BEGIN")
    with pytest.raises(CommandError, match="open transaction"):
        schema.create_schema(conn)
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
    conn.close()


def test_create_schema_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "_DDL", (*schema._DDL, "CREATE TABLE broken ("))
    conn = _connect(tmp_path / "half.db")
    with pytest.raises(sqlite3.OperationalError):
        schema.create_schema(conn)
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
    conn.close()


def test_create_schema_works_in_autocommit_mode(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "auto.db", isolation_level=None)
    schema.create_schema(conn)
    conn.close()
    reopened = sqlite3.connect(tmp_path / "auto.db")
    assert reopened.execute("SELECT count(*) FROM schema_migrations").fetchone() == (19,)
    reopened.close()
