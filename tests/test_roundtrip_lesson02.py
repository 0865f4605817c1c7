"""Lesson 02 by nbgrader: full marks, zero, and mistakes that lose exactly their points.

Each mistaken submission carries a few mistakes in *different* solution cells that do not
reach each other, so one nbgrader run checks several rows of the mutation table at once: the
points lost must be exactly those of the test cells whose exercises the mistakes break.
"""

from __future__ import annotations

import re
import time

import pytest

from autograder import coursedir
from tests.mutants.lesson02 import MUTANTS
from tests.notebooks import load, save, with_cell

LESSON, NB = "02-scaled-attention", "scaled_attention"
pytestmark = pytest.mark.slow

# scale-by-sqrt-d_model and inverted-mask (same cell as these) are in the judge-level table.
SUBMISSIONS = {
    "scale-by-d_k": ["scale-by-d_k", "variance-scales-linearly", "monte-carlo-keys-equal-queries"],
    "mask-after-softmax": ["mask-after-softmax", "entropy-in-bits", "variance-of-one-product-only"],
}


def points(nb) -> dict[str, float]:
    return {
        c.metadata["nbgrader"]["grade_id"]: float(c.metadata["nbgrader"]["points"])
        for c in nb.cells
        if c.get("metadata", {}).get("nbgrader", {}).get("grade")
    }


def cells_judging(nb) -> dict[str, str]:
    """{exercise id: grade_id of the test cell whose hidden tests judge it}."""
    found = {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade"):
            for exercise in re.findall(r'judge\("([^"]+)"', cell.source):
                found[exercise] = meta["grade_id"]
    return found


def expected_scores(mistakes: list[str]) -> dict[str, float]:
    solution = load("solutions", LESSON, NB)
    lost = {cells_judging(solution)[e] for m in mistakes for e in MUTANTS[m][2]}
    return {gid: 0.0 if gid in lost else full for gid, full in points(solution).items()}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade the solution, the blank release and the mistaken submissions in one nbgrader run."""
    root = tmp_path_factory.mktemp("course")
    course = coursedir.create(root, [LESSON])
    work = root / "work"
    solution = load("solutions", LESSON, NB)
    submissions = {"solution": solution, "blank": load("course", LESSON, NB)}
    for student, mistakes in SUBMISSIONS.items():
        nb = solution
        cells = [MUTANTS[m][0] for m in mistakes]
        assert len(set(cells)) == len(cells), "one mistake per cell"
        for mistake in mistakes:
            nb = with_cell(nb, MUTANTS[mistake][0], MUTANTS[mistake][3])
        submissions[student] = nb
    for student, nb in submissions.items():
        coursedir.submit(course, student, LESSON, save(nb, work / student / f"{NB}.ipynb"))
    start = time.perf_counter()
    coursedir.nbgrader(course, "autograde", LESSON, "--force", timeout=900)
    elapsed = time.perf_counter() - start
    print(
        f"\nautograde: {len(submissions)} notebooks in {elapsed:.1f} s "
        f"({elapsed / len(submissions):.1f} s per notebook)"
    )
    return coursedir.scores(course, LESSON)


def test_solution_scores_full_marks(graded):
    full = points(load("solutions", LESSON, NB))
    assert sum(full.values()) == 18 and len(full) == 8
    assert graded["solution"] == full


def test_blank_release_scores_zero_and_is_graded(graded):
    assert set(graded["blank"]) == set(points(load("solutions", LESSON, NB)))
    assert sum(graded["blank"].values()) == 0


@pytest.mark.parametrize("student", sorted(SUBMISSIONS))
def test_mistakes_lose_exactly_their_points(graded, student):
    assert graded[student] == expected_scores(SUBMISSIONS[student])


def test_every_test_cell_judges_an_exercise_of_this_lesson():
    from autograder.exercises import lesson_exercises

    judged = cells_judging(load("solutions", LESSON, NB))
    assert set(judged) == {e.id for e in lesson_exercises(LESSON)}
    assert set(judged.values()) == set(points(load("solutions", LESSON, NB)))
