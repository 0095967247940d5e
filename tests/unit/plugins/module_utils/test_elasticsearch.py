"""The Elasticsearch helpers that need no cluster: HTTP retries and failover against a small
local HTTP server, engine detection, date math, retention rules, path.repo checks, pacing."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _elasticsearch as es

# ---- a scripted HTTP endpoint (the client's retry logic is under test, not a server) --------


class Script:
    """Answers requests in order from a list of (status, body, headers)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.seen = []


def serve(script):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            script.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
            status, payload, headers = script.answers.pop(0) if script.answers else (500, {"error": "script exhausted"}, {})
            data = json.dumps(payload).encode()
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server


@pytest.fixture
def endpoint():
    servers = []

    def start(answers):
        script = Script(answers)
        server = serve(script)
        servers.append(server)
        return "http://127.0.0.1:%d" % server.server_address[1], script

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def client(hosts, **kwargs):
    sleeps = []
    kwargs.setdefault("retries", 3)
    kwargs.setdefault("retry_delay", 0.5)
    made = es.Client(hosts, sleep=sleeps.append, connect_timeout=2, request_timeout=5, **kwargs)
    return made, sleeps


OK = (200, {"acknowledged": True}, {})
BUSY = (503, {"error": {"type": "unavailable", "reason": "node is busy"}, "status": 503}, {})


def test_retries_busy_answers_with_doubling_back_off(endpoint):
    url, script = endpoint([BUSY, (429, {"error": "too many requests"}, {}), OK])
    made, sleeps = client([url])
    assert made.request("GET", "/_snapshot").data == {"acknowledged": True}
    assert sleeps == [0.5, 1.0]
    assert len(script.seen) == 3


def test_retry_after_header_is_honoured(endpoint):
    url, _script = endpoint([(503, {}, {"Retry-After": "7"}), OK])
    made, sleeps = client([url])
    made.request("GET", "/")
    assert sleeps == [7.0]


def test_gives_up_after_the_retries_with_a_clear_message(endpoint):
    url, script = endpoint([BUSY] * 4)
    made, sleeps = client([url], retries=3)
    with pytest.raises(es.SearchError) as caught:
        made.request("GET", "/_cluster/health")
    assert caught.value.status == 503
    assert "busy or unavailable (HTTP 503: node is busy) after 4 attempts" in str(caught.value)
    assert len(script.seen) == 4 and len(sleeps) == 3


def test_fails_over_to_the_next_host_without_waiting(endpoint):
    url, _script = endpoint([OK])
    dead = "http://127.0.0.1:%d" % closed_port()
    made, sleeps = client([dead, url])
    assert made.request("PUT", "/_snapshot/x/y", body={}).status == 200
    assert sleeps == []


def test_unreachable_hosts_name_the_cause():
    dead = "http://127.0.0.1:%d" % closed_port()
    made, sleeps = client([dead], retries=2)
    with pytest.raises(es.SearchError) as caught:
        made.request("GET", "/")
    message = str(caught.value)
    assert "cannot reach the search server at %s: connection refused (3 attempts over 1 host)" % dead in message
    assert sleeps == [0.5, 1.0]


def test_a_request_that_may_have_arrived_is_not_repeated_unless_idempotent():
    # A server that accepts the connection and closes it without answering.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []

    def hang_up():
        while True:
            try:
                conn, _addr = listener.accept()
            except OSError:
                return
            accepted.append(1)
            conn.recv(65536)
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    url = "http://127.0.0.1:%d" % listener.getsockname()[1]
    try:
        made, _sleeps = client([url], retries=2)
        with pytest.raises(es.SearchError) as caught:
            made.request("POST", "/_snapshot/r/s/_restore", body={})
        assert "was not repeated" in str(caught.value)
        assert len(accepted) == 1
        with pytest.raises(es.SearchError):
            made.request("GET", "/")
        assert len(accepted) == 4
    finally:
        listener.close()


