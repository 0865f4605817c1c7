"""What comes out of grading: feedback pages, grade exports and the class report.

Everything is built from the per-student result files in `results/` (the truth; see
`autograder.results`), which hold verdicts (names, pass/fail, messages without expected values)
and never the hidden tests' source. Every piece of text that came from a submission is
HTML-escaped.
"""

from __future__ import annotations

import csv
import html
import json
import statistics
from collections import defaultdict
from pathlib import Path

from autograder import coursedir, integrity
from autograder.results import SEVERITIES, ExerciseVerdict, GradingResult
from autograder.sandbox import NO_SANDBOX_WARNING

STYLE = """<style>
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;width:100%;margin:1rem 0}
td,th{border:1px solid #ddd;padding:.35rem .5rem;text-align:left;vertical-align:top}
.ok{color:#1b7f3b}.bad{color:#b00020}.muted{color:#666}.sev-high{color:#b00020}
code{background:#f4f4f4;padding:0 .2rem}</style>"""


def load_results(root: Path, lessons: list[str] | None = None) -> list[GradingResult]:
    """Every current result (students no longer submitted were moved to results/.stale/)."""
    from autograder.grading import load_result

    results = []
    for path in sorted((root / "results").glob("*/*.json")):
        if path.parent.name.startswith(".") or (lessons and path.parent.name not in lessons):
            continue
        result = load_result(path)
        if result is not None:
            results.append(result)
    return results


def _e(text) -> str:
    return html.escape(str(text))


# ---------------------------------------------------------------- feedback


def feedback_html(result: GradingResult) -> str:
    """The student's page: verdicts and hints, never the hidden tests' source or their
    expected values, every piece of text from the submission escaped."""
    parts = [
        f"<!doctype html><meta charset=utf-8><title>{_e(result.lesson)} · "
        f"{_e(result.student)}</title>{STYLE}",
        f"<h1>{_e(result.lesson)}: {result.score:g} / {result.max_score:g} points</h1>",
        f"<p class=muted>Student {_e(result.student)} · notebook {_e(result.notebook)}</p>",
    ]
    if result.status != "graded":
        parts.append(f"<p class=bad><b>Not graded:</b> {_e(result.reason)}</p>")
    parts += [f"<p class=muted>Note: {_e(note)}</p>" for note in result.notes]
    parts += _run_problems(result.execution)
    parts.append("<table><tr><th>Test</th><th>Points</th><th>Hidden checks</th></tr>")
    for gid, cell in result.cells.items():
        mark = "ok" if cell.passed else "bad"
        checks = [_exercise_html(ex) for ex in cell.exercises]
        if cell.reason and not checks:
            checks.append(_e(cell.reason))
        parts.append(
            f"<tr><td><code>{_e(gid)}</code></td><td class={mark}>{cell.points:g} / "
            f"{cell.max_points:g}</td><td>{''.join(checks)}</td></tr>"
        )
    parts.append("</table>")
    if result.warnings:
        parts.append(
            "<h2>Warnings your code printed</h2><p class=muted>Shown for your "
            "information; they did not change any score.</p>"
        )
        parts.extend(f"<pre>{_e(w)}</pre>" for w in result.warnings)
    return "\n".join(parts)


def _run_problems(execution: dict) -> list[str]:
    """What went wrong while the notebook ran, in a student's words."""
    parts = []
    first = execution.get("first_error")
    if first:
        meaning = f" — {_e(first['meaning'])}" if first.get("meaning") else ""
        parts.append(
            f"<p class=bad>The first cell that failed was <code>{_e(first['cell'])}</code>: "
            f"<code>{_e(first['error'])}</code>{meaning}.</p>"
        )
    if execution.get("timeouts"):
        parts.append(
            f"<p class=bad>Cells stopped by the time limit: {_e(execution['timeouts'])}.</p>"
        )
    if execution.get("restarts"):
        parts.append(
            "<p class=bad>A cell kept running after the grader interrupted it (a bare "
            "<code>except:</code> catches the interrupt too), so the grader restarted your "
            "notebook's kernel, ran the earlier cells again and went on.</p>"
        )
    if execution.get("limit_hit"):
        parts.append(f"<p class=bad>{_e(integrity.limit_text(execution['limit_hit']))}</p>")
    elif execution.get("kernel_died"):
        parts.append(
            "<p class=bad>The kernel stopped while running your notebook (an exit or a crash).</p>"
        )
    if execution.get("timed_out"):
        parts.append("<p class=bad>The notebook ran past the grader's time limit.</p>")
    return parts


