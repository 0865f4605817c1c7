"""Lesson 01 graded for real by nbgrader: full marks, zero, partial, and a hanging cell."""

from __future__ import annotations

import pytest

from tests.mutants.lesson01 import MUTANTS
from tests.notebooks import autograde, load, points, with_cell

LESSON, NB = "01-softmax", "softmax"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade four submissions in one nbgrader run (a short per-cell timeout for the hang)."""
    solution = load("solutions", LESSON, NB)
    naive = MUTANTS["softmax-no-max-subtraction"][3]
    hanging = "import time\nwhile True:\n    time.sleep(0.1)\n"
    submissions = {
        "solution": solution,
        "blank": load("course", LESSON, NB),
        "naive": with_cell(solution, "softmax", naive),
        "hangs": with_cell(solution, "entropy", hanging),
    }
    root = tmp_path_factory.mktemp("course")
    return autograde(root, LESSON, NB, submissions, extra_config="c.Execute.timeout = 8\n")


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
