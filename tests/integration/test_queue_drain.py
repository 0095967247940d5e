"""queue_drain against a real Redis (tests/harness): lengths, wait, purge, connections, secrets."""

from __future__ import annotations

import datetime
import ipaddress
import json
import threading
import time

import pytest

from tests.harness.process import free_port
from tests.harness.servers import RedisServer
from tests.support.modules import run_module, run_playbook

# The commands that take lengths (queue_drain reads them in a MULTI/EXEC pipeline).
LENGTH_COMMANDS = {"exec", "llen", "zcard", "hlen", "scard", "xlen"}


def wait_until_queried(client, known, timeout=60):
    """Wait until a connection not in ``known`` (the module's) has taken lengths: the
    module has its initial lengths. Sleeping instead races a slow start (a loaded
    machine, an older Python)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(c["id"] not in known and c.get("cmd") in LENGTH_COMMANDS for c in client.client_list()):
            return
        time.sleep(0.05)
    raise AssertionError("the module never queried Redis")


def connection(server, **extra):
    args = {"login_host": server.host, "login_port": server.port, "login_password": server.password}
    args.update(extra)
    return args


def test_reports_lengths_without_changing_anything(redis_server, namespace):
    client = redis_server.client()
    client.rpush(f"{namespace}:enrichers", "t1", "t2", "t3")
    client.zadd(f"{namespace}:scheduled", {"a": 1, "b": 2})
    queues = [f"{namespace}:enrichers", f"{namespace}:missing", f"{namespace}:scheduled"]

    for check in (False, True):
        result = run_module("queue_drain", check=check, queues=queues, **connection(redis_server))
        assert not result.failed, result
        assert result["changed"] is False
        assert result["lengths"] == {queues[0]: 3, queues[1]: 0, queues[2]: 2}
        assert result["types"] == {queues[0]: "list", queues[1]: "none", queues[2]: "zset"}
        assert result["pending"] == {queues[0]: 3, queues[2]: 2}
        assert result["total"] == 5 and result["empty"] is False
    assert client.llen(queues[0]) == 3  # read-only


@pytest.mark.fault("timeout", "queue_drain waits on a queue nobody consumes, timeout=2")
def test_wait_times_out_and_says_which_queue_holds_how_many(redis_server, namespace, fault):
    client = redis_server.client()
    busy, idle = f"{namespace}:integrations", f"{namespace}:utilities"
    client.rpush(busy, *[f"task-{i}" for i in range(5)])
    started = time.monotonic()
    result = run_module("queue_drain", queues=[busy, idle], wait=True, interval=0.2, timeout=2, **connection(redis_server))
    elapsed = time.monotonic() - started
    fault.observe(false_success=not result.failed, data_lost=client.llen(busy) != 5)
    fault.scan([redis_server.password], result)
    assert result.failed
    assert f"{busy} has 5 items" in result["msg"] and idle not in result["msg"]
    assert result["timed_out"] is True and result["pending"] == {busy: 5} and result["lengths"] == {busy: 5, idle: 0}
    assert result["polls"] >= 5 and 2 <= elapsed < 20
    assert client.llen(busy) == 5  # waiting never takes anything


def test_wait_ends_when_a_worker_drains_the_queue(redis_server, namespace):
    queue = f"{namespace}:celery"
    client = redis_server.client()
    client.rpush(queue, *[f"task-{i}" for i in range(15)])
    consumed = []

    known = {c["id"] for c in client.client_list()}

    def worker():
        # A real consumer on its own connection, as a Celery worker would be; it starts
        # once the module has taken its first lengths.
        conn = redis_server.client()
        wait_until_queried(conn, known | {conn.client_id()})
        while True:
            item = conn.blpop([queue], timeout=1)
            if item is None:
                return
            consumed.append(item[1])
            time.sleep(0.1)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        result = run_module("queue_drain", queues=[queue], wait=True, interval=0.2, timeout=60, **connection(redis_server))
    finally:
        thread.join(10)
    assert not result.failed, result
    assert result["changed"] is False and result["empty"] is True and result["lengths"] == {queue: 0}
    assert result["initial_lengths"][queue] > 0 and result["polls"] >= 1 and result["waited"] > 0
    assert len(consumed) == 15


def test_purge_deletes_only_the_keys_named(redis_server, namespace):
    client = redis_server.client()
    named, other, similar = f"{namespace}:queue:ingestion:inbound", f"{namespace}:queue:graph:inbound", f"{namespace}:queue:ingestion:inbound2"
    client.rpush(named, "a", "b", "c")
    client.rpush(other, "x", "y")
    client.rpush(similar, "z")

    preview = run_module("queue_drain", check=True, purge=[named], queues=[other], **connection(redis_server))
    assert not preview.failed, preview
    assert preview["changed"] is True and preview["purged"] == {named: 3} and preview["discarded"] == 3
    assert client.llen(named) == 3  # check mode deletes nothing

    result = run_module("queue_drain", purge=[named, f"{namespace}:absent"], queues=[other], **connection(redis_server))
    assert not result.failed, result
    assert result["changed"] is True and result["purged"] == {named: 3} and result["discarded"] == 3
    assert result["lengths"] == {other: 2}
    assert not client.exists(named) and client.llen(other) == 2 and client.llen(similar) == 1

    again = run_module("queue_drain", purge=[named], **connection(redis_server))
    assert not again.failed and again["changed"] is False and again["purged"] == {}


def test_purge_refuses_patterns_unless_allowed(redis_server, namespace):
    client = redis_server.client()
    client.rpush(f"{namespace}:a1", "1")
    client.rpush(f"{namespace}:a2", "1", "2")
    client.rpush(f"{namespace}:b1", "1")

    refused = run_module("queue_drain", purge=[f"{namespace}:a*"], **connection(redis_server))
    assert refused.failed and "looks like a pattern" in refused["msg"] and "allow_pattern" in refused["msg"]
    assert client.exists(f"{namespace}:a1", f"{namespace}:a2", f"{namespace}:b1") == 3

    allowed = run_module("queue_drain", purge=[f"{namespace}:a*"], allow_pattern=True, **connection(redis_server))
    assert not allowed.failed, allowed
    assert allowed["purged"] == {f"{namespace}:a1": 1, f"{namespace}:a2": 2}
    assert client.exists(f"{namespace}:b1") == 1


def test_refuses_a_key_that_is_not_a_queue(redis_server, namespace):
    client = redis_server.client()
    client.set(f"{namespace}:config", "x")
    for args in ({"queues": [f"{namespace}:config"]}, {"purge": [f"{namespace}:config"]}):
        result = run_module("queue_drain", **args, **connection(redis_server))
        assert result.failed and "is a Redis string" in result["msg"]
    assert client.get(f"{namespace}:config") == b"x"


@pytest.mark.fault("wrong key", "Redis with a wrong password, then at a port where nothing listens")
def test_connection_failures_are_clear(redis_server, namespace, fault):
    wrong = run_module("queue_drain", queues=[namespace], **connection(redis_server, login_password="not-the-password"))
    fault.observe(false_success=not wrong.failed)
    fault.scan(["not-the-password", redis_server.password], wrong)
    assert wrong.failed and "refused the credentials" in wrong["msg"] and "not-the-password" not in wrong.stdout
    down = run_module("queue_drain", queues=[namespace], connect_timeout=3, **connection(redis_server, login_port=free_port()))
    fault.observe(false_success=not down.failed)
    fault.scan([redis_server.password], down)
    assert down.failed and "cannot connect to Redis" in down["msg"]


def test_unix_socket_and_database_number(redis_server, namespace):
    redis_server.client(db=3).rpush(f"{namespace}:q", "1", "2")
    result = run_module("queue_drain", login_unix_socket=str(redis_server.socket_path), db=3, login_password=redis_server.password, queues=[f"{namespace}:q"])
    assert not result.failed, result
    assert result["lengths"] == {f"{namespace}:q": 2}


def _tls_files(directory):
    """A CA and a server certificate for 127.0.0.1, written as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lifeboat test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": directory / "ca.pem", "cert": directory / "server.pem", "key": directory / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    for path in paths.values():
        path.chmod(0o644)
    return paths


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    files = _tls_files(tmp_path_factory.mktemp("redis-tls"))
    tls_port = free_port()
    config = {
        "tls-port": str(tls_port),
        "tls-cert-file": str(files["cert"]),
        "tls-key-file": str(files["key"]),
        "tls-ca-cert-file": str(files["ca"]),
        "tls-auth-clients": "no",
    }
    with RedisServer(password="tls-secret-pw", config=config) as server:
        yield server, tls_port, files


