"""Finding a cortex, creating one with `init`, and refusing to open what noema would refuse."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import jsonschema
import pytest
from conftest import REPO, db, make_cortex, put_state, run_cli

from noemafed.cortex.manifest import read_manifest
from noemafed.cortex.open import open_cortex, open_database, resolve_cortex
from noemafed.errors import CortexNotFoundError, CortexUnavailableError, NoemafedError


def _registry(home: Path, text: str) -> None:
    config = home / ".config" / "noema"
    config.mkdir(parents=True, exist_ok=True)
    (config / "config.yaml").write_text(text)


# ---- resolution -----------------------------------------------------------------------------------


def test_resolution_order(tmp_path: Path, isolated_env: Path) -> None:
    a = make_cortex(tmp_path, "a")
    b = make_cortex(tmp_path, "b")
    c = make_cortex(tmp_path, "c")
    d = make_cortex(tmp_path, "d")
    _registry(isolated_env, f"default: c\ncortexes:\n    b:\n        path: {b}\n    c:\n        path: {c}\n")
    env = {"HOME": str(isolated_env), "XDG_CONFIG_HOME": str(isolated_env / ".config")}
    assert resolve_cortex(str(a), env, d) == a.resolve()
    assert resolve_cortex("b", env, d) == b.resolve()
    assert resolve_cortex(None, {**env, "NOEMA_CORTEX": "b"}, d) == b.resolve()
    assert resolve_cortex(None, {**env, "NOEMA_CORTEX": str(a)}, d) == a.resolve()
    assert resolve_cortex(None, env, d) == c.resolve()
    _registry(isolated_env, "cortexes: {}\n")
    assert resolve_cortex(None, env, d) == d.resolve()


def test_single_registered_cortex_is_promoted_to_default(tmp_path: Path, isolated_env: Path) -> None:
    b = make_cortex(tmp_path, "b")
    _registry(isolated_env, f"cortexes:\n  b:\n    path: {b}\n    id: 01JQ7X2B9C4D5E6F7G8H9JKMNP\n")
    env = {"XDG_CONFIG_HOME": str(isolated_env / ".config")}
    assert resolve_cortex(None, env, tmp_path) == b.resolve()


def test_a_miss_says_what_it_tried(tmp_path: Path, isolated_env: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(isolated_env / ".config"), "NOEMA_CORTEX": "ghost"}
    with pytest.raises(CortexNotFoundError) as err:
        resolve_cortex(None, env, tmp_path)
    text = str(err.value)
    assert "--cortex (not given)" in text
    assert "NOEMA_CORTEX='ghost' (no such cortex)" in text
    assert f"registry {isolated_env / '.config' / 'noema' / 'config.yaml'} (no cortexes)" in text
    assert f"current directory {tmp_path} (no cortex.md)" in text
    result = run_cli(["--cortex", str(tmp_path / "nope"), "status"])
    assert result.exit_code == 66
    assert result.stderr.startswith("Error: no cortex at --cortex ")
    assert "Hint: " in result.stderr


# ---- init -----------------------------------------------------------------------------------------


def test_init_creates_noemas_layout(tmp_path: Path) -> None:
    target = tmp_path / "research"
    result = run_cli(["init", str(target), "--name", "research"])
    assert result.exit_code == 0, result.stderr
    manifest = read_manifest(target)
    assert result.stdout == f'Initialized cortex "research" ({manifest.id}) at {target}\n'
    for folder in ("traces", "archive/traces", "trash/traces", "db"):
        assert (target / folder).is_dir()
    assert (target / "AGENTS.md").is_file()
    assert not (target / ".noema").exists()
    assert len(manifest.id) == 26
    assert manifest.version == 2
    assert manifest.name == "research"
    text = (target / "cortex.md").read_text()
    assert text == (
        f'---\nid: {manifest.id}\nname: research\ncreated: "{manifest.created}"\nversion: 2\n---\n'
    )
    conn = db(target)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == 19
    conn.close()


def test_init_defaults_name_to_directory_and_refuses_existing(tmp_path: Path) -> None:
    target = tmp_path / "notes"
    assert run_cli(["init", str(target)]).exit_code == 0
    assert read_manifest(target).name == "notes"
    before = (target / "cortex.md").read_bytes()
    again = run_cli(["init", str(target), "--name", "other"])
    assert again.exit_code == 1
    assert again.stderr.startswith(f"Error: {target} already holds a cortex")
    assert (target / "cortex.md").read_bytes() == before


def test_init_into_existing_empty_directory(tmp_path: Path) -> None:
    assert run_cli(["init", str(tmp_path), "--name", "here"]).exit_code == 0
    assert read_manifest(tmp_path).name == "here"


def test_status_json_of_a_fresh_cortex_validates(tmp_path: Path) -> None:
    target = tmp_path / "c"
    assert run_cli(["init", str(target), "--name", "alpha"]).exit_code == 0
    result = run_cli(["--cortex", str(target), "status", "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    schema = json.loads((REPO / "docs" / "status.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert doc["cortex"]["name"] == "alpha"
    assert doc["peers"] == []
    assert doc["access"] == {"mode": "open", "source": None, "fingerprint": None, "error": None}


# ---- opening the database -------------------------------------------------------------------------


def test_open_sets_noemas_pragmas(tmp_path: Path) -> None:
    cortex = open_cortex(make_cortex(tmp_path))
    conn = cortex.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    cortex.close()


def test_refuses_an_old_schema_and_never_migrates(tmp_path: Path) -> None:
    path = make_cortex(tmp_path)
    conn = db(path)
    conn.execute("DELETE FROM schema_migrations WHERE version > 17")
    conn.close()
    with pytest.raises(CortexUnavailableError) as err:
        open_database(path)
    assert "schema migration 17; noemafed needs 19 or newer" in str(err.value)
    conn = db(path)
    assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == 17
    conn.close()
    result = run_cli(["--cortex", str(path), "status"])
    assert result.exit_code == 69


def test_opening_a_cortex_never_purges_old_trash(tmp_path: Path) -> None:
    """cortex.md §9.11: Go purges trash older than `trash_days` (30) on every open and emits `purge` events."""
    import authoring

    path = make_cortex(tmp_path)
    cortex = open_cortex(path)
    trace_id, _ = authoring.create_trace(
        cortex, "Old news", "note", "gone soon\n", now="2000-01-01T00:00:00Z"
    )
    authoring.trash(cortex, trace_id, now="2000-01-02T00:00:00Z")
    cortex.close()
    conn = db(path)
    before = conn.execute("SELECT id, action FROM events ORDER BY id").fetchall()
    conn.close()
    assert run_cli(["--cortex", str(path), "status"]).exit_code == 0
    open_cortex(path).close()
    conn = db(path)
    assert conn.execute("SELECT trashed_at FROM traces WHERE id = ?", (trace_id,)).fetchall() == [
        ("2000-01-02T00:00:00Z",)
    ]
    assert conn.execute("SELECT id, action FROM events ORDER BY id").fetchall() == before
    conn.close()
    assert (path / "trash" / "traces" / f"{trace_id}.md").is_file()


def test_refuses_pending_rust_mutations(tmp_path: Path) -> None:
    path = make_cortex(tmp_path)
    put_state(path, **{"rust_pending_mutation:01ABC": "{}"})
    with pytest.raises(CortexUnavailableError) as err:
        open_database(path)
    assert "interrupted Rust trace mutation" in str(err.value)


def test_ignores_keys_that_merely_resemble_the_rust_prefix(tmp_path: Path) -> None:
    path = make_cortex(tmp_path)
    put_state(path, **{"rust_pending_mutation": "x", "rust_pending_mutatioN:x": "y"})
    open_database(path).close()


def test_refuses_a_storage_migration_in_progress(tmp_path: Path) -> None:
    path = make_cortex(tmp_path)
    (path / ".noema-storage-migration.json").write_text("{}")
    with pytest.raises(CortexUnavailableError) as err:
        open_database(path)
    assert "storage migration" in str(err.value)


def test_nosync_storage_uses_db_nosync(tmp_path: Path) -> None:
    path = make_cortex(tmp_path)
    os.rename(path / "db", path / "db.nosync")
    (path / "db").mkdir()
    (path / "db" / "noema.db").write_bytes(b"compatibility guard, not a database")
    (path / "storage.yaml").write_text("database: nosync\n")
    conn = open_database(path)
    assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == 19
    conn.close()
    (path / "storage.yaml").write_text("database: default\n")
    with pytest.raises(CortexUnavailableError):
        open_database(path)


def test_missing_database_is_not_created(tmp_path: Path) -> None:
    path = make_cortex(tmp_path)
    (path / "db" / "noema.db").unlink()
    with pytest.raises(CortexUnavailableError):
        open_database(path)
    assert not (path / "db" / "noema.db").exists()


def test_not_a_database(tmp_path: Path) -> None:
    path = make_cortex(tmp_path)
    for suffix in ("", "-wal", "-shm"):
        (path / "db" / f"noema.db{suffix}").unlink(missing_ok=True)
    (path / "db" / "noema.db").write_bytes(b"x" * 4096)
    with pytest.raises(NoemafedError):
        open_database(path)


def test_sqlite_errors_are_not_leaked_as_tracebacks(tmp_path: Path) -> None:
    path = make_cortex(tmp_path)
    conn = sqlite3.connect(path / "db" / "noema.db")
    conn.execute("DROP TABLE schema_migrations")
    conn.commit()
    conn.close()
    result = run_cli(["--cortex", str(path), "status"])
    assert result.exit_code == 69
    assert result.stderr.startswith("Error: ")
    assert "Traceback" not in result.stderr
