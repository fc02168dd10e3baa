"""Replay gates, sentinels, the documented trap decisions, atomicity of one event, and usage merging."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from dataclasses import replace
from pathlib import Path

import authoring
import pytest
from conftest import make_cortex
from hypothesis import given, settings
from hypothesis import strategies as st
from replay_helpers import (
    DATA,
    REPLICA_ID,
    all_events,
    apply_one,
    end_state,
    make_replica,
    open_replica,
    set_manifest_id,
)

from noemafed.cortex import state, vclock
from noemafed.cortex.events import Event, parse_page
from noemafed.cortex.open import Cortex, open_cortex
from noemafed.errors import InvalidTraceIDError, ReplayError, VClockTooLargeError
from noemafed.federation import classify
from noemafed.federation.replay import MERGE_CLOCK_LOG, Replayer
from noemafed.logs import SILENT, Level, Log
from noemafed.text.gotext import go_json_dumps

A_ID = "01JQ7X2B9C4D5E6F7G8H9JKMNP"
B_ID = "01JQ9A3C5E7G9J1K3M5N7P9R2T"


@pytest.fixture
def source(tmp_path: Path) -> Cortex:
    path = make_cortex(tmp_path / "src", "research")
    set_manifest_id(path, A_ID)
    cortex = open_cortex(path)
    yield cortex  # type: ignore[misc]
    cortex.close()


@pytest.fixture
def replica(tmp_path: Path) -> tuple[Cortex, Replayer]:
    cortex, replayer = open_replica(make_replica(tmp_path / "dst"))
    yield cortex, replayer  # type: ignore[misc]
    cortex.close()


def event(action: str, trace_id: str = "20250101-a", data: object = None, **fields: object) -> Event:
    base = Event(
        id=str(fields.pop("id", "01JQH4HPD0B8E9WCXGFN1A33VE")),
        action=action,
        trace_id=trace_id,
        cortex_id=A_ID,
        origin="research",
        timestamp="2025-01-01T00:00:00Z",
        data="{}" if data is None else go_json_dumps(data),
        vclock={A_ID: 1},
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def create_event(trace_id: str = "20250101-a", body: str = "b\n", **fields: object) -> Event:
    data = {"title": "A", "type": "note", "tags": ["t"], "origin": "research", "tier": "short", "body": body}
    return event("create", trace_id, data, **fields)


def rows(conn: sqlite3.Connection, sql: str, *params: object) -> list[tuple[object, ...]]:
    return conn.execute(sql, params).fetchall()


# ---------------------------------------------------------------------------------------------------------
# Byte-exact storage


def test_spec_examples_are_stored_byte_exact_and_still_verify(replica: tuple[Cortex, Replayer]) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from noemafed.signing.eventsig import preimage
    from noemafed.text.keys import parse_public_key, parse_signature

    cortex, replayer = replica
    events = parse_page((DATA / "spec_examples.json").read_text())
    for e in events:
        apply_one(replayer, e, cursor_peer="research")
    stored = {e.id: e for e in all_events(cortex.conn)}
    for e in events:
        assert stored[e.id] == e
        row = rows(cortex.conn, "SELECT data, signature, pubkey FROM events WHERE id = ?", e.id)[0]
        assert row == (e.data, e.signature, e.pubkey)
        if e.signature:
            key = Ed25519PublicKey.from_public_bytes(parse_public_key(e.pubkey))
            key.verify(parse_signature(e.signature), preimage(stored[e.id]))  # raises if not


def test_spec_examples_end_state_written_by_hand(replica: tuple[Cortex, Replayer]) -> None:
    """Expected file from cortex.md §5.2 (author and tier as the three events leave them)."""
    cortex, replayer = replica
    for e in parse_page((DATA / "spec_examples.json").read_text()):
        apply_one(replayer, e, cursor_peer="research")
    path = cortex.path / "traces" / "20250329-why-we-chose-sqlite.md"
    assert path.read_text() == (
        "---\n"
        "id: 20250329-why-we-chose-sqlite\n"
        "title: Why we chose SQLite\n"
        "type: decision\n"
        "tier: mid\n"
        "author: laptop-agent\n"
        "tags:\n"
        "    - architecture\n"
        "    - storage\n"
        "origin: research\n"
        'created: "2025-03-29T14:23:00Z"\n'
        'updated: "2025-03-30T09:05:12Z"\n'
        "content_hash: sha256:404daf7faab0a7609fe6eb21983b239f4fd0fedbb2bd243a69b7cd24c5659013\n"
        "---\n"
        "\n"
        "We index traces in SQLite (WAL mode) because it is embedded and needs no server.\n"
        "\n"
        "Revisited: still right for the index & event log."
    )
    assert rows(
        cortex.conn,
        "SELECT author, created_at, updated_at, cortex_id, tier, archived_at, trashed_at FROM traces",
    ) == [("laptop-agent", "2025-03-29T14:23:00Z", "2025-03-30T09:05:12Z", A_ID, "mid", None, None)]
    assert rows(cortex.conn, "SELECT tags FROM traces_fts") == [("architecture storage",)]
    assert state.get_clock(cortex.conn) == {A_ID: 2, B_ID: 1}
    assert state.get(cortex.conn, "peer:research:last_event") == "01JQK7WV80KW0C7MMADCF4Y8MG"


def test_html_escapes_unicode_and_line_separators_keep_their_bytes(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    body = "a <b> & c — ünï \u2028 \u2029"
    data = go_json_dumps({"title": "T", "type": "note", "body": body})
    assert "\\u003cb\\u003e \\u0026" in data
    assert "\\u2028" in data
    assert "ünï" in data
    apply_one(replayer, replace(create_event(), data=data))
    assert rows(cortex.conn, "SELECT data FROM events") == [(data,)]
    assert (cortex.path / "traces" / "20250101-a.md").read_text().endswith("\n\n" + body)


# ---------------------------------------------------------------------------------------------------------
# Gates


def test_already_seen_is_a_benign_repeat(replica: tuple[Cortex, Replayer]) -> None:
    _, replayer = replica
    first = apply_one(replayer, create_event())
    again = apply_one(replayer, create_event())
    assert (first.stored, first.effect) == (True, "created")
    assert (again.stored, again.effect) == (False, "duplicate")


def test_invalid_trace_id_is_the_sentinel_and_touches_nothing(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    for bad in ("../../etc/passwd", "20250101-A", "x/y", ""):
        with pytest.raises(ReplayError) as info:
            apply_one(replayer, create_event(trace_id=bad), cursor_peer="p")
        assert isinstance(info.value.__cause__, InvalidTraceIDError)
        assert classify.classify_replay_error(info.value) == "invalid_trace_id"
        assert str(info.value).startswith(
            "rejecting remote event 01JQH4HPD0B8E9WCXGFN1A33VE: invalid trace ID: "
        )
    assert rows(cortex.conn, "SELECT count(*) FROM events") == [(0,)]
    assert state.get(cortex.conn, "peer:p:last_event") == ""
    assert not list(cortex.path.rglob("*.md"))[2:]  # only cortex.md and AGENTS.md


def test_legacy_purge_is_db_only(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    cortex.conn.execute(
        "INSERT INTO traces (id, title, type, author, created_at, updated_at) VALUES ('OLD-Id', 't', 'note', '', 'c', 'u')"
    )
    outcome = apply_one(replayer, event("purge", "OLD-Id"))
    assert outcome.effect == "purged"
    assert rows(cortex.conn, "SELECT count(*) FROM traces") == [(0,)]
    # A legacy id that could name a path is still only a DB key.
    assert apply_one(replayer, event("purge", "../../x", id="01JQH4HPD0B8E9WCXGFN1A33VF")).effect == "purged"


def test_unknown_action_classifies_as_unknown_action(replica: tuple[Cortex, Replayer]) -> None:
    """Trap §9.5: Go's text "unknown event action: X" classified as other; ours says "unknown action"."""
    _, replayer = replica
    with pytest.raises(ReplayError) as info:
        apply_one(replayer, event("teleport"))
    assert classify.classify_replay_error(info.value) == "unknown_action"