def test_tls_with_a_private_ca(tls_redis, namespace):
    server, tls_port, files = tls_redis
    server.client().rpush(f"{namespace}:q", "1")
    ok = run_module(
        "queue_drain",
        login_host="127.0.0.1",
        login_port=tls_port,
        login_password=server.password,
        tls=True,
        ca_certs=str(files["ca"]),
        queues=[f"{namespace}:q"],
    )
    assert not ok.failed, ok
    assert ok["lengths"] == {f"{namespace}:q": 1}
    # Without the CA the certificate is not trusted: a clear failure, not a silent plaintext fallback.
    untrusted = run_module(
        "queue_drain", login_host="127.0.0.1", login_port=tls_port, login_password=server.password, tls=True, connect_timeout=5, queues=[f"{namespace}:q"]
    )
    assert untrusted.failed and "cannot connect to Redis" in untrusted["msg"] and "tls=true" in untrusted["msg"]


def test_password_never_appears_in_verbose_output(redis_server, namespace, tmp_path):
    redis_server.client().rpush(f"{namespace}:q", "1")
    playbook = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Report and purge
      lifeboat.backup.queue_drain:
        login_host: "{{ redis_host }}"
        login_port: "{{ redis_port }}"
        login_password: "{{ redis_password }}"
        queues: ["{{ queue }}"]
        purge: ["{{ queue }}"]
      register: drained
    - name: Wrong password, with the names of 0.1.0 (deprecated aliases)
      lifeboat.backup.queue_drain:
        host: "{{ redis_host }}"
        port: "{{ redis_port }}"
        password: "{{ redis_password }}-wrong"
        queues: ["{{ queue }}"]
      ignore_errors: true
