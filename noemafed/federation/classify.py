"""Poll-failure classification (federation.md §4): which reason a failure records, whether it needs an
operator and which exit code it gives; plus the status hints per reason."""

from __future__ import annotations

import errno
import functools
import re
import sqlite3
from collections.abc import Iterator
from enum import StrEnum

from noemafed.errors import ExitCode, InvalidTraceFrontmatterError, InvalidTraceIDError, SigningKeyError
from noemafed.records import Record

__all__ = [
    "HEALTH_HINTS",
    "SCHEMA_WIDENING_REASONS",
    "IdentityFailure",
    "Outcome",
    "Phase",
    "Reason",
    "TlsFailure",
    "categorize_error",
    "classify_network_error",
    "classify_replay_error",
    "health_hint",
    "is_local_storage_failure",
    "is_schema_widening",
    "network_cause",
    "outcome",
]


class Reason(StrEnum):
    """The persisted `last_error.reason` values; stable because peers' health records store them."""

    INVALID_TRACE_ID = "invalid_trace_id"
    INVALID_FRONTMATTER = "invalid_frontmatter"
    UNKNOWN_ACTION = "unknown_action"
    UNKNOWN_TYPE = "unknown_type"
    NETWORK_REFUSED = "network_refused"
    NETWORK_TIMEOUT = "network_timeout"
    NETWORK_DNS = "network_dns"
    NETWORK_TLS = "network_tls"
    NETWORK_RESET = "network_reset"
    NETWORK_EOF = "network_eof"
    AUTH = "auth"
    IDENTITY_MISMATCH = "identity_mismatch"
    IDENTITY_MISSING = "identity_missing"
    OTHER = "other"
    # noemafed's own, where noema has no reason (docs/compatibility.md):
    INVALID_EVENT_ID = (
        "invalid_event_id"  # an id we must not store and serve on (not a ULID, far in the future)
    )
    LOCAL_STORAGE = "local_storage"  # this host's database or disk failed (locked, full, read-only)


class Phase(StrEnum):
    """Where a poll failed; the values are the `phase` field of `sync --once --json`."""

    OPEN = "open"  # opening the local database for the poll
    CONNECT = "connect"  # building the HTTP client
    INITIALIZE = "initialize"
    IDENTITY = "identity"
    EVENTS = "events"
    REPLAY = "replay"
    USAGE = "usage"  # merging the peer's usage counters (only a local storage failure fails the poll here)
    INTERNAL = "internal"  # a bug in noemafed, caught so the other peers still sync


class IdentityFailure(StrEnum):
    """Which check of the `cortex_identity` handshake refused the peer (federation.md §3.4)."""

    REFUSED = "refused"  # the tool answered with an error
    EMPTY = "empty"
    PARSE = "parse"
    VERSION = "version"
    NO_ID = "no_id"
    OWN_ID = "own_id"
    MISMATCH = "mismatch"
    SIGNING = "signing"
    DB = "db"


class TlsFailure(StrEnum):
    """A TLS failure the transport reasons do not tell apart from a flaky handshake."""

    UNTRUSTED = "untrusted"  # the peer's certificate fails verification against the configured trust


_IDENTITY_REASONS: dict[IdentityFailure, Reason] = {
    IdentityFailure.REFUSED: Reason.OTHER,
    IdentityFailure.EMPTY: Reason.IDENTITY_MISSING,
    IdentityFailure.PARSE: Reason.OTHER,
    IdentityFailure.VERSION: Reason.INVALID_FRONTMATTER,  # noema's reason for a too-old peer manifest
    IdentityFailure.NO_ID: Reason.IDENTITY_MISSING,
    IdentityFailure.OWN_ID: Reason.IDENTITY_MISMATCH,
    IdentityFailure.MISMATCH: Reason.IDENTITY_MISMATCH,
    IdentityFailure.SIGNING: Reason.IDENTITY_MISMATCH,  # Go says "other"; Rust and noemafed: an operator's job
    IdentityFailure.DB: Reason.OTHER,
}