def test_coordination_events_are_logged_without_trace_checks(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    outcome = apply_one(replayer, event("consolidation_claim", "window:2025-01-01/Not A Trace Id"))
    assert outcome.effect == "logged"
    assert rows(cortex.conn, "SELECT count(*) FROM traces") == [(0,)]


def test_content_hash_mismatch_and_bad_tier_fail(replica: tuple[Cortex, Replayer]) -> None:
    _, replayer = replica
    bad_hash = create_event()
    payload = json.loads(bad_hash.data) | {"content_hash": "sha256:00"}
    with pytest.raises(ReplayError, match="content hash mismatch on create event"):
        apply_one(replayer, replace(bad_hash, data=go_json_dumps(payload)))
    payload = json.loads(bad_hash.data) | {"tier": "eternal"}
    with pytest.raises(ReplayError, match="invalid tier"):
        apply_one(replayer, replace(bad_hash, data=go_json_dumps(payload)))


E1 = "01JQH4HPD0B8E9WCXGFN1A33VE"

# What `sync` shows after `replay event <id>: `, byte for byte.
REPLAY_ERRORS = [
    (create_event(trace_id="../x"), f'rejecting remote event {E1}: invalid trace ID: "../x"'),
    (event("teleport"), f'unknown action "teleport" in event {E1}'),
    (event("create", data={"title": 5}), f"parsing create payload of event {E1}: title must be a string"),
    (
        event("update", data={"tags": "t"}),
        f"parsing update payload of event {E1}: tags must be a list of strings",
    ),
    (
        event("create", data={"source_locked": "yes"}),
        f"parsing create payload of event {E1}: source_locked must be a boolean",
    ),
    (
        replace(event("create"), data="{"),
        f"parsing create payload of event {E1}: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)",
    ),
    (
        event("tag_update", data={"tags": [1]}),
        f"parsing tag_update payload of event {E1}: tags must be a list of strings",
    ),
    (event("create", data={"tier": "eternal"}), f'create event {E1} has invalid tier "eternal"'),
    (
        event("create", data={"body": "b", "content_hash": "sha256:00"}),
        f"content hash mismatch on create event {E1}",
    ),
    (event("promote", data={"from": "short"}), f"tier-change event {E1} missing 'to' field"),
    (event("vote", data={"delta": 1.5}), f"parsing vote payload of event {E1}: delta must be an integer"),
]


E2 = "01JQH4HPD0B8E9WCXGFN1A33VF"


@pytest.mark.parametrize("distilled_id", ["../x", "NOT-A-TRACE-ID", "20250101-missing"])
def test_a_consolidate_without_a_valid_target_is_stored_not_applied(
    replica: tuple[Cortex, Replayer], distilled_id: str
) -> None:
    """Bug: an invalid distilled_id was a schema-widening failure that pinned the cursor (exit 4, "upgrade")."""
    cortex, replayer = replica
    apply_one(replayer, create_event())
    outcome = apply_one(replayer, event("consolidate", data={"distilled_id": distilled_id}, id=E2))
    assert outcome.stored
    assert rows(cortex.conn, "SELECT tier FROM traces") == [("short",)]  # nothing consolidated
    assert rows(cortex.conn, "SELECT id FROM events WHERE id = ?", E2) == [(E2,)]


def test_a_consolidate_whose_target_is_not_a_string_consolidates_its_own_trace(
    replica: tuple[Cortex, Replayer],
) -> None:
    cortex, replayer = replica
    apply_one(replayer, create_event())
    apply_one(replayer, event("consolidate", data={"distilled_id": 5}, id=E2))
    assert rows(cortex.conn, "SELECT tier FROM traces") == [("mid",)]


@pytest.mark.parametrize(("bad", "message"), REPLAY_ERRORS)
def test_replay_error_texts(replica: tuple[Cortex, Replayer], bad: Event, message: str) -> None:
    _, replayer = replica
    with pytest.raises(ReplayError) as info:
        apply_one(replayer, bad)
    assert str(info.value) == message


def test_a_failed_statement_names_the_event(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    apply_one(replayer, create_event())
    cortex.conn.execute(
        "CREATE TRIGGER no_votes BEFORE UPDATE OF tier_votes ON traces BEGIN SELECT RAISE(ABORT, 'votes are off'); END"
    )
    with pytest.raises(ReplayError) as info:
        apply_one(replayer, event("vote", data={"delta": 1}, id="01JQH4HPD0B8E9WCXGFN1A33VZ"))
    assert str(info.value) == "replaying vote event 01JQH4HPD0B8E9WCXGFN1A33VZ: votes are off"


def test_replay_refuses_to_run_inside_a_transaction(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    cortex.conn.execute("BEGIN")
    with pytest.raises(ReplayError) as info:
        replayer.apply_page([create_event()])
    assert str(info.value) == "replay cannot run inside another open transaction"
    cortex.conn.rollback()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"trace_id": 5}, "merging remote usage: trace_id must be a string"),
        (
            {"trace_id": "20250101-a", "read_count": "1"},
            "merging remote usage: read_count must be an integer",
        ),
    ],
)
def test_usage_error_texts(replica: tuple[Cortex, Replayer], row: dict[str, object], message: str) -> None:
    _, replayer = replica
    with pytest.raises(ReplayError) as info:
        replayer.merge_usage([row])
    assert str(info.value) == message