def test_errors_carry_the_server_reason_and_auth_hints(endpoint):
    body = {
        "error": {"type": "repository_exception", "reason": "[x] failed to create repository", "caused_by": {"reason": "location [/y] doesn't match"}},
        "status": 500,
    }
    url, _script = endpoint([(500, body, {}), (401, {"error": {"type": "security_exception", "reason": "unable to authenticate user [u]"}}, {}), (401, {}, {})])
    made, _sleeps = client([url], username="u", password="p4ss-w0rd")
    with pytest.raises(es.SearchError) as caught:
        made.request("PUT", "/_snapshot/x", body={})
    assert caught.value.error_type == "repository_exception"
    assert "failed to create repository: location [/y] doesn't match" in str(caught.value)
    with pytest.raises(es.SearchError) as caught:
        made.request("GET", "/")
    assert "authentication failed" in str(caught.value) and "p4ss-w0rd" not in str(caught.value)
    anonymous, _sleeps = client([url])
    with pytest.raises(es.SearchError, match="requires authentication"):
        anonymous.request("GET", "/")


def test_credentials_travel_in_headers(endpoint):
    url, script = endpoint([OK, OK, OK])
    client([url], username="backup", password="secret")[0].request("GET", "/")
    client([url], api_key="id1:key1")[0].request("GET", "/")
    client([url], bearer_token="tok")[0].request("GET", "/")
    auth = [s["headers"].get("Authorization") for s in script.seen]
    assert auth[0].startswith("Basic ")
    assert auth[1] == "ApiKey aWQxOmtleTE="
    assert auth[2] == "Bearer tok"


def test_hosts_are_normalised_and_credentials_in_urls_refused():
    assert es.normalize_host("localhost:9200", 0) == "http://localhost:9200"
    assert es.normalize_host("https://es.example.com:9200/", 1) == "https://es.example.com:9200"
    with pytest.raises(es.SearchError) as caught:
        es.normalize_host("http://admin:hunter22@es:9200", 2)
    assert "hosts[2] contains credentials" in str(caught.value) and "hunter22" not in str(caught.value)
    with pytest.raises(es.SearchError, match="scheme"):
        es.normalize_host("ftp://x", 0)


def test_engine_detection_from_root_and_from_nodes(endpoint):
    root = {"name": "n1", "cluster_name": "c", "version": {"number": "2.19.6", "distribution": "opensearch"}}
    url, _script = endpoint([(200, root, {})])
    server = client([url])[0].server()
    assert (server.engine, server.version, server.cluster_name) == ("opensearch", "2.19.6", "c")
    assert server.master_timeout(30) == {"cluster_manager_timeout": "30s"}
    assert server.multi_delete and not server.feature_states
    # Elasticsearch 8 integ-test distribution: no GET / handler.
    nodes = {"cluster_name": "c8", "nodes": {"abc": {"name": "n1", "version": "8.19.21", "roles": ["master", "data"]}}}
    url, _script = endpoint(
        [(405, {"error": "Incorrect HTTP method"}, {"X-elastic-product": "Elasticsearch"}), (200, nodes, {"X-elastic-product": "Elasticsearch"})]
    )
    server = client([url])[0].server()
    assert (server.engine, server.version, server.cluster_name) == ("elasticsearch", "8.19.21", "c8")
    assert server.master_timeout(5) == {"master_timeout": "5s"} and server.feature_states
    assert not es.ServerInfo("elasticsearch", "7.7.1").multi_delete


# ---- pure helpers ---------------------------------------------------------------------------

NOW = 1795378615.0  # 2026-11-22T20:16:55Z


@pytest.mark.parametrize(
    "name, resolved",
    [
        ("plain-name", "plain-name"),
        ("<nightly-{now/d}>", "nightly-2026.11.22"),
        ("<nightly-{now/M{uuuu.MM}}>", "nightly-2026.11"),
        ("<b-{now-1d/d{yyyyMMdd}}>", "b-20261121"),
        ("<b-{now{yyyy.MM.dd-HH.mm}}>", "b-2026.11.22-20.16"),
        ("<b-{now/d{yyyy.MM.dd|+12:00}}>", "b-2026.11.23"),
        ("<b-{now+2M/M{yyyy.MM}}>", "b-2027.01"),
        ("<weekly-{now/w{yyyy.MM.dd}}>", "weekly-2026.11.16"),
        ("<esc-\\{x\\}-{now/y{yyyy}}>", "esc-{x}-2026"),
    ],
)
def test_date_math_names_resolve_like_the_server(name, resolved):
    assert es.resolve_date_math(name, NOW) == resolved


