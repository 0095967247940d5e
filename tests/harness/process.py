"""Process plumbing shared by the server classes: a server's private directory,
its process group, readiness polling, and failures that explain themselves."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.harness.fetch import cache_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
# Logs of servers that failed to start (or died) are copied here before the
# server's temp dir is removed, so they outlive the test run.
FAILED_LOGS_DIR = Path(os.environ.get("LIFEBOAT_HARNESS_LOGS") or REPO_ROOT / ".build" / "logs" / "harness")
# LIFEBOAT_KEEP_SERVERS=1 keeps each server's temp dir after teardown, for debugging.
KEEP = os.environ.get("LIFEBOAT_KEEP_SERVERS", "") not in ("", "0")
LOG_TAIL_LINES = 40
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ServerError(RuntimeError):
    """A server could not be had: missing binary, failed start, timeout.

    Never a skip: the message says what is missing and how to get it.
    """


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now. Another process may take it
    before the server binds it; the servers retry on "address in use"."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(log is empty)"


def is_root() -> bool:
    return os.geteuid() == 0


def service_account(name: str) -> pwd.struct_passwd:
    """The unprivileged account a server runs as when the tests run as root.

    PostgreSQL, Elasticsearch and OpenSearch refuse to run as root. The
    account is created once (system user, no home, no login shell) under a
    lock so parallel test runs do not race on useradd.
    """
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    lock = cache_dir() / "useradd.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(name)
        except KeyError:
            cmd = [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise ServerError(f"cannot create the unprivileged account {name!r} the server must run as: {proc.stderr.strip()}") from None
    return pwd.getpwnam(name)


def chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for entry in dirnames + filenames:
            os.lchown(os.path.join(dirpath, entry), uid, gid)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL if the test process dies without
    tearing down (kill -9, OOM). The server runs in its own session, so it would
    otherwise outlive the test run. Runs after the switch to the service
    account, which would reset it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class ServerProcess:
    """One server process in its own process group, output to a log file."""

    def __init__(self, cmd: list[str], log_path: Path, env: dict[str, str], cwd: Path, account: pwd.struct_passwd | None):
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        kwargs = {"preexec_fn": _die_with_parent}
        if account is not None:
            kwargs.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
        try:
            self.popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,  # its own process group: stop() kills it whole
                **kwargs,
            )
        except OSError as exc:
            self._log.close()
            raise ServerError(f"cannot run {cmd[0]}: {exc}") from exc

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exited(self) -> int | None:
        return self.popen.poll()

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after grace."""
        try:
            if not self._signal_group(signal.SIGTERM, grace):
                self._signal_group(signal.SIGKILL, 10.0)
            self.popen.wait(timeout=10)
        finally:
            self._log.close()

    def _signal_group(self, sig: int, wait: float) -> bool:
        """Send sig to the group; True once no process of it is left."""
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            self.popen.poll()  # reap the leader, or it stays a zombie of ours
            if not group_alive(self.popen.pid):
                return True
            time.sleep(0.05)
        return False


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is still there (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # killpg(0) succeeds while only zombies remain; look at the states.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def wait_until(check, *, timeout: float, process: ServerProcess, what: str, interval: float = 0.2):
    """Poll check() until it returns a true value; fail fast if the process exits.

    check() may raise; the last exception is reported on timeout.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        code = process.exited()
        if code is not None:
            raise ServerError(f"{what} exited with status {code} before it was ready")
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last check: {last_error})" if last_error else ""
            raise ServerError(f"{what} was not ready after {timeout:.0f}s{detail}")
        time.sleep(interval)


def make_root(prefix: str) -> Path:
    """A private directory for one server, readable by its service account."""
    root = Path(tempfile.mkdtemp(prefix=f"lifeboat-{prefix}-"))
    root.chmod(0o755)
    return root


def save_logs(root: Path, label: str) -> Path | None:
    """Copy a failed server's logs out of its temp dir; return where they went."""
    logs = root / "logs"
    if not logs.is_dir():
        return None
    target = FAILED_LOGS_DIR / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    try:
        shutil.copytree(logs, target, symlinks=False, ignore=shutil.ignore_patterns("*.hprof"), dirs_exist_ok=True)
    except OSError:
        return None
    return target


def remove_root(root: Path) -> None:
    if KEEP:
        return
    shutil.rmtree(root, ignore_errors=True)
