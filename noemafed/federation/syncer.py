"""One poll of one peer (federation.md §3.3–§3.9): handshake, pages of events, usage rows, health."""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from noemafed.cortex import state
from noemafed.cortex.access import AccessKey
from noemafed.cortex.manifest import Manifest, PeerConfig
from noemafed.cortex.open import Cortex
from noemafed.errors import ExitCode, NoemafedError
from noemafed.federation import classify, poison
from noemafed.federation.classify import IdentityFailure, Phase, Reason, TlsFailure
from noemafed.federation.identity import IdentityError, parse_identity, verify_identity
from noemafed.logs import Log
from noemafed.mcp.client import (
    READ_SIGNAL_BUDGET,
    SYNC_EVENTS_BUDGET,
    Deadline,
    DeadlineExceeded,
    HttpStatusError,
    McpSession,
    PeerTarget,
    ToolRefusal,
    WireError,
)
from noemafed.records import Record
from noemafed.text.clock import REAL_CLOCK, Clock
from noemafed.text.gotext import go_quote
from noemafed.text.sanitize import one_line, short

if TYPE_CHECKING:
    from noemafed.cortex.events import Event, EventHead
    from noemafed.federation.replay import PageResult, Replayer

PAGE_SIZE = 1000  # the server maximum: fewer round trips than Go's 100, same cursor semantics
# Events replayed per transaction: long enough to amortise commits, short enough that a local noema
# waiting for the write lock is never held up for long (busy_timeout is 5 s).
REPLAY_BATCH = 250
USAGE_LIMIT = 500
# How long a poll that stops early waits for the page it fetched ahead, so it can still end its session.
AHEAD_GRACE_SECONDS = 2.0

# Texts that mean "this peer has no sync_read_signal tool" (federation.md §3.6), plus the Python SDK's form.
_TOOL_UNKNOWN_MARKERS = (
    "-32601",
    "tool not found",
    "Tool not found",
    "method not found",
    "Method not found",
    "Unknown tool",
)

# Why a poll failed: the message of its PollError, shown by `sync` and in the daemon's log.
CLIENT_ERROR = "creating Streamable HTTP client: {err}"
INITIALIZE_ERROR = "MCP initialize: {err}"
IDENTITY_REFUSED_ERROR = "peer {name} cortex_identity refused: {err}"
IDENTITY_CALL_ERROR = "calling cortex_identity: {err}"
EVENTS_CALL_ERROR = "calling sync_events: {err}"
EVENTS_REFUSED_ERROR = "peer sync_events refused: {err}"
EVENTS_PARSE_ERROR = "parsing sync_events response: {err}"
EVENTS_OVER_LIMIT_ERROR = "sync_events returned {count} events for a limit of {limit}"
EVENTS_NOT_ADVANCING_ERROR = "sync_events returned non-advancing event id {event_id} after {previous}"
STOPPED_ERROR = "stopped"
DEADLINE_ERROR = "syncing events: {err}"
REPLAY_ERROR = "replay event {event_id}: {err}"
INVALID_EVENT_ID_ERROR = "sync_events returned event {event_id} whose id {problem}; cursor pinned before it"
LOCAL_STORAGE_ERROR = "{phase}: local storage: {err}"
UNEXPECTED_ERROR = "{phase}: unexpected {kind}: {err}"
# Why the usage phase failed: only logged (READ_SIGNAL_FAILED_LOG), the poll still succeeds.
READ_SIGNAL_REFUSED_ERROR = "peer sync_read_signal refused: {err}"
READ_SIGNAL_PARSE_ERROR = "parsing sync_read_signal response: {err}"
READ_SIGNAL_NOT_ROWS_ERROR = "parsing sync_read_signal response: not an array of objects"
# The live (Rust) build's checks of a usage page, with its texts; a page that fails one is refused whole.
READ_SIGNAL_TOO_MANY_ERROR = "peer returned too many usage rows"
READ_SIGNAL_OWNERSHIP_ERROR = "peer returned usage rows with invalid ownership or cursor"

