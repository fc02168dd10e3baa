"""Trace files (cortex.md §5): format, parse, validate, ID and slug rules, and safe file operations.

A trace lives in exactly one of three folders; the folder is its visibility state. Every path is built by
`trace_path`, which refuses a trace id that could name anything but a plain file inside its folder, so no
event can make replay touch a file elsewhere, whatever the caller checked before.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import itertools
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from noemafed.cortex import frontmatter
from noemafed.cortex.files import fsync_dir
from noemafed.cortex.open import TEMP_PREFIX, TEMP_SUFFIX
from noemafed.errors import FrontmatterError, InvalidTraceFrontmatterError, InvalidTraceIDError

__all__ = [
    "ACTIVE",
    "ARCHIVE",
    "FOLDERS",
    "TIERS",
    "TRACE_TYPES",
    "TRASH",
    "Trace",
    "check_trace_id",
    "content_hash",
    "format_trace",
    "is_valid_trace_id",
    "locate",
    "move",
    "new_trace_id",
    "parse_trace",
    "remove",
    "slugify",
    "trace_path",
    "validate",
    "write_atomic",
]

ACTIVE = "traces"
ARCHIVE = "archive/traces"
TRASH = "trash/traces"
FOLDERS = (ACTIVE, ARCHIVE, TRASH)

TRACE_TYPES = (
    "fact",
    "decision",
    "preference",
    "context",
    "skill",
    "intent",
    "observation",
    "note",
    "divergence",
)
TIERS = ("short", "mid", "long")
FILE_MODE = 0o640

# fullmatch, not `$`: Python's `$` also matches before a trailing newline, Go's does not.
_TRACE_ID = re.compile(r"[0-9]{8}-[a-z0-9][a-z0-9-]{0,99}")
_MAX_NAME_BYTES = 255 - len(".md")
_NON_SLUG = re.compile(r"[^a-z0-9]+")
_DATE_PREFIX = re.compile(r"(?:[0-9]{8}|[0-9]{4}-[0-9]{2}-[0-9]{2})-")
_SLUG_MAX = 100

# Frontmatter keys in Go's struct order (cortex.md §5.2).
KNOWN_KEYS = (
    "id",
    "title",
    "type",
    "tier",
    "author",
    "tags",
    "derived_from",
    "origin",
    "created",
    "updated",
    "content_hash",
    "source_hash",
    "source_locked",
)


@dataclass(frozen=True)
class Trace:
    """One trace file. `extra` holds unknown frontmatter keys in file order, written back after the known ones."""

    id: str
    title: str
    type: str
    body: str = ""
    tier: str = ""
    author: str = ""
    tags: tuple[str, ...] = ()
    derived_from: tuple[str, ...] = ()
    origin: str = ""
    created: str = ""
    updated: str = ""
    content_hash: str = ""
    source_hash: str = ""
    source_locked: bool = False
    extra: tuple[tuple[str, Any], ...] = field(default=(), compare=True)


def is_valid_trace_id(trace_id: str) -> bool:
    """The ID pattern both noema builds enforce: `^[0-9]{8}-[a-z0-9][a-z0-9-]{0,99}$`."""
    return _TRACE_ID.fullmatch(trace_id) is not None


def check_trace_id(trace_id: str) -> None:
    """Refuse an id that fails the pattern, with Go's sentinel."""
    if not is_valid_trace_id(trace_id):
        raise InvalidTraceIDError()


