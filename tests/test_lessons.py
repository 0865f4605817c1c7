"""What every lesson gets, derived from its declaration (`solutions/NN-topic/exercises.py`).

Fast, per exercise and per known mistake: the solution passes its visible check and its hidden
tests; every known mistake fails a visible check *with its own hint* and loses its exercise's
points in the hidden tests. Per lesson: the fixture, the test cells and the release are what
`make release` would write; the header's points are the declaration's; probe inputs are plain
data drawn afresh for each grading run; references are kernels.

The slow checks of whole notebooks are in tests/test_lessons_class.py (the sandboxed class
grader) and tests/test_lessons_nbgrader.py (plain nbgrader), files of their own so that
`make test`'s workers run them beside these.
"""

from __future__ import annotations

import contextlib
import io
import json
import re

import nbformat
import pytest

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
