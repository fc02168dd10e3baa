"""The official `mcp` SDK (2.3.0) serving a real cortex, as an independent peer in a subprocess (wire.md §9).

Run as `python tests/peers/sdk_peer.py --cortex DIR --port 0 --json-response|--sse [--key K]
[--certfile F --keyfile K] [--stateless]`; it prints the bound port on stdout once listening.
Tests use `SdkPeer`, which starts that process and stops it again.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import hmac
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

try:
    from peers import payloads
    from peers.tls import PeerAddress, PeerTLS, make_tls
except ModuleNotFoundError:  # run as a script: sys.path[0] is tests/peers, so make tests/ importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from peers import payloads
    from peers.tls import PeerAddress, PeerTLS, make_tls

UNAUTHORIZED_BODY = b'{"error":"unauthorized: NOEMA_MCP_KEY / access.shared_key_file required"}'
DEFAULT_SERVER_VERSION = "0.22.2"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# -- the server process ------------------------------------------------------------------------------------


def build_server(cortex_dir: Path, version: str, flavor: str, mode: str | None) -> Any:
    """An MCPServer with noema's three federation tools over the given cortex.

    flavor "go" refuses with ToolError (an isError result, which the SDK prefixes with
    `Error executing tool <name>: `); "rust" refuses with a JSON-RPC -32602 error, like rmcp.
    """
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.shared.exceptions import MCPError

    server = MCPServer(name="noema", version=version)
    encode = payloads.go_json if flavor == "go" else payloads.rust_json
    empty = "null" if flavor == "go" else "[]"

    def refuse(message: str) -> Exception:
        return ToolError(message) if flavor == "go" else MCPError(-32602, message)

    def info() -> payloads.CortexInfo:
        found = payloads.read_info(cortex_dir)
        return dataclasses.replace(found, mode=mode) if mode else found

    # structured_output=False: otherwise the SDK adds structuredContent, which Rust clients read first (§9.2).
    @server.tool(structured_output=False)
    def cortex_identity() -> str:
        """This cortex's id, name, manifest version and mode."""
        return encode(payloads.identity_payload(info()))

    @server.tool(structured_output=False)
    def sync_events(since: str = "", limit: int = 100) -> str:
        """Events after the exclusive cursor `since`, ascending by id."""
        if info().mode == "subscribe":
            raise refuse(payloads.SUBSCRIBE_EVENTS)
        if since and not payloads.valid_cursor(since):
            raise refuse(payloads.BAD_CURSOR)
        limit = payloads.effective_limit(limit)
        page = payloads.db_events(cortex_dir, since, limit, encode, omit_empty_data=flavor == "rust")
        return payloads.array_text([event.text for event in page], empty)

    @server.tool(structured_output=False)
    def sync_read_signal(since: str = "", limit: int = 100) -> str:
        """Usage rows this cortex owns with updated_at after `since`."""
        current = info()
        if current.mode == "subscribe":
            raise refuse(payloads.SUBSCRIBE_SIGNAL)
        rows = payloads.usage_rows(cortex_dir, current.id, since, payloads.effective_limit(limit))
        return payloads.array_text([encode(row) for row in rows], empty)

    return server


def bearer_guard(app: ASGIApp, key: str) -> ASGIApp:
    """noema's key check in front of the SDK app: exact `Bearer <key>`, digests compared, noema's 401 body."""
    expected = hashlib.sha256(f"Bearer {key}".encode()).digest()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":  # lifespan and anything else pass straight through
            given = next((value for name, value in scope["headers"] if name == b"authorization"), None)
            digest = hashlib.sha256(given or b"").digest()
            if given is None or not hmac.compare_digest(digest, expected):
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(UNAUTHORIZED_BODY)),
                ]
                await send({"type": "http.response.start", "status": 401, "headers": headers})
                await send({"type": "http.response.body", "body": UNAUTHORIZED_BODY})
                return
        await app(scope, receive, send)

    return guarded


