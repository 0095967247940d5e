"""leftover_processes with real processes and PID files (run as a module process)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time

import pytest

from tests.support.modules import run_module

IGNORE_TERM = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN if sys.argv[1] == 'stubborn' else signal.SIG_DFL); time.sleep(300)"


@pytest.fixture
def spawn(tmp_path):
    started = []

    def start(kind="plain"):
        marker = f"lifeboat-leftover-test:{tmp_path}:{len(started)}"
        proc = subprocess.Popen([sys.executable, "-c", IGNORE_TERM, kind, marker])
        started.append(proc)
        return proc, marker

    yield start
    for proc in started:  # only what this test started, by its pid
        proc.kill()
        proc.wait()


def test_reports_without_touching_anything(tmp_path, spawn):
    proc, marker = spawn()
    live = tmp_path / "live.pid"
    live.write_text(f"{proc.pid}\n")
    stale = tmp_path / "stale.pid"
    stale.write_text("4194303\n")
    garbage = tmp_path / "garbage.pid"
    garbage.write_text("not a pid\n")
    result = run_module("leftover_processes", pid_files=[str(tmp_path / "*.pid")], patterns=[marker])
    assert not result.failed, result
    assert result["changed"] is False and result["clean"] is False
    assert [p["pid"] for p in result["running"]] == [proc.pid]
    assert result["running"][0]["found_by"] == f"pid file {live}"
    assert result["stale_pid_files"] == sorted([str(garbage), str(stale)])
    assert result["killed"] == [] and result["removed"] == []
    assert proc.poll() is None and stale.exists()


def test_pattern_finds_processes_and_never_itself(tmp_path, spawn, monkeypatch):
    proc, marker = spawn()
    # The second pattern matches the module's own process (its arguments file is written in
    # tmp_path), and no other: other clones on this machine may run the module at the same time.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    itself = r"plugins\.modules\.leftover_processes %s/" % re.escape(str(tmp_path))
    result = run_module("leftover_processes", patterns=[marker, itself])
    assert [p["pid"] for p in result["running"]] == [proc.pid]
    assert result["running"][0]["found_by"] == f"pattern {marker}"
    assert result["running"][0]["command"].endswith(marker)


def test_waits_for_processes_that_exit_by_themselves(tmp_path):
    marker = f"lifeboat-leftover-test:{tmp_path}:short"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)", marker])
    try:
        started = time.monotonic()
        result = run_module("leftover_processes", patterns=[marker], timeout=20)
        assert result["clean"] is True and result["running"] == [] and time.monotonic() - started < 15
        assert [p["pid"] for p in result["found"]] == []  # gone before the report
    finally:
        proc.kill()
        proc.wait()


def test_kill_ends_stubborn_processes_and_removes_stale_pid_files(tmp_path, spawn):
    polite, polite_marker = spawn()
    stubborn, stubborn_marker = spawn("stubborn")
    pid_file = tmp_path / "svc.pid"
    pid_file.write_text(f"{polite.pid}\n")
    stale = tmp_path / "old.pid"
    stale.write_text("4194303\n")
    args = {"pid_files": [str(pid_file), str(stale)], "patterns": [stubborn_marker], "kill": True, "kill_timeout": 1, "remove_stale": True}

    preview = run_module("leftover_processes", check=True, **args)
    assert preview["changed"] is True and sorted(preview["killed"]) == sorted([polite.pid, stubborn.pid])
    assert polite.poll() is None and stubborn.poll() is None and pid_file.exists() and stale.exists()

    result = run_module("leftover_processes", **args)
    assert not result.failed, result
    assert result["changed"] is True and result["clean"] is True
    assert sorted(result["killed"]) == sorted([polite.pid, stubborn.pid])
    assert polite.wait(5) == -15  # SIGTERM
    assert stubborn.wait(5) == -9  # ignored SIGTERM, got SIGKILL
    assert sorted(result["removed"]) == sorted([str(pid_file), str(stale)])
    assert not pid_file.exists() and not stale.exists()


def test_needs_something_to_look_for():
    result = run_module("leftover_processes")
    assert result.failed and "pid_files and/or patterns" in result["msg"]
    bad = run_module("leftover_processes", patterns=["celery("])
    assert bad.failed and "not a valid regular expression" in bad["msg"]


def test_pid_1_is_never_a_leftover(tmp_path):
    pid_file = tmp_path / "init.pid"
    pid_file.write_text("1\n")
    result = run_module("leftover_processes", pid_files=[str(pid_file)], kill=True)
    assert result["killed"] == [] and result["running"] == [] and os.path.exists("/proc/1")
