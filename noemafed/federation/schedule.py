"""Runs of many polls: every peer once, concurrently (`sync --once`), or a loop per peer (the daemon)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence

from noemafed.cortex import state
from noemafed.cortex.manifest import PeerConfig
from noemafed.cortex.open import Cortex, open_database
from noemafed.cortex.storage_lock import StorageBusyError
from noemafed.errors import NoemafedError
from noemafed.federation import poison
from noemafed.federation.classify import Phase, Reason
from noemafed.federation.syncer import PeerPoller, PollError, PollResult, SyncContext
from noemafed.mcp.client import Deadline
from noemafed.records import Record
from noemafed.text.clock import format_epoch, parse_rfc3339
from noemafed.text.durations import format_go_duration
from noemafed.text.gotext import go_quote
from noemafed.text.sanitize import one_line

MAX_BACKOFF_SECONDS = 300.0  # the daemon's cap, noema's
DEFAULT_INTERVAL_SECONDS = 30.0
# sync --once: each wait is the doubled interval times a factor drawn from [1 - JITTER, 1 + JITTER], so the
# peers of many hosts started by the same cron minute do not all come back in the same second.
JITTER = 0.2
# The shortest base a doubling starts from: a zero or negative interval must not make a failing peer due at once.
MIN_BACKOFF_BASE_SECONDS = 1.0

RECORD_RUN_FAILED_LOG = "[federation] peer {name}: could not record its backoff: {err}"
PLAN_FAILED_LOG = "[federation] could not read or clear the peers' backoff, contacting every peer: {err}"


# ---- the persisted backoff ------------------------------------------------------------------------------


def interval_of(ctx: SyncContext) -> float:
    """The manifest's interval, the base of every backoff (30 s when unset, as in noema)."""
    federation = ctx.manifest.federation
    return federation.interval_seconds if federation else DEFAULT_INTERVAL_SECONDS


def backoff_delay(
    failures: int,
    interval: float,
    max_backoff: float,
    uniform: Callable[[float, float], float] | None = None,
) -> float:
    """The wait after the `failures`-th failure in a row: the interval doubled once per failure (the first
    already waits 2x, as noema's daemon does), times a jitter factor in [0.8, 1.2] (`uniform`, random's by
    default), never over `max_backoff`."""
    if uniform is None:
        import random  # noqa: PLC0415 (only a failure needs it: a caught-up run never loads random)

        uniform = random.uniform  # jitter, not a secret
    base = max(interval, MIN_BACKOFF_BASE_SECONDS) * 2.0 ** min(failures, 64)
    return min(base * uniform(1 - JITTER, 1 + JITTER), max_backoff)


def retry_after_delay(value: str, now: float) -> float | None:
    """Seconds to wait that a Retry-After asks for (delay-seconds or an HTTP-date, RFC 9110 §10.2.3); None when
    the value says neither."""
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    from email.utils import parsedate_to_datetime  # noqa: PLC0415 (only a 429 or 503 with a date needs it)

    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC by RFC 5322, which HTTP-dates always are
        from datetime import UTC  # noqa: PLC0415

        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now)


def blocked_wait(result: PollResult) -> float | None:
    """A blocked peer's wait after a failed poll: its next attempt an hour away (poison events: a fixed slow
    schedule, not the doubling, not --max-backoff's cap); None for a peer that is not blocked."""
    return poison.BLOCKED_RETRY_SECONDS if poison.blocked(result.poison_record) else None


def once_delay(ctx: SyncContext) -> Callable[[int, PollResult], tuple[float, bool]]:
    """`sync --once`'s wait after a failure: an hour for a blocked peer; none when it needs an operator or came
    from this host's storage; else the peer's Retry-After when it sent one, else the jittered doubling; both
    capped at --max-backoff. The bool says the wait came from the peer."""
    interval, cap = interval_of(ctx), ctx.options.max_backoff

    def delay(failures: int, result: PollResult) -> tuple[float, bool]:
        blocked = blocked_wait(result)
        if blocked is not None:
            return blocked, False
        if result.needs_operator or result.reason == Reason.LOCAL_STORAGE:
            # Waiting heals neither, and the operator's fix (or this host's disk) should take effect on the
            # very next run: the streak is recorded, the peer stays due.
            return 0.0, False
        asked = retry_after_delay(result.retry_after, ctx.clock.now()) if result.retry_after else None
        if asked is not None:
            return min(asked, cap), True
        return backoff_delay(failures, interval, cap), False

    return delay


def is_due(backoff: state.Backoff | None, now: float) -> bool:
    """No streak, an unreadable time, or its next attempt reached: the peer is contacted."""
    if backoff is None:
        return True
    due_at = parse_rfc3339(backoff.next_attempt_at)
    return due_at is None or due_at <= now


