# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Storage targets: where images go when they leave their node (docs/storage.md).

    from ansible_collections.lifeboat.backup.plugins.module_utils import _storage

    module = LifeboatModule(argument_spec=..., specs=[_storage.TARGET_SPEC])
    with _storage.open_target(module.params["target"]) as backend:
        backend.put("20261122T194512Z-db1.zip", "/var/backups/lifeboat/20261122T194512Z-db1.zip")

``TARGET_SPEC`` is the ``target`` option (doc fragment ``lifeboat.backup._storage``),
``TARGETS_SPEC`` a list of them (``lifeboat.backup._storage.targets``). The backend
contract (put / get / read_range / list / stat / delete / space / probe / close) is
described in ``_storage_backend.py``; errors are ``StorageError`` with a ``kind``.

On top of it, what image modules share: images stored with a ``.sha256`` sidecar
(``sha256sum -c`` format), their manifests read by ranged reads of the zip's central
directory (no key, no whole download), pushing, fetching and removing an image with its
sidecar, and recording verified copies in the node's status and audit trail.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import queue
import threading
import zipfile

from ansible_collections.lifeboat.backup.plugins.module_utils import _image, _progress, _session
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._storage_backend import (
    KINDS,
    Backend,
    StorageError,
    check_name,
    location_of,
)
from ansible_collections.lifeboat.backup.plugins.module_utils._storage_ftp import FtpBackend
from ansible_collections.lifeboat.backup.plugins.module_utils._storage_local import LocalBackend
from ansible_collections.lifeboat.backup.plugins.module_utils._storage_nfs import NfsBackend
from ansible_collections.lifeboat.backup.plugins.module_utils._storage_rsync import RsyncBackend
from ansible_collections.lifeboat.backup.plugins.module_utils._storage_s3 import S3Backend
from ansible_collections.lifeboat.backup.plugins.module_utils._storage_sftp import SftpBackend
from ansible_collections.lifeboat.backup.plugins.module_utils._storage_smb import SmbBackend

__all__ = ["KINDS", "TARGET_OPTIONS", "TARGET_SPEC", "TARGETS_SPEC", "Backend", "StorageError", "open_target", "check_name"]

TYPES = ("local", "nfs", "smb", "rsync", "sftp", "ftp", "ftps", "s3")
SIDECAR_SUFFIX = ".sha256"
IMAGE_SUFFIX = ".zip"

# The options of one target; documented in plugins/doc_fragments/_storage.py.
TARGET_OPTIONS = dict(
    type=dict(type="str", required=True, choices=list(TYPES)),
    name=dict(type="str"),
    path=dict(type="str"),
    host=dict(type="str"),
    port=dict(type="int"),
    user=dict(type="str"),
    password=dict(type="str", no_log=True),
    domain=dict(type="str"),
    share=dict(type="str"),
    encrypt=dict(type="bool", default=True),
    export=dict(type="str"),
    nfs_version=dict(type="str", choices=["4", "4.0", "4.1", "4.2"], default="4"),
    mount_options=dict(type="list", elements="str"),
    private_key=dict(type="str", no_log=True),
    private_key_file=dict(type="path", no_log=False),
    private_key_passphrase=dict(type="str", no_log=True),
    known_hosts=dict(type="str"),
    known_hosts_file=dict(type="path"),
    host_key_checking=dict(type="str", choices=["strict", "accept_new"], default="strict"),
    validate_certs=dict(type="bool", default=True),
    ca_file=dict(type="path"),
    passive=dict(type="bool", default=True),
    bucket=dict(type="str"),
    endpoint_url=dict(type="str"),
    region=dict(type="str"),
    access_key=dict(type="str", no_log=False),
    secret_key=dict(type="str", no_log=True),
    session_token=dict(type="str", no_log=True),
    addressing_style=dict(type="str", choices=["auto", "path", "virtual"], default="auto"),
    timeout=dict(type="int", default=30),
    retries=dict(type="int", default=3),
    retry_delay=dict(type="float", default=1.0),
    bwlimit=dict(type="int"),
)
TARGET_SPEC = {"target": dict(type="dict", required=True, options=TARGET_OPTIONS)}
TARGETS_SPEC = {"targets": dict(type="list", elements="dict", default=[], options=TARGET_OPTIONS)}

