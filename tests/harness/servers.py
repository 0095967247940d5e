"""Real servers for integration tests, each on 127.0.0.1 with a random free
port and its data in a private temp dir, torn down (whole process group)
even when the start fails.

    with PostgresServer() as pg:
        pg.psql("SELECT 1")
    with OpenSearchServer() as search:
        search.request("GET", "/")

When the tests run as root, PostgreSQL runs as the ``postgres`` account and
OpenSearch/Elasticsearch as ``lifeboat-search`` (created on first use): all
three refuse to run as root. Their data/log/repository dirs belong to that
account (``server.account``), as they would in production.

A server that cannot be had raises ServerError saying what is missing, with
the tail of the server's log; the full logs are copied to .build/logs/harness/.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import warnings
from pathlib import Path

from tests.harness import fetch
from tests.harness.process import (
    ServerError,
    ServerProcess,
    chown_tree,
    free_port,
    is_root,
    make_root,
    remove_root,
    save_logs,
    service_account,
    tail,
    wait_until,
)

HOST = "127.0.0.1"
PORT_ATTEMPTS = 3  # a free port can be taken by someone else before we bind it
SEARCH_ACCOUNT = "lifeboat-search"


class Server:
    """Start in __enter__/start(), stop in __exit__/stop(); never half-started."""

    label = "server"
    version = ""

    def __init__(self, start_timeout: float):
        self.start_timeout = start_timeout
        self.root: Path | None = None
        self.process: ServerProcess | None = None
        self.account: pwd.struct_passwd | None = None
        self.log_path: Path | None = None
        self._log_offset = 0

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def __repr__(self):
        state = f"pid {self.process.pid}" if self.root and self.process else "stopped"
        return f"<{type(self).__name__} {self.version} {state} {self.root}>"

    @property
    def name(self) -> str:
        return f"{self.label} {self.version}".strip()

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def start(self) -> None:
        if self.root is not None:
            raise RuntimeError(f"{self.name} already started")
        self._check_prerequisites()
        self.root = make_root(self.label.lower())
        (self.root / "logs").mkdir()
        try:
            self._start()
        except BaseException as exc:
            message = self._teardown(failure=str(exc) if isinstance(exc, ServerError) else None)
            if isinstance(exc, ServerError):
                raise ServerError(message) from None
            raise

    def stop(self) -> None:
        if self.root is None:
            return
        died = self.process is not None and self.process.exited() is not None
        message = self._teardown(failure="exited while the tests were using it" if died else None)
        if died:
            warnings.warn(message, RuntimeWarning, stacklevel=2)

    def _teardown(self, failure: str | None) -> str:
        """Kill the process group, keep the logs of a failure, remove the temp dir."""
        if self.process is not None:
            self.process.stop()
        message = ""
        if failure is not None:
            log = self.log_path or self.root / "logs"
            saved = save_logs(self.root, self.label.lower())
            headline = failure if failure.startswith(self.name) else f"{self.name}: {failure}"
            message = (
                f"{headline}\n  full logs: {saved or log} (server dir {self.root})\n  last lines of {log.name}:\n{tail(log) if log.is_file() else '(no log)'}"
            )
        remove_root(self.root)
        self.root = None
        return message

    def _check_prerequisites(self) -> None:
        """Raise ServerError naming what is missing, before anything is created."""

    def _start(self) -> None:
        raise NotImplementedError

    def _launch(self, cmd: list[str], env: dict[str, str], log_name: str) -> ServerProcess:
        self.log_path = self.logs_dir / log_name
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.process = ServerProcess(cmd, self.log_path, env, cwd=self.root, account=self.account)
        return self.process

    def _bind_failed(self) -> bool:
        """Whether the last launch died because its port was taken."""
        with open(self.log_path, "rb") as handle:
            handle.seek(self._log_offset)
            return b"Address already in use" in handle.read()

    def _relaunch_on_port_clash(self, launch) -> None:
        """Call launch(port) with a fresh free port until one binds."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                launch(free_port())
                return
            except ServerError:
                if attempt == PORT_ATTEMPTS or not self._bind_failed():
                    raise
                self.process.stop()
                self.process = None


def _base_env(**extra: str) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }
    env.update(extra)
    return env


# ---- PostgreSQL -------------------------------------------------------------


