"""The sandbox a submission's kernel runs in, attacked from inside.

Each test starts `python -c CODE` through exactly the wrapper the grader starts kernels
with (`sandbox.prepare(...).wrapper`), with the grader's own environment plus a secret,
as root where possible (the case the sandbox must hold in: instructors' servers and CI).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import nbformat
import pytest

from autograder import limits, sandbox
from autograder.nbgrader_config import REPO

needs_sandbox = pytest.mark.skipif(
    not sandbox.available(), reason=f"no sandbox here: {sandbox.unavailable_reason()}"
)
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="the root case (capabilities, host uid) needs the tests run as root"
)
SECRET = f"instructor-secret-{uuid.uuid4().hex}"


SOCKETS = "@SOCKETS@"  # in code run by `run_inside`: the sandbox's socket folder


def run_inside(workdir: Path, code: str, lim: sandbox.Limits | None = None, timeout: int = 300):
    """Run `code` in a fresh sandbox for the job folder `workdir`; (process, sandbox).

    `SOCKETS` in `code` stands for the sandbox's socket folder (a random path)."""
    (workdir / "probes").mkdir(parents=True, exist_ok=True)
    box = sandbox.prepare(workdir, lim or sandbox.Limits())
    code = code.replace(SOCKETS, str(box.sockets))
    env = {**os.environ, "INSTRUCTOR_TOKEN": SECRET, **box.env}  # the worst case
    with box:
        proc = subprocess.run(
            [*box.wrapper, sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=workdir,
            env=env,
        )
    return proc, box


def cgroups_usable() -> bool:
    group, _ = limits.Cgroups.create(2**30, 100)
    if group is not None:
        group.destroy()
    return group is not None


def without_cgroups(monkeypatch) -> None:
    """Force the fallback: the supervisor's own watch over the process tree."""
    monkeypatch.setattr(
        limits.Cgroups, "create", classmethod(lambda cls, *a: (None, "disabled by the test"))
    )


# ---------------------------------------------------------------- what the inside sees

PROBE = r"""
import ctypes, errno, json, os, socket, sys
out = {}
libc = ctypes.CDLL(None, use_errno=True)
def err(result):
    return "ok" if result == 0 else errno.errorcode[ctypes.get_errno()]
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
out["cap_eff"] = status["CapEff"].strip()
out["cap_bnd"] = status["CapBnd"].strip()
out["uid"], out["gid"] = os.getuid(), os.getgid()
out["mount_tmpfs"] = err(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
out["umount"] = err(libc.umount2(sys.argv[1].encode(), 0))
out["remount_rw"] = err(libc.mount(None, b"/usr", None, 32 | 4096, None))  # REMOUNT|BIND
out["unshare_user"] = err(libc.unshare(0x10000000))
out["unshare_mount"] = err(libc.unshare(0x00020000))
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return type(exc).__name__
    except Exception as exc:
        return type(exc).__name__
out["read"] = {p: attempt(lambda p=p: (os.listdir(p) if os.path.isdir(p) else open(p).read()))
               for p in json.loads(sys.argv[2])}
out["write"] = {p: attempt(lambda p=p: open(p, "w").write("x")) for p in json.loads(sys.argv[3])}
out["environ"] = dict(os.environ)
procs = {}
for pid in os.listdir("/proc"):
    if pid.isdigit():
        procs[pid] = {}
        for name in ("cmdline", "environ"):
            try:
                procs[pid][name] = open(f"/proc/{pid}/{name}", "rb").read().decode(errors="replace")
            except OSError as exc:
                procs[pid][name] = type(exc).__name__
out["procs"] = procs
def connect(family, kind, address):
    def go():
        s = socket.socket(family, kind)
        s.settimeout(3)
        s.connect(address)
        if kind == socket.SOCK_DGRAM:
            s.send(b"x")
    return attempt(go)
targets = json.loads(sys.argv[4])
out["unix"] = connect(socket.AF_UNIX, socket.SOCK_STREAM, targets["unix"])
out["abstract"] = connect(socket.AF_UNIX, socket.SOCK_STREAM, "\0" + targets["abstract"])
out["tcp_host"] = connect(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", targets["tcp"]))
out["tcp_out"] = connect(socket.AF_INET, socket.SOCK_STREAM, ("1.1.1.1", 443))
out["udp_out"] = connect(socket.AF_INET, socket.SOCK_DGRAM, ("8.8.8.8", 53))
out["dns"] = attempt(lambda: socket.getaddrinfo("pypi.org", 443))
out["interfaces"] = [name for _, name in socket.if_nameindex()]
def imports(name):
    try:
        __import__(name)
        return "ok"
    except ImportError as exc:
        return type(exc).__name__
out["imports"] = {m: imports(m) for m in ("course", "autograder.judge", "solutions",
                                          "solutions.kernels.softmax", "autograder.verdict")}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def inside(tmp_path_factory):
    """What the probe saw from inside one sandbox, plus the host-side bait it looked for."""
    if not sandbox.available():
        pytest.skip(f"no sandbox here: {sandbox.unavailable_reason()}")
    tmp = tmp_path_factory.mktemp("grading-root")
    (tmp / "gradebook.db").write_text("grades")
    (tmp / "submitted" / "alice").mkdir(parents=True)
    (tmp / "submitted" / "alice" / "nb.ipynb").write_text("{}")
    workdir = tmp / "jobs" / "bob-01"
    bait = Path("/var/tmp") / f"autograder-test-{uuid.uuid4().hex[:8]}"
    other = bait / "course-copy" / "solutions" / "kernels" / "softmax.py"
    other.parent.mkdir(parents=True)
    other.write_text("def softmax(x): ...  # the reference\n")
    listeners = _listeners(bait)
    try:
        reads = [
            str(REPO / "solutions"),
            str(REPO / "tests"),
            str(REPO / ".git"),
            str(REPO / "autograder" / "lesson.py"),
            str(REPO / "autograder" / "verdict.py"),
            str(REPO / "autograder" / "grading.py"),
            str(other),
            str(tmp / "gradebook.db"),
            str(tmp / "submitted" / "alice" / "nb.ipynb"),
            "/etc/shadow",
            "/root/.bashrc",
            "/root",
            "/home",
            "/var/tmp",
            "/run",
            "/sys",
            *[str(p / "solutions") for p in REPO.parent.iterdir() if (p / "solutions").is_dir()],
            # what it needs
            str(REPO / "course" / "__init__.py"),
            str(REPO / "autograder" / "judge.py"),
            "/etc/passwd",
        ]
        writes = [
            "/usr/x",
            "/x",
            "/etc/x",
            "/dev/x",
            f"{sys.prefix}/x",
            str(REPO / "course" / "x"),
            str(REPO / "autograder" / "x"),
            str(workdir / "probes" / "x"),
            str(bait / "x"),
            "/tmp/x",
            "/dev/shm/x",
            str(workdir / "x"),
            f"{SOCKETS}/x",
        ]
        targets = {
            "unix": str(listeners["unix_path"]),
            "abstract": listeners["abstract_name"],
            "tcp": listeners["tcp_port"],
        }
        args = [str(REPO / "course"), json.dumps(reads), json.dumps(writes), json.dumps(targets)]
        code = PROBE.replace("sys.argv[1]", repr(args[0]))
        for index in (2, 3, 4):
            code = code.replace(f"sys.argv[{index}]", repr(args[index - 1]))
        proc, box = run_inside(workdir, code)
        assert proc.returncode == 0, proc.stderr[-3000:]
        seen = json.loads(proc.stdout.splitlines()[-1])
        seen["accepted"] = listeners["accepted"]()
        seen["box"] = box
        seen["workdir"] = workdir
        seen["after"] = sorted(p.name for p in workdir.iterdir())
        yield seen
    finally:
        listeners["close"]()
        shutil.rmtree(bait, ignore_errors=True)


def _listeners(folder: Path) -> dict:
    """A Unix socket in /var/tmp, an abstract one and a loopback TCP port, all listening."""
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(folder / "grader.sock"))
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    name = f"autograder-test-{uuid.uuid4().hex[:8]}"
    abstract.bind("\0" + name)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    sockets = [unix, abstract, tcp]
    for s in sockets:
        s.listen(4)
        s.setblocking(False)

    def accepted() -> int:
        count = 0
        for s in sockets:
            try:
                s.accept()[0].close()
                count += 1
            except BlockingIOError:
                pass
        return count

    def close() -> None:
        for s in sockets:
            s.close()

    return {
        "unix_path": folder / "grader.sock",
        "abstract_name": name,
        "tcp_port": tcp.getsockname()[1],
        "accepted": accepted,
        "close": close,
    }


@needs_root
def test_no_capabilities_and_not_root_inside_or_outside(inside):
    assert inside["cap_eff"] == "0000000000000000"
    assert inside["cap_bnd"] == "0000000000000000"
    assert inside["uid"] == sandbox.INSIDE_ID != 0 and inside["gid"] == sandbox.INSIDE_ID
    assert inside["box"].host_id == sandbox.HOST_ID != 0


def test_cannot_mount_unmount_remount_or_nest_namespaces(inside):
    for key in ("mount_tmpfs", "umount", "remount_rw", "unshare_mount"):
        assert inside[key] == "EPERM", (key, inside[key])
    assert inside["unshare_user"] in ("EPERM", "ENOSPC", "EUSERS")


def test_answers_tests_grades_and_host_files_are_invisible(inside):
    read = inside["read"]
    needed = {str(REPO / "course" / "__init__.py"), str(REPO / "autograder" / "judge.py")}
    for path, outcome in read.items():
        if path in needed or path == "/etc/passwd" or path == "/root":
            continue
        assert outcome in ("FileNotFoundError", "PermissionError"), (path, outcome)
    assert all(read[p] == "ok" for p in needed), read
    assert read["/etc/passwd"] == "ok"  # synthesized: no host accounts
    assert read["/root"] in ("ok", "FileNotFoundError")  # at most the Python install's path


def test_only_the_scratch_folders_and_the_socket_folder_are_writable(inside):
    writable = {k for k, v in inside["write"].items() if v == "ok"}
    workdir = inside["workdir"]
    scratch = {"/tmp/x", "/dev/shm/x", str(workdir / "x")}
    assert scratch <= writable
    # The socket folder is the kernel's until it listens; the grader seals it then (root
    # only). A checkout under /tmp (a CI clone) has its bound files' folders inside the
    # private /tmp tmpfs: writable there, but only in the sandbox's own memory.
    sockets = inside["box"].sockets
    assert f"{sockets}/x" in writable
    assert not sockets.exists(), "the socket folder outlived the run"
    others = writable - scratch - {f"{sockets}/x"}
    assert all(p.startswith("/tmp/") for p in others), others
    assert not [p for p in others if Path(p).exists()], "a sandbox write reached the host"


def test_the_kernel_gets_an_allow_listed_environment_only(inside):
    env = inside["environ"]
    assert set(env) - {"PWD"} <= sandbox.ENV_ALLOW, set(env) - sandbox.ENV_ALLOW
    assert "INSTRUCTOR_TOKEN" not in env and env["NBGRADER_EXECUTION"] == "autograde"


def test_no_process_shows_the_secret_or_the_sandbox_options(inside):
    procs = inside["procs"]
    blob = json.dumps(procs)
    for forbidden in (SECRET, "INSTRUCTOR_TOKEN", "--ro-bind", "--setenv", "--tmpfs"):
        assert forbidden not in blob, forbidden
    # PID 1 is bubblewrap's reaper: its options came through a file descriptor; what
    # follows `--` is the sandboxed command itself (here the probe).
    argv = procs["1"]["cmdline"].split("\0")
    assert argv[1:3] == ["--args", argv[2]] and argv[2].isdigit() and argv[3] == "--"
    assert procs["1"]["environ"] in ("", "PermissionError")


def test_host_sockets_and_the_network_are_unreachable(inside):
    for key in ("unix", "abstract", "tcp_host", "tcp_out", "udp_out", "dns"):
        assert inside[key] != "ok", key
    assert inside["accepted"] == 0
    assert inside["interfaces"] == ["lo"]


def test_course_and_judge_import_but_not_the_answers(inside):
    assert inside["imports"] == {
        "course": "ok",
        "autograder.judge": "ok",
        "solutions": "ModuleNotFoundError",
        "solutions.kernels.softmax": "ModuleNotFoundError",
        "autograder.verdict": "ModuleNotFoundError",
    }


def test_the_job_folder_keeps_nothing_of_the_run(inside):
    assert inside["after"] == ["probes"]  # no sockets, scratch, launcher files
    assert inside["box"].limit_hit is None


# ---------------------------------------------------------------- limits on the whole tree

# Each child reports on a pipe once its 512 MiB are touched; the parent counts the reports, so
# one child killed by the OOM killer (which ends only that one) cannot look like success.
TWELVE_CHILDREN = """
import os, time
read_end, write_end = os.pipe()
for _ in range(12):
    if os.fork() == 0:
        os.close(read_end)
        block = bytearray(512 * 2**20)
        block[::4096] = b"x" * len(block[::4096])
        os.write(write_end, b"+")
        time.sleep(120)
        os._exit(0)
os.close(write_end)
reports = b""
while len(reports) < 12 and (more := os.read(read_end, 12)):
    reports += more
if len(reports) == 12:
    print("all children allocated")
"""
FORK_BOMB = """
import os, time
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)
"""
FILL = """
import os, sys, time
folder, chunk = sys.argv[1], b"x" * 2**24
try:
    for n in range(40):  # 40 files of 128 MiB, each under the per-file size limit
        with open(os.path.join(folder, f"f{n}"), "wb") as f:
            for _ in range(8):
                f.write(chunk)
    print("wrote 5 GiB")
