"""Grade a class: one sandboxed job per (student, lesson), N in parallel, one gradebook writer.

For each submission a worker
1. rebuilds it on the lesson's source notebook (`sanitize.merge`) and scans it (`integrity`);
2. writes the hidden tests' inputs (`transport.write_probes`) into the job's folder;
3. executes it in the sandbox (`python -m autograder.execute`), where hidden test cells only
   record the learner's outputs as plain data;
4. compares those outputs with the reference kernels in its own process (`judge.verdict_for`)
   and scores each test cell: full points when every judged exercise in it passed, else 0.

Workers never touch the gradebook: the coordinating process writes every result into
nbgrader's SQLite gradebook, one at a time. Jobs are independent and their inputs are
seeded per exercise, so the scores do not depend on the number of workers. A lock file
makes a second concurrent `grade` run stop with a clear message. Results are cached by a
hash of the submission, the lesson source and the grader, so re-running is idempotent and
re-grades only what changed (`force=True` re-grades everything).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder import coursedir, integrity, sandbox, sanitize, transport
from autograder.judge import ProbeVerdict, Verdict, verdict_for
from autograder.nbgrader_config import REPO

GRADER_VERSION = "1"


class GradeLocked(RuntimeError):
    """Another `grade` run holds the lock on this grading folder."""


@dataclass
class Job:
    student: str
    lesson: str
    notebook: str
    submission: Path | None  # None: nothing was submitted
    note: str = ""


@dataclass
class Settings:
    root: Path
    limits: sandbox.Limits = field(default_factory=sandbox.Limits)
    seed: int | None = None
    threads_per_kernel: int = 1
    allow_unsandboxed: bool = False  # grade with limits only where bubblewrap cannot run


# ---------------------------------------------------------------- discovering work


def lesson_notebooks(lesson: str) -> list[Path]:
    return sorted((REPO / "solutions" / lesson).glob("*.ipynb"))


def discover(root: Path, lessons: list[str]) -> list[Job]:
    """A job for every student folder in submitted/, per lesson and notebook.

    A lesson folder with one notebook under another name is graded with a note; an
    absent notebook becomes a job with no submission, so it is reported, not skipped.
    """
    jobs = []
    students = sorted(p.name for p in (root / "submitted").glob("*") if p.is_dir())
    for student in students:
        for lesson in lessons:
            folder = root / "submitted" / student / lesson
            if not folder.is_dir():
                continue
            for source in lesson_notebooks(lesson):
                jobs.append(_job_for(student, lesson, source.name, folder))
    return jobs


def _job_for(student: str, lesson: str, name: str, folder: Path) -> Job:
    exact = folder / name
    if exact.exists():
        return Job(student, lesson, name, exact)
    others = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    if len(others) == 1:
        return Job(
            student,
            lesson,
            name,
            others[0],
            note=f"graded {others[0].name} as {name} (wrong file name)",
        )
    if others:
        listed = ", ".join(p.name for p in others)
        return Job(
            student, lesson, name, None, note=f"no {name}; found several notebooks: {listed}"
        )
    return Job(student, lesson, name, None, note=f"no notebook {name} in the submission")


# ---------------------------------------------------------------- one job (in a worker)

_TEMPLATES: dict[Path, sanitize.Template] = {}


def template_for(lesson: str, notebook: str) -> sanitize.Template:
    path = REPO / "solutions" / lesson / notebook
    if path not in _TEMPLATES:
        _TEMPLATES[path] = sanitize.load_template(path)
    return _TEMPLATES[path]


def job_dir(root: Path, job: Job) -> Path:
    return root / "work" / job.lesson / job.student


def result_path(root: Path, job: Job) -> Path:
    return root / "results" / job.lesson / f"{job.student}.json"


def cache_key(job: Job, settings: Settings) -> str:
    digest = hashlib.sha256(GRADER_VERSION.encode())
    digest.update((REPO / "solutions" / job.lesson / job.notebook).read_bytes())
    digest.update(repr((settings.limits, settings.seed, job.note)).encode())
    if job.submission is not None and job.submission.exists():
        digest.update(job.submission.read_bytes())
    return digest.hexdigest()


def grade_job(job: Job, settings: Settings) -> dict:
    """Grade one submission; never raises for anything the submission did."""
    start = time.perf_counter()
    template = template_for(job.lesson, job.notebook)
    result = {
        "student": job.student,
        "lesson": job.lesson,
        "notebook": job.notebook,
        "max_score": template.max_score,
        "score": 0.0,
        "notes": [job.note] if job.note else [],
        "findings": [],
        "cells": {},
        "cache_key": cache_key(job, settings),
    }
    try:
        submission = sanitize.read_submission(job.submission) if job.submission else None
    except sanitize.UnreadableNotebook as exc:
        submission, result["status"], result["reason"] = None, "unreadable", str(exc)
    if job.submission is None:
        result["status"], result["reason"] = "missing", job.note or "nothing submitted"
    if submission is None:
        result["cells"] = _zero_cells(template, result["reason"])
    else:
        result.update(_execute_and_judge(job, template, submission, settings))
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def _zero_cells(template: sanitize.Template, reason: str) -> dict:
    return {
        gid: {"points": 0.0, "max": pts, "passed": False, "reason": reason, "exercises": []}
        for gid, pts in template.points.items()
    }


def _prepare_workdir(workdir: Path, template: sanitize.Template, seed: int | None) -> dict:
    from autograder.exercises import get_exercise

    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "results").mkdir(parents=True)
    probes = {}
    for exercise_id in template.exercise_ids():
        exercise = get_exercise(exercise_id)
        probes[exercise_id] = (exercise, exercise.make_probes(seed))
        path = workdir / "probes" / f"{transport.file_stem(exercise_id)}.pt"
        transport.write_probes(path, exercise, probes[exercise_id][1])
    _copy_font_cache(workdir / ".mpl")
    return probes


def _copy_font_cache(target: Path) -> None:
    """Matplotlib rebuilds its font list in a fresh config dir (seconds per notebook)."""
    import matplotlib

    target.mkdir(parents=True, exist_ok=True)
    for cached in Path(matplotlib.get_cachedir()).glob("fontlist-*.json"):
        shutil.copy(cached, target / cached.name)


def _execute_and_judge(job: Job, template, submission, settings: Settings) -> dict:
    merged, notes = sanitize.merge(template, submission)
    findings = integrity.scan(sanitize.learner_sources(template, submission))
    workdir = job_dir(settings.root, job)
    probes = _prepare_workdir(workdir, template, settings.seed)
    execution, isolation = _run_sandboxed(merged, workdir, settings)
    if execution.get("startup_error") and not execution.get("cells"):
        # Nothing of the learner's ran: a problem on the grader's side, not a score of 0.
        raise RuntimeError(f"the kernel did not start: {execution['startup_error']}")
    cells = _score_cells(template, probes, workdir, execution)
    warnings = _stderr_warnings(workdir)
    summary = _execution_summary(execution)
    findings += integrity.structural_findings(notes) + integrity.runtime_findings(summary)
    return {
        "status": "graded",
        "isolation": isolation,
        "notes": ([job.note] if job.note else []) + notes,
        "warnings": warnings,
        "findings": [f.to_dict() for f in findings],
        "cells": cells,
        "score": sum(c["points"] for c in cells.values()),
        "execution": summary,
    }


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
        execution = execute(merged, workdir, settings.limits, box.wrapper, box.env)
    box.annotate(execution)  # limit_hit (a message for the student), limits_by
    nbformat.write(merged, workdir / "executed.ipynb")
    return execution, box.isolation


def _cell_problem(execution: dict, grade_id: str) -> str:
    """Why a test cell recorded nothing: its own status, or how the run ended."""
    for cell in execution.get("cells", []):
        if isinstance(cell, dict) and cell.get("hidden_tests_of") == grade_id:
            status = cell.get("status")
            if status in ("timeout", "kernel-died", "not-run"):
                return f"the test cell did not finish: {cell.get('detail', status)}"
            if status == "error":
                return f"the test cell raised {str(cell.get('detail', ''))[:200]}"
    if execution.get("timed_out"):
        return "the notebook ran past the grader's time limit before this test"
    return "the test did not run (the notebook stopped earlier)"


def _score_cells(template, probes: dict, workdir: Path, execution: dict) -> dict:
    cells = {}
    for gid, points in template.points.items():
        verdicts = [
            _verdict(eid, probes[eid], workdir, execution, gid)
            for eid in template.judged.get(gid, [])
        ]
        passed = bool(verdicts) and all(v.passed for v in verdicts)
        cells[gid] = {
            "points": points if passed else 0.0,
            "max": points,
            "passed": passed,
            "exercises": [v.to_dict() for v in verdicts],
        }
        if not verdicts:
            cells[gid]["reason"] = "this test cell has no judged exercise"
    return cells


def _verdict(
    exercise_id: str, exercise_probes, workdir: Path, execution: dict, gid: str
) -> Verdict:
    exercise, probes = exercise_probes
    try:
        results = transport.read_results(workdir / "results", exercise_id, len(probes))
    except FileNotFoundError:
        reason = _cell_problem(execution, gid)
        return Verdict(exercise_id, exercise.title, [ProbeVerdict("ran", False, reason)])
    except transport.BadResults as exc:
        return Verdict(exercise_id, exercise.title, [ProbeVerdict("results", False, str(exc))])
    return verdict_for(exercise, probes, results)


def _execution_summary(execution: dict) -> dict:
    cells = [c for c in execution.get("cells", []) if isinstance(c, dict)]
    return {
        "timed_out": bool(execution.get("timed_out")),
        "kernel_died": bool(execution.get("kernel_died")),
        "startup_error": execution.get("startup_error"),
        "limit_hit": execution.get("limit_hit"),
        "limits_by": execution.get("limits_by"),
        "cells_run": sum(1 for c in cells if c.get("status") not in ("not-run",)),
        "timeouts": [
            c.get("grade_id") or c.get("index") for c in cells if c.get("status") == "timeout"
        ],
        "truncated": [c.get("grade_id") or c.get("index") for c in cells if c.get("truncated")],
        "errors": [
            f"{c.get('grade_id') or c.get('index')}: {c.get('detail', '')}"[:200]
            for c in cells
            if c.get("status") == "error"
        ][:20],
    }


def _stderr_warnings(workdir: Path) -> list[str]:
    """Warnings the learner's code printed: shown to them, never scored."""
    try:
        nb = nbformat.read(workdir / "executed.ipynb", as_version=4)
    except Exception:  # noqa: BLE001 - a run that was killed leaves no notebook
        return []
    found = []
    for cell in nb.cells:
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
    old = json.loads(stamp.read_text()) if stamp.exists() else {}
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


