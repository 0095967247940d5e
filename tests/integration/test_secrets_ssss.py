"""_shamir against the real Debian ssss 0.5 binaries, both ways.

Shares made here combine with ``ssss-combine``; shares made by ``ssss-split`` combine here.
The lengths cover both parities of n / 8 (ssss moves a byte for n % 16 == 8 in its diffusion
layer), the smallest field, the first with diffusion (64 bits), the custody key's 592
bits and the largest (1024 bits)."""

from __future__ import annotations

import random
import shutil
import subprocess

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _shamir

LENGTHS = [1, 2, 3, 7, 8, 9, 10, 15, 16, 17, 31, 32, 33, 63, 64, 74, 96, 127, 128]
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ "


def ssss(tool, *args, stdin):
    path = shutil.which(tool)
    assert path, "%s is missing: it comes with the Debian package ssss (scripts/install-os-deps.sh)" % tool
    return subprocess.run([path, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False)


def secret_of(length, rng):
    # ssss-split reads one line and strips the line end: no newline, no leading space.
    return rng.choice(ALPHABET[:-1]) + "".join(rng.choice(ALPHABET) for _position in range(length - 1))


@pytest.mark.parametrize("length", LENGTHS)
def test_our_shares_combine_with_ssss_combine(length):
    rng = random.Random(length)
    secret = secret_of(length, rng)
    threshold = 2 + length % 3
    count = threshold + 1 + length % 4
    lines = _shamir.split(secret.encode(), threshold, count, token="lb.%02x" % length if length % 2 else None)
    chosen = rng.sample(lines, threshold)
    proc = ssss("ssss-combine", "-t", str(threshold), "-Q", stdin="\n".join(chosen) + "\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.rstrip("\n") == secret


@pytest.mark.parametrize("length", LENGTHS)
def test_ssss_split_shares_combine_here(length):
    rng = random.Random(1000 + length)
    secret = secret_of(length, rng)
    threshold = 2 + length % 4
    count = threshold + length % 3
    args = ["-t", str(threshold), "-n", str(count), "-q"] + (["-w", "tok%d" % length] if length % 2 else [])
    proc = ssss("ssss-split", *args, stdin=secret + "\n")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert len(lines) == count
    assert _shamir.combine(rng.sample(lines, threshold)) == secret.encode()


def test_custody_key_shares_with_the_stock_tool_and_its_failures():
    """The custody key as it is shared: ssss-combine gets it back from any 2 of 3, and
    gives something that is not an age key from a share of another split."""
    identity = "AGE-SECRET-KEY-1" + "".join(random.choice("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L") for _position in range(58))
    first = _shamir.split(identity.encode(), 2, 3, token="vault.0011aabb.2of3")
    other = _shamir.split(identity.encode(), 2, 3, token="vault.ccdd3344.2of3")
    for pair in ([first[0], first[1]], [first[2], first[0]], [first[1], first[2]]):
        assert ssss("ssss-combine", "-t", "2", "-Q", stdin="\n".join(pair) + "\n").stderr.strip() == identity
    mixed = ssss("ssss-combine", "-t", "2", "-Q", stdin="%s\n%s\n" % (first[0], other[1]))
    assert not mixed.stderr.startswith("AGE-SECRET-KEY-1")
    short = ssss("ssss-combine", "-t", "2", "-Q", stdin=first[0] + "\n")
    assert short.returncode == 1 and "I/O error while reading shares" in short.stderr
