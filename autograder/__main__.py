"""python -m autograder COMMAND: the instructor's tools (see the README's instructor section).

release                      regenerate course/ from solutions/
collect SOURCE               import a folder or an LMS export (Canvas, Moodle, Blackboard,
                             Brightspace, Gradescope) into <root>/submitted
grade [--lesson L] [-j N]    autograde in parallel, sandboxed, into nbgrader's gradebook
      [--scheduler local:N | tcp://HOST:PORT]   ... or on a Dask cluster
feedback                     one HTML page per student and lesson (no hidden-test source)
export                       nbgrader's CSV and an LMS-importable CSV
report                       class summary: histogram, pass rates, slowest, integrity
bench                        grading throughput: nbgrader, the process pool, a Dask LocalCluster
mistakes [LESSON ...]        how each lesson's visible and hidden checks catch its known mistakes
leaderboard --heldout TEXT   lesson 08's checkpoints on held-out text (bits per byte), sandboxed:
                             <root>/leaderboard/leaderboard.html and .csv
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from autograder.nbgrader_config import REPO

DEFAULT_ROOT = REPO / "grading"
# autograder.collect.LAYOUTS, listed here so that `--help` does not import the collector.
COLLECT_LAYOUTS = (
    "gradescope",
    "moodle",
    "canvas",
    "blackboard",
    "brightspace",
    "folder",
    "generic",
)


def _lessons(args) -> list[str]:
    from autograder.release import lessons

    known = lessons()
    chosen = args.lesson or known
    unknown = [lesson for lesson in chosen if lesson not in known]
    if unknown:
        raise SystemExit(
            f"error: unknown lesson(s) {', '.join(unknown)}; known: {', '.join(known)}"
        )
    return chosen


def cmd_release(args) -> int:
    from autograder.release import release

    release(args.lessons or None)
    return 0


def cmd_collect(args) -> int:
    from autograder.collect import CollectStopped, collect
    from autograder.submissions import ledger_path

    lessons = _lessons(args)
    if args.lesson and len(args.lesson) > 1:
        raise ValueError("collect takes one --lesson: an export holds one lesson")
    try:
        report = collect(
            Path(args.source),
            args.root,
            lessons,
            args.lesson[0] if args.lesson else None,
            args.id_pattern,
            args.replace,
            args.layout,
        )
    except CollectStopped as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"every file offered, this collect and earlier ones: {ledger_path(args.root)}")
    return 0


def cmd_grade(args) -> int:
    from autograder import grading, reports, sandbox
    from autograder.executors import GradingProgress

    limits = sandbox.Limits(
        cell_timeout_s=args.cell_timeout,
        notebook_timeout_s=args.notebook_timeout,
        memory_bytes=int(args.memory_gb * 2**30),
    )
    executor, workers, threads = _executor(args)
    settings = grading.Settings(
        root=args.root,
        limits=limits,
        seed=args.seed,
        threads_per_kernel=threads,
        allow_unsandboxed=args.allow_unsandboxed,
    )
    if executor is None or executor.where[0] == "local":  # this machine grades: check it now
        reason = sandbox.unavailable_reason()
        if reason is not None and not args.allow_unsandboxed:
            print(f"error: cannot grade safely: {reason}.", file=sys.stderr)
            print("  (--allow-unsandboxed grades anyway, without isolation)", file=sys.stderr)
            return 2
        if reason is not None:
            print(f"WARNING: {reason}; {sandbox.NO_SANDBOX_WARNING}", file=sys.stderr)
    progress = GradingProgress(echo=_result_line)
    try:
        if executor is not None:
            executor.start()  # a wrong address or an empty cluster fails before any work
        results = grading.grade(
            args.root,
            _lessons(args),
            workers=workers,
            force=args.force,
            settings=settings,
            progress=progress,
            executor=executor,
        )
    except grading.GradeLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    finally:
        progress.close()
        if executor is not None:
            executor.close()
    cached = sum(1 for r in results if r.cached)
    print(f"graded {len(results) - cached} submission(s), {cached} unchanged since the last run")
    print(reports.report_text(args.root, args.lesson))
    return 0


def _executor(args):
    """(DaskExecutor or None for the local pool, workers, threads per kernel) from the flags."""
    cores = os.cpu_count() or 1
    if not args.scheduler:
        workers = args.workers or max(1, cores)
        return None, workers, max(1, cores // workers)
    from autograder.executors import DaskExecutor

    executor = DaskExecutor(args.scheduler, retries=args.retries)
    if executor.where[0] == "local":
        return executor, executor.workers, max(1, cores // executor.workers)
    return executor, 0, 1  # one single-threaded Dask worker per core on each machine


def _result_line(result) -> str:
    detail = "" if result.status == "graded" else f"  ({result.status}: {result.reason})"
    return (
        f"  {result.lesson}  {result.student:<24} {result.score:>5g} / "
        f"{result.max_score:g}  {result.seconds:5.1f} s{detail}"
    )


def cmd_feedback(args) -> int:
    from autograder.reports import write_feedback

    paths = write_feedback(args.root, args.lesson)
    print(f"wrote {len(paths)} feedback page(s) under {args.root / 'feedback'}")
    return 0


def cmd_export(args) -> int:
    from autograder.reports import export

    for path in export(args.root, args.lesson):
        print(f"wrote {path}")
    return 0


def cmd_report(args) -> int:
    from autograder.reports import report_text, write_report

    path = write_report(args.root, args.lesson)
    print(report_text(args.root, args.lesson))
    print(f"wrote {path}")
    return 0


def cmd_mistakes(args) -> int:
    from autograder.mistake_report import main as report_main

    return report_main(args.lessons)


def cmd_bench(args) -> int:
    from autograder.bench import main as bench_main

    return bench_main(args.submissions, args.workers or 2, args.class_size, args.cluster_workers)


def cmd_leaderboard(args) -> int:
    from autograder.leaderboard import leaderboard
    from autograder.sandbox import Limits, SandboxUnavailable

    if not args.heldout.is_file():
        raise FileNotFoundError(f"no held-out text at {args.heldout}")
    limits = Limits(memory_bytes=int(args.memory_gb * 2**30), notebook_timeout_s=args.timeout)
    try:
        rows = leaderboard(
            args.root,
            args.heldout,
            args.out,
            max_mb=args.max_mb,
            limits=limits,
            allow_unsandboxed=args.allow_unsandboxed,
        )
    except SandboxUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.root / "leaderboard"
    scored = sum(r.bpb is not None for r in rows)
    print(f"{scored} of {len(rows)} checkpoints scored: {out / 'leaderboard.html'}")
    for r in rows:
        if r.problem:
            print(f"  {r.student}: {r.problem}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m autograder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=DEFAULT_ROOT,
        help="grading folder (default: grading/, git-ignored)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rel = sub.add_parser("release", help="regenerate course/ from solutions/")
    rel.add_argument("lessons", nargs="*")
    col = sub.add_parser("collect", help="import submissions from a folder or an LMS zip")
    col.add_argument("source")
    col.add_argument(
        "--layout",
        default="auto",
        choices=["auto", *COLLECT_LAYOUTS],
        help="how the export names files (default: recognised from the names)",
    )
    col.add_argument(
        "--id-pattern",
        help="regex with a (?P<student>...) group, searched in each file name (then its path)",
    )
    col.add_argument(
        "--replace",
        action="store_true",
        help="submitted/ holds exactly this collect afterwards (earlier ones stay in the ledger)",
    )
    gr = sub.add_parser("grade", help="autograde submissions in parallel")
    gr.add_argument(
        "--workers", "-j", type=int, default=0, help="parallel workers (default: cores)"
    )
    gr.add_argument(
        "--scheduler",
        default=None,
        help="grade on Dask: local:N (a LocalCluster of N workers here) or a running "
        "scheduler's address, tcp://HOST:8786 (default: the local process pool, --workers)",
    )
    gr.add_argument(
        "--retries",
        type=int,
        default=2,
        help="with --scheduler: times a job is resubmitted when its worker dies (default 2)",
    )
    gr.add_argument("--force", action="store_true", help="re-grade unchanged submissions too")
    gr.add_argument("--cell-timeout", type=int, default=30)
    gr.add_argument("--notebook-timeout", type=int, default=300)
    gr.add_argument("--memory-gb", type=float, default=4.0)
    gr.add_argument("--seed", type=int, default=None, help="seed of the hidden tests' inputs")
    gr.add_argument(
        "--allow-unsandboxed",
        action="store_true",
        help="where bubblewrap cannot run, grade anyway with resource limits only (no isolation)",
    )
    sub.add_parser("feedback", help="HTML feedback per student")
    sub.add_parser("export", help="grades as CSV")
    sub.add_parser("report", help="class summary")
    mi = sub.add_parser("mistakes", help="how each lesson's checks catch its known mistakes")
    mi.add_argument("lessons", nargs="*")
    be = sub.add_parser(
        "bench", help="grading throughput: nbgrader, the process pool, Dask; a cluster estimate"
    )
    be.add_argument("--submissions", type=int, default=8)
    be.add_argument("--workers", type=int, default=2)
    # The scale: 2,000 students x 8 lessons; 64 workers, say 4 machines of 16 cores.
    be.add_argument("--class-size", type=int, default=16_000, help="submissions to estimate")
    be.add_argument("--cluster-workers", type=int, default=64, help="workers to estimate on")
    lb = sub.add_parser("leaderboard", help="lesson 08 checkpoints on held-out text, sandboxed")
    lb.add_argument("--heldout", type=Path, required=True, help="text the students never saw")
    lb.add_argument("--out", type=Path, default=None, help="default: <root>/leaderboard")
    lb.add_argument("--max-mb", type=float, default=50.0, help="checkpoint size cap (MB)")
    lb.add_argument("--memory-gb", type=float, default=3.0)
    lb.add_argument("--timeout", type=int, default=120, help="seconds per checkpoint")
    lb.add_argument("--allow-unsandboxed", action="store_true")
    for p in (col, gr, sub.choices["feedback"], sub.choices["export"], sub.choices["report"]):
        p.add_argument("--lesson", action="append", help="lesson folder (repeatable; default: all)")
    return parser


COMMANDS = {
    "release": cmd_release,
    "collect": cmd_collect,
    "grade": cmd_grade,
    "feedback": cmd_feedback,
    "export": cmd_export,
    "report": cmd_report,
    "bench": cmd_bench,
    "mistakes": cmd_mistakes,
    "leaderboard": cmd_leaderboard,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.root = args.root.resolve()
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
