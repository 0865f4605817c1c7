"""Suite-wide collection order: the longest test files first.

`make test` runs whole files side by side (`--dist loadfile --no-loadscope-reorder`: without the
last flag xdist hands out the files with the most tests first, whatever their length), in
collection order, so a long file that starts last decides when the run ends (in one CI run the plain
nbgrader file started 16 minutes in and ran 8 more, alone, while another worker sat idle).
`LONGEST` lists the files that take minutes, longest first, as measured by a whole `make test`
(`--junitxml`, summed per file, 2 cores, 3 workers, 2026-11-30); then come the other files with a
test marked `e2e` (a browser), then those marked `slow`, then the rest. The order of the tests
inside a file is kept.
"""

from __future__ import annotations

import pytest

LONGEST = (
    "tests/test_dask_executor.py",  # 875 s: a class on two executors, workers killed
    "tests/e2e/test_lessons_in_browser.py",  # 735 s: every lesson run in JupyterLab
    "tests/test_grader.py",  # 678 s: a class of hostile submissions
    "tests/test_lessons_nbgrader.py",  # 523 s: stock nbgrader, one process, serial
    "tests/test_lessons_class.py",  # 505 s: every lesson graded as a class
    "tests/test_lessons.py",  # 460 s: every mistake of every table, in-process
    "tests/test_grading_load.py",  # 318 s: a class of 200
    "tests/test_widgets_attention.py",  # 248 s
    "tests/test_student_bundle.py",  # 181 s: make setup / lab / test in a bundle
    "tests/test_unsolved_exercises.py",  # 167 s
)


def _weight(item: pytest.Item) -> int:
    marks = {mark.name for mark in item.iter_markers()}
    return 0 if "e2e" in marks else 1 if "slow" in marks else 2


def _rank(path: str, weight: int) -> tuple[int, int]:
    if path in LONGEST:
        return (0, LONGEST.index(path))
    return (1 + weight, 0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    by_file: dict[str, int] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        by_file[path] = min(by_file.get(path, 2), _weight(item))
    items.sort(
        key=lambda item: _rank(
            item.nodeid.split("::", 1)[0], by_file[item.nodeid.split("::", 1)[0]]
        )
    )
