"""The fault matrix: which injected faults were tried, and what the product did about each.

A fault test is marked and records what its own checks saw, through the ``fault`` fixture::

    @pytest.mark.fault("disk full", "destination fills up while config_archive writes", item="18.5")
    def test_disk_full(place, fault):
        result = run_module(...)
        fault.observe(false_success=not result.failed, data_lost=sha(image) != before)
        fault.scan([PASSPHRASE], result)          # secret_leaked: the secret in output or result
        assert result.failed ...

Each observation is True (bad: the product claimed success on a fault, lost data, left a
service down, showed a secret), False (checked, fine) or None (not checked by this test);
several observations of one test are or-ed. The test's outcome (passed, failed, error,
skipped) is recorded beside them, so an observation that made the test fail is still
counted. A marked test that passes without observing anything, or with a bad observation
it did not assert, is an error: the matrix counts only what was checked, and a test and the
matrix never disagree.

Every pytest process (each xdist worker, or the only process) appends one JSON line per
fault test to its own part file as the test ends; the process that is not a worker
merges the parts of its run into ``.build/fault-matrix.json`` at the end of the session
(``LIFEBOAT_FAULT_MATRIX`` names another file). A session that selected no fault test
leaves the matrix alone. ``scripts/fault-summary.py`` prints it.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MATRIX = ROOT / ".build" / "fault-matrix.json"
RUN_ENV = "LIFEBOAT_FAULT_RUN"
OBSERVATIONS = ("false_success", "data_lost", "services_left_down", "secret_leaked")
FORMAT = 1
_STALE_PART_SECONDS = 2 * 86400
_OBSERVATION_KEY = pytest.StashKey()
_PHASES_KEY = pytest.StashKey()
_STARTED_KEY = pytest.StashKey()


def matrix_path():
    return Path(os.environ.get("LIFEBOAT_FAULT_MATRIX") or DEFAULT_MATRIX)


def parts_dir(matrix):
    return matrix.with_name(matrix.name + ".parts")


class FaultObservation:
    """What one fault test saw. ``observe`` and ``scan`` may be called any number of times."""

    def __init__(self):
        self.values = dict.fromkeys(OBSERVATIONS)

    def observe(self, **observed):
        """Record observations (keywords among OBSERVATIONS, booleans); a True is never undone."""
        for name, value in observed.items():
            if name not in OBSERVATIONS:
                raise TypeError("unknown fault observation %r (one of %s)" % (name, ", ".join(OBSERVATIONS)))
            self.values[name] = bool(value) or bool(self.values[name])
        return self

    def scan(self, secrets, *outputs):
        """secret_leaked: any of ``secrets`` in any of ``outputs`` (a module result with its
        stdout/stderr, a CompletedProcess, a string or any JSON-able value). Returns the hits."""
        hits = []
        for output in outputs:
            text = _text_of(output)
            hits += [secret for secret in secrets if secret and secret in text]
        self.observe(secret_leaked=bool(hits))
        return hits

    @property
    def observed(self):
        return any(value is not None for value in self.values.values())


def _text_of(output):
    if isinstance(output, str):
        return output
    pieces = []
    for attribute in ("stdout", "stderr"):
        value = getattr(output, attribute, None)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            pieces.append(value)
    if isinstance(output, (dict, list, tuple)):
        pieces.append(json.dumps(output, default=str))
    return "\n".join(pieces)


@pytest.fixture
def fault(request):
    """The observation of a ``@pytest.mark.fault`` test (see the module's docstring)."""
    if request.node.get_closest_marker("fault") is None:
        raise pytest.UsageError("the fault fixture is for tests marked @pytest.mark.fault(kind, fault)")
    observation = FaultObservation()
    request.node.stash[_OBSERVATION_KEY] = observation
    yield observation
    if not _passed_so_far(request.node):
        return
    if not observation.observed:
        pytest.fail("fault test %s recorded no observation (fault.observe / fault.scan)" % request.node.nodeid, pytrace=False)
    bad = [name for name, value in observation.values.items() if value]
    if bad:
        # Every observation is a check: the matrix and the test never disagree.
        pytest.fail("fault test %s observed: %s" % (request.node.nodeid, ", ".join(bad)), pytrace=False)


def _passed_so_far(item):
    return all(outcome == "passed" for outcome, _seconds in item.stash.get(_PHASES_KEY, {}).values())


# ---- hooks ---------------------------------------------------------------------------


def _worker_id(config):
    return getattr(config, "workerinput", {}).get("workerid")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "fault(kind, fault, item=None): an injected fault; the test records what it saw through the fault fixture (tests/support/fault_matrix.py)",
    )
    if _worker_id(config) is None:
        # The run's id reaches the xdist workers through their environment.
        os.environ[RUN_ENV] = "%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
        config.stash[_STARTED_KEY] = time.time()
        _remove_stale_parts(parts_dir(matrix_path()))


