"""Report the largest and most complex functions under plugins/ (radon).

A report, not a gate: `make lint` prints it so that a function growing past the
anatomy's limits (docs/architecture.md: about 60 lines, cyclomatic complexity about 15)
is seen in review. It always exits 0.

    python scripts/function-report.py [--top N] [PATH ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from radon.complexity import cc_rank, cc_visit

MAX_LINES = 60
MAX_COMPLEXITY = 15


def functions(path):
    """(lines, complexity, name) of every function and method in ``path``."""
    try:
        blocks = cc_visit(path.read_text(encoding="utf-8"))
    except SyntaxError as exc:
        print("%s: not parsed (%s)" % (path, exc), file=sys.stderr)
        return
    # cc_visit lists methods on their own as well as inside their class: skip the classes.
    for item in blocks:
        if type(item).__name__ == "Class":
            continue
        name = "%s.%s" % (item.classname, item.name) if item.classname else item.name
        yield item.endline - item.lineno + 1, item.complexity, "%s:%d %s" % (path, item.lineno, name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=["plugins"])
    parser.add_argument("--top", type=int, default=10, help="how many of the largest to list")
    args = parser.parse_args()
    rows = []
    for root in args.paths:
        root = Path(root)
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            rows.extend(functions(path))
    over = [r for r in rows if r[0] > MAX_LINES or r[1] > MAX_COMPLEXITY]
    print("functions: %d; over %d lines or complexity %d: %d" % (len(rows), MAX_LINES, MAX_COMPLEXITY, len(over)))
    for lines, complexity, where in sorted(over, key=lambda r: (-r[0], -r[1])):
        print("  OVER %4d lines  cc %3d (%s)  %s" % (lines, complexity, cc_rank(complexity), where))
    print("largest %d:" % args.top)
    for lines, complexity, where in sorted(rows, key=lambda r: (-r[0], -r[1]))[: args.top]:
        print("  %4d lines  cc %3d (%s)  %s" % (lines, complexity, cc_rank(complexity), where))
    print("most complex %d:" % args.top)
    for lines, complexity, where in sorted(rows, key=lambda r: (-r[1], -r[0]))[: args.top]:
        print("  cc %3d (%s)  %4d lines  %s" % (complexity, cc_rank(complexity), lines, where))
    return 0


if __name__ == "__main__":
    sys.exit(main())
