"""The service harness itself: every server does a real round trip, and a
server that cannot be had is reported as a failure, with nothing left behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from tests.harness import process
from tests.harness.process import REPO_ROOT, ServerError, group_alive
from tests.harness.servers import PostgresServer, RedisServer, SearchServer

# ---- round trips --------------------------------------------------------------


def test_postgres_round_trip(pg_database):
    server = pg_database.server
    with pg_database.connect() as conn:
        conn.execute("CREATE TABLE item (id int PRIMARY KEY, name text NOT NULL)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO item VALUES (%s, %s)", [(1, "alpha"), (2, "beta"), (3, "gamma")])
    # Read back with another client (psql over TCP) than the one that wrote.
    assert pg_database.psql("SELECT id || ':' || name FROM item ORDER BY id").splitlines() == ["1:alpha", "2:beta", "3:gamma"]
    # It is our private cluster, not the system one.
    assert server.psql("SHOW data_directory") == str(server.data_dir)
    assert server.psql("SHOW server_version_num")[:2] == server.version


def test_postgres_requires_the_password_over_tcp_and_socket(postgres_server):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres_server.dsn().replace(postgres_server.password, "wrong"))
    # The unix socket in the server's temp dir works, with the password too.
    socket_dsn = f"host={postgres_server.socket_dir} port={postgres_server.port} user={postgres_server.user} dbname=postgres"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(socket_dsn + " password=wrong")
    with psycopg.connect(f"{socket_dsn} password={postgres_server.password}") as conn:
        assert conn.execute("SELECT current_user").fetchone() == (postgres_server.user,)


def test_redis_round_trip(redis_server, namespace):
    key = f"{namespace}:queue"
    client = redis_server.client()
    client.rpush(key, "job-1", "job-2", "job-3")
    # A second connection reads it back, as another worker would.
    assert redis_server.client().lrange(key, 0, -1) == [b"job-1", b"job-2", b"job-3"]
    # Without the password the server refuses (raw RESP: redis-py would retry for seconds).
    with socket.create_connection((redis_server.host, redis_server.port), timeout=5) as conn:
        conn.sendall(b"PING\r\n")
        assert conn.recv(64).startswith(b"-NOAUTH")
    assert redis_server.client().config_get("dir")["dir"] == str(redis_server.data_dir)


def test_search_round_trip_with_snapshot(search_server, namespace):
    """Index a document, snapshot it into path.repo, delete, restore, read it back."""
    es = search_server
    index, repo = f"{namespace}-docs", f"{namespace}-repo"
    doc = {"title": "lifeboat", "n": 7}
    es.request("PUT", f"/{index}", json={"settings": {"number_of_shards": 1, "number_of_replicas": 0}})
    es.request("PUT", f"/{index}/_doc/1", params={"refresh": "true"}, json=doc)
    assert es.request("GET", f"/{index}/_doc/1").json()["_source"] == doc

    es.request("PUT", f"/_snapshot/{repo}", json={"type": "fs", "settings": {"location": str(es.repo_dir / namespace)}})
    es.request("POST", f"/_snapshot/{repo}/_verify")
    snap = es.request("PUT", f"/_snapshot/{repo}/s1", params={"wait_for_completion": "true"}, json={"indices": index}).json()
    assert snap["snapshot"]["state"] == "SUCCESS"
    assert any((es.repo_dir / namespace).iterdir())

    es.request("DELETE", f"/{index}")
    assert es.request("GET", f"/{index}/_doc/1", check=False).status_code == 404
    es.request("POST", f"/_snapshot/{repo}/s1/_restore", params={"wait_for_completion": "true"}, json={"indices": index})
    assert es.request("GET", f"/{index}/_doc/1").json()["_source"] == doc
    assert es.server_version() == es.version


def test_search_cleanup_removes_only_its_namespace(search_server, namespace):
    """What the namespace fixture relies on; 8.x refuses wildcard deletes, so it must go by name."""
    es, other = search_server, f"{namespace}x"
    for prefix in (namespace, other):
        es.request("PUT", f"/{prefix}-a", json={"settings": {"number_of_replicas": 0}})
        es.request("PUT", f"/_snapshot/{prefix}-repo", json={"type": "fs", "settings": {"location": str(es.repo_dir / prefix)}})
    es.cleanup(other)
    assert es.request("GET", f"/{other}-a", check=False).status_code == 404
    assert es.request("GET", f"/_snapshot/{other}-repo", check=False).status_code == 404
    assert not (es.repo_dir / other).exists()
    assert es.request("GET", f"/{namespace}-a").status_code == 200
    assert es.request("GET", f"/_snapshot/{namespace}-repo").status_code == 200


def test_engine_fixtures_share_the_session_servers(opensearch_server, elasticsearch_server, server_pool):
    assert opensearch_server.engine == "opensearch"
    assert elasticsearch_server.engine == "elasticsearch"
    assert elasticsearch_server.version == "7.17.29"  # the table's default
    # Asked again, the same running instance comes back: started once per session.
    assert server_pool.get(("opensearch", opensearch_server.version), lambda: pytest.fail("restarted")) is opensearch_server


# ---- failures are reported, never skipped, and leave nothing behind ------------


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            pass
    return found


def test_missing_binaries_say_what_to_install():
    with pytest.raises(ServerError, match=r"initdb.* not found in /usr/lib/postgresql/99/bin.*postgresql-99"):
        PostgresServer(version="99").start()
    with pytest.raises(ServerError, match="redis-server-nonexistent not found on PATH.*redis-server"):
        RedisServer(binary="redis-server-nonexistent").start()


def test_unknown_search_version_says_where_to_add_it():
    with pytest.raises(ServerError, match=r"no distribution elasticsearch 0\.0\.1 .*DISTRIBUTIONS"):
        SearchServer("elasticsearch", "0.0.1").start()


def test_server_that_dies_on_start_is_reported_with_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(process, "FAILED_LOGS_DIR", tmp_path)
    server = PostgresServer(settings={"shared_buffers": "plenty"})
    with pytest.raises(ServerError) as failure:
        with server:
            pytest.fail("a server with an invalid setting started")
    message = str(failure.value)
    assert "exited with status" in message
    assert 'invalid value for parameter "shared_buffers"' in message  # from the log tail
    saved = list(tmp_path.glob("postgresql-*/postgresql.log"))
    assert saved and "shared_buffers" in saved[0].read_text()
    assert server.root is None and not group_alive(server.process.pid)


def test_start_timeout_kills_the_whole_process_tree(tmp_path, monkeypatch):
    """Elasticsearch 8 runs two JVMs (launcher and server); a start that times
    out must leave neither behind, nor the temp dir."""
    monkeypatch.setattr(process, "FAILED_LOGS_DIR", tmp_path)
    server = SearchServer("elasticsearch", "8.19.21", start_timeout=1)
    with pytest.raises(ServerError, match=r"was not ready after 1s") as failure:
        server.start()
    root = str(failure.value).split("(server dir ", 1)[1].split(")", 1)[0]
    assert root.startswith("/") and not os.path.exists(root)
    assert not group_alive(server.process.pid)
    assert _processes_mentioning(root) == []


def test_fixture_failure_is_an_error_not_a_skip(tmp_path):
    """A test whose server cannot be had must fail the run."""
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.parametrize("postgres_server", ["99"], indirect=True)
            def test_pg(postgres_server):
                pass

            @pytest.mark.parametrize("elasticsearch_server", ["0.0.1"], indirect=True)
            def test_es(elasticsearch_server):
                pass
            """
        )
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    cmd = [sys.executable, "-m", "pytest", "-p", "tests.integration.conftest", "-p", "no:cacheprovider", "-rA", "--rootdir", str(tmp_path), str(tmp_path)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 1, result.stdout
    summary = result.stdout.strip().splitlines()[-1]
    assert "2 errors" in summary and "skipped" not in summary and "passed" not in summary, result.stdout
    assert "postgresql-99" in result.stdout and "no distribution elasticsearch 0.0.1" in result.stdout
