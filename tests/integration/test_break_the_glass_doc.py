"""docs/break-the-glass.md, followed literally with the stock binaries (age, ssss-combine, jq).

The page's ```sh blocks run in order in one bash session under a terminal; the master
passphrase is typed when age asks for it. The only changes to the page are the values of
its variables (BUNDLES, WORK, the officers' and the reader's key files, the entry names).
The three ways to unlock run one after the other on the same bundle, so each must work."""

from __future__ import annotations

import json
import re
import secrets
import shutil
from pathlib import Path

from ansible_collections.lifeboat.backup.plugins.module_utils import _age
from tests.support.modules import run_module
from tests.support.terminal import run_in_terminal

DOC = Path(__file__).resolve().parents[2] / "docs" / "break-the-glass.md"
PASSPHRASE = "break the glass " + secrets.token_hex(6)


def doc_blocks():
    return re.findall(r"^```sh\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)


def set_vars(block, values):
    for name, value in values.items():
        block = re.sub(r"^%s=\S+" % name, "%s=%s" % (name, value), block, flags=re.M)
    return block


def make_bundles(tmp_path, name, keys, sources):
    officers = [
        {"name": "alice", "recipient": keys["alice"][1]},
        {"name": "bob", "recipient": keys["bob"][1]},
        {"name": "carol", "share_file": str(tmp_path / ("carol-%s.share" % name))},
    ]
    result = run_module(
        "secrets_export",
        name=name,
        sources=sources,
        destination=str(tmp_path / "bundles"),
        state_dir=str(tmp_path / "state"),
        passphrase=PASSPHRASE,
        recipients=[keys["me"][1]],
        custody={"threshold": 2, "officers": officers},
        work_factor=12,
    )
    assert not result.failed, result
    return result


def setup(tmp_path):
    keys = {who: _age.generate_identity() for who in ("alice", "bob", "me")}
    for who, (identity, _recipient) in keys.items():
        (tmp_path / ("%s.key" % who)).write_text(identity + "\n")
    site_key = tmp_path / "site.key"
    site_key.write_text("-----BEGIN PRIVATE KEY-----\n%s\n-----END PRIVATE KEY-----\n" % secrets.token_hex(24))
    db_secret = "pw-%s 'q\" $x" % secrets.token_hex(8)
    sources = [
        {"name": "vars", "variables": [{"name": "db-superuser", "username": "postgres", "secret": db_secret, "host": "db1"}]},
        {"name": "tls", "file": {"path": str(site_key), "format": "raw"}},
    ]
    result = make_bundles(tmp_path, "vault", keys, sources)
    values = {
        "BUNDLES": tmp_path / "bundles",
        "WORK": tmp_path / "work",
        "KEY1": tmp_path / "alice.key",
        "KEY2": tmp_path / "bob.key",
        "MYKEY": tmp_path / "me.key",
        "NAME": "db-superuser",
        "FILE": site_key,
    }
    return keys, sources, result, values, db_secret, site_key


def test_the_page_as_written(tmp_path):
    _keys, _sources, _result, values, db_secret, site_key = setup(tmp_path)
    blocks = [set_vars(block, values) for block in doc_blocks()]
    assert len(blocks) >= 12, "the page lost code blocks"
    assert blocks[0].startswith("BUNDLES=") and "\nWORK=" in blocks[0]
    *steps, cleanup = blocks
    assert cleanup.startswith("unset BUNDLE")
    check = '\ncmp restored.key "%s" && echo "RESTORED FILE EQUAL"\n' % site_key

    status, output = run_in_terminal("\n".join(steps) + check, PASSPHRASE)
    assert status == 0, output[-4000:]
    assert output.lower().count("enter passphrase") == 1
    assert ".secrets.age: OK" in output
    assert "OK the shares give the custody key" in output and "REFUSED" not in output
    assert db_secret in output and json.dumps(db_secret) in output, output[-3000:]  # alone, then in the entry's JSON
    assert "RESTORED FILE EQUAL" in output

    status, output = run_in_terminal("\n".join([blocks[0], cleanup]), PASSPHRASE)
    assert status == 0, output
    assert not values["WORK"].exists()


def test_the_page_refuses_a_share_of_another_bundle_and_a_damaged_bundle(tmp_path):
    keys, sources, result, values, _db_secret, _site_key = setup(tmp_path)
    other = make_bundles(tmp_path, "other", keys, sources)
    # The operator picked up bob's share of the other bundle by mistake.
    bundles = Path(values["BUNDLES"])
    own_share = bundles / ("%s.share-2-bob.age" % result["stem"])
    own_share.unlink()
    shutil.copy(bundles / ("%s.share-2-bob.age" % other["stem"]), own_share)
    for name in other["files"]:
        (bundles / name).unlink()
    blocks = [set_vars(block, values) for block in doc_blocks()]
    opening = [b for b in blocks if b.startswith(("BUNDLES=", "mkdir -p"))]
    custody = [b for b in blocks if ".unlock.custody" in b or b.startswith("KEY1=") or "ssss-combine" in b]
    status, output = run_in_terminal("\n".join(opening + custody), PASSPHRASE)
    assert status != 0
    token = json.loads((bundles / ("%s.json" % result["stem"])).read_text())["unlock"]["custody"]["token"]
    assert "REFUSED: share 2 is of custody other.%s.2of3, not of this bundle (%s)" % (other["custody"]["id"], token) in output.replace("\r", "")
    assert "OK the shares give" not in output

    bundle = bundles / ("%s.secrets.age" % result["stem"])
    data = bytearray(bundle.read_bytes())
    data[-100] ^= 0x01
    bundle.write_bytes(bytes(data))
    integrity = [b for b in blocks if "sha256sum -c" in b]
    status, output = run_in_terminal("\n".join(opening + integrity), PASSPHRASE)
    assert status != 0 and "FAILED" in output
