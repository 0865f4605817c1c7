"""The course's nbgrader settings, in one place.

`nbgrader_config.py` at the repository root (where nbgrader and the JupyterLab extension
look for it) calls `configure(c)`; the grading pipeline calls it with another root.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Per-cell limit for student code; a hanging cell is interrupted and grading goes on
# with the next one. Set explicitly: nbgrader's default has changed between versions.
CELL_TIMEOUT_S = 30


def configure(c, root: Path | str = REPO, db_url: str | None = None) -> None:
    root = Path(root)
    c.CourseDirectory.root = str(root)
    c.CourseDirectory.course_id = "transformer-course"
    c.CourseDirectory.source_directory = "solutions"
    c.CourseDirectory.release_directory = "course"
    c.CourseDirectory.db_url = db_url or f"sqlite:///{root / 'grading' / 'gradebook.db'}"
    c.CourseDirectory.ignore = [
        ".ipynb_checkpoints",
        "*.pyc",
        "__pycache__",
        "feedback",
        ".*",
        "*.egg-info",
        # The lesson's declaration (references, probes, known mistakes) stays with the instructor.
        "exercises.py",
    ]
    c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
    c.ClearSolutions.enforce_metadata = True
    c.Execute.timeout = CELL_TIMEOUT_S
    c.Execute.interrupt_on_timeout = True
    c.Execute.allow_errors = True
    c.Execute.kernel_name = "python3"
