"""The MCP client's failures against a real misbehaving peer: each says what went wrong in its own words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
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
