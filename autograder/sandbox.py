"""Where a submission's kernel runs: a bubblewrap sandbox, with whole-submission limits.

What the sandbox guarantees (see the README's "The sandbox" for the instructor's view):

- **Unprivileged.** A new user namespace in which the kernel is uid/gid 1000 with no
  capabilities (`--cap-drop ALL`), no way to create further user namespaces
  (`--disable-userns`), `no_new_privs` and nosuid mounts. When the grader runs as root,
  the launcher (`sandbox_launch.py`) first drops to `HOST_ID` (65534), so outside the
  namespace the kernel is that unprivileged uid too, never root.
- **Only what the kernel needs is visible**, read-only: /usr (and the merged-usr links),
  the dynamic linker's files from /etc, a synthesized /etc/passwd and /etc/group, the
  Python installation and virtual environment, the course's `course/` and `assets/`, and
  the few `autograder` modules the hidden cells import (`KERNEL_MODULES`). Not
  `solutions/`, `tests/`, `.git`, the hidden-test registry, the grading folder, other
  checkouts, /home, /root, /var, /run or /sys.
- **Writable**: a private tmpfs at the job's folder path (the kernel's cwd and HOME),
  /tmp and /dev/shm, each capped at `Limits.disk_bytes`; and one host folder, the kernel's
  Jupyter sockets (`Sandbox.sockets`, a short folder under /tmp: a socket's path is
  limited to 107 bytes, a job folder's is not), sealed once the kernel listens. What hidden
  cells record travels back as a cell output over those sockets; the probes they run are in
  `probes/`, read-only.
- **Unreachable**: the network (a new network namespace: no interfaces but loopback, no
  abstract Unix sockets of the host) and every host socket file (none is bound).
- **A cleared environment** plus `ENV_ALLOW`; the sandbox's own command line travels in
  a memfd, so nothing inside can read it.
- **Limits on the whole submission** (`autograder.limits`): memory (tmpfs included),
  processes and threads, disk; and per process: address space, file size, no core dumps.

Without a working bubblewrap `unavailable_reason()` says why, and `prepare` refuses
unless the instructor opted in (`grade --allow-unsandboxed`): then the kernel runs with
the same limits but no isolation at all, and results say `isolation: "none"`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from autograder.limits import Cgroups, LimitHit, Supervisor
from autograder.nbgrader_config import REPO

NO_SANDBOX_WARNING = (
    "these submissions ran WITHOUT the sandbox (`grade --allow-unsandboxed`): resource limits "
    "only; their code could read every file the grader can read, reach the network and write "
    "outside its folder. Install bubblewrap with user namespaces enabled and grade again."
)
INSIDE_ID = 1000  # the kernel's uid and gid inside the user namespace
HOST_ID = 65534  # ...and outside it when the grader runs as root ("nobody"/"nogroup")
LAUNCHER = Path(__file__).with_name("sandbox_launch.py")
KERNEL_SOCKETS = 5  # shell, iopub, stdin, control, heartbeat
# autograder modules a graded kernel imports (`import autograder.judge` and what judge
# imports while recording). Everything else of autograder/, exercises/ above all, stays out.
KERNEL_MODULES = ("__init__.py", "judge.py")
SECRET_MODULES = ("autograder.lesson", "autograder.verdict", "autograder.fixtures")
ENV_ALLOW = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "MPLBACKEND",
        "MPLCONFIGDIR",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NBGRADER_EXECUTION",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONHASHSEED",
        "AUTOGRADER_RECORD_DIR",
        "AUTOGRADER_SEED",
        "JUPYTER_RUNTIME_DIR",
    }
)


@dataclass(frozen=True)
class Limits:
    """Per submission. Times in seconds, sizes in bytes; `processes` counts threads too."""

    cell_timeout_s: int = 30
    notebook_timeout_s: int = 300
    memory_bytes: int = 4 * 2**30
    file_bytes: int = 256 * 2**20
    cell_output_bytes: int = 200_000
    processes: int = 256
    disk_bytes: int = 2**30


class SandboxUnavailable(RuntimeError):
    """Bubblewrap cannot sandbox here and the instructor did not allow grading without it."""


# ---------------------------------------------------------------- what the kernel sees


# A Unix socket's path has at most 107 bytes (sun_path), and ZeroMQ fails with "File name too
# long" past it: a job folder under a deep grading root would break every kernel. So the
# sockets live in a short folder of their own under /tmp, whatever the root.
SOCKET_BASE = "/tmp"
SOCKET_PATH_MAX = 107


def new_socket_dir() -> Path:
    """A fresh, unpredictable path for one kernel's Jupyter IPC sockets (not yet created).

    Raises `SandboxUnavailable` when even that path would be too long for a socket."""
    base = SOCKET_BASE if os.path.isdir(SOCKET_BASE) else tempfile.gettempdir()
    folder = Path(base) / f"autograder-ipc-{secrets.token_hex(8)}"
    if len(os.fsencode(folder / "kernel-65535")) > SOCKET_PATH_MAX:
        raise SandboxUnavailable(f"no short folder for the kernel's sockets here ({folder})")
    return folder


def kernel_env(workdir: Path, threads: int = 1, seed: int | None = None) -> dict[str, str]:
    """The kernel's whole environment: names in `ENV_ALLOW` only, nothing of the grader's."""
    env = {
        "PATH": f"{sys.prefix}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "MPLBACKEND": "agg",
        "MPLCONFIGDIR": str(workdir / ".mpl"),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "NBGRADER_EXECUTION": "autograde",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "AUTOGRADER_RECORD_DIR": str(workdir),
        "JUPYTER_RUNTIME_DIR": str(workdir / ".runtime"),
    }
    if seed is not None:
        env["AUTOGRADER_SEED"] = str(seed)
    assert set(env) <= ENV_ALLOW
    return env


def _system_view() -> tuple[list[list[str]], list[str]]:
    """Read-only binds of the OS and Python, and bwrap's merged-usr symlinks."""
    binds, links = [["ro", "/usr", "/usr"]], []
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(name):
            links += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            binds.append(["ro", name, name])
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives"):
        if os.path.exists(f"/etc/{name}"):
            binds.append(["ro", f"/etc/{name}", f"/etc/{name}"])
    for prefix in sorted({sys.base_prefix, sys.prefix}):
        if not prefix.startswith("/usr/"):
            binds.append(["ro", str(Path(prefix).resolve()), prefix])
    return binds, links


