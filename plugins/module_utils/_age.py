# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Streaming reader and writer for the age v1 file format (https://age-encryption.org/v1).

Why not pyrage or the age binary: pyrage encrypts to a passphrase only from a bytes
object (no streaming), and the age binary reads passphrases from a terminal only.
Both remain the reference implementations the tests check this module against, in
both directions. The primitives come from the ``cryptography`` library; nothing here
invents cryptography, it only frames it as the age specification says.

Supported recipient types: X25519 (``age1...`` / ``AGE-SECRET-KEY-1...``) and scrypt
(passphrase). Output is readable by ``age -d`` and pyrage.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
import traceback

from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError

CRYPTOGRAPHY_IMPORT_ERROR = None
try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - reported by the modules with missing_required_lib
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()

VERSION_LINE = b"age-encryption.org/v1"
CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
DEFAULT_WORK_FACTOR = 18  # age's own default: 2**18 scrypt rounds, ~256 MiB, ~1 s
MAX_WORK_FACTOR = 22  # what age accepts when decrypting
_B64_COLUMNS = 64


class AgeError(LifeboatError):
    """Any failure to read or write an age file; the message says what and why."""


class KeyMismatch(AgeError):
    """The key given (passphrase or identities) does not open the file, or none was given.
    Nothing is wrong with the file itself: callers must not call it damaged."""


# ---- bech32 (BIP 173), as used by age for its key encodings -----------------------

_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _bech32_polymod(values):
    generator = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= generator[i] if ((top >> i) & 1) else 0
    return chk


def _bech32_hrp_expand(hrp):
    return [ord(x) >> 5 for x in hrp] + [0] + [ord(x) & 31 for x in hrp]


def _convert_bits(data, from_bits, to_bits, pad):
    acc = 0
    bits = 0
    out = []
    maxv = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad and bits:
        out.append((acc << (to_bits - bits)) & maxv)
    elif not pad and (bits >= from_bits or ((acc << (to_bits - bits)) & maxv)):
        raise AgeError("invalid bech32 padding")
    return out


def bech32_encode(hrp, data):
    values = _convert_bits(data, 8, 5, True)
    polymod = _bech32_polymod(_bech32_hrp_expand(hrp) + values + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32_CHARSET[d] for d in values + checksum)


def bech32_decode(text):
    if text.lower() != text and text.upper() != text:
        raise AgeError("mixed-case bech32 string")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text):
        raise AgeError("malformed bech32 string")
    hrp = text[:pos]
    try:
        values = [_BECH32_CHARSET.index(c) for c in text[pos + 1 :]]
    except ValueError:
        raise AgeError("invalid bech32 character") from None
    if _bech32_polymod(_bech32_hrp_expand(hrp) + values) != 1:
        raise AgeError("bad bech32 checksum (typo in the key?)")
    return hrp, bytes(_convert_bits(values[:-6], 5, 8, False))


# ---- keys ------------------------------------------------------------------------------


def _require_crypto():
    if not HAS_CRYPTOGRAPHY:
        raise AgeError("the Python 'cryptography' library is required for age encryption on this host")


def generate_identity():
    """Return (identity 'AGE-SECRET-KEY-1...', recipient 'age1...') for a fresh X25519 key."""
    _require_crypto()
    key = X25519PrivateKey.generate()
    secret = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return bech32_encode("age-secret-key-", secret).upper(), recipient_of(key)


def recipient_of(private_key):
    public = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return bech32_encode("age", public)


def parse_recipient(text):
    """Parse an 'age1...' recipient into an X25519 public key; raise AgeError naming the problem."""
    _require_crypto()
    text = text.strip()
    try:
        hrp, data = bech32_decode(text)
    except AgeError as exc:
        raise AgeError("recipient %r is not a valid age X25519 recipient: %s" % (_shorten(text), exc)) from None
    if hrp != "age" or len(data) != 32:
        raise AgeError("recipient %r is not an age X25519 recipient (expected 'age1...')" % _shorten(text))
    return X25519PublicKey.from_public_bytes(data)