# invalid_frontmatter is deliberately absent (a Go test pins this).
SCHEMA_WIDENING_REASONS = frozenset({Reason.INVALID_TRACE_ID, Reason.UNKNOWN_ACTION, Reason.UNKNOWN_TYPE})

# Reasons that waiting never heals, whatever the phase: a wrong key or a peer that is not the one pinned.
_OPERATOR_REASONS = frozenset(
    {Reason.AUTH, Reason.IDENTITY_MISMATCH, Reason.IDENTITY_MISSING, Reason.INVALID_EVENT_ID}
)


def is_schema_widening(reason: str) -> bool:
    """True for the reasons a peer binary older than the ring produces, so status can say "upgrade"."""
    return reason in SCHEMA_WIDENING_REASONS


class Outcome(Record):
    """What a failed poll records in health and what it makes `sync` exit with."""

    reason: Reason
    needs_operator: bool
    exit_code: ExitCode


def outcome(phase: Phase, cause: Reason | IdentityFailure | TlsFailure) -> Outcome:
    """The one rule for a failure: its health reason, and exit 4 when only an operator can fix it, else 3."""
    if isinstance(cause, TlsFailure):
        reason = Reason.NETWORK_TLS  # noema's reason; what makes it an operator's is the rejected certificate
    else:
        reason = _IDENTITY_REASONS[cause] if isinstance(cause, IdentityFailure) else cause
    needs_operator = (
        reason in _OPERATOR_REASONS
        # A certificate the configured trust rejects (unknown CA, wrong name, expired) never heals by waiting.
        or cause is TlsFailure.UNTRUSTED
        # The peer's entry in cortex.md cannot even become a request: waiting never fixes a configuration.
        or phase is Phase.CONNECT
        # A too-old peer manifest: its operator must migrate it. In replay the same reason is one bad trace.
        or (phase is Phase.IDENTITY and reason is Reason.INVALID_FRONTMATTER)
        # A peer behind the ring's schema pins the cursor until it is upgraded.
        or (phase is Phase.REPLAY and is_schema_widening(reason))
    )
    exit_code = ExitCode.PEER_NEEDS_OPERATOR if needs_operator else ExitCode.PEER_TRANSIENT
    return Outcome(reason, needs_operator, exit_code)


# ---------------------------------------------------------------------------------------------------------
# Walking Python's exception chain (the analogue of Go's errors.Unwrap / errors.Is).


def chain(err: BaseException) -> Iterator[BaseException]:
    """Every exception behind `err`, outermost first, depth first: err, group members, then __cause__ or an
    unsuppressed __context__ (as a traceback shows them)."""
    # Invariant: each exception is yielded once, so cyclic __cause__/__context__ links terminate.
    seen: set[int] = set()
    stack: list[BaseException] = [err]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        children: list[BaseException] = []
        if isinstance(current, BaseExceptionGroup):
            children.extend(current.exceptions)
        # Follow the chain the way a traceback shows it: an explicit cause, else an unsuppressed context.
        if current.__cause__ is not None:
            children.append(current.__cause__)
        elif current.__context__ is not None and not current.__suppress_context__:
            children.append(current.__context__)
        stack.extend(reversed(children))


