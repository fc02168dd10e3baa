"""Runs of many polls: every peer once, concurrently (`sync --once`), or a loop per peer (the daemon)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from noemafed.cortex.manifest import PeerConfig
from noemafed.cortex.open import Cortex, open_database
from noemafed.cortex.storage_lock import StorageBusyError
from noemafed.errors import NoemafedError
from noemafed.federation import poison
from noemafed.federation.classify import Phase, Reason
from noemafed.federation.syncer import PeerPoller, PollError, PollResult, SyncContext
from noemafed.mcp.client import Deadline
from noemafed.text.durations import format_go_duration
from noemafed.text.gotext import go_quote

MAX_BACKOFF_SECONDS = 300.0


# ---- sync --once --------------------------------------------------------------------------------------


def open_poller(
    ctx: SyncContext, peer: PeerConfig, stop: threading.Event | None, *, rehearsal: bool = False
) -> PeerPoller | PollResult:
    """A poller on its own connection (a RehearsalConnection for dry runs), or the failed result when the
    database cannot be opened."""
    try:
        conn = open_database(ctx.cortex_dir, rehearsal=rehearsal)
    except StorageBusyError as exc:  # a compaction or storage migration: this host's storage, exit 3
        return PollResult.failed(peer, PollError(str(exc), Phase.OPEN, Reason.LOCAL_STORAGE))
    except NoemafedError as exc:
        return PollResult.failed(peer, PollError(str(exc), Phase.OPEN, Reason.OTHER))
    return PeerPoller(Cortex(ctx.cortex_dir, ctx.manifest, conn), peer, ctx, stop)


def poll_once(ctx: SyncContext, peers: Sequence[PeerConfig]) -> list[PollResult]:
    """Poll each peer once, concurrently, each with its own connection and error boundary."""
    deadline = Deadline(ctx.options.max_duration)

    def one(peer: PeerConfig) -> PollResult:
        poller = open_poller(ctx, peer, None)
        if isinstance(poller, PollResult):
            return poller
        try:
            return poller.poll(deadline)
        except Exception as exc:  # a bug must not take the other peers down with it
            # repr, not str: the exception's type is what a bug report needs.
            return PollResult.failed(peer, PollError(repr(exc), Phase.INTERNAL, Reason.OTHER))
        finally:
            poller.cortex.close()

    # One plain thread per peer, at most --jobs polling at once (each holds a page in memory): a thread pool
    # would add nothing for a handful of peers and costs 5 ms of imports on every cron start.
    results: dict[int, PollResult] = {}
    slots = threading.BoundedSemaphore(max(1, ctx.options.jobs))

    def run(index: int) -> None:
        with slots:
            results[index] = one(peers[index])

    threads = [threading.Thread(target=run, args=(i,), name=f"peer-{p.name}") for i, p in enumerate(peers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [results[index] for index in range(len(peers))]


# ---- the daemon -----------------------------------------------------------------------------------------

# Log lines (federation.md §3.1, §4.4). Names go through go_quote because Go formats them with %q.
PAUSED_LOG = "[federation] peer {name} is paused, skipping"
STARTED_LOG = "Federation syncer started ({count} peers, interval {interval})"
# noemafed's own lines: the daemon never idles without saying why, and says when it stops.
NO_PEERS_LOG = "[federation] no peers configured in cortex.md; nothing to sync, exiting"
ALL_PAUSED_LOG = "[federation] every peer is paused; nothing to sync, exiting"
STOPPED_LOG = "Federation syncer stopped"
# A failure in a new category gets the friendly block; the same category again, the brief line.
FRIENDLY_HEADER_LOG = "[federation] cannot reach peer {name} at {endpoint}:"
FRIENDLY_LINE_LOG = "    {text}"
FRIENDLY_HINT_LOG = "    - {hint}"
FRIENDLY_RETRY_LOG = "    retrying in {backoff}"
BRIEF_LOG = "[federation] peer {name} still unreachable ({category}); next retry in {backoff}"
RECOVERED_LOG = "[federation] peer {name} reachable again"

# What each classify.categorize_error category means and what to check; `other` has neither.
FRIENDLY_REASON_LINES: dict[str, str] = {
    "refused": "the host is reachable but nothing is listening on that port",
    "timeout": "the connection attempt timed out",
    "dns": "the peer's hostname could not be resolved",
    "tls": "the TLS handshake failed",
    "reset": "the connection was reset by the peer",
    "eof": "the peer closed the connection unexpectedly",
}

FRIENDLY_HINTS: dict[str, tuple[str, ...]] = {
    "refused": (
        "is `noema serve --transport http` running on the peer?",
        "does the peer's --host/--port match the endpoint above?",
        "is a firewall on the peer blocking the port?",
    ),
    "timeout": (
        "is the peer host online and reachable on the network?",
        "check for firewalls, VPNs, or routing issues between hosts",
    ),
    "dns": (
        "is the hostname spelled correctly in cortex.md?",
        "is your DNS resolver working? try `dig` or `nslookup` against it",
        "if it's a LAN-only name, is mDNS / your hosts file set up?",
    ),
    "tls": (
        "if the peer uses a self-signed cert, add `ca: /path/to/ca.pem` under that peer in cortex.md",
        "does the cert's SAN match the endpoint hostname?",
        "is the cert expired or signed by an unknown CA?",
    ),
    "reset": (
        "the peer may be restarting; will retry automatically",
        "check the peer's logs for crashes or panics",
    ),
    "eof": (
        "the peer may not be a Noema MCP server, or may be on an incompatible version",
        "check the peer's logs for startup errors",
    ),
}


def friendly_message(peer_name: str, endpoint: str, category: str, error_text: str, backoff_text: str) -> str:
    """The multi-line log for a new failure category; any unknown category is Go's `other` branch."""
    lines = [FRIENDLY_HEADER_LOG.format(name=go_quote(peer_name), endpoint=endpoint)]
    reason_line = FRIENDLY_REASON_LINES.get(category)
    if reason_line is None:
        # `other`: the full error text stands in for the reason line and no hint block follows.
        lines.append(FRIENDLY_LINE_LOG.format(text=error_text))
    else:
        lines.append(FRIENDLY_LINE_LOG.format(text=reason_line))
        lines.extend(FRIENDLY_HINT_LOG.format(hint=hint) for hint in FRIENDLY_HINTS[category])
    lines.append(FRIENDLY_RETRY_LOG.format(backoff=backoff_text))
    return "\n".join(lines)


