# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Storage target ``type: nfs``: an NFS v4.x export through the kernel client.

Two ways, and in both nothing is written unless the directory really lies on an NFS
mount of the expected version (``/proc/self/mountinfo``): the empty directory left below
a lost mount, or a local disk mounted there by mistake, is refused (``not_mounted``).

- ``host`` + ``export``: the export is mounted (``mount -t nfs4 -o vers=...``) on a
  private mount point for the backend's life and unmounted at ``close()`` (root needed).
- ``path`` alone: an absolute path inside a mount the operator manages (fstab, autofs).

Reading, writing and publishing are the local backend's (hard link to publish, fsync,
read-back with the page cache dropped, so the check reads what the server holds).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from ansible_collections.lifeboat.backup.plugins.module_utils import _proc
from ansible_collections.lifeboat.backup.plugins.module_utils._storage_backend import StorageError
from ansible_collections.lifeboat.backup.plugins.module_utils._storage_local import LocalBackend

NFS_TYPES = ("nfs4", "nfs")


def _unescape(text):
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def parse_mountinfo(text):
    """Mounts as dicts: mount_point, fstype, source, options (mount and super options)."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 6 or len(tail) < 2:
            continue
        options = set(fields[5].split(",")) | set(tail[2].split(",") if len(tail) > 2 else [])
        mounts.append({"mount_point": _unescape(fields[4]), "fstype": tail[0], "source": _unescape(tail[1]), "options": sorted(options)})
    return mounts


def mount_of(path, mounts):
    """The mount a path lies on: the last-mounted one with the longest matching mount point."""
    best = None
    for mount in mounts:
        point = mount["mount_point"]
        inside = path == point or path.startswith(point.rstrip("/") + "/") or point == "/"
        if inside and (best is None or len(point) >= len(best["mount_point"])):
            best = mount
    return best


def check_nfs_mount(path, mounts, version="4", source=None):
    """The NFS mount ``path`` lies on, or StorageError (kind not_mounted) saying what it is on."""
    mount = mount_of(path, mounts)
    if mount is None or mount["fstype"] not in NFS_TYPES:
        what = "%s mounted at %s" % (mount["fstype"], mount["mount_point"]) if mount else "no mount"
        raise StorageError(
            "%s is not on an NFS mount (it is on %s): the NFS export is not mounted there (a lost mount?); "
            "nothing is written to the directory below a missing mount. Mount the export, or give target.host and "
            "target.export to let the module mount it" % (path, what),
            kind="not_mounted",
        )
    problem = _version_problem(mount, version)
    if not problem and source and mount["source"].rstrip("/") != source.rstrip("/"):
        problem = "an NFS mount of %s, not of %s" % (mount["source"], source)
    if problem:
        raise StorageError("%s is on %s" % (path, problem), kind="not_mounted")
    return mount


def _version_problem(mount, version):
    """What is wrong with the NFS version of ``mount`` (v4.x expected, ``version`` when not
    just "4"), or None."""
    versions = [o.split("=", 1)[1] for o in mount["options"] if o.startswith("vers=")]
    if mount["fstype"] == "nfs" and not any(v.startswith("4") for v in versions):
        return "an NFS mount of version %s; an NFS v4.x mount is expected" % (",".join(versions) or "3")
    if version != "4" and versions and not any(v == version or v == version.rstrip(".0") for v in versions):
        return "an NFS mount with vers=%s; target.nfs_version says %s" % (",".join(versions), version)
    return None


def read_mounts():
    with open("/proc/self/mountinfo") as handle:
        return parse_mountinfo(handle.read())


class NfsBackend(LocalBackend):
    kind = "nfs"

    def __init__(self, target):
        self.mount_point = None
        managed = bool(target.get("export"))
        if managed:
            target = dict(target)
            self.source = "%s:%s" % (target["host"], target["export"])
            self.mount_point = self._mount(target)
            target["path"] = os.path.join(self.mount_point, (target.get("path") or "").lstrip("/"))
        else:
            self.source = None
        super().__init__(target)
        self.managed = managed

    def _mount(self, target):
        if shutil.which("mount") is None:
            raise StorageError("type nfs with target.export needs the mount program", kind="unsupported")
        point = tempfile.mkdtemp(prefix="lifeboat-nfs-")
        options = ["vers=%s" % (target.get("nfs_version") or "4")] + list(target.get("mount_options") or [])
        argv = ["mount", "-t", "nfs4", "-o", ",".join(options), "%s:%s" % (target["host"], target["export"]), point]
        if target.get("port"):
            argv[4] += ",port=%d" % target["port"]
        try:
            proc = _proc.run(argv, capture_output=True, text=True, timeout=max(60, target.get("timeout") or 30))
        except subprocess.TimeoutExpired:
            os.rmdir(point)
            raise StorageError("mounting %s:%s timed out" % (target["host"], target["export"]), kind="timeout") from None
        if proc.returncode != 0:
            os.rmdir(point)
            raise mount_error(proc.stderr, "%s:%s" % (target["host"], target["export"]))
        return point

    def _check_location(self, write):
        # The mount first: below a lost mount the directory may be missing or empty.
        mount = check_nfs_mount(os.path.realpath(self.root), read_mounts(), self.target.get("nfs_version") or "4", self.source)
        super()._check_location(write)
        return {"mount_point": mount["mount_point"], "source": mount["source"], "fstype": mount["fstype"], "options": mount["options"]}

    def close(self):
        if self.mount_point:
            point, self.mount_point = self.mount_point, None
            proc = _proc.run(["umount", point], capture_output=True, text=True)
            if proc.returncode != 0:
                _proc.run(["umount", "-l", point], capture_output=True)
            try:
                os.rmdir(point)
            except OSError:
                pass


def mount_error(stderr, source):
    text = (stderr or "").strip()
    lower = text.lower()
    if "unknown filesystem type" in lower or "no such device" in lower or "wrong fs type" in lower or "bad option" in lower:
        return StorageError(
            "this node cannot mount %s: %s. Install nfs-common (Debian) or nfs-utils (EL) and make sure the kernel has NFS v4 "
            "support (modprobe nfs), or mount the export yourself and give target.path" % (source, text),
            kind="unsupported",
        )
    if "access denied" in lower or "permission denied" in lower or "only root" in lower:
        return StorageError("the NFS server refused %s to this node (%s): check the export's client list and options" % (source, text), kind="permission")
    if "timed out" in lower or "refused" in lower or "no route" in lower or "unreachable" in lower:
        return StorageError("cannot reach the NFS server for %s: %s" % (source, text), kind="unreachable")
    return StorageError("mounting %s failed: %s" % (source, text), kind="protocol")
