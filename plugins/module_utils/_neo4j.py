# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Neo4j (community) on disk: where its files are, whether it runs, and its store ids.

Neo4j community has no online backup: its files may only be copied while no Neo4j
process has them open. Three independent signs say a Neo4j server is running:

- the pid file (``<run dir>/neo4j.pid``, written by ``neo4j start``/``neo4j console`` and
  removed on a clean stop) names a live process;
- a process holds the store lock: Neo4j keeps an exclusive POSIX record lock (``fcntl``)
  on ``<data>/databases/store_lock`` and on each ``<data>/databases/<db>/database_lock``
  for as long as it runs, embedded or not; ``F_GETLK`` asks the kernel who holds it,
  without taking it;
- something accepts connections on the Bolt address.

The store id of each database is read from its ``neostore`` metadata file (record
storage, Neo4j 5): fixed 9-byte slots (a header byte, then 8 bytes, big-endian).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import os
import re
import shutil
import socket
import struct
import tempfile
import uuid

from ansible_collections.lifeboat.backup.plugins.module_utils import _session
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError

DEFAULT_HOME = "/var/lib/neo4j"
DEFAULT_BOLT_PORT = 7687
# Where an installation keeps its files, defined once beside the doc fragment
# (plugins/doc_fragments/_neo4j.py); neo4j_archive and neo4j_restore pass it in specs=[...].
LAYOUT_SPEC = dict(
    home=dict(type="path", default=DEFAULT_HOME),
    config=dict(type="path"),
    data_dir=dict(type="path"),
    pid_file=dict(type="path"),
    bolt_address=dict(type="str"),
    neo4j_admin=dict(type="path"),
)
CONFIG_CANDIDATES = ("{home}/conf/neo4j.conf", "/etc/neo4j/neo4j.conf")
# Neo4j 5 names first, then the 4.x names (still found in configuration of older installs).
DATA_KEYS = ("server.directories.data", "dbms.directories.data")
RUN_KEYS = ("server.directories.run", "dbms.directories.run")
BOLT_KEYS = ("server.bolt.listen_address", "dbms.connector.bolt.listen_address")
BOLT_ENABLED_KEYS = ("server.bolt.enabled", "dbms.connector.bolt.enabled")
LISTEN_KEYS = ("server.default_listen_address", "dbms.default_listen_address")

# Neo4j 5's rule for a database name: 3 to 63 characters, an ASCII letter first, then letters,
# digits, dots, dashes (underscores in older versions), not ending with a dot or dash; the
# system prefix is reserved.
DATABASE_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]{1,61}[A-Za-z0-9_]")

SLOT = 9  # MetaDataStore record: 1 header byte + 8 bytes
EXTERNAL_STORE_UUID_SLOT = 0  # 2 slots
DATABASE_ID_SLOT = 2  # 2 slots
STORE_ID_SLOT = 5  # 8 slots
STORE_ID_SLOTS = 8


class Neo4jError(LifeboatError):
    pass


# ---- layout ------------------------------------------------------------------------


def read_config(path):
    """Settings of a neo4j.conf as a dict (last occurrence wins, like Neo4j)."""
    settings = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            settings[key.strip()] = value.strip()
    return settings


def _first(settings, keys):
    for key in keys:
        if settings.get(key):
            return settings[key]
    return None