def record_outcome(
    poller: PeerPoller,
    result: PollResult,
    now: float,
    next_delay: Callable[[int, PollResult], tuple[float, bool]],
) -> None:
    """After a poll that contacted the peer: its outcome and counter, and its streak extended or cleared, in one
    transaction. A failure to record only logs: the poll itself stands."""
    conn, peer = poller.conn, poller.peer.name
    stamp = format_epoch(now)
    progressed = result.events_applied > 0
    # pages: a publish-mode poll pulls nothing and is not behind.
    behind = (result.ok and not result.caught_up and result.pages > 0) or (
        not result.ok and result.out_of_time and progressed
    )
    outcome = state.RUN_BEHIND if behind else (state.RUN_OK if result.ok else state.RUN_FAILED)
    try:
        with state.write_transaction(conn):
            previous_run = state.get_run(conn, peer)
            run = state.PeerRun(
                outcome=outcome,
                caught_up=result.ok and result.caught_up,
                attempted_at=stamp,
                progressed_at=previous_run.progressed_at if outcome == state.RUN_FAILED else stamp,
                events_applied_total=previous_run.events_applied_total + result.events_applied,
            )
            state.set_run(conn, peer, run)
            if poller.checked_signatures:  # for status --json; eventsig has loaded the verifier by then
                from noemafed.signing import verifier  # noqa: PLC0415 (a run that checks none never loads it)

                used = verifier.chosen()
                if used is not None:
                    state.set_verifier(conn, used.name, used.label)
            if outcome == state.RUN_FAILED:
                previous = state.get_backoff(conn, peer)
                failures = (previous.failures if previous else 0) + 1
                seconds, from_peer = next_delay(failures, result)
                streak = state.Backoff(
                    failing_since=previous.failing_since if previous and previous.failing_since else stamp,
                    failures=failures,
                    next_attempt_at=format_epoch(_delay_base(result, now) + seconds),
                    needs_operator=result.needs_operator,
                    retry_after=from_peer,
                )
                state.set_backoff(conn, peer, streak)
            else:
                # Reached and making progress (a run that ran out of time included): the streak is over.
                state.clear_backoff(conn, peer)
    except NoemafedError as exc:
        poller.log.warning(RECORD_RUN_FAILED_LOG.format(name=go_quote(peer), err=one_line(str(exc))))


def _delay_base(result: PollResult, now: float) -> float:
    """When the wait after a failure starts: now, but when this poll failed on the event its peer is blocked on,
    the record's last attempt, which the poll wrote a moment before (a second earlier, across a second's edge):
    its hour is an hour after the time status and skip-event show for that attempt. Any other failure of a blocked
    peer leaves the record as it was, with an older attempt: its hour starts now."""
    record = result.poison_record
    if record is None or not poison.blocked(record) or result.event_id != record.event_id:
        return now
    last = parse_rfc3339(record.last_seen)
    return now if last is None else min(last, now)


# Why a run left a peer alone (DeferredPeer.reason, `deferred[].reason` in sync --json).
DEFERRED_BACKOFF = "backoff"  # its failure streak's next attempt is not due
DEFERRED_BLOCKED = "blocked"  # blocked on a poison event, and its hour is not up


class DeferredPeer(Record):
    """A peer a run left alone because its next attempt is not due; it was not contacted at all."""

    name: str
    endpoint: str
    next_attempt_at: str
    failures: int
    failing_since: str
    reason: str = DEFERRED_BACKOFF
    event_id: str = ""  # the poison event a blocked peer is stopped on ("" for a backoff)