async def serve(app: ASGIApp, port: int, certfile: str | None, keyfile: str | None) -> None:
    """Serve with uvicorn on 127.0.0.1 and print the bound port once it accepts requests."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not server.started and not task.done() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if server.started:
        print(sock.getsockname()[1], flush=True)
    await task


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cortex", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    framing = parser.add_mutually_exclusive_group(required=True)
    framing.add_argument("--json-response", dest="json_response", action="store_true")
    framing.add_argument("--sse", dest="json_response", action="store_false")
    parser.add_argument("--stateless", action="store_true")
    parser.add_argument("--key")
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    parser.add_argument("--server-version", default=DEFAULT_SERVER_VERSION)
    parser.add_argument(
        "--flavor", choices=("go", "rust"), help="refusal and encoding style; default: go for JSON"
    )
    parser.add_argument("--mode", choices=("sync", "publish", "subscribe"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    flavor = args.flavor or ("go" if args.json_response else "rust")
    payloads.read_info(args.cortex)  # like noema, refuse to start without a readable cortex
    server = build_server(args.cortex, args.server_version, flavor, args.mode)
    # host=127.0.0.1 turns on the SDK's DNS-rebinding guard: Host must be 127.0.0.1:*, localhost:* or [::1]:*.
    app = server.streamable_http_app(
        host="127.0.0.1", json_response=args.json_response, stateless_http=args.stateless
    )
    asgi: ASGIApp = bearer_guard(app, args.key) if args.key is not None else app
    asyncio.run(serve(asgi, args.port, args.certfile, args.keyfile))


# -- the test-side handle -----------------------------------------------------------------------------------


class SdkPeer(PeerAddress):
    """Start `sdk_peer.py` for a cortex, wait until it listens, and stop it on exit."""

    def __init__(
        self,
        cortex_dir: Path,
        json_response: bool,
        key: str | None = None,
        tls: PeerTLS | bool | None = None,
        *,
        stateless: bool = False,
        flavor: str | None = None,
        mode: str | None = None,
        server_version: str = DEFAULT_SERVER_VERSION,
    ) -> None:
        self.cortex_dir = Path(cortex_dir)
        self.json_response = json_response
        self.key = key
        self.tls: PeerTLS | None = make_tls() if tls is True else (tls or None)
        self.stateless = stateless
        self.flavor = flavor
        self.mode = mode
        self.server_version = server_version
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def command(self, workdir: Path) -> list[str]:
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--cortex",
            str(self.cortex_dir),
            "--port",
            "0",
        ]
        argv += [
            "--json-response" if self.json_response else "--sse",
            "--server-version",
            self.server_version,
        ]
        if self.stateless:
            argv.append("--stateless")
        if self.key is not None:
            argv += ["--key", self.key]
        if self.flavor:
            argv += ["--flavor", self.flavor]
        if self.mode:
            argv += ["--mode", self.mode]
        if self.tls is not None:
            certfile, keyfile = self.tls.write_server_files(workdir)
            argv += ["--certfile", str(certfile), "--keyfile", str(keyfile)]
        return argv

    def start(self) -> SdkPeer:
        self._tmp = tempfile.TemporaryDirectory(prefix="sdk-peer-")
        workdir = Path(self._tmp.name)
        stderr = (workdir / "stderr.log").open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            env.pop(name, None)
        self.process = subprocess.Popen(self.command(workdir), stdout=subprocess.PIPE, stderr=stderr, env=env)
        stderr.close()
        try:
            self.port = self._read_port(workdir / "stderr.log")
        except BaseException:
            self.stop()
            raise
        return self

    def _read_port(self, stderr_log: Path) -> int:
        """Wait (bounded) for the one line the server prints when it listens."""
        assert self.process is not None
        assert self.process.stdout is not None
        buffer = b""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer and time.monotonic() < deadline:
                if selector.select(timeout=0.1):
                    chunk = os.read(self.process.stdout.fileno(), 1024)
                    if not chunk:
                        break  # the process exited
                    buffer += chunk
        line = buffer.split(b"\n", 1)[0].strip()
        if not line.isdigit():
            raise RuntimeError(f"sdk peer did not start: {stderr_log.read_text(errors='replace')[-2000:]}")
        return int(line)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
            if process.stdout is not None:
                process.stdout.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> SdkPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()
