"""ECDSA signature verification on NIST P-256 with SHA-256, in pure Python, I/O-free.

MicroPython has ``hashlib.sha256`` and arbitrary-precision integers but no public-key
cryptography; this module is the little a charger needs to check a signature made by the
platform (guest credentials, docs/guest-credentials.md) with a public key from its NVS. It only
*verifies*: nothing secret ever lives on the charger for it, so timing leaks do not matter.

The curve and the algorithm are those of FIPS 186-5 (6.4.2, ECDSA signature verification) and
SEC 1 v2 (2.3.4, the uncompressed point ``04 || X || Y``)::

    y^2 = x^3 - 3x + b  (mod p),  G of prime order n, cofactor 1

    verify(Q, m, r, s):  1 <= r, s < n;  e = SHA-256(m);  w = s^-1 mod n
                         R = (e w mod n) G + (r w mod n) Q;  R != O;  x(R) mod n == r

Speed matters on an ESP32-C3 (a guest waits at the charger): points are kept in Jacobian
coordinates (X/Z^2, Y/Z^3: no inversion per step), added in "mixed" form to affine points,
and the two products are computed together by Shamir's trick (one chain of 256 doublings for
both scalars, one addition of G, Q or G+Q per bit). The last comparison is made without
leaving Jacobian coordinates (x(R) = X/Z^2: compare X with r Z^2). Two inversions in all:
s^-1 mod n, and G+Q to affine. ``public_key`` refuses a point that is not on the curve (an
invalid-curve point would make the check meaningless); with cofactor 1 every point on the
curve other than O has order n.

``verify`` returns True or False and never raises for a bad signature or message; a bad key is
refused once, when it is loaded (``public_key`` raises ValueError).
"""

import hashlib

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5

SIGNATURE_BYTES = 64  # r || s, 32 bytes each, big-endian (IEEE P1363; JOSE "ES256")
POINT_BYTES = 65  # 04 || X || Y


def _inverse(value: int, modulus: int) -> int:
    """``value``^-1 mod ``modulus`` (extended Euclid; ``pow(v, -1, m)`` is CPython-only)."""
    a, b = value % modulus, modulus
    x0, x1 = 1, 0
    while b:
        q = a // b
        a, b = b, a - q * b
        x0, x1 = x1, x0 - q * x1
    if a != 1:
        raise ValueError("not invertible")
    return x0 % modulus


def on_curve(x: int, y: int) -> bool:
    """True when (x, y) is a point of P-256 (both coordinates reduced)."""
    if not (0 <= x < P and 0 <= y < P):
        return False
    return (y * y - (x * x * x - 3 * x + B)) % P == 0


def public_key(data: bytes) -> "tuple[int, int]":
    """(x, y) of an uncompressed SEC 1 point (65 bytes, ``04 || x || y``); ValueError when it is
    not one, or not on the curve."""
    if len(data) != POINT_BYTES or data[0] != 4:
        raise ValueError("not an uncompressed P-256 point")
    x = int.from_bytes(data[1:33], "big")
    y = int.from_bytes(data[33:65], "big")
    if not on_curve(x, y):
        raise ValueError("the point is not on P-256")
    return (x, y)


def _double(x1: int, y1: int, z1: int) -> "tuple[int, int, int]":
    """2 (x1, y1, z1) in Jacobian coordinates, a = -3 ("dbl-2001-b")."""
    if not z1 or not y1:
        return 0, 1, 0
    p = P
    delta = z1 * z1 % p
    gamma = y1 * y1 % p
    beta = x1 * gamma % p
    alpha = 3 * (x1 - delta) * (x1 + delta) % p
    x3 = (alpha * alpha - 8 * beta) % p
    z3 = ((y1 + z1) * (y1 + z1) - gamma - delta) % p
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % p
    return x3, y3, z3


def _add_affine(x1: int, y1: int, z1: int, x2: int, y2: int) -> "tuple[int, int, int]":
    """(x1, y1, z1) + the affine (x2, y2), Jacobian result ("madd-2007-bl")."""
    if not z1:
        return x2, y2, 1
    p = P
    z1z1 = z1 * z1 % p
    u2 = x2 * z1z1 % p
    s2 = y2 * z1 * z1z1 % p
    h = (u2 - x1) % p
    r = 2 * (s2 - y1) % p
    if not h:
        if not r:
            return _double(x1, y1, z1)
        return 0, 1, 0  # P + (-P)
    hh = h * h % p
    i = 4 * hh % p
    j = h * i % p
    v = x1 * i % p
    x3 = (r * r - j - 2 * v) % p
    y3 = (r * (v - x3) - 2 * y1 * j) % p
    z3 = ((z1 + h) * (z1 + h) - z1z1 - hh) % p
    return x3, y3, z3


def _to_affine(x: int, y: int, z: int) -> "tuple[int, int]":
    zi = _inverse(z, P)
    zi2 = zi * zi % P
    return x * zi2 % P, y * zi2 * zi % P


def verify(key: "tuple[int, int]", message: bytes, signature: bytes) -> bool:
    """True when ``signature`` (64 bytes r || s) is ``key``'s ECDSA P-256/SHA-256 signature of
    ``message`` (bytes); ``key`` is what ``public_key`` returned."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < N and 0 < s < N):  # FIPS 186-5 6.4.2 step 1
        return False
    e = int.from_bytes(hashlib.sha256(message).digest(), "big")  # 256-bit hash: no truncation
    w = _inverse(s, N)
    u1 = e * w % N
    u2 = r * w % N
    qx, qy = key
    # Shamir's trick: the table holds G, Q and G + Q in affine form.
    sx, sy, sz = _add_affine(GX, GY, 1, qx, qy)
    # Q = -G makes G + Q = O: then a bit set in both scalars adds nothing.
    both = _to_affine(sx, sy, sz) if sz else None
    x, y, z = 0, 1, 0
    bit = 1 << 255  # (int.bit_length is CPython-only; doubling O costs nothing)
    while bit:
        x, y, z = _double(x, y, z)
        a = u1 & bit
        b = u2 & bit
        if a and b:
            if both is not None:  # (G + Q = O adds nothing)
                x, y, z = _add_affine(x, y, z, both[0], both[1])
        elif a:
            x, y, z = _add_affine(x, y, z, GX, GY)
        elif b:
            x, y, z = _add_affine(x, y, z, qx, qy)
        bit >>= 1
    if not z:
        return False  # R = O (step 5)
    # x(R) = x / z^2 (mod p); x(R) mod n == r means x(R) is r or r + n (x(R) < p < 2n).
    zz = z * z % P
    if r * zz % P == x:
        return True
    return r + N < P and (r + N) * zz % P == x
