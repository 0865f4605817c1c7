"""Every lesson graded as a class by the sandboxed grader (slow): the solution gets full marks,
the blank release 0 and a notebook with one known mistake per answer cell exactly the points it
should; each solution notebook runs top to bottom within its time limit. The fast per-exercise
and per-mistake checks are in tests/test_lessons.py."""

from __future__ import annotations

import pytest

from autograder import grading, sandbox
from autograder.judge import grade
from autograder.lesson import lesson_namespace, lessons, load_lesson, notebook_path
from tests.notebooks import load, points, save, with_cell

LESSONS = lessons()


# ---------------------------------------------------------------- a whole class (slow)


def one_mistake_per_answer_cell(lesson: str) -> dict[str, str]:
    """{answer cell: mistake source}: the first graded mistake of each answer cell."""
    chosen: dict[str, str] = {}
    for exercise in load_lesson(lesson).exercises:
        for mistake in exercise.mistakes:
            if mistake.graded and exercise.answer_cell not in chosen:
                chosen[exercise.answer_cell] = mistake.source
    return chosen


def expected_with_mistakes(lesson: str, nb_name: str) -> dict[str, float]:
    """Full points, except the test cells of exercises the chosen mistakes fail in-process."""
    declared = load_lesson(lesson)
    chosen = one_mistake_per_answer_cell(lesson)
    ns = lesson_namespace(declared, chosen)
    full = points(load("solutions", lesson, nb_name))
    for exercise in declared.exercises:
        if not grade(exercise.full_id, ns[exercise.function], seed=5, diagnose=False).passed:
            full[exercise.test_cell] = 0.0
    return full


@pytest.fixture(scope="session")
def graded_class(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    for lesson in LESSONS:
        name = notebook_path(load_lesson(lesson)).stem
        solution = load("solutions", lesson, name)
        mistaken = solution
        for cell, source in one_mistake_per_answer_cell(lesson).items():
            mistaken = with_cell(mistaken, cell, source)
        for student, nb in [
            ("solution", solution),
            ("blank", load("course", lesson, name)),
            ("mistakes", mistaken),
        ]:
            save(nb, root / "submitted" / student / lesson / f"{name}.ipynb")
    settings = grading.Settings(root=root, limits=sandbox.Limits(notebook_timeout_s=240), seed=5)
    results = grading.grade(root, LESSONS, workers=2, settings=settings)
    return {(r.lesson, r.student): r for r in results}


@pytest.mark.slow
@pytest.mark.parametrize("lesson", LESSONS)
def test_class_grader_round_trip(lesson, graded_class):
    name = notebook_path(load_lesson(lesson)).stem
    full = points(load("solutions", lesson, name))
    solution = graded_class[(lesson, "solution")]
    assert {g: c.points for g, c in solution.cells.items()} == full, solution.to_json()[:3000]
    assert not [f for f in solution.findings if f.severity == "high"]
    blank = graded_class[(lesson, "blank")]
    assert blank.status == "graded" and blank.score == 0
    mistakes = graded_class[(lesson, "mistakes")]
    assert {g: c.points for g, c in mistakes.cells.items()} == expected_with_mistakes(lesson, name)


@pytest.mark.slow
@pytest.mark.parametrize("lesson", LESSONS)
def test_solution_notebook_runs_within_its_time_limit(lesson, graded_class):
    """The class run above executed the whole solution notebook (its widgets and hidden tests
    included) top to bottom on the CPU. The kernel runs on one thread, so its CPU time (kernel
    start included) is what a Run All takes on a quiet machine; the wall time of this run
    depends on whatever else the test machine is doing, and is only reported."""
    declared = load_lesson(lesson)
    solution = graded_class[(lesson, "solution")]
    assert not solution.execution.get("errors"), solution.execution["errors"]
    assert not solution.execution.get("timed_out")
    cpu = solution.execution["kernel_cpu_s"]
    assert 0 < cpu < declared.time_limit_s, (
        f"{lesson}: the kernel used {cpu:.0f} s of CPU (wall {solution.seconds:.0f} s), "
        f"over its {declared.time_limit_s} s limit"
    )
