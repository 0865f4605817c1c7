"""A learner who runs a blank lesson top to bottom meets one clear message at the first exercise.

Executed with nbclient like JupyterLab's Run All (stop at the first error). The browser
version of this test is tests/e2e/test_lessons_in_browser.py.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

import course
from course import checks, unsolved
from tests.e2e.jupyterlab import DRAWS

REPO = Path(__file__).resolve().parent.parent
COURSE = sorted((REPO / "course").glob("[0-9][0-9]-*/*.ipynb"))


def execute(nb: nbformat.NotebookNode, cwd: Path, allow_errors: bool) -> nbformat.NotebookNode:
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(cwd)}},
    )
    try:
        client.execute()
    except CellExecutionError:
        if allow_errors:
            raise
    return nb


def error_outputs(nb) -> list[tuple[int, dict]]:
    return [
        (i, o)
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]


def traceback_text(output) -> str:
    return "\n".join(output.traceback)


def looks_like_a_traceback(text: str) -> bool:
    return "Traceback" in text or 'File "' in text or "---> " in text


@pytest.mark.slow
@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.parent.name)
def test_blank_lesson_stops_at_the_first_exercise_with_one_clear_message(path):
    nb = execute(nbformat.read(path, as_version=4), path.parent, allow_errors=False)
    exercises = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")
    ]
    found = error_outputs(nb)
    assert exercises and found, f"{path}: no exercise, or Run All raised nothing"
    assert len(found) == 1
    index, output = found[0]
    end = exercises[1] if len(exercises) > 1 else len(nb.cells)
    assert exercises[0] <= index < end, f"first error in cell {index}, exercises {exercises}"
    text = traceback_text(output)
    assert "not written yet" in text.lower(), text
    assert not looks_like_a_traceback(text) and len(text.splitlines()) <= 6, text
    later = [
        i
        for i, c in enumerate(nb.cells[index + 1 :], index + 1)
        if c.cell_type == "code" and c.get("execution_count")
    ]
    assert not later, f"cells {later} ran after the first unsolved exercise"
    blank = [
        i
        for i, c in enumerate(nb.cells[:index])
        if c.cell_type == "code"
        and DRAWS.search(c.source)
        and not any(k.startswith("image/") for o in c.get("outputs", []) for k in o.get("data", {}))
    ]
    assert not blank, f"cells {blank} draw with pyplot but show no image"


HANDLER_CELLS = [
    "import course\ndef attention(q, k, v):\n    # YOUR CODE HERE\n    raise NotImplementedError()",
    "x = 1\nattention(x, x, x)",  # a later cell calls the stub
    "# YOUR CODE HERE\nraise NotImplementedError()",  # a stub at cell level
    "from course.widgets.base import Explorer\nExplorer.controls(None)",  # not an exercise
    "from course import checks\n"
    "checks.run('demo', [checks.true('ok', lambda: attention(1, 2, 3))])",
    "print('still running')",
]


@pytest.fixture(scope="module")
def handled():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in HANDLER_CELLS])
    return execute(nb, REPO, allow_errors=True)


def only_error(nb, index: int) -> dict:
    errors = [o for o in nb.cells[index].outputs if o.output_type == "error"]
    assert len(errors) == 1, nb.cells[index].outputs
    return errors[0]


def test_a_stub_called_from_another_cell_names_the_function(handled):
    output = only_error(handled, 1)
    assert output.ename == "NotImplementedError"  # still an error: Run All stops, nbgrader fails it
    text = traceback_text(output)
    assert text.startswith("✘ Exercise not written yet: `attention` still raises")
    assert "Replace `raise NotImplementedError()`" in text and "In [1]" in text
    assert not looks_like_a_traceback(text)


def test_a_stub_at_cell_level_says_this_cell(handled):
    text = traceback_text(only_error(handled, 2))
    assert text == (
        "✘ Exercise not written yet: replace `raise NotImplementedError()` in this "
        "cell with your code, then run the cell again."
    )


def test_a_library_not_implemented_error_keeps_its_traceback(handled):
    text = traceback_text(only_error(handled, 3))
    assert "not written yet" not in text and looks_like_a_traceback(text)


def test_a_check_on_a_stub_shows_its_message_alone(handled):
    output = only_error(handled, 4)
    assert output.ename == "NotWrittenYet"
    assert output.traceback == [output.evalue]
    assert "✘ demo: not written yet" in output.evalue
    assert handled.cells[5].outputs[0].text == "still running\n"


def test_a_failed_check_renders_as_its_message():
    with pytest.raises(checks.CheckFailed) as info:
        checks.run("demo", [checks.equal("two", lambda: 1 + 1, 3, hint="add")])
    lines = info.value._render_traceback_()
    assert lines[0].startswith("✘ demo: case 1/1 'two' failed") and lines[-1].endswith("add")


def test_outside_ipython_nothing_is_installed():
    assert course.unsolved is unsolved
    assert unsolved.install() is False
