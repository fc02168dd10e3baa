"""What mutation testing of replay.py found untested (docs/testing.md, "Mutation testing"): one behaviour each.

Real cortexes, real SQLite files and real trace files, like the other replay tests; every expected text is the
constant of the interface it pins, written out.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import replace
from pathlib import Path

import authoring
import pytest
from replay_helpers import REPLICA_ID, all_events, apply_one, end_state, make_replica, open_replica
from test_replay import A_ID, B_ID, create_event, event
from test_replay_crash import MOVES, OTHER, Kill, files, kill_at, two_replicas
from test_replay_signatures import A_KEY, SEED, spec_events

from noemafed.cortex import frontmatter, state, traces
from noemafed.cortex.events import Event
from noemafed.cortex.open import Cortex, open_cortex
from noemafed.errors import ReplayError
from noemafed.federation.replay import PageResult, Replayer, ReplayOutcome
from noemafed.logs import Level, Log
from noemafed.signing.eventsig import sign_event
from noemafed.text.gotext import go_json_dumps

T = "20250101-a"
_INT64_MAX = 2**63 - 1


@pytest.fixture
def replica(tmp_path: Path) -> tuple[Cortex, Replayer]:
    cortex, replayer = open_replica(make_replica(tmp_path / "dst"))
    yield cortex, replayer  # type: ignore[misc]
    cortex.close()


def _logged_replica(path: Path) -> tuple[Cortex, Replayer, list[tuple[Level, str]]]:
    logs: list[tuple[Level, str]] = []
    cortex = open_cortex(path)
    return cortex, Replayer(cortex, log=Log(lambda level, line: logs.append((level, line)))), logs


def _usage(**fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        "trace_id": T,
        "peer_cortex_id": B_ID,
        "read_count": 1,
        "modify_count": 1,
        "search_hit_count": 1,
        "updated_at": "2025-01-02T00:00:00Z",
    }
    row.update(fields)
    return {key: value for key, value in row.items() if value is not ...}


def _usage_rows(cortex: Cortex) -> list[tuple[object, ...]]:
    return cortex.conn.execute(
        "SELECT trace_id, peer_cortex_id, read_count, modify_count, last_read_at, updated_at, search_hit_count "
        "FROM trace_usage ORDER BY peer_cortex_id"
    ).fetchall()


# ---------------------------------------------------------------------------------------------------------
# Usage rows (merge_usage, _usage_values)


def test_a_skipped_usage_row_does_not_end_the_batch(replica: tuple[Cortex, Replayer]) -> None:
    """Our own row and a row for a trace we do not hold are skipped; the rows after them still merge."""
    cortex, replayer = replica
    apply_one(replayer, create_event())
    merged = replayer.merge_usage(
        [
            _usage(peer_cortex_id=REPLICA_ID, read_count=99),
            _usage(trace_id="20250101-unknown"),
            _usage(read_count=3),
        ]
    )
    assert merged == 1
    assert _usage_rows(cortex) == [(T, B_ID, 3, 1, None, "2025-01-02T00:00:00Z", 1)]


def test_a_missing_or_null_usage_counter_is_zero(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    apply_one(replayer, create_event())
    missing = _usage(read_count=..., modify_count=..., search_hit_count=...)
    null = _usage(peer_cortex_id=A_ID, read_count=None, modify_count=None, search_hit_count=None)
    assert replayer.merge_usage([missing, null]) == 2
    assert _usage_rows(cortex) == [
        (T, A_ID, 0, 0, None, "2025-01-02T00:00:00Z", 0),
        (T, B_ID, 0, 0, None, "2025-01-02T00:00:00Z", 0),
    ]


def test_the_largest_sqlite_integer_is_a_valid_usage_counter(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    apply_one(replayer, create_event())
    top = _usage(read_count=_INT64_MAX, modify_count=_INT64_MAX, search_hit_count=_INT64_MAX)
    assert replayer.merge_usage([top]) == 1
    assert _usage_rows(cortex) == [
        (T, B_ID, _INT64_MAX, _INT64_MAX, None, "2025-01-02T00:00:00Z", _INT64_MAX)
    ]


@pytest.mark.parametrize(
    "bad",
    [
        _usage(trace_id="../x"),
        _usage(peer_cortex_id=""),
        _usage(peer_cortex_id=..., read_count=3),
        _usage(updated_at=""),
        _usage(read_count=-1),
        _usage(modify_count=-1),
        _usage(search_hit_count=-1),
        _usage(read_count=_INT64_MAX + 1),
        _usage(modify_count=_INT64_MAX + 1),
        _usage(search_hit_count=_INT64_MAX + 1),
    ],
    ids=lambda row: (
        ",".join(f"{k}={v!r}" for k, v in row.items() if _usage().get(k, ...) != v) or "missing peer"
    ),
)
def test_each_check_of_a_usage_row_refuses_it_alone(
    replica: tuple[Cortex, Replayer], bad: dict[str, object]
) -> None:
    """Every other field of the row is valid: the one check must refuse the page on its own, and nothing merges."""
    cortex, replayer = replica
    apply_one(replayer, create_event())
    trace_id = bad.get("trace_id")
    with pytest.raises(ReplayError) as info:
        replayer.merge_usage([_usage(), bad])
    assert str(info.value) == f'invalid remote usage row for trace "{trace_id}"'
    assert _usage_rows(cortex) == []


def test_an_invalid_usage_row_names_its_trace_quoted_and_scrubbed(replica: tuple[Cortex, Replayer]) -> None:
    _, replayer = replica
    with pytest.raises(ReplayError) as info:
        replayer.merge_usage([_usage(trace_id='20250101-\ud800"x')])
    assert str(info.value) == 'invalid remote usage row for trace "20250101-\ufffd\\"x"'


# ---------------------------------------------------------------------------------------------------------
# The signature gate (cortex.md §6.1)


def _signed_replica(tmp_path: Path, cortex_id: str, public_key: str) -> Path:
    """A replica under verify=enforce whose manifest names a signing key (its seed file is never read here)."""
    path = make_replica(tmp_path / "signed", cortex_id=cortex_id, verify="enforce")
    manifest = path / "cortex.md"
    yaml_text, body = frontmatter.split_manifest(manifest.read_text())
    raw = frontmatter.loads(yaml_text)
    raw["signing"] = {"public_key": public_key, "private_key_file": "noema-signing.key"}
    manifest.write_text(frontmatter.join_manifest(frontmatter.dumps(raw), body))
    return path


def test_our_own_event_we_do_not_hold_verifies_under_our_key(tmp_path: Path) -> None:
    """An event under our id that we no longer hold (a cortex restored from a backup, its events served back) is
    checked against our own key: signed by it, it is applied; signed by another key it carries, it is refused."""
    cortex, replayer, _ = _logged_replica(_signed_replica(tmp_path, A_ID, A_KEY))
    create, _, promote = spec_events()  # signed with A's seed, A being us now
    assert apply_one(replayer, create).effect == "created"
    impostor = sign_event(replace(promote, signature="", pubkey=""), b"\x22" * 32)
    with pytest.raises(ReplayError) as info:
        apply_one(replayer, impostor)
    assert str(info.value) == (
        f"rejecting event {promote.id} from cortex {A_ID}: signature does not verify (verify=enforce)"
    )
    assert apply_one(replayer, promote).effect == "tier-changed"
    assert state.get_cortex_pubkey(cortex.conn, A_ID) == ""  # our own key is never pinned as a peer's
    cortex.close()


def test_our_own_event_without_a_local_key_names_the_missing_key(tmp_path: Path) -> None:
    cortex, replayer, _ = _logged_replica(make_replica(tmp_path, cortex_id=A_ID, verify="enforce"))
    create = spec_events()[0]
    with pytest.raises(ReplayError) as info:
        apply_one(replayer, create)
    assert str(info.value) == (
        f"rejecting event {create.id} from cortex {A_ID}: event claims this cortex's id but no local signing key "
        "is configured (verify=enforce)"
    )
    cortex.close()


def test_a_pinned_key_stays_pinned_when_later_events_verify_under_it(tmp_path: Path) -> None:
    cortex, replayer, _ = _logged_replica(make_replica(tmp_path, verify="enforce"))
    create, _, promote = spec_events()
    apply_one(replayer, create)  # pins A's key on first use
    apply_one(replayer, promote)  # verifies under the pinned key
    assert state.get_cortex_pubkey(cortex.conn, A_ID) == A_KEY
    unsigned_key = sign_event(
        replace(promote, id="01JQK7WV80KW0C7MMADCF4Y8MZ", signature="", pubkey=""), SEED
    )
    apply_one(replayer, replace(unsigned_key, pubkey=""))  # signed, no key carried: the pin verifies it
    assert state.get_cortex_pubkey(cortex.conn, A_ID) == A_KEY
    cortex.close()


# ---------------------------------------------------------------------------------------------------------
# The source-lock gate


def _locked_trace(replayer: Replayer) -> str:
    create = spec_events()[0]
    payload = create.payload() | {"source_locked": True}
    apply_one(
        replayer, sign_event(replace(create, data=go_json_dumps(payload), signature="", pubkey=""), SEED)
    )
    return create.trace_id


def _by(seed: bytes, cortex_id: str, action: str, trace_id: str, event_id: str) -> Event:
    base = spec_events()[0]
    unsigned = replace(
        base,
        id=event_id,
        action=action,
        trace_id=trace_id,
        cortex_id=cortex_id,
        data="{}",
        signature="",
        pubkey="",
    )
    return sign_event(unsigned, seed)


def test_the_source_lock_binds_only_update_trash_and_purge(tmp_path: Path) -> None:
    """Another cortex may archive a locked trace; only its owner may trash it."""
    cortex, replayer, _ = _logged_replica(make_replica(tmp_path, verify="enforce"))
    trace_id = _locked_trace(replayer)
    intruder = b"\x33" * 32
    archive = _by(intruder, B_ID, "archive", trace_id, "01JQK7WV80KW0C7MMADCF4Y8M1")
    assert apply_one(replayer, archive).effect == "archived"
    owner_trash = _by(SEED, A_ID, "trash", trace_id, "01JQK7WV80KW0C7MMADCF4Y8M2")
    assert apply_one(replayer, owner_trash).effect == "trashed"
    cortex.close()


def test_an_unlocked_trace_may_be_trashed_by_any_cortex(tmp_path: Path) -> None:
    cortex, replayer, _ = _logged_replica(make_replica(tmp_path, verify="enforce"))
    create = spec_events()[0]
    apply_one(replayer, create)
    trash = _by(b"\x33" * 32, B_ID, "trash", create.trace_id, "01JQK7WV80KW0C7MMADCF4Y8M3")
    assert apply_one(replayer, trash).effect == "trashed"
    cortex.close()


def test_a_source_lock_violation_under_warn_is_logged_and_applied(tmp_path: Path) -> None:
    cortex, replayer, logs = _logged_replica(make_replica(tmp_path, verify="warn"))
    trace_id = _locked_trace(replayer)
    trash = _by(b"\x33" * 32, B_ID, "trash", trace_id, "01JQK7WV80KW0C7MMADCF4Y8M4")
    assert apply_one(replayer, trash).effect == "trashed"
    assert logs == [
        (
            Level.WARNING,
            "[federation] rejecting source-lock violation: event 01JQK7WV80KW0C7MMADCF4Y8M4 (trash) from cortex "
            f"{B_ID} on trace {trace_id} owned by {A_ID} (verify=warn, applying anyway)",
        )
    ]
    cortex.close()


# ---------------------------------------------------------------------------------------------------------
# The clock merge and failures


def test_a_clock_merged_through_the_row_logs_its_overflow(tmp_path: Path) -> None:
    """A clock the stored text cannot keep (a lone surrogate in a key) merges through the row; over 256
    entries that merge is refused, logged like the merge in memory, and the event still counts."""
    cortex, replayer, logs = _logged_replica(make_replica(tmp_path))
    huge = {f"{n:026d}": 1 for n in range(300)} | {"\ud800" + A_ID[3:]: 1}
    outcome = apply_one(replayer, replace(create_event(), vclock=huge), cursor_peer="p")
    assert (outcome.stored, outcome.effect) == (True, "created")
    assert logs == [
        (
            Level.WARNING,
            "[federation] merge clock: vector clock too large (301 entries, max 256): possible clock inflation "
            "attack",
        )
    ]
    assert state.get(cortex.conn, state.VCLOCK_KEY) == ""
    cortex.close()


def test_a_failed_statement_keeps_the_database_error_as_its_cause(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    apply_one(replayer, create_event())
    cortex.conn.execute(
        "CREATE TRIGGER no_votes BEFORE UPDATE OF tier_votes ON traces BEGIN SELECT RAISE(ABORT, 'votes are off'); END"
    )
    result = replayer.apply_page([event("vote", data={"delta": 1}, id="01JQH4HPD0B8E9WCXGFN1A33VZ")])
    assert isinstance(result.error, ReplayError)
    assert isinstance(result.error.__cause__, sqlite3.IntegrityError)
    assert str(result.error.__cause__) == "votes are off"


def test_an_unexpected_exception_is_named_by_its_type(replica: tuple[Cortex, Replayer]) -> None:
    """A payload nested past Python's stack is no ValueError: the event fails with the exception's type named."""
    _, replayer = replica
    nested = "[" * 100_000 + "]" * 100_000
    result = replayer.apply_page([replace(create_event(), data='{"tags":' + nested + "}")])
    assert isinstance(result.error, ReplayError)
    assert str(result.error).startswith(
        "replaying create event 01JQH4HPD0B8E9WCXGFN1A33VE: RecursionError: maximum recursion depth exceeded"
    )
    assert isinstance(result.error.__cause__, RecursionError)


# ---------------------------------------------------------------------------------------------------------
# Divergence


def test_a_conflicting_update_under_our_own_id_is_recorded_local_version_first(
    replica: tuple[Cortex, Replayer],
) -> None:
    """Our own update that we no longer hold (served back after a restore) can conflict with what we hold now:
    both versions carry our id and our name, and the record lists the local one first."""
    cortex, replayer = replica
    apply_one(replayer, create_event())  # {A: 1}
    authoring.update_trace(cortex, T, body="local\n")  # {A: 1, REPLICA: 1}
    ours = event(
        "update",
        data={"title": "A", "type": "note", "tags": ["t"], "origin": "replica", "body": "restored\n"},
        id="01JQH4HPD0B8E9WCXGFN1A33W1",
        cortex_id=REPLICA_ID,
        origin="replica",
        vclock={A_ID: 2},
    )
    assert apply_one(replayer, ours).effect == "diverged"
    [record] = [e for e in all_events(cortex.conn) if e.action == "create" and e.cortex_id == REPLICA_ID]
    text = (cortex.path / "traces" / f"{record.trace_id}.md").read_text()
    local = text.index("\nlocal\n")
    assert text.index("### Version from replica (01JR0000)") < local < text.index("\nrestored")


def _remote_edit(body: str, **fields: object) -> Event:
    data = {"title": "A", "type": "note", "tags": ["t"], "origin": "research", "body": body}
    defaults: dict[str, object] = {"id": "01JQH4HPD0B8E9WCXGFN1A33W1", "vclock": {A_ID: 2}}
    return event("update", data=data, **(defaults | fields))


@pytest.mark.parametrize(
    ("remote_cortex", "local_body", "remote_label", "local_end"),
    [
        (A_ID, "local X\n", "research (01JQ7X2B)", "local X"),
        ("", "local \t\n\n", "research", "local \t"),
    ],
    ids=["ends in X", "empty cortex id, ends in blanks"],
)
def test_a_divergence_record_is_the_spec_text_byte_for_byte(
    replica: tuple[Cortex, Replayer], remote_cortex: str, local_body: str, remote_label: str, local_end: str
) -> None:
    """cortex.md §6.4: versions by cortex ULID, a label without a ULID is the name alone, each body followed by a
    newline when it lacks one, and only trailing newlines trimmed (not the spaces or letters before them)."""
    cortex, replayer = replica
    apply_one(replayer, create_event())  # {A: 1}
    authoring.update_trace(cortex, T, body=local_body)  # {A: 1, REPLICA: 1}
    remote = _remote_edit("theirs", cortex_id=remote_cortex)
    assert apply_one(replayer, remote) == ReplayOutcome(remote.id, "update", True, "diverged")
    [record] = [e for e in all_events(cortex.conn) if e.action == "create" and e.cortex_id == REPLICA_ID]
    text = (cortex.path / "traces" / f"{record.trace_id}.md").read_text()
    assert text.split("\n---\n", 1)[1] == (
        "\n## Concurrent edits detected\n\n"
        f"**Trace:** {T}\n"
        f"**Conflicting origins:** {remote_label}, replica (01JR0000)\n\n"
        f"### Version from {remote_label}\n"
        f'**Vector clock:** {{"{A_ID}":2}}\n\n'
        "theirs\n\n"
        "### Version from replica (01JR0000)\n"
        f'**Vector clock:** {{"{A_ID}":1,"{REPLICA_ID}":1}}\n\n' + local_end
    )


# ---------------------------------------------------------------------------------------------------------
# Long-term traces and removals


def test_an_update_a_lower_id_promote_to_long_has_seen_is_applied_under_mid(
    replica: tuple[Cortex, Replayer],
) -> None:
    """The promote's author had seen the update (its clock dominates the update's) but its wall clock was
    behind, so its id is lower: the update is still older than the promote, and applied beneath it."""
    cortex, replayer = replica
    apply_one(replayer, create_event())  # {A: 1}
    promote = event(
        "promote",
        data={"from": "short", "to": "long"},
        id="01JQH4HPD0B8E9WCXGFN1A33W2",
        vclock={A_ID: 2, B_ID: 1},
    )
    edit = _remote_edit(
        "edited\n", id="01JQH4HPD0B8E9WCXGFN1A33W9", cortex_id=B_ID, vclock={A_ID: 1, B_ID: 1}
    )
    assert promote.id < edit.id
    apply_one(replayer, promote)
    assert apply_one(replayer, edit).effect == "updated"
    assert cortex.conn.execute("SELECT tier FROM traces").fetchall() == [("long",)]
    text = (cortex.path / "traces" / f"{T}.md").read_text()
    assert "\ntier: long\n" in text
    assert text.endswith("\n\nedited\n")


def test_purges_report_what_they_did(replica: tuple[Cortex, Replayer]) -> None:
    _, replayer = replica
    apply_one(replayer, create_event())
    apply_one(replayer, create_event("20250101-b", id="01JQH4HPD0B8E9WCXGFN1A33W6"))
    purge = event("purge", id="01JQH4HPD0B8E9WCXGFN1A33W7")
    hard = event("purge_hard", "20250101-b", data={"reason": "x"}, id="01JQH4HPD0B8E9WCXGFN1A33W8")
    assert apply_one(replayer, purge) == ReplayOutcome(purge.id, "purge", True, "purged")
    assert apply_one(replayer, hard) == ReplayOutcome(hard.id, "purge_hard", True, "purged-hard")


SOFT_PURGE = event("purge_long_term", data={"reason": "x"}, id="01JQH4HPD0B8E9WCXGFN1A33W9", vclock={A_ID: 2})


@pytest.mark.parametrize("removal", [MOVES[-1], SOFT_PURGE], ids=["purge", "purge_long_term"])
def test_a_removal_killed_after_its_file_step_puts_the_file_back(tmp_path: Path, removal: Event) -> None:
    """A page of one removal, killed once its file is gone: the next page finds the file back, as its row is."""
    (crashed, crashed_replayer), (clean, clean_replayer) = two_replicas(tmp_path)
    crashed_replayer.hook = kill_at("file")
    with pytest.raises(Kill):
        crashed_replayer.apply_page([removal], "p")
    crashed.close()
    crashed, crashed_replayer = open_replica(crashed.path)
    for replayer in (crashed_replayer, clean_replayer):
        apply_one(replayer, OTHER, cursor_peer="q")
    assert files(crashed.path) == files(clean.path)
    assert end_state(crashed.path) == end_state(clean.path)
    crashed.close()
    clean.close()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ('{"reason":"gdpr"}', "gdpr"),
        ("{}", "remote purge"),
        ('{"reason":""}', "remote purge"),
        ('{"reason":5}', "remote purge"),
        ('{"reason":null}', "remote purge"),
        ("not json", "remote purge"),
    ],
)
def test_a_soft_purge_without_a_reason_text_records_remote_purge(
    replica: tuple[Cortex, Replayer], data: str, reason: str
) -> None:
    cortex, replayer = replica
    apply_one(replayer, create_event())
    assert apply_one(replayer, replace(SOFT_PURGE, data=data)).effect == "purged-long-term"
    assert cortex.conn.execute("SELECT purge_reason FROM traces").fetchall() == [(reason,)]
    assert cortex.conn.execute("SELECT body FROM traces_fts").fetchall() == [(f"[purged: {reason}]",)]


# ---------------------------------------------------------------------------------------------------------
# A create for a row that exists


def _trace_row(cortex: Cortex) -> tuple[object, ...]:
    return cortex.conn.execute("SELECT created_at, cortex_id, tier FROM traces WHERE id = ?", (T,)).fetchone()


@pytest.mark.parametrize(
    "edit_id", ["01JQH4HPD0B8E9WCXGFN1A33W1", "01JQH4HPD0B8E9WCXGFN1A33V0"], ids=["later id", "earlier id"]
)
def test_a_create_arriving_after_the_update_that_made_the_row_dates_it_and_sets_its_tier(
    replica: tuple[Cortex, Replayer], edit_id: str
) -> None:
    """The tier is the create's, whatever the ids say (an editor whose wall clock was behind the creator's)."""
    cortex, replayer = replica
    # No tier in the edit: the row it makes is short.
    edit = _remote_edit("edited\n", id=edit_id, timestamp="2025-01-02T00:00:00Z")
    create = event(
        "create",
        data={"title": "A", "type": "note", "origin": "research", "tier": "mid", "body": "b\n"},
        vclock={A_ID: 1},
    )
    assert apply_one(replayer, edit).effect == "created"
    assert _trace_row(cortex) == ("2025-01-02T00:00:00Z", A_ID, "short")
    assert apply_one(replayer, create) == ReplayOutcome(create.id, "create", True, "updated")
    assert _trace_row(cortex) == ("2025-01-01T00:00:00Z", A_ID, "mid")
    text = (cortex.path / "traces" / f"{T}.md").read_text()
    assert "\ntier: mid\n" in text
    assert '\ncreated: "2025-01-01T00:00:00Z"\n' in text
    assert text.endswith("\n\nedited\n")


@pytest.mark.parametrize("has_create", [True, False], ids=["a second create", "a backfilled create"])
def test_another_create_for_a_held_trace_changes_nothing(
    replica: tuple[Cortex, Replayer], has_create: bool
) -> None:
    """Only the trace's own create, arriving after the update that made the row, dates the row: not a second
    create (which the stored update has seen too), nor a create with a clock no stored update has seen."""
    cortex, replayer = replica
    if has_create:
        apply_one(replayer, create_event())
    edit = _remote_edit("edited\n", timestamp="2025-01-02T00:00:00Z", vclock={A_ID: 3})
    apply_one(replayer, edit)
    before = _trace_row(cortex), (cortex.path / "traces" / f"{T}.md").read_text()
    other = event(
        "create",
        data={"title": "A", "type": "note", "origin": "research", "tier": "mid", "body": "b\n"},
        id="01JQH4HPD0B8E9WCXGFN1A33WA",
        cortex_id=B_ID,
        timestamp="2024-12-31T00:00:00Z",
        vclock={A_ID: 2} if has_create else {B_ID: 1},
    )
    assert apply_one(replayer, other) == ReplayOutcome(other.id, "create", True, "stored-only")
    assert (_trace_row(cortex), (cortex.path / "traces" / f"{T}.md").read_text()) == before


# ---------------------------------------------------------------------------------------------------------
# What each handler reports, and the step boundaries the crash tests kill at


def _later(action: str, data: object = None, clock: dict[str, int] | None = None, n: int = 1) -> Event:
    return event(action, data=data, id=f"01JQH4HPD0B8E9WCXGFN1A33W{n}", vclock=clock)


_WRITE_STEPS = ["db", "file", "event", "commit", "committed"]
_DB_STEPS = ["db", "event", "commit", "committed"]
_NO_STEPS = ["event", "commit", "committed"]
_HANDLED = {
    # name: (events before it, the event, its effect, the hook's steps for it)
    "update": (
        [],
        _later("update", {"title": "A", "type": "note", "body": "e\n"}, {A_ID: 2}),
        "updated",
        _WRITE_STEPS,
    ),
    "tag_update": ([], _later("tag_update", {"tags": ["x"]}, {A_ID: 2}), "tagged", _WRITE_STEPS),
    "tag_update without clock": ([], _later("tag_update", {"tags": ["x"]}, None), "tagged", _WRITE_STEPS),
    "archive": ([], _later("archive", None, {A_ID: 2}), "archived", _WRITE_STEPS),
    "promote": ([], _later("promote", {"to": "mid"}, {A_ID: 2}), "tier-changed", _WRITE_STEPS),
    "vote": ([], _later("vote", {"delta": 3}, {A_ID: 2}), "voted", _DB_STEPS),
    "consolidate by clock": (
        [],
        _later("consolidate", {"distilled_id": T}, {A_ID: 2}),
        "consolidated",
        _WRITE_STEPS,
    ),
    "consolidate without clock": ([], _later("consolidate", {}, None), "consolidated", _WRITE_STEPS),
    "consolidate of a mid trace": (
        [_later("promote", {"to": "mid"}, {A_ID: 2}, n=0)],
        _later("consolidate", {"distilled_id": T}, {A_ID: 3}),
        "stored-only",
        _NO_STEPS,
    ),
    "consolidate of a mid trace without clock": (
        [_later("promote", {"to": "mid"}, {A_ID: 2}, n=0)],
        _later("consolidate", {}, None),
        "stored-only",
        _NO_STEPS,
    ),
    "purge": ([], _later("purge", None, {A_ID: 2}), "purged", _WRITE_STEPS),
    "purge_hard": ([], _later("purge_hard", {"reason": "x"}, {A_ID: 2}), "purged-hard", _WRITE_STEPS),
    "coordination": ([], _later("consolidation_claim", None, {A_ID: 2}), "logged", _NO_STEPS),
}


@pytest.mark.parametrize("name", _HANDLED)
def test_each_handler_reports_its_outcome_and_steps(replica: tuple[Cortex, Replayer], name: str) -> None:
    """The outcome names the event, its action, whether it was stored now and the effect; the hook sees the DB
    step before the file step (a kill between them leaves no file ahead of the rows), then the page's steps."""
    _, replayer = replica
    before, the_event, effect, expected = _HANDLED[name]
    for one in [create_event(), *before]:
        apply_one(replayer, one)
    steps: list[str] = []
    replayer.hook = steps.append
    assert apply_one(replayer, the_event) == ReplayOutcome(the_event.id, the_event.action, True, effect)
    assert steps == expected


