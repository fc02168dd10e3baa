# noemafed.pyz's __main__.py (build.sh puts it in place of shiv's two-line one).
#
# shiv's bootstrap imports compileall, hashlib, shutil, subprocess, zipfile and more on every run (about 25 ms),
# although after the first run all it does is add the extracted site-packages to sys.path and call the entry
# point. This file does exactly that when nothing else is asked for, and hands every other case to shiv's
# own bootstrap unchanged: the first run (extraction), SHIV_FORCE_EXTRACT and every other SHIV_* override, and
# any build option a plain build does not use. tests/test_zipapp.py checks both paths against shiv's code.
import os
import sys


def extracted_site_packages(environment: dict, environ: dict, argv0: str) -> "str | None":
    """shiv's cache path for this archive (bootstrap.cache_path), or None if shiv's bootstrap must run."""
    if any(name.startswith("SHIV_") and name != "SHIV_ROOT" for name in environ):
        return None
    plain_build = (
        ":" in (environment.get("entry_point") or "")
        and not environment.get("script")
        and not environment.get("preamble")
        and not environment.get("no_modify")
        and not environment.get("always_write_cache")
        and not environment.get("extend_pythonpath")
        and not environment.get("prepend_pythonpath")
    )
    if not plain_build:
        return None
    root = environ.get("SHIV_ROOT", environment.get("root"))
    if root and root.startswith("$"):
        root = environ.get(root[1:], root[1:])
    root = os.path.expanduser(root) if root else os.path.expanduser("~/.shiv")
    name = os.path.basename(os.path.realpath(argv0))
    site_packages = os.path.join(root, f"{name}_{environment['build_id']}", "site-packages")
    # shiv extracts into a temporary name and renames it, so an existing folder is a complete one.
    return site_packages if os.path.exists(site_packages) else None


def add_site_packages(site_packages: str) -> None:
    """What shiv's bootstrap does to sys.path: addsitedir, then move the new entries before the first
    site-packages (including its quirk that a site-packages at index 0 counts as none)."""
    import site  # already imported by the interpreter's start-up

    length = len(sys.path)
    stems = [os.path.splitext(os.path.basename(os.path.normpath(part)))[0] for part in sys.path]
    index = (
        next((i for i, stem in enumerate(stems) if stem in ("site-packages", "dist-packages")), 0) or length
    )
    site.addsitedir(site_packages)
    sys.path = sys.path[:index] + sys.path[length:] + sys.path[index:length]


def extraction_root(environ: dict) -> "str | None":
    """Where to extract when SHIV_ROOT is not set: None for shiv's ~/.shiv when the home folder can hold it,
    else $XDG_CACHE_HOME/noemafed, else a private per-user folder in the temp dir. A service user whose home is
    unset, missing or read-only (the README's systemd example) must still be able to run the pyz."""
    if environ.get("SHIV_ROOT"):
        return None
    home = environ.get("HOME", "")
    if os.path.isabs(home):
        shiv = os.path.join(home, ".shiv")
        usable = shiv if os.path.isdir(shiv) else home
        if os.path.isdir(usable) and os.access(usable, os.W_OK | os.X_OK):
            return None
    cache = environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(cache) and os.path.isdir(cache) and os.access(cache, os.W_OK | os.X_OK):
        return os.path.join(cache, "noemafed")
    return private_temp_root(environ)


def private_temp_root(environ: dict) -> str:
    """`$TMPDIR/noemafed-<uid>` (or /tmp), made 0700; refused when another user owns it or can write to it,
    since code extracted there runs as whoever runs the pyz."""
    import stat

    path = os.path.join(environ.get("TMPDIR") or "/tmp", f"noemafed-{os.getuid()}")  # noqa: S108 (checked below)
    if not os.path.lexists(path):
        os.mkdir(path, 0o700)  # a rival that creates it first is caught by the ownership check
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        sys.stderr.write(
            f"Error: cannot extract noemafed into {path}: it belongs to another user or others can write to it\n"
            "Hint: set SHIV_ROOT to a folder only you can write (docs/operations.md)\n"
        )
        sys.exit(77)  # EX_NOPERM
    return path


def main() -> None:
    root = extraction_root(dict(os.environ))
    if root is not None:
        os.environ["SHIV_ROOT"] = root  # shiv's bootstrap and our fast path both read it
    try:
        import json

        environment = json.loads(__loader__.get_data("environment.json"))  # type: ignore[name-defined]
        site_packages = extracted_site_packages(environment, dict(os.environ), sys.argv[0])
    except (AttributeError, OSError, ValueError, KeyError, TypeError):
        site_packages = None  # not run from a zip, or an archive we do not understand: shiv knows best
    if site_packages is None:
        import _bootstrap

        _bootstrap.bootstrap()
        return
    # No cyclic garbage collection while noemafed starts (noemafed.cli.run says why, and turns it back on for
    # `sync` and `serve`); off before the entry point's import already, so that loading click does not pay for
    # it either. Only here: shiv's own bootstrap (SHIV_INTERPRETER, any other override) keeps Python's default.
    import gc

    gc.disable()
    add_site_packages(site_packages)
    module_name, _, function_name = environment["entry_point"].partition(":")
    __import__(module_name)
    sys.exit(getattr(sys.modules[module_name], function_name)())


if __name__ == "__main__":
    main()