class Layout:
    """Where one Neo4j installation keeps its files, from options and neo4j.conf."""

    def __init__(self, home=None, config=None, data_dir=None, pid_file=None, bolt_address=None):
        self.home = home or DEFAULT_HOME
        self.config = config
        if self.config is None:
            for candidate in CONFIG_CANDIDATES:
                path = candidate.format(home=self.home)
                if os.path.isfile(path):
                    self.config = path
                    break
        elif not os.path.isfile(self.config):
            raise Neo4jError(f"config {self.config} does not exist; give the path of neo4j.conf, or leave config out")
        self.settings = read_config(self.config) if self.config else {}
        self.configured_data_dir = os.path.abspath(self._path(_first(self.settings, DATA_KEYS) or "data"))
        self.data_dir = os.path.abspath(data_dir) if data_dir else self.configured_data_dir
        run_dir = self._path(_first(self.settings, RUN_KEYS) or "run")
        self.pid_file = pid_file or os.path.join(run_dir, "neo4j.pid")
        self.bolt = self._bolt(bolt_address)

    def _path(self, value):
        return value if os.path.isabs(value) else os.path.join(self.home, value)

    def _bolt(self, explicit):
        """(host, port) to probe, or None when the probe is off or Bolt is disabled."""
        if explicit is not None:
            return parse_address(explicit) if explicit else None
        if str(_first(self.settings, BOLT_ENABLED_KEYS) or "true").lower() == "false":
            return None
        address = _first(self.settings, BOLT_KEYS) or f":{DEFAULT_BOLT_PORT}"
        default_host = _first(self.settings, LISTEN_KEYS) or "127.0.0.1"
        host, port = parse_address(address)
        return (host or default_host, port)

    @property
    def databases_dir(self):
        return os.path.join(self.data_dir, "databases")

    def databases(self):
        """Names of the databases present in the data directory (those with a neostore)."""
        try:
            names = sorted(os.listdir(self.databases_dir))
        except FileNotFoundError:
            return []
        return [n for n in names if os.path.isfile(os.path.join(self.databases_dir, n, "neostore"))]

    def env(self):
        """Environment for neo4j-admin: the same home and configuration as the server."""
        env = {"NEO4J_HOME": self.home}
        if self.config:
            env["NEO4J_CONF"] = os.path.dirname(self.config)
        return env

    @contextlib.contextmanager
    def admin_options(self):
        """Extra neo4j-admin arguments for this layout. neo4j-admin finds the data directory
        only in its configuration: when data_dir is not the one neo4j.conf names, a file
        setting it (--additional-config) makes neo4j-admin dump from and load into data_dir,
        not the configured server's store."""
        if self.data_dir == self.configured_data_dir:
            yield []
            return
        fd, path = tempfile.mkstemp(prefix="lifeboat-neo4j-", suffix=".conf")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write("%s=%s\n" % (DATA_KEYS[0], self.data_dir))
            yield ["--additional-config=%s" % path]
        finally:
            os.unlink(path)


def valid_database_name(name):
    """Whether ``name`` can name a Neo4j database."""
    return bool(DATABASE_NAME_RE.fullmatch(name or "")) and not name.lower().startswith("system")


def parse_address(text):
    """'host:port', ':port', '[v6]:port' or 'host' -> (host or '', port)."""
    text = text.strip()
    if text.startswith("["):
        host, _bracket, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif ":" in text:
        host, port = text, ""  # a bare IPv6 address
    else:
        host, port = text, ""
    try:
        return host, int(port) if port else DEFAULT_BOLT_PORT
    except ValueError:
        raise Neo4jError(f"bolt address {text!r} is not host:port") from None


# ---- is it running? ------------------------------------------------------------------


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return None


def pid_from_file(path):
    """(pid or None, problem or None) of a pid file."""
    try:
        with open(path) as handle:
            text = handle.read().strip()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read pid file {path}: {exc.strerror}"
    try:
        return int(text.split()[0]), None
    except (ValueError, IndexError):
        return None, f"pid file {path} does not hold a process id"


# struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid.
_FLOCK = struct.Struct("hhqqi")


def lock_holder(path):
    """Pid of the process holding a POSIX lock on ``path`` (0 if unknown), or None if unlocked.

    F_GETLK reports a conflicting lock without taking one, and needs only read access.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        try:
            answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOLCK):
                raise
            return _probe_lock(fd)
        l_type, _whence, _start, _len, pid = _FLOCK.unpack(answer)
        return None if l_type == fcntl.F_UNLCK else max(pid, 0)
    finally:
        os.close(fd)


def _probe_lock(fd):
    """Fallback: try a shared lock and release it at once."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return 0
        raise
    fcntl.lockf(fd, fcntl.LOCK_UN)
    return None


def port_open(host, port, timeout=2.0):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def describe_process(pid):
    """``pid (command)``, with a Java command shortened to its main class."""
    command = _cmdline(pid)
    if not command:
        return f"process {pid}"
    words = command.split()
    main_class = [w for w in words if w.startswith("org.neo4j.")]
    if main_class:
        command = f"{os.path.basename(words[0])} ... {main_class[0]}"
    return f"process {pid} ({command[:120]})"


def _pid_file_evidence(layout, evidence, notes):
    pid, problem = pid_from_file(layout.pid_file)
    if problem:
        notes.append(problem)
    elif pid is not None:
        if _session.pid_alive(pid):
            evidence.append(f"the pid file {layout.pid_file} names the running {describe_process(pid)}")
        else:
            notes.append(f"stale pid file {layout.pid_file}: process {pid} is gone (Neo4j was not stopped cleanly, or the file is left over)")


