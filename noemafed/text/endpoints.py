"""Peer endpoint texts: the checks `add-peer` and `set-peer` run (and the part of them `sync` runs again), and
the redaction every printed endpoint gets.

A peer's `endpoint` is a base URL; noemafed appends `/mcp`. noema checks nothing (federation.md §6.3), so a typo
used to surface only at sync time as a network failure, and a password in the URL was printed with it.
"""

from __future__ import annotations

from urllib.parse import (
    SplitResult,
    urlsplit,
)  # urllib.parse only: no sockets, and already loaded by every command

from noemafed.text.gotext import go_quote

ENDPOINT_PATH = "/mcp"  # what the client appends (mcp.client); the text layer may not import it
REDACTED = "***"

EMPTY = "endpoint is empty"
EMPTY_HINT = "give the peer's base URL, such as https://laptop.lan:3000"
BAD_CHARACTER = "endpoint {endpoint} contains whitespace or a control character"
BAD_CHARACTER_HINT = "check the quoting: a URL holds no spaces, tabs or line breaks"
NO_SCHEME = "endpoint {endpoint} has no scheme"
NO_SCHEME_HINT = "write https://{endpoint} (or http://{endpoint} for a peer that serves without TLS)"
NOT_HTTP = "endpoint {endpoint} is not an http:// or https:// URL"
NOT_HTTP_HINT = "noemafed reaches peers over HTTP or HTTPS only, such as https://laptop.lan:3000"
UNPARSABLE = "endpoint {endpoint} is not a valid URL: {reason}"
UNPARSABLE_HINT = "give the peer's base URL, such as https://laptop.lan:3000 or https://[fd00::5]:3000"
CREDENTIALS = "endpoint {endpoint} holds a user name or password"
CREDENTIALS_HINT = (
    "noemafed authenticates with the shared key (NOEMA_MCP_KEY or access.shared_key_file), "
    "never with credentials in the URL: write {fixed}"
)
NO_HOST = "endpoint {endpoint} has no host"
NO_HOST_HINT = "write the peer's host name or address, such as https://laptop.lan:3000"
BAD_PORT = "endpoint {endpoint} has an invalid port {port}"
BAD_PORT_HINT = (
    "a port is a number from 1 to 65535; leave it out for the scheme's default (443 for https, 80 for http)"
)
QUERY_OR_FRAGMENT = "endpoint {endpoint} has a query or fragment"
QUERY_OR_FRAGMENT_HINT = "noemafed appends /mcp to the base URL, so give it without ? or #: {fixed}"
MCP_SUFFIX = "endpoint {endpoint} ends in {suffix}, but noemafed appends /mcp itself"
MCP_SUFFIX_HINT = "give the base URL: {fixed}"

# Paths noema serves MCP at; a base URL ending in one would be asked for `<it>/mcp` and answer 404.
_MCP_SUFFIXES = ("/mcp/federation", ENDPOINT_PATH)
_SCHEMES = ("http", "https")


