"""Fixtures for integration tests: real servers from tests/harness.

Each server starts at most once per session, and only when a test asks for
it. A server that cannot be had makes the test fail (an error in setup) with
the harness's message -- it is never skipped.

    def test_x(postgres_server): ...                      # PostgreSQL 15
    @pytest.mark.parametrize("elasticsearch_server", ["8.19.21"], indirect=True)
    def test_y(elasticsearch_server): ...                 # a given version
    def test_z(search_server): ...                        # every engine/version in fetch.DISTRIBUTIONS
    def test_w(pg_database, namespace): ...               # a fresh database; names prefixed with namespace
    def test_v(neo4j_server): ...                         # Neo4j 5 community (tests/harness/neo4j.py)
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass

import pytest

from tests.harness import fetch
from tests.harness.neo4j import Neo4jServer
from tests.harness.process import ServerError
from tests.harness.servers import PostgresServer, RedisServer, SearchServer
from tests.harness.storage import FtpServer, S3Server, SambaServer, SshServer
from tests.support.trees import make_config_tree

# The files that take longest, longest first (from the --durations and junit timings of
# whole runs: .build/logs/integration.xml). With two workers taking whole files, the run
# ends when the last long file does: started first, the long files run side by side and
# the many short ones fill in after. xdist's own order (most tests first) put the
# one-test files that run for minutes (the demo, the drill) last, one worker idle meanwhile.
LONGEST_FIRST = (  # seconds per file in the whole run of 2026-11-30 (1796f50), two workers
    "test_roles.py",  # 582
    "test_quiesce_role.py",  # 453
    "test_demo.py",  # 384
    "test_neo4j.py",  # 314
    "test_elasticsearch.py",  # 297
    "test_drill.py",  # 241
    "test_schedule.py",  # 226
    "test_fingerprint.py",  # 220
    "test_pitr.py",  # 217
    "test_postgresql.py",  # 202
    "test_table_archive.py",  # 191
    "test_image.py",  # 168
    "test_backup_archive_component.py",  # 140
    "test_storage_roles.py",  # 127
    "test_storage.py",  # 120
    "test_secrets.py",  # 67
    "test_backup_operations.py",  # 63
    "test_profile_session_recordings.py",  # 57
    "test_migration.py",  # 55
)


def pytest_collection_modifyitems(items):
    """Put the longest files first, the others after in their collection order."""
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


class ServerPool:
    """Session-wide servers, started lazily, stopped at session end.

    A server that failed to start is not retried: every test that wants it
    fails at once with the first failure's message.
    """

    def __init__(self):
        self._stack = contextlib.ExitStack()
        self._servers = {}
        self._failures = {}

    def get(self, key, factory):
        if key in self._failures:
            pytest.fail(f"{self._failures[key]}\n(failed earlier in this session; not retried)", pytrace=False)
        if key not in self._servers:
            try:
                self._servers[key] = self._stack.enter_context(factory())
            except ServerError as exc:
                self._failures[key] = str(exc)
                pytest.fail(str(exc), pytrace=False)
        return self._servers[key]

    def running(self):
        return list(self._servers.values())

    def close(self):
        self._stack.close()


@pytest.fixture(scope="session")
def server_pool():
    pool = ServerPool()
    yield pool
    pool.close()


def _param(request, default=None):
    return getattr(request, "param", default)


@pytest.fixture
def postgres_server(request, server_pool) -> PostgresServer:
    """PostgreSQL (default 15; parametrize indirectly with another major version)."""
    version = str(_param(request, "15"))
    return server_pool.get(("postgresql", version), lambda: PostgresServer(version=version))


@pytest.fixture
def redis_server(server_pool) -> RedisServer:
    """Redis with a password (requirepass)."""
    return server_pool.get(("redis",), lambda: RedisServer(password=secrets.token_urlsafe(12)))


def _search(server_pool, engine, version=None) -> SearchServer:
    try:
        version = fetch.find(engine, version).version
    except fetch.FetchError as exc:
        pytest.fail(str(exc), pytrace=False)
    return server_pool.get((engine, version), lambda: SearchServer(engine, version))


@pytest.fixture
def opensearch_server(request, server_pool) -> SearchServer:
    """OpenSearch (default: the first opensearch line of fetch.DISTRIBUTIONS)."""
    return _search(server_pool, "opensearch", _param(request))


@pytest.fixture
def elasticsearch_server(request, server_pool) -> SearchServer:
    """Elasticsearch (default: the first elasticsearch line of fetch.DISTRIBUTIONS)."""
    return _search(server_pool, "elasticsearch", _param(request))


@pytest.fixture(params=[d.name for d in fetch.DISTRIBUTIONS])
def search_server(request, server_pool) -> SearchServer:
    """Each OpenSearch/Elasticsearch version of fetch.DISTRIBUTIONS in turn."""
    engine, version = request.param.split("-", 1)
    return _search(server_pool, engine, version)


@pytest.fixture
def neo4j_server(server_pool) -> Neo4jServer:
    """Neo4j 5 community, Bolt on loopback, auth off. A test may halt() it to work on its
    files; the next test that asks for it gets it running again."""
    server = server_pool.get(("neo4j",), Neo4jServer)
    if not server.running:
        server.resume()
    return server


@pytest.fixture
def namespace(server_pool):
    """A unique lower-case name prefix (valid for databases, indices, keys).

    Afterwards, indices / snapshot repositories / Redis keys starting with it
    are removed from the session servers, so tests do not see each other.
    """
    prefix = f"t{secrets.token_hex(4)}"
    yield prefix
    for server in server_pool.running():
        if isinstance(server, SearchServer):
            server.cleanup(prefix)
        elif isinstance(server, RedisServer):
            for db in server.client().info("keyspace"):  # {"db0": {...}, ...}: only non-empty ones
                client = server.client(db=int(db[2:]))
                keys = list(client.scan_iter(match=f"{prefix}*"))
                if keys:
                    client.delete(*keys)


@dataclass
class PgDatabase:
    server: PostgresServer
    name: str

    @property
    def dsn(self) -> str:
        return self.server.dsn(self.name)

    def psql(self, sql: str) -> str:
        return self.server.psql(sql, dbname=self.name)

    def connect(self, **kwargs):
        return self.server.connect(self.name, **kwargs)


@pytest.fixture
def pg_database(postgres_server, namespace) -> PgDatabase:
    """A fresh database on the session's PostgreSQL, dropped afterwards."""
    postgres_server.psql(f'CREATE DATABASE "{namespace}"')
    yield PgDatabase(postgres_server, namespace)
    postgres_server.psql(f'DROP DATABASE IF EXISTS "{namespace}" WITH (FORCE)')


