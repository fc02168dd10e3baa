"""Ed25519 verdicts: the host's OpenSSL and the pure-Python verifier against Go's, on published vectors and on
generated inputs, and how the OpenSSL library is found, kept and released.

Go's verdicts come with the vectors (tests/data/ed25519/*.json, each names its source): RFC 8032 §7.1, the 12
vectors of "Taming the many EdDSAs" (ed25519-speccheck, Go's row of its results table) and C2SP's CCTV set of
every low-order and non-canonical encoding (Go's verdict as CCTV's own Go test asserts it). Generated inputs use
the pure-Python verifier as the oracle, which the vectors pin to Go.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noemafed.signing import ed25519, libcrypto, verifier

DATA = Path(__file__).parent / "data" / "ed25519"
REPO = Path(__file__).resolve().parent.parent


def vectors(name: str) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads((DATA / name).read_text())["vectors"]
    return loaded


def inputs(vector: dict[str, Any], text_message: bool = False) -> tuple[bytes, bytes, bytes]:
    message = vector["message"].encode() if text_message else bytes.fromhex(vector["message"])
    return bytes.fromhex(vector["public"]), message, bytes.fromhex(vector["signature"])


LOADED = verifier.openssl()
needs_openssl = pytest.mark.skipif(isinstance(LOADED, str), reason=f"OpenSSL not loadable here: {LOADED}")


def openssl() -> verifier.Verifier:
    assert not isinstance(LOADED, str), LOADED
    return LOADED


def both() -> list[verifier.Verifier]:
    return [verifier.python()] + ([] if isinstance(LOADED, str) else [LOADED])


# ---- published vectors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", vectors("rfc8032.json"), ids=lambda v: v["name"])
def test_rfc8032_vectors(vector: dict[str, Any]) -> None:
    seed = bytes.fromhex(vector["seed"])
    public, message, signature = inputs(vector)
    assert ed25519.public_key(seed) == public
    assert ed25519.sign(seed, message) == signature
    for check in both():
        assert check.verify(public, message, signature), check.name
        flipped = signature[:5] + bytes([signature[5] ^ 0x10]) + signature[6:]
        assert not check.verify(public, message, flipped), check.name


@pytest.mark.parametrize("vector", vectors("speccheck.json"), ids=lambda v: f"{v['number']}")
def test_speccheck_vectors_get_gos_verdict(vector: dict[str, Any]) -> None:
    for check in both():
        assert check.verify(*inputs(vector)) is vector["go"], (check.name, vector["case"])


def test_cctv_vectors_get_gos_verdict() -> None:
    cases = vectors("cctv.json")
    assert len(cases) == 914
    for check in both():
        wrong = [v["number"] for v in cases if check.verify(*inputs(v, text_message=True)) is not v["go"]]
        assert wrong == [], check.name


def test_every_non_canonical_or_out_of_range_input_is_decided_before_openssl() -> None:
    """OpenSSL 3.0 agrees with Go on all of these, but such encodings are where libraries (and versions of
    them) differ, so Go's rules settle them in Python and they never reach libcrypto."""
    cases = [(inputs(v, text_message=True), v["go"], set(v["flags"])) for v in vectors("cctv.json")]
    for v in vectors("speccheck.json"):  # its condition table names the non-canonical point in words
        flags = {f"non_canonical_{point}" for point in "AR" if f"non-canonical {point}" in v["case"]}
        cases.append((inputs(v), v["go"], flags))
    settled = 0
    for (public, message, signature), go, flags in cases:
        out_of_range = int.from_bytes(signature[32:], "little") >= ed25519.L
        if out_of_range or flags & {"non_canonical_A", "non_canonical_R"}:
            assert verifier.decided_by_go_rules(public, message, signature) is go, flags
            settled += 1
        else:
            assert verifier.decided_by_go_rules(public, message, signature) is None, flags
    # CCTV: 490 with a non-canonical A or R; speccheck: 6 (S >= L, non-canonical R or A).
    assert settled == 496
    # The other half of the rule: what "-0" and y >= p mean for each point.
    minus_zero = (1 | 1 << 255).to_bytes(32, "little")
    assert verifier.decided_by_go_rules(minus_zero, b"", bytes(64)) is not None
    assert verifier.decided_by_go_rules(bytes(32), b"", minus_zero + bytes(32)) is False


