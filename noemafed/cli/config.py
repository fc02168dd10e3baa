"""init, the settings (set-mode, set-interval, set-verify), the shared key and keygen."""

from __future__ import annotations

from pathlib import Path

import click

from noemafed.cli.app import CliContext, Command, CortexGroup, complete_from


@click.command(cls=Command)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", help="Display name of the cortex (default: the directory name).")
@click.pass_obj
def init(obj: CliContext, directory: Path, name: str | None) -> None:
    """Create a new, empty cortex that noema can open.

    Example: noemafed init ~/cortexes/research --name research
    """
    from noemafed.commands.init import init
    from noemafed.render import config as render

    obj.emit(render.human(init(directory, name)))


@click.command("set-mode", cls=Command)
@click.argument(
    "mode", metavar="sync|publish|subscribe", shell_complete=complete_from(("sync", "publish", "subscribe"))
)
@click.pass_obj
def set_mode(obj: CliContext, mode: str) -> None:
    """Set the cortex-wide federation mode: sync (pull and serve), publish (serve only) or subscribe (pull
    only).

    Example: noemafed set-mode publish
    """
    from noemafed.commands.modes import set_mode
    from noemafed.render import config as render

    obj.emit(render.human(set_mode(mode, obj.cortex_dir)))


@click.command("set-interval", cls=Command)
@click.argument("duration")
@click.pass_obj
def set_interval(obj: CliContext, duration: str) -> None:
    """Set how often the daemon polls each peer, as a Go duration (30s, 5m, 1h30m; the default is 30s).

    Example: noemafed set-interval 5m
    """
    from noemafed.commands.settings import set_interval
    from noemafed.render import config as render

    obj.emit(render.human(set_interval(obj.cortex_dir, duration)))


@click.command("set-verify", cls=Command)
@click.argument("mode", metavar="off|warn|enforce", shell_complete=complete_from(("off", "warn", "enforce")))
@click.pass_obj
def set_verify(obj: CliContext, mode: str) -> None:
    """Set how replay checks event signatures: off (the default), warn (log a bad or missing signature and
    apply the event anyway) or enforce (refuse the event).

    Example: noemafed set-verify enforce
    """
    from noemafed.commands.settings import set_verify
    from noemafed.render import config as render

    obj.emit(render.human(set_verify(obj.cortex_dir, mode)))


@click.group(cls=CortexGroup)
def key() -> None:
    """Inspect the shared bearer key without revealing it.

    Example: noemafed key fingerprint
    """


@key.command("fingerprint")
@click.pass_obj
def key_fingerprint(obj: CliContext) -> None:
    """Show where the shared key comes from and its SHA-256 fingerprint.

    Example: noemafed key fingerprint
    """
    from noemafed.commands.key import key_fingerprint
    from noemafed.render import config as render

    obj.emit(render.human(key_fingerprint(obj.cortex_dir(), obj.env.environ)))


@click.command(cls=Command)
@click.option(
    "--force", is_flag=True, help="Replace an existing signing key (its seed file and cortex.md entries)."
)
@click.pass_obj
def keygen(obj: CliContext, force: bool) -> None:
    """Create this cortex's Ed25519 event-signing key, as `noema keygen` does.

    The seed goes to signing.private_key_file (default noema-signing.key in the cortex folder), mode 0600;
    cortex.md gets signing.public_key and signing.private_key_file. Prints the public key and its
    fingerprint, never the seed. An existing key is kept unless --force is given.

    Example: noemafed keygen && noemafed set-verify warn
    """
    from noemafed.commands.keygen import keygen
    from noemafed.render import config as render

    obj.emit(render.human(keygen(obj.cortex_dir, force)))
