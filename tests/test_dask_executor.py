"""The Dask executor (`grade --scheduler local:N`): the same scores as the process pool on a
class of more than 50 submissions, every submission accounted for when a worker is killed
mid-job (retried, or reported with the reason once the retries are spent), and workers without
a working sandbox refusing jobs rather than grading them unsandboxed.

Lesson 01 notebooks are the cheapest to grade. Grading shares one execution between
notebooks that are identical after sanitizing, as a real class would (many hand in the
release untouched); the class below has DISTINCT different notebooks and copies of them, so
that the test stays within `make test`'s budget while every student still gets a result.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from autograder import grading, limits, sandbox
from autograder.__main__ import main as cli
from autograder.executors import DaskExecutor, GradingProgress, parse_scheduler
from autograder.lesson import load_lesson
from autograder.results import GradingResult
from tests.notebooks import REPO, load, save, with_cell

pytest.importorskip("distributed")
pytestmark = pytest.mark.slow

LESSON, NB = "01-softmax", "softmax"
SOLUTION = load("solutions", LESSON, NB)
BLANK = load("course", LESSON, NB)
MUTANTS = {
    m.id: (e.answer_cell, m.source)
    for e in load_lesson(LESSON).exercises
    for m in e.mistakes
    if m.graded
}
DISTINCT = 4  # executions per run in the class test: solution, blank, two known mistakes
SEED = 7
LIMITS = sandbox.Limits(cell_timeout_s=30, notebook_timeout_s=240)
NO_SANDBOX = "bubblewrap is not installed (a test's stand-in reason)"

needs_sandbox = pytest.mark.skipif(
    sandbox.unavailable_reason() is not None, reason=str(sandbox.unavailable_reason())
)


def _answer(nb, grade_id: str) -> str:
    return next(
        c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id
    )


def signed(nb, text: str):
    """`nb` with a comment in its first answer cell: a distinct notebook, the same answers."""
    return with_cell(nb, "softmax", f"# {text}\n{_answer(nb, 'softmax')}")


def variants(count: int) -> list:
    """`count` distinct notebooks: solutions, blanks and each graded known mistake, in turn."""
    kinds = [SOLUTION, BLANK]
    kinds += [with_cell(SOLUTION, cell, source) for cell, source in MUTANTS.values()]
    found = []
    for i in range(count):
        nb = kinds[i % len(kinds)]
        found.append(signed(nb, f"variant {i}"))
    return found


def build_class(root, distinct: int, copies: int) -> dict[str, str]:
    """Writes distinct + copies submissions, 2 malformed and 2 missing: student -> kind."""
    kinds = {}
    notebooks = variants(distinct)
    for i in range(distinct + copies):
        student = f"s{i:03d}"
        kinds[student] = f"variant{i % distinct}"
        save(notebooks[i % distinct], root / "submitted" / student / LESSON / f"{NB}.ipynb")
    for i in range(2):
        folder = root / "submitted" / f"junk{i}" / LESSON
        folder.mkdir(parents=True)
        (folder / f"{NB}.ipynb").write_bytes(b'{"cells": [')
        kinds[f"junk{i}"] = "malformed"
        (root / "submitted" / f"absent{i}" / LESSON).mkdir(parents=True)
        kinds[f"absent{i}"] = "missing"
    return kinds


def scores(results) -> dict[str, tuple]:
    return {
        r.student: (r.status, r.score, {g: c.points for g, c in r.cells.items()}) for r in results
    }


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A grading folder with its gradebook, made once (nbgrader takes seconds per lesson)."""
    template = tmp_path_factory.mktemp("course")
    grading.ensure_course(template, [LESSON])

    def make(root):
        shutil.copytree(template, root, dirs_exist_ok=True)
        config = root / "nbgrader_config.py"
        config.write_text(config.read_text().replace(str(template), str(root)))
        return root

    return make


@pytest.fixture(scope="module")
def cluster():
    """One LocalCluster of 2 workers for the fault and refusal tests (seconds to start)."""
    with DaskExecutor("local:2") as executor:
        yield executor.client


# ---------------------------------------------------------------- cheap checks


@pytest.mark.parametrize(
    "text, parsed",
    [("local:2", ("local", 2)), ("tcp://10.0.0.5:8786", ("remote", "tcp://10.0.0.5:8786"))],
)
def test_scheduler_addresses(text, parsed):
    assert parse_scheduler(text) == parsed


