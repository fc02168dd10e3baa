"""`noemafed sync --once` against real peers on 127.0.0.1: Go-like, Rust-like, over TLS with a key."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import REPO, run_cli, state_rows
from peers.stdlib_peer import StdlibPeer
from sync_helpers import check_db, comparable_trace_files, events, source, state_value, target_with

from noemafed.cortex.manifest import read_manifest
from noemafed.cortex.open import database_dir
from noemafed.federation.lock import SyncLock
from noemafed.logs import SILENT

SYNC_SCHEMA = json.loads((REPO / "docs" / "sync.schema.json").read_text())


def sync(target: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = run_cli(["--cortex", str(target), "sync", "--once", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def sync_json(target: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    code, out, err = sync(target, "--json", *args, env=env)
    doc = json.loads(out)
    jsonschema.validate(doc, SYNC_SCHEMA)
    assert doc["exit_code"] == code, err
    return code, doc


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("flavor", ["go", "rust"])
def test_full_sync_copies_the_log_byte_for_byte(tmp_path: Path, flavor: str) -> None:
    src = source(tmp_path, count=6)
    with StdlibPeer(src, flavor=flavor, keepalives=2) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        code, doc = sync_json(target)
        calls = peer.calls()
    assert code == 0
    [report] = doc["peers"]
    source_events = events(src)
    assert report["status"] == "ok"
    assert report["events_applied"] == len(source_events)
    assert report["caught_up"] is True
    assert report["cursor_after"] == source_events[-1][0]
    assert report["peer_cortex_id"] == read_manifest(src).id
    assert events(target) == source_events
    assert comparable_trace_files(target) == comparable_trace_files(src)
    rows = state_rows(target)
    assert rows["peer:src:last_event"] == source_events[-1][0]
    assert rows["peer:src:cortex_id"] == read_manifest(src).id
    assert rows["peer:src:last_seen"]
    health = json.loads(rows["peer:src:health"])
    assert health["version"] == ("0.19.3" if flavor == "go" else "0.22.2")
    assert "last_error" not in health
    assert calls == [
        "initialize",
        "notifications/initialized",
        "cortex_identity",
        "sync_events",
        "sync_read_signal",
        "DELETE",
    ]
    check_db(target)


def test_wire_headers_are_what_peers_require(tmp_path: Path) -> None:
    src = source(tmp_path, count=2)
    with StdlibPeer(src, flavor="rust", key="ring-key", tls=True) as peer:
        ca = tmp_path / "ca.pem"
        peer.write_ca(ca)
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint + "/", "ca": str(ca)}])
        code, _, err = sync(target, env={"NOEMA_MCP_KEY": "ring-key"})
        requests = list(peer.requests)
    assert code == 0, err
    first, *later = requests
    assert first.path == "/mcp"  # the trailing slash of the endpoint is not doubled
    for request in requests:
        assert request.header("Origin") is None
        assert request.header("Authorization") == "Bearer ring-key"
    for request in requests[:-1]:
        assert request.header("Accept") == "application/json, text/event-stream"
        assert request.header("Content-Type") == "application/json"
    assert first.header("MCP-Protocol-Version") is None
    assert first.rpc is not None
    assert first.rpc["params"]["protocolVersion"] == "2025-11-25"
    assert first.rpc["params"]["clientInfo"]["name"] == "noemafed"
    for request in later:
        assert request.header("MCP-Protocol-Version") == "2025-11-25"
        assert request.header("Mcp-Session-Id")
    events_call = next(r for r in requests if r.tool == "sync_events")
    assert events_call.rpc is not None
    assert events_call.rpc["params"]["arguments"] == {"limit": 1000}


def test_paging_until_a_short_page_and_resuming_from_the_cursor(tmp_path: Path) -> None:
    from noemafed.commands.sync import SyncRun, sync_once
    from noemafed.federation.syncer import SyncOptions  # the page size is not a CLI option; use the API

    src = source(tmp_path, count=5)
    total = len(events(src))
    with StdlibPeer(src, flavor="go") as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        report = sync_once(SyncRun(target, read_manifest(target), SyncOptions(page_size=3), {}, SILENT), ())
        [result] = report.results
        assert result.ok
        assert result.events_applied == total
        assert result.pages == total // 3 + 1
        since = [r.rpc["params"]["arguments"].get("since") for r in peer.requests if r.tool == "sync_events"]
        ids = [row[0] for row in events(src)]
        assert since == [None, *ids[2::3][: len(since) - 1]]
        # A second run asks from the cursor and finds nothing new.
        peer.clear_requests()
        assert sync(target)[0] == 0
        assert [r.rpc["params"]["arguments"] for r in peer.requests if r.tool == "sync_events"] == [
            {"limit": 1000, "since": ids[-1]}
        ]


def test_max_events_stops_early_with_a_consistent_cursor(tmp_path: Path) -> None:
    src = source(tmp_path, count=6)
    with StdlibPeer(src, flavor="go") as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        code, doc = sync_json(target, "--max-events", "4")
        assert code == 0
        [report] = doc["peers"]
        assert report["events_applied"] == 4
        assert report["caught_up"] is False
        assert report["cursor_after"] == events(src)[3][0]
        assert len(events(target)) == 4
        assert sync(target)[0] == 0
    assert events(target) == events(src)


def test_401_is_auth_and_exit_4(tmp_path: Path) -> None:
    src = source(tmp_path, count=1)
    with StdlibPeer(src, flavor="rust", key="right") as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        code, doc = sync_json(target, env={"NOEMA_MCP_KEY": "wrong"})
    assert code == 4
    [report] = doc["peers"]
    assert (report["reason"], report["needs_operator"], report["phase"]) == ("auth", True, "initialize")
    assert "401" in report["error"]
    health = json.loads(state_value(target, "peer:src:health"))
    assert health["consecutive_failures"] == 1
    assert health["last_error"]["reason"] == "auth"
    assert state_value(target, "peer:src:last_seen") == ""


def test_closed_port_is_network_refused_and_exit_3(tmp_path: Path) -> None:
    target = target_with(tmp_path, [{"name": "down", "endpoint": f"http://127.0.0.1:{closed_port()}"}])
    code, out, err = sync(target)
    assert code == 3
    assert out.startswith("down: failed (network_refused), 0 events applied, cursor (none): MCP initialize: ")
    assert "Traceback" not in err
    health = json.loads(state_value(target, "peer:down:health"))
    assert health["last_error"]["reason"] == "network_refused"
    assert "version" not in health


def test_a_host_name_with_an_empty_label_is_network_dns_as_in_go(tmp_path: Path) -> None:
    """The host reaches getaddrinfo as ASCII bytes (transport._create_connection): `a..b` is the resolver's "no
    such host" (network_dns, Go's reason for it), not the idna codec's "label empty or too long" (other)."""
    target = target_with(tmp_path, [{"name": "typo", "endpoint": "http://peer..example:9"}])
    code, out, err = sync(target)
    assert code == 3
    assert out.startswith("typo: failed (network_dns), 0 events applied, cursor (none): MCP initialize: ")
    assert "idna" not in out + err
    assert json.loads(state_value(target, "peer:typo:health"))["last_error"]["reason"] == "network_dns"