def _typed_network_reason(exc: BaseException) -> Reason | None:
    """The reason one stdlib transport exception stands for, or None when its type says nothing."""
    # Order matters where the stdlib's classes nest (RemoteDisconnected is a ConnectionResetError, SSLEOFError an
    # SSLError). Loaded here, with a failure to classify: `status` never needs the transport modules.
    import http.client  # noqa: PLC0415
    import socket  # noqa: PLC0415
    import ssl  # noqa: PLC0415

    from noemafed.mcp.client import HttpStatusError  # noqa: PLC0415

    if isinstance(exc, HttpStatusError):
        return Reason.AUTH if exc.status == 401 else None
    if isinstance(exc, (http.client.RemoteDisconnected, http.client.IncompleteRead)):
        # Go reports a server that closes without (a whole) answer as EOF / unexpected EOF.
        return Reason.NETWORK_EOF
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        # The peer closed the TLS stream; Go surfaces a closed connection as io.EOF, not a tls: error.
        return Reason.NETWORK_EOF
    if isinstance(exc, ssl.SSLError):
        # Includes SSLCertVerificationError (== ssl.CertificateError).
        return Reason.NETWORK_TLS
    if isinstance(exc, ConnectionRefusedError):
        return Reason.NETWORK_REFUSED
    if isinstance(exc, TimeoutError):
        # socket.timeout is an alias of TimeoutError since Python 3.10.
        return Reason.NETWORK_TIMEOUT
    if isinstance(exc, (socket.gaierror, socket.herror)):
        return Reason.NETWORK_DNS
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return Reason.NETWORK_RESET
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        # Go counts "no route to host" as DNS; unreachable networks are grouped with it.
        return Reason.NETWORK_DNS
    return None


# Go's ClassifyNetworkError substring rules, in order; first match wins; case-sensitive.
_NETWORK_TEXT_RULES: tuple[tuple[tuple[str, ...], Reason], ...] = (
    (("connection refused",), Reason.NETWORK_REFUSED),
    (("i/o timeout", "context deadline exceeded", "deadline exceeded"), Reason.NETWORK_TIMEOUT),
    (("no such host", "server misbehaving", "no route to host"), Reason.NETWORK_DNS),
    (("x509:", "tls:", "certificate"), Reason.NETWORK_TLS),
    (("connection reset",), Reason.NETWORK_RESET),
    (("EOF",), Reason.NETWORK_EOF),
    # After EOF on purpose: a 401 whose text also says EOF is network_eof (§8.1 item 3).
    (("401", "Unauthorized"), Reason.AUTH),
)


# A URL quoted in a message (ours and Go's: `Post "http://host:34010/mcp": ...`): its port or host name must not
# match a rule (port 34010 holds `401`, a host may hold `EOF`), so the rules read the text without it. Compiled on
# first use: 0.1 ms that status, which classifies nothing, would pay at every start.
@functools.cache
def _url() -> re.Pattern[str]:
    return re.compile(r"https?://[^\s\"']*")


def _network_reason_from_text(text: str) -> Reason:
    text = _url().sub("<url>", text)
    for needles, reason in _NETWORK_TEXT_RULES:
        if any(needle in text for needle in needles):
            return reason
    return Reason.OTHER


def network_cause(err: BaseException) -> Reason | TlsFailure:
    """classify_network_error, except that a certificate the configured trust rejects is told apart."""
    import ssl  # noqa: PLC0415 (see chain)

    if any(isinstance(exc, ssl.SSLCertVerificationError) for exc in chain(err)):
        return TlsFailure.UNTRUSTED
    return classify_network_error(err)


def classify_network_error(err: BaseException | str) -> Reason:
    """Reason for a failed call to a peer: stdlib exception types, then Go's texts."""
    if isinstance(err, BaseException):
        for exc in chain(err):
            typed = _typed_network_reason(exc)
            if typed is not None:
                return typed
        # Only the outer text is read, as Go reads err.Error(); a wrapper that wants its cause's text
        # matched must include it in its own message (Go's %w does).
        return _network_reason_from_text(str(err))
    return _network_reason_from_text(err)


_CATEGORY_BY_REASON: dict[Reason, str] = {
    Reason.NETWORK_REFUSED: "refused",
    Reason.NETWORK_TIMEOUT: "timeout",
    Reason.NETWORK_DNS: "dns",
    Reason.NETWORK_TLS: "tls",
    Reason.NETWORK_RESET: "reset",
    Reason.NETWORK_EOF: "eof",
}


def categorize_error(err: BaseException | str) -> str:
    """Short tag (`refused` ... `eof`, else `other`) that picks and de-duplicates the daemon's log message."""
    # Same rules as classify_network_error steps 1-6; auth and everything else fold into `other`.
    return _CATEGORY_BY_REASON.get(classify_network_error(err), "other")