except OSError as exc:
    print("a write failed:", exc)
time.sleep(60)  # like a kernel, which stays up after a failed cell
"""


@needs_sandbox
@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroups", "watcher"])
def test_memory_is_limited_for_all_processes_together(tmp_path, monkeypatch, cgroups):
    if cgroups and not cgroups_usable():
        pytest.skip("no writable memory and pids cgroups here")
    if not cgroups:
        without_cgroups(monkeypatch)
    lim = sandbox.Limits(memory_bytes=2 * 2**30)  # each child alone is far below it
    proc, box = run_inside(tmp_path / "job", TWELVE_CHILDREN, lim)
    assert (box.cgroups is not None) == cgroups
    assert "all children allocated" not in proc.stdout
    assert box.limit_hit is not None and box.limit_hit.kind == "memory"
    assert "2 GiB of memory" in box.limit_hit.message()


@needs_sandbox
@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroups", "watcher"])
def test_a_fork_bomb_is_stopped(tmp_path, monkeypatch, cgroups):
    if cgroups and not cgroups_usable():
        pytest.skip("no writable memory and pids cgroups here")
    if not cgroups:
        without_cgroups(monkeypatch)
    proc, box = run_inside(tmp_path / "job", FORK_BOMB, sandbox.Limits(processes=64), timeout=120)
    assert proc.returncode != 0
    assert box.limit_hit is not None and box.limit_hit.kind == "processes"
    assert "64 processes or threads" in box.limit_hit.message()


@needs_sandbox
@pytest.mark.parametrize("folder", ["/tmp", "/dev/shm", "job"])
def test_writing_5_gib_is_stopped_and_leaves_nothing(tmp_path, folder):
    workdir = tmp_path / "job"
    target = {"job": str(workdir)}.get(folder, folder)
    code = FILL.replace("sys.argv[1]", repr(target))
    proc, box = run_inside(workdir, code, sandbox.Limits(disk_bytes=512 * 2**20))
    assert "wrote 5 GiB" not in proc.stdout and proc.returncode != 0
    assert box.limit_hit is not None and box.limit_hit.kind == "disk", proc.stderr[-2000:]
    assert limits.disk_usage(workdir) < 2**20  # cleaned: no socket, no scratch, no big file


# ---------------------------------------------------------------- without bubblewrap


def test_grading_refuses_without_sandbox_unless_allowed(tmp_path, monkeypatch, capsys):
    from autograder.__main__ import main

    monkeypatch.setattr(sandbox, "unavailable_reason", lambda: "bwrap is not installed (test)")
    (tmp_path / "job").mkdir()
    with pytest.raises(sandbox.SandboxUnavailable, match="--allow-unsandboxed"):
        sandbox.prepare(tmp_path / "job", sandbox.Limits())
    with pytest.raises(sandbox.SandboxUnavailable):
        sandbox.require(allow_unsandboxed=False)
    assert main(["--root", str(tmp_path), "grade"]) == 2
    assert "bwrap is not installed (test)" in capsys.readouterr().err
    box = sandbox.prepare(tmp_path / "job", sandbox.Limits(), allow_unsandboxed=True)
    assert box.isolation == "none" and box.bwrap is None


def test_unsandboxed_runs_keep_the_limits(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "unavailable_reason", lambda: "no bwrap (test)")
    workdir = tmp_path / "job"
    (workdir / "probes").mkdir(parents=True)
    box = sandbox.prepare(workdir, sandbox.Limits(processes=64), allow_unsandboxed=True)
    env = {**os.environ, "INSTRUCTOR_TOKEN": SECRET, **box.env}
    with box:
        proc = subprocess.run(
            [*box.wrapper, sys.executable, "-c", "import os; print(sorted(os.environ))"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    assert "INSTRUCTOR_TOKEN" not in proc.stdout  # the allow-list holds even here
    with box:
        subprocess.run([*box.wrapper, sys.executable, "-c", FORK_BOMB], env=env, timeout=120)
    assert box.limit_hit is not None and box.limit_hit.kind == "processes"


# ---------------------------------------------------------------- the pieces


def _autograder_imports(module: str, seen: set[str]) -> set[str]:
    """autograder modules `module` imports, transitively, by reading the source."""
    path = REPO / Path(*module.split(".")).with_suffix(".py")
    if module in seen or not path.exists():
        return seen
    seen.add(module)
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            if name.startswith("autograder.") and name not in sandbox.SECRET_MODULES:
                _autograder_imports(name, seen)
    return seen


def test_the_kernel_sees_every_autograder_module_judge_needs():
    needed = {m.split(".", 1)[1] + ".py" for m in _autograder_imports("autograder.judge", set())}
    assert needed | {"__init__.py"} <= set(sandbox.KERNEL_MODULES)
    for secret in sandbox.SECRET_MODULES:
        assert secret.split(".", 1)[1] + ".py" not in sandbox.KERNEL_MODULES


def test_environment_names_match_the_judge():
    from autograder.judge import RECORD_DIR_ENV

    env = sandbox.kernel_env(Path("/job"), threads=2, seed=7)
    assert env[RECORD_DIR_ENV] == "/job" and env["AUTOGRADER_SEED"] == "7"
    assert set(env) <= sandbox.ENV_ALLOW


def test_a_limit_hit_names_the_cell_it_stopped():
    execution = {
        "cells": [
            {"index": 0, "grade_id": "", "status": "ok"},
            {"index": 6, "grade_id": "softmax", "status": "kernel-died", "detail": "died"},
            {"index": 7, "grade_id": "", "status": "not-run"},
        ]
    }
    sandbox.annotate_limit(execution, limits.LimitHit("memory", 4 * 2**30))
    message = execution["limit_hit"]["message"]
    assert message.startswith("Your notebook used more than 4 GiB of memory (all its processes")
    assert "stopped it in cell 7 (softmax)" in message
    assert execution["cells"][1]["detail"] == message
    assert execution["limit_hit"]["kind"] == "memory"


def test_cgroup_v2_files_are_written_and_read(tmp_path):
    group = limits.Cgroups({"memory": tmp_path, "pids": tmp_path}, 2)
    group._set_limits(2**30, 100)
    assert (tmp_path / "memory.max").read_text() == str(2**30)
    assert (tmp_path / "pids.max").read_text() == "100"
    assert group.oom_kills() == 0
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (tmp_path / "pids.events").write_text("max 5\n")
    assert group.oom_kills() == 1 and group.pids_refused() == 5


# ---------------------------------------------------------------- a real kernel, end to end


@needs_sandbox
def test_a_kernel_starts_in_a_job_folder_too_deep_for_a_socket_path(tmp_path):
    """A Unix socket's path is at most 107 bytes; a grading root's is not (a CI checkout's
    pytest folders, an instructor's deep course folder)."""
    from autograder.execute import execute

    workdir = tmp_path / ("deep-" * 12) / ("folder-" * 12) / "work" / "01-softmax" / "s001"
    (workdir / "probes").mkdir(parents=True)
    assert len(str(workdir / "ipc" / "kernel-4")) > sandbox.SOCKET_PATH_MAX
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(6 * 7)")]
    lim = sandbox.Limits()
    box = sandbox.prepare(workdir, lim)
    with box:
        report = execute(nb, workdir, lim, box.wrapper, box.env, sockets=box.sockets)
    assert not report.get("startup_error"), report["startup_error"]
    assert [c["status"] for c in report["cells"]] == ["ok"]
    assert nb.cells[0].outputs[0]["text"] == "42\n"
    assert not box.sockets.exists()


BUSY = "import time\nend = time.process_time() + {s}\nwhile time.process_time() < end:\n    pass"


@needs_sandbox
def test_the_kernel_cpu_time_counts_its_children_but_not_its_sleep(tmp_path):
    """`kernel_cpu_s` is what a notebook's time limit is judged by (the wall time depends on the
    machine's load): the kernel's own CPU and that of the processes it started."""
    from autograder.execute import execute

    workdir = tmp_path / "job"
    (workdir / "probes").mkdir(parents=True)
    child = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {BUSY.format(s=1)!r}])"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(BUSY.format(s=1)),
        nbformat.v4.new_code_cell(child),
        nbformat.v4.new_code_cell("time.sleep(3)"),
    ]
    lim = sandbox.Limits()
    box = sandbox.prepare(workdir, lim)
    with box:
        report = execute(nb, workdir, lim, box.wrapper, box.env, sockets=box.sockets)
    assert [c["status"] for c in report["cells"]] == ["ok", "ok", "ok"]
    wall = report["finished"] - report["started"]
    assert 2.0 <= report["kernel_cpu_s"] < wall - 2.5, (report["kernel_cpu_s"], wall)


