"""Rebuild a submission on the lesson's source notebook before it is executed.

The source (solution) notebook is the template: every locked cell (prose, setup, tests)
comes from it, whatever the submission did to it; only the answer cells (`solution:
true`) and cells the learner added come from the submission. So an edited, deleted or
duplicated locked cell or grade id changes nothing, and is reported.
"""

from __future__ import annotations

import ast
import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

MAX_NOTEBOOK_BYTES = 20 * 2**20
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)


class UnreadableNotebook(ValueError):
    """The submission is not a notebook we can read; the message says why."""


@dataclass
class Template:
    lesson: str
    name: str
    nb: nbformat.NotebookNode
    points: dict[str, float] = field(default_factory=dict)  # grade cell -> points
    judged: dict[str, list[str]] = field(default_factory=dict)  # grade cell -> exercise ids

    @property
    def max_score(self) -> float:
        return sum(self.points.values())

    def exercise_ids(self) -> list[str]:
        return [e for ids in self.judged.values() for e in ids]


def _meta(cell) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def judged_exercises(source: str) -> list[str]:
    """Exercise ids of the `judge("id", fn)` calls in a test cell's hidden section."""
    ids = []
    for block in HIDDEN.findall(source):
        for node in ast.walk(ast.parse(block)):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "judge"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                ids.append(node.args[0].value)
    return ids


def load_template(path: Path) -> Template:
    nb = nbformat.read(path, as_version=4)
    template = Template(lesson=path.parent.name, name=path.stem, nb=nb)
    for cell in nb.cells:
        meta = _meta(cell)
        if meta.get("grade") and cell.cell_type == "code":
            template.points[meta["grade_id"]] = float(meta.get("points", 0))
            template.judged[meta["grade_id"]] = judged_exercises(cell.source)
    return template


def read_submission(path: Path) -> nbformat.NotebookNode:
    if not path.exists():
        raise UnreadableNotebook("no notebook was submitted")
    size = path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        raise UnreadableNotebook(f"the notebook is {size / 2**20:.0f} MiB (limit 20 MiB)")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise UnreadableNotebook("the file is not UTF-8 text (not a notebook)") from None
    except json.JSONDecodeError as exc:
        raise UnreadableNotebook(f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise UnreadableNotebook("valid JSON but not a notebook (no list of cells)")
    try:
        return nbformat.from_dict(nbformat.convert(nbformat.from_dict(data), 4))
    except Exception as exc:  # noqa: BLE001 - nbformat raises many kinds for odd files
        raise UnreadableNotebook(f"not a readable notebook: {exc}") from None


def _learner_cell(cell) -> nbformat.NotebookNode:
    """A cell the learner added: kept as code/markdown, stripped of any grading metadata."""
    kind = cell.get("cell_type")
    source = cell.get("source", "")
    source = "".join(source) if isinstance(source, list) else str(source)
    if kind == "markdown":
        return nbformat.v4.new_markdown_cell(source)
    return nbformat.v4.new_code_cell(source)


def merge(
    template: Template, submission: nbformat.NotebookNode
) -> tuple[nbformat.NotebookNode, list[str]]:
    """The notebook to execute, and notes on what was restored or ignored."""
    notes: list[str] = []
    known = {_meta(c).get("grade_id"): c for c in template.nb.cells if _meta(c).get("grade_id")}
    answers: dict[str, str] = {}
    extras_after: dict[str | None, list] = {}
    seen: set[str] = set()
    anchor: str | None = None
    for cell in submission.cells:
        gid = _meta(cell).get("grade_id") if isinstance(cell, dict) else None
        if gid in known:
            if gid in seen:
                notes.append(f"duplicate cell '{gid}' ignored")
                continue
            seen.add(gid)
            anchor = gid
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else str(source)
            if _meta(known[gid]).get("solution") and not _meta(known[gid]).get("grade"):
                answers[gid] = source
            elif source.strip() != known[gid].source.strip() and not _meta(known[gid]).get("grade"):
                notes.append(f"locked cell '{gid}' was edited; the original was restored")
        elif isinstance(cell, dict) and cell.get("cell_type") in ("code", "markdown"):
            extras_after.setdefault(anchor, []).append(_learner_cell(cell))
    for gid, cell in known.items():
        if gid not in seen and (_meta(cell).get("locked") or _meta(cell).get("grade")):
            notes.append(f"cell '{gid}' was missing; the original was restored")
    cells = list(extras_after.get(None, []))
    for cell in template.nb.cells:
        gid = _meta(cell).get("grade_id")
        new = copy.deepcopy(cell)
        if gid in answers:
            new.source = answers[gid]
        elif _meta(cell).get("solution") and not _meta(cell).get("grade"):
            new.source = "# (no answer submitted)\nraise NotImplementedError()"
            notes.append(f"answer cell '{gid}' was missing")
        if new.cell_type == "code":
            new.outputs, new.execution_count = [], None
        cells.extend(_split_hidden(new) if _meta(cell).get("grade") else [new])
        cells.extend(extras_after.get(gid, []))
    merged = nbformat.v4.new_notebook(cells=cells, metadata=copy.deepcopy(template.nb.metadata))
    return merged, notes


def _split_hidden(cell) -> list:
    """A test cell as two cells: its visible checks, then its hidden tests on their own.

    The hidden tests then run (and record) even when a visible check fails, so a verdict
    depends on the hidden checks alone.
    """
    hidden = HIDDEN.findall(cell.source)
    if not hidden:
        return [cell]
    visible = copy.deepcopy(cell)
    visible.source = HIDDEN.sub("", cell.source).rstrip() or "pass"
    tests = nbformat.v4.new_code_cell("".join(hidden))
    tests.metadata = {"autograder": {"hidden_tests_of": _meta(cell)["grade_id"]}}
    return [visible, tests]


def learner_sources(template: Template, submission: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(cell label, source) of every code cell whose content came from the learner."""
    locked = {
        _meta(c).get("grade_id")
        for c in template.nb.cells
        if not (_meta(c).get("solution") and not _meta(c).get("grade"))
    }
    out = []
    for i, cell in enumerate(submission.cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        gid = _meta(cell).get("grade_id")
        if gid in locked:
            continue
        source = cell.get("source", "")
        out.append(
            (gid or f"cell {i + 1}", "".join(source) if isinstance(source, list) else str(source))
        )
    return out