def parse_identities(text):
    """Parse identity file content: 'AGE-SECRET-KEY-1...' lines, '#' comments and blank lines."""
    _require_crypto()
    keys = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            hrp, data = bech32_decode(line)
        except AgeError as exc:
            raise AgeError("identity line %d is not a valid age identity: %s" % (lineno, exc)) from None
        if hrp != "age-secret-key-" or len(data) != 32:
            raise AgeError("identity line %d is not an age X25519 identity (expected 'AGE-SECRET-KEY-1...')" % lineno)
        keys.append(X25519PrivateKey.from_private_bytes(data))
    if not keys:
        raise AgeError("no age identity (AGE-SECRET-KEY-1...) found in the identity data")
    return keys


def _shorten(text):
    return text if len(text) <= 16 else text[:12] + "..."


# ---- primitives --------------------------------------------------------------------


def _hkdf(ikm, salt, info, length=32):
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _b64(data):
    return base64.b64encode(data).rstrip(b"=")


def _unb64(data):
    if b"=" in data or b"\n" in data or b"\r" in data:
        raise AgeError("invalid base64 in age header")
    try:
        return base64.b64decode(data + b"=" * (-len(data) % 4), validate=True)
    except ValueError:
        raise AgeError("invalid base64 in age header") from None


def _wrap_body(body):
    encoded = _b64(body)
    lines = [encoded[i : i + _B64_COLUMNS] for i in range(0, len(encoded), _B64_COLUMNS)]
    # The last line of a stanza body is always shorter than 64 columns, possibly empty.
    if not lines or len(lines[-1]) == _B64_COLUMNS:
        lines.append(b"")
    return b"\n".join(lines) + b"\n"


def _seal_key(key, plaintext):
    return ChaCha20Poly1305(key).encrypt(b"\x00" * 12, plaintext, None)


def _open_key(key, ciphertext):
    return ChaCha20Poly1305(key).decrypt(b"\x00" * 12, ciphertext, None)


def _x25519_stanza(file_key, public_key):
    ephemeral = X25519PrivateKey.generate()
    share = ephemeral.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    recipient = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    shared = ephemeral.exchange(public_key)
    wrap_key = _hkdf(shared, share + recipient, b"age-encryption.org/v1/X25519")
    return [b"X25519", _b64(share)], _seal_key(wrap_key, file_key)


def _scrypt_key(passphrase, salt, work_factor):
    label_salt = b"age-encryption.org/v1/scrypt" + salt
    return Scrypt(salt=label_salt, length=32, n=2**work_factor, r=8, p=1).derive(passphrase)


def _scrypt_stanza(file_key, passphrase, work_factor):
    salt = os.urandom(16)
    wrap_key = _scrypt_key(passphrase, salt, work_factor)
    return [b"scrypt", _b64(salt), str(work_factor).encode()], _seal_key(wrap_key, file_key)


def _header_mac(file_key, header_without_mac):
    mac_key = _hkdf(file_key, b"", b"header")
    return hmac.new(mac_key, header_without_mac, hashlib.sha256).digest()


def _nonce(counter, last):
    return struct.pack(">Q", counter)[-8:].rjust(11, b"\x00") + (b"\x01" if last else b"\x00")


def _to_bytes(passphrase):
    return passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase


# ---- writer ------------------------------------------------------------------------


