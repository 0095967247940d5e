"""The age format layer, checked against the two reference implementations (the age
binary and pyrage) in both directions, plus tampering and misuse."""

from __future__ import annotations

import io
import os
import subprocess

import pyrage
import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _age

SIZES = [0, 1, 65535, 65536, 65537, 3 * 65536, 200_000]


@pytest.fixture(scope="module")
def keypair():
    return _age.generate_identity()


def encrypt(data, **kwargs):
    out = io.BytesIO()
    writer = _age.AgeWriter(out, **kwargs)
    for start in range(0, len(data), 7000):  # odd-sized writes cross chunk boundaries
        writer.write(data[start : start + 7000])
    writer.close()
    return out.getvalue()


def decrypt(blob, **kwargs):
    return _age.AgeReader(io.BytesIO(blob), **kwargs).read()


@pytest.mark.parametrize("size", SIZES)
def test_x25519_readable_by_age_binary_and_pyrage(tmp_path, keypair, size):
    identity, recipient = keypair
    data = os.urandom(size)
    blob = encrypt(data, recipients=[recipient])
    key = tmp_path / "key.txt"
    key.write_text(identity + "\n")
    out = subprocess.run(["age", "-d", "-i", str(key)], input=blob, capture_output=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout == data
    assert pyrage.decrypt(blob, [pyrage.x25519.Identity.from_str(identity)]) == data


@pytest.mark.parametrize("size", SIZES)
def test_reads_what_age_binary_and_pyrage_write(keypair, size):
    identity, recipient = keypair
    data = os.urandom(size)
    by_age = subprocess.run(["age", "-r", recipient], input=data, capture_output=True, check=True).stdout
    assert decrypt(by_age, identities=_age.parse_identities(identity)) == data


@pytest.mark.parametrize("size", [0, 65536, 100_000])
def test_reads_pyrage_passphrase_files(size):
    # pyrage picks a work factor that takes about a second: keep the sizes few.
    data = os.urandom(size)
    by_pyrage = pyrage.passphrase.encrypt(data, "correct horse battery")
    assert decrypt(by_pyrage, passphrase="correct horse battery") == data


@pytest.mark.parametrize("size", [0, 65536, 100_000])
def test_passphrase_readable_by_pyrage(size):
    data = os.urandom(size)
    blob = encrypt(data, passphrase="correct horse battery", work_factor=10)
    assert pyrage.passphrase.decrypt(blob, "correct horse battery") == data


def test_several_recipients_each_can_read():
    first, second = _age.generate_identity(), _age.generate_identity()
    blob = encrypt(b"shared", recipients=[first[1], second[1]])
    for identity, _recipient in (first, second):
        assert decrypt(blob, identities=_age.parse_identities(identity)) == b"shared"


def test_wrong_passphrase_is_named():
    blob = encrypt(b"secret", passphrase="correct horse battery", work_factor=10)
    with pytest.raises(_age.AgeError, match="wrong passphrase"):
        decrypt(blob, passphrase="wrong horse battery")


def test_wrong_identity_is_named(keypair):
    blob = encrypt(b"secret", recipients=[keypair[1]])
    other = _age.generate_identity()[0]
    with pytest.raises(_age.AgeError, match="no identity matches"):
        decrypt(blob, identities=_age.parse_identities(other))


def test_passphrase_for_recipient_file_says_what_is_needed(keypair):
    blob = encrypt(b"secret", recipients=[keypair[1]])
    with pytest.raises(_age.AgeError, match="identity"):
        decrypt(blob, passphrase="whatever12")


@pytest.mark.parametrize("where", ["header", "payload-first", "payload-last"])
def test_any_flipped_byte_fails_authentication(keypair, where):
    data = os.urandom(3 * 65536 + 10)
    blob = bytearray(encrypt(data, recipients=[keypair[1]]))
    header_end = blob.index(b"\n---") + 1
    position = {"header": 30, "payload-first": header_end + 60, "payload-last": len(blob) - 3}[where]
    blob[position] ^= 0x01
    with pytest.raises(_age.AgeError):
        decrypt(bytes(blob), identities=_age.parse_identities(keypair[0]))


def test_truncation_at_a_chunk_boundary_is_detected(keypair):
    data = os.urandom(3 * 65536)
    blob = encrypt(data, recipients=[keypair[1]])
    header_len = len(blob) - (3 * (65536 + 16))
    cut = blob[: header_len + 2 * (65536 + 16)]
    with pytest.raises(_age.AgeError, match="truncated|last chunk"):
        decrypt(cut, identities=_age.parse_identities(keypair[0]))


def test_small_reads_return_the_same_bytes(keypair):
    data = os.urandom(150_000)
    reader = _age.AgeReader(io.BytesIO(encrypt(data, recipients=[keypair[1]])), identities=_age.parse_identities(keypair[0]))
    parts = []
    while True:
        part = reader.read(10240)
        if not part:
            break
        parts.append(part)
    assert b"".join(parts) == data


def test_misuse_is_refused(keypair):
    with pytest.raises(_age.AgeError):
        _age.AgeWriter(io.BytesIO(), recipients=[keypair[1]], passphrase="both are wrong")
    with pytest.raises(_age.AgeError, match="not a valid age X25519 recipient"):
        _age.parse_recipient("age1notakey")
    with pytest.raises(_age.AgeError, match="no age identity"):
        _age.parse_identities("# only a comment\n")
    with pytest.raises(_age.AgeError, match="not an age file"):
        decrypt(b"PK\x03\x04 this is a zip", passphrase="x")


def test_bech32_round_trip_and_checksum():
    encoded = _age.bech32_encode("age", bytes(range(32)))
    assert _age.bech32_decode(encoded) == ("age", bytes(range(32)))
    broken = encoded[:-1] + ("q" if encoded[-1] != "q" else "p")
    with pytest.raises(_age.AgeError, match="checksum"):
        _age.bech32_decode(broken)
