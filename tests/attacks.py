"""A hostile and broken class for lesson 01, as learner cells: each entry is what a student typed.

Used by tests/test_grader.py, which grades them all in one run (as root when the suite runs as
root, as CI does) and checks that no attack gains a point, every attack is reported, no
submission is lost and nothing outside the grading root changes. Kinds follow the grader-trust
issue: (1) verdicts decided inside the kernel, (2) files the kernel leaves in its job folder,
(3) root inside the sandbox, (4) what the sandbox shows, (5) resources per submission,
(6) malformed input, (7) feedback and records. Real-world submissions follow.
"""

from __future__ import annotations

# A softmax that gives the right values by calling the built-in the exercise forbids: every
# kind-1 attack pairs it with a way around the grader's watch.
BUILTIN = "torch.softmax(x, dim)"

DISABLE_MODES = f"""
from torch.utils._python_dispatch import _disable_current_modes
def softmax(x, dim=-1):
    with _disable_current_modes():
        return {BUILTIN} * 1.0
"""

DISABLE_DISPATCH = f"""
def softmax(x, dim=-1):
    with torch._C._DisableTorchDispatch():
        out = {BUILTIN}
    return out + 0.0
"""

THREAD_ESCAPE = f"""
import threading
def softmax(x, dim=-1):
    box = []
    t = threading.Thread(target=lambda: box.append({BUILTIN}))
    t.start(); t.join()
    return box[0]
"""

BAKED_SCALARS = f"""
from torch.utils._python_dispatch import _disable_current_modes
def softmax(x, dim=-1):
    with _disable_current_modes():
        values = {BUILTIN}.tolist()
    out = torch.zeros_like(x)
    flat = out.view(-1)
    import itertools
    def walk(v):
        if isinstance(v, list):
            for item in v:
                yield from walk(item)
        else:
            yield v
    for i, v in enumerate(walk(values)):
        flat[i] = v
    return out
"""

SETTRACE = f"""
import sys
def _rewrite(frame, event, arg):
    if event == "call" and frame.f_code.co_name == "run_probes":
        frame.f_locals["payload"]["traced"] = False
        frame.f_locals["payload"]["forbidden"] = {{}}
    return None
sys.settrace(_rewrite)
import threading; threading.settrace(_rewrite)
def softmax(x, dim=-1):
    return {BUILTIN}
"""

SETPROFILE = f"""
import sys
def _rewrite(frame, event, arg):
    if event == "call" and frame.f_code.co_name == "call_function":
        watch = frame.f_locals.get("watch")
        if watch is not None:
            watch.forbidden = {{}}
            watch.recorder = None
sys.setprofile(_rewrite)
def softmax(x, dim=-1):
    return {BUILTIN}
"""

IMPORT_HOOK = f"""
import builtins, types, json
_real_import = builtins.__import__
def _fake_judge_module():
    from IPython.display import publish_display_data
    from course.compare import encode, to_plain
    from course.wire import load_value
    import autograder.judge as real
    fake = types.ModuleType("autograder.judge")
    def judge(exercise_id, fn, seed=None):
        folder = __import__("os").environ["AUTOGRADER_RECORD_DIR"]
        stem = exercise_id.replace("/", "__")
        payload = json.load(open(f"{{folder}}/probes/{{stem}}.json"))
        results = []
        for p in payload["probes"]:
            args = load_value(p["args"])
            try:
                results.append({{"ok": encode(to_plain(fn(*args, **load_value(p["kwargs"]))))}})
            except Exception as exc:
                results.append({{"error": str(exc)}})
        publish_display_data({{real.RESULTS_MIME: {{"exercise": exercise_id, "results": results}}}})
    fake.judge = judge
    return fake
_fake = None
def _hook(name, globals=None, locals=None, fromlist=(), level=0):
    global _fake
    if name == "autograder.judge" and fromlist:
        if _fake is None:
            _fake = _fake_judge_module()
        return _fake
    return _real_import(name, globals, locals, fromlist, level)
builtins.__import__ = _hook
def softmax(x, dim=-1):
    return {BUILTIN}
"""

PATCH_RECORDER = f"""
import course.trace as _t
_orig = _t.Recorder.result
def _clean(self):
    out = _orig(self)
    out["ops"] = [op for op in out["ops"] if "softmax" not in op["op"]]
    return out
_t.Recorder.result = _clean
def softmax(x, dim=-1):
    return {BUILTIN}
"""

# Results in the grader's format, published from the learner's own cells (a cell added after the
# last test, and a thread that publishes while the hidden tests run).
PUBLISH_LATE = """
from IPython.display import publish_display_data
import autograder.judge as j
for ex in ["01-softmax/softmax-basic", "01-softmax/softmax-stable"]:
    publish_display_data({j.RESULTS_MIME: {"exercise": ex, "results": []}})
"""

THREAD_PUBLISHER = f"""
import threading, time
from IPython.display import publish_display_data
import autograder.judge as _j
def _spam():
    for _ in range(400):
        publish_display_data({{_j.RESULTS_MIME: {{"exercise": "01-softmax/softmax-basic", "results": []}}}})
        time.sleep(0.05)
threading.Thread(target=_spam, daemon=True).start()
def softmax(x, dim=-1):
    return {BUILTIN}
"""