# Log lines (federation.md §3.5, §3.6, §3.9); names go through go_quote because Go formats them with %q.
PAGE_LOG = "[sync] peer {name}: page {page}, {applied} events applied, cursor {cursor}"
REPLAY_FAILED_LOG = (
    "[federation] peer {name}: replay of event {event_id} ({action} on trace {trace_id}) failed: {err} "
    "\u2014 cursor pinned, will retry next poll"
)
READ_SIGNAL_FAILED_LOG = "[federation] peer {name}: read-signal sync failed (events already applied): {err}"
LOAD_HEALTH_FAILED_LOG = "[federation] peer {name}: could not load prior health: {err}"
PERSIST_HEALTH_FAILED_LOG = "[federation] peer {name}: could not persist health: {err}"
RECORD_FAILED_LOG = "[federation] peer {name}: could not record {key}: {err}"
READ_FAILED_LOG = "[federation] peer {name}: could not read {key}: {err}"


class SyncContext(Record):
    """What every poll of a run shares: the cortex, its manifest and key, the options, the log."""

    cortex_dir: Path
    manifest: Manifest
    access: AccessKey
    options: SyncOptions
    log: Log
    clock: Clock = REAL_CLOCK  # what time it is for the times a poll records (the test hook may fix it)


class SyncOptions(Record):
    """What a run may do: bounds on time and events, the page size, proxy opt-in, trust in event ids."""

    timeout: float = 30.0  # per request: connect, TLS, headers and body together
    max_duration: float | None = None
    max_events: int | None = None
    page_size: int = PAGE_SIZE
    use_proxy_env: bool = False
    # How far in the future (by this host's clock) an event id may be dated and still be stored.
    max_future_skew: float = 600.0
    jobs: int = 4  # peers polled at once
    # `sync --once`: the longest a failing peer is left alone (the doubling backoff and Retry-After both stop
    # here); the daemon keeps noema's own 5-minute cap.
    max_backoff: float = 3600.0
    dry_run: bool = False  # replay everything, then roll it back: no file, no state (federation.dryrun)
    block_after: int = poison.DEFAULT_BLOCK_AFTER  # failed replays of one event in a row that block a peer


class PollError(NoemafedError):
    """A failed poll, classified (classify.outcome) for health and for the exit code."""

    code = "poll_failed"

    def __init__(
        self,
        message: str,
        phase: Phase,
        cause: Reason | IdentityFailure | TlsFailure,
        event_id: str = "",
        trace_id: str = "",
    ) -> None:
        # Messages quote what a peer sent: they are kept to one printable line wherever they end up.
        super().__init__(one_line(message))
        self.phase = phase
        self.outcome = classify.outcome(phase, cause)
        self.event_id = short(event_id)
        self.trace_id = short(trace_id)
        self.action = ""  # poison events: the refused event's action (set for replay failures only)


