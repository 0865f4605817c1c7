"""Start one sandboxed command: `python -I -S sandbox_launch.py SPEC -- COMMAND...`.

The grader's side of the sandbox boundary, run by the kernel manager in place of the
kernel. Standard library only and started with `-I -S`: nothing of the course or of
site-packages runs here. In order it

1. moves itself into the submission's cgroups (so every process it starts is counted
   against the submission's memory and process limits) and sets the per-process rlimits;
2. when the grader runs as root: stages every path the sandbox binds in a private mount
   namespace (so an unprivileged uid can reach a Python installed under /root), hands the
   kernel's connection file and writable folders to that uid, and drops to it for good;
3. execs bubblewrap with its options passed through a memfd (`--args FD`), so the
   sandbox's PID 1 shows `bwrap --args 3 -- COMMAND` (no binds, no variables), and with an
   empty environment.

The spec (JSON, written by `autograder.sandbox`) says what to bind and which limits apply.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import stat
import sys

CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
RLIMITS = {
    "as": resource.RLIMIT_AS,
    "fsize": resource.RLIMIT_FSIZE,
    "core": resource.RLIMIT_CORE,
}


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(libc, source, target, fstype, flags, data=None) -> None:
    enc = [None if x is None else x.encode() for x in (source, target, fstype, data)]
    _check(libc.mount(enc[0], enc[1], enc[2], flags, enc[3]), f"mount {target}")


def enter_cgroups(procs_files: list[str]) -> None:
    for path in procs_files:
        with open(path, "w") as handle:
            handle.write(str(os.getpid()))


def set_rlimits(limits: dict[str, int]) -> None:
    for name, value in limits.items():
        resource.setrlimit(RLIMITS[name], (value, value))


def stage(binds: list[list[str]], stage_dir: str) -> list[list[str]]:
    """The same binds with every source reached through `stage_dir` in a private mount ns.

    Sources are opened (as root) before the staging tmpfs is mounted, then bound from
    their file descriptors, so a
    source under a folder the sandbox's uid may not traverse (/root/.pyenv) is reachable,
    and a source under `stage_dir` itself is not hidden by the staging tmpfs.
    """
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    # Opened in the new namespace (a bind from another namespace's mount is refused).
    fds = [os.open(src, os.O_PATH | os.O_CLOEXEC) for _, src, _ in binds]
    _mount(libc, "tmpfs", stage_dir, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    staged = []
    for index, ((kind, _, dest), fd) in enumerate(zip(binds, fds, strict=True)):
        target = f"{stage_dir}/{index}"
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.mkdir(target, 0o755)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
        _mount(libc, f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        os.close(fd)
        staged.append([kind, target, dest])
    return staged


def connection_file(command: list[str]) -> str | None:
    """The kernel's connection file (`-f PATH`), which the sandbox must be able to read."""
    for flag, value in zip(command, command[1:], strict=False):
        if flag == "-f":
            return value
    return None


def drop_to(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise OSError("could not drop to the sandbox's uid")


def _inheritable(fd: int) -> str:
    os.set_inheritable(fd, True)
    return str(fd)


def bwrap_args(spec: dict, binds: list[list[str]], copies: list) -> list[str]:
    args = list(spec["bwrap_head"])
    for kind, src, dest in binds:
        args += [{"ro": "--ro-bind", "rw": "--bind"}[kind], src, dest]
    for fd, dest in copies:
        args += ["--file", _inheritable(fd), dest]
    return args + list(spec["bwrap_tail"])


def exec_bwrap(spec: dict, command: list[str]) -> None:
    binds = [list(b) for b in spec["binds"]]
    copies = [(os.open(src, os.O_RDONLY | os.O_CLOEXEC), dest) for src, dest in spec["copy_in"]]
    conn = connection_file(command)
    if conn:
        binds.append(["ro", conn, conn])
    if spec.get("host_id") is not None:
        uid = gid = spec["host_id"]
        binds = stage(binds, spec["stage_dir"])
        if conn:
            os.chown(conn, uid, gid, follow_symlinks=False)
        drop_to(uid, gid)
    args = bwrap_args(spec, binds, copies)
    memfd = os.memfd_create("bwrap-args", 0)
    os.write(memfd, b"\0".join(a.encode() for a in args) + b"\0")
    os.lseek(memfd, 0, os.SEEK_SET)
    bwrap = spec["bwrap"]
    # bwrap takes the command only from its real argv: the sandbox can read this part
    # (the kernel's own command line), not the binds and variables above.
    argv = [bwrap, "--args", _inheritable(memfd), "--", *spec["inner_prefix"], *command]
    os.execve(bwrap, argv, {})


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: sandbox_launch.py SPEC -- COMMAND...", file=sys.stderr)
        return 2
    with open(argv[1]) as handle:
        spec = json.load(handle)
    command = argv[3:]
    try:
        enter_cgroups(spec["cgroup_procs"])
        set_rlimits(spec["rlimits"])
        with open(spec["pid_file"], "w") as handle:
            handle.write(str(os.getpid()))
        os.chdir("/")
        if spec["bwrap"] is None:
            os.chdir(spec["cwd"])
            os.execve(command[0], command, spec["env"])
        exec_bwrap(spec, command)
    except OSError as exc:
        print(f"autograder sandbox: could not start the sandbox: {exc}", file=sys.stderr)
        return 126
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main(sys.argv))