def _course_view() -> list[list[str]]:
    binds = [["ro", str(REPO / "course"), str(REPO / "course")]]
    if (REPO / "assets").is_dir():
        binds.append(["ro", str(REPO / "assets"), str(REPO / "assets")])
    for module in KERNEL_MODULES:
        path = REPO / "autograder" / module
        binds.append(["ro", str(path), str(path)])
    return binds


def _identity_files(control: Path, workdir: Path) -> list[list[str]]:
    (control / "passwd").write_text(
        "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
        f"learner:x:{INSIDE_ID}:{INSIDE_ID}:learner:{workdir}:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    (control / "group").write_text(f"root:x:0:\nlearner:x:{INSIDE_ID}:\nnogroup:x:65534:\n")
    return [["ro", str(control / n), f"/etc/{n}"] for n in ("passwd", "group")]


def _font_cache() -> list[list[str]]:
    """Matplotlib's font list, copied into the kernel's config dir (rebuilding takes seconds)."""
    try:
        import matplotlib

        cache = Path(matplotlib.get_cachedir())
    except Exception:  # noqa: BLE001 - no font cache only costs time
        return []
    return sorted([str(p), p.name] for p in cache.glob("fontlist-*.json"))


# ---------------------------------------------------------------- is bubblewrap usable here


def _stage_dir() -> str:
    for candidate in ("/run", "/mnt", "/media", "/srv"):
        if os.path.isdir(candidate) and not os.path.islink(candidate):
            return candidate
    return "/mnt"


@functools.cache
def unavailable_reason() -> str | None:
    """None when submissions can be sandboxed here, else a one-line reason and the fix."""
    if not shutil.which("bwrap"):
        return "bubblewrap is not installed (Debian/Ubuntu package `bubblewrap`; `make setup`)"
    with tempfile.TemporaryDirectory(prefix="autograder-probe-") as tmp:
        workdir = Path(tmp) / "job"
        workdir.mkdir()
        box = prepare(workdir, Limits(), allow_unsandboxed=True, _force_bwrap=True)
        try:
            with box:
                run = subprocess.run(
                    [*box.wrapper, sys.executable, "-I", "-S", "-c", "pass"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bubblewrap could not be started: {exc}"
    if run.returncode == 0:
        return None
    detail = (run.stderr.strip().splitlines() or ["no message"])[-1][:300]
    return (
        f"bubblewrap cannot create a sandbox on this machine ({detail}); it needs user "
        "namespaces: sysctl user.max_user_namespaces > 0 (and kernel.unprivileged_userns_clone=1 "
        "on older Debian kernels, an AppArmor profile for bwrap on Ubuntu 23.10+), and, when "
        "grading as root, permission to create a mount namespace"
    )


def available() -> bool:
    """Whether submissions can be sandboxed here (a probe sandbox ran; cached per process)."""
    return unavailable_reason() is None


def bwrap_path() -> str | None:
    """bwrap's path when it can sandbox here, else None."""
    return shutil.which("bwrap") if available() else None


# ---------------------------------------------------------------- one sandboxed run


class Sandbox:
    """One submission's sandbox, used as a context manager around the kernel's lifetime.

    On entry the cgroups and the launcher's spec are created and the supervisor starts;
    start the kernel with `wrapper + command` (and `env`) inside the block. On exit every
    process left is killed and the job's writable folders are cleaned; `limit_hit` then
    says which whole-submission limit stopped the run, if any.
    """

    def __init__(self, workdir: Path, limits: Limits, env: dict[str, str], bwrap: str | None):
        self.workdir, self.limits, self.env, self.bwrap = workdir, limits, env, bwrap
        self.control = workdir / ".sandbox"
        self.isolation = "bubblewrap" if bwrap else "none"
        self.host_id = HOST_ID if bwrap and os.geteuid() == 0 else None
        self.wrapper = [
            sys.executable,
            "-I",
            "-S",
            str(LAUNCHER),
            str(self.control / "spec.json"),
            "--",
        ]
        # The kernel's sockets: the one host folder it may write to (until sealed).
        self.sockets = new_socket_dir()
        self.cgroups: Cgroups | None = None
        self.cgroup_problem = ""
        self.limit_hit: LimitHit | None = None
        self._supervisor: Supervisor | None = None

    @property
    def tmpfs(self) -> list[tuple[str, int]]:
        size = self.limits.disk_bytes
        return [(str(self.workdir), size), ("/tmp", size), ("/dev/shm", size)] if self.bwrap else []

    def spec(self) -> dict:
        limits = self.limits
        spec = {
            "bwrap": self.bwrap,
            "env": self.env,
            "cwd": str(self.workdir),
            "pid_file": str(self.control / "pid"),
            "cgroup_procs": self.cgroups.procs_files if self.cgroups else [],
            "rlimits": {"as": limits.memory_bytes, "fsize": limits.file_bytes, "core": 0},
            "host_id": self.host_id,
            "stage_dir": _stage_dir(),
        }
        if self.bwrap:
            spec.update(self._bwrap_spec())
        return spec

    def _bwrap_spec(self) -> dict:
        work, size = str(self.workdir), str(self.limits.disk_bytes)
        system, links = _system_view()
        head = [
            "--unshare-user",
            "--disable-userns",
            "--uid",
            str(INSIDE_ID),
            "--gid",
            str(INSIDE_ID),
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "sandbox",
            "--cap-drop",
            "ALL",
            "--die-with-parent",
            "--new-session",
            *links,
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            *("--size", size, "--tmpfs", "/dev/shm"),
            *("--size", size, "--tmpfs", "/tmp"),
            *("--size", size, "--tmpfs", work),
        ]
        binds = system + _course_view() + _identity_files(self.control, self.workdir)
        binds += [
            ["ro", str(self.workdir / "probes"), str(self.workdir / "probes")],
            ["rw", str(self.sockets), str(self.sockets)],
        ]
        tail = ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", work, "--clearenv"]
        for key, value in sorted(self.env.items()):
            tail += ["--setenv", key, value]
        prlimit = shutil.which("prlimit", path="/usr/bin:/bin")
        return {
            "bwrap_head": head,
            "binds": binds,
            "copy_in": [[src, f"{work}/.mpl/{name}"] for src, name in _font_cache()],
            "bwrap_tail": tail,
            # Set inside the new user namespace, RLIMIT_NPROC counts this sandbox's
            # processes only (outside it would count every sandbox of HOST_ID together).
            "inner_prefix": [prlimit, f"--nproc={self.limits.processes}", "--"] if prlimit else [],
        }

    def _prepare_folders(self) -> None:
        if self.control.exists():
            shutil.rmtree(self.control)
        self.control.mkdir(mode=0o700)
        (self.workdir / "probes").mkdir(exist_ok=True)
        self.sockets.mkdir(mode=0o700)  # never an existing folder: someone else's
        if self.host_id is not None:
            os.chown(self.sockets, self.host_id, self.host_id, follow_symlinks=False)

    def __enter__(self) -> Sandbox:
        self._prepare_folders()
        self.cgroups, self.cgroup_problem = Cgroups.create(
            self.limits.memory_bytes, self.limits.processes
        )
        (self.control / "spec.json").write_text(json.dumps(self.spec()))
        self._sealed = False
        self._supervisor = Supervisor(
            self.limits,
            self.cgroups,
            self.control / "pid",
            self.workdir,
            self.tmpfs,
            on_tick=self.seal_sockets if self.host_id is not None else None,
        )
        self._supervisor.start()
        return self

    def seal_sockets(self) -> None:
        """Once the kernel has bound its sockets, take the socket folder back (root only).

        The grader's client connects, and ZeroMQ reconnects, to paths in that folder as
        root: were it still the kernel's, the kernel could swap a socket for a symbolic
        link to any host socket. Sealed, it can neither remove nor add an entry there.
        """
        if self._sealed:
            return
        folder = self.sockets
        try:
            modes = [e.stat(follow_symlinks=False).st_mode for e in os.scandir(folder)]
            sockets = [m for m in modes if stat.S_ISSOCK(m)]
        except OSError:
            return
        if len(sockets) >= KERNEL_SOCKETS:
            os.chown(folder, 0, 0, follow_symlinks=False)
            os.chmod(folder, 0o755)
            self._sealed = True

    def reopen_sockets(self) -> None:
        """Before a kernel (re)starts: give the socket folder back to the kernel, emptied.

        A restarted kernel binds its sockets again; in a sealed folder it could not. The old
        kernel's socket files go first, so that sealing waits for the new kernel's.
        """
        if self.host_id is None or not self._sealed:
            return
        folder = self.sockets
        for entry in os.scandir(folder):
            _remove(entry.path)
        os.chown(folder, self.host_id, self.host_id, follow_symlinks=False)
        os.chmod(folder, 0o700)
        self._sealed = False

    def __exit__(self, *exc) -> None:
        if self._supervisor is not None:
            self.limit_hit = self._supervisor.stop()
            self._supervisor.kill()
        if self.cgroups is not None:
            self.cgroups.destroy()
        clean(self.workdir, self.sockets)

    def annotate(self, execution: dict) -> None:
        """Add to an execution report how limits were enforced and which one was hit."""
        execution["limits_by"] = self.limits_by
        annotate_limit(execution, self.limit_hit)

    @property
    def limits_by(self) -> str:
        """How the whole-submission limits were enforced: "cgroup v1", "cgroup v2", "watcher"."""
        return f"cgroup v{self.cgroups.version}" if self.cgroups else "watcher"


def prepare(
    workdir: Path,
    limits: Limits,
    *,
    threads: int = 1,
    seed: int | None = None,
    allow_unsandboxed: bool = False,
    _force_bwrap: bool = False,
) -> Sandbox:
    """The sandbox for one job whose folder is `workdir` (with `probes/` written in it).

    Raises `SandboxUnavailable` when bubblewrap cannot sandbox here, unless
    `allow_unsandboxed`: then the kernel runs with limits only (`isolation == "none"`).
    """
    workdir = workdir.resolve()
    env = kernel_env(workdir, threads, seed)
    if _force_bwrap:
        return Sandbox(workdir, limits, env, shutil.which("bwrap"))
    reason = unavailable_reason()
    if reason is None:
        return Sandbox(workdir, limits, env, shutil.which("bwrap"))
    if not allow_unsandboxed:
        raise SandboxUnavailable(
            f"cannot grade safely: {reason}. To grade without isolation anyway (trusted "
            "submissions only), pass --allow-unsandboxed."
        )
    return Sandbox(workdir, limits, env, None)


def require(allow_unsandboxed: bool) -> None:
    """Raise `SandboxUnavailable` now, before any work, if grading would have to refuse."""
    reason = unavailable_reason()
    if reason is not None and not allow_unsandboxed:
        raise SandboxUnavailable(
            f"cannot grade safely: {reason}. To grade without isolation anyway (trusted "
            "submissions only), pass --allow-unsandboxed."
        )


# ---------------------------------------------------------------- after the run


def _remove(path: str) -> None:
    """Remove one entry without following it if it is a symbolic link."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)  # never follows symlinks (fd-based on Linux)
        else:
            os.unlink(path)


def clean(workdir: Path, sockets: Path) -> None:
    """After the kernel ended: drop its sockets and the launcher's files. Nothing the
    sandbox wrote outlives the run (its other writable places were tmpfs mounts); no
    symbolic link is ever followed.
    """
    _remove(str(sockets))
    _remove(str(workdir / ".sandbox"))


def annotate_limit(execution: dict, hit: LimitHit | None) -> None:
    """Put `hit` in the execution report (`limit_hit`), naming the cell it stopped."""
    if hit is None:
        return
    cells = [c for c in execution.get("cells", []) if isinstance(c, dict)]
    stopped = next((c for c in cells if c.get("status") in ("kernel-died", "running")), None)
    where = ""
    if stopped is not None:
        label = f" ({stopped['grade_id']})" if stopped.get("grade_id") else ""
        where = f" in cell {stopped['index'] + 1}{label}"
    execution["limit_hit"] = hit.to_dict(where)
    if stopped is not None:
        stopped["detail"] = execution["limit_hit"]["message"]
