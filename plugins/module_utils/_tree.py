# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""File trees in and out of an image member: scan, stream as POSIX tar, extract safely.

The tar stream is written by hand (headers from ``tarfile.TarInfo``) so that each
file is read once, hashed once and never buffered whole. Extraction walks the target
with ``O_NOFOLLOW`` directory descriptors: an archive entry can never make us write
through a symlink, inside or outside the target root.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import grp
import hashlib
import json
import os
import pwd
import re
import stat
import struct
import sys
import tarfile
import zlib

from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError

BLOCK = 512
RECORD = BLOCK * 20
READ_SIZE = 1024 * 1024
# Files up to this size are read whole and written with their header in one piece.
SMALL_FILE = 64 * 1024


class TreeError(LifeboatError):
    pass


# ---- scanning --------------------------------------------------------------------


class Entry:
    __slots__ = ("path", "arcname", "st", "kind", "link", "implicit")

    def __init__(self, path, st, implicit=False):
        self.path = path
        self.arcname = path.lstrip("/") or "."
        self.st = st
        self.implicit = implicit
        mode = st.st_mode
        if stat.S_ISREG(mode):
            self.kind = "file"  # "hardlink" once a TarWriter finds it is a further name of a file already written
        elif stat.S_ISDIR(mode):
            self.kind = "directory"
        elif stat.S_ISLNK(mode):
            self.kind = "symlink"
        else:
            self.kind = "special"
        self.link = os.readlink(path) if self.kind == "symlink" else None


class HardLinks:
    """Remembers, by (device, inode), the first name under which a multiply-linked file was
    written, so that its further names are written as links to it (tar's LNKTYPE)."""

    def __init__(self):
        self._first = {}

    def first(self, entry):
        """The (path, index record) of the first name of ``entry``'s file, or None."""
        st = entry.st
        if entry.kind != "file" or st.st_nlink < 2:
            return None
        return self._first.get((st.st_dev, st.st_ino))

    def remember(self, entry, record):
        st = entry.st
        if st.st_nlink > 1:
            self._first.setdefault((st.st_dev, st.st_ino), (entry, record))

    def mark(self, entry):
        """Turn ``entry`` into a link to the first name of its file when there is one; True if so.
        Used where nothing is read (check mode)."""
        seen = self.first(entry)
        if seen is None:
            self.remember(entry, None)
            return False
        entry.kind, entry.link = "hardlink", seen[0].arcname
        return True


def _excluded(path, patterns):
    name = os.path.basename(path)
    return any(fnmatch.fnmatchcase(path, p) or ("/" not in p and fnmatch.fnmatchcase(name, p)) for p in patterns)


def has_magic(path):
    return glob.has_magic(path)