class PollResult(Record):
    """What one poll of one peer did; rendered by `sync` and recorded in health."""

    peer: str
    endpoint: str
    ok: bool
    reason: Reason | None = None
    phase: Phase | None = None
    message: str = ""
    needs_operator: bool = False
    exit_code: ExitCode = ExitCode.OK  # a run exits with the worst of its results' codes
    category: str = ""  # the short tag that picks the daemon's log message
    event_id: str = ""
    trace_id: str = ""
    events_applied: int = 0
    pages: int = 0
    usage_rows: int = 0
    cursor_before: str = ""
    cursor_after: str = ""
    peer_version: str = ""
    peer_cortex_id: str = ""
    caught_up: bool = False
    seconds: float = 0.0
    retry_after: str = ""  # a 429 or 503 answer's Retry-After, as the peer sent it
    # The run's --max-duration ran out while the poll was pulling: with events applied, the peer is behind, not
    # unreachable, and its backoff is not extended.
    out_of_time: bool = False
    # The event replay keeps failing on (poison events), as recorded after this poll.
    poison_record: poison.PoisonRecord | None = None

    @classmethod
    def failed(cls, peer: PeerConfig, error: PollError, category: str = "other") -> PollResult:
        """The result of a poll that `error` ended, with the reason and exit code its outcome gives."""
        return cls(
            peer.name,
            peer.endpoint,
            ok=False,
            reason=error.outcome.reason,
            phase=error.phase,
            message=error.message,
            needs_operator=error.outcome.needs_operator,
            exit_code=error.outcome.exit_code,
            category=category,
            event_id=error.event_id,
            trace_id=error.trace_id,
            retry_after=next(
                (exc.retry_after for exc in classify.chain(error) if isinstance(exc, HttpStatusError)), ""
            ),
            out_of_time=any(isinstance(exc, DeadlineExceeded) for exc in classify.chain(error)),
        )


class _Progress:
    """What a poll has done so far; kept when it fails halfway, so the result can still say it."""

    def __init__(self, cursor: str) -> None:
        self.phase = Phase.CONNECT  # where the poll is, so an unexpected failure can still say it
        self.peer_version = ""
        self.peer_cortex_id = ""
        self.cursor = cursor
        self.applied = 0
        self.pages = 0
        self.usage_rows = 0
        self.caught_up = False


