"""course.parts: a learner's earlier functions found by name, and what is missing or unsolved
named, without running any of it."""

from __future__ import annotations

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from course.parts import LESSON_PARTS, copy_parts, find_parts
from tests.notebooks import REPO


def write(folder, *sources):
    folder.mkdir(parents=True)
    nbformat.write(new_notebook(cells=[new_code_cell(s) for s in sources]), folder / "x.ipynb")


def test_the_solution_notebooks_hold_every_part_lesson_08_needs():
    report = find_parts(LESSON_PARTS, REPO / "solutions")
    assert not report.problems
    assert list(report.sources) == [n for names in LESSON_PARTS.values() for n in names]
    namespace = {}
    exec("import torch\n" + report.code, namespace)  # noqa: S102 - the course's own solutions
    assert callable(namespace["rotate_pairs"])


def test_missing_unsolved_and_broken_parts_are_named(tmp_path, capsys):
    write(
        tmp_path / "04-multi-head",
        "def split_heads(x, n_heads):\n    return x\n",
        "def merge_heads(x):\n    raise NotImplementedError()\n",
        "def repeat_kv(x, n_rep:\n",  # a syntax error: the cell is named
        "# the last definition wins\ndef split_heads(x, n_heads):\n    return x + 0\n",
    )
    report = copy_parts(course_dir=tmp_path, new_cell=False)
    assert report.sources == {"split_heads": "def split_heads(x, n_heads):\n    return x + 0"}
    assert "still unsolved" in report.problems["merge_heads"]
    assert (
        "not defined" in report.problems["repeat_kv"] and "cell 2" in report.problems["repeat_kv"]
    )
    assert "no notebook" in report.problems["rope_cos_sin"]
    out = capsys.readouterr().out
    assert "NOT usable: merge_heads" in out and "def split_heads" in out
