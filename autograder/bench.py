"""Grading throughput, measured side by side on one batch: nbgrader's sequential `autograde`
against this grader with 1 and with N workers of the process pool and with a Dask LocalCluster
of N workers (its start included). Prints a table, then an ESTIMATE for a Dask cluster (the
per-job cost measured here x the class size / the cluster's workers, not a measurement), and
writes runs/grading-*.json.
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


def time_ours(
    work: Path, batch: list, workers: int, dask: bool = False
) -> tuple[float, dict, list[float]]:
    """Seconds to grade `batch` (force: nothing cached), {student: {grade_id: points}} and
    the seconds each executed job took in its worker.

    With `dask`, on a Dask LocalCluster of `workers` workers started inside the timing."""
    executor = None
    if dask:
        from autograder.executors import DaskExecutor

        executor = DaskExecutor(f"local:{workers}")
    root = work / f"ours-{workers}{'-dask' if dask else ''}"
    grading.ensure_course(root, [LESSON])
    _submit(root, batch)
    settings = grading.Settings(root=root, threads_per_kernel=max(1, 2 // workers))
    start = time.perf_counter()
    results = grading.grade(
        root, [LESSON], workers=workers, force=True, settings=settings, executor=executor
    )
    elapsed = time.perf_counter() - start
    scores = {r.student: {g: c.points for g, c in r.cells.items()} for r in results}
    return (
        elapsed,
        scores,
        [r.seconds for r in results if r.status == "graded" and not r.shared_run],
    )


def cluster_estimate(job_seconds: list[float], submissions: int, workers: int) -> dict:
    """An ESTIMATE, not a measurement: the mean per-job cost measured on the LocalCluster
    (seconds of one worker per notebook) x `submissions` / `workers` of a Dask cluster.

    Leaves out the coordinator's own work per run (planning, scattering the plans, reading and
    writing results), network transfer and stragglers at the end of the run."""
    per_job = sum(job_seconds) / max(1, len(job_seconds))
    seconds = per_job * submissions / max(1, workers)
    return {
        "per_job_s": per_job,
        "submissions": submissions,
        "workers": workers,
        "seconds": seconds,
        "notebooks_per_min": 60 * submissions / seconds if seconds else 0.0,
    }


def main(n: int = 8, workers: int = 2, class_size: int = 16_000, cluster_workers: int = 64) -> int:
    """Run the comparison on `n` submissions; estimate `class_size` on `cluster_workers`."""
    batch = _batch(n)
    work = Path(tempfile.mkdtemp(prefix="grading-bench-"))
    try:
        rows = [("nbgrader autograde (sequential)", *time_nbgrader(work, batch))]
        rows.append(("this grader, --workers 1", *time_ours(work, batch, 1)[:2]))
        rows.append((f"this grader, --workers {workers}", *time_ours(work, batch, workers)[:2]))
        *dask_row, job_seconds = time_ours(work, batch, workers, dask=True)
        rows.append((f"Dask LocalCluster, local:{workers}", *dask_row))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0][1]
    print(f"\nGrading throughput: {n} submissions of lesson {LESSON}")
    print(f"{'run':<36}{'seconds':>9}{'notebooks/min':>15}{'speed-up vs nbgrader':>22}")
    for name, seconds, _ in rows:
        print(f"{name:<36}{seconds:>9.1f}{60 * n / seconds:>15.1f}{base / seconds:>21.2f}x")
    same = rows[1][2] == rows[2][2] == rows[3][2]
    print(f"scores identical with 1 and {workers} workers and on Dask: {same}")
    estimate = cluster_estimate(job_seconds, class_size, cluster_workers)
    print(
        f"ESTIMATE (not measured) for a Dask cluster of {cluster_workers} workers and "
        f"{class_size} submissions: {estimate['per_job_s']:.1f} s per job (mean measured on "
        f"the LocalCluster) x {class_size} / {cluster_workers} = "
        f"{estimate['seconds'] / 60:.0f} min, {estimate['notebooks_per_min']:.0f} notebooks/min "
        "(leaves out the coordinator's planning, transfers and stragglers)"
    )
    out = REPO / "runs"
    out.mkdir(exist_ok=True)
    record = {
        "submissions": n,
        "workers": workers,
        "identical_scores": same,
        "runs": [
            {"run": name, "seconds": s, "notebooks_per_min": 60 * n / s} for name, s, _ in rows
        ],
        "cluster_estimate": estimate,
    }
    path = out / f"grading-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}")
    return 0 if same else 1
