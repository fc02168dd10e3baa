"""A transaction killed after its file steps: the files it changed go back, so the retry starts from the rows.

The retry of a crashed page does not always get the same events (another peer may deliver a purge or a
concurrent edit first), so "the retry writes the same files again" is not enough: a divergence record or an
edit written for a decision that never committed would stay on disk without its row (issue 12). Each test
kills a page at a hook step, then runs a different page, and compares the cortex with one that never
crashed and ran only that page.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import authoring
import pytest
from replay_helpers import apply_one, end_state, make_replica, open_replica
from test_replay import A_ID, create_event, event

from noemafed.cortex import state, traces
from noemafed.cortex.file_undo import UNDO_DIR, FileUndo
from noemafed.cortex.open import Cortex, database_dir
from noemafed.federation.replay import Replayer


class Kill(BaseException):
    """What a kill -9 leaves: nothing after the hook step runs (BaseException passes every `except Exception`)."""


def files(path: Path) -> dict[str, bytes]:
    found = {}
    for folder in traces.FOLDERS:
        for entry in sorted((path / folder).iterdir()):
            found[f"{folder}/{entry.name}"] = entry.read_bytes()
    return found


def kill_at(step: str, count: int = 1) -> Callable[[str], None]:
    """A hook that kills the page at the `count`-th time it reaches `step`."""
    seen: list[str] = []

    def hook(name: str) -> None:
        seen.append(name)
        if name == step and seen.count(step) == count:
            raise Kill(step)

    return hook


BASE = create_event()  # 20250101-a, {A: 1}
EDIT = event(
    "update",
    data={"title": "A", "type": "note", "tags": ["t"], "origin": "research", "body": "edited\n"},
    id="01JQH4HPD0B8E9WCXGFN1A33W1",
    vclock={A_ID: 2},
)
MOVES = [
    event("archive", id="01JQH4HPD0B8E9WCXGFN1A33W2", vclock={A_ID: 3}),
    event("unarchive", id="01JQH4HPD0B8E9WCXGFN1A33W3", vclock={A_ID: 4}),
    event("trash", id="01JQH4HPD0B8E9WCXGFN1A33W4", vclock={A_ID: 5}),
    event("purge", id="01JQH4HPD0B8E9WCXGFN1A33W5", vclock={A_ID: 6}),
]
OTHER = create_event("20250101-b", body="other\n", id="01JQH4HPD0B8E9WCXGFN1A33W6")


def two_replicas(tmp_path: Path) -> tuple[tuple[Cortex, Replayer], tuple[Cortex, Replayer]]:
    crashed = open_replica(make_replica(tmp_path / "crashed"))
    clean = open_replica(make_replica(tmp_path / "clean"))
    for _, replayer in (crashed, clean):
        apply_one(replayer, BASE, cursor_peer="p")
    return crashed, clean


PURGE_HARD = event("purge_hard", id="01JQH4HPD0B8E9WCXGFN1A33W8", data={"reason": "x"}, vclock={A_ID: 2})
PAGES = {
    "edit first": [EDIT, *MOVES],
    "moves": MOVES,
    "hard purge": [PURGE_HARD],
}
KILLS = [(name, k) for name, page in PAGES.items() for k in range(1, len(page) + 1)]


@pytest.mark.parametrize(("page", "kill_after"), KILLS)
def test_files_a_killed_page_changed_go_back_before_the_next_page(
    tmp_path: Path, page: str, kill_after: int
) -> None:
    """A page killed after its k-th file step; the next page touches another trace only: the first trace's
    file must be where and what the committed rows say, as on a replica that never ran the killed page."""
    (crashed, crashed_replayer), (clean, clean_replayer) = two_replicas(tmp_path)
    crashed_replayer.hook = kill_at("file", kill_after)
    with pytest.raises(Kill):
        crashed_replayer.apply_page(PAGES[page], "p")
    crashed.close()
    crashed, crashed_replayer = open_replica(crashed.path)  # a new process
    for replayer in (crashed_replayer, clean_replayer):
        apply_one(replayer, OTHER, cursor_peer="q")
    assert files(crashed.path) == files(clean.path)
    assert end_state(crashed.path) == end_state(clean.path)
    assert not any((database_dir(crashed.path) / UNDO_DIR).glob("*/journal"))
    crashed.close()
    clean.close()


def test_a_divergence_record_of_a_killed_page_does_not_stay_without_its_row(tmp_path: Path) -> None:
    """The shape the convergence machine shrank to: a page that records a divergence is killed after the
    record's file is written; before it is retried, a dominating edit arrives from another peer, so the
    retry records nothing. The record's file must not stay behind."""
    (crashed, crashed_replayer), (clean, clean_replayer) = two_replicas(tmp_path)
    for cortex in (crashed, clean):
        authoring.update_trace(cortex, "20250101-a", body="local\n", now="2025-06-01T00:00:00Z")
    concurrent = replace(EDIT, vclock={A_ID: 2})  # the local edit made {A: 1, replica: 1}
    crashed_replayer.hook = kill_at("file")
    with pytest.raises(Kill):
        crashed_replayer.apply_page([concurrent], "p")
    assert any(name.startswith("20250601-divergence") for name in _names(crashed.path))  # what the kill left
    crashed.close()
    crashed, crashed_replayer = open_replica(crashed.path)
    local = authoring_clock(clean)
    resolving = replace(EDIT, id="01JQH4HPD0B8E9WCXGFN1A33W9", vclock={**local, A_ID: 3})
    for replayer in (crashed_replayer, clean_replayer):
        assert apply_one(replayer, resolving, cursor_peer="q").effect == "updated"
    assert files(crashed.path) == files(clean.path)
    assert not any(name.startswith("20250601-divergence") for name in _names(crashed.path))
    crashed.close()
    clean.close()


