"""Where grading jobs run. An executor takes the leaders of the job groups, the settings, the
run's plans and seed, and yields `(job, GradingResult)` as jobs finish, in any order, once per
job.

- `LocalExecutor` (the default): a process pool on this machine (`grade --workers N`), or the
  calling process itself for one worker.
- `DaskExecutor`: a Dask distributed cluster (`grade --scheduler tcp://HOST:PORT`), or a
  `LocalCluster` of N single-threaded worker processes on this machine (`--scheduler local:N`).
  Each job is self-contained (the submission's bytes, the lesson, the limits, the seed); the
  run's plans are scattered to every worker once. A worker grades in a job folder of its own
  and sends back the result and the executed notebook; the coordinator alone writes them.
  Dask is imported only here, and only when a `DaskExecutor` starts.

A job that raises in the grader (never for anything a submission does) yields a result with
status "error" and the reason; it is not cached. So does a job that no Dask worker would take
(no working sandbox there, or another version of the grader) and one whose worker died more
often than the retry limit allows.

`GradingProgress` is the coordinator's progress bar, the same for every executor.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import pickle
import shutil
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from autograder import sandbox, sanitize
from autograder.grading import (
    Job,
    Settings,
    _save_executed,
    failed_job,
    grade_job,
    grader_fingerprint,
)
from autograder.results import GradingResult

_PLANS: dict = {}
log = logging.getLogger(__name__)


def _install_plans(pickled_plans: bytes) -> None:
    """Pool initializer: the run's plans, sent once per worker rather than once per job.

    They travel as plain pickle bytes: multiprocessing's own pickler would share every probe
    tensor through a file descriptor, and a lesson's plans hold more tensors than a fork server
    may pass descriptors ("too many fds")."""
    _PLANS.clear()
    _PLANS.update(pickle.loads(pickled_plans))


def _grade_in_worker(job: Job, settings: Settings, seed: int) -> GradingResult:
    return grade_job(job, settings, _PLANS, seed)


class LocalExecutor:
    """Jobs on this machine: sequentially (workers <= 1) or in a forkserver process pool.

    A pool worker that dies costs no submission: the jobs it broke are graded again in a new
    pool, `pool_retries` times, and then reported with the reason."""

    sandbox_on_workers = False  # the coordinator's own sandbox check covers its workers

    def __init__(self, workers: int = 1, pool_retries: int = 1):
        self.workers = max(1, int(workers))
        self.pool_retries = max(0, int(pool_retries))  # new pools after a worker died

    def run(
        self, jobs: list[Job], settings: Settings, plans: dict, seed: int
    ) -> Iterator[tuple[Job, GradingResult]]:
        """Yield `(job, result)` for every job of `jobs`, as they finish (see the module)."""
        if not jobs:
            return
        if self.workers <= 1 or len(jobs) == 1:
            for job in jobs:
                try:
                    yield job, grade_job(job, settings, plans, seed)
                except Exception as exc:  # noqa: BLE001 - one bad job must not stop the class
                    yield job, failed_job(job, settings, exc, seed)
            return
        pending = list(jobs)
        for attempt in range(1 + self.pool_retries):
            broken: list[Job] = []
            for job, outcome in self._run_pool(pending, settings, plans, seed):
                if isinstance(outcome, BrokenProcessPool) and attempt < self.pool_retries:
                    broken.append(job)
                elif isinstance(outcome, BaseException):
                    yield job, failed_job(job, settings, outcome, seed)
                else:
                    yield job, outcome
            if not broken:
                return
            log.warning("a grading worker died; grading %d job(s) again in a new pool", len(broken))
            pending = broken

    def _run_pool(
        self, jobs: list[Job], settings: Settings, plans: dict, seed: int
    ) -> Iterator[tuple[Job, GradingResult | BaseException]]:
        """One process pool over `jobs`: (job, result) or (job, the exception it ended with).

        A worker that dies (killed from outside, out of host memory) breaks the whole pool, and
        every job not yet finished then ends with `BrokenProcessPool`."""
        # forkserver, not fork: forking a process whose torch thread pools are running can
        # deadlock the child on a lock another thread held at the moment of the fork.
        context = multiprocessing.get_context("forkserver")
        # Import torch, nbclient and the grader once in the fork server rather than once per
        # worker (seconds each); nothing has started a thread pool there yet.
        context.set_forkserver_preload(["autograder.executors", "autograder.verdict"])
        pool = ProcessPoolExecutor(
            max_workers=min(self.workers, len(jobs)),
            mp_context=context,
            initializer=_install_plans,
            initargs=(pickle.dumps(plans),),
        )
        with pool:
            futures = {pool.submit(_grade_in_worker, job, settings, seed): job for job in jobs}
            for future in as_completed(futures):
                try:
                    yield futures[future], future.result()
                except Exception as exc:  # noqa: BLE001 - one bad job must not stop the class
                    yield futures[future], exc


# ---------------------------------------------------------------- Dask distributed


class WorkerRefused(RuntimeError):
    """No Dask worker would grade the job (the reason names the worker and the fix)."""


class WorkerLost(RuntimeError):
    """The Dask worker grading a job died, more often than the retry limit allows."""


@dataclass
class RemoteJob:
    """One (student, lesson) submission, with everything a Dask worker needs to grade it.

    `submission` holds the file's bytes as submitted (never a path on the coordinator's disk);
    `settings.root` is replaced by the worker's own job folder; `fingerprint` is the
    coordinator's `grader_fingerprint(lesson)`, which the worker's copy must match.
    """

    student: str
    lesson: str
    notebook: str
    submission_name: str
    submission: bytes
    note: str
    settings: Settings
    seed: int
    fingerprint: str
    want_notebook: bool = True


@dataclass
class Refusal:
    worker: str
    reason: str


@dataclass
class RemoteOutcome:
    worker: str
    result: GradingResult
    executed: bytes | None  # the executed notebook (.ipynb bytes), when asked for


def worker_refusal(allow_unsandboxed: bool, lesson: str, fingerprint: str) -> str | None:
    """Why this worker must not grade a job of `lesson`, or None when it may.

    It refuses without a working sandbox (unless the coordinator allowed grading without one)
    and when its copy of the grader or the lesson differs from the coordinator's (its verdicts
    and cache keys would not be the coordinator's)."""
    reason = sandbox.unavailable_reason()
    if reason is not None and not allow_unsandboxed:
        return (
            f"no working sandbox on this worker: {reason} (the coordinator's "
            "--allow-unsandboxed grades there without isolation)"
        )
    if grader_fingerprint(lesson) != fingerprint:
        return (
            f"this worker's copy of the grader or of lesson {lesson} differs from the "
            "coordinator's: install the same commit of the course on every worker"
        )
    return None