def _inside(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")


def expand(paths, exclude=()):
    """Resolve the listed paths and globs (top level only).

    Returns (roots, missing, problems): roots are (path, lstat) pairs with no root inside
    another, so walking them yields every path once without remembering what was seen.
    """
    found = {}
    missing = []
    problems = []
    for raw in paths:
        raw = os.path.normpath(raw)
        if not os.path.isabs(raw):
            raise TreeError("paths: %r is not absolute; give absolute paths (globs allowed)" % raw)
        candidates = sorted(glob.glob(raw)) if has_magic(raw) else [raw]
        if not candidates:
            missing.append(raw)
            continue
        for path in candidates:
            if _excluded(path, exclude):
                continue
            try:
                found[path] = os.lstat(path)
            except FileNotFoundError:
                missing.append(path)
            except OSError as exc:
                problems.append({"path": path, "error": exc.strerror})
    roots = []
    # Component order keeps a directory's descendants right after it ('/etc/a', '/etc/a/x', '/etc/a-b').
    for path in sorted(found, key=lambda p: p.split("/")):
        if roots and stat.S_ISDIR(roots[-1][1].st_mode) and _inside(path, roots[-1][0]):
            continue
        roots.append((path, found[path]))
    return roots, missing, problems


def iter_entries(roots, exclude=(), one_file_system=False, problems=None):
    """Yield Entry objects: each root's parent directories (implicit, once), the root, and
    for directories everything below it in name order. Symlinks are entries, never followed.
    Paths that cannot be listed or stat'ed are appended to ``problems``."""
    problems = problems if problems is not None else []
    emitted_parents = set()

    def walk(top, top_dev):
        try:
            with os.scandir(top) as iterator:
                children = sorted(iterator, key=lambda e: e.name)
        except OSError as exc:
            problems.append({"path": top, "error": exc.strerror})
            return
        for child in children:
            path = child.path
            if exclude and _excluded(path, exclude):
                continue
            try:
                st = child.stat(follow_symlinks=False)
            except OSError as exc:
                problems.append({"path": path, "error": exc.strerror})
                continue
            yield Entry(path, st)
            if stat.S_ISDIR(st.st_mode) and not (one_file_system and st.st_dev != top_dev):
                yield from walk(path, top_dev)

    for path, st in roots:
        chain = []
        parent = os.path.dirname(path)
        while parent not in ("/", "") and parent not in emitted_parents:
            chain.append(parent)
            parent = os.path.dirname(parent)
        for directory in reversed(chain):
            emitted_parents.add(directory)
            try:
                yield Entry(directory, os.lstat(directory), implicit=True)
            except OSError as exc:
                problems.append({"path": directory, "error": exc.strerror})
        yield Entry(path, st)
        if stat.S_ISDIR(st.st_mode):
            yield from walk(path, st.st_dev)


class Totals:
    """Counts over entries, for results and the manifest."""

    def __init__(self):
        self.file_count = 0
        self.directory_count = 0
        self.symlink_count = 0
        self.hardlink_count = 0
        self.total_bytes = 0

    def add(self, entry):
        if entry.kind == "file":
            self.file_count += 1
            self.total_bytes += entry.st.st_size
        elif entry.kind == "directory":
            self.directory_count += 1
        elif entry.kind == "symlink":
            self.symlink_count += 1
        elif entry.kind == "hardlink":
            self.hardlink_count += 1

    def as_dict(self):
        return {
            "file_count": self.file_count,
            "directory_count": self.directory_count,
            "symlink_count": self.symlink_count,
            "hardlink_count": self.hardlink_count,
            "total_bytes": self.total_bytes,
        }


# One encoder for every index line: json.dumps(sort_keys=True) builds a new one per call,
# which costs more than the encoding itself on a tree of small files.
_encode_record = json.JSONEncoder(sort_keys=True).encode
_INDEX_BATCH = 256 * 1024


class IndexBuffer:
    """The per-file index as JSON lines, kept zlib-compressed in memory while the tar streams.

    A plaintext index must not touch the disk (it holds hashes of secret files), and a list
    of dicts would grow by about a kilobyte per file; this grows by a few dozen bytes. Lines
    are compressed in batches: zlib costs per call.
    """

    def __init__(self):
        self._compressor = zlib.compressobj(6)
        self._parts = []
        self._batch = []
        self._batch_size = 0
        self.count = 0

    def add(self, record):
        line = _encode_record(record)
        self._batch.append(line)
        self._batch_size += len(line) + 1
        self.count += 1
        if self._batch_size >= _INDEX_BATCH:
            self._compress_batch()

    def _compress_batch(self):
        if self._batch:
            self._batch.append("")
            self._parts.append(self._compressor.compress("\n".join(self._batch).encode("utf-8")))
            self._batch = []
            self._batch_size = 0

    def write_to(self, out):
        self._compress_batch()
        self._parts.append(self._compressor.flush())
        decompressor = zlib.decompressobj()
        for part in self._parts:
            data = decompressor.decompress(part)
            if data:
                out.write(data)
        self._parts = []


def _compact(record):
    """``record`` with its keys and short string values (type, user, group) interned: one
    copy of each for the whole index instead of one per entry, about half the memory of an
    index of many files (json.loads makes new strings for every line)."""
    return {sys.intern(k): sys.intern(v) if isinstance(v, str) and len(v) <= 32 else v for k, v in record.items()}


def read_index(stream):
    """Parse an index member (JSON lines) from a readable stream into a dict by path."""
    index = {}
    pending = b""
    while True:
        chunk = stream.read(READ_SIZE)
        if not chunk:
            break
        pending += chunk
        lines = pending.split(b"\n")
        pending = lines.pop()
        for line in lines:
            if line:
                record = _compact(json.loads(line))
                index[record["path"]] = record
    if pending.strip():
        record = _compact(json.loads(pending))
        index[record["path"]] = record
    return index


# ---- writing tar ---------------------------------------------------------------------


class _Names:
    def __init__(self):
        self.users = {}
        self.groups = {}

    def user(self, uid):
        if uid not in self.users:
            try:
                self.users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self.users[uid] = ""
        return self.users[uid]

    def group(self, gid):
        if gid not in self.groups:
            try:
                self.groups[gid] = grp.getgrgid(gid).gr_name
            except KeyError:
                self.groups[gid] = ""
        return self.groups[gid]


_USTAR = struct.Struct("100s8s8s8s12s12s8s1s100s6s2s32s32s183x")
_TYPEFLAG = {"file": b"0", "directory": b"5", "symlink": b"2", "hardlink": b"1"}


def _ustar_header(entry, names, size):
    """The 512-byte ustar header tarfile would write for this entry, built directly, or
    None when the entry needs pax records (long or non-ASCII names, big numbers).

    tarfile.TarInfo.tobuf costs ~80 us an entry; a tree of configuration files is mostly
    entries, so this plain path matters for throughput.
    """
    st = entry.st
    name = entry.arcname + ("/" if entry.kind == "directory" else "")
    link = entry.link if entry.kind in ("symlink", "hardlink") else ""
    user, group = names.user(st.st_uid), names.group(st.st_gid)
    try:
        name_b = name.encode("ascii")
        link_b = link.encode("ascii")
        user_b = user.encode("ascii")
        group_b = group.encode("ascii")
    except UnicodeEncodeError:
        return None
    if len(name_b) > 100 or len(link_b) > 100 or len(user_b) > 32 or len(group_b) > 32:
        return None
    mtime = int(st.st_mtime)
    if max(st.st_uid, st.st_gid) >= 8**7 or size >= 8**11 or not 0 <= mtime < 8**11:
        return None
    fields = [
        name_b,
        b"%07o\0" % stat.S_IMODE(st.st_mode),
        b"%07o\0" % st.st_uid,
        b"%07o\0" % st.st_gid,
        b"%011o\0" % size,
        b"%011o\0" % mtime,
        b"        ",
        _TYPEFLAG[entry.kind],
        link_b,
        b"ustar\0",
        b"00",
        user_b,
        group_b,
    ]
    header = _USTAR.pack(*fields)
    # devmajor/devminor and prefix stay NUL, as tarfile writes them for non-device entries.
    return header[:148] + b"%06o\0 " % sum(header) + header[156:]


def _header(entry, names, size):
    return _ustar_header(entry, names, size) or _tarinfo(entry, names, size).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _tarinfo(entry, names, size):
    st = entry.st
    info = tarfile.TarInfo(entry.arcname)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid = st.st_uid
    info.gid = st.st_gid
    info.uname = names.user(st.st_uid)
    info.gname = names.group(st.st_gid)
    info.mtime = int(st.st_mtime)
    if entry.kind == "directory":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.link
    elif entry.kind == "hardlink":
        info.type = tarfile.LNKTYPE
        info.linkname = entry.link
    else:
        info.type = tarfile.REGTYPE
        info.size = size
    return info


def index_record(entry, names, sha256=None, size=0):
    st = entry.st
    record = {
        "path": entry.path,
        "type": entry.kind,
        "mode": "%04o" % stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "user": names.user(st.st_uid),
        "group": names.group(st.st_gid),
        "mtime": st.st_mtime,
    }
    if entry.kind in ("file", "hardlink"):
        record["size"] = size
        record["sha256"] = sha256
    if entry.kind == "symlink":
        record["target"] = entry.link
    if entry.kind == "hardlink":
        record["target"] = "/" + entry.link
    if entry.implicit:
        record["implicit"] = True
    return record


class TarWriter:
    """Streams entries as a POSIX (pax) tar into ``out`` (anything with ``write``).

    With ``hardlinks``, a further name of a multiply-linked file already written becomes a
    hard-link entry to its first name (as GNU tar writes them): the content is stored once
    and a restore links the names again.
    """

    def __init__(self, out, hardlinks=False):
        self.out = out
        self.offset = 0
        self.names = _Names()
        self.links = HardLinks() if hardlinks else None
        self._buffer = bytearray(READ_SIZE)
        # O_NOATIME: a backup should not touch access times; only the owner or root may ask.
        self._flags = os.O_RDONLY | os.O_NOFOLLOW | (getattr(os, "O_NOATIME", 0) if os.geteuid() == 0 else 0)

    def _emit(self, data):
        self.out.write(data)
        self.offset += len(data)

    def add(self, entry):
        """Write one entry. Returns (index record, warning or None). Raises OSError when a
        file cannot be opened or read at all."""
        if entry.kind == "special":
            return None, "%s: special file (device, FIFO or socket) not archived" % entry.path
        if entry.kind != "file":
            self._emit(_header(entry, self.names, 0))
            return index_record(entry, self.names), None
        if self.links is not None:
            first = self.links.first(entry)
            if first is not None:
                return self._add_link(entry, *first), None
        record, warning = self._add_file(entry)
        if self.links is not None:
            self.links.remember(entry, record)
        return record, warning

    def _add_link(self, entry, first, first_record):
        entry.kind, entry.link = "hardlink", first.arcname
        self._emit(_header(entry, self.names, 0))
        return index_record(entry, self.names, first_record["sha256"], first_record["size"])

    def _add_file(self, entry):
        fd = os.open(entry.path, self._flags)
        try:
            st = os.fstat(fd)
            entry.st = st  # the metadata of what we actually read
            size = st.st_size
            header = _header(entry, self.names, size)
            if size <= SMALL_FILE:
                digest, remaining = self._add_small(fd, header, size)
            else:
                self._emit(header)
                digest, remaining = self._add_large(fd, size)
            warning = None
            if remaining > 0:
                digest = None
                warning = "%s: file shrank while being read; archived content is incomplete" % entry.path
            elif os.read(fd, 1):
                warning = "%s: file grew while being read; archived the first %d bytes" % (entry.path, size)
        finally:
            os.close(fd)
        return index_record(entry, self.names, digest.hexdigest() if digest else None, size), warning

    def _add_small(self, fd, header, size):
        """Header, content and padding of a small file in one write (most files of a
        configuration tree are small, and each write costs a call down the member chain).
        Returns (digest, bytes missing: the file shrank)."""
        data = os.read(fd, size) if size else b""
        while len(data) < size:
            more = os.read(fd, size - len(data))
            if not more:
                break
            data += more
        remaining = size - len(data)
        self._emit(header + data + bytes(remaining + (-size % BLOCK)))
        return hashlib.sha256(data), remaining

    def _add_large(self, fd, size):
        """Content and padding of a large file, a block at a time; (digest, bytes missing)."""
        digest = hashlib.sha256()
        remaining = size
        view = memoryview(self._buffer)
        try:
            while remaining > 0:
                got = os.readv(fd, [view[: min(READ_SIZE, remaining)]])
                if got == 0:
                    break
                chunk = view[:got]
                digest.update(chunk)
                self._emit(chunk)
                remaining -= got
            # A file that shrank while we read it is padded to the size the header promised.
            self._emit(bytes(remaining + (-size % BLOCK)))
        finally:
            view.release()
        return digest, remaining

    def close(self):
        self._emit(bytes(BLOCK * 2))
        pad = -self.offset % RECORD
        if pad:
            self._emit(bytes(pad))


# ---- extracting ----------------------------------------------------------------------


def read_entries(tar):
    """The entries of a tar opened as a stream (``mode="r|"``), one at a time. tarfile keeps
    every entry it has read, for a random access a stream never gets: those are dropped, so
    the memory stays flat however many files the archive holds. Only regular files may then
    be read with ``tar.extractfile`` (a hard link's would look its target up in that list)."""
    while True:
        info = tar.next()
        if info is None:
            return
        del tar.members[:]
        yield info


def _split(arcname):
    parts = [p for p in arcname.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise TreeError("unsafe path in archive: %r" % arcname)
    return parts


class Extractor:
    """Writes tar entries under ``root`` without ever following a symlink on the way.

    Files are written unnamed (``O_TMPFILE``) and given a name only once complete, then
    renamed into place: a reader never sees half a file, an existing symlink at the target
    is replaced, not followed, and a process killed mid-file leaves nothing behind. Where
    the file system has no ``O_TMPFILE``, a named temporary is used, and temporaries a
    killed extractor left (its pid gone) are removed from each directory written to
    (``removed_partial``).
    """

    def __init__(self, root, same_owner=None):
        self.root = root
        self.same_owner = os.geteuid() == 0 if same_owner is None else same_owner
        os.makedirs(root, exist_ok=True)
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        self._dirs = []  # directory metadata applied last (their mtimes change as we write)
        self._swept = set()
        self._unnamed = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
        self.removed_partial = []

    def close(self):
        for parts, info in reversed(self._dirs):
            try:
                fd = self._open_dir(parts, create=False)
            except (OSError, TreeError):
                continue
            try:
                self._apply_meta(fd, info)
            finally:
                os.close(fd)
        os.close(self.root_fd)

    def _open_dir(self, parts, create, modes=None):
        fd = os.dup(self.root_fd)
        for i, part in enumerate(parts):
            try:
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    os.close(fd)
                    raise
                os.mkdir(part, (modes or {}).get("/".join(parts[: i + 1]), 0o755), dir_fd=fd)
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (20, 40):  # ENOTDIR, ELOOP: a symlink or file where a directory should be
                    raise TreeError("refusing to write through %s: it is a symlink or not a directory" % "/".join(parts[: i + 1])) from None
                raise
            os.close(fd)
            fd = nfd
        return fd

    def _apply_meta(self, fd, info):
        if self.same_owner:
            uid, gid = _owner(info)
            try:
                os.fchown(fd, uid, gid)
            except OSError:
                pass
        os.fchmod(fd, info.mode)
        os.utime(fd, (info.mtime, info.mtime))

    def extract(self, info, source, parent_modes=None):
        """Create ``info`` from ``source`` (a readable positioned at the entry's data)."""
        parts = _split(info.name)
        if not parts:
            return
        parent = self._open_dir(parts[:-1], create=True, modes=parent_modes)
        name = parts[-1]
        try:
            if info.isdir():
                try:
                    os.mkdir(name, 0o700, dir_fd=parent)
                except FileExistsError:
                    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                    if not stat.S_ISDIR(st.st_mode):
                        os.unlink(name, dir_fd=parent)
                        os.mkdir(name, 0o700, dir_fd=parent)
                self._dirs.append((parts, info))
            elif info.issym():
                self._sweep(parts[:-1], parent)
                tmp = _temp_name(name)
                _unlink_quiet(tmp, parent)
                os.symlink(info.linkname, tmp, dir_fd=parent)
                if self.same_owner:
                    uid, gid = _owner(info)
                    try:
                        os.chown(tmp, uid, gid, dir_fd=parent, follow_symlinks=False)
                    except OSError:
                        pass
                _replace(tmp, name, parent)
            elif info.isreg():
                self._sweep(parts[:-1], parent)
                self._write_file(info, source, name, parent)
            elif info.islnk():
                self._sweep(parts[:-1], parent)
                self._link(info, name, parent)
            else:
                raise TreeError("unsupported entry type in archive: %s" % info.name)
        finally:
            os.close(parent)

    def _write_file(self, info, source, name, parent):
        fd, tmp = self._open_temp(name, parent)
        try:
            remaining = info.size
            while remaining:
                chunk = source.read(min(READ_SIZE, remaining))
                if not chunk:
                    raise TreeError("archive truncated inside %s" % info.name)
                os.write(fd, chunk)
                remaining -= len(chunk)
            self._apply_meta(fd, info)
            os.fsync(fd)
            if tmp is None:  # unnamed until now: only a complete file ever gets a name
                tmp = _temp_name(name)
                os.link("/proc/self/fd/%d" % fd, tmp, dst_dir_fd=parent, follow_symlinks=True)
        except BaseException:
            if tmp is not None:
                _unlink_quiet(tmp, parent)
            raise
        finally:
            os.close(fd)
        _replace(tmp, name, parent)

    def _link(self, info, name, parent):
        """Make ``name`` another name of the file the entry links to (written earlier in the
        stream, or already in place), replacing what is there; never through a symlink."""
        source = _split(info.linkname)
        if not source:
            raise TreeError("hard link %s has no target" % info.name)
        source_parent = self._open_dir(source[:-1], create=False)
        try:
            st = os.stat(source[-1], dir_fd=source_parent, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise TreeError("hard link %s: its target %s is not a regular file" % (info.name, info.linkname))
            try:
                have = os.stat(name, dir_fd=parent, follow_symlinks=False)
                if (have.st_dev, have.st_ino) == (st.st_dev, st.st_ino):
                    return  # already this file (a rename onto the same file would do nothing)
            except FileNotFoundError:
                pass
            tmp = _temp_name(name)
            _unlink_quiet(tmp, parent)
            os.link(source[-1], tmp, src_dir_fd=source_parent, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(source_parent)
        _replace(tmp, name, parent)

    def _open_temp(self, name, parent):
        """(fd, None) for an unnamed file in ``parent``, or (fd, temporary name)."""
        if self._unnamed:
            try:
                return os.open(".", os.O_WRONLY | os.O_TMPFILE, 0o600, dir_fd=parent), None
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                    raise
                self._unnamed = False  # this file system cannot: named temporaries from now on
        tmp = _temp_name(name)
        _unlink_quiet(tmp, parent)
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=parent), tmp

    def _sweep(self, parts, parent):
        """Remove, once per directory, the temporaries of extractors that were killed."""
        key = tuple(parts)
        if key in self._swept:
            return
        self._swept.add(key)
        for entry in os.listdir(parent):
            match = _TEMP.match(entry)
            if match and not _pid_alive(int(match.group(1))):
                try:
                    st = os.stat(entry, dir_fd=parent, follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                        os.unlink(entry, dir_fd=parent)
                        self.removed_partial.append("/".join(parts + [entry]))
                except OSError:
                    continue


_TEMP = re.compile(r"^\..+\.lifeboat-(\d+)-[0-9a-f]{8}$", re.DOTALL)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _temp_name(name):
    # Unique per process: two restores into one directory must not share a temp file.
    return ".%s.lifeboat-%d-%s" % (name[:200], os.getpid(), os.urandom(4).hex())


def _replace(tmp, name, parent):
    """Give the complete temporary ``tmp`` its final ``name``; on failure the temporary goes."""
    try:
        os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
    except IsADirectoryError:
        _unlink_quiet(tmp, parent)
        raise TreeError("cannot replace directory %s with a file" % name) from None
    except BaseException:
        _unlink_quiet(tmp, parent)
        raise


def _unlink_quiet(name, dir_fd):
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _owner(info):
    uid, gid = info.uid, info.gid
    if info.uname:
        try:
            uid = pwd.getpwnam(info.uname).pw_uid
        except KeyError:
            pass
    if info.gname:
        try:
            gid = grp.getgrnam(info.gname).gr_gid
        except KeyError:
            pass
    return uid, gid


def file_sha256(path):
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        while True:
            chunk = os.read(fd, READ_SIZE)
            if not chunk:
                return digest.hexdigest()
            digest.update(chunk)
    finally:
        os.close(fd)
