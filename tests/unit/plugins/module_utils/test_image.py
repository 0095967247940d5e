"""The zip container and member pipeline: journal, torn writes, names, zip64 records."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import zipfile

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _image


@pytest.fixture
def keypair():
    return _age.generate_identity()


def add(work, name, data, compression="zstd", recipients=None):
    with _image.ImageAppender(str(work)) as appender, appender.add_member(name, "test", "application/octet-stream", compression, recipients) as member:
        member.write(data)
    return member.record


def finish(work, extra_members=()):
    with _image.ImageAppender(str(work)) as appender:
        manifest = {
            "format": _image.FORMAT_NAME,
            "format_version": _image.FORMAT_VERSION,
            "members": [{k: v for k, v in e.items() if k != "zip"} for e in appender.entries],
        }
        appender.add_bytes(_image.MANIFEST_NAME, "lifeboat", "application/json", json.dumps(manifest).encode())
        appender.finish()
    return str(work / "image.partial")


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_members_round_trip_and_unzip_agrees(tmp_path, keypair, compression):
    payloads = {"test/a.bin": os.urandom(300_000), "test/b.txt": b"hello\n" * 50_000, "test/empty": b""}
    for name, data in payloads.items():
        add(tmp_path, name, data, compression, [keypair[1]])
    path = finish(tmp_path)
    assert zipfile.ZipFile(path).testzip() is None
    listing = subprocess.run(["unzip", "-t", path], capture_output=True, text=True, check=False)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    with _image.Image(path, identities=_age.parse_identities(keypair[0])) as image:
        for name, data in payloads.items():
            with image.open_member(name) as member:
                assert member.read() == data
            assert image.members[name]["compression"] == compression


def test_member_raising_inside_with_is_discarded(tmp_path):
    add(tmp_path, "test/kept", b"kept")
    with pytest.raises(RuntimeError), _image.ImageAppender(str(tmp_path)) as appender, appender.add_member("test/lost", "test", "x", "none", None) as member:
        member.write(b"x" * 100_000)
        raise RuntimeError("source died")
    add(tmp_path, "test/after", b"after")
    with _image.Image(finish(tmp_path)) as image:
        assert sorted(image.members) == ["test/after", "test/kept"]
        assert image.open_member("test/after").read() == b"after"


def test_torn_tail_from_a_killed_writer_is_cut_off(tmp_path):
    add(tmp_path, "test/kept", b"kept" * 1000)
    partial = tmp_path / "image.partial"
    with open(partial, "ab") as handle:  # what a SIGKILL mid-member leaves: a header and some data
        handle.write(b"PK\x03\x04" + os.urandom(5000))
    with open(tmp_path / "journal.jsonl", "a") as journal:
        journal.write('{"name": "test/torn", "half a line')
    add(tmp_path, "test/after", b"after")
    with _image.Image(finish(tmp_path)) as image:
        assert sorted(image.members) == ["test/after", "test/kept"]
        results, first_error = _image.verify_image(image, "full")
        assert first_error is None, results


def test_duplicate_member_name_is_refused(tmp_path):
    add(tmp_path, "test/a", b"1")
    with pytest.raises(_image.ImageError, match="already in this image"):
        add(tmp_path, "test/a", b"2")


def test_zip64_central_records():
    entry = {"name": "big", "stored_size": 5 * 2**30, "crc32": 1, "zip": {"offset": 6 * 2**30, "time": 0}}
    record = _image._central_record(entry)
    fixed = struct.unpack("<IHHHHHHIIIHHHHHII", record[:46])
    assert fixed[8] == fixed[9] == 0xFFFFFFFF and fixed[16] == 0xFFFFFFFF
    tag, length, usize, csize, offset = struct.unpack("<HHQQQ", record[46 + 3 :])
    assert (tag, length, usize, csize, offset) == (1, 24, 5 * 2**30, 5 * 2**30, 6 * 2**30)


def test_image_names_sort_by_time_and_are_safe():
    first = _image.image_name("db 1/x", 1_700_000_000, "site a")
    second = _image.image_name("db 1/x", 1_700_000_001, "site a")
    assert first == "site-a-20231114T221320Z-db-1-x.zip"
    assert first < second
    assert _image.member_name("postgresql", "db-app.dump", "zstd", True) == "postgresql/db-app.dump.zst.age"
    assert _image.member_name("config", "files.tar", "gzip", False) == "config/files.tar.gz"


def test_not_an_image_is_reported(tmp_path):
    bogus = tmp_path / "x.zip"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(_image.ImageError, match="not a readable image"):
        _image.Image(str(bogus))
    with zipfile.ZipFile(tmp_path / "y.zip", "w") as other:
        other.writestr("hello.txt", "hi")
    with pytest.raises(_image.ImageError, match="no manifest.json"):
        _image.Image(str(tmp_path / "y.zip"))


def test_corrupt_small_member_is_an_image_error_when_opened(tmp_path, keypair):
    add(tmp_path, "test/small", b"tiny", "zstd", [keypair[1]])
    path = finish(tmp_path)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("test/small")
    with open(path, "r+b") as handle:
        handle.seek(info.header_offset + 30 + len(info.filename) + 20 + 40)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 1]))
    with _image.Image(path, identities=_age.parse_identities(keypair[0])) as image:
        with pytest.raises(_image.ImageError, match="test/small"):
            image.open_member("test/small").read()


def test_spooled_members_are_encrypted_in_scratch_and_appended_whole(tmp_path, keypair):
    """#15.3: members written side by side into spool files (what a parallel dump does):
    the spool holds only compressed and encrypted bytes, and the image gets them as members."""
    marker = b"spool-plaintext-marker " * 20_000
    add(tmp_path, "test/first", b"first")
    spool = _image.SpoolFile(str(tmp_path / "a.spool"))
    with spool.add_member("test/spooled", "test", "text/plain", "zstd", [keypair[1]], threads=1) as member:
        member.write(marker)
    assert b"spool-plaintext-marker" not in (tmp_path / "a.spool").read_bytes()
    with _image.ImageAppender(str(tmp_path)) as appender:
        record = appender.append_spooled(spool)
    assert record["plaintext_size"] == len(marker) and not (tmp_path / "a.spool").exists()
    with _image.Image(finish(tmp_path), identities=_age.parse_identities(keypair[0])) as image:
        assert sorted(image.members) == ["test/first", "test/spooled"]
        assert image.open_member("test/spooled").read() == marker
        results, first_error = _image.verify_image(image, "full")
        assert first_error is None and len(results) == 2, results


def test_a_spool_damaged_before_it_is_appended_is_refused(tmp_path):
    spool = _image.SpoolFile(str(tmp_path / "b.spool"))
    with spool.add_member("test/damaged", "test", "text/plain", "none", None) as member:
        member.write(b"x" * 10_000)
    with open(tmp_path / "b.spool", "r+b") as handle:
        handle.seek(5000)
        handle.write(b"y")
    add(tmp_path, "test/before", b"before")
    with pytest.raises(_image.ImageError, match="changed in the scratch area"), _image.ImageAppender(str(tmp_path)) as appender:
        appender.append_spooled(spool)
    add(tmp_path, "test/after", b"after")
    with _image.Image(finish(tmp_path)) as image:
        assert sorted(image.members) == ["test/after", "test/before"]
        assert image.open_member("test/after").read() == b"after"