def grade_on_worker(job: RemoteJob, plans_ref: tuple[str, str]) -> Refusal | RemoteOutcome:
    """Runs on a Dask worker: grade `job` in a job folder of this worker's own.

    `plans_ref` names the run's {lesson: plans}, scattered once per run: (the published
    dataset's name, the data's key). Returns a `Refusal` (see `worker_refusal`) or the result
    with the executed notebook; raises only for the grader's own failures, as `grade_job`
    does."""
    address = _worker_address()
    refusal = worker_refusal(job.settings.allow_unsandboxed, job.lesson, job.fingerprint)
    if refusal is not None:
        return Refusal(address, refusal)
    plans = _run_plans(*plans_ref)
    scratch = Path(tempfile.mkdtemp(prefix="autograder-job-", dir=_worker_scratch()))
    try:
        path = scratch / "submission" / Path(job.submission_name).name
        path.parent.mkdir()
        path.write_bytes(job.submission)
        local = Job(job.student, job.lesson, job.notebook, path, job.note)
        result = grade_job(local, dataclasses.replace(job.settings, root=scratch), plans, job.seed)
        executed = scratch / "autograded" / job.student / job.lesson / job.notebook
        keep = job.want_notebook and executed.is_file() and not executed.is_symlink()
        return RemoteOutcome(address, result, executed.read_bytes() if keep else None)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


_RUN_PLANS: dict[str, dict] = {}


