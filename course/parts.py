"""Bring a learner's own functions from earlier lesson notebooks into a later one.

Lesson 08 assembles a language model from the parts a learner wrote in lessons 04, 05 and 06. The
grader sees one notebook at a time, so the parts must be *in* the lesson 08 notebook as code.
`copy_parts` reads the learner's earlier notebooks (next to this one in the course folder),
finds each named top-level function, and returns their source, ready to paste into an answer
cell; it can also ask the notebook's front end for a new cell below holding that source (JupyterLab
and the classic Notebook create it; others, such as VS Code or nbconvert, ignore the request, so
the source is printed as well). It names every part that is missing or still unsolved (its body
is still the exercise's stub, `raise NotImplementedError()`), so that a learner knows what to
finish first. A part that uses top-level names of its notebook (a helper function, a constant,
an import such as `import numpy as np`) brings their definitions along; a name that its notebook
does not define at top level is named in a note. Nothing here executes the learner's code.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

__all__ = ["PartsReport", "find_parts", "copy_parts", "LESSON_PARTS"]

# What lesson 08 takes from each earlier lesson, by folder and function name.
LESSON_PARTS: dict[str, list[str]] = {
    "04-multi-head": ["split_heads", "merge_heads", "repeat_kv"],
    "05-positions": ["rope_cos_sin", "rotate_pairs"],
    "06-normalization": ["rms_norm"],
}

# Names lesson 08's setup cell defines: a part that uses them needs nothing copied for them.
PROVIDED = frozenset({"math", "os", "plt", "torch", "nn", "F"})


@dataclass
class PartsReport:
    """The source of each function found, and what could not be used (name -> why)."""

    sources: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    # What the found parts use from their notebooks (name -> source: imports, constants,
    # helper functions), placed before the parts; and notes on names none of them defines.
    helpers: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def code(self) -> str:
        blocks = [s for s in self.helpers.values() if not s.startswith(("import ", "from "))]
        imports = [s for s in self.helpers.values() if s.startswith(("import ", "from "))]
        head = ["\n".join(dict.fromkeys(imports))] if imports else []
        return "\n\n\n".join(head + blocks + list(self.sources.values())) + "\n"

    def summary(self) -> str:
        lines = [f"found: {', '.join(self.sources) or 'nothing'}"]
        if self.helpers:
            lines.append(f"with what they use: {', '.join(self.helpers)}")
        lines += [f"NOT usable: {name}: {why}" for name, why in self.problems.items()]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _notebook(course_dir: Path, lesson: str) -> Path | None:
    folder = course_dir / lesson
    found = sorted(folder.glob("*.ipynb")) if folder.is_dir() else []
    return found[0] if found else None


def _is_stub(node: ast.FunctionDef) -> bool:
    """The exercise's stub: a body that is only `raise NotImplementedError()` (after a
    docstring, `pass` or `...`). A `raise NotImplementedError(...)` among other code is the
    learner's own error for an unsupported case, not an unsolved part."""
    body = [
        stmt
        for stmt in node.body
        if not isinstance(stmt, ast.Pass)
        and not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant))
    ]
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or body[0].exc is None:
        return False
    exc = body[0].exc
    target = exc.func if isinstance(exc, ast.Call) else exc
    return isinstance(target, ast.Name) and target.id == "NotImplementedError"


