"""Find a cortex, open its database safely, and create a new one that noema can open."""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from noemafed.cortex import frontmatter, storage_lock
from noemafed.cortex.manifest import MANIFEST_FILE, MANIFEST_VERSION, Manifest, read_manifest
from noemafed.errors import (
    CortexNotFoundError,
    CortexUnavailableError,
    FrontmatterError,
    NoemafedError,
)

CORTEX_ENV = "NOEMA_CORTEX"
TRACE_FOLDERS = ("traces", "archive/traces", "trash/traces")
# Temp files of our own trace writes: our own prefix, so sync may delete stale ones, never a live noema write.
TEMP_PREFIX = ".noemafed-trace-"
TEMP_SUFFIX = ".tmp"
STORAGE_FILE = "storage.yaml"
STORAGE_MIGRATION_MARKER = ".noema-storage-migration.json"
DB_FILE = "noema.db"
BUSY_TIMEOUT_MS = 5000
RUST_PENDING_PREFIX = "rust_pending_mutation:"

AGENTS_GUIDE = """# Agent guide

This directory is a noema cortex. Traces live in `traces/`, `archive/traces/` and `trash/traces/`;
the index and the replicated event log live in the SQLite database under `db/`. noema rewrites this
file with its own guide the first time it opens the cortex.
"""


def registry_path(environ: Mapping[str, str]) -> Path:
    """noema's per-user registry: `$XDG_CONFIG_HOME/noema/config.yaml`, else `~/.config/...`."""
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(environ.get("HOME", "~"), ".config")
    return Path(os.path.expanduser(base)) / "noema" / "config.yaml"


def _is_cortex(path: Path) -> bool:
    return (path / MANIFEST_FILE).is_file()


def _registry(environ: Mapping[str, str]) -> tuple[dict[str, Path], str]:
    """Registered cortexes by name, and the default name (promoted when exactly one is registered)."""
    path = registry_path(environ)
    try:
        raw = frontmatter.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, FrontmatterError):
        return {}, ""
    cortexes: dict[str, Path] = {}
    entries = raw.get("cortexes")
    if isinstance(entries, dict):
        for name, entry in entries.items():
            if isinstance(entry, dict) and isinstance(entry.get("path"), str) and entry["path"]:
                cortexes[name] = Path(os.path.expanduser(str(entry["path"])))
    default = raw.get("default")
    default_name = str(default) if isinstance(default, str) else ""
    if not default_name and len(cortexes) == 1:
        default_name = next(iter(cortexes))
    return cortexes, default_name


def _by_path_or_name(value: str, registered: dict[str, Path]) -> Path | None:
    candidate = Path(os.path.expanduser(value))
    if _is_cortex(candidate):
        return candidate
    if value in registered and _is_cortex(registered[value]):
        return registered[value]
    return None


def resolve_cortex(option: str | None, environ: Mapping[str, str], cwd: Path) -> Path:
    """`--cortex`, then NOEMA_CORTEX, then the registry default, then the cwd; a miss lists all four."""
    tried: list[str] = []
    # The registry is read once per resolution, whichever rule ends up using it.
    registered, default_name = _registry(environ)
    if option:
        found = _by_path_or_name(option, registered)
        if found is None:
            raise CortexNotFoundError(
                f"no cortex at --cortex {option!r}: not a directory with {MANIFEST_FILE} "
                "and not a name in noema's registry",
                hint="pass the cortex directory, or create one with `noemafed init DIR`",
            )
        return found.resolve()
    tried.append("--cortex (not given)")
    env_value = environ.get(CORTEX_ENV, "")
    if env_value:
        found = _by_path_or_name(env_value, registered)
        if found is not None:
            return found.resolve()
        tried.append(f"{CORTEX_ENV}={env_value!r} (no such cortex)")
    else:
        tried.append(f"{CORTEX_ENV} (not set)")
    reg_path = registry_path(environ)
    if default_name and default_name in registered and _is_cortex(registered[default_name]):
        return registered[default_name].resolve()
    tried.append(f"registry {reg_path} ({'no usable default' if registered else 'no cortexes'})")
    if _is_cortex(cwd):
        return cwd.resolve()
    tried.append(f"current directory {cwd} (no {MANIFEST_FILE})")
    raise CortexNotFoundError(
        "no cortex found; tried " + ", ".join(tried),
        hint="pass --cortex DIR, set NOEMA_CORTEX, or create one with `noemafed init DIR`",
    )