def _run_plans(dataset: str, key: str) -> dict:
    """This run's plans on this worker: its scattered copy, else fetched from a peer once
    (a worker that joined or restarted after the scatter)."""
    if key not in _RUN_PLANS:
        from distributed import get_client, get_worker

        data = get_worker().data
        plans = data[key] if key in data else get_client().get_dataset(dataset).result()
        _RUN_PLANS.clear()  # one run's plans at a time
        _RUN_PLANS[key] = plans
    return _RUN_PLANS[key]


def warm_up() -> None:
    """On each worker as the executor starts: import the grader (torch, nbclient: seconds)
    and probe the sandbox once, as the process pool's fork server does, so that a job's time
    is grading alone. A worker that joins later pays this on its first job."""
    import autograder.execute  # noqa: F401
    import autograder.verdict  # noqa: F401

    sandbox.unavailable_reason()


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "this process"


def _worker_scratch() -> str | None:
    try:
        from distributed import get_worker

        return get_worker().local_directory
    except (ImportError, ValueError):
        return None


def parse_scheduler(text: str) -> tuple[str, int | str]:
    """`local:N` -> ("local", N); an address (`tcp://HOST:PORT`, `tls://...`) -> ("remote", it).

    Raises ValueError with a one-line message for anything else."""
    text = text.strip()
    if text.startswith("local:"):
        count = text.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--scheduler {text}: local:N needs a number of workers N >= 1")
        return "local", int(count)
    if "://" in text and text.split("://", 1)[1]:
        return "remote", text
    raise ValueError(
        f"--scheduler {text!r}: expected local:N (N workers on this machine) or a Dask "
        "scheduler's address such as tcp://HOST:8786"
    )


