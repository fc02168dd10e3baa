"""The peer commands: peers, add-peer, set-peer, reset-peer, retry-now, remove-peer, skip-event, pause-peer
and resume-peer."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO, TypeVar

import click

from noemafed.cli.app import CliContext, Command, complete_peers
from noemafed.errors import ArgumentError, ConfirmationRequiredError

if TYPE_CHECKING:
    from noemafed.reports.config import RemovePlan, ResetPlan, SkipPlan

    Plan = TypeVar("Plan", ResetPlan, RemovePlan, SkipPlan)


@click.command(cls=Command)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (docs/peers.schema.json).")
@click.pass_obj
def peers(obj: CliContext, as_json: bool) -> None:
    """List the peers configured in cortex.md: endpoint, mode and the cortex id each one is pinned to.

    Example: noemafed peers --json | jq -r '.peers[] | select(.mode == "paused") | .name'
    """
    from noemafed import reports
    from noemafed.commands.peers import peers
    from noemafed.render import config as render

    if as_json:
        obj.json_schema = reports.PEERS_SCHEMA_VERSION
    report = peers(obj.cortex_dir())
    obj.emit(render.json(report) if as_json else render.human(report))


@click.command("add-peer", cls=Command)
@click.argument("name")
@click.argument("endpoint")
@click.option(
    "--ca",
    type=click.Path(),  # any path, so the command's own check says what is wrong with it
    metavar="FILE",
    help="PEM file of the CA that signed the peer's certificate (stored as an absolute path).",
)
@click.option("--pubkey", metavar="KEY", help="Hard-pin the peer's signing key (ed25519:<base64>).")
@click.pass_obj
def add_peer(obj: CliContext, name: str, endpoint: str, ca: str | None, pubkey: str | None) -> None:
    """Add a peer (a local label and its base URL; noemafed appends /mcp) to cortex.md.

    Everything is checked before cortex.md is written: the label, the URL (http:// or https://, a host, no
    user or password, no query), the CA file and the key.

    Example: noemafed add-peer laptop https://laptop.lan:3000 --ca ~/tls/laptop-ca.pem
    """
    from noemafed.commands.peers import add_peer
    from noemafed.render import config as render

    obj.emit(render.human(add_peer(obj.cortex_dir, name, endpoint, ca or "", pubkey or "")))


@click.command("set-peer", cls=Command)
@click.argument("name", shell_complete=complete_peers)
@click.option("--endpoint", metavar="URL", help="New base URL (noemafed appends /mcp).")
@click.option(
    "--ca",
    type=click.Path(),  # any path, so the command's own check says what is wrong with it
    metavar="FILE",
    help="PEM file of the CA that signed the peer's certificate (stored as an absolute path).",
)
@click.option("--no-ca", is_flag=True, help="Trust only the system's CAs for this peer.")
@click.option("--pubkey", metavar="KEY", help="Hard-pin the peer's signing key (ed25519:<base64>).")
@click.option("--no-pubkey", is_flag=True, help="Drop the hard pin (the key pinned on first contact stays).")
@click.option("--rename", metavar="NEW", help="New label; the peer's cursor, pins and health move with it.")
@click.pass_obj
def set_peer(
    obj: CliContext,
    name: str,
    endpoint: str | None,
    ca: str | None,
    no_ca: bool,
    pubkey: str | None,
    no_pubkey: bool,
    rename: str | None,
) -> None:
    """Change a peer's endpoint, CA file, signing-key pin or label in cortex.md.

    Each value is checked as add-peer checks it; a rename moves the peer's federation state to the new
    label in the same act. Nothing is written when nothing changes.

    Example: noemafed set-peer laptop --endpoint https://laptop.vpn:3000 --no-ca
    """
    from noemafed.commands.peers import PeerChanges, set_peer
    from noemafed.render import config as render

    if ca is not None and no_ca:
        raise ArgumentError("--ca and --no-ca exclude each other", "pass one of them")
    if pubkey is not None and no_pubkey:
        raise ArgumentError("--pubkey and --no-pubkey exclude each other", "pass one of them")
    changes = PeerChanges(
        endpoint=endpoint,
        ca="" if no_ca else ca,
        pubkey="" if no_pubkey else pubkey,
        rename=rename,
    )
    obj.emit(render.human(set_peer(obj.cortex_dir, name, changes)))


def _confirmed(stdin: TextIO) -> bool:
    """One whitespace-delimited token from stdin; only y, Y and yes proceed (EOF does not)."""
    tokens = stdin.readline().split()
    return bool(tokens) and tokens[0] in ("y", "Y", "yes")


NO_TERMINAL = "{command} asks before it changes anything, and stdin is not a terminal"


NO_TERMINAL_HINT = "pass --yes to {action} without asking"


def _confirmation(obj: CliContext, yes: bool, command: str, action: str) -> Callable[[Plan], bool]:
    """Show the plan and ask on the terminal; without one, refuse (exit 2) rather than read a pipe or cron's
    /dev/null as the answer."""
    from noemafed.render import config as render

    def confirm(plan: Plan) -> bool:
        if not yes and not obj.env.stdin_isatty:
            raise ConfirmationRequiredError(
                NO_TERMINAL.format(command=command), NO_TERMINAL_HINT.format(action=action)
            )
        obj.emit(render.human(plan))
        if yes:
            return True
        obj.emit(render.RESET_PROMPT)
        obj.env.stdout.flush()
        return _confirmed(obj.env.stdin)

    return confirm


@click.command("reset-peer", cls=Command)
@click.argument("names", nargs=-1, required=True, shell_complete=complete_peers)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed without a terminal).")
@click.pass_obj
def reset_peer(obj: CliContext, names: tuple[str, ...], yes: bool) -> None:
    """Forget a peer's pinned identity, cursors and health so the next sync re-pins it.

    Example: noemafed reset-peer laptop --yes
    """
    from noemafed.commands.reset import reset_peers
    from noemafed.render import config as render

    confirm = _confirmation(obj, yes, "reset-peer", "reset")
    obj.emit(render.human(reset_peers(obj.cortex_dir(), names, confirm)))


@click.command("retry-now", cls=Command)
@click.argument("names", nargs=-1, required=True, shell_complete=complete_peers)
@click.pass_obj
def retry_now(obj: CliContext, names: tuple[str, ...]) -> None:
    """End peers' backoff: the next `sync --once` contacts them at once (their health stays as it is).

    A peer blocked on a poison event is contacted too; it stays blocked until the event applies or is skipped.

    Example: noemafed retry-now laptop
    """
    from noemafed.commands.retry import retry_now
    from noemafed.render import config as render

    obj.emit(render.human(retry_now(obj.cortex_dir(), names)))


@click.command("remove-peer", cls=Command)
@click.argument("names", nargs=-1, required=True, shell_complete=complete_peers)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed without a terminal).")
@click.option(
    "--keep-state",
    is_flag=True,
    help="Keep the peers' cursors, pins and health (a peer re-added under the name resumes from them).",
)
@click.pass_obj
def remove_peer(obj: CliContext, names: tuple[str, ...], yes: bool, keep_state: bool) -> None:
    """Remove peers from cortex.md and, in the same act, their federation state.

    The state is each peer's cursor, usage cursor, pinned cortex id and signing key, health and rank, and
    the pinned id's vector-clock bucket, as reset-peer clears them.

    Example: noemafed remove-peer old-laptop --yes
    """
    from noemafed.commands.peers import remove_peers
    from noemafed.render import config as render

    confirm = _confirmation(obj, yes, "remove-peer", "remove")
    obj.emit(render.human(remove_peers(obj.cortex_dir, names, keep_state, confirm)))


@click.command("skip-event", cls=Command)
@click.argument("peer", shell_complete=complete_peers)
@click.argument("event_id", metavar="EVENT_ID")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed without a terminal).")
@click.option(
    "--note", default="", metavar="TEXT", help="Why: kept with the skip for good (noemafed status)."
)
@click.pass_obj
def skip_event(obj: CliContext, peer: str, event_id: str, yes: bool, note: str) -> None:
    """Move a blocked peer past the event its replay keeps failing on: stored as received, not applied.

    Only the event `noemafed status` shows the peer blocked on; it is fetched from the peer again, the cursor
    moves past it, and the skip (event, reason, note, time, user) is listed by `status` for good. Never
    automatic (docs/operations.md, "A blocked peer").

    Example: noemafed skip-event laptop 01JRZ5Q4XG7N3C8W2M6V1K9T0B --yes --note 'unknown action from v0.30'
    """
    from noemafed.commands.skip import SkipRequest, skip_event
    from noemafed.render import config as render

    confirm = _confirmation(obj, yes, "skip-event", "skip")
    request = SkipRequest(peer, event_id, note, obj.clock())
    log = obj.log(progress=False)
    obj.emit(render.human(skip_event(obj.cortex_dir(), request, obj.env.environ, confirm, log)))


def _peer_mode_command(obj: CliContext, name: str, paused: bool) -> None:
    from noemafed.commands.modes import set_peer_mode
    from noemafed.render import config as render

    obj.emit(render.human(set_peer_mode(obj.cortex_dir(), name, paused)))


@click.command("pause-peer", cls=Command)
@click.argument("name", shell_complete=complete_peers)
@click.pass_obj
def pause_peer(obj: CliContext, name: str) -> None:
    """Stop syncing with a peer without forgetting its cursor or pin.

    Example: noemafed pause-peer laptop
    """
    _peer_mode_command(obj, name, True)


@click.command("resume-peer", cls=Command)
@click.argument("name", shell_complete=complete_peers)
@click.pass_obj
def resume_peer(obj: CliContext, name: str) -> None:
    """Resume syncing with a paused peer.

    Example: noemafed resume-peer laptop
    """
    _peer_mode_command(obj, name, False)
