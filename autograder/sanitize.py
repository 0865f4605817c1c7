"""Rebuild a submission on the lesson's source notebook before it is executed.

The source (solution) notebook is the template: every locked cell (prose, setup, tests) comes
from it, whatever the submission did to it; only the answer cells (`solution: true`) and cells
the learner added come from the submission. So an edited, deleted or duplicated locked cell or
grade id changes nothing, and is reported. Answer cells that share a grade id (JupyterLab's
"Split Cell" and copy-paste both copy the metadata) are all kept, in notebook order, because
that is what the learner's kernel ran.

A notebook is read defensively: any JSON that is not a notebook is refused with the reason;
nbformat 3 (cells under `worksheets`) is converted; saved outputs are discarded before the
size limit applies (the grader never looks at them), with a larger cap on the raw file.
"""

from __future__ import annotations

import ast
import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder.execute import PREAMBLE

MAX_NOTEBOOK_BYTES = 20 * 2**20  # after saved outputs are stripped
MAX_RAW_BYTES = 200 * 2**20  # the file as submitted, outputs included
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
    metadata = cell.get("metadata") if isinstance(cell, dict) else None
    meta = metadata.get("nbgrader", {}) if isinstance(metadata, dict) else {}
    return meta if isinstance(meta, dict) else {}


def _grade_id(cell) -> str | None:
    gid = _meta(cell).get("grade_id")
    return gid if isinstance(gid, str) else None


def _source(cell) -> str:
    source = cell.get("source", "") if isinstance(cell, dict) else ""
    if isinstance(source, list):
        return "".join(s for s in source if isinstance(s, str))
    return source if isinstance(source, str) else ""


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


def _strip_outputs(data: dict) -> None:
    cells = data.get("cells")
    if cells is None and isinstance(data.get("worksheets"), list):
        cells = [
            c for ws in data["worksheets"] if isinstance(ws, dict) for c in ws.get("cells", [])
        ]
    for cell in cells or []:
        if isinstance(cell, dict):
            cell.pop("attachments", None)
            if cell.get("cell_type") == "code":
                cell["outputs"] = []  # emptied, not removed: nbformat 3's converter needs the key
            else:
                cell.pop("outputs", None)


def read_submission(path: Path) -> nbformat.NotebookNode:
    """The submitted notebook (nbformat 4, outputs discarded); UnreadableNotebook says why not."""
    if not path.exists():
        raise UnreadableNotebook("no notebook was submitted")
    if not path.is_file():
        raise UnreadableNotebook(f"{path.name} is not a file (a folder or a special file)")
    size = path.stat().st_size
    if size > MAX_RAW_BYTES:
        raise UnreadableNotebook(
            f"the file is {size / 2**20:.0f} MiB (limit {MAX_RAW_BYTES >> 20} MiB)"
        )
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise UnreadableNotebook("the file is not UTF-8 text (not a notebook)") from None
    except json.JSONDecodeError as exc:
        raise UnreadableNotebook(f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise UnreadableNotebook("the JSON is nested too deeply to be a notebook") from None
    if not isinstance(data, dict):
        raise UnreadableNotebook("valid JSON but not a notebook (not an object)")
    if not isinstance(data.get("cells"), list) and not isinstance(data.get("worksheets"), list):
        raise UnreadableNotebook("valid JSON but not a notebook (no list of cells)")
    _strip_outputs(data)
    stripped = len(json.dumps(data))
    if stripped > MAX_NOTEBOOK_BYTES:
        raise UnreadableNotebook(
            f"the notebook's code and text alone are {stripped / 2**20:.0f} MiB "
            f"(limit {MAX_NOTEBOOK_BYTES >> 20} MiB)"
        )
    return _as_v4(data)


def _as_v4(data: dict) -> nbformat.NotebookNode:
    if not isinstance(data.get("nbformat"), int):
        data["nbformat"] = 3 if "worksheets" in data else 4
        data.setdefault("nbformat_minor", 0)
    data.setdefault("metadata", {})
    if not isinstance(data["metadata"], dict):
        data["metadata"] = {}
    try:
        nb = nbformat.convert(nbformat.from_dict(data), 4)
    except Exception as exc:  # noqa: BLE001 - nbformat raises many kinds for odd files
        raise UnreadableNotebook(f"not a readable notebook: {str(exc)[:200]}") from None
    cells = [c for c in nb.get("cells", []) if isinstance(c, dict)]
    for cell in cells:
        if not isinstance(cell.get("metadata"), dict):
            cell["metadata"] = {}
        cell["source"] = _source(cell)
    nb["cells"] = cells
    return nbformat.from_dict(nb)


def _learner_cell(cell) -> nbformat.NotebookNode:
    """A cell the learner added: kept as code/markdown, stripped of any grading metadata."""
    if cell.get("cell_type") == "markdown":
        return nbformat.v4.new_markdown_cell(_source(cell))
    return nbformat.v4.new_code_cell(_source(cell))


def _same_text(a: str, b: str) -> bool:
    """Equal up to whitespace (front ends such as Colab re-flow trailing spaces and newlines)."""
    return a.split() == b.split()


def _is_answer(template_cell) -> bool:
    meta = _meta(template_cell)
    return bool(meta.get("solution")) and not meta.get("grade")


def merge(
    template: Template, submission: nbformat.NotebookNode
) -> tuple[nbformat.NotebookNode, list[str]]:
    """The notebook to execute, and notes on what was restored, kept or ignored."""
    notes: list[str] = []
    known = {_grade_id(c): c for c in template.nb.cells if _grade_id(c)}
    answers: dict[str, str] = {}
    extras_after: dict[str | None, list] = {}
    seen: set[str] = set()
    anchor: str | None = None
    for cell in submission.cells:
        gid = _grade_id(cell)
        if gid in known and gid not in seen:
            seen.add(gid)
            anchor = gid
            if _is_answer(known[gid]):
                answers[gid] = _source(cell)
            elif not _meta(known[gid]).get("grade") and not _same_text(
                _source(cell), known[gid].source
            ):
                notes.append(f"locked cell '{gid}' was edited; the original was restored")
        elif gid in known and _is_answer(known[gid]):
            # A split or pasted answer cell: the learner's kernel ran it too, where it stands.
            extras_after.setdefault(anchor, []).append(_learner_cell(cell))
            notes.append(f"answer cell '{gid}' appears more than once; every copy was run in order")
        elif gid in known:
            notes.append(f"duplicate cell '{gid}' ignored")
        elif cell.get("cell_type") in ("code", "markdown"):
            extras_after.setdefault(anchor, []).append(_learner_cell(cell))
    for gid, cell in known.items():
        if gid not in seen and (_meta(cell).get("locked") or _meta(cell).get("grade")):
            notes.append(f"cell '{gid}' was missing; the original was restored")
    preamble = nbformat.v4.new_code_cell(PREAMBLE)
    preamble.metadata = {"autograder": {"grader_cell": True}}
    cells = [preamble, *extras_after.get(None, [])]
    for cell in template.nb.cells:
        gid = _grade_id(cell)
        new = copy.deepcopy(cell)
        if gid in answers:
            new.source = answers[gid]
        elif _is_answer(cell):
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
    locked = {_grade_id(c) for c in template.nb.cells if not _is_answer(c)}
    out = []
    for i, cell in enumerate(submission.cells):
        if cell.get("cell_type") != "code":
            continue
        gid = _grade_id(cell)
        if gid in locked and gid is not None:
            continue
        out.append((gid or f"cell {i + 1}", _source(cell)))
    return out