@pytest.mark.parametrize("text", ["local:0", "local:x", "10.0.0.5:8786", "tcp://"])
def test_a_malformed_scheduler_is_one_line_error(text, tmp_path, capsys):
    assert cli(["--root", str(tmp_path), "grade", "--scheduler", text]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --scheduler") and err.count("\n") == 1


def test_the_default_path_does_not_import_dask():
    code = (
        "import sys; import autograder.__main__ as m, autograder.executors, autograder.grading;"
        "m.build_parser(); print(sorted(k for k in sys.modules if k.split('.')[0] in "
        "('dask', 'distributed')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_progress_bar_counts_graded_failed_and_remaining():
    import io

    out = io.StringIO()
    progress = GradingProgress(echo=lambda r: f"{r.student}: {r.status}", file=out)
    progress.begin(3)
    for student, status in [("a", "graded"), ("b", "error")]:
        progress(GradingResult(student, LESSON, f"{NB}.ipynb", status, 20.0))
    progress.close()
    assert (progress.graded, progress.failed) == (1, 1)
    text = out.getvalue()
    assert "graded 1, failed 1, remaining 1" in text and "notebooks/min" in text
    assert "b: error" in text


# ---------------------------------------------------------------- a class on two executors


@needs_sandbox
def test_a_class_gets_the_same_scores_on_dask_as_on_the_process_pool(course, tmp_path):
    kinds = build_class(course(tmp_path / "dask"), DISTINCT, copies=46)
    assert len(kinds) >= 50
    shutil.copytree(tmp_path / "dask" / "submitted", course(tmp_path / "pool") / "submitted")
    argv = ["--root", str(tmp_path / "dask"), "grade", "--scheduler", "local:2"]
    assert cli([*argv, "--seed", str(SEED), "--cell-timeout", "30"]) == 0
    on_dask = [grading.load_result(p) for p in (tmp_path / "dask" / "results").rglob("s*.json")]
    on_dask += [grading.load_result(p) for p in (tmp_path / "dask" / "results").rglob("[ja]*")]
    settings = grading.Settings(root=tmp_path / "pool", limits=LIMITS, seed=SEED)
    in_pool = grading.grade(tmp_path / "pool", [LESSON], workers=2, settings=settings)

    reasons = {r.reason for r in on_dask + in_pool if r.status == "error"}
    assert scores(on_dask) == scores(in_pool), f"the grader's own failures: {reasons}"
    assert set(scores(on_dask)) == set(kinds)
    by_student = {r.student: r for r in on_dask}
    full = by_student["s000"].max_score
    assert by_student["s000"].score == full  # a solution
    assert by_student["s001"].score == 0  # the blank release
    assert {r.status for s, r in by_student.items() if kinds[s] == "malformed"} == {"unreadable"}
    assert {r.status for s, r in by_student.items() if kinds[s] == "missing"} == {"missing"}
    executed = [r for r in on_dask if r.status == "graded" and not r.shared_run]
    assert len(executed) == DISTINCT
    assert {r.isolation for r in executed} == {"bubblewrap"}
    for result in executed:  # the coordinator wrote what the workers sent back
        assert (
            tmp_path / "dask" / "autograded" / result.student / LESSON / f"{NB}.ipynb"
        ).is_file()
    assert not (tmp_path / "dask" / "work").exists()  # no job folder on the coordinator
    summary = (tmp_path / "dask" / "results" / "last_run.json").read_text()
    assert '"executor": "DaskExecutor"' in summary and '"workers": 2' in summary


# ---------------------------------------------------------------- refusals


def _refuse(reason: str | None) -> None:
    """On a worker: pretend bubblewrap is missing (a reason), or restore the real check."""
    if not hasattr(sandbox, "_real_unavailable_reason"):
        sandbox._real_unavailable_reason = sandbox.unavailable_reason
    sandbox.unavailable_reason = (lambda: reason) if reason else sandbox._real_unavailable_reason


def _small_class(root, notebooks: dict) -> None:
    for student, nb in notebooks.items():
        save(nb, root / "submitted" / student / LESSON / f"{NB}.ipynb")


def test_workers_without_a_sandbox_refuse_and_say_why(cluster, course, tmp_path):
    cluster.wait_for_workers(2)
    _small_class(course(tmp_path), {"a": signed(SOLUTION, "a"), "b": BLANK})
    cluster.run(_refuse, NO_SANDBOX)
    try:
        executor = DaskExecutor(client=cluster)
        results = grading.grade(
            tmp_path, [LESSON], settings=grading.Settings(tmp_path, LIMITS), executor=executor
        )
    finally:
        cluster.run(_refuse, None)
    assert [r.student for r in results] == ["a", "b"]
    for result in results:
        assert result.status == "error" and result.score == 0 and result.cache_key is None
        assert "refused" in result.reason and NO_SANDBOX in result.reason
        assert "--allow-unsandboxed" in result.reason
    assert not (tmp_path / "autograded").exists()  # nothing ran


@needs_sandbox
def test_a_refused_job_goes_to_a_worker_that_can_grade_it(cluster, course, tmp_path):
    cluster.wait_for_workers(2)
    _small_class(course(tmp_path), {"a": signed(SOLUTION, "a"), "b": BLANK})
    refusing = sorted(cluster.nthreads())[0]
    cluster.run(_refuse, NO_SANDBOX, workers=[refusing])
    try:
        executor = DaskExecutor(client=cluster)
        results = grading.grade(
            tmp_path, [LESSON], settings=grading.Settings(tmp_path, LIMITS), executor=executor
        )
    finally:
        cluster.run(_refuse, None)
    assert [(r.student, r.status, r.isolation) for r in results] == [
        ("a", "graded", "bubblewrap"),
        ("b", "graded", "bubblewrap"),
    ]
    assert results[0].score == results[0].max_score and results[1].score == 0


# ---------------------------------------------------------------- a worker dies mid-job


def _class_with_a_slowpoke(root) -> dict:
    """A solution, a blank, and "slowpoke": a solution whose first answer cell sleeps 15 s (a
    job still running when its worker is killed)."""
    slow = with_cell(
        SOLUTION, "softmax", f"{_answer(SOLUTION, 'softmax')}\nimport time\ntime.sleep(15)"
    )
    notebooks = {"slowpoke": slow, "a": signed(SOLUTION, "a"), "b": BLANK}
    _small_class(root, notebooks)
    return notebooks


def _kill_worker_running(client, student: str, killed: list, stop: threading.Event) -> None:
    """Kill (SIGKILL) the worker process that is grading `student`'s job, a few seconds in."""
    while not stop.is_set():
        for address, keys in client.processing().items():
            if any(f"-{student}-" in str(key) for key in keys):
                time.sleep(4)  # inside the kernel by now (the notebook sleeps for 15 s)
                pid = client.run(os.getpid, workers=[address])[address]
                os.kill(pid, signal.SIGKILL)
                killed.append(address)
                return
        time.sleep(0.2)


@needs_sandbox
@pytest.mark.parametrize("retries", [1, 0])
def test_a_worker_killed_mid_job_costs_no_submission(cluster, course, tmp_path, retries):
    cluster.wait_for_workers(2, timeout=120)  # a worker killed earlier is restarted by its nanny
    notebooks = _class_with_a_slowpoke(course(tmp_path))
    killed: list[str] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_worker_running, args=(cluster, "slowpoke", killed, stop))
    killer.start()
    try:
        executor = DaskExecutor(client=cluster, retries=retries)
        results = grading.grade(
            tmp_path, [LESSON], settings=grading.Settings(tmp_path, LIMITS), executor=executor
        )
    finally:
        stop.set()
        killer.join()
    assert len(killed) == 1
    by_student = {r.student: r for r in results}
    assert len(results) == len(by_student) == len(notebooks)  # each once, none lost
    assert len(list((tmp_path / "results" / LESSON).glob("*.json"))) == len(notebooks)
    full = by_student["a"].max_score
    assert by_student["a"].score == full and by_student["b"].score == 0
    slowpoke = by_student["slowpoke"]
    if retries:
        assert slowpoke.status == "graded" and slowpoke.score == full
    else:
        assert slowpoke.status == "error" and slowpoke.score == 0
        assert "died" in slowpoke.reason and killed[0] in slowpoke.reason


# ---------------------------------------------------------------- the process pool loses a worker


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _kill_pool_worker_running(student: str, killed: list, stop: threading.Event) -> None:
    """Kill (SIGKILL) the process-pool worker whose sandbox grades `student`, a few seconds in.

    The worker is the ancestor of that sandbox whose parent is the pool's fork server, a child
    of this process (a worker, forked by the server, has the server's command line)."""
    me = os.getpid()
    while not stop.is_set():
        parents = limits._parents()
        for pid in parents:
            if f"/{student}".encode() in _cmdline(pid):
                while pid in parents and parents.get(parents[pid]) != me:
                    pid = parents[pid]
                if pid in parents and b"forkserver" in _cmdline(parents[pid]):
                    time.sleep(4)  # inside the kernel by now (the notebook sleeps for 15 s)
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
        time.sleep(0.2)


@needs_sandbox
def test_a_pool_worker_killed_mid_job_costs_no_submission(course, tmp_path):
    notebooks = _class_with_a_slowpoke(course(tmp_path))
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_pool_worker_running, args=("slowpoke", killed, stop))
    killer.start()
    try:
        results = grading.grade(
            tmp_path, [LESSON], workers=2, settings=grading.Settings(tmp_path, LIMITS)
        )
    finally:
        stop.set()
        killer.join()
    assert len(killed) == 1
    by_student = {r.student: r for r in results}
    assert len(results) == len(by_student) == len(notebooks)  # each once, none lost
    full = by_student["a"].max_score
    assert by_student["slowpoke"].status == "graded", by_student["slowpoke"].reason
    assert by_student["slowpoke"].score == by_student["a"].score == full
    assert by_student["b"].score == 0
