"""Static integrity scan of the learner's cells: findings for the instructor, never penalties.

Each finding names the cell, the line and what was seen. Most have innocent explanations
(a student printing `sys.modules` while debugging), which is why they are reported and
not scored.
"""

from __future__ import annotations

import ast

from IPython.core.inputtransformer2 import TransformerManager

from autograder.results import Finding

LIBRARY_MODULES = {
    "torch",
    "np",
    "numpy",
    "F",
    "nn",
    "math",
    "sympy",
    "sp",
    "checks",
    "course",
    "builtins",
    "IPython",
    "nbgrader",
    "autograder",
    "solutions",
    "unittest",
}
ANSWER_PACKAGES = {"solutions", "autograder", "nbgrader"}
DANGEROUS_MODULES = {
    "ctypes": "ctypes (raw memory access)",
    "subprocess": "subprocesses",
    "socket": "sockets",
    "urllib": "network access",
    "requests": "network access",
    "http": "network access",
    "multiprocessing": "extra processes",
    "signal": "signal handlers",
    "gc": "the garbage collector's object lists",
    "inspect": "frame inspection",
    "importlib": "dynamic imports",
}
DUNDERS = {
    "__eq__",
    "__ne__",
    "__bool__",
    "__array__",
    "__array_ufunc__",
    "__array_function__",
    "__torch_function__",
    "__torch_dispatch__",
    "__float__",
    "__len__",
    "__getattr__",
    "__getattribute__",
    "__instancecheck__",
    "__class__",
    "__lt__",
    "__le__",
    "__gt__",
    "__ge__",
    "__abs__",
    "__sub__",
    "__hash__",
}
CALLS = {
    "os._exit": "exits the kernel (os._exit)",
    "sys.exit": "exits (sys.exit)",
    "exit": "exits (exit)",
    "quit": "exits (quit)",
    "os.kill": "sends signals (os.kill)",
    "os.system": "runs a shell command",
    "os.popen": "runs a shell command",
    "os.fork": "forks the kernel",
    "exec": "executes code built at run time (exec)",
    "eval": "evaluates code built at run time (eval)",
    "__import__": "dynamic import",
    "setattr": "sets attributes dynamically",
    "get_ipython().system": "runs a shell command (!)",
    "get_ipython().set_custom_exc": "replaces the error display",
    "get_ipython().events.register": "hooks into cell execution",
    "get_ipython().run_line_magic": "runs a magic command",
    "get_ipython().run_cell_magic": "runs a cell magic",
}
GRADER_PATH_WORDS = (
    "solutions",
    "autograder",
    "gradebook",
    ".db",
    "probes",
    "results",
    "execution.json",
    "executed.ipynb",
    "submitted",
    "..",
)


# How much each kind of finding matters. "high": an attempt to get around the grader (these
# never gain points: every verdict is decided outside the learner's process; they are reported
# so that an instructor can follow up); "medium": worth a look; "low": usually innocent.
SEVERITY = {
    "tampering with the grader": "high",
    "imports grader code": "high",
    "opens grader files": "high",
    "patches a library": "high",
    "overrides a comparison or conversion": "high",
    "subclasses a tensor type": "high",
    "reaches into library internals": "high",
    "published grader results": "high",
    "uses a risky function": "medium",
    "uses a risky module": "medium",
    "hit a limit": "medium",
    "changed locked cells": "low",
    "writes files": "low",
    "does not parse": "low",
}
# Internals that switch off, bypass or imitate what the grader watches.
INTERNALS = (
    "torch.utils._python_dispatch",
    "torch._C._unset_dispatch_mode",
    "torch._C._DisableTorchDispatch",
    "torch._C.DisableTorchFunction",
    "torch._refs",
    "torch._decomp",
    "torch._prims",
    "torch.library",
    "sys.settrace",
    "sys.setprofile",
    "threading.settrace",
    "threading.setprofile",
    "builtins.__import__",
    "sys.addaudithook",
)


def finding(cell: str, line: int, kind: str, detail: str) -> Finding:
    return Finding(cell, line, kind, detail, SEVERITY.get(kind, "medium"))


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return f"{_dotted(node.func)}()"
    return "?"


