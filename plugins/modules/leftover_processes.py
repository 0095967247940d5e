#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: leftover_processes
short_description: Find processes and PID files a stopped service left behind, and end them when told
version_added: 0.1.0
description:
  - After a service was stopped, looks for what should be gone - the processes named by its
    PID files and the processes whose command line matches O(patterns) - the C(ps auxf | grep)
    and C(ls /var/run) steps of a manual shutdown.
  - Waits up to O(timeout) seconds for them to exit on their own (a stop command often
    returns before the last worker has exited).
  - Reports what is still running, and PID files whose process is gone (stale).
  - Ends the processes still running only with O(kill=true) (C(SIGTERM), then C(SIGKILL)
    after O(kill_timeout) seconds), and removes stale PID files only with
    O(remove_stale=true). Otherwise it changes nothing.
  - Never considers itself, the processes it runs under (the Ansible connection, the
    controller on a local connection), PID 1 or kernel threads.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
attributes:
  check_mode:
    support: full
    details: Reports what would be ended or removed; ends and removes nothing, and does not wait.
  diff_mode:
    support: none
  platform:
    platforms: linux
    details: Finds processes through C(/proc) (command lines, owners, start times).
options:
  pid_files:
    description:
      - PID files of the service (absolute paths, glob patterns allowed), for example
        C(/var/run/celery/*.pid).
    type: list
    elements: path
    default: []
  patterns:
    description:
      - Regular expressions (Python C(re.search)) matched against each process's full command
        line, arguments included. A matching process is a leftover. Make them specific -
        C(celery.*beat) rather than C(beat).
    type: list
    elements: str
    default: []
  timeout:
    description:
      - Seconds to wait for the processes to exit by themselves before reporting them.
    type: int
    default: 0
  kill:
    description:
      - End the processes still running after O(timeout) - C(SIGTERM), then C(SIGKILL) to those
        still alive after O(kill_timeout) seconds.
    type: bool
    default: false
  kill_timeout:
    description:
      - Seconds between C(SIGTERM) and C(SIGKILL) with O(kill=true).
    type: int
    default: 10
  remove_stale:
    description:
      - Remove PID files whose process is gone (and those emptied by O(kill)).
    type: bool
    default: false
seealso:
  - name: The quiesce role (docs/quiesce.md)
    description: Stops a platform's services in order, checks for leftovers with this module and starts everything again.
    link: https://github.com/lifeboat-backup/lifeboat.backup/blob/main/docs/quiesce.md
"""

EXAMPLES = r"""
- name: Is anything of the Celery workers left? (report only)
  lifeboat.backup.leftover_processes:
    pid_files: [/var/run/eclecticiq/*.pid]
    patterns: ['celery .*(worker|beat)']
    timeout: 30
  register: leftovers

- name: End what is left and remove stale PID files
  lifeboat.backup.leftover_processes:
    pid_files: [/var/run/eclecticiq/*.pid]
    patterns: ['celery .*(worker|beat)']
    kill: true
    remove_stale: true
"""

RETURN = r"""
running:
  description: Processes still running at the end (after the wait, and after O(kill)).
  returned: always
  type: list
  elements: dict
  contains:
    pid:
      description: Process id.
      type: int
    user:
      description: Owner of the process.
      type: str
    command:
      description: Command line.
      type: str
    found_by:
      description: The PID file or pattern that found it.
      type: str
  sample: [{pid: 4242, user: celery, command: "celery -A app beat", found_by: "pattern celery .*beat"}]
found:
  description: Processes found before any was ended (same fields as RV(running)).
  returned: always
  type: list
  elements: dict
  sample: []
stale_pid_files:
  description: PID files naming a process that is gone, or holding no process id.
  returned: always
  type: list
  elements: str
  sample: [/var/run/celery/beat.pid]
killed:
  description: Process ids that were sent a signal (would be, in check mode).
  returned: always
  type: list
  elements: int
  sample: [4242]
removed:
  description: PID files removed (would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [/var/run/celery/beat.pid]
clean:
  description: Whether no leftover process was running at the end.
  returned: always
  type: bool
  sample: true
lifeboat_succeeded:
  description:
    - C(true) in every successful result of a lifeboat.backup module, absent from every failure.
    - The roles run modules with C(failed_when) false and count every result without it (a failure, a crash,
      a timeout) as failed; see docs/architecture.md, section Module result contract.
  returned: success
  type: bool
  sample: true
  version_added: 0.2.0
"""

import glob
import os
import pwd
import re
import signal
import time

from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule


def read_proc(pid):
    """(command line, ppid, state, uid) of a process, or None if it is gone or a kernel thread."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        uid = os.stat(f"/proc/{pid}").st_uid
    except (OSError, IndexError):
        return None
    if not raw:
        return None  # kernel thread, or a zombie whose memory is gone
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace"), int(fields[1]), fields[0], uid


def user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def protected_pids():
    """This process, its ancestors (the Ansible connection, the controller when local) and init."""
    pids = {1, os.getpid()}
    pid = os.getppid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        info = read_proc(pid)
        if info is None:
            break
        pid = info[1]
    return pids


def alive(pid):
    info = read_proc(pid)
    return info is not None and info[2] != "Z"


def read_pid_file(path):
    try:
        with open(path) as handle:
            text = handle.read().strip()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return None


def scan_pid_files(pid_file_patterns, protected, found):
    """{pid file: pid or None}; the live processes they name go into ``found``."""
    pid_files = {}
    for pattern in pid_file_patterns:
        for path in sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]:
            if not os.path.isfile(path):
                continue
            pid = read_pid_file(path)
            pid_files[path] = pid
            if pid and pid not in protected:
                info = read_proc(pid)
                if info and info[2] != "Z":
                    found[pid] = {"pid": pid, "user": user_name(info[3]), "command": info[0], "found_by": f"pid file {path}"}
    return pid_files


def scan_commands(regexes, protected, found):
    """Live processes whose command line matches one of ``regexes`` go into ``found``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in protected or pid in found:
            continue
        info = read_proc(pid)
        if info is None or info[2] == "Z":
            continue
        regex = next((r for r in regexes if r.search(info[0])), None)
        if regex is not None:
            found[pid] = {"pid": pid, "user": user_name(info[3]), "command": info[0], "found_by": f"pattern {regex.pattern}"}


def scan(pid_file_patterns, regexes, protected):
    """({pid: process record}, {pid file: pid or None}) of what the service left."""
    found = {}
    pid_files = scan_pid_files(pid_file_patterns, protected, found)
    if regexes:
        scan_commands(regexes, protected, found)
    return found, pid_files


def wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    remaining = [p for p in pids if alive(p)]
    while remaining and time.monotonic() < deadline:
        time.sleep(0.2)
        remaining = [p for p in remaining if alive(p)]
    return remaining


def end_processes(pids, kill_timeout):
    """SIGTERM, then SIGKILL what is left. Returns the pids signalled."""
    signalled = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            signalled.append(pid)
        except ProcessLookupError:
            continue
    stubborn = wait_gone(signalled, kill_timeout)
    for pid in stubborn:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    wait_gone(stubborn, 5)
    return signalled


def compile_patterns(patterns):
    regexes = []
    for pattern in patterns:
        try:
            regexes.append(re.compile(pattern))
        except re.error as exc:
            raise OptionError("patterns", f"patterns: {pattern!r} is not a valid regular expression: {exc}") from None
    return regexes


def remove_stale(stale, check_mode, result):
    result["changed"] = True
    for path in stale:
        if not check_mode:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise LifeboatError(f"cannot remove the stale PID file {path}: {exc.strerror}", **result) from None
        result["removed"].append(path)


def end_found(found, pid_files, params, check_mode, result, rescan):
    """kill=true: end what was found; returns the scan after it (check mode: the same)."""
    result["changed"] = True
    if check_mode:
        result["killed"] = sorted(found)
        return found, pid_files
    result["killed"] = end_processes(sorted(found), params["kill_timeout"])
    return rescan()


def stale_pid_files(pid_files, protected, would_kill):
    """PID files whose process is gone (or is ours); with ``would_kill`` (check mode), all."""
    if would_kill:
        return sorted(pid_files)  # every PID file would be stale once its process is ended
    live_pids = {p for p in pid_files.values() if p and alive(p)}
    return sorted(path for path, pid in pid_files.items() if pid not in live_pids or pid in protected)


def run(module):
    params = module.params
    check_mode = module.check_mode
    if not params["pid_files"] and not params["patterns"]:
        raise OptionError("pid_files", "give pid_files and/or patterns: what the stopped service may have left behind")
    regexes = compile_patterns(params["patterns"])
    protected = protected_pids()

    def rescan():
        return scan(params["pid_files"], regexes, protected)

    found, pid_files = rescan()
    if found and params["timeout"] > 0 and not check_mode:
        wait_gone(list(found), params["timeout"])
        found, pid_files = rescan()
    result = {"changed": False, "found": sorted(found.values(), key=lambda p: p["pid"]), "killed": [], "removed": [], "stale_pid_files": []}
    if found and params["kill"]:
        found, pid_files = end_found(found, pid_files, params, check_mode, result, rescan)
    would_kill = check_mode and params["kill"]
    result["stale_pid_files"] = stale = stale_pid_files(pid_files, protected, would_kill)
    if stale and params["remove_stale"]:
        remove_stale(stale, check_mode, result)
    running = [] if would_kill else sorted(found.values(), key=lambda p: p["pid"])
    result.update(running=running, clean=not running)
    return result


def main():
    module = LifeboatModule(
        argument_spec=dict(
            pid_files=dict(type="list", elements="path", default=[]),
            patterns=dict(type="list", elements="str", default=[]),
            timeout=dict(type="int", default=0),
            kill=dict(type="bool", default=False),
            kill_timeout=dict(type="int", default=10),
            remove_stale=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    module.run(run)


if __name__ == "__main__":
    main()