class PeerPoller:
    """Runs polls of one peer against one cortex connection (one per thread: sqlite3 is not shared)."""

    def __init__(
        self, cortex: Cortex, peer: PeerConfig, ctx: SyncContext, stop: threading.Event | None = None
    ) -> None:
        self.cortex = cortex
        self.peer = peer
        self.options = ctx.options
        self.log = ctx.log
        self.clock = ctx.clock
        self.stop = stop or threading.Event()
        self.target = PeerTarget(
            name=peer.name,
            endpoint=peer.endpoint,
            ca_file=_resolve(cortex.path, peer.ca),
            key=ctx.access.value,
            timeout=ctx.options.timeout,
            use_proxy_env=ctx.options.use_proxy_env,
        )
        self._replayer: Replayer | None = None
        # Dry runs: told of each replayed batch and what it did (federation.dryrun tallies them).
        self.on_batch: Callable[[Sequence[Event], PageResult], None] | None = None

    @property
    def replayer(self) -> Replayer:
        """Made on first use, so a poll that finds nothing new never loads the replay engine (cron start-up)."""
        if self._replayer is None:
            from noemafed.federation.replay import Replayer  # noqa: PLC0415 (lazy: see the docstring)

            self._replayer = Replayer(self.cortex, self.log)
        return self._replayer

    @property
    def checked_signatures(self) -> bool:
        """Whether this poll's replay checked an event signature (so which verifier runs is worth recording)."""
        return self._replayer is not None and self._replayer.signatures_checked > 0

    @property
    def conn(self) -> Any:
        return self.cortex.conn

    def poll(self, deadline: Deadline) -> PollResult:
        """One poll and its health record; never raises for a peer's failure."""
        started = time.monotonic()
        progress = _Progress(cursor=self._get_or(state.LAST_EVENT, ""))
        cursor_before = progress.cursor
        failure: PollError | None = None
        try:
            self._poll(deadline, progress)
            result = PollResult(self.peer.name, self.peer.endpoint, ok=True, caught_up=progress.caught_up)
        except PollError as exc:
            failure = exc
        except Exception as exc:  # anything else a peer or this host's disk can cause: named, never a crash
            failure = _unexpected_failure(exc, progress.phase)
        if failure is not None:
            result = PollResult.failed(self.peer, failure, classify.categorize_error(failure))
        result = result._replace(
            events_applied=progress.applied,
            pages=progress.pages,
            usage_rows=progress.usage_rows,
            cursor_before=cursor_before,
            cursor_after=self._get_or(state.LAST_EVENT, progress.cursor),
            peer_version=progress.peer_version,
            peer_cortex_id=progress.peer_cortex_id,
            seconds=time.monotonic() - started,
        )
        if failure is None or not self.stop.is_set():
            # A poll cut short by shutdown is not a failure of the peer (Go records one).
            record = self._record_health(result.peer_version, failure, result.cursor_after)
            result = result._replace(poison_record=record)
        return result

    def _record_health(
        self, peer_version: str, failure: PollError | None, cursor: str
    ) -> poison.PoisonRecord | None:
        """federation.md §3.9: after every poll, success or failure; persistence errors only log. The poison
        record (noemafed's own) is written in the same transaction, and returned as it now stands."""
        quoted = go_quote(self.peer.name)
        now = self.clock.rfc3339()
        try:
            previous = state.get_health(self.conn, self.peer.name)
        except NoemafedError as exc:
            self.log.warning(LOAD_HEALTH_FAILED_LOG.format(name=quoted, err=exc))
            previous = state.PeerHealth()
        if failure is None:
            health = previous.after_success(now, peer_version)
        else:
            error = state.PeerError(failure.outcome.reason, now, failure.event_id, failure.trace_id)
            health = previous.after_failure(now, peer_version, error)
        record = None
        try:
            with state.write_transaction(self.conn):
                state.set_health(self.conn, self.peer.name, health)
                record = self._record_poison(failure, cursor, now)  # poison events (issue 14)
        except (NoemafedError, sqlite3.Error, ValueError) as exc:
            self.log.warning(PERSIST_HEALTH_FAILED_LOG.format(name=quoted, err=one_line(str(exc))))
        return record

    def _record_poison(self, failure: PollError | None, cursor: str, now: str) -> poison.PoisonRecord | None:
        """Count a replay failure of one event towards blocking the peer (poison.after_poll has the rules)."""
        refused = None
        if failure is not None and failure.phase is Phase.REPLAY and failure.event_id:
            refused = poison.replay_failure(
                failure.event_id, failure.trace_id, failure.action, failure.outcome.reason, failure.message
            )
        previous = poison.get_record(self.conn, self.peer.name)
        outcome = poison.PollOutcome(failure is None, refused, cursor)
        record = poison.after_poll(previous, outcome, now, self.options.block_after)
        if record != previous:
            poison.put_record(self.conn, self.peer.name, record)
        return record

    # ---- the poll, step by step ---------------------------------------------------------------------

    def _poll(self, deadline: Deadline, progress: _Progress) -> None:
        session = self._open_session(deadline, progress)
        try:
            if self.cortex.manifest.federation_mode == "publish":
                self._set(state.LAST_SEEN, self.clock.rfc3339())
                return
            progress.phase = Phase.EVENTS
            self._pull_events(session, deadline, progress)
            progress.phase = Phase.USAGE
            self._pull_usage(session, progress)
            self._set(state.LAST_SEEN, self.clock.rfc3339())
        finally:
            session.close()

    def _open_session(self, deadline: Deadline, progress: _Progress) -> McpSession:
        """An MCP session, initialized, with the peer's identity checked against the pins; closed on failure."""
        try:
            session = McpSession(self.target, deadline)
        except WireError as exc:
            # A peer entry that cannot become a request (a missing or empty CA file, a bad endpoint) is no
            # network failure: `other`, as Go says for a missing CA; the connect phase makes it an operator's.
            raise PollError(CLIENT_ERROR.format(err=exc), Phase.CONNECT, Reason.OTHER) from exc
        try:
            progress.phase = Phase.INITIALIZE
            try:
                server = session.initialize()
            except WireError as exc:
                raise PollError(
                    INITIALIZE_ERROR.format(err=exc), Phase.INITIALIZE, classify.network_cause(exc)
                ) from exc
            progress.peer_version = server.version
            progress.phase = Phase.IDENTITY
            progress.peer_cortex_id = self._handshake(session)
        except BaseException:
            session.close()
            raise
        return session

    def next_event(self, deadline: Deadline) -> Event | None:
        """skip-event: the handshake of a poll, then the first event after the cursor (a page of one), checked
        as a poll checks its pages; None when the peer serves nothing after it. Replays and records nothing."""
        progress = _Progress(cursor=self._get(state.LAST_EVENT))
        session = self._open_session(deadline, progress)
        try:
            text = self._call_events(session, _events_arguments(progress.cursor, 1))
        finally:
            session.close()
        from noemafed.cortex.events import EventFormatError, read_page  # noqa: PLC0415 (as in _pull_events)

        try:
            page = read_page(text)
        except EventFormatError as exc:
            raise PollError(EVENTS_PARSE_ERROR.format(err=exc), Phase.EVENTS, Reason.OTHER) from exc
        refused = _first_refused_id(page.heads, self.options.max_future_skew)
        if refused is not None:
            bad = page.heads[refused[0]]
            message = INVALID_EVENT_ID_ERROR.format(event_id=bad.id, problem=refused[1])
            raise PollError(message, Phase.EVENTS, Reason.INVALID_EVENT_ID, bad.id, bad.trace_id)
        _check_page(page.heads, len(page.heads), progress.cursor, 1)
        if not page.heads:  # "", "null" and "[]" read as an empty page, and so does `[ ]`
            return None
        [event] = page.events()  # one at most: _check_page refused more than the limit
        return event

    def _handshake(self, session: McpSession) -> str:
        try:
            text = session.call_tool("cortex_identity", {})
        except ToolRefusal as exc:
            message = IDENTITY_REFUSED_ERROR.format(name=go_quote(self.peer.name), err=exc)
            raise PollError(message, Phase.IDENTITY, IdentityFailure.REFUSED) from exc
        except WireError as exc:
            # Go classifies this as "other"; a network failure here is a network failure (compatibility.md).
            raise PollError(
                IDENTITY_CALL_ERROR.format(err=exc), Phase.IDENTITY, classify.network_cause(exc)
            ) from exc
        try:
            identity = parse_identity(self.peer.name, text)
            verify_identity(
                self.conn,
                self.peer.name,
                identity,
                own_id=self.cortex.manifest.id,
                hard_pin=self.peer.pubkey,
                log=self.log,
            )
        except IdentityError as exc:
            raise PollError(exc.message, Phase.IDENTITY, exc.kind) from exc
        return identity.id

    def _pull_events(self, session: McpSession, deadline: Deadline, progress: _Progress) -> None:
        """Page after page until a short page (Go pulls one page per interval: compatibility.md).

        While a full page is replayed, the next one is already being fetched: it starts right after this
        page's last event, which is where the cursor stands once the page is replayed. The wire and the peer
        then work during the replay instead of before it. A page fetched ahead is simply dropped when the
        poll stops early (a failure, --max-events, the deadline, a stop signal).

        Not after a large page (events.LARGE_PAGE_CHARS): the next one is asked for once this one is
        replayed and freed. Two large pages at once would hold three times a page or more (bench.py memory),
        and for a page that large the transfer takes about as long as its replay anyway.
        """
        limit = self.options.page_size
        text = self._call_events(session, _events_arguments(progress.cursor, limit))
        ahead: _PageAhead | None = None
        try:
            while True:
                progress.pages += 1
                if text in ("", "[]", "null"):
                    progress.caught_up = True
                    return
                # Lazy: a caught-up poll, the common cron case, never loads the event model.
                from noemafed.cortex.events import EventFormatError, read_page  # noqa: PLC0415

                try:
                    page = read_page(text)
                except EventFormatError as exc:
                    raise PollError(EVENTS_PARSE_ERROR.format(err=exc), Phase.EVENTS, Reason.OTHER) from exc
                del text  # a large page keeps it (page); a normal one is done with it
                heads = page.heads
                refused = _first_refused_id(heads, self.options.max_future_skew)
                trusted = len(heads) if refused is None else refused[0]
                _check_page(heads, trusted, progress.cursor, limit)
                full = len(heads) == limit and refused is None
                more = full and not self._max_reached(progress, len(heads))
                next_page = _events_arguments(heads[-1].id, limit) if more else {}
                if more and not page.large:
                    fetch = functools.partial(self._call_events, session, next_page)
                    ahead = _PageAhead(fetch, self.peer.name)
                for start in range(0, trusted, REPLAY_BATCH):
                    if self._should_stop(deadline, progress):
                        return
                    self._replay_batch(page.events(start, min(start + REPLAY_BATCH, trusted)), progress)
                if refused is not None:
                    bad = heads[refused[0]]
                    message = INVALID_EVENT_ID_ERROR.format(event_id=bad.id, problem=refused[1])
                    raise PollError(message, Phase.EVENTS, Reason.INVALID_EVENT_ID, bad.id, bad.trace_id)
                self.log.info(
                    PAGE_LOG.format(
                        name=go_quote(self.peer.name),
                        page=progress.pages,
                        applied=progress.applied,
                        cursor=progress.cursor,
                    )
                )
                if self._max_reached(progress):
                    return
                if not more:
                    progress.caught_up = not full
                    return
                del page, heads  # replayed: freed before the next page arrives, not once it is parsed
                if ahead is None:
                    text = self._call_events(session, next_page)
                else:
                    text, ahead = ahead.result(), None
        finally:
            if ahead is not None and not ahead.settle(0.0 if self.stop.is_set() else AHEAD_GRACE_SECONDS):
                # Still in flight: the session is not ours to end while another thread uses it. The peer
                # expires it as it does any session a client leaves behind.
                session.abandon()

    def _call_events(self, session: McpSession, arguments: dict[str, Any]) -> str | bytearray:
        try:
            # A large page comes as UTF-8 bytes, which read_page reads without a str as wide as the page.
            return session.call_page_tool("sync_events", arguments, SYNC_EVENTS_BUDGET)
        except ToolRefusal as exc:
            raise PollError(EVENTS_REFUSED_ERROR.format(err=exc), Phase.EVENTS, Reason.OTHER) from exc
        except WireError as exc:
            raise PollError(
                EVENTS_CALL_ERROR.format(err=exc), Phase.EVENTS, classify.network_cause(exc)
            ) from exc

    def _should_stop(self, deadline: Deadline, progress: _Progress) -> bool:
        """Between events (the cursor is consistent there): max-events, the run deadline, a stop signal."""
        if self.stop.is_set():
            raise PollError(STOPPED_ERROR, Phase.EVENTS, Reason.OTHER)
        try:
            deadline.check()
        except DeadlineExceeded as exc:
            raise PollError(DEADLINE_ERROR.format(err=exc), Phase.EVENTS, Reason.NETWORK_TIMEOUT) from exc
        return self._max_reached(progress)

    def _max_reached(self, progress: _Progress, coming: int = 0) -> bool:
        """--max-events is reached (or will be, once `coming` more events are applied)."""
        return self.options.max_events is not None and progress.applied + coming >= self.options.max_events

    def _replay_batch(self, events: Sequence[Event], progress: _Progress) -> None:
        """One transaction for a batch; the cursor commits with the events before any failure."""
        if self.options.max_events is not None:
            events = events[: self.options.max_events - progress.applied]
        progress.phase = Phase.REPLAY
        result = self.replayer.apply_page(events, cursor_peer=self.peer.name)
        progress.phase = Phase.EVENTS
        if self.on_batch is not None:
            self.on_batch(events, result)
        if result.outcomes:
            progress.cursor = result.outcomes[-1].event_id
            progress.applied += len(result.outcomes)
        if result.failed is None or result.error is None:
            return  # the whole batch committed (a failed event always comes with its error)
        event, error = result.failed, result.error
        self.log.info(
            REPLAY_FAILED_LOG.format(
                name=go_quote(self.peer.name),
                event_id=event.id,
                action=one_line(event.action),
                trace_id=one_line(event.trace_id),
                err=one_line(str(error)),
            )
        )
        # The link itself is healthy: last_seen moves even though the poll fails.
        self._set(state.LAST_SEEN, self.clock.rfc3339())
        failure = PollError(
            REPLAY_ERROR.format(event_id=event.id, err=error),
            Phase.REPLAY,
            classify.classify_replay_error(error),
            event_id=event.id,
            trace_id=event.trace_id,
        )
        failure.action = short(event.action)
        raise failure from error

    def _pull_usage(self, session: McpSession, progress: _Progress) -> None:
        """Usage counters are best effort: any failure is logged and the poll still succeeds."""
        try:
            cursor = self._get(state.LAST_USAGE)
            arguments: dict[str, Any] = {"limit": USAGE_LIMIT}
            if cursor:
                arguments["since"] = cursor
            try:
                text = session.call_tool("sync_read_signal", arguments, READ_SIGNAL_BUDGET)
            except ToolRefusal as exc:
                if any(marker in str(exc) for marker in _TOOL_UNKNOWN_MARKERS):
                    return  # an older peer without the tool
                raise WireError(READ_SIGNAL_REFUSED_ERROR.format(err=exc)) from exc
            if text in ("", "[]", "null"):
                return
            try:
                rows = json.loads(text)
            except (ValueError, RecursionError) as exc:
                raise WireError(READ_SIGNAL_PARSE_ERROR.format(err=exc)) from exc
            if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
                raise WireError(READ_SIGNAL_NOT_ROWS_ERROR)
            if not rows:
                return
            if len(rows) > USAGE_LIMIT:
                raise WireError(READ_SIGNAL_TOO_MANY_ERROR)
            # A peer speaks only for its own reads: a row attributed to another cortex (or with no cursor)
            # would plant counters in a third cortex's name.
            if any(
                row.get("peer_cortex_id") != progress.peer_cortex_id or not row.get("updated_at")
                for row in rows
            ):
                raise WireError(READ_SIGNAL_OWNERSHIP_ERROR)
            progress.usage_rows = self.replayer.merge_usage(rows)
            # Text, and not empty: merge_usage refused a page with any other updated_at, and so did the check above.
            self._set(state.LAST_USAGE, rows[-1]["updated_at"])
        except (NoemafedError, ValueError, TypeError, RecursionError) as exc:
            # Best effort, as in noema: a bad usage answer never fails a poll whose events are applied.
            self.log.warning(
                READ_SIGNAL_FAILED_LOG.format(name=go_quote(self.peer.name), err=one_line(str(exc)))
            )

    # ---- state helpers -------------------------------------------------------------------------------

    def _get(self, suffix: str) -> str:
        return state.get(self.conn, state.peer_key(self.peer.name, suffix))

    def _get_or(self, suffix: str, fallback: str) -> str:
        """For the report's bookkeeping: a database too locked to read must not turn a result into a crash."""
        try:
            return self._get(suffix)
        except NoemafedError as exc:
            self.log.warning(READ_FAILED_LOG.format(name=go_quote(self.peer.name), key=suffix, err=exc))
            return fallback

    def _set(self, suffix: str, value: str) -> None:
        try:
            state.put(self.conn, state.peer_key(self.peer.name, suffix), value)
        except NoemafedError as exc:
            self.log.warning(RECORD_FAILED_LOG.format(name=go_quote(self.peer.name), key=suffix, err=exc))