class _Scanner(ast.NodeVisitor):
    def __init__(self, cell: str):
        self.cell = cell
        self.findings: list[Finding] = []

    def add(self, node: ast.AST, kind: str, detail: str) -> None:
        self.findings.append(finding(self.cell, getattr(node, "lineno", 0), kind, detail))

    def _check_internals(self, node: ast.AST, name: str) -> None:
        if any(name == i or name.startswith(i + ".") for i in INTERNALS):
            self.add(node, "reaches into library internals", f"uses {name}")

    def _check_module(self, node: ast.AST, name: str) -> None:
        self._check_internals(node, name)
        root = name.split(".")[0]
        if root in ANSWER_PACKAGES:
            self.add(node, "imports grader code", f"imports {name}")
        elif root in DANGEROUS_MODULES:
            self.add(node, "uses a risky module", f"imports {name}: {DANGEROUS_MODULES[root]}")
        elif name.startswith("os") and name not in ("os", "os.path"):
            self.add(node, "uses a risky module", f"imports {name}")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_module(node, alias.name)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        self._check_module(node, module)
        for alias in node.names:
            self._check_internals(node, f"{module}.{alias.name}")
            if module == "os" and alias.name in ("_exit", "system", "popen", "kill", "fork"):
                self.add(node, "uses a risky function", f"from os import {alias.name}")
        self.generic_visit(node)

    def _check_target(self, target: ast.AST, node: ast.AST) -> None:
        if isinstance(target, ast.Attribute):
            owner = _dotted(target.value)
            if owner.split(".")[0] in LIBRARY_MODULES or owner.startswith("sys"):
                self.add(node, "patches a library", f"assigns to {owner}.{target.attr}")
        if isinstance(target, ast.Subscript) and _dotted(target.value) in (
            "sys.modules",
            "builtins.__dict__",
        ):
            self.add(node, "patches a library", f"assigns into {_dotted(target.value)}")

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._check_target(target, node)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_target(node.target, node)
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for item in node.body:
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name in DUNDERS:
                self.add(
                    item,
                    "overrides a comparison or conversion",
                    f"class {node.name} defines {item.name}",
                )
        bases = {_dotted(b) for b in node.bases}
        if any(b.endswith(("Tensor", "ndarray")) for b in bases):
            self.add(node, "subclasses a tensor type", f"class {node.name}({', '.join(bases)})")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._check_internals(node, _dotted(node))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = _dotted(node.func)
        if name in CALLS:
            self.add(node, "uses a risky function", CALLS[name])
        if name in ("setattr", "delattr") and node.args:
            owner = _dotted(node.args[0])
            if owner.split(".")[0] in LIBRARY_MODULES:
                self.add(node, "patches a library", f"{name}({owner}, ...)")
        if name in ("open", "io.open", "pathlib.Path", "Path", "np.load", "torch.load"):
            self._check_open(node, name)
        self.generic_visit(node)

    def _check_open(self, node: ast.Call, name: str) -> None:
        texts = [
            a.value
            for a in ast.walk(node)
            if isinstance(a, ast.Constant) and isinstance(a.value, str)
        ]
        if any(word in t for t in texts for word in GRADER_PATH_WORDS):
            self.add(node, "opens grader files", f"{name}({', '.join(map(repr, texts))[:80]})")
        elif name in ("open", "io.open") and any(t and t[0] in "wax" for t in texts[1:]):
            self.add(node, "writes files", f"{name}(... {texts[1]!r})")


def scan_source(cell: str, source: str) -> list[Finding]:
    try:
        python = TransformerManager().transform_cell(source)
        tree = ast.parse(python)
    except (SyntaxError, ValueError) as exc:
        return [finding(cell, getattr(exc, "lineno", 0) or 0, "does not parse", str(exc)[:120])]
    scanner = _Scanner(cell)
    scanner.visit(tree)
    return scanner.findings


def scan(sources: list[tuple[str, str]]) -> list[Finding]:
    """Findings for every (cell label, source) pair the learner wrote (one per kind and line)."""
    found, seen = [], set()
    for cell, source in sources:
        for f in scan_source(cell, source):
            key = (f.cell, f.line, f.kind)
            if key not in seen:
                seen.add(key)
                found.append(f)
    return found


def structural_findings(notes: list[str]) -> list[Finding]:
    """Locked cells or grade ids the submission changed, deleted or duplicated (all restored)."""
    return [
        finding("notebook", 0, "changed locked cells", note)
        for note in notes
        if "locked cell" in note or "duplicate" in note or "was missing" in note
    ]


def runtime_findings(execution: dict) -> list[Finding]:
    """Limits the run hit, and grader results published from a learner's own cell."""
    found = []
    for cell in execution.get("timeouts", []):
        found.append(finding(str(cell), 0, "hit a limit", "ran past the per-cell time limit"))
    if execution.get("restarts"):
        found.append(finding("notebook", 0, "hit a limit", "a cell ignored the grader's interrupt"))
    if execution.get("timed_out"):
        found.append(finding("notebook", 0, "hit a limit", "ran past the notebook's time limit"))
    if execution.get("limit_hit"):
        found.append(
            finding("notebook", 0, "hit a limit", limit_text(execution["limit_hit"])[:200])
        )
    elif execution.get("kernel_died"):
        found.append(finding("notebook", 0, "hit a limit", "the kernel stopped (exit or crash)"))
    for cell in execution.get("truncated", []):
        found.append(finding(str(cell), 0, "hit a limit", "output truncated (too much output)"))
    for cell in execution.get("published_results", []):
        found.append(
            finding(
                str(cell),
                0,
                "published grader results",
                "a learner's cell sent messages in the format of the grader's results",
            )
        )
    return found


def verdict_findings(cells: dict) -> list[Finding]:
    """A finding for every hidden verdict in which the grader saw tampering."""
    found = []
    for cell in cells.values():
        for exercise in cell.exercises:
            reasons = sorted({p.tampering for p in exercise.probes if p.tampering})
            for reason in reasons:
                found.append(
                    finding(exercise.exercise, 0, "tampering with the grader", reason[:300])
                )
    return found


def limit_text(hit) -> str:
    """The message of a `limit_hit` entry (a dict from `autograder.limits`)."""
    return hit.get("message", str(hit)) if isinstance(hit, dict) else str(hit)
