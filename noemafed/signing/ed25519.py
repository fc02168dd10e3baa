"""Ed25519 (RFC 8032) in pure Python, with the verdicts of Go's crypto/ed25519: the fallback when the host's
OpenSSL cannot be loaded (`verifier`), and the oracle the OpenSSL path is tested against.

Verification decides exactly as Go's `ed25519.Verify` does (noema's verifier, the reference):

- S must be canonical (S < L), else false.
- A is decoded as Go's edwards25519 `Point.SetBytes` decodes it: the top bit is the sign of x, y is taken
  modulo p (so the 19 non-canonical encodings y >= p are accepted), and x = 0 with the sign bit set ("-0") is
  accepted. RFC 8032 rejects both; Go and OpenSSL accept them, and so do we (tests/data/ed25519/).
- k = SHA-512(R bytes || A bytes as given || message) mod L.
- The equation is cofactorless: R' = [S]B - [k]A, and its canonical encoding must equal the R bytes, so a
  non-canonical R never verifies.

Speed (docs/performance.md): points in extended coordinates, one inversion per result. [S]B is a sum of 64 entries
of a comb table of B (every [j * 16^i]B, built once on first use), with no doubling. A key that has verified a
second signature gets such a table too (a ring has a few signing cortexes, each with many events), so its next
verifications cost 128 additions in all; a key without one is multiplied by doubling and adding (width-5 NAF).
Nothing here is constant-time (Python integers are not): signing uses a local seed, verification public data.
"""

from __future__ import annotations

import threading

__all__ = ["L", "P", "public_key", "sign", "verify"]

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
# Written out, not computed at import (`--version` and `status` import this module): d = -121665/121666,
# sqrt(-1) = 2^((p-1)/4), and B = (x, 4/5) with x even, all mod p; tests/test_ed25519.py recomputes them.
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
_D2 = 2 * _D % P
_SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752
_BASE_X = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BASE_Y = 46316835694926478169428394003475163141307993866256225615783033603165251855960

# A point in extended homogeneous coordinates (X, Y, Z, T): x = X/Z, y = Y/Z, x*y = T/Z.
_Point = tuple[int, int, int, int]
# A precomputed point in "cached" form (Y+X, Y-X, 2Z, 2dT): adding it to an extended point costs 8
# multiplications (7 when Z = 1, which is how B's table is stored).
_Cached = tuple[int, int, int, int]

_IDENTITY: _Point = (0, 1, 1, 0)
# Comb tables of the public keys verified lately (a ring has a few signing cortexes, each with many events).
_KEY_TABLES_MAX = 32


def _add(p: _Point, q: _Cached) -> _Point:
    """p + q (add-2008-hwcd-3 for a = -1), q in cached form."""
    x1, y1, z1, t1 = p
    yx, ymx, z2, t2d = q
    a = (y1 - x1) * ymx % P
    b = (y1 + x1) * yx % P
    c = t1 * t2d % P
    d = z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _sub(p: _Point, q: _Cached) -> _Point:
    """p - q: the same formula with -q = (Y-X, Y+X, 2Z, -2dT)."""
    x1, y1, z1, t1 = p
    yx, ymx, z2, t2d = q
    a = (y1 - x1) * yx % P
    b = (y1 + x1) * ymx % P
    c = t1 * t2d % P
    d = z1 * z2 % P
    e, f, g, h = b - a, d + c, d - c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _double(p: _Point) -> _Point:
    """2p (dbl-2008-hwcd for a = -1): 4 squarings and 4 multiplications, T not needed as input."""
    x1, y1, z1, _ = p
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    xy = x1 + y1
    e = h - xy * xy % P
    g = a - b
    f = c + g
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _cached(p: _Point) -> _Cached:
    x, y, z, t = p
    return ((y + x) % P, (y - x) % P, 2 * z % P, t * _D2 % P)


