"""An nbgrader course directory for grading: gradebook, submitted/ and autograded/ live here.

The repository itself stays clean: grading happens in a separate root (by default
`grading/`, git-ignored) whose `solutions/` points at the repository's lesson sources.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry

from autograder.nbgrader_config import REPO

CONFIG_TEMPLATE = """\
from autograder.nbgrader_config import configure

configure(get_config(), root={root!r})
{extra}
"""


class NbgraderError(RuntimeError):
    pass


@dataclass
class CourseDir:
    root: Path

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.root / 'gradebook.db'}"

    def submitted(self, student: str, lesson: str) -> Path:
        return self.root / "submitted" / student / lesson

    def autograded(self, student: str, lesson: str) -> Path:
        return self.root / "autograded" / student / lesson


def create(root: Path | str, lessons: list[str], extra_config: str = "") -> CourseDir:
    """A course root whose source lessons are copies of the repository's, with a gradebook."""
    course = CourseDir(Path(root).resolve())
    (course.root / "solutions").mkdir(parents=True, exist_ok=True)
    for lesson in lessons:
        target = course.root / "solutions" / lesson
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(
            REPO / "solutions" / lesson,
            target,
            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
        )
    config = CONFIG_TEMPLATE.format(root=str(course.root), extra=extra_config)
    config += f"c.CourseDirectory.db_url = {course.db_url!r}\n"
    (course.root / "nbgrader_config.py").write_text(config)
    for pattern in assignment_patterns(course, lessons):
        nbgrader(course, "generate_assignment", pattern, "--force")
    return course


def assignment_patterns(course: CourseDir, lessons: list[str]) -> list[str]:
    """The assignment arguments that make one nbgrader command cover `lessons`: "*" when the
    course holds exactly these lessons (one nbgrader process; each start costs seconds of
    imports), else each lesson's name."""
    present = {p.name for p in (course.root / "solutions").iterdir() if p.is_dir()}
    return ["*"] if len(lessons) > 1 and present == set(lessons) else list(lessons)


def tool_env() -> dict[str, str]:
    """The environment with this interpreter's bin/ first: nbgrader runs `alembic` from PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def nbgrader(course: CourseDir, *args: str, timeout: float | None = None) -> str:
    cmd = [sys.executable, "-m", "nbgrader", *args]
    result = subprocess.run(
        cmd, cwd=course.root, capture_output=True, text=True, timeout=timeout, env=tool_env()
    )
    if result.returncode != 0:
        raise NbgraderError(f"nbgrader {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout + result.stderr


def submit(
    course: CourseDir, student: str, lesson: str, notebook: Path | str, name: str | None = None
) -> Path:
    folder = course.submitted(student, lesson)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or Path(notebook).name)
    shutil.copyfile(notebook, target)
    return target


def scores(course: CourseDir, lesson: str) -> dict[str, dict[str, float]]:
    """{student: {grade_id: score}} for every autograded test cell of `lesson`."""
    out: dict[str, dict[str, float]] = {}
    with Gradebook(course.db_url) as gb:
        try:
            assignment = gb.find_assignment(lesson)
        except MissingEntry:
            return out
        for submission in assignment.submissions:
            per_cell = {}
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    if grade.cell_type == "code":
                        per_cell[grade.name] = float(grade.score)
            out[submission.student.id] = per_cell
    return out
