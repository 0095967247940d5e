# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Storage target ``type: smb``: an SMB 2/3 share through the smbprotocol library, no mount.

- NTLM (or Kerberos when the node has a ticket) as ``user``, ``DOMAIN\\user`` or
  ``user@domain``; the password stays in memory.
- Encryption of every message is required by default (``encrypt: true``), signing always.
- Publication is an SMB rename without ReplaceIfExists: the server refuses to replace.
- What landed is read back (SMB has no server-side hash).
- Free space comes from the volume information (``stat_volume``).
- Each backend has its own connection cache, so two targets on one server with
  different accounts never share a session.
"""

from __future__ import annotations

import errno
import posixpath
import stat as stat_module
import traceback

from ansible_collections.lifeboat.backup.plugins.module_utils._storage_backend import FileBackend, StorageError

# smbprotocol is imported by the first SMB backend (memory: see _storage_sftp).
smbclient = smbprotocol = None
HAS_SMB = None
SMB_IMPORT_ERROR = None


def _load_smb():
    global smbclient, smbprotocol, HAS_SMB, SMB_IMPORT_ERROR
    if HAS_SMB is None:
        try:
            import smbclient
            import smbprotocol.exceptions

            HAS_SMB = True
        except ImportError:
            HAS_SMB = False
            SMB_IMPORT_ERROR = traceback.format_exc()
    return HAS_SMB


WRITE_BLOCK = 4 * 1024 * 1024
_ATTRIBUTE_DIRECTORY = 0x10
_ATTRIBUTE_REPARSE_POINT = 0x400
_STATUS_NOT_FOUND = 0xC0000225  # NtStatus.STATUS_NOT_FOUND


def smb_error(exc, what, label):
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, (smbprotocol.exceptions.LogonFailure, smbprotocol.exceptions.SMBAuthenticationError)):
        return StorageError("%s: SMB logon failed: check target.user (DOMAIN\\user for a domain account) and target.password" % label, kind="auth")
    if isinstance(exc, smbprotocol.exceptions.AccessDenied):
        return StorageError("%s: %s failed: access denied: give the account change rights on the share and the directory" % (label, what), kind="permission")
    if isinstance(exc, smbprotocol.exceptions.DiskFull):
        return StorageError("%s: %s failed: the share is full: free space or choose another target" % (label, what), kind="full")
    if isinstance(exc, smbprotocol.exceptions.SMBConnectionClosed):
        return StorageError("%s: %s failed: the connection was closed by the server" % (label, what), kind="unreachable")
    if isinstance(exc, OSError) and not isinstance(exc, smbprotocol.exceptions.SMBOSError):
        return StorageError("%s: %s failed: %s" % (label, what, exc), kind="timeout" if isinstance(exc, TimeoutError) else "unreachable")
    if isinstance(exc, smbprotocol.exceptions.SMBOSError):
        kind = {errno.ENOENT: "not_found", errno.EACCES: "permission", errno.EEXIST: "exists", errno.ENOSPC: "full"}.get(exc.errno, "protocol")
        for status, status_kind in (("ACCESS_DENIED", "permission"), ("DISK_FULL", "full"), ("QUOTA_EXCEEDED", "full")):
            if status in str(exc):
                kind = status_kind
        if kind == "permission":
            return StorageError("%s: %s failed: access denied: give the account change rights on the share and the directory" % (label, what), kind=kind)
        return StorageError("%s: %s failed: %s" % (label, what, exc.strerror or exc), kind=kind)
    if isinstance(exc, ValueError) and "connect" in str(exc).lower():
        return StorageError("%s: %s failed: %s" % (label, what, exc), kind="unreachable")
    if isinstance(exc, smbprotocol.exceptions.SMBResponseException):
        text = str(exc)
        if "BAD_NETWORK_NAME" in text:
            return StorageError("%s: the share does not exist on the server: fix target.share" % label, kind="not_found")
        if "ENCRYPT" in text.upper():
            return StorageError(
                "%s: %s failed: %s (the server cannot encrypt; set target.encrypt=false only if you accept that)" % (label, what, text), kind="protocol"
            )
        return StorageError("%s: %s failed: %s" % (label, what, text), kind="protocol")
    return StorageError("%s: %s failed: %s" % (label, what, exc), kind="protocol")


class SmbBackend(FileBackend):
    kind = "smb"

    def __init__(self, target):
        super().__init__(target)
        if not _load_smb():
            raise StorageError(
                "type smb needs the Python library smbprotocol on this node (pip install smbprotocol)", kind="unsupported", exception=SMB_IMPORT_ERROR
            )
        self.port = target.get("port") or 445
        self.cache = {}
        user = target["user"]
        if target.get("domain") and "\\" not in user and "@" not in user:
            user = "%s\\%s" % (target["domain"], user)
        self._session = dict(
            username=user,
            password=target["password"],
            port=self.port,
            encrypt=bool(target.get("encrypt", True)),
            connection_timeout=target.get("timeout") or 30,
            connection_cache=self.cache,
        )
        self._retrying("connecting to %s" % self.location, lambda attempt: self._connect())

    def _connect(self):
        try:
            smbclient.register_session(self.target["host"], **self._session)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a StorageError with its kind
            raise smb_error(exc, "connecting to %s:%d" % (self.target["host"], self.port), self.label) from None

    def _reconnect(self):
        self.close()
        try:
            self._connect()
        except StorageError:
            pass  # the retry's first call fails again and says why

    def close(self):
        try:
            smbclient.reset_connection_cache(connection_cache=self.cache)
        except Exception:  # noqa: BLE001, S110 - closing a dead connection
            pass

    def _kwargs(self):
        return {
            "port": self.port,
            "connection_cache": self.cache,
            "username": self._session["username"],
            "password": self._session["password"],
            "encrypt": self._session["encrypt"],
        }

    def _root_path(self):
        return posixpath.join("/", (self.target.get("path") or "").strip("/"))

    def _unc(self, path):
        return "\\\\%s\\%s%s" % (self.target["host"], self.target["share"], path.replace("/", "\\").rstrip("\\") if path != "/" else "")

    def _call(self, what, function, *args, **kwargs):
        try:
            return function(*args, **dict(self._kwargs(), **kwargs))
        except Exception as exc:  # noqa: BLE001
            raise smb_error(exc, what, self.label) from None

    def _stat(self, path):
        try:
            found = smbclient.stat(self._unc(path), **self._kwargs())
        except smbprotocol.exceptions.SMBOSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise smb_error(exc, "stat of %s" % path, self.label) from None
        except Exception as exc:  # noqa: BLE001
            raise smb_error(exc, "stat of %s" % path, self.label) from None
        if not stat_module.S_ISREG(found.st_mode):
            raise StorageError("%s on %s is not a regular file" % (path, self.label), kind="exists")
        return {"name": posixpath.basename(path), "size": found.st_size, "mtime": found.st_mtime}

    def _open_write(self, path, offset):
        handle = self._call("creating %s" % path, smbclient.open_file, self._unc(path), mode="ab" if offset else "wb")
        return _Writer(self, handle, path)

    def _open_read(self, path, offset):
        handle = self._call("opening %s" % path, smbclient.open_file, self._unc(path), mode="rb")
        if offset:
            handle.seek(offset)
        return _Reader(self, handle, path)

    def _rename_noreplace(self, src, dst):
        try:
            smbclient.rename(self._unc(src), self._unc(dst), **self._kwargs())
        except smbprotocol.exceptions.SMBOSError as exc:
            if exc.errno == errno.EEXIST:
                raise StorageError("%s already exists on %s; it was not overwritten" % (posixpath.basename(dst), self.label), kind="exists") from None
            raise smb_error(exc, "publishing %s" % dst, self.label) from None
        except Exception as exc:  # noqa: BLE001
            raise smb_error(exc, "publishing %s" % dst, self.label) from None

    def _remove(self, path):
        try:
            smbclient.remove(self._unc(path), **self._kwargs())
        except smbprotocol.exceptions.SMBOSError as exc:
            if exc.errno != errno.ENOENT:
                raise smb_error(exc, "removing %s" % path, self.label) from None
        except Exception as exc:  # noqa: BLE001
            raise smb_error(exc, "removing %s" % path, self.label) from None

    def _listdir(self, path):
        items = []
        try:
            for item in smbclient.scandir(self._unc(path), **self._kwargs()):
                info = item.smb_info  # from the directory listing itself: no round trip per file
                if not info.file_attributes & (_ATTRIBUTE_DIRECTORY | _ATTRIBUTE_REPARSE_POINT):
                    items.append({"name": item.name, "size": info.end_of_file, "mtime": info.last_write_time.timestamp()})
        except smbprotocol.exceptions.SMBOSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise smb_error(exc, "listing %s" % path, self.label) from None
        except Exception as exc:  # noqa: BLE001
            raise smb_error(exc, "listing %s" % path, self.label) from None
        return items

    def _makedirs(self, path):
        if not path or path == self._root_path():
            return
        self._call("creating directory %s" % path, smbclient.makedirs, self._unc(path), exist_ok=True)

    def _check_location(self, write):
        try:
            found = smbclient.stat(self._unc(self._root_path()), **self._kwargs())
        except smbprotocol.exceptions.SMBOSError as exc:
            if exc.errno == errno.ENOENT and not self._share_exists():
                raise self._missing_share() from None
            if exc.errno == errno.ENOENT:
                raise StorageError(
                    "%s: the directory %s does not exist in the share; create it, or fix target.path" % (self.label, self._root_path()), kind="not_found"
                ) from None
            raise smb_error(exc, "looking at the share", self.label) from None
        except Exception as exc:  # noqa: BLE001
            # smbprotocol before 1.17 (the last releases for Python 3.9) answers a missing
            # share with STATUS_NOT_FOUND from its DFS referral request, not with ENOENT.
            if getattr(exc, "status", None) == _STATUS_NOT_FOUND and not self._share_exists():
                raise self._missing_share() from None
            raise smb_error(exc, "looking at the share", self.label) from None
        if not stat_module.S_ISDIR(found.st_mode):
            raise StorageError("%s: %s is not a directory" % (self.label, self._root_path()), kind="not_found")
        return {"encrypted": self._session["encrypt"]}

    def _missing_share(self):
        return StorageError(
            "%s: the share %s does not exist on the server (or this account may not use it): fix target.share" % (self.label, self.target["share"]),
            kind="not_found",
        )

    def _share_exists(self):
        try:
            smbclient.stat(self._unc("/"), **self._kwargs())
        except Exception:  # noqa: BLE001 - Samba says NOT_FOUND for a missing share
            return False
        return True

    def _space(self):
        info = self._call("asking for free space", smbclient.stat_volume, self._unc(self._root_path()))
        return {"total": info.total_size, "used": info.total_size - info.actual_available_size, "free": info.caller_available_size}


class _Writer:
    """Gathers writes into blocks of WRITE_BLOCK: each SMB write is one round trip."""

    def __init__(self, backend, handle, path):
        self.backend, self.handle, self.path = backend, handle, path
        self.pending = bytearray()

    def write(self, data):
        self.pending += data
        if len(self.pending) >= WRITE_BLOCK:
            self._flush()
        return len(data)

    def _flush(self):
        try:
            view = memoryview(self.pending)
            while view:
                written = self.handle.write(view)
                view = view[written:]
        except Exception as exc:  # noqa: BLE001
            raise smb_error(exc, "writing %s" % self.path, self.backend.label) from None
        finally:
            self.pending = bytearray()

    def close(self):
        try:
            if self.pending:
                self._flush()
        finally:
            try:
                self.handle.close()
            except Exception as exc:  # noqa: BLE001
                raise smb_error(exc, "closing %s" % self.path, self.backend.label) from None


class _Reader:
    def __init__(self, backend, handle, path):
        self.backend, self.handle, self.path = backend, handle, path

    def read(self, size=-1):
        try:
            return self.handle.read(size if size and size > 0 else WRITE_BLOCK)
        except Exception as exc:  # noqa: BLE001
            raise smb_error(exc, "reading %s" % self.path, self.backend.label) from None

    def close(self):
        try:
            self.handle.close()
        except Exception:  # noqa: BLE001, S110 - the read is over
            pass