# What each type needs, checked before any connection: (option, why).
_REQUIRED = {
    "local": [("path", "the directory on the node")],
    "smb": [("host", "the server"), ("share", "the share name"), ("user", "the account"), ("password", "the account's password")],
    "rsync": [("host", "the server"), ("user", "the SSH login"), ("path", "the directory on the server")],
    "sftp": [("host", "the server"), ("user", "the SSH login"), ("path", "the directory on the server")],
    "ftp": [("host", "the server"), ("user", "the login"), ("password", "the login's password")],
    "ftps": [("host", "the server"), ("user", "the login"), ("password", "the login's password")],
    "s3": [("bucket", "the bucket")],
    "nfs": [],
}


def validate(params, option="target"):
    """A normalised copy of one target's options (with ``label``), or OptionError naming
    the missing or contradictory option and the fix."""
    target = dict(params)
    kind = target.get("type")
    if kind not in TYPES:
        raise OptionError("%s.type" % option, "%s.type must be one of %s, not %r" % (option, ", ".join(TYPES), kind))
    for key, why in _REQUIRED[kind]:
        if target.get(key) in (None, ""):
            raise OptionError("%s.%s" % (option, key), "%s.%s is required for a target of type %s (%s)" % (option, key, kind, why))
    if kind == "local" and not target["path"].startswith("/"):
        raise OptionError("%s.path" % option, "%s.path must be an absolute directory on the node for type local, not %r" % (option, target["path"]))
    if kind == "nfs":
        _validate_nfs(target, option)
    if kind in ("rsync", "sftp"):
        _validate_ssh(target, option)
    for key in ("timeout", "retries", "bwlimit"):
        if target.get(key) is not None and target[key] < 0:
            raise OptionError("%s.%s" % (option, key), "%s.%s must not be negative" % (option, key))
    target["label"] = target.get("name") or None
    return target


def _validate_nfs(target, option):
    if target.get("export"):
        if not target.get("host"):
            raise OptionError("%s.host" % option, "%s.host is required with %s.export (the NFS server)" % (option, option))
        if not target["export"].startswith("/"):
            raise OptionError("%s.export" % option, "%s.export must be the export's absolute path on the server, like /srv/backups" % option)
        if (target.get("path") or "").startswith("/"):
            raise OptionError("%s.path" % option, "%s.path is relative to the export when %s.export is given" % (option, option))
    elif not (target.get("path") or "").startswith("/"):
        raise OptionError(
            "%s.path" % option,
            "type nfs needs either %s.host and %s.export (mounted by the module) or %s.path, an absolute path inside an existing NFS mount" % ((option,) * 3),
        )


def _validate_ssh(target, option):
    if target["type"] == "rsync" and not (target.get("private_key") or target.get("private_key_file")):
        raise OptionError("%s.private_key" % option, "type rsync needs %s.private_key or %s.private_key_file (SSH key authentication)" % (option, option))
    if target["type"] == "sftp" and not (target.get("private_key") or target.get("private_key_file") or target.get("password")):
        raise OptionError("%s.private_key" % option, "type sftp needs %s.private_key, %s.private_key_file or %s.password" % ((option,) * 3))
    if target.get("private_key") and target.get("private_key_file"):
        raise OptionError("%s.private_key" % option, "give %s.private_key or %s.private_key_file, not both" % (option, option))
    if target["host_key_checking"] == "strict" and not (target.get("known_hosts") or target.get("known_hosts_file")):
        raise OptionError(
            "%s.known_hosts" % option,
            "%s.known_hosts (or %s.known_hosts_file) is required to check the server's host key: "
            "give the line ssh-keyscan prints for it, or set %s.host_key_checking=accept_new to trust it on first use" % ((option,) * 3),
        )


def _backend_class(kind):
    """The backend of a type. Protocol files are imported here, statically, so Ansible
    ships them with every module that uses targets; each imports its library guarded."""
    backends = {
        "local": LocalBackend,
        "sftp": SftpBackend,
        "s3": S3Backend,
        "smb": SmbBackend,
        "ftp": FtpBackend,
        "ftps": FtpBackend,
        "rsync": RsyncBackend,
        "nfs": NfsBackend,
    }
    if kind in backends:
        return backends[kind]
    raise StorageError("target type %s is not available in this version of lifeboat.backup" % kind, kind="unsupported")


def open_target(params, option="target"):
    """An open Backend for one target's options (validated here). Raises OptionError or
    StorageError (a library missing on the node: kind ``unsupported``, message naming it)."""
    target = validate(params, option)
    return _backend_class(target["type"])(target)


