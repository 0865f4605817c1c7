"""What comes out of grading: feedback pages, grade exports and the class report.

Everything is built from the per-student result files in `results/`, which hold verdicts
(names, pass/fail, messages) and never the hidden tests' source. Every piece of text that
came from a submission is HTML-escaped.
"""

from __future__ import annotations

import csv
import html
import json
import statistics
from collections import defaultdict
from pathlib import Path

from autograder import coursedir
from autograder.sandbox import NO_SANDBOX_WARNING

STYLE = """<style>
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;width:100%;margin:1rem 0}
td,th{border:1px solid #ddd;padding:.35rem .5rem;text-align:left;vertical-align:top}
.ok{color:#1b7f3b}.bad{color:#b00020}.muted{color:#666}
code{background:#f4f4f4;padding:0 .2rem}</style>"""


def load_results(root: Path, lessons: list[str] | None = None) -> list[dict]:
    results = []
    for path in sorted((root / "results").glob("*/*.json")):
        if lessons and path.parent.name not in lessons:
            continue
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return results


def _e(text) -> str:
    return html.escape(str(text))


# ---------------------------------------------------------------- feedback


def feedback_html(result: dict) -> str:
    parts = [
        f"<!doctype html><meta charset=utf-8><title>{_e(result['lesson'])} · "
        f"{_e(result['student'])}</title>{STYLE}",
        f"<h1>{_e(result['lesson'])}: {result['score']:g} / {result['max_score']:g} points</h1>",
        f"<p class=muted>Student {_e(result['student'])} · notebook {_e(result['notebook'])}</p>",
    ]
    if result.get("status") != "graded":
        parts.append(f"<p class=bad><b>Not graded:</b> {_e(result.get('reason', ''))}</p>")
    for note in result.get("notes", []):
        parts.append(f"<p class=muted>Note: {_e(note)}</p>")
    execution = result.get("execution", {})
    if execution.get("timeouts"):
        parts.append(
            f"<p class=bad>Cells stopped by the time limit: {_e(execution['timeouts'])}</p>"
        )
    if execution.get("kernel_died"):
        parts.append(
            "<p class=bad>The kernel died while running your notebook "
            "(an exit, a crash, or running out of memory).</p>"
        )
    parts.append("<table><tr><th>Test</th><th>Points</th><th>Hidden checks</th></tr>")
    for gid, cell in result.get("cells", {}).items():
        mark = "ok" if cell["passed"] else "bad"
        checks = [_exercise_html(ex) for ex in cell.get("exercises", [])]
        if cell.get("reason") and not checks:
            checks.append(_e(cell["reason"]))
        parts.append(
            f"<tr><td><code>{_e(gid)}</code></td><td class={mark}>{cell['points']:g} / "
            f"{cell['max']:g}</td><td>{''.join(checks)}</td></tr>"
        )
    parts.append("</table>")
    if result.get("warnings"):
        parts.append(
            "<h2>Warnings your code printed</h2><p class=muted>Shown for your "
            "information; they did not change any score.</p>"
        )
        parts.extend(f"<pre>{_e(w)}</pre>" for w in result["warnings"])
    return "\n".join(parts)


def _exercise_html(exercise: dict) -> str:
    rows = []
    for probe in exercise.get("probes", []):
        mark, sign = ("ok", "✔") if probe["passed"] else ("bad", "✘")
        message = f" — {_e(probe['message'])}" if probe.get("message") else ""
        rows.append(f"<li class={mark}>{sign} {_e(probe['name'])}{message}</li>")
    return f"<b>{_e(exercise.get('title', exercise.get('exercise')))}</b><ul>{''.join(rows)}</ul>"


def write_feedback(root: Path, lessons: list[str] | None = None) -> list[Path]:
    written = []
    for result in load_results(root, lessons):
        path = root / "feedback" / result["student"] / result["lesson"] / "feedback.html"
        path.parent.mkdir(parents=True, exist_ok=True)
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
    chosen = sorted({r["lesson"] for r in results})
    maxima = {r["lesson"]: r["max_score"] for r in results}
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for r in results:
        table[r["student"]][r["lesson"]] = r["score"]
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


