"""Backup image and configuration archive, end to end through the modules (issue 3).

Each module runs as its own process, as on a managed node. The stock tools (unzip, age,
zstd, tar) are the reference for what an operator can recover by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _age
from tests.support.images import flip_byte
from tests.support.modules import run_module
from tests.support.trees import PASSPHRASE, make_config_tree, snapshot


@pytest.fixture
def place(tmp_path):
    """A destination, a state dir and a source tree."""
    (tmp_path / "dest").mkdir()
    source = make_config_tree(tmp_path / "src")
    return {"dest": str(tmp_path / "dest"), "state": str(tmp_path / "state"), "src": source, "tmp": tmp_path, "facts": str(tmp_path / "facts")}


def start(place, **options):
    options.setdefault("passphrase", PASSPHRASE)
    options.setdefault("work_factor", 12)
    options.setdefault("facts_dir", place.get("facts", ""))
    result = run_module("backup_session", state="started", destination=place["dest"], state_dir=place["state"], node="node1", **options)
    assert not result.failed, result
    return result["session"]["work_dir"]


def seal(work_dir, **options):
    return run_module("backup_session", state="sealed", session=work_dir, **options)


def backup(place, paths=None, **options):
    work = start(place, **options)
    archived = run_module("config_archive", session=work, paths=paths or [str(place["src"])], exclude=["*.swp"])
    assert not archived.failed, archived
    sealed = seal(work)
    assert not sealed.failed, sealed
    return sealed


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_round_trip_preserves_everything(place):
    sealed = backup(place)
    assert sealed["verdict"] == "success" and sealed["changed"]
    image = sealed["image"]
    assert os.path.basename(image).endswith("-node1.zip")
    assert os.stat(image).st_mode & 0o077 == 0
    assert not os.listdir(os.path.join(place["dest"], ".lifeboat-work"))

    info = run_module("image_info", image=image)
    assert not info.failed and not info["changed"]
    assert info["components"]["config"]["status"] == "success"
    assert info["passphrase_protected"] and info["encrypted"]
    assert "hunter2" not in json.dumps(info["manifest"])

    for level in ("checksum", "authenticate", "full"):
        verified = run_module("image_verify", image=image, level=level, passphrase=PASSPHRASE if level != "checksum" else None)
        assert verified["valid"] and not verified["changed"], verified

    # The 0.1.0 name of the option still works, with a deprecation (removed in 0.3.0).
    for module in ("image_info", "image_verify"):
        old = run_module(module, path=image)
        assert not old.failed, old
        assert ["Alias 'path' is deprecated" in json.dumps(d) and "0.3.0" in json.dumps(d) for d in old["deprecations"]] == [True]

    root = place["tmp"] / "restore"
    restored = run_module("config_restore", image=image, passphrase=PASSPHRASE, root=str(root))
    assert not restored.failed and restored["changed"], restored
    expected = {k: v for k, v in snapshot(place["src"]).items() if not k.endswith(".swp")}
    assert snapshot(root / str(place["src"]).lstrip("/"), relative_to=root / str(place["src"]).lstrip("/")) == expected

    again = run_module("config_restore", image=image, passphrase=PASSPHRASE, root=str(root))
    assert not again.failed and not again["changed"] and again["created"] == [] and again["updated"] == []


def test_restore_in_place_selected_paths_with_check_and_diff(place):
    image = backup(place)["image"]
    settings = place["src"] / "platform_settings.py"
    settings.write_text("tampered\n")
    os.chmod(place["src"] / "conf.d" / "name with spaces.conf", 0o666)
    (place["src"] / "conf.d" / "10-listen.conf").unlink()

    planned = run_module("config_restore", image=image, passphrase=PASSPHRASE, paths=[str(place["src"])], check=True, diff=True)
    assert planned["changed"] and planned["updated"] == [str(settings)]
    assert planned["created"] == [str(place["src"] / "conf.d" / "10-listen.conf")]
    assert planned["metadata_changed"] == [str(place["src"] / "conf.d" / "name with spaces.conf")]
    assert "platform_settings.py" in planned["diff"]["before"] and "hunter2" not in json.dumps(planned["diff"])
    assert settings.read_text() == "tampered\n"  # check mode wrote nothing

    only = run_module("config_restore", image=image, passphrase=PASSPHRASE, paths=[str(settings)])
    assert only["updated"] == [str(settings)] and settings.read_text().startswith("SECRET_KEY")
    assert not (place["src"] / "conf.d" / "10-listen.conf").exists()
    assert int(settings.stat().st_mtime) == 1_600_000_000

    missing = str(place["src"] / "no-such.conf")
    nothing = run_module("config_restore", image=image, passphrase=PASSPHRASE, paths=[missing], check=True)
    assert nothing.failed and "paths: nothing in component config matches %s" % missing in nothing["msg"], nothing


def test_hard_links_come_back_linked(place):
    """#18.15: names of one file are restored as names of one file, whole or selected."""
    src = place["src"]
    (src / "links").mkdir()
    shared = src / "links" / "shared.conf"
    shared.write_text("one file, three names\n")
    os.link(shared, src / "links" / "alias.conf")
    os.link(shared, src / "conf.d" / "alias.conf")
    names = ["conf.d/alias.conf", "links/alias.conf", "links/shared.conf"]

    work = start(place)
    planned = run_module("config_archive", session=work, paths=[str(src)], exclude=["*.swp"], check=True)
    archived = run_module("config_archive", session=work, paths=[str(src)], exclude=["*.swp"])
    assert planned["hardlink_count"] == archived["hardlink_count"] == 2, (planned, archived)
    assert planned["file_count"] == archived["file_count"] and planned["total_bytes"] == archived["total_bytes"]
    image = seal(work)["image"]

    def inodes(root):
        return {os.stat(root / str(src).lstrip("/") / n).st_ino for n in names}

    root = place["tmp"] / "restore"
    restored = run_module("config_restore", image=image, passphrase=PASSPHRASE, root=str(root))
    assert not restored.failed, restored
    assert len(inodes(root)) == 1 and os.stat(root / str(shared).lstrip("/")).st_nlink == 3
    assert (root / str(src).lstrip("/") / "conf.d" / "alias.conf").read_text() == "one file, three names\n"
    expected = {k: v for k, v in snapshot(src).items() if not k.endswith(".swp")}
    assert snapshot(root / str(src).lstrip("/"), relative_to=root / str(src).lstrip("/")) == expected
    again = run_module("config_restore", image=image, passphrase=PASSPHRASE, root=str(root))
    assert not again.failed and not again["changed"], again

    # A name made a separate file again on disk is linked back; the others are left as they are.
    broken = root / str(src).lstrip("/") / "links" / "alias.conf"
    broken.unlink()
    broken.write_text("one file, three names\n")
    relinked = run_module("config_restore", image=image, passphrase=PASSPHRASE, root=str(root))
    assert relinked["updated"] == [str(src / "links" / "alias.conf")], relinked
    assert len(inodes(root)) == 1

    # Selecting one name restores the file's first name with it: the content travels there.
    fresh = place["tmp"] / "fresh"
    only = run_module("config_restore", image=image, passphrase=PASSPHRASE, root=str(fresh), paths=[str(src / "links" / "alias.conf")])
    assert not only.failed, only
    # (conf.d/alias.conf is the first name: the walk goes in name order)
    assert only["created"] == [str(src / "conf.d" / "alias.conf"), str(src / "links" / "alias.conf")], only
    both = [fresh / str(src).lstrip("/") / n for n in ["conf.d/alias.conf", "links/alias.conf"]]
    assert os.stat(both[0]).st_ino == os.stat(both[1]).st_ino and both[1].read_text() == "one file, three names\n"
    assert not (fresh / str(src).lstrip("/") / "links" / "shared.conf").exists()


