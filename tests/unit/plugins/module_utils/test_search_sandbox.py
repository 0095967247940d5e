"""_search_sandbox without a server: which distribution a drill's search node runs (the
snapshot's version, else the oldest newer one; never an older one), its configuration (no
file of it outside the sandbox), its settings (loopback, single node, its own path.repo)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _search_sandbox as sandbox
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import OptionError


def distribution(root, engine, version):
    home = root / ("%s-%s" % (engine, version))
    (home / "lib").mkdir(parents=True)
    (home / "lib" / ("%s-%s.jar" % (engine, version))).write_text("")
    (home / "lib" / "lucene-core-9.12.1.jar").write_text("")
    return home


def test_version_of_a_distribution_and_of_a_snapshot(tmp_path):
    assert sandbox.version_of(str(distribution(tmp_path, "opensearch", "2.19.6")), "opensearch") == (2, 19, 6)
    assert sandbox.version_of(str(tmp_path / "opensearch-2.19.6"), "elasticsearch") is None
    assert sandbox.version_of(str(tmp_path / "nothing"), "opensearch") is None
    assert sandbox.parse_version("8.19.21") == (8, 19, 21)
    with pytest.raises(OptionError, match="^version: eight is not"):
        sandbox.parse_version("eight")


def test_the_snapshots_version_else_the_oldest_newer_never_an_older(tmp_path, monkeypatch):
    homes = {v: str(distribution(tmp_path, "elasticsearch", v)) for v in ("7.17.29", "8.19.21", "8.20.0")}
    found = [dict(home=h, conf=None, java=None, uid=None) for h in homes.values()]
    monkeypatch.setattr(sandbox, "running_nodes", lambda engine: found)
    assert sandbox.choose("elasticsearch", (8, 19, 21), None)["home"] == homes["8.19.21"]
    assert sandbox.choose("elasticsearch", (8, 1, 0), None)["home"] == homes["8.19.21"]
    assert sandbox.choose("elasticsearch", None, None)["home"] == homes["8.20.0"]
    with pytest.raises(OptionError, match="only older distributions are here") as older:
        sandbox.choose("elasticsearch", (9, 0, 0), None)
    assert "drill_search_home" in str(older.value)
    with pytest.raises(OptionError, match="^home: .* holds no opensearch distribution"):
        sandbox.choose("opensearch", None, homes["8.19.21"])
    monkeypatch.setattr(sandbox, "running_nodes", lambda engine: [])
    monkeypatch.setattr(sandbox.os.path, "isdir", lambda path: False)
    with pytest.raises(OptionError, match="no opensearch distribution found"):
        sandbox.choose("opensearch", None, None)


def test_the_configuration_points_every_file_into_the_sandbox(tmp_path):
    source = tmp_path / "etc"
    (source / "jvm.options.d").mkdir(parents=True)
    (source / "jvm.options").write_text(
        "-Xms4g\n-XX:HeapDumpPath=/var/lib/elasticsearch\n-XX:ErrorFile=/var/log/elasticsearch/hs_err_pid%p.log\n"
        "9-:-Xlog:gc*,gc+age=trace,safepoint:file=/var/log/elasticsearch/gc.log:utctime,pid,tags:filecount=32,filesize=64m\n"
    )
    (source / "jvm.options.d" / "gc.options").write_text("8:-Xloggc:logs/gc.log\n")
    (source / "log4j2.properties").write_text("status = error\n")
    (source / "elasticsearch.yml").write_text("cluster.name: production\n")
    (source / "elasticsearch.keystore").write_text("secret")
    target, logs = tmp_path / "sandbox" / "config", str(tmp_path / "sandbox" / "logs")
    target.parent.mkdir()
    sandbox.copy_config(str(source), str(target), logs)
    assert sorted(p.name for p in target.iterdir()) == ["jvm.options", "jvm.options.d", "log4j2.properties"], "no settings file, no keystore"
    text = (target / "jvm.options").read_text() + (target / "jvm.options.d" / "gc.options").read_text()
    assert "/var/log/elasticsearch" not in text and "/var/lib/elasticsearch" not in text and "logs/gc.log" not in text.replace(logs, "")
    assert "file=%s/gc.log:utctime" % logs in text and "-Xloggc:%s/gc.log" % logs in text and "-Xms4g" in text


def test_the_nodes_settings(tmp_path):
    home = distribution(tmp_path, "opensearch", "2.19.6")
    (home / "plugins" / "opensearch-security").mkdir(parents=True)
    directories = {name: "/s/search/" + name for name in ("data", "logs", "repo")}
    settings = sandbox.node_settings(str(home), "opensearch", "Search 1", directories, ["/db-backup/es"])
    assert settings["network.host"] == "127.0.0.1" and settings["discovery.type"] == "single-node"
    assert settings["path.repo"] == '["/s/search/repo", "/db-backup/es"]' and settings["path.data"] == "/s/search/data"
    assert settings["cluster.name"] == "lifeboat-drill-search-1" and settings["plugins.security.disabled"] is True
    assert "xpack.security.enabled" not in settings


def test_a_running_server_is_found_when_its_executable_cannot_be_read(tmp_path, monkeypatch):
    """In a container without CAP_SYS_PTRACE, /proc/<pid>/exe of another account's process
    cannot be read: the server is found all the same, its JDK taken from its argv[0]."""
    home = tmp_path / "home"
    (home / "lib").mkdir(parents=True)
    (home / "lib" / "opensearch-2.19.6.jar").write_bytes(b"")
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-Dopensearch.path.home=%s" % home])
    real = sandbox.os.path.realpath

    def realpath(path, *args, **kwargs):
        if str(path) == "/proc/%d/exe" % process.pid:
            raise PermissionError(13, "Permission denied", path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(sandbox.os.path, "realpath", realpath)
    try:
        deadline = time.monotonic() + 5  # the child's argv is in /proc once it has exec'ed
        found = []
        while not found and time.monotonic() < deadline:
            found = [entry for entry in sandbox.running_nodes("opensearch") if entry["home"] == str(home)]
            time.sleep(0 if found else 0.1)
    finally:
        process.kill()
        process.wait()
    assert found and found[0]["java"] == os.path.dirname(os.path.dirname(real(sys.executable)))
