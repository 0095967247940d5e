"""Restore drills (#17): playbooks/drill.yml restores a node's newest image into a sandbox
on the node (configuration under a temporary root, PostgreSQL into a new cluster of its
own), compares with the fingerprints, times and reports; production is never touched.
A damaged image is refused by the restore role's image choice, which the drill reuses
(test_roles.py::test_a_damaged_newest_image_is_refused_unless_older_images_are_allowed):
not run again here, to keep the suite's time."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from ansible_collections.lifeboat.backup.plugins.module_utils import _age
from tests.support.leaks import CmdlineSampler, files_containing
from tests.support.modules import ROOT, run_playbook
from tests.support.search import doc_counts, make_indices
from tests.support.trees import PASSPHRASE, snapshot
from tests.support.webhook import WebhookReceiver


def inventory(tmp, node, profile, **extra):
    data = {
        "all": {
            "hosts": {"node1": node},
            "vars": dict({"ansible_connection": "local", "backup_passphrase": PASSPHRASE, "backup_work_factor": 12, "backup_profile": profile}, **extra),
        }
    }
    path = tmp / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o600)
    return str(path)


def playbook(tmp, name, node, profile, verbosity=0, **extra):
    text = (ROOT / "playbooks" / name).read_text()
    return run_playbook(text, tmp, inventory=inventory(tmp, node, profile, **extra), env={"ANSIBLE_SHOW_CUSTOM_STATS": "true"}, verbosity=verbosity)


def report_paths(output):
    html = re.search(r'"report: (\S+\.html)"', output).group(1)
    data = json.loads(Path(re.search(r'"JSON: (\S+\.json)"', output).group(1)).read_text())
    return Path(html), data


def _running(marker):
    """Command lines of running processes that mention ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if proc.name.isdigit() and marker in line and "pytest" not in line:
            found.append(line)
    return found


@pytest.fixture
def webhook():
    """The alert receiver the drill tells of its outcome (docs/operations.md, "Alerts")."""
    with WebhookReceiver(secret="drill-hook-secret") as hook:
        yield hook