@pytest.mark.fault("wrong key", "an image for recipients opened with a passphrase, then with another identity", item="18.5")
def test_recipients_only_node_cannot_read_its_own_image(place, fault):
    identity, recipient = _age.generate_identity()
    sealed = backup(place, passphrase=None, recipients=[recipient])
    info = run_module("image_info", image=sealed["image"])
    assert info["encrypted"] and not info["passphrase_protected"]
    no_key = run_module("config_restore", image=sealed["image"], passphrase=PASSPHRASE, root=str(place["tmp"] / "r1"))
    assert no_key.failed and "identity" in no_key["msg"]
    other_identity = _age.generate_identity()[0]
    other = run_module("image_verify", image=sealed["image"], identity=other_identity)
    fault.observe(false_success=not (no_key.failed and other.failed))
    fault.scan([PASSPHRASE, identity, other_identity], no_key, other)
    assert other.failed and "no identity matches" in other["msg"]
    # #18.5: a key that does not fit is not damage: nothing invites the operator to give up the image.
    assert "damaged" not in other["msg"] and "cannot be read with the key given" in other["msg"], other["msg"]
    assert other["first_error"]["damaged"] is False
    key = place["tmp"] / "key.txt"
    key.write_text(identity + "\n")
    ok = run_module("image_verify", image=sealed["image"], identity_file=str(key), level="full")
    assert ok["valid"], ok


