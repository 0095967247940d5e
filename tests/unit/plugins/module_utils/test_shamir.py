"""_shamir: Shamir's secret sharing as the Debian ssss 0.5 tools do it.

The vectors below were made by the real ``ssss-split`` (Debian package ssss 0.5-5); the
integration test tests/integration/test_secrets_ssss.py runs the binaries both ways.
"""

from __future__ import annotations

import itertools
import os
import random

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _shamir

# ssss-split -t 3 -n 5 -w vault.0123abcd.3of5 (592-bit field, diffusion on)
IDENTITY = b"AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQS3Z6R7T"
IDENTITY_SHARES = [
    "vault.0123abcd.3of5-1-24a3a8be0cbc51c0e7ecd9fcc48222ed6fd17eb33ef2c4d33c248530dc208ae"
    "7f5dcee99adec9a73ea40942bc3cc325fdcd3150cc3074a388ee72096908cdbcb51b39dfcb3f4fd5e2dde",
    "vault.0123abcd.3of5-2-170c9a4ef3d94545394e321faf28bf94264b413b816c708ef5a2d88b188ba46"
    "7d33aca63715184610ae7d8e741cee2ceb6bfefdb10424b20cadd5c914caf80dea46e60df583a6d5c5a6b",
    "vault.0123abcd.3of5-3-81de6f3766cf45abc0eebaf0a8eaf5c8e4b003ee2e08d9e27c5c1759f3d5357"
    "a3612ec0183ff59484b2423e46deb016ef3df8aa083909e9265e4d149f064bbf74b1be88e15a05803ab59",
    "vault.0123abcd.3of5-4-dbea673c4c302f2301455c429420c88a81b7250588af687c7b3f59038db7125"
    "9b111f4bc2e5c248962c707906a14665b509b1a424d33c9e1221ae748886f79259a9b68084744bd33a3cb",
    "vault.0123abcd.3of5-5-4d389245d9262fcdf8e5d4ad93e282d6434c67d027cbc110f2c196d166e9834"
    "45439d2dedcf2f9a02304fc93463185fb15fb7f39dee11c538d236a9034a4420c75eee0590ade886c52eb",
]
# ssss-split -t 2 -n 3 (128-bit field)
HELLO_SHARES = ["1-1b18e22416b4aa2f048b80135040c2e2", "2-4cbd088f287a8d4bf8661127e78b6717", "3-81de51163dc0906853c29e347532043b"]
# ssss-split -t 2 -n 2 of "ab" (16-bit field: too small for the diffusion layer)
SHORT_SHARES = ["1-b949", "2-d119"]


@pytest.mark.parametrize("subset", list(itertools.combinations(range(5), 3)))
def test_any_three_real_ssss_shares_give_the_secret(subset):
    assert _shamir.combine([IDENTITY_SHARES[i] for i in subset]) == IDENTITY


def test_real_vectors_without_token_and_below_the_diffusion_size():
    assert _shamir.combine(HELLO_SHARES[1:]) == b"hello world 1234"
    assert _shamir.combine(SHORT_SHARES) == b"ab"


def test_too_few_shares_give_something_else():
    # Like ssss-combine -t 2 given two shares of a 3-threshold split: no error, another value.
    assert _shamir.combine(IDENTITY_SHARES[:2]) != IDENTITY


@pytest.mark.parametrize("length", [1, 8, 9, 17, 74, 128])
@pytest.mark.parametrize("threshold,count", [(2, 2), (3, 5), (5, 12)])
def test_split_then_combine_any_subset(length, threshold, count):
    rng = random.Random(length * 100 + threshold)
    secret = bytes(rng.randrange(33, 127) for _position in range(length))
    lines = _shamir.split(secret, threshold, count, token="t.%d" % length)
    assert len(lines) == count
    width = len(str(count))
    for number, line in enumerate(lines, 1):
        token, index, _value = line.split("-")
        assert token == "t.%d" % length and index == "%0*d" % (width, number)
        assert len(line.rsplit("-", 1)[1]) == 2 * length  # n / 4 hex digits
    for subset in [lines[-threshold:], rng.sample(lines, threshold)]:
        assert _shamir.combine(subset) == secret


@pytest.mark.parametrize("degree", [64, 72, 136, 592, 1024])
def test_diffusion_layer_is_a_permutation(degree):
    rng = random.Random(degree)
    for _round in range(2):
        value = rng.getrandbits(degree)
        mixed = _shamir._diffuse(value, degree, True)
        assert mixed.bit_length() <= degree
        assert mixed != value
        assert _shamir._diffuse(mixed, degree, False) == value


@pytest.mark.parametrize("degree", [8, 16, 64, 592, 1024])
def test_field_inverse(degree):
    field = _shamir.Field(degree)
    rng = random.Random(degree)
    for _round in range(10):
        x = rng.getrandbits(degree) or 1
        assert field.mul(x, field.inverse(x)) == 1


def test_shares_are_random():
    assert _shamir.split(b"same secret!", 2, 3) != _shamir.split(b"same secret!", 2, 3)
    fixed = _shamir.split(b"same secret!", 2, 3, randbytes=lambda n: b"\x01" * n)
    assert fixed == _shamir.split(b"same secret!", 2, 3, randbytes=lambda n: b"\x01" * n)


@pytest.mark.parametrize(
    "args,message",
    [
        ((b"secret", 1, 3), "at least 2"),
        ((b"secret", 3, 2), "cannot reach"),
        ((b"", 2, 3), "non-empty"),
        ((b"\x00abc", 2, 3), "zero byte"),
        ((b"x" * 129, 2, 3), "between 8 and 1024"),
    ],
)
def test_split_refuses(args, message):
    with pytest.raises(_shamir.ShamirError, match=message):
        _shamir.split(*args)


@pytest.mark.parametrize("token", ["a-b", "", "x" * 129, "has space"])
def test_split_refuses_tokens_ssss_cannot_read(token):
    with pytest.raises(_shamir.ShamirError, match="token"):
        _shamir.split(b"secret", 2, 3, token=token)


@pytest.mark.parametrize(
    "lines,message",
    [
        (["1-abcd"], "at least 2"),
        (["1-abcd", "1-1234"], "given twice"),
        (["1-abcd", "2-12345678"], "different security levels"),
        (["1-abc", "2-def"], "illegal length"),
        (["0-abcd", "2-1234"], "index 0"),
        (["junk", "2-1234"], "not a share line"),
    ],
)
def test_combine_refuses(lines, message):
    with pytest.raises(_shamir.ShamirError, match=message):
        _shamir.combine(lines)


def test_parse_share_accepts_what_ssss_combine_reads():
    assert _shamir.parse_share("tok.en-01-00ff\n") == ("tok.en", 1, 255, 16)
    assert _shamir.parse_share("3-ABCD") == (None, 3, 0xABCD, 16)


def test_irreducible_table_matches_the_ssss_field_sizes():
    assert len(_shamir.IRREDUCIBLE) == 3 * (_shamir.MAX_DEGREE // 8)
    for degree in range(8, _shamir.MAX_DEGREE + 1, 8):
        a, b, c = _shamir.IRREDUCIBLE[3 * (degree // 8 - 1) : 3 * (degree // 8)]
        assert degree > a > b > c > 0


def test_split_uses_os_random_by_default():
    assert _shamir.split.__defaults__[-1] is os.urandom