def _first_refused_id(events: Sequence[EventHead], max_future_skew: float) -> tuple[int, str] | None:
    """The index of the first event whose id must not be stored (and why), or None when all are fine."""
    from noemafed.cortex.events import event_id_problem  # noqa: PLC0415 (loaded with the page, as read_page is)

    now_millis = time.time_ns() // 1_000_000
    skew_millis = int(max_future_skew * 1000)
    for index, event in enumerate(events):
        problem = event_id_problem(event.id, now_millis, skew_millis)
        if problem is not None:
            return index, problem
    return None


def _unexpected_failure(exc: Exception, phase: Phase) -> PollError:
    """A failure no step named itself: this host's storage, or whatever a peer's answer provoked."""
    message = UNEXPECTED_ERROR.format(phase=phase, kind=type(exc).__name__, err=exc)
    if classify.is_local_storage_failure(exc):
        # A locked database between batches, a full or read-only disk: the peer is not at fault.
        failure = PollError(LOCAL_STORAGE_ERROR.format(phase=phase, err=exc), phase, Reason.LOCAL_STORAGE)
    elif isinstance(exc, WireError):
        failure = PollError(message, phase, classify.classify_network_error(exc))
    else:
        # RecursionError from JSON nested past the stack, a TypeError from a field of the wrong shape, and any
        # bare OSError: the peer's socket errors all come wrapped as WireError, so a bare one is this host's
        # (a log whose reader is gone, EPIPE; no file descriptors left), never the peer's network_reset. Named
        # by its type and text but not chained as the cause: classify reads a bare BrokenPipeError's type as a
        # connection reset (the daemon's category, `sync --json`'s).
        return PollError(message, phase, Reason.OTHER)
    failure.__cause__ = exc
    return failure