@pytest.mark.parametrize("name", ["<x-{then/d}>", "<x-{now/d>", "<x-{now/d{qq}}>", "<x-{now/d{yyyy|Europe/Paris}}>", "<x-{now+1x}>"])
def test_unsupported_date_math_is_refused(name):
    with pytest.raises(ValueError):
        es.resolve_date_math(name, NOW)


def test_snapshot_names_are_validated_and_generated():
    assert es.validate_snapshot_name("nightly-2026.11.22") is None
    assert es.validate_snapshot_name("Nightly") == "must be lower case"
    assert es.validate_snapshot_name("_x") == "must not start with _"
    assert "'*'" in es.validate_snapshot_name("a*b")
    assert es.generated_name("20261122T201654Z-7c31de8f") == "lifeboat-20261122t201654z-7c31de8f"
    assert es.generated_name(now=NOW) == "lifeboat-20261122t201655z"


def snap(name, state, hours_ago, own=True):
    raw = {"snapshot": name, "uuid": name.upper(), "state": state, "start_time_in_millis": int((NOW - hours_ago * 3600) * 1000)}
    if own:
        raw["metadata"] = {"lifeboat": {"created_by": "lifeboat.backup"}}
    return raw


def names(entries):
    return [raw["snapshot"] for raw, _reason in entries]


def test_retention_by_count_keeps_the_newest_successful_ones():
    snapshots = [snap("s%d" % i, "SUCCESS", 10 - i) for i in range(6)]
    delete, keep = es.plan_retention(snapshots, NOW, {"keep_last": 3})
    assert names(keep) == ["s5", "s4", "s3"]
    assert names(delete) == ["s2", "s1", "s0"]


def test_retention_never_deletes_the_newest_good_snapshot_because_newer_ones_failed():
    snapshots = [snap("old", "SUCCESS", 100), snap("good", "SUCCESS", 50), snap("bad1", "FAILED", 2), snap("bad2", "PARTIAL", 1)]
    delete, keep = es.plan_retention(snapshots, NOW, {"max_age": 3600})
    assert names(keep) == ["bad2", "good"]
    assert names(delete) == ["bad1", "old"]
    # min_count protects more than the newest one, whatever max_count says.
    delete, keep = es.plan_retention(snapshots, NOW, {"keep_last": 1, "min_count": 2})
    assert names(keep) == ["bad2", "bad1", "good", "old"]
    assert delete == []


def test_retention_removes_failed_snapshots_once_a_newer_good_one_exists():
    snapshots = [snap("bad", "FAILED", 5), snap("good", "SUCCESS", 1), snap("running", "IN_PROGRESS", 0)]
    delete, keep = es.plan_retention(snapshots, NOW, {"keep_last": 5})
    assert names(delete) == ["bad"]
    assert names(keep) == ["running", "good"]


def test_retention_only_touches_its_own_snapshots_and_the_pattern():
    snapshots = [snap("mine-1", "SUCCESS", 3), snap("mine-2", "SUCCESS", 2), snap("theirs", "SUCCESS", 5, own=False), snap("other-1", "SUCCESS", 9)]
    delete, _keep = es.plan_retention(snapshots, NOW, {"keep_last": 1})
    assert names(delete) == ["mine-1", "other-1"]
    delete, _keep = es.plan_retention(snapshots, NOW, {"keep_last": 1, "pattern": "mine-*"})
    assert names(delete) == ["mine-1"]
    delete, _keep = es.plan_retention(snapshots, NOW, {"keep_last": 1}, only_own=False)
    assert names(delete) == ["mine-1", "theirs", "other-1"]


