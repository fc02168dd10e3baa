"""One poll of one peer (federation.md §3.3–§3.9): handshake, pages of events, usage rows, health."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from noemafed.cortex import state
from noemafed.cortex.access import AccessKey
from noemafed.cortex.manifest import Manifest, PeerConfig
from noemafed.cortex.open import Cortex
from noemafed.errors import NoemafedError
from noemafed.federation import classify
from noemafed.federation.classify import Reason
from noemafed.federation.identity import IdentityError, parse_identity, verify_identity
from noemafed.logs import Log
from noemafed.mcp.client import (
    READ_SIGNAL_BUDGET,
    SYNC_EVENTS_BUDGET,
    Deadline,
    DeadlineExceeded,
    McpSession,
    PeerTarget,
    ToolRefusal,
    WireError,
)
from noemafed.text.gotext import go_quote, rfc3339_now

if TYPE_CHECKING:
    from noemafed.cortex.events import Event
    from noemafed.federation.replay import Replayer

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


class SyncContext(NamedTuple):
    """What every poll of a run shares: the cortex, its manifest and key, the options, the log."""

    cortex_dir: Path
    manifest: Manifest
    access: AccessKey
    options: SyncOptions
    log: Log


class SyncOptions(NamedTuple):
    """What a run may do: bounds on time and events, the page size, proxy opt-in."""

    timeout: float = 30.0
    max_duration: float | None = None
    max_events: int | None = None
    page_size: int = PAGE_SIZE
    use_proxy_env: bool = False


class PollError(NoemafedError):
    """A failed poll, classified for health and for the exit code."""

    code = "poll_failed"

    def __init__(self, message: str, reason: str, phase: str, event_id: str = "", trace_id: str = "") -> None:
        super().__init__(message)
        self.reason = reason or Reason.OTHER.value
        self.phase = phase
        self.event_id = event_id
        self.trace_id = trace_id


class PollResult(NamedTuple):
    """What one poll of one peer did; rendered by `sync` and recorded in health."""

    peer: str
    endpoint: str
    ok: bool
    reason: str = ""
    phase: str = ""
    message: str = ""
    needs_operator: bool = False
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


def needs_operator(reason: str, phase: str) -> bool:
    """Failures that will not heal by waiting: they make `sync` exit 4 instead of 3."""
    if reason in (Reason.AUTH, Reason.IDENTITY_MISMATCH, Reason.IDENTITY_MISSING):
        return True
    if phase == "identity" and reason == Reason.INVALID_FRONTMATTER:
        return True  # the peer's manifest is too old: its operator must migrate it
    return phase == "replay" and classify.is_schema_widening(reason)


_IDENTITY_KIND_REASONS = {
    "mismatch": Reason.IDENTITY_MISMATCH,
    "own_id": Reason.IDENTITY_MISMATCH,
    "signing": Reason.IDENTITY_MISMATCH,  # Go says "other"; Rust and noemafed: it needs an operator
    "empty": Reason.IDENTITY_MISSING,
    "no_id": Reason.IDENTITY_MISSING,
    "version": Reason.INVALID_FRONTMATTER,
}


class _Progress:
    """What a poll has done so far; kept when it fails halfway, so the result can still say it."""

    def __init__(self, cursor: str) -> None:
        self.peer_version = ""
        self.peer_cortex_id = ""
        self.cursor = cursor
        self.applied = 0
        self.pages = 0
        self.usage_rows = 0
        self.caught_up = False
        self.extra: dict[str, Any] = {}


class PeerPoller:
    """Runs polls of one peer against one cortex connection (one per thread: sqlite3 is not shared)."""

    def __init__(
        self, cortex: Cortex, peer: PeerConfig, ctx: SyncContext, stop: threading.Event | None = None
    ) -> None:
        self.cortex = cortex
        self.peer = peer
        self.options = ctx.options
        self.log = ctx.log
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

    @property
    def replayer(self) -> Replayer:
        """Made on first use, so a poll that finds nothing new never loads the replay engine (cron start-up)."""
        if self._replayer is None:
            from noemafed.federation.replay import Replayer  # noqa: PLC0415 (lazy: see the docstring)

            self._replayer = Replayer(self.cortex, self.log)
        return self._replayer

    @property
    def conn(self) -> Any:
        return self.cortex.conn

    def poll(self, deadline: Deadline) -> PollResult:
        """One poll and its health record; never raises for a peer's failure."""
        started = time.monotonic()
        progress = _Progress(cursor=self._get(state.LAST_EVENT))
        cursor_before = progress.cursor
        try:
            self._poll(deadline, progress)
            result = PollResult(self.peer.name, self.peer.endpoint, ok=True, caught_up=progress.caught_up)
        except PollError as exc:
            result = PollResult(
                self.peer.name,
                self.peer.endpoint,
                ok=False,
                reason=exc.reason,
                phase=exc.phase,
                message=exc.message,
                needs_operator=needs_operator(exc.reason, exc.phase),
                category=classify.categorize_error(exc) or "other",
                event_id=exc.event_id,
                trace_id=exc.trace_id,
            )
        result = result._replace(
            events_applied=progress.applied,
            pages=progress.pages,
            usage_rows=progress.usage_rows,
            cursor_before=cursor_before,
            cursor_after=self._get(state.LAST_EVENT),
            peer_version=progress.peer_version,
            peer_cortex_id=progress.peer_cortex_id,
            seconds=time.monotonic() - started,
        )
        if result.ok or not self.stop.is_set():
            # A poll cut short by shutdown is not a failure of the peer (Go records one).
            self.record_health(result)
        return result

    def record_health(self, result: PollResult) -> None:
        """federation.md §3.9: after every poll, success or failure; persistence errors only log."""
        quoted = go_quote(self.peer.name)
        now = rfc3339_now()
        try:
            previous = state.get_health(self.conn, self.peer.name)
        except NoemafedError as exc:
            self.log.warning(f"[federation] peer {quoted}: could not load prior health: {exc}")
            previous = state.PeerHealth()
        if result.ok:
            health = previous.after_success(now, result.peer_version)
        else:
            error = state.PeerError(result.reason, now, result.event_id, result.trace_id)
            health = previous.after_failure(now, result.peer_version, error)
        try:
            state.set_health(self.conn, self.peer.name, health)
        except NoemafedError as exc:
            self.log.warning(f"[federation] peer {quoted}: could not persist health: {exc}")

    # ---- the poll, step by step ---------------------------------------------------------------------

    def _poll(self, deadline: Deadline, progress: _Progress) -> None:
        try:
            session = McpSession(self.target, deadline)
        except WireError as exc:
            raise PollError(f"creating Streamable HTTP client: {exc}", Reason.NETWORK_TLS, "connect") from exc
        try:
            try:
                server = session.initialize()
            except WireError as exc:
                raise PollError(
                    f"MCP initialize: {exc}", classify.classify_network_error(exc), "initialize"
                ) from exc
            progress.peer_version = server.version
            progress.peer_cortex_id = self._handshake(session)
            if self.cortex.manifest.federation_mode == "publish":
                self._set(state.LAST_SEEN, rfc3339_now())
                return
            self._pull_events(session, deadline, progress)
            self._pull_usage(session, progress)
            self._set(state.LAST_SEEN, rfc3339_now())
        finally:
            session.close()

    def _handshake(self, session: McpSession) -> str:
        quoted = go_quote(self.peer.name)
        try:
            text = session.call_tool("cortex_identity", {})
        except ToolRefusal as exc:
            raise PollError(
                f"peer {quoted} cortex_identity refused: {exc}", Reason.OTHER, "identity"
            ) from exc
        except WireError as exc:
            # Go classifies this as "other"; a network failure here is a network failure (compatibility.md).
            raise PollError(
                f"calling cortex_identity: {exc}", classify.classify_network_error(exc), "identity"
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
            reason = _IDENTITY_KIND_REASONS.get(exc.kind, Reason.OTHER)
            raise PollError(exc.message, reason, "identity") from exc
        return identity.id

    def _pull_events(self, session: McpSession, deadline: Deadline, progress: _Progress) -> None:
        """Page after page until a short page (Go pulls one page per interval: compatibility.md).

        While a full page is replayed, the next one is already being fetched: it starts right after this
        page's last event, which is where the cursor stands once the page is replayed. The wire and the peer
        then work during the replay instead of before it. A page fetched ahead is simply dropped when the
        poll stops early (a failure, --max-events, the deadline, a stop signal).
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
                from noemafed.cortex.events import EventFormatError, parse_page  # noqa: PLC0415

                try:
                    events = parse_page(text)
                except EventFormatError as exc:
                    raise PollError(f"parsing sync_events response: {exc}", Reason.OTHER, "events") from exc
                del text  # the page's text is not needed once parsed; only one page ahead is kept
                _check_page(events, progress.cursor, limit)
                full = len(events) == limit
                if full and not self._max_reached(progress, len(events)):
                    next_page = _events_arguments(events[-1].id, limit)
                    ahead = _PageAhead(
                        functools.partial(self._call_events, session, next_page), self.peer.name
                    )
                for start in range(0, len(events), REPLAY_BATCH):
                    if self._should_stop(deadline, progress):
                        return
                    self._replay_batch(events[start : start + REPLAY_BATCH], progress)
                self.log.info(
                    f"[sync] peer {go_quote(self.peer.name)}: page {progress.pages}, "
                    f"{progress.applied} events applied, cursor {progress.cursor}"
                )
                if self._max_reached(progress):
                    return
                if ahead is None:
                    progress.caught_up = not full
                    return
                text, ahead = ahead.result(), None
        finally:
            if ahead is not None and not ahead.settle(0.0 if self.stop.is_set() else AHEAD_GRACE_SECONDS):
                # Still in flight: the session is not ours to end while another thread uses it. The peer
                # expires it as it does any session a client leaves behind.
                session.abandon()

    def _call_events(self, session: McpSession, arguments: dict[str, Any]) -> str:
        try:
            return session.call_tool("sync_events", arguments, SYNC_EVENTS_BUDGET)
        except ToolRefusal as exc:
            raise PollError(f"peer sync_events refused: {exc}", Reason.OTHER, "events") from exc
        except WireError as exc:
            raise PollError(
                f"calling sync_events: {exc}", classify.classify_network_error(exc), "events"
            ) from exc

    def _should_stop(self, deadline: Deadline, progress: _Progress) -> bool:
        """Between events (the cursor is consistent there): max-events, the run deadline, a stop signal."""
        if self.stop.is_set():
            raise PollError("stopped", Reason.OTHER, "events")
        try:
            deadline.check()
        except DeadlineExceeded as exc:
            raise PollError(f"syncing events: {exc}", Reason.NETWORK_TIMEOUT, "events") from exc
        return self._max_reached(progress)

    def _max_reached(self, progress: _Progress, coming: int = 0) -> bool:
        """--max-events is reached (or will be, once `coming` more events are applied)."""
        return self.options.max_events is not None and progress.applied + coming >= self.options.max_events

    def _replay_batch(self, events: Sequence[Event], progress: _Progress) -> None:
        """One transaction for a batch; the cursor commits with the events before any failure."""
        if self.options.max_events is not None:
            events = events[: self.options.max_events - progress.applied]
        result = self.replayer.apply_page(events, cursor_peer=self.peer.name)
        if result.outcomes:
            progress.cursor = result.outcomes[-1].event_id
            progress.applied += len(result.outcomes)
        if result.failed is None:
            return
        event, error = result.failed, result.error
        self.log.info(
            f"[federation] peer {go_quote(self.peer.name)}: replay of event {event.id} ({event.action} on trace "
            f"{event.trace_id}) failed: {error} — cursor pinned, will retry next poll"
        )
        # The link itself is healthy: last_seen moves even though the poll fails.
        self._set(state.LAST_SEEN, rfc3339_now())
        raise PollError(
            f"replay event {event.id}: {error}",
            classify.classify_replay_error(error),
            "replay",
            event_id=event.id,
            trace_id=event.trace_id,
        ) from error

    def _pull_usage(self, session: McpSession, progress: _Progress) -> None:
        """Usage counters are best effort: any failure is logged and the poll still succeeds."""
        quoted = go_quote(self.peer.name)
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
                raise WireError(f"peer sync_read_signal refused: {exc}") from exc
            if text in ("", "[]", "null"):
                return
            try:
                rows = json.loads(text)
            except ValueError as exc:
                raise WireError(f"parsing sync_read_signal response: {exc}") from exc
            if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
                raise WireError("parsing sync_read_signal response: not an array of objects")
            if not rows:
                return
            progress.usage_rows = self.replayer.merge_usage(rows)
            last = rows[-1].get("updated_at")
            if isinstance(last, str) and last:
                self._set(state.LAST_USAGE, last)
        except NoemafedError as exc:
            self.log.warning(
                f"[federation] peer {quoted}: read-signal sync failed (events already applied): {exc}"
            )

    # ---- state helpers -------------------------------------------------------------------------------

    def _get(self, suffix: str) -> str:
        return state.get(self.conn, state.peer_key(self.peer.name, suffix))

    def _set(self, suffix: str, value: str) -> None:
        try:
            state.put(self.conn, state.peer_key(self.peer.name, suffix), value)
        except NoemafedError as exc:
            self.log.warning(
                f"[federation] peer {go_quote(self.peer.name)}: could not record {suffix}: {exc}"
            )


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

    def __init__(self, fetch: Callable[[], str], peer: str) -> None:
        self._fetch = fetch
        self._text = ""
        self._error: BaseException | None = None
        # A daemon thread: a peer that hangs on the page nobody will read must not keep the process alive.
        self._thread = threading.Thread(target=self._run, name=f"peer-{peer}-ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._text = self._fetch()
        except BaseException as exc:  # handed to the poll thread, which raises it where the call would have
            self._error = exc

    def result(self) -> str:
        """The page's text, or the PollError the call raised, as if it had been made right now."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._text

    def settle(self, timeout: float) -> bool:
        """Wait up to `timeout` for a call whose page will not be used; whether it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


def _check_page(events: Sequence[Any], cursor: str, limit: int) -> None:
    """Rust's client checks: no more than asked for, and ids strictly advancing past the cursor."""
    if len(events) > limit:
        raise PollError(
            f"sync_events returned {len(events)} events for a limit of {limit}", Reason.OTHER, "events"
        )
    previous = cursor
    for event in events:
        if previous and event.id <= previous:
            raise PollError(
                f"sync_events returned non-advancing event id {event.id} after {previous}",
                Reason.OTHER,
                "events",
            )
        previous = event.id


def _resolve(cortex_dir: Path, path: str) -> str:
    if not path:
        return ""
    candidate = Path(path).expanduser()
    return str(candidate if candidate.is_absolute() else cortex_dir / candidate)
