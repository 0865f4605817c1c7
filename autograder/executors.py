"""Where grading jobs run. An executor takes the leaders of the job groups, the settings, the
run's plans and seed, and yields `(job, GradingResult)` as jobs finish, in any order.

`LocalExecutor` is the default: a process pool on this machine (`--workers N`), or the calling
process itself for one worker. A job that raises in the grader (never for anything a submission
does) yields a result with status "error" and the reason; it is not cached.
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed

from autograder.grading import Job, Settings, failed_job, grade_job
from autograder.results import GradingResult

_PLANS: dict = {}


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
    """Jobs on this machine: sequentially (workers <= 1) or in a forkserver process pool."""

    def __init__(self, workers: int = 1):
        self.workers = max(1, int(workers))

    def run(
        self, jobs: list[Job], settings: Settings, plans: dict, seed: int
    ) -> Iterator[tuple[Job, GradingResult]]:
        if not jobs:
            return
        if self.workers <= 1 or len(jobs) == 1:
            for job in jobs:
                try:
                    yield job, grade_job(job, settings, plans, seed)
                except Exception as exc:  # noqa: BLE001 - one bad job must not stop the class
                    yield job, failed_job(job, settings, exc, seed)
            return
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
                job = futures[future]
                try:
                    yield job, future.result()
                except Exception as exc:  # noqa: BLE001
                    yield job, failed_job(job, settings, exc, seed)