def classify_replay_error(err: BaseException) -> Reason:
    """Reason for a failed replay: sentinels or our signing key anywhere in the chain, then Go's texts."""
    # Sentinels first, through the whole chain, so the wrapper's own text does not matter;
    # when both are present the outermost one wins.
    for exc in chain(err):
        if isinstance(exc, InvalidTraceIDError):
            return Reason.INVALID_TRACE_ID
        if isinstance(exc, InvalidTraceFrontmatterError):
            return Reason.INVALID_FRONTMATTER
        if isinstance(exc, SigningKeyError):
            # Our own key could not sign a divergence event: like a signing-key mismatch in the handshake,
            # only an operator can fix it, so it is reported the same way (exit 4).
            return Reason.IDENTITY_MISMATCH
    if is_local_storage_failure(err):
        return Reason.LOCAL_STORAGE
    text = str(err)
    if "unknown action" in text:
        return Reason.UNKNOWN_ACTION
    if "unrecognized type" in text or "unknown trace type" in text:
        return Reason.UNKNOWN_TYPE
    return Reason.OTHER


# What this host's disk and database say when they, not the peer's event, are the problem.
_LOCAL_STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
)


def is_local_storage_failure(err: BaseException) -> bool:
    """A locked, full, read-only or failing database or disk anywhere in the chain (not a constraint a peer's
    event broke: that is the event's fault)."""
    for exc in chain(err):
        if isinstance(exc, sqlite3.IntegrityError):
            return False
        if isinstance(exc, sqlite3.Error) or (
            isinstance(exc, OSError) and exc.errno in _LOCAL_STORAGE_ERRNOS
        ):
            return True
    return False


# ---------------------------------------------------------------------------------------------------------
# `federation status` hints (§4.5).

_UPGRADE_HINT = "likely cause: peer binary predates schema changes elsewhere on the ring; upgrade the peer"

HEALTH_HINTS: dict[str, str] = {
    Reason.INVALID_TRACE_ID: _UPGRADE_HINT,
    Reason.UNKNOWN_ACTION: _UPGRADE_HINT,
    Reason.UNKNOWN_TYPE: _UPGRADE_HINT,
    Reason.INVALID_FRONTMATTER: "likely cause: peer received an event whose trace shape it doesn't recognise",
    Reason.NETWORK_REFUSED: (
        "likely cause: nothing listening on the peer's endpoint; is `noema serve` running?"
    ),
    Reason.NETWORK_TIMEOUT: "likely cause: peer unreachable on the network",
    Reason.NETWORK_DNS: "likely cause: hostname resolution failed",
    Reason.NETWORK_TLS: "likely cause: TLS handshake failed \u2014 check cert validity and CA trust",
    Reason.AUTH: "likely cause: shared-key mismatch between local and peer",
    Reason.IDENTITY_MISMATCH: (
        "likely cause: peer cortex id changed \u2014 `noema federation reset-peer` after verifying"
    ),
    Reason.IDENTITY_MISSING: "likely cause: peer predates cortex-id federation handshake; upgrade the peer",
    # noemafed's own reasons, worded like noema's.
    Reason.INVALID_EVENT_ID: (
        "likely cause: the peer serves an event id that is not a ULID or lies in the future; "
        "check both hosts' clocks and the peer's software"
    ),
    Reason.LOCAL_STORAGE: (
        "likely cause: this host's database is locked, full or read-only — check disk space and other writers"
    ),
}


def health_hint(reason: str) -> str | None:
    """The status line that tells an operator what to check; None for reset, eof, other and unknown."""
    return HEALTH_HINTS.get(reason)


_CERT_HAS_EXPIRED = 10  # OpenSSL's X509_V_ERR_CERT_HAS_EXPIRED


def certificate_expired(err: BaseException) -> bool:
    """The peer's certificate failed verification because it has expired (doctor says so by name)."""
    import ssl  # noqa: PLC0415 (see chain)

    return any(
        isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_code == _CERT_HAS_EXPIRED
        for exc in chain(err)
    )
