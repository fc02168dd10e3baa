"""Drift guards: every command has help with an example and appears in the README."""

from __future__ import annotations

import click
import pytest
from conftest import REPO, run_cli, version_line

from noemafed.cli import cli


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    """Every command, asked of the group as click asks (the root group loads each command's module then)."""
    found = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        full = f"{prefix}{name}"
        if isinstance(command, click.Group):
            found += _commands(command, f"{full} ")
        else:
            found.append((full, command))
    return found


COMMANDS = _commands(cli)


def test_the_guards_see_every_command() -> None:
    """An empty list would skip the guards below, not fail them (as a lazily loading group once made it)."""
    assert len(COMMANDS) >= 20, [name for name, _ in COMMANDS]


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_every_command_has_help_with_an_example(name: str, command: click.Command) -> None:
    result = run_cli([*name.split(), "--help"])
    assert result.exit_code == 0
    assert "Example: noemafed" in (command.help or "")


@pytest.mark.parametrize("name", [name for name, _ in COMMANDS])
def test_every_command_is_in_the_readme(name: str) -> None:
    assert f"noemafed {name}" in (REPO / "README.md").read_text()


def test_version_flag() -> None:
    result = run_cli(["--version"])
    assert (result.exit_code, result.stdout, result.stderr) == (0, version_line(), "")