def database_dir(cortex_dir: Path) -> Path:
    """`db/`, or `db.nosync/` when storage.yaml says `database: nosync` (Rust-era layout)."""
    storage = cortex_dir / STORAGE_FILE
    mode = "default"
    if storage.is_file():
        try:
            raw = frontmatter.loads(storage.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, FrontmatterError) as exc:
            raise CortexUnavailableError(f"reading {storage}: {exc}") from None
        mode = str(raw.get("database") or "default")
    if mode not in ("default", "nosync"):
        raise CortexUnavailableError(f"{storage}: database {mode!r} is not valid; use default or nosync")
    if mode == "nosync":
        return cortex_dir / "db.nosync"
    if (cortex_dir / "db.nosync" / DB_FILE).exists():
        raise CortexUnavailableError(
            f"{cortex_dir} has a database in db.nosync/ but {STORAGE_FILE} does not select it",
            hint="finish the storage change with `noema cortex storage --resume`",
        )
    return cortex_dir / "db"


class _LockedConnection(sqlite3.Connection):
    """A connection that holds noema's storage lock shared until it is closed."""

    storage_lock: storage_lock.StorageLock | None = None

    def close(self) -> None:
        super().close()
        if self.storage_lock is not None:
            self.storage_lock.release()
            self.storage_lock = None


class RehearsalConnection(_LockedConnection):
    """Dry runs: a connection whose every change is rolled back. `rehearse()` opens one outer transaction; the
    transactions its users open and close (BEGIN ... COMMIT, ROLLBACK) become savepoints inside it, so replay,
    health and pins run unchanged, see their own writes, and `discard()` throws all of them away at the end."""

    _depth = 0  # the users' transactions open inside the outer one
    _SAVEPOINT = "noemafed_rehearsal"

    def rehearse(self) -> None:
        super().execute("BEGIN")

    def discard(self) -> None:
        """Roll back everything since `rehearse()`."""
        self._depth = 0
        if super().in_transaction:
            super().execute("ROLLBACK")

    @property
    def in_transaction(self) -> bool:
        """Whether one of the users' transactions is open (the outer one is not theirs)."""
        return self._depth > 0

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        statement = sql.strip().upper()
        if statement.startswith("BEGIN"):
            self._depth += 1
            return super().execute(f"SAVEPOINT {self._SAVEPOINT}")
        if statement in ("COMMIT", "END"):
            self._depth -= 1
            return super().execute(f"RELEASE {self._SAVEPOINT}")
        if statement == "ROLLBACK":
            self.rollback()
            return super().execute("SELECT 1")
        return super().execute(sql, parameters)

    def commit(self) -> None:
        if self._depth > 0:
            self.execute("COMMIT")

    def rollback(self) -> None:
        if self._depth > 0:
            self._depth -= 1
            super().execute(f"ROLLBACK TO {self._SAVEPOINT}")
            super().execute(f"RELEASE {self._SAVEPOINT}")


def connect(db_path: Path, factory: type[sqlite3.Connection] = sqlite3.Connection) -> sqlite3.Connection:
    """A connection with noema's pragmas; autocommit, so callers open their own transactions."""
    conn = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, factory=factory)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


# The oldest schema migration noemafed reads or writes: 017 added event signatures, 018/019 repaired tiers. Here, not
# in `schema` (which only `init` needs, to create one): every command that opens a cortex checks it.
MIN_SCHEMA_VERSION = 19


def _check_openable(conn: sqlite3.Connection, db_path: Path) -> None:
    """Refuse what noema itself would refuse, and never migrate: noema owns the schema."""
    try:
        row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    except sqlite3.DatabaseError as exc:
        raise CortexUnavailableError(f"{db_path} is not a noema database: {exc}") from None
    version = row[0] if row and row[0] is not None else 0
    if version < MIN_SCHEMA_VERSION:
        raise CortexUnavailableError(
            f"{db_path} is at schema migration {version}; noemafed needs {MIN_SCHEMA_VERSION} or newer",
            hint="open the cortex once with a current noema to migrate it; noemafed never migrates",
        )
    pending = conn.execute(
        "SELECT COUNT(*) FROM federation_state WHERE key >= ? AND key < ?",
        (RUST_PENDING_PREFIX, RUST_PENDING_PREFIX[:-1] + ";"),
    ).fetchone()[0]
    if pending:
        raise CortexUnavailableError(
            f"{db_path} holds {pending} interrupted Rust trace mutation(s) ({RUST_PENDING_PREFIX}* keys)",
            hint="open the cortex with the Rust noema build so it can finish or roll them back",
        )


