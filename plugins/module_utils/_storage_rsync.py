# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Storage target ``type: rsync``: rsync over SSH with a key and a pinned host key, using
the OpenSSH and rsync programs of the node (what the vault seed's operators run).

- The key never touches the disk: a private ``ssh-agent`` is started for the backend, the
  key is handed to ``ssh-add -`` on its standard input (a passphrase through
  ``SSH_ASKPASS`` in the child's environment), and the agent is killed at ``close()``.
- The host key is checked: ``StrictHostKeyChecking=yes`` against ``known_hosts``
  (written to a private 0600 file: it is public data) or ``known_hosts_file``;
  ``accept-new`` only with ``host_key_checking: accept_new``. Never ``no``.
- Images go with ``rsync --inplace --partial`` to the partial name (``--append-verify`` to
  resume), then the file is hashed with ``sha256sum`` on the server and published with
  ``ln`` (which refuses an existing name) and ``rm``. Everything else runs as small
  commands over SSH (GNU coreutils and findutils on the server): ``stat``, ``find``,
  ``df`` for the space, ``tail -c`` for ranged reads and downloads.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import shutil
import subprocess
import tempfile
import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _proc
from ansible_collections.lifeboat.backup.plugins.module_utils._storage_backend import (
    Background,
    FileBackend,
    StorageError,
    parse_sha256,
    partial_name,
    remote_sha256_command,
)

_ASKPASS = "#!/bin/sh\nprintf '%s\\n' \"$LIFEBOAT_KEY_PASSPHRASE\"\n"


def classify(stderr, status, what, label):
    text = (stderr or "").strip().splitlines()
    last = text[-1] if text else "exit status %d" % status
    lower = (stderr or "").lower()
    if "host key verification failed" in lower or "remote host identification has changed" in lower:
        return StorageError(
            "%s: the SSH host key of the server does not match target.known_hosts (or is unknown): refusing to connect; "
            "check the key with the server's administrator (or set target.host_key_checking=accept_new for a first contact)" % label,
            kind="hostkey",
        )
    if "permission denied (publickey" in lower or "too many authentication failures" in lower:
        return StorageError("%s: SSH authentication failed: check target.user and target.private_key (authorized_keys on the server)" % label, kind="auth")
    if "no space left" in lower or "disk quota exceeded" in lower:
        return StorageError("%s: %s failed: the server is out of space (%s): free space or choose another target" % (label, what, last), kind="full")
    if "permission denied" in lower or "read-only file system" in lower:
        return StorageError("%s: %s failed: permission denied (%s): give the login write access" % (label, what, last), kind="permission")
    if "timed out" in lower or "timeout" in lower:
        return StorageError("%s: %s timed out (%s)" % (label, what, last), kind="timeout")
    if status == 255 or "connection" in lower or "broken pipe" in lower or status in (10, 12, 30, 35):
        return StorageError("%s: %s failed: the connection was lost or refused (%s)" % (label, what, last), kind="unreachable")
    if "no such file" in lower:
        return StorageError("%s: %s failed: %s" % (label, what, last), kind="not_found")
    return StorageError("%s: %s failed: %s" % (label, what, last), kind="protocol")


class RsyncBackend(FileBackend):
    kind = "rsync"

    def __init__(self, target):
        super().__init__(target)
        for tool in ("ssh", "ssh-agent", "ssh-add", "rsync"):
            if shutil.which(tool) is None:
                raise StorageError("type rsync needs the %s program on this node (Debian packages openssh-client and rsync)" % tool, kind="unsupported")
        self.port = target.get("port") or 22
        self.dir = tempfile.mkdtemp(prefix="lifeboat-rsync-")
        self.agent = None
        self.env = dict(os.environ, LC_ALL="C")
        self.env.pop("SSH_AUTH_SOCK", None)
        try:
            self._start_agent()
            self._write_known_hosts()
            self._retrying("connecting to %s" % self.location, lambda attempt: self._check_connection())
        except BaseException:
            self.close()
            raise

    # ---- ssh plumbing ------------------------------------------------------------------

    def _start_agent(self):
        sock = os.path.join(self.dir, "agent")
        self.agent = _proc.popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env)
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            if time.monotonic() > deadline or self.agent.poll() is not None:
                raise StorageError("could not start a private ssh-agent for the rsync target", kind="unsupported")
            time.sleep(0.02)
        self.env["SSH_AUTH_SOCK"] = sock
        add_env = dict(self.env)
        argv = ["ssh-add", "-q", "-"]
        key_input = self.target.get("private_key")
        if self.target.get("private_key_file"):
            argv[-1], key_input = self.target["private_key_file"], None
        if self.target.get("private_key_passphrase"):
            askpass = os.path.join(self.dir, "askpass")
            with open(askpass, "w") as handle:
                handle.write(_ASKPASS)
            os.chmod(askpass, 0o700)
            add_env.update(SSH_ASKPASS=askpass, SSH_ASKPASS_REQUIRE="force", DISPLAY="none", LIFEBOAT_KEY_PASSPHRASE=self.target["private_key_passphrase"])
        if key_input is not None and not key_input.endswith("\n"):
            key_input += "\n"
        proc = _proc.run(
            argv,
            data=key_input,
            capture_output=True,
            text=True,
            env=add_env,
            stdin=None if key_input is not None else subprocess.DEVNULL,
            timeout=30,
        )
        if proc.returncode != 0:
            raise StorageError(
                "the SSH private key could not be loaded (%s): check target.private_key and its passphrase" % proc.stderr.strip().splitlines()[-1:], kind="auth"
            )

    def _write_known_hosts(self):
        self.known_hosts = self.target.get("known_hosts_file")
        if self.target.get("known_hosts"):
            path = os.path.join(self.dir, "known_hosts")
            with open(path, "w") as handle:
                handle.write(self.target["known_hosts"].rstrip("\n") + "\n")
                if self.known_hosts and os.path.exists(self.known_hosts):
                    with open(self.known_hosts) as extra:
                        handle.write(extra.read())
            self.known_hosts = path
        if not self.known_hosts:
            self.known_hosts = os.path.join(self.dir, "known_hosts")  # accept_new with nothing given

    def ssh_argv(self):
        checking = "accept-new" if self.target["host_key_checking"] == "accept_new" else "yes"
        timeout = self.target.get("timeout") or 30
        return [
            "ssh", "-p", str(self.port), "-l", self.target["user"], "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=%s" % checking,
            "-o", "UserKnownHostsFile=%s" % self.known_hosts, "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=%d" % timeout,
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=%d" % max(2, timeout // 15), "-o", "IdentityAgent=%s" % self.env["SSH_AUTH_SOCK"],
            "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no", "-o", "LogLevel=ERROR",
            # One SSH connection for the backend's many small commands and the transfer.
            "-o", "ControlMaster=auto", "-o", "ControlPath=%s" % os.path.join(self.dir, "control"), "-o", "ControlPersist=120",
        ]  # fmt: skip

    def _ssh(self, command, what, input_data=None, check=True, timeout=None):
        argv = self.ssh_argv() + [self.target["host"], command]
        try:
            proc = _proc.run(argv, data=input_data, capture_output=True, env=self.env, timeout=timeout or max(60, (self.target.get("timeout") or 30) * 4))
        except subprocess.TimeoutExpired:
            raise StorageError("%s: %s timed out" % (self.label, what), kind="timeout") from None
        err = proc.stderr.decode("utf-8", "replace")
        if check and proc.returncode != 0:
            raise classify(err, proc.returncode, what, self.label)
        return proc.returncode, proc.stdout.decode("utf-8", "replace"), err

    def _check_connection(self):
        self._ssh("true", "connecting to %s:%d" % (self.target["host"], self.port))

    def close(self):
        if self.agent is not None and os.path.exists(os.path.join(self.dir, "control")):
            _proc.run(self.ssh_argv() + ["-O", "exit", self.target["host"]], capture_output=True, env=self.env, timeout=30)
        if self.agent is not None:
            self.agent.kill()
            self.agent.wait()
            self.agent = None
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- primitives --------------------------------------------------------------------

    def _root_path(self):
        return self.target["path"].rstrip("/") or "/"

    def _stat(self, path):
        status, out, err = self._ssh("stat -c '%%s %%Y %%F' -- %s" % shlex.quote(path), "stat of %s" % path, check=False)
        if status != 0:
            if "no such file" in err.lower():
                return None
            raise classify(err, status, "stat of %s" % path, self.label)
        size, mtime, kind = out.strip().split(" ", 2)
        if not kind.startswith("regular"):
            raise StorageError("%s on %s is not a regular file" % (path, self.label), kind="exists")
        return {"name": posixpath.basename(path), "size": int(size), "mtime": float(mtime)}

    def _put_once(self, name, final, src, progress, state, attempt):
        if not src.path or not os.path.isfile(src.path):
            return super()._put_once(name, final, src, progress, state, attempt)
        tmp = self._path_unchecked(partial_name(name))
        offset = self._resume_offset(tmp, src)
        if offset:
            state["resumed_from"] = offset
        self._makedirs(posixpath.dirname(final))
        local = Background(lambda: src.rewind(src.size).hexdigest())  # while rsync sends
        try:
            self._rsync(src.path, tmp, append=bool(offset))
        finally:
            digest = local.result()
        how = self._verify(tmp, src.size, digest, name)
        if self._stat(final) is not None:
            self._remove(tmp)
            raise StorageError("%s appeared on %s during the upload; the existing copy was left as it is" % (name, self.label), kind="exists")
        self._rename_noreplace(tmp, final)
        return {"name": name, "size": src.size, "sha256": digest, "verified": how, "attempts": attempt, "location": self.location, "tool": "rsync"}

    def _rsync(self, local, remote, append):
        argv = ["rsync", "--inplace", "--partial", "--times", "--chmod=F600", "--timeout=%d" % max(30, self.target.get("timeout") or 30)]
        argv += ["--append-verify"] if append else []
        argv += ["--bwlimit=%d" % self.throttle_kib] if self.throttle_kib else []
        argv += ["-e", " ".join(shlex.quote(a) for a in self.ssh_argv()), "--", local, "%s:%s" % (self.target["host"], remote)]
        proc = _proc.run(argv, capture_output=True, env=self.env)
        if proc.returncode != 0:
            raise classify(proc.stderr.decode("utf-8", "replace"), proc.returncode, "rsync to %s" % remote, self.label)

    def _open_write(self, path, offset):
        return _Pipe(self, self.ssh_argv() + [self.target["host"], "cat %s %s" % (">>" if offset else ">", shlex.quote(path))], path, write=True)

    def _open_read(self, path, offset):
        return _Pipe(self, self.ssh_argv() + [self.target["host"], "tail -c +%d -- %s" % (offset + 1, shlex.quote(path))], path, write=False)

    def _remote_sha256(self, path):
        _status, out, _err = self._ssh(remote_sha256_command(path), "hashing %s" % path)
        return parse_sha256(out)

    def _rename_noreplace(self, src, dst):
        status, _out, err = self._ssh("ln -- %s %s && rm -f -- %s" % (shlex.quote(src), shlex.quote(dst), shlex.quote(src)), "publishing %s" % dst, check=False)
        if status != 0:
            if "file exists" in err.lower():
                raise StorageError("%s already exists on %s; it was not overwritten" % (posixpath.basename(dst), self.label), kind="exists")
            raise classify(err, status, "publishing %s" % dst, self.label)

    def _remove(self, path):
        self._ssh("rm -f -- %s" % shlex.quote(path), "removing %s" % path)

    def _listdir(self, path):
        quoted = shlex.quote(path)
        status, out, err = self._ssh(
            "test -d %s || exit 3; find %s -mindepth 1 -maxdepth 1 -type f -printf '%%f\\t%%s\\t%%T@\\n'" % (quoted, quoted), "listing %s" % path, check=False
        )
        if status == 3:
            return None
        if status != 0:
            raise classify(err, status, "listing %s" % path, self.label)
        items = []
        for line in out.splitlines():
            parts = line.rsplit("\t", 2)
            if len(parts) == 3:
                items.append({"name": parts[0], "size": int(parts[1]), "mtime": float(parts[2])})
        return items

    def _makedirs(self, path):
        if path and path != self._root_path():
            self._ssh("mkdir -p -m 700 -- %s" % shlex.quote(path), "creating directory %s" % path)

    def _check_location(self, write):
        status, _out, err = self._ssh("test -d %s" % shlex.quote(self._root_path()), "looking at %s" % self._root_path(), check=False)
        if status == 1:
            raise StorageError(
                "%s: the directory %s does not exist on the server; create it, or fix target.path" % (self.label, self._root_path()), kind="not_found"
            )
        if status != 0:
            raise classify(err, status, "looking at %s" % self._root_path(), self.label)
        return {"tool": "rsync"}

    def _space(self):
        _status, out, _err = self._ssh("df -P -B1 -- %s" % shlex.quote(self._root_path()), "asking for free space")
        lines = out.strip().splitlines()
        fields = lines[-1].split() if len(lines) >= 2 else []
        if len(fields) < 4:
            return None
        total, used, free = (int(f) for f in fields[1:4])
        return {"total": total, "used": used, "free": free}


class _Pipe:
    """``ssh host cat`` as a writable, or ``ssh host tail -c`` as a readable."""

    def __init__(self, backend, argv, path, write):
        self.backend, self.path, self.writing = backend, path, write
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the pipe
        self.proc = _proc.popen(
            argv,
            stdin=subprocess.PIPE if write else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if write else subprocess.PIPE,
            stderr=self.errors,
            env=backend.env,
        )

    def _failure(self, status):
        self.errors.seek(0)
        return classify(self.errors.read().decode("utf-8", "replace"), status, ("writing %s" if self.writing else "reading %s") % self.path, self.backend.label)

    def write(self, data):
        try:
            self.proc.stdin.write(data)
        except OSError:
            raise self._failure(self.proc.wait()) from None
        return len(data)

    def read(self, size=-1):
        return self.proc.stdout.read(size if size and size > 0 else 1024 * 1024)

    def close(self):
        try:
            if self.writing:
                self.proc.stdin.close()
            else:
                self.proc.stdout.close()
        except OSError:
            pass
        status = self.proc.wait()
        if status != 0 and (self.writing or status not in (141, -13)):  # a reader stopped early: SIGPIPE
            raise self._failure(status)