def test_passphrase_and_recipient_both_open_the_image(place):
    identity, recipient = _age.generate_identity()
    image = backup(place, recipients=[recipient])["image"]
    assert run_module("image_verify", image=image, level="full", passphrase=PASSPHRASE)["valid"]
    assert run_module("image_verify", image=image, level="full", identity=identity)["valid"]


@pytest.mark.fault("wrong key", "config_restore given a wrong passphrase", item="18.2")
def test_wrong_passphrase_is_named_and_changes_nothing(place, fault):
    image = backup(place)["image"]
    before = sha(image)
    result = run_module("config_restore", image=image, passphrase="not the passphrase", root=str(place["tmp"] / "r"))
    fault.observe(false_success=not result.failed, data_lost=sha(image) != before)
    fault.scan([PASSPHRASE, "not the passphrase"], result)
    assert result.failed and "wrong passphrase" in result["msg"]
    assert not (place["tmp"] / "r").exists() and sha(image) == before


def _files_under(root):
    return sorted(str(p) for p in Path(root).rglob("*") if not p.is_dir()) if Path(root).exists() else []


@pytest.mark.fault("corrupt member", "config_restore of an image whose manifest checksum or data member is wrong", item="18.2")
def test_restore_authenticates_before_writing_and_names_what_it_wrote(place, fault):
    """#18.2: a manifest whose checksum does not match, or a damaged member, writes nothing;
    with authenticate=false the failure comes after writes and lists them."""
    image = backup(place)["image"]
    data = "config/files.tar.zst.age"
    tampered = place["tmp"] / "tampered.zip"
    with zipfile.ZipFile(image) as source, zipfile.ZipFile(tampered, "w", zipfile.ZIP_STORED) as copy:
        for info in source.infolist():
            content = source.read(info.filename)
            if info.filename == "manifest.json":
                manifest = json.loads(content)
                next(m for m in manifest["members"] if m["name"] == data)["plaintext_sha256"] = "0" * 64
                content = json.dumps(manifest).encode()
            copy.writestr(info, content)
    damaged = flip_byte(image, data, place["tmp"] / "damaged.zip", where=0.95)
    for bad in (tampered, damaged):
        root = place["tmp"] / ("r-" + bad.stem)
        result = run_module("config_restore", image=str(bad), passphrase=PASSPHRASE, root=str(root))
        fault.observe(false_success=not result.failed, data_lost=_files_under(root) != [])
        fault.scan([PASSPHRASE], result)
        assert result.failed and data in result["msg"] and "Nothing was written" in result["msg"], result
        assert not result["changed"] and _files_under(root) == [], "files written before the image was authenticated"

    root = place["tmp"] / "r-unchecked"
    unchecked = run_module("config_restore", image=str(tampered), passphrase=PASSPHRASE, root=str(root), authenticate=False)
    assert unchecked.failed and unchecked["changed"], unchecked
    assert unchecked["written"], unchecked
    assert all(os.path.lexists(str(root) + path) for path in unchecked["written"]), unchecked["written"]
    assert unchecked["done"][0].startswith("wrote %d of " % len(unchecked["written"])), unchecked["done"]
    assert "Already changed before the failure: wrote" in unchecked["msg"] and "run again" in unchecked["msg"]


