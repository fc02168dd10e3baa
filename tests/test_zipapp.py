"""The built artifact: dist/noemafed.pyz runs, does the job, and builds reproducibly."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import PYZ, REPO, version_line

from noemafed import __version__

pytestmark = pytest.mark.zipapp


def run_pyz(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if not PYZ.exists():
        pytest.fail("dist/noemafed.pyz is missing: run ./build.sh (scripts/test.sh does)")
    # Without PYTHONPATH, which would put a checkout's noemafed before the pyz's own.
    inherited = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, str(PYZ), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**inherited, **(env or {})},
        check=False,
    )


def test_pyz_answers_version_with_the_commit_it_was_built_from() -> None:
    result = run_pyz("--version")
    assert result.returncode == 0, result.stderr
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not head:
        pytest.skip("the checkout has no commit to compare with")
    # build.sh writes the commit into the wheel (and "+dirty" for uncommitted changes to tracked files).
    assert result.stdout in (version_line(head), version_line(f"{head}+dirty"))


def test_pyz_runs_under_its_shebang_python() -> None:
    """The file itself is executable with `/usr/bin/env python3`, as an operator would run it."""
    assert PYZ.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    result = subprocess.run([str(PYZ), "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "Usage: noemafed" in result.stdout


def test_pyz_init_then_status_json_validates(tmp_path: Path) -> None:
    cortex = tmp_path / "c"
    assert run_pyz("init", str(cortex), "--name", "alpha").returncode == 0
    result = run_pyz("--cortex", str(cortex), "status", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, json.loads((REPO / "docs" / "status.schema.json").read_text()))
    assert doc["cortex"]["name"] == "alpha"
    conn = sqlite3.connect(cortex / "db" / "noema.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_pyz_reports_errors_with_exit_codes(tmp_path: Path) -> None:
    result = run_pyz("--cortex", str(tmp_path / "missing"), "status")
    assert result.returncode == 66
    assert result.stderr.startswith("Error: no cortex at --cortex")
    assert "Traceback" not in result.stderr


def _build_in_clone(tmp_path: Path, name: str) -> str:
    clone = tmp_path / name / "noemafed"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("SOURCE_DATE_EPOCH", None)
    subprocess.run([str(clone / "build.sh")], check=True, timeout=600, env=env, capture_output=True)
    return hashlib.sha256((clone / "dist" / "noemafed.pyz").read_bytes()).hexdigest()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to clone the checkout")
def test_two_builds_from_two_checkout_paths_are_identical(tmp_path: Path) -> None:
    if subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, check=False
    ).returncode:
        pytest.skip("the checkout has no commit to clone")
    first = _build_in_clone(tmp_path, "one")
    second = _build_in_clone(tmp_path, "somewhere-else")
    assert first == second


# ---- scripts/pyz_main.py: shiv's bootstrap only when there is something to do --------------------------

PROBE = "import gc, sys; print('PROBE', gc.isenabled(), '_bootstrap' in sys.modules, sys.path)\n"


def _probe(pyz: Path, env: dict[str, str]) -> tuple[bool, list[str]]:
    """Run `pyz --version`, then (python -i) print whether shiv's bootstrap ran and the final sys.path; the
    interpreter that goes on has its garbage collector on again, whichever way the pyz started."""
    result = subprocess.run(
        [sys.executable, "-i", str(pyz), "--version"],
        input=PROBE,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )
    assert f"noemafed {__version__}" in result.stdout, result.stderr
    line = next(line for line in result.stdout.splitlines() if "PROBE" in line)
    _, collecting, bootstrapped, path = line.split(" ", 3)
    assert collecting == "True"
    return bootstrapped == "True", eval(path)  # noqa: S307 (our own repr of a list of str)


def test_extracted_pyz_skips_shivs_bootstrap_with_the_same_sys_path(tmp_path: Path) -> None:
    root = {"SHIV_ROOT": str(tmp_path / "shiv")}
    first = _probe(PYZ, root)  # extracts: shiv's bootstrap
    second = _probe(PYZ, root)  # already extracted: our fast path
    forced = _probe(PYZ, {**root, "SHIV_FORCE_EXTRACT": "1"})  # any SHIV_* override: shiv again
    assert (first[0], second[0], forced[0]) == (True, False, True)
    assert first[1] == second[1] == forced[1]
    assert sum("site-packages" in part and str(tmp_path) in part for part in second[1]) == 1
    assert len(list((tmp_path / "shiv").glob("*/site-packages"))) == 1


def test_shivs_interpreter_keeps_pythons_garbage_collector(tmp_path: Path) -> None:
    """The collector is off only while noemafed itself starts: SHIV_INTERPRETER runs a script as Python would."""
    script = tmp_path / "script.py"
    script.write_text("import gc\nprint('collecting', gc.isenabled())\n")
    env = {"SHIV_ROOT": str(tmp_path / "shiv")}
    run_pyz("--version", env={**os.environ, **env})  # extracted: the next run could take the fast path
    result = run_pyz(str(script), env={**os.environ, **env, "SHIV_INTERPRETER": "1"})
    assert result.stdout == "collecting True\n", result.stderr


def test_a_symlinked_pyz_reuses_the_extraction_of_its_target(tmp_path: Path) -> None:
    """shiv names the cache after the resolved file, so a symlink under another name finds it."""
    root = {"SHIV_ROOT": str(tmp_path / "shiv")}
    _probe(PYZ, root)
    link = tmp_path / "bin" / "noemafed"
    link.parent.mkdir()
    link.symlink_to(PYZ)
    bootstrapped, path = _probe(link, root)
    assert not bootstrapped
    assert any(part.startswith(str(tmp_path / "shiv" / "noemafed.pyz_")) for part in path)
    assert len(list((tmp_path / "shiv").iterdir())) <= 2  # the extraction and shiv's lock file, nothing new


def _pyz_main() -> Any:
    spec = importlib.util.spec_from_file_location("pyz_main", REPO / "scripts" / "pyz_main.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("build_root", "environ_root"),
    [
        (None, None),
        (None, "~/cache"),
        (None, "$OTHER_ROOT"),
        ("$OTHER_ROOT", None),
        ("{tmp}/built-in", "{tmp}/from-env"),
    ],
)
def test_cache_path_agrees_with_shivs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build_root: str | None, environ_root: str | None
) -> None:
    """The fast path must look exactly where shiv's bootstrap would; its answer is created, then found."""
    from shiv.bootstrap import cache_path
    from shiv.bootstrap.environment import Environment

    pyz_main = _pyz_main()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OTHER_ROOT", str(tmp_path / "other"))
    monkeypatch.delenv("SHIV_ROOT")
    # Absolute roots live under tmp_path: this test creates the folder it expects to be found.
    build_root = build_root and build_root.format(tmp=tmp_path)
    if environ_root is not None:
        monkeypatch.setenv("SHIV_ROOT", environ_root.format(tmp=tmp_path))
    environment = {"build_id": "abc123", "entry_point": "noemafed.cli:main", "root": build_root}
    archive = tmp_path / "app.pyz"
    archive.touch()

    class Archive:  # all cache_path reads of the ZipFile
        filename = str(archive)

    root = Environment(built_at="", shiv_version="", root=build_root).root
    expected = cache_path(Archive(), root, "abc123") / "site-packages"
    assert pyz_main.extracted_site_packages(environment, dict(os.environ), str(archive)) is None
    expected.mkdir(parents=True)
    found = pyz_main.extracted_site_packages(environment, dict(os.environ), str(archive))
    assert found is not None
    assert Path(found) == expected


