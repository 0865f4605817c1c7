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
import os
import resource
import shutil
import subprocess
from collections.abc import Callable
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


def command(argv: list[str], workdir: Path, grading_root: Path) -> tuple[list[str], str]:
    """The command line that runs `argv` for one submission, and the isolation it gets."""
    bwrap = bwrap_path()
    if bwrap is None:
        return argv, "rlimits"
    cmd = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
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
        "--setenv",
        "HOME",
        str(workdir),
        "--setenv",
        "TMPDIR",
        "/tmp",
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
        "--new-session",
        *argv,
    ]
    return cmd, "bubblewrap"


def apply_limits(limits: Limits) -> Callable[[], None]:
    """A preexec function: own process group (to kill it whole), memory and file-size caps."""

    def preexec() -> None:
        os.setsid()
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return preexec