def _histogram(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot(1, 1, 1)
    by_lesson = defaultdict(list)
    for r in results:
        by_lesson[r["lesson"]].append(r["score"])
    for lesson, scores in sorted(by_lesson.items()):
        ax.hist(scores, bins=20, alpha=0.6, label=lesson)
    ax.set_xlabel("score")
    ax.set_ylabel("students")
    ax.set_title("Score distribution")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")


def summarise(results: list[dict]) -> dict:
    pass_rate: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        if r.get("status") == "graded":
            for gid, cell in r["cells"].items():
                pass_rate[f"{r['lesson']}/{gid}"].append(cell["passed"])
    scores = [r["score"] for r in results if r.get("status") == "graded"]
    return {
        "submissions": len(results),
        "graded": len(scores),
        "not_graded": [
            {
                "student": r["student"],
                "lesson": r["lesson"],
                "status": r.get("status"),
                "reason": r.get("reason", ""),
            }
            for r in results
            if r.get("status") != "graded"
        ],
        "mean_score": statistics.fmean(scores) if scores else None,
        "pass_rate": {k: sum(v) / len(v) for k, v in sorted(pass_rate.items())},
        "slowest": sorted(
            (
                {"student": r["student"], "lesson": r["lesson"], "seconds": r.get("seconds", 0)}
                for r in results
            ),
            key=lambda x: -x["seconds"],
        )[:10],
        "integrity": [
            {"student": r["student"], "lesson": r["lesson"], **f}
            for r in results
            for f in r.get("findings", [])
        ],
        "unsandboxed": sorted(
            {r["student"] for r in results if r.get("isolation") in ("none", "rlimits")}
        ),
    }


def write_report(root: Path, lessons: list[str] | None = None) -> Path:
    results = load_results(root, lessons)
    summary = summarise(results)
    out = root / "reports"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
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
    page.append("<h2>Not graded</h2><table><tr><th>Student</th><th>Lesson</th><th>Why</th></tr>")
    page += [
        f"<tr><td>{_e(x['student'])}</td><td>{_e(x['lesson'])}</td><td>{_e(x['status'])}: "
        f"{_e(x['reason'])}</td></tr>"
        for x in summary["not_graded"]
    ]
    page.append(
        "</table><h2>Pass rate per test</h2><table><tr><th>Test</th><th>Pass rate</th></tr>"
    )
    page += [f"<tr><td>{_e(k)}</td><td>{v:.0%}</td></tr>" for k, v in summary["pass_rate"].items()]
    page.append(
        "</table><h2>Slowest notebooks</h2><table><tr><th>Student</th><th>Lesson</th>"
        "<th>Seconds</th></tr>"
    )
    page += [
        f"<tr><td>{_e(x['student'])}</td><td>{_e(x['lesson'])}</td><td>{x['seconds']:.1f}</td></tr>"
        for x in summary["slowest"]
    ]
    page.append(
        "</table><h2>Integrity findings (for review, not penalised)</h2><table><tr>"
        "<th>Student</th><th>Lesson</th><th>Cell</th><th>Finding</th></tr>"
    )
    page += [
        f"<tr><td>{_e(f['student'])}</td><td>{_e(f['lesson'])}</td><td>{_e(f['cell'])}:"
        f"{f['line']}</td><td>{_e(f['kind'])}: {_e(f['detail'])}</td></tr>"
        for f in summary["integrity"]
    ]
    page.append("</table>")
    (out / "report.html").write_text("\n".join(page))
    return out / "report.html"


def report_text(root: Path, lessons: list[str] | None = None) -> str:
    summary = summarise(load_results(root, lessons))
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
    lines += [f"pass rate {k}: {v:.0%}" for k, v in summary["pass_rate"].items()]
    lines += [
        f"integrity: {f['student']}/{f['lesson']} {f['cell']}:{f['line']} {f['kind']}: "
        f"{f['detail']}"
        for f in summary["integrity"]
    ]
    return "\n".join(lines)
