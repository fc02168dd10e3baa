"""The certificate-expiry gate of noema serve: an expired or not yet valid certificate refuses to start."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import trustme
from conftest import make_cortex, run_cli

from noemafed.mcp import certs

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _cert(tmp_path: Path, not_before: datetime.datetime, not_after: datetime.datetime) -> tuple[Path, Path]:
    leaf = trustme.CA().issue_cert("127.0.0.1", "localhost", not_before=not_before, not_after=not_after)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


def _serve(cortex: Path, cert: Path, key: Path, *extra: str) -> tuple[int, str]:
    result = run_cli(
        [
            "--cortex",
            str(cortex),
            "serve",
            "--port",
            "0",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            *extra,
        ]
    )
    return result.exit_code, result.stderr


def test_the_validity_window_is_read_from_the_first_certificate(tmp_path: Path) -> None:
    cert, _ = _cert(tmp_path, NOW - datetime.timedelta(days=1), NOW + datetime.timedelta(days=40))
    validity = certs.read_validity(str(cert))
    assert validity.not_before == NOW - datetime.timedelta(days=1)
    assert validity.not_after == NOW + datetime.timedelta(days=40)


def test_an_expired_certificate_refuses_to_start(tmp_path: Path) -> None:
    cortex = make_cortex(tmp_path)
    not_after = NOW - datetime.timedelta(days=3, hours=1)
    cert, key = _cert(tmp_path, NOW - datetime.timedelta(days=30), not_after)
    code, stderr = _serve(cortex, cert, key)
    assert code == 78
    stamp = not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert stderr.startswith(
        f"Error: refusing to start: TLS certificate at {cert} expired 3 day(s) ago (NotAfter={stamp}).\n"
        "  Clients reject expired certificates and the server would appear unreachable.\n"
        "  Rotate the certificate and restart, or pass --insecure-allow-expired briefly to rotate it in place\n"
    )


def test_a_certificate_not_yet_valid_refuses_to_start(tmp_path: Path) -> None:
    cortex = make_cortex(tmp_path)
    cert, key = _cert(tmp_path, NOW + datetime.timedelta(days=1), NOW + datetime.timedelta(days=90))
    code, stderr = _serve(cortex, cert, key)
    assert code == 78
    assert stderr.startswith(
        f"Error: refusing to start: TLS certificate at {cert} NotBefore is in the future"
    )


@pytest.mark.parametrize(
    ("not_before", "not_after", "warning"),
    [
        (
            -30,
            -2,
            "[serve] WARN --insecure-allow-expired: TLS cert at {cert} expired 1 day(s) ago",
        ),  # 47 hours: whole days
        (1, 90, "[serve] WARN --insecure-allow-expired: TLS cert at {cert} not yet valid"),
    ],
)
def test_the_flag_starts_anyway_with_a_warning(
    tmp_path: Path, not_before: int, not_after: int, warning: str
) -> None:
    cert, _ = _cert(
        tmp_path, NOW + datetime.timedelta(days=not_before), NOW + datetime.timedelta(days=not_after, hours=1)
    )
    line = certs.gate_startup(str(cert), True, NOW)
    assert line is not None
    assert line.startswith(warning.format(cert=cert))


def test_a_certificate_close_to_expiry_warns(tmp_path: Path) -> None:
    not_after = NOW + datetime.timedelta(days=5, hours=2)
    cert, _ = _cert(tmp_path, NOW - datetime.timedelta(days=80), not_after)
    stamp = not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert certs.gate_startup(str(cert), False, NOW) == (
        f"[serve] WARN TLS cert at {cert} expires in 5 day(s) (NotAfter={stamp}) - rotate soon"
    )
    far, _ = _cert(tmp_path, NOW - datetime.timedelta(days=1), NOW + datetime.timedelta(days=60))
    assert certs.gate_startup(str(far), False, NOW) is None


def test_an_unreadable_certificate_is_refused_whatever_the_flag(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("no certificate here\n")
    for allow in (False, True):
        with pytest.raises(certs.CertificateRefused) as info:
            certs.gate_startup(str(tmp_path / "junk.pem"), allow, NOW)
        assert str(info.value) == (
            f"refusing to start: cannot read TLS certificate: tlsutil: no CERTIFICATE block in {tmp_path / 'junk.pem'}"
        )
