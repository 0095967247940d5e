"""_age against the C2SP age test vectors (CCTV, https://c2sp.org/CCTV/age).

Every vector of the pinned set runs (tests/harness/fetch.py fetches and caches them; they
are not in the repository). What each vector expects:

- ``success``: the whole payload decrypts and hashes to the vector's ``payload``;
- ``header failure``, ``no match``, ``HMAC failure``: AgeReader refuses the file before
  releasing any plaintext, and for the same reason (a parsing error is not reported as a
  wrong key, a wrong key not as an altered header);
- ``payload failure``: the header is accepted, reading fails, and what was released before
  the failure hashes to ``payload``.

Two features of age are not implemented, on purpose: the ASCII armor (image members are
binary) and the post-quantum hybrid recipients (mlkem768x25519, identities
``AGE-SECRET-KEY-PQ-1...``). Their vectors run too: each must be refused before any
plaintext is released, never decrypted and never misread.
"""

from __future__ import annotations

import hashlib
import io
import zlib

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _age
from tests.harness import fetch

VECTORS = fetch.ensure_cctv_age()
NAMES = sorted(p.name for p in VECTORS.iterdir())
X25519_PREFIX = "AGE-SECRET-KEY-1"


def load(name):
    raw = (VECTORS / name).read_bytes()
    head, _sep, body = raw.partition(b"\n\n")
    fields = {}
    for line in head.decode().splitlines():
        key, _sep, value = line.partition(": ")
        fields.setdefault(key, []).append(value)
    if fields.get("compressed") == ["zlib"]:
        body = zlib.decompress(body)
    return fields, body


def open_reader(fields, body):
    identities = [i for i in fields.get("identity", []) if i.startswith(X25519_PREFIX)]
    keys = _age.parse_identities("\n".join(identities)) if identities else None
    passphrases = fields.get("passphrase", [])
    return _age.AgeReader(io.BytesIO(body), identities=keys, passphrase=passphrases[0] if passphrases else None)


def read_until_failure(reader):
    """Read in small pieces; return (plaintext released, the AgeError or None)."""
    released = bytearray()
    try:
        while True:
            piece = reader.read(4096)
            if not piece:
                return bytes(released), None
            released += piece
    except _age.AgeError as exc:
        return bytes(released), exc


REFUSALS = {"header failure": _age.AgeHeaderError, "no match": _age.KeyMismatch, "HMAC failure": _age.AgeMacError}


def unsupported(fields):
    """Why this implementation cannot read the vector by design, or None."""
    if fields.get("armored") == ["yes"]:
        return "armored"
    identities = fields.get("identity", [])
    if identities and not any(i.startswith(X25519_PREFIX) for i in identities):
        return "hybrid"
    return None


def test_the_whole_set_is_there():
    # A pinned zip with fewer vectors (or an empty directory) must not pass quietly.
    assert len(NAMES) == 143
    kinds = {load(n)[0]["expect"][0] for n in NAMES}
    assert kinds == {"success", "header failure", "no match", "HMAC failure", "payload failure", "armor failure"}


@pytest.mark.parametrize("name", NAMES)
def test_vector(name):
    fields, body = load(name)
    expect = fields["expect"][0]
    payload_sha256 = fields.get("payload", [None])[0]
    reason = unsupported(fields)
    if reason:
        with pytest.raises(_age.AgeError) as refused:
            open_reader(fields, body)
        if body.strip().startswith(b"-----BEGIN AGE ENCRYPTED FILE-----"):
            assert "ASCII-armored" in str(refused.value)
        return
    if expect in ("header failure", "no match", "HMAC failure"):
        with pytest.raises(REFUSALS[expect]):
            open_reader(fields, body)
        return
    reader = open_reader(fields, body)
    released, error = read_until_failure(reader)
    if expect == "success":
        assert error is None, str(error)
    else:
        assert expect == "payload failure"
        assert isinstance(error, _age.AgePayloadError), "a corrupt payload was read to the end"
    assert hashlib.sha256(released).hexdigest() == payload_sha256