def test_three_peers_refused_healthy_changed_identity(tmp_path: Path) -> None:
    healthy_src = source(tmp_path, "healthy", count=3)
    changed_src = source(tmp_path, "changed", count=1)
    with StdlibPeer(healthy_src, flavor="go") as healthy, StdlibPeer(changed_src, flavor="rust") as changed:
        target = target_with(
            tmp_path,
            [
                {"name": "refused", "endpoint": f"http://127.0.0.1:{closed_port()}"},
                {"name": "healthy", "endpoint": healthy.endpoint},
                {"name": "changed", "endpoint": changed.endpoint},
            ],
        )
        # A previous run pinned another identity for "changed".
        from conftest import put_state

        put_state(target, **{"peer:changed:cortex_id": "01PREVIOUSIDENTITY00000000"})
        code, doc = sync_json(target)
    assert code == 4
    by_name = {peer["name"]: peer for peer in doc["peers"]}
    assert by_name["refused"]["reason"] == "network_refused"
    assert by_name["changed"]["reason"] == "identity_mismatch"
    assert by_name["changed"]["error"].startswith(
        'peer "changed" identity mismatch: pinned id is 01PREVIOUSIDENTITY00000000 but the endpoint now reports '
    )
    assert (
        "run `noema federation reset-peer changed` to clear the pin and cursor" in by_name["changed"]["error"]
    )
    assert by_name["healthy"]["status"] == "ok"
    assert events(target) == events(healthy_src)
    assert state_value(target, "peer:changed:cortex_id") == "01PREVIOUSIDENTITY00000000"


IDENTITY_CASES = [
    (
        "",
        "identity_missing",
        'peer "p" returned empty cortex_identity response \u2014 likely an older version that pre-dates the '
        "cortex-id federation handshake. Upgrade the peer to a binary that exposes cortex_identity",
    ),
    (
        {"id": "01JQ7X2B9C4D5E6F7G8H9JKMNP", "name": "old", "version": 1},
        "invalid_frontmatter",
        'peer "p" is on cortex.md schema version 1 but federation requires version 2. Ask the peer\'s operator '
        "to run `noema migrate cortex-id` on that cortex before federation can resume",
    ),
    (
        {"id": "", "name": "x", "version": 2},
        "identity_missing",
        'peer "p" reported manifest version 2 but no cortex id \u2014 refusing to federate without a stable '
        "identity",
    ),
    (
        {"name": "x", "version": "2"},
        "other",
        'parsing cortex_identity response from peer "p": json: cannot unmarshal str into field version of type '
        "int",
    ),
    (
        "not json",
        "other",
        'parsing cortex_identity response from peer "p": Expecting value: line 1 column 1 (char 0)',
    ),
    (
        "[1]",
        "other",
        'parsing cortex_identity response from peer "p": json: cannot unmarshal a non-object into the identity',
    ),
    (
        {"id": "01JQ7X2B9C4D5E6F7G8H9JKMNP", "name": "x", "version": 2, "rank": 3},
        "other",
        'parsing cortex_identity response from peer "p": json: cannot unmarshal rank: not an object',
    ),
]


