"""`noemafed doctor`: each finding produced by a real condition (an expired trustme certificate, our own serve
reached as a peer, a lock left by a killed process, a 0644 key file, a corrupted database page, a peer whose
Date header is an hour off), its severity, code and fix, the exit code, and the JSON against its schema."""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import trustme
from conftest import REPO, make_cortex, put_state, run_cli, set_federation
from peers.stdlib_peer import StdlibPeer
from peers.tls import expired_tls, make_tls
from sync_helpers import seed

from noemafed.cortex.open import database_dir
from noemafed.federation import doctor as checks
from noemafed.federation.doctor import DoctorFacts, PeerFacts
from noemafed.federation.lock import LOCK_FILE
from noemafed.logs import SILENT
from noemafed.mcp.http import ServeConfig, make_server

SCHEMA = json.loads((REPO / "docs" / "doctor.schema.json").read_text())
CLEAN = "No problems found. (0 error(s), 0 warning(s), 0 note(s))\n"
NOW = datetime.datetime.now(datetime.UTC)


def doctor(path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """Run `doctor --json`; the document must validate and agree with the exit code."""
    result = run_cli(["--cortex", str(path), "doctor", "--json", *args])
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, SCHEMA)
    assert doc["exit_code"] == result.exit_code
    return result.exit_code, doc


def codes(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(finding["severity"], finding["code"]) for finding in doc["findings"]]


def only(doc: dict[str, Any], code: str) -> dict[str, Any]:
    found = [finding for finding in doc["findings"] if finding["code"] == code]
    assert len(found) == 1, doc["findings"]
    return found[0]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    """Our own serve of a cortex on 127.0.0.1 (port 0): `served(path)` starts one and returns its endpoint."""
    servers = []

    def start(cortex: Path) -> str:
        server = make_server(ServeConfig(cortex_dir=cortex, port=0), SILENT)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# ---- a clean cortex, the exit codes and the text ---------------------------------------------------------


