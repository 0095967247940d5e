"""Run the collection's modules and playbooks the way Ansible does, for integration tests.

``run_module`` executes a module file in a fresh Python process with its arguments in a
JSON file (what AnsiballZ does on a managed node, minus the zip), so each call is a real
process with real exit paths. ``run_playbook`` goes through ansible-playbook, for tests
that check what an operator sees (``-vvv`` output, no_log).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = ROOT / ".build" / "collections"
# The managed node's Python: the test's own by default; scripts/matrix.sh sets another
# (Python 3.9 with the oldest supported ansible-core's module_utils).
NODE_PYTHON = os.environ.get("LIFEBOAT_MODULE_PYTHON") or sys.executable
MODULE_PACKAGE = "ansible_collections.lifeboat.backup.plugins.modules"
# Every module this test process starts carries this in its environment, so that the session
# keepers its tests leave (a session started and never sealed keeps its lock for the lease,
# an hour) can be found and stopped when the tests end: stop_left_processes.
RUN_MARKER = ("LIFEBOAT_TEST_RUN", "%d-%d" % (os.getpid(), int(time.time())))


class ModuleResult(dict):
    """The module's JSON result, plus how the process ended."""

    rc = 0
    stderr = ""
    stdout = ""

    @property
    def failed(self):
        return bool(self.get("failed"))


def module_env(extra=None):
    env = dict(os.environ)
    env.update([RUN_MARKER])
    env["PYTHONPATH"] = str(COLLECTIONS) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def run_module(module_name, /, check=False, diff=False, env=None, run_timeout=600, python=None, prefix=(), **args):
    """Run lifeboat.backup.<module_name> with ``args``; return its result (never raises on failure).

    ``args`` are the module's options (``name``, ``timeout`` ... included); the keywords
    before them control the run: check and diff mode, extra environment, how long to wait,
    which Python, and a command prefix (e.g. setpriv) to run the module under."""
    payload = dict(args)
    payload["_ansible_check_mode"] = check
    payload["_ansible_diff"] = diff
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": payload}, handle)
        args_path = handle.name
    try:
        proc = subprocess.run(
            [*prefix, python or NODE_PYTHON, "-m", "%s.%s" % (MODULE_PACKAGE, module_name), args_path],
            capture_output=True,
            text=True,
            env=module_env(env),
            timeout=run_timeout,
            cwd="/",
            check=False,
        )
    finally:
        os.unlink(args_path)
    try:
        result = ModuleResult(json.loads(proc.stdout))
    except ValueError:
        result = ModuleResult(failed=True, msg="module printed no JSON", module_stdout=proc.stdout)
    result.rc = proc.returncode
    result.stderr = proc.stderr
    result.stdout = proc.stdout
    return result


def stop_left_processes():
    """SIGTERM the processes still running with this test process's RUN_MARKER (session keepers)."""
    marker = ("%s=%s" % RUN_MARKER).encode() + b"\0"
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % entry, "rb") as handle:
                if marker in handle.read():
                    os.kill(int(entry), signal.SIGTERM)
        except OSError:
            continue


def run_playbook(playbook, workdir, extra_vars=None, verbosity=0, check=False, inventory=None, env=None, timeout=900):
    """Run ansible-playbook; return the CompletedProcess (stdout and stderr merged)."""
    workdir = Path(workdir)
    path = workdir / "playbook.yml"
    path.write_text(playbook)
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), str(path), "-i", inventory or "localhost,", "-c", "local"]
    if extra_vars:
        vars_path = workdir / "extra_vars.json"
        vars_path.write_text(json.dumps(extra_vars))
        cmd += ["-e", "@%s" % vars_path]
    if verbosity:
        cmd.append("-" + "v" * verbosity)
    if check:
        cmd.append("--check")
    run_env = module_env(
        {
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
            "ANSIBLE_PYTHON_INTERPRETER": NODE_PYTHON,
            "ANSIBLE_LOCALHOST_WARNING": "false",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "false",
        }
    )
    run_env.update(env or {})
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=run_env, cwd=str(workdir), timeout=timeout, check=False)


class SpawnedModule:
    """A module running in the background (``spawn_module``): kill it, or wait for its result."""

    def __init__(self, proc, args_path):
        self.proc = proc
        self.args_path = args_path

    def kill(self, sig=9):
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)
        self._cleanup()

    def result(self, timeout=600):
        stdout, stderr = self.proc.communicate(timeout=timeout)
        self._cleanup()
        try:
            result = ModuleResult(json.loads(stdout))
        except ValueError:
            result = ModuleResult(failed=True, msg="module printed no JSON", module_stdout=stdout)
        result.rc, result.stdout, result.stderr = self.proc.returncode, stdout, stderr
        return result

    def _cleanup(self):
        if os.path.exists(self.args_path):
            os.unlink(self.args_path)


def spawn_module(module_name, /, env=None, python=None, **args):
    """Start lifeboat.backup.<module_name> like ``run_module`` does, without waiting for it."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=False, _ansible_diff=False)}, handle)
        args_path = handle.name
    proc = subprocess.Popen(
        [python or NODE_PYTHON, "-m", "%s.%s" % (MODULE_PACKAGE, module_name), args_path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=module_env(env),
        cwd="/",
    )
    return SpawnedModule(proc, args_path)