@pytest.mark.parametrize(("identity", "reason", "message"), IDENTITY_CASES)
def test_identity_failures_give_their_reason(
    tmp_path: Path, identity: object, reason: str, message: str
) -> None:
    src = source(tmp_path, count=1)
    with StdlibPeer(src, flavor="go", identity=identity) as peer:
        target = target_with(tmp_path, [{"name": "p", "endpoint": peer.endpoint}])
        code, doc = sync_json(target)
    [report] = doc["peers"]
    assert (report["reason"], report["phase"], report["error"]) == (reason, "identity", message)
    assert code == (4 if reason in ("identity_missing", "invalid_frontmatter") else 3)
    assert events(target) == []


def test_identity_refused_and_own_id(tmp_path: Path) -> None:
    src = source(tmp_path, count=1)
    with StdlibPeer(src, flavor="go", identity_error="not today") as peer:
        target = target_with(tmp_path, [{"name": "p", "endpoint": peer.endpoint}])
        code, doc = sync_json(target)
    assert (code, doc["peers"][0]["reason"]) == (3, "other")
    assert doc["peers"][0]["error"] == 'peer "p" cortex_identity refused: not today'
    with StdlibPeer(target, flavor="go") as loop:  # a peer that is this very cortex
        set_target = target_with(tmp_path, [{"name": "me", "endpoint": loop.endpoint}], name="t2")
        own = read_manifest(set_target).id
        loop.knobs.identity = {"id": own, "name": "t2", "version": 2}
        code, doc = sync_json(set_target)
    assert (code, doc["peers"][0]["reason"]) == (4, "identity_mismatch")


def test_a_connection_dropped_during_the_handshake_is_a_network_failure(tmp_path: Path) -> None:
    """federation.md §8.1.2: Go classifies every transport error of the identity phase as `other`."""
    src = source(tmp_path, count=1)
    with StdlibPeer(src, flavor="go", close_without_answer=True, misbehave_on="cortex_identity") as peer:
        target = target_with(tmp_path, [{"name": "p", "endpoint": peer.endpoint}])
        code, doc = sync_json(target)
    [report] = doc["peers"]
    assert (report["reason"], report["phase"], code) == ("network_eof", "identity", 3)
    assert report["error"].startswith("calling cortex_identity: ")
    assert events(target) == []


def test_replay_failure_mid_page_pins_the_cursor(tmp_path: Path) -> None:
    src = source(tmp_path, count=5)
    rows = events(src)
    page = json.loads(_page_text(src))
    page[2]["trace_id"] = "20250101-../../escape"
    with StdlibPeer(src, flavor="go", page_override=json.dumps(page, separators=(",", ":"))) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        code, doc = sync_json(target)
    [report] = doc["peers"]
    assert code == 4  # invalid_trace_id is schema-widening: the peer needs an upgrade or an operator
    assert (report["reason"], report["phase"]) == ("invalid_trace_id", "replay")
    assert report["event_id"] == rows[2][0]
    assert report["trace_id"] == "20250101-../../escape"
    assert report["events_applied"] == 2
    assert state_value(target, "peer:src:last_event") == rows[1][0]
    assert state_value(target, "peer:src:last_seen") != ""
    assert [row[0] for row in events(target)] == [rows[0][0], rows[1][0]]
    assert not list(tmp_path.rglob("escape*"))
    health = json.loads(state_value(target, "peer:src:health"))
    assert health["last_error"]["event_id"] == rows[2][0]


def _source_events(src: Path) -> list[Any]:
    """The source's whole event log, oldest first, as Event values."""
    from conftest import db

    from noemafed.cortex.events import EVENT_COLUMNS, event_from_row

    conn = db(src)
    rows = conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY id").fetchall()
    conn.close()
    return [event_from_row(row) for row in rows]


def _page_text(src: Path) -> str:
    from noemafed.cortex.events import page_json

    return page_json(_source_events(src))


def test_publish_mode_handshakes_but_never_pulls(tmp_path: Path) -> None:
    src = source(tmp_path, count=2)
    with StdlibPeer(src, flavor="go") as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}], mode="publish")
        assert sync(target)[0] == 0
        assert "sync_events" not in peer.calls()
    assert events(target) == []
    assert state_value(target, "peer:src:last_seen") != ""
    assert state_value(target, "peer:src:cortex_id") == read_manifest(src).id


def test_peer_without_read_signal_still_succeeds(tmp_path: Path) -> None:
    src = source(tmp_path, count=2)
    with StdlibPeer(src, flavor="rust", no_read_signal=True) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        code, _, err = sync(target, "--verbose")
    assert code == 0
    assert "read-signal" not in err


