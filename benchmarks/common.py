"""What every benchmark shares: the method of benchmarks/README.md, written once.

- ``gen_tree``, ``make_key``, ``tree_size``: the generated configuration tree, the age key
  pair, a tree's size; ``PROFILE_ENV`` and ``task_seconds``: one playbook task's time.
- ``warm_tree``: the page cache really holds the data before the first round (the files
  are read: GNU tar skips file contents when it writes to /dev/null).
- ``Rounds``: the paths run in alternating rounds (A B C, A B C, ...), at least three
  each; every sample records its seconds, the CPU-seconds of this benchmark's own
  process tree while it ran (on two busy cores, time is CPU: a path that needs more CPU
  than the native one cannot keep up with it, whatever its threads), the load average
  when it started and the share of the machine other processes took while it ran
  (``foreign``: /proc/stat minus this benchmark's own process tree).
- ``sha256_rate``: SHA-256 throughput of this machine, to cost the digests a format promises.
- ``Goal`` / ``summary``: each ratio is printed with its goal and a verdict; a verdict
  on a busy machine says so instead of claiming a goal met or missed.
- ``record_summary``: one JSON line per goal for scripts/run-benchmarks.sh's table.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

# Above this share of the machine taken by other processes during the samples, a ratio
# is printed but not judged: the two sides did not run on the same machine.
BUSY_SHARE = 0.10
_TICKS = os.sysconf("SC_CLK_TCK")


def load_text():
    one, five, fifteen = os.getloadavg()
    return "%.2f %.2f %.2f" % (one, five, fifteen)


def warm_tree(path):
    """Read every file under ``path`` once, so each path starts with the data cached.
    (``tar -cf /dev/null`` would not: GNU tar does not read file contents for /dev/null.)"""
    subprocess.run(["bash", "-o", "pipefail", "-c", 'tar -C / -cf - "$1" | cat > /dev/null', "warm", str(path).lstrip("/")], check=True)


# ansible-playbook's environment for a benchmark that times single tasks (task_seconds).
PROFILE_ENV = {"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks", "PROFILE_TASKS_SORT_ORDER": "none"}


def task_seconds(output, name):
    """Seconds of one task from ansible.posix.profile_tasks' recap (run with PROFILE_ENV)."""
    match = re.search(r"^%s\s+-+\s+([0-9.]+)s" % re.escape(name), output, flags=re.M)
    if not match:
        raise SystemExit("profile_tasks printed no time for %s:\n%s" % (name, output[-3000:]))
    return float(match.group(1))


def tree_size(path):
    """(files, bytes) under ``path``."""
    files = sum(len(f) for _d, _s, f in os.walk(path))
    size = sum(os.path.getsize(os.path.join(d, n)) for d, _s, fs in os.walk(path) for n in fs)
    return files, size


def gen_tree(path, size_mib, seed):
    """A tree of text-like configuration files, mixed sizes (image_bench/gen_tree.py)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "image_bench", "gen_tree.py")
    subprocess.run([sys.executable, script, str(path), str(size_mib), str(seed)], check=True, stdout=subprocess.DEVNULL)


def make_key(base):
    """(identity file, recipient) of a new age key pair under ``base``, made with age-keygen."""
    identity_file = base / "key.txt"
    # A --workdir kept from an earlier run holds that run's key: age-keygen will not overwrite it.
    identity_file.unlink(missing_ok=True)
    subprocess.run(["age-keygen", "-o", str(identity_file)], check=True, capture_output=True)
    os.chmod(identity_file, 0o600)
    recipient = subprocess.run(["age-keygen", "-y", str(identity_file)], check=True, capture_output=True, text=True).stdout.strip()
    return identity_file, recipient


def _busy_ticks():
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]) - idle


def machine_cpu_seconds():
    """CPU time the whole machine has spent busy since boot (all cores), in seconds."""
    return _busy_ticks() / _TICKS


def _tree_ticks(root=None):
    """CPU ticks of ``root`` (this process) and every live descendant, with what they reaped."""
    root = root or os.getpid()
    parents = {}
    ticks = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as handle:
                data = handle.read()
        except OSError:
            continue
        rest = data[data.rindex(")") + 2 :].split()
        parents[int(name)] = int(rest[1])
        ticks[int(name)] = sum(int(x) for x in rest[11:15])
    total = 0
    for pid, value in ticks.items():
        cursor, seen = pid, 0
        while cursor and cursor != root and seen < 64:
            cursor, seen = parents.get(cursor), seen + 1
        if cursor == root:
            total += value
    return total


def digest_cost(label, module, native, file_bytes, stored_bytes):
    """A line comparing the CPU the module path spent beyond the native one with what the
    image format's SHA-256 digests of a tar member of files cost on this machine: on two
    busy cores, CPU is time, and these digests are work the native pipeline does not do."""
    if module.cpu is None or native.cpu is None:
        return "CPU-seconds: not measured"
    # Every file for the index, the member's plaintext (the same bytes and the tar headers)
    # and its stored bytes.
    hashed = 2 * file_bytes + stored_bytes
    rate = sha256_rate()
    spent = "CPU-seconds (medians): %s %.2f, native pipeline %.2f (%+.2f)" % (label, module.cpu, native.cpu, module.cpu - native.cpu)
    what = "each file for the index, the member's plaintext and its stored bytes"
    digests = "the image format's SHA-256 digests (%s: %.2f GB) take %.2f CPU-s at this machine's %.2f GB/s per core" % (
        what,
        hashed / 1e9,
        hashed / rate,
        rate / 1e9,
    )
    return spent + "; " + digests


def without_digests(label, bare, native):
    """The line of a diagnostic path run with its digests made no-ops (``NO_DIGESTS``)."""
    return "diagnostic: with those digests made no-ops (its image thrown away) %s takes %.2f s and %.2f CPU-s (medians): %.2fx the native pipeline" % (
        label,
        bare.median,
        bare.cpu,
        ratio(bare, native),
    )


class Sample:
    """One timed run: seconds, load average at its start, other processes' share of the
    machine, and the CPU-seconds of this benchmark's process tree (None: not known)."""

    def __init__(self, seconds, load, foreign, extra=None, cpu=None):
        self.seconds = seconds
        self.load = load
        self.foreign = foreign
        self.extra = extra or {}
        self.cpu = cpu


