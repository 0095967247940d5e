"""The schedule role for real: systemd units checked by systemd-analyze verify and calendar,
a cron entry fired by `cron -f` (started by the test in a private mount namespace, so the
machine's own crontabs are neither read nor touched) within a minute, the lock and the log,
node mode, removal, and bad input naming the role variable."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.support.modules import COLLECTIONS, run_playbook

PLAY = """
- hosts: all
  gather_facts: false
  roles:
    - role: lifeboat.backup.schedule
"""


def dirs(tmp_path):
    names = ("script", "log", "lock", "systemd", "cron", "state")
    for name in names:
        (tmp_path / name).mkdir(exist_ok=True)
    return {f"schedule_{name}_dir": str(tmp_path / name) for name in names}


def marker_playbook(tmp_path):
    """What the scheduled run runs: a playbook that leaves a marker with its inventory host."""
    path = tmp_path / "marker.yml"
    path.write_text(
        f"""
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        dest: "{tmp_path / "marker"}"
        content: "ran for {{{{ inventory_hostname }}}}\\n"
        mode: "0600"
"""
    )
    return str(path)


def schedule(tmp_path, check=False, **extra):
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("db1 ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable)
    extra_vars = {**dirs(tmp_path), "schedule_inventory": str(inventory), "schedule_playbook": marker_playbook(tmp_path), **extra}
    return run_playbook(PLAY, tmp_path, extra_vars=extra_vars, inventory=str(inventory), check=check)


def environment():
    return {
        "PATH": "%s:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" % Path(sys.executable).parent,
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "ANSIBLE_HOME": str(COLLECTIONS.parent / "ansible-home"),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_NOCOLOR": "1",
    }


def test_systemd_units_pass_systemd_analyze(tmp_path):
    proc = schedule(
        tmp_path,
        schedule_kind="systemd",
        schedule_activate="false",  # text booleans, as from -e or an AWX survey
        schedule_persistent="true",
        schedule_on_calendar="Mon..Fri *-*-* 01:30:00",
        schedule_randomized_delay=900,
        schedule_timeout=7200,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    service, timer = tmp_path / "systemd" / "lifeboat-backup.service", tmp_path / "systemd" / "lifeboat-backup.timer"
    text = timer.read_text()
    assert "OnCalendar=Mon..Fri *-*-* 01:30:00" in text and "RandomizedDelaySec=900" in text and "Persistent=true" in text
    assert "ExecStart=%s" % (tmp_path / "script" / "lifeboat-backup") in service.read_text()
    verify = subprocess.run(["systemd-analyze", "verify", str(service), str(timer)], capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stderr
    calendar = subprocess.run(["systemd-analyze", "calendar", "Mon..Fri *-*-* 01:30:00"], capture_output=True, text=True, check=False)
    assert calendar.returncode == 0 and "Next elapse" in calendar.stdout
    record = json.loads((tmp_path / "state" / "schedule.json").read_text())
    assert record["kind"] == "systemd" and record["expression"] == "Mon..Fri *-*-* 01:30:00" and record["mode"] == "controller"
    # Idempotent: a second run changes nothing.
    again = schedule(
        tmp_path,
        schedule_kind="systemd",
        schedule_activate="false",
        schedule_on_calendar="Mon..Fri *-*-* 01:30:00",
        schedule_randomized_delay=900,
        schedule_timeout=7200,
    )
    assert "changed=0" in again.stdout, again.stdout[-3000:]


def test_a_bad_calendar_names_the_variable(tmp_path):
    proc = schedule(tmp_path, schedule_kind="systemd", schedule_activate=False, schedule_on_calendar="every night at two")
    assert proc.returncode != 0
    assert "schedule_on_calendar 'every night at two' is not a systemd calendar expression" in proc.stdout
    assert not (tmp_path / "systemd" / "lifeboat-backup.timer").exists()
    proc = schedule(tmp_path, schedule_kind="cron", schedule_cron="2am")
    assert proc.returncode != 0 and "schedule_cron five fields or a macro" in proc.stdout


def test_node_mode_runs_against_itself(tmp_path):
    proc = schedule(tmp_path, schedule_kind="cron", schedule_mode="node", schedule_extra_args=["-e", "@/etc/lifeboat/backup.yml"])
    assert proc.returncode == 0, proc.stdout[-3000:]
    wrapper = (tmp_path / "script" / "lifeboat-backup").read_text()
    assert "ansible-playbook -i db1, -c local -e lifeboat_hosts=db1 -e @/etc/lifeboat/backup.yml" in wrapper
    assert json.loads((tmp_path / "state" / "schedule.json").read_text())["host"] == "db1"


def test_wrapper_lock_and_log(tmp_path):
    proc = schedule(tmp_path, schedule_kind="cron", schedule_environment=environment())
    assert proc.returncode == 0, proc.stdout[-3000:]
    wrapper = tmp_path / "script" / "lifeboat-backup"
    assert oct(wrapper.stat().st_mode & 0o777) == "0o750"
    run = subprocess.run([str(wrapper)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, check=False, timeout=300)
    assert run.returncode == 0, (tmp_path / "log" / "lifeboat-backup.log").read_text()
    assert (tmp_path / "marker").read_text() == "ran for db1\n"
    # A run that finds the lock held is skipped, says so, and exits 75 (EX_TEMPFAIL).
    with open(tmp_path / "lock" / "lifeboat-backup.lock", "a") as lock:
        import fcntl

        fcntl.flock(lock, fcntl.LOCK_EX)
        skipped = subprocess.run([str(wrapper)], capture_output=True, text=True, check=False, timeout=60)
    assert skipped.returncode == 75
    log = (tmp_path / "log" / "lifeboat-backup.log").read_text()
    assert "lifeboat-backup: start (" in log and "lifeboat-backup: end, exit status 0" in log
    assert "skipped, a previous run still holds" in log


def test_cron_fires_the_installed_schedule_within_a_minute(tmp_path):
    proc = schedule(tmp_path, schedule_kind="cron", schedule_cron="* * * * *", schedule_environment=environment())
    assert proc.returncode == 0, proc.stdout[-3000:]
    cron_file = tmp_path / "cron" / "lifeboat-backup"
    assert cron_file.read_text().splitlines()[-1] == "* * * * * root %s" % (tmp_path / "script" / "lifeboat-backup")
    cron = shutil.which("cron") or "/usr/sbin/cron"
    empty = tmp_path / "empty"
    (empty / "spool").mkdir(parents=True)
    (empty / "run").mkdir()
    (empty / "crontab").write_text("")
    # Only the test's cron.d is read: the machine's /etc/crontab, spool and pid file are hidden.
    script = (
        "set -e; mount --bind {cron_d} /etc/cron.d; mount --bind {crontab} /etc/crontab;"
        " mount --bind {spool} /var/spool/cron; mount --bind {run} /run; exec {cron} -f -L 15"
    ).format(cron_d=tmp_path / "cron", crontab=empty / "crontab", spool=empty / "spool", run=empty / "run", cron=cron)
    daemon = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 150
        log = tmp_path / "log" / "lifeboat-backup.log"
        while time.monotonic() < deadline and not (log.exists() and "end, exit status" in log.read_text()):
            assert daemon.poll() is None, daemon.stdout.read().decode()
            time.sleep(1)
        assert log.exists() and "end, exit status 0" in log.read_text(), log.read_text() if log.exists() else "no log"
        assert (tmp_path / "marker").read_text() == "ran for db1\n"
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


def test_absent_removes_everything_but_the_log(tmp_path):
    assert schedule(tmp_path, schedule_kind="cron").returncode == 0
    # A restore drill scheduled beside the backup (schedule_playbook: drill): its own cron
    # entry, wrapper and record; the backup's record (what status.yml reads) stays the backup's.
    drill = schedule(tmp_path, schedule_kind="cron", schedule_cron="0 5 * * 0", schedule_playbook="drill")
    assert drill.returncode == 0, drill.stdout[-3000:]
    assert (tmp_path / "cron" / "lifeboat-drill").read_text().splitlines()[-1] == "0 5 * * 0 root %s" % (tmp_path / "script" / "lifeboat-drill")
    assert (tmp_path / "script" / "lifeboat-drill").read_text().count(" lifeboat.backup.drill") >= 1
    assert json.loads((tmp_path / "state" / "drill-schedule.json").read_text())["playbook"] == "lifeboat.backup.drill"
    assert json.loads((tmp_path / "state" / "schedule.json").read_text())["name"] == "lifeboat-backup"
    (tmp_path / "log" / "lifeboat-backup.log").write_text("earlier runs\n")
    proc = schedule(tmp_path, schedule_kind="cron", schedule_state="absent")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert [p.name for p in (tmp_path / "cron").iterdir()] == ["lifeboat-drill"] and [p.name for p in (tmp_path / "script").iterdir()] == ["lifeboat-drill"]
    assert not (tmp_path / "state" / "schedule.json").exists() and (tmp_path / "state" / "drill-schedule.json").exists()
    assert (tmp_path / "log" / "lifeboat-backup.log").read_text() == "earlier runs\n"


def test_awx_kind_only_records_the_schedule(tmp_path):
    proc = schedule(tmp_path, schedule_kind="awx", schedule_cron="30 1 * * 1-5", schedule_inventory="")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert [p for sub in ("cron", "systemd", "script") for p in (tmp_path / sub).iterdir()] == []
    record = json.loads((tmp_path / "state" / "schedule.json").read_text())
    assert record["kind"] == "awx" and record["host"] == "awx" and record["expression"] == "30 1 * * 1-5"
