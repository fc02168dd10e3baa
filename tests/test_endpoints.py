"""Peer endpoints (noemafed/text/endpoints.py): what add-peer and set-peer accept, what they say otherwise, and
that a password in a URL never reaches any text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from noemafed.text.endpoints import EndpointError, check_endpoint, check_request_endpoint, redact, user_info

GOOD = [
    ("https://beta.lan:3000", "https://beta.lan:3000"),
    ("https://beta.lan:3000///", "https://beta.lan:3000"),  # noema trims trailing slashes
    ("HTTPS://beta.lan", "https://beta.lan"),  # the client compares the scheme in lower case
    ("http://127.0.0.1:1", "http://127.0.0.1:1"),
    ("https://h:65535", "https://h:65535"),
    ("http://[fd00::5]:3000", "http://[fd00::5]:3000"),
    ("https://[::1]", "https://[::1]"),
    ("https://proxy.example/noema/", "https://proxy.example/noema"),  # a sub-path before /mcp is fine
    ("https://bücher.example", "https://bücher.example"),
]


@pytest.mark.parametrize(("given_text", "stored"), GOOD)
def test_good_endpoints_are_stored_trimmed(given_text: str, stored: str) -> None:
    assert check_endpoint(given_text) == stored


HTTPS_ONLY = "noemafed reaches peers over HTTP or HTTPS only, such as https://laptop.lan:3000"
PORT_HINT = (
    "a port is a number from 1 to 65535; leave it out for the scheme's default (443 for https, 80 for http)"
)
BAD = [
    ("", "endpoint is empty", "give the peer's base URL, such as https://laptop.lan:3000"),
    ("///", "endpoint is empty", "give the peer's base URL, such as https://laptop.lan:3000"),
    ("ftp://x", 'endpoint "ftp://x" is not an http:// or https:// URL', HTTPS_ONLY),
    ("file:///etc/passwd", 'endpoint "file:///etc/passwd" is not an http:// or https:// URL', HTTPS_ONLY),
    (
        "127.0.0.1:3000",
        'endpoint "127.0.0.1:3000" has no scheme',
        "write https://127.0.0.1:3000 (or http://127.0.0.1:3000 for a peer that serves without TLS)",
    ),
    (
        "laptop.lan",
        'endpoint "laptop.lan" has no scheme',
        "write https://laptop.lan (or http://laptop.lan for a peer that serves without TLS)",
    ),
    (
        "https://beta lan:3000",
        'endpoint "https://beta lan:3000" contains whitespace or a control character',
        "check the quoting: a URL holds no spaces, tabs or line breaks",
    ),
    (
        " https://beta.lan",
        'endpoint " https://beta.lan" contains whitespace or a control character',
        "check the quoting: a URL holds no spaces, tabs or line breaks",
    ),
    (
        "https://beta.lan\n",
        'endpoint "https://beta.lan\\n" contains whitespace or a control character',
        "check the quoting: a URL holds no spaces, tabs or line breaks",
    ),
    (
        "https://be\x7fta",
        'endpoint "https://be\\x7fta" contains whitespace or a control character',
        "check the quoting: a URL holds no spaces, tabs or line breaks",
    ),
    (
        "https://user:hunter2@beta.lan:3000",
        'endpoint "https://***@beta.lan:3000" holds a user name or password',
        "noemafed authenticates with the shared key (NOEMA_MCP_KEY or access.shared_key_file), never with "
        "credentials in the URL: write https://beta.lan:3000",
    ),
    (
        "https://token@beta.lan",
        'endpoint "https://***@beta.lan" holds a user name or password',
        "noemafed authenticates with the shared key (NOEMA_MCP_KEY or access.shared_key_file), never with "
        "credentials in the URL: write https://beta.lan",
    ),
    (
        "https://",  # trimmed to "https:" first, as noema trims
        'endpoint "https:" has no host',
        "write the peer's host name or address, such as https://laptop.lan:3000",
    ),
    (
        "https:/beta.lan",
        'endpoint "https:/beta.lan" has no host',
        "write the peer's host name or address, such as https://laptop.lan:3000",
    ),
    (
        "https://:3000",
        'endpoint "https://:3000" has no host',
        "write the peer's host name or address, such as https://laptop.lan:3000",
    ),
    ("https://beta.lan:99999", 'endpoint "https://beta.lan:99999" has an invalid port "99999"', PORT_HINT),
    ("https://beta.lan:0", 'endpoint "https://beta.lan:0" has an invalid port "0"', PORT_HINT),
    ("https://beta.lan:http", 'endpoint "https://beta.lan:http" has an invalid port "http"', PORT_HINT),
    ("https://beta.lan:", 'endpoint "https://beta.lan:" has an invalid port ""', PORT_HINT),
    ("https://[::1]:70000", 'endpoint "https://[::1]:70000" has an invalid port "70000"', PORT_HINT),
    (
        "https://[::1",
        'endpoint "https://[::1" is not a valid URL: Invalid IPv6 URL',
        "give the peer's base URL, such as https://laptop.lan:3000 or https://[fd00::5]:3000",
    ),
    (
        "https://beta.lan/?token=1",
        'endpoint "https://beta.lan/?token=1" has a query or fragment',
        "noemafed appends /mcp to the base URL, so give it without ? or #: https://beta.lan",
    ),
    (
        "https://beta.lan:3000#top",
        'endpoint "https://beta.lan:3000#top" has a query or fragment',
        "noemafed appends /mcp to the base URL, so give it without ? or #: https://beta.lan:3000",
    ),
    (
        "https://beta.lan:3000/mcp",
        'endpoint "https://beta.lan:3000/mcp" ends in /mcp, but noemafed appends /mcp itself',
        "give the base URL: https://beta.lan:3000",
    ),
    (
        "https://beta.lan:3000/mcp/",
        'endpoint "https://beta.lan:3000/mcp" ends in /mcp, but noemafed appends /mcp itself',
        "give the base URL: https://beta.lan:3000",
    ),
    (
        "https://beta.lan/noema/mcp/federation",
        'endpoint "https://beta.lan/noema/mcp/federation" ends in /mcp/federation, but noemafed appends /mcp '
        "itself",
        "give the base URL: https://beta.lan/noema",
    ),
]


@pytest.mark.parametrize(("given_text", "message", "hint"), BAD)
def test_bad_endpoints_say_what_is_wrong_and_what_to_write(
    given_text: str, message: str, hint: str | None
) -> None:
    with pytest.raises(EndpointError) as caught:
        check_endpoint(given_text)
    assert caught.value.message == message
    if hint is not None:
        assert caught.value.hint == hint


@pytest.mark.parametrize(
    ("endpoint", "shown"),
    [
        ("https://u:p@h:1/x", "https://***@h:1/x"),
        ("https://u@h", "https://***@h"),
        ("https://a@b@h", "https://***@h"),
        ("u:p@h:1", "***@h:1"),
        ("u:p@h://x", "***@h://x"),  # `u:p@h` is no scheme, so the user info starts the text
        ("https://h/a@b", "https://h/a@b"),  # an @ in the path is no user info
        ("https://h?x=a@b", "https://h?x=a@b"),
        ("https://h", "https://h"),
    ],
)
def test_redact_hides_user_info_only(endpoint: str, shown: str) -> None:
    assert redact(endpoint) == shown


_SECRET = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789:%!$", min_size=6).map(lambda s: f"S3CR3T{s}")
_AROUND = st.text(alphabet=" \t:/?#[]0123456789abch.", max_size=12)


@given(
    scheme=st.sampled_from(["https://", "http://", "ftp://", "", "HTTP://"]),
    secret=_SECRET,
    host=_AROUND,
    rest=_AROUND,
)
def test_no_text_ever_shows_a_password(scheme: str, secret: str, host: str, rest: str) -> None:
    endpoint = f"{scheme}user:{secret}@{host}{rest}"
    assert secret not in redact(endpoint)
    with pytest.raises(EndpointError) as caught:  # user info is always refused
        check_endpoint(endpoint)
    assert secret not in caught.value.message
    assert secret not in caught.value.hint


def test_user_info_is_everything_before_the_authoritys_last_at() -> None:
    """What `redact` hides and transport errors are scrubbed of: a password may itself hold `@`."""
    assert user_info("http://admin:p@ss@host:3000/x@y") == "admin:p@ss"
    assert redact("http://admin:p@ss@host:3000/x@y") == "http://***@host:3000/x@y"
    assert user_info("https://host:3000") == ""
    assert redact("https://host:3000") == "https://host:3000"


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("http://[::1", 'endpoint "http://[::1" is not a valid URL: Invalid IPv6 URL'),
        ("https://[::1]:0", 'endpoint "https://[::1]:0" has an invalid port "0"'),
        ("http://h:x/", 'endpoint "http://h:x" has an invalid port "x"'),
        ("http://u:pw@h:65536", 'endpoint "http://***@h:65536" has an invalid port "65536"'),
        ("http://:80", 'endpoint "http://:80" has no host'),
        ("http://user@/", 'endpoint "http://***@" has no host'),
        ("http://h\tx", 'endpoint "http://h\\tx" contains whitespace or a control character'),
    ],
)
def test_sync_refuses_an_endpoint_no_request_can_be_made_to(endpoint: str, message: str) -> None:
    with pytest.raises(EndpointError) as info:
        check_request_endpoint(endpoint)
    assert info.value.message == message


@pytest.mark.parametrize(
    "endpoint",
    [
        *(stored for _, stored in GOOD),
        "https://beta.lan/",
        "http://u:pw@h",  # a password: the request's own failure names it (hidden), as before
        "http://u:pw@h:3000",
        "https://h:3000/mcp",  # a trailing /mcp, a query: the peer's answer says what is wrong
        "https://h:3000?x=1",
    ],
)
def test_sync_leaves_an_endpoint_a_request_can_be_made_to(endpoint: str) -> None:
    check_request_endpoint(endpoint)