def test_a_clean_cortex_has_nothing_to_fix(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    result = run_cli(["--cortex", str(path), "doctor"])
    assert (result.exit_code, result.stdout, result.stderr) == (0, CLEAN, "")
    code, doc = doctor(path)
    assert (code, doc["findings"], doc["online"]) == (0, [], False)
    assert doc["cortex"] == {
        "id": re.search(r"id: (\w+)", (path / "cortex.md").read_text())[1],
        "path": str(path),
    }


def test_the_text_gives_each_finding_its_fix_and_the_exit_code_its_worst_severity(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha", peers=[{"name": "beta", "endpoint": "http://127.0.0.1:1"}])
    (path / "cortex.md").chmod(0o666)  # a warning
    result = run_cli(["--cortex", str(path), "doctor"])
    assert result.exit_code == 1
    assert result.stdout == (
        f"WARNING: {path / 'cortex.md'}\n"
        f"  manifest {path / 'cortex.md'} has mode 0666: anyone on this host can change it\n"
        f"  fix: chmod o-w {path / 'cortex.md'}\n"
        "INFO: peers\n"
        "  peers were not contacted: clocks, certificates and reported ids of peers were not checked\n"
        "  fix: run `noemafed doctor --online`\n"
        "0 error(s), 1 warning(s), 1 note(s)\n"
    )
    text = (path / "cortex.md").read_text()
    (path / "cortex.md").write_text(text.replace("name: alpha\n", ""))  # and now an error too
    code, doc = doctor(path)
    assert code == 2
    assert codes(doc)[0] == ("error", "manifest_invalid")


def test_no_cortex_is_an_error_document_not_a_finding(tmp_path: Path) -> None:
    result = run_cli(["--cortex", str(tmp_path / "missing"), "doctor", "--json"])
    assert result.exit_code == 66
    jsonschema.validate(json.loads(result.stdout), SCHEMA)


# ---- the manifest and the files -------------------------------------------------------------------------


def test_a_manifest_noema_would_refuse(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    text = (path / "cortex.md").read_text()
    (path / "cortex.md").write_text(
        text.replace("version: 2\n", "version: 2\nfederation:\n    interval: abc\n")
    )
    code, doc = doctor(path)
    finding = only(doc, "manifest_invalid")
    assert code == 2
    assert finding["severity"] == "error"
    assert "abc" in finding["message"]
    assert finding["fix"].startswith("edit cortex.md: ")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_file_others_can_read(tmp_path: Path, mode: int) -> None:
    path = make_cortex(tmp_path, "alpha")
    assert run_cli(["--cortex", str(path), "keygen"]).exit_code == 0
    assert doctor(path)[0] == 0
    key = path / "noema-signing.key"
    key.chmod(mode)
    code, doc = doctor(path)
    assert code == 2
    assert only(doc, "key_file_mode") == {
        "severity": "error",
        "code": "key_file_mode",
        "subject": str(key),
        "message": f"signing key file {key} has mode 0{mode:o}: noema refuses a key others can read",
        "fix": f"chmod 600 {key}",
    }


def test_a_cortex_folder_anyone_can_write(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    path.chmod(0o777)
    code, doc = doctor(path)
    assert (code, codes(doc)) == (1, [("warning", "cortex_mode")])
    assert only(doc, "cortex_mode")["fix"] == f"chmod o-w {path}"


def test_a_corrupted_database_page_fails_quick_check(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    seed(path, 20)
    db_file = database_dir(path) / "noema.db"
    import sqlite3

    conn = sqlite3.connect(db_file)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (root,) = conn.execute(
        "SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_events_1'"
    ).fetchone()
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    data = bytearray(db_file.read_bytes())
    start = (root - 1) * page_size
    for i in range(start + 200, start + page_size - 8):  # the cells of one index page, its header kept
        data[i] = (data[i] * 7 + 13) % 256
    db_file.write_bytes(bytes(data))
    code, doc = doctor(path)
    assert code == 2
    finding = only(doc, "database_corrupt")
    assert finding["message"].startswith(f"PRAGMA quick_check: On tree page {root} cell ")
    assert "\n" not in finding["message"]


# ---- the sync lock --------------------------------------------------------------------------------------


def test_a_lock_left_by_a_killed_sync_is_reported_as_stale(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from noemafed.federation.lock import SyncLock;"
            "lock = SyncLock(Path(sys.argv[1])); lock.acquire(); print('held', flush=True); time.sleep(60)",
            str(database_dir(path)),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == "held\n"
    assert doctor(path)[0] == 0  # held by a live sync: nothing to say
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    code, doc = doctor(path)
    assert code == 0  # info only
    finding = only(doc, "sync_lock_stale")
    assert finding["severity"] == "info"
    assert finding["subject"] == str(database_dir(path) / LOCK_FILE)
    assert f"pid {holder.pid}" in finding["message"]
    # A lock released cleanly leaves an empty file: nothing to report.
    run_cli(["--cortex", str(path), "sync", "--once"])
    assert doctor(path)[1]["findings"] == []


# ---- TLS certificates -----------------------------------------------------------------------------------


def _own_cert(path: Path, tmp_path: Path, days: float) -> None:
    leaf = trustme.CA().issue_cert(
        "127.0.0.1",
        not_before=NOW - datetime.timedelta(days=30),
        not_after=NOW + datetime.timedelta(days=days),
    )
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    text = (path / "cortex.md").read_text()
    (path / "cortex.md").write_text(
        text.replace("version: 2\n", f"version: 2\naccess:\n    tls_cert_path: {tmp_path / 'cert.pem'}\n")
    )


@pytest.mark.parametrize(("days", "code", "severity"), [(-1, 2, "error"), (10, 1, "warning"), (30, 0, None)])
def test_our_own_certificate_expiry(tmp_path: Path, days: float, code: int, severity: str | None) -> None:
    path = make_cortex(tmp_path, "alpha")
    _own_cert(path, tmp_path, days)
    exit_code, doc = doctor(path)
    assert exit_code == code
    if severity is None:
        assert doc["findings"] == []
        return
    finding = only(doc, "tls_cert_expiry")
    assert finding["severity"] == severity
    assert finding["message"].startswith(
        "this cortex's TLS certificate expired at "
        if days < 0
        else "this cortex's TLS certificate expires in 9 day(s)"
    )
    assert (
        finding["fix"]
        == f"rotate the certificate at {tmp_path / 'cert.pem'} (and its key), then restart serve"
    )


def test_a_peers_expired_and_expiring_certificates(tmp_path: Path) -> None:
    source = make_cortex(tmp_path, "source")
    soon = make_tls(not_before=NOW - datetime.timedelta(days=30), not_after=NOW + datetime.timedelta(days=5))
    with StdlibPeer(source, tls=expired_tls()) as old, StdlibPeer(source, tls=soon) as near:
        assert old.tls is not None
        assert near.tls is not None
        path = make_cortex(
            tmp_path,
            "alpha",
            peers=[
                {"name": "old", "endpoint": old.endpoint, "ca": str(old.tls.write_ca(tmp_path / "old.pem"))},
                {
                    "name": "near",
                    "endpoint": near.endpoint,
                    "ca": str(near.tls.write_ca(tmp_path / "near.pem")),
                },
            ],
        )
        code, doc = doctor(path, "--online")
    assert code == 2
    expired = [f for f in doc["findings"] if f["subject"] == "peer old"]
    assert [(f["severity"], f["code"]) for f in expired] == [("error", "peer_tls_cert_expiry")]
    assert expired[0]["message"].startswith('peer "old"\'s TLS certificate has expired: ')
    near_finding = [f for f in doc["findings"] if f["subject"] == "peer near"]
    assert [(f["severity"], f["code"]) for f in near_finding] == [("warning", "peer_tls_cert_expiry")]
    assert near_finding[0]["message"].startswith("peer near's TLS certificate expires in 4 day(s)")


# ---- identities: our own id, a cloned cortex ------------------------------------------------------------


def test_a_peer_that_is_this_cortex_served_back(tmp_path: Path, served: Any) -> None:
    path = make_cortex(tmp_path, "alpha")
    endpoint = served(path)  # the endpoint points back at this very cortex
    set_federation(path, [{"name": "mirror", "endpoint": endpoint}])
    code, doc = doctor(path, "--online")
    assert code == 2
    finding = only(doc, "peer_reports_own_id")
    assert finding["subject"] == "peer mirror"
    assert doc["cortex"]["id"] in finding["message"]
    assert "`noemafed reset-peer mirror`" in finding["fix"]


def test_two_peers_that_are_one_cortex(tmp_path: Path, served: Any) -> None:
    source = make_cortex(tmp_path, "source")
    endpoint = served(source)
    path = make_cortex(
        tmp_path, "alpha", peers=[{"name": "b", "endpoint": endpoint}, {"name": "c", "endpoint": endpoint}]
    )
    code, doc = doctor(path, "--online")
    assert code == 2
    finding = only(doc, "peers_share_id")
    assert finding["subject"] == "peers b, c"
    assert finding["fix"].endswith("then `noemafed reset-peer b c`")


def test_pins_alone_show_a_clone_offline(tmp_path: Path) -> None:
    path = make_cortex(
        tmp_path,
        "alpha",
        peers=[
            {"name": "b", "endpoint": "http://127.0.0.1:1"},
            {"name": "c", "endpoint": "http://127.0.0.1:2"},
        ],
    )
    put_state(
        path,
        **{
            "peer:b:cortex_id": "01CLONE0000000000000000000",
            "peer:c:cortex_id": "01CLONE0000000000000000000",
        },
    )
    code, doc = doctor(path, "--offline")
    assert code == 2
    assert codes(doc) == [("error", "peers_share_id"), ("info", "offline")]


# ---- clocks, versions, verify ---------------------------------------------------------------------------


def _skewed(peer: StdlibPeer, seconds: float) -> None:
    """The peer's HTTP Date header `seconds` off: its host's clock, as a real skewed host would send it."""
    server = peer._server
    assert server is not None
    base = server.RequestHandlerClass

    class Skewed(base):  # type: ignore[misc, valid-type]
        def date_time_string(self, timestamp: float | None = None) -> str:
            return formatdate(time.time() + seconds, usegmt=True)

    server.RequestHandlerClass = Skewed


def test_clock_skew_against_a_peers_date_header(tmp_path: Path) -> None:
    source = make_cortex(tmp_path, "source")
    with StdlibPeer(source) as ahead, StdlibPeer(source) as close:
        _skewed(ahead, 3600)
        _skewed(close, 20)
        path = make_cortex(
            tmp_path,
            "alpha",
            peers=[
                {"name": "ahead", "endpoint": ahead.endpoint},
                {"name": "close", "endpoint": close.endpoint},
            ],
        )
        code, doc = doctor(path, "--online")
    skew = only(doc, "clock_skew")
    assert skew["subject"] == "peer ahead"
    assert re.fullmatch(
        r"peer \"ahead\"'s clock is 3(599|600|601) s ahead of this host's \(more than 60 s\): event ids, cursors "
        r"and lag depend on both clocks",
        skew["message"],
    )
    assert code == 2  # the two peers are one cortex too
    assert ("error", "peers_share_id") in codes(doc)


def test_peers_on_different_release_series_and_verify_off(tmp_path: Path) -> None:
    one, two = make_cortex(tmp_path, "one"), make_cortex(tmp_path, "two")
    key = "ed25519:0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc="
    with StdlibPeer(one, server_version="0.19.3") as go, StdlibPeer(two, flavor="rust") as rust:
        path = make_cortex(
            tmp_path,
            "alpha",
            peers=[
                {"name": "go", "endpoint": go.endpoint, "pubkey": key},
                {"name": "rust", "endpoint": rust.endpoint},
            ],
        )
        code, doc = doctor(path, "--online")
    assert code == 1
    assert codes(doc) == [("warning", "version_series_differ"), ("warning", "verify_off_with_signing_peers")]
    assert only(doc, "version_series_differ")["message"] == (
        "peers run different noema release series (0.19.3: go; 0.22.2: rust)"
    )
    verify = only(doc, "verify_off_with_signing_peers")
    assert verify["message"].startswith("verify is off while peers advertise signing keys (go)")
    assert verify["fix"].startswith("`noemafed set-verify warn`")
    assert run_cli(["--cortex", str(path), "set-verify", "warn"]).exit_code == 0
    assert ("warning", "verify_off_with_signing_peers") not in codes(doctor(path)[1])


# ---- contacting peers: only online, each within its timeout ---------------------------------------------


def test_offline_by_default_without_a_terminal_and_online_on_one(tmp_path: Path) -> None:
    source = make_cortex(tmp_path, "source")
    with StdlibPeer(source) as peer:
        path = make_cortex(tmp_path, "alpha", peers=[{"name": "p", "endpoint": peer.endpoint}])
        code, doc = doctor(path)
        assert (code, codes(doc), doc["online"]) == (0, [("info", "offline")], False)
        assert peer.requests == []  # never contacted
        result = run_cli(["--cortex", str(path), "doctor"], tty=("stdout",))
        assert (result.exit_code, result.stdout) == (0, CLEAN)
        assert peer.calls()  # contacted


def test_a_hung_peer_costs_only_its_timeout(tmp_path: Path) -> None:
    source = make_cortex(tmp_path, "source")
    with StdlibPeer(source, hang_seconds=30) as hung:
        path = make_cortex(tmp_path, "alpha", peers=[{"name": "hung", "endpoint": hung.endpoint}])
        started = time.monotonic()
        code, doc = doctor(path, "--online", "--timeout", "0.5")
        elapsed = time.monotonic() - started
    assert elapsed < 5
    assert (code, codes(doc)) == (1, [("warning", "peer_unreachable")])
    assert "timed out" in only(doc, "peer_unreachable")["message"]


# ---- pure rules without a real condition ----------------------------------------------------------------


def _facts(**changes: Any) -> DoctorFacts:
    base = DoctorFacts(
        now=NOW,
        cortex_id="01OWN00000000000000000000",
        manifest_errors=(),
        verify="off",
        peers=(),
        own_cert=None,
        files=(),
        lock=None,
        quick_check=("ok",),
        database_error="",
        disk_free=0.5,
        online=True,
    )
    return base._replace(**changes)


def test_low_disk_space_is_a_warning_below_ten_percent() -> None:
    """A full file system cannot be made for a test without root mounts: the rule on plain facts."""
    assert checks.diagnose(_facts(disk_free=0.10)) == ()
    (finding,) = checks.diagnose(_facts(disk_free=0.099))
    assert (finding.severity, finding.code, finding.message) == (
        "warning",
        "disk_space_low",
        "only 9.9% of the file system holding the cortex is free",
    )


def test_a_skew_of_exactly_sixty_seconds_is_tolerated() -> None:
    peer = PeerFacts("p", False, "", "", "", contacted=True)
    assert checks.diagnose(_facts(peers=(peer._replace(clock_skew=-60.0),))) == ()
    (finding,) = checks.diagnose(_facts(peers=(peer._replace(clock_skew=-61.0),)))
    assert finding.message.startswith("peer \"p\"'s clock is 61 s behind this host's")


def test_the_schema_names_every_code_doctor_can_give() -> None:
    source = Path(checks.__file__).read_text()
    given = set(re.findall(r'Severity\.\w+,\s*"(\w+)"', source)) | set(
        re.findall(r'"(\w*tls_cert_expiry)"', source)
    )
    assert given == set(SCHEMA["$defs"]["finding"]["properties"]["code"]["enum"])
