"""The project's own rules: dependency direction, release freshness, notebook hygiene, env files."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest

from autograder.release import ALL_LESSONS, generate, lessons

REPO = Path(__file__).resolve().parent.parent
COURSE_MODULES = sorted(p for p in (REPO / "course").rglob("*.py"))


def test_course_imports_neither_solutions_nor_autograder_at_runtime():
    modules = [
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for p in COURSE_MODULES
        if not p.name.startswith("__main__")
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print([m for m in sys.modules if m.split('.')[0] in ('solutions', 'autograder')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("path", COURSE_MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_course_source_has_no_import_statement_of_the_answer_packages(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in ("solutions", "autograder"), f"{path}: import {name}"


def released_notebooks() -> list[Path]:
    return sorted((REPO / "course").glob("[0-9][0-9]-*/*.ipynb"))


def test_every_lesson_is_released():
    assert lessons(), "no lesson in solutions/"
    for lesson in lessons():
        for source in (REPO / "solutions" / lesson).glob("*.ipynb"):
            assert (REPO / "course" / lesson / source.name).exists(), (
                f"run `make release`: {lesson}"
            )


@pytest.fixture(scope="module")
def fresh_release(tmp_path_factory) -> Path:
    """What `make release` writes for every lesson, made once in a scratch folder."""
    folder = tmp_path_factory.mktemp("release")
    generate(ALL_LESSONS, release_dir=folder)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("lesson", lessons())
def test_release_is_not_stale(lesson, fresh_release):
    tmp_path = fresh_release
    fresh = sorted(
        p.relative_to(tmp_path / lesson) for p in (tmp_path / lesson).rglob("*") if p.is_file()
    )
    committed = sorted(
        p.relative_to(REPO / "course" / lesson)
        for p in (REPO / "course" / lesson).rglob("*")
        if p.is_file() and ".ipynb_checkpoints" not in p.parts
    )
    assert fresh == committed, "course/ differs from solutions/: run `make release`"
    for rel in fresh:
        a, b = (tmp_path / lesson / rel).read_bytes(), (REPO / "course" / lesson / rel).read_bytes()
        if rel.suffix == ".ipynb":
            a, b = json.loads(a), json.loads(b)
        assert a == b, f"course/{lesson}/{rel} is stale: run `make release`"


def all_notebooks() -> list[Path]:
    return sorted((REPO / "solutions").glob("[0-9][0-9]-*/*.ipynb")) + released_notebooks()


@pytest.mark.parametrize("path", all_notebooks(), ids=lambda p: str(p.relative_to(REPO)))
def test_notebooks_are_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path}: outputs committed"


@pytest.mark.parametrize(
    "path", sorted((REPO / "solutions").glob("[0-9][0-9]-*/*.ipynb")), ids=lambda p: p.parent.name
)
def test_lesson_header_states_the_total_points_and_has_six_exercises(path):
    nb = nbformat.read(path, as_version=4)
    graded = [
        c.metadata["nbgrader"] for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")
    ]
    total = sum(g["points"] for g in graded)
    assert len(graded) >= 6
    header = nb.cells[0].source
    match = re.search(r"Total: (\d+) points", header)
    assert match, "the header must say 'Total: N points'"
    assert int(match.group(1)) == total
    for heading in ["Estimated time", "Prerequisites", "Where this shows up", "Going further"]:
        assert any(
            heading.lower() in c.source.lower() for c in nb.cells if c.cell_type == "markdown"
        ), heading


def _short(x: float) -> str:
    """1e-05 -> 1e-5, as a header writes a tolerance."""
    return re.sub(r"e-0*(\d)", r"e-\1", f"{x:.0e}")


DECLARED = sorted(p.parent.name for p in (REPO / "solutions").glob("[0-9][0-9]-*/exercises.py"))


@pytest.mark.parametrize("lesson", DECLARED)
def test_header_counts_and_precision_come_from_the_declaration(lesson):
    """The header states the points, the exercises and graded tests, and the precision each
    dtype is judged at, all as the declaration and course.compare.TOLERANCES have them."""
    from autograder.lesson import load_lesson, notebook_path
    from course.compare import TOLERANCES

    declared = load_lesson(lesson)
    header = nbformat.read(notebook_path(declared), as_version=4).cells[0].source
    assert f"Total: {declared.total_points:g} points" in header
    functions = len({e.function for e in declared.exercises})
    tests = len(declared.exercises)
    assert re.search(rf"\b{functions} exercises\b", header), (
        f"the header must say {functions} exercises"
    )
    if tests != functions:
        assert re.search(rf"\b{tests} graded tests\b", header), f"and {tests} graded tests"
    for dtype in ["float64", "float32", "bfloat16", "float16"]:
        tol = TOLERANCES[dtype]
        stated = f"{dtype} atol {_short(tol.atol)}, rtol {_short(tol.rtol)}"
        assert stated in header, f"the header must state the precision: {stated!r}"


def test_release_strips_solutions_and_hidden_tests():
    for path in released_notebooks():
        text = path.read_text()
        for marker in ["BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "autograder", "solutions.kernels"]:
            assert marker not in text, f"{path} leaks {marker!r}"


def _requirement_names(reqs: list[str]) -> dict[str, str]:
    return {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0].lower(): r.replace(" ", "") for r in reqs}


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = _requirement_names(project["dependencies"] + project["optional-dependencies"]["dev"])
    env_lines = (REPO / "environment.yml").read_text().splitlines()
    pip_reqs = [ln.strip()[2:] for ln in env_lines if ln.startswith("      - ")]
    # constraints.txt's pins (not dependencies of ours) hold for conda users too
    pins = [ln for ln in (REPO / "constraints.txt").read_text().splitlines() if ln[:1].isalpha()]
    assert _requirement_names(pip_reqs) == wanted | _requirement_names(pins)
    for pin in pins:
        assert pin in pip_reqs, f"environment.yml lacks constraints.txt's {pin}"


def test_torch_is_pinned_by_the_constraints_file():
    constraints = (REPO / "constraints.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", constraints, re.M)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]


def test_ci_runs_make_test():
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_every_asset_is_listed_with_the_script_that_makes_it():
    readme = (REPO / "assets" / "README.md").read_text()
    assets = [p for p in (REPO / "assets").rglob("*") if p.is_file() and p.name != "README.md"]
    assert assets, "assets/ holds the notebooks' figures and data"
    for path in assets:
        name = path.relative_to(REPO / "assets").as_posix()
        row = next((line for line in readme.splitlines() if f"`{name}`" in line), None)
        assert row, f"assets/{name} is not listed in assets/README.md"
        scripts = re.findall(r"`(scripts/[\w./-]+\.py)", row)
        assert scripts and all((REPO / s).is_file() for s in scripts), f"{name}: {scripts}"


def test_the_files_scheduled_first_exist():
    """tests/conftest.py hands out its LONGEST files first; a renamed one would silently lose
    its place and could start last."""
    from tests.conftest import LONGEST

    missing = [path for path in LONGEST if not (REPO / path).is_file()]
    assert not missing, f"tests/conftest.py LONGEST names files that do not exist: {missing}"
