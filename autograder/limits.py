"""Resource limits on a whole submission (every process it starts), not on one process.

Two mechanisms, the first one the machine allows:

- **cgroups**: a memory cgroup (tmpfs pages written to /tmp are charged to it too) and a
  pids cgroup per submission, cgroup v2 where the grader's own cgroup delegates the
  `memory` and `pids` controllers, else the v1 `memory` and `pids` hierarchies when they
  are writable (root on most machines). The kernel enforces them; the `Supervisor`
  reads their event counters to learn which limit was hit.
- **a watcher** otherwise: every `interval_s` the `Supervisor` sums the proportional set
  size (PSS) of every process in the sandbox's tree plus its tmpfs usage, and counts its
  threads; on a breach it kills the whole tree. Per-process rlimits (address space, file
  size, process count inside the sandbox) bound what can happen between two looks.

Disk (the job folder on the host and the sandbox's tmpfs mounts) is watched the same
way in both cases. A hit is reported as a `LimitHit` whose message a student can read.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TMPFS_MAGIC = 0x01021994


def human_bytes(n: int) -> str:
    """`4 GiB`, `512 MiB`, `1.5 GiB`: sizes as a student reads them."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True)
class LimitHit:
    """Which whole-submission limit a run hit: `kind` is memory, processes or disk."""

    kind: str
    limit: int
    used: int | None = None

    def message(self, where: str = "") -> str:
        """The sentence shown to the student; `where` is e.g. ` in cell 7`."""
        what = {
            "memory": f"used more than {human_bytes(self.limit)} of memory (all its processes "
            "together, files it wrote to /tmp included)",
            "processes": f"ran more than {self.limit} processes or threads at once",
            "disk": f"wrote more than {human_bytes(self.limit)} of files (its folder, /tmp and "
            "/dev/shm together)",
        }[self.kind]
        stopped = f"the grader stopped it{where}. The cells after it did not run."
        return f"Your notebook {what}; {stopped}"

    def to_dict(self, where: str = "") -> dict:
        """`{"kind", "limit" (bytes or a count), "message"}` for the execution report."""
        return {"kind": self.kind, "limit": self.limit, "message": self.message(where)}


# ---------------------------------------------------------------- cgroups


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount root, mount point, fs type, super options) of every cgroup mount."""
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            left, _, right = line.partition(" - ")
            fields, extra = left.split(), right.split()
            if extra and extra[0] in ("cgroup", "cgroup2"):
                options = set(extra[2].split(",")) if len(extra) > 2 else set()
                found.append((fields[3], fields[4], extra[0], options))
    return found


def _own_cgroups() -> dict[str, str]:
    """controller ("" for v2) -> this process's cgroup path in that hierarchy."""
    own = {}
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                own[name] = path
    return own


def _under(mount_root: str, mount_point: str, path: str) -> Path | None:
    if not (path == mount_root or path.startswith(mount_root.rstrip("/") + "/")):
        return None
    return Path(mount_point) / path[len(mount_root) :].lstrip("/")


