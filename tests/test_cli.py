"""The command layer's shared rules: a --json command's error as a JSON document, levelled logging chosen through
the injected environment (terminal or cron), and internal errors as one error unless --traceback."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import REPO, make_cortex, run_cli
from peers.stdlib_peer import StdlibPeer
from sync_helpers import source, target_with

from noemafed.cli import CliContext, Environment, main
from noemafed.cortex.manifest import read_manifest
from noemafed.cortex.open import database_dir
from noemafed.errors import INTERNAL_ERROR_HINT
from noemafed.federation.lock import SyncLock

SCHEMAS = {
    name: json.loads((REPO / "docs" / f"{name}.schema.json").read_text()) for name in ("status", "sync")
}
NO_CORTEX_HINT = "pass the cortex directory, or create one with `noemafed init DIR`"
GO_LOG_LINE = re.compile(r"^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} (.*)$")


# The schema_version of each --json command's documents, its error document included.
SCHEMA_VERSIONS = {"status": 2, "sync": 2}


def _error_document(
    code: str, message: str, hint: str | None, exit_code: int, schema_version: int = 1
) -> dict[str, Any]:
    return {
        "schema_version": schema_version,
        "error": {"code": code, "message": message, "hint": hint, "exit_code": exit_code},
    }


def _stderr_of(message: str, hint: str | None) -> str:
    return f"Error: {message}\n" + (f"Hint: {hint}\n" if hint else "")


# ---- --json errors ----------------------------------------------------------------------------------------


JSON_ERRORS = [
    # (arguments after --cortex PATH (the first names the schema), how to break the cortex, code, exit code)
    (["status", "--json"], "missing", "cortex_not_found", 66),
    (["status", "--json"], "bad-manifest", "manifest_invalid", 78),
    (["sync", "--once", "--json"], "missing", "cortex_not_found", 66),
    (["sync", "--once", "--json"], "bad-manifest", "manifest_invalid", 78),
    (["sync", "--once", "--json", "--peer", "zz"], "ok", "command_failed", 1),
    (["sync", "--once", "--json"], "locked", "locked", 75),
    (["status", "--json"], "no-database", "cortex_unavailable", 69),
    (["sync", "--once", "--json"], "no-database", "cortex_unavailable", 69),
]


@pytest.mark.parametrize(
    ("args", "breakage", "code", "exit_code"),
    JSON_ERRORS,
    ids=[f"{args[0]}-{breakage}-{code}" for args, breakage, code, _ in JSON_ERRORS],
)
def test_a_json_commands_error_is_a_document_on_stdout_and_the_error_on_stderr(
    tmp_path: Path, args: list[str], breakage: str, code: str, exit_code: int
) -> None:
    path = target_with(tmp_path, [{"name": "a", "endpoint": "http://127.0.0.1:1"}])
    lock = SyncLock(database_dir(path))
    if breakage == "missing":
        path = tmp_path / "missing"
    elif breakage == "bad-manifest":
        text = (path / "cortex.md").read_text()
        (path / "cortex.md").write_text(text.replace("federation:\n", "federation:\n    mode: mirror\n"))
    elif breakage == "locked":
        lock.acquire()
    elif breakage == "no-database":
        (path / "db" / "noema.db").unlink()
    try:
        result = run_cli(["--cortex", str(path), *args])
    finally:
        lock.release()
    assert result.exit_code == exit_code, result.stderr
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, SCHEMAS[args[0]])
    error = doc["error"]
    assert doc == _error_document(code, error["message"], error["hint"], exit_code, SCHEMA_VERSIONS[args[0]])
    assert result.stderr == _stderr_of(error["message"], error["hint"])
    if breakage == "missing":
        assert error["hint"] == NO_CORTEX_HINT
        assert error["message"].startswith(f"no cortex at --cortex '{path}'")


def test_without_json_an_error_prints_nothing_on_stdout(tmp_path: Path) -> None:
    result = run_cli(["--cortex", str(tmp_path / "missing"), "status"])
    assert (result.exit_code, result.stdout) == (66, "")
    assert result.stderr.endswith(f"\nHint: {NO_CORTEX_HINT}\n")


def test_the_error_schemas_refuse_a_report_that_mixes_in_an_error(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    doc = json.loads(run_cli(["--cortex", str(path), "status", "--json"]).stdout)
    jsonschema.validate(doc, SCHEMAS["status"])
    doc["error"] = _error_document("x", "y", None, 1)["error"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SCHEMAS["status"])


# ---- internal errors ----------------------------------------------------------------------------------------


def _break_status(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object, **__: object) -> None:
        raise ValueError("boom")

    monkeypatch.setattr("noemafed.commands.status.status", boom)


def test_an_internal_error_is_one_error_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _break_status(monkeypatch)
    path = make_cortex(tmp_path, "alpha")
    result = run_cli(["--cortex", str(path), "status"])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"Error: internal error: ValueError: boom\nHint: {INTERNAL_ERROR_HINT}\n"
    as_json = run_cli(["--cortex", str(path), "status", "--json"])
    doc = json.loads(as_json.stdout)
    jsonschema.validate(doc, SCHEMAS["status"])
    assert doc == _error_document(
        "internal_error",
        "internal error: ValueError: boom",
        INTERNAL_ERROR_HINT,
        1,
        SCHEMA_VERSIONS["status"],
    )


def test_traceback_reraises_an_internal_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _break_status(monkeypatch)
    path = make_cortex(tmp_path, "alpha")
    with pytest.raises(ValueError, match="boom"):
        main(["--traceback", "--cortex", str(path), "status"], Environment(stderr=io.StringIO()))


def test_traceback_leaves_a_noemafed_error_as_it_is(tmp_path: Path) -> None:
    result = run_cli(["--traceback", "--cortex", str(tmp_path / "missing"), "status"])
    assert result.exit_code == 66
    assert "Traceback" not in result.stderr


# ---- logging: the one setup, terminal or cron ---------------------------------------------------------------


def _log_lines(stderr: str) -> list[str]:
    lines = []
    for line in stderr.splitlines():
        match = GO_LOG_LINE.match(line)
        assert match, line
        lines.append(match.group(1))
    return lines


LEVELS = [
    # (global options, the run wants progress (terminal, daemon, serve), levels shown)
    ([], False, ["warning", "error"]),
    ([], True, ["info", "warning", "error"]),
    (["-v"], False, ["info", "warning", "error"]),
    (["-vv"], False, ["debug", "info", "warning", "error"]),
    (["--quiet"], True, ["warning", "error"]),
]


@pytest.mark.parametrize(("options", "progress", "shown"), LEVELS)
def test_the_log_threshold(options: list[str], progress: bool, shown: list[str]) -> None:
    stderr = io.StringIO()
    obj = CliContext(Environment(stderr=stderr))
    obj.quiet = "--quiet" in options
    obj.verbosity = sum(option.count("v") for option in options if not option.startswith("--"))
    log = obj.log(progress=progress)
    for level in ("debug", "info", "warning", "error"):
        getattr(log, level)(level)
    assert _log_lines(stderr.getvalue()) == shown


def test_quiet_and_verbose_exclude_each_other(tmp_path: Path) -> None:
    path = make_cortex(tmp_path, "alpha")
    for args in (["-q", "-v", "status"], ["-q", "sync", "--once", "-v"]):
        result = run_cli(["--cortex", str(path), *args])
        assert result.exit_code == 2
        assert result.stderr.endswith("Error: --quiet and --verbose exclude each other\n")


def _pin_line(src: Path) -> str:
    manifest = read_manifest(src)
    return f'[federation] peer "a" identity pinned: {manifest.name} ({manifest.id})'


SYNC_OUTPUTS = [
    # ((global options, sync options), streams on a terminal, pin logged, report printed)
    (([], []), (), False, False),  # cron: a clean run says nothing
    (([], []), ("stderr",), True, False),
    (([], []), ("stdout",), False, True),
    (([], []), ("stdout", "stderr"), True, True),
    ((["-v"], []), (), True, True),
    (([], ["--verbose"]), (), True, True),
    ((["--quiet"], []), ("stdout", "stderr"), False, False),  # quiet: as under cron
]


@pytest.mark.parametrize(("options", "tty", "logged", "printed"), SYNC_OUTPUTS)
def test_sync_once_logs_and_prints_by_terminal_or_cron(
    tmp_path: Path, options: tuple[list[str], list[str]], tty: tuple[str, ...], logged: bool, printed: bool
) -> None:
    src = source(tmp_path, count=1)
    with StdlibPeer(src, flavor="go") as peer:
        target = target_with(tmp_path, [{"name": "a", "endpoint": peer.endpoint}])
        args = [*options[0], "--cortex", str(target), "sync", "--once", *options[1]]
        result = run_cli(args, tty=tty)
    assert result.exit_code == 0, result.stderr
    lines = _log_lines(result.stderr)
    assert (lines[:1] == [_pin_line(src)]) if logged else lines == []
    assert result.stdout.startswith("a: ok, ") if printed else result.stdout == ""


def test_a_folder_without_cortex_md_is_no_cortex_exit_66(tmp_path: Path) -> None:
    """docs/exit-codes.md once said 78 for a missing cortex.md; what runs says 66 (no cortex there)."""
    (tmp_path / "db").mkdir()
    result = run_cli(["--cortex", str(tmp_path), "status"])
    assert result.exit_code == 66
    assert result.stderr.startswith(f"Error: no cortex at --cortex '{tmp_path}': ")


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["peers", "--json"], ["--version"]])
def test_a_full_stdout_is_an_error_line_and_exit_74_not_a_traceback(
    tmp_path: Path, command: list[str]
) -> None:
    """Bug: `status > /dev/full` ended in a Python traceback."""
    import subprocess
    import sys

    from conftest import REPO, make_cortex

    cortex = make_cortex(tmp_path)
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "noemafed", "--cortex", str(cortex), *command],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            check=False,
        )
    assert result.returncode == 74
    assert result.stderr.startswith("Error: writing standard output: No space left on device\nHint: ")


def test_a_file_in_the_way_of_init_is_exit_73(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder\n")
    result = run_cli(["init", str(tmp_path / "file" / "cortex")])
    assert result.exit_code == 73
    assert result.stderr.startswith(
        f"Error: cannot create: {tmp_path / 'file' / 'cortex'}: not a directory\n"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("edit", "first_line"),
    [
        (lambda text: text.replace("\nid: ", "\nold_id: "), "Error: cortex.md has no id: peers pin it"),
        (
            lambda text: text.replace("\nname: ", "\nold_name: "),
            "Error: cortex.md has no name: events and logs carry it",
        ),
        (
            lambda text: text.replace("\nversion: 2", "\nversion: 1"),
            "Error: cortex.md version 1 is older than 2, the first with a cortex id for federation",
        ),
        (
            lambda text: text.replace("federation:\n", "federation:\n    interval: abc\n"),
            'Error: federation.interval "abc" is not a duration (such as 30s, 5m, 1h30m)',
        ),
    ],
    ids=["no-id", "no-name", "old-version", "bad-interval"],
)
def test_status_and_sync_refuse_a_manifest_they_cannot_trust(
    tmp_path: Path, edit: Any, first_line: str
) -> None:
    """Bug: `status` printed `"id": ""` for a manifest without an id, and `interval: abc` silently meant 30 s."""
    from sync_helpers import target_with

    cortex = target_with(tmp_path, [{"name": "a", "endpoint": "http://127.0.0.1:1"}])
    manifest = cortex / "cortex.md"
    manifest.write_text(edit(manifest.read_text()))
    before = manifest.read_bytes()
    for command in (["status"], ["status", "--json"], ["sync", "--once"]):
        result = run_cli(["--cortex", str(cortex), *command])
        assert result.exit_code == 78, (command, result.stderr)
        assert result.stderr.split("\n", 1)[0] == first_line
    assert (
        run_cli(["--cortex", str(cortex), "peers"]).exit_code == 0
    )  # the configuration commands still read it
    assert manifest.read_bytes() == before


def _loaded_by_a_fresh_run(args: list[str], modules: str) -> str:
    """Run `noemafed ARGS` in a fresh interpreter and return what it printed last: `sorted(m for m in MODULES if
    m in sys.modules)`, MODULES being a Python expression over the module names."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom noemafed.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {modules} if m in sys.modules), file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    return done.stderr.splitlines()[-1] if done.stderr else repr(done)