class PostgresServer(Server):
    """A private PostgreSQL cluster (initdb), password auth (scram-sha-256)
    over TCP and over a unix socket in its temp dir."""

    label = "PostgreSQL"

    def __init__(
        self, version: str = "15", user: str = "postgres", password: str | None = None, settings: dict | None = None, bin_dir=None, start_timeout: float = 60
    ):
        super().__init__(start_timeout)
        self.version = str(version)
        self.bin_dir = Path(bin_dir or f"/usr/lib/postgresql/{self.version}/bin")
        self.user = user
        self.password = password or secrets.token_urlsafe(18)
        self.settings = dict(settings or {})
        self.host = HOST
        self.port: int | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    def _check_prerequisites(self) -> None:
        missing = [name for name in ("initdb", "postgres", "pg_isready", "psql") if not (self.bin_dir / name).is_file()]
        if missing:
            raise ServerError(
                f"{self.name}: {', '.join(missing)} not found in {self.bin_dir}. "
                f"Install the Debian package postgresql-{self.version} (scripts/install-os-deps.sh installs the tested one)."
            )

    def _start(self) -> None:
        self.account = service_account("postgres") if is_root() else None
        self.socket_dir.mkdir()
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        pwfile.chmod(0o600)
        if self.account:
            chown_tree(self.root, self.account.pw_uid, self.account.pw_gid)
        initdb = [
            str(self.bin_dir / "initdb"),
            f"--pgdata={self.data_dir}",
            f"--username={self.user}",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]
        with open(self.logs_dir / "initdb.log", "wb") as log:
            kwargs = {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []} if self.account else {}
            proc = subprocess.run(initdb, stdout=log, stderr=subprocess.STDOUT, env=_base_env(), cwd=self.root, check=False, **kwargs)
        pwfile.unlink()
        if proc.returncode != 0:
            self.log_path = self.logs_dir / "initdb.log"
            raise ServerError(f"initdb exited with status {proc.returncode}")
        conf = {
            "listen_addresses": HOST,
            "unix_socket_directories": str(self.socket_dir),
            "fsync": "off",  # test data; nothing here must survive a power cut
            "max_connections": "50",
            "shared_buffers": "32MB",
        }
        conf.update(self.settings)
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as handle:
            handle.write("\n# lifeboat test harness\n")
            handle.writelines(f"{key} = '{value}'\n" for key, value in conf.items())
        self._relaunch_on_port_clash(self._launch_on)

    def _launch_on(self, port: int) -> None:
        self.port = port
        process = self._launch([str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(port)], _base_env(), "postgresql.log")
        isready = [str(self.bin_dir / "pg_isready"), "-q", "-h", str(self.socket_dir), "-p", str(port)]
        wait_until(
            lambda: subprocess.run(isready, check=False).returncode == 0,
            timeout=self.start_timeout,
            process=process,
            what=f"{self.name} on port {port}",
        )
        # Prove the password works over TCP, as the tests will use it.
        self.psql("SELECT 1")

    def halt(self, mode: str = "fast") -> None:
        """Stop the server and keep its files (``fast``: SIGINT, sessions are cut and their
        transactions rolled back; ``immediate``: SIGQUIT, no shutdown checkpoint, as after a
        crash). ``resume()`` starts it again on the same data and port."""
        sig = {"fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        self.process.popen.send_signal(sig)
        self.process.popen.wait(timeout=60)
        self.process.stop()

    def resume(self) -> None:
        self._launch_on(self.port)

    def env(self, dbname: str = "postgres") -> dict[str, str]:
        """libpq environment for the superuser (the password travels in PGPASSWORD)."""
        return {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user, "PGPASSWORD": self.password, "PGDATABASE": dbname}

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={self.user} password={self.password} dbname={dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL with psql over TCP; return unaligned, tuples-only output."""
        cmd = [str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"]
        proc = subprocess.run(cmd, input=sql, capture_output=True, text=True, env=_base_env(**self.env(dbname)), check=False)
        if proc.returncode != 0:
            raise ServerError(f"psql on {self.name} port {self.port} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout.strip()

    def connect(self, dbname: str = "postgres", **kwargs):
        """A psycopg connection as the superuser."""
        import psycopg  # pylint: disable=import-outside-toplevel

        return psycopg.connect(self.dsn(dbname), **kwargs)


# ---- Redis ------------------------------------------------------------------


class RedisServer(Server):
    """redis-server with a config file; password (requirepass) optional."""

    label = "Redis"

    def __init__(self, password: str | None = None, config: dict | None = None, binary: str = "redis-server", start_timeout: float = 30):
        super().__init__(start_timeout)
        self.binary = binary
        self.password = password
        self.config = dict(config or {})
        self.host = HOST
        self.port: int | None = None
        self._binary_path: str | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_path(self) -> Path:
        return self.root / "run" / "redis.sock"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def _check_prerequisites(self) -> None:
        self._binary_path = shutil.which(self.binary)
        if self._binary_path is None:
            raise ServerError(f"{self.name}: {self.binary} not found on PATH. Install the Debian package redis-server (scripts/install-os-deps.sh does).")
        self.version = subprocess.run([self._binary_path, "--version"], capture_output=True, text=True, check=False).stdout.split("v=")[-1].split()[0]

    def _start(self) -> None:
        self.data_dir.mkdir()
        self.socket_path.parent.mkdir()
        self._relaunch_on_port_clash(self._launch_on)

    def _launch_on(self, port: int) -> None:
        self.port = port
        conf = {
            "bind": HOST,
            "port": str(port),
            "unixsocket": str(self.socket_path),
            "unixsocketperm": "700",
            "daemonize": "no",
            "dir": str(self.data_dir),
            "logfile": '""',  # stdout, which goes to logs/redis.log
            "save": '""',  # no background RDB unless a test asks for one
            "appendonly": "no",
        }
        if self.password:
            conf["requirepass"] = self.password
        conf.update(self.config)
        conf_path = self.root / "redis.conf"
        conf_path.touch(mode=0o600)  # holds the password
        conf_path.write_text("".join(f"{key} {value}\n" for key, value in conf.items()), encoding="utf-8")
        process = self._launch([self._binary_path, str(conf_path)], _base_env(), "redis.log")
        wait_until(lambda: self.client().ping(), timeout=self.start_timeout, process=process, what=f"{self.name} on port {port}")

    def client(self, db: int = 0, **kwargs):
        """A redis-py client over TCP."""
        import redis  # pylint: disable=import-outside-toplevel

        return redis.Redis(host=self.host, port=self.port, db=db, password=self.password, socket_timeout=10, **kwargs)


# ---- OpenSearch / Elasticsearch ---------------------------------------------


def java_home() -> Path:
    """The JDK the search engines run on: LIFEBOAT_JAVA_HOME, else the Debian
    OpenJDK 17 (both engines' supported JDK), else JAVA_HOME, else `java` on PATH."""
    candidates = [os.environ.get("LIFEBOAT_JAVA_HOME"), "/usr/lib/jvm/java-17-openjdk-amd64", os.environ.get("JAVA_HOME")]
    java = shutil.which("java")
    if java:
        candidates.append(str(Path(os.path.realpath(java)).parents[1]))
    for candidate in filter(None, candidates):
        if (Path(candidate) / "bin" / "java").is_file():
            return Path(candidate)
    raise ServerError(
        "no JDK found (looked at LIFEBOAT_JAVA_HOME, /usr/lib/jvm/java-17-openjdk-amd64, JAVA_HOME, java on PATH). Install openjdk-17-jdk-headless."
    )


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link copy of a distribution: instant, no extra disk, and readable by
    the service account even though the cache lives under root's 0700 home."""

    def link(source, target):
        try:
            os.link(source, target)
        except OSError:  # another file system
            shutil.copy2(source, target)

    shutil.copytree(src, dst, symlinks=True, copy_function=link)


class SearchServer(Server):
    """OpenSearch or Elasticsearch from its integ-test-zip (see fetch.py),
    single node, security off, path.repo set, small heap."""

    def __init__(
        self, engine: str, version: str | None = None, heap: str = "256m", jvm_options: str = "", settings: dict | None = None, start_timeout: float = 180
    ):
        super().__init__(start_timeout)
        self.engine = engine
        self.label = {"opensearch": "OpenSearch", "elasticsearch": "Elasticsearch"}.get(engine, engine)
        self.version = version or ""
        self.heap = heap
        self.jvm_options = jvm_options
        self.settings = dict(settings or {})
        self.url: str | None = None
        self.dist: fetch.Distribution | None = None
        self._dist_home: Path | None = None
        self._java_home: Path | None = None

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def repo_dir(self) -> Path:
        """path.repo: fs snapshot repositories must live under it."""
        return self.root / "repo"

    def _check_prerequisites(self) -> None:
        try:
            self.dist = fetch.find(self.engine, self.version or None)
            self.version = self.dist.version
            self._dist_home = fetch.ensure(self.dist)
        except fetch.FetchError as exc:
            raise ServerError(f"{self.name}: {exc}\n  (`make servers` fetches every distribution in the table)") from None
        self._java_home = java_home()

    def _start(self) -> None:
        self.account = service_account(SEARCH_ACCOUNT) if is_root() else None
        _link_tree(self._dist_home, self.home)
        # The start scripts cd into the home and the JVM writes logs/gc.log
        # relative to it: send that to our logs dir.
        shutil.rmtree(self.home / "logs")
        (self.home / "logs").symlink_to(self.logs_dir)
        shutil.copytree(self._dist_home / "config", self.config_dir)
        for name in ("data", "repo", "tmp"):
            (self.root / name).mkdir()
        self._write_config()
        if self.account:
            for name in ("config", "data", "logs", "repo", "tmp"):
                chown_tree(self.root / name, self.account.pw_uid, self.account.pw_gid)
        prefix = "OPENSEARCH" if self.engine == "opensearch" else "ES"
        env = _base_env(
            HOME=str(self.root / "tmp"),
            **{
                f"{prefix}_JAVA_HOME": str(self._java_home),
                f"{prefix}_PATH_CONF": str(self.config_dir),
                f"{prefix}_TMPDIR": str(self.root / "tmp"),
                # No perf data: a killed server JVM leaves nothing in /tmp/hsperfdata_<user>.
                f"{prefix}_JAVA_OPTS": f"-Xms{self.heap} -Xmx{self.heap} -XX:-UsePerfData {self.jvm_options}".strip(),
                "CLI_JAVA_OPTS": "-XX:-UsePerfData",  # the 8.x launcher JVM
            },
        )
        process = self._launch([str(self.home / "bin" / self.engine)], env, "console.log")
        ports_file = self.logs_dir / "http.ports"
        address = wait_until(lambda: ports_file.is_file() and ports_file.read_text().split(), timeout=self.start_timeout, process=process, what=self.name)
        self.url = f"http://{address[0]}"
        wait_until(self._healthy, timeout=self.start_timeout, process=process, what=f"{self.name} at {self.url}")
        running = self.server_version()
        if running != self.version:
            raise ServerError(f"asked for {self.engine} {self.version}, {self.url} runs {running}")

    def _write_config(self) -> None:
        settings = {
            "cluster.name": "lifeboat-test",
            "node.name": "node-1",
            "network.host": HOST,
            "http.port": 0,  # the node picks a free port and writes it to logs/http.ports
            "transport.port": 0,
            "node.portsfile": True,
            "discovery.type": "single-node",
            "path.data": str(self.data_dir),
            "path.logs": str(self.logs_dir),
            "path.repo": str(self.repo_dir),
            # A full shared disk must not turn the test cluster read-only.
            "cluster.routing.allocation.disk.threshold_enabled": False,
        }
        if self.engine == "elasticsearch":
            # The integ-test zip ships x-pack security; 8.x enables it by default.
            settings["xpack.security.enabled"] = False
        settings.update(self.settings)
        lines = [f"{key}: {str(value).lower() if isinstance(value, bool) else value}\n" for key, value in settings.items()]
        (self.config_dir / f"{self.engine}.yml").write_text("".join(lines), encoding="utf-8")

    def _healthy(self) -> bool:
        health = self.request("GET", "/_cluster/health", params={"wait_for_status": "yellow", "timeout": "5s"}, timeout=10).json()
        return health.get("status") in ("yellow", "green")

    def server_version(self) -> str:
        # Not GET /: the 8.x integ-test zip does not serve it.
        nodes = self.request("GET", "/_nodes/_local", params={"filter_path": "nodes.*.version"}).json()["nodes"]
        return next(iter(nodes.values()))["version"]

    def request(self, method: str, path: str, *, check: bool = True, timeout: float = 60, **kwargs):
        """An HTTP request to the node (requests.Response); raises on HTTP errors unless check=False."""
        import requests  # pylint: disable=import-outside-toplevel

        response = requests.request(method, self.url + path, timeout=timeout, **kwargs)
        if check and response.status_code >= 400:
            raise ServerError(f"{method} {path} on {self.name}: HTTP {response.status_code}: {response.text[:500]}")
        return response

    def cleanup(self, prefix: str) -> None:
        """Delete the indices, snapshot repositories and repository dirs named prefix*."""
        indices = self.request("GET", f"/_cat/indices/{prefix}*", params={"format": "json", "expand_wildcards": "all"}).json()
        if indices:
            # One by one name: 8.x refuses wildcard deletes (action.destructive_requires_name).
            self.request("DELETE", "/" + ",".join(i["index"] for i in indices))
        for repo in self.request("GET", "/_snapshot").json():
            if repo.startswith(prefix):
                self.request("DELETE", f"/_snapshot/{repo}")
        for path in self.repo_dir.glob(f"{prefix}*"):
            shutil.rmtree(path, ignore_errors=True)


class OpenSearchServer(SearchServer):
    def __init__(self, version: str | None = None, **kwargs):
        super().__init__("opensearch", version, **kwargs)


class ElasticsearchServer(SearchServer):
    def __init__(self, version: str | None = None, **kwargs):
        super().__init__("elasticsearch", version, **kwargs)
