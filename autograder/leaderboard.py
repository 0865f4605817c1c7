"""`python -m autograder leaderboard`: the class's lesson 08 checkpoints on held-out text.

Each student submits, next to the lesson 08 notebook, `ckpt.pt` (a `course.lm` checkpoint, at
most `--max-mb` megabytes) and the run's `log.json`, in `<root>/submitted/<student>/
08-language-model/`. Every checkpoint is evaluated in the grading sandbox (`autograder.sandbox`:
no network, a cleared environment, memory, process and time limits), one job per student, by
`autograder.leaderboard_eval`: loaded with `weights_only=True` into the course's reference model
(no code of the student's runs at all), and scored in bits per byte on text the students never
saw, computed there by the course's own code. The page ranks by validation bits per byte and
shows the parameter count, and the tokens/s and MFU the student's run log reports (marked as
reported: the grader did not measure them). Whatever fails for a student (no checkpoint, too
large, not loadable, weights that do not fit the config, non-finite logits, a limit hit) is
one line in that student's row; it never stops the others.

Writes `leaderboard.html` and `leaderboard.csv` into `--out` (default `<root>/leaderboard`).
"""

from __future__ import annotations

import csv
import html
import json
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from autograder import sandbox as sb
from autograder.nbgrader_config import REPO

LESSON = "08-language-model"
CHECKPOINT = "ckpt.pt"
RUN_LOG = "log.json"
MAX_LOG_BYTES = 1_000_000
# What the evaluator needs besides the course: the reference model (no answers of a student's
# are at stake here: no student code runs in these jobs) and the evaluator itself.
EXTRA_BINDS = ("solutions/__init__.py", "solutions/kernels", "autograder/leaderboard_eval.py")


@dataclass
class Row:
    student: str
    bpb: float | None = None
    params: int | None = None
    tokens_per_s: float | None = None  # reported by the student's run log
    mfu: float | None = None  # reported by the student's run log
    problem: str = ""
    rank: int | None = None


class LeaderboardSandbox(sb.Sandbox):
    """The grading sandbox, with the reference model and the evaluator visible (read-only)."""

    def _bwrap_spec(self) -> dict:
        spec = super()._bwrap_spec()
        spec["binds"] = spec["binds"] + [["ro", str(REPO / p), str(REPO / p)] for p in EXTRA_BINDS]
        return spec


def students(root: Path) -> list[str]:
    """Every student folder under `<root>/submitted/` (with or without a lesson 08 folder)."""
    submitted = root / "submitted"
    if not submitted.is_dir():
        return []
    return sorted(p.name for p in submitted.iterdir() if p.is_dir() and not p.is_symlink())


def reported(log: Path) -> tuple[float | None, float | None]:
    """(tokens/s, MFU) from a run log, each None when absent or not a finite number."""
    try:
        if not log.is_file() or log.stat().st_size > MAX_LOG_BYTES:
            return None, None
        data = json.loads(log.read_text(errors="replace"))
    except (OSError, ValueError):
        return None, None

    def number(key: str) -> float | None:
        value = data.get(key) if isinstance(data, dict) else None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok and math.isfinite(value) and value >= 0 else None

    return number("tokens_per_s"), number("mfu")


def evaluate_student(
    root: Path,
    student: str,
    heldout: bytes,
    *,
    max_bytes: int,
    limits: sb.Limits,
    allow_unsandboxed: bool,
    work: Path,
) -> Row:
    row = Row(student)
    folder = root / "submitted" / student / LESSON
    ckpt = folder / CHECKPOINT
    row.tokens_per_s, row.mfu = reported(folder / RUN_LOG)
    if not ckpt.is_file() or ckpt.is_symlink():
        row.problem = f"no checkpoint ({LESSON}/{CHECKPOINT} missing)"
        return row
    size = ckpt.stat().st_size
    if size > max_bytes:
        row.problem = (
            f"checkpoint of {size / 2**20:.1f} MB is over the {max_bytes / 2**20:.0f} MB cap"
        )
        return row
    job = Path(tempfile.mkdtemp(prefix="lb-", dir=work))
    probes = job / "probes"
    probes.mkdir()
    (probes / CHECKPOINT).write_bytes(ckpt.read_bytes())
    (probes / "heldout.txt").write_bytes(heldout)
    spec = {"checkpoint": str(probes / CHECKPOINT), "heldout": str(probes / "heldout.txt")}
    (probes / "spec.json").write_text(json.dumps(spec))
    row_result = _run(job, limits, allow_unsandboxed)
    if "error" in row_result:
        # The job's folder means nothing to the instructor: name the file as submitted.
        row.problem = str(row_result["error"]).replace(str(probes) + "/", "")[:300]
    else:
        row.bpb, row.params = float(row_result["bpb"]), int(row_result["params"])
    return row