def describe(params, option="target"):
    """Name, type and location of a target, without connecting (plans, messages, results)."""
    target = validate(params, option)
    location = location_of(target)
    return {"name": target.get("label") or location, "type": target["type"], "location": location}


# ---- images on targets ------------------------------------------------------------------


def sidecar_name(name):
    return name + SIDECAR_SUFFIX


def is_image_name(name):
    return name.endswith(IMAGE_SUFFIX) and not posixpath.basename(name).startswith(".")


class RangeReader:
    """A read-only, seekable file over ``backend.read_range``, caching blocks, so that
    ``zipfile`` can read an image's central directory and manifest with a few ranged reads."""

    BLOCK = 64 * 1024

    def __init__(self, backend, name, size):
        self.backend = backend
        self.name = name
        self.size = size
        self.pos = 0
        self._blocks = {}
        self.requests = 0

    def seekable(self):
        return True

    def readable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=0):
        if whence == 1:
            offset += self.pos
        elif whence == 2:
            offset += self.size
        if offset < 0:
            raise OSError("negative seek position")
        self.pos = offset
        return self.pos

    def _block(self, index):
        if index not in self._blocks:
            if len(self._blocks) > 64:
                self._blocks.clear()
            self.requests += 1
            self._blocks[index] = self.backend.read_range(self.name, index * self.BLOCK, self.BLOCK)
        return self._blocks[index]

    def read(self, size=-1):
        end = self.size if size is None or size < 0 else min(self.size, self.pos + size)
        parts = []
        while self.pos < end:
            index, skip = divmod(self.pos, self.BLOCK)
            block = self._block(index)[skip : skip + end - self.pos]
            if not block:
                break
            parts.append(block)
            self.pos += len(block)
        return b"".join(parts)

    def close(self):
        self._blocks.clear()


def remote_manifest(backend, name, size=None):
    """The plaintext manifest of an image on a target, read with ranged reads (the zip's
    end records, central directory and the manifest member): no key, no whole download."""
    if size is None:
        found = backend.stat(name)
        if found is None:
            raise StorageError("%s is not on %s" % (name, backend.label), kind="not_found")
        size = found["size"]
    reader = RangeReader(backend, name, size)
    try:
        with zipfile.ZipFile(reader) as archive:
            raw = archive.read(_image.MANIFEST_NAME)
    except KeyError:
        raise StorageError("%s on %s has no %s: not a lifeboat image" % (name, backend.label, _image.MANIFEST_NAME), kind="integrity") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise StorageError("%s on %s is not a readable image: %s" % (name, backend.label, exc), kind="integrity") from None
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise StorageError("%s on %s: the manifest is not valid JSON: %s" % (name, backend.label, exc), kind="integrity") from None
    if manifest.get("format") != _image.FORMAT_NAME:
        raise StorageError("%s on %s is not a lifeboat image" % (name, backend.label), kind="integrity")
    return manifest


def image_details(manifest):
    """What storage_info and the restore role show of an image, from its manifest."""
    encryption = manifest.get("encryption") or {}
    if encryption.get("scheme") != "age":
        kind = "none"
    elif encryption.get("identity_member"):
        kind = "passphrase+recipients" if len(encryption.get("recipients") or []) > 1 else "passphrase"
    else:
        kind = "recipients"
    return {
        "node": manifest.get("node"),
        "backup_id": manifest.get("backup_id"),
        "started": manifest.get("started"),
        "sealed": manifest.get("sealed"),
        "verdict": manifest.get("verdict"),
        "platform": manifest.get("platform") or {},
        "components": {n: c.get("status") for n, c in (manifest.get("components") or {}).items()},
        "encryption": kind,
    }


def list_images(backend, prefix="", node=None, details=True):
    """Images on a target, oldest first: name, size, mtime, sha256 (from the sidecar, or
    None), and with ``details`` the manifest's node, backup id, times, verdict, components
    and encryption kind (an unreadable image gets ``error`` instead)."""
    objects = backend.list(prefix)
    sidecars = {o["name"] for o in objects if o["name"].endswith(IMAGE_SUFFIX + SIDECAR_SUFFIX)}
    images = []
    for obj in objects:
        if not is_image_name(obj["name"]):
            continue
        item = dict(obj, sidecar=sidecar_name(obj["name"]) in sidecars)
        if details:
            try:
                item.update(image_details(remote_manifest(backend, obj["name"], obj["size"])))
            except StorageError as exc:
                if exc.kind in ("unreachable", "timeout", "not_mounted", "auth"):
                    raise
                item["error"] = exc.msg
        if node and details and item.get("node") not in (node, None):
            continue
        images.append(item)
    images.sort(key=lambda i: (i.get("sealed") or "", i["name"]))
    return images