@pytest.mark.parametrize(
    "override",
    [
        {"preamble": "x.py"},
        {"script": "tool"},
        {"no_modify": True},
        {"always_write_cache": True},
        {"extend_pythonpath": True},
        {"prepend_pythonpath": "/x"},
        {"entry_point": None},
        {"entry_point": "mod"},
    ],
)
def test_builds_with_other_shiv_options_go_through_shivs_bootstrap(
    tmp_path: Path, override: dict[str, Any]
) -> None:
    pyz_main = _pyz_main()
    environment = {"build_id": "b", "entry_point": "noemafed.cli:main", "root": str(tmp_path), **override}
    (tmp_path / "app.pyz_b" / "site-packages").mkdir(parents=True)
    plain = {**environment, **dict.fromkeys(override)} | {"entry_point": "noemafed.cli:main"}
    assert pyz_main.extracted_site_packages(plain, {}, str(tmp_path / "app.pyz")) is not None
    assert pyz_main.extracted_site_packages(environment, {}, str(tmp_path / "app.pyz")) is None


# ---- where the pyz extracts: any user, any home ---------------------------------------------------------


def _run_as_service(tmp_path: Path, **environ: str) -> subprocess.CompletedProcess[str]:
    """The pyz copied elsewhere and run with no SHIV_ROOT, as a service user under systemd or cron."""
    copy = tmp_path / "bin" / "noemafed.pyz"
    copy.parent.mkdir(exist_ok=True)
    shutil.copy(PYZ, copy)
    env = {
        key: value for key, value in os.environ.items() if key not in ("SHIV_ROOT", "HOME", "XDG_CACHE_HOME")
    }
    env.update(environ)
    return subprocess.run(
        [sys.executable, str(copy), "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def _extracted_under(root: Path) -> bool:
    return any(root.glob("noemafed.pyz_*/site-packages"))


@pytest.mark.parametrize("home", ["unset", "missing", "read-only"])
def test_a_service_user_without_a_usable_home_can_run_the_pyz(tmp_path: Path, home: str) -> None:
    """Bug: a traceback (shiv could not create ~/.shiv) for the README's own systemd example."""
    environ = {"TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    if home == "missing":
        environ["HOME"] = str(tmp_path / "nonexistent")
    elif home == "read-only":
        (tmp_path / "home").mkdir(mode=0o555)
        environ["HOME"] = str(tmp_path / "home")
    result = _run_as_service(tmp_path, **environ)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("noemafed ")
    private = tmp_path / "tmp" / f"noemafed-{os.getuid()}"
    if home == "read-only" and os.access(tmp_path / "home", os.W_OK):
        assert _extracted_under(tmp_path / "home" / ".shiv")  # root writes anywhere: the home is usable
        return
    assert oct(private.stat().st_mode & 0o777) == "0o700"
    assert _extracted_under(private)


def test_xdg_cache_home_is_used_before_the_temp_dir(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    result = _run_as_service(tmp_path, XDG_CACHE_HOME=str(cache), TMPDIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert _extracted_under(cache / "noemafed")
    assert not (tmp_path / f"noemafed-{os.getuid()}").exists()


def test_a_temp_folder_others_can_write_to_is_refused(tmp_path: Path) -> None:
    """A shared extraction folder would let one user run code as another."""
    private = tmp_path / f"noemafed-{os.getuid()}"
    private.mkdir(mode=0o777)
    private.chmod(0o777)
    result = _run_as_service(tmp_path, TMPDIR=str(tmp_path))
    assert result.returncode == 77
    assert result.stderr.startswith(f"Error: cannot extract noemafed into {private}: ")
    assert not _extracted_under(private)


def test_an_extracted_pyz_starts_without_zlib(tmp_path: Path) -> None:
    """Every run reads `__main__.py` and `environment.json` from the archive itself: stored, not deflated, so no
    start imports zlib for them (scripts/replace_main.py)."""
    env = {**os.environ, "SHIV_ROOT": str(tmp_path / "shiv")}
    env.pop("PYTHONPATH", None)
    run_pyz("--version", env=env)  # extracts
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(PYZ), "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line]
    assert "noemafed.cli.app" in imported
    assert "zlib" not in imported