def _run(job: Path, limits: sb.Limits, allow_unsandboxed: bool) -> dict:
    base = sb.prepare(job, limits, allow_unsandboxed=allow_unsandboxed)
    box = LeaderboardSandbox(base.workdir, base.limits, base.env, base.bwrap)
    command = [
        sys.executable,
        "-I",
        "-m",
        "autograder.leaderboard_eval",
        str(job / "probes" / "spec.json"),
    ]
    try:
        with box:
            proc = subprocess.run(
                box.wrapper + command,
                capture_output=True,
                timeout=limits.notebook_timeout_s,
                cwd=job,
                env=box.env,
            )
    except subprocess.TimeoutExpired:
        return {"error": f"the evaluation took longer than {limits.notebook_timeout_s} s"}
    if box.limit_hit is not None:
        return {"error": box.limit_hit.message("the evaluation")}
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else {}
    except ValueError:
        result = {}
    if not isinstance(result, dict) or not ("error" in result or {"bpb", "params"} <= set(result)):
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return {"error": f"the evaluation failed (exit {proc.returncode}): {tail[0][:200]}"}
    return result


def rank(rows: list[Row]) -> list[Row]:
    """Scored rows by bits per byte (ties share a rank), then the failed ones by name."""
    scored = sorted((r for r in rows if r.bpb is not None), key=lambda r: (r.bpb, r.student))
    previous, place = None, 0
    for i, row in enumerate(scored, start=1):
        if row.bpb != previous:
            place, previous = i, row.bpb
        row.rank = place
    return scored + sorted((r for r in rows if r.bpb is None), key=lambda r: r.student)


def _cell(value) -> str:
    # A spreadsheet treats a leading =, +, - or @ as a formula: quote it.
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def write_csv(rows: list[Row], path: Path) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(
            [
                "rank",
                "student",
                "val_bpb",
                "params",
                "tokens_per_s_reported",
                "mfu_reported",
                "problem",
            ]
        )
        for r in rows:
            out.writerow(
                [
                    r.rank or "",
                    _cell(r.student),
                    "" if r.bpb is None else f"{r.bpb:.4f}",
                    r.params or "",
                    "" if r.tokens_per_s is None else f"{r.tokens_per_s:.0f}",
                    "" if r.mfu is None else f"{r.mfu:.4f}",
                    _cell(r.problem),
                ]
            )


def write_html(rows: list[Row], path: Path, heldout_name: str) -> None:
    def fmt(value, spec):
        return "" if value is None else format(value, spec)

    body = "\n".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(c))}</td>"
            for c in (
                r.rank or "",
                r.student,
                fmt(r.bpb, ".4f"),
                fmt(r.params, ","),
                fmt(r.tokens_per_s, ",.0f"),
                "" if r.mfu is None else f"{100 * r.mfu:.1f}%",
                r.problem,
            )
        )
        + "</tr>"
        for r in rows
    )
    scored = sum(r.bpb is not None for r in rows)
    path.write_text(
        "<!doctype html><meta charset='utf-8'><title>Lesson 08 leaderboard</title>\n"
        "<style>body{font-family:sans-serif}td,th{padding:2px 10px;text-align:left}"
        "tr:nth-child(even){background:#f4f4f4}</style>\n"
        f"<h1>Lesson 08 leaderboard</h1><p>{scored} of {len(rows)} checkpoints scored on "
        f"{html.escape(heldout_name)} (bits per byte, computed by the grader; lower is better). "
        "Tokens/s and MFU are <b>reported</b> by each student's run log, not measured.</p>\n"
        "<table><tr><th>rank</th><th>student</th><th>val bits/byte</th><th>parameters</th>"
        "<th>tokens/s (reported)</th><th>MFU (reported)</th><th>problem</th></tr>\n"
        f"{body}\n</table>\n"
    )


def leaderboard(
    root: Path,
    heldout: Path,
    out: Path | None = None,
    *,
    max_mb: float = 50.0,
    max_heldout_bytes: int = 1_000_000,
    limits: sb.Limits | None = None,
    allow_unsandboxed: bool = False,
) -> list[Row]:
    """Evaluate every student's checkpoint and write the page and the CSV; returns the rows."""
    sb.require(allow_unsandboxed)
    limits = limits or sb.Limits(memory_bytes=3 * 2**30, notebook_timeout_s=120)
    text = heldout.read_bytes()[:max_heldout_bytes]
    out = out or root / "leaderboard"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="leaderboard-") as work:
        for student in students(root):
            try:
                row = evaluate_student(
                    root,
                    student,
                    text,
                    max_bytes=int(max_mb * 2**20),
                    limits=limits,
                    allow_unsandboxed=allow_unsandboxed,
                    work=Path(work),
                )
            except Exception as exc:  # noqa: BLE001 - one student's failure never stops the page
                row = Row(student, problem=f"the grader failed: {type(exc).__name__}: {exc}"[:300])
            rows.append(row)
    rows = rank(rows)
    write_csv(rows, out / "leaderboard.csv")
    write_html(rows, out / "leaderboard.html", heldout.name)
    return rows