def test_a_page_killed_after_its_commit_keeps_its_files(tmp_path: Path) -> None:
    """The undo log outlives a COMMIT by a moment: the stored events say the page committed, so nothing goes
    back."""
    (crashed, crashed_replayer), (clean, clean_replayer) = two_replicas(tmp_path)
    crashed_replayer.hook = kill_at("committed")
    with pytest.raises(Kill):
        crashed_replayer.apply_page([EDIT, MOVES[0]], "p")
    assert any((database_dir(crashed.path) / UNDO_DIR).glob("*/journal"))
    crashed.close()
    crashed, crashed_replayer = open_replica(crashed.path)
    clean_replayer.apply_page([EDIT, MOVES[0]], "p")
    for replayer in (crashed_replayer, clean_replayer):
        apply_one(replayer, OTHER, cursor_peer="q")
    assert files(crashed.path) == files(clean.path)
    assert "archive/traces/20250101-a.md" in files(crashed.path)
    crashed.close()
    clean.close()


def test_a_failed_event_leaves_the_files_of_the_committed_prefix(tmp_path: Path) -> None:
    """Not a kill: event k fails, the page rolls back, its files go back, and the prefix is applied again."""
    (cortex, replayer), (clean, clean_replayer) = two_replicas(tmp_path)
    bad = event("promote", id="01JQH4HPD0B8E9WCXGFN1A33W7", data={"from": "short", "to": "eternal"})
    result = replayer.apply_page([EDIT, MOVES[0], bad], "p")
    assert result.failed == bad
    clean_replayer.apply_page([EDIT, MOVES[0]], "p")
    assert files(cortex.path) == files(clean.path)
    assert not any((database_dir(cortex.path) / UNDO_DIR).glob("*/journal"))
    cortex.close()
    clean.close()


def test_restore_puts_back_written_moved_and_deleted_files(tmp_path: Path) -> None:
    """FileUndo on its own: what a rolled-back transaction did to three traces is undone, byte for byte."""
    cortex, _ = open_replica(make_replica(tmp_path / "r"))
    active, trash = cortex.path / traces.ACTIVE, cortex.path / traces.TRASH
    (active / "20250101-a.md").write_text("a\n")
    (active / "20250101-b.md").write_text("b\n")
    before = files(cortex.path)
    undo = FileUndo(cortex.path, database_dir(cortex.path))
    undo.event("01JQH4HPD0B8E9WCXGFN1A33W1")
    for trace_id in ("20250101-a", "20250101-b", "20250101-c"):
        undo.save(trace_id)
    traces.write_atomic(active / "20250101-a.md", "rewritten\n")  # a new inode, as every replay write
    (active / "20250101-b.md").rename(trash / "20250101-b.md")
    (active / "20250101-c.md").write_text("new\n")
    undo.restore()
    assert files(cortex.path) == before
    assert not list((database_dir(cortex.path) / UNDO_DIR).glob("*/*"))
    cortex.close()


def authoring_clock(cortex: Cortex) -> dict[str, int]:
    return dict(state.get_clock(cortex.conn))


def _names(path: Path) -> list[str]:
    return [name.rsplit("/", 1)[1] for name in files(path)]


def test_a_second_replayer_never_puts_back_the_files_of_a_transaction_in_flight(tmp_path: Path) -> None:
    """`sync` replays several peers at once, each with its own connection. The second replayer looks for logs
    to recover only once it holds the write lock: the first replayer's log, in the middle of its page, is not
    a crash. (Looked at before BEGIN, it was taken for one: the file the first page had just written was
    removed, and its row committed without a file; found by the three-process ring test.)"""
    path = make_replica(tmp_path / "r")
    first, first_replayer = open_replica(path)
    second, second_replayer = open_replica(path)
    second.conn.execute("PRAGMA busy_timeout = 50")
    refused: list[str] = []

    def meanwhile(step: str) -> None:
        if step == "file" and not refused:
            with pytest.raises(sqlite3.OperationalError) as locked:
                second_replayer.apply_page([OTHER], "q")
            refused.append(str(locked.value))

    first_replayer.hook = meanwhile
    assert first_replayer.apply_page([BASE], "p").failed is None
    assert refused == ["database is locked"]
    assert files(path) == {f"traces/{BASE.trace_id}.md": files(path)[f"traces/{BASE.trace_id}.md"]}
    apply_one(second_replayer, OTHER, cursor_peer="q")
    assert sorted(files(path)) == ["traces/20250101-a.md", "traces/20250101-b.md"]
    first.close()
    second.close()
