"""Where a submission runs: bubblewrap when available, resource limits always.

Under bubblewrap the learner's code sees the file system read-only, has no network (a
private loopback only, which the notebook client and kernel use between themselves),
cannot see `solutions/`, the hidden-test registry, the tests, the gradebook or any other
student's folder, and can write only to its own working folder and a private /tmp.

Without bubblewrap the same limits on memory, file size and time apply, but nothing is
hidden and the network stays reachable: the grade report says so in a warning.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from autograder.nbgrader_config import REPO

NO_SANDBOX_WARNING = (
    "bubblewrap (Debian package `bubblewrap`) is not available: submissions ran with resource "
    "limits only, without network isolation and able to read files outside their folder. "
    "Install it (`make setup` does when it runs as root or with sudo) and grade again."
)


@dataclass(frozen=True)
class Limits:
    cell_timeout_s: int = 30
    notebook_timeout_s: int = 300
    memory_bytes: int = 4 * 2**30
    file_bytes: int = 256 * 2**20
    cell_output_bytes: int = 200_000


@functools.cache
def bwrap_path() -> str | None:
    """bwrap, if installed and able to create namespaces here (some containers forbid it)."""
    path = shutil.which("bwrap")
    if not path:
        return None
    probe = [
        path,
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--unshare-net",
        "--unshare-pid",
        "--die-with-parent",
        "true",
    ]
    try:
        ok = subprocess.run(probe, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return path if ok else None


def hidden_paths(grading_root: Path) -> list[Path]:
    """What the learner's code must not read: answers, hidden tests, grades, other students."""
    candidates = [
        REPO / "solutions",
        REPO / "autograder" / "exercises",
        REPO / "tests",
        REPO / ".git",
        REPO / "grading",
        grading_root,
    ]
    return [p for p in candidates if p.exists()]


def kernel_wrapper(workdir: Path, grading_root: Path, limits: Limits) -> tuple[list[str], str]:
    """The command prefix that starts one submission's kernel, and the isolation it gets.

    `prlimit` caps memory and file size whatever happens; bubblewrap, when usable, adds
    the file-system and network isolation. The kernel talks to the grader over Unix
    sockets in `workdir`, so it needs no network namespace of ours at all.
    """
    prefix = [
        shutil.which("prlimit") or "prlimit",
        f"--as={limits.memory_bytes}",
        f"--fsize={limits.file_bytes}",
        "--core=0",
        "--",
    ]
    bwrap = bwrap_path()
    if bwrap is None:
        return prefix, "rlimits"
    cmd = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    # A checkout or virtual environment that lives under /tmp must stay visible.
    for needed in sorted({REPO, Path(sys.prefix).resolve()}):
        if needed.is_relative_to("/tmp"):
            cmd += ["--ro-bind", str(needed), str(needed)]
    for path in hidden_paths(grading_root):
        if path.is_dir():
            cmd += ["--tmpfs", str(path)]
        else:
            cmd += ["--ro-bind", "/dev/null", str(path)]
    cmd += [
        "--bind",
        str(workdir),
        str(workdir),
        "--chdir",
        str(workdir),
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
        "--new-session",
        # Inside the PID namespace the kernel's parent is PID 1, which ipykernel's parent
        # poller reads as "my parent died"; bubblewrap's --die-with-parent does that job.
        "--unsetenv",
        "JPY_PARENT_PID",
    ]
    return prefix + cmd, "bubblewrap"


def kernel_env(workdir: Path, threads: int, record_env: str) -> dict[str, str]:
    """The kernel's whole environment: an explicit allow-list, nothing of the grader's own."""
    import os

    env = {
        "PATH": os.pathsep.join(
            [str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]
        ),
        "HOME": str(workdir / "kernel"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "NBGRADER_EXECUTION": "autograde",
        record_env: str(workdir),
        "MPLCONFIGDIR": str(workdir / "kernel" / "mpl"),
        "MPLBACKEND": "agg",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "JUPYTER_RUNTIME_DIR": str(workdir / "kernel" / "runtime"),
    }
    return env