def test_failure_commits_nothing_and_keeps_the_cursor(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    apply_one(replayer, create_event(), cursor_peer="p")
    before = end_state(cortex.path)
    with pytest.raises(ReplayError, match="missing 'to'"):
        apply_one(
            replayer,
            event("promote", data={"from": "short"}, id="01JQH4HPD0B8E9WCXGFN1A33VZ"),
            cursor_peer="p",
        )
    with pytest.raises(ReplayError):
        # CHECK constraint: the tier update fails before the file is rewritten.
        apply_one(
            replayer,
            event("promote", data={"to": "eternal"}, id="01JQH4HPD0B8E9WCXGFN1A33VZ"),
            cursor_peer="p",
        )
    assert end_state(cortex.path) == before


def test_page_stops_at_the_first_failure_and_commits_the_prefix(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    good = create_event(id="01JQH4HPD0B8E9WCXGFN1A33V1")
    bad = event("teleport", id="01JQH4HPD0B8E9WCXGFN1A33V2")
    later = create_event("20250101-b", id="01JQH4HPD0B8E9WCXGFN1A33V3")
    result = replayer.apply_page([good, bad, later], cursor_peer="p")
    assert [o.event_id for o in result.outcomes] == [good.id]
    assert result.failed == bad
    assert result.error is not None
    assert state.get(cortex.conn, "peer:p:last_event") == good.id
    assert rows(cortex.conn, "SELECT id FROM traces") == [("20250101-a",)]


def test_clock_merge_overflow_is_logged_and_the_event_counts(tmp_path: Path) -> None:
    logs: list[tuple[Level, str]] = []
    cortex = open_cortex(make_replica(tmp_path))
    replayer = Replayer(cortex, log=Log(lambda level, line: logs.append((level, line))))
    huge = {f"{n:026d}": 1 for n in range(300)}
    outcome = apply_one(replayer, replace(create_event(), vclock=huge), cursor_peer="p")
    assert outcome.stored
    assert logs == [
        (
            Level.WARNING,
            "[federation] merge clock: vector clock too large (300 entries, max 256): possible clock inflation "
            "attack",
        )
    ]
    assert state.get(cortex.conn, "peer:p:last_event") == outcome.event_id
    cortex.close()


_CLOCK_KEYS = st.sampled_from(
    [
        A_ID,
        B_ID,
        "\ud800" + A_ID[3:],
        "\udc00" + A_ID[3:],
        "\ufffd" + A_ID[3:],
        "legacy-name",
        "x" * 27,
        "<&>" + B_ID[3:],
    ]
)
_CLOCKS = st.one_of(
    st.none(),
    st.dictionaries(_CLOCK_KEYS, st.sampled_from([0, 1, 2, 7, vclock.UINT64_MAX]), max_size=4),
    st.just({f"{n:026d}": 1 for n in range(300)}),
)
_STORED_CLOCKS = st.sampled_from(
    [
        None,
        "",
        "null",
        "{}",
        "not json",
        '{"legacy-name":4}',
        f'{{"{A_ID}":3,"{B_ID}":9}}',
        f'{{"\\ud800{A_ID[3:]}":5}}',
    ]
)


@given(_STORED_CLOCKS, st.lists(_CLOCKS, max_size=8), st.integers(min_value=1, max_value=8))
@settings(max_examples=60, deadline=None)
def test_clock_kept_in_memory_across_a_page_stores_what_a_merge_per_event_stores(
    stored: str | None, clocks: list[dict[str, int] | None], page_size: int
) -> None:
    expected = stored
    expected_logs: list[str] = []
    for clock in clocks:
        if not clock:
            continue
        try:
            merged = vclock.merge_for_replay(vclock.decode(expected), clock)
        except VClockTooLargeError as exc:
            expected_logs.append(MERGE_CLOCK_LOG.format(err=exc))
            continue
        expected = vclock.encode(merged)
    with tempfile.TemporaryDirectory() as tmp:
        cortex = open_cortex(make_replica(Path(tmp)))
        if stored is not None:
            state.put(cortex.conn, state.VCLOCK_KEY, stored)
        logs: list[str] = []
        replayer = Replayer(cortex, log=Log(lambda _level, line: logs.append(line)))
        events = [
            event("vote", data={"delta": 1}, id=f"01JQH4HPD0B8E9WCXGFN1A{n:04d}", vclock=clock)
            for n, clock in enumerate(clocks)
        ]
        for start in range(0, len(events), page_size):
            result = replayer.apply_page(events[start : start + page_size], cursor_peer="p")
            assert result.error is None
        assert logs == expected_logs
        assert state.get(cortex.conn, state.VCLOCK_KEY) == (expected or "")
        cortex.close()


# ---------------------------------------------------------------------------------------------------------
# Trap decisions (docs/compatibility.md (section "Replay"))


def test_tag_update_on_missing_trace_is_stored_and_folded_into_the_later_create(
    replica: tuple[Cortex, Replayer],
) -> None:
    cortex, replayer = replica
    tags = event("tag_update", data={"tags": ["late", "late", "tags"]}, id="01JQH4HPD0B8E9WCXGFN1A33V9")
    assert apply_one(replayer, tags, cursor_peer="p").effect == "stored-only"
    apply_one(replayer, create_event(id="01JQH4HPD0B8E9WCXGFN1A33V1"))
    assert rows(cortex.conn, "SELECT tag FROM trace_tags ORDER BY tag") == [("late",), ("tags",)]


def test_duplicate_tags_and_parents_do_not_swallow_the_create(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    data = {
        "title": "A",
        "type": "note",
        "tags": ["p", "p", "q"],
        "derived_from": ["20200101-p", "20200101-p"],
        "body": "",
    }
    assert apply_one(replayer, event("create", data=data)).effect == "created"
    assert rows(cortex.conn, "SELECT tag FROM trace_tags ORDER BY tag") == [("p",), ("q",)]
    assert rows(cortex.conn, "SELECT derived_from FROM trace_lineage") == [("20200101-p",)]
    assert "    - p\n    - q\n" in (cortex.path / "traces" / "20250101-a.md").read_text()


def test_create_on_an_existing_row_keeps_it_and_stores_the_event(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    apply_one(replayer, create_event(body="mine\n"))
    before = (cortex.path / "traces" / "20250101-a.md").read_text()
    outcome = apply_one(replayer, create_event(body="theirs\n", id="01JQH4HPD0B8E9WCXGFN1A33W0"))
    assert (outcome.stored, outcome.effect) == (True, "stored-only")
    assert (cortex.path / "traces" / "20250101-a.md").read_text() == before


def test_updated_after_create_is_the_event_timestamp(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    apply_one(replayer, create_event())
    assert rows(cortex.conn, "SELECT created_at, updated_at FROM traces") == [("2025-01-01T00:00:00Z",) * 2]


def test_purge_removes_the_file_wherever_it_is_and_the_fts_row(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    apply_one(replayer, create_event())  # active, never trashed here (recovered locally, say)
    apply_one(replayer, event("purge", id="01JQH4HPD0B8E9WCXGFN1A33W1"))
    assert not (cortex.path / "traces" / "20250101-a.md").exists()
    assert rows(cortex.conn, "SELECT count(*) FROM traces_fts") == [(0,)]


def test_move_after_a_later_purge_ran_ahead_of_the_commit(replica: tuple[Cortex, Replayer]) -> None:
    """A page [trash, purge] crashed after the purge deleted the file: the resumed trash still applies."""
    cortex, replayer = replica
    apply_one(replayer, create_event(), cursor_peer="p")
    (cortex.path / "traces" / "20250101-a.md").unlink()
    replayer.apply_page(
        [event("trash", id="01JQH4HPD0B8E9WCXGFN1A33W1"), event("purge", id="01JQH4HPD0B8E9WCXGFN1A33W2")],
        "p",
    )
    assert not list((cortex.path / "trash" / "traces").iterdir())
    assert rows(cortex.conn, "SELECT count(*) FROM traces") == [(0,)]


def test_a_purge_of_a_trace_promoted_to_long_here_is_stored_not_a_cursor_pinned_for_good(
    tmp_path: Path,
) -> None:
    """Go and Rust abort the DELETE on the long-term trigger and pin the cursor before the purge for good: no
    later event of that peer ever arrives. Here the purge is stored, not applied (the long trace stays), with
    a warning, and the page goes on."""
    cortex, _ = open_replica(make_replica(tmp_path / "dst"))
    logs: list[tuple[Level, str]] = []
    replayer = Replayer(cortex, log=Log(lambda level, line: logs.append((level, line))))
    promote = event("promote", data={"from": "short", "to": "long"}, id="01JQH4HPD0B8E9WCXGFN1A33W1")
    purge = event("purge", id="01JQH4HPD0B8E9WCXGFN1A33W2")
    after = create_event("20250101-b", id="01JQH4HPD0B8E9WCXGFN1A33W3")
    result = replayer.apply_page([create_event(), promote, purge, after], "p")
    assert result.failed is None
    assert [outcome.effect for outcome in result.outcomes] == [
        "created",
        "tier-changed",
        "stored-only",
        "created",
    ]
    assert (cortex.path / "traces" / "20250101-a.md").exists()
    assert rows(cortex.conn, "SELECT id, tier FROM traces ORDER BY id") == [
        ("20250101-a", "long"),
        ("20250101-b", "short"),
    ]
    assert logs == [
        (
            Level.WARNING,
            "[federation] purge event 01JQH4HPD0B8E9WCXGFN1A33W2 of long-term trace 20250101-a stored, not "
            "applied (long-term traces are removed by purge_long_term or purge_hard)",
        )
    ]
    cortex.close()


def test_archive_of_a_trashed_trace_is_stored_only(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    apply_one(replayer, create_event())
    apply_one(replayer, event("trash", id="01JQH4HPD0B8E9WCXGFN1A33W1"))
    assert apply_one(replayer, event("archive", id="01JQH4HPD0B8E9WCXGFN1A33W2")).effect == "stored-only"
    assert (cortex.path / "trash" / "traces" / "20250101-a.md").exists()


def test_second_same_day_divergence_gets_a_suffix(source: Cortex, replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    tid, created = authoring.create_trace(source, "Contested", "note", "base\n", now="2025-01-01T00:00:00Z")
    apply_one(replayer, created)
    for round_ in (1, 2):
        # Each round: a local edit on the replica and a remote one that has not seen it.
        authoring.update_trace(cortex, tid, body=f"replica {round_}\n")
        remote = authoring.update_trace(source, tid, body=f"source {round_}\n")
        assert apply_one(replayer, remote).effect == "diverged"
    ids = [r[0] for r in rows(cortex.conn, "SELECT id FROM traces WHERE type = 'divergence' ORDER BY id")]
    assert ids == ["20250601-divergence-20250101-contested", "20250601-divergence-20250101-contested-2"]
    # The original keeps the local content; the remote update is stored, not applied.
    assert (cortex.path / "traces" / f"{tid}.md").read_text().endswith("\n\nreplica 2\n")


def test_enforce_accepts_our_own_events_served_back_without_a_local_key(tmp_path: Path) -> None:
    """Trap §9.6: the already-seen gate runs before the signature gate."""
    cortex = open_cortex(make_replica(tmp_path, verify="enforce"))
    assert cortex.manifest.federation is not None
    assert cortex.manifest.federation.effective_verify == "enforce"
    _, own = authoring.create_trace(cortex, "Mine", "note", "m\n")
    replayer = Replayer(cortex, log=SILENT)
    assert apply_one(replayer, own, cursor_peer="p").effect == "duplicate"
    # An event claiming our id that we do not hold must still verify under our (missing) key.
    with pytest.raises(ReplayError, match="verify=enforce"):
        apply_one(replayer, replace(own, id="01JQH4HPD0B8E9WCXGFN1A33W9", trace_id="20250101-new"))
    cortex.close()


def test_already_seen_checks_the_whole_log_by_id_not_only_the_trace(replica: tuple[Cortex, Replayer]) -> None:
    """Go looks for the id among the trace's rows only: an id reused on another trace passed the gate, wrote
    that trace's file, then failed the events key, which its UNIQUE rule swallowed (the file stayed behind)."""
    cortex, replayer = replica
    apply_one(replayer, create_event(), cursor_peer="p")
    reused = create_event("20250101-b", body="other\n")  # the same event id, another trace
    outcome = apply_one(replayer, reused, cursor_peer="p")
    assert (outcome.stored, outcome.effect) == (False, "duplicate")
    assert rows(cortex.conn, "SELECT id FROM traces") == [("20250101-a",)]
    assert rows(cortex.conn, "SELECT trace_id FROM events") == [("20250101-a",)]
    assert not (cortex.path / "traces" / "20250101-b.md").exists()


def test_a_unique_violation_fails_the_event_instead_of_passing_as_success(
    replica: tuple[Cortex, Replayer],
) -> None:
    """Go's blanket rule: any error text with `UNIQUE constraint failed` was a success, nothing stored and the
    cursor moved on. Here only a repeat of a stored event id is benign; any other constraint pins the cursor."""
    cortex, replayer = replica
    cortex.conn.execute("CREATE UNIQUE INDEX test_one_title ON traces(title)")  # any UNIQUE a handler may hit
    first = create_event(id="01JQH4HPD0B8E9WCXGFN1A33V1")
    clash = create_event("20250101-b", id="01JQH4HPD0B8E9WCXGFN1A33V2")  # the same title "A"
    result = replayer.apply_page([first, clash], cursor_peer="p")
    assert [o.event_id for o in result.outcomes] == [first.id]
    assert result.failed == clash
    assert result.error is not None
    assert "UNIQUE constraint failed: traces.title" in str(result.error)
    assert classify.classify_replay_error(result.error) == "other"
    assert state.get(cortex.conn, "peer:p:last_event") == first.id
    assert rows(cortex.conn, "SELECT id FROM events") == [(first.id,)]
    assert rows(cortex.conn, "SELECT id FROM traces") == [("20250101-a",)]
    assert not (cortex.path / "traces" / "20250101-b.md").exists()


def test_events_replay_authors_carry_the_manifest_name_as_origin(tmp_path: Path, source: Cortex) -> None:
    """Go and Rust stamp the registry name (`config.yaml`) into the events they author; noemafed the manifest's
    `name`, which it always has (a cortex given by path has no registry name) and which does not change with
    how the cortex was selected."""
    path = make_replica(tmp_path / "dst")  # the directory, and the registry entry if any, say "replica"
    manifest = path / "cortex.md"
    manifest.write_text(manifest.read_text().replace("\nname: replica\n", "\nname: research-box\n", 1))
    cortex, replayer = open_replica(path)
    tid, created = authoring.create_trace(source, "Contested", "note", "base\n", now="2025-01-01T00:00:00Z")
    apply_one(replayer, created)
    authoring.update_trace(cortex, tid, body="mine\n")
    assert apply_one(replayer, authoring.update_trace(source, tid, body="theirs\n")).effect == "diverged"
    [authored] = [e for e in all_events(cortex.conn) if e.cortex_id == REPLICA_ID and e.action == "create"]
    assert authored.origin == "research-box"
    assert json.loads(authored.data)["origin"] == "research-box"
    assert rows(cortex.conn, "SELECT origin FROM traces WHERE id = ?", authored.trace_id) == [
        ("research-box",)
    ]
    text = (cortex.path / "traces" / f"{authored.trace_id}.md").read_text()
    assert "\norigin: research-box\n" in text
    assert f"### Version from research-box ({REPLICA_ID[:8]})" in text
    cortex.close()


# ---------------------------------------------------------------------------------------------------------
# Usage merge


def test_merge_usage_takes_the_max_and_skips_own_and_unknown(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    apply_one(replayer, create_event())
    rows_in = [
        {
            "trace_id": "20250101-a",
            "peer_cortex_id": B_ID,
            "read_count": 3,
            "modify_count": 1,
            "updated_at": "2025-01-02T00:00:00Z",
            "last_read_at": "2025-01-02T00:00:00Z",
        },
        {
            "trace_id": "20250101-a",
            "peer_cortex_id": B_ID,
            "read_count": 2,
            "modify_count": 5,
            "search_hit_count": 4,
            "updated_at": "2025-01-01T00:00:00Z",
        },
        {
            "trace_id": "20250101-a",
            "peer_cortex_id": REPLICA_ID,
            "read_count": 99,
            "modify_count": 0,
            "updated_at": "x",
        },
        {
            "trace_id": "20250101-zzz",
            "peer_cortex_id": B_ID,
            "read_count": 1,
            "modify_count": 0,
            "updated_at": "x",
        },
    ]
    assert replayer.merge_usage(rows_in) == 2
    assert rows(
        cortex.conn,
        "SELECT trace_id, peer_cortex_id, read_count, modify_count, last_read_at, updated_at, search_hit_count FROM trace_usage",
    ) == [("20250101-a", B_ID, 3, 5, "2025-01-02T00:00:00Z", "2025-01-02T00:00:00Z", 4)]


def test_null_and_empty_columns_follow_noema(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    data = {"title": "A", "type": "note", "body": ""}  # no author, no hashes
    apply_one(replayer, event("create", data=data, vclock=None))
    assert rows(
        cortex.conn, "SELECT author, archived_at, trashed_at, content_hash, source_hash FROM traces"
    ) == [("", None, None, "", None)]
    assert rows(cortex.conn, "SELECT vclock FROM events") == [("null",)]


# ---------------------------------------------------------------------------------------------------------
# `update` against the trace's current version (issue 12: the rules of the live build, convergent)

X_ID = B_ID


def _update(event_id: str, clock: dict[str, int], body: str) -> Event:
    data = {"title": "A", "type": "note", "tags": ["t"], "origin": "research", "body": body}
    return event("update", data=data, id=event_id, vclock=clock)


def _body(cortex: Cortex) -> str:
    return (cortex.path / "traces" / "20250101-a.md").read_text().split("\n---\n", 1)[1]


def _divergences(cortex: Cortex) -> int:
    return len(rows(cortex.conn, "SELECT id FROM traces WHERE type = 'divergence'"))


OLDER = _update("01JQH4HPD0B8E9WCXGFN1A33W1", {A_ID: 2}, "older\n")
NEWER = _update("01JQH4HPD0B8E9WCXGFN1A33W2", {A_ID: 3}, "newer\n")


@pytest.mark.parametrize("order", [(OLDER, NEWER), (NEWER, OLDER)], ids=["in order", "newer first"])
def test_updates_end_with_the_newest_content_in_any_arrival_order(
    replica: tuple[Cortex, Replayer], order: tuple[Event, Event]
) -> None:
    """Bug (Go v0.9.1, copied until issue 12): a stale update was re-applied, so content went back in time."""
    cortex, replayer = replica
    apply_one(replayer, create_event())
    outcomes = [apply_one(replayer, update) for update in order]
    assert _body(cortex) == "\nnewer\n"
    assert all(outcome.stored for outcome in outcomes)  # both are in the log, and served on
    assert _divergences(cortex) == 0


def test_an_update_whose_clock_equals_the_current_one_is_stored_only(
    replica: tuple[Cortex, Replayer],
) -> None:
    cortex, replayer = replica
    apply_one(replayer, create_event())
    apply_one(replayer, OLDER)
    twin = _update("01JQH4HPD0B8E9WCXGFN1A33W3", {A_ID: 2}, "twin\n")
    assert apply_one(replayer, twin).effect == "stored-only"
    assert _body(cortex) == "\nolder\n"
    assert _divergences(cortex) == 0


def test_a_stored_stale_update_does_not_hide_a_later_conflict(replica: tuple[Cortex, Replayer]) -> None:
    """Rust compares with the newest stored snapshot event, stale ones included; then an edit concurrent with
    the content on disk, but newer than the stale event, overwrote it with no divergence recorded."""
    cortex, replayer = replica
    apply_one(replayer, create_event())  # {A: 1}
    apply_one(replayer, _update("01JQH4HPD0B8E9WCXGFN1A33W1", {A_ID: 1, X_ID: 1}, "from x\n"))
    stale = _update("01JQH4HPD0B8E9WCXGFN1A33W5", {A_ID: 1}, "stale\n")  # a later id, an older clock
    assert apply_one(replayer, stale).effect == "stored-only"
    conflict = _update("01JQH4HPD0B8E9WCXGFN1A33W6", {A_ID: 2}, "from a\n")  # beats the stale one, not x's
    assert apply_one(replayer, conflict).effect == "diverged"
    assert _body(cortex) == "\nfrom x\n"
    assert _divergences(cortex) == 1


def test_an_update_that_dominates_every_concurrent_version_resolves_them(
    replica: tuple[Cortex, Replayer],
) -> None:
    cortex, replayer = replica
    apply_one(replayer, create_event())
    apply_one(replayer, _update("01JQH4HPD0B8E9WCXGFN1A33W1", {A_ID: 1, X_ID: 1}, "from x\n"))
    assert (
        apply_one(replayer, _update("01JQH4HPD0B8E9WCXGFN1A33W2", {A_ID: 2}, "from a\n")).effect == "diverged"
    )
    merged = _update("01JQH4HPD0B8E9WCXGFN1A33W7", {A_ID: 3, X_ID: 1}, "merged\n")
    assert apply_one(replayer, merged).effect == "updated"
    assert _body(cortex) == "\nmerged\n"


# Tiers: the create fold and the long-term purge (tests for seeded bugs, docs/testing.md)


def _replicate(source: Cortex, replayer: Replayer, first: list[str] | None = None) -> None:
    """Replay every event of `source`; the actions named in `first` arrive before the others (gossip order)."""
    log = all_events(source.conn)
    early = [e for e in log if e.action in (first or [])]
    for item in early + [e for e in log if e not in early]:
        apply_one(replayer, item, cursor_peer="p")


def _tier_and_file(cortex: Cortex, trace_id: str) -> tuple[object, str]:
    [(tier,)] = rows(cortex.conn, "SELECT tier FROM traces WHERE id = ?", trace_id)
    return tier, (cortex.path / "traces" / f"{trace_id}.md").read_text()


@pytest.mark.parametrize(
    ("created", "steps", "expected"),
    [
        ("short", [("promote", "mid"), ("promote", "long"), ("consolidate", "")], "long"),
        ("long", [("consolidate", "")], "long"),
        ("mid", [("consolidate", "")], "mid"),
        ("short", [("consolidate", "")], "mid"),
        ("short", [("consolidate", ""), ("demote", "short")], "short"),
    ],
)
def test_the_create_fold_never_lowers_a_long_trace_to_mid(
    source: Cortex,
    replica: tuple[Cortex, Replayer],
    created: str,
    steps: list[tuple[str, str]],
    expected: str,
) -> None:
    """Bug f: the create fold setting `mid` from `long`. A consolidate only turns `short` into `mid` (cortex.md
    §6.2), in the fold over tier events that arrived before their create as much as when replayed in order."""
    cortex, replayer = replica
    tid, _ = authoring.create_trace(
        source, "Distilled", "note", "b\n", tier=created, now="2025-01-01T00:00:00Z"
    )
    for action, to in steps:
        if action == "consolidate":
            authoring.consolidate(source, tid, ["20241231-x"])
        else:
            getattr(authoring, action)(source, tid, to)
    _replicate(source, replayer, first=["promote", "demote", "consolidate"])
    assert _tier_and_file(source, tid)[0] == expected
    assert _tier_and_file(cortex, tid) == _tier_and_file(source, tid)


@pytest.mark.parametrize("archived", [True, False], ids=["archived", "active"])
def test_purge_long_term_removes_the_archived_file(
    source: Cortex, replica: tuple[Cortex, Replayer], archived: bool
) -> None:
    """Bug e: purge_long_term leaving the archived file. The tombstone row stays; the active and the archived
    file both go (cortex.md §6.2), or `noema sync` would re-index the purged content from archive/."""
    cortex, replayer = replica
    tid, _ = authoring.create_trace(source, "Secret", "note", "b\n", tier="long", now="2025-01-01T00:00:00Z")
    if archived:
        authoring.archive(source, tid)
    purge = authoring.purge_long_term(source, tid, "gdpr request")
    log = all_events(source.conn)
    for item in log[:-1]:
        apply_one(replayer, item, cursor_peer="p")
    folder = "archive/traces" if archived else "traces"
    assert [p.relative_to(cortex.path).as_posix() for p in cortex.path.rglob(f"{tid}.md")] == [
        f"{folder}/{tid}.md"
    ]
    assert apply_one(replayer, log[-1], cursor_peer="p").effect == "purged-long-term"
    assert list(cortex.path.rglob(f"{tid}.md")) == list(source.path.rglob(f"{tid}.md")) == []
    assert rows(cortex.conn, "SELECT tier, purged_at, purge_reason FROM traces") == [
        ("long", purge.timestamp, "gdpr request")
    ]
    assert rows(cortex.conn, "SELECT body FROM traces_fts") == [("[purged: gdpr request]",)]


@pytest.mark.parametrize("order", [(OLDER, NEWER), (NEWER, OLDER)], ids=["in order", "newer first"])
def test_updates_in_one_page_are_compared_with_what_the_page_stored_before_them(
    replica: tuple[Cortex, Replayer], order: tuple[Event, Event]
) -> None:
    """The current version is kept for the transaction: an update stored earlier in the same page counts."""
    cortex, replayer = replica
    result = replayer.apply_page([create_event(), *order])
    assert result.failed is None
    assert _body(cortex) == "\nnewer\n"
    assert _divergences(cortex) == 0