def brief_message(name: str, category: str, backoff_text: str) -> str:
    """The one-line log when a peer keeps failing the same way."""
    return BRIEF_LOG.format(name=go_quote(name), category=category, backoff=backoff_text)


def recovered_message(name: str) -> str:
    """The log line for the first success after a failure."""
    return RECOVERED_LOG.format(name=go_quote(name))


def run_daemon(ctx: SyncContext, stop: threading.Event) -> None:
    """One loop per non-paused peer until `stop` is set (federation.md §3.2)."""
    federation = ctx.manifest.federation
    interval = federation.interval_seconds if federation else 30.0
    threads = []
    for peer in ctx.manifest.peers:
        if peer.paused:
            ctx.log.info(PAUSED_LOG.format(name=go_quote(peer.name)))
            continue
        thread = threading.Thread(
            target=_peer_loop, args=(ctx, peer, interval, stop), name=f"peer-{peer.name}", daemon=True
        )
        threads.append(thread)
    if not threads:
        # Nothing to poll: a daemon that waits for ever would look healthy to systemd while doing nothing.
        ctx.log.warning(NO_PEERS_LOG if not ctx.manifest.peers else ALL_PAUSED_LOG)
        return
    ctx.log.info(STARTED_LOG.format(count=len(ctx.manifest.peers), interval=format_go_duration(interval)))
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        # In-flight requests are abandoned: threads are daemons, and an uncommitted event rolls back.
        thread.join(timeout=0.5)
    ctx.log.info(STOPPED_LOG)


def _peer_loop(ctx: SyncContext, peer: PeerConfig, interval: float, stop: threading.Event) -> None:
    """First poll at once; the interval after a success; doubling backoff, capped at 5 minutes, after failures;
    once an hour while blocked on a poison event (poison.py: noema has no such rule)."""
    backoff = interval
    last_category = ""
    while not stop.is_set():
        result = _daemon_poll(ctx, peer, stop)
        if result is None:
            return  # stopped mid-poll: not a failure (Go records one: compatibility.md)
        if result.ok:
            if last_category:
                ctx.log.info(recovered_message(peer.name))
            last_category, backoff = "", interval
            wait = interval
        else:
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            wait = _blocked_wait(result.poison_record, ctx.options.block_after, backoff)  # poison events
            wait_text = format_go_duration(wait)
            if result.category != last_category:
                ctx.log.warning(
                    friendly_message(peer.name, peer.endpoint, result.category, result.message, wait_text)
                )
            else:
                ctx.log.warning(brief_message(peer.name, result.category, wait_text))
            last_category = result.category
        if stop.wait(max(wait, 0.0)):
            return


def _blocked_wait(record: poison.PoisonRecord | None, block_after: int, backoff: float) -> float:
    """The wait after a failed poll: until a blocked peer's next attempt, else the backoff."""
    if record is None or not poison.is_blocked(record, block_after):
        return backoff
    now = time.time()
    due = poison.next_attempt_for_blocked(record, now)
    return backoff if due is None else float(int(due - now))


def _daemon_poll(ctx: SyncContext, peer: PeerConfig, stop: threading.Event) -> PollResult | None:
    poller = open_poller(ctx, peer, stop)
    if isinstance(poller, PollResult):
        return poller
    try:
        result = poller.poll(Deadline(None))
    finally:
        poller.cortex.close()
    return None if stop.is_set() and not result.ok else result
