"""Child process of `autograder.verdict.compare_sympy_isolated`: compares sympy answers.

Reads a JSON list of {"want": plain, "got": plain} (encoded) on stdin and writes a JSON list of
None (equivalent) or a reason. It runs with a memory limit set by its parent and is killed when
it runs past the time limit, so a pathological expression costs only its own submission.
"""

from __future__ import annotations

import json
import os
import sys

# sympy and the safe parser are imported before "ready" (the comparison imports them lazily):
# loading them is start-up time, not comparison time. The comparator's torch-free half is
# enough here: importing torch would triple the child's start.
import sympy

import course.safe_sympy  # noqa: F401
from course.compare_plain import compare, decode


def main() -> int:
    # The first simplify loads much of sympy lazily: start-up time too, like the imports.
    x = sympy.Symbol("x", positive=True)
    sympy.simplify(sympy.sqrt(x**2) * sympy.sin(x) ** 2 + sympy.cos(x) ** 2 - x)
    # The parent starts the comparison's time limit from here.
    print("ready", flush=True)
    jobs = json.loads(sys.stdin.read())
    answers = []
    for job in jobs:
        try:
            mismatch = compare(decode(job["want"]), decode(job["got"]))
        except (ValueError, KeyError, TypeError) as exc:
            answers.append(f"could not read the expression: {exc}")
            continue
        answers.append(None if mismatch is None else mismatch.redacted())
    json.dump(answers, sys.stdout)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    status = main()
    # Skip the interpreter's teardown (seconds on a busy machine), which the parent
    # would otherwise wait for inside the time limit.
    os._exit(status)
