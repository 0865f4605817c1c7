"""`python -m autograder mistakes [LESSON ...]`: how each lesson's checks meet its known mistakes.

For every exercise: does the solution notebook's own function pass the visible check and the
hidden tests, and, for every known mistake, does a visible check fail *with that mistake's hint*,
and does the mistake lose the exercise's points in the hidden tests. The same facts are asserted
by tests/test_lessons.py; this prints them as a table (and the catch rates for a closing note).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

from autograder.judge import grade
from autograder.lesson import lesson_namespace, load_lesson, mistake_function
from course import checks
from course.lesson import Exercise, Lesson, Mistake


@dataclass
class Row:
    exercise: str
    mistake: str
    graded: bool
    visible: str  # "hint", "other hint: ...", "passes"
    hidden: str  # "loses points", "keeps points"
    # False for a mistake declared `visible=False` (with its `why_hidden`): no visible check
    # is expected to catch it.
    shown: bool = True

    @property
    def caught_visibly(self) -> bool:
        return self.visible == "hint"

    @property
    def ok(self) -> bool:
        return (self.caught_visibly or not self.shown) and (self.caught_hidden or not self.graded)

    @property
    def caught_hidden(self) -> bool:
        return self.hidden == "loses points"


def visible_outcome(exercise: Exercise, fn, hint: str | None) -> str:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            checks.check(exercise.full_id, fn)
    except checks.CheckFailed as exc:
        if hint is None or hint in str(exc):
            return "hint" if hint else "fails"
        return "other hint: " + " | ".join(str(exc).splitlines()[-2:])[:300]
    return "passes"


def mistake_row(lesson: Lesson, exercise: Exercise, mistake: Mistake) -> Row:
    fn = mistake_function(lesson, exercise, mistake)
    visible = visible_outcome(exercise, fn, mistake.hint)
    hidden = "keeps points" if grade(exercise.full_id, fn).passed else "loses points"
    return Row(exercise.id, mistake.id, mistake.graded, visible, hidden, mistake.visible)


def solution_problems(lesson: Lesson) -> list[str]:
    ns = lesson_namespace(lesson)
    problems = []
    for exercise in lesson.exercises:
        fn = ns[exercise.function]
        if visible_outcome(exercise, fn, None) != "passes":
            problems.append(f"{exercise.id}: the solution fails its visible check")
        verdict = grade(exercise.full_id, fn)
        if not verdict.passed:
            problems.append(
                f"{exercise.id}: the solution fails its hidden tests\n{verdict.report()}"
            )
    return problems


def main(selected: list[str]) -> int:
    from autograder.lesson import lessons

    status = 0
    for folder in selected or lessons():
        lesson = load_lesson(folder)
        checks._fixture.cache_clear()
        problems = solution_problems(lesson)
        rows = [mistake_row(lesson, e, m) for e in lesson.exercises for m in e.mistakes]
        print(f"\n{folder}: {len(lesson.exercises)} exercises, {len(rows)} known mistakes")
        for problem in problems:
            print(f"  PROBLEM {problem}")
        for row in rows:
            flag = "" if row.ok else "  <--"
            if not row.shown:
                flag += "  (declared hidden" + ("" if row.graded else ", not graded") + ")"
            print(
                f"  {row.exercise:24s} {row.mistake:44s} visible: {row.visible:8s} "
                f"hidden: {row.hidden}{flag}"
            )
        graded = [r for r in rows if r.graded]
        print(
            f"  caught visibly with their hint: {sum(r.caught_visibly for r in rows)}/{len(rows)}; "
            f"hidden tests take the points: {sum(r.caught_hidden for r in graded)}/{len(graded)}"
        )
        status |= bool(problems) or not all(r.ok for r in rows)
    return int(status)