class Cgroups:
    """One submission's cgroups: `create` them, let the launcher join, read events, kill."""

    def __init__(self, dirs: dict[str, Path], version: int):
        self.dirs = dirs  # "memory"/"pids" -> directory (the same one under v2)
        self.version = version

    @classmethod
    def create(cls, memory_bytes: int, processes: int) -> tuple[Cgroups | None, str]:
        """New cgroups limiting memory (no swap) and processes; (None, why) when impossible."""
        name = f"autograder-{uuid.uuid4().hex[:12]}"
        try:
            mounts, own = _mounts(), _own_cgroups()
        except OSError as exc:
            return None, f"cannot read this process's cgroups: {exc}"
        why = []
        for make in (cls._v2, cls._v1):
            try:
                made = make(name, mounts, own)
            except OSError as exc:
                why.append(str(exc))
                continue
            if made is not None:
                try:
                    made._set_limits(memory_bytes, processes)
                except OSError as exc:
                    made.destroy()
                    why.append(f"cannot set limits: {exc}")
                    continue
                return made, ""
        return None, "; ".join(why) or "no writable memory and pids cgroups"

    @classmethod
    def _v2(cls, name, mounts, own) -> Cgroups | None:
        for root, point, fstype, _ in mounts:
            if fstype != "cgroup2" or "" not in own:
                continue
            parent = _under(root, point, own[""])
            if parent is None or not (parent / "cgroup.controllers").exists():
                continue
            if not {"memory", "pids"} <= set((parent / "cgroup.controllers").read_text().split()):
                continue
            enabled = set((parent / "cgroup.subtree_control").read_text().split())
            if not {"memory", "pids"} <= enabled:
                (parent / "cgroup.subtree_control").write_text("+memory +pids")
            path = parent / name
            path.mkdir()
            return cls({"memory": path, "pids": path}, 2)
        return None

    @classmethod
    def _v1(cls, name, mounts, own) -> Cgroups | None:
        dirs = {}
        for controller in ("memory", "pids"):
            for root, point, fstype, options in mounts:
                if fstype == "cgroup" and controller in options and controller in own:
                    parent = _under(root, point, own[controller])
                    if parent is not None and os.access(parent, os.W_OK):
                        dirs[controller] = parent / name
                        break
        if set(dirs) != {"memory", "pids"}:
            return None
        made = cls({}, 1)
        try:
            for controller, path in dirs.items():
                path.mkdir()
                made.dirs[controller] = path
        except OSError:
            made.destroy()
            raise
        return made

    def _set_limits(self, memory_bytes: int, processes: int) -> None:
        if self.version == 2:
            (self.dirs["memory"] / "memory.max").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):
                (self.dirs["memory"] / "memory.swap.max").write_text("0")
            with contextlib.suppress(OSError):  # one OOM kill ends the whole submission at once
                (self.dirs["memory"] / "memory.oom.group").write_text("1")
            (self.dirs["pids"] / "pids.max").write_text(str(processes))
            return
        (self.dirs["memory"] / "memory.limit_in_bytes").write_text(str(memory_bytes))
        with contextlib.suppress(OSError):  # absent without swap accounting
            (self.dirs["memory"] / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
        (self.dirs["pids"] / "pids.max").write_text(str(processes))

    @property
    def procs_files(self) -> list[str]:
        """The `cgroup.procs` files a process writes its pid to in order to join."""
        return sorted({str(d / "cgroup.procs") for d in self.dirs.values()})

    def _counter(self, controller: str, filename: str, key: str) -> int:
        try:
            text = (self.dirs[controller] / filename).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == key:
                return int(parts[1])
        return 0

    def oom_kills(self) -> int:
        """Processes the kernel's OOM killer ended in this cgroup so far."""
        if self.version == 2:
            return self._counter("memory", "memory.events", "oom_kill")
        return self._counter("memory", "memory.oom_control", "oom_kill")

    def pids_refused(self) -> int:
        """Forks refused because the process limit was reached."""
        return self._counter("pids", "pids.events", "max")

    def pids(self) -> set[int]:
        """Every process now in these cgroups (host pids)."""
        found: set[int] = set()
        for path in self.procs_files:
            with contextlib.suppress(OSError):
                found |= {int(p) for p in Path(path).read_text().split()}
        return found

    def kill(self, timeout_s: float = 5.0) -> None:
        """SIGKILL every process in the cgroups until none is left or `timeout_s` passed."""
        if self.version == 2 and (self.dirs["pids"] / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.dirs["pids"] / "cgroup.kill").write_text("1")
        deadline = time.monotonic() + timeout_s
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def destroy(self) -> None:
        """Kill what is left, then remove the cgroups' directories."""
        self.kill()
        for path in sorted(set(self.dirs.values()), reverse=True):
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)  # the last processes are still exiting


