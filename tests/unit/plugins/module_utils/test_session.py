"""Verdict rules and encryption validation (BRIEF section 1, rows 3 and 4)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _session


def comps(*statuses):
    return {"c%d" % n: {"status": s} for n, s in enumerate(statuses)}


@pytest.mark.parametrize(
    ("statuses", "halt", "verdict"),
    [
        (("success", "success"), False, "success"),
        (("success", "failed"), False, "partial"),
        (("success", "failed"), True, "failed"),
        (("failed", "failed"), False, "failed"),
        (("success", "skipped"), False, "success"),
        ((), False, "failed"),
    ],
)
def test_verdicts(statuses, halt, verdict):
    assert _session.verdict_of(comps(*statuses), halt) == verdict


def test_encryption_rules():
    with pytest.raises(_session.SessionError, match="at least 8"):
        _session.validate_encryption("age", "short", [])
    with pytest.raises(_session.SessionError, match="encryption=none explicitly"):
        _session.validate_encryption("age", None, [])
    with pytest.raises(_session.SessionError, match="drop them"):
        _session.validate_encryption("none", "long enough passphrase", [])
    with pytest.raises(_session.SessionError, match="recipients"):
        _session.validate_encryption("age", None, ["age1bogus"])
    _session.validate_encryption("age", "12345678", [_age.generate_identity()[1]])
    _session.validate_encryption("none", None, [])


def test_passphrase_plan_stores_an_identity_the_passphrase_unlocks():
    recipients, blob = _session.encryption_plan("age", "correct horse battery", [], work_factor=10)
    assert len(recipients) == 1 and recipients[0].startswith("age1")
    import io

    text = _age.AgeReader(io.BytesIO(blob), passphrase="correct horse battery").read().decode()
    keys = _age.parse_identities(text)
    assert _age.recipient_of(keys[0]) == recipients[0]


def test_a_keeper_is_known_by_its_start_time_not_its_pid_alone():
    """#18.4: a pid reused by another process is not the keeper."""
    me = _session.keeper_identity(os.getpid())
    assert me["keeper_start"] is not None and me["boot_id"]
    assert _session.keeper_alive(me)
    assert not _session.keeper_alive(dict(me, keeper_start=me["keeper_start"] - 1))
    assert not _session.keeper_alive(dict(me, boot_id="another-boot"))
    assert _session.keeper_alive({"keeper_pid": os.getpid()})  # recorded before 0.2.0: the pid alone
    assert not _session.keeper_alive({"keeper_pid": 0}) and not _session.keeper_alive(None)


def test_process_start_reads_a_command_name_with_parentheses(tmp_path):
    odd = tmp_path / "a) b (c"
    odd.symlink_to(shutil.which("sleep"))
    child = subprocess.Popen([str(odd), "30"])
    try:
        with open("/proc/%d/stat" % child.pid) as handle:
            assert "(a) b (c)" in handle.read()
        assert _session.process_start(child.pid) >= _session.process_start(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert _session.process_start(child.pid) is None