@pytest.mark.fault("corrupt member", "one flipped byte in a member, found by image_verify")
@pytest.mark.parametrize("member_kind", ["identity", "data", "index", "manifest"])
def test_flipped_byte_is_found_and_named(place, member_kind, fault):
    image = backup(place)["image"]
    with zipfile.ZipFile(image) as archive:
        infos = {i.filename: i for i in archive.infolist()}
    name = {
        "identity": "lifeboat/identity.age",
        "data": "config/files.tar.zst.age",
        "index": "config/index.jsonl.zst.age",
        "manifest": "manifest.json",
    }[member_kind]
    info = infos[name]
    with open(image, "r+b") as handle:
        handle.seek(info.header_offset)
        header = handle.read(30)
        data_start = info.header_offset + 30 + int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little")
        position = data_start + info.compress_size // 2
        handle.seek(position)
        byte = handle.read(1)
        handle.seek(position)
        handle.write(bytes([byte[0] ^ 0x40]))
    result = run_module("image_verify", image=image)
    fault.observe(false_success=not result.failed)
    assert result.failed
    assert name in result["msg"], result["msg"]
    if member_kind != "manifest":
        assert result["first_error"]["member"] == name
        authenticated = run_module("image_verify", image=image, passphrase=PASSPHRASE)
        fault.observe(false_success=not authenticated.failed)
        fault.scan([PASSPHRASE], authenticated)
        assert authenticated.failed and name in authenticated["msg"]


def test_missing_path_warns_or_fails_with_halt(place):
    work = start(place)
    # #18.11: a listed path that is a symlink to a directory is captured as the link alone: said.
    linked = place["src"].parent / "linked-conf"
    linked.symlink_to(place["src"])
    result = run_module("config_archive", session=work, paths=[str(place["src"]), "/nonexistent/lifeboat.conf", str(linked)])
    assert not result.failed and result["missing"] == ["/nonexistent/lifeboat.conf"]
    assert any("/nonexistent/lifeboat.conf" in str(w) for w in result.get("warnings", []))
    # #18.12: Ansible prints a module's warnings without the host; they name it.
    assert "on %s: /nonexistent/lifeboat.conf: no such file" % socket.gethostname() in json.dumps(result["warnings"])
    said = "%s is a symlink to the directory %s: only the link is captured" % (linked, place["src"].resolve())
    assert said in json.dumps(result["warnings"]) and any(said in w for w in result["warnings_detail"]), result["warnings"]
    assert seal(work)["verdict"] == "success"

    work = start(place, halt=True)
    halted = run_module("config_archive", session=work, paths=[str(place["src"]), "/nonexistent/lifeboat.conf"])
    assert halted.failed and "/nonexistent/lifeboat.conf" in halted["msg"]
    sealed = seal(work)
    assert sealed.failed and sealed["verdict"] == "failed" and sealed["image"] is None


def _without_dac_override():
    """Run as root but without the capabilities that bypass file permissions."""
    return ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search", "--"]


@pytest.mark.fault("unreadable source", "a configuration file the module may not read")
def test_unreadable_file_is_listed_and_fatal_with_halt(place, fault):
    secret = place["src"] / "unreadable.conf"
    secret.write_text("x")
    os.chmod(secret, 0)
    work = start(place)
    result = run_module("config_archive", session=work, paths=[str(place["src"])], prefix=_without_dac_override())
    fault.observe(false_success=str(secret) not in json.dumps(result.get("unreadable")))  # skipped in silence
    assert not result.failed, result
    assert [u["path"] for u in result["unreadable"]] == [str(secret)]
    assert "Permission denied" in result["unreadable"][0]["error"]
    assert seal(work)["verdict"] == "success"

    work = start(place, halt=True)
    halted = run_module("config_archive", session=work, paths=[str(place["src"])], prefix=_without_dac_override())
    fault.observe(false_success=not halted.failed)
    assert halted.failed and str(secret) in halted["msg"]
    assert seal(work)["verdict"] == "failed"


def test_check_mode_lists_and_writes_nothing(place):
    work = start(place)
    journal = Path(work, "journal.jsonl").read_text()  # the image identity only
    size = Path(work, "image.partial").stat().st_size
    planned = run_module("config_archive", session=work, paths=[str(place["src"])], exclude=["*.swp"], check=True)
    assert planned["changed"] and planned["file_count"] == 6
    assert planned["total_bytes"] == sum(f["size"] for f in planned["files"])
    assert Path(work, "journal.jsonl").read_text() == journal
    assert Path(work, "image.partial").stat().st_size == size
    assert os.listdir(os.path.join(work, "components")) == []
    run_module("backup_session", state="aborted", session=work)


