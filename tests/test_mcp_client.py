"""The MCP client's failures against a real misbehaving peer: each says what went wrong in its own words."""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from peers import hostile_peer
from peers.stdlib_peer import StdlibPeer
from sync_helpers import source

from noemafed.mcp import client
from noemafed.mcp.client import HttpStatusError, McpSession, PeerTarget, ToolRefusal, WireError


@pytest.fixture
def cortex(tmp_path: Path) -> Path:
    return source(tmp_path, count=2)


def _initialize_fails(cortex: Path, **knobs: Any) -> WireError:
    with StdlibPeer(cortex, "go", **knobs) as peer, pytest.raises(WireError) as info:
        McpSession(PeerTarget("p", peer.endpoint)).initialize()
    return info.value


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("[1]", client.NOT_JSONRPC.format(what="initialize")),
        (
            '{"jsonrpc":"2.0","id":7,"result":{}}',
            client.WRONG_ID.format(what="initialize", got=7, expected=1),
        ),
        ('{"jsonrpc":"2.0","id":1,"result":[]}', client.NO_RESULT.format(what="initialize")),
        (
            "<html>",
            client.NOT_JSON.format(what="initialize", error="Expecting value: line 1 column 1 (char 0)"),
        ),
    ],
)
def test_an_answer_that_is_not_a_result_is_named(cortex: Path, answer: str, expected: str) -> None:
    error = _initialize_fails(cortex, status_override=(200, answer, "application/json"))
    assert type(error) is WireError
    assert str(error) == expected


def test_an_http_status_carries_its_reason_and_body(cortex: Path) -> None:
    error = _initialize_fails(cortex, status_override=(503, "busy"))
    assert isinstance(error, HttpStatusError)
    assert str(error) == client.HTTP_STATUS.format(status=503, reason="Service Unavailable", detail=": busy")


def test_a_redirect_is_refused_not_followed(cortex: Path) -> None:
    error = _initialize_fails(cortex, redirect_to="http://127.0.0.1:9/mcp")
    assert str(error) == client.HTTP_STATUS.format(
        status=307, reason=client.REDIRECT_REFUSED.format(url="http://127.0.0.1:9/mcp"), detail=""
    )


def test_an_unknown_protocol_version_is_refused(cortex: Path) -> None:
    error = _initialize_fails(cortex, protocol_version="1999-01-01")
    assert str(error) == client.UNSUPPORTED_VERSION.format(version="1999-01-01")


def test_only_http_urls_reach_urllib() -> None:
    with pytest.raises(WireError) as info:
        McpSession(PeerTarget("p", "file:///etc"))
    assert str(info.value) == client.NOT_HTTP_URL.format(peer="p", endpoint="file:///etc")


@pytest.mark.parametrize("flavor", ["go", "rust"])
def test_a_refusal_is_its_message_in_either_shape(cortex: Path, flavor: str) -> None:
    """Go refuses with an isError result, Rust with a JSON-RPC error: the syncer sees the same ToolRefusal."""
    with StdlibPeer(cortex, flavor, identity_error="no identity here") as peer:  # type: ignore[arg-type]
        session = McpSession(PeerTarget("p", peer.endpoint))
        session.initialize()
        with pytest.raises(ToolRefusal) as info:
            session.call_tool("cortex_identity", {})
    assert str(info.value) == "no identity here"


# ---- bodies: read into one buffer, decoded as json.loads decodes bytes ------------------------------------


def _chunked(body: bytes, size: int) -> bytes:
    pieces = [body[at : at + size] for at in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def _reencoded(how: str) -> hostile_peer.Answer:
    """The honest sync_events answer, chunked (no Content-Length) or in another encoding json.loads accepts."""

    def answer(sock: Any, forwarded: hostile_peer.Forwarded) -> None:
        body = forwarded.body
        if how == "chunked":
            sock.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                b"Connection: close\r\n\r\n" + _chunked(body, 997)
            )
            return
        text = body.decode("utf-8")
        encoded = codecs.BOM_UTF8 + body if how == "utf-8-sig" else text.encode(how)
        hostile_peer.with_body(encoded)(sock, forwarded)

    return answer


@pytest.fixture(scope="module")
def hundred(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A page of some 90 kB: several reads, and many chunks when chunked. Made once: it takes a second."""
    return source(tmp_path_factory.mktemp("hundred"), count=100)


@pytest.mark.parametrize("how", ["chunked", "utf-8-sig", "utf-16", "utf-16-le", "utf-32-be"])
def test_an_answer_reads_the_same_however_it_is_framed_or_encoded(hundred: Path, how: str) -> None:
    src = hundred
    arguments = {"limit": 1000}
    with StdlibPeer(src) as backend:
        honest = McpSession(PeerTarget("p", backend.endpoint))
        honest.initialize()
        expected = honest.call_tool("sync_events", arguments, client.SYNC_EVENTS_BUDGET)
        with hostile_peer.HostilePeer(backend, "sync_events", _reencoded(how)) as peer:
            session = McpSession(PeerTarget("p", peer.endpoint))
            session.initialize()
            text = session.call_tool("sync_events", arguments, client.SYNC_EVENTS_BUDGET)
    assert len(expected) > 65_536  # more than one read (client._CHUNK)
    assert text == expected


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=st.characters(blacklist_categories=("Cs",))),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
_ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]


def _loads_outcome(parse: Any, body: Any) -> tuple[str, str]:
    try:
        return ("value", repr(parse(body)))
    except WireError as exc:
        return ("error", str(exc))
    except (ValueError, RecursionError) as exc:
        return ("error", client.NOT_JSON.format(what="x", error=exc))


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=12),
        st.builds(
            lambda value, encoding: json.dumps(value, ensure_ascii=False).encode(encoding),
            _JSON_VALUES,
            st.sampled_from(_ENCODINGS),
        ),
    )
)
@example(b"\xef\xbb\xbf[1]")
@example(b"\xef\xbb\xbf\xef\xbb\xbf[1]")  # a BOM left after decoding: json.loads(bytes) does not name it
@example(b'"\xed\xa0\x80"')  # an encoded lone surrogate: json.loads lets it through (surrogatepass)
@example(b"[\xff]")
def test_a_body_parses_as_json_loads_parses_its_bytes(body: bytes) -> None:
    buffer = bytearray(body)
    assert _loads_outcome(lambda b: client._parse_body(b, "x"), buffer) == _loads_outcome(json.loads, body)
    assert buffer == bytearray()  # emptied, so the caller's buffer is freed before the JSON is parsed


@settings(max_examples=300, deadline=None)
@given(
    st.builds(
        lambda prefix, value: prefix + json.dumps(value, ensure_ascii=False),
        st.sampled_from(["", "\ufeff", "\x00", " \x00", "\x00\x00", "\ufeff\ufeff"]),
        _JSON_VALUES,
    )
)
@example("\ufeff{}")  # json.loads takes the BOM of bytes, not of a str
@example("\x00")
def test_sse_data_parses_as_its_utf8_bytes_would(data: str) -> None:
    def parse_bytes(text: str) -> Any:
        return client._parse_json(text.encode("utf-8"), "x")

    def parse_data(text: str) -> Any:
        return client._parse_event_data(text, "x")

    assert _loads_outcome(parse_data, data) == _loads_outcome(parse_bytes, data)
