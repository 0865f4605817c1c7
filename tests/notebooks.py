"""Helpers to make submissions: the solution, the blank release, or either with cells replaced."""

from __future__ import annotations

from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent


def load(kind: str, lesson: str, name: str) -> nbformat.NotebookNode:
    return nbformat.read(REPO / kind / lesson / f"{name}.ipynb", as_version=4)


def with_cell(nb: nbformat.NotebookNode, grade_id: str, source: str) -> nbformat.NotebookNode:
    """A copy of `nb` whose cell `grade_id` holds `source` (what a learner typed there)."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id:
            cell.source = source.strip("\n")
            return nb
    raise KeyError(grade_id)


def save(nb: nbformat.NotebookNode, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path
