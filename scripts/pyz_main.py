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


def main() -> None:
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
    add_site_packages(site_packages)
    module_name, _, function_name = environment["entry_point"].partition(":")
    __import__(module_name)
    sys.exit(getattr(sys.modules[module_name], function_name)())


if __name__ == "__main__":
    main()
