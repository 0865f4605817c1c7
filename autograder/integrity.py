"""Static integrity scan of the learner's cells: findings for the instructor, never penalties.

Each finding names the cell, the line and what was seen. Most have innocent explanations
(a student printing `sys.modules` while debugging), which is why they are reported and
not scored.
"""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass

from IPython.core.inputtransformer2 import TransformerManager

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


@dataclass
class Finding:
    cell: str
    line: int
    kind: str
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


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
        self.findings.append(Finding(self.cell, getattr(node, "lineno", 0), kind, detail))

    def _check_module(self, node: ast.AST, name: str) -> None:
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
        return [Finding(cell, getattr(exc, "lineno", 0) or 0, "does not parse", str(exc)[:120])]
    scanner = _Scanner(cell)
    scanner.visit(tree)
    return scanner.findings


def scan(sources: list[tuple[str, str]]) -> list[Finding]:
    """Findings for every (cell label, source) pair the learner wrote."""
    return [f for cell, source in sources for f in scan_source(cell, source)]


def structural_findings(notes: list[str]) -> list[Finding]:
    """Locked cells or grade ids the submission changed, deleted or duplicated (all restored)."""
    return [
        Finding("notebook", 0, "changed locked cells", note)
        for note in notes
        if "locked cell" in note or "duplicate" in note or "was missing" in note
    ]


def runtime_findings(execution: dict) -> list[Finding]:
    """Limits the run hit: hangs, a dead kernel, memory exhaustion, flooded output."""
    found = []
    for cell in execution.get("timeouts", []):
        found.append(Finding(str(cell), 0, "hit a limit", "ran past the per-cell time limit"))
    if execution.get("timed_out"):
        found.append(Finding("notebook", 0, "hit a limit", "ran past the notebook's time limit"))
    if execution.get("kernel_died"):
        found.append(
            Finding("notebook", 0, "hit a limit", "the kernel died (exit, crash or memory)")
        )
    for cell in execution.get("truncated", []):
        found.append(Finding(str(cell), 0, "hit a limit", "output truncated (too much output)"))
    for error in execution.get("errors", []):
        if "MemoryError" in error:
            found.append(Finding(error.split(":")[0], 0, "hit a limit", "ran out of memory"))
    return found