def measure(run):
    """Run ``run()`` (returns None or a dict of extra values, ``seconds`` overriding the
    wall time when the path times itself, e.g. one playbook task, and ``cpu_seconds`` the
    CPU-seconds of that timed part) and return a Sample. A path that times only a part of
    its run and gives no ``cpu_seconds`` has no CPU figure: the whole run's would mislead."""
    load = os.getloadavg()[0]
    busy0, ours0, start = _busy_ticks(), _tree_ticks(), time.time()
    extra = run() or {}
    elapsed = time.time() - start
    busy1, ours1 = _busy_ticks(), _tree_ticks()
    capacity = max(elapsed * _TICKS * (os.cpu_count() or 1), 1)
    foreign = max(0.0, ((busy1 - busy0) - (ours1 - ours0)) / capacity)
    cpu = extra.pop("cpu_seconds", None if "seconds" in extra else (ours1 - ours0) / _TICKS)
    return Sample(extra.pop("seconds", elapsed), load, foreign, extra, cpu)


# A directory whose sitecustomize.py makes the SHA-256 digests of _tree and _image no-ops in
# a module process started with it first on PYTHONPATH: a diagnostic path, to measure what
# the digests cost (its image is wrong, and thrown away).
NO_DIGESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "no_digests")


def no_digests_env(pythonpath):
    """The environment for a diagnostic module process without digests."""
    return {"PYTHONPATH": NO_DIGESTS + os.pathsep + pythonpath}


