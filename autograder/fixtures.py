"""The visible checks' data, derived from the lesson declarations (`make release` writes it).

For every exercise, `course/fixtures/<lesson>.json` holds its visible cases (inputs), the
reference's output on each, the tolerance, what is watched (forbidden built-ins, functions that
must be called, stand-ins), and what each known mistake outputs on each case, so that a
learner's wrong output can be matched to the mistake it looks like (`course.checks.check`),
without the student bundle containing a single reference implementation.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from autograder.lesson import load_lesson, mistake_function
from course.calling import Watch, call_function
from course.compare import encode, to_plain
from course.lesson import Exercise, Lesson, Probe
from course.wire import dump_value

FIXTURES = Path(__file__).resolve().parent.parent / "course" / "fixtures"


def reference_outcome(exercise: Exercise, probe: Probe):
    """The reference's plain output for `probe` (or its fixed expected value)."""
    if probe.expected is not None:
        return to_plain(probe.expected)
    watch = Watch(mutates=exercise.mutates, time_limit_s=600.0)
    call = probe.call()
    call.min_calls = {}  # a reference kernel calls no learner function
    outcome = call_function(exercise.reference, call, watch)
    if not outcome.ok:
        raise RuntimeError(
            f"the reference of {exercise.full_id} failed on '{probe.name}': {outcome.error}"
        )
    return outcome.plain


def outcome_record(outcome) -> dict:
    return {"out": encode(outcome.plain)} if outcome.ok else {"error": outcome.error}


def exercise_fixture(lesson: Lesson, exercise: Exercise) -> dict:
    probes = exercise.visible()
    mistakes = {m.id: mistake_function(lesson, exercise, m) for m in exercise.mistakes}
    cases = []
    for probe in probes:
        tol = probe.tolerance
        cases.append(
            {
                "name": probe.name,
                "args": dump_value(tuple(probe.args)),
                "kwargs": dump_value(dict(probe.kwargs)),
                "mode": probe.mode,
                "grad_seed": probe.grad_seed,
                "min_calls": probe.min_calls,
                **({"inspect": probe.inspect} if probe.inspect else {}),
                "tolerance": None if tol is None else [tol.atol, tol.rtol, tol.why],
                "expected": encode(reference_outcome(exercise, probe)),
                "mistakes": {
                    mid: outcome_record(call_function(fn, probe.call(), exercise.watch()))
                    for mid, fn in mistakes.items()
                },
            }
        )
    return {
        "title": exercise.title,
        "function": exercise.function,
        "signature": exercise.signature,
        "points": exercise.points,
        "forbidden": exercise.forbidden,
        "forbidden_hint": exercise.forbidden_hint,
        "must_call": list(exercise.must_call),
        "must_not_call": list(exercise.must_not_call),
        "stand_ins": exercise.stand_ins,
        "mutates": list(exercise.mutates),
        "time_limit_s": exercise.time_limit_s,
        "mistakes": {m.id: m.hint for m in exercise.mistakes},
        "cases": cases,
    }


def lesson_fixture(folder: str) -> dict:
    lesson = load_lesson(folder)
    # One thread: a matmul's sums are split by thread, so their last bits (and so the fixture's
    # bytes, which a test compares with the committed file) would depend on the machine's cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exercises = {e.id: exercise_fixture(lesson, e) for e in lesson.exercises}
    finally:
        torch.set_num_threads(threads)
    return {
        "lesson": folder,
        "generated_by": "python -m autograder release (autograder/fixtures.py)",
        "exercises": exercises,
    }


def fixture_text(folder: str) -> str:
    return json.dumps(lesson_fixture(folder), indent=1, sort_keys=True, allow_nan=True) + "\n"


def write_fixture(folder: str, directory: Path = FIXTURES) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{folder}.json"
    path.write_text(fixture_text(folder))
    return path