def plan_once(
    ctx: SyncContext, conn: sqlite3.Connection, peers: Sequence[PeerConfig], ignore_backoff: bool
) -> tuple[list[PeerConfig], list[DeferredPeer]]:
    """Split the peers into those due now and those deferred; --ignore-backoff clears every streak instead.

    A peer is deferred while its streak's next attempt is in the future. For a blocked peer that attempt is an
    hour after its last one (once_delay), and the deferral says `blocked` and names the event: the blocked rule
    first, then the backoff. --ignore-backoff (and retry-now before the run) end a blocked peer's hour too: the
    operator asked for an attempt now; the block itself stays until the event applies or is skipped.

    One read per peer on the run's own connection, and one for every poison record: a run that defers every
    peer costs less than a caught-up one. A database that cannot be read or written here makes every peer
    due: each poll then meets the same error and reports it. A dry run writes nothing, so --ignore-backoff
    there contacts every peer without clearing a streak.
    """
    try:
        if ignore_backoff:
            if not ctx.options.dry_run:
                with state.write_transaction(conn):
                    for peer in peers:
                        state.clear_backoff(conn, peer.name)
            return list(peers), []
        now = ctx.clock.now()
        records = poison.get_records(conn)
        due: list[PeerConfig] = []
        deferred: list[DeferredPeer] = []
        for peer in peers:
            backoff = state.get_backoff(conn, peer.name)
            if backoff is None or is_due(backoff, now):
                due.append(peer)
                continue
            record = records.get(peer.name)
            blocked_on = record.event_id if record is not None and poison.blocked(record) else ""
            deferred.append(
                DeferredPeer(
                    peer.name,
                    peer.endpoint,
                    backoff.next_attempt_at,
                    backoff.failures,
                    backoff.failing_since,
                    DEFERRED_BLOCKED if blocked_on else DEFERRED_BACKOFF,
                    blocked_on,
                )
            )
        return due, deferred
    except NoemafedError as exc:
        ctx.log.warning(PLAN_FAILED_LOG.format(err=one_line(str(exc))))
        return list(peers), []


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
    delay = once_delay(ctx)

    def one(peer: PeerConfig) -> PollResult:
        poller = open_poller(ctx, peer, None)
        if isinstance(poller, PollResult):
            return poller
        try:
            try:
                result = poller.poll(deadline)
            except Exception as exc:  # a bug must not take the other peers down with it
                # repr, not str: the exception's type is what a bug report needs.
                result = PollResult.failed(peer, PollError(repr(exc), Phase.INTERNAL, Reason.OTHER))
            record_outcome(poller, result, ctx.clock.now(), delay)
            return result
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
    interval = interval_of(ctx)
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


def _resume(ctx: SyncContext, peer: PeerConfig, interval: float) -> tuple[float, float]:
    """Where the daemon's schedule for a peer starts: the first wait and the backoff it continues from.

    A streak recorded by earlier runs carries over: the backoff continues from its count and the first poll
    waits for its next attempt, but never longer than the daemon's own cap (noema's 5 minutes), or than a
    blocked peer's hour.
    """
    try:
        conn = open_database(ctx.cortex_dir)
    except NoemafedError:
        return 0.0, interval
    try:
        streak = state.get_backoff(conn, peer.name)
        blocked = poison.blocked(poison.get_record(conn, peer.name))
    except NoemafedError:
        streak, blocked = None, False
    finally:
        conn.close()
    if streak is None:
        return 0.0, interval
    backoff = min(interval * 2.0 ** min(streak.failures, 64), MAX_BACKOFF_SECONDS)
    cap = poison.BLOCKED_RETRY_SECONDS if blocked else MAX_BACKOFF_SECONDS
    due_at = parse_rfc3339(streak.next_attempt_at)
    wait = 0.0 if due_at is None else min(max(due_at - ctx.clock.now(), 0.0), cap)
    return wait, backoff


def _peer_loop(ctx: SyncContext, peer: PeerConfig, interval: float, stop: threading.Event) -> None:
    """First poll at once (or when a recorded streak says); the interval after a success; doubling backoff,
    capped at 5 minutes, after failures; once an hour while blocked on a poison event (poison.py: noema has no
    such rule)."""
    first_wait, backoff = _resume(ctx, peer, interval)
    if first_wait and stop.wait(first_wait):
        return
    last_category = ""
    while not stop.is_set():
        # The wait this poll will be followed by, so the streak it records says when the daemon comes back.
        after_failure = min(backoff * 2, MAX_BACKOFF_SECONDS)
        result = _daemon_poll(ctx, peer, stop, _daemon_delay(after_failure))
        if result is None:
            return  # stopped mid-poll: not a failure (Go records one: compatibility.md)
        if result.ok:
            if last_category:
                ctx.log.info(recovered_message(peer.name))
            last_category, backoff = "", interval
            wait = interval
        else:
            backoff = after_failure
            blocked = blocked_wait(result)  # poison events: the hour, not the doubling
            wait = backoff if blocked is None else blocked
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


def _daemon_delay(after_failure: float) -> Callable[[int, PollResult], tuple[float, bool]]:
    """The daemon's wait after a failed poll, recorded in the streak so it says when the daemon comes back: an
    hour for a blocked peer, else the doubling the loop has already worked out."""

    def delay(failures: int, result: PollResult) -> tuple[float, bool]:
        blocked = blocked_wait(result)
        return (after_failure if blocked is None else blocked), False

    return delay


def _daemon_poll(
    ctx: SyncContext,
    peer: PeerConfig,
    stop: threading.Event,
    next_delay: Callable[[int, PollResult], tuple[float, bool]],
) -> PollResult | None:
    poller = open_poller(ctx, peer, stop)
    if isinstance(poller, PollResult):
        return poller
    try:
        result = poller.poll(Deadline(None))
        if stop.is_set() and not result.ok:
            return None
        record_outcome(poller, result, ctx.clock.now(), next_delay)
    finally:
        poller.cortex.close()
    return result