def test_the_written_out_constants() -> None:
    p = ed25519.P
    d, sqrt_m1, base_y = -121665 * pow(121666, -1, p) % p, pow(2, (p - 1) // 4, p), 4 * pow(5, -1, p) % p
    assert (d, sqrt_m1, base_y) == (ed25519._D, ed25519._SQRT_M1, ed25519._BASE_Y)
    assert ed25519._BASE_X % 2 == 0
    assert ed25519._decompress(ed25519._BASE_Y.to_bytes(32, "little")) == ed25519._BASE_POINT


# ---- generated inputs, the pure-Python verifier as the oracle -------------------------------------------

SEEDS = [bytes([n]) * 32 for n in range(4)]  # a few keys seen again and again, as in a ring
P = ed25519.P
# Encodings where decoders differ: each small-order point, y >= p, x = -0; and a few ordinary values.
SPECIAL_Y = [0, 1, 2, 3, P - 1, P - 2, P, P + 1, P + 2, 2**255 - 1]
SPECIAL_POINTS = [(y | sign << 255).to_bytes(32, "little") for y in SPECIAL_Y for sign in (0, 1)] + [
    bytes.fromhex(h)
    for h in (
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    )
]
SPECIAL_S = [0, 1, ed25519.L - 1, ed25519.L, ed25519.L + 1, 2**253 - 1, 2**256 - 1]


def flip(data: bytes, bit: int) -> bytes:
    bit %= len(data) * 8
    return data[: bit // 8] + bytes([data[bit // 8] ^ (1 << bit % 8)]) + data[bit // 8 + 1 :]


@st.composite
def signed_and_corrupted(draw: st.DrawFn) -> tuple[bytes, bytes, bytes, str]:
    seed = draw(st.sampled_from(SEEDS) | st.binary(min_size=32, max_size=32))
    message = draw(st.binary(max_size=300))
    public, signature = ed25519.public_key(seed), ed25519.sign(seed, message)
    corruption = draw(
        st.sampled_from(["none", "signature", "key", "message", "random key", "random signature"])
    )
    bit = draw(st.integers(min_value=0, max_value=511))
    if corruption == "signature":
        signature = flip(signature, bit)
    elif corruption == "key":
        public = flip(public, bit)
    elif corruption == "message":
        message = flip(message + b"\0", bit)
    elif corruption == "random key":
        public = draw(st.binary(min_size=32, max_size=32))
    elif corruption == "random signature":
        signature = draw(st.binary(min_size=64, max_size=64))
    return public, message, signature, corruption


@needs_openssl
@settings(max_examples=300, deadline=None)
@given(case=signed_and_corrupted())
def test_openssl_agrees_with_python_on_signatures_and_corruptions(
    case: tuple[bytes, bytes, bytes, str],
) -> None:
    public, message, signature, corruption = case
    expected = ed25519.verify(public, message, signature)
    assert expected is (corruption == "none")  # a flipped bit never leaves a valid signature (odds 2^-128)
    assert openssl().verify(public, message, signature) is expected


@needs_openssl
@settings(max_examples=300, deadline=None)
@given(
    public=st.sampled_from(SPECIAL_POINTS) | st.binary(min_size=32, max_size=32),
    r=st.sampled_from(SPECIAL_POINTS) | st.binary(min_size=32, max_size=32),
    s=st.sampled_from(SPECIAL_S) | st.integers(min_value=0, max_value=2**256 - 1),
    message=st.binary(max_size=40),
)
def test_openssl_agrees_with_python_on_edge_encodings(
    public: bytes, r: bytes, s: int, message: bytes
) -> None:
    signature = r + s.to_bytes(32, "little")
    assert openssl().verify(public, message, signature) is ed25519.verify(public, message, signature)


def test_small_order_keys_verify_under_gos_rules() -> None:
    """A = identity in each of its four encodings (two non-canonical, two "-0"): [S]B - [k]A = [S]B whatever
    k is, so R = [S]B verifies under Go; the RFC 8032 decoder the package had before rejected three of them."""
    s = 5
    r = ed25519._compress(ed25519._base_multiple(s))
    signature = r + s.to_bytes(32, "little")
    for y, sign in ((1, 0), (1, 1), (P + 1, 0), (P + 1, 1)):
        identity = (y | sign << 255).to_bytes(32, "little")
        for check in both():
            assert check.verify(identity, b"any message", signature), (check.name, hex(y), sign)


@settings(max_examples=60, deadline=None)
@given(case=signed_and_corrupted())
def test_a_keys_table_gives_the_verdict_of_the_first_verification(
    case: tuple[bytes, bytes, bytes, str],
) -> None:
    """The pure-Python verifier multiplies a new key by doubling and keeps a comb table for a key that verified
    twice; both paths must agree on every input."""
    public, message, signature, _ = case
    ed25519._key_tables.pop(public, None)
    ed25519._verified_once.pop(public, None)
    cold = ed25519.verify(public, message, signature)  # no table: doubling
    for seed in SEEDS:
        if ed25519.public_key(seed) == public:
            for text in (b"warm", b"warmer"):
                assert ed25519.verify(public, text, ed25519.sign(seed, text))
    if public in ed25519._key_tables:
        assert ed25519.verify(public, message, signature) is cold


def test_key_tables_are_kept_only_for_keys_that_verified_and_are_bounded() -> None:
    ed25519._key_tables.clear()
    junk = ed25519.public_key(b"\x09" * 32)
    for _ in range(3):
        assert not ed25519.verify(junk, b"m", bytes(64))
    assert junk not in ed25519._key_tables
    once = ed25519.public_key(b"\x0a" * 32)
    assert ed25519.verify(once, b"m", ed25519.sign(b"\x0a" * 32, b"m"))
    assert once not in ed25519._key_tables  # one signature: no table yet
    for n in range(ed25519._KEY_TABLES_MAX + 3):
        seed = n.to_bytes(32, "little")
        for text in (b"m", b"n"):
            assert ed25519.verify(ed25519.public_key(seed), text, ed25519.sign(seed, text))
    assert len(ed25519._key_tables) == ed25519._KEY_TABLES_MAX
    newest = ed25519.public_key((ed25519._KEY_TABLES_MAX + 2).to_bytes(32, "little"))
    assert newest in ed25519._key_tables


# ---- the OpenSSL library: which one, kept keys, no leaks --------------------------------------------------


@needs_openssl
@pytest.mark.skipif(
    not Path("/proc/self/maps").exists() or not shutil.which("ldd"), reason="needs /proc and ldd"
)
def test_the_library_is_the_libcrypto_that_ssl_links() -> None:
    import _ssl

    loaded = libcrypto.load()
    assert not isinstance(loaded, str)
    assert loaded.version_number == _ssl.OPENSSL_VERSION_NUMBER >= libcrypto.MIN_VERSION
    assert _ssl.OPENSSL_VERSION.startswith(loaded.version)
    # The code of EVP_DigestVerify we call sits in the file the dynamic linker resolved for _ssl's libcrypto.
    address = ctypes.cast(loaded._fn["EVP_DigestVerify"], ctypes.c_void_p).value
    assert address is not None
    mapped = ""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        low, high = (int(part, 16) for part in fields[0].split("-"))
        if low <= address < high and len(fields) >= 6:
            mapped = fields[5]
    ldd = subprocess.run(["ldd", _ssl.__file__], capture_output=True, text=True, check=True).stdout
    linked = [line.split("=>")[1].split()[0] for line in ldd.splitlines() if "libcrypto" in line]
    assert len(linked) == 1
    assert os.path.realpath(mapped) == os.path.realpath(linked[0])


@needs_openssl
def test_keys_that_verified_are_kept_once_and_others_released() -> None:
    loaded = libcrypto.load()
    assert not isinstance(loaded, str)
    seed = b"\x05" * 32
    public = ed25519.public_key(seed)
    for n in range(20):
        message = b"event %d" % n
        assert loaded.verify(public, message, ed25519.sign(seed, message)) is True
    junk = [os.urandom(32) for _ in range(10)]
    for key in junk:
        assert loaded.verify(key, b"m", bytes(64)) is False
    assert list(loaded._keys) == [libcrypto._CHECK_KEY, public]  # the load-time check's key, then ours
    for n in range(libcrypto.KEYS_MAX + 5):
        other = n.to_bytes(32, "big")
        assert loaded.verify(ed25519.public_key(other), b"m", ed25519.sign(other, b"m")) is True
    assert len(loaded._keys) == libcrypto.KEYS_MAX


@needs_openssl
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_no_memory_is_kept_per_verification() -> None:
    """20,000 verifications under keys that are never kept: without the frees they leak about 19 MiB."""
    loaded = libcrypto.load()
    assert not isinstance(loaded, str)
    keys = [os.urandom(32) for _ in range(50)]

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    for key in keys:
        loaded.verify(key, b"warm-up", bytes(64))
    before = rss()
    for n in range(20_000):
        loaded.verify(keys[n % len(keys)], b"message %d" % n, bytes(64))
    assert rss() - before < 2 * 1024 * 1024


# ---- the choice of verifier -------------------------------------------------------------------------------

CHOICE = (
    "from noemafed.signing import verifier, ed25519\n"
    "chosen = verifier.current()\n"
    "seed = bytes(32)\n"
    "ok = chosen.verify(ed25519.public_key(seed), b'm', ed25519.sign(seed, b'm'))\n"
    "print(chosen.name, '|', chosen.label, '|', ok)\n"
)


def choose(env_value: str | None, prelude: str = "") -> str:
    env = {k: v for k, v in os.environ.items() if k != verifier.ENV}
    if env_value is not None:
        env[verifier.ENV] = env_value
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", prelude + CHOICE],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


@needs_openssl
def test_the_switch_picks_the_verifier() -> None:
    version = openssl().label
    assert choose(None) == f"openssl | {version} | True"
    assert choose("") == f"openssl | {version} | True"
    assert choose("openssl") == f"openssl | {version} | True"
    assert choose("python") == "python | pure Python | True"


def test_without_ssl_the_pure_python_verifier_runs() -> None:
    # An interpreter without the _ssl module (built without OpenSSL): the import fails, as it would there.
    no_ssl = "import sys\nsys.modules['_ssl'] = None\n"
    assert choose(None, no_ssl) == "python | pure Python | True"
    assert choose("openssl", no_ssl) == (
        "python | pure Python (OpenSSL not used: no _ssl module (import of _ssl halted; None in sys.modules)) | True"
    )


def test_status_and_version_say_which_verifier_runs(tmp_path: Path) -> None:
    from conftest import make_cortex

    path = make_cortex(tmp_path, "alpha", verify="warn")
    off = make_cortex(tmp_path, "beta")  # verify: off, so no verifier runs
    expected = {"python": ("python", "pure Python")}
    if not isinstance(LOADED, str):
        expected[""] = ("openssl", LOADED.label)
    for value, (name, label) in expected.items():
        env = {**os.environ, verifier.ENV: value, "PYTHONPATH": str(REPO)}
        run = [sys.executable, "-m", "noemafed"]
        status = subprocess.run(
            [*run, "--cortex", str(path), "status", "--json"], capture_output=True, env=env, check=True
        )
        assert json.loads(status.stdout)["federation"]["verifier"] == name
        status = subprocess.run(
            [*run, "--cortex", str(off), "status", "--json"], capture_output=True, env=env, check=True
        )
        assert json.loads(status.stdout)["federation"]["verifier"] is None
        version = subprocess.run([*run, "--version"], capture_output=True, text=True, env=env, check=True)
        assert version.stdout.endswith(f", Ed25519: {label}\n")


def _status_verifier(cortex: Path, choice: str = "") -> tuple[str | None, list[str]]:
    """`status --json`'s verifier, and which of OpenSSL's modules the status loaded, in a fresh process with
    NOEMAFED_ED25519 set to `choice`, or without it (where finding out would pick OpenSSL when it loads)."""
    code = (
        "import io, json, sys\nfrom contextlib import redirect_stdout\nfrom noemafed.cli import main\n"
        "out = io.StringIO()\nwith redirect_stdout(out):\n    try:\n"
        f"        main(['--cortex', {str(cortex)!r}, 'status', '--json'])\n    except SystemExit:\n        pass\n"
        "loaded = sorted(m for m in ('_ssl', 'ctypes', 'noemafed.signing.verifier') if m in sys.modules)\n"
        "print(json.dumps([json.loads(out.getvalue())['federation']['verifier'], loaded]))\n"
    )
    env = {key: value for key, value in os.environ.items() if key != verifier.ENV}
    if choice:
        env[verifier.ENV] = choice
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(REPO)},
        check=True,
    )
    name, loaded = json.loads(done.stdout)
    return name, loaded


