"""Grading throughput, measured side by side on one batch: nbgrader's sequential `autograde`
against this grader with 1 and with N workers. Prints a table and writes runs/grading-*.json.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import nbformat

from autograder import coursedir, grading
from autograder.nbgrader_config import REPO

LESSON, NOTEBOOK = "01-softmax", "softmax"


def _batch(n: int) -> list[nbformat.NotebookNode]:
    """Solutions, blanks and half-solved notebooks in turn: a realistic mix of run times."""
    solution = nbformat.read(REPO / "solutions" / LESSON / f"{NOTEBOOK}.ipynb", as_version=4)
    blank = nbformat.read(REPO / "course" / LESSON / f"{NOTEBOOK}.ipynb", as_version=4)
    half = nbformat.from_dict(solution)
    for cell in half.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") and meta.get("grade_id") in ("online_update", "online_softmax"):
            cell.source = "raise NotImplementedError()"
    kinds = [solution, blank, half]
    return [kinds[i % len(kinds)] for i in range(n)]


def _submit(root: Path, batch: list) -> None:
    for i, nb in enumerate(batch):
        folder = root / "submitted" / f"student{i:03d}" / LESSON
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(_signed(nb, i), folder / f"{NOTEBOOK}.ipynb")


def _signed(nb, i: int):
    """Every submission distinct, as in a real class: no two share one execution here."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "softmax":
            cell.source = f"# submitted by student {i}\n{cell.source}"
    return nb


def time_nbgrader(work: Path, batch: list) -> tuple[float, dict]:
    root = work / "nbgrader"
    course = coursedir.create(root, [LESSON])
    _submit(root, batch)
    start = time.perf_counter()
    coursedir.nbgrader(course, "autograde", LESSON, "--force")
    elapsed = time.perf_counter() - start
    return elapsed, coursedir.scores(course, LESSON)


def time_ours(work: Path, batch: list, workers: int) -> tuple[float, dict]:
    root = work / f"ours-{workers}"
    grading.ensure_course(root, [LESSON])
    _submit(root, batch)
    settings = grading.Settings(root=root, threads_per_kernel=max(1, 2 // workers))
    start = time.perf_counter()
    results = grading.grade(root, [LESSON], workers=workers, force=True, settings=settings)
    elapsed = time.perf_counter() - start
    return elapsed, {r.student: {g: c.points for g, c in r.cells.items()} for r in results}


def main(n: int = 8, workers: int = 2) -> int:
    batch = _batch(n)
    work = Path(tempfile.mkdtemp(prefix="grading-bench-"))
    try:
        rows = [("nbgrader autograde (sequential)", *time_nbgrader(work, batch))]
        rows.append(("this grader, --workers 1", *time_ours(work, batch, 1)))
        rows.append((f"this grader, --workers {workers}", *time_ours(work, batch, workers)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0][1]
    print(f"\nGrading throughput: {n} submissions of lesson {LESSON}")
    print(f"{'run':<34}{'seconds':>9}{'notebooks/min':>15}{'speed-up vs nbgrader':>22}")
    for name, seconds, _ in rows:
        print(f"{name:<34}{seconds:>9.1f}{60 * n / seconds:>15.1f}{base / seconds:>21.2f}x")
    same = rows[1][2] == rows[2][2]
    print(f"scores identical with 1 and {workers} workers: {same}")
    out = REPO / "runs"
    out.mkdir(exist_ok=True)
    record = {
        "submissions": n,
        "workers": workers,
        "identical_scores": same,
        "runs": [
            {"run": name, "seconds": s, "notebooks_per_min": 60 * n / s} for name, s, _ in rows
        ],
    }
    path = out / f"grading-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}")
    return 0 if same else 1