"""
    extra = {"redis_host": redis_server.host, "redis_port": redis_server.port, "redis_password": redis_server.password, "queue": f"{namespace}:q"}
    proc = run_playbook(playbook, tmp_path, extra_vars=extra, verbosity=3)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert '"discarded": 1' in proc.stdout
    assert redis_server.password not in proc.stdout
    assert "Alias 'password' is deprecated" in proc.stdout


def test_old_option_names_still_work_with_a_deprecation(redis_server, namespace):
    redis_server.client().rpush(f"{namespace}:old", "1")
    old = {"host": redis_server.host, "port": redis_server.port, "password": redis_server.password}
    result = run_module("queue_drain", queues=[f"{namespace}:old"], **old)
    assert not result.failed and result["lengths"] == {f"{namespace}:old": 1}, result.get("msg")
    # The shape of a deprecation differs between ansible-core releases: read it as text.
    texts = [json.dumps(d) for d in result["deprecations"]]
    assert len(texts) == 3
    for alias, text in zip(["host", "password", "port"], sorted(texts, key=lambda t: t.split("Alias '")[1])):
        assert "Alias '%s' is deprecated" % alias in text and "0.3.0" in text and "lifeboat.backup" in text


@pytest.mark.fault("server down", "Redis stopped while queue_drain waits")
def test_server_going_down_while_waiting_fails_clearly(namespace, fault):
    with RedisServer(password="down-test-password") as server:
        client = server.client()
        client.rpush(f"{namespace}:q", "1")
        known = {c["id"] for c in client.client_list()}
        outcome = {}

        def drain():
            args = {"queues": [f"{namespace}:q"], "wait": True, "interval": 0.2, "timeout": 60, "connect_timeout": 5}
            outcome["result"] = run_module("queue_drain", **args, **connection(server))

        thread = threading.Thread(target=drain)
        thread.start()
        wait_until_queried(client, known)
        started = time.monotonic()
        server.stop()
        thread.join(60)
    result = outcome["result"]
    fault.observe(false_success=not result.failed)
    fault.scan(["down-test-password"], result)
    assert result.failed and "Redis at 127.0.0.1:" in result["msg"] and "Redis is running" in result["msg"], result["msg"]
    assert result["initial_lengths"] == {f"{namespace}:q": 1} and result["timed_out"] is False
    assert time.monotonic() - started < 30
