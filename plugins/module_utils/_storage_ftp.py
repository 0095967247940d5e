# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Storage targets ``type: ftps`` (explicit FTPS: AUTH TLS, protected data connections,
certificate and name verified) and ``type: ftp`` (plain, password in clear: only for a
server that offers nothing else), with the standard library's ftplib.

- ``path`` is relative to the login directory, as the gateway seed's FTP host expects.
- Passive mode by default. The TLS session of the control connection is reused for the
  data connections (vsftpd's default ``require_ssl_reuse=YES`` refuses them otherwise).
- Resume with ``APPE``; ranged reads with ``REST`` and an early close of the transfer.
- FTP has no rename that refuses to replace: the final name is checked just before
  ``RNFR``/``RNTO``. What landed is read back (no standard hash command).
- FTP has no command for free space: ``space()`` is None.
"""

from __future__ import annotations

import ftplib
import posixpath
import socket
import ssl
import time

from ansible_collections.lifeboat.backup.plugins.module_utils._storage_backend import FileBackend, StorageError


class _FtpTls(ftplib.FTP_TLS):
    """FTP_TLS that resumes the control connection's TLS session on data connections."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return conn, size


def ftp_error(exc, what, label):
    if isinstance(exc, StorageError):
        return exc
    text = str(exc)
    code = text[:3]
    if isinstance(exc, ssl.SSLCertVerificationError):
        return StorageError(
            "%s: the server's TLS certificate was refused (%s): give target.ca_file, or fix the server's certificate" % (label, exc.verify_message or exc),
            kind="hostkey",
        )
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return StorageError("%s: %s timed out" % (label, what), kind="timeout")
    if isinstance(exc, (OSError, EOFError)) and not isinstance(exc, ftplib.Error):
        return StorageError("%s: %s failed: the connection was lost or refused (%s)" % (label, what, exc or type(exc).__name__), kind="unreachable")
    if code == "530":
        return StorageError("%s: FTP login refused: check target.user and target.password" % label, kind="auth")
    if code in ("552", "452") or "space" in text.lower() and code.startswith(("4", "5")):
        return StorageError("%s: %s failed: the server is out of space (%s): free space or choose another target" % (label, what, text), kind="full")
    if code == "451" and "writing" in text.lower():
        # vsftpd's answer to any failed write(2) on its side; out of space is by far the
        # commonest cause, but FTP cannot tell it from a failing disk: say both.
        return StorageError(
            "%s: %s failed: the server could not write the file (%s), most likely out of space (or its disk failed): "
            "free space or choose another target" % (label, what, text),
            kind="full",
        )
    if code in ("550", "553") and any(word in text.lower() for word in ("permission", "denied", "privilege", "not allowed")):
        return StorageError("%s: %s failed: permission denied (%s): give the login write access" % (label, what, text), kind="permission")
    if code == "550":
        return StorageError("%s: %s failed: %s" % (label, what, text), kind="not_found")
    if code in ("421", "425", "426"):
        return StorageError("%s: %s failed: %s" % (label, what, text), kind="unreachable")
    return StorageError("%s: %s failed: %s" % (label, what, text), kind="protocol")


class FtpBackend(FileBackend):
    kind = "ftp"

    def __init__(self, target):
        super().__init__(target)
        self.port = target.get("port") or 21
        self.tls = target["type"] == "ftps"
        self.ftp = None
        self.home = None
        self._mlsd = None
        if not self.tls:
            self.notes.append("plain FTP: the password and the image travel in clear (use type ftps where the server allows it)")
        self._retrying("connecting to %s" % self.location, lambda attempt: self._connect())

    def _context(self):
        context = ssl.create_default_context(cafile=self.target.get("ca_file"))
        if not self.target.get("validate_certs", True):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self):
        timeout = self.target.get("timeout") or 30
        ftp = _FtpTls(context=self._context(), timeout=timeout) if self.tls else ftplib.FTP(timeout=timeout)
        try:
            ftp.connect(self.target["host"], self.port, timeout=timeout)
            if self.tls:
                ftp.auth()
            ftp.login(self.target["user"], self.target["password"])
            if self.tls:
                ftp.prot_p()
            ftp.set_pasv(bool(self.target.get("passive", True)))
            ftp.voidcmd("TYPE I")
            self.home = ftp.pwd()
        except Exception as exc:  # noqa: BLE001 - every failure becomes a StorageError with its kind
            try:
                ftp.close()
            except Exception:  # noqa: BLE001, S110
                pass
            raise ftp_error(exc, "connecting to %s:%d" % (self.target["host"], self.port), self.label) from None
        self.ftp = ftp

    def _reconnect(self):
        self.close()
        try:
            self._connect()
        except StorageError:
            pass  # the retry's first call fails again and says why

    def close(self):
        if self.ftp is not None:
            try:
                self.ftp.quit()
            except Exception:  # noqa: BLE001
                self.ftp.close()
            self.ftp = None

    def _live(self):
        if self.ftp is None:
            raise StorageError("%s: not connected" % self.label, kind="unreachable")
        return self.ftp

    def _call(self, what, operation):
        try:
            return operation(self._live())
        except Exception as exc:  # noqa: BLE001
            raise ftp_error(exc, what, self.label) from None

    def _root_path(self):
        return posixpath.normpath(posixpath.join(self.home or "/", self.target.get("path") or ""))

    def _pending_reply(self, wait=3):
        """A reply the server sent on the control connection while a transfer failed."""
        ftp = self.ftp
        if ftp is None:
            return None
        try:
            ftp.sock.settimeout(wait)
            ftp.getresp()
        except ftplib.Error as exc:
            return exc
        except Exception:  # noqa: BLE001 - nothing came: the caller reports its own error
            return None
        finally:
            try:
                ftp.sock.settimeout(self.target.get("timeout") or 30)
            except OSError:
                pass
        return None

    def _binary(self):
        self._call("switching to binary mode", lambda f: f.voidcmd("TYPE I"))

    def _stat(self, path):
        try:
            size = self._live().size(path)
        except ftplib.error_perm:
            return None  # 550: no such file (or a directory)
        except Exception as exc:  # noqa: BLE001
            raise ftp_error(exc, "size of %s" % path, self.label) from None
        if size is None:
            return None
        mtime = None
        try:
            reply = self._live().voidcmd("MDTM %s" % path)
            mtime = time.mktime(time.strptime(reply.split()[-1][:14], "%Y%m%d%H%M%S")) - time.timezone
        except (ftplib.Error, ValueError, IndexError):
            pass
        return {"name": posixpath.basename(path), "size": size, "mtime": mtime}

    def _open_write(self, path, offset):
        conn = self._call("starting the upload of %s" % path, lambda f: f.transfercmd(("APPE %s" if offset else "STOR %s") % path))
        return _Transfer(self, conn, path, "writing")

    def _open_read(self, path, offset):
        conn = self._call("starting the download of %s" % path, lambda f: f.transfercmd("RETR %s" % path, rest=offset or None))
        return _Transfer(self, conn, path, "reading")

    def _rename_noreplace(self, src, dst):
        if self._stat(dst) is not None:
            raise StorageError("%s already exists on %s; it was not overwritten" % (posixpath.basename(dst), self.label), kind="exists")
        self._call("publishing %s" % dst, lambda f: f.rename(src, dst))

    def _remove(self, path):
        try:
            self._live().delete(path)
        except ftplib.error_perm as exc:
            if self._stat(path) is not None:
                raise ftp_error(exc, "removing %s" % path, self.label) from None
        except Exception as exc:  # noqa: BLE001
            raise ftp_error(exc, "removing %s" % path, self.label) from None

    def _listdir(self, path):
        if self._mlsd is not False:
            try:
                items = list(self._live().mlsd(path, facts=["type", "size", "modify"]))
                self._binary()  # listings switch the session to ASCII; SIZE and REST need binary
                self._mlsd = True
                return [
                    {"name": name, "size": int(facts.get("size", 0)), "mtime": _mlsd_time(facts.get("modify"))}
                    for name, facts in items
                    if facts.get("type") == "file"
                ]
            except ftplib.error_perm as exc:
                if not str(exc).startswith(("500", "501", "502", "504")):
                    return None  # 550: no such directory
                # The server has no MLSD (or refuses OPTS MLST, as vsftpd does with 501):
                # names, then SIZE each.
                self._mlsd = False
            except Exception as exc:  # noqa: BLE001
                raise ftp_error(exc, "listing %s" % path, self.label) from None
        try:
            names = self._live().nlst(path)
            self._binary()
        except ftplib.error_perm:
            return None
        except Exception as exc:  # noqa: BLE001
            raise ftp_error(exc, "listing %s" % path, self.label) from None
        items = []
        for name in names:
            found = self._stat(posixpath.join(path, posixpath.basename(name)))
            if found is not None:
                items.append(found)
        return items

    def _makedirs(self, path):
        if not path or path == self._root_path():
            return
        parts = []
        current = path
        while current not in ("", "/", self._root_path()):
            parts.append(current)
            current = posixpath.dirname(current)
        for directory in reversed(parts):
            try:
                self._live().mkd(directory)
            except ftplib.error_perm:
                pass  # exists (the upload says so if it really cannot be created)
            except Exception as exc:  # noqa: BLE001
                raise ftp_error(exc, "creating directory %s" % directory, self.label) from None

    def _check_location(self, write):
        root = self._root_path()
        try:
            self._live().cwd(root)
            self._live().cwd(self.home)
        except ftplib.error_perm:
            raise StorageError(
                "%s: the directory %s does not exist on the server; create it, or fix target.path" % (self.label, root), kind="not_found"
            ) from None
        except Exception as exc:  # noqa: BLE001
            raise ftp_error(exc, "looking at %s" % root, self.label) from None
        details = {"tls": self.tls}
        if self.tls:
            details["cipher"] = self._live().sock.cipher()[0]
        return details


