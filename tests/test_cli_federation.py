"""The federation CLI: Python twins of noema's internal/cli tests, plus exact outputs for every command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import make_cortex, put_state, run_cli, set_federation, state_rows, version_line

from noemafed.cortex.access import key_fingerprint

PINNED_B = "01PEERBETA0000000000000000"
PINNED_C = "01PEERGAMMA000000000000000"
OTHER = "01OTHERCORTEX0000000000000"
CURSOR = "01JQH4HPD0B8E9WCXGFN1A33VE"


def two_peer_cortex(tmp_path: Path) -> Path:
    return make_cortex(
        tmp_path,
        "alpha",
        peers=[
            {"name": "beta", "endpoint": "https://beta.lan:3000"},
            {"name": "gamma", "endpoint": "https://gamma.lan:3000"},
        ],
    )


# ---- reset-peer (TestFederationResetPeer_*) -------------------------------------------------------


def test_TestFederationResetPeer_ClearsAllState(tmp_path: Path) -> None:
    path = two_peer_cortex(tmp_path)
    put_state(
        path,
        **{
            "peer:beta:cortex_id": PINNED_B,
            "peer:beta:last_event": CURSOR,
            "peer:beta:last_seen": "2026-04-20T12:00:30Z",
            "vclock": f'{{"{PINNED_B}":7,"{OTHER}":3}}',
            f"cortexkey:{PINNED_B}": "ed25519:0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc=",
        },
    )
    result = run_cli(["--cortex", str(path), "reset-peer", "beta"], stdin="y\n", tty=("stdin",))
    assert result.exit_code == 0, result.stderr
    rows = state_rows(path)
    assert "peer:beta:cortex_id" not in rows
    assert "peer:beta:last_event" not in rows
    assert "peer:beta:last_seen" not in rows
    assert rows["vclock"] == f'{{"{OTHER}":3}}'
    # Gap the Go suite does not cover: the signing-key pin of the pinned id is removed too.
    assert f"cortexkey:{PINNED_B}" not in rows
    assert result.stdout == (
        'About to reset federation state for 1 peer(s) in cortex "alpha":\n'
        "  beta (https://beta.lan:3000)\n"
        f"    pinned cortex_id: {PINNED_B}\n"
        f"    last_event:       {CURSOR}\n"
        "    last_seen:        2026-04-20T12:00:30Z\n"
        "After reset, the next sync will re-pin the peer's current cortex_id\n"
        "and replay events from the beginning of its log.\n"
        "Proceed? [y/N]: \n"
        "Reset complete.\n"
        "  beta: state cleared\n"
        "  vector-clock buckets dropped: 1\n"
        "Restart `noema serve` (or wait for the next syncer poll) to re-pin the peers.\n"
    )


def test_reset_peer_also_clears_health_usage_and_rank(tmp_path: Path) -> None:
    """A deliberate difference from Go (docs/compatibility.md): stale health must not outlive the reset."""
    path = two_peer_cortex(tmp_path)
    put_state(
        path,
        **{
            "peer:beta:health": '{"consecutive_failures":3,"last_error":{"reason":"identity_mismatch","observed_at":"x"}}',
            "peer:beta:last_usage": "2026-04-20T12:00:30Z",
            "peer:beta:consolidation_rank": '{"cortex_id":"x","rank":3,"observed_at":"y"}',
            "peer:gamma:last_usage": "2026-04-20T12:00:30Z",
        },
    )
    result = run_cli(["--cortex", str(path), "reset-peer", "--yes", "beta"])
    assert result.exit_code == 0
    rows = state_rows(path)
    assert not [key for key in rows if key.startswith("peer:beta:")]
    assert rows["peer:gamma:last_usage"] == "2026-04-20T12:00:30Z"
    # Only pin, cursor and last_seen count as "state" for the summary line, as in Go.
    assert "  beta: nothing to clear (peer had no stored state)\n" in result.stdout


def test_TestFederationResetPeer_RejectsUnknownPeer(tmp_path: Path) -> None:
    path = two_peer_cortex(tmp_path)
    put_state(path, **{"peer:beta:cortex_id": PINNED_B})
    result = run_cli(["--cortex", str(path), "reset-peer", "beta", "delta", "--yes"])
    assert result.exit_code == 1
    assert result.stderr == 'Error: peer "delta" is not configured in cortex.md (known: beta, gamma)\n'
    assert result.stdout == ""
    assert state_rows(path)["peer:beta:cortex_id"] == PINNED_B


def test_TestFederationResetPeer_NoStateNoOp(tmp_path: Path) -> None:
    path = two_peer_cortex(tmp_path)
    result = run_cli(["--cortex", str(path), "reset-peer", "beta", "-y"])
    assert result.exit_code == 0
    assert "  beta: nothing to clear (peer had no stored state)\n" in result.stdout
    assert "vector-clock buckets dropped" not in result.stdout


def test_TestFederationResetPeer_AbortLeavesStateIntact(tmp_path: Path) -> None:
    path = two_peer_cortex(tmp_path)
    put_state(path, **{"peer:beta:cortex_id": PINNED_B, "peer:beta:last_event": CURSOR})
    for answer in ("n\n", "", "\n", "YES\n", "nope y\n"):
        result = run_cli(["--cortex", str(path), "reset-peer", "beta"], stdin=answer, tty=("stdin",))
        assert result.exit_code == 1
        assert result.stderr == "Error: aborted by user\n"
        assert result.stdout.endswith("Proceed? [y/N]: ")
    rows = state_rows(path)
    assert rows["peer:beta:cortex_id"] == PINNED_B
    assert rows["peer:beta:last_event"] == CURSOR


def test_reset_peer_accepts_y_Y_and_yes(tmp_path: Path) -> None:
    path = two_peer_cortex(tmp_path)
    for answer in ("y\n", "Y\n", "yes\n", "  yes  more\n"):
        put_state(path, **{"peer:beta:cortex_id": PINNED_B})
        result = run_cli(["--cortex", str(path), "reset-peer", "beta"], stdin=answer, tty=("stdin",))
        assert result.exit_code == 0, answer
        assert "peer:beta:cortex_id" not in state_rows(path)


def test_TestFederationResetPeer_MultiplePeers(tmp_path: Path) -> None:
    path = two_peer_cortex(tmp_path)
    put_state(
        path,
        **{
            "peer:beta:cortex_id": PINNED_B,
            "peer:gamma:cortex_id": PINNED_C,
            "vclock": f'{{"{PINNED_B}":2,"{PINNED_C}":5}}',
        },
    )
    result = run_cli(["--cortex", str(path), "reset-peer", "beta", "gamma", "--yes"])
    assert result.exit_code == 0
    assert state_rows(path)["vclock"] == "{}"
    assert "  vector-clock buckets dropped: 2\n" in result.stdout
    assert "About to reset federation state for 2 peer(s)" in result.stdout


def test_reset_peer_requires_a_name(tmp_path: Path) -> None:
    path = two_peer_cortex(tmp_path)
    result = run_cli(["--cortex", str(path), "reset-peer"])
    assert result.exit_code == 2
    assert "Missing argument 'NAMES...'" in result.stderr


# ---- status (TestFederationStatus_*) --------------------------------------------------------------


def test_TestFederationStatus_ShowsAccessLineOpenMode(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    result = run_cli(["--cortex", str(path), "status"], env={"NOEMA_MCP_KEY": ""})
    assert result.exit_code == 0
    assert result.stdout == (
        "Cortex: alpha\nAccess: open\n\nFederation: not configured (no peers in cortex.md)\n"
    )
    assert result.stdout.index("Access:") < result.stdout.index("Federation:")


def test_TestFederationStatus_ShowsAccessLineKeyedMode(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    secret = "s3cret-ring-key"
    result = run_cli(["--cortex", str(path), "status"], env={"NOEMA_MCP_KEY": secret})
    assert result.exit_code == 0
    assert f"Access: keyed (source=env, fingerprint={key_fingerprint(secret)})\n" in result.stdout
    assert secret not in result.stdout + result.stderr


def test_status_access_error_is_reported_not_fatal(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    result = run_cli(["--cortex", str(path), "status"], env={"NOEMA_MCP_KEY": "   "})
    assert result.exit_code == 0
    assert "Access: error loading key: NOEMA_MCP_KEY is set but contains only whitespace\n" in result.stdout


def test_status_full_layout_with_health_block(tmp_path: Path) -> None:
    path = make_cortex(
        tmp_path,
        "alpha",
        peers=[
            {"name": "beta", "endpoint": "https://beta.lan:3000"},
            {"name": "gamma", "endpoint": "https://gamma.lan:3000", "mode": "paused"},
            {"name": "delta", "endpoint": "https://delta.lan:3000"},
        ],
        interval="1m",
    )
    put_state(
        path,
        **{
            "consolidation:rank": '{"cortex_id":"x","rank":57,"observed_at":"2026-08-15T03:00:00Z"}',
            "peer:beta:last_seen": "2026-04-20T12:00:30Z",
            "peer:beta:last_event": CURSOR,
            "peer:beta:health": (
                '{"version":"v0.4.1-19-g1cc3be6","version_observed_at":"2026-04-20T12:00:30Z",'
                '"consecutive_failures":3,"last_error":{"reason":"invalid_trace_id",'
                '"event_id":"01FIRSTFAIL0000000000000001","trace_id":"20260101-x","observed_at":"2026-04-20T12:00:30Z"}}'
            ),
            "peer:beta:consolidation_rank": '{"cortex_id":"y","rank":0,"observed_at":"2026-08-15T03:00:00Z"}',
            "peer:gamma:health": '{"consecutive_failures":2}',
            "peer:delta:health": '{"version":"0.22.2","last_success":"2026-04-20T12:00:30Z"}',
            "peer:delta:consolidation_rank": '{"cortex_id":"z","rank":4,"observed_at":"2026-08-15T03:00:00Z"}',
            "vclock": f'{{"{PINNED_C}":5,"{PINNED_B}":2}}',
        },
    )
    # The cursor's ULID is dated 2025-03-29T14:23:00Z; status judges at the fake now of the test hook.
    result = run_cli(["--cortex", str(path), "status"], env={"NOEMAFED_TEST_NOW": "2026-04-20T12:30:30Z"})
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        "Cortex: alpha\n"
        "Access: open\n"
        "\n"
        "Mode: sync\n"
        "Peers: 3\n"
        "Interval: 1m\n"
        "Consolidation Rank: 57 (observed 2026-08-15T03:00:00Z)\n"
        "\n"
        "  beta\n"
        "    endpoint:   https://beta.lan:3000\n"
        "    mode:       sync\n"
        "    version:    v0.4.1-19-g1cc3be6\n"
        "    rank:       (ineligible)\n"
        "    last_seen:  2026-04-20T12:00:30Z\n"
        f"    last_event: {CURSOR}\n"
        "    health:     ⚠ 3 consecutive failures since last success\n"
        "                reason: invalid_trace_id\n"
        "                event:  01FIRSTFAIL0000000000000001\n"
        "                trace:  20260101-x\n"
        "                likely cause: peer binary predates schema changes elsewhere on the ring; upgrade the peer\n"
        "  gamma\n"
        "    endpoint:   https://gamma.lan:3000\n"
        "    mode:       paused\n"
        "    version:    (not yet observed)\n"
        "    rank:       (none)\n"
        "    last_seen:  (never)\n"
        "    last_event: (none)\n"
        "    health:     ⚠ 2 consecutive failures since last success\n"
        "  delta\n"
        "    endpoint:   https://delta.lan:3000\n"
        "    mode:       sync\n"
        "    version:    0.22.2\n"
        "    rank:       4 (observed 2026-08-15T03:00:00Z)\n"
        "    last_seen:  (never)\n"
        "    last_event: (none)\n"
        "\n"
        "Vector Clock:\n"
        f"  {PINNED_B}: 2\n"
        f"  {PINNED_C}: 5\n"
        "\n"
        "Verdicts (stale after 1h0m0s without a success):\n"
        "  beta: needs_operator; 3 consecutive failures; lag 9286h7m30s\n"
        "  gamma: paused; 2 consecutive failures\n"
        "  delta: ok\n"
    )


def test_status_with_invalid_manifest_fails_with_the_validation_error(tmp_path: Path) -> None:
    """Go prints "not configured" here; noemafed fails so cron and scripts notice (compatibility.md)."""
    path = make_cortex(tmp_path, "alpha", peers=[{"name": "beta", "endpoint": "http://b"}], mode="mirror")
    before = (path / "cortex.md").read_bytes()
    result = run_cli(["--cortex", str(path), "status"])
    assert result.exit_code == 78
    assert result.stderr == 'Error: federation.mode "mirror" is not valid; use sync, publish, or subscribe\n'
    assert (path / "cortex.md").read_bytes() == before


# ---- key fingerprint (TestFederationKeyFingerprint_*) ---------------------------------------------


def test_TestFederationKeyFingerprint_OpenMode(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    result = run_cli(["--cortex", str(path), "key", "fingerprint"])
    assert result.exit_code == 0
    assert result.stdout == "Cortex:      alpha\nAccess:      open mode (no key configured)\n"
    assert "Fingerprint:" not in result.stdout


def test_TestFederationKeyFingerprint_EnvKey(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    result = run_cli(["--cortex", str(path), "key", "fingerprint"], env={"NOEMA_MCP_KEY": " env-key \n"})
    assert result.exit_code == 0
    assert result.stdout == (
        f"Cortex:      alpha\nSource:      env\nFingerprint: {key_fingerprint('env-key')}\n"
    )
    assert "env-key" not in result.stdout


def _with_key_file(path: Path, secret: str, mode: int = 0o600) -> Path:
    key_file = path / ".access.secret"
    key_file.write_text(secret + "\r\n\n")
    os.chmod(key_file, mode)
    text = (path / "cortex.md").read_text()
    (path / "cortex.md").write_text(
        text.replace("version: 2\n", "version: 2\naccess:\n    shared_key_file: .access.secret\n")
    )
    return key_file


def test_TestFederationKeyFingerprint_FileKey(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    key_file = _with_key_file(path, "file-key")
    result = run_cli(["--cortex", str(path), "key", "fingerprint"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        f"Cortex:      alpha\nSource:      file\nPath:        {key_file}\n"
        f"Fingerprint: {key_fingerprint('file-key')}\n"
    )
    assert ".access.secret" in result.stdout
    assert "file-key" not in result.stdout


def test_TestFederationKeyFingerprint_EnvOverridesFile(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    key_file = _with_key_file(path, "file-key")
    result = run_cli(["--cortex", str(path), "key", "fingerprint"], env={"NOEMA_MCP_KEY": "env-key"})
    assert result.exit_code == 0
    assert result.stdout == (
        f"Cortex:      alpha\nSource:      env\nPath:        {key_file}\n"
        f"Fingerprint: {key_fingerprint('env-key')}\n"
        "Note:        NOEMA_MCP_KEY is overriding access.shared_key_file\n"
    )
    assert key_fingerprint("file-key") not in result.stdout


def test_key_fingerprint_refuses_a_permissive_key_file(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    key_file = _with_key_file(path, "file-key", mode=0o644)
    result = run_cli(["--cortex", str(path), "key", "fingerprint"])
    assert result.exit_code == 78
    assert result.stderr == (
        f"Error: loading access key: refusing to read access key file {key_file}: "
        f"mode 0644 is too permissive; chmod 600 {key_file}\n"
    )


# ---- peers, add-peer, set-mode, pause-peer, resume-peer -------------------------------------------


def test_peers_lists_or_says_none(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    result = run_cli(["--cortex", str(path), "peers"])
    assert result.stdout == "No peers configured. Add peers to cortex.md under the federation section.\n"
    set_federation(
        path, [{"name": "beta", "endpoint": "https://b:1"}, {"name": "no", "endpoint": "https://n:2"}]
    )
    put_state(path, **{"peer:no:cortex_id": PINNED_B})
    run_cli(["--cortex", str(path), "pause-peer", "beta"])
    result = run_cli(["--cortex", str(path), "peers"])
    # noema's `  <name>  <endpoint>`, in aligned columns, with the mode and the pin (docs/compatibility.md).
    assert result.stdout == (
        "  NAME  ENDPOINT     MODE    PINNED CORTEX ID\n"
        "  beta  https://b:1  paused  (none)\n"
        f"  no    https://n:2  sync    {PINNED_B}\n"
    )


def test_add_peer_trims_slashes_and_writes_go_order(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    result = run_cli(["--cortex", str(path), "add-peer", "beta", "https://beta.lan:3000///"])
    assert result.exit_code == 0
    assert result.stdout == 'Added peer "beta" (https://beta.lan:3000) to cortex.md\n'
    assert (
        "federation:\n    peers:\n        - name: beta\n          endpoint: https://beta.lan:3000\n"
        in (path / "cortex.md").read_text()
    )
    again = run_cli(["--cortex", str(path), "add-peer", "beta", "https://x"])
    assert again.exit_code == 1
    assert again.stderr == 'Error: peer "beta" is already configured\n'
    own = run_cli(["--cortex", str(path), "add-peer", "alpha", "https://x"])
    assert own.stderr == (
        'Error: peer name "alpha" matches this cortex\'s own name; '
        "pick a different label to avoid federation identity collisions\n"
    )


def test_set_mode_outputs(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    bad = run_cli(["--cortex", str(tmp_path / "missing"), "set-mode", "mirror"])
    # The mode is checked before the cortex is resolved; a bad argument exits 2 (noema: 1).
    assert bad.exit_code == 2
    assert bad.stderr == 'Error: invalid mode "mirror"; use sync, publish, or subscribe\n'
    same = run_cli(["--cortex", str(path), "set-mode", "sync"])
    assert same.stdout == 'Federation mode is already "sync" — no change.\n'
    changed = run_cli(["--cortex", str(path), "set-mode", "publish"])
    assert changed.stdout == (
        "Federation mode changed: sync -> publish\n\nBehavior:\n"
        "  - The syncer will NOT start (no pulling from peers)\n"
        "  - sync_events will continue serving events to peers\n"
        "  - Write tools (create/update/delete) are blocked on HTTP\n"
        "  - Local stdio transport retains full write access\n"
        "\nRestart `noema serve` for the change to take effect.\n"
    )
    assert "    mode: publish\n" in (path / "cortex.md").read_text()
    back = run_cli(["--cortex", str(path), "set-mode", "sync"])
    assert back.stdout.startswith("Federation mode changed: publish -> sync\n\nBehavior:\n")
    assert "mode:" not in (path / "cortex.md").read_text()


def test_pause_and_resume_peer(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    none = run_cli(["--cortex", str(path), "pause-peer", "beta"])
    assert none.stderr == "Error: no federation peers configured in cortex.md\n"
    set_federation(
        path, [{"name": "beta", "endpoint": "https://b"}, {"name": "gamma", "endpoint": "https://g"}]
    )
    put_state(path, **{"peer:beta:last_event": CURSOR})
    unknown = run_cli(["--cortex", str(path), "pause-peer", "delta"])
    assert unknown.stderr == 'Error: peer "delta" is not configured in cortex.md (known: beta, gamma)\n'
    paused = run_cli(["--cortex", str(path), "pause-peer", "beta"])
    assert (
        paused.stdout == 'Peer "beta": sync -> paused\nRestart `noema serve` for the change to take effect.\n'
    )
    assert "endpoint: https://b\n          mode: paused\n" in (path / "cortex.md").read_text()
    before = (path / "cortex.md").read_bytes()
    again = run_cli(["--cortex", str(path), "pause-peer", "beta"])
    assert again.stdout == 'Peer "beta" is already paused — no change.\n'
    assert (path / "cortex.md").read_bytes() == before
    resumed = run_cli(["--cortex", str(path), "resume-peer", "beta"])
    assert (
        resumed.stdout
        == 'Peer "beta": paused -> sync\nRestart `noema serve` for the change to take effect.\n'
    )
    assert "mode:" not in (path / "cortex.md").read_text()
    assert state_rows(path)["peer:beta:last_event"] == CURSOR


# ---- the process entry point: main(), then os._exit without the interpreter's teardown -------------------


def _entry(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `code` then noemafed's process entry point with `args`, in a fresh interpreter."""
    program = (
        f"import sys\n{code}\nsys.argv = ['noemafed', *{list(args)!r}]\nfrom noemafed.cli import run\nrun()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_entry_point_keeps_exit_codes_and_flushes_output(tmp_path: Path) -> None:
    done = _entry("", "--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, version_line(), "")
    done = _entry("", "--cortex", str(tmp_path / "nowhere"), "status")
    assert done.returncode == 66
    assert done.stderr.startswith("Error: ")
    done = _entry("", "--no-such-option")
    assert done.returncode == 2


def test_the_entry_point_runs_atexit_handlers() -> None:
    done = _entry("import atexit; atexit.register(print, 'atexit ran')", "--version")
    assert (done.returncode, done.stdout) == (0, version_line() + "atexit ran\n")


def test_the_entry_point_waits_for_a_live_non_daemon_thread() -> None:
    code = (
        "import threading, time\n"
        "threading.Thread(target=lambda: (time.sleep(0.3), print('thread done', flush=True))).start()"
    )
    done = _entry(code, "--version")
    assert (done.returncode, done.stdout) == (0, version_line() + "thread done\n")
