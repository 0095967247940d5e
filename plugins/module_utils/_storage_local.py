# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Storage target ``type: local``: a directory on the node (another disk, a mount the
operator manages). Also the base of ``type: nfs``, which adds the mount checks.

Atomic publication without overwrite: the partial file is hard-linked to the final name
(``link`` fails when the name exists) and then unlinked; on file systems without hard
links, the name is checked and the file renamed. What landed is read back after
``fsync`` with the page cache dropped for the file, so the bytes come from the disk (or,
on NFS, from the server), not from the memory they were written from.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module

from ansible_collections.lifeboat.backup.plugins.module_utils._storage_backend import FileBackend, StorageError

_KIND_OF_ERRNO = {
    errno.ENOSPC: "full",
    errno.EDQUOT: "full",
    errno.EFBIG: "full",
    errno.EACCES: "permission",
    errno.EPERM: "permission",
    errno.EROFS: "permission",
    errno.ENOENT: "not_found",
    errno.ENOTDIR: "not_found",
    errno.EEXIST: "exists",
    errno.EIO: "unreachable",
    errno.ESTALE: "unreachable",
    errno.ENOTCONN: "unreachable",
    errno.ETIMEDOUT: "timeout",
}

_ADVICE = {
    "full": "free space on the target or choose another one",
    "permission": "give the backup user write access to the directory (see docs/storage.md)",
    "unreachable": "check the mount and the server behind it",
}


def os_error(exc, what, label):
    """A StorageError for an OSError met while doing ``what`` on target ``label``."""
    kind = _KIND_OF_ERRNO.get(exc.errno, "protocol")
    text = "%s on %s failed: %s" % (what, label, exc.strerror or exc)
    if kind in _ADVICE:
        text += "; %s" % _ADVICE[kind]
    return StorageError(text, kind=kind)


class _Writer:
    """An unbuffered file that writes every byte it is given (FileIO may write fewer)."""

    def __init__(self, fd):
        self.fd = fd

    def write(self, data):
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        return len(data)

    def close(self):
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


class LocalBackend(FileBackend):
    kind = "local"
    verification = "read-back"

    def __init__(self, target):
        super().__init__(target)
        self.root = target["path"]

    def _root_path(self):
        return self.root

    def _errors(self, exc, what):
        return os_error(exc, what, self.label)

    def _check_location(self, write):
        if not os.path.isdir(self.root):
            raise StorageError(
                "target directory %s does not exist (or is not a directory); create it, or fix target.path" % self.root,
                kind="not_found",
            )

    def _stat(self, path):
        try:
            found = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._errors(exc, "stat of %s" % path) from None
        if not stat_module.S_ISREG(found.st_mode):
            raise StorageError("%s on %s is not a regular file" % (path, self.label), kind="exists")
        return {"name": os.path.basename(path), "size": found.st_size, "mtime": found.st_mtime}

    def _open_write(self, path, offset):
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if offset else os.O_TRUNC)
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            raise self._errors(exc, "creating %s" % path) from None
        writer = _Writer(fd)
        outer = self

        class Guarded:
            def write(self, data):
                try:
                    return writer.write(data)
                except OSError as exc:
                    raise outer._errors(exc, "writing %s" % path) from None

            def close(self):
                try:
                    writer.close()
                except OSError as exc:
                    raise outer._errors(exc, "closing %s" % path) from None

        return Guarded()

    def _after_write(self, path):
        # Written and fsynced by close(); drop the cached pages so the read-back
        # comes from the storage itself.
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        except (OSError, AttributeError):
            pass

    def _open_read(self, path, offset):
        try:
            handle = open(path, "rb")  # noqa: SIM115 - the caller closes it
        except OSError as exc:
            raise self._errors(exc, "opening %s" % path) from None
        if offset:
            handle.seek(offset)
        outer = self

        class Guarded:
            def read(self, size=-1):
                try:
                    return handle.read(size)
                except OSError as exc:
                    raise outer._errors(exc, "reading %s" % path) from None

            def close(self):
                handle.close()

        return Guarded()

    def _rename_noreplace(self, src, dst):
        try:
            os.link(src, dst)
        except FileExistsError:
            raise StorageError("%s already exists on %s; it was not overwritten" % (os.path.basename(dst), self.label), kind="exists") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
                raise self._errors(exc, "publishing %s" % dst) from None
            # No hard links here: check, then rename (a window only another writer of
            # the same name could use).
            if os.path.lexists(dst):
                raise StorageError("%s already exists on %s; it was not overwritten" % (os.path.basename(dst), self.label), kind="exists") from None
            try:
                os.rename(src, dst)
            except OSError as exc2:
                raise self._errors(exc2, "publishing %s" % dst) from None
        else:
            self._remove(src)
        self._fsync_dir(os.path.dirname(dst))

    def _fsync_dir(self, path):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass  # some file systems refuse fsync on directories; the rename is done

    def _remove(self, path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._errors(exc, "removing %s" % path) from None

    def _listdir(self, path):
        items = []
        try:
            with os.scandir(path) as scan:
                for item in scan:
                    try:
                        if item.is_file(follow_symlinks=False):
                            found = item.stat(follow_symlinks=False)
                            items.append({"name": item.name, "size": found.st_size, "mtime": found.st_mtime})
                    except FileNotFoundError:
                        continue
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._errors(exc, "listing %s" % path) from None
        return items

    def _makedirs(self, path):
        if not path or os.path.isdir(path):
            return
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise self._errors(exc, "creating directory %s" % path) from None

    def _space(self):
        try:
            found = os.statvfs(self.root)
        except OSError as exc:
            raise self._errors(exc, "statvfs of %s" % self.root) from None
        total = found.f_blocks * found.f_frsize
        free = found.f_bavail * found.f_frsize
        return {"total": total, "used": total - found.f_bfree * found.f_frsize, "free": free}
