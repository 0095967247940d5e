# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Shamir's secret sharing, share for share what the Debian ``ssss`` 0.5 tools read and write.

Officers recover a secret split here with the stock ``ssss-combine -t M``, and shares made
by ``ssss-split`` combine here; the tests run the real binaries both ways. What ssss does,
and so what this module does:

- The field is GF(2^n), n = 8 * (secret length in bytes) for ASCII secrets (8 <= n <= 1024,
  a multiple of 8), reduced by ``x^n + x^a + x^b + x^c + 1`` with (a, b, c) from ssss's
  table of irreducible pentanomials (``IRREDUCIBLE`` below, one triple per n / 8).
  Elements are integers whose bit i is the coefficient of x^i.
- The secret (bytes, big-endian) first goes through a *diffusion layer* when n >= 64:
  an XTEA-shaped 64-bit permutation without a key, applied to overlapping 8-byte slices
  40 * n / 8 times (``_diffuse``). It makes every share bit depend on every secret bit;
  ``ssss-combine`` undoes it, so a split without it would combine into garbage.
- The polynomial is ``f(x) = x^M + c[M-1] x^(M-1) + ... + c[1] x + c[0]``: ssss's Horner
  loop starts from x, so a redundant ``x^M`` term rides along, and ``ssss-combine``
  adds ``x_i^M`` back before it solves for c[0]. Share i is ``f(i)`` for i = 1..N.
- A share is a line ``[token-]index-hex``: the index zero-padded to the width of N, the
  value as lowercase hex padded to n / 4 digits. ``ssss-combine`` ignores the token; this
  collection puts the custody name, id and ``MofN`` there so a wrong share is named before
  anything is combined.

Standard library only: the standalone bundle reader carries this file inside it.
"""

from __future__ import annotations

import os
import re

MAX_DEGREE = 1024
MAX_TOKEN = 128

# ssss.c's irred_coeff: for n = 8, 16, ..., 1024 the exponents (a, b, c) of the
# irreducible polynomial x^n + x^a + x^b + x^c + 1 that defines GF(2^n).
IRREDUCIBLE = (
    4, 3, 1, 5, 3, 1, 4, 3, 1, 7, 3, 2, 5, 4, 3, 5, 3, 2, 7, 4, 2, 4, 3, 1, 10, 9, 3, 9, 4, 2, 7, 6, 2, 10, 9,
    6, 4, 3, 1, 5, 4, 3, 4, 3, 1, 7, 2, 1, 5, 3, 2, 7, 4, 2, 6, 3, 2, 5, 3, 2, 15, 3, 2, 11, 3, 2, 9, 8, 7, 7,
    2, 1, 5, 3, 2, 9, 3, 1, 7, 3, 1, 9, 8, 3, 9, 4, 2, 8, 5, 3, 15, 14, 10, 10, 5, 2, 9, 6, 2, 9, 3, 2, 9, 5,
    2, 11, 10, 1, 7, 3, 2, 11, 2, 1, 9, 7, 4, 4, 3, 1, 8, 3, 1, 7, 4, 1, 7, 2, 1, 13, 11, 6, 5, 3, 2, 7, 3, 2,
    8, 7, 5, 12, 3, 2, 13, 10, 6, 5, 3, 2, 5, 3, 2, 9, 5, 2, 9, 7, 2, 13, 4, 3, 4, 3, 1, 11, 6, 4, 18, 9, 6,
    19, 18, 13, 11, 3, 2, 15, 9, 6, 4, 3, 1, 16, 5, 2, 15, 14, 6, 8, 5, 2, 15, 11, 2, 11, 6, 2, 7, 5, 3, 8,
    3, 1, 19, 16, 9, 11, 9, 6, 15, 7, 6, 13, 4, 3, 14, 13, 3, 13, 6, 3, 9, 5, 2, 19, 13, 6, 19, 10, 3, 11,
    6, 5, 9, 2, 1, 14, 3, 2, 13, 3, 1, 7, 5, 4, 11, 9, 8, 11, 6, 5, 23, 16, 9, 19, 14, 6, 23, 10, 2, 8, 3,
    2, 5, 4, 3, 9, 6, 4, 4, 3, 2, 13, 8, 6, 13, 11, 1, 13, 10, 3, 11, 6, 5, 19, 17, 4, 15, 14, 7, 13, 9, 6,
    9, 7, 3, 9, 7, 1, 14, 3, 2, 11, 8, 2, 11, 6, 4, 13, 5, 2, 11, 5, 1, 11, 4, 1, 19, 10, 3, 21, 10, 6, 13,
    3, 1, 15, 7, 5, 19, 18, 10, 7, 5, 3, 12, 7, 2, 7, 5, 1, 14, 9, 6, 10, 3, 2, 15, 13, 12, 12, 11, 9, 16,
    9, 7, 12, 9, 3, 9, 5, 2, 17, 10, 6, 24, 9, 3, 17, 15, 13, 5, 4, 3, 19, 17, 8, 15, 6, 3, 19, 6, 1,
)  # fmt: skip

_MASK32 = 0xFFFFFFFF
_DELTA = 0x9E3779B9
_SHARE_LINE = re.compile(r"^(?:(?P<token>[^-\s]*)-)?(?P<index>\d+)-(?P<value>[0-9a-fA-F]+)$")


class ShamirError(Exception):
    """A secret or a set of shares that cannot be split or combined; the message says why."""


def valid_degree(degree):
    return 8 <= degree <= MAX_DEGREE and degree % 8 == 0


class Field:
    """GF(2^degree) as ssss defines it."""

    def __init__(self, degree):
        if not valid_degree(degree):
            raise ShamirError("field size %d is not a multiple of 8 between 8 and %d bits" % (degree, MAX_DEGREE))
        a, b, c = IRREDUCIBLE[3 * (degree // 8 - 1) : 3 * (degree // 8)]
        self.degree = degree
        self.poly = (1 << degree) | (1 << a) | (1 << b) | (1 << c) | 1

    def mul(self, x, y):
        product = 0
        top = 1 << self.degree
        while y:
            if y & 1:
                product ^= x
            y >>= 1
            x <<= 1
            if x & top:
                x ^= self.poly
        return product

    def inverse(self, x):
        """Extended Euclid over GF(2)[x], as ssss's field_invert."""
        if not x:
            raise ShamirError("zero has no inverse")
        u, v, g, z = x, self.poly, 0, 1
        while u != 1:
            shift = u.bit_length() - v.bit_length()
            if shift < 0:
                u, v, g, z = v, u, z, g
                shift = -shift
            u ^= v << shift
            z ^= g << shift
        return z

    def power(self, x, exponent):
        result = 1
        for _step in range(exponent):
            result = self.mul(result, x)
        return result