def test_subscribe_mode_peer_refuses_events(tmp_path: Path) -> None:
    src = source(tmp_path, count=2)
    for flavor in ("go", "rust"):
        with StdlibPeer(src, flavor=flavor, mode="subscribe") as peer:
            target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}], name=f"t-{flavor}")
            code, doc = sync_json(target)
        assert code == 3
        assert doc["peers"][0]["error"] == (
            "peer sync_events refused: this cortex is in subscribe mode and does not serve events"
        )


def test_tls_without_the_ca_is_network_tls(tmp_path: Path) -> None:
    """A certificate the configured trust rejects keeps noema's reason and needs an operator (exit 4)."""
    src = source(tmp_path, count=1)
    with StdlibPeer(src, flavor="go", tls=True) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        code, doc = sync_json(target)
    assert code == 4
    assert (doc["peers"][0]["reason"], doc["peers"][0]["needs_operator"]) == ("network_tls", True)


def test_missing_ca_file_is_reported(tmp_path: Path) -> None:
    """A peer entry that cannot become a request is the operator's to fix: `other` (as Go says), exit 4."""
    target = target_with(tmp_path, [{"name": "p", "endpoint": "https://localhost:1", "ca": "missing.pem"}])
    code, doc = sync_json(target)
    assert code == 4
    assert (doc["peers"][0]["reason"], doc["peers"][0]["phase"]) == ("other", "connect")
    assert doc["peers"][0]["error"].startswith(
        f"creating Streamable HTTP client: loading CA for peer p: reading CA file: open {target / 'missing.pem'}: "
    )


def test_a_ca_file_without_certificates_is_not_a_network_failure(tmp_path: Path) -> None:
    target = target_with(tmp_path, [{"name": "p", "endpoint": "https://localhost:1", "ca": "empty.pem"}])
    (target / "empty.pem").write_text("not a certificate\n")
    code, doc = sync_json(target)
    assert code == 4
    assert (doc["peers"][0]["reason"], doc["peers"][0]["phase"]) == ("other", "connect")
    assert doc["peers"][0]["error"].endswith("contains no valid certificates")


@pytest.mark.parametrize(
    ("endpoint", "problem"),
    [
        ("http://[::1", 'endpoint "http://[::1" is not a valid URL: Invalid IPv6 URL'),
        (
            "http://[zz]:3000",
            "endpoint \"http://[zz]:3000\" is not a valid URL: 'zz' does not appear to be an IPv4 or IPv6 address",
        ),
        ("http://127.0.0.1:99999", 'endpoint "http://127.0.0.1:99999" has an invalid port "99999"'),
        ("http://lap top:3000", 'endpoint "http://lap top:3000" contains whitespace or a control character'),
    ],
    ids=["unclosed-bracket", "no-address", "port", "space"],
)
def test_an_endpoint_no_request_can_be_made_to_is_a_configuration_error(
    tmp_path: Path, endpoint: str, problem: str
) -> None:
    """Bug: a hand-edited endpoint the URL parser refuses failed as `connect: unexpected ValueError: Invalid IPv6
    URL`, which reads as a bug in noemafed; a bad port or a space failed at every run as a transient `other`
    (exit 3, retried for ever). Each is the peer entry's fault: named, `other` in the connect phase, exit 4."""
    target = target_with(tmp_path, [{"name": "p", "endpoint": endpoint}])
    code, doc = sync_json(target)
    assert code == 4
    [peer] = doc["peers"]
    assert (peer["reason"], peer["phase"], peer["needs_operator"]) == ("other", "connect", True)
    assert peer["error"] == (
        f"creating Streamable HTTP client: peer p: {problem} (fix it with: noemafed set-peer p --endpoint URL)"
    )
    assert json.loads(state_rows(target)["peer:p:health"])["last_error"]["reason"] == "other"


def test_a_ca_path_holding_a_nul_is_named_as_unreadable(tmp_path: Path) -> None:
    """Bug: `ca: "a\\0b"` (YAML's escape for NUL) failed as `connect: unexpected ValueError: embedded null byte`."""
    target = target_with(tmp_path, [{"name": "p", "endpoint": "https://localhost:1", "ca": "a\x00b"}])
    code, doc = sync_json(target)
    assert code == 4
    assert (doc["peers"][0]["reason"], doc["peers"][0]["phase"]) == ("other", "connect")
    assert doc["peers"][0]["error"] == (
        f"creating Streamable HTTP client: loading CA for peer p: reading CA file: open {target}/a\\x00b: "
        "embedded null byte"
    )


def test_redirects_are_refused(tmp_path: Path) -> None:
    src = source(tmp_path, count=1)
    with (
        StdlibPeer(src, flavor="go") as good,
        StdlibPeer(src, flavor="go", redirect_to=good.endpoint + "/mcp") as bad,
    ):
        target = target_with(tmp_path, [{"name": "p", "endpoint": bad.endpoint}])
        code, doc = sync_json(target)
        assert good.requests == []
    assert code == 3
    assert "307" in doc["peers"][0]["error"]