# ---- storage servers (tests/harness/storage.py) ----


@pytest.fixture
def ssh_server(server_pool) -> SshServer:
    return server_pool.get(("sshd",), SshServer)


@pytest.fixture
def smb_server(server_pool) -> SambaServer:
    return server_pool.get(("smbd",), SambaServer)


@pytest.fixture
def ftps_server(server_pool) -> FtpServer:
    return server_pool.get(("ftps",), FtpServer)


@pytest.fixture
def ftp_server(server_pool) -> FtpServer:
    return server_pool.get(("ftp",), lambda: FtpServer(tls=False))


@pytest.fixture
def s3_server(server_pool) -> S3Server:
    return server_pool.get(("seaweedfs",), S3Server)


# ---- a two-node cluster of config components for the roles (test_roles and others) ----


@pytest.fixture
def cluster(tmp_path):
    source = make_config_tree(tmp_path / "src")
    nodes = {}
    for name in ("node1", "node2"):
        (tmp_path / name / "dest").mkdir(parents=True)
        nodes[name] = {
            "backup_destination": str(tmp_path / name / "dest"),
            "backup_state_dir": str(tmp_path / name / "state"),
            "backup_facts_dir": str(tmp_path / name / "facts"),
        }
    profile = {
        "name": "test",
        "platform": {"name": "demo", "version": "1.0"},
        "components": [
            {"name": "config", "kind": "config", "paths": [str(source)], "exclude": ["*.swp"]},
            {"name": "app", "kind": "config", "paths": [str(source / "conf.d")], "group": "app"},
        ],
        "checks": [],
    }
    return {"tmp": tmp_path, "src": source, "nodes": nodes, "profile": profile}