def _affine_cached(points: list[_Point]) -> list[_Cached]:
    """The points in cached form with Z = 1, through one shared inversion (Montgomery's trick)."""
    prefix = [1]
    for point in points:
        prefix.append(prefix[-1] * point[2] % P)
    inverse = pow(prefix[-1], -1, P)
    out: list[_Cached] = [(0, 0, 0, 0)] * len(points)
    for i in range(len(points) - 1, -1, -1):
        x, y, z, t = points[i]
        z_inv = inverse * prefix[i] % P  # 1 / z
        inverse = inverse * z % P
        x, y, t = x * z_inv % P, y * z_inv % P, t * z_inv % P
        out[i] = ((y + x) % P, (y - x) % P, 2, t * _D2 % P)
    return out


def _comb_table(point: _Point) -> list[_Cached]:
    """[j * 16^i]point for i in 0..63 and j in 1..8, at index 8i + j - 1: any scalar below 2^253 is then a sum
    of 64 table entries (its signed radix-16 digits), with no doubling at all."""
    rows: list[_Point] = []
    base = point
    for _ in range(64):
        cached = _cached(base)
        two = _double(base)
        three = _add(two, cached)
        four = _double(two)
        six = _double(three)
        eight = _double(four)
        rows += (base, two, three, four, _add(four, cached), six, _add(six, cached), eight)
        base = _double(eight)
    return _affine_cached(rows)


def _radix16(scalar: int) -> list[int]:
    """64 signed digits in -8..7 with scalar = sum(digit * 16^i), for 0 <= scalar < 2^253."""
    digits = []
    carry = 0
    for _ in range(64):
        digit = (scalar & 15) + carry
        scalar >>= 4
        carry = digit >= 8
        digits.append(digit - 16 if carry else digit)
    return digits


def _comb_sum(q: _Point, table: list[_Cached], scalar: int, negate: bool = False) -> _Point:
    """q + [scalar]T (or q - [scalar]T) for the point T whose comb table this is."""
    for i, digit in enumerate(_radix16(scalar)):
        if digit:
            if (digit > 0) != negate:
                q = _add(q, table[8 * i + abs(digit) - 1])
            else:
                q = _sub(q, table[8 * i + abs(digit) - 1])
    return q


def _naf(scalar: int) -> list[int]:
    """Width-5 NAF digits of scalar, least significant first: each 0 or odd in -15..15."""
    digits: list[int] = []
    while scalar:
        digit = 0
        if scalar & 1:
            digit = scalar & 31
            if digit >= 16:
                digit -= 32
            scalar -= digit
        digits.append(digit)
        scalar >>= 1
    return digits


def _naf_sum(q: _Point, point: _Point, scalar: int, negate: bool = False) -> _Point:
    """q + [scalar]point (or minus) by doubling and adding odd multiples 1..15 of point: for a key with no table
    yet, cheaper than building one (252 doublings and about 50 additions, against 512 points to make)."""
    twice = _cached(_double(point))
    odd = [point]
    for _ in range(7):
        odd.append(_add(odd[-1], twice))
    multiples = [_cached(m) for m in odd]
    acc = _IDENTITY
    for digit in reversed(_naf(scalar)):
        acc = _double(acc)
        if digit:
            if (digit > 0) != negate:
                acc = _add(acc, multiples[abs(digit) >> 1])
            else:
                acc = _sub(acc, multiples[abs(digit) >> 1])
    return _add(q, _cached(acc))


def _compress(point: _Point) -> bytes:
    z_inv = pow(point[2], -1, P)
    x = point[0] * z_inv % P
    y = point[1] * z_inv % P
    return int.to_bytes(y | ((x & 1) << 255), 32, "little")