class DaskExecutor:
    """Jobs on a Dask distributed cluster: see the module's docstring.

    `scheduler`: "local:N" starts a LocalCluster of N worker processes of one thread each here
    (closed again by `close`); an address connects to a running scheduler. Or pass a connected
    `client` (left open). Jobs go out as worker threads free up (no more in flight than there
    are threads), so a worker that dies takes only the job it was running with it.
    `retries`: how many times a job whose worker died is submitted again
    (a remote scheduler's own `distributed.scheduler.allowed-failures` applies first; a local
    cluster's is 0, so that `retries` alone counts). `save_notebooks`: bring back the executed
    notebooks, written under <root>/autograded/ as the local executor does.

    Raises ValueError (one line) when the address is malformed, the scheduler cannot be
    reached, or no worker joins within `wait_for_workers_s` seconds.
    """

    sandbox_on_workers = True  # each worker checks its own sandbox, per job

    def __init__(
        self,
        scheduler: str | None = None,
        *,
        client=None,
        retries: int = 2,
        wait_for_workers_s: float = 60.0,
        save_notebooks: bool = True,
    ):
        if client is None and scheduler is None:
            raise ValueError("DaskExecutor needs a scheduler (local:N or an address) or a client")
        self.where = parse_scheduler(scheduler) if client is None else ("client", 0)
        self.retries = max(0, int(retries))
        self.wait_for_workers_s = wait_for_workers_s
        self.save_notebooks = save_notebooks
        self.client = client
        self.cluster = None
        self._owned = client is None
        self._entered = False
        self.workers = self.where[1] if self.where[0] == "local" else 0

    def __enter__(self) -> DaskExecutor:
        self.start()
        self._entered = True
        return self

    def __exit__(self, *exc) -> None:
        self._entered = False
        self.close()

    def start(self):
        """Connect (or start the local cluster) and wait for workers; returns the Client."""
        if self.client is not None:
            self.workers = len(self.client.nthreads()) or self.workers
            return self.client
        import dask
        from distributed import Client, LocalCluster

        kind, target = self.where
        if kind == "local":
            # allowed-failures 0: `retries` alone decides. Saturation 1.0 queues jobs on the
            # scheduler, as `_run` keeps no more in flight than there are worker threads.
            with dask.config.set(
                {
                    "distributed.scheduler.allowed-failures": 0,
                    "distributed.scheduler.worker-saturation": 1.0,
                }
            ):
                self.cluster = LocalCluster(
                    n_workers=target,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    memory_limit=0,  # the sandbox limits each kernel; the worker stays small
                    silence_logs=logging.ERROR,
                )
            self.client = Client(self.cluster)
            self.client.wait_for_workers(target)
        else:
            try:
                self.client = Client(target, timeout=f"{int(self.wait_for_workers_s)}s")
            except (OSError, TimeoutError) as exc:
                raise ValueError(f"cannot reach the Dask scheduler at {target}: {exc}") from None
            try:
                self.client.wait_for_workers(1, timeout=self.wait_for_workers_s)
            except TimeoutError:
                self.close()
                raise ValueError(
                    f"no Dask worker joined the scheduler at {target} within "
                    f"{self.wait_for_workers_s:g} s: start `dask worker {target}` on each "
                    "grading machine"
                ) from None
        self.workers = len(self.client.nthreads())
        self.client.run(warm_up, on_error="ignore")  # a broken worker refuses its jobs later
        return self.client

    def close(self) -> None:
        """Close the client and the local cluster this executor started (not a given client)."""
        if self._owned and self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    def run(
        self, jobs: list[Job], settings: Settings, plans: dict, seed: int
    ) -> Iterator[tuple[Job, GradingResult]]:
        """Yield `(job, result)` for every job of `jobs`, once each, as they finish."""
        if not jobs:
            return
        started_here = self.client is None
        client = self.start()
        try:
            yield from self._run(client, jobs, settings, plans, seed)
        finally:
            if started_here and not self._entered:
                self.close()

    def _run(self, client, jobs, settings, plans, seed):
        from distributed import as_completed as dask_completed

        remote: dict[int, RemoteJob] = {}
        for index, job in enumerate(jobs):
            payload = _remote_job(job, settings, seed, self.save_notebooks)
            if payload is None:  # nothing to execute: reported here, as the worker would
                yield job, _grade_here(job, settings, plans, seed)
            else:
                remote[index] = payload
        if not remote:
            return
        run = uuid.uuid4().hex[:8]
        # Scattered once to every worker; jobs name it rather than depend on it, so that the
        # scheduler places them on any worker, one restarted since included.
        [shared_plans] = client.scatter([plans], broadcast=True, hash=False)
        client.publish_dataset(shared_plans, name=f"autograder-plans-{run}")
        attempts: Counter[int] = Counter()
        deaths: Counter[int] = Counter()
        refusals: dict[int, dict[str, str]] = {}
        owner: dict[str, int] = {}
        waiting = deque((index, None) for index in remote)

        def submit(index: int, workers: list[str] | None):
            attempts[index] += 1
            job = jobs[index]
            key = f"grade-{job.lesson}-{job.student}-{run}-{attempts[index]}"
            owner[key] = index
            plans_ref = (f"autograder-plans-{run}", shared_plans.key)
            return client.submit(
                grade_on_worker,
                remote[index],
                plans_ref,
                key=key,
                workers=workers,
                allow_other_workers=workers is not None,
                pure=False,
            )

        pending = dask_completed()
        done: set[int] = set()
        try:
            while waiting or pending.count():
                # As many jobs in flight as worker threads: a worker holds only the job it
                # runs, so one that dies takes no waiting job with it.
                while waiting and pending.count() < max(1, sum(client.nthreads().values())):
                    pending.add(submit(*waiting.popleft()))
                future = next(pending)
                index = owner.pop(future.key)
                job = jobs[index]
                outcome, error = _outcome(future)
                future.release()
                if index in done:  # never twice into the gradebook
                    continue
                verdict, value = self._settle(client, index, outcome, error, (deaths, refusals))
                if verdict == "retry":
                    waiting.appendleft((index, value or None))
                    continue
                if verdict == "failed":
                    result = failed_job(job, settings, value, seed)
                else:
                    result = value.result
                    if value.executed is not None:
                        _save_notebook(settings.root, job, value.executed)
                done.add(index)
                yield job, result
        finally:
            client.unpublish_dataset(f"autograder-plans-{run}")
            shared_plans.release()

    def _settle(self, client, index, outcome, error, tally):
        """("done", RemoteOutcome), ("retry", workers to try; [] for any) or ("failed", why).

        `tally`: the run's (deaths, refusals) per job, updated here."""
        deaths, refusals = tally
        if isinstance(outcome, RemoteOutcome):
            return "done", outcome
        if isinstance(outcome, Refusal):
            tried = refusals.setdefault(index, {})
            tried[outcome.worker] = outcome.reason
            others = [w for w in client.nthreads() if w not in tried]
            if others and len(tried) <= len(client.nthreads()):
                return "retry", others
            worker, reason = next(reversed(tried.items()))
            return "failed", WorkerRefused(f"the Dask worker {worker} refused the job: {reason}")
        if _is_killed_worker(error):
            deaths[index] += 1
            if deaths[index] <= self.retries:
                return "retry", []
            last = getattr(getattr(error, "last_worker", None), "address", "?")
            return "failed", WorkerLost(
                f"the Dask worker grading it died, {deaths[index]} time(s) (retried "
                f"{deaths[index] - 1} time(s), the limit); the last was {last}"
            )
        if isinstance(error, ImportError):
            return "failed", WorkerRefused(
                f"a Dask worker cannot import the grader ({error}): install the course "
                "(`pip install -e .` of the same commit) on every worker"
            )
        return "failed", error