def children_cpu_seconds():
    """User and system CPU-seconds of the child processes this process has waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sha256_rate():
    """SHA-256 throughput of one core of this machine, in bytes per second (best of three
    passes over 64 MiB: hashlib, so OpenSSL with the CPU's SHA extensions if it has them)."""
    data = os.urandom(64 * 2**20)
    best = None
    for _pass in range(3):
        start = time.perf_counter()
        hashlib.sha256(data).digest()
        seconds = time.perf_counter() - start
        best = seconds if best is None else min(best, seconds)
    return len(data) / best


class Path:
    def __init__(self, label, run):
        self.label = label
        self.run = run
        self.samples = []

    @property
    def best(self):
        return min(s.seconds for s in self.samples)

    @property
    def median(self):
        return statistics.median(s.seconds for s in self.samples)

    @property
    def spread(self):
        """(slowest - fastest) / median."""
        seconds = [s.seconds for s in self.samples]
        return (max(seconds) - min(seconds)) / self.median if self.median else 0.0

    @property
    def foreign(self):
        return max(s.foreign for s in self.samples)

    @property
    def cpu(self):
        """Median CPU-seconds, or None when the path's samples have none."""
        known = [s.cpu for s in self.samples if s.cpu is not None]
        return statistics.median(known) if known else None

    @property
    def load(self):
        return max(s.load for s in self.samples)

    def last(self, key, default=None):
        return self.samples[-1].extra.get(key, default) if self.samples else default


class Rounds:
    """Paths run in alternating rounds: every round runs each path once, in order."""

    def __init__(self, title, rounds=3, warm=None):
        self.title = title
        self.rounds = rounds
        self.warm = warm
        self.paths = {}

    def add(self, label, run):
        self.paths[label] = Path(label, run)
        return self.paths[label]

    def run(self):
        for number in range(1, self.rounds + 1):
            for path in self.paths.values():
                # Untimed: the write-back another path left (a peer that never fsyncs) would
                # otherwise land in this one's fsync.
                os.sync()
                if self.warm:
                    self.warm()
                path.samples.append(measure(path.run))
            print(
                "  round %d/%d: %s; load %s"
                % (number, self.rounds, ", ".join("%s %.2f s" % (p.label, p.samples[-1].seconds) for p in self.paths.values()), load_text()),
                flush=True,
            )
        return self

    def __getitem__(self, label):
        return self.paths[label]

    def table(self, size_mb=None):
        print("\n%s (%d alternating rounds)" % (self.title, self.rounds))
        print("%-44s %8s %8s %7s %7s %9s %8s%s" % ("path", "best s", "median s", "spread", "CPU s", "max load", "others", "  MB/s (median)" if size_mb else ""))
        for path in self.paths.values():
            rate = "  %13.1f" % (size_mb / path.median) if size_mb else ""
            cpu = "-" if path.cpu is None else "%.2f" % path.cpu
            print(
                "%-44s %8.2f %8.2f %6.0f%% %7s %9.2f %7.0f%%%s"
                % (path.label, path.best, path.median, path.spread * 100, cpu, path.load, path.foreign * 100, rate)
            )


class Goal:
    """A ratio with its goal. ``higher``: the ratio must be >= target, else <= target."""

    def __init__(self, name, value, target, higher=True, unit="x", busy=0.0, note="", not_judged=None):
        self.not_judged = not_judged  # why this machine cannot judge the goal, if it cannot
        self.name = name
        self.value = value
        self.target = target
        self.higher = higher
        self.unit = unit
        self.busy = busy
        self.note = note

    @property
    def verdict(self):
        if self.value is None:
            return "not measured"
        if self.not_judged:
            return "not judged: %s" % self.not_judged
        if self.busy > BUSY_SHARE:
            return "not judged: others took %.0f%% of the machine" % (self.busy * 100)
        met = self.value >= self.target if self.higher else self.value <= self.target
        return "met" if met else "NOT MET"

    def line(self):
        value = "-" if self.value is None else ("%.2f%s" % (self.value, self.unit) if self.unit == "x" else "%.1f %s" % (self.value, self.unit))
        goal = "%s %s%s" % (">=" if self.higher else "<=", self.target, self.unit if self.unit == "x" else " " + self.unit)
        return "%-58s %10s   goal %-10s %s%s" % (self.name, value, goal, self.verdict, "  (%s)" % self.note if self.note else "")


def ratio(faster_path, slower_path):
    """Throughput of ``faster_path`` relative to ``slower_path`` from their medians: > 1 means faster."""
    return slower_path.median / faster_path.median


def busy(*paths):
    return max(p.foreign for p in paths)


def summary(bench, goals, small=False):
    """Print the goals with verdicts; write them for the combined table (``make bench``)."""
    print("\ngoals (%s; load average now %s)%s" % (bench, load_text(), " - SMALL MODE: correctness only, the numbers mean nothing" if small else ""))
    for goal in goals:
        print("  " + goal.line())
    record_summary(bench, goals, small)


def record_summary(bench, goals, small):
    path = os.environ.get("LIFEBOAT_BENCH_SUMMARY")
    if not path:
        return
    with open(path, "a") as handle:
        for goal in goals:
            handle.write(
                json.dumps(
                    {
                        "bench": bench,
                        "goal": goal.name,
                        "value": goal.value,
                        "unit": goal.unit,
                        "target": goal.target,
                        "higher": goal.higher,
                        "verdict": "small mode" if small else goal.verdict,
                        "load": load_text(),
                    }
                )
                + "\n"
            )


def peak_rss_mb(report_path):
    """Peak RSS in MB from a ``/usr/bin/time -f %M -o report_path`` report."""
    with open(report_path) as handle:
        return int(handle.read().split()[-1]) / 1024


def rss_goal(name, sizes_mb, target=150):
    """One goal line for peak RSS measured at two data sizes: under target at both, and flat
    (the larger run within 20 % of the smaller)."""
    (small_size, small_rss), (big_size, big_rss) = sizes_mb[0], sizes_mb[-1]
    note = "%.0f MB at %s, %.0f MB at %s" % (small_rss, small_size, big_rss, big_size)
    goals = [Goal("%s peak RSS" % name, big_rss, target, higher=False, unit="MB", note=note)]
    goals.append(Goal("%s RSS growth %s -> %s" % (name, small_size, big_size), big_rss / small_rss, 1.2, higher=False, note=note))
    return goals
