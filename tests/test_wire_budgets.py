"""The client's byte budgets at their edges, over JSON (Go) and SSE (Rust), against real peers on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from peers.stdlib_peer import StdlibPeer
from sync_helpers import source

from noemafed.mcp import client
from noemafed.mcp.client import McpSession, PeerTarget, ResponseTooLarge

TOOL_CALL_ID = 2  # initialize is request 1; the notification has no id


@pytest.fixture(scope="module")
def cortex(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return source(tmp_path_factory.mktemp("budgets"), count=1)


def _answer(text: str) -> str:
    message = {"jsonrpc": "2.0", "id": TOOL_CALL_ID, "result": {"content": [{"type": "text", "text": text}]}}
    return json.dumps(message, separators=(",", ":"))


def _json_body(size: int) -> tuple[bytes, str]:
    """A JSON-RPC answer of exactly `size` bytes, and the tool text it carries."""
    filler = size - len(_answer(""))
    text = "x" * filler
    body = _answer(text).encode()
    assert len(body) == size
    return body, text


def _sse_body(size: int) -> tuple[bytes, str]:
    """An SSE stream of exactly `size` bytes: rmcp's priming event, a keep-alive, then the answer."""
    head = b"data: \nid: 0\nretry: 3000\n\n:\n\ndata: "
    tail = b"\nid: 1/0\n\n"
    filler = size - len(head) - len(tail) - len(_answer(""))
    text = "x" * filler
    body = head + _answer(text).encode() + tail
    assert len(body) == size
    return body, text


def _call(peer: StdlibPeer, budget: int) -> str:
    session = McpSession(PeerTarget("p", peer.endpoint))
    session.initialize()
    return session.call_tool("sync_events", {}, budget)


# One chunk, and several (the client reads at most 64 KiB at a time), so the last chunk is the one that
# crosses the budget.
BUDGETS = [1000, 3 * 64 * 1024 + 17]


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize(
    ("media", "build"),
    [("application/json", _json_body), ("text/event-stream", _sse_body)],
    ids=["json", "sse"],
)
def test_the_budget_edges(cortex: Path, budget: int, media: str, build: Any) -> None:
    """Bug b: the byte budget checked one chunk late (or one byte early). A body of exactly `budget` bytes is
    read whole; one byte more is refused, even when that byte arrives in the last chunk before EOF."""
    body, text = build(budget)
    with StdlibPeer(cortex, "go", misbehave_on="sync_events", status_override=(200, body, media)) as peer:
        assert _call(peer, budget) == text
        body, _ = build(budget + 1)
        peer.knobs.status_override = (200, body, media)
        with pytest.raises(ResponseTooLarge) as info:
            _call(peer, budget)
    assert str(info.value) == client.TOO_LARGE.format(what="sync_events", budget=budget)


@pytest.mark.parametrize(
    "knobs",
    [
        {"huge_response_bytes": 300_000},
        # A peer that streams keep-alives long before (or instead of) its answer spends the same budget.
        {"keepalives": 60_000},
    ],
    ids=["huge-answer", "keepalive-flood"],
)
def test_an_sse_answer_over_its_budget_is_refused(cortex: Path, knobs: dict[str, int]) -> None:
    """Bug a: the SSE path ignoring the byte budget, so a Rust-shaped peer could send an answer of any size."""
    budget = 100_000
    with StdlibPeer(cortex, "rust", **knobs) as peer, pytest.raises(ResponseTooLarge) as info:
        _call(peer, budget)
    assert str(info.value) == client.TOO_LARGE.format(what="sync_events", budget=budget)
