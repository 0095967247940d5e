# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Storage target ``type: sftp``: SFTP over SSH with paramiko.

- The server's host key must match ``known_hosts`` / ``known_hosts_file`` (RejectPolicy);
  ``host_key_checking: accept_new`` trusts a first-seen host (and records it) but still
  refuses a changed key. Keys and passwords stay in memory.
- Writes are pipelined and reads prefetched (paramiko's per-request round trips would
  otherwise bound the throughput).
- What landed is checked with ``sha256sum`` run over the same SSH connection when the
  account has a shell; an SFTP-only account (``ForceCommand internal-sftp``) gets a
  read-back instead.
- Publication is the SFTP rename, which OpenSSH's server performs with link + unlink:
  it refuses to replace an existing name.
- Free space comes from the ``statvfs@openssh.com`` extension.
"""

from __future__ import annotations

import errno
import io
import posixpath
import socket
import stat as stat_module
import struct
import traceback

from ansible_collections.lifeboat.backup.plugins.module_utils._storage_backend import FileBackend, StorageError, parse_sha256, remote_sha256_command

# paramiko is imported by the first SFTP backend, not with this file: every module that
# uses targets imports every protocol file, and paramiko with cryptography costs about
# 30 MB of memory that an S3 or SMB transfer does not need.
paramiko = None
HAS_PARAMIKO = None
PARAMIKO_IMPORT_ERROR = None


def _load_paramiko():
    global paramiko, HAS_PARAMIKO, PARAMIKO_IMPORT_ERROR
    if HAS_PARAMIKO is None:
        try:
            import paramiko

            HAS_PARAMIKO = True
        except ImportError:
            HAS_PARAMIKO = False
            PARAMIKO_IMPORT_ERROR = traceback.format_exc()
    return HAS_PARAMIKO


WINDOW = 64 * 1024 * 1024
PACKET = 32 * 1024
_CMD_EXTENDED = 200
_NETWORK_ERRNOS = (errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EPIPE, errno.ECONNABORTED)


def require_paramiko():
    if not _load_paramiko():
        raise StorageError(
            "type sftp needs the Python library paramiko on this node (pip install paramiko, or the python3-paramiko package)",
            kind="unsupported",
            exception=PARAMIKO_IMPORT_ERROR,
        )


def load_private_key(text=None, path=None, passphrase=None):
    """A paramiko key from OpenSSH/PEM text or a file; StorageError (kind auth) if none fits."""
    require_paramiko()
    if path:
        try:
            with open(path) as handle:
                text = handle.read()
        except OSError as exc:
            raise StorageError("cannot read target.private_key_file %s: %s" % (path, exc.strerror), kind="config") from None
    classes = [getattr(paramiko, n) for n in ("Ed25519Key", "ECDSAKey", "RSAKey") if hasattr(paramiko, n)]
    problems = []
    for cls in classes:
        try:
            return cls.from_private_key(io.StringIO(text), password=passphrase)
        except paramiko.PasswordRequiredException:
            raise StorageError("the SSH private key is encrypted: give target.private_key_passphrase", kind="auth") from None
        except (paramiko.SSHException, ValueError, TypeError) as exc:
            problems.append(str(exc))
    raise StorageError("the SSH private key could not be read (not an Ed25519, ECDSA or RSA key in OpenSSH or PEM form, or a wrong passphrase)", kind="auth")


def known_host_name(host, port):
    return host if port in (None, 22) else "[%s]:%d" % (host, port)


def fingerprint(key):
    import base64
    import hashlib

    return "%s SHA256:%s" % (key.get_name(), base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("="))


def _accept_new(backend):
    """Trust on first use: accept an unknown host, remember it, append it to the file."""

    class AcceptNew(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):
            client.get_host_keys().add(hostname, key.get_name(), key)
            backend.accepted_host_key = fingerprint(key)
            backend.notes.append("trusted the host key of %s on first use: %s" % (hostname, fingerprint(key)))
            path = backend.target.get("known_hosts_file")
            if path:
                with open(path, "a") as handle:
                    handle.write("%s %s %s\n" % (hostname, key.get_name(), key.get_base64()))

    return AcceptNew()


def ssh_error(exc, what, label):
    """A StorageError for whatever paramiko or the socket raised while doing ``what``."""
    if isinstance(exc, StorageError):
        return exc
    if HAS_PARAMIKO and isinstance(exc, paramiko.BadHostKeyException):
        return StorageError(
            "%s: the SSH host key of %s has CHANGED (it shows %s): refusing to connect. If the server was reinstalled, "
            "check the new key with its administrator and update target.known_hosts" % (label, exc.hostname, fingerprint(exc.key)),
            kind="hostkey",
        )
    if HAS_PARAMIKO and isinstance(exc, paramiko.AuthenticationException):
        return StorageError("%s: SSH authentication failed for the login: check target.user and its key or password" % label, kind="auth")
    if HAS_PARAMIKO and isinstance(exc, paramiko.SSHException) and "known_hosts" in str(exc):
        return StorageError(
            "%s: the server's host key is not in target.known_hosts: add the line ssh-keyscan prints for it "
            "(after checking it), or set target.host_key_checking=accept_new" % label,
            kind="hostkey",
        )
    if isinstance(exc, socket.timeout):
        return StorageError("%s: %s timed out" % (label, what), kind="timeout")
    lost = (ConnectionError, EOFError, socket.gaierror) + ((paramiko.SSHException, paramiko.ssh_exception.NoValidConnectionsError) if HAS_PARAMIKO else ())
    if isinstance(exc, lost) or (isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS):
        return StorageError("%s: %s failed: the connection was lost or refused (%s)" % (label, what, exc or type(exc).__name__), kind="unreachable")
    if isinstance(exc, OSError):
        kind = {errno.ENOENT: "not_found", errno.EACCES: "permission"}.get(exc.errno, "protocol")
        text = exc.strerror or str(exc)
        advice = " (give the login write access to the directory)" if kind == "permission" else ""
        return StorageError("%s: %s failed: %s%s" % (label, what, text, advice), kind=kind)
    return StorageError("%s: %s failed: %s" % (label, what, exc), kind="protocol")


class SftpBackend(FileBackend):
    kind = "sftp"

    def __init__(self, target):
        super().__init__(target)
        require_paramiko()
        self.port = target.get("port") or 22
        self.accepted_host_key = None
        self.host_key = None
        self._pkey = None
        if target.get("private_key") or target.get("private_key_file"):
            self._pkey = load_private_key(target.get("private_key"), target.get("private_key_file"), target.get("private_key_passphrase"))
        self.client = None
        self.sftp = None
        self._shell = None
        self._root = None
        self._retrying("connecting to %s" % self.location, lambda attempt: self._connect())

    def _connect(self):
        client = paramiko.SSHClient()
        if self.target.get("known_hosts"):
            for number, line in enumerate(self.target["known_hosts"].splitlines(), 1):
                try:
                    entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
                except Exception:  # noqa: BLE001 - InvalidHostKey, binascii errors
                    entry = None
                if entry is None and line.strip() and not line.lstrip().startswith("#"):
                    raise StorageError("target.known_hosts line %d is not a known_hosts line (host keytype base64-key)" % number, kind="config")
                if entry is not None:
                    for name in entry.hostnames:
                        client.get_host_keys().add(name, entry.key.get_name(), entry.key)
        if self.target.get("known_hosts_file"):
            try:
                client.load_host_keys(self.target["known_hosts_file"])
            except FileNotFoundError:
                pass
            except (OSError, paramiko.SSHException) as exc:
                raise StorageError("cannot read target.known_hosts_file: %s" % exc, kind="config") from None
        policy = _accept_new(self) if self.target["host_key_checking"] == "accept_new" else paramiko.RejectPolicy()
        client.set_missing_host_key_policy(policy)
        timeout = self.target.get("timeout") or 30
        try:
            client.connect(
                self.target["host"],
                port=self.port,
                username=self.target["user"],
                password=self.target.get("password"),
                pkey=self._pkey,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                look_for_keys=False,
                allow_agent=False,
            )
            transport = client.get_transport()
            transport.set_keepalive(15)
            self.host_key = fingerprint(transport.get_remote_server_key())
            self.sftp = paramiko.SFTPClient.from_transport(transport, window_size=WINDOW, max_packet_size=PACKET)
            self.sftp.get_channel().settimeout(timeout)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a StorageError with its kind
            client.close()
            raise ssh_error(exc, "connecting to %s:%d" % (self.target["host"], self.port), self.label) from None
        self.client = client
        self._root = None

    def _reconnect(self):
        self.close()
        try:
            self._connect()
        except StorageError as exc:
            self._connect_error = exc  # the retry's first call fails and says why

    def close(self):
        for item in (self.sftp, self.client):
            if item is not None:
                try:
                    item.close()
                except Exception:  # noqa: BLE001, S110 - closing a dead connection
                    pass
        self.sftp = self.client = None

    def _lost(self, error):
        """A connection that died makes any error 'unreachable' (paramiko often reports
        a closed socket as a plain OSError)."""
        transport = self.client.get_transport() if self.client is not None else None
        if error.kind == "protocol" and (transport is None or not transport.is_active()):
            return StorageError("%s (the connection to the server was lost)" % error.msg, kind="unreachable")
        return error

    def _live(self):
        if self.sftp is None:
            last = getattr(self, "_connect_error", None)
            if last is not None:
                raise StorageError(last.msg, kind=last.kind)
            raise StorageError("%s: not connected" % self.label, kind="unreachable")
        return self.sftp

    def _root_path(self):
        if self._root is None:
            path = self.target["path"]
            self._root = (
                path
                if path.startswith("/")
                else posixpath.normpath(posixpath.join(self._call(lambda s: s.normalize("."), "resolving the login directory"), path))
            )
        return self._root

    def _call(self, operation, what):
        try:
            return operation(self._live())
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._lost(ssh_error(exc, what, self.label)) from None

    def _stat(self, path):
        try:
            found = self._live().stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if getattr(exc, "errno", None) == errno.ENOENT:
                return None
            raise ssh_error(exc, "stat of %s" % path, self.label) from None
        except Exception as exc:  # noqa: BLE001
            raise ssh_error(exc, "stat of %s" % path, self.label) from None
        if not stat_module.S_ISREG(found.st_mode or 0):
            raise StorageError("%s on %s is not a regular file" % (path, self.label), kind="exists")
        return {"name": posixpath.basename(path), "size": found.st_size, "mtime": found.st_mtime}

    def _open_write(self, path, offset):
        handle = self._call(lambda s: s.open(path, "ab" if offset else "wb"), "creating %s" % path)
        handle.set_pipelined(True)
        return _Guarded(self, handle, path, "writing")

    def _close_writer(self, writer, tmp):
        try:
            writer.close()
        except StorageError as exc:
            raise self._classify_write_failure(exc) from None

    def _classify_write_failure(self, exc):
        # OpenSSH's server reports ENOSPC as a generic "Failure": look at the space left.
        if exc.kind == "protocol":
            try:
                space = self._space()
            except StorageError:
                space = None
            if space is not None and space["free"] < 1024 * 1024:
                return StorageError("%s; the target is full (%d bytes free): free space or choose another target" % (exc.msg, space["free"]), kind="full")
        return exc

    def _open_read(self, path, offset, prefetch=True):
        handle = self._call(lambda s: s.open(path, "rb"), "opening %s" % path)
        if prefetch:
            # Pipelined reads a window at a time: paramiko's prefetch of a whole file
            # has no bound on what it buffers and slows down with the number of requests.
            size = self._call(lambda s: handle.stat().st_size, "stat of %s" % path)
            return _Guarded(self, _WindowedReader(handle, offset, size), path, "reading")
        if offset:
            handle.seek(offset)
        return _Guarded(self, handle, path, "reading")

    def read_range(self, name, offset, length):
        path = self._path(name)
        reader = self._open_read(path, offset, prefetch=False)
        try:
            return reader.read(length)
        finally:
            reader.close()

    def _read_back_sha256(self, path):
        reader = self._open_read(path, 0)
        try:
            return _hash_handle(reader)
        finally:
            reader.close()

    def _remote_sha256(self, path):
        """sha256sum over the same connection, when the login has a shell; else None."""
        if self._shell is False:
            return None
        try:
            _stdin, stdout, _stderr = self.client.exec_command(remote_sha256_command(path), timeout=max(60, self.target.get("timeout") or 30))
            output = stdout.read().decode("ascii", "replace")
            status = stdout.channel.recv_exit_status()
        except Exception:  # noqa: BLE001 - no exec channel (SFTP-only account): read back instead
            self._shell = False
            return None
        digest = parse_sha256(output)
        if status != 0 or digest is None:
            self._shell = False
            return None
        self._shell = True
        return digest

    def _rename_noreplace(self, src, dst):
        try:
            self._live().rename(src, dst)
        except OSError as exc:
            if self._stat(dst) is not None:
                raise StorageError("%s already exists on %s; it was not overwritten" % (posixpath.basename(dst), self.label), kind="exists") from None
            raise ssh_error(exc, "publishing %s" % dst, self.label) from None
        except Exception as exc:  # noqa: BLE001
            raise ssh_error(exc, "publishing %s" % dst, self.label) from None

    def _remove(self, path):
        try:
            self._live().remove(path)
        except OSError as exc:
            if getattr(exc, "errno", None) == errno.ENOENT:
                return
            raise ssh_error(exc, "removing %s" % path, self.label) from None
        except Exception as exc:  # noqa: BLE001
            raise ssh_error(exc, "removing %s" % path, self.label) from None

    def _listdir(self, path):
        try:
            items = self._live().listdir_attr(path)
        except OSError as exc:
            if getattr(exc, "errno", None) == errno.ENOENT:
                return None
            raise ssh_error(exc, "listing %s" % path, self.label) from None
        except Exception as exc:  # noqa: BLE001
            raise ssh_error(exc, "listing %s" % path, self.label) from None
        return [{"name": i.filename, "size": i.st_size, "mtime": i.st_mtime} for i in items if stat_module.S_ISREG(i.st_mode or 0)]

    def _makedirs(self, path):
        if not path or path == self._root_path():
            return
        missing = []
        current = path
        while current not in ("", "/", self._root_path()) and not self._is_dir(current):
            missing.append(current)
            current = posixpath.dirname(current)
        for directory in reversed(missing):
            self._call(lambda s, d=directory: s.mkdir(d, 0o700), "creating directory %s" % directory)

    def _is_dir(self, path):
        try:
            return stat_module.S_ISDIR(self._live().stat(path).st_mode or 0)
        except OSError:
            return False

    def _check_location(self, write):
        if not self._is_dir(self._root_path()):
            raise StorageError(
                "%s: the directory %s does not exist on the server; create it, or fix target.path" % (self.label, self._root_path()), kind="not_found"
            )
        return {"host_key": self.host_key, "host_key_accepted_now": self.accepted_host_key}

    def _space(self):
        sftp = self._live()
        try:
            kind, msg = sftp._request(_CMD_EXTENDED, "statvfs@openssh.com", self._root_path())
        except (OSError, paramiko.SSHException):
            return None  # the server has no statvfs extension
        except Exception as exc:  # noqa: BLE001
            raise ssh_error(exc, "asking for free space", self.label) from None
        raw = msg.get_remainder()
        if len(raw) < 88:
            return None
        _bsize, frsize, blocks, bfree, bavail = struct.unpack(">QQQQQ", raw[:40])
        total = blocks * frsize
        return {"total": total, "used": total - bfree * frsize, "free": bavail * frsize}


def _hash_handle(handle):
    import hashlib

    sha = hashlib.sha256()
    while True:
        chunk = handle.read(1024 * 1024)
        if not chunk:
            return sha.hexdigest()
        sha.update(chunk)


class _WindowedReader:
    """Reads [offset, size) with readv, WINDOW bytes of 32 KiB requests in flight at a time."""

    WINDOW = 8 * 1024 * 1024
    REQUEST = 32 * 1024

    def __init__(self, handle, offset, size):
        self.handle, self.pos, self.size = handle, offset, size
        self.buffer = b""

    def read(self, size=-1):
        if not self.buffer and self.pos < self.size:
            end = min(self.pos + self.WINDOW, self.size)
            chunks = [(o, min(self.REQUEST, end - o)) for o in range(self.pos, end, self.REQUEST)]
            self.buffer = b"".join(self.handle.readv(chunks))
            self.pos += len(self.buffer)
        if size is None or size < 0 or size >= len(self.buffer):
            out, self.buffer = self.buffer, b""
        else:
            out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out

    def close(self):
        self.handle.close()


class _Guarded:
    """A paramiko file whose errors become StorageErrors."""

    def __init__(self, backend, handle, path, verb):
        self.backend = backend
        self.handle = handle
        self.path = path
        self.verb = verb

    def write(self, data):
        try:
            self.handle.write(data)
        except Exception as exc:  # noqa: BLE001
            raise self.backend._classify_write_failure(self.backend._lost(ssh_error(exc, "%s %s" % (self.verb, self.path), self.backend.label))) from None
        return len(data)

    def read(self, size=-1):
        try:
            return self.handle.read(size)
        except Exception as exc:  # noqa: BLE001
            raise self.backend._lost(ssh_error(exc, "%s %s" % (self.verb, self.path), self.backend.label)) from None

    def close(self):
        try:
            self.handle.close()
        except Exception as exc:  # noqa: BLE001
            raise self.backend._lost(ssh_error(exc, "%s %s" % (self.verb, self.path), self.backend.label)) from None
