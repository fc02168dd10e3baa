"""`completion`: shell completion scripts that run noemafed the way it was run."""

from __future__ import annotations

import os
import sys

import click

from noemafed.cli.app import CliContext, Command, cli

# Where noemafed's completion scripts differ from click's: they run noemafed the way `completion` was run (a
# pyz under its Python, which no `$+commands` or `$1` would find behind an alias) and complete every name it
# goes by. Each edit must apply, so a click upgrade that moves a line fails the completion tests, not a shell.
_COMPLETION_EDITS: dict[str, tuple[tuple[str, str], ...]] = {
    "bash": (
        ("%(complete_var)s=bash_complete $1)", "%(complete_var)s=bash_complete %(run)s)"),
        ("-F %(complete_func)s %(prog_name)s", "-F %(complete_func)s %(names)s"),
    ),
    "zsh": (
        ("#compdef %(prog_name)s", "#compdef %(names)s"),
        ("(( ! $+commands[%(prog_name)s] )) && return 1\n", ""),
        ("%(complete_var)s=zsh_complete %(prog_name)s)", "%(complete_var)s=zsh_complete %(run)s)"),
        ("compdef %(complete_func)s %(prog_name)s", "compdef %(complete_func)s %(names)s"),
    ),
    "fish": (
        ("COMP_CWORD=(commandline -t) %(prog_name)s)", "COMP_CWORD=(commandline -t) %(run)s)"),
        ("--command %(prog_name)s", "%(fish_commands)s"),
    ),
}


def _invocation(argv0: str) -> tuple[list[str], list[str]]:
    """How this process was started (the argv that runs noemafed again) and the command names to complete."""
    import zipfile

    if argv0 and os.path.isfile(argv0) and zipfile.is_zipfile(argv0):
        path = os.path.abspath(argv0)  # the pyz, run as `python3 noemafed.pyz` or as an executable
        return [sys.executable, path], list(dict.fromkeys(["noemafed", os.path.basename(path)]))
    if os.path.basename(argv0) == "__main__.py":
        return [sys.executable, "-m", "noemafed"], ["noemafed"]
    if argv0 and os.path.isfile(argv0):  # a console script: this very one, even if it is not on PATH
        path = os.path.abspath(argv0)
        return [path], list(dict.fromkeys(["noemafed", os.path.basename(path)]))
    return ["noemafed"], ["noemafed"]


def completion_script(shell: str, argv0: str) -> str:
    """click's completion script for `shell`, calling noemafed as `argv0` was called."""
    import shlex

    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None or shell not in _COMPLETION_EDITS:
        raise click.UsageError(f"no completion for {shell}")
    template = cls.source_template
    for old, new in _COMPLETION_EDITS[shell]:
        if old not in template:
            raise RuntimeError(f"click's {shell} completion script changed: {old!r} is gone")
        template = template.replace(old, new, 1)
    run, names = _invocation(argv0)
    variables = cls(cli, {}, "noemafed", "_NOEMAFED_COMPLETE").source_vars()
    return template % {
        **variables,
        "run": shlex.join(run),
        "names": " ".join(shlex.quote(name) for name in names),
        "fish_commands": " ".join(f"--command {shlex.quote(name)}" for name in names),
    }


@click.command(cls=Command)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_obj
def completion(obj: CliContext, shell: str) -> None:
    """Print the shell completion script for commands, options and peer names.

    The script runs noemafed the way this command was run, so generate it the way you run noemafed:
    `noemafed completion bash` for a `noemafed` on PATH, `python3 /opt/noemafed.pyz completion bash` with
    `alias noemafed='python3 /opt/noemafed.pyz'` (README.md, "Shell completion").

    Example: noemafed completion bash > ~/.local/share/bash-completion/completions/noemafed
    """
    obj.emit(completion_script(shell, sys.argv[0] if sys.argv else ""))