def test_status_reports_the_verifier_the_last_signed_sync_recorded(tmp_path: Path) -> None:
    """A poll that checked signatures records its verifier (noemafed:verifier); `status --json` then reports
    it without loading OpenSSL. Before any such poll, or when NOEMAFED_ED25519 asks for one, status finds out
    itself; under verify: off (no signature is checked) it says null. A verify-off sync records nothing, even in
    a process that checked signatures before."""
    from conftest import make_cortex, run_cli
    from peers.stdlib_peer import StdlibPeer
    from sync_helpers import seed, state_value, target_with

    from noemafed.commands.settings import set_verify
    from noemafed.cortex import state

    src = make_cortex(tmp_path, "source")
    assert run_cli(["--cortex", str(src), "keygen"]).exit_code == 0
    seed(src, 3, prefix="signed")
    with StdlibPeer(src, flavor="go") as peer:
        peers = [{"name": "a", "endpoint": peer.endpoint}]
        unsigned = target_with(tmp_path, peers, name="unchecked")
        signed = target_with(tmp_path, peers, name="checked", verify="warn")
        for target in (unsigned, signed):
            env = {**os.environ, verifier.ENV: "python", "PYTHONPATH": str(REPO)}
            subprocess.run(
                [sys.executable, "-m", "noemafed", "--cortex", str(target), "sync", "--once"],
                env=env,
                check=True,
            )
        # In one process: a signed sync, then a verify-off one; only the first records.
        in_process = [
            target_with(tmp_path, peers, name=name, verify=mode)
            for name, mode in (("on", "warn"), ("off", "off"))
        ]
        for target in in_process:
            assert run_cli(["--cortex", str(target), "sync", "--once"]).exit_code == 0
    assert json.loads(state_value(in_process[0], state.VERIFIER_KEY))["name"] in ("openssl", "python")
    assert state_value(in_process[1], state.VERIFIER_KEY) == ""
    assert json.loads(state_value(signed, state.VERIFIER_KEY)) == {"name": "python", "label": "pure Python"}
    assert _status_verifier(signed) == ("python", [])  # as recorded, though OpenSSL would load here
    live = "python" if isinstance(LOADED, str) else "openssl"
    assert (
        _status_verifier(signed, "openssl")[0] == live
    )  # the variable asks: found out, whatever is recorded
    assert state_value(unsigned, state.VERIFIER_KEY) == ""
    assert _status_verifier(unsigned) == (None, [])  # verify: off
    set_verify(lambda: unsigned, "warn")  # now it would check signatures, and none has been recorded
    probed = "python" if isinstance(LOADED, str) else "openssl"
    openssl = [] if isinstance(LOADED, str) else ["_ssl", "ctypes"]
    assert _status_verifier(unsigned) == (probed, [*openssl, "noemafed.signing.verifier"])