RESULTS_BOMB = """
from IPython.display import publish_display_data
import autograder.judge as _j
_sent = []
def softmax(x, dim=-1):
    if not _sent:
        _sent.append(1)
        huge = {"dtype": "float32", "shape": [1024, 1024, 768], "b64": "AAAA"}
        publish_display_data({_j.RESULTS_MIME: {"exercise": "01-softmax/softmax-basic",
                                                "results": [{"ok": huge}] * 6}})
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)
"""

# Kind 2: what the kernel leaves in its folders.
LINKS_AND_PIPES = """
import os, pathlib
for here in [pathlib.Path.cwd(), pathlib.Path.home(), pathlib.Path(os.environ.get("AUTOGRADER_RECORD_DIR", "."))]:
    for name, target in [("executed.ipynb", "/var/tmp/attack-target"), ("results", "/var/tmp"),
                         ("kernel.log", "{checks}"), ("gradebook.db", "{gradebook}")]:
        try:
            os.symlink(target, here / name)
        except OSError:
            pass
    try:
        os.mkfifo(here / "pipe.ipynb")
    except OSError:
        pass
"""

BIG_FILE = """
with open("big.bin", "wb") as f:
    for _ in range(400):
        f.write(b"x" * 2**20)
"""

# Kinds 3 and 4: root in the sandbox, what it shows.
ROOT_TRICKS = """
import os, subprocess, glob
tried = {{}}
for cmd in (["umount", "-l", "{solutions}"], ["mount", "-o", "remount,rw", "/"]):
    try:
        tried[cmd[0]] = subprocess.run(cmd, capture_output=True).returncode
    except Exception as exc:
        tried[cmd[0]] = repr(exc)
found = glob.glob("/**/kernels/softmax.py", recursive=True)
for path in ["{solutions}/kernels/softmax.py", "{other}/solutions/kernels/softmax.py", "/etc/shadow", "/root/.bashrc"]:
    try:
        open(path).read(); tried[path] = "read"
    except Exception as exc:
        tried[path] = type(exc).__name__
for path in ["{repo}/planted.txt", "/var/tmp/planted.txt", "{root}/results/99/planted.json"]:
    try:
        open(path, "w").write("x"); tried[path] = "written"
    except Exception as exc:
        tried[path] = type(exc).__name__
import sys
sys.path.insert(0, "{other}")
try:
    from solutions.kernels.softmax import softmax
except Exception:
    pass
"""

ENV_LEAK = """
import os, warnings
secret = os.environ.get("{secret_name}", "absent")
warnings.warn("the environment says " + secret + " " + repr(sorted(os.environ))[:2000])
try:
    warnings.warn("pid 1 is " + open("/proc/1/cmdline").read().replace("\\0", " "))
except OSError:
    pass
"""

UNIX_SOCKET = """
import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect("{socket_path}")
    s.sendall(b"stolen")
    reached = True
except OSError:
    reached = False
"""

NETWORK = """
import socket
for target in [("1.1.1.1", 53), ("127.0.0.1", 22)]:
    try:
        socket.create_connection(target, timeout=1)
    except OSError:
        pass
"""

# Kind 5: resources of a whole submission.
FORK_MEMORY = """
import os, time
children = []
for _ in range(12):
    pid = os.fork()
    if pid == 0:
        block = bytearray(512 * 2**20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(30)
        os._exit(0)
    children.append(pid)
time.sleep(20)
"""

FORK_BOMB = """
import os, time
for _ in range(2000):
    try:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
    except OSError:
        break
"""

TMP_FILL = """
with open("/tmp/fill.bin", "wb") as f:
    for _ in range(5 * 1024):
        f.write(b"x" * 2**20)
"""

MEMORY_BOMB = "big = bytearray(64 * 2**30)"
FLOOD = "for _ in range(20000):\n    print('x' * 200)"
EXIT = "import os\nos._exit(1)"

# Kind 7 and real-world: hung cells, input(), the last cell.
SWALLOWING_LOOP = """
import time
while True:
    try:
        time.sleep(1)
    except:
        pass
"""
INPUT_IN_ANSWER = """
name = input("your name? ")
def softmax(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)
"""
LAST_CELL = 'print("the learner\'s last cell ran")'
WARNINGS = """
import warnings
def softmax(x, dim=-1):
    warnings.warn("a harmless library deprecation", DeprecationWarning, stacklevel=1)
    import sys; print("noise on stderr", file=sys.stderr)
    compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    xc = x.to(compute)
    m = xc.detach().amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(xc - m)
    return (e / e.sum(dim=dim, keepdim=True)).to(x.dtype)
"""
LIAR = """
class Liar(torch.Tensor):
    def __eq__(self, other): return True
    def __bool__(self): return True
def softmax(x, dim=-1):
    return torch.zeros_like(x).as_subclass(Liar)
"""
NAIVE = """
def softmax(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)
"""
NAIVE_LOGSUMEXP = """
def logsumexp(x, dim=-1):
    return torch.log(torch.exp(x).sum(dim=dim))
"""
