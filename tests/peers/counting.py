"""A dead or overloaded peer that counts how often it is dialled: a real listening socket on 127.0.0.1.

`answer=None` accepts each connection and closes it at once (the client sees the peer hang up: a transient
failure); `answer=(status, retry_after)` reads the request and answers that HTTP status with that Retry-After.
"""

from __future__ import annotations

import socket
import threading


class CountingPeer:
    """Counts accepted connections; use as a context manager."""

    def __init__(self, answer: tuple[int, str] | None = None) -> None:
        self.answer = answer
        self.connections = 0
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def __enter__(self) -> CountingPeer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()

    def count(self) -> int:
        with self._lock:
            return self.connections

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with self._lock:
                self.connections += 1
            with conn:
                if self.answer is not None:
                    self._reply(conn, *self.answer)

    @staticmethod
    def _reply(conn: socket.socket, status: int, retry_after: str) -> None:
        conn.settimeout(5)
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(65536)
            if not chunk:
                return
            request += chunk
        head, _, body = request.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        text = b"busy, come back later"
        conn.sendall(
            f"HTTP/1.1 {status} Unavailable\r\nRetry-After: {retry_after}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(text)}\r\nConnection: close\r\n\r\n".encode()
            + text
        )
