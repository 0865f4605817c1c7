"""Registry of graded exercises, one module per lesson, each exporting `EXERCISES`.

A lesson plugs in by adding its module name to `LESSON_MODULES`; exercise ids are
`"<lesson folder>/<exercise>"`, e.g. `"01-softmax/softmax-stable"`.
"""

from __future__ import annotations

import importlib

from autograder.judge import Exercise

LESSON_MODULES = {
    "01-softmax": "autograder.exercises.lesson01",
    "02-scaled-attention": "autograder.exercises.lesson02",
    "03-causal-masking": "autograder.exercises.lesson03",
}


class UnknownExercise(KeyError):
    pass


def lesson_exercises(lesson: str) -> list[Exercise]:
    if lesson not in LESSON_MODULES:
        raise UnknownExercise(f"no lesson '{lesson}' (known: {', '.join(sorted(LESSON_MODULES))})")
    return list(importlib.import_module(LESSON_MODULES[lesson]).EXERCISES)


def get_exercise(exercise_id: str) -> Exercise:
    lesson, _, _ = exercise_id.partition("/")
    for exercise in lesson_exercises(lesson):
        if exercise.id == exercise_id:
            return exercise
    raise UnknownExercise(f"no exercise '{exercise_id}' in lesson '{lesson}'")


def all_exercises() -> list[Exercise]:
    return [e for lesson in LESSON_MODULES for e in lesson_exercises(lesson)]