@needs_sandbox
def test_a_notebook_runs_in_the_sandbox_and_a_limit_hit_is_reported(tmp_path):
    from autograder.execute import PREAMBLE, execute

    workdir = tmp_path / "job"
    (workdir / "probes").mkdir(parents=True)
    lim = sandbox.Limits(
        cell_timeout_s=120, notebook_timeout_s=300, memory_bytes=2 * 2**30, disk_bytes=3 * 2**30
    )
    # Files in /dev/shm are memory: 2.5 GiB of them break the 2 GiB limit, though the
    # per-process address-space limit never sees them.
    fill = "for n in range(20):\n    open(f'/dev/shm/f{n}', 'wb').write(b'x' * 2**27)"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(PREAMBLE + "import os, sys"),  # as sanitize.merge puts it
        nbformat.v4.new_code_cell("print(os.getuid(), 'autograder.judge' in sys.modules)"),
        nbformat.v4.new_code_cell(fill),
        nbformat.v4.new_code_cell("print('after')"),
    ]
    box = sandbox.prepare(workdir, lim)
    with box:
        report = execute(nb, workdir, lim, box.wrapper, box.env, sockets=box.sockets)
    box.annotate(report)
    assert box.isolation == "bubblewrap" and report["limits_by"] == box.limits_by
    assert nb.cells[1].outputs[0]["text"] == f"{sandbox.INSIDE_ID} True\n"
    assert [c["status"] for c in report["cells"]] == ["ok", "ok", "kernel-died", "not-run"]
    assert report["limit_hit"]["kind"] == "memory"
    assert "2 GiB of memory" in report["limit_hit"]["message"]
    assert "in cell 3" in report["limit_hit"]["message"]
    assert sorted(p.name for p in workdir.iterdir() if p.name != "kernel.log") == [
        ".kernel.json",
        "probes",
    ]


