"""The backup role's `archive` component and `when_changed` (issue #16 items 5 and 7), against
the harness's PostgreSQL: a configuration component taken only when a settings table
changed, beside an archive component that moves old audit rows into a signed chain at each
run (docs/table-archive.md, "In the backup role" and "Change-triggered backups")."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ansible_collections.lifeboat.backup.plugins.module_utils import _age
from ansible_collections.lifeboat.backup.plugins.module_utils import _table_segment as fmt
from tests.support.modules import ROOT, run_module, run_playbook
from tests.support.trees import PASSPHRASE

AUDIT_ROWS = 300
YOUNG_ROWS = 20


def _backup(tmp_path, node_vars):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"node1": node_vars}}}))
    text = (ROOT / "playbooks" / "backup.yml").read_text()
    result = run_playbook(text, tmp_path, inventory=str(inventory), env={"ANSIBLE_SHOW_CUSTOM_STATS": "true"}, timeout=300)
    stats = result.stdout[result.stdout.rindex("CUSTOM STATS") :] if "CUSTOM STATS" in result.stdout else ""
    return result, stats


def _node(stats):
    """backup_result of node1 as the run's custom stats report it."""
    found = json.loads(stats[stats.index("{") : stats.rindex("}") + 1])
    return found["lifeboat_backup"]["nodes"]["node1"]


def test_archive_component_and_when_changed_in_the_backup_role(tmp_path, pg_database):
    pg = pg_database.server
    pg_database.psql(
        "CREATE TABLE settings (id int PRIMARY KEY, value text);"
        "INSERT INTO settings VALUES (1, 'a'), (2, 'b');"
        "CREATE TABLE audit (id bigint PRIMARY KEY, created timestamptz NOT NULL, message text);"
        f"INSERT INTO audit SELECT i, now() - interval '100 days' + i * interval '1 second', 'old ' || i FROM generate_series(1, {AUDIT_ROWS}) i;"
        f"INSERT INTO audit SELECT {AUDIT_ROWS} + i, now() - interval '1 day', 'young ' || i FROM generate_series(1, {YOUNG_ROWS}) i;"
    )
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    _identity, recipient = _age.generate_identity()
    conn = {"login_host": pg.host, "port": pg.port, "login_user": pg.user, "login_password": pg.password, "login_db": pg_database.name}
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "app.conf").write_text("listen 8080\n")
    (tmp_path / "dest").mkdir()
    targets = [{"name": "primary", "type": "local", "path": str(tmp_path / "archive")}]
    (tmp_path / "archive").mkdir()
    tables = [{"name": "public.audit", "key": ["id"], "time_column": "created", "older_than": "30 days", "batch_rows": 100}]
    profile = {
        "name": "archive-test",
        "platform": {"name": "demo", "version": "1.0"},
        "components": [
            dict(conn, name="app-config", kind="config", paths=[str(tmp_path / "etc")], when_changed=["public.settings"]),
            dict(conn, name="log-archive", kind="archive", targets=targets, signing_key=pem, recipients=[recipient], tables=tables, checkpoint=True),
        ],
    }
    state_dir = tmp_path / "state"
    node_vars = {
        "ansible_connection": "local",
        "backup_profile": profile,
        "backup_destination": str(tmp_path / "dest"),
        "backup_state_dir": str(state_dir),
        "backup_facts_dir": str(tmp_path / "facts"),
        "backup_passphrase": PASSPHRASE,
        "backup_work_factor": 12,
    }

    # 1: the config is taken (no digest recorded yet), the old audit rows are archived.
    first, stats = _backup(tmp_path, node_vars)
    assert first.returncode == 0, first.stdout[-5000:]
    one = _node(stats)
    assert one["verdict"] == "success" and one["components"] == {"app-config": "success", "log-archive": "success"}, one
    recorded = json.loads((state_dir / "when_changed" / "app-config.json").read_text())
    assert recorded["backup_id"] == one["backup_id"] and len(recorded["digest"]) == 64
    assert int(pg_database.psql("SELECT count(*) FROM audit")) == YOUNG_ROWS

    # 2: nothing changed in settings - the config is not taken, and the summary says so; the
    # archive still runs (nothing left to move). Not partial, not a failure.
    second, stats = _backup(tmp_path, node_vars)
    assert second.returncode == 0, second.stdout[-5000:]
    two = _node(stats)
    assert two["verdict"] == "success" and two["components"] == {"log-archive": "success"}, two
    said = "app-config: unchanged since %s, not taken" % one["backup_id"]
    assert said in two["notes"] and said in second.stdout[second.stdout.index("Backup summary") :]
    assert two["skipped"]["app-config"] == "unchanged since %s, not taken" % one["backup_id"]
    assert json.loads((state_dir / "when_changed" / "app-config.json").read_text())["backup_id"] == one["backup_id"]

    # 3: a row of settings changes - the config is taken again, and its new digest recorded.
    pg_database.psql("UPDATE settings SET value = 'changed' WHERE id = 2")
    third, stats = _backup(tmp_path, node_vars)
    assert third.returncode == 0, third.stdout[-5000:]
    three = _node(stats)
    assert three["components"] == {"app-config": "success", "log-archive": "success"}, three
    assert not [n for n in three["notes"] if "unchanged" in n]
    again = json.loads((state_dir / "when_changed" / "app-config.json").read_text())
    assert again["backup_id"] == three["backup_id"] and again["digest"] != recorded["digest"]

    # The archived rows are in the chain, signed and whole, and the images carry its head.
    images = sorted(str(p) for p in Path(tmp_path / "dest").glob("*.zip"))
    assert len(images) == 3
    verified = run_module(
        "table_archive_verify", **conn, targets=targets, tables=tables, public_keys=[fmt.public_key_text(key)], images=images, passphrase=PASSPHRASE
    )
    assert verified["valid"] is True and verified["problems"] == [], "\n".join(verified["report"])
    (chain,) = verified["chains"]
    assert chain["rows"] == AUDIT_ROWS and chain["signatures_valid"] and chain["chain_valid"]
    assert {head["image"] for head in verified["image_heads"]} == {Path(image).name for image in images}

    # 4: the archive fails (another signing key for its chain) and the unchanged config is
    # not taken: nothing was captured, so the node fails, with the archive's reason and the
    # when_changed note in the summary.
    other = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    profile["components"][1]["signing_key"] = other.decode()
    fourth, stats = _backup(tmp_path, node_vars)
    assert fourth.returncode != 0, fourth.stdout[-5000:]
    four = _node(stats)
    assert four["verdict"] == "failed" and four["failures"] == {"log-archive": four["failures"]["log-archive"]}, four
    assert "signing_key" in four["failures"]["log-archive"] and "log-archive" in four["reason"], four
    assert "app-config: unchanged since %s, not taken" % three["backup_id"] in four["notes"]
    table = fourth.stdout[fourth.stdout.index("Backup summary") :]
    assert "log-archive: chain" in table and "app-config: unchanged since" in table
    assert other.decode() not in fourth.stdout and pem not in fourth.stdout
