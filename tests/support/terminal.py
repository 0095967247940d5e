"""Run shell commands on a pseudo-terminal and answer passphrase prompts, as an operator would
(age reads passphrases from the terminal only)."""

from __future__ import annotations

import os
import pty
import select
import time


def run_in_terminal(script, answer, timeout=120, prompt=b"enter passphrase", env=None):
    """Run ``script`` with bash -e -o pipefail on a pty; type ``answer`` at each prompt.
    Returns (exit status, output)."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        if env is not None:
            os.execvpe("bash", ["bash", "-e", "-o", "pipefail", "-c", script], env)
        os.execvp("bash", ["bash", "-e", "-o", "pipefail", "-c", script])
    output = b""
    answered = 0
    deadline = time.time() + timeout
    while time.time() < deadline:
        ready, _w, _x = select.select([fd], [], [], 0.5)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            output += data
            if output.lower().count(prompt) > answered:
                os.write(fd, answer.encode() + b"\n")
                answered += 1
    _pid, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode("utf-8", "replace")
