"""Plain `nbgrader autograde` agrees with the declaration on every lesson (slow): the
solution gets full marks and the blank release 0, without this project's grader. All lessons
are graded by one nbgrader run, as an instructor grading the course with stock nbgrader would."""

from __future__ import annotations

import pytest

from autograder.lesson import lessons, load_lesson, notebook_path
from tests.notebooks import autograde, load, points

LESSONS = lessons()
pytestmark = pytest.mark.slow


def _name(lesson: str) -> str:
    return notebook_path(load_lesson(lesson)).stem


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    submissions = {
        lesson: {
            "solution": load("solutions", lesson, _name(lesson)),
            "blank": load("course", lesson, _name(lesson)),
        }
        for lesson in LESSONS
    }
    return autograde(tmp_path_factory.mktemp("nbgrader"), submissions)


@pytest.mark.parametrize("lesson", LESSONS)
def test_plain_nbgrader_autograde_agrees(lesson, scores):
    assert scores[lesson]["solution"] == points(load("solutions", lesson, _name(lesson)))
    assert scores[lesson]["blank"], f"{lesson}: nbgrader graded no test cell of the blank"
    assert sum(scores[lesson]["blank"].values()) == 0