def test_short_passphrase_and_implicit_plaintext_are_refused(place):
    short = run_module("backup_session", state="started", destination=place["dest"], state_dir=place["state"], passphrase="1234567", facts_dir="")
    assert short.failed and "at least 8" in short["msg"]
    nothing = run_module("backup_session", state="started", destination=place["dest"], state_dir=place["state"], facts_dir="")
    assert nothing.failed and "encryption=none explicitly" in nothing["msg"]
    work = start(place, passphrase=None, encryption="none")
    assert run_module("config_archive", session=work, paths=[str(place["src"])])["members"] == ["config/files.tar.zst", "config/index.jsonl.zst"]
    sealed = seal(work)
    assert sealed["verdict"] == "success"
    assert run_module("image_verify", image=sealed["image"], level="full")["valid"]


@pytest.mark.fault("controller killed", "a second run while one holds the lock; then the keeper killed (stale lock)")
def test_second_session_fails_naming_the_holder_and_stale_lock_is_taken_over(place, fault):
    previous = backup(place)["image"]
    previous_sha = sha(previous)
    work = start(place, backup_id="run-one")
    second = run_module(
        "backup_session", state="started", destination=place["dest"], state_dir=place["state"], passphrase=PASSPHRASE, work_factor=12, facts_dir=""
    )
    fault.observe(false_success=not second.failed)
    assert second.failed and "run-one" in second["msg"] and "in progress" in second["msg"]

    keeper = json.loads(Path(place["state"], "lock").read_text())["keeper_pid"]
    os.kill(keeper, signal.SIGKILL)  # the controller died and took the keeper with it
    time.sleep(0.2)
    taken = run_module(
        "backup_session", state="started", destination=place["dest"], state_dir=place["state"], passphrase=PASSPHRASE, work_factor=12, facts_dir=""
    )
    assert not taken.failed, taken
    assert any("stale" in note for note in taken["notes"])
    assert not os.path.exists(work)
    audit = [json.loads(line) for line in Path(place["state"], "audit.jsonl").read_text().splitlines()]
    fault.observe(false_success=audit[-1].get("verdict") != "failed", data_lost=sha(previous) != previous_sha)
    assert audit[-1]["backup_id"] == "run-one" and audit[-1]["verdict"] == "failed" and "abandoned" in audit[-1]["reason"]
    assert sha(previous) == previous_sha
    run_module("backup_session", state="aborted", session=taken["session"]["work_dir"], reason="test done")


@pytest.mark.fault("stale lock", "the lock file (then the status file) removed under a live session", item="18.4")
def test_removing_the_lock_file_does_not_end_a_live_session(place, fault):
    """#18.4: staleness is decided from the keeper process itself, never from the file."""
    work = start(place, backup_id="live-one")
    archived = run_module("config_archive", session=work, paths=[str(place["src"])])
    assert not archived.failed, archived
    second_args = dict(state="started", destination=place["dest"], state_dir=place["state"], passphrase=PASSPHRASE, work_factor=12, facts_dir="")

    Path(place["state"], "lock").unlink()  # an operator "clears the stale lock"
    second = run_module("backup_session", **second_args)
    fault.observe(false_success=not second.failed, data_lost=not os.path.isdir(work))
    assert second.failed and "live-one" in second["msg"] and "still runs" in second["msg"], second
    assert os.path.isdir(work) and Path(work, "image.partial").stat().st_size > 0, "the live session's work area was removed"
    info = run_module("backup_info", state_dir=place["state"])
    assert info["status"]["state"] == "in_progress" and info["status"]["current"]["backup_id"] == "live-one"
    checked = run_module("backup_session", check=True, **second_args)
    assert checked.failed and "live-one" in checked["msg"]

    Path(place["state"], "status.json").unlink()  # and the status file too
    third = run_module("backup_session", **second_args)
    fault.observe(false_success=not third.failed, data_lost=not os.path.isdir(work))
    fault.scan([PASSPHRASE], second, checked, third)
    assert third.failed and "live-one" in third["msg"] and os.path.isdir(work), third

    sealed = seal(work)
    assert sealed["verdict"] == "success" and os.path.exists(sealed["image"]), sealed
    after = run_module("backup_session", **second_args)
    assert not after.failed, after
    run_module("backup_session", state="aborted", session=after["session"]["work_dir"], reason="test done")