@pytest.mark.parametrize("command", [["status"], ["status", "--check"]], ids=" ".join)
def test_status_loads_no_openssl(tmp_path: Path, command: list[str]) -> None:
    """Bug: every `status` loaded the host's OpenSSL twice over, for the verifier's name only `--json` shows and
    for hashlib's sha256 of the storage-lock path: about 7 ms of a 60 ms run a monitoring system makes every
    minute (docs/performance.md, status)."""
    cortex = make_cortex(tmp_path)
    assert (
        _loaded_by_a_fresh_run(["--cortex", str(cortex), *command], "('_ssl', '_hashlib', 'ctypes')") == "[]"
    )


def test_run_starts_without_the_garbage_collector(tmp_path: Path) -> None:
    """run() (the process's entry point) turns the cyclic collector off for the start-up: a `status` runs
    without it (docs/performance.md, status)."""
    import subprocess
    import sys

    cortex = make_cortex(tmp_path)
    code = (
        "import gc, sys\nimport noemafed.commands.status as module\nreal = module.status\n"
        "def spy(*args, **kwargs):\n    print('collector on:', gc.isenabled(), file=sys.stderr)\n"
        "    return real(*args, **kwargs)\n"
        "module.status = spy\nfrom noemafed.cli import run\n"
        f"sys.argv = ['noemafed', '--cortex', {str(cortex)!r}, 'status']\nrun()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "collector on: False\n"


@pytest.mark.parametrize(
    "command",
    # the daemon shares sync's start; serve refusing its options still began as a server does
    [["sync", "--once", "--timeout", "1"], ["serve", "--workers", "2", "--max-connections", "1"]],
    ids=" ".join,
)
def test_sync_and_serve_turn_the_garbage_collector_back_on(tmp_path: Path, command: list[str]) -> None:
    """Their work is long (a daemon, a server) or large (a backlog): run()'s start-up setting must not last."""
    import gc

    cortex = target_with(tmp_path, [{"name": "a", "endpoint": "http://127.0.0.1:1"}])
    gc.disable()
    try:
        run_cli(["--cortex", str(cortex), *command])
        assert gc.isenabled()
    finally:
        gc.enable()


def test_status_check_defines_only_its_own_command_reports_and_renderers(tmp_path: Path) -> None:
    """A start-up defines one command's options, report classes and renderers (docs/performance.md, status):
    `status --check`, which a monitoring system runs every minute, loads none of the other families."""
    cortex = make_cortex(tmp_path)
    families = (
        "[m for m in sys.modules if m.startswith(('noemafed.cli.', 'noemafed.reports', 'noemafed.render'))]"
    )
    assert _loaded_by_a_fresh_run(["--cortex", str(cortex), "status", "--check"], families) == str(
        [
            "noemafed.cli.app",
            "noemafed.cli.status",
            "noemafed.render",
            "noemafed.render.status",
            "noemafed.reports",
            "noemafed.reports.status",
        ]
    )


@pytest.mark.parametrize("mode", ["--check", "--json"])
def test_status_loads_no_module_it_does_not_need(tmp_path: Path, mode: str) -> None:
    """Modules `status` once loaded for nothing (docs/performance.md, status): `locale`, which gettext imports
    when click words its help option or click.Path's name; `binascii`, which only keys in the manifest need; the
    error document, which only a failure prints. One that comes back costs every monitoring check again."""
    cortex = make_cortex(tmp_path)
    unneeded = "('locale', 'binascii', 'noemafed.reports.error')"
    assert _loaded_by_a_fresh_run(["--cortex", str(cortex), "status", mode], unneeded) == "[]"


def test_the_help_option_reads_as_clicks_did(tmp_path: Path) -> None:
    """noemafed makes `-h, --help` itself (app._help_option): the same line in every help page, the same page
    for -h and --help, and usage errors still point at it."""
    for command in ([], ["status"], ["key"], ["key", "fingerprint"]):
        long, short = run_cli([*command, "--help"]), run_cli([*command, "-h"])
        assert (long.exit_code, short.exit_code) == (0, 0)
        assert long.stdout == short.stdout
        assert re.search(r"^  -h, --help +Show this message and exit\.$", long.stdout, re.MULTILINE), (
            long.stdout
        )
    refused = run_cli(["--cortex", str(make_cortex(tmp_path)), "status", "--peer", "a"])
    assert refused.exit_code == 2
    usage, hint, blank, error = refused.stderr.splitlines()
    assert (usage, blank, error) == ("Usage: noemafed status [OPTIONS]", "", "Error: --peer needs --check")
    # click 8.1-8.3 name -h, later ones --help: either way the hint is there.
    assert hint in ("Try 'noemafed status -h' for help.", "Try 'noemafed status --help' for help.")
    # One option object per command: click runs the eager options in the order they were typed, by identity,
    # so --help before --version shows the help (a new option each time would lose that order).
    both = run_cli(["--help", "--version"])
    assert both.exit_code == 0
    assert both.stdout.startswith("Usage: noemafed "), both.stdout


@pytest.mark.parametrize("command", [["status"], ["sync", "--once"]])
def test_a_metrics_file_that_is_a_folder_is_refused_before_anything_runs(
    tmp_path: Path, command: list[str]
) -> None:
    """As click.Path(dir_okay=False) refused it (app.FilePath): a usage error, exit 2, the cortex not opened."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    refused = run_cli(["--cortex", str(tmp_path / "none"), *command, "--metrics-file", str(folder)])
    assert refused.exit_code == 2
    assert refused.stderr.endswith(
        f"Error: Invalid value for '--metrics-file': File {str(folder)!r} is a directory.\n"
    ), refused.stderr


def test_a_metrics_file_that_cannot_be_looked_at_is_the_writes_failure_not_a_usage_error(
    tmp_path: Path,
) -> None:
    """A name too long to stat (as a folder this user may not search) is no refusal at parsing: status --check
    still gives its plugin line, UNKNOWN, exit 3, naming the write that failed."""
    cortex = make_cortex(tmp_path)
    target = tmp_path / ("m" * 300 + ".prom")
    result = run_cli(["--cortex", str(cortex), "status", "--check", "--metrics-file", str(target)])
    assert result.exit_code == 3, result
    assert result.stdout.startswith("NOEMAFED UNKNOWN - "), result.stdout
    assert "name too long" in result.stdout


def test_every_command_is_reachable_through_the_lazy_group() -> None:
    """A command defined in a module of noemafed/cli/ but missing from app.COMMANDS would never run; one that is
    not an app.Command would word its help option through gettext."""
    import importlib
    import pkgutil

    import click

    import noemafed.cli
    from noemafed.cli import app

    defined, subcommands = {}, set()
    for module_info in pkgutil.iter_modules(noemafed.cli.__path__):
        module = importlib.import_module(f"noemafed.cli.{module_info.name}")
        for value in vars(module).values():
            if value is app.cli or not isinstance(value, click.Command):
                continue
            if value.callback.__module__ == module.__name__:
                defined[value.name] = module_info.name
                if isinstance(value, click.Group):
                    subcommands.update(value.commands)
                # Its help option made without gettext (test_the_help_option_reads_as_clicks_did).
                assert isinstance(value, (app.Command, app.CortexGroup)), value.name
    assert {name: family for name, family in defined.items() if name not in subcommands} == app.COMMANDS
    ctx = click.Context(app.cli)
    assert [app.cli.get_command(ctx, name).name for name in app.cli.list_commands(ctx)] == sorted(
        app.COMMANDS
    )


@pytest.mark.parametrize(
    ("typed", "suggested"),
    [
        ("statu", "Did you mean 'status'?"),
        ("peer", "(Did you mean one of: 'add-peer', 'peers', 'set-peer'?)"),
    ],
)
def test_a_mistyped_command_is_refused_with_the_names_it_resembles(typed: str, suggested: str) -> None:
    """The lazy root group knows every name before it loads any command: click's suggestions still come."""
    result = run_cli([typed])
    assert result.exit_code == 2
    assert f"Error: No such command '{typed}'." in result.stderr
    assert suggested in result.stderr