def _exercise_html(exercise: ExerciseVerdict) -> str:
    rows = []
    for probe in exercise.probes:
        mark, sign = ("ok", "✔") if probe.passed else ("bad", "✘")
        message = f" — {_e(probe.message)}" if probe.message else ""
        hint = f"<br><i>looks like:</i> {_e(probe.looks_like)}" if probe.looks_like else ""
        rows.append(f"<li class={mark}>{sign} {_e(probe.name)}{message}{hint}</li>")
    extra = ""
    if exercise.looks_like:
        extra += f"<p><i>This looks like a known mistake:</i> {_e(exercise.looks_like)}</p>"
    if exercise.note:
        extra += f"<p class=muted>{_e(exercise.note)}</p>"
    return f"<b>{_e(exercise.title or exercise.exercise)}</b><ul>{''.join(rows)}</ul>{extra}"


def write_feedback(root: Path, lessons: list[str] | None = None) -> list[Path]:
    written = []
    for result in load_results(root, lessons):
        path = root / "feedback" / result.student / result.lesson / "feedback.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()
        path.write_text(feedback_html(result))
        written.append(path)
    return written


# ---------------------------------------------------------------- export


def export(root: Path, lessons: list[str] | None = None) -> tuple[Path, Path]:
    """nbgrader's own CSV, and a wide CSV (one row per student) for an LMS import."""
    out = root / "exports"
    out.mkdir(parents=True, exist_ok=True)
    nbgrader_csv = out / "nbgrader_grades.csv"
    course = coursedir.CourseDir(root.resolve())
    coursedir.nbgrader(course, "export", f"--to={nbgrader_csv}")
    results = load_results(root, lessons)
    chosen = sorted({r.lesson for r in results})
    maxima = {r.lesson: r.max_score for r in results}
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for r in results:
        table[r.student][r.lesson] = r.score
    lms_csv = out / "lms_grades.csv"
    with open(lms_csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "Student ID",
                *(f"{lesson} ({maxima[lesson]:g} pts)" for lesson in chosen),
                "Total",
                "Possible",
            ]
        )
        for student in sorted(table):
            scores = [table[student].get(lesson, 0.0) for lesson in chosen]
            writer.writerow(
                [
                    student,
                    *(f"{s:g}" for s in scores),
                    f"{sum(scores):g}",
                    f"{sum(maxima.values()):g}",
                ]
            )
    return nbgrader_csv, lms_csv


# ---------------------------------------------------------------- class report