@pytest.mark.fault("killed process", "config_archive killed mid-write; then the session keeper killed")
def test_killed_mid_write_publishes_nothing_and_next_run_cleans_up(place, fault):
    big = place["tmp"] / "big"
    big.mkdir()
    for n in range(40):
        (big / ("blob%02d" % n)).write_bytes(os.urandom(4 * 1024 * 1024))
    previous = backup(place)["image"]
    previous_sha = sha(previous)
    work = start(place)
    from tests.support.modules import module_env  # noqa: PLC0415 - only this test needs the raw process

    args = place["tmp"] / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"session": work, "paths": [str(big)]}}))
    import sys  # noqa: PLC0415

    proc = subprocess.Popen(
        [sys.executable, "-m", "ansible_collections.lifeboat.backup.plugins.modules.config_archive", str(args)],
        env=module_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    partial = Path(work, "image.partial")
    deadline = time.time() + 60
    while time.time() < deadline and (not partial.exists() or partial.stat().st_size < 20 * 1024 * 1024):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    published = sorted(os.listdir(place["dest"])) != sorted([".lifeboat-work", os.path.basename(previous)])
    fault.observe(false_success=published, data_lost=sha(previous) != previous_sha)
    assert not published, os.listdir(place["dest"])

    # The same session goes on: the torn member is cut off, another component succeeds.
    other = run_module("config_archive", session=work, name="config-small", paths=[str(place["src"])])
    assert not other.failed, other
    sealed = seal(work)
    fault.observe(false_success=sealed.get("verdict") == "success")
    fault.scan([PASSPHRASE], sealed, other)
    assert sealed["verdict"] == "partial", sealed
    assert "interrupted" in sealed["failures"]["config"]
    assert run_module("image_verify", image=sealed["image"], level="full", passphrase=PASSPHRASE)["valid"]

    # Killed together with the keeper: the next start removes the work area.
    work = start(place)
    Path(work, "image.partial").write_bytes(os.urandom(1000))
    keeper = json.loads(Path(place["state"], "lock").read_text())["keeper_pid"]
    os.kill(keeper, signal.SIGKILL)
    time.sleep(1.1)  # a start within the same second would reuse the work area's name
    nxt = start(place)
    fault.observe(data_lost=sha(previous) != previous_sha)
    assert nxt != work and not os.path.exists(work)
    assert sha(previous) == previous_sha
    run_module("backup_session", state="aborted", session=nxt)


def _open_under(pid, root):
    """Paths under ``root`` that process ``pid`` has open."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(root) + "/"):
            found.append(target)
    return found


@pytest.mark.fault("killed process", "config_restore killed while writing a file; a partial file from an earlier version", item="18.7")
def test_a_killed_restore_leaves_no_partial_file_and_removes_old_ones(place, fault):
    """#18.7: files are written unnamed until complete; partial temporaries left by a killed
    restore (an earlier version's) are removed from the directories a later restore writes to."""
    import sys  # noqa: PLC0415

    from tests.support.modules import module_env  # noqa: PLC0415 - only this test needs the raw process

    big = place["tmp"] / "big"
    big.mkdir()
    (big / "blob.bin").write_bytes(os.urandom(48 * 1024 * 1024))
    (big / "small.conf").write_text("x = 1\n")
    image = backup(place, paths=[str(big)])["image"]
    root = place["tmp"] / "restored"
    args = place["tmp"] / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"image": image, "passphrase": PASSPHRASE, "root": str(root), "authenticate": False}}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ansible_collections.lifeboat.backup.plugins.modules.config_restore", str(args)],
        env=module_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not _open_under(proc.pid, root):
        time.sleep(0.01)
    assert proc.poll() is None, "the restore ended before it was caught writing"
    proc.kill()
    proc.wait()
    assert not [p for p in root.rglob("*") if ".lifeboat-" in p.name], "a killed restore left a partial file"

    target_dir = Path(str(root) + str(big))
    target_dir.mkdir(parents=True, exist_ok=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    leftover = target_dir / f".blob.bin.lifeboat-{gone.pid}-0badc0de"  # what an earlier version left
    leftover.write_bytes(b"\0" * 2 * 1024 * 1024)
    leftover.chmod(0o600)
    result = run_module("config_restore", image=image, passphrase=PASSPHRASE, root=str(root))
    restored = target_dir / "blob.bin"
    fault.observe(data_lost=not restored.exists() or sha(restored) != sha(big / "blob.bin"))
    fault.scan([PASSPHRASE], result)
    assert not result.failed, result
    assert not leftover.exists() and result["removed_partial"] == [str(leftover)], result.get("removed_partial")
    assert "removed 1 partial file(s)" in json.dumps(result.get("warnings"))
    assert sha(target_dir / "blob.bin") == sha(big / "blob.bin")


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.fault("disk full", "the destination fills up while config_archive writes", item="18.5")
def test_disk_full_is_clear_and_publishes_nothing(place, small_disk, fault):
    noise = place["tmp"] / "noise"
    noise.mkdir()
    (noise / "random.bin").write_bytes(os.urandom(10 * 1024 * 1024))
    (place["tmp"] / "state").mkdir(exist_ok=True)
    dest = {"dest": str(small_disk), "state": place["state"]}
    good = backup(dest, paths=[str(place["src"])])
    good_sha = sha(good["image"])
    work = start(dest)
    full = run_module("config_archive", session=work, paths=[str(noise)])
    assert full.failed and "No space left on device" in full["msg"], (full, full.stderr)
    sealed = seal(work, errors={"config": full["msg"]})  # what the backup role passes
    fault.observe(false_success=not full.failed or not sealed.failed or sealed.get("image") is not None, data_lost=sha(good["image"]) != good_sha)
    fault.scan([PASSPHRASE], full, sealed)
    assert sealed.failed and sealed["image"] is None
    # #18.5: the module's own reason, not "interrupted" (its record could not be written: disk full).
    assert sealed["failures"]["config"] == full["msg"], sealed["failures"]
    assert sorted(os.listdir(small_disk)) == sorted([".lifeboat-work", os.path.basename(good["image"])])
    assert sha(good["image"]) == good_sha
    status = json.loads(Path(place["state"], "status.json").read_text())
    assert status["state"] == "idle" and status["last_success"]["image"] == good["image"]
    assert "config" in status["last_failure"]["reason"]


@pytest.mark.fault("disk full", "the state directory fills up at seal", item="18.5")
def test_a_full_state_directory_at_seal_is_named_and_the_next_run_records_the_image(place, small_disk, fault):
    """#18.5: the image is published, a warning names the state directory; status is not left
    "in progress" for the next run to call the published image abandoned."""
    state = small_disk / "state"
    where = {"dest": place["dest"], "state": str(state)}
    work = start(where, backup_id="full-state")
    assert not run_module("config_archive", session=work, paths=[str(place["src"])]).failed
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass
    sealed = seal(work)
    fault.observe(false_success=sealed.get("recorded") is not False)  # claiming the status was recorded
    assert not sealed.failed and sealed["verdict"] == "success" and os.path.exists(sealed["image"]), sealed
    assert sealed["recorded"] is False
    warning = json.dumps(sealed.get("warnings"))
    assert f"the state directory {state} could not record the published image {sealed['image']}" in warning and "full" in warning, warning
    filler.unlink()
    after = run_module(
        "backup_session", state="started", destination=place["dest"], state_dir=str(state), passphrase=PASSPHRASE, work_factor=12, facts_dir="", node="node1"
    )
    fault.observe(data_lost=not os.path.exists(sealed["image"]))
    fault.scan([PASSPHRASE], sealed, after)
    assert not after.failed, after
    assert os.path.exists(sealed["image"]), "the next run removed the published image"
    assert any("had published %s without recording it" % sealed["image"] in note for note in after["notes"]), after["notes"]
    audit = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["backup_id"] == "full-state" and audit[-1]["verdict"] == "success" and audit[-1]["image"] == sealed["image"]
    assert not any("abandoned" in (a.get("reason") or "") for a in audit)
    status = json.loads((state / "status.json").read_text())
    assert status["last_success"]["image"] == sealed["image"]
    run_module("backup_session", state="aborted", session=after["session"]["work_dir"], reason="test done")


def test_gzip_fallback_recovers_with_stock_gzip(place):
    sealed = backup(place, passphrase=None, encryption="none", compression="gzip")
    out = place["tmp"] / "out"
    out.mkdir()
    subprocess.run(["unzip", "-q", sealed["image"], "-d", str(out)], check=True)
    listing = subprocess.run("gzip -dc config/files.tar.gz | tar -tf -", shell=True, cwd=out, capture_output=True, text=True, check=True)
    assert "platform_settings.py" in listing.stdout


def test_no_secret_in_verbose_output_or_process_table(place, tmp_path):
    from tests.support.modules import run_playbook  # noqa: PLC0415

    playbook = """
- hosts: localhost
  gather_facts: false
  tasks:
    - lifeboat.backup.backup_session:
        state: started
        destination: "{{ dest }}"
        state_dir: "{{ state }}"
        passphrase: "{{ secret }}"
        work_factor: 12
        facts_dir: ""
      register: s
    - lifeboat.backup.config_archive:
        session: "{{ s.session.work_dir }}"
        paths: ["{{ src }}"]
    - ansible.builtin.shell: "cat /proc/{{ s.session.keeper_pid }}/cmdline /proc/{{ s.session.keeper_pid }}/environ | tr '\\\\0' ' '"
      register: keeper
      changed_when: false
    - ansible.builtin.assert:
        that: secret not in keeper.stdout
    - lifeboat.backup.backup_session:
        state: sealed
        session: "{{ s.session.work_dir }}"
      register: sealed
    - lifeboat.backup.image_verify:
        image: "{{ sealed.image }}"
        level: full
        passphrase: "{{ secret }}"
    - lifeboat.backup.config_restore:
        image: "{{ sealed.image }}"
        passphrase: "{{ secret }}"
        root: "{{ restore }}"
      diff: true
"""
    secret = "S3cret-passphrase-never-shown"
    proc = run_playbook(
        playbook,
        tmp_path,
        extra_vars={"dest": place["dest"], "state": place["state"], "src": str(place["src"]), "restore": str(tmp_path / "restore"), "secret": secret},
        verbosity=3,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "failed=0" in proc.stdout
    # The only place the secret may appear is where this test defined it: the extra-vars file
    # echoed by -vvv is referenced by path, never by value.
    assert secret not in proc.stdout


def test_backup_info_status_history_images_and_fact(place):
    idle = run_module("backup_info", state_dir=place["state"], destination=place["dest"], schedule=str(place["tmp"] / "no-cron"))
    assert not idle.failed and not idle["changed"]
    assert idle["status"]["state"] == "not_running" and idle["status"]["last_success"] is None
    assert idle["status"]["next_run"] is None and "does not exist" in idle["status"]["schedule"]

    first = backup(place)
    work = start(place, backup_id="second-run")
    running = run_module("backup_info", state_dir=place["state"], destination=place["dest"], node="node1")
    assert running["status"]["state"] == "in_progress" and running["status"]["current"]["backup_id"] == "second-run"
    fact = json.loads(Path(place["facts"], "lifeboat.fact").read_text())
    assert fact["state"] == "in_progress" and fact["last_success"]["image"] == first["image"]

    keeper = running["status"]["current"]["keeper_pid"]
    os.kill(keeper, signal.SIGKILL)
    time.sleep(0.2)
    assert run_module("backup_info", state_dir=place["state"])["status"]["state"] == "stale"
    shutil.rmtree(work)

    cron = place["tmp"] / "lifeboat-backup"
    cron.write_text("SHELL=/bin/sh\n# nightly\n0 2 * * * root ansible-pull ...\n")
    later = run_module("backup_info", state_dir=place["state"], destination=place["dest"], schedule=str(cron), history=5)
    assert later["status"]["next_run"].endswith("T02:00:00Z")
    assert [h["verdict"] for h in later["history"]] == ["success"]
    assert [i["backup_id"] for i in later["images"]] == [first["backup_id"]]
    assert later["images"][0]["components"] == {"config": "success"} and later["images"][0]["verdict"] == "success"
    assert run_module("backup_info", state_dir=place["state"], destination=place["dest"], node="other")["images"] == []
