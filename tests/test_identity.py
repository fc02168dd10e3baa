"""The `cortex_identity` answer as federation reads it (federation.md §3.4): every field, its default, its type,
and the exact refusal for each way an answer can be wrong. The handshake's checks and pins are in test_syncer.py
and test_go_twins_sync.py; these pin the parser, which mutation testing found unguarded."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_cortex

from noemafed.cortex.open import open_cortex
from noemafed.cortex.state import RankEntry, get_peer_rank
from noemafed.federation.classify import IdentityFailure
from noemafed.federation.identity import IdentityError, PeerIdentity, parse_identity, verify_identity
from noemafed.logs import SILENT

REMOTE_ID = "01JQ7X2B9C4D5E6F7G8H9JKMNP"
KEY_A = "ed25519:0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc="


def refusal(text: str, peer: str = "p") -> tuple[str, IdentityFailure]:
    with pytest.raises(IdentityError) as info:
        parse_identity(peer, text)
    return info.value.message, info.value.kind


def test_every_field_is_read() -> None:
    answer = {
        "id": REMOTE_ID,
        "name": "peer-b",
        "version": 3,
        "mode": "sync",  # unknown to federation: ignored
        "pubkey": KEY_A,
        "rank": {"cortex_id": "01OTHER", "rank": 7, "observed_at": "2026-01-02T03:04:05Z"},
    }
    assert parse_identity("p", json.dumps(answer)) == PeerIdentity(
        REMOTE_ID, "peer-b", 3, KEY_A, RankEntry("01OTHER", 7, "2026-01-02T03:04:05Z")
    )


def test_missing_and_null_fields_take_their_defaults() -> None:
    assert parse_identity("p", "{}") == PeerIdentity("", "", 0, "", None)
    nulls = {"id": None, "name": None, "version": None, "pubkey": None, "rank": None}
    assert parse_identity("p", json.dumps(nulls)) == PeerIdentity("", "", 0, "", None)
    assert parse_identity("p", '{"rank": {}}').rank == RankEntry("", 0, "")
    nulls = {"cortex_id": None, "rank": None, "observed_at": None}
    assert parse_identity("p", json.dumps({"rank": nulls})).rank == RankEntry("", 0, "")


def test_a_lone_surrogate_in_a_text_field_becomes_the_replacement_character() -> None:
    """As Go decodes it: these texts are stored in pins and health, and printed."""
    text = r'{"id": "01A\ud800", "name": "b\udfff", "version": 2, "pubkey": "k\ud800", "rank": {"observed_at": "t\ud800"}}'
    identity = parse_identity("p", text)
    assert (identity.id, identity.name, identity.pubkey) == ("01A\ufffd", "b\ufffd", "k\ufffd")
    assert identity.rank == RankEntry("", 0, "t\ufffd")


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ({"version": "2"}, "json: cannot unmarshal str into field version of type int"),
        # bool is an int to Python, not to Go's decoder
        ({"version": True}, "json: cannot unmarshal bool into field version of type int"),
        ({"version": 2.5}, "json: cannot unmarshal float into field version of type int"),
        ({"id": 7}, "json: cannot unmarshal int into field id of type str"),
        ({"name": ["x"]}, "json: cannot unmarshal list into field name of type str"),
        ({"pubkey": {}}, "json: cannot unmarshal dict into field pubkey of type str"),
        ({"rank": {"rank": "1"}}, "json: cannot unmarshal str into field rank of type int"),
        ({"rank": {"rank": False}}, "json: cannot unmarshal bool into field rank of type int"),
        ({"rank": {"cortex_id": 1}}, "json: cannot unmarshal int into field cortex_id of type str"),
        ({"rank": {"observed_at": 1}}, "json: cannot unmarshal int into field observed_at of type str"),
        ({"rank": 3}, "json: cannot unmarshal rank: not an object"),
        ({"rank": []}, "json: cannot unmarshal rank: not an object"),
        ([1], "json: cannot unmarshal a non-object into the identity"),
        ("x", "json: cannot unmarshal a non-object into the identity"),
    ],
)
def test_a_field_of_the_wrong_type_is_a_parse_refusal(answer: object, error: str) -> None:
    assert refusal(json.dumps(answer)) == (
        f'parsing cortex_identity response from peer "p": {error}',
        IdentityFailure.PARSE,
    )


def test_text_that_is_not_json_is_a_parse_refusal_naming_the_peer_as_go_quotes_it() -> None:
    assert refusal("{", peer='a"b') == (
        'parsing cortex_identity response from peer "a\\"b": Expecting property name enclosed in double quotes: '
        "line 1 column 2 (char 1)",
        IdentityFailure.PARSE,
    )


def test_json_nested_past_the_stack_is_a_parse_refusal_not_a_crash() -> None:
    message, kind = refusal("[" * 200_000)
    assert (message.startswith('parsing cortex_identity response from peer "p": '), kind) == (
        True,
        IdentityFailure.PARSE,
    )


def test_an_empty_answer_is_a_peer_that_predates_the_handshake() -> None:
    assert refusal("", peer="old one") == (
        'peer "old one" returned empty cortex_identity response \u2014 likely an older version that pre-dates '
        "the cortex-id federation handshake. Upgrade the peer to a binary that exposes cortex_identity",
        IdentityFailure.EMPTY,
    )


# ---- pins that cannot be read ---------------------------------------------------------------------------


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    cortex = open_cortex(make_cortex(tmp_path, "local"))
    yield cortex.conn
    cortex.close()


def refuse_reads(conn: sqlite3.Connection, key: str) -> None:
    """A real SQLite failure for reads of this federation_state key only: the table goes behind a view whose
    value, for that key, is SQLite's own error (json() of text that is not JSON)."""
    conn.executescript(
        f"""
        ALTER TABLE federation_state RENAME TO state_rows;
        CREATE VIEW federation_state AS
            SELECT key, CASE WHEN key = '{key}' THEN json('unreadable') ELSE value END AS value FROM state_rows;
        """
    )