def _bound_names(node: ast.stmt) -> list[str]:
    """The top-level names a statement of a cell binds (def, class, import, plain assignment)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    if isinstance(node, ast.Import | ast.ImportFrom):
        return [(a.asname or a.name).partition(".")[0] for a in node.names if a.name != "*"]
    targets = node.targets if isinstance(node, ast.Assign) else []
    if isinstance(node, ast.AnnAssign | ast.AugAssign):
        targets = [node.target]
    return [t.id for t in targets if isinstance(t, ast.Name)]


def _free_names(node: ast.AST) -> set[str]:
    """Names a definition reads that it does not bind itself (its globals), builtins left out."""
    loaded, bound = set(), set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            (loaded if isinstance(sub.ctx, ast.Load) else bound).add(sub.id)
        elif isinstance(sub, ast.arg):
            bound.add(sub.arg)
        elif (
            isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and sub is not node
        ):
            bound.add(sub.name)
        elif isinstance(sub, ast.Import | ast.ImportFrom):
            bound.update(_bound_names(sub))
    return loaded - bound - set(dir(builtins))


@dataclass
class _Notebook:
    """The notebook's top-level bindings: name -> (source, the statement), the last one winning
    as when the notebook runs; which functions are still stubs; the cells that did not parse."""

    bindings: dict[str, tuple[str, ast.stmt]] = field(default_factory=dict)
    functions: dict[str, tuple[str, bool]] = field(default_factory=dict)
    broken: list[str] = field(default_factory=list)


def _read(path: Path) -> _Notebook:
    notebook = _Notebook()
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            notebook.broken.append(f"cell {index}")
            continue
        for node in tree.body:
            source = ast.get_source_segment(cell.source, node)
            if isinstance(node, ast.FunctionDef):
                notebook.functions[node.name] = (source, _is_stub(node))
            for name in _bound_names(node):
                notebook.bindings[name] = (source, node)
    return notebook


def _collect_helpers(
    notebook: _Notebook, name: str, parts: set[str], report: PartsReport, path: Path
) -> None:
    """Add to `report.helpers` what the part `name` uses from its notebook, recursively; name in
    `report.notes` what it uses that the notebook does not define at top level."""
    pending = sorted(_free_names(notebook.bindings[name][1]))
    seen = set()
    while pending:
        used = pending.pop(0)
        if used in seen or used in parts or used in PROVIDED:
            continue
        seen.add(used)
        if used not in notebook.bindings:
            report.notes.append(
                f"{name} uses `{used}`, which {path.name} does not define at top level: define "
                "it in this notebook too, or the part fails with a NameError"
            )
            continue
        source, node = notebook.bindings[used]
        if used not in report.helpers:
            report.helpers[used] = source
            if not isinstance(node, ast.Import | ast.ImportFrom):
                pending += sorted(_free_names(node))


def find_parts(
    parts: dict[str, list[str]] | None = None, course_dir: str | Path = ".."
) -> PartsReport:
    """The sources of `parts` ({lesson folder: [function names]}) from the learner's notebooks
    in `course_dir` (the folder that holds 04-multi-head/, 05-positions/...; from a lesson's
    own folder that is ".."). Never raises for a missing notebook or function: it reports it."""
    course_dir = Path(course_dir)
    report = PartsReport()
    for lesson, names in (parts or LESSON_PARTS).items():
        path = _notebook(course_dir, lesson)
        if path is None:
            for name in names:
                report.problems[name] = f"no notebook in {course_dir / lesson}"
            continue
        notebook = _read(path)
        functions, broken = notebook.functions, notebook.broken
        for name in names:
            if name not in functions:
                extra = f" (cells that do not parse: {', '.join(broken)})" if broken else ""
                report.problems[name] = f"not defined in {path}{extra}"
            elif functions[name][1]:
                report.problems[name] = (
                    f"still unsolved in {path} (its body is still `raise NotImplementedError()`)"
                )
            else:
                report.sources[name] = functions[name][0]
        wanted = {n for ns in (parts or LESSON_PARTS).values() for n in ns}
        for name in names:
            if name in report.sources:
                _collect_helpers(notebook, name, wanted, report, path)
    return report


def copy_parts(
    parts: dict[str, list[str]] | None = None,
    course_dir: str | Path = "..",
    new_cell: bool = True,
) -> PartsReport:
    """Print what was found and what was not, and the found functions' code; with `new_cell`,
    also ask the front end for a new cell below holding that code, to run (and keep: the grader
    reads only this notebook). Only some front ends honour that request (JupyterLab, the classic
    Notebook), and IPython cannot tell whether one did, so the message says so."""
    report = find_parts(parts, course_dir)
    print(report.summary())
    if report.sources and new_cell:
        try:
            from IPython import get_ipython

            shell = get_ipython()
        except ImportError:
            shell = None
        if shell is not None:
            shell.set_next_input("# Copied by copy_parts: your own functions.\n" + report.code)
            print(
                "Asked the notebook for a new cell below with these functions: run it and keep "
                "it. JupyterLab and the classic Notebook create it; if none appeared (VS Code, "
                "nbconvert...), paste the code below into a new cell yourself."
            )
    if report.sources:
        print("\n" + report.code)
    return report
