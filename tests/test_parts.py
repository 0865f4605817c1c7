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


def test_only_the_stub_body_counts_as_unsolved(tmp_path):
    write(
        tmp_path / "05-positions",
        'def rope_cos_sin(positions, head_dim):\n    """Doc."""\n    # YOUR CODE HERE\n'
        "    raise NotImplementedError()\n",
        "def rotate_pairs(x, cos, sin, layout='interleaved'):\n"
        "    if layout != 'interleaved':\n        raise NotImplementedError(layout)\n"
        "    return x\n",
    )
    report = find_parts({"05-positions": ["rope_cos_sin", "rotate_pairs"]}, tmp_path)
    assert "still unsolved" in report.problems["rope_cos_sin"]
    assert "rotate_pairs" in report.sources and "rotate_pairs" not in report.problems


def test_what_a_part_uses_from_its_notebook_comes_along(tmp_path):
    write(
        tmp_path / "05-positions",
        "import numpy as np\nimport torch\nTHETA = 10000.0\n",
        "def _angles(positions, head_dim, theta):\n"
        "    return positions[..., None] * np.float64(theta) ** (-1.0 / head_dim)\n",
        "def rope_cos_sin(positions, head_dim, theta=THETA):\n"
        "    angles = _angles(positions, head_dim, theta)\n    return angles.cos(), angles.sin()\n",
        "def rotate_pairs(x, cos, sin):\n    return x * SCALE\n",
    )
    report = find_parts({"05-positions": ["rope_cos_sin", "rotate_pairs"]}, tmp_path)
    # torch is imported by lesson 08's setup cell; numpy, the constant and the helper are not.
    assert list(report.helpers) == ["THETA", "_angles", "np"]
    assert report.code.startswith("import numpy as np\n")
    assert report.notes == [
        "rotate_pairs uses `SCALE`, which x.ipynb does not define at top level: define it in "
        "this notebook too, or the part fails with a NameError"
    ]
    namespace = {}
    exec("import torch\nSCALE = 2\n" + report.code, namespace)  # noqa: S102 - the test's own code
    cos, _ = namespace["rope_cos_sin"](namespace["torch"].arange(3.0), 4)
    assert cos.shape == (3, 1)