def _decompress(data: bytes) -> _Point | None:
    """Go's edwards25519 Point.SetBytes: y mod p, the sign bit applied to x even when x = 0; None off the curve."""
    if len(data) != 32:
        return None
    encoded = int.from_bytes(data, "little")
    y = (encoded & ((1 << 255) - 1)) % P
    # x = sqrt(u / v) with u = y^2 - 1, v = d y^2 + 1, as x = u v^3 (u v^7)^((p-5)/8) (RFC 8032 §5.1.3): one power.
    u = (y * y - 1) % P
    v = (_D * y * y + 1) % P
    v3 = v * v * v % P
    x = u * v3 * pow(u * v3 * v3 * v % P, (P - 5) // 8, P) % P
    vx2 = v * x * x % P
    if vx2 != u:
        if vx2 != P - u:
            return None  # u / v is not a square: not a point
        x = x * _SQRT_M1 % P
    if (x & 1) != encoded >> 255:
        x = (P - x) % P  # -0 stays 0: Go accepts the sign bit on x = 0
    return (x, y, 1, x * y % P)


_BASE_POINT: _Point = (_BASE_X, _BASE_Y, 1, _BASE_X * _BASE_Y % P)
_base_table: list[_Cached] = []
_key_tables: dict[bytes, list[_Cached]] = {}
_verified_once: dict[bytes, None] = {}  # keys that verified one signature, oldest first
_key_tables_lock = threading.Lock()


def _base_multiple(scalar: int) -> _Point:
    """[scalar]B for 0 <= scalar < L."""
    if not _base_table:  # built on first use (a few ms), not at import: most commands never sign or verify
        table = _comb_table(_BASE_POINT)
        with _key_tables_lock:
            if not _base_table:  # another thread may have built it meanwhile
                _base_table.extend(table)
    return _comb_sum(_IDENTITY, _base_table, scalar)


def _verified_before(public: bytes) -> bool:
    """Whether this key verified a signature before; notes that it has now (the last few hundred keys)."""
    with _key_tables_lock:
        if public in _verified_once:
            return True
        if len(_verified_once) >= 8 * _KEY_TABLES_MAX:
            del _verified_once[next(iter(_verified_once))]
        _verified_once[public] = None
        return False


def _remember_key(public: bytes, point: _Point) -> None:
    table = _comb_table(point)
    with _key_tables_lock:
        if len(_key_tables) >= _KEY_TABLES_MAX:
            del _key_tables[next(iter(_key_tables))]  # the oldest
        _key_tables[public] = table


def _sha512(data: bytes) -> bytes:
    import hashlib  # noqa: PLC0415 (about 2 ms: only when signing or verifying, not for --version or status)

    return hashlib.sha512(data).digest()


def _sha512_int(*parts: bytes) -> int:
    return int.from_bytes(_sha512(b"".join(parts)), "little")


def _expand_seed(seed: bytes) -> tuple[int, bytes]:
    if len(seed) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    digest = _sha512(seed)
    scalar = int.from_bytes(digest[:32], "little")
    scalar &= (1 << 254) - 8
    scalar |= 1 << 254
    return scalar, digest[32:]


def public_key(seed: bytes) -> bytes:
    """The 32-byte public key of a 32-byte seed."""
    scalar, _ = _expand_seed(seed)
    return _compress(_base_multiple(scalar % L))


def sign(seed: bytes, message: bytes) -> bytes:
    """A 64-byte signature (deterministic, RFC 8032 §5.1.6)."""
    scalar, prefix = _expand_seed(seed)
    public = _compress(_base_multiple(scalar % L))
    r = _sha512_int(prefix, message) % L
    r_bytes = _compress(_base_multiple(r))
    k = _sha512_int(r_bytes, public, message) % L
    s = (r + k * scalar) % L
    return r_bytes + int.to_bytes(s, 32, "little")


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid signature of `message` under `public`, exactly as Go decides."""
    if len(public) != 32 or len(signature) != 64:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        return False
    k = _sha512_int(signature[:32], public, message) % L
    # R' = [S]B - [k]A, and its canonical encoding must be the R bytes (Go compares encodings, not points).
    with _key_tables_lock:
        table_a = _key_tables.get(public)
    if table_a is not None:
        return _compress(_comb_sum(_base_multiple(s), table_a, k, negate=True)) == signature[:32]
    point_a = _decompress(public)
    if point_a is None:
        return False
    valid = _compress(_naf_sum(_base_multiple(s), point_a, k, negate=True)) == signature[:32]
    if valid and _verified_before(public):
        # A key that signed twice will sign again (one per signing cortex of the ring): a table costs about two
        # verifications and makes each later one about 8 times faster. Junk keys never get one.
        _remember_key(public, point_a)
    return valid
