"""The table-archive chain format and the offline verifier, without a database: entries,
signatures, digests, the payload grammar, and the chain walk on hand-made chains."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ansible_collections.lifeboat.backup.plugins.module_utils import _table_segment as fmt

VERIFIER = Path(fmt.__file__).resolve()


# ---- digests --------------------------------------------------------------------------------------


def test_row_digest_is_the_same_however_rows_arrive():
    rows = [b"%d\trow %d\\twith tab\n" % (i, i) for i in range(1000)]
    one = fmt.RowDigest()
    for row in rows:
        one.add_row(row)
    many = fmt.RowDigest()
    many.add_rows(rows[:400])
    many.add_rows(rows[400:])
    fed = fmt.RowDigest()
    data = b"".join(rows)
    for start in range(0, len(data), 37):  # chunks that split rows anywhere
        fed.feed(data[start : start + 37])
    fed.finish()
    reordered = fmt.RowDigest()
    reordered.add_rows(list(reversed(rows)))
    assert one.digest == many.digest == fed.digest == reordered.digest
    assert one.rows == many.rows == fed.rows == 1000


def test_row_digests_of_parts_add_up():
    rows = [b"%d\n" % i for i in range(100)]
    whole, first, second = fmt.RowDigest(), fmt.RowDigest(), fmt.RowDigest()
    whole.add_rows(rows)
    first.add_rows(rows[:30])
    second.add_rows(rows[30:])
    assert fmt.add_digests(first.digest, second.digest) == whole.digest
    assert fmt.subtract_digest(whole.digest, first.digest) == second.digest
    altered = fmt.RowDigest()
    altered.add_rows(rows[:-1] + [b"99 altered\n"])
    assert altered.digest != whole.digest


def test_row_digest_refuses_a_cut_row():
    digest = fmt.RowDigest()
    digest.feed(b"1\tcomplete\n2\tcut")
    with pytest.raises(fmt.SegmentError, match="middle of a row"):
        digest.finish()


# ---- keys and signatures ------------------------------------------------------------------------------


def _pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def test_private_keys_in_every_accepted_form():
    key = Ed25519PrivateKey.generate()
    public = fmt.public_key_text(key)
    openssh = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()).decode()
    seed = (
        "ed25519-private:"
        + __import__("base64").b64encode(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())).decode()
    )
    for text in (_pem(key), openssh, seed):
        assert fmt.public_key_text(fmt.load_private_key(text)) == public


def test_wrong_private_keys_are_refused_naming_the_option():
    with pytest.raises(fmt.SegmentError, match="signing_key is not an unencrypted Ed25519 private key.*openssl genpkey"):
        fmt.load_private_key("not a key")
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1())
    pem = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with pytest.raises(fmt.SegmentError, match="Ed25519"):
        fmt.load_private_key(pem, "previous_signing_key")


def test_public_keys_in_every_accepted_form():
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    ssh = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    text = fmt.public_key_text(key)
    for form in (text, pem, ssh + " comment"):
        assert fmt.normalise_public_key(form) == text
    with pytest.raises(fmt.SegmentError, match="public_keys"):
        fmt.normalise_public_key("ed25519:AAAA")


def test_signature_covers_the_canonical_entry():
    key = Ed25519PrivateKey.generate()
    entry = {
        "format": fmt.FORMAT,
        "format_version": 1,
        "kind": "segment",
        "seq": 3,
        "chain": {"id": "x", "name": "c"},
        "signer": fmt.public_key_text(key),
        "rows": 5,
    }
    document = fmt.sign(entry, key)
    decoded, signature = fmt.decode(fmt.encode(document))
    assert fmt.signature_valid(decoded, signature)
    decoded["rows"] = 6
    assert not fmt.signature_valid(decoded, signature)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(fmt.SegmentError, match="names signer"):
        fmt.sign(entry, other)


@pytest.mark.parametrize(
    "data, words",
    [
        (b"{not json", "not valid JSON"),
        (b'{"entry": {}}', "no entry and signature"),
        (b'{"entry": {"format": "other"}, "signature": {}}', "format 'other'"),
        (b'{"entry": {"format": "lifeboat-table-archive", "seq": "1"}, "signature": {}}', "field seq"),
    ],
)
def test_malformed_entries_are_named(data, words):
    with pytest.raises(fmt.SegmentError, match=words):
        fmt.decode(data, "00000001.json")


# ---- payload ----------------------------------------------------------------------------------------------


def test_payload_sections_are_recounted():
    child = [b"1\tinit\n"]
    parent = [b"10\t1\tdata with \\\\ and \\t\n", b"11\t1\t\\N\n"]
    payload = (
        fmt.payload_preamble("db.public.raw_data", 3, "UTF8")
        + fmt.copy_header("public", "init_table", ["sessionid", "what"])
        + b"".join(child)
        + fmt.SECTION_END
        + fmt.copy_header("public", 'raw "data"', ["id", "session", "body"])
        + b"".join(parent)
        + fmt.SECTION_END
    )
    seen = []
    parser = fmt.PayloadParser(lambda table, line: seen.append((table, line)))
    for start in range(0, len(payload), 11):
        parser.feed(payload[start : start + 11])
    sections = parser.finish()
    expected_child, expected_parent = fmt.RowDigest(), fmt.RowDigest()
    expected_child.add_rows(child)
    expected_parent.add_rows(parent)
    assert sections == [
        {"table": "public.init_table", "rows": 1, "digest": expected_child.digest},
        {"table": 'public.raw "data"', "rows": 2, "digest": expected_parent.digest},
    ]
    assert [line for _t, line in seen] == child + parent
    truncated = fmt.PayloadParser()
    truncated.feed(payload[: -len(fmt.SECTION_END)])
    with pytest.raises(fmt.SegmentError, match="truncated"):
        truncated.finish()


# ---- the chain walk ------------------------------------------------------------------------------------------


class ChainMaker:
    """A hand-made chain in a directory: genesis, segments with payloads, a checkpoint."""

    def __init__(self, directory, key=None, chain_id="c0ffee", name="db.public.t"):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = key or Ed25519PrivateKey.generate()
        self.chain = {"id": chain_id, "name": name}
        self.entries = []

    def _entry(self, kind, **fields):
        seq = len(self.entries)
        entry = {
            "format": fmt.FORMAT,
            "format_version": 1,
            "kind": kind,
            "chain": self.chain,
            "seq": seq,
            "prev": fmt.entry_hash(self.entries[-1]) if self.entries else None,
            "created": "2026-01-0%dT00:00:00Z" % (seq + 1),
            "signer": fmt.public_key_text(self.key),
        }
        entry.update(fields)
        self.entries.append(entry)
        (self.dir / fmt.entry_name(seq)).write_bytes(fmt.encode(fmt.sign(entry, self.key)))
        return entry

    def genesis(self):
        return self._entry("genesis", table={"label": "public.t", "key": ["id"]})

    def segment(self, first, last):
        rows = [b"%d\tvalue %d\n" % (i, i) for i in range(first, last + 1)]
        digest = fmt.RowDigest()
        digest.add_rows(rows)
        payload = fmt.copy_header("public", "t", ["id", "v"]) + b"".join(rows) + fmt.SECTION_END
        name = fmt.payload_name(len(self.entries), "none", False)
        (self.dir / name).write_bytes(payload)
        before = [e for e in self.entries if e["kind"] == "segment"]
        return self._entry(
            "segment",
            table="public.t",
            range={"after": before[-1]["range"]["through"] if before else None, "through": [str(last)]},
            first_key=[str(first)],
            last_key=[str(last)],
            rows=len(rows),
            time_range={"from": "2025-01-01 00:00:00+00", "to": "2025-01-02 00:00:00+00"},
            sections=[{"table": "public.t", "role": "table", "columns": ["id", "v"], "rows": len(rows), "digest": digest.digest}],
            payload={"name": name, "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest(), "compression": "none", "encryption": "none"},
        )


def _plain(store, name, entry):
    return io.BytesIO(store.read(name))


def walk(directory, trusted=None, level="checksum"):
    return fmt.ChainCheck(fmt.DirectoryStore(str(directory)), "db.public.t", trusted, level, _plain).run()


@pytest.fixture
def chain(tmp_path):
    maker = ChainMaker(tmp_path / "db.public.t")
    maker.genesis()
    for first in (1, 11, 21, 31):
        maker.segment(first, first + 9)
    return maker


def test_a_sound_chain_reports_like_the_seed(chain):
    report = walk(chain.dir, [fmt.public_key_text(chain.key)], level="full")
    assert report["problems"] == []
    assert report["signatures_valid"] and report["chain_valid"] and report["rows"] == 40
    assert [s["payload_status"] for s in report["segments"]] == ["rows recounted"] * 4
    lines = fmt.render_chain(report)
    assert lines[0].startswith("Checked chain db.public.t (table public.t) in ")
    assert "with 4 segments, 40 records, keys 1 to 40" in lines[0] and lines[0].endswith("Endpoint in chain is 40")
    assert lines[1] == "  Segment 1: startpoint 1, endpoint 10, 10 records, from 2025-01-01 00:00 to 2025-01-02 00:00, signature valid, payload rows recounted"


def test_without_trusted_keys_the_first_entry_is_trusted_and_said_so(chain):
    report = walk(chain.dir)
    assert report["problems"] == [] and report["trust"] == "archive"
    assert "give public keys to authenticate it" in fmt.render_chain(report)[0]


def _kinds(report):
    return sorted({p["kind"] for p in report["problems"]})


def test_each_kind_of_tampering_is_named(chain, tmp_path):
    trusted = [fmt.public_key_text(chain.key)]
    # one byte of a payload
    path = chain.dir / "00000002.sql"
    data = bytearray(path.read_bytes())
    data[20] ^= 1
    path.write_bytes(bytes(data))
    assert _kinds(walk(chain.dir, trusted)) == ["payload_altered"]
    path.write_bytes(bytes(data[:20]) + bytes([data[20] ^ 1]) + bytes(data[21:]))
    assert walk(chain.dir, trusted)["problems"] == []
    # rows of a payload changed consistently with its hash... but not with the signed digest
    entry_path = chain.dir / "00000003.json"
    saved = entry_path.read_bytes()
    document = json.loads(saved)
    document["entry"]["rows"] = 9
    entry_path.write_bytes(fmt.encode(document))
    assert _kinds(walk(chain.dir, trusted)) == ["chain_broken", "signature_invalid"]
    entry_path.write_bytes(saved)


def test_missing_swapped_and_foreign_entries(chain, tmp_path):
    trusted = [fmt.public_key_text(chain.key)]
    other = ChainMaker(tmp_path / "other", key=chain.key, chain_id="beef")
    other.genesis()
    other.segment(1, 5)
    (chain.dir / "00000005.json").write_bytes((other.dir / "00000001.json").read_bytes())
    assert _kinds(walk(chain.dir, trusted)) == ["foreign_entry"]
    (chain.dir / "00000005.json").unlink()
    a, b = chain.dir / "00000002.json", chain.dir / "00000003.json"
    a_data, b_data = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_data)
    b.write_bytes(a_data)
    report = walk(chain.dir, trusted)
    assert _kinds(report) == ["out_of_order"] and len(report["problems"]) == 2
    a.unlink()  # the file that held entry 3
    report = walk(chain.dir, trusted)
    assert "segment_missing" in _kinds(report)
    assert any("entry 3 is missing" in p["message"] for p in report["problems"])


def test_unknown_key_and_rotation(chain, tmp_path):
    trusted = [fmt.public_key_text(chain.key)]
    stranger = ChainMaker(tmp_path / "x")
    document = json.loads((chain.dir / "00000004.json").read_text())
    entry = document["entry"]
    entry["signer"] = fmt.public_key_text(stranger.key)
    (chain.dir / "00000004.json").write_bytes(fmt.encode(fmt.sign(entry, stranger.key)))
    report = walk(chain.dir, trusted)
    assert "unknown_signing_key" in _kinds(report)
    assert any(fmt.public_key_text(stranger.key) in p["message"] for p in report["problems"])


def test_rotation_hands_trust_to_the_next_key(tmp_path):
    maker = ChainMaker(tmp_path / "db.public.t")
    old = maker.key
    maker.genesis()
    maker.segment(1, 5)
    new = Ed25519PrivateKey.generate()
    maker._entry("rotation", next_signer=fmt.public_key_text(new))
    maker.key = new
    maker.segment(6, 10)
    report = walk(maker.dir, [fmt.public_key_text(old)])
    assert report["problems"] == [], report["problems"]
    assert report["signers"] == sorted([fmt.public_key_text(old), fmt.public_key_text(new)])
    # Without the rotation entry, the new key is nobody's.
    unrotated = ChainMaker(tmp_path / "u" / "db.public.t", key=old)
    unrotated.genesis()
    unrotated.segment(1, 5)
    unrotated.key = new
    unrotated.segment(6, 10)
    assert _kinds(walk(unrotated.dir, [fmt.public_key_text(old)])) == ["unknown_signing_key"]


def test_unexpected_files_are_reported(chain):
    (chain.dir / "00000009.sql.zst.age").write_bytes(b"left over")
    report = walk(chain.dir)
    assert _kinds(report) == ["unexpected_file"]


def test_offline_verifier_command_line(chain, tmp_path):
    key = fmt.public_key_text(chain.key)

    def run(*args):
        return subprocess.run([sys.executable, "-I", str(VERIFIER), *args], capture_output=True, text=True, check=False)

    ok = run("--public-key", key, str(chain.dir.parent))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0] == "Lifeboat table archive verification" and "Result: valid" in ok.stdout
    as_json = json.loads(run("--json", str(chain.dir)).stdout)
    assert as_json["valid"] and as_json["chains"][0]["rows"] == 40
    (chain.dir / "00000001.sql").write_bytes(b"x")
    bad = run("--public-key", key, str(chain.dir))
    assert bad.returncode == 1 and "PROBLEM [payload_altered]" in bad.stdout
    (tmp_path / "nothing-here").mkdir()
    empty = run(str(tmp_path / "nothing-here"))
    assert empty.returncode == 2 and "no table-archive chain" in empty.stderr
