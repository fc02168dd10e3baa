"""Runs of many polls: every peer once, concurrently (`sync --once`), or a loop per peer (the daemon)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from noemafed.cortex.manifest import PeerConfig
from noemafed.cortex.open import Cortex, open_database
from noemafed.errors import NoemafedError
from noemafed.federation import classify
from noemafed.federation.classify import Reason
from noemafed.federation.syncer import PeerPoller, PollResult, SyncContext
from noemafed.mcp.client import Deadline
from noemafed.text.durations import format_go_duration
from noemafed.text.gotext import go_quote

MAX_BACKOFF_SECONDS = 300.0
MAX_CONCURRENT_POLLS = 16


# ---- sync --once --------------------------------------------------------------------------------------


def _open_poller(ctx: SyncContext, peer: PeerConfig, stop: threading.Event | None) -> PeerPoller | PollResult:
    """A poller on its own connection, or the failed result when the database cannot be opened."""
    try:
        conn = open_database(ctx.cortex_dir)
    except NoemafedError as exc:
        return PollResult(
            peer.name, peer.endpoint, ok=False, reason=Reason.OTHER, phase="open", message=str(exc)
        )
    return PeerPoller(Cortex(ctx.cortex_dir, ctx.manifest, conn), peer, ctx, stop)


def poll_once(ctx: SyncContext, peers: Sequence[PeerConfig]) -> list[PollResult]:
    """Poll each peer once, concurrently, each with its own connection and error boundary."""
    deadline = Deadline(ctx.options.max_duration)

    def one(peer: PeerConfig) -> PollResult:
        poller = _open_poller(ctx, peer, None)
        if isinstance(poller, PollResult):
            return poller
        try:
            return poller.poll(deadline)
        except Exception as exc:  # a bug must not take the other peers down with it
            return PollResult(
                peer.name, peer.endpoint, ok=False, reason=Reason.OTHER, phase="internal", message=repr(exc)
            )
        finally:
            poller.cortex.close()

    # One plain thread per peer, at most MAX_CONCURRENT_POLLS polling at once: a thread pool would add nothing
    # for a handful of peers and costs 5 ms of imports on every cron start.
    results: dict[int, PollResult] = {}
    slots = threading.BoundedSemaphore(MAX_CONCURRENT_POLLS)

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


def run_daemon(ctx: SyncContext, stop: threading.Event) -> None:
    """One loop per non-paused peer until `stop` is set (federation.md §3.2)."""
    federation = ctx.manifest.federation
    interval = federation.interval_seconds if federation else 30.0
    threads = []
    for peer in ctx.manifest.peers:
        if peer.paused:
            ctx.log.info(f"[federation] peer {go_quote(peer.name)} is paused, skipping")
            continue
        thread = threading.Thread(
            target=_peer_loop, args=(ctx, peer, interval, stop), name=f"peer-{peer.name}", daemon=True
        )
        threads.append(thread)
    ctx.log.info(
        f"Federation syncer started ({len(ctx.manifest.peers)} peers, interval {format_go_duration(interval)})"
    )
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        # In-flight requests are abandoned: threads are daemons, and an uncommitted event rolls back.
        thread.join(timeout=0.5)


def _peer_loop(ctx: SyncContext, peer: PeerConfig, interval: float, stop: threading.Event) -> None:
    """First poll at once; the interval after a success; doubling backoff, capped at 5 minutes, after failures."""
    backoff = interval
    last_category = ""
    while not stop.is_set():
        result = _daemon_poll(ctx, peer, stop)
        if result is None:
            return  # stopped mid-poll: not a failure (Go records one: compatibility.md)
        if result.ok:
            if last_category:
                ctx.log.info(classify.recovered_message(peer.name))
            last_category, backoff = "", interval
        else:
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            category = result.category or "other"
            wait_text = format_go_duration(backoff)
            if category != last_category:
                ctx.log.warning(
                    classify.friendly_message(peer.name, peer.endpoint, category, result.message, wait_text)
                )
            else:
                ctx.log.warning(classify.brief_message(peer.name, category, wait_text))
            last_category = category
        if stop.wait(max(backoff, 0.0)):
            return


def _daemon_poll(ctx: SyncContext, peer: PeerConfig, stop: threading.Event) -> PollResult | None:
    poller = _open_poller(ctx, peer, stop)
    if isinstance(poller, PollResult):
        return poller
    try:
        result = poller.poll(Deadline(None))
    finally:
        poller.cortex.close()
    return None if stop.is_set() and not result.ok else result
