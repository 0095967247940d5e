"""A small daemon for the quiesce tests (pytest and Molecule): a real process with a PID
file, a start/stop event log, and optionally a TCP listener or a Redis queue consumer.

    toy_service.py NAME STATE_DIR [--port N] [--consume QUEUE --redis-port N [--redis-password-file F]] [--child]

Every start and stop is appended to STATE_DIR/events.log as "<time> start|stop NAME", so
a test can check the order services went down and came back. SIGTERM stops it cleanly
(PID file removed). --child also starts a helper process that ignores SIGTERM and
outlives the service: a leftover for the leftover checks to find.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("state_dir")
    parser.add_argument("--port", type=int)
    parser.add_argument("--consume")
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--redis-password-file")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per consumed item")
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()

    pid_file = os.path.join(args.state_dir, f"{args.name}.pid")
    events = os.path.join(args.state_dir, "events.log")

    def event(what: str) -> None:
        with open(events, "a", encoding="utf-8") as handle:
            handle.write(f"{time.time():.6f} {what} {args.name}\n")

    def stop(*_args) -> None:
        event("stop")
        try:
            os.unlink(pid_file)
        except FileNotFoundError:
            pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    with open(pid_file, "w", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()}\n")
    if args.child:
        ignore_term = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"
        marker = f"toy-leftover-{args.name}:{os.path.abspath(args.state_dir)}"
        subprocess.Popen([sys.executable, "-c", ignore_term, marker], start_new_session=True)
    event("start")

    if args.port:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", args.port))
        server.listen()
        while True:
            conn, _peer = server.accept()
            conn.close()
    if args.consume:
        import redis  # the worker's broker client, as a Celery worker has

        password = None
        if args.redis_password_file:
            with open(args.redis_password_file, encoding="utf-8") as handle:
                password = handle.read().strip()
        client = redis.Redis(port=args.redis_port, password=password)
        while True:
            if client.blpop([args.consume], timeout=1):
                time.sleep(args.delay)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