# ---- the diffusion layer (ssss's encode_mpz) ------------------------------------------------


def _encipher(v0, v1):
    total = 0
    for _round in range(32):
        v0 = (v0 + ((((v1 << 4) ^ (v1 >> 5)) + v1) ^ total)) & _MASK32
        total = (total + _DELTA) & _MASK32
        v1 = (v1 + ((((v0 << 4) ^ (v0 >> 5)) + v0) ^ total)) & _MASK32
    return v0, v1


def _decipher(v0, v1):
    total = (_DELTA * 32) & _MASK32
    for _round in range(32):
        v1 = (v1 - ((((v0 << 4) ^ (v0 >> 5)) + v0) ^ total)) & _MASK32
        total = (total - _DELTA) & _MASK32
        v0 = (v0 - ((((v1 << 4) ^ (v1 >> 5)) + v1) ^ total)) & _MASK32
    return v0, v1


def _process_slice(data, start, length, block):
    """Permute the 8 bytes at ``start`` (wrapping at ``length``) as two big-endian words."""
    if start + 8 <= length:
        v0, v1 = block(int.from_bytes(data[start : start + 4], "big"), int.from_bytes(data[start + 4 : start + 8], "big"))
        data[start : start + 8] = v0.to_bytes(4, "big") + v1.to_bytes(4, "big")
        return
    positions = [(start + k) % length for k in range(8)]
    words = bytes(data[p] for p in positions)
    v0, v1 = block(int.from_bytes(words[:4], "big"), int.from_bytes(words[4:], "big"))
    for position, byte in zip(positions, v0.to_bytes(4, "big") + v1.to_bytes(4, "big")):
        data[position] = byte