class AgeWriter:
    """Encrypt a stream into ``sink`` (anything with ``write``). Call ``close()`` to finish.

    Exactly one of ``recipients`` (X25519 public keys or 'age1...' strings) or ``passphrase``.
    """

    def __init__(self, sink, recipients=None, passphrase=None, work_factor=DEFAULT_WORK_FACTOR):
        _require_crypto()
        if bool(recipients) == (passphrase is not None):
            raise AgeError("give either recipients or a passphrase for an age file, not both and not neither")
        self._sink = sink
        file_key = os.urandom(16)
        if passphrase is not None:
            stanzas = [_scrypt_stanza(file_key, _to_bytes(passphrase), work_factor)]
        else:
            keys = [parse_recipient(r) if isinstance(r, str) else r for r in recipients]
            stanzas = [_x25519_stanza(file_key, key) for key in keys]
        header = VERSION_LINE + b"\n"
        for args, body in stanzas:
            header += b"-> " + b" ".join(args) + b"\n" + _wrap_body(body)
        header += b"---"
        header += b" " + _b64(_header_mac(file_key, header)) + b"\n"
        nonce = os.urandom(16)
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._counter = 0
        self._pending = bytearray()
        self._closed = False
        sink.write(header + nonce)

    def write(self, data):
        if self._closed:
            raise ValueError("write to a closed AgeWriter")
        pending = self._pending
        pending += data
        # Hold back at least one full chunk: the final chunk must carry the "last" flag,
        # and only close() knows which chunk is final.
        if len(pending) > CHUNK_SIZE:
            view = memoryview(pending)
            end = ((len(pending) - 1) // CHUNK_SIZE) * CHUNK_SIZE
            out = []
            for start in range(0, end, CHUNK_SIZE):
                out.append(self._aead.encrypt(_nonce(self._counter, False), view[start : start + CHUNK_SIZE], None))
                self._counter += 1
            view.release()
            del pending[:end]
            self._sink.write(b"".join(out))
        return len(data)

    def close(self):
        if self._closed:
            return
        self._closed = True
        self._sink.write(self._aead.encrypt(_nonce(self._counter, True), bytes(self._pending), None))
        self._pending = bytearray()


# ---- reader ------------------------------------------------------------------------


def _read_line(source, limit=4096):
    line = bytearray()
    while not line.endswith(b"\n"):
        ch = source.read(1)
        if not ch:
            raise AgeError("truncated age header (file cut short?)")
        line += ch
        if len(line) > limit:
            raise AgeError("malformed age header (line too long)")
    return bytes(line[:-1])


def _parse_header(source):
    """Return (stanzas, header_bytes_for_mac, mac). stanzas: list of (args, body)."""
    try:
        first = _read_line(source, limit=len(VERSION_LINE) + 1)
    except AgeError:
        first = b"?"
    if first != VERSION_LINE:
        raise AgeError("not an age file, or an unsupported age version (first line %r)" % first[:40])
    raw = first + b"\n"
    stanzas = []
    line = _read_line(source)
    while line.startswith(b"-> "):
        raw += line + b"\n"
        args = line[3:].split(b" ")
        body = b""
        while True:
            body_line = _read_line(source)
            raw += body_line + b"\n"
            if len(body_line) > _B64_COLUMNS:
                raise AgeError("malformed age header (stanza line too long)")
            body += body_line
            if len(body_line) < _B64_COLUMNS:
                break
        stanzas.append((args, _unb64(body) if body else b""))
        line = _read_line(source)
    if not line.startswith(b"--- "):
        raise AgeError("malformed age header (missing MAC line)")
    raw += b"---"
    mac = _unb64(line[4:])
    return stanzas, raw, mac


class AgeReader:
    """Decrypt an age stream from ``source``; ``read()`` returns authenticated plaintext only.

    Each 64 KiB chunk is authenticated before any of it is returned; a truncated or
    altered file raises AgeError, never returns silently short data.
    """

    def __init__(self, source, identities=None, passphrase=None, max_work_factor=MAX_WORK_FACTOR):
        _require_crypto()
        self._source = source
        stanzas, raw, mac = _parse_header(source)
        file_key = self._unwrap(stanzas, identities or [], passphrase, max_work_factor)
        if not hmac.compare_digest(_header_mac(file_key, raw), mac):
            raise AgeError("age header MAC mismatch: the header was altered or the file key is wrong")
        nonce = source.read(16)
        if len(nonce) != 16:
            raise AgeError("truncated age file (no payload nonce)")
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._counter = 0
        self._buffer = b""
        self._pos = 0
        self._done = False
        self._lookahead = source.read(CHUNK_SIZE + TAG_SIZE)

    @staticmethod
    def _unwrap(stanzas, identities, passphrase, max_work_factor):
        kinds = [args[0] for args, _body in stanzas if args]
        if b"scrypt" in kinds:
            if len(stanzas) != 1:
                raise AgeError("malformed age header: a scrypt stanza must be the only one")
            if passphrase is None:
                raise KeyMismatch("this age file is passphrase-encrypted; a passphrase is needed to read it")
            args, body = stanzas[0]
            if len(args) != 3 or not args[2].isdigit() or args[2].startswith(b"0"):
                raise AgeError("malformed scrypt stanza")
            work_factor = int(args[2])
            if work_factor > max_work_factor:
                raise AgeError("scrypt work factor %d exceeds the allowed maximum %d" % (work_factor, max_work_factor))
            salt = _unb64(args[1])
            try:
                return _open_key(_scrypt_key(_to_bytes(passphrase), salt, work_factor), body)
            except InvalidTag:
                raise KeyMismatch("wrong passphrase: it does not decrypt this age file") from None
        keys = list(identities)
        if not keys:
            if passphrase is not None:
                raise KeyMismatch("this age file is encrypted to public-key recipients, not to a passphrase; an identity (AGE-SECRET-KEY-1...) is needed")
            raise KeyMismatch("this age file is encrypted to public-key recipients; an identity (AGE-SECRET-KEY-1...) is needed")
        for args, body in stanzas:
            if len(args) != 2 or args[0] != b"X25519" or len(body) != 32:
                continue
            share = _unb64(args[1])
            if len(share) != 32:
                continue
            for key in keys:
                recipient = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
                try:
                    shared = key.exchange(X25519PublicKey.from_public_bytes(share))
                    wrap_key = _hkdf(shared, share + recipient, b"age-encryption.org/v1/X25519")
                    return _open_key(wrap_key, body)
                except (InvalidTag, ValueError):
                    continue
        raise KeyMismatch("no identity matches: none of the given identities is a recipient of this age file (wrong key?)")

    def _next_chunk(self):
        chunk = self._lookahead
        self._lookahead = self._source.read(CHUNK_SIZE + TAG_SIZE)
        last = not self._lookahead
        if len(chunk) < TAG_SIZE:
            raise AgeError("truncated age payload (chunk %d is incomplete)" % self._counter)
        if not last and len(chunk) != CHUNK_SIZE + TAG_SIZE:
            raise AgeError("truncated age payload (short read at chunk %d)" % self._counter)
        try:
            plain = self._aead.decrypt(_nonce(self._counter, last), chunk, None)
        except InvalidTag:
            if not last:
                raise AgeError("age payload chunk %d failed authentication: the data is corrupt" % self._counter) from None
            # Maybe the file was cut at a chunk boundary: then this chunk was not meant to be last.
            try:
                self._aead.decrypt(_nonce(self._counter, False), chunk, None)
            except InvalidTag:
                raise AgeError("age payload chunk %d failed authentication: the data is corrupt" % self._counter) from None
            raise AgeError("truncated age payload: the last chunk is missing (file cut short)") from None
        if last and not plain and self._counter > 0:
            raise AgeError("malformed age payload: empty final chunk")
        self._counter += 1
        if last:
            self._done = True
        return plain

    def read(self, size=-1):
        if size is None or size < 0:
            parts = [self._buffer[self._pos :]]
            while not self._done:
                parts.append(self._next_chunk())
            self._buffer, self._pos = b"", 0
            return b"".join(parts)
        while len(self._buffer) - self._pos < size and not self._done:
            self._buffer, self._pos = self._buffer[self._pos :] + self._next_chunk(), 0
        out = self._buffer[self._pos : self._pos + size]
        self._pos += len(out)
        return out

    def readinto(self, buf):
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self):
        return True