def verify_refusal(conn: sqlite3.Connection, identity: PeerIdentity) -> tuple[str, IdentityFailure]:
    with pytest.raises(IdentityError) as info:
        verify_identity(conn, "peer-b", identity, own_id="01LOCAL", hard_pin="", log=SILENT)
    return info.value.message, info.value.kind


def test_a_pinned_id_that_cannot_be_read_is_a_database_refusal(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO federation_state(key, value) VALUES ('peer:peer-b:cortex_id', ?)", (REMOTE_ID,))
    refuse_reads(conn, "peer:peer-b:cortex_id")
    assert verify_refusal(conn, PeerIdentity(REMOTE_ID, "remote", 2)) == (
        "loading pinned cortex id for peer \"peer-b\": reading federation_state 'peer:peer-b:cortex_id': "
        "malformed JSON",
        IdentityFailure.DB,
    )


def test_a_pinned_signing_key_that_cannot_be_read_is_a_database_refusal(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO federation_state(key, value) VALUES (?, ?)", (f"cortexkey:{REMOTE_ID}", KEY_A))
    refuse_reads(conn, f"cortexkey:{REMOTE_ID}")
    assert verify_refusal(conn, PeerIdentity(REMOTE_ID, "remote", 2, KEY_A)) == (
        f"loading pinned signing key for peer \"peer-b\": reading federation_state 'cortexkey:{REMOTE_ID}': "
        "malformed JSON",
        IdentityFailure.DB,
    )


def test_a_rank_is_stored_under_the_top_level_id_not_its_own(conn: sqlite3.Connection) -> None:
    """As noema does: the bid is the answering cortex's, whatever cortex id the rank object itself names."""
    rank = RankEntry("01OTHER", 5, "2026-08-15T03:00:00Z")
    verify_identity(
        conn,
        "peer-b",
        PeerIdentity(REMOTE_ID, "remote", 2, rank=rank),
        own_id="01LOCAL",
        hard_pin="",
        log=SILENT,
    )
    assert get_peer_rank(conn, "peer-b") == RankEntry(REMOTE_ID, 5, "2026-08-15T03:00:00Z")