def read_sidecar(backend, name):
    """The SHA-256 recorded beside an image, or None when there is no sidecar."""
    sidecar = sidecar_name(name)
    found = backend.stat(sidecar)
    if found is None:
        return None
    text = backend.read_range(sidecar, 0, min(found["size"], 4096)).decode("ascii", "replace")
    digest = text.split()[0] if text.split() else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
        raise StorageError("%s on %s is not a sha256sum line" % (sidecar, backend.label), kind="integrity")
    return digest.lower()


def file_sha256(path):
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(1024 * 1024)
            if not chunk:
                return sha.hexdigest()
            sha.update(chunk)


class _BytesSource:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def read(self, size=-1):
        end = len(self.data) if size is None or size < 0 else self.pos + size
        chunk = self.data[self.pos : end]
        self.pos += len(chunk)
        return chunk

    def seekable(self):
        return True

    def seek(self, offset, whence=0):
        self.pos = offset
        return offset

    def tell(self):
        return self.pos


def push_image(backend, path, name=None, progress=None):
    """Copy a local image to the target: the image (atomic, verified), then its sidecar.
    An image already there with the same SHA-256 is left alone (``changed`` False); one
    with other content is never overwritten (StorageError kind ``exists``)."""
    name = check_name(name or os.path.basename(path))
    if not is_image_name(name):
        raise StorageError("%s is not an image name (*.zip)" % name, kind="config")
    existing = backend.stat(name)
    if existing is not None:
        return _already_there(backend, path, name, existing)
    if progress is None:
        progress = _progress.reporter().item_done
        _progress.reporter().phase("uploading", item=name, total=os.path.getsize(path))
    record = backend.put(name, path, progress=progress)
    _put_sidecar(backend, name, record["sha256"])
    record.update(changed=True, sidecar=sidecar_name(name))
    return record


def _already_there(backend, path, name, existing):
    local_sha = file_sha256(path)
    local_size = os.path.getsize(path)
    remote_sha = read_sidecar(backend, name)
    how = "sidecar"
    if remote_sha is None or existing["size"] != local_size:
        sha = hashlib.sha256()
        backend.get(name, _HashSink(sha))
        remote_sha, how = sha.hexdigest(), "read-back"
    if remote_sha != local_sha or existing["size"] != local_size:
        raise StorageError(
            "%s already exists on %s with other content (SHA-256 %s, this image %s); it is never overwritten: "
            "remove it there by hand if it is damaged, or push under another name" % (name, backend.label, remote_sha, local_sha),
            kind="exists",
        )
    if backend.stat(sidecar_name(name)) is None:
        _put_sidecar(backend, name, local_sha)
    record = {"name": name, "size": local_size, "sha256": local_sha, "verified": how, "location": backend.location}
    record.update(changed=False, sidecar=sidecar_name(name))
    return record


def _put_sidecar(backend, name, digest):
    line = ("%s  %s\n" % (digest, posixpath.basename(name))).encode("ascii")
    try:
        backend.put(sidecar_name(name), _BytesSource(line), size=len(line))
    except StorageError as exc:
        if exc.kind != "exists" or read_sidecar(backend, name) != digest:
            raise


class _HashSink:
    def __init__(self, sha):
        self.sha = sha

    def write(self, data):
        self.sha.update(data)
        return len(data)


def fetch_image(backend, name, destination, expected_sha256=None, progress=None):
    """Download an image into ``destination`` (a directory on the node) under a partial
    name, check it (the whole file's SHA-256 against the sidecar or ``expected_sha256``,
    then every member's stored SHA-256 against the manifest), then rename it into place.
    Never replaces an existing file. Returns a dict: path, size, sha256, checks."""
    check_name(name)
    final = os.path.join(destination, posixpath.basename(name))
    if os.path.exists(final):
        raise StorageError("%s already exists on this node; remove it or fetch into another destination" % final, kind="exists")
    expected = expected_sha256 or read_sidecar(backend, name)
    partial = os.path.join(destination, ".%s.partial" % posixpath.basename(name))
    if progress is None:
        progress = _progress.reporter().item_done
        _progress.reporter().phase("downloading", item=name)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    digests = _image.StreamDigests()
    try:
        with os.fdopen(fd, "wb") as sink:
            writer = _WriterSink(sink, digests)
            try:
                got = backend.get(name, writer, progress=progress)
            finally:
                writer.finish()
            sink.flush()
            os.fsync(sink.fileno())
        checks = _check_fetched(backend, name, partial, got, expected, digests)
        try:
            os.link(partial, final)
        except FileExistsError:
            raise StorageError("%s appeared on this node during the download; it was left as it is" % final, kind="exists") from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return {"path": final, "size": got["size"], "sha256": got["sha256"], "checks": checks}