def test_a_consolidate_naming_another_trace_lifts_that_trace(replica: tuple[Cortex, Replayer]) -> None:
    """An event on one trace whose distilled_id names another: the other one goes from short to mid, by clock
    or not (only a consolidate on its own trace is placed among the tier changes)."""
    cortex, replayer = replica
    apply_one(replayer, create_event())
    apply_one(replayer, create_event("20250101-b", id="01JQH4HPD0B8E9WCXGFN1A33W6"))
    lift = _later("consolidate", {"distilled_id": "20250101-b"}, {A_ID: 2})
    assert apply_one(replayer, lift) == ReplayOutcome(lift.id, "consolidate", True, "consolidated")
    tiers = cortex.conn.execute("SELECT id, tier FROM traces ORDER BY id").fetchall()
    assert tiers == [(T, "short"), ("20250101-b", "mid")]
    assert "\ntier: mid\n" in (cortex.path / "traces" / "20250101-b.md").read_text()


def test_a_consolidate_naming_a_legacy_trace_id_is_stored_not_applied(
    replica: tuple[Cortex, Replayer],
) -> None:
    """A legacy row (an id no path may be built from) is never consolidated: its file would need that path."""
    cortex, replayer = replica
    apply_one(replayer, create_event())
    cortex.conn.execute(
        "INSERT INTO traces (id, title, type, author, created_at, updated_at) VALUES ('OLD-Id', 't', 'note', '', 'c', 'u')"
    )
    lift = _later("consolidate", {"distilled_id": "OLD-Id"}, {A_ID: 2})
    assert apply_one(replayer, lift) == ReplayOutcome(lift.id, "consolidate", True, "stored-only")
    assert cortex.conn.execute("SELECT id, tier FROM traces ORDER BY id").fetchall() == [
        ("20250101-a", "short"),
        ("OLD-Id", "short"),
    ]