def test_a_hung_peer_times_out_without_delaying_the_others(tmp_path: Path) -> None:
    src = source(tmp_path, count=2)
    with StdlibPeer(src, flavor="go", hang_seconds=20) as hung, StdlibPeer(src, flavor="rust") as fine:
        target = target_with(
            tmp_path,
            [{"name": "hung", "endpoint": hung.endpoint}, {"name": "fine", "endpoint": fine.endpoint}],
        )
        started = time.monotonic()
        code, doc = sync_json(target, "--timeout", "1")
        elapsed = time.monotonic() - started
    assert code == 3
    by_name = {peer["name"]: peer for peer in doc["peers"]}
    assert by_name["hung"]["reason"] == "network_timeout"
    assert by_name["fine"]["status"] == "ok"
    assert by_name["fine"]["seconds"] < 5
    assert elapsed < 10


def test_max_duration_bounds_the_whole_run(tmp_path: Path) -> None:
    src = source(tmp_path, count=1)
    with StdlibPeer(src, flavor="go", hang_seconds=20, misbehave_on="sync_events") as peer:
        target = target_with(tmp_path, [{"name": "p", "endpoint": peer.endpoint}])
        started = time.monotonic()
        code, doc = sync_json(target, "--max-duration", "1.5")
        elapsed = time.monotonic() - started
    assert code == 3
    assert (doc["peers"][0]["reason"], doc["peers"][0]["phase"]) == ("network_timeout", "events")
    assert doc["peers"][0]["error"] == f"calling sync_events: POST {peer.endpoint}/mcp: timed out"
    assert elapsed < 8


def test_an_oversized_page_is_refused_before_parsing(tmp_path: Path) -> None:
    src = source(tmp_path, count=1)
    with StdlibPeer(src, flavor="go", huge_response_bytes=101 * 1024 * 1024) as peer:
        target = target_with(tmp_path, [{"name": "p", "endpoint": peer.endpoint}])
        code, doc = sync_json(target)
    assert code == 3
    assert doc["peers"][0]["error"] == (
        "calling sync_events: sync_events response too large (over 104857600 bytes, max 104857600)"
    )
    assert events(target) == []


def test_a_forgotten_session_is_reinitialized_once(tmp_path: Path) -> None:
    src = source(tmp_path, count=3)
    with StdlibPeer(src, flavor="rust", drop_sessions_after=3) as peer:
        target = target_with(tmp_path, [{"name": "p", "endpoint": peer.endpoint}])
        code, _, err = sync(target)
        calls = peer.calls()
    assert code == 0, err
    assert calls.count("initialize") == 2
    assert events(target) == events(src)


def test_non_advancing_ids_are_refused(tmp_path: Path) -> None:
    src = source(tmp_path, count=3)
    page = json.loads(_page_text(src))
    page[1], page[2] = page[2], page[1]
    with StdlibPeer(src, flavor="go", page_override=json.dumps(page)) as peer:
        target = target_with(tmp_path, [{"name": "p", "endpoint": peer.endpoint}])
        code, doc = sync_json(target)
    assert code == 3
    assert doc["peers"][0]["error"] == (
        f"sync_events returned non-advancing event id {page[2]['id']} after {page[1]['id']}"
    )
    assert events(target) == []


@pytest.mark.parametrize(
    ("page", "message"),
    [
        (
            "{",
            "parsing sync_events response: malformed sync_events page at offset 0: expected a JSON array, "
            "found '{'",
        ),
        ("too many", "sync_events returned 1001 events for a limit of 1000"),
    ],
)
def test_malformed_pages_are_refused(tmp_path: Path, page: str, message: str) -> None:
    src = source(tmp_path, count=1)
    if page == "too many":
        [first] = json.loads(_page_text(src))[:1]
        page = json.dumps([first | {"id": f"01JQH4HPD0B8E9WCXGFN1A{n:04d}"} for n in range(1001)])
    with StdlibPeer(src, flavor="go", page_override=page) as peer:
        target = target_with(tmp_path, [{"name": "p", "endpoint": peer.endpoint}])
        code, doc = sync_json(target)
    assert (code, doc["peers"][0]["phase"], doc["peers"][0]["error"]) == (3, "events", message)


def test_named_and_paused_peers(tmp_path: Path) -> None:
    src = source(tmp_path, count=1)
    with StdlibPeer(src, flavor="go") as peer:
        target = target_with(
            tmp_path,
            [
                {"name": "a", "endpoint": peer.endpoint},
                {"name": "b", "endpoint": peer.endpoint, "mode": "paused"},
                {"name": "c", "endpoint": f"http://127.0.0.1:{closed_port()}"},
            ],
        )
        code, doc = sync_json(target, "--peer", "a")
        assert code == 0
        assert [p["name"] for p in doc["peers"]] == ["a"]
        code, doc = sync_json(target, "--peer", "a", "--peer", "b")
        assert doc["paused"] == ["b"]
        code, _out, err = sync(target, "--peer", "zzz")
        assert code == 1
        assert err == 'Error: peer "zzz" is not configured in cortex.md (known: a, b, c)\n'


