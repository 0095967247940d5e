# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Streaming reader and writer for the age v1 file format (https://age-encryption.org/v1).

Why not pyrage (the age binding) or the age binary, both standard:

- The image is written push-style: pg_dump's output, a tar stream or a snapshot file is
  written into a compressor whose output is written here, chunk by chunk, while the
  session hashes it and appends it to the zip member. pyrage's streaming calls
  (``encrypt_io``) pull from a reader they own, so each member would need a thread and
  a pipe to turn the flow around, and its passphrase (scrypt) encryption has no
  streaming call at all: ``passphrase.encrypt`` takes the whole plaintext as bytes.
- The modules run on managed nodes with the system Python. pyrage is a Rust extension
  from PyPI that neither Debian nor RHEL/EPEL packages; ``cryptography`` is
  ``python3-cryptography`` on every supported distribution (EL 9: 36.0, Debian 12: 38.0).
  The age binary is not installed by default either, and reads a passphrase only from a
  terminal, never from a pipe or file, so Ansible cannot give it one.

Both remain the reference implementations the tests check this module against, in
both directions, with the C2SP age test vectors (CCTV) for the header grammar and
malformed input. The primitives come from ``cryptography``; nothing here invents
cryptography, it only frames it as the age specification says.

Supported recipient types: X25519 (``age1...`` / ``AGE-SECRET-KEY-1...``) and scrypt
(passphrase). Output is readable by ``age -d`` and pyrage.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
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


# What went wrong when reading, in the age specification's terms (the C2SP test vectors
# tell them apart): callers catch AgeError; the kinds keep a parsing error from being
# reported as a wrong key, and a wrong key as an altered header.
class AgeHeaderError(AgeError):
    """The header does not follow the age grammar (or is of an unsupported kind)."""


class KeyMismatch(AgeError):
    """The header is well-formed, but the key given (passphrase or identities) does not
    open the file, or none was given. Nothing is wrong with the file itself: callers must
    not call it damaged."""


class AgeMacError(AgeError):
    """A file key was unwrapped but the header MAC does not match: the header was altered."""


class AgePayloadError(AgeError):
    """The payload is truncated, altered or followed by garbage."""


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


def _unb64(data, length=None):
    """Strict base64 of the age header: no padding, canonical (the unused bits zero)."""
    if b"=" in data or b"\n" in data or b"\r" in data:
        raise AgeHeaderError("invalid base64 in age header")
    try:
        decoded = base64.b64decode(data + b"=" * (-len(data) % 4), validate=True)
    except ValueError:
        raise AgeHeaderError("invalid base64 in age header") from None
    if _b64(decoded) != data:
        raise AgeHeaderError("non-canonical base64 in age header")
    if length is not None and len(decoded) != length:
        raise AgeHeaderError("malformed age header: %d bytes where %d were expected" % (len(decoded), length))
    return decoded


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
                # bytes(): cryptography before 39 (Debian 12's 38) refuses memoryviews.
                out.append(self._aead.encrypt(_nonce(self._counter, False), bytes(view[start : start + CHUNK_SIZE]), None))
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


class _BytesSink:
    def __init__(self):
        self.data = bytearray()

    def write(self, chunk):
        self.data += chunk
        return len(chunk)


def encrypt_bytes(data, recipients=None, passphrase=None, work_factor=DEFAULT_WORK_FACTOR):
    """A whole age file (bytes) holding ``data``: for small payloads such as keys and shares."""
    sink = _BytesSink()
    writer = AgeWriter(sink, recipients=recipients, passphrase=passphrase, work_factor=work_factor)
    writer.write(data)
    writer.close()
    return bytes(sink.data)


# ---- reader ------------------------------------------------------------------------


_ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
# A stanza argument: one or more visible ASCII characters.
_ARGUMENT = re.compile(rb"[\x21-\x7e]+")
_WORK_FACTOR = re.compile(rb"[1-9][0-9]{0,1}")
_WRAPPED_KEY_SIZE = 16 + TAG_SIZE