def _cached(job: Job, settings: Settings) -> dict | None:
    path = result_path(settings.root, job)
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return old if old.get("cache_key") == cache_key(job, settings) else None


def _record(course: coursedir.CourseDir, result: dict) -> None:
    import warnings

    from nbgrader.api import Gradebook

    with Gradebook(course.db_url) as gb, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy autoflush notes from nbgrader's own API
        gb.update_or_create_student(result["student"])
        gb.update_or_create_submission(result["lesson"], result["student"])
        for gid, cell in result["cells"].items():
            grade = gb.find_grade(
                gid, Path(result["notebook"]).stem, result["lesson"], result["student"]
            )
            grade.auto_score = float(cell["points"])
            grade.needs_manual_grade = False
        gb.db.commit()


def _save(settings: Settings, job: Job, result: dict) -> None:
    path = result_path(settings.root, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    executed = job_dir(settings.root, job) / "executed.ipynb"
    if executed.exists():
        target = settings.root / "autograded" / job.student / job.lesson / job.notebook
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(executed, target)


def _failed_job(job: Job, settings: Settings, exc: BaseException) -> dict:
    template = template_for(job.lesson, job.notebook)
    reason = f"the grader failed on this submission: {type(exc).__name__}: {exc}"[:500]
    return {
        "student": job.student,
        "lesson": job.lesson,
        "notebook": job.notebook,
        "status": "error",
        "reason": reason,
        "score": 0.0,
        "max_score": template.max_score,
        "cells": _zero_cells(template, reason),
        "notes": [],
        "findings": [],
        "cache_key": None,
    }


def grade(
    root: Path,
    lessons: list[str],
    workers: int = 1,
    force: bool = False,
    settings: Settings | None = None,
    progress: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Grade every submission of `lessons` under `root`/submitted; return one result each."""
    root = root.resolve()
    settings = settings or Settings(root=root)
    settings.root = root
    sandbox.require(settings.allow_unsandboxed)
    with grade_lock(root):
        course = ensure_course(root, lessons)
        jobs = discover(root, lessons)
        results: list[dict] = []
        todo = []
        for job in jobs:
            cached = None if force else _cached(job, settings)
            if cached is not None:
                cached["cached"] = True
                results.append(cached)
            else:
                todo.append(job)
        groups = _group_identical(todo, settings)
        for job, result in _run_jobs([g[0] for g in groups], settings, workers):
            group = next(g for g in groups if g[0] is job)
            for member in group:
                own = result if member is job else _adopt(result, member, settings)
                _save(settings, member, own)
                results.append(own)
                if progress:
                    progress(own)
        for result in results:
            _record(course, result)
        summary = {
            "graded_at": time.time(),
            "workers": workers,
            "jobs": len(jobs),
            "isolation": sorted({r.get("isolation", "-") for r in results}),
        }
        (root / "results" / "last_run.json").write_text(json.dumps(summary))
    return sorted(results, key=lambda r: (r["lesson"], r["student"]))


def _execution_key(job: Job, settings: Settings) -> str | None:
    """Identical notebooks after sanitizing run identically: one execution serves them all.

    (Common in a real class: many hand in the untouched release.) None when there is
    nothing to execute.
    """
    if job.submission is None:
        return None
    try:
        merged, _ = sanitize.merge(
            template_for(job.lesson, job.notebook), sanitize.read_submission(job.submission)
        )
    except sanitize.UnreadableNotebook:
        return None
    # Cell ids are random for inserted cells: hash what executes, not the file.
    cells = [(c.cell_type, c.source, c.get("metadata", {}).get("autograder")) for c in merged.cells]
    digest = hashlib.sha256(json.dumps(cells, sort_keys=True).encode())
    digest.update(repr((job.lesson, job.notebook, settings.limits, settings.seed)).encode())
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


def _adopt(result: dict, job: Job, settings: Settings) -> dict:
    """`result` of an identical notebook, with this student's own notes and findings."""
    template = template_for(job.lesson, job.notebook)
    submission = sanitize.read_submission(job.submission)
    _, notes = sanitize.merge(template, submission)
    findings = integrity.scan(sanitize.learner_sources(template, submission))
    findings += integrity.structural_findings(notes)
    findings += integrity.runtime_findings(result.get("execution", {}))
    own = json.loads(json.dumps(result, default=str))
    own.update(
        student=job.student,
        notes=([job.note] if job.note else []) + notes,
        findings=[f.to_dict() for f in findings],
        cache_key=cache_key(job, settings),
        seconds=0.0,
        shared_run=True,
    )
    return own


def _run_jobs(jobs: list[Job], settings: Settings, workers: int):
    if workers <= 1:
        for job in jobs:
            try:
                yield job, grade_job(job, settings)
            except Exception as exc:  # noqa: BLE001 - one bad job must not stop the class
                yield job, _failed_job(job, settings, exc)
        return
    # forkserver, not fork: forking a process whose torch thread pools are running can
    # deadlock the child on a lock another thread held at the moment of the fork.
    context = multiprocessing.get_context("forkserver")
    # Import torch, nbclient and the reference kernels once in the fork server rather than
    # once per worker (seconds each); nothing has started a thread pool there yet.
    context.set_forkserver_preload(
        [
            "autograder.grading",
            "autograder.execute",
            "autograder.exercises",
            "solutions.kernels.softmax",
        ]
    )
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(grade_job, job, settings): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            try:
                yield job, future.result()
            except Exception as exc:  # noqa: BLE001
                yield job, _failed_job(job, settings, exc)
