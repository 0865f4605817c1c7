"""The student's `make test`: `python -m course.selftest`.

The test suite (tests/) belongs to the instructor's checkout; a student's bundle has only
`course/`. This self-test checks what a student's side needs, with no answers anywhere:

* the environment: the libraries the lessons import;
* every lesson notebook: valid, and each `check("NN-topic/id", fn)` it holds finds its cases in
  `course/fixtures/` and those cases load;
* the checks: an unwritten exercise gets the one-line "not written yet" message, and a wrong
  answer a failing case (a function returning zeros);
* the widgets: each builds without a display and runs the function it is given;
* the JupyterLab profile `make lab` writes for a student.

It prints one line per check and a summary; the exit status is 0 only when all pass.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

COURSE = Path(__file__).resolve().parent
LIBRARIES = ["torch", "numpy", "matplotlib", "ipywidgets", "sympy", "nbformat", "nbgrader"]
_CHECK = re.compile(r"""check\(\s*["']([0-9]{2}-[\w-]+)/([\w-]+)["']""")


def _lesson_notebook(folder: Path) -> Path:
    """The released notebook of a lesson folder: `04-multi-head/multi_head.ipynb`."""
    return folder / (folder.name[3:].replace("-", "_") + ".ipynb")


def _lesson_notebooks() -> list[Path]:
    """The released lesson notebooks, by name: a learner's copies (`multi_head-Copy1.ipynb`,
    `my_notes.ipynb`) in a lesson folder are not lessons."""
    folders = sorted(p for p in COURSE.glob("[0-9][0-9]-*") if p.is_dir())
    return [nb for nb in map(_lesson_notebook, folders) if nb.is_file()]


def check_libraries() -> str:
    for name in LIBRARIES:
        importlib.import_module(name)
    return f"the libraries import ({', '.join(LIBRARIES)})"


def check_notebooks() -> str:
    import nbformat

    notebooks = _lesson_notebooks()
    if not notebooks:
        raise AssertionError(f"no lesson notebook under {COURSE}")
    for path in notebooks:
        nbformat.validate(nbformat.read(path, as_version=4))
    return f"{len(notebooks)} lesson notebooks are valid"


def _declared_checks() -> Iterator[tuple[Path, str, str]]:
    import nbformat

    for path in _lesson_notebooks():
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                for lesson, exercise in _CHECK.findall(cell.source):
                    yield path, lesson, exercise


def check_fixtures() -> str:
    from course.compare import decode
    from course.wire import load_value

    count = 0
    for path, lesson, exercise in _declared_checks():
        fixture = COURSE / "fixtures" / f"{lesson}.json"
        if not fixture.exists():
            raise AssertionError(
                f"{path.name} checks {lesson}/{exercise}, but {fixture} is missing"
            )
        spec = json.loads(fixture.read_text())["exercises"].get(exercise)
        if spec is None:
            raise AssertionError(f"{path.name} checks {lesson}/{exercise}: not in {fixture.name}")
        for case in spec["cases"]:
            load_value(case["args"])
            decode(case["expected"])
        count += 1
    return f"{count} graded checks find their cases"


def check_unwritten_and_wrong() -> str:
    import torch

    from course.checks import CheckFailed, NotWrittenYet, check

    def unwritten(*args, **kwargs):
        raise NotImplementedError()

    def zeros(x, *args, **kwargs):
        return torch.zeros_like(x) if isinstance(x, torch.Tensor) else 0

    seen = {(lesson, exercise) for _path, lesson, exercise in _declared_checks()}
    for lesson, exercise in sorted(seen):
        try:
            check(f"{lesson}/{exercise}", unwritten, quiet=True)
        except NotWrittenYet as exc:
            if "not written yet" not in str(exc) or len(str(exc).splitlines()) > 2:
                raise AssertionError(f"{lesson}/{exercise}: unclear message: {exc}") from None
        else:
            raise AssertionError(f"{lesson}/{exercise}: an unwritten exercise passed its check")
        try:
            check(f"{lesson}/{exercise}", zeros, quiet=True)
        except CheckFailed as exc:
            if "failed" not in str(exc):
                raise AssertionError(f"{lesson}/{exercise}: unclear failure: {exc}") from None
        else:
            raise AssertionError(f"{lesson}/{exercise}: a function returning zeros passed")
    return f"{len(seen)} checks say 'not written yet' and reject a wrong answer"


def check_widgets() -> str:
    import torch

    from course.widgets import softmax_explorer

    calls = []

    def builtin_softmax(x):
        calls.append(x.dtype)
        return torch.softmax(x, -1)

    explorer = softmax_explorer(builtin_softmax)
    if explorer.error or not bytes(explorer.image.value).startswith(b"\x89PNG") or not calls:
        raise AssertionError(f"the lesson 01 explorer did not draw: {explorer.error}")
    explorer.dtype.value = "float16"
    if torch.float16 not in calls:
        raise AssertionError("the lesson 01 explorer did not run the function on float16")
    return "the widgets build and run the function they are given"


def check_lab_profile() -> str:
    from course.lab_profile import write_profile

    with tempfile.TemporaryDirectory() as folder:
        write_profile("student", Path(folder), cwd=COURSE.parent)
        page = json.loads((Path(folder) / "labconfig" / "page_config.json").read_text())
    disabled = page["disabledExtensions"]
    if disabled.get("@jupyter/nbgrader:create-assignment") is not True:
        raise AssertionError("a student's Lab would show Create Assignment")
    if disabled.get("@jupyter/nbgrader:validate-assignment"):
        raise AssertionError("a student's Lab would lose the Validate button")
    return "make lab's student profile: Validate on, instructor tools off"


CHECKS: list[Callable[[], str]] = [
    check_libraries,
    check_notebooks,
    check_fixtures,
    check_unwritten_and_wrong,
    check_widgets,
    check_lab_profile,
]


def main() -> int:
    failed = 0
    for test in CHECKS:
        try:
            print(f"✔ {test()}", flush=True)
        except Exception as exc:  # noqa: BLE001 - report every check, then fail once
            failed += 1
            where = traceback.extract_tb(exc.__traceback__)[-1]
            print(
                f"✘ {test.__name__}: {type(exc).__name__}: {exc} ({where.filename}:{where.lineno})"
            )
    if failed:
        print(f"student self-test: {failed} of {len(CHECKS)} checks failed")
        return 1
    print(f"student self-test: all {len(CHECKS)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
