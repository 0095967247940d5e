"""_proc additions for the PostgreSQL component: Tee + Feed (a verifier reading the same
bytes as the sink), Watched (stderr line by line), env entries that unset variables."""

from __future__ import annotations

import io
import os
import threading
import time

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _proc


def test_tee_feeds_every_reader_and_keeps_head_and_tail():
    sink = io.BytesIO()
    counter = _proc.Feed(["wc", "-c"])
    tee = _proc.Tee(sink, [counter], head_size=4, tail_size=4)
    for chunk in (b"PGDMP", b"-middle-", b"end!"):
        tee.write(chunk)
    out, _err = counter.finish()
    assert sink.getvalue() == b"PGDMP-middle-end!"
    assert int(out.strip()) == 17 and tee.size == 17
    assert (tee.head, tee.tail) == (b"PGDM", b"end!")


def test_a_feed_that_stops_reading_early_is_not_an_error():
    head = _proc.Feed(["head", "-c", "3"])
    for _round in range(200):
        head.write(b"x" * 65536)  # far beyond the pipe buffer: writes after its exit are dropped
    out, _err = head.finish()
    assert out == "xxx" and head.stopped_reading


def test_a_failing_feed_raises_with_its_error_output():
    feed = _proc.Feed(["sh", "-c", "cat >/dev/null; echo 'pg_restore: error: bad archive' >&2; exit 1"])
    feed.write(b"data")
    with pytest.raises(_proc.CommandError, match="exited 1: pg_restore: error: bad archive"):
        feed.finish()


def test_watched_yields_stderr_lines_and_checks_the_exit():
    with _proc.Watched(["sh", "-c", "echo one >&2; echo two >&2"]) as cmd:
        assert list(cmd.lines()) == ["one", "two"]
        cmd.check()
    with _proc.Watched(["sh", "-c", "echo 'tool: error: it broke' >&2; exit 2"]) as cmd:
        list(cmd.lines())
        with pytest.raises(_proc.CommandError, match="exited 2: tool: error: it broke"):
            cmd.check()


def test_env_none_unsets_an_inherited_variable(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "inherited")
    sink = io.BytesIO()
    _proc.stream_from(["sh", "-c", 'printf "%s" "${PGPASSWORD-unset}:$PGPASSFILE"'], sink, env={"PGPASSWORD": None, "PGPASSFILE": "/x"})
    assert sink.getvalue() == b"unset:/x"
    assert os.environ["PGPASSWORD"] == "inherited"


def test_run_returns_status_output_and_feeds_input_like_subprocess_run():
    done = _proc.run(["sh", "-c", "cat; echo err >&2; exit 3"], data="in\n", capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (3, "in\n", "err\n")


def test_run_kills_a_command_past_its_timeout():
    import subprocess
    import time

    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        _proc.run(["sleep", "30"], capture_output=True, timeout=0.5)
    assert time.monotonic() - started < 10, "the command is killed, not waited for"


def test_run_cannot_start_a_missing_program():
    with pytest.raises(OSError):
        _proc.run(["/nonexistent/lifeboat-no-such-tool"], capture_output=True)


def test_run_parallel_keeps_order_and_stops_starting_after_a_failure():
    """#15.3: the streams of a parallel dump or restore; results in task order, and after a
    failure no further task starts, the failure is raised once the running ones ended."""
    assert _proc.run_parallel([lambda n=n: n * n for n in range(7)], 3) == [0, 1, 4, 9, 16, 25, 36]
    started = []
    lock = threading.Lock()

    def task(n):
        with lock:
            started.append(n)
        if n == 1:
            raise RuntimeError("stream 1 died")
        time.sleep(0.05)
        return n

    with pytest.raises(RuntimeError, match="stream 1 died"):
        _proc.run_parallel([lambda n=n: task(n) for n in range(20)], 2)
    assert len(started) < 5, started


def test_run_parallel_ends_the_commands_still_running_when_a_task_fails(tmp_path):
    """A failed stream is reported when it fails: the other worker's command (here a
    sleep of a minute, standing for the largest table's COPY) is ended, not waited for."""
    marker = "lifeboat-test-%d" % os.getpid()
    script = tmp_path / "long.sh"
    script.write_text("#!/bin/sh\n# %s\nexec sleep 60\n" % marker)
    script.chmod(0o755)

    def long_stream():
        _proc.stream_from([str(script)], io.BytesIO())

    def failing_stream():
        time.sleep(0.5)
        raise RuntimeError("stream 2 died")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="stream 2 died"):
        _proc.run_parallel([long_stream, failing_stream], 2)
    assert time.monotonic() - started < 15
    # A command a task would start after the failure is not left running either.
    late = []

    def late_stream():
        time.sleep(1)
        try:
            long_stream()
        except _proc.CommandError as exc:
            late.append(str(exc))
            raise

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="stream 2 died"):
        _proc.run_parallel([failing_stream, late_stream], 2)
    assert time.monotonic() - started < 15
    assert late == ["not started: another task of the same run failed"]
    left = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p).find(str(script)) >= 0]
    assert not left, "a command of a failed run is still running"


def _cmdline(pid):
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