class EndpointError(ValueError):
    """An endpoint noemafed could never reach as given; `hint` says what to write instead."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def _scheme_end(text: str) -> int:
    """Where `://` follows a scheme (RFC 3986: a letter, then letters, digits, `+`, `-`, `.`), else -1."""
    end = text.find("://")
    scheme = text[:end]
    if end <= 0 or not scheme[0].isascii() or not scheme[0].isalpha():
        return -1
    return end if all(char.isascii() and (char.isalnum() or char in "+-.") for char in scheme) else -1


def _authority_span(text: str) -> tuple[int, int]:
    """Where the authority (user info, host and port) sits: after `scheme://` if there is one, else from the
    start, so `user:pw@host` is redacted too."""
    start = _scheme_end(text)
    start = 0 if start < 0 else start + 3
    end = len(text)
    for separator in "/?#":
        found = text.find(separator, start)
        if found >= 0:
            end = min(end, found)
    return start, end


def _user_info_span(endpoint: str) -> tuple[int, int]:
    """The start of the authority and its last `@` (-1 when there is none): the user info lies between."""
    start, end = _authority_span(endpoint)
    return start, endpoint.rfind("@", start, end)


def user_info(endpoint: str) -> str:
    """The user info of an endpoint (`user:password`), or "" when it has none."""
    start, at = _user_info_span(endpoint)
    return endpoint[start:at] if at >= 0 else ""


def redact(endpoint: str) -> str:
    """The endpoint with any user info replaced by `***`, so a password in a hand-edited URL is never shown."""
    start, at = _user_info_span(endpoint)
    return endpoint if at < 0 else endpoint[:start] + REDACTED + endpoint[at:]


def _without_credentials(endpoint: str) -> str:
    start, at = _user_info_span(endpoint)
    return endpoint if at < 0 else endpoint[:start] + endpoint[at + 1 :]


def _split_port(netloc: str) -> tuple[str, str | None]:
    """Host and port text of an authority without user info; `[v6]:port` keeps its brackets in the host."""
    if netloc.startswith("["):
        close = netloc.find("]")
        rest = netloc[close + 1 :]
        return netloc[: close + 1], (rest[1:] if rest.startswith(":") else None)
    host, colon, port = netloc.rpartition(":")
    return (host, port) if colon else (netloc, None)


def check_endpoint(endpoint: str) -> str:
    """The endpoint as it is stored (trailing `/` trimmed, as noema does; the scheme in lower case), or an
    EndpointError whose texts show it with any password redacted."""
    text = endpoint.rstrip("/")
    shown = go_quote(redact(text))
    if not text:
        raise EndpointError(EMPTY, EMPTY_HINT)
    _check_characters(text, shown)
    if _scheme_end(text) < 0:
        if text.lower().startswith(("http:", "https:")):  # `https:`, `https:/host`: the scheme is there
            raise EndpointError(NO_HOST.format(endpoint=shown), NO_HOST_HINT)
        bare = _without_credentials(text)
        raise EndpointError(NO_SCHEME.format(endpoint=shown), NO_SCHEME_HINT.format(endpoint=bare))
    scheme = text[: _scheme_end(text)]
    if scheme.lower() not in _SCHEMES:
        raise EndpointError(NOT_HTTP.format(endpoint=shown), NOT_HTTP_HINT)
    text = scheme.lower() + text[len(scheme) :]
    parts = _split(text, shown)
    fixed = _without_credentials(text)
    if "@" in parts.netloc:
        raise EndpointError(CREDENTIALS.format(endpoint=shown), CREDENTIALS_HINT.format(fixed=fixed))
    _check_host_and_port(parts.netloc, shown)
    if "?" in text or "#" in text:
        base = text.split("#", 1)[0].split("?", 1)[0].rstrip("/")
        raise EndpointError(
            QUERY_OR_FRAGMENT.format(endpoint=shown), QUERY_OR_FRAGMENT_HINT.format(fixed=base)
        )
    for suffix in _MCP_SUFFIXES:
        if parts.path.endswith(suffix):
            base = text[: -len(suffix)].rstrip("/")
            raise EndpointError(
                MCP_SUFFIX.format(endpoint=shown, suffix=suffix), MCP_SUFFIX_HINT.format(fixed=base)
            )
    return text


def check_request_endpoint(endpoint: str) -> None:
    """The checks of check_endpoint that no HTTP request survives, for an `http(s)://` endpoint about to be
    used: a cortex.md edited by hand (or by noema, which checks nothing) never went through `add-peer`.

    Only what the URL parser or http.client would refuse before a byte is sent: whitespace or a control
    character, a URL that does not parse, no host, a port that is no number from 1 to 65535. A user name or
    password, a query or a trailing /mcp still make a request (the peer's answer or the network says what
    is wrong), as they do in Go; the client keeps a password out of what it prints.
    """
    text = endpoint.rstrip("/")
    shown = go_quote(redact(text))
    _check_characters(text, shown)
    authority = _split(text, shown).netloc
    _check_host_and_port(authority[authority.rfind("@") + 1 :], shown)


def _check_characters(text: str, shown: str) -> None:
    if any(char.isspace() or not char.isprintable() for char in text):
        raise EndpointError(BAD_CHARACTER.format(endpoint=shown), BAD_CHARACTER_HINT)


def _split(text: str, shown: str) -> SplitResult:
    """urlsplit's reading of the endpoint, or the error that says why it has none (`[::1` without its `]`,
    brackets around something that is no IPv6 address)."""
    try:
        return urlsplit(text)
    except ValueError as exc:
        raise EndpointError(UNPARSABLE.format(endpoint=shown, reason=exc), UNPARSABLE_HINT) from None


def _check_host_and_port(authority: str, shown: str) -> None:
    """The host and port of an authority without user info: a host, and a port of 1 to 65535 if any."""
    host, port = _split_port(authority)
    if host in ("", "[]"):
        raise EndpointError(NO_HOST.format(endpoint=shown), NO_HOST_HINT)
    if port is not None and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise EndpointError(BAD_PORT.format(endpoint=shown, port=go_quote(port)), BAD_PORT_HINT)