def _check_path_safe(trace_id: str) -> None:
    """The last guard before a path is built: the id must name a plain file inside one folder.

    The pattern already forbids all of this; the guard stays because callers such as the DB-only purge
    deliberately accept ids that fail the pattern, and a path must never be built from those.
    """
    if _TRACE_ID.fullmatch(trace_id):
        return  # at most 109 ASCII bytes of `[0-9a-z-]`: passes every check below
    if (
        not trace_id
        or trace_id in (".", "..")
        or trace_id.startswith(".")
        or any(char in trace_id for char in "/\\\x00")
        or os.path.isabs(trace_id)
        or len(trace_id.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES
    ):
        raise InvalidTraceIDError()


def trace_path(cortex_dir: Path, folder: str, trace_id: str) -> Path:
    """`<cortex>/<folder>/<id>.md`, refusing ids that could escape the folder."""
    if folder not in FOLDERS:
        raise ValueError(f"not a trace folder: {folder!r}")
    _check_path_safe(trace_id)
    return cortex_dir / folder / f"{trace_id}.md"


@functools.lru_cache(maxsize=16)
def _folder_text(cortex_dir: Path, folder: str) -> str:
    """`str(cortex_dir / folder)` plus a separator, built once: pathlib costs more than the write itself."""
    if folder not in FOLDERS:
        raise ValueError(f"not a trace folder: {folder!r}")
    return str(cortex_dir / folder) + os.sep


def _path_text(cortex_dir: Path, folder: str, trace_id: str) -> str:
    """`str(trace_path(...))` for the hot write path, with the same checks; the folder text is never `/`."""
    folder_text = _folder_text(cortex_dir, folder)
    _check_path_safe(trace_id)
    return f"{folder_text}{trace_id}.md"


def slugify(title: str) -> str:
    """The Rust rule for new ids (cortex.md §5.3): ASCII letters and digits, runs of others become one '-'."""
    slug = _NON_SLUG.sub("-", title.lower()).strip("-")
    prefix = _DATE_PREFIX.match(slug)
    if prefix:
        slug = slug[prefix.end() :]
    slug = slug[:_SLUG_MAX].rstrip("-")
    if not slug:
        slug = "trace-" + hashlib.sha256(title.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return slug


def new_trace_id(title: str, today: date) -> str:
    """`YYYYMMDD-<slug>`: always valid, unlike Go's Unicode slugs (cortex.md §9.15)."""
    return f"{today:%Y%m%d}-{slugify(title)}"


def content_hash(body: str) -> str:
    """`sha256:<hex>` of the UTF-8 body, exactly as stored in the file."""
    return "sha256:" + hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()


def format_trace(trace: Trace) -> str:
    """The file text as noema writes it: keys in Go's order, empty optional keys omitted, body verbatim.

    Line by line, as `frontmatter.dumps` would write `_frontmatter_mapping(trace)`: building and walking that
    mapping cost more than the file write itself. The known keys never need quoting, and every field is a
    plain `str` here, so each value is one `format_str`; anything else (a `Plain` or non-str value, which
    `dumps` writes by other rules) takes the mapping path. tests/test_traces.py checks with hypothesis that
    both paths write the same text.
    """
    scalars = (trace.id, trace.title, trace.type, trace.tier, trace.author, trace.origin, trace.created)
    rest = (trace.updated, trace.content_hash, trace.source_hash, *trace.tags, *trace.derived_from)
    if set(map(type, scalars + rest)) != {str}:
        return frontmatter.join_trace(frontmatter.dumps(_frontmatter_mapping(trace)), trace.body)
    text = frontmatter.format_str
    lines = ["---", f"id: {text(trace.id)}", f"title: {text(trace.title)}", f"type: {text(trace.type)}"]
    if trace.tier:
        lines.append(f"tier: {text(trace.tier)}")
    if trace.author:
        lines.append(f"author: {text(trace.author)}")
    if trace.tags:
        lines.append("tags:")
        lines.extend(f"    - {text(tag)}" for tag in trace.tags)
    if trace.derived_from:
        lines.append("derived_from:")
        lines.extend(f"    - {text(parent)}" for parent in trace.derived_from)
    if trace.origin:
        lines.append(f"origin: {text(trace.origin)}")
    lines.append(f"created: {text(trace.created)}")
    lines.append(f"updated: {text(trace.updated)}")
    if trace.content_hash:
        lines.append(f"content_hash: {text(trace.content_hash)}")
    if trace.source_hash:
        lines.append(f"source_hash: {text(trace.source_hash)}")
    if trace.source_locked:
        lines.append("source_locked: true")
    extra = _extra_mapping(trace)
    # Top-level keys are written independently, so the unknown keys' lines are those of a mapping of their own.
    tail = frontmatter.dumps(extra) if extra else ""
    return "\n".join(lines) + "\n" + tail + "---\n\n" + trace.body


def _extra_mapping(trace: Trace) -> dict[str, frontmatter.Emittable]:
    """Unknown keys in file order; a repeated one keeps its first value, a known one is never written twice."""
    extra: dict[str, frontmatter.Emittable] = {}
    for key, value in trace.extra:
        if key not in extra and key not in KNOWN_KEYS:
            extra[key] = value
    return extra


def _frontmatter_mapping(trace: Trace) -> dict[str, frontmatter.Emittable]:
    """Every key format_trace writes, in Go's order, for `frontmatter.dumps`."""
    raw: dict[str, frontmatter.Emittable] = {"id": trace.id, "title": trace.title, "type": trace.type}
    # `tier` is written whenever it is set, `short` included: replay and local writes always stamp the DB
    # tier onto the file; only a trace whose tier is unknown (old files) has no tier key.
    optional: tuple[tuple[str, frontmatter.Emittable], ...] = (
        ("tier", trace.tier),
        ("author", trace.author),
        ("tags", list(trace.tags)),
        ("derived_from", list(trace.derived_from)),
        ("origin", trace.origin),
    )
    for key, value in optional:
        if value:
            raw[key] = value
    raw["created"] = trace.created
    raw["updated"] = trace.updated
    if trace.content_hash:
        raw["content_hash"] = trace.content_hash
    if trace.source_hash:
        raw["source_hash"] = trace.source_hash
    if trace.source_locked:
        raw["source_locked"] = True
    raw.update(_extra_mapping(trace))
    return raw


def _text(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidTraceFrontmatterError(f"invalid trace frontmatter: {key} must be a string")
    return str(value)


def _strings(raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = raw.get(key)
    if value is None or (isinstance(value, str) and value == ""):
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidTraceFrontmatterError(f"invalid trace frontmatter: {key} must be a list of strings")
    return tuple(str(item) for item in value)


def _flag(raw: Mapping[str, Any], key: str) -> bool:
    text = _text(raw, key).lower()
    if text in ("", "false"):
        return False
    if text == "true":
        return True
    raise InvalidTraceFrontmatterError(f"invalid trace frontmatter: {key} must be true or false")


def parse_trace(text: str) -> Trace:
    """Parse a trace file; framing or YAML problems raise the invalid-frontmatter sentinel."""
    try:
        yaml_text, body = frontmatter.split_trace(text)
        raw = frontmatter.loads(yaml_text)
    except FrontmatterError as exc:
        raise InvalidTraceFrontmatterError(f"invalid trace frontmatter: {exc}") from exc
    return Trace(
        id=_text(raw, "id"),
        title=_text(raw, "title"),
        type=_text(raw, "type"),
        body=body,
        tier=_text(raw, "tier"),
        author=_text(raw, "author"),
        tags=_strings(raw, "tags"),
        derived_from=_strings(raw, "derived_from"),
        origin=_text(raw, "origin"),
        created=_text(raw, "created"),
        updated=_text(raw, "updated"),
        content_hash=_text(raw, "content_hash"),
        source_hash=_text(raw, "source_hash"),
        source_locked=_flag(raw, "source_locked"),
        extra=tuple((key, value) for key, value in raw.items() if key not in KNOWN_KEYS),
    )


def validate(trace: Trace) -> None:
    """Go's Validate (cortex.md §5.4): the id pattern, then title, type, timestamps and tier."""
    if not is_valid_trace_id(trace.id):
        raise InvalidTraceFrontmatterError(f"invalid trace frontmatter: invalid trace ID {trace.id!r}")
    if not trace.title:
        raise InvalidTraceFrontmatterError("invalid trace frontmatter: title is required")
    if not trace.type:
        raise InvalidTraceFrontmatterError("invalid trace frontmatter: type is required")
    if trace.type not in TRACE_TYPES:
        raise InvalidTraceFrontmatterError(
            f"invalid trace frontmatter: type {trace.type!r} is not one of the recognized types"
        )
    if not trace.created or not trace.updated:
        raise InvalidTraceFrontmatterError("invalid trace frontmatter: created and updated are required")
    if trace.tier and trace.tier not in TIERS:
        raise InvalidTraceFrontmatterError(f"invalid trace frontmatter: tier {trace.tier!r} is not valid")


# ---- dry runs: trace files kept in memory ----------------------------------------------------------------
# Inside `recorded()`, on this thread, the file steps below (write, rename, delete) land in a dict instead of
# on disk, and reads and existence checks see that dict first: replay runs unchanged, and the files a step wrote
# earlier in the same run are read back from it. Nothing is written, moved or deleted (`sync --once --dry-run`).

Recording = dict[str, str | None]  # path text -> the file's text, or None: removed
_RECORDING: ContextVar[Recording | None] = ContextVar("noemafed_trace_recording", default=None)


@contextlib.contextmanager
def recorded() -> Iterator[Recording]:
    """Record this thread's trace file steps instead of doing them; yields the record."""
    record: Recording = {}
    token = _RECORDING.set(record)
    try:
        yield record
    finally:
        _RECORDING.reset(token)


def _exists(path: str) -> bool:
    record = _RECORDING.get()
    if record is not None and path in record:
        return record[path] is not None
    return os.path.isfile(path)


def _read_text(path: str) -> str:
    record = _RECORDING.get()
    if record is not None and path in record:
        text = record[path]
        if text is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return text
    # newline="": CR and CRLF in a body are content (Go's os.ReadFile keeps them); universal newlines would
    # turn them into LF on the next rewrite, breaking the content hash and the FTS row.
    with open(path, encoding="utf-8", newline="") as handle:
        return handle.read()


def _unlink(path: str) -> None:
    """Delete a file; one that is already gone is fine."""
    record = _RECORDING.get()
    if record is not None:
        record[path] = None
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _rename(source: str, target: str) -> None:
    record = _RECORDING.get()
    if record is not None:
        record[target] = _read_text(source)
        record[source] = None
        return
    os.replace(source, target)


def read(path: Path) -> Trace:
    """Read and parse one trace file."""
    return parse_trace(_read_text(str(path)))


def write_atomic(path: Path, text: str, *, durable: bool = False) -> None:
    """Write via `.noemafed-trace-<token>-<n>.tmp` in the same folder and rename: readers never see half a file.

    With `durable` the data and the folder entry are fsynced, so the file survives a power loss once this
    returns; without it the write survives a process crash (the kernel has it) but not a power loss.
    """
    _write_atomic(str(path), str(path.parent / _temp_name()), path.parent, text, durable)


class _TempNames:
    """Temp file names unique to this process: a random token and a counter.

    A ULID per write cost more than the write's own syscalls. Uniqueness needs no clock: the 64-bit token is
    drawn once per process (again in a forked child, so parent and child never share it), and a name that
    did clash would make the O_EXCL open fail, never overwrite another writer's file.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.token = os.urandom(8).hex()
        self.counter = itertools.count()

    def next(self) -> str:
        return f"{TEMP_PREFIX}{self.token}-{next(self.counter)}{TEMP_SUFFIX}"


_TEMP_NAMES = _TempNames()
os.register_at_fork(after_in_child=_TEMP_NAMES.reset)
_temp_name = _TEMP_NAMES.next


def _write_atomic(path: str, temp: str, folder: str | Path, text: str, durable: bool) -> None:
    """write_atomic on str paths: `temp` is the temp file beside `path` in `folder`."""
    record = _RECORDING.get()
    if record is not None:
        record[path] = text
        return
    data = text.encode("utf-8", "surrogatepass")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        try:
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if durable:
        fsync_dir(folder)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def locate(cortex_dir: Path, trace_id: str, prefer: Iterable[str] = FOLDERS) -> Path | None:
    """The first folder in `prefer` (then the rest) holding `<id>.md`, or None."""
    order = list(dict.fromkeys([*prefer, *FOLDERS]))
    for folder in order:
        path = trace_path(cortex_dir, folder, trace_id)
        if _exists(str(path)):
            return path
    return None


def move(cortex_dir: Path, trace_id: str, source: str, target: str, *, durable: bool = False) -> None:
    """Rename a trace file from `source` to `target`, repairing what an interrupted earlier attempt left.

    The file normally sits in `source`. If it is already in `target` (a crash after the rename but before
    the DB commit), nothing is left to do. If it is elsewhere (file steps of a batch ran ahead of the
    committed rows), it is moved from there. Any second copy is removed so one id has one file.
    Missing everywhere is an error: replay cannot invent the content.
    """
    destination = trace_path(cortex_dir, target, trace_id)
    found = locate(cortex_dir, trace_id, (source, target))
    if found is None:
        raise FileNotFoundError(f"trace file {trace_id}.md not found in {source}/ or any other trace folder")
    if found != destination:
        _rename(str(found), str(destination))
        if durable and _RECORDING.get() is None:
            fsync_dir(found.parent)
            fsync_dir(destination.parent)
    remove(cortex_dir, trace_id, [folder for folder in FOLDERS if folder != target])


def remove(cortex_dir: Path, trace_id: str, folders: Iterable[str] = FOLDERS) -> None:
    """Delete `<id>.md` from the given folders; a file that is already gone is fine."""
    for folder in folders:
        _unlink(_path_text(cortex_dir, folder, trace_id))


def write_in(cortex_dir: Path, folder: str, trace: Trace, *, durable: bool = False) -> None:
    """Write the trace into `folder` and drop copies of it in the other folders (one id, one file).

    The copies are removed even for a brand-new trace: after a crash in the middle of a page, a later
    event of that page may have moved the file of a trace whose row was rolled back (docs/replay.md).
    """
    path = _path_text(cortex_dir, folder, trace.id)
    folder_text = _folder_text(cortex_dir, folder)
    _write_atomic(path, folder_text + _temp_name(), folder_text, format_trace(trace), durable)
    remove(cortex_dir, trace.id, [other for other in FOLDERS if other != folder])