def test_an_update_of_a_held_trace_with_a_wrong_hash_names_the_update(
    replica: tuple[Cortex, Replayer],
) -> None:
    _, replayer = replica
    apply_one(replayer, create_event())
    data = {"title": "A", "type": "note", "body": "e\n", "content_hash": "sha256:00"}
    with pytest.raises(ReplayError) as info:
        apply_one(replayer, _later("update", data, {A_ID: 2}))
    assert str(info.value) == "content hash mismatch on update event 01JQH4HPD0B8E9WCXGFN1A33W1"


# ---------------------------------------------------------------------------------------------------------
# Durability (docs/replay.md, "Durability")


class _FsyncLog:
    """A spy on os.fsync: each call is made for real, and the path of what it flushed is kept (Linux /proc)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cortex_dir: Path) -> None:
        self.cortex_dir = cortex_dir
        self.paths: list[str] = []
        real = os.fsync

        def fsync(fd: int) -> None:
            self.paths.append(os.readlink(f"/proc/self/fd/{fd}"))
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    def take(self) -> list[str]:
        """What was flushed since the last call: paths inside the cortex relative to it, temp names as `<temp>`."""
        taken, self.paths = self.paths, []
        out = []
        for path in taken:
            relative = os.path.relpath(path, self.cortex_dir)
            folder, name = os.path.split(relative)
            if name.startswith(".noemafed-trace-"):
                relative = os.path.join(folder, "<temp>")
            elif folder.startswith("db/noemafed-replay-undo/"):
                relative = "db/noemafed-replay-undo/<page>/" + name
            elif folder == "db/noemafed-replay-undo":
                relative = "db/noemafed-replay-undo/<page>"
            out.append(relative)
        return out


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads fd paths from /proc")
def test_a_durable_replay_fsyncs_every_file_step_and_its_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_replica(tmp_path)
    cortex = open_cortex(path)
    cortex.conn.execute("PRAGMA synchronous=OFF")
    replayer = Replayer(cortex, durable=True, now=lambda: "2025-06-01T12:00:00Z")
    assert cortex.conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL: the WAL at every COMMIT
    spy = _FsyncLog(monkeypatch, path)
    journal = ["db/noemafed-replay-undo/<page>", "db/noemafed-replay-undo/<page>/journal"]
    apply_one(replayer, create_event())
    assert spy.take() == [*journal, "traces/<temp>", "traces"]
    apply_one(replayer, _later("archive", None, {A_ID: 2}))
    assert spy.take() == [*journal, "traces", "archive/traces"]
    authoring.update_trace(cortex, T, body="local\n")
    spy.take()
    assert (
        apply_one(
            replayer, _remote_edit("theirs\n", id="01JQH4HPD0B8E9WCXGFN1A33W5", vclock={A_ID: 3})
        ).effect
        == "diverged"
    )
    record = "20250601-divergence-20250101-a"
    assert spy.take() == [*journal, "traces/<temp>", "traces"]
    assert (path / "traces" / f"{record}.md").is_file()
    cortex.close()


def test_replay_fsyncs_nothing_unless_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_replica(tmp_path)
    cortex, replayer = open_replica(path)
    spy = _FsyncLog(monkeypatch, path)
    apply_one(replayer, create_event())
    apply_one(replayer, _later("archive", None, {A_ID: 2}))
    assert spy.take() == []
    cortex.close()


# ---------------------------------------------------------------------------------------------------------
# update


def _trace_file(cortex: Cortex, trace_id: str = T) -> Path:
    return cortex.path / "traces" / f"{trace_id}.md"


@pytest.mark.parametrize(
    ("author", "locked"), [(B_ID, 1), (REPLICA_ID, 0)], ids=["another cortex's", "our own, served back"]
)
def test_an_update_sets_the_source_lock_and_hash_in_row_and_file(
    replica: tuple[Cortex, Replayer], author: str, locked: int
) -> None:
    """A source lock binds other cortexes, never the one whose update set it (the create's rule too)."""
    cortex, replayer = replica
    apply_one(replayer, create_event())
    data = {"title": "A", "type": "note", "body": "e\n", "source_hash": "sha256:ab", "source_locked": True}
    edit = replace(_later("update", data, {A_ID: 2}), cortex_id=author)
    assert apply_one(replayer, edit).effect == "updated"
    assert cortex.conn.execute("SELECT source_locked, source_hash FROM traces").fetchall() == [
        (locked, "sha256:ab")
    ]
    text = _trace_file(cortex).read_text()
    assert "\nsource_hash: sha256:ab\n" in text
    assert ("\nsource_locked: true\n" in text) == bool(locked)


def test_an_update_keeps_the_keys_noema_does_not_know(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    apply_one(replayer, create_event())
    path = _trace_file(cortex)
    path.write_text(path.read_text().replace("\norigin:", "\nx-custom: kept\norigin:"))
    apply_one(replayer, _later("update", {"title": "A", "type": "note", "body": "e\n"}, {A_ID: 2}))
    text = path.read_text()
    assert "\nx-custom: kept\n" in text
    assert text.endswith("\n\ne\n")


@pytest.mark.parametrize("damage", ["gone", "not a trace"])
def test_an_update_whose_file_cannot_be_read_writes_it_whole_with_the_newer_tags(
    replica: tuple[Cortex, Replayer], damage: str
) -> None:
    """The file is rewritten from the update; a tag change that has seen the update keeps its tags, read from
    the DB when the file cannot be."""
    cortex, replayer = replica
    apply_one(replayer, create_event())  # {A: 1}, tags [t]
    apply_one(replayer, _later("tag_update", {"tags": ["newer"]}, {A_ID: 3}, n=3))
    path = _trace_file(cortex)
    if damage == "gone":
        path.unlink()
    else:
        path.write_text("not a trace\n")
    older = _later("update", {"title": "Edited", "type": "note", "tags": ["older"], "body": "e\n"}, {A_ID: 2})
    assert apply_one(replayer, older).effect == "updated"
    text = path.read_text()
    assert "\ntitle: Edited\ntype: note\ntier: short\ntags:\n    - newer\n" in text
    assert text.endswith("\n\ne\n")
    assert cortex.conn.execute("SELECT tag FROM trace_tags").fetchall() == [("newer",)]


def test_an_update_of_a_tombstone_reports_updated(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    apply_one(replayer, create_event())
    apply_one(replayer, replace(SOFT_PURGE, vclock={A_ID: 3}))
    older = _later("update", {"title": "Edited", "type": "note", "body": "e\n"}, {A_ID: 2})
    assert apply_one(replayer, older) == ReplayOutcome(older.id, "update", True, "updated")
    assert cortex.conn.execute("SELECT title, purged_at FROM traces").fetchall() == [
        ("Edited", SOFT_PURGE.timestamp)
    ]
    assert not any((cortex.path / folder / f"{T}.md").exists() for folder in traces.FOLDERS)


# ---------------------------------------------------------------------------------------------------------
# tag_update and visibility


@pytest.mark.parametrize("hashes", [True, False], ids=["with hashes", "without"])
def test_a_tag_change_writes_tier_and_hashes_from_the_row(
    replica: tuple[Cortex, Replayer], hashes: bool
) -> None:
    """cortex.md §6.3: the file's tags are rewritten, keeping `updated`, tier and hashes from the row, even when
    the file says otherwise (edited by hand), and no hash line when the row has none."""
    cortex, replayer = replica
    digest = traces.content_hash("b\n")
    data = {"title": "A", "type": "note", "tags": ["t"], "tier": "mid", "body": "b\n"}
    if hashes:
        data |= {"content_hash": digest, "source_hash": "sha256:5e"}
    apply_one(replayer, event("create", data=data))
    path = _trace_file(cortex)
    edited = path.read_text().replace("\ntier: mid\n", "\ntier: long\n")
    if hashes:
        edited = edited.replace(digest, "sha256:00").replace(
            "source_hash: sha256:5e", "source_hash: sha256:ff"
        )
    path.write_text(edited)
    apply_one(replayer, _later("tag_update", {"tags": ["x"]}, {A_ID: 2}))
    hash_lines = f"content_hash: {digest}\nsource_hash: sha256:5e\n" if hashes else ""
    assert path.read_text() == (
        "---\nid: 20250101-a\ntitle: A\ntype: note\ntier: mid\ntags:\n    - x\n"
        f'created: "2025-01-01T00:00:00Z"\nupdated: "2025-01-01T00:00:00Z"\n{hash_lines}---\n\nb\n'
    )


@pytest.mark.parametrize(
    ("action", "folder", "effect"),
    [("archive", "archive/traces", "archived"), ("trash", "trash/traces", "trashed")],
)
def test_a_visibility_change_without_a_clock_applies_where_the_state_allows_it(
    replica: tuple[Cortex, Replayer], action: str, folder: str, effect: str
) -> None:
    cortex, replayer = replica
    apply_one(replayer, create_event())
    change = _later(action, None, None)
    assert apply_one(replayer, change) == ReplayOutcome(change.id, action, True, effect)
    assert [p.relative_to(cortex.path).as_posix() for p in cortex.path.rglob(f"{T}.md")] == [
        f"{folder}/{T}.md"
    ]


# ---------------------------------------------------------------------------------------------------------
# Tiers and votes


@pytest.mark.parametrize(
    ("to", "message"),
    [
        ("eternal", "replaying promote event 01JQH4HPD0B8E9WCXGFN1A33W1: CHECK constraint failed: "),
        (5, "tier-change event 01JQH4HPD0B8E9WCXGFN1A33W1 missing 'to' field"),
        ("", "tier-change event 01JQH4HPD0B8E9WCXGFN1A33W1 missing 'to' field"),
    ],
)
def test_a_tier_change_to_no_tier_fails_with_its_text(
    replica: tuple[Cortex, Replayer], to: object, message: str
) -> None:
    """A text that is no tier fails on the schema's CHECK, as in Go; a `to` that is no text is a missing one."""
    _, replayer = replica
    apply_one(replayer, create_event())
    with pytest.raises(ReplayError) as info:
        apply_one(replayer, _later("promote", {"from": "short", "to": to}, {A_ID: 2}))
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("data", "votes"),
    [({"delta": 7}, 1), ({"delta": -7}, -1), ({"delta": 0}, 0), ({}, 0), ({"delta": None}, 0)],
    ids=["positive", "negative", "zero", "missing", "null"],
)
def test_a_vote_counts_the_sign_of_its_delta(
    replica: tuple[Cortex, Replayer], data: object, votes: int
) -> None:
    """Go clamps a vote to the sign of its delta (cortex.md §9.7); a missing or null delta unmarshals as 0."""
    cortex, replayer = replica
    apply_one(replayer, create_event())
    vote = _later("vote", data, {A_ID: 2})
    assert apply_one(replayer, vote) == ReplayOutcome(vote.id, "vote", True, "voted")
    assert cortex.conn.execute("SELECT tier_votes FROM traces").fetchall() == [(votes,)]


def test_a_tier_change_without_a_clock_sets_the_tier(replica: tuple[Cortex, Replayer]) -> None:
    """It cannot be placed among the other tier changes by clock: it sets the tier, as in Go."""
    cortex, replayer = replica
    apply_one(replayer, create_event())
    promote = _later("promote", {"from": "short", "to": "mid"}, None)
    assert apply_one(replayer, promote) == ReplayOutcome(promote.id, "promote", True, "tier-changed")
    assert cortex.conn.execute("SELECT tier FROM traces").fetchall() == [("mid",)]
    assert "\ntier: mid\n" in _trace_file(cortex).read_text()


def test_concurrent_tier_changes_end_at_the_one_with_the_highest_id(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    apply_one(replayer, create_event())  # {A: 1}
    to_long = replace(_later("promote", {"to": "long"}, {A_ID: 1, B_ID: 1}, n=2), cortex_id=B_ID)
    to_mid = _later("promote", {"to": "mid"}, {A_ID: 2}, n=1)  # concurrent with B's, a lower id
    apply_one(replayer, to_long)
    apply_one(replayer, to_mid)
    assert cortex.conn.execute("SELECT tier FROM traces").fetchall() == [("long",)]
    assert "\ntier: long\n" in _trace_file(cortex).read_text()


def test_a_tier_change_of_a_trace_the_log_holds_no_snapshot_of_starts_from_short(
    replica: tuple[Cortex, Replayer],
) -> None:
    """A row with no create or update in the log (made before its cortex logged events): its base tier is short,
    and its file, gone too, is rebuilt from the DB."""
    cortex, replayer = replica
    cortex.conn.execute(
        "INSERT INTO traces (id, title, type, author, created_at, updated_at, tier) "
        "VALUES (?, 'Old', 'note', '', '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z', 'short')",
        (T,),
    )
    cortex.conn.execute(
        "INSERT INTO traces_fts (id, title, body, tags) VALUES (?, 'Old', 'old body', '')", (T,)
    )
    consolidate = _later("consolidate", {"distilled_id": T}, {A_ID: 2})
    assert apply_one(replayer, consolidate).effect == "consolidated"
    assert cortex.conn.execute("SELECT tier FROM traces").fetchall() == [("mid",)]
    text = _trace_file(cortex).read_text()
    assert "\ntitle: Old\n" in text
    assert "\ntier: mid\n" in text
    assert text.endswith("\n\nold body")


def test_an_update_tier_that_is_no_tier_is_not_the_base(replica: tuple[Cortex, Replayer]) -> None:
    """An update's snapshot tier is ignored when applied; read back as the trace's base it counts as short."""
    cortex, replayer = replica
    first = _remote_edit("b\n", id="01JQH4HPD0B8E9WCXGFN1A33W5", vclock={A_ID: 1})  # makes the row, short
    bad = {"title": "A", "type": "note", "tier": "eternal", "body": "e\n"}
    apply_one(replayer, first)
    assert apply_one(replayer, _later("update", bad, {A_ID: 2}, n=0)).effect == "updated"  # an earlier id
    consolidate = _later("consolidate", {"distilled_id": T}, {A_ID: 3}, n=3)
    assert apply_one(replayer, consolidate).effect == "consolidated"
    assert cortex.conn.execute("SELECT tier FROM traces").fetchall() == [("mid",)]


def test_a_tier_change_to_no_tier_is_refused_before_its_trace_arrives_too(
    replica: tuple[Cortex, Replayer],
) -> None:
    """Bug: stored only while its trace was missing, it then failed the trace's create on the CHECK (the fold
    applies it), so a good event pinned the cursor for good. Now it fails itself, in either arrival order."""
    cortex, replayer = replica
    bad = _later("promote", {"from": "short", "to": "eternal"}, {A_ID: 2})
    with pytest.raises(ReplayError) as info:
        apply_one(replayer, bad, cursor_peer="p")
    assert str(info.value) == 'promote event 01JQH4HPD0B8E9WCXGFN1A33W1 has invalid tier "eternal"'
    assert cortex.conn.execute("SELECT count(*) FROM events").fetchall() == [(0,)]
    assert apply_one(replayer, create_event(), cursor_peer="p").effect == "created"


def test_a_create_whose_data_is_null_is_read_back_as_no_fields(replica: tuple[Cortex, Replayer]) -> None:
    """`"data": null` is stored as `null` (cortex.md §9.12); read back for a later tier change, it has no tier."""
    cortex, replayer = replica
    apply_one(replayer, replace(create_event(), data="null"))
    promote = _later("promote", {"to": "mid"}, {A_ID: 2})
    assert apply_one(replayer, promote).effect == "tier-changed"
    assert cortex.conn.execute("SELECT title, tier FROM traces").fetchall() == [("", "mid")]


# ---------------------------------------------------------------------------------------------------------
# The current versions of an aspect (_add_version)


def test_an_update_that_replaces_one_of_two_concurrent_versions_keeps_the_other(
    replica: tuple[Cortex, Replayer],
) -> None:
    """Two concurrent edits met (B's and A's); A edits again, having seen only its own: the current versions are
    B's and A's newest, so an update B's edit has seen is stale, not a new conflict."""
    cortex, replayer = replica
    apply_one(replayer, create_event())  # {A: 1}
    from_b = replace(
        _remote_edit("from b\n", id="01JQH4HPD0B8E9WCXGFN1A33W1", vclock={A_ID: 1, B_ID: 1}), cortex_id=B_ID
    )
    assert apply_one(replayer, from_b).effect == "updated"
    a_edit = _remote_edit("from a\n", id="01JQH4HPD0B8E9WCXGFN1A33W2", vclock={A_ID: 2})
    assert apply_one(replayer, a_edit).effect == "diverged"
    a_again = _remote_edit("from a again\n", id="01JQH4HPD0B8E9WCXGFN1A33W3", vclock={A_ID: 3})
    assert apply_one(replayer, a_again).effect == "diverged"  # still concurrent with B's
    seen_by_b = replace(
        _remote_edit("old b\n", id="01JQH4HPD0B8E9WCXGFN1A33W4", vclock={B_ID: 1}), cortex_id=B_ID
    )
    assert apply_one(replayer, seen_by_b).effect == "stored-only"
    assert _trace_file(cortex).read_text().endswith("\n\nfrom b\n")


def test_a_late_tier_change_an_other_one_has_seen_does_not_count_whatever_its_id(
    replica: tuple[Cortex, Replayer],
) -> None:
    """Three tier changes: A's and B's concurrent, then one of B's that B's later one has seen, with the highest
    id (B's wall clock was ahead). The newest changes are A's and B's later one; of those, the higher id."""
    cortex, replayer = replica
    apply_one(replayer, create_event())  # {A: 1}
    by_a = _later("promote", {"to": "long"}, {A_ID: 2}, n=1)
    by_b_later = replace(_later("promote", {"to": "mid"}, {A_ID: 1, B_ID: 2}, n=2), cortex_id=B_ID)
    by_b_earlier = replace(_later("demote", {"to": "short"}, {A_ID: 1, B_ID: 1}, n=3), cortex_id=B_ID)
    for change in (by_a, by_b_later, by_b_earlier):
        assert apply_one(replayer, change).effect == "tier-changed"
    assert cortex.conn.execute("SELECT tier FROM traces").fetchall() == [("mid",)]


def test_a_trace_removed_without_an_event_is_made_again_from_the_highest_id_of_its_newest_versions(
    replica: tuple[Cortex, Replayer],
) -> None:
    """`noema remove --force` leaves no event (cortex.md §9.10). A late, older update makes the row again: from the
    snapshot no stored one has seen (of concurrent ones, the highest id), dated and owned by the trace's create."""
    cortex, replayer = replica
    apply_one(replayer, create_event())  # {A: 1}, by A at 2025-01-01
    from_b = replace(
        _remote_edit("from b\n", id="01JQH4HPD0B8E9WCXGFN1A33W1", vclock={A_ID: 1, B_ID: 1}), cortex_id=B_ID
    )
    apply_one(replayer, from_b)
    assert apply_one(replayer, _remote_edit("from a\n", id="01JQH4HPD0B8E9WCXGFN1A33W2")).effect == "diverged"
    cortex.conn.execute("DELETE FROM traces_fts WHERE id = ?", (T,))
    cortex.conn.execute("DELETE FROM traces WHERE id = ?", (T,))
    _trace_file(cortex).unlink()
    late = replace(
        _remote_edit(
            "late\n", id="01JQH4HPD0B8E9WCXGFN1A33W3", vclock={A_ID: 1}, timestamp="2025-02-01T00:00:00Z"
        ),
        cortex_id=B_ID,
    )
    assert apply_one(replayer, late).effect == "created"
    assert _trace_row(cortex) == ("2025-01-01T00:00:00Z", A_ID, "short")
    assert _trace_file(cortex).read_text().endswith("\n\nfrom a\n")


@pytest.mark.parametrize("key", ["type", "author", "origin", "tier", "body", "content_hash", "source_hash"])
def test_each_snapshot_text_of_another_type_names_its_key(replica: tuple[Cortex, Replayer], key: str) -> None:
    _, replayer = replica
    with pytest.raises(ReplayError) as info:
        apply_one(replayer, event("create", data={"title": "A", key: 5}))
    assert (
        str(info.value)
        == f"parsing create payload of event 01JQH4HPD0B8E9WCXGFN1A33VE: {key} must be a string"
    )


def test_snapshot_parents_of_another_type_are_named(replica: tuple[Cortex, Replayer]) -> None:
    _, replayer = replica
    with pytest.raises(ReplayError) as info:
        apply_one(replayer, event("update", data={"title": "A", "derived_from": "20250101-p"}))
    assert str(info.value) == (
        "parsing update payload of event 01JQH4HPD0B8E9WCXGFN1A33VE: derived_from must be a list of strings"
    )


def test_a_create_after_an_earlier_tag_change_keeps_its_own_tier(replica: tuple[Cortex, Replayer]) -> None:
    cortex, replayer = replica
    apply_one(replayer, _later("tag_update", {"tags": ["early"]}, {A_ID: 2}))
    create = event(
        "create", data={"title": "A", "type": "note", "tier": "mid", "body": "b\n"}, vclock={A_ID: 1}
    )
    assert apply_one(replayer, create).effect == "created"
    assert cortex.conn.execute("SELECT tier FROM traces").fetchall() == [("mid",)]
    text = _trace_file(cortex).read_text()
    assert "\ntier: mid\ntags:\n    - early\n" in text


# ---------------------------------------------------------------------------------------------------------
# Pages


def test_an_empty_page_commits_nothing_and_a_page_without_a_peer_writes_no_cursor(
    replica: tuple[Cortex, Replayer],
) -> None:
    cortex, replayer = replica
    assert replayer.apply_page([], "p") == PageResult((), None, None)
    result = replayer.apply_page([create_event()])
    assert result.error is None
    keys = [key for (key,) in cortex.conn.execute("SELECT key FROM federation_state ORDER BY key")]
    assert not [key for key in keys if key.startswith("peer:")]


def test_a_prefix_that_fails_when_applied_again_is_the_failure_reported(
    replica: tuple[Cortex, Replayer],
) -> None:
    """After a failure the page is rolled back and its prefix applied again; if that fails too (the cortex changed
    in between), its own failure is what the page reports, and nothing commits."""
    cortex, replayer = replica
    good = create_event()
    bad = event("teleport", id="01JQH4HPD0B8E9WCXGFN1A33W1")
    seen: list[str] = []

    def changed_meanwhile(step: str) -> None:
        seen.append(step)
        if step == "db" and seen.count("db") == 2:  # the prefix's second attempt
            raise RuntimeError("the cortex changed meanwhile")

    replayer.hook = changed_meanwhile
    result = replayer.apply_page([good, bad], "p")
    assert (result.outcomes, result.failed) == ((), good)
    assert str(result.error) == (
        "replaying create event 01JQH4HPD0B8E9WCXGFN1A33VE: RuntimeError: the cortex changed meanwhile"
    )
    assert cortex.conn.execute("SELECT count(*) FROM events").fetchall() == [(0,)]
    assert state.get(cortex.conn, "peer:p:last_event") == ""


def test_a_repeat_names_its_event_and_action(replica: tuple[Cortex, Replayer]) -> None:
    _, replayer = replica
    apply_one(replayer, create_event())
    assert apply_one(replayer, create_event()) == ReplayOutcome(
        create_event().id, "create", False, "duplicate"
    )
