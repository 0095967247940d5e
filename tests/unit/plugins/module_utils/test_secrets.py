"""Secrets bundles: the sources' shapes, the document, unlocking, the reader, one export run.

These run the export in-process on files, a command and variables (PostgreSQL and the
stock tools are in tests/integration/test_secrets.py)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _secrets, _secrets_export, _secrets_sources, _shamir, _storage
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._storage_backend import StorageError
from ansible_collections.lifeboat.backup.plugins.module_utils._storage_local import LocalBackend

ROOT = Path(__file__).resolve().parents[4]
READER = ROOT / "roles" / "secrets" / "files" / "lifeboat-secrets-reader.py"
PASSPHRASE = "correct horse battery staple"
SECRETS = ["pw-json-1", "tok env 2", "cmd-secret-3", "var-secret-4"]


# ---- sources -----------------------------------------------------------------------------


def test_document_shapes_and_aliases():
    listed = _secrets_sources.entries_from_document("s", [{"title": "a", "password": "p", "user": "u", "hostname": "h", "port": 5432}])
    assert listed == [{"name": "a", "secret": "p", "username": "u", "host": "h", "source": "s", "fields": {"port": "5432"}}]
    mapping = _secrets_sources.entries_from_document("s", {"a": "p1", "b": {"value": "p2", "notes": "n"}})
    assert mapping == [{"name": "a", "secret": "p1", "source": "s"}, {"name": "b", "secret": "p2", "notes": "n", "source": "s"}]
    nested = _secrets_sources.entries_from_document("s", {"data": {"data": {"k": 7}}}, root="data.data")
    assert nested == [{"name": "k", "secret": "7", "source": "s"}]
    binary = _secrets_sources.make_entry("s", "blob", {"secret": b"\x00\xff"})
    assert binary["encoding"] == "base64" and _secrets.entry_value(binary) == b"\x00\xff"


@pytest.mark.parametrize(
    "document,root,message",
    [
        ([{"name": "a", "user": "u"}], None, "entry 'a' has no secret"),
        ([{"password": "VALUE"}], None, "item 1 of the list has no name"),
        (["VALUE"], None, "item 1 of the list is not a mapping"),
        ({"a": ["VALUE"]}, None, "'a' is neither a secret nor a mapping"),
        ("VALUE", None, "expected a list of entries"),
        ({"data": {}}, "data.x", "no key 'x'"),
    ],
)
def test_document_errors_name_the_place_never_the_value(document, root, message):
    with pytest.raises(_secrets_sources.SourceError, match=message) as info:
        _secrets_sources.entries_from_document("src", document, root)
    assert "VALUE" not in str(info.value)


def test_env_files():
    text = '# comment\nexport A=1\nB=\'two words\'\nC="q\\"uote\\nnl"\nD=plain # trailing\n\nE=\n'
    assert _secrets_sources.parse_env("s", text) == {"A": "1", "B": "two words", "C": 'q"uote\nnl', "D": "plain", "E": ""}
    with pytest.raises(_secrets_sources.SourceError, match="line 1 is not KEY=value"):
        _secrets_sources.parse_env("s", "NOEQUALS\n")
    with pytest.raises(_secrets_sources.SourceError, match="line 1: unterminated"):
        _secrets_sources.parse_env("s", "A='VALUE\n")


def test_file_and_command_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": "VALUE",')
    with pytest.raises(_secrets_sources.SourceError, match=r"bad.json is not valid JSON \(line 1") as info:
        _secrets_sources.read_files("s", {"path": str(bad)})
    assert "VALUE" not in str(info.value)
    (tmp_path / "x.unknown").write_text("{}")
    with pytest.raises(_secrets_sources.SourceError, match="cannot tell the format"):
        _secrets_sources.read_files("s", {"path": str(tmp_path / "x.unknown")})
    with pytest.raises(_secrets_sources.SourceError, match="no file matches"):
        _secrets_sources.read_files("s", {"path": str(tmp_path / "*.none")})
    script = tmp_path / "cli.sh"
    script.write_text("#!/bin/sh\necho VALUE-on-stdout\necho 'permission denied' >&2\nexit 3\n")
    script.chmod(0o755)
    with pytest.raises(_secrets_sources.SourceError, match=r"command cli.sh failed \(exited 3: permission denied\)") as info:
        _secrets_sources.run_command("s", {"argv": [str(script)]})
    assert "VALUE" not in str(info.value)
    script.write_text("#!/bin/sh\necho not json VALUE\n")
    with pytest.raises(_secrets_sources.SourceError, match="did not print JSON") as info:
        _secrets_sources.run_command("s", {"argv": [str(script)]})
    assert "VALUE" not in str(info.value)


def test_empty_and_duplicate_sources(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(_secrets_sources.SourceError, match="yielded no credential; if that is expected set allow_empty"):
        _secrets_sources.collect([{"name": "e", "file": {"path": str(empty)}}])
    assert _secrets_sources.collect([{"name": "e", "allow_empty": True, "file": {"path": str(empty)}}])[0][0]["entries"] == 0
    with pytest.raises(_secrets_sources.SourceError, match="used twice"):
        _secrets_sources.collect([{"name": "v", "variables": {"a": "b"}}, {"name": "v", "variables": {"a": "b"}}])


# ---- an export, and reading it back ------------------------------------------------------------


def officer_keys():
    keys = [_age.generate_identity() for _officer in range(3)]
    return [k[0] for k in keys], [k[1] for k in keys]


def make_sources(tmp_path):
    (tmp_path / "creds.json").write_text(json.dumps([{"name": "db", "username": "postgres", "password": SECRETS[0]}]))
    (tmp_path / "app.env").write_text('TOKEN="%s"\n' % SECRETS[1])
    (tmp_path / "site.key").write_bytes(b"-----BEGIN KEY-----\n\xff\xfebinary\n")
    cli = tmp_path / "cli.sh"
    cli.write_text('#!/bin/sh\nprintf \'{"kv": {"password": "%s", "user": "svc"}}\' "$CLI_TOKEN"\n')
    cli.chmod(0o755)
    return [
        {"name": "json", "file": {"path": str(tmp_path / "creds.json")}},
        {"name": "env", "file": {"path": str(tmp_path / "app.env")}},
        {"name": "tls", "file": {"path": str(tmp_path / "site.key"), "format": "raw"}},
        {"name": "cli", "command": {"argv": [str(cli)], "environment": {"CLI_TOKEN": SECRETS[2]}}},
        {"name": "vars", "variables": {"backup": SECRETS[3]}},
    ]


def request(tmp_path, source_list, officers, **overrides):
    params = dict(
        name="vault",
        sources=source_list,
        destination=str(tmp_path / "out"),
        passphrase=PASSPHRASE,
        recipients=[],
        custody={
            "threshold": 2,
            "rotate": False,
            "officers": [
                {"name": "alice", "recipient": officers[0]},
                {"name": "bob", "recipient": officers[1]},
                {"name": "carol", "share_file": str(tmp_path / "carol.share")},
            ],
        },
        max_age="30d",
        stale_after="1d",
        force=False,
        state_dir=str(tmp_path / "state"),
        node="db1",
        work_factor=10,
        lock_timeout=5,
    )
    params.update(overrides)
    return _secrets_export.validate(params, "host")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("secrets")
    identities, recipients = officer_keys()
    for name, identity in zip(("alice", "bob", "carol"), identities):
        (tmp_path / ("%s.key" % name)).write_text(identity + "\n")
    sources = make_sources(tmp_path)
    warnings = []
    result = _secrets_export.run(request(tmp_path, sources, recipients), False, warnings.append)
    return tmp_path, sources, recipients, result, warnings


def run_reader(*args, stdin=""):
    out = io.StringIO()
    code = _secrets.reader_main([str(a) for a in args], stdin=io.StringIO(stdin), stdout=out)
    return code, out.getvalue()


def test_first_export_writes_a_complete_set(exported):
    tmp_path, _sources, _recipients, result, warnings = exported
    assert result["exported"] and result["changed"] and result["reason"] == "first export"
    assert result["entry_count"] == 5 and [s["entries"] for s in result["sources"]] == [1, 1, 1, 1, 1]
    stem = result["stem"]
    assert sorted(result["files"]) == sorted([stem + ".key.age", stem + ".secrets.age", stem + ".share-1-alice.age", stem + ".share-2-bob.age", stem + ".json"])
    assert result["files"][-1] == stem + ".json"
    assert sorted(os.listdir(tmp_path / "out")) == sorted(result["files"])
    assert result["custody"]["rotated"] and result["custody"]["plaintext_share_files"] == [str(tmp_path / "carol.share")]
    assert any("plaintext" in w for w in warnings)
    index = json.loads((tmp_path / "out" / (stem + ".json")).read_text())
    assert index["unlock"]["custody"]["token"] == "vault.%s.2of3" % result["custody"]["id"]
    assert oct((tmp_path / "carol.share").stat().st_mode & 0o777) == "0o600"


def test_no_value_outside_the_encrypted_files(exported):
    tmp_path, _sources, _recipients, result, _warnings = exported
    for path in [*Path(tmp_path / "state").rglob("*"), *Path(tmp_path / "out").glob("*.json")]:
        if path.is_file():
            data = path.read_bytes()
            assert not any(s.encode() in data for s in SECRETS), path
    assert not any(s in json.dumps(result) for s in SECRETS)
    audit = [json.loads(line) for line in (tmp_path / "state" / "vault" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["event"] == "exported" and audit[-1]["entry_count"] == 5 and audit[-1]["content_digest"].startswith("hmac-sha256:")


def test_reader_with_the_passphrase(exported, tmp_path):
    out_dir = exported[0] / "out"
    (tmp_path / "pass").write_text(PASSPHRASE + "\n")
    code, text = run_reader(out_dir, "--passphrase-file", tmp_path / "pass", "--json")
    assert code == 0
    doc = json.loads(text)
    assert [_secrets.entry_value(e) for e in doc["entries"]] == [
        SECRETS[0],
        SECRETS[1],
        b"-----BEGIN KEY-----\n\xff\xfebinary\n",
        SECRETS[2],
        SECRETS[3],
    ]
    assert doc["entries"][3]["username"] == "svc" and doc["entries"][2]["fields"]["mode"] == "0644"
    assert run_reader(out_dir, "--passphrase-file", "-", "--name", "TOKEN", "--secret", stdin=PASSPHRASE + "\n") == (0, SECRETS[1] + "\n")


def test_reader_with_two_of_three_shares(exported):
    tmp_path, _sources, _recipients, result, _warnings = exported
    stem = tmp_path / "out" / result["stem"]
    for shares in (["1-alice", "2-bob"], ["2-bob", None], ["1-alice", None]):
        args = []
        for share in shares:
            args += ["--share", "%s.share-%s.age" % (stem, share) if share else tmp_path / "carol.share"]
        args += ["-i", tmp_path / "alice.key", "-i", tmp_path / "bob.key"]
        code, text = run_reader("%s.json" % stem, *args, "--check")
        assert code == 0, text
        assert text.startswith("OK export %s" % result["export_id"]) and "5 entries" in text
        assert not any(s in text for s in SECRETS)


def test_reader_refusals(exported, tmp_path, capsys):
    base, _sources, recipients, result, _warnings = exported
    stem = base / "out" / result["stem"]
    (tmp_path / "wrong").write_text("not the passphrase\n")
    assert run_reader(Path("%s.json" % stem), "--passphrase-file", tmp_path / "wrong")[0] == 1
    assert "wrong passphrase" in capsys.readouterr().err
    assert run_reader(Path("%s.json" % stem), "--share", "%s.share-1-alice.age" % stem, "-i", base / "alice.key")[0] == 1
    assert "too few shares: custody %s needs 2 of its 3 shares, 1 given" % result["custody"]["id"] in capsys.readouterr().err
    assert run_reader(Path("%s.json" % stem), "-i", base / "alice.key")[0] == 1
    assert "an officer's key opens that officer's share, not the bundle" in capsys.readouterr().err
    # A share of another custody: a second bundle name gets its own custody key.
    other = _secrets_export.run(request(base, [{"name": "v", "variables": {"x": "y"}}], recipients, name="other"), False, lambda _m: None)
    other_share = base / "out" / ("%s.share-2-bob.age" % other["stem"])
    keys = ["-i", base / "alice.key", "-i", base / "bob.key"]
    code, _output = run_reader(Path("%s.json" % stem), "--share", "%s.share-1-alice.age" % stem, "--share", other_share, *keys)
    assert code == 1
    err = capsys.readouterr().err
    assert "belongs to custody %s" % other["custody"]["id"] in err and "cannot be combined" in err
    assert run_reader(Path("%s.json" % stem), "--passphrase-file", "-", "--name", "nope", stdin=PASSPHRASE)[0] == 3


def test_mistyped_share_is_refused():
    identity, _recipient = _age.generate_identity()
    lines = _shamir.split(identity.encode(), 2, 3, token="vault.0123abcd.2of3")
    value = lines[1][-10:]
    damaged = lines[1][:-10] + ("0" if value[0] != "0" else "1") + value[1:]
    with pytest.raises(_secrets.BundleError, match="do not combine into a key"):
        _secrets.identities_from_shares([("a", lines[0]), ("b", damaged)])
    with pytest.raises(_secrets.BundleError, match="same share was given twice"):
        _secrets.identities_from_shares([("a", lines[0]), ("b", lines[0])])
    with pytest.raises(_secrets.BundleError, match="no lifeboat custody token"):
        _secrets.identities_from_shares([("a", lines[0].split("-", 1)[1]), ("b", lines[1])])
    assert _secrets.identities_from_shares([("a", lines[0]), ("c", lines[2])])
    # One share more than needed outvotes a damaged one.
    keys = _secrets.identities_from_shares([("a", lines[0]), ("b", damaged), ("c", lines[2])])
    assert _age.recipient_of(keys[0]) == _age.recipient_of(_age.parse_identities(identity)[0])


def test_damaged_bundle_is_refused(exported, tmp_path, capsys):
    base, _sources, _recipients, result, _warnings = exported
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in result["files"]:
        (copy / name).write_bytes((base / "out" / name).read_bytes())
    bundle = copy / (result["stem"] + ".secrets.age")
    data = bytearray(bundle.read_bytes())
    data[-40] ^= 0x01
    bundle.write_bytes(bytes(data))
    (tmp_path / "pass").write_text(PASSPHRASE)
    assert run_reader(copy, "--check-stored")[0] == 1
    assert "SHA-256 does not match the index" in capsys.readouterr().err
    assert run_reader(copy, "--passphrase-file", tmp_path / "pass", "--check")[0] == 1
    assert "is damaged" in capsys.readouterr().err
    # Without the index, age's own authentication still refuses it.
    (copy / (result["stem"] + ".json")).unlink()
    assert run_reader(bundle, "--passphrase-file", tmp_path / "pass", "--check")[0] == 1
    assert "failed authentication" in capsys.readouterr().err


def test_unchanged_sources_export_nothing_then_changes_do(exported):
    tmp_path, sources, recipients, first, _warnings = exported
    again = _secrets_export.run(request(tmp_path, sources, recipients), False, lambda _m: None)
    assert not again["changed"] and not again["exported"] and again["reason"] == "unchanged"
    assert again["content_digest"] == first["content_digest"] and "files" not in again
    assert again["custody"]["id"] == first["custody"]["id"] and not again["custody"]["rotated"]
    assert again["last_export"]["export_id"] == first["export_id"]
    checked = _secrets_export.run(request(tmp_path, sources, recipients), True, lambda _m: None)
    assert not checked["changed"]
    changed_sources = [dict(s) for s in sources]
    changed_sources[4] = {"name": "vars", "variables": {"backup": "rotated-value"}}
    assert _secrets_export.run(request(tmp_path, changed_sources, recipients), True, lambda _m: None)["reason"] == "content changed"
    later = _secrets_export.run(request(tmp_path, changed_sources, recipients), False, lambda _m: None)
    assert later["exported"] and later["reason"] == "content changed" and later["custody"]["id"] == first["custody"]["id"]
    forced = _secrets_export.run(request(tmp_path, changed_sources, recipients, recipients=[recipients[2]]), False, lambda _m: None)
    assert forced["reason"] == "encryption changed"
    os.unlink(os.path.join(tmp_path, "out", forced["stem"] + ".secrets.age"))
    redo = _secrets_export.run(request(tmp_path, changed_sources, recipients, recipients=[recipients[2]]), False, lambda _m: None)
    assert redo["reason"] == "the last bundle set is missing from destination"


def test_custody_rotates_when_officers_change(tmp_path):
    _identities, recipients = officer_keys()
    sources = [{"name": "v", "variables": {"a": "b"}}]
    first = _secrets_export.run(request(tmp_path, sources, recipients, passphrase=None), False, lambda _m: None)
    fewer = request(tmp_path, sources, recipients, passphrase=None)
    fewer["custody"] = dict(fewer["custody"], officers=fewer["custody"]["officers"][:2])
    second = _secrets_export.run(fewer, False, lambda _m: None)
    assert second["custody"]["rotated"] and second["custody"]["id"] != first["custody"]["id"]
    assert second["reason"] == "encryption changed"
    index = json.loads((tmp_path / "out" / (second["stem"] + ".json")).read_text())
    assert index["unlock"]["passphrase"] is None and index["unlock"]["custody"]["token"].endswith(".2of2")


def test_a_failing_source_writes_nothing_and_is_recorded(tmp_path):
    _identities, recipients = officer_keys()
    req = request(tmp_path, [{"name": "gone", "file": {"path": str(tmp_path / "missing.json")}}], recipients)
    with pytest.raises(_secrets_sources.SourceError, match="source gone: cannot read .*missing.json: No such file"):
        _secrets_export.run(req, False, lambda _m: None)
    _secrets_export.record_failure(req, "source gone: cannot read")
    assert not (tmp_path / "out").exists()
    state = json.loads((tmp_path / "state" / "vault" / "state.json").read_text())
    assert state["last_failure"]["reason"].startswith("source gone")
    assert _secrets_export.failure_result(req)["stale"] is True


def test_a_failed_write_leaves_no_set(tmp_path, monkeypatch):
    _identities, recipients = officer_keys()
    req = request(tmp_path, [{"name": "v", "variables": {"a": "VALUE"}}], recipients)
    real = LocalBackend.put

    def full_disk(self, name, source, size=None, progress=None):
        if name.endswith(".share-1-alice.age"):
            raise StorageError("writing %s on %s failed: No space left on device" % (name, self.label), kind="full")
        return real(self, name, source, size, progress)

    monkeypatch.setattr(LocalBackend, "put", full_disk)
    with pytest.raises(_secrets_export.ExportError, match="No space left on device; nothing of this export was kept there"):
        _secrets_export.run(req, False, lambda _m: None)
    assert os.listdir(tmp_path / "out") == []
    state = json.loads((tmp_path / "state" / "vault" / "state.json").read_text())
    assert "last_export" not in state and "last_success" not in state


@pytest.mark.parametrize(
    "overrides,option,message",
    [
        ({"name": "bad name"}, "name", "letters, digits"),
        ({"passphrase": "short"}, "passphrase", "at least 8"),
        ({"passphrase": None, "custody": None}, "passphrase", "always encrypted"),
        ({"recipients": ["age1nope"]}, "recipients", "not a valid age X25519 recipient"),
        ({"custody": {"threshold": 3, "officers": [{"name": "a", "share_file": "/x"}, {"name": "b", "share_file": "/y"}]}}, "custody.threshold", "between 2"),
        ({"custody": {"threshold": 2, "officers": [{"name": "a", "share_file": "/x"}, {"name": "b"}]}}, "custody.officers", "officer b needs a recipient"),
        ({"max_age": "soon"}, "max_age", "not a duration"),
        ({"sources": [{"name": "x", "variables": None, "file": None}]}, "sources", "exactly one of"),
    ],
)
def test_options_are_checked(tmp_path, overrides, option, message):
    with pytest.raises(OptionError, match=message) as info:
        request(tmp_path, [{"name": "v", "variables": {"a": "b"}}], officer_keys()[1], **overrides)
    assert info.value.option == option


# ---- the standalone reader ----------------------------------------------------------------------


def test_reader_runs_alone(exported, tmp_path):
    """python -I: no PYTHONPATH, no collection; only the standard library and cryptography."""
    base, _sources, _recipients, result, _warnings = exported
    env = {"PATH": os.environ["PATH"]}
    proc = subprocess.run(
        [sys.executable, "-I", str(READER), str(base / "out" / (result["stem"] + ".json")), "--passphrase-file", "-", "--name", "db", "--secret"],
        input=PASSPHRASE + "\n",
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),
        check=False,
    )
    assert (proc.returncode, proc.stdout) == (0, SECRETS[0] + "\n"), proc.stderr
    imports = [line for line in READER.read_text().splitlines() if line.startswith(("import ", "from "))]
    assert not [line for line in imports if "ansible" in line], imports


# ---- locations: targets, retention, the reader copy ------------------------------------------


def local_target(path, name=None):
    target = {key: spec.get("default") for key, spec in _storage.TARGET_OPTIONS.items()}
    target.update(type="local", path=str(path), name=name)
    return target


def sets_in(directory, name="vault"):
    return sorted(p.name[: -len(".json")] for p in Path(directory).glob("%s-*.json" % name))


def test_targets_retention_and_the_reader_copy(tmp_path):
    _identities, recipients = officer_keys()
    (tmp_path / "site-b").mkdir()
    extra = dict(targets=[local_target(tmp_path / "site-b", "site-b")], retention={"keep_last": 2}, reader=str(READER))
    stems = []
    for value in ("one", "two", "three"):
        req = request(tmp_path, [{"name": "v", "variables": {"a": value}}], recipients, **extra)
        result = _secrets_export.run(req, False, lambda _m: None)
        assert result["exported"] and [o["written"] for o in result["locations"]] == [True, True]
        stems.append(result["stem"])
    assert result["locations"][1]["label"] == "site-b"
    assert [r["stem"] for r in result["locations"][0]["removed"]] == [stems[0]]
    assert "keep_last 2" in result["locations"][0]["removed"][0]["rule"]
    for directory in (tmp_path / "out", tmp_path / "site-b"):
        assert sets_in(directory) == stems[1:]
        assert not [p for p in Path(directory).iterdir() if p.name.startswith(stems[0])]
        assert (directory / _secrets.READER_NAME).read_bytes() == READER.read_bytes()
    # Another node's sets of the same name on the shared target are never touched.
    other = request(tmp_path, [{"name": "v", "variables": {"a": "x"}}], recipients, node="db2", state_dir=str(tmp_path / "state2"), **extra)
    other["destination"] = None
    other_stem = _secrets_export.run(other, False, lambda _m: None)["stem"]
    (tmp_path / "site-b" / _secrets.READER_NAME).write_text("# an old reader\n")
    for value in ("four", "five"):
        req = request(tmp_path, [{"name": "v", "variables": {"a": value}}], recipients, **extra)
        result = _secrets_export.run(req, False, lambda _m: None)
    assert other_stem in sets_in(tmp_path / "site-b") and len(sets_in(tmp_path / "site-b")) == 3
    assert result["locations"][1].get("reader") is None  # already replaced by the run before
    assert (tmp_path / "site-b" / _secrets.READER_NAME).read_bytes() == READER.read_bytes()
    # Check mode names what the policy would remove among the sets there, and removes nothing.
    tighter = {**extra, "retention": {"keep_last": 1}}
    checked = _secrets_export.run(request(tmp_path, [{"name": "v", "variables": {"a": "six"}}], recipients, **tighter), True, lambda _m: None)
    assert [len(o["removed"]) for o in checked["locations"]] == [1, 1] and len(sets_in(tmp_path / "out")) == 2


def test_a_lost_target_fails_the_run_and_the_next_run_exports_again(tmp_path):
    _identities, recipients = officer_keys()
    extra = dict(targets=[local_target(tmp_path / "lost", "site-b")])
    req = request(tmp_path, [{"name": "v", "variables": {"a": "b"}}], recipients, **extra)
    with pytest.raises(_secrets_export.ExportError, match="could not be written to targets\\[0\\]") as info:
        _secrets_export.run(req, False, lambda _m: None)
    assert info.value.changed and "written to destination" in info.value.done[0]
    assert info.value.result["stale"] is True and info.value.result["exported"] is True
    assert len(sets_in(tmp_path / "out")) == 1
    (tmp_path / "lost").mkdir()
    again = _secrets_export.run(request(tmp_path, [{"name": "v", "variables": {"a": "b"}}], recipients, **extra), False, lambda _m: None)
    assert again["reason"] == "the last bundle set is missing from targets[0]"
    assert len(sets_in(tmp_path / "lost")) == 1 and again["stale"] is False
