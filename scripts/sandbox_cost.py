"""What the sandbox costs: the old wrapper (prlimit + bwrap over a read-only /) against the
current one (`autograder.sandbox`), alternated in one run so both see the same machine load.

    .venv/bin/python scripts/sandbox_cost.py [--reps 5]

Prints the median and range of (1) starting `python -c pass` through each wrapper and (2)
starting a kernel and running a two-cell notebook through `autograder.execute.execute`
(which imports autograder.judge, hence torch, in the kernel first).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import nbformat

from autograder import sandbox
from autograder.execute import execute


def old_wrapper(workdir: Path, lim: sandbox.Limits) -> list[str]:
    """The wrapper before this change (autograder/sandbox.py at 6b46a1e), rebuilt here."""
    return [
        "prlimit",
        f"--as={lim.memory_bytes}",
        f"--fsize={lim.file_bytes}",
        "--core=0",
        "--",
        "bwrap",
        *("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"),
        *("--bind", str(workdir), str(workdir), "--chdir", str(workdir)),
        *("--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts"),
        *("--die-with-parent", "--new-session", "--unsetenv", "JPY_PARENT_PID"),
    ]


@contextmanager
def job(kind: str, lim: sandbox.Limits):
    """(workdir, wrapper, env, context, sockets folder) for one run with the `kind` wrapper."""
    tmp = Path(tempfile.mkdtemp(prefix="sandbox-cost-"))
    workdir = tmp / "job"
    (workdir / "probes").mkdir(parents=True)
    (workdir / "results").mkdir()
    try:
        if kind == "old":
            (workdir / "ipc").mkdir()
            env = {**os.environ, **sandbox.kernel_env(workdir)}
            yield workdir, old_wrapper(workdir, lim), env, nullcontext(), workdir / "ipc"
        else:
            box = sandbox.prepare(workdir, lim)
            yield workdir, box.wrapper, box.env, box, box.sockets
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def time_python(kind: str, lim: sandbox.Limits) -> float:
    with job(kind, lim) as (workdir, wrapper, env, ctx, _):
        start = time.perf_counter()  # the sandbox's set-up and cleaning included
        with ctx:
            cmd = [*wrapper, sys.executable, "-c", "pass"]
            subprocess.run(cmd, check=True, env=env, cwd=workdir)
        return time.perf_counter() - start


def time_notebook(kind: str, lim: sandbox.Limits) -> float:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 21"), nbformat.v4.new_code_cell("print(x * 2)")]
    with job(kind, lim) as (workdir, wrapper, env, ctx, sockets):
        start = time.perf_counter()
        with ctx:
            report = execute(nb, workdir, lim, wrapper, env, sockets=sockets)
        elapsed = time.perf_counter() - start
    if [c["status"] for c in report["cells"]] != ["ok", "ok"]:
        raise RuntimeError(f"{kind}: the notebook did not run: {report}")
    return elapsed


def summary(times: list[float]) -> str:
    return f"median {statistics.median(times):6.2f} s  (min {min(times):.2f}, max {max(times):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    if not sandbox.available():
        print(f"no sandbox here: {sandbox.unavailable_reason()}", file=sys.stderr)
        return 2
    lim = sandbox.Limits(cell_timeout_s=300, notebook_timeout_s=600)
    for label, measure in (("python -c pass", time_python), ("kernel + notebook", time_notebook)):
        times: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(args.reps):
            for kind in ("old", "new"):  # alternated: both see the same load
                times[kind].append(measure(kind, lim))
        ratio = statistics.median(times["new"]) / statistics.median(times["old"])
        print(f"{label}:")
        print(f"  old wrapper  {summary(times['old'])}")
        print(f"  new sandbox  {summary(times['new'])}")
        print(f"  new / old    {ratio:.2f}x  ({args.reps} runs each, {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
