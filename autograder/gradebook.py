"""nbgrader's gradebook, derived from the result files (which are the truth).

After every `grade` run the gradebook is brought in line with `results/`: every current
submission's scores are written, and students who are no longer submitted (a `collect
--replace` with corrected ids, say) are removed from it, their result files moved aside to
`results/.stale/`, so that exports and the report never count them.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

from autograder import coursedir


def current_students(jobs) -> dict[str, set[str]]:
    """{lesson: students with a job this run (graded or accounted for)}."""
    found: dict[str, set[str]] = {}
    for job in jobs:
        found.setdefault(job.lesson, set()).add(job.student)
    return found


def sync_gradebook(course: coursedir.CourseDir, root: Path, lessons: list[str], jobs) -> None:
    from nbgrader.api import Gradebook, MissingEntry

    from autograder.grading import load_result

    current = current_students(jobs)
    # nbgrader's Gradebook runs `alembic` from PATH: this interpreter's bin/ must come first.
    os.environ["PATH"] = coursedir.tool_env()["PATH"]
    with Gradebook(course.db_url) as gb, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy autoflush notes from nbgrader's own API
        for lesson in lessons:
            folder = root / "results" / lesson
            keep = current.get(lesson, set())
            for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
                student = path.stem
                if student not in keep:
                    _move_aside(root, lesson, path)
                    try:
                        gb.remove_submission(lesson, student)
                    except MissingEntry:
                        pass
                    continue
                result = load_result(path)
                if result is not None:
                    _record(gb, result)
        _remove_students_without_submissions(gb)
        gb.db.commit()


def _record(gb, result) -> None:
    from pathlib import Path as _Path

    gb.update_or_create_student(result.student)
    gb.update_or_create_submission(result.lesson, result.student)
    for gid, cell in result.cells.items():
        grade = gb.find_grade(gid, _Path(result.notebook).stem, result.lesson, result.student)
        grade.auto_score = float(cell.points)
        grade.needs_manual_grade = False


def _move_aside(root: Path, lesson: str, path: Path) -> None:
    target = root / "results" / ".stale" / lesson / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), str(target))


def _remove_students_without_submissions(gb) -> None:
    for student in list(gb.students):
        if not student.submissions:
            gb.remove_student(student.id)