def test_path_repo_check_names_the_nodes_and_the_setting():
    server = es.ServerInfo("elasticsearch", "7.17.29")
    nodes = [{"name": "n1", "path_repo": ["/backup"]}, {"name": "n2", "path_repo": []}]
    missing = [n for n in nodes if not es.is_under("/backup/es", n["path_repo"])]
    message = es.path_repo_message("/backup/es", missing, server)
    assert "n2: path.repo is not set" in message and "n1" not in message
    assert 'path.repo: ["/backup/es"]' in message and "/etc/elasticsearch/elasticsearch.yml" in message
    assert "chown elasticsearch:elasticsearch /backup/es" in message
    assert es.is_under("/backup", ["/backup"]) and not es.is_under("/backup-2/x", ["/backup"])
    assert es.resolve_location("rel/x", nodes) == "/backup/rel/x"
    assert es.resolve_location("rel", [{"name": "n", "path_repo": []}]) is None


def test_sizes_read_new_and_legacy_fields():
    new = {
        "stats": {"total": {"size_in_bytes": 100, "file_count": 3}, "incremental": {"size_in_bytes": 10, "file_count": 1}},
        "indices": {"a": {"stats": {"total": {"size_in_bytes": 100}}}},
    }
    assert es.sizes(new) == {"total_bytes": 100, "total_files": 3, "incremental_bytes": 10, "incremental_files": 1, "index_bytes": {"a": 100}}
    legacy = {"stats": {"total_size_in_bytes": 100, "number_of_files": 3, "size_in_bytes": 10}}
    assert es.sizes(legacy)["total_bytes"] == 100


def test_progress_samples_are_bounded():
    samples = list(range(1000))
    kept = es.keep_samples(samples, limit=60)
    assert len(kept) == 60 and kept[0] == 0 and kept[-1] == 999


def test_poller_waits_one_percent_of_the_elapsed_time():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(round(seconds, 3))
        now[0] += seconds

    poller = es.Poller(timeout=1000, clock=lambda: now[0], sleep=sleep)
    poller.pause()
    now[0] = 200.0
    poller.pause()
    now[0] = 900.0
    poller.pause()
    now[0] = 999.0
    poller.pause()
    assert slept == [0.2, 2.0, 5.0, 1.0]
    assert poller.expired


def test_root_index_lists_the_snapshots(tmp_path):
    (tmp_path / "index-3").write_text(json.dumps({"snapshots": [{"name": "a", "uuid": "U1"}]}))
    (tmp_path / "index-2").write_text(json.dumps({"snapshots": []}))
    (tmp_path / "index.latest").write_bytes(b"\x00" * 8)
    assert es.root_index(str(tmp_path))[0] == 3
    assert es.repository_holds(str(tmp_path), "U1")
    assert not es.repository_holds(str(tmp_path), "U2")
    assert not es.repository_holds(str(tmp_path / "missing"), "U1")


def test_module_kwargs_merge_constraints():
    kwargs = es.module_kwargs({"name": {"type": "str"}}, required_together=[["a", "b"]], mutually_exclusive=[["c", "d"]])
    assert "hosts" in kwargs["argument_spec"] and "name" in kwargs["argument_spec"]
    assert ["a", "b"] in kwargs["required_together"] and ["username", "password"] in kwargs["required_together"]
    assert ["c", "d"] in kwargs["mutually_exclusive"]
    secret = {k for k, v in kwargs["argument_spec"].items() if v.get("no_log")}
    assert secret == {"password", "api_key", "bearer_token"}


def test_shard_failure_text_is_short():
    failures = [{"index": "i%d" % n, "shard_id": 0, "reason": "boom"} for n in range(8)]
    text = es.shard_failure_text(failures)
    assert text.startswith("i0[0]: boom; i1[0]: boom") and text.endswith("and 3 more")


def test_summary_marks_own_snapshots():
    raw = {"snapshot": "s", "uuid": "u", "state": "SUCCESS", "indices": ["b", "a"], "metadata": {"lifeboat": {"created_by": "lifeboat.backup"}}}
    assert es.summary(raw, "r")["indices"] == ["a", "b"]
    assert es.summary(raw, "r")["created_by_collection"]
    assert not es.summary({"snapshot": "x", "metadata": {"lifeboat": "yes"}}, "r")["created_by_collection"]
