"""A lesson, declared once: its exercises, their references, probes, tolerances, points and
tables of known mistakes.

Each lesson folder `solutions/NN-topic/` holds its source notebook and `exercises.py`, which
defines `LESSON = Lesson(...)`. Nothing is registered by hand: `load_lesson("01-softmax")`
finds the file by folder. Everything else is derived from the declaration: the visible checks'
fixture (`course/fixtures/NN-topic.json`, written by `make release`), the probes the class
grader sends to a sandboxed kernel, the references it compares with, the feedback's diagnoses,
and the invariant tests in `tests/test_lessons.py`.

    Exercise(
        id="softmax-basic",                 # full id "01-softmax/softmax-basic"
        title="softmax on ordinary logits and any dim",
        function="softmax",                 # the learner's function, in cell `answer_cell`
        signature="softmax(x: (..., n) float, dim=-1) -> same shape and dtype",
        reference=K.softmax,                # always a function of solutions/kernels
        answer_cell="softmax", test_cell="test-softmax-basic", points=2,
        visible=visible_cases,              # () -> [Probe]: fixed inputs, baked into the fixture
        hidden=hidden_probes,               # (torch.Generator) -> [Probe]: drawn afresh per run
        forbidden=SOFTMAX_OPS, forbidden_hint="Build it from exp, log, max and sum.",
        mistakes=[Mistake(id="no-max-subtraction", hint="...", source="def softmax(...): ...")],
    )
"""

from __future__ import annotations

import contextlib
import copyreg
import importlib.util
import io
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import nbformat

from course.lesson import Exercise, Lesson, Mistake, UnknownExercise, exercise_seed

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = REPO / "solutions"

__all__ = [
    "load_lesson",
    "lessons",
    "get_exercise",
    "lesson_namespace",
    "mistake_function",
    "exercise_seed",
    "UnknownExercise",
]


def lessons() -> list[str]:
    """Lesson folders under solutions/ that declare exercises, in order."""
    return sorted(
        p.name for p in SOLUTIONS.iterdir() if p.is_dir() and (p / "exercises.py").exists()
    )


@cache
def load_lesson(folder: str) -> Lesson:
    """The `LESSON` declared in solutions/<folder>/exercises.py; UnknownExercise if none."""
    path = SOLUTIONS / folder / "exercises.py"
    if not path.exists():
        known = ", ".join(lessons())
        raise UnknownExercise(f"no lesson '{folder}' (known: {known})")
    name = f"_lesson_{folder.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    lesson = module.LESSON
    if lesson.folder != folder:
        raise ValueError(f"{path} declares lesson {lesson.folder!r}, expected {folder!r}")
    return lesson


def get_exercise(full_id: str) -> Exercise:
    folder, _, short = full_id.partition("/")
    return load_lesson(folder).exercise(short)


def _reduce_exercise(exercise: Exercise):
    # An exercise travels to a grading worker by name: the worker loads the same declaration
    # (its functions live in a module loaded from a path, which pickle cannot import by name).
    return get_exercise, (exercise.full_id,)


copyreg.pickle(Exercise, _reduce_exercise)


def notebook_path(lesson: Lesson) -> Path:
    return SOLUTIONS / lesson.folder / f"{lesson.notebook}.ipynb"


def lesson_namespace(lesson: Lesson, replace: dict[str, str] | None = None) -> dict:
    """A learner's namespace: the context cells and every answer cell of the solution
    notebook executed in order, with `replace` = {answer cell: source} swapped in."""
    replace = replace or {}
    ns: dict = {"__name__": "__lesson__"}
    for cell in nbformat.read(notebook_path(lesson), as_version=4).cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        gid = meta.get("grade_id")
        answer = meta.get("solution") and not meta.get("grade")
        if cell.cell_type == "code" and (gid in lesson.context_cells or answer):
            source = replace.get(gid, cell.source)
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(source, f"<{lesson.folder}:{gid}>", "exec"), ns)  # noqa: S102
    return ns


@cache
def _base_namespace(folder: str) -> dict:
    return lesson_namespace(load_lesson(folder))


def mistake_function(lesson: Lesson, exercise: Exercise, mistake: Mistake) -> Callable:
    """The learner's function as it is with `mistake` typed into its answer cell.

    The mistake's source runs in a copy of the solved namespace (answer cells only define
    functions, and a function finds the others in its globals when it is called).
    """
    ns = dict(_base_namespace(lesson.folder))
    ns.pop(exercise.function, None)
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(mistake.source, f"<{lesson.folder}:{mistake.id}>", "exec"), ns)  # noqa: S102
    if exercise.function not in ns:
        raise ValueError(f"mistake {mistake.id} does not define {exercise.function}")
    return ns[exercise.function]
