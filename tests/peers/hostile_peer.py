"""A peer that misbehaves below HTTP: a socket-level proxy in front of a real StdlibPeer.

Every request is forwarded to the honest peer behind it, except the one named by `on` (a tool name or a JSON-RPC
method), for which `answer` writes whatever bytes it likes to the client's socket: a status line no server would
send, a response dripped one byte a second, keep-alives that never end, a body cut short. This is what
http.server cannot produce, and what a hostile host on the ring can.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from peers.stdlib_peer import StdlibPeer
from peers.tls import PeerAddress

Answer = Callable[[socket.socket, "Forwarded"], None]


class Forwarded:
    """What the honest peer would have answered; an `answer` may send it, bend it or ignore it."""

    def __init__(
        self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes, request: bytes = b""
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.request = request  # the client's request body, so an answer can echo its JSON-RPC id

    def head(self, body_length: int | None = None) -> bytes:
        """Status line and headers as the honest peer sent them, with a Content-Length for `body_length`."""
        lines = [f"HTTP/1.1 {self.status} {self.reason}"]
        for name, value in self.headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body) if body_length is None else body_length}")
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def whole(self) -> bytes:
        return self.head() + self.body


class HostilePeer(PeerAddress):
    """Answers `on` with `answer`, everything else as `backend` does; counts connections it accepted."""

    tls = None

    def __init__(
        self, backend: StdlibPeer, on: str, answer: Answer, times: int | None = None, port: int = 0
    ) -> None:
        self.backend = backend
        self.on = on
        self.answer = answer
        self.times = times  # misbehave this many times, then behave (None: always)
        self.connections = 0
        self.misbehaved = 0
        self._listener = socket.create_server(("127.0.0.1", port))
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:  # type: ignore[override]
        return int(self._listener.getsockname()[1])

    def __enter__(self) -> HostilePeer:
        thread = threading.Thread(target=self._accept, name="hostile-peer", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._listener.close()

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            client.settimeout(30)
            try:
                method, path, headers, body = _read_request(client)
            except (OSError, ValueError):
                return
            forwarded = self._forward(method, path, headers, body)
            forwarded.request = body
            if _target(method, body) == self.on and (self.times is None or self.misbehaved < self.times):
                self.misbehaved += 1
                with contextlib.suppress(OSError):  # the client hung up, as a client under attack should
                    self.answer(client, forwarded)
                return
            with contextlib.suppress(OSError):
                client.sendall(forwarded.whole())

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Forwarded:
        conn = http.client.HTTPConnection("127.0.0.1", self.backend.port, timeout=30)
        try:
            send = {
                k: v for k, v in headers.items() if k.lower() not in ("host", "connection", "content-length")
            }
            conn.request(method, path, body=body or None, headers=send)
            response = conn.getresponse()
            data = response.read()
            return Forwarded(response.status, response.reason, list(response.getheaders()), data)
        finally:
            conn.close()


def _read_request(client: socket.socket) -> tuple[str, str, dict[str, str], bytes]:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = client.recv(65536)
        if not chunk:
            raise ValueError("closed before the headers ended")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    length = int(next((v for k, v in headers.items() if k.lower() == "content-length"), "0"))
    while len(rest) < length:
        chunk = client.recv(65536)
        if not chunk:
            break
        rest += chunk
    return method, path, headers, rest[:length]


def _target(method: str, body: bytes) -> str:
    try:
        message: Any = json.loads(body) if body else None
    except ValueError:
        return method
    if not isinstance(message, dict):
        return method
    if message.get("method") == "tools/call":
        name = (message.get("params") or {}).get("name")
        return str(name)
    return str(message.get("method") or method)


# ---- answers ----------------------------------------------------------------------------------------------


def raw(data: bytes) -> Answer:
    """Send exactly these bytes, then close."""

    def answer(client: socket.socket, forwarded: Forwarded) -> None:
        client.sendall(data)

    return answer


def drip(interval: float = 1.0, seconds: float = 120.0) -> Answer:
    """The honest answer, one byte per `interval`: every read succeeds, so only a whole-request deadline ends it."""

    def answer(client: socket.socket, forwarded: Forwarded) -> None:
        end = time.monotonic() + seconds
        for byte in forwarded.whole():
            if time.monotonic() > end:
                return
            client.sendall(bytes([byte]))
            time.sleep(interval)

    return answer


def endless_keepalives(interval: float = 1.0, seconds: float = 120.0) -> Answer:
    """An SSE stream that sends a keep-alive comment every `interval` and never the answer."""

    def answer(client: socket.socket, forwarded: Forwarded) -> None:
        client.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Connection: close\r\n\r\n"
        )
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            client.sendall(b": keep-alive\n\n")
            time.sleep(interval)

    return answer


def truncated(keep: float = 0.5) -> Answer:
    """The honest head with the full Content-Length, then only part of the body, then close."""

    def answer(client: socket.socket, forwarded: Forwarded) -> None:
        client.sendall(forwarded.head() + forwarded.body[: int(len(forwarded.body) * keep)])

    return answer


def with_body(body: bytes, content_type: str = "application/json") -> Answer:
    """The honest status and headers around another body (a crafted JSON-RPC answer)."""

    def answer(client: socket.socket, forwarded: Forwarded) -> None:
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n"
        )
        session = next((v for k, v in forwarded.headers if k.lower() == "mcp-session-id"), None)
        if session:
            head += f"Mcp-Session-Id: {session}\r\n"
        client.sendall(head.encode("latin-1") + b"\r\n" + body)

    return answer


def bent(change: Callable[[Any], Any]) -> Answer:
    """The honest JSON answer (a Go-flavoured backend answers JSON), decoded, changed, encoded again.

    `change` gets the decoded JSON-RPC message and returns the new one, or bytes to send as the body verbatim.
    Lone surrogates survive: `json.dumps` escapes them as `\\udXXX`, as a hostile encoder may.
    """

    def answer(client: socket.socket, forwarded: Forwarded) -> None:
        changed = change(json.loads(forwarded.body))
        body = changed if isinstance(changed, bytes) else json.dumps(changed).encode("ascii")
        client.sendall(forwarded.head(len(body)) + body)

    return answer


def with_headers(extra: Iterable[bytes]) -> Answer:
    """The honest answer with these header lines added after the status line (each without its CRLF)."""

    def answer(client: socket.socket, forwarded: Forwarded) -> None:
        status, _, rest = forwarded.head().partition(b"\r\n")
        client.sendall(status + b"\r\n" + b"".join(line + b"\r\n" for line in extra) + rest + forwarded.body)

    return answer


def endless_body(chunk: bytes = b"[" * 65536, seconds: float = 60.0) -> Answer:
    """A 200 JSON answer without a length that streams `chunk` as fast as the client reads, until it hangs up."""

    def answer(client: socket.socket, forwarded: Forwarded) -> None:
        client.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            client.sendall(chunk)

    return answer


def encoded(body: bytes, encoding: str = "gzip") -> Answer:
    """The honest status and headers around `body` sent with a Content-Encoding nobody asked for."""

    def answer(client: socket.socket, forwarded: Forwarded) -> None:
        head = forwarded.head(len(body)).replace(
            b"\r\n\r\n", f"\r\nContent-Encoding: {encoding}\r\n\r\n".encode()
        )
        client.sendall(head + body)

    return answer


def tool_text(text: str) -> Answer:
    """A well-formed tool result (the request's own id) whose text is `text`: crafted content, honest framing."""

    def answer(client: socket.socket, forwarded: Forwarded) -> None:
        request_id = json.loads(forwarded.request).get("id")
        envelope = {
            "jsonrpc": "2.0",
            "id": request_id,
            "result": {"content": [{"type": "text", "text": text}]},
        }
        with_body(json.dumps(envelope).encode())(client, forwarded)

    return answer