def _histogram(results: list[GradingResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot(1, 1, 1)
    by_lesson = defaultdict(list)
    for r in results:
        by_lesson[r.lesson].append(r.score)
    for lesson, scores in sorted(by_lesson.items()):
        ax.hist(scores, bins=20, alpha=0.6, label=lesson)
    ax.set_xlabel("score")
    ax.set_ylabel("students")
    ax.set_title("Score distribution")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")


_RANK = {s: i for i, s in enumerate(SEVERITIES)}


def integrity_by_student(results: list[GradingResult]) -> list[dict]:
    """Findings grouped by student, most severe first: one entry per (student, severity)."""
    grouped: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        for f in r.findings:
            grouped[r.student].append({"lesson": r.lesson, **f.to_dict()})
    out = []
    for student, findings in grouped.items():
        findings.sort(key=lambda f: (_RANK.get(f["severity"], 9), f["lesson"], f["cell"]))
        worst = findings[0]["severity"]
        out.append({"student": student, "severity": worst, "findings": findings})
    out.sort(key=lambda x: (_RANK.get(x["severity"], 9), x["student"]))
    return out


def summarise(results: list[GradingResult], root: Path | None = None) -> dict:
    pass_rate: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        if r.status == "graded":
            for gid, cell in r.cells.items():
                pass_rate[f"{r.lesson}/{gid}"].append(cell.passed)
    scores = [r.score for r in results if r.status == "graded"]
    return {
        "submissions": len(results),
        "graded": len(scores),
        "not_graded": [
            {"student": r.student, "lesson": r.lesson, "status": r.status, "reason": r.reason}
            for r in results
            if r.status != "graded"
        ],
        "mean_score": statistics.fmean(scores) if scores else None,
        "pass_rate": {k: sum(v) / len(v) for k, v in sorted(pass_rate.items())},
        "slowest": sorted(
            ({"student": r.student, "lesson": r.lesson, "seconds": r.seconds} for r in results),
            key=lambda x: -x["seconds"],
        )[:10],
        "integrity": integrity_by_student(results),
        "unsandboxed": sorted({r.student for r in results if r.isolation in ("rlimits", "none")}),
        "collect_problems": _collect_problems(root) if root else [],
        "seeds": sorted({r.seed for r in results if r.seed is not None}),
    }


def _collect_problems(root: Path) -> list[dict]:
    try:
        from autograder.submissions import collect_problems
    except ImportError:
        return []
    return collect_problems(root)


def write_report(root: Path, lessons: list[str] | None = None) -> Path:
    results = load_results(root, lessons)
    summary = summarise(results, root)
    out = root / "reports"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    if results:
        _histogram(results, out / "histogram.png")
    page = [
        f"<!doctype html><meta charset=utf-8><title>Class report</title>{STYLE}",
        "<h1>Class report</h1>",
        f"<p>{summary['graded']} of {summary['submissions']} submissions graded; mean score "
        f"{summary['mean_score'] or 0:.2f}.</p>",
    ]
    if summary["unsandboxed"]:
        page.append(f"<p class=bad><b>Warning:</b> {_e(NO_SANDBOX_WARNING)}</p>")
    page.append("<img src=histogram.png alt='score histogram'>")
    page += _table(
        "Not graded",
        ["Student", "Lesson", "Why"],
        [
            [x["student"], x["lesson"], f"{x['status']}: {x['reason']}"]
            for x in summary["not_graded"]
        ],
    )
    page += _table(
        "Files offered but not graded (collect)",
        ["File", "Why"],
        [[x.get("file", ""), x.get("reason", "")] for x in summary["collect_problems"]],
    )
    page += _table(
        "Pass rate per test",
        ["Test", "Pass rate"],
        [[k, f"{v:.0%}"] for k, v in summary["pass_rate"].items()],
    )
    page += _table(
        "Slowest notebooks",
        ["Student", "Lesson", "Seconds"],
        [[x["student"], x["lesson"], f"{x['seconds']:.1f}"] for x in summary["slowest"]],
    )
    page.append(
        "<h2>Integrity findings</h2><p class=muted>For review; never penalised by themselves "
        "(every verdict is decided outside the student's process, so tampering only loses "
        "points). High: an attempt to get around the grader; medium: worth a look; low: usually "
        "innocent.</p>"
    )
    for group in summary["integrity"]:
        page.append(
            f"<h3 class=sev-{group['severity']}>{_e(group['student'])} "
            f"<small>({_e(group['severity'])})</small></h3><ul>"
        )
        page += [
            f"<li><b>{_e(f['severity'])}</b> · {_e(f['lesson'])} · {_e(f['cell'])}:{f['line']} · "
            f"{_e(f['kind'])}: {_e(f['detail'])}</li>"
            for f in group["findings"]
        ]
        page.append("</ul>")
    (out / "report.html").write_text("\n".join(page))
    return out / "report.html"


def _table(title: str, header: list[str], rows: list[list]) -> list[str]:
    if not rows:
        return [f"<h2>{_e(title)}</h2><p class=muted>None.</p>"]
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = ["<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows]
    return [f"<h2>{_e(title)}</h2><table><tr>{head}</tr>", *body, "</table>"]


def report_text(root: Path, lessons: list[str] | None = None) -> str:
    summary = summarise(load_results(root, lessons), root)
    lines = [
        f"{summary['graded']}/{summary['submissions']} graded, mean score "
        f"{summary['mean_score'] or 0:.2f}"
    ]
    if summary["unsandboxed"]:
        lines.append(f"WARNING: {NO_SANDBOX_WARNING}")
    lines += [
        f"not graded: {x['student']}/{x['lesson']}: {x['status']}: {x['reason']}"
        for x in summary["not_graded"]
    ]
    lines += [
        f"not collected: {x.get('file')}: {x.get('reason')}" for x in summary["collect_problems"]
    ]
    lines += [f"pass rate {k}: {v:.0%}" for k, v in summary["pass_rate"].items()]
    for group in summary["integrity"]:
        lines.append(f"integrity [{group['severity']}] {group['student']}:")
        lines += [
            f"  {f['severity']:6s} {f['lesson']} {f['cell']}:{f['line']} {f['kind']}: {f['detail']}"
            for f in group["findings"]
        ]
    return "\n".join(lines)
