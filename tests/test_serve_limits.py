"""`serve`'s page size rule (wire.md P13) as our own client sees it, against the real server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sync_helpers import events, source

from noemafed.logs import SILENT
from noemafed.mcp.client import McpSession, PeerTarget
from noemafed.mcp.http import ServeConfig, make_server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """A cortex with more than 100 events (and fewer than 1000), served; its endpoint and its event ids."""
    cortex = source(tmp_path_factory.mktemp("limits"), count=70)
    ids = [row[0] for row in events(cortex)]
    assert 101 < len(ids) < 1000
    server = make_server(ServeConfig(cortex_dir=cortex, port=0), SILENT)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", ids
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def page_ids(endpoint: str, arguments: dict[str, Any]) -> list[str]:
    with McpSession(PeerTarget("serve", endpoint)) as session:
        session.initialize()
        return [event["id"] for event in json.loads(session.call_tool("sync_events", arguments))]


@pytest.mark.parametrize(
    ("arguments", "count"),
    [
        ({"limit": 5000}, 100),
        ({"limit": 1001}, 100),
        ({"limit": 0}, 100),
        ({"limit": -1}, 100),
        ({}, 100),
        ({"limit": 1000}, None),  # None: every event, the cortex holds fewer than 1000
        ({"limit": 101}, 101),
        ({"limit": 1}, 1),
    ],
    ids=["5000", "1001", "0", "-1", "missing", "1000", "101", "1"],
)
def test_a_limit_outside_1_to_1000_means_100(
    served: tuple[str, list[str]], arguments: dict[str, Any], count: int | None
) -> None:
    """Bug g: `serve` clamping a limit over 1000 to 1000 instead of 100. noema replaces any limit outside
    1..1000 by the default 100 (wire.md P13); a client paging until a short page relies on it."""
    endpoint, ids = served
    assert page_ids(endpoint, arguments) == ids[:count]
