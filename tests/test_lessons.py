"""What every lesson gets, derived from its declaration (`solutions/NN-topic/exercises.py`).

Fast, per exercise and per known mistake: the solution passes its visible check and its hidden
tests; every known mistake fails a visible check *with its own hint* and loses its exercise's
points in the hidden tests. Per lesson: the fixture, the test cells and the release are what
`make release` would write; the header's points are the declaration's; probe inputs are plain
data drawn afresh for each grading run; references are kernels.

Slow, all lessons in one class: the class grader gives the solution full marks, the blank
release 0 and a notebook with one known mistake per answer cell exactly the points it should;
plain `nbgrader autograde` agrees on the solution and the blank; each solution notebook runs top
to bottom within its time limit.
"""

from __future__ import annotations

import contextlib
import io
import json
import re

import nbformat
import pytest

from autograder import grading, sandbox
from autograder.fixtures import FIXTURES, fixture_text
from autograder.judge import grade
from autograder.lesson import (
    lesson_namespace,
    lessons,
    load_lesson,
    mistake_function,
    notebook_path,
)
from autograder.release import canonical_test_cell
from autograder.verdict import plan_exercise
from course import checks
from course.wire import dump_value, load_value
from tests.notebooks import load, points, save, with_cell

LESSONS = lessons()
EXERCISES = [(lesson, e.id) for lesson in LESSONS for e in load_lesson(lesson).exercises]
MISTAKES = [
    (lesson, e.id, m.id)
    for lesson in LESSONS
    for e in load_lesson(lesson).exercises
    for m in e.mistakes
]


@pytest.fixture(autouse=True)
def _fresh_fixtures():
    checks._fixture.cache_clear()


def visible_failure(exercise, fn) -> str | None:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            checks.check(exercise.full_id, fn)
    except checks.CheckFailed as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------- per exercise and mistake


@pytest.mark.parametrize("lesson, exercise_id", EXERCISES, ids=lambda x: str(x))
def test_solution_passes_its_visible_check_and_hidden_tests(lesson, exercise_id):
    declared = load_lesson(lesson)
    exercise = declared.exercise(exercise_id)
    fn = lesson_namespace(declared)[exercise.function]
    assert visible_failure(exercise, fn) is None
    verdict = grade(exercise.full_id, fn, seed=7)
    assert verdict.passed, verdict.report()
    assert len(verdict.probes) >= 3, "an exercise needs several hidden probes"


@pytest.mark.parametrize("lesson, exercise_id, mistake_id", MISTAKES, ids=lambda x: str(x))
def test_known_mistake_fails_a_visible_check_with_its_own_hint(lesson, exercise_id, mistake_id):
    declared = load_lesson(lesson)
    exercise = declared.exercise(exercise_id)
    mistake = exercise.mistake(mistake_id)
    if not mistake.visible:
        assert mistake.why_hidden, "a mistake only the hidden tests catch must say why"
        return
    failure = visible_failure(exercise, mistake_function(declared, exercise, mistake))
    assert failure is not None, f"{mistake_id} passes the visible check"
    assert mistake.hint in failure, f"{mistake_id} fails without its hint:\n{failure}"


@pytest.mark.parametrize("lesson, exercise_id, mistake_id", MISTAKES, ids=lambda x: str(x))
def test_known_mistake_loses_its_exercises_points(lesson, exercise_id, mistake_id):
    declared = load_lesson(lesson)
    exercise = declared.exercise(exercise_id)
    mistake = exercise.mistake(mistake_id)
    fn = mistake_function(declared, exercise, mistake)
    verdict = grade(exercise.full_id, fn, seed=11, diagnose=False)
    if mistake.graded:
        assert not verdict.passed, f"{mistake_id} keeps the points of {exercise_id}"
    else:
        assert verdict.passed, f"{mistake_id} is declared as not graded but loses points"


# ---------------------------------------------------------------- per lesson


@pytest.mark.parametrize("lesson", LESSONS)
def test_fixture_is_what_release_writes(lesson):
    committed = (FIXTURES / f"{lesson}.json").read_text()
    assert committed == fixture_text(lesson), "course/fixtures is stale: run `make release`"


@pytest.mark.parametrize("lesson", LESSONS)
def test_test_cells_are_generated_from_the_declaration(lesson):
    declared = load_lesson(lesson)
    nb = nbformat.read(notebook_path(declared), as_version=4)
    cells = {
        c.metadata["nbgrader"]["grade_id"]: c
        for c in nb.cells
        if c.get("metadata", {}).get("nbgrader", {}).get("grade")
    }
    by_cell: dict[str, list] = {}
    for exercise in declared.exercises:
        by_cell.setdefault(exercise.test_cell, []).append(exercise)
    assert set(cells) == set(by_cell), "every graded cell judges a declared exercise"
    for gid, exercises in by_cell.items():
        assert cells[gid].source == canonical_test_cell(exercises), f"run `make release` ({gid})"
        assert cells[gid].metadata["nbgrader"]["points"] == sum(e.points for e in exercises)


@pytest.mark.parametrize("lesson", LESSONS)
def test_header_states_the_declared_points(lesson):
    declared = load_lesson(lesson)
    header = nbformat.read(notebook_path(declared), as_version=4).cells[0].source
    match = re.search(r"Total: (\d+) points", header)
    assert match, "the header must say 'Total: N points'"
    assert float(match.group(1)) == declared.total_points
    assert len(declared.exercises) >= 6


@pytest.mark.parametrize("lesson", LESSONS)
def test_references_are_kernels_and_probes_are_plain_data(lesson):
    declared = load_lesson(lesson)
    for exercise in declared.exercises:
        assert exercise.reference.__module__.startswith("solutions.kernels"), exercise.id
        plan = plan_exercise(declared, exercise, seed=3, mistakes=False)
        payload = json.loads(json.dumps(plan.payload()))
        for sent, probe in zip(payload["probes"], plan.probes, strict=False):
            assert repr(load_value(sent["args"])) == repr(load_value(dump_value(probe.probe.args)))


@pytest.mark.parametrize("lesson", LESSONS)
def test_hidden_probes_are_drawn_afresh_for_each_run(lesson):
    declared = load_lesson(lesson)
    first = [dump_value(p.args) for e in declared.exercises for p in e.hidden_probes(1)]
    second = [dump_value(p.args) for e in declared.exercises for p in e.hidden_probes(2)]
    assert first != second
    assert first == [dump_value(p.args) for e in declared.exercises for p in e.hidden_probes(1)]


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
    included) top to bottom on the CPU, sharing the machine with another grading worker: its
    time, kernel start included, is an upper bound of a learner's Run All."""
    declared = load_lesson(lesson)
    solution = graded_class[(lesson, "solution")]
    assert not solution.execution.get("errors"), solution.execution["errors"]
    assert not solution.execution.get("timed_out")
    assert 0 < solution.seconds < declared.time_limit_s, f"{lesson} took {solution.seconds:.0f} s"


@pytest.mark.slow
@pytest.mark.parametrize("lesson", LESSONS)
def test_plain_nbgrader_autograde_agrees(lesson, tmp_path):
    from tests.notebooks import autograde

    name = notebook_path(load_lesson(lesson)).stem
    submissions = {
        "solution": load("solutions", lesson, name),
        "blank": load("course", lesson, name),
    }
    scores = autograde(tmp_path, lesson, name, submissions)
    assert scores["solution"] == points(load("solutions", lesson, name))
    assert sum(scores["blank"].values()) == 0
