"""The one line every hidden test is: `judge("01-softmax/softmax-stable", softmax)`.

Two ways it runs:

* **Class grading** (`python -m autograder grade`): the grader has written this exercise's
  probes into the job folder (`$AUTOGRADER_RECORD_DIR/probes/<exercise>.json`). `judge` only
  *runs* them on the learner's function (`run_probes`) and sends back what came out, as plain
  data in a display message of type `RESULTS_MIME`, which the grader's notebook client picks up
  while this very cell runs. No reference, no expected value and no verdict exist in the kernel;
  the grader decides everything in its own process (`autograder.verdict`).
* **Anywhere else** (a self-learner running a solution notebook, plain `nbgrader autograde`):
  the same probes run in this process and the same verdict code decides; a failure raises
  `JudgeFailed` (an AssertionError, which nbgrader scores as a failed test cell).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from course.calling import Call, Watch, call_function
from course.compare import encode
from course.trace import Recorder
from course.wire import load_value

__all__ = ["judge", "grade", "run_probes", "JudgeFailed", "RESULTS_MIME", "RECORD_DIR_ENV"]

RECORD_DIR_ENV = "AUTOGRADER_RECORD_DIR"
RESULTS_MIME = "application/vnd.course-autograder.results+json"
DEFAULT_SEED = 20261125


class JudgeFailed(AssertionError):
    """Raised by `judge` when a hidden test fails; nbgrader scores the cell zero."""


def file_stem(exercise_id: str) -> str:
    return exercise_id.replace("/", "__")


def _watch(payload: dict) -> Watch:
    from course.calling import FnRef

    return Watch(
        forbidden=dict(payload.get("forbidden", {})),
        forbidden_hint=str(payload.get("forbidden_hint", "")),
        must_call=tuple(payload.get("must_call", ())),
        must_not_call=tuple(payload.get("must_not_call", ())),
        stand_ins={k: FnRef(v).resolve() for k, v in payload.get("stand_ins", {}).items()},
        mutates=tuple(payload.get("mutates", ())),
        time_limit_s=float(payload.get("time_limit_s", 10.0)),
    )


def run_probes(payload: dict, fn: Callable) -> dict:
    """Run every probe of `payload` on `fn`; the raw report (plain, JSON-safe data)."""
    watch = _watch(payload)
    results = []
    for probe in payload["probes"]:
        call = Call(
            probe["name"],
            tuple(load_value(probe["args"])),
            load_value(probe["kwargs"]),
            probe["mode"],
            int(probe["grad_seed"]),
            {str(k): int(v) for k, v in dict(probe.get("min_calls", {})).items()},
            str(probe.get("inspect", "")),
        )
        traced = payload.get("traced") and call.mode == "value" and "moved_of" not in probe
        recorder = Recorder() if traced else None
        watch.recorder = recorder
        outcome = call_function(fn, call, watch)
        entry: dict[str, Any] = {"error": outcome.error}
        if outcome.ok:
            try:
                entry = {"ok": encode(outcome.plain)}
            except TypeError as exc:
                entry = {"error": f"returned something that cannot be checked: {exc}"}
        if recorder is not None:
            entry["trace"] = recorder.result()
        results.append(entry)
    return {"exercise": payload["exercise"], "results": results}


def record(exercise_id: str, fn: Callable, folder: Path) -> None:
    """Sandbox side of class grading: run the probes the grader wrote, send back the results."""
    from IPython.display import publish_display_data

    path = folder / "probes" / f"{file_stem(exercise_id)}.json"
    payload = json.loads(path.read_text())
    report = run_probes(payload, fn)
    publish_display_data({RESULTS_MIME: report})
    print(f"{exercise_id}: {len(report['results'])} hidden checks run; the grader decides.")


def grade(exercise_id: str, fn: Callable, seed: int | None = None, diagnose: bool = True):
    """Run every hidden probe of `exercise_id` on `fn` in this process; the ExerciseVerdict.

    With `diagnose`, a failing verdict also names the known mistake it looks like (which runs
    every known mistake on the probes).
    """
    from autograder.lesson import load_lesson
    from autograder.verdict import judge_exercise, plan_exercise

    lesson_name, _, _ = exercise_id.partition("/")
    lesson = load_lesson(lesson_name)
    exercise = lesson.exercise(exercise_id)
    seed = int(os.environ.get("AUTOGRADER_SEED", DEFAULT_SEED)) if seed is None else seed
    plan = plan_exercise(lesson, exercise, seed, mistakes=False)
    raw = run_probes(plan.payload(), fn)
    verdict = judge_exercise(plan, raw)
    if diagnose and not verdict.passed:
        # Only now is it worth running every known mistake, to name the one this looks like.
        verdict = judge_exercise(plan_exercise(lesson, exercise, seed, mistakes=True), raw)
    return verdict


def judge(exercise_id: str, fn: Callable, seed: int | None = None) -> None:
    """The hidden-test entry point: print the verdict; raise `JudgeFailed` unless it passed.

    Returns None: nbgrader would read a number left as a cell's last value as a score.
    """
    folder = os.environ.get(RECORD_DIR_ENV)
    if folder:
        record(exercise_id, fn, Path(folder))
        return
    verdict = grade(exercise_id, fn, seed)
    if not verdict.passed:
        raise JudgeFailed(verdict.report())
    print(verdict.report())
