"""Print the fault matrix's summary: faults tried, passed, false successes, data lost,
services left down, secrets leaked, per kind of fault, and every test that went wrong.

The matrix is written by the fault tests (tests/support/fault_matrix.py) into
.build/fault-matrix.json at the end of `make faults`, `make integration` or `make test`.
A cell "0/12" reads "bad in 0 of the 12 tests that checked it". Exit status 0, or with
--strict 1 when no matrix was recorded or anything went wrong.

    python scripts/fault-summary.py [--matrix PATH] [--since EPOCH_SECONDS] [--strict]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OBSERVATIONS = (
    ("false_success", "false successes"),
    ("data_lost", "data lost"),
    ("services_left_down", "services left down"),
    ("secret_leaked", "secrets leaked"),
)


def load(path, since=None):
    """(matrix, None) or (None, why there is none)."""
    try:
        matrix = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "No fault matrix was recorded (%s does not exist): no fault test ran. Run `make faults`." % path
    except (OSError, ValueError) as exc:
        return None, "The fault matrix %s cannot be read (%s): run `make faults` again." % (path, exc)
    if since is not None:
        finished = datetime.datetime.fromisoformat(matrix.get("finished", "1970-01-01T00:00:00+00:00"))
        if finished.timestamp() < since:
            return None, "No fault matrix was recorded by this run: %s is from an earlier run (%s)." % (path, matrix.get("finished"))
    return matrix, None


def _counts(records):
    row = {"tried": len(records), "passed": sum(r["outcome"] == "passed" for r in records)}
    for key, _title in OBSERVATIONS:
        checked = [r["observed"].get(key) for r in records if r["observed"].get(key) is not None]
        row[key] = "%d/%d" % (sum(checked), len(checked))
    return row


def problems(matrix):
    """[(test, what went wrong)] for every fault test that did not pass cleanly."""
    found = []
    for record in matrix.get("faults", []):
        bad = [title for key, title in OBSERVATIONS if record["observed"].get(key)]
        if record["outcome"] != "passed":
            bad.insert(0, record["outcome"])
        if bad:
            found.append((record["test"], ", ".join(bad)))
    found += [(test, "selected but not run (its worker died?)") for test in matrix.get("not_run", [])]
    return found


def render(matrix):
    records = matrix.get("faults", [])
    kinds = sorted({r["kind"] for r in records})
    columns = ["tried", "passed"] + [key for key, _title in OBSERVATIONS]
    titles = ["faults tried", "passed"] + [title for _key, title in OBSERVATIONS]
    width = max([len("kind of fault"), len("total")] + [len(k) for k in kinds])
    lines = [
        "Fault matrix: %s, %s to %s" % (matrix.get("command", "?"), matrix.get("started", "?"), matrix.get("finished", "?")),
        "(a cell n/m: bad in n of the m tests that checked it)",
        "  ".join(["%-*s" % (width, "kind of fault")] + titles),
    ]
    for label, subset in [(kind, [r for r in records if r["kind"] == kind]) for kind in kinds] + [("total", records)]:
        row = _counts(subset)
        lines.append("  ".join(["%-*s" % (width, label)] + ["%*s" % (len(t), row[c]) for c, t in zip(columns, titles)]))
    bad = problems(matrix)
    lines.append("Faults that went wrong: %d" % len(bad) if bad else "Faults that went wrong: none")
    lines += ["  %s: %s" % entry for entry in bad]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    default = os.environ.get("LIFEBOAT_FAULT_MATRIX") or str(ROOT / ".build" / "fault-matrix.json")
    parser.add_argument("--matrix", default=default, help="the matrix file (default: %(default)s)")
    parser.add_argument("--since", type=float, help="ignore a matrix finished before this time (seconds since the epoch)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when there is no matrix or a fault went wrong")
    args = parser.parse_args(argv)
    matrix, why = load(args.matrix, args.since)
    if matrix is None:
        print(why)
        return 1 if args.strict else 0
    print(render(matrix))
    return 1 if args.strict and problems(matrix) else 0


if __name__ == "__main__":
    sys.exit(main())
