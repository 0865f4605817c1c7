"""Bring a learner's own functions from earlier lesson notebooks into a later one.

Lesson 08 assembles a language model from the parts a learner wrote in lessons 04, 05 and 06. The
grader sees one notebook at a time, so the parts must be *in* the lesson 08 notebook as code.
`copy_parts` reads the learner's earlier notebooks (next to this one in the course folder),
finds each named top-level function, and returns their source, ready to paste into an answer
cell; it can also ask the notebook's front end for a new cell below holding that source (JupyterLab
and the classic Notebook create it; others, such as VS Code or nbconvert, ignore the request, so
the source is printed as well). It names every part that
is missing or still unsolved (its body still raises NotImplementedError), so that a learner
knows what to finish first. Nothing here executes the learner's code.
"""

from __future__ import annotations

import ast
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


@dataclass
class PartsReport:
    """The source of each function found, and what could not be used (name -> why)."""

    sources: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def code(self) -> str:
        return "\n\n\n".join(self.sources.values()) + "\n"

    def summary(self) -> str:
        lines = [f"found: {', '.join(self.sources) or 'nothing'}"]
        lines += [f"NOT usable: {name}: {why}" for name, why in self.problems.items()]
        return "\n".join(lines)


def _notebook(course_dir: Path, lesson: str) -> Path | None:
    folder = course_dir / lesson
    found = sorted(folder.glob("*.ipynb")) if folder.is_dir() else []
    return found[0] if found else None


def _raises_not_implemented(node: ast.FunctionDef) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Raise) and sub.exc is not None:
            target = sub.exc.func if isinstance(sub.exc, ast.Call) else sub.exc
            if isinstance(target, ast.Name) and target.id == "NotImplementedError":
                return True
    return False


def _functions(path: Path) -> tuple[dict[str, tuple[str, bool]], list[str]]:
    """name -> (source, unsolved) of every top-level def in the notebook's code cells (the
    last definition wins, as when the notebook runs), and the cells that did not parse."""
    found, broken = {}, []
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            broken.append(f"cell {index}")
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                source = ast.get_source_segment(cell.source, node)
                found[node.name] = (source, _raises_not_implemented(node))
    return found, broken


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
        functions, broken = _functions(path)
        for name in names:
            if name not in functions:
                extra = f" (cells that do not parse: {', '.join(broken)})" if broken else ""
                report.problems[name] = f"not defined in {path}{extra}"
            elif functions[name][1]:
                report.problems[name] = f"still unsolved in {path} (raises NotImplementedError)"
            else:
                report.sources[name] = functions[name][0]
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
