"""Trace files: Go's format, the ID and slug rules, validation sentinels and safe file operations."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noemafed.cortex import traces
from noemafed.cortex.frontmatter import Plain, dumps, join_trace
from noemafed.cortex.traces import Trace
from noemafed.errors import InvalidTraceFrontmatterError, InvalidTraceIDError

SPEC_EXAMPLE = """---
id: 20250329-why-we-chose-sqlite
title: Why we chose SQLite
type: decision
tier: mid
author: research-agent-1
tags:
    - architecture
    - storage
origin: research
created: "2025-03-29T14:23:00Z"
updated: "2025-03-30T09:05:12Z"
content_hash: sha256:404daf7faab0a7609fe6eb21983b239f4fd0fedbb2bd243a69b7cd24c5659013
---

We index traces in SQLite (WAL mode) because it is embedded and needs no server.

Revisited: still right for the index & event log."""


def test_spec_example_round_trips_byte_for_byte() -> None:
    trace = traces.parse_trace(SPEC_EXAMPLE)
    assert trace.tags == ("architecture", "storage")
    assert trace.created == "2025-03-29T14:23:00Z"
    assert traces.content_hash(trace.body) == trace.content_hash
    assert traces.format_trace(trace) == SPEC_EXAMPLE


def test_key_order_optional_keys_and_unknown_keys() -> None:
    trace = Trace(
        id="20250101-a",
        title="A",
        type="note",
        body="",
        source_locked=True,
        source_hash="sha256:1",
        extra=(("zeta", "1"), ("alpha", ["x"])),
    )
    text = traces.format_trace(trace)
    keys = [line.split(":")[0] for line in text.splitlines()[1:] if line and not line.startswith((" ", "-"))]
    assert keys == [
        "id",
        "title",
        "type",
        "created",
        "updated",
        "source_hash",
        "source_locked",
        "zeta",
        "alpha",
    ]
    assert "source_locked: true" in text
    assert traces.parse_trace(text).extra == (("zeta", "1"), ("alpha", ["x"]))
    assert "source_locked" not in traces.format_trace(Trace(id="20250101-a", title="A", type="note"))


@pytest.mark.parametrize(
    "body", ["", "\n", "\n\nleading blank lines\n", "no newline", "---\nnot a delimiter\n---\n"]
)
def test_body_is_exact(body: str) -> None:
    trace = Trace(id="20250101-a", title="A", type="note", created="c", updated="u", body=body)
    assert traces.parse_trace(traces.format_trace(trace)).body == body


@pytest.mark.parametrize(
    "text", ["no frontmatter", "\ufeff---\nid: x\n---\n", "---\r\nid: x\r\n---\r\n", "---\nid: x\n---"]
)
def test_bad_framing_is_the_frontmatter_sentinel(text: str) -> None:
    with pytest.raises(InvalidTraceFrontmatterError):
        traces.parse_trace(text)


@pytest.mark.parametrize(
    ("trace_id", "valid"),
    [
        ("20250329-why-we-chose-sqlite", True),
        ("20250329-a", True),
        ("20250329-a--b-", True),
        ("20250329-" + "a" * 100, True),
        ("20250329-" + "a" * 101, False),
        ("20250329--a", False),
        ("20250329-A", False),
        ("2025032-a", False),
        ("20250329-a\n", False),
        ("20250329-über", False),
        ("20250329-a/b", False),
        ("20250329-..", False),
        ("", False),
    ],
)
def test_trace_id_pattern(trace_id: str, valid: bool) -> None:
    assert traces.is_valid_trace_id(trace_id) is valid


@pytest.mark.parametrize(
    "bad", ["../etc/passwd", "a/b", "a\\b", "x\x00y", "/abs", "..", ".", ".hidden", "a" * 260, ""]
)
def test_path_guard_refuses_escaping_ids(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidTraceIDError):
        traces.trace_path(tmp_path, traces.ACTIVE, bad)


def test_path_guard_allows_legacy_ids_that_are_plain_names(tmp_path: Path) -> None:
    # Uppercase legacy ids fail the pattern but are still plain file names.
    assert traces.trace_path(tmp_path, traces.TRASH, "20200101-OLD").name == "20200101-OLD.md"


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Why we chose SQLite", "why-we-chose-sqlite"),
        ("  --Hello,   World!--  ", "hello-world"),
        ("2025-03-29 Meeting notes", "meeting-notes"),
        ("20250329-Meeting", "meeting"),
        ("Über café", "ber-caf"),
        ("divergence-20250401-contested", "divergence-20250401-contested"),
    ],
)
def test_slug_rules(title: str, slug: str) -> None:
    assert traces.slugify(title) == slug


def test_empty_slug_uses_a_hash_and_ids_are_always_valid() -> None:
    assert traces.slugify("!!!").startswith("trace-")
    assert len(traces.slugify("!!!")) == len("trace-") + 16
    assert traces.slugify("a" * 150) == "a" * 100
    assert traces.slugify("a" * 99 + "-b") == "a" * 99


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_new_ids_are_always_valid(title: str) -> None:
    assert traces.is_valid_trace_id(traces.new_trace_id(title, date(2025, 3, 29)))


def test_validate_sentinels() -> None:
    good = Trace(id="20250101-a", title="A", type="note", created="c", updated="u")
    traces.validate(good)
    for bad in (
        Trace(id="bad", title="A", type="note", created="c", updated="u"),
        Trace(id="20250101-a", title="", type="note", created="c", updated="u"),
        Trace(id="20250101-a", title="A", type="reference", created="c", updated="u"),
        Trace(id="20250101-a", title="A", type="note", created="", updated="u"),
        Trace(id="20250101-a", title="A", type="note", created="c", updated="u", tier="huge"),
    ):
        with pytest.raises(InvalidTraceFrontmatterError):
            traces.validate(bad)


def make_folders(root: Path) -> Path:
    for folder in traces.FOLDERS:
        (root / folder).mkdir(parents=True)
    return root


def test_atomic_write_mode_and_no_temp_left(tmp_path: Path) -> None:
    root = make_folders(tmp_path)
    old = os.umask(0o022)
    try:
        traces.write_in(root, traces.ACTIVE, Trace(id="20250101-a", title="A", type="note"))
    finally:
        os.umask(old)
    path = root / traces.ACTIVE / "20250101-a.md"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert os.listdir(root / traces.ACTIVE) == ["20250101-a.md"]


def test_move_repairs_interrupted_states(tmp_path: Path) -> None:
    root = make_folders(tmp_path)
    trace = Trace(id="20250101-a", title="A", type="note")
    traces.write_in(root, traces.ACTIVE, trace)
    traces.move(root, trace.id, traces.ACTIVE, traces.ARCHIVE)
    # Again: the rename already happened (crash before the commit) -> nothing to do.
    traces.move(root, trace.id, traces.ACTIVE, traces.ARCHIVE)
    assert (root / traces.ARCHIVE / "20250101-a.md").is_file()
    # The file is somewhere else (a batch ran ahead): it is moved from there.
    traces.move(root, trace.id, traces.ACTIVE, traces.TRASH)
    assert [p.parent.name for p in root.rglob("*.md")] == ["traces"]
    assert (root / traces.TRASH / "20250101-a.md").is_file()
    # A stray second copy is removed, so one id has one file.
    traces.write_in(root, traces.TRASH, trace)
    (root / traces.ACTIVE / "20250101-a.md").write_text(traces.format_trace(trace))
    traces.move(root, trace.id, traces.TRASH, traces.ARCHIVE)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*.md")) == ["archive/traces/20250101-a.md"]
    traces.remove(root, trace.id)
    traces.remove(root, trace.id)
    with pytest.raises(FileNotFoundError):
        traces.move(root, trace.id, traces.ACTIVE, traces.ARCHIVE)


# Field texts that exercise both quoting rules: the frontmatter fast-path pieces, timestamps, any text.
_FIELD = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["", "short", "2025-04-01T12:00:00Z", "sha256:ab12", "yes", "a: b", "é", "\ud800", "1e3"]
    ),
)
_EXTRA_VALUE = st.one_of(
    _FIELD,
    st.builds(Plain, _FIELD),
    st.lists(_FIELD, max_size=2),
    st.dictionaries(_FIELD, _FIELD, max_size=2),
)


@given(
    st.builds(
        Trace,
        id=_FIELD,
        title=_FIELD,
        type=_FIELD,
        body=st.text(max_size=20),
        tier=_FIELD,
        author=_FIELD,
        tags=st.lists(_FIELD, max_size=3).map(tuple),
        derived_from=st.lists(_FIELD, max_size=2).map(tuple),
        origin=_FIELD,
        created=_FIELD,
        updated=_FIELD,
        content_hash=_FIELD,
        source_hash=_FIELD,
        source_locked=st.booleans(),
        extra=st.lists(
            st.tuples(st.one_of(_FIELD, st.sampled_from(traces.KNOWN_KEYS)), _EXTRA_VALUE), max_size=3
        ).map(tuple),
    ),
    st.sampled_from(["", "title", "tier", "tags"]),
)
@settings(max_examples=1000)
def test_format_trace_writes_what_dumps_writes(trace: Trace, as_plain: str) -> None:
    """The line-by-line writer and the general `dumps` path give the same bytes, Plain values included."""
    if as_plain == "tags":
        trace = replace(trace, tags=tuple(Plain(tag) for tag in trace.tags))
    elif as_plain:
        trace = replace(trace, **{as_plain: Plain(getattr(trace, as_plain))})
    general = join_trace(dumps(traces._frontmatter_mapping(trace)), trace.body)
    assert traces.format_trace(trace) == general


def test_temp_names_are_unique_and_a_forked_child_draws_its_own_token() -> None:
    names = {traces._temp_name() for _ in range(1000)}
    assert len(names) == 1000
    assert all(name.startswith(traces.TEMP_PREFIX) and name.endswith(traces.TEMP_SUFFIX) for name in names)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next name and leave without running pytest's teardown
        os.write(write, traces._temp_name().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 200).decode()
    os.close(read)
    token = traces._temp_name()[len(traces.TEMP_PREFIX) :].split("-")[0]
    assert child.startswith(traces.TEMP_PREFIX)
    assert token not in child