def test_quiet_under_cron_when_everything_succeeds(tmp_path: Path) -> None:
    src = source(tmp_path, count=1)
    with StdlibPeer(src, flavor="go") as peer:
        target = target_with(tmp_path, [{"name": "a", "endpoint": peer.endpoint}])
        code, out, err = sync(target)
    assert (code, out, err) == (0, "", "")


def test_invalid_manifest_is_exit_78_and_touches_nothing(tmp_path: Path) -> None:
    target = target_with(tmp_path, [{"name": "a", "endpoint": "http://127.0.0.1:1"}], verify="loud")
    code, _out, err = sync(target)
    assert code == 78
    assert err == 'Error: federation.verify "loud" is not valid; use off, warn, or enforce\n'
    assert state_rows(target) == {}


def test_a_second_run_exits_75_naming_the_holder(tmp_path: Path) -> None:
    src = source(tmp_path, count=2)
    with StdlibPeer(src, flavor="go") as peer:
        target = target_with(tmp_path, [{"name": "a", "endpoint": peer.endpoint}])
        lock = SyncLock(database_dir(target))
        lock.acquire()
        try:
            code, _out, err = sync(target)
            assert code == 75
            assert err == (
                f"Error: another noemafed sync (pid {os.getpid()}) holds {lock.path}\n"
                "Hint: let it finish, or pass --wait SECONDS to queue behind it\n"
            )
            code, _out, err = sync(target, "--wait", "0.2")
            assert code == 75
            assert err.startswith(
                f"Error: another noemafed sync (pid {os.getpid()}) holds {lock.path} after waiting 0.2s\n"
            )
            assert events(target) == []
            releaser = threading.Timer(0.3, lock.release)
            releaser.start()
            code, _, err = sync(target, "--wait", "5")
            releaser.join()
        finally:
            lock.release()
        assert code == 0, err
    assert events(target) == events(src)


def test_usage_rows_merge_and_advance_the_usage_cursor(tmp_path: Path) -> None:
    src = source(tmp_path, count=2)
    src_id = read_manifest(src).id
    from conftest import db

    conn = db(src)
    trace_id = conn.execute("SELECT id FROM traces ORDER BY id LIMIT 1").fetchone()[0]
    conn.execute(
        "INSERT INTO trace_usage(trace_id, peer_cortex_id, read_count, modify_count, last_read_at, updated_at, "
        "search_hit_count) VALUES (?, ?, 4, 1, '2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z', 2)",
        (trace_id, src_id),
    )
    conn.close()
    with StdlibPeer(src, flavor="go") as peer:
        target = target_with(tmp_path, [{"name": "a", "endpoint": peer.endpoint}])
        code, doc = sync_json(target)
    assert code == 0
    assert doc["peers"][0]["usage_rows"] == 1
    assert state_value(target, "peer:a:last_usage") == "2026-01-02T00:00:00Z"
    conn = db(target)
    assert conn.execute("SELECT read_count, modify_count, search_hit_count FROM trace_usage").fetchall() == [
        (4, 1, 2)
    ]
    conn.close()


def test_usage_rows_are_asked_for_once_per_poll_500_at_a_time(tmp_path: Path) -> None:
    """federation.md §8.1.18, copied: `limit: 500` (Go and Rust), one page per poll, the cursor as `since`."""
    from conftest import db

    src = source(tmp_path, count=1)
    src_id = read_manifest(src).id
    conn = db(src)
    trace_id = conn.execute("SELECT id FROM traces LIMIT 1").fetchone()[0]
    conn.execute(
        "INSERT INTO trace_usage(trace_id, peer_cortex_id, read_count, modify_count, updated_at) "
        "VALUES (?, ?, 1, 0, '2026-01-02T00:00:00Z')",
        (trace_id, src_id),
    )
    conn.close()
    with StdlibPeer(src, flavor="go") as peer:
        target = target_with(tmp_path, [{"name": "a", "endpoint": peer.endpoint}])
        assert sync(target)[0] == 0
        assert sync(target)[0] == 0
        asked = [
            r.rpc["params"]["arguments"] for r in peer.requests if r.tool == "sync_read_signal" and r.rpc
        ]
    assert asked == [{"limit": 500}, {"limit": 500, "since": "2026-01-02T00:00:00Z"}]


def test_status_after_sync_shows_the_peer(tmp_path: Path) -> None:
    src = source(tmp_path, count=2)
    with StdlibPeer(src, flavor="go") as peer:
        target = target_with(tmp_path, [{"name": "a", "endpoint": peer.endpoint}])
        assert sync(target)[0] == 0
    result = run_cli(["--cortex", str(target), "status", "--json"])
    doc = json.loads(result.stdout)
    [entry] = doc["peers"]
    assert entry["cortex_id"] == read_manifest(src).id
    assert entry["last_event"] == events(src)[-1][0]
    assert entry["health"]["version"] == "0.19.3"
    assert entry["health"]["consecutive_failures"] == 0
    assert doc["vclock"][read_manifest(src).id] > 0


