"""Import submissions into nbgrader's layout: `submitted/<student>/<lesson>/<notebook>.ipynb`.

Two sources:
- a folder laid out as `<student>/<lesson>/<anything>.ipynb`;
- a zip as learning-management systems export it, one notebook per student with the
  student id in the file name (`alice_12345_softmax.ipynb`, `12345-softmax (1).ipynb`);
  `--lesson` says which lesson the zip holds and `--id-pattern` how to find the id.

Nothing is dropped silently: unmatched, duplicate and unreadable files go to
`reports/collect.json` with the reason, and a summary is printed.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autograder.grading import lesson_notebooks
from autograder.sanitize import UnreadableNotebook, read_submission

DEFAULT_ID_PATTERN = r"^(?P<student>[A-Za-z0-9][A-Za-z0-9.@-]*?)[_\- ]"
MAX_MEMBER_BYTES = 50 * 2**20
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")


@dataclass
class CollectReport:
    imported: list[dict] = field(default_factory=list)
    unmatched: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    unreadable: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"imported {len(self.imported)} notebook(s)"]
        for name, items in (
            ("unmatched", self.unmatched),
            ("duplicate", self.duplicates),
            ("unreadable", self.unreadable),
        ):
            for item in items:
                lines.append(f"  {name}: {item['file']} — {item['reason']}")
        return "\n".join(lines)


def _check_readable(path: Path) -> str | None:
    try:
        read_submission(path)
    except UnreadableNotebook as exc:
        return str(exc)
    return None


def _place(root: Path, student: str, lesson: str, name: str, data: bytes) -> Path:
    target = root / "submitted" / student / lesson / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def collect_folder(source: Path, root: Path, lessons: list[str]) -> CollectReport:
    report = CollectReport()
    for path in sorted(source.rglob("*")):
        if not path.is_file() or ".ipynb_checkpoints" in path.parts:
            continue
        rel = path.relative_to(source)
        if len(rel.parts) != 3 or rel.parts[1] not in lessons or path.suffix != ".ipynb":
            report.unmatched.append(
                {
                    "file": str(rel),
                    "reason": "expected <student>/<lesson>/<notebook>.ipynb with a known lesson",
                }
            )
            continue
        student, lesson, _ = rel.parts
        _import_one(report, root, student, lesson, str(rel), path.read_bytes(), path.name)
    return report


def _import_one(
    report: CollectReport,
    root: Path,
    student: str,
    lesson: str,
    label: str,
    data: bytes,
    original_name: str,
) -> None:
    if not SAFE_ID.match(student):
        report.unmatched.append({"file": label, "reason": f"unusable student id {student!r}"})
        return
    expected = [p.name for p in lesson_notebooks(lesson)]
    name = original_name if original_name in expected else expected[0]
    target = root / "submitted" / student / lesson / name
    if any(i["student"] == student and i["lesson"] == lesson for i in report.imported):
        report.duplicates.append(
            {"file": label, "reason": f"a second notebook for {student}/{lesson}; kept the first"}
        )
        return
    placed = _place(root, student, lesson, name, data)
    problem = _check_readable(placed)
    entry = {
        "file": label,
        "student": student,
        "lesson": lesson,
        "as": str(target.relative_to(root)),
    }
    if original_name != name:
        entry["renamed_from"] = original_name
    if problem:
        # Kept in place so that `grade` reports it for this student too.
        report.unreadable.append({"file": label, "reason": problem})
    report.imported.append(entry)


def collect_zip(source: Path, root: Path, lesson: str, id_pattern: str) -> CollectReport:
    report = CollectReport()
    pattern = re.compile(id_pattern)
    newest: dict[str, zipfile.ZipInfo] = {}
    with zipfile.ZipFile(source) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            base = Path(info.filename).name
            match = pattern.search(base)
            if not base.endswith(".ipynb") or not match:
                report.unmatched.append(
                    {
                        "file": info.filename,
                        "reason": "not a notebook, or no student id in its name",
                    }
                )
                continue
            student = match.group("student")
            if student in newest:
                older, kept = sorted([newest[student], info], key=lambda i: i.date_time)
                newest[student] = kept
                report.duplicates.append(
                    {
                        "file": older.filename,
                        "reason": f"older of two files for {student}; kept {kept.filename}",
                    }
                )
            else:
                newest[student] = info
        for student, info in sorted(newest.items()):
            if info.file_size > MAX_MEMBER_BYTES:
                report.unreadable.append({"file": info.filename, "reason": "larger than 50 MiB"})
                continue
            _import_one(
                report,
                root,
                student,
                lesson,
                info.filename,
                archive.read(info),
                Path(info.filename).name,
            )
    return report


def collect(
    source: Path,
    root: Path,
    lessons: list[str],
    lesson: str | None = None,
    id_pattern: str = DEFAULT_ID_PATTERN,
    replace: bool = False,
) -> CollectReport:
    if replace and (root / "submitted").exists():
        shutil.rmtree(root / "submitted")
    if source.is_dir():
        report = collect_folder(source, root, lessons)
    elif zipfile.is_zipfile(source):
        if lesson is None:
            raise ValueError("a zip export holds one lesson: say which with --lesson")
        report = collect_zip(source, root, lesson, id_pattern)
    else:
        raise ValueError(f"{source} is neither a folder nor a zip file")
    out = root / "reports" / "collect.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"source": str(source), "at": time.time(), **asdict(report)}, indent=1)
    )
    return report