def _lock_evidence(data_dir, evidence, notes):
    databases_dir = os.path.join(data_dir, "databases")
    locks = [os.path.join(databases_dir, "store_lock")]
    try:
        locks += sorted(os.path.join(databases_dir, n, "database_lock") for n in os.listdir(databases_dir) if os.path.isdir(os.path.join(databases_dir, n)))
    except OSError:
        pass
    holders = {}
    for path in locks:
        try:
            holder = lock_holder(path)
        except OSError as exc:
            notes.append(f"cannot check the lock {path}: {exc.strerror}")
            continue
        if holder is not None:
            holders.setdefault(holder, []).append(os.path.relpath(path, data_dir))
    for holder, paths in holders.items():
        who = describe_process(holder) if holder else "another process"
        plural = "s" if len(paths) > 1 else ""
        evidence.append(f"{who} holds the store lock{plural} {', '.join(paths)} in {data_dir}")


def running_evidence(layout, data_dir=None):
    """Reasons to believe Neo4j is using the files, as sentences; empty when stopped.

    Also returns notes: things worth saying that do not mean it runs (a stale pid file).
    """
    evidence = []
    notes = []
    _pid_file_evidence(layout, evidence, notes)
    _lock_evidence(data_dir or layout.data_dir, evidence, notes)
    if layout.bolt:
        host, port = layout.bolt
        if port_open(host, port):
            evidence.append(f"something accepts connections on the Bolt address {host}:{port}")
    return evidence, notes


def refuse_message(action, evidence):
    return (
        f"Neo4j is running, refusing to {action}: {'; '.join(evidence)}. Neo4j community edition has no online backup: stop it first "
        "(systemctl stop neo4j, neo4j stop, or the lifeboat.backup.quiesce role), then run this again"
    )


# ---- store ids ---------------------------------------------------------------------------


def _slots(data, first, count):
    """Payload of ``count`` slots from ``first``, or None if a slot is not in use."""
    payload = b""
    for slot in range(first, first + count):
        record = data[slot * SLOT : (slot + 1) * SLOT]
        if len(record) < SLOT or record[0] != 1:
            return None
        payload += record[1:]
    return payload


def _uuid(payload):
    return str(uuid.UUID(bytes=payload)) if payload else None


def read_store_id(database_dir):
    """The store id of the database in ``database_dir`` as a dict, from its ``neostore``."""
    path = os.path.join(database_dir, "neostore")
    try:
        with open(path, "rb") as handle:
            data = handle.read(SLOT * (STORE_ID_SLOT + STORE_ID_SLOTS))
    except OSError as exc:
        raise Neo4jError(f"cannot read {path}: {exc.strerror}") from None
    value = _slots(data, STORE_ID_SLOT, STORE_ID_SLOTS)
    if value is None or value[0] != 1:
        raise Neo4jError(f"{path} holds no store id in the Neo4j 5 layout (another Neo4j version or storage engine?)")
    creation, random = struct.unpack(">qq", value[1:17])
    offset = 17
    names = []
    for _name in ("storage engine", "format family"):
        length = value[offset]
        names.append(value[offset + 1 : offset + 1 + length].decode("utf-8", "replace"))
        offset += 1 + length
    major, minor = value[offset], value[offset + 1]
    created = datetime.datetime.fromtimestamp(creation / 1000.0, tz=datetime.timezone.utc)
    return {
        "store_id": f"{creation}:{random}",
        "creation_time": creation,
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "random": random,
        "storage_engine": names[0],
        "format": f"{names[0]}-{names[1]}-{major}.{minor}",
        "external_store_uuid": _uuid(_slots(data, EXTERNAL_STORE_UUID_SLOT, 2)),
        "database_id": _uuid(_slots(data, DATABASE_ID_SLOT, 2)),
    }


def store_ids(data_dir, databases=None):
    """{database: store id dict} for the databases under ``data_dir``."""
    root = os.path.join(data_dir, "databases")
    if databases is None:
        try:
            databases = sorted(n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, "neostore")))
        except FileNotFoundError:
            databases = []
    return {name: read_store_id(os.path.join(root, name)) for name in databases}


def find_admin(layout, explicit=None):
    """Path of neo4j-admin, or raise Neo4jError saying where it was looked for."""
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise Neo4jError(f"neo4j_admin {explicit} does not exist or is not executable")
    candidate = os.path.join(layout.home, "bin", "neo4j-admin")
    if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("neo4j-admin")
    if found:
        return found
    raise Neo4jError(f"neo4j-admin not found in {layout.home}/bin or on the PATH; give its path in neo4j_admin, or use method=files")