def test_proxy_variables_are_ignored_unless_opted_in(tmp_path: Path) -> None:
    src = source(tmp_path, count=1)
    proxy = f"http://127.0.0.1:{closed_port()}"
    env = {"http_proxy": proxy, "HTTP_PROXY": proxy, "no_proxy": "", "NO_PROXY": ""}
    with StdlibPeer(src, flavor="go") as peer:
        target = target_with(tmp_path, [{"name": "p", "endpoint": peer.endpoint}])
        assert sync(target, env=env)[0] == 0
        assert all(request.path == "/mcp" for request in peer.requests)
        # With the opt-in, the (dead) proxy is used, so the peer is never reached.
        peer.clear_requests()
        code, doc = sync_json(target, "--use-proxy-env", env=env)
        assert code == 3
        assert doc["peers"][0]["reason"] == "network_refused"
        assert peer.requests == []


def test_a_killed_syncs_temp_files_are_removed_but_noemas_are_not(tmp_path: Path) -> None:
    target = target_with(tmp_path, [{"name": "down", "endpoint": f"http://127.0.0.1:{closed_port()}"}])
    ours = target / "archive" / "traces" / ".noemafed-trace-01M892EP2TWQC08S94YKP5HG10.tmp"
    theirs = target / "traces" / ".noema-trace-01M892EP2TWQC08S94YKP5HG10.tmp"
    ours.write_text("half a file")
    theirs.write_text("a live noema write")
    assert sync(target)[0] == 3
    assert not ours.exists()
    assert theirs.read_text() == "a live noema write"


# Modules a caught-up `sync --once` (the cron case) has no use for; each one costs start-up time on every run.
NOT_FOR_A_CAUGHT_UP_RUN = (
    "concurrent.futures",  # one plain thread per peer
    "noemafed.cortex.events",  # no page to parse
    "noemafed.render",  # nothing to print under cron
    "noemafed.federation.replay",  # nothing to replay
    "noemafed.cortex.rows",
    "noemafed.cortex.emit",
    "noemafed.cortex.traces",
    "ulid",  # python-ulid reads its own package metadata at import
    "secrets",  # and with it hmac, hashlib and OpenSSL's libcrypto, for a marker only an answer over 8 MiB needs
    "hmac",  # (not hashlib itself: a Python built without _sha256 loads it for the storage lock's path)
    "noemafed.signing.verifier",  # no signature to check (verify: off)
    "noemafed.mcp.large_answer",  # only for an answer over 8 MiB
    "encodings.idna",  # the host goes to getaddrinfo as ASCII bytes (TLS, not used here, still encodes with it)
)
LAZY_PROBE = """
import sys
from noemafed.cli import main
try:
    main(sys.argv[1:])
finally:
    print("LOADED", *sorted(name for name in sys.modules if name in {modules!r}))
"""