def _read_line(source, limit=4096):
    line = bytearray()
    while not line.endswith(b"\n"):
        ch = source.read(1)
        if not ch:
            raise AgeHeaderError("truncated age header (file cut short?)")
        line += ch
        if len(line) > limit:
            raise AgeHeaderError("malformed age header (line too long)")
    return bytes(line[:-1])


def _check_first_line(source):
    lines = []
    try:
        while len(lines) < 8 and not (lines and lines[-1].strip()):  # armor may follow blank lines
            lines.append(_read_line(source, limit=len(_ARMOR_BEGIN) + 8))
    except AgeHeaderError:
        lines.append(b"?")
    if lines[-1].strip().startswith(_ARMOR_BEGIN):
        raise AgeHeaderError("this is an ASCII-armored age file, which is not supported here: convert it with 'age -d' or store binary age files")
    if lines[0] != VERSION_LINE:
        raise AgeHeaderError("not an age file, or an unsupported age version (first line %r)" % lines[0][:40])
    return lines[0]


def _parse_stanza(source, line):
    """One '-> type args...' stanza from its first line on; return (args, body, raw bytes)."""
    args = line[3:].split(b" ")
    if not all(_ARGUMENT.fullmatch(arg) for arg in args):
        raise AgeHeaderError("malformed age header (bad stanza argument in %r)" % line[:40])
    raw = line + b"\n"
    body = b""
    while True:
        body_line = _read_line(source)
        raw += body_line + b"\n"
        if len(body_line) > _B64_COLUMNS:
            raise AgeHeaderError("malformed age header (stanza line too long)")
        body += body_line
        if len(body_line) < _B64_COLUMNS:
            break
    return args, _unb64(body), raw


def _parse_header(source):
    """Return (stanzas, header_bytes_for_mac, mac). stanzas: list of (args, body)."""
    raw = _check_first_line(source) + b"\n"
    stanzas = []
    line = _read_line(source)
    while line.startswith(b"-> "):
        args, body, stanza_raw = _parse_stanza(source, line)
        stanzas.append((args, body))
        raw += stanza_raw
        line = _read_line(source)
    if not line.startswith(b"--- "):
        raise AgeHeaderError("malformed age header (missing MAC line)")
    raw += b"---"
    mac = _unb64(line[4:], length=32)
    return stanzas, raw, mac


def _open_scrypt(stanzas, passphrase, max_work_factor):
    if len(stanzas) != 1:
        raise AgeHeaderError("malformed age header: a scrypt stanza must be the only one")
    args, body = stanzas[0]
    if len(args) != 3 or not _WORK_FACTOR.fullmatch(args[2]) or len(body) != _WRAPPED_KEY_SIZE:
        raise AgeHeaderError("malformed scrypt stanza")
    salt = _unb64(args[1], length=16)
    work_factor = int(args[2])
    if work_factor > max_work_factor:
        raise AgeHeaderError("scrypt work factor %d exceeds the allowed maximum %d" % (work_factor, max_work_factor))
    if passphrase is None:
        raise KeyMismatch("this age file is passphrase-encrypted; a passphrase is needed to read it")
    try:
        return _open_key(_scrypt_key(_to_bytes(passphrase), salt, work_factor), body)
    except InvalidTag:
        raise KeyMismatch("wrong passphrase: it does not decrypt this age file") from None


