"""`make release`: regenerate every lesson in course/ from solutions/ with nbgrader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from autograder.coursedir import tool_env
from autograder.nbgrader_config import REPO


def lessons(root: Path = REPO) -> list[str]:
    """Lesson folders under solutions/: `NN-topic` holding at least one notebook."""
    found = []
    for folder in sorted((root / "solutions").iterdir()):
        if folder.is_dir() and folder.name[:2].isdigit() and any(folder.glob("*.ipynb")):
            found.append(folder.name)
    return found


def generate(lesson: str, release_dir: Path | str = "course", root: Path = REPO) -> None:
    """`nbgrader generate_assignment` for one lesson, writing to `release_dir` (no gradebook)."""
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
        generate(lesson, release_dir)
        print(f"released {lesson} -> {release_dir}/{lesson}")
    return chosen