class _WriterSink:
    """The download's sink: a thread writes each block to the file and computes the
    member digests, while the caller's thread receives and hashes the next one (two
    cores at work instead of one). At most DEPTH blocks wait; an error of the thread
    (disk full) is raised by the next write or by finish()."""

    DEPTH = 2

    def __init__(self, sink, digests):
        self.sink = sink
        self.digests = digests
        self.blocks = queue.Queue(self.DEPTH)
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            block = self.blocks.get()
            if block is None:
                return
            if self.error is None:
                try:
                    self.sink.write(block)
                    self.digests.write(block)
                except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                    self.error = exc

    def write(self, data):
        if self.error is not None:
            raise self.error
        self.blocks.put(data)
        return len(data)

    def finish(self):
        """Wait for the blocks still queued; raise the thread's error if any."""
        if self.thread.is_alive():
            self.blocks.put(None)
            self.thread.join()
        if self.error is not None:
            raise self.error


def _check_fetched(backend, name, partial, got, expected, digests):
    checks = []
    if expected is not None:
        if got["sha256"] != expected:
            raise StorageError(
                "the copy of %s on %s is damaged: its SHA-256 is %s, the image's is %s; it was not kept on this node. "
                "Fetch another copy (another target or an older image)" % (name, backend.label, got["sha256"], expected),
                kind="integrity",
            )
        checks.append("sha256 of the whole image matches the sidecar")
    try:
        with _image.Image(partial) as image:
            results, first_error = _image.verify_image(image, "checksum", digests=digests.digests)
    except _image.ImageError as exc:
        raise StorageError(
            "the copy of %s on %s is not a usable image: %s; it was not kept on this node" % (name, backend.label, exc),
            kind="integrity",
        ) from None
    if first_error:
        raise StorageError(
            "the copy of %s on %s is damaged: member %s: %s; it was not kept on this node" % (name, backend.label, first_error["member"], first_error["error"]),
            kind="integrity",
        )
    how = "computed during the download" if digests.ended else "read again"
    checks.append("stored SHA-256 of %d members match the manifest (%s)" % (len(results), how))
    return checks


def delete_image(backend, name):
    """Remove an image and its sidecar from a target; True when the image was there."""
    removed = backend.delete(name)
    backend.delete(sidecar_name(name))
    return removed


# ---- the node's record of its copies ------------------------------------------------------


def record_copy(state_dir, target_label, location, image_path, outcome, backup_id=None, reason=None, error_kind=None):
    """Record one copy attempt in the node's audit trail (``event: copy``) and, when it
    was verified, in ``status.json`` ``copies.<target>`` (docs/storage.md, "Copy records")."""
    state = _session.NodeState(state_dir)
    state.ensure()
    now = _session.utc_now()
    line = {
        "event": "copy",
        "time": now,
        "target": target_label,
        "location": location,
        "image": os.path.basename(image_path),
        "backup_id": backup_id,
        "verdict": "success" if reason is None else "failed",
        "size": outcome.get("size") if outcome else None,
        "sha256": outcome.get("sha256") if outcome else None,
        "verified": outcome.get("verified") if outcome else None,
        "seconds": outcome.get("seconds") if outcome else None,
        "reason": reason,
        "error_kind": error_kind,
    }
    state.audit(line)
    status = state.status()
    copies = dict(status.get("copies") or {})
    previous = dict(copies.get(target_label) or {})
    if reason is None:
        previous.update(last_success={k: line[k] for k in ("time", "image", "backup_id", "size", "sha256", "verified", "location")}, last_error=None)
    else:
        previous.update(last_error={"time": now, "image": line["image"], "backup_id": backup_id, "reason": reason, "kind": error_kind})
    copies[target_label] = previous
    state.update_status(copies=copies)
    return line
