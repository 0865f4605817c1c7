"""Helpers to make submissions (the solution, the blank release, either with cells replaced),
grade them with nbgrader, and run a solution notebook's cells as a learner's kernel would."""

from __future__ import annotations

import ast
import contextlib
import io
import re
import time
import types
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent


def load(kind: str, lesson: str, name: str) -> nbformat.NotebookNode:
    return nbformat.read(REPO / kind / lesson / f"{name}.ipynb", as_version=4)


def with_cell(nb: nbformat.NotebookNode, grade_id: str, source: str) -> nbformat.NotebookNode:
    """A copy of `nb` whose cell `grade_id` holds `source` (what a learner typed there)."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id:
            cell.source = source.strip("\n")
            return nb
    raise KeyError(grade_id)


def save(nb: nbformat.NotebookNode, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def points(nb: nbformat.NotebookNode) -> dict[str, float]:
    """{grade_id: points} of the notebook's graded cells."""
    return {
        c.metadata["nbgrader"]["grade_id"]: float(c.metadata["nbgrader"]["points"])
        for c in nb.cells
        if c.get("metadata", {}).get("nbgrader", {}).get("grade")
    }


def cells_judging(nb: nbformat.NotebookNode) -> dict[str, str]:
    """{exercise id: grade_id of the test cell whose hidden tests judge it}."""
    found = {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade"):
            for exercise in re.findall(r'judge\("([^"]+)"', cell.source):
                found[exercise] = meta["grade_id"]
    return found


def expected_scores(solution, mutants: dict, mistakes: list[str]) -> dict[str, float]:
    """Full points, except zero for each test cell judging an exercise a mistake breaks."""
    judging = cells_judging(solution)
    lost = {judging[e] for m in mistakes for e in mutants[m][2]}
    return {gid: 0.0 if gid in lost else full for gid, full in points(solution).items()}


def with_mistakes(solution, mutants: dict, mistakes: list[str]) -> nbformat.NotebookNode:
    """The solution with each mistake's cell replaced; at most one mistake per cell."""
    cells = [mutants[m][0] for m in mistakes]
    assert len(set(cells)) == len(cells), "one mistake per cell"
    nb = solution
    for mistake in mistakes:
        nb = with_cell(nb, mutants[mistake][0], mutants[mistake][3])
    return nb


def autograde(root: Path, submissions: dict[str, dict], extra_config: str = "") -> dict:
    """Grade {lesson: {student: notebook}} with plain nbgrader, in one `nbgrader autograde`
    run for all lessons (each nbgrader start costs seconds); {lesson: {student: {grade_id:
    score}}}."""
    from autograder import coursedir, lesson

    course = coursedir.create(root, list(submissions), extra_config=extra_config)
    count = 0
    for name, by_student in submissions.items():
        notebook = lesson.notebook_path(lesson.load_lesson(name)).name
        for student, nb in by_student.items():
            path = save(nb, root / "work" / student / name / notebook)
            coursedir.submit(course, student, name, path)
            count += 1
    start = time.perf_counter()
    for pattern in coursedir.assignment_patterns(course, list(submissions)):
        coursedir.nbgrader(course, "autograde", pattern, "--force", timeout=1800)
    elapsed = time.perf_counter() - start
    print(f"\nautograde: {count} notebooks in {elapsed:.1f} s ({elapsed / count:.1f} s each)")
    return {name: coursedir.scores(course, name) for name in submissions}


def notebook_namespace(
    lesson: str, name: str, context_cells: tuple[str, ...], replace: dict[str, str] | None = None
) -> dict:
    """Run the context and solution cells of the solution notebook, some cells replaced."""
    replace = replace or {}
    ns: dict = {}
    for cell in load("solutions", lesson, name).cells:
        meta = cell.metadata.get("nbgrader", {})
        gid = meta.get("grade_id")
        if cell.cell_type == "code" and (gid in context_cells or meta.get("solution")):
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(replace.get(gid, cell.source), f"<{gid}>", "exec"), ns)  # noqa: S102
    return ns


def _names_used(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names_used(const)
    return names


def reached_by(ns: dict, source: str) -> set[str]:
    """Names of the notebook's functions that run code from `source` (directly or by a call)."""
    reached = {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
    functions = {
        name: f
        for name, f in ns.items()
        if isinstance(f, types.FunctionType) and f.__globals__ is ns
    }
    while True:
        more = {name for name, f in functions.items() if _names_used(f.__code__) & reached}
        if more <= reached:
            return reached
        reached |= more