def _open_x25519(args, body, keys):
    """The file key if one of ``keys`` opens this X25519 stanza, else None; a malformed
    stanza is a header error even when it is not ours (as in the reference implementation)."""
    if len(args) != 2 or len(body) != _WRAPPED_KEY_SIZE:
        raise AgeHeaderError("malformed X25519 stanza")
    share = _unb64(args[1], length=32)
    for key in keys:
        recipient = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        try:
            shared = key.exchange(X25519PublicKey.from_public_bytes(share))
        except ValueError:  # all-zero shared secret: a low-order point
            raise AgeHeaderError("malformed X25519 stanza (low-order share)") from None
        wrap_key = _hkdf(shared, share + recipient, b"age-encryption.org/v1/X25519")
        try:
            return _open_key(wrap_key, body)
        except InvalidTag:
            continue
    return None


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
            raise AgeMacError("age header MAC mismatch: the header was altered or the file key is wrong")
        nonce = source.read(16)
        if len(nonce) != 16:
            raise AgeHeaderError("truncated age file (no payload nonce)")
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._counter = 0
        self._buffer = b""
        self._pos = 0
        self._done = False
        self._error = None

    @staticmethod
    def _unwrap(stanzas, identities, passphrase, max_work_factor):
        if any(args[0] == b"scrypt" for args, _body in stanzas):
            return _open_scrypt(stanzas, passphrase, max_work_factor)
        keys = list(identities)
        file_key = None
        for args, body in stanzas:
            if args[0] == b"X25519":
                file_key = file_key or _open_x25519(args, body, keys)
        if file_key is not None:
            return file_key
        if not keys and passphrase is not None:
            raise KeyMismatch("this age file is encrypted to public-key recipients, not to a passphrase; an identity (AGE-SECRET-KEY-1...) is needed")
        if not keys:
            raise KeyMismatch("this age file is encrypted to public-key recipients; an identity (AGE-SECRET-KEY-1...) is needed")
        raise KeyMismatch("no identity matches: none of the given identities is a recipient of this age file (wrong key?)")

    def _next_chunk(self):
        """Decrypt the next chunk. A chunk is the last one when it opens with the last-chunk
        nonce; then nothing may follow it. Plaintext is returned only once authenticated."""
        chunk = self._source.read(CHUNK_SIZE + TAG_SIZE)
        if len(chunk) < TAG_SIZE:
            if self._counter and not chunk:
                raise AgePayloadError("truncated age payload: the last chunk is missing (file cut short)")
            raise AgePayloadError("truncated age payload (chunk %d is incomplete)" % self._counter)
        plain = None
        if len(chunk) == CHUNK_SIZE + TAG_SIZE:
            plain = self._open_chunk(chunk, last=False)
        if plain is None:
            plain = self._open_chunk(chunk, last=True)
            if plain is None:
                raise AgePayloadError("age payload chunk %d failed authentication: the data is corrupt" % self._counter)
            if not plain and self._counter > 0:
                raise AgePayloadError("malformed age payload: empty final chunk")
            if self._source.read(1):
                # The final chunk is authentic and is released; the garbage is reported next.
                self._error = AgePayloadError("malformed age payload: data after the final chunk")
            self._done = True
        self._counter += 1
        return plain

    def _open_chunk(self, chunk, last):
        try:
            return self._aead.decrypt(_nonce(self._counter, last), chunk, None)
        except InvalidTag:
            return None

    def read(self, size=-1):
        """Authenticated plaintext. When a chunk fails, a sized read returns what was
        authenticated before it and the next call raises; ``read()`` raises at once."""
        want = None if size is None or size < 0 else size
        parts = [self._take(want)]
        got = len(parts[0])
        try:
            while not self._done and self._error is None and (want is None or got < want):
                chunk = self._next_chunk()
                # Chunks are gathered and joined once: a megabyte read is 16 chunks, and
                # growing one buffer chunk by chunk would copy it 16 times.
                self._buffer, self._pos = chunk, 0
                piece = self._take(None if want is None else want - got)
                parts.append(piece)
                got += len(piece)
        except AgeError as exc:
            self._error = exc
        if self._error is not None and (want is None or not got):
            raise self._error
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _take(self, size):
        """Up to ``size`` bytes (all with None) of the current decrypted chunk."""
        end = len(self._buffer) if size is None else min(len(self._buffer), self._pos + size)
        out = self._buffer[self._pos : end] if self._pos or end < len(self._buffer) else self._buffer
        self._pos = end
        return out

    def readinto(self, buf):
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self):
        return True
