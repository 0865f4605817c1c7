"""`make release`: derive everything a lesson's declaration determines, then regenerate course/.

For every lesson folder `solutions/NN-topic/` with an `exercises.py`:
1. each graded test cell of the source notebook is written in its canonical form (the visible
   check and the hidden judge of the exercises it grades, one line each) with the declared
   points in its nbgrader metadata (`sync_test_cells`);
2. the visible checks' fixture `course/fixtures/NN-topic.json` is rebuilt (`autograder.fixtures`);
3. `nbgrader generate_assignment` writes the student notebook to `course/NN-topic/`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat

from autograder.coursedir import tool_env
from autograder.fixtures import write_fixture
from autograder.lesson import load_lesson, notebook_path
from autograder.nbgrader_config import REPO


def lessons(root: Path = REPO) -> list[str]:
    """Lesson folders under solutions/: `NN-topic` holding at least one notebook."""
    found = []
    for folder in sorted((root / "solutions").iterdir()):
        if folder.is_dir() and folder.name[:2].isdigit() and any(folder.glob("*.ipynb")):
            found.append(folder.name)
    return found


def canonical_test_cell(exercises) -> str:
    """The canonical source of a test cell grading `exercises` (in order)."""
    visible = [f'check("{e.full_id}", {e.function})' for e in exercises]
    hidden = [f'judge("{e.full_id}", {e.function})' for e in exercises]
    return "\n".join(
        [
            *visible,
            "### BEGIN HIDDEN TESTS",
            "from autograder.judge import judge",
            *hidden,
            "### END HIDDEN TESTS",
        ]
    )


def sync_test_cells(folder: str) -> bool:
    """Write every declared exercise's test cell in canonical form; True if anything changed.

    Raises ValueError when a declared test cell is missing from the notebook, or when a graded
    cell grades no declared exercise.
    """
    lesson = load_lesson(folder)
    path = notebook_path(lesson)
    nb = nbformat.read(path, as_version=4)
    by_cell: dict[str, list] = {}
    for exercise in lesson.exercises:
        by_cell.setdefault(exercise.test_cell, []).append(exercise)
    changed, seen = False, set()
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if not meta.get("grade") or cell.cell_type != "code":
            continue
        gid = meta.get("grade_id")
        if gid not in by_cell:
            raise ValueError(f"{path.name}: graded cell {gid!r} grades no declared exercise")
        seen.add(gid)
        source = canonical_test_cell(by_cell[gid])
        points = sum(e.points for e in by_cell[gid])
        if cell.source != source or meta.get("points") != points:
            cell.source, meta["points"], changed = source, points, True
    missing = sorted(set(by_cell) - seen)
    if missing:
        raise ValueError(f"{path.name}: no graded test cell {', '.join(missing)}")
    if changed:
        nbformat.write(nb, path)
    return changed


# Matches every lesson folder of solutions/ and nothing else there (kernels/, __init__.py).
ALL_LESSONS = "[0-9][0-9]-*"


def generate(lesson: str, release_dir: Path | str = "course", root: Path = REPO) -> None:
    """`nbgrader generate_assignment` for one lesson, or for every lesson when `lesson` is
    `ALL_LESSONS` (one nbgrader process: each start costs seconds), writing to `release_dir`
    (no gradebook). Raises RuntimeError with nbgrader's output when it fails."""
    cmd = [
        sys.executable,
        "-m",
        "nbgrader",
        "generate_assignment",
        lesson,
        "--force",
        "--no-db",
        f"--CourseDirectory.release_directory={release_dir}",
        "--log-level=WARN",
    ]
    result = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=tool_env())
    if result.returncode != 0:
        raise RuntimeError(f"generating {lesson} failed:\n{result.stdout}{result.stderr}")


def release(selected: list[str] | None = None, release_dir: Path | str = "course") -> list[str]:
    chosen = selected or lessons()
    for lesson in chosen:
        if (REPO / "solutions" / lesson / "exercises.py").exists():
            if sync_test_cells(lesson):
                print(f"updated the test cells of solutions/{lesson}")
            write_fixture(lesson)
    for pattern in [ALL_LESSONS] if set(chosen) == set(lessons()) else chosen:
        generate(pattern, release_dir)
    for lesson in chosen:
        print(f"released {lesson} -> {release_dir}/{lesson}")
    return chosen
