"""A real Neo4j 5 community server for integration tests.

The server is the one ``bin/neo4j console`` runs: ``org.neo4j.server.startup.Neo4jCommand
console`` on the jars of org.neo4j:neo4j (fetched by ``fetch.ensure_neo4j``), with a
``NEO4J_HOME`` laid out like a tarball install in a private temp dir::

    <root>/home/conf/neo4j.conf   Bolt on 127.0.0.1:<random port>, HTTP off, auth off
    <root>/home/lib/              hard links of the cached jars
    <root>/home/bin/neo4j-admin   a two-line launcher of org.neo4j.cli.AdminTool
    <root>/home/data/             databases/, transactions/ (the data directory)
    <root>/home/run/neo4j.pid     written by Neo4jCommand, removed on a clean stop
    <root>/logs/                  console.log, neo4j.log, debug.log

    with Neo4jServer() as neo4j:
        neo4j.query("CREATE (:Item {n: 1})")
        neo4j.halt()      # clean shutdown; files stay
        ...               # archive, wipe, restore the data directory
        neo4j.resume()    # start again on the same files

When the tests run as root, Neo4j runs as ``lifeboat-neo4j`` (as a package install runs
it as ``neo4j``), and its data, run and log directories belong to that account.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from tests.harness import fetch
from tests.harness.process import ServerError, chown_tree, is_root, service_account, tail, wait_until
from tests.harness.servers import HOST, Server, _base_env, _link_tree, java_home

NEO4J_ACCOUNT = "lifeboat-neo4j"
# JVM options of the small JVMs (the launcher, neo4j-admin): no perf data file in /tmp,
# the serial collector, C1 only (they live seconds; quick JIT beats peak speed).
SHORT_JVM = ("-XX:-UsePerfData", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")


class Neo4jServer(Server):
    """Neo4j community, single instance, Bolt on loopback, small heap."""

    label = "Neo4j"

    def __init__(
        self, version: str = fetch.NEO4J_VERSION, heap: str = "256m", pagecache: str = "32m", settings: dict | None = None, start_timeout: float = 120
    ):
        super().__init__(start_timeout)
        self.version = version
        self.heap = heap
        self.pagecache = pagecache
        self.settings = dict(settings or {})
        self.host = HOST
        self.port: int | None = None
        self._jars: Path | None = None
        self._java_home: Path | None = None
        self._driver = None

    # ---- layout --------------------------------------------------------------

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def conf_file(self) -> Path:
        return self.home / "conf" / "neo4j.conf"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def pid_file(self) -> Path:
        return self.home / "run" / "neo4j.pid"

    @property
    def neo4j_admin(self) -> Path:
        return self.home / "bin" / "neo4j-admin"

    @property
    def uri(self) -> str:
        return f"bolt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.exited() is None

    # ---- start / stop --------------------------------------------------------

    def _check_prerequisites(self) -> None:
        self._java_home = java_home()
        try:
            self._jars = fetch.ensure_neo4j(self.version) / "lib"
        except fetch.FetchError as exc:
            raise ServerError(f"{self.name}: {exc}") from None

    def _start(self) -> None:
        self.account = service_account(NEO4J_ACCOUNT) if is_root() else None
        for sub in ("conf", "bin", "data", "run", "plugins", "import"):
            (self.home / sub).mkdir(parents=True)
        _link_tree(self._jars, self.home / "lib")
        java = self._java_home / "bin" / "java"
        flags = " ".join(SHORT_JVM)
        self.neo4j_admin.write_text(f'#!/bin/sh\nexec "{java}" {flags} -Xmx256m -cp "$NEO4J_HOME/lib/*" org.neo4j.cli.AdminTool "$@"\n')
        self.neo4j_admin.chmod(0o755)
        if self.account:
            for sub in ("data", "run", "plugins", "import"):
                chown_tree(self.home / sub, self.account.pw_uid, self.account.pw_gid)
            chown_tree(self.logs_dir, self.account.pw_uid, self.account.pw_gid)
        self._relaunch_on_port_clash(self._launch_on)

    def _write_config(self) -> None:
        settings = {
            "server.default_listen_address": HOST,
            "server.bolt.listen_address": f"{HOST}:{self.port}",
            "server.http.enabled": "false",
            "server.https.enabled": "false",
            "dbms.security.auth_enabled": "false",  # loopback only, test data
            "server.directories.logs": str(self.logs_dir),
            "server.memory.heap.initial_size": self.heap,
            "server.memory.heap.max_size": self.heap,
            "server.memory.pagecache.size": self.pagecache,
            # No perf data: a killed JVM leaves nothing in /tmp/hsperfdata_<user>. C1 only:
            # a test server lives seconds, so quick JIT beats peak speed.
            "server.jvm.additional": ["-XX:-UsePerfData", "-XX:TieredStopAtLevel=1"],
            "dbms.usage_report.enabled": "false",
            # Bolt waits 2 x 5 s for connections and jobs that a test server never has.
            "internal.server.bolt.connection_shutdown_wait_time": "0s",
            "internal.server.bolt.thread_pool_shutdown_wait_time": "0s",
        }
        settings.update(self.settings)
        lines = []
        for key, value in settings.items():
            lines += [f"{key}={item}\n" for item in (value if isinstance(value, list) else [value])]
        self.conf_file.write_text("".join(lines), encoding="utf-8")

    def _launch_on(self, port: int) -> None:
        self.port = port
        self._write_config()
        env = _base_env(
            NEO4J_HOME=str(self.home),
            NEO4J_CONF=str(self.conf_file.parent),
            JAVA_HOME=str(self._java_home),
            HOME=str(self.root),
        )
        java = str(self._java_home / "bin" / "java")
        # The launcher JVM stays in the foreground and starts the server JVM as its child,
        # in the same process group: stop() signals both.
        cmd = [java, *SHORT_JVM, "-Xmx64m", "-cp", f"{self.home}/lib/*", "org.neo4j.server.startup.Neo4jCommand", "console"]
        process = self._launch(cmd, env, "console.log")
        wait_until(self._ready, timeout=self.start_timeout, process=process, what=f"{self.name} on Bolt port {port}")

    def _bind_failed(self) -> bool:
        with open(self.log_path, "rb") as handle:
            handle.seek(self._log_offset)
            return b"already in use" in handle.read()

    def _ready(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=2):
            pass
        return self.query("RETURN 1 AS ok")[0]["ok"] == 1

    def halt(self) -> None:
        """Stop Neo4j cleanly (SIGTERM, as systemd does); the files stay for the test."""
        self._close_driver()
        if self.process is not None:
            self.process.stop(grace=90)
            self.process = None

    def resume(self) -> None:
        """Start Neo4j again on the same home and data directory."""
        if self.running:
            raise RuntimeError(f"{self.name} is running")
        try:
            self._relaunch_on_port_clash(self._launch_on)
        except ServerError as exc:
            # Keep the server's files: the test tells what it did to them; the logs say the rest.
            raise ServerError(f"{self.name} did not start again: {exc}\n  last log lines:\n{tail(self.log_path)}") from None

    def _teardown(self, failure):
        self._close_driver()
        return super()._teardown(failure)

    # ---- client ---------------------------------------------------------------

    def driver(self):
        """A neo4j driver for the running server (the driver is a test dependency only)."""
        if self._driver is None:
            import neo4j  # pylint: disable=import-outside-toplevel

            self._driver = neo4j.GraphDatabase.driver(self.uri, auth=None, connection_timeout=5)
        return self._driver

    def _close_driver(self) -> None:
        if self._driver is not None:
            self._driver.close()
            self._driver = None

    def query(self, cypher: str, database: str = "neo4j", **params) -> list[dict]:
        records, _summary, _keys = self.driver().execute_query(cypher, params, database_=database)
        return [record.data() for record in records]

    def wipe_data(self) -> None:
        """Remove everything in the data directory (the server must be halted)."""
        if self.running:
            raise RuntimeError("halt Neo4j before wiping its data directory")
        for entry in self.data_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
