"""One verdict per peer for status, `status --check` and the metrics: what the records say, judged at one time.

The verdict reads what every writer keeps (noema's health record, the cursor) and what noemafed adds
(`noemafed:backoff:<peer>`, `noemafed:run:<peer>`, `noemafed:poison:<peer>`); it does no I/O. Exactly one
verdict holds, the first rule that matches in this order (docs/operations.md says what each means and what to
do):

    paused > needs_operator > blocked > stale > failing | deferred > behind > never_synced > ok

`blocked` (a peer pinned on an event that cannot be replayed) needs an operator too, and says more about what
to do than stale. The blocked event's own failure is often one that needs an operator (an unknown action): that
failure is judged `blocked`, the more precise verdict; needs_operator still wins for any other failure (a wrong
key while blocked: fix that first).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

from noemafed.cortex import state
from noemafed.federation import classify, poison
from noemafed.federation.classify import Phase, Reason
from noemafed.records import Record
from noemafed.text.clock import parse_rfc3339, ulid_seconds

DEFAULT_MAX_AGE_SECONDS = 3600.0


class Verdict(StrEnum):
    """The values of `verdict` in `status --json`, the metrics' `verdict` label and the check's summary."""

    OK = "ok"  # the last poll succeeded and pulled everything there was
    BEHIND = "behind"  # the last poll stopped (--max-events, --max-duration) with more to pull
    DEFERRED = "deferred"  # failing, and left alone until its next attempt: a run now would not contact it
    FAILING = "failing"  # failing for a reason that may heal (exit 3), and due: a run now would retry it
    NEEDS_OPERATOR = "needs_operator"  # failing for a reason only an operator fixes (exit 4)
    BLOCKED = "blocked"  # its replay keeps failing on one event (--block-after runs): skip-event, or upgrade
    PAUSED = "paused"  # mode: paused in cortex.md
    NEVER_SYNCED = "never_synced"  # no poll has succeeded yet, and none has failed long enough to be stale
    STALE = "stale"  # no success for longer than --max-age, failures or not (cron stopped, a streak goes on)


class CheckState(IntEnum):
    """The monitoring-plugin states; the values are `status --check`'s exit codes."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


SEVERITY: dict[Verdict, CheckState] = {
    Verdict.OK: CheckState.OK,
    Verdict.PAUSED: CheckState.OK,
    Verdict.NEVER_SYNCED: CheckState.OK,
    Verdict.BEHIND: CheckState.WARNING,
    Verdict.DEFERRED: CheckState.WARNING,
    Verdict.FAILING: CheckState.WARNING,
    Verdict.NEEDS_OPERATOR: CheckState.CRITICAL,
    Verdict.BLOCKED: CheckState.CRITICAL,
    Verdict.STALE: CheckState.CRITICAL,
}


# How states combine over peers: the worst wins, and a CRITICAL peer outweighs one whose state is UNKNOWN.
WORSE = (CheckState.OK, CheckState.WARNING, CheckState.UNKNOWN, CheckState.CRITICAL)


def worst(states: list[CheckState]) -> CheckState:
    """The state of a check over several peers (OK for none)."""
    return max(states, key=WORSE.index, default=CheckState.OK)


class Judgement(Record):
    """A peer's verdict and the figures beside it ("" and None: not known)."""

    verdict: Verdict
    consecutive_failures: int
    failing_since: str
    next_attempt_at: str
    caught_up: bool | None
    lag_seconds: int | None  # now minus the time of the newest event applied from the peer (its cursor)
    last_success: str
    events_applied_total: int


class PeerRecords(Record):
    """What is known of one peer: its mode, noema's records (cursor, health) and noemafed's (streak, last run,
    the poison event it is blocked on)."""

    paused: bool
    peer: state.PeerState
    streak: state.Backoff | None
    run: state.PeerRun
    blocked_on: poison.PoisonRecord | None = None  # a record the last sync judged blocked (blocked_at set)


def judge(records: PeerRecords, now: float, max_age: float) -> Judgement:
    """The verdict at `now` of one peer from its records."""
    peer, streak, run = records.peer, records.streak, records.run
    health = peer.health
    return Judgement(
        verdict=_verdict(records, now, max_age),
        consecutive_failures=health.consecutive_failures,
        failing_since=streak.failing_since if streak else "",
        next_attempt_at=streak.next_attempt_at if streak else "",
        caught_up=run.caught_up if run.outcome else None,
        lag_seconds=lag_seconds(peer.last_event, now),
        last_success=health.last_success,
        events_applied_total=run.events_applied_total,
    )


def lag_seconds(cursor: str, now: float) -> int | None:
    """Whole seconds from the cursor's ULID time to `now` (never negative); None without a cursor.

    The cursor is the newest event applied from the peer (ids only advance), so the lag costs no query.
    """
    minted = ulid_seconds(cursor) if cursor else None
    return None if minted is None else max(0, int(now - minted))


def _verdict(records: PeerRecords, now: float, max_age: float) -> Verdict:
    health, streak, run = records.peer.health, records.streak, records.run
    failed = _last_poll_failed(health, run)
    if records.paused:
        return Verdict.PAUSED
    blocked_on = records.blocked_on
    if failed and _needs_operator(health, streak) and not _failed_on(blocked_on, health):
        return Verdict.NEEDS_OPERATOR
    if blocked_on is not None:
        return Verdict.BLOCKED
    since = _latest(health.last_success, run.progressed_at) or (streak.failing_since if streak else "")
    since_time = parse_rfc3339(since) if since else None
    if since_time is not None and now - since_time > max_age:
        return Verdict.STALE
    if failed:
        due_at = parse_rfc3339(streak.next_attempt_at) if streak else None
        return Verdict.DEFERRED if due_at is not None and due_at > now else Verdict.FAILING
    if run.outcome == state.RUN_BEHIND:
        return Verdict.BEHIND
    if not health.last_success and not run.progressed_at:
        return Verdict.NEVER_SYNCED
    return Verdict.OK


def _last_poll_failed(health: state.PeerHealth, run: state.PeerRun) -> bool:
    """Health is what every writer (noema's daemon too) keeps; noemafed's run record overrides it only for a
    poll the run's --max-duration cut short after progress, which health counts as a failure."""
    if health.consecutive_failures == 0 and health.last_error is None:
        return False
    error_at = health.last_error.observed_at if health.last_error else ""
    return not (run.outcome == state.RUN_BEHIND and run.attempted_at >= error_at)


def _failed_on(blocked_on: poison.PoisonRecord | None, health: state.PeerHealth) -> bool:
    """The last failure is the blocked event's own."""
    error = health.last_error
    return blocked_on is not None and error is not None and error.event_id == blocked_on.event_id


def _needs_operator(health: state.PeerHealth, streak: state.Backoff | None) -> bool:
    """What classify said of the last failure, as noemafed recorded it; for a failure only noema recorded,
    classify's rule applied to the reason, with the phase the record implies."""
    if streak is not None:
        return streak.needs_operator
    error = health.last_error
    if error is None:
        return False
    try:
        reason = Reason(error.reason)
    except ValueError:
        return False  # a reason from a newer noema: not known to need an operator
    if error.event_id:
        phase = Phase.REPLAY
    elif reason is Reason.INVALID_FRONTMATTER:
        phase = Phase.IDENTITY  # outside replay, noema records it only for a too-old peer manifest
    else:
        phase = Phase.EVENTS
    return classify.outcome(phase, reason).needs_operator


def _latest(first: str, second: str) -> str:
    """The later of two RFC3339 UTC texts ("" when neither); same-format texts sort as times."""
    return max(first, second)
