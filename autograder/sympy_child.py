"""Child process of `autograder.verdict.compare_sympy_isolated`: compares sympy answers.

Reads a JSON list of {"want": plain, "got": plain} (encoded) on stdin and writes a JSON list of
None (equivalent) or a reason. It runs with a memory limit set by its parent and is killed when
it runs past the time limit, so a pathological expression costs only its own submission.
"""

from __future__ import annotations

import json
import sys

# sympy and the safe parser are imported before "ready" (the comparison imports them lazily):
# loading them is start-up time, not comparison time.
import sympy  # noqa: F401

import course.safe_sympy  # noqa: F401
from course.compare import compare, decode


def main() -> int:
    # Imports are done: the parent starts the comparison's time limit from here.
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