def _remove_stale_parts(directory):
    if not directory.is_dir():
        return
    for part in directory.iterdir():
        try:
            if part.stat().st_mtime < time.time() - _STALE_PART_SECONDS:
                part.unlink()
        except OSError:
            pass


def _part_file(config):
    return parts_dir(matrix_path()) / ("%s-%s.jsonl" % (os.environ.get(RUN_ENV, "norun"), _worker_id(config) or "main"))


def _append(config, record):
    part = _part_file(config)
    part.parent.mkdir(parents=True, exist_ok=True)
    with open(part, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


def pytest_collection_finish(session):
    # After deselection (-m, -k): the fault tests this process will run (all of them under
    # xdist, where every worker collects every test; the merge takes the union). A
    # --collect-only run runs nothing: it leaves the matrix alone.
    if session.config.option.collectonly:
        return
    wanted = sorted(item.nodeid for item in session.items if item.get_closest_marker("fault"))
    if wanted:
        _append(session.config, {"selected": wanted})


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    marker = item.get_closest_marker("fault")
    if marker is not None:
        phases = item.stash.setdefault(_PHASES_KEY, {})
        phases[call.when] = ("skipped" if report.skipped else report.outcome, report.duration)
        if call.when == "teardown":
            _append(item.config, _record(item, marker, phases))
    return report


def _record(item, marker, phases):
    observation = item.stash.get(_OBSERVATION_KEY, None)
    return {
        "test": item.nodeid,
        "kind": marker.args[0] if marker.args else marker.kwargs.get("kind", "unnamed"),
        "fault": marker.args[1] if len(marker.args) > 1 else marker.kwargs.get("fault", item.name),
        "item": marker.kwargs.get("item"),
        "outcome": _outcome({when: outcome for when, (outcome, _seconds) in phases.items()}),
        "observed": dict(observation.values) if observation else dict.fromkeys(OBSERVATIONS),
        "seconds": round(sum(seconds for _outcome, seconds in phases.values()), 2),
        "worker": _worker_id(item.config) or "main",
    }


def _outcome(phases):
    if "skipped" in (phases.get("setup"), phases.get("call")):
        return "skipped"
    if phases.get("setup") == "failed" or phases.get("teardown") == "failed":
        return "error"
    return phases.get("call", "error")


def pytest_sessionfinish(session):
    config = session.config
    if _worker_id(config) is not None:
        return
    matrix = matrix_path()
    run = os.environ.get(RUN_ENV, "norun")
    parts = sorted(parts_dir(matrix).glob(run + "-*.jsonl"))
    merged = merge_parts(parts)
    for part in parts:
        part.unlink()
    if not merged["selected"] and not merged["faults"]:
        return
    started = config.stash.get(_STARTED_KEY, time.time())
    merged.update(
        format=FORMAT,
        started=_iso(started),
        finished=_iso(time.time()),
        command=" ".join(["pytest", *config.invocation_params.args]),
    )
    matrix.parent.mkdir(parents=True, exist_ok=True)
    temporary = matrix.with_name(matrix.name + ".tmp")
    temporary.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(matrix)


def _iso(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


def merge_parts(parts):
    """{"selected": [...], "faults": [...], "not_run": [...]} from the part files of one run.

    Under xdist every worker collects every test, so "selected" is the union; a selected test
    with no record (its worker crashed) is listed in "not_run"."""
    selected, faults = set(), {}
    for part in parts:
        for line in Path(part).read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                print("fault matrix: a torn line in %s is ignored" % part, file=sys.stderr)
                continue
            if "selected" in record:
                selected.update(record["selected"])
            else:
                faults[record["test"]] = record
    return {
        "selected": sorted(selected),
        "faults": [faults[test] for test in sorted(faults)],
        "not_run": sorted(selected - set(faults)),
    }
