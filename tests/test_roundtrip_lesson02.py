"""Lesson 02 by nbgrader: full marks, zero, and mistakes that lose exactly their points.

Each mistaken submission carries a few mistakes in *different* solution cells that do not
reach each other, so one nbgrader run checks several rows of the mutation table at once: the
points lost must be exactly those of the test cells whose exercises the mistakes break.
"""

from __future__ import annotations

import pytest

from tests.mutants.lesson02 import MUTANTS
from tests.notebooks import (
    autograde,
    cells_judging,
    expected_scores,
    load,
    points,
    with_mistakes,
)

LESSON, NB = "02-scaled-attention", "scaled_attention"
pytestmark = pytest.mark.slow

# scale-by-sqrt-d_model and inverted-mask (same cell as these) are in the judge-level table.
SUBMISSIONS = {
    "scale-by-d_k": ["scale-by-d_k", "variance-scales-linearly", "monte-carlo-keys-equal-queries"],
    "mask-after-softmax": ["mask-after-softmax", "entropy-in-bits", "variance-of-one-product-only"],
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade the solution, the blank release and the mistaken submissions in one nbgrader run."""
    solution = load("solutions", LESSON, NB)
    submissions = {"solution": solution, "blank": load("course", LESSON, NB)}
    for student, mistakes in SUBMISSIONS.items():
        submissions[student] = with_mistakes(solution, MUTANTS, mistakes)
    return autograde(tmp_path_factory.mktemp("course"), LESSON, NB, submissions)


def test_solution_scores_full_marks(graded):
    full = points(load("solutions", LESSON, NB))
    assert sum(full.values()) == 18 and len(full) == 8
    assert graded["solution"] == full


def test_blank_release_scores_zero_and_is_graded(graded):
    assert set(graded["blank"]) == set(points(load("solutions", LESSON, NB)))
    assert sum(graded["blank"].values()) == 0


@pytest.mark.parametrize("student", sorted(SUBMISSIONS))
def test_mistakes_lose_exactly_their_points(graded, student):
    solution = load("solutions", LESSON, NB)
    assert graded[student] == expected_scores(solution, MUTANTS, SUBMISSIONS[student])


def test_every_test_cell_judges_an_exercise_of_this_lesson():
    from autograder.exercises import lesson_exercises

    judged = cells_judging(load("solutions", LESSON, NB))
    assert set(judged) == {e.id for e in lesson_exercises(LESSON)}
    assert set(judged.values()) == set(points(load("solutions", LESSON, NB)))