@pytest.fixture
def sandboxes():
    """Where the drills make their sandboxes: the sandbox's PostgreSQL runs as its own account,
    so under a directory that account can enter (not pytest's private tmp_path)."""
    path = Path(tempfile.mkdtemp(prefix="lifeboat-drill-test-", dir="/var/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# Two drills, each starting a sandbox PostgreSQL and a sandbox OpenSearch node: about 3 minutes
# on a quiet machine, past the default 900 s when the machine is shared by many runs.
@pytest.mark.timeout(1800)
def test_drill_of_a_fresh_backup_is_green_and_a_changed_row_file_or_document_fails_it(pg_database, opensearch_server, namespace, sandboxes, webhook, tmp_path):
    db = pg_database
    db.psql(
        "CREATE TABLE entity (id serial PRIMARY KEY, title text); INSERT INTO entity (title) SELECT 'entity ' || g FROM generate_series(1, 500) g;"
        "CREATE TABLE audit (v text); INSERT INTO audit SELECT 'a' || g FROM generate_series(1, 50) g;"
    )
    etc = tmp_path / "etc"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "app.conf").write_text("listen = 8080\n")
    (etc / "conf.d" / "10-db.conf").write_text("database = %s\n" % db.name)
    server = db.server
    es = opensearch_server
    indices, _alias = make_indices(es, namespace, {"stix": 30, "docs": 12}, shards=1)
    profile = {
        "name": "test",
        "platform": {"name": "demo", "version": "1.0"},
        "components": [
            {"name": "config", "kind": "config", "paths": [str(etc)]},
            {
                "name": "postgresql",
                "kind": "postgresql",
                "login_host": server.host,
                "port": server.port,
                "login_password": server.password,
                "databases": [db.name],
                "globals": False,
            },
            {
                "name": "search",
                "kind": "elasticsearch",
                "hosts": [es.url],
                "repository": f"{namespace}-repo",
                "location": str(es.repo_dir / f"{namespace}-repo"),
                "indices": [f"{namespace}-*"],
                "include_repository_files": True,
            },
        ],
    }
    (tmp_path / "dest").mkdir()
    node = {"backup_destination": str(tmp_path / "dest"), "backup_state_dir": str(tmp_path / "state"), "backup_facts_dir": ""}
    reports = tmp_path / "reports"
    # A public-key image: the drill decrypts it with the identity held on the controller
    # (lifeboat_identity, as an AWX credential injects it), never a file or argv on the node.
    identity, recipient = _age.generate_identity()
    secret = identity.rsplit("-", maxsplit=1)[-1]
    keys = {"backup_passphrase": "", "backup_recipients": [recipient], "lifeboat_identity": "# the drill's key\n%s\n" % identity}
    backup = playbook(tmp_path, "backup.yml", node, profile, backup_passphrase="", backup_recipients=[recipient])
    assert backup.returncode == 0, backup.stdout[-4000:]
    production = (snapshot(etc), db.psql("SELECT md5(string_agg(id || title, ',' ORDER BY id)) FROM entity"), doc_counts(es, indices))
    small = {"drill_report_dir": str(reports), "drill_dir": str(sandboxes), "drill_search_heap": "256m", **keys}
    small["drill_alerts"] = [{"type": "webhook", "url": webhook.url + "/drill", "secret": "drill-hook-secret"}]

    started = time.time()
    with CmdlineSampler([secret], interval=0.05) as sampler:
        drill = playbook(tmp_path, "drill.yml", node, profile, verbosity=3, **small)
    assert drill.returncode == 0, drill.stdout[-5000:]
    html, data = report_paths(drill.stdout)
    assert data["verdict"] == "passed"
    entries = {e["name"]: e for e in data["nodes"]["node1"]["components"]}
    assert {n: e["result"] for n, e in entries.items()} == {"config": "passed", "postgresql": "passed", "search": "passed"}
    assert entries["postgresql"]["details"]["rows"] == 550 and entries["config"]["details"]["files"] >= 3
    assert sorted(entries["search"]["details"]["indices"]) == sorted(indices) and entries["search"]["details"]["documents"] == 42
    assert all(e["seconds"] > 0 and e["compare_seconds"] >= 0 for e in entries.values()), entries
    versions = data["nodes"]["node1"]["versions"]
    assert versions["same_platform"] and versions["servers"][0]["recorded"].startswith(server.version)
    assert "(PostgreSQL) %s." % server.version in versions["servers"][0]["sandbox"]
    # The sandbox node ran the distribution of the running server (found from its command line).
    assert versions["servers"][1] == {"component": "search", "engine": "OpenSearch", "recorded": es.version, "sandbox": "OpenSearch " + es.version}
    assert "search: OpenSearch %s at backup, sandbox OpenSearch %s" % (es.version, es.version) in drill.stdout
    assert re.search(r"node1\s+search\s+elasticsearch\s+passed\s+\S+s\s+\S+s\s+2 indices, 42 documents equal", drill.stdout)
    page = html.read_text()
    assert page.count('td class="bar"') == 3 and "passed" in page
    assert re.search(r"node1\s+postgresql\s+postgresql\s+passed\s+\S+s\s+\S+s\s+%s: 2 tables, 550 rows equal" % db.name, drill.stdout)
    assert "lifeboat_drill" in drill.stdout[drill.stdout.index("CUSTOM STATS") :]
    assert not list(sandboxes.glob("lifeboat-drill-*")), "the sandbox is removed"
    assert secret not in drill.stdout and "AGE-SECRET-KEY" not in drill.stdout
    assert sampler.samples > 0 and sampler.hits == []
    node_dirs = [tmp_path, Path.home() / ".ansible" / "tmp"]
    assert files_containing(node_dirs, [secret], since=started, exclude=[tmp_path / "inventory.yml"]) == []
    assert webhook.requests == [], "a passed drill is not a problem: channels hear it only when they list drill_passed"

    # The sandbox is damaged by after_restore actions (which the drill points at it): one row
    # changed, one file changed. The drill fails naming both; production is untouched.
    profile["components"][0]["after_restore"] = [{"name": "edit", "command": 'echo "listen = 9090" > "$LIFEBOAT_DRILL_ROOT%s/app.conf"' % etc}]
    change = "psql -X -q -d %s -c \"UPDATE entity SET title = 'changed' WHERE id = 7\"" % db.name
    profile["components"][1]["after_restore"] = [{"name": "change a row", "command": change}]
    # The sandbox node's URL reaches the actions; production's index keeps its document.
    delete = 'curl -sf -X DELETE "$LIFEBOAT_DRILL_SEARCH_URL/%s/_doc/3?refresh=true"' % f"{namespace}-stix"
    profile["components"][2]["after_restore"] = [{"name": "delete a document", "command": delete}]
    changed = playbook(tmp_path, "drill.yml", node, profile, **small)
    assert changed.returncode != 0, changed.stdout[-5000:]
    _html, data = report_paths(changed.stdout)
    entries = {e["name"]: e for e in data["nodes"]["node1"]["components"]}
    assert data["verdict"] == "failed"
    assert {n: e["result"] for n, e in entries.items()} == {"config": "failed", "postgresql": "failed", "search": "failed"}
    assert entries["config"]["differences"] == ["%s/app.conf: content or type differs" % etc]
    assert entries["postgresql"]["differences"] == ["%s: table public.entity: row contents differ from the backup (same row count 500)" % db.name]
    assert entries["search"]["differences"] == ["index %s-stix has 29 documents, 30 at backup time" % namespace]
    assert [a["name"] for e in entries.values() for a in e["actions"]] == ["edit", "change a row", "delete a document"]
    assert "drill of node1 failed" in changed.stdout and "public.entity" in changed.stdout and "%s-stix" % namespace in changed.stdout
    after = (snapshot(etc), db.psql("SELECT md5(string_agg(id || title, ',' ORDER BY id)) FROM entity"), doc_counts(es, indices))
    assert after == production
    [alert] = webhook.requests
    event = alert.json()
    assert alert.signature_ok and alert.path == "/drill" and alert.headers["X-Lifeboat-Event"] == "drill_failed"
    assert event["kind"] == "drill_failed" and event["node"] == "node1" and event["severity"] == "error"
    assert event["components"] == {"config": "failed", "postgresql": "failed", "search": "failed"}
    assert "%s-stix has 29 documents" % namespace in event["reason"] and event["details"]["report"].endswith(".html")
    # Only this test's sandboxes: another worker's drill may be running its own at this moment.
    assert not _running(str(sandboxes)), "the drill left its sandbox's servers running"
    assert not list(sandboxes.glob("lifeboat-drill-*"))

    assert not list(sandboxes.iterdir())