def _mlsd_time(text):
    if not text:
        return None
    try:
        return time.mktime(time.strptime(text[:14], "%Y%m%d%H%M%S")) - time.timezone
    except ValueError:
        return None


class _Transfer:
    """One data connection, for writing or reading; close() ends it and reads the reply."""

    def __init__(self, backend, conn, path, verb):
        self.backend, self.conn, self.path, self.verb = backend, conn, path, verb
        self.eof = False
        self.failed = False

    def write(self, data):
        try:
            self.conn.sendall(data)
        except Exception as exc:  # noqa: BLE001
            # The server says why on the control connection (451/452/552: out of space).
            # That reply ends the transfer: close() must not wait for another one.
            self.failed = True
            reason = self.backend._pending_reply()
            raise ftp_error(reason or exc, "%s %s" % (self.verb, self.path), self.backend.label) from None
        return len(data)

    def read(self, size=-1):
        size = size if size and size > 0 else 1024 * 1024
        try:
            chunk = self.conn.recv(size)
        except Exception as exc:  # noqa: BLE001
            raise ftp_error(exc, "%s %s" % (self.verb, self.path), self.backend.label) from None
        if not chunk:
            self.eof = True
        return chunk

    def close(self):
        if self.failed:
            self.conn.close()
            return
        ftp = self.backend._live()
        try:
            if isinstance(self.conn, ssl.SSLSocket) and (self.verb == "writing" or self.eof):
                self.conn.unwrap()
        except (OSError, ValueError):
            pass
        finally:
            self.conn.close()
        try:
            ftp.voidresp()
        except ftplib.Error as exc:
            if self.verb == "reading" and not self.eof:
                return  # we stopped reading early (a ranged read): the server says 426/451
            raise ftp_error(exc, "%s %s" % (self.verb, self.path), self.backend.label) from None
        except Exception as exc:  # noqa: BLE001
            raise ftp_error(exc, "%s %s" % (self.verb, self.path), self.backend.label) from None