@needs_sandbox
@needs_root
@pytest.mark.skipif(
    not (os.path.exists("/usr/bin/python3") and shutil.which("setpriv")),
    reason="needs a system /usr/bin/python3 and setpriv to play a non-root instructor",
)
def test_a_non_root_instructor_gets_the_same_sandbox():
    """The launcher's other branch: bwrap run by a plain user maps uid 1000 to that user.

    This machine's Python lives under /root, so the "instructor" (uid 65534 here) runs the
    launcher and the command with the system Python, and the grader's binds of /root and
    the checkout are left out of the spec.
    """
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:  # pytest's is root-only
        os.chmod(tmp, 0o755)
        _run_as_plain_user(Path(tmp) / "job")


def _run_as_plain_user(workdir: Path) -> None:
    (workdir / "probes").mkdir(parents=True)
    box = sandbox.prepare(workdir, sandbox.Limits())
    box.host_id = None
    with box:
        spec = json.loads((box.control / "spec.json").read_text())
        spec["binds"] = [b for b in spec["binds"] if not b[1].startswith(("/root", str(REPO)))]
        spec.update(copy_in=[], cgroup_procs=[])
        (box.control / "spec.json").write_text(json.dumps(spec))
        for path in [workdir, *workdir.rglob("*")]:
            os.chown(path, 65534, 65534, follow_symlinks=False)
        code = (
            "import os; status = open('/proc/self/status').read();"
            "print(os.getuid(), status.split('CapEff:')[1].split()[0], sorted(os.listdir('/')),"
            " open('/proc/self/uid_map').read().split())"
        )
        proc = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
            + ["/usr/bin/python3", "-I", "-S", str(sandbox.LAUNCHER), *box.wrapper[4:]]
            + ["/usr/bin/python3", "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
    assert proc.returncode == 0, proc.stderr
    uid, cap, root, _ = proc.stdout.split(" ", 3)
    assert (uid, cap) == ("1000", "0000000000000000")
    assert "work" not in root and "root" not in root and "home" not in root


@needs_sandbox
@needs_root
def test_the_socket_folder_is_taken_back_once_the_kernel_listens(tmp_path):
    """Else the kernel could swap a socket for a link to a host socket the grader (root)
    would then connect to."""
    code = """
import os, socket, time
folder = "@SOCKETS@"
listening = []
for port in range(1, 6):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(os.path.join(folder, f"kernel-{port}"))
    s.listen(1)
    listening.append(s)
time.sleep(1.5)
for attempt in (lambda: os.unlink(os.path.join(folder, "kernel-1")),
                lambda: os.symlink("/run/docker.sock", os.path.join(folder, "kernel-9"))):
    try:
        attempt()
        print("allowed")
    except PermissionError:
        print("refused")
"""
    proc, _ = run_inside(tmp_path / "job", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["refused", "refused"]