def test_a_caught_up_run_loads_only_what_it_needs(tmp_path: Path) -> None:
    src = source(tmp_path, count=2)
    with StdlibPeer(src, flavor="go") as peer:
        target = target_with(tmp_path, [{"name": "a", "endpoint": peer.endpoint}])
        assert sync(target)[0] == 0  # the first run applies the events; the next one finds nothing new
        probe = LAZY_PROBE.format(modules=set(NOT_FOR_A_CAUGHT_UP_RUN))
        argv = [sys.executable, "-c", probe, "--cortex", str(target), "sync", "--once"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "LOADED\n"


def test_a_run_that_only_replays_never_loads_the_signer(tmp_path: Path) -> None:
    src = source(tmp_path, count=2)
    with StdlibPeer(src, flavor="go") as peer:
        target = target_with(tmp_path, [{"name": "a", "endpoint": peer.endpoint}])
        probe = LAZY_PROBE.format(modules={"noemafed.signing.signer", "noemafed.federation.replay"})
        argv = [sys.executable, "-c", probe, "--cortex", str(target), "sync", "--once"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    # replay ran (2 events applied) and authored nothing, so the signer was never needed
    assert done.stdout == "LOADED noemafed.federation.replay\n"


# ---- the next page is fetched while this one is replayed ----------------------------------------------------


def _paged_sync(target: Path, page_size: int, **options: Any) -> Any:
    from noemafed.commands.sync import SyncRun, sync_once
    from noemafed.federation.syncer import SyncOptions

    report = sync_once(
        SyncRun(target, read_manifest(target), SyncOptions(page_size=page_size, **options), {}, SILENT), ()
    )
    [result] = report.results
    return result


class _PagesFromList:
    """A page_override for StdlibPeer: serves `log` (events, as Go lays them out) by cursor; records each ask."""

    def __init__(self, log: list[Any], on_request: Callable[[str], None] = lambda _: None) -> None:
        self.log = log
        self.on_request = on_request
        self.asked: list[str] = []

    def __call__(self, since: str, limit: int) -> str:
        from noemafed.cortex.events import page_json

        self.asked.append(since)
        self.on_request(since)
        rest = [event for event in self.log if event.id > since]
        return page_json(rest[:limit]) if rest else "null"


def test_the_next_page_is_requested_while_this_one_is_replayed(tmp_path: Path) -> None:
    src = source(tmp_path, count=200)
    page = _source_events(src)
    size = 260  # above one replay batch (250), so the cursor moves within the page
    assert len(page) > size
    cursor_when_asked: dict[str, str] = {}

    def look(since: str) -> None:
        # Read by another connection: only what the syncer has committed is visible.
        cursor_when_asked[since] = state_value(target, "peer:src:last_event")

    pages = _PagesFromList(page, look)
    with StdlibPeer(src, flavor="go", page_override=pages) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        result = _paged_sync(target, size)
    assert result.ok, result
    assert events(target) == events(src)
    ids = [event.id for event in page]
    # The same requests as one page after the other: each starts after the previous page's last event.
    assert pages.asked == ["", *ids[size - 1 :: size]][: len(pages.asked)]
    assert len(pages.asked) == len(page) // size + 1
    # ...but page 2 was asked for before page 1 was committed (its first batch of 250 at most).
    assert cursor_when_asked[ids[size - 1]] in ("", ids[249])


def test_after_a_large_page_the_next_is_requested_once_it_is_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from noemafed.cortex import events as events_module

    # Every page counts as large here; the rule is the same at 8 MiB (bench.py memory measures it there).
    monkeypatch.setattr(events_module, "LARGE_PAGE_CHARS", 100)
    src = source(tmp_path, count=200)
    page = _source_events(src)
    size = 260
    cursor_when_asked: dict[str, str] = {}

    def look(since: str) -> None:
        cursor_when_asked[since] = state_value(target, "peer:src:last_event")

    pages = _PagesFromList(page, look)
    with StdlibPeer(src, flavor="go", page_override=pages) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        result = _paged_sync(target, size)
    assert result.ok, result
    assert events(target) == events(src)
    ids = [event.id for event in page]
    # The same requests as with a page fetched ahead...
    assert pages.asked == ["", *ids[size - 1 :: size]][: len(pages.asked)]
    assert len(pages.asked) == len(page) // size + 1
    # ...but each one only once the page before it was committed whole.
    assert all(cursor_when_asked[since] == since for since in pages.asked[1:])


def test_a_page_fetched_ahead_is_dropped_when_replay_fails(tmp_path: Path) -> None:
    src = source(tmp_path, count=5)
    rows = events(src)
    page = _source_events(src)
    page[2] = replace(page[2], trace_id="20250101-../../escape")
    pages = _PagesFromList(page)
    with StdlibPeer(src, flavor="go", page_override=pages) as peer:
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        result = _paged_sync(target, 3)
    assert (result.ok, result.reason, result.event_id) == (False, "invalid_trace_id", rows[2][0])
    assert pages.asked == ["", rows[2][0]]  # page 2 was fetched ahead, then dropped
    assert state_value(target, "peer:src:last_event") == rows[1][0]
    assert [row[0] for row in events(target)] == [rows[0][0], rows[1][0]]
    assert peer.calls()[-1] == "DELETE"  # the fetch had ended: the session is still closed properly


def test_a_hanging_page_fetched_ahead_does_not_hold_up_a_failed_poll(tmp_path: Path) -> None:
    from noemafed.federation.syncer import AHEAD_GRACE_SECONDS

    src = source(tmp_path, count=5)
    rows = events(src)
    page = _source_events(src)
    page[2] = replace(page[2], trace_id="20250101-../../escape")
    with StdlibPeer(src, flavor="go") as peer:

        def hang_on_page_two(since: str) -> None:
            if since:
                peer._stopping.wait(60)  # until the test stops the peer

        peer.knobs.page_override = _PagesFromList(page, hang_on_page_two)
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        started = time.monotonic()
        result = _paged_sync(target, 3, timeout=60.0)
        seconds = time.monotonic() - started
        calls = peer.calls()
    assert (result.ok, result.reason, result.event_id) == (False, "invalid_trace_id", rows[2][0])
    assert AHEAD_GRACE_SECONDS <= seconds < AHEAD_GRACE_SECONDS + 5
    assert "DELETE" not in calls  # the session was left to expire: another thread was still using it
    assert state_value(target, "peer:src:last_event") == rows[1][0]


def test_no_page_is_fetched_ahead_past_max_events(tmp_path: Path) -> None:
    src = source(tmp_path, count=5)
    page = _source_events(src)
    with StdlibPeer(src, flavor="go") as peer:
        peer.knobs.page_override = exactly = _PagesFromList(page)
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}])
        result = _paged_sync(target, 3, max_events=3)  # page 1 reaches the limit: nothing to fetch ahead
        assert (result.ok, result.events_applied) == (True, 3)
        assert exactly.asked == [""]
        peer.knobs.page_override = one_more = _PagesFromList(page)
        target = target_with(tmp_path, [{"name": "src", "endpoint": peer.endpoint}], name="other")
        result = _paged_sync(target, 3, max_events=4)  # page 2 is needed for one event
        assert (result.ok, result.events_applied) == (True, 4)
        assert one_more.asked == ["", page[2].id]