# ---------------------------------------------------------------- the process tree


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{entry.name}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(root: int, parents: dict[int, int] | None = None) -> list[int]:
    """`root` and every process below it (a pid namespace keeps orphans in the tree)."""
    parents = _parents() if parents is None else parents
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root] if root in parents else []
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def _pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages (torch's libraries) are split between sharers."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _start_time(pid: int) -> int | None:
    """Clock ticks after boot at which `pid` started: with the pid, a process's identity."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _threads(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[17])
    except (OSError, ValueError, IndexError):
        return 0


def cpu_seconds(root: int) -> float | None:
    """CPU seconds (user + system, reaped children included) used so far by `root` and its
    living descendants; None when `root` is gone."""
    tree = descendants(root)
    if not tree:
        return None
    ticks = 0
    for pid in tree:
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{pid}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return round(ticks / os.sysconf("SC_CLK_TCK"), 2)


def kill_tree(root: int) -> None:
    """SIGKILL `root` and its descendants, again until none is left (at most 20 rounds)."""
    for _ in range(20):
        tree = descendants(root)
        if not tree:
            return
        for pid in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


def disk_usage(folder: Path) -> int:
    """Bytes of disk that `folder` holds, never following symbolic links."""
    total, todo = 0, [str(folder)]
    while todo:
        with contextlib.suppress(OSError), os.scandir(todo.pop()) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    info = entry.stat(follow_symlinks=False)
                    total += info.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(entry.path)
    return total


# ---------------------------------------------------------------- the supervisor


class Supervisor:
    """Watches one sandboxed run and stops the whole tree when a limit is hit.

    `pid_file` is where the launcher writes its pid (bubblewrap's, after it execs);
    `tmpfs` lists (path inside the sandbox, size cap in bytes) of the sandbox's tmpfs
    mounts, read through /proc/PID/root of the sandbox's first process.
    """

    def __init__(
        self,
        limits,
        cgroups: Cgroups | None,
        pid_file: Path,
        host_folder: Path,
        tmpfs: list[tuple[str, int]],
        interval_s: float = 0.1,
        on_tick: Callable[[], None] | None = None,
    ):
        self.limits, self.cgroups, self.pid_file = limits, cgroups, pid_file
        self.host_folder, self.tmpfs, self.interval_s = host_folder, tmpfs, interval_s
        self.on_tick = on_tick  # the sandbox's own periodic duty (sealing the socket folder)
        self.hit: LimitHit | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-supervisor", daemon=True)
        self._root: tuple[int, int | None] | None = None  # (pid, start time)
        self._inside: int | None = None

    def start(self) -> None:
        """Start watching in a daemon thread (a look every `interval_s` seconds)."""
        self._thread.start()

    def stop(self) -> LimitHit | None:
        """Stop watching; one last look catches what a run that just ended left behind."""
        self._stop.set()
        self._thread.join()
        if self.hit is None:
            self.hit = self.check()
        return self.hit

    def root_pid(self) -> int | None:
        """The launcher's pid (bubblewrap's after exec) while that process lives, else None.

        Checked against the start time first seen, so a reused pid is never taken for it;
        once it has ended, the pid file is read again (a restarted kernel's launcher).
        """
        if self._root is not None and _start_time(self._root[0]) != self._root[1]:
            self._root = None
        if self._root is None:
            with contextlib.suppress(OSError, ValueError):
                pid = int(self.pid_file.read_text())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"sandbox_launch" in cmdline or b"bwrap" in cmdline:
                    self._root = (pid, _start_time(pid))
        if self._root is None or _start_time(self._root[0]) != self._root[1]:
            return None
        return self._root[0]

    def kill(self) -> None:
        """Stop the whole sandboxed tree: the launcher's descendants and the cgroups."""
        root = self.root_pid()
        if root is not None:
            kill_tree(root)
        if self.cgroups is not None:
            self.cgroups.kill()

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(self.interval_s):
            if self.on_tick is not None:
                self.on_tick()
            hit = self.check(disk=tick % 3 == 0)
            tick += 1
            if hit is not None:
                self.hit = hit
                self.kill()
                return

    def check(self, disk: bool = True) -> LimitHit | None:
        """One look: the first limit found broken, else None."""
        limits = self.limits
        if self.cgroups is not None:
            if self.cgroups.oom_kills():
                return LimitHit("memory", limits.memory_bytes)
            if self.cgroups.pids_refused():
                return LimitHit("processes", limits.processes)
        else:
            hit = self._check_tree()
            if hit is not None:
                return hit
        if disk:
            used = disk_usage(self.host_folder) + self.tmpfs_used(full_counts=True)
            if used > limits.disk_bytes:
                return LimitHit("disk", limits.disk_bytes, used)
        return None

    def _check_tree(self) -> LimitHit | None:
        root = self.root_pid()
        if root is None:
            return None
        parents = _parents()
        tree = descendants(root, parents)
        threads = sum(_threads(pid) for pid in tree)
        if threads > self.limits.processes:
            return LimitHit("processes", self.limits.processes, threads)
        memory = sum(_pss_bytes(pid) for pid in tree) + self.tmpfs_used()
        if memory > self.limits.memory_bytes:
            return LimitHit("memory", self.limits.memory_bytes, memory)
        return None

    def _inside_pid(self) -> int | None:
        """A process whose root is the sandbox's (bubblewrap's first child, after pivot)."""
        if self._inside is not None or not self.tmpfs:
            return self._inside
        root = self.root_pid()
        if root is None:
            return None
        host_root = os.stat("/")
        for pid in descendants(root)[1:]:
            with contextlib.suppress(OSError):
                mine = os.stat(f"/proc/{pid}/root")
                if (mine.st_dev, mine.st_ino) != (host_root.st_dev, host_root.st_ino):
                    self._inside = pid
                    break
        return self._inside

    def tmpfs_used(self, full_counts: bool = False) -> int:
        """Bytes in the sandbox's tmpfs mounts; a full one counts as over the disk limit."""
        pid = self._inside_pid()
        if pid is None:
            return 0
        total = 0
        for path, size in self.tmpfs:
            try:
                info = os.statvfs(f"/proc/{pid}/root{path}")
            except OSError:
                continue
            if abs(info.f_blocks * info.f_frsize - size) > 2 * info.f_frsize:
                continue  # not (yet) our tmpfs
            used = (info.f_blocks - info.f_bfree) * info.f_frsize
            if full_counts and info.f_bavail * info.f_frsize < 2**20:
                used = self.limits.disk_bytes + 1  # writes there now fail: report it
            total += used
        return total
