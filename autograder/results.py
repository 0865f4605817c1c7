"""Typed grading results: built in one place (`autograder.grading`), stored as JSON in
`<root>/results/<lesson>/<student>.json` (the single source of truth: the gradebook, the
exports, feedback and the report are all derived from these files), read back with
`GradingResult.from_json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = [
    "ProbeVerdict",
    "ExerciseVerdict",
    "CellResult",
    "Finding",
    "GradingResult",
    "SEVERITIES",
]

SEVERITIES = ("high", "medium", "low")
SCHEMA = 2


@dataclass
class ProbeVerdict:
    """One hidden probe: passed or not, a message safe to show the student (no expected values),
    the known mistake it looks like, and whether the grader saw tampering."""

    name: str
    passed: bool
    message: str = ""
    looks_like: str = ""
    tampering: str = ""


@dataclass
class ExerciseVerdict:
    exercise: str
    title: str
    probes: list[ProbeVerdict] = field(default_factory=list)
    note: str = ""
    looks_like: str = ""  # the hint of the known mistake this behaves like, if any

    @property
    def passed(self) -> bool:
        return bool(self.probes) and all(p.passed for p in self.probes)

    def report(self) -> str:
        failed = [p for p in self.probes if not p.passed]
        head = "✔" if self.passed else "✘"
        lines = [
            f"{head} {self.exercise} ({self.title}): "
            f"{len(self.probes) - len(failed)}/{len(self.probes)} hidden checks passed"
        ]
        shown: set[str] = set()
        for probe in failed:
            text = probe.message if probe.message not in shown else "(same reason)"
            shown.add(probe.message)
            lines.append(f"  ✘ {probe.name}: {text}")
            if probe.looks_like:
                lines.append(f"    looks like: {probe.looks_like}")
        if self.looks_like:
            lines.append(f"  looks like a known mistake: {self.looks_like}")
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "exercise": self.exercise,
            "title": self.title,
            "passed": self.passed,
            "probes": [asdict(p) for p in self.probes],
            "note": self.note,
            "looks_like": self.looks_like,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ExerciseVerdict:
        return cls(
            exercise=data["exercise"],
            title=data.get("title", ""),
            probes=[ProbeVerdict(**_known(ProbeVerdict, p)) for p in data.get("probes", [])],
            note=data.get("note", ""),
            looks_like=data.get("looks_like", ""),
        )


@dataclass
class CellResult:
    grade_id: str
    points: float
    max_points: float
    exercises: list[ExerciseVerdict] = field(default_factory=list)
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.points >= self.max_points > 0 or (
            self.max_points == 0 and all(e.passed for e in self.exercises)
        )

    def to_dict(self) -> dict:
        return {
            "grade_id": self.grade_id,
            "points": self.points,
            "max_points": self.max_points,
            "passed": self.passed,
            "exercises": [e.to_dict() for e in self.exercises],
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict) -> CellResult:
        return cls(
            grade_id=data["grade_id"],
            points=float(data["points"]),
            max_points=float(data["max_points"]),
            exercises=[ExerciseVerdict.from_dict(e) for e in data.get("exercises", [])],
            reason=data.get("reason", ""),
        )


@dataclass
class Finding:
    """Something the instructor should look at: `severity` high (an attempt to get around the
    grader), medium (worth a look) or low (usually innocent)."""

    cell: str
    line: int
    kind: str
    detail: str
    severity: str = "low"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GradingResult:
    student: str
    lesson: str
    notebook: str
    status: str  # graded | missing | unreadable | error
    max_score: float
    score: float = 0.0
    reason: str = ""
    cells: dict[str, CellResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    execution: dict[str, Any] = field(default_factory=dict)
    isolation: str = ""
    seed: int | None = None
    submission: str = ""
    cache_key: str | None = None
    seconds: float = 0.0
    shared_run: bool = False
    cached: bool = False

    def recompute_score(self) -> None:
        self.score = float(sum(c.points for c in self.cells.values()))

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["cells"] = {gid: c.to_dict() for gid, c in self.cells.items()}
        data["findings"] = [f.to_dict() for f in self.findings]
        data["schema"] = SCHEMA
        data.pop("cached")
        return json.dumps(data, indent=1, default=str)

    @classmethod
    def from_json(cls, text: str) -> GradingResult:
        data = json.loads(text)
        if data.get("schema") != SCHEMA:
            raise ValueError("a result file of another grader version")
        data["cells"] = {g: CellResult.from_dict(c) for g, c in data.get("cells", {}).items()}
        data["findings"] = [Finding(**_known(Finding, f)) for f in data.get("findings", [])]
        return cls(**_known(cls, data))


def _known(cls, data: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}
