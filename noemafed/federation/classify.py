"""Poll-failure reasons, their ordered classification rules and the syncer's log texts (federation.md §4)."""

from __future__ import annotations

import errno
import http.client
import socket
import ssl
import urllib.error
from collections.abc import Iterator
from enum import StrEnum

from noemafed.errors import InvalidTraceFrontmatterError, InvalidTraceIDError, SigningKeyError
from noemafed.text.gotext import go_quote

__all__ = [
    "BRIEF_FORMAT",
    "FRIENDLY_HEADER_FORMAT",
    "FRIENDLY_HINTS",
    "FRIENDLY_REASON_LINES",
    "HEALTH_HINTS",
    "RECOVERED_FORMAT",
    "SCHEMA_WIDENING_REASONS",
    "Reason",
    "brief_message",
    "categorize_error",
    "classify_identity_error",
    "classify_network_error",
    "classify_replay_error",
    "friendly_message",
    "health_hint",
    "is_network",
    "is_schema_widening",
    "recovered_message",
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


# invalid_frontmatter is deliberately absent (a Go test pins this).
SCHEMA_WIDENING_REASONS = frozenset({Reason.INVALID_TRACE_ID, Reason.UNKNOWN_ACTION, Reason.UNKNOWN_TYPE})


def is_schema_widening(reason: str) -> bool:
    """True for the reasons a peer binary older than the ring produces, so status can say "upgrade"."""
    return reason in SCHEMA_WIDENING_REASONS


def is_network(reason: str) -> bool:
    """True for the transport family (`network_*`); auth is not part of it."""
    return reason.startswith("network_")


# ---------------------------------------------------------------------------------------------------------
# Walking Python's exception chain (the analogue of Go's errors.Unwrap / errors.Is).


def _chain(err: BaseException) -> Iterator[BaseException]:
    """Outermost first, depth first: err, URLError.reason, group members, then __cause__ or __context__."""
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
        if isinstance(current, urllib.error.URLError) and isinstance(current.reason, BaseException):
            children.append(current.reason)
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
    # Order matters where the stdlib's classes nest (RemoteDisconnected is a ConnectionResetError,
    # SSLEOFError an SSLError, HTTPError a URLError).
    if isinstance(exc, urllib.error.HTTPError):
        return Reason.AUTH if exc.code == 401 else None
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


def _network_reason_from_text(text: str) -> Reason:
    for needles, reason in _NETWORK_TEXT_RULES:
        if any(needle in text for needle in needles):
            return reason
    return Reason.OTHER


def _network_reason(err: BaseException | str) -> Reason:
    if isinstance(err, BaseException):
        for exc in _chain(err):
            typed = _typed_network_reason(exc)
            if typed is not None:
                return typed
        # Only the outer text is read, as Go reads err.Error(); a wrapper that wants its cause's text
        # matched must include it in its own message (Go's %w does).
        return _network_reason_from_text(str(err))
    return _network_reason_from_text(err)


def classify_network_error(err: BaseException | str | None) -> str:
    """Reason for a poll failure outside identity and replay: stdlib exception types, then Go's texts."""
    if err is None:
        return ""
    return _network_reason(err).value


_CATEGORY_BY_REASON: dict[Reason, str] = {
    Reason.NETWORK_REFUSED: "refused",
    Reason.NETWORK_TIMEOUT: "timeout",
    Reason.NETWORK_DNS: "dns",
    Reason.NETWORK_TLS: "tls",
    Reason.NETWORK_RESET: "reset",
    Reason.NETWORK_EOF: "eof",
}


def categorize_error(err: BaseException | str | None) -> str:
    """Short tag (`refused` ... `eof`, else `other`) that picks and de-duplicates the syncer's log message."""
    if err is None:
        return ""
    # Same rules as classify_network_error steps 1-6; auth and everything else fold into `other`.
    return _CATEGORY_BY_REASON.get(_network_reason(err), "other")


def classify_replay_error(err: BaseException | None) -> str:
    """Reason for a failed replay: sentinels or our signing key anywhere in the chain, then Go's texts."""
    if err is None:
        return ""
    # Sentinels first, through the whole chain, so the wrapper's own text does not matter;
    # when both are present the outermost one wins.
    for exc in _chain(err):
        if isinstance(exc, InvalidTraceIDError):
            return Reason.INVALID_TRACE_ID.value
        if isinstance(exc, InvalidTraceFrontmatterError):
            return Reason.INVALID_FRONTMATTER.value
        if isinstance(exc, SigningKeyError):
            # Our own key could not sign a divergence event: like a signing-key mismatch in the handshake,
            # only an operator can fix it, so it is reported the same way (exit 4).
            return Reason.IDENTITY_MISMATCH.value
    text = str(err)
    if "unknown action" in text:
        return Reason.UNKNOWN_ACTION.value
    if "unrecognized type" in text or "unknown trace type" in text:
        return Reason.UNKNOWN_TYPE.value
    return Reason.OTHER.value


def classify_identity_error(message: BaseException | str) -> str:
    """Reason for a failed cortex_identity handshake; transport errors here are `other`, as in Go."""
    text = str(message)
    if "identity mismatch" in text:
        return Reason.IDENTITY_MISMATCH.value
    if "no cortex id" in text or "pre-dates the cortex-id" in text:
        return Reason.IDENTITY_MISSING.value
    if "schema version" in text:
        # A peer manifest older than version 2 is reported as a frontmatter problem (§8.1 item 2).
        return Reason.INVALID_FRONTMATTER.value
    return Reason.OTHER.value


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
}


def health_hint(reason: str) -> str | None:
    """The status line that tells an operator what to check; None for reset, eof, other and unknown."""
    return HEALTH_HINTS.get(reason)


# ---------------------------------------------------------------------------------------------------------
# Syncer log texts (§4.4). Names go through go_quote because Go formats them with %q.

FRIENDLY_HEADER_FORMAT = "[federation] cannot reach peer {name} at {endpoint}:"
BRIEF_FORMAT = "[federation] peer {name} still unreachable ({category}); next retry in {backoff}"
RECOVERED_FORMAT = "[federation] peer {name} reachable again"

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
    lines = [FRIENDLY_HEADER_FORMAT.format(name=go_quote(peer_name), endpoint=endpoint)]
    reason_line = FRIENDLY_REASON_LINES.get(category)
    if reason_line is None:
        # `other`: the full error text stands in for the reason line and no hint block follows.
        lines.append(f"    {error_text}")
    else:
        lines.append(f"    {reason_line}")
        lines.extend(f"    - {hint}" for hint in FRIENDLY_HINTS[category])
    lines.append(f"    retrying in {backoff_text}")
    return "\n".join(lines)


def brief_message(name: str, category: str, backoff_text: str) -> str:
    """The one-line log when a peer keeps failing the same way."""
    return BRIEF_FORMAT.format(name=go_quote(name), category=category, backoff=backoff_text)


def recovered_message(name: str) -> str:
    """The log line for the first success after a failure."""
    return RECOVERED_FORMAT.format(name=go_quote(name))