def _diffuse(value, degree, encode):
    """ssss's encode_mpz: the value is laid out as 16-bit big-endian words, least significant
    word first; for n % 16 == 8 the top word's low byte moves down one place so that the
    n / 8 bytes are contiguous; then 8-byte slices at every even offset are permuted,
    40 * n / 8 times in all, wrapping around the end."""
    words = (degree + 8) // 16
    length = degree // 8
    data = bytearray(2 * words)
    for w in range(words):
        word = (value >> (16 * w)) & 0xFFFF
        data[2 * w], data[2 * w + 1] = word >> 8, word & 0xFF
    if degree % 16 == 8:
        data[length - 1] = data[length]
    rounds = range(0, 40 * length, 2) if encode else range(40 * length - 2, -1, -2)
    block = _encipher if encode else _decipher
    for start in rounds:
        _process_slice(data, start, length, block)
    if degree % 16 == 8:
        data[length] = data[length - 1]
        data[length - 1] = 0
    result = 0
    for w in range(words):
        result |= ((data[2 * w] << 8) | data[2 * w + 1]) << (16 * w)
    return result


# ---- splitting and combining -------------------------------------------------------------


def _check_token(token):
    if token is None:
        return
    if len(token) > MAX_TOKEN or "-" in token or not token or any(ch.isspace() for ch in token):
        raise ShamirError("share token %r must be 1 to %d characters without '-' or spaces" % (token, MAX_TOKEN))


def split(secret, threshold, shares, token=None, diffusion=True, randbytes=os.urandom):
    """Split ``secret`` (bytes, as ssss-split reads an ASCII secret) into ``shares`` lines,
    any ``threshold`` of which give it back with ``ssss-combine -t threshold``."""
    if threshold < 2:
        raise ShamirError("the threshold must be at least 2 (ssss cannot combine fewer)")
    if shares < threshold:
        raise ShamirError("%d shares cannot reach a threshold of %d" % (shares, threshold))
    if not secret or secret[0] == 0:
        raise ShamirError("the secret must be non-empty and must not start with a zero byte")
    _check_token(token)
    field = Field(8 * len(secret))
    coefficients = [int.from_bytes(secret, "big")]
    if diffusion and field.degree >= 64:
        coefficients[0] = _diffuse(coefficients[0], field.degree, True)
    for _coefficient in range(1, threshold):
        coefficients.append(int.from_bytes(randbytes(field.degree // 8), "big"))
    width = len(str(shares))
    lines = []
    for index in range(1, shares + 1):
        value = index  # Horner from x: f(x) = x^M + c[M-1] x^(M-1) + ... + c[0]
        for coefficient in reversed(coefficients[1:]):
            value = field.mul(value ^ coefficient, index)
        value ^= coefficients[0]
        line = "%0*d-%0*x" % (width, index, field.degree // 4, value)
        lines.append("%s-%s" % (token, line) if token is not None else line)
    return lines


def parse_share(line):
    """(token or None, index, value, degree) of one share line; ShamirError if malformed."""
    text = line.strip()
    match = _SHARE_LINE.match(text)
    if not match:
        raise ShamirError("not a share line (expected [token-]index-hexdigits)")
    index = int(match.group("index"))
    degree = 4 * len(match.group("value"))
    if not index:
        raise ShamirError("share index 0 is invalid")
    if not valid_degree(degree):
        raise ShamirError("share has an illegal length (%d hex digits)" % len(match.group("value")))
    return match.group("token"), index, int(match.group("value"), 16), degree


def combine(lines, diffusion=True):
    """The secret (bytes) from share lines, as ``ssss-combine -t len(lines)`` computes it.

    Like ssss, a wrong or missing share cannot be detected here: it yields another value.
    Callers check the result (this collection's secret is an age identity with a checksum)."""
    parsed = [parse_share(line) for line in lines]
    if len(parsed) < 2:
        raise ShamirError("at least 2 shares are needed")
    degrees = {p[3] for p in parsed}
    if len(degrees) != 1:
        raise ShamirError("the shares have different security levels (lengths): they do not belong together")
    indexes = [p[1] for p in parsed]
    if len(set(indexes)) != len(indexes):
        raise ShamirError("share number %d is given twice" % next(i for i in indexes if indexes.count(i) > 1))
    field = Field(degrees.pop())
    threshold = len(parsed)
    # g(x) = f(x) - x^M has degree M - 1: Lagrange interpolation at 0 gives c[0].
    points = [(x, y ^ field.power(x, threshold)) for _token, x, y, _degree in parsed]
    secret = 0
    for i, (xi, yi) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (xj, _yj) in enumerate(points):
            if i != j:
                numerator = field.mul(numerator, xj)
                denominator = field.mul(denominator, xj ^ xi)
        secret ^= field.mul(yi, field.mul(numerator, field.inverse(denominator)))
    if diffusion and field.degree >= 64:
        secret = _diffuse(secret, field.degree, False)
    return secret.to_bytes((secret.bit_length() + 7) // 8, "big")