def _outcome(future) -> tuple[object, BaseException | None]:
    try:
        return future.result(), None
    except Exception as exc:  # noqa: BLE001 - reported per submission
        return None, exc


def _is_killed_worker(error: BaseException | None) -> bool:
    if error is None:
        return False
    from distributed.scheduler import KilledWorker

    return isinstance(error, KilledWorker)


def _remote_job(job: Job, settings: Settings, seed: int, want: bool) -> RemoteJob | None:
    """The job as it travels; None when there is nothing to execute (missing, unreadable)."""
    if job.submission is None:
        return None
    try:
        sanitize.read_submission(job.submission)
        data = job.submission.read_bytes()
    except (sanitize.UnreadableNotebook, OSError):
        return None
    return RemoteJob(
        student=job.student,
        lesson=job.lesson,
        notebook=job.notebook,
        submission_name=job.submission.name,
        submission=data,
        note=job.note,
        settings=settings,
        seed=seed,
        fingerprint=grader_fingerprint(job.lesson),
        want_notebook=want,
    )


def _grade_here(job: Job, settings: Settings, plans: dict, seed: int) -> GradingResult:
    try:
        return grade_job(job, settings, plans, seed)
    except Exception as exc:  # noqa: BLE001
        return failed_job(job, settings, exc, seed)


def _save_notebook(root: Path, job: Job, executed: bytes) -> None:
    import nbformat

    _save_executed(root, job, nbformat.reads(executed.decode("utf-8"), as_version=4))


# ---------------------------------------------------------------- progress (both executors)


class GradingProgress:
    """The coordinator's progress bar: graded / failed / remaining and notebooks per minute.

    Called with every result as it is written (`grade(progress=...)`), whichever executor
    produced it; `begin(total)` is called first with the number of results to come. "failed"
    counts every result that is not graded (the grader's errors, refusals, unreadable or
    missing submissions); `echo` prints one line per result above the bar.
    """

    def __init__(self, echo: Callable[[GradingResult], str] | None = None, file=None):
        self.echo = echo
        self.file = file
        self.bar = None
        self.graded = 0
        self.failed = 0
        self._start = time.monotonic()

    def begin(self, total: int) -> None:
        from tqdm import tqdm

        self._start = time.monotonic()
        self.bar = tqdm(total=total, unit="nb", desc="grading", file=self.file, leave=True)
        self._show()

    def __call__(self, result: GradingResult) -> None:
        if result.status == "graded":
            self.graded += 1
        else:
            self.failed += 1
        if self.bar is None:
            self.begin(0)
        if self.echo is not None:
            self.bar.write(self.echo(result), file=self.file)
        self.bar.update(1)
        self._show()

    def per_minute(self) -> float:
        """Results per minute of wall time since `begin` (identical notebooks share a run)."""
        return 60.0 * (self.graded + self.failed) / max(1e-9, time.monotonic() - self._start)

    def _show(self) -> None:
        done = self.graded + self.failed
        remaining = max(0, (self.bar.total or 0) - done)
        self.bar.set_postfix_str(
            f"graded {self.graded}, failed {self.failed}, remaining {remaining}, "
            f"{self.per_minute():.1f} notebooks/min",
            refresh=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
