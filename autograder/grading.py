"""Grade a class: one sandboxed job per (student, lesson), N in parallel, one gradebook writer.

The coordinator (`grade`)
1. finds every submission (`discover`): each one becomes a job, or is accounted for with the
   reason it cannot be graded; one broken submission never stops the batch;
2. draws this run's seed (fresh each run unless given; recorded in every result) and plans
   each lesson once for the whole class (`autograder.verdict.plan_lesson`: hidden probes,
   the reference's outputs, every known mistake's outputs);
3. runs the jobs on an executor (a local process pool, or a Dask cluster; see
   `autograder.executors`);
4. writes each result to `results/<lesson>/<student>.json` (the truth) and derives nbgrader's
   gradebook from the results of the students currently submitted.

A worker (`grade_job`) rebuilds the submission on the lesson's source notebook
(`sanitize.merge`), scans it (`integrity`), writes the probes, runs the notebook with its kernel
in the sandbox (`autograder.execute`), and judges what the hidden test cells sent back against
the plan (`autograder.verdict`), in its own process: a cell scores its points when every
exercise it judges passed.

Results are cached by a hash of the submission, the lesson (notebook and declaration), the
grader's own code and the limits, so re-running re-grades only what changed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import nbformat

from autograder import coursedir, integrity, sandbox, sanitize
from autograder.judge import file_stem
from autograder.nbgrader_config import REPO
from autograder.results import CellResult, ExerciseVerdict, GradingResult, ProbeVerdict

GRADER_VERSION = "2"


class GradeLocked(RuntimeError):
    """Another `grade` run holds the lock on this grading folder."""


@dataclass
class Job:
    student: str
    lesson: str
    notebook: str
    submission: Path | None  # None: nothing gradable was submitted
    note: str = ""


@dataclass
class Settings:
    root: Path
    limits: sandbox.Limits = field(default_factory=sandbox.Limits)
    seed: int | None = None  # None: a fresh seed for every run
    threads_per_kernel: int = 1
    allow_unsandboxed: bool = False  # grade with limits only where bubblewrap cannot run


# ---------------------------------------------------------------- discovering work


def lesson_notebooks(lesson: str) -> list[Path]:
    return sorted((REPO / "solutions" / lesson).glob("*.ipynb"))


def discover(root: Path, lessons: list[str]) -> list[Job]:
    """A job for every student folder in submitted/, per lesson and notebook.

    When a lesson folder holds several notebooks, the one with answers (then the one with
    the expected name, then the newest) is graded and the others are named in the job's
    note; an absent notebook becomes a job with no submission, so it is reported, not skipped.
    """
    jobs = []
    base = root / "submitted"
    students = sorted(
        p.name
        for p in base.glob("*")
        if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
    )
    for student in students:
        for lesson in lessons:
            folder = base / student / lesson
            if not folder.is_dir() or folder.is_symlink():
                continue
            for source in lesson_notebooks(lesson):
                jobs.append(_job_for(student, lesson, source.name, folder))
    return jobs


def _job_for(student: str, lesson: str, name: str, folder: Path) -> Job:
    """The notebook to grade as `name`: see `submissions.choose_notebook` for the ranking."""
    from autograder.submissions import choose_notebook

    choice = choose_notebook(folder, name, lesson)
    return Job(student, lesson, name, choice.path, note=choice.note)


# ---------------------------------------------------------------- one job (in a worker)


@cache
def template_for(lesson: str, notebook: str) -> sanitize.Template:
    return sanitize.load_template(REPO / "solutions" / lesson / notebook)


def job_dir(root: Path, job: Job) -> Path:
    return root / "work" / job.lesson / job.student


def result_path(root: Path, lesson: str, student: str) -> Path:
    return root / "results" / lesson / f"{student}.json"


def grader_fingerprint(lesson: str) -> str:
    """A hash of everything that decides a verdict besides the submission: the grader's code,
    the comparator and calling protocol, the kernels, the lesson's declaration and notebook, and
    the values they hold now (the tolerance table, each exercise's declared settings)."""
    from course.compare import TOLERANCES

    return _fingerprint(lesson, repr(sorted(TOLERANCES.items())))


@cache
def _fingerprint(lesson: str, tolerances: str) -> str:
    from autograder.lesson import load_lesson

    digest = hashlib.sha256(GRADER_VERSION.encode())
    digest.update(tolerances.encode())
    for exercise in load_lesson(lesson).exercises:
        settings = (
            exercise.full_id,
            exercise.points,
            sorted(exercise.forbidden),
            exercise.time_limit_s,
        )
        digest.update(repr(settings).encode())
    paths = [
        *sorted((REPO / "autograder").glob("*.py")),
        *sorted((REPO / "course").glob("*.py")),
        *sorted((REPO / "solutions" / "kernels").glob("*.py")),
        *sorted((REPO / "solutions" / lesson).glob("*.py")),
        *lesson_notebooks(lesson),
    ]
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_key(job: Job, settings: Settings) -> str:
    digest = hashlib.sha256(grader_fingerprint(job.lesson).encode())
    digest.update(repr((settings.limits, job.note, job.notebook)).encode())
    if job.submission is not None:
        try:
            digest.update(job.submission.read_bytes())
        except OSError as exc:
            digest.update(repr(exc).encode())
    return digest.hexdigest()


def _new_result(job: Job, settings: Settings, seed: int) -> GradingResult:
    template = template_for(job.lesson, job.notebook)
    return GradingResult(
        student=job.student,
        lesson=job.lesson,
        notebook=job.notebook,
        status="graded",
        max_score=template.max_score,
        notes=[job.note] if job.note else [],
        seed=seed,
        submission=job.submission.name if job.submission else "",
        cache_key=cache_key(job, settings),
    )


def grade_job(job: Job, settings: Settings, plans: dict, seed: int) -> GradingResult:
    """Grade one submission; never raises for anything the submission did."""
    start = time.perf_counter()
    result = _new_result(job, settings, seed)
    template = template_for(job.lesson, job.notebook)
    submission = None
    if job.submission is None:
        result.status, result.reason = "missing", job.note or "nothing submitted"
    else:
        try:
            submission = sanitize.read_submission(job.submission)
        except sanitize.UnreadableNotebook as exc:
            result.status, result.reason = "unreadable", str(exc)
    if submission is None:
        result.cells = _zero_cells(template, result.reason)
    else:
        _execute_and_judge(job, template, submission, settings, plans[job.lesson], result)
    result.recompute_score()
    result.seconds = round(time.perf_counter() - start, 2)
    return result


def _zero_cells(template: sanitize.Template, reason: str) -> dict[str, CellResult]:
    return {gid: CellResult(gid, 0.0, pts, reason=reason) for gid, pts in template.points.items()}


def _prepare_workdir(workdir: Path, template: sanitize.Template, plans: dict) -> None:
    if workdir.exists() or workdir.is_symlink():
        _remove(workdir)
    (workdir / "probes").mkdir(parents=True)
    for exercise_id in template.exercise_ids():
        payload = plans[exercise_id].payload()
        (workdir / "probes" / f"{file_stem(exercise_id)}.json").write_text(json.dumps(payload))


def _remove(path: Path) -> None:
    """Remove a job folder without following any link a kernel may have left in it."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def _execute_and_judge(job, template, submission, settings, plans, result: GradingResult) -> None:
    merged, notes = sanitize.merge(template, submission)
    result.notes += notes
    findings = integrity.scan(sanitize.learner_sources(template, submission))
    workdir = job_dir(settings.root, job)
    _prepare_workdir(workdir, template, plans)
    try:
        execution, isolation = _run_sandboxed(merged, workdir, settings)
    finally:
        _save_executed(settings.root, job, merged)
        _remove(workdir)
    if execution.get("startup_error") and not execution.get("cells"):
        # Nothing of the learner's ran: a problem on the grader's side, not a score of 0.
        raise RuntimeError(f"the kernel did not start: {execution['startup_error']}")
    result.isolation = isolation
    result.cells = _score_cells(template, plans, execution)
    result.warnings = _stderr_warnings(merged)
    result.execution = _execution_summary(execution)
    result.findings = (
        findings
        + integrity.structural_findings(notes)
        + integrity.runtime_findings(result.execution)
        + integrity.verdict_findings(result.cells)
    )


def _save_executed(root: Path, job: Job, nb) -> None:
    """The executed notebook, in a folder no kernel can reach (outputs of hidden tests kept)."""
    target = root / "autograded" / job.student / job.lesson / job.notebook
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():
        target.unlink()
    nbformat.write(nb, target)


def _run_sandboxed(merged, workdir: Path, settings: Settings) -> tuple[dict, str]:
    from autograder.execute import execute

    box = sandbox.prepare(
        workdir,
        settings.limits,
        threads=settings.threads_per_kernel,
        seed=settings.seed,
        allow_unsandboxed=settings.allow_unsandboxed,
    )
    with box:  # the kernel's lifetime: whole-submission limits, then cleaning
        execution = execute(
            merged,
            workdir,
            settings.limits,
            box.wrapper,
            box.env,
            sockets=box.sockets,
            before_start=box.reopen_sockets,
        )
    box.annotate(execution)  # limit_hit (a message for the student), limits_by
    return execution, box.isolation


def _cell_problem(execution: dict, grade_id: str) -> str:
    """Why a test cell sent back nothing: its own status, or how the run ended."""
    for cell in execution.get("cells", []):
        if cell.get("hidden_tests_of") != grade_id:
            continue
        status = cell.get("status")
        if status == "timeout":
            return f"the hidden tests did not finish: {cell.get('detail', 'timeout')}"
        if status in ("kernel-died", "not-run"):
            return _stopped_reason(execution)
        if status == "error":
            return (
                f"the hidden tests could not run: {str(cell.get('detail', ''))[:200]} (an "
                "earlier cell must define the function, and the grader's recorder must be left "
                "as it is)"
            )
        return "the hidden tests ran but sent no results (was the grader's recorder replaced?)"
    if execution.get("timed_out"):
        return "the notebook ran past the grader's time limit before this test"
    return _stopped_reason(execution)


def _stopped_reason(execution: dict) -> str:
    if execution.get("limit_hit"):
        return f"the notebook was stopped: {integrity.limit_text(execution['limit_hit'])}"
    if execution.get("kernel_died"):
        return "the kernel stopped before this test (an exit, a crash, or a resource limit)"
    return "the test did not run (the notebook stopped earlier)"


def _score_cells(template, plans: dict, execution: dict) -> dict[str, CellResult]:
    from autograder.verdict import judge_exercise

    reports = _reports_by_exercise(execution)
    cells = {}
    for gid, points in template.points.items():
        verdicts = []
        for eid in template.judged.get(gid, []):
            raw = reports.get(eid)
            if raw == "duplicate":
                verdicts.append(_duplicate_verdict(eid))
            else:
                verdicts.append(judge_exercise(plans[eid], raw, _cell_problem(execution, gid)))
        passed = bool(verdicts) and all(v.passed for v in verdicts)
        cell = CellResult(gid, points if passed else 0.0, points, verdicts)
        if not verdicts:
            cell.reason = "this test cell has no judged exercise"
        cells[gid] = cell
    _note_dependencies(cells, plans)
    return cells


def _reports_by_exercise(execution: dict) -> dict:
    """{exercise id: raw report} from the hidden cells; "duplicate" when one came twice."""
    found: dict = {}
    forged: set[str] = set()
    for cell in execution.get("cells", []):
        forged.update(e for e in cell.get("published_for", []) if isinstance(e, str))
        for raw in cell.get("results", []) if cell.get("hidden_tests_of") else []:
            eid = raw.get("exercise") if isinstance(raw, dict) else None
            if not isinstance(eid, str):
                continue
            found[eid] = "duplicate" if eid in found else raw
    # Results claiming an exercise, sent from a cell that is not its hidden test: forged.
    return found | {eid: "duplicate" for eid in forged}


def _duplicate_verdict(exercise_id: str) -> ExerciseVerdict:
    why = (
        "results for this exercise were sent by code other than the grader's recorder "
        "(twice, or from another cell)"
    )
    return ExerciseVerdict(
        exercise_id, "", [ProbeVerdict("results", False, "could not be verified", tampering=why)]
    )


def _note_dependencies(cells: dict[str, CellResult], plans: dict) -> None:
    """Tell a failing exercise when a learner function it calls failed its own checks."""
    failed = {
        plans[v.exercise].exercise.function
        for c in cells.values()
        for v in c.exercises
        if not v.passed and v.exercise in plans
    }
    for cell in cells.values():
        for verdict in cell.exercises:
            plan = plans.get(verdict.exercise)
            if verdict.passed or plan is None:
                continue
            broken = [f for f in plan.exercise.uses if f in failed]
            if broken and not plan.exercise.stand_ins:
                names = ", ".join(f"`{f}`" for f in broken)
                verdict.note = f"this exercise calls your {names}, which failed its own checks"


def _execution_summary(execution: dict) -> dict:
    cells = execution.get("cells", [])
    learner = [c for c in cells if not c.get("grader_cell") and not c.get("hidden_tests_of")]
    first_error = next((c for c in learner if c.get("status") == "error"), None)
    return {
        "timed_out": bool(execution.get("timed_out")),
        "kernel_died": bool(execution.get("kernel_died")),
        "restarts": execution.get("restarts", 0),
        "kernel_cpu_s": execution.get("kernel_cpu_s"),
        "startup_error": execution.get("startup_error"),
        "limit_hit": execution.get("limit_hit"),
        "limits_by": execution.get("limits_by"),
        "cells_run": sum(1 for c in cells if c.get("status") not in ("not-run",)),
        "timeouts": [
            c.get("grade_id") or c.get("index") for c in cells if c.get("status") == "timeout"
        ],
        "truncated": [c.get("grade_id") or c.get("index") for c in cells if c.get("truncated")],
        "published_results": [
            c.get("grade_id") or c.get("index") for c in cells if c.get("published_results")
        ],
        "first_error": _explain_error(first_error) if first_error else None,
        "errors": [
            f"{c.get('grade_id') or 'cell ' + str(c.get('index'))}: {c.get('detail', '')}"[:200]
            for c in learner
            if c.get("status") == "error"
        ][:20],
    }


_ERROR_MEANINGS = {
    "StdinNotImplementedError": "input() cannot be answered during grading: remove the input() "
    "call (or give the value directly)",
    "ModuleNotFoundError": "a module that is not installed where the notebook is graded",
    "FileNotFoundError": "a file that exists on your machine but not where the notebook is graded",
    "NameError": "a name used before the cell that defines it has run (run the notebook top to "
    "bottom before submitting)",
    "MemoryError": "the cell ran out of memory",
}


def _explain_error(cell: dict) -> dict:
    detail = str(cell.get("detail", ""))
    name = detail.split(":")[0].strip()
    label = cell.get("grade_id") or f"cell {cell.get('index')}"
    return {"cell": label, "error": detail[:300], "meaning": _ERROR_MEANINGS.get(name, "")}


def _stderr_warnings(nb) -> list[str]:
    """Warnings the learner's own cells printed: shown to them (never scored). Output of the
    hidden test cells is left out: it could echo a hidden probe's inputs."""
    found = []
    for cell in nb.cells:
        if cell.get("metadata", {}).get("autograder", {}).get("hidden_tests_of"):
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = out.get("text", "")
                if "Warning" in text and len(found) < 10:
                    found.append(text.strip()[:300])
    return found


# ---------------------------------------------------------------- the coordinator


@contextmanager
def grade_lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".grade.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise GradeLocked(
                f"another `grade` run is in progress on {root} ({holder}); wait for it to finish"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_course(root: Path, lessons: list[str]) -> coursedir.CourseDir:
    """The gradebook knows every lesson, regenerated when a lesson's source changed."""
    course = coursedir.CourseDir(root.resolve())
    stamp = root / "sources.json"
    hashes = {lesson: _lesson_hash(lesson) for lesson in lessons}
    try:
        old = json.loads(stamp.read_text()) if stamp.exists() else {}
    except ValueError:
        old = {}
    if (root / "gradebook.db").exists() and all(old.get(k) == v for k, v in hashes.items()):
        return course
    coursedir.create(root, lessons)
    stamp.write_text(json.dumps({**old, **hashes}))
    return course


def _lesson_hash(lesson: str) -> str:
    digest = hashlib.sha256()
    for path in lesson_notebooks(lesson):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def load_result(path: Path) -> GradingResult | None:
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 64 * 2**20:
            return None
        return GradingResult.from_json(path.read_text())
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _cached(job: Job, settings: Settings) -> GradingResult | None:
    old = load_result(result_path(settings.root, job.lesson, job.student))
    if old is None or old.cache_key != cache_key(job, settings):
        return None
    old.cached = True
    return old


def save_result(root: Path, result: GradingResult) -> None:
    path = result_path(root, result.lesson, result.student)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(result.to_json())
    os.replace(tmp, path)


def failed_job(job: Job, settings: Settings, exc: BaseException, seed: int) -> GradingResult:
    """A job the grader could not finish: 0 points, the reason, never cached."""
    result = _new_result(job, settings, seed)
    result.status = "error"
    result.reason = f"the grader could not grade this submission: {type(exc).__name__}: {exc}"[:500]
    result.cells = _zero_cells(template_for(job.lesson, job.notebook), result.reason)
    result.cache_key = None
    return result


def grade(
    root: Path,
    lessons: list[str],
    workers: int = 1,
    force: bool = False,
    settings: Settings | None = None,
    progress: Callable[[GradingResult], None] | None = None,
    executor=None,
) -> list[GradingResult]:
    """Grade every submission of `lessons` under `root`/submitted; return one result each.

    `executor`: where the jobs run (default `LocalExecutor(workers)`; or an
    `autograder.executors.DaskExecutor`). `progress` is called with each result written; one
    with a `begin(total)` method hears first how many are to come (`executors.GradingProgress`).
    Raises `GradeLocked`, and `sandbox.SandboxUnavailable` when this machine's executor would
    have to grade unsandboxed without `settings.allow_unsandboxed`."""
    from autograder.executors import LocalExecutor
    from autograder.gradebook import sync_gradebook

    root = root.resolve()
    settings = settings or Settings(root=root)
    settings.root = root
    if not getattr(executor, "sandbox_on_workers", False):  # a Dask worker checks its own
        sandbox.require(settings.allow_unsandboxed)
    with grade_lock(root):
        course = ensure_course(root, lessons)
        jobs = discover(root, lessons)
        seed = settings.seed if settings.seed is not None else secrets.randbelow(2**31)
        results: list[GradingResult] = []
        todo = []
        for job in jobs:
            cached = None if force else _cached(job, settings)
            if cached is not None:
                results.append(cached)
            else:
                todo.append(job)
        groups = _group_identical(todo, settings)
        plans = _plans({job.lesson for job in todo}, seed)
        executor = executor or LocalExecutor(workers)
        if hasattr(progress, "begin"):  # a progress bar learns how many results will come
            progress.begin(len(todo))
        leaders = [g[0] for g in groups]
        for job, result in executor.run(leaders, settings, plans, seed):
            group = next(g for g in groups if g[0] is job)
            for member in group:
                own = result if member is job else _adopt(result, member, settings)
                save_result(root, own)
                results.append(own)
                if progress:
                    progress(own)
        sync_gradebook(course, root, lessons, jobs)
        summary = {
            "graded_at": time.time(),
            "seed": seed,
            "workers": getattr(executor, "workers", workers),
            "executor": type(executor).__name__,
            "jobs": len(jobs),
            "graded": len(todo),
            "isolation": sorted({r.isolation or "-" for r in results}),
        }
        (root / "results").mkdir(parents=True, exist_ok=True)
        (root / "results" / "last_run.json").write_text(json.dumps(summary))
    return sorted(results, key=lambda r: (r.lesson, r.student))


def _plans(lessons: set[str], seed: int) -> dict:
    from autograder.verdict import plan_lesson

    return {lesson: plan_lesson(lesson, seed) for lesson in sorted(lessons)}


def _execution_key(job: Job, settings: Settings) -> str | None:
    """Identical notebooks after sanitizing run identically: one execution serves them all.

    (Common in a real class: many hand in the untouched release.) None when there is nothing
    to execute, or when the notebook cannot be read (its own job reports why).
    """
    if job.submission is None:
        return None
    try:
        merged, _ = sanitize.merge(
            template_for(job.lesson, job.notebook), sanitize.read_submission(job.submission)
        )
    except Exception:  # noqa: BLE001 - any malformed input is reported by its own job
        return None
    cells = [(c.cell_type, c.source, c.get("metadata", {}).get("autograder")) for c in merged.cells]
    digest = hashlib.sha256(json.dumps(cells, sort_keys=True, default=str).encode())
    digest.update(repr((job.lesson, job.notebook, settings.limits)).encode())
    return digest.hexdigest()


def _group_identical(jobs: list[Job], settings: Settings) -> list[list[Job]]:
    groups: dict[str, list[Job]] = {}
    alone: list[list[Job]] = []
    for job in jobs:
        key = _execution_key(job, settings)
        if key is None:
            alone.append([job])
        else:
            groups.setdefault(key, []).append(job)
    return list(groups.values()) + alone


def _adopt(result: GradingResult, job: Job, settings: Settings) -> GradingResult:
    """`result` of an identical notebook, with this student's own notes and findings."""
    own = GradingResult.from_json(result.to_json())
    try:
        template = template_for(job.lesson, job.notebook)
        submission = sanitize.read_submission(job.submission)
        _, notes = sanitize.merge(template, submission)
        findings = integrity.scan(sanitize.learner_sources(template, submission))
    except Exception as exc:  # noqa: BLE001 - the group's key said it was readable
        return failed_job(job, settings, exc, result.seed or 0)
    own.student = job.student
    own.notes = ([job.note] if job.note else []) + notes
    own.findings = (
        findings
        + integrity.structural_findings(notes)
        + integrity.runtime_findings(own.execution)
        + integrity.verdict_findings(own.cells)
    )
    own.submission = job.submission.name if job.submission else ""
    own.cache_key = cache_key(job, settings)
    own.seconds = 0.0
    own.shared_run = True
    return own