def open_database(
    cortex_dir: Path, environ: Mapping[str, str] | None = None, *, rehearsal: bool = False
) -> sqlite3.Connection:
    """Open an existing cortex database for federation work, refusing anything unsafe.

    The connection holds noema's storage lock shared (`storage_lock`) until it is closed; a compaction or
    storage migration that holds it is waited for up to the busy timeout, then refused (StorageBusyError).
    `rehearsal`: a RehearsalConnection, for dry runs.
    """
    if (cortex_dir / STORAGE_MIGRATION_MARKER).exists():
        raise CortexUnavailableError(
            f"{cortex_dir} is in the middle of a storage migration ({STORAGE_MIGRATION_MARKER})",
            hint="run `noema cortex storage --resume` first",
        )
    db_path = database_dir(cortex_dir) / DB_FILE
    if not db_path.is_file():
        raise CortexUnavailableError(
            f"{db_path} does not exist",
            hint="a cortex needs its database; create one with `noemafed init DIR` or `noema init`",
        )
    lock = storage_lock.acquire_shared(
        cortex_dir, BUSY_TIMEOUT_MS / 1000, os.environ if environ is None else environ
    )
    try:
        conn = connect(db_path, factory=RehearsalConnection if rehearsal else _LockedConnection)
    except sqlite3.DatabaseError as exc:
        lock.release()
        if _denied(exc, db_path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(db_path)) from None
        raise CortexUnavailableError(f"{db_path} is not a usable noema database: {exc}") from None
    conn.storage_lock = lock  # type: ignore[attr-defined]
    try:
        _check_openable(conn, db_path)
    except BaseException:
        conn.close()
        raise
    return conn


def _denied(exc: sqlite3.DatabaseError, db_path: Path) -> bool:
    """SQLite could not open or write the database because this user may not: a permission, not a broken file.
    (A WAL database needs its file and its folder writable even to be read.)"""
    name = getattr(exc, "sqlite_errorname", "")
    if not name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")):
        return False
    return not os.access(db_path, os.R_OK | os.W_OK) or not os.access(db_path.parent, os.W_OK | os.X_OK)


class Cortex:
    """An opened cortex: its directory, validated manifest and database connection."""

    def __init__(self, path: Path, manifest: Manifest, conn: sqlite3.Connection) -> None:
        self.path = path
        self.manifest = manifest
        self.conn = conn

    def close(self) -> None:
        self.conn.close()


def open_cortex(cortex_dir: Path, manifest: Manifest | None = None) -> Cortex:
    """Read and validate the manifest first (so a bad manifest never touches the DB), then open the DB; a
    caller that has just read the manifest passes it in rather than have it parsed twice."""
    if manifest is None:
        manifest = read_manifest(cortex_dir)
    return Cortex(cortex_dir, manifest, open_database(cortex_dir))


def init_cortex(target: Path, name: str | None) -> Manifest:
    """Create a brand-new cortex at `target` that noema opens as already migrated."""
    target = target.expanduser()
    if (target / MANIFEST_FILE).exists() or (target / "db").exists() or (target / "db.nosync").exists():
        raise NoemafedError(
            f"{target} already holds a cortex; noemafed init never touches an existing one",
            hint="pick an empty or new directory",
        )
    if target.exists() and not target.is_dir():
        raise NoemafedError(f"{target} exists and is not a directory")
    cortex_name = name or target.resolve().name
    target.mkdir(parents=True, exist_ok=True)
    for folder in (*TRACE_FOLDERS, "db"):
        (target / folder).mkdir(parents=True, exist_ok=True)
    from noemafed.cortex import schema  # noqa: PLC0415 (its tables are built at import: only init needs them)

    conn = connect(target / "db" / DB_FILE)
    try:
        schema.create_schema(conn)
    finally:
        conn.close()
    from ulid import ULID  # noqa: PLC0415 (python-ulid costs ~12 ms at import; only init needs it here)

    raw: dict[str, frontmatter.Emittable] = {
        "id": str(ULID()),
        "name": cortex_name,
        "created": datetime.now(UTC).strftime("%Y-%m-%d"),
        "version": MANIFEST_VERSION,
    }
    manifest_text = frontmatter.join_manifest(frontmatter.dumps(raw), "")
    (target / "AGENTS.md").write_text(AGENTS_GUIDE, encoding="utf-8")
    # The manifest goes last: until it exists, the directory is not a cortex.
    (target / MANIFEST_FILE).write_text(manifest_text, encoding="utf-8")
    return read_manifest(target)
