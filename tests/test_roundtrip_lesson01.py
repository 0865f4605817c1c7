"""Lesson 01 graded for real by nbgrader: full marks, zero, partial, and a hanging cell."""

from __future__ import annotations

import time

import pytest

from autograder import coursedir
from tests.mutants.lesson01 import MUTANTS
from tests.notebooks import load, save, with_cell

LESSON, NB = "01-softmax", "softmax"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade four submissions in one nbgrader run (a short per-cell timeout for the hang)."""
    root = tmp_path_factory.mktemp("course")
    course = coursedir.create(root, [LESSON], extra_config="c.Execute.timeout = 8\n")
    work = root / "work"
    solution = load("solutions", LESSON, NB)
    naive = MUTANTS["softmax-no-max-subtraction"][3]
    hanging = "import time\nwhile True:\n    time.sleep(0.1)\n"
    submissions = {
        "solution": solution,
        "blank": load("course", LESSON, NB),
        "naive": with_cell(solution, "softmax", naive),
        "hangs": with_cell(solution, "entropy", hanging),
    }
    for student, nb in submissions.items():
        coursedir.submit(course, student, LESSON, save(nb, work / student / f"{NB}.ipynb"))
    start = time.perf_counter()
    coursedir.nbgrader(course, "autograde", LESSON, "--force", timeout=600)
    elapsed = time.perf_counter() - start
    print(
        f"\nautograde: {len(submissions)} notebooks in {elapsed:.1f} s "
        f"({elapsed / len(submissions):.1f} s per notebook)"
    )
    return coursedir.scores(course, LESSON)


def points(nb) -> dict[str, float]:
    return {
        c.metadata["nbgrader"]["grade_id"]: float(c.metadata["nbgrader"]["points"])
        for c in nb.cells
        if c.get("metadata", {}).get("nbgrader", {}).get("grade")
    }


def test_solution_scores_full_marks(graded):
    full = points(load("solutions", LESSON, NB))
    assert sum(full.values()) == 20
    assert graded["solution"] == full


def test_blank_release_scores_zero_and_is_graded(graded):
    assert set(graded["blank"]) == set(points(load("solutions", LESSON, NB)))
    assert sum(graded["blank"].values()) == 0


def test_naive_softmax_loses_exactly_the_stability_points(graded):
    full = points(load("solutions", LESSON, NB))
    expected = {**full, "test-softmax-stable": 0.0}
    assert graded["naive"] == expected


def test_hanging_cell_is_cut_off_and_the_rest_is_graded(graded):
    full = points(load("solutions", LESSON, NB))
    expected = {**full, "test-entropy": 0.0}
    assert graded["hangs"] == expected
