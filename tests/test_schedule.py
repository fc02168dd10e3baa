"""The daemon's log texts: golden friendly, brief and recovered messages (federation.md §4.4)."""

from __future__ import annotations

import pytest

from noemafed.federation import schedule

# ----- the daemon's failure texts (§4.4) -------------------------------------------------------------

ENDPOINT = "http://10.0.0.2:8765"

FRIENDLY_GOLDEN = {
    "refused": (
        '[federation] cannot reach peer "beta" at http://10.0.0.2:8765:\n'
        "    the host is reachable but nothing is listening on that port\n"
        "    - is `noema serve --transport http` running on the peer?\n"
        "    - does the peer's --host/--port match the endpoint above?\n"
        "    - is a firewall on the peer blocking the port?\n"
        "    retrying in 1m0s"
    ),
    "timeout": (
        '[federation] cannot reach peer "beta" at http://10.0.0.2:8765:\n'
        "    the connection attempt timed out\n"
        "    - is the peer host online and reachable on the network?\n"
        "    - check for firewalls, VPNs, or routing issues between hosts\n"
        "    retrying in 1m0s"
    ),
    "dns": (
        '[federation] cannot reach peer "beta" at http://10.0.0.2:8765:\n'
        "    the peer's hostname could not be resolved\n"
        "    - is the hostname spelled correctly in cortex.md?\n"
        "    - is your DNS resolver working? try `dig` or `nslookup` against it\n"
        "    - if it's a LAN-only name, is mDNS / your hosts file set up?\n"
        "    retrying in 1m0s"
    ),
    "tls": (
        '[federation] cannot reach peer "beta" at http://10.0.0.2:8765:\n'
        "    the TLS handshake failed\n"
        "    - if the peer uses a self-signed cert, add `ca: /path/to/ca.pem` under that peer in cortex.md\n"
        "    - does the cert's SAN match the endpoint hostname?\n"
        "    - is the cert expired or signed by an unknown CA?\n"
        "    retrying in 1m0s"
    ),
    "reset": (
        '[federation] cannot reach peer "beta" at http://10.0.0.2:8765:\n'
        "    the connection was reset by the peer\n"
        "    - the peer may be restarting; will retry automatically\n"
        "    - check the peer's logs for crashes or panics\n"
        "    retrying in 1m0s"
    ),
    "eof": (
        '[federation] cannot reach peer "beta" at http://10.0.0.2:8765:\n'
        "    the peer closed the connection unexpectedly\n"
        "    - the peer may not be a Noema MCP server, or may be on an incompatible version\n"
        "    - check the peer's logs for startup errors\n"
        "    retrying in 1m0s"
    ),
    "other": (
        '[federation] cannot reach peer "beta" at http://10.0.0.2:8765:\n'
        "    replay event 01X: invalid trace ID\n"
        "    retrying in 1m0s"
    ),
}


@pytest.mark.parametrize("category", sorted(FRIENDLY_GOLDEN))
def test_friendly_message_golden(category: str) -> None:
    text = schedule.friendly_message("beta", ENDPOINT, category, "replay event 01X: invalid trace ID", "1m0s")
    assert text == FRIENDLY_GOLDEN[category]


def test_friendly_message_unknown_category_is_other() -> None:
    text = schedule.friendly_message("beta", ENDPOINT, "auth", "401 Unauthorized", "5m0s")
    assert text == (
        '[federation] cannot reach peer "beta" at http://10.0.0.2:8765:\n'
        "    401 Unauthorized\n"
        "    retrying in 5m0s"
    )


def test_friendly_message_quotes_name_like_go() -> None:
    text = schedule.friendly_message('we"ird', ENDPOINT, "refused", "x", "30s")
    assert text.splitlines()[0] == '[federation] cannot reach peer "we\\"ird" at http://10.0.0.2:8765:'


def test_brief_and_recovered_messages() -> None:
    assert (
        schedule.brief_message("beta", "refused", "2m0s")
        == '[federation] peer "beta" still unreachable (refused); next retry in 2m0s'
    )
    assert schedule.recovered_message("beta") == '[federation] peer "beta" reachable again'
