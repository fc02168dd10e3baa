"""Throwaway TLS material for test peers: a trustme CA and a server cert valid for localhost and 127.0.0.1."""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

# Both names a test may dial: the TLS endpoint uses the name, an IP endpoint needs the IP SAN (wire.md §3).
DEFAULT_HOSTS = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class PeerTLS:
    """A CA and one leaf; files are written on demand so a client `ca:` or uvicorn can point at them."""

    ca: trustme.CA
    leaf: trustme.LeafCert

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.leaf.configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """What a client with `ca:` set builds: the system store plus this CA (wire.md §3, Python equivalent)."""
        ctx = ssl.create_default_context()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ca.configure_trust(ctx)
        return ctx

    def write_ca(self, path: Path) -> Path:
        """Write the CA certificate as PEM, for a peer entry's `ca:`."""
        self.ca.cert_pem.write_to_path(str(path))
        return path

    def write_server_files(self, directory: Path) -> tuple[Path, Path]:
        """Write the server chain and key as two PEM files (certfile, keyfile), as `noema serve --tls-*` takes."""
        certfile, keyfile = directory / "server.pem", directory / "server.key"
        certfile.write_bytes(b"".join(blob.bytes() for blob in self.leaf.cert_chain_pems))
        self.leaf.private_key_pem.write_to_path(str(keyfile))
        keyfile.chmod(0o600)
        return certfile, keyfile


def make_tls(
    hosts: tuple[str, ...] = DEFAULT_HOSTS,
    *,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> PeerTLS:
    """A fresh CA and leaf; pass `not_after` in the past to get an expired server cert."""
    ca = trustme.CA()
    return PeerTLS(ca, ca.issue_cert(*hosts, not_before=not_before, not_after=not_after))


def expired_tls(hosts: tuple[str, ...] = DEFAULT_HOSTS) -> PeerTLS:
    """A server cert that expired yesterday, for the client's TLS-failure classification."""
    now = datetime.datetime.now(datetime.UTC)
    return make_tls(
        hosts, not_before=now - datetime.timedelta(days=30), not_after=now - datetime.timedelta(days=1)
    )


class PeerAddress:
    """How tests dial a peer: `endpoint` (the name in the cert over TLS), `endpoint_ip`, `url`, and its CA."""

    tls: PeerTLS | None
    port: int

    @property
    def endpoint(self) -> str:
        """Base URL without /mcp: https uses the name in the cert, plain http the loopback IP."""
        if self.tls is not None:
            return f"https://localhost:{self.port}"
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint_ip(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.endpoint + "/mcp"

    def write_ca(self, path: Path) -> Path:
        """Write this peer's CA as PEM for a client's `ca:`."""
        if self.tls is None:
            raise RuntimeError("peer has no TLS")
        return self.tls.write_ca(path)
