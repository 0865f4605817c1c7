"""Plain `nbgrader autograde` agrees with the declaration on every lesson (slow): the
solution gets full marks and the blank release 0, without this project's grader."""

from __future__ import annotations

import pytest

from autograder.lesson import lessons, load_lesson, notebook_path
from tests.notebooks import load, points

LESSONS = lessons()


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