def _events_arguments(since: str, limit: int) -> dict[str, Any]:
    arguments: dict[str, Any] = {"limit": limit}
    if since:
        arguments["since"] = since
    return arguments


class _PageAhead:
    """One sync_events call on a helper thread, so the next page arrives while this one is replayed.

    The session is never used by two threads at once: the poll thread makes no call of its own until it has
    taken this page (`result`) or seen the call end (`settle`).
    """

    def __init__(self, fetch: Callable[[], str | bytearray], peer: str) -> None:
        self._fetch = fetch
        self._text: str | bytearray = ""
        self._error: BaseException | None = None
        # A daemon thread: a peer that hangs on the page nobody will read must not keep the process alive.
        self._thread = threading.Thread(target=self._run, name=f"peer-{peer}-ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._text = self._fetch()
        except BaseException as exc:  # handed to the poll thread, which raises it where the call would have
            self._error = exc

    def result(self) -> str | bytearray:
        """The page's text, or the PollError the call raised, as if it had been made right now."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._text

    def settle(self, timeout: float) -> bool:
        """Wait up to `timeout` for a call whose page will not be used; whether it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


def _check_page(events: Sequence[Any], trusted: int, cursor: str, limit: int) -> None:
    """Rust's client checks: no more than asked for, and ids strictly advancing past the cursor (up to the
    first id refused outright: ids are compared as ULIDs only once they are known to be ULIDs)."""
    if len(events) > limit:
        message = EVENTS_OVER_LIMIT_ERROR.format(count=len(events), limit=limit)
        raise PollError(message, Phase.EVENTS, Reason.OTHER)
    previous = cursor
    for event in events[:trusted]:
        if previous and event.id <= previous:
            message = EVENTS_NOT_ADVANCING_ERROR.format(event_id=event.id, previous=previous)
            raise PollError(message, Phase.EVENTS, Reason.OTHER)
        previous = event.id


def _resolve(cortex_dir: Path, path: str) -> str:
    """A peer's `ca:` path, relative to the cortex folder; an absolute one (after `~`) stays as it is, as
    pathlib's `/` keeps an absolute right-hand side."""
    return str(cortex_dir / Path(path).expanduser()) if path else ""
