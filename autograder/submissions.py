"""Which notebook of a submission is graded, which student ids are usable, and what collect did.

Three things the collector (`autograder.collect`), the grader's discovery (`grading.discover`)
and the class report share:

- `choose_notebook`: a submission folder may hold several notebooks (the untouched release
  beside the worked copy, `softmax.ipynb` beside `softmax_final.ipynb`). The one graded is the
  one with answers, then the one with the expected name, then the newest; every other file is
  named in the note with the reason it was not graded. An untouched release is never preferred
  silently.
- `student_id_problem`: student ids are Unicode (nbgrader's gradebook stores any string); only
  what is unsafe as a folder name is refused, with the reason.
- the collect ledger, `<root>/reports/collect-ledger.jsonl`: one JSON line per `collect` run,
  appended, never rewritten, listing every member offered (file or folder) with its outcome.
  `current_submissions` and `collect_problems` read it back for the grader and the report.
"""

from __future__ import annotations

import ast
import functools
import json
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder.nbgrader_config import REPO
from autograder.sanitize import MAX_NOTEBOOK_BYTES, UnreadableNotebook, read_submission

LEDGER = Path("reports") / "collect-ledger.jsonl"
MAX_ID_CHARS = 100
# NAME_MAX is 255 bytes on Linux and macOS; 100 four-byte characters would not fit.
MAX_ID_BYTES = 200


# ---------------------------------------------------------------- student ids


def normalize_id(raw: str) -> str:
    """`raw` in Unicode NFC, the form a folder name is compared and stored in."""
    return unicodedata.normalize("NFC", raw)


def student_id_problem(raw: str) -> str | None:
    """Why `raw` cannot be a student id (a folder name under submitted/), or None if it can.

    Letters of any script are fine (`josé`, `李雷`, `Anna Smith`); refused are ids that are
    empty, `.`/`..`, start with `.` (hidden) or `-` (read as an option by command-line
    tools), hold a path separator, a NUL or another control character or an invisible
    formatting character (bidirectional overrides can make one id display as another),
    start or end with white space, or are longer than 100 characters / 200 UTF-8 bytes.
    """
    if not raw:
        return "the id is empty"
    if raw in (".", ".."):
        return f"{raw!r} names a folder, not a student"
    if raw.startswith("."):
        return "it starts with '.', which would hide the student's folder"
    if raw.startswith("-"):
        return "it starts with '-', which command-line tools read as an option"
    if "/" in raw or "\\" in raw:
        return "it contains a path separator ('/' or '\\')"
    for char in raw:
        category = unicodedata.category(char)
        if category == "Cc":
            return f"it contains the control character U+{ord(char):04X}"
        if category in ("Cf", "Zl", "Zp"):
            return f"it contains the invisible formatting character U+{ord(char):04X}"
    if raw != raw.strip():
        return "it starts or ends with white space"
    if len(raw) > MAX_ID_CHARS:
        return f"it is {len(raw)} characters long (at most {MAX_ID_CHARS})"
    if len(raw.encode("utf-8")) > MAX_ID_BYTES:
        return f"it is too long for a folder name (at most {MAX_ID_BYTES} UTF-8 bytes)"
    return None


# ---------------------------------------------------------------- files that are not candidates


def junk_reason(name: str, is_dir: bool = False, is_symlink: bool = False) -> str | None:
    """Why the file or folder `name` is never a submission, or None for a `.ipynb` file."""
    if is_symlink:
        return "a symbolic link (never followed)"
    if name == ".ipynb_checkpoints":
        return "Jupyter's autosave folder"
    if name == "__MACOSX":
        return "macOS archive metadata"
    if name.startswith("."):
        return "a hidden folder" if is_dir else "a hidden file"
    if is_dir:
        if name.lower().endswith(".ipynb"):
            return "a folder named like a notebook"
        return "a folder (notebooks inside sub-folders are not looked at)"
    if name.endswith("-checkpoint.ipynb"):
        return "a Jupyter autosave checkpoint"
    if not name.lower().endswith(".ipynb"):
        return "not a notebook (.ipynb)"
    return None


# ---------------------------------------------------------------- answers in a notebook


@dataclass(frozen=True)
class _Release:
    stubs: dict[str, str]  # grade_id of an answer cell -> its source as released
    functions: dict[str, str]  # function defined by an answer cell -> that cell's grade_id
    cells: frozenset[str]  # every released cell's source, normalised


def _meta(cell) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader", {}) if isinstance(cell, dict) else {}
    return meta if isinstance(meta, dict) else {}


def _source(cell) -> str:
    source = cell.get("source", "") if isinstance(cell, dict) else ""
    return "".join(source) if isinstance(source, list) else str(source)


def _normal(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines() if line.strip())


def _defined_functions(source: str) -> list[ast.FunctionDef]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    return [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


@functools.lru_cache(maxsize=32)
def _release(lesson: str, name: str) -> _Release:
    """The blank notebook as handed out (course/<lesson>/<name>), empty if there is none."""
    path = REPO / "course" / lesson / name
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError):
        return _Release({}, {}, frozenset())
    stubs, functions = {}, {}
    for cell in nb.cells:
        meta = _meta(cell)
        if cell.cell_type == "code" and meta.get("solution") and not meta.get("grade"):
            stubs[meta["grade_id"]] = cell.source
            for fn in _defined_functions(cell.source):
                functions[fn.name] = meta["grade_id"]
    cells = frozenset(_normal(c.source) for c in nb.cells if c.source.strip())
    return _Release(stubs, functions, cells)


def _placeholder(node: ast.stmt) -> bool:
    """A statement of a stub: docstring, `pass`, `...` or `raise NotImplementedError`."""
    if isinstance(node, ast.Pass | ast.Import | ast.ImportFrom):
        return True
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
        return isinstance(node.value.value, str) or node.value.value is Ellipsis
    if isinstance(node, ast.Raise) and node.exc is not None:
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return False


def _stub_body(fn: ast.FunctionDef) -> bool:
    return all(_placeholder(node) for node in fn.body)


def _is_stub(source: str, stub: str) -> bool:
    """True when `source` is the released stub, perhaps with comments or spacing changed."""
    if _normal(source) == _normal(stub):
        return True
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False  # something was typed, even if it does not parse
    return all(
        _stub_body(n) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) else _placeholder(n)
        for n in tree.body
    )


def count_answers(nb: dict, lesson: str, name: str) -> int:
    """How many answers `nb` holds against the release course/<lesson>/<name>.

    An answer is an answer cell (nbgrader `solution: true`, not `grade: true`) whose source
    is not the released stub, or a function of an answer cell defined with a real body in a
    cell without nbgrader metadata (Colab and some editors strip it), or a non-empty code
    cell the learner added. Returns a count >= 0; 0 for the untouched release.
    """
    release = _release(lesson, name)
    answered: set[str] = set()
    added = 0
    cells = nb.get("cells", []) if isinstance(nb, dict) else []
    for cell in cells if isinstance(cells, list) else []:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source, gid = _source(cell), _meta(cell).get("grade_id")
        if gid in release.stubs:
            if not _is_stub(source, release.stubs[gid]):
                answered.add(gid)
            continue
        if _meta(cell).get("grade") or _meta(cell).get("locked") or not source.strip():
            continue
        if _normal(source) in release.cells:
            continue
        matched = [f for f in _defined_functions(source) if f.name in release.functions]
        if matched:
            answered.update(release.functions[f.name] for f in matched if not _stub_body(f))
        else:
            added += 1
    return len(answered) + added


# ---------------------------------------------------------------- choosing the notebook


@dataclass
class Choice:
    """The notebook to grade for one expected name, and what was passed over.

    path: the file to grade, None when there is none; note: one line for the grading
    result ("" when the expected file was the only candidate); ignored: (file name, reason)
    for every other entry of the folder.
    """

    path: Path | None
    note: str
    ignored: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Candidate:
    path: Path
    mtime: float
    answers: int = 0
    problem: str | None = None


def _lesson_notebook_names(lesson: str) -> set[str]:
    return {p.name for p in (REPO / "solutions" / lesson).glob("*.ipynb")}


def _scan(folder: Path, expected: str, lesson: str) -> tuple[list[_Candidate], list]:
    """Candidate notebooks of `folder` and (name, reason) of everything else."""
    others = _lesson_notebook_names(lesson) - {expected}  # graded as their own jobs
    candidates, ignored = [], []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        try:
            info = entry.lstat()
        except OSError as exc:
            ignored.append((entry.name, f"cannot be read ({exc.strerror})"))
            continue
        if entry.name in others:
            continue
        link, is_dir = stat.S_ISLNK(info.st_mode), stat.S_ISDIR(info.st_mode)
        reason = junk_reason(entry.name, is_dir=is_dir, is_symlink=link)
        if reason is None and not stat.S_ISREG(info.st_mode):
            reason = "not a regular file"
        if reason:
            ignored.append((entry.name, reason))
        else:
            candidates.append(_Candidate(entry, info.st_mtime))
    return candidates, ignored


def load_notebook(path: Path) -> dict:
    """The notebook at `path` as JSON, for looking at it (not for running it).

    A plainly readable file (UTF-8 JSON with a list of cells, at most 20 MiB) is parsed
    with `json` alone, which is many times faster than nbformat's conversion; anything else
    goes through `sanitize.read_submission`, whose UnreadableNotebook says why the grader
    will not read it. Raises UnreadableNotebook or OSError.
    """
    if path.stat().st_size <= MAX_NOTEBOOK_BYTES:
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("cells"), list):
            return data
    return read_submission(path)


def _analyse(candidate: _Candidate, expected: str, lesson: str) -> None:
    try:
        nb = load_notebook(candidate.path)
    except UnreadableNotebook as exc:
        candidate.problem = str(exc)
        return
    except OSError as exc:
        candidate.problem = f"cannot be read ({exc.strerror})"
        return
    candidate.answers = count_answers(nb, lesson, expected)


def _rank(candidate: _Candidate, expected: str) -> tuple:
    name = candidate.path.name
    return (candidate.answers > 0, name == expected, candidate.mtime, name)


def _why_not(loser: _Candidate, winner: _Candidate, expected: str) -> str:
    if winner.answers > 0 and loser.answers == 0:
        return "no answers in it (same as the blank release)"
    if winner.path.name == expected and loser.path.name != expected:
        return f"not named {expected} (which is graded)"
    if loser.mtime < winner.mtime:
        return f"older than {winner.path.name}"
    # Exports often stamp every file with one time; a later version's name tends to sort later.
    return f"as old as {winner.path.name}, whose name sorts later"


def _ignored_text(ignored: list[tuple[str, str]]) -> str:
    return "; ".join(f"ignored {name}: {reason}" for name, reason in ignored)


def choose_notebook(folder: Path, expected_name: str, lesson: str) -> Choice:
    """The notebook of `folder` to grade as `expected_name` of `lesson`, and why.

    Candidates are the folder's own `.ipynb` files (not hidden, not checkpoints, not
    symbolic links, not folders; files named like another notebook of the lesson are left
    to that notebook). Readable candidates are ranked by: holds answers
    (`count_answers` > 0), has the expected name, newest modification time, then the name
    that sorts last.
    When no candidate is readable the expected-named (else newest) unreadable one is
    returned so that the grader reports why it is unreadable. Never raises for anything in
    the folder; a missing folder gives `Choice(None, ...)`.
    """
    missing = f"no notebook {expected_name} in the submission"
    if not folder.is_dir():
        return Choice(None, missing)
    candidates, ignored = _scan(folder, expected_name, lesson)
    if not ignored and len(candidates) == 1 and candidates[0].path.name == expected_name:
        return Choice(candidates[0].path, "")
    for candidate in candidates:
        _analyse(candidate, expected_name, lesson)
    readable = [c for c in candidates if c.problem is None]
    broken = [c for c in candidates if c.problem is not None]
    if not readable:
        if not broken:
            tail = _ignored_text(ignored)
            return Choice(None, f"{missing}; {tail}" if tail else missing, ignored)
        chosen = max(broken, key=lambda c: (c.path.name == expected_name, c.mtime, c.path.name))
        ignored += [(c.path.name, f"unreadable: {c.problem}") for c in broken if c is not chosen]
        note = f"no readable notebook; graded {chosen.path.name} to report why it is unreadable"
        return Choice(chosen.path, "; ".join(filter(None, [note, _ignored_text(ignored)])), ignored)
    readable.sort(key=lambda c: _rank(c, expected_name), reverse=True)
    chosen = readable[0]
    passed = [(c.path.name, _why_not(c, chosen, expected_name)) for c in readable[1:]]
    passed += [(c.path.name, f"unreadable: {c.problem}") for c in broken]
    ignored = passed + ignored
    if chosen.path.name == expected_name and not ignored:
        return Choice(chosen.path, "")
    head = f"graded {chosen.path.name}"
    if chosen.path.name != expected_name:
        named = any(c.path.name == expected_name for c in candidates)
        head += f" as {expected_name}" + ("" if named else " (wrong file name)")
    return Choice(chosen.path, "; ".join(filter(None, [head, _ignored_text(ignored)])), ignored)


# ---------------------------------------------------------------- what collect did


def ledger_path(root: Path) -> Path:
    """`root`/reports/collect-ledger.jsonl: one JSON object per collect run, appended."""
    return Path(root) / LEDGER


def collect_history(root: Path) -> list[dict]:
    """Every collect run recorded under `root`, oldest first (one dict per ledger line).

    A run has: run (1, 2, ...), at (epoch seconds), source, layout, lesson, replace (bool),
    status ("done" or "stopped"), reason (why it stopped), removed ([{student, lesson}]
    that `--replace` took out of submitted/) and entries (one per member offered, see
    `collect_problems`). A line that is not valid JSON becomes a run with status
    "unreadable", so that damage to the ledger is reported rather than skipped.
    """
    path = ledger_path(root)
    if not path.exists():
        return []
    runs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            run = json.loads(line)
            if not isinstance(run, dict):
                raise ValueError("not an object")
        except ValueError:
            run = {"status": "unreadable", "line": number, "entries": []}
        runs.append(run)
    return runs


def current_runs(root: Path) -> list[dict]:
    """The finished runs that built today's submitted/: those since the last `--replace`."""
    runs = [r for r in collect_history(root) if r.get("status") == "done"]
    starts = [i for i, r in enumerate(runs) if r.get("replace")]
    return runs[starts[-1] :] if starts else runs


def current_submissions(root: Path) -> set[tuple[str, str]]:
    """{(student, lesson)} of every folder submitted/<student>/<lesson>/ under `root`.

    Read from the folders themselves, so submissions copied in by hand count too, and a
    `collect --replace` (which empties submitted/ first) removes the earlier ones. The
    grader drops results of (student, lesson) pairs no longer in this set. Hidden folders
    and symbolic links are not students.
    """
    found = set()
    base = Path(root) / "submitted"
    if not base.is_dir():
        return found
    for student in base.iterdir():
        if student.name.startswith(".") or student.is_symlink() or not student.is_dir():
            continue
        for lesson in student.iterdir():
            if lesson.name.startswith(".") or lesson.is_symlink() or not lesson.is_dir():
                continue
            found.add((student.name, lesson.name))
    return found


def collect_problems(root: Path) -> list[dict]:
    """Every member offered to the collects that built submitted/ and not imported.

    One dict per member: run (the collect's number), source (the folder or zip it came
    from), member (its path inside the source), kind ("file", "dir", "symlink", "other"),
    outcome ("skipped"), reason (one line: why it was not imported), and where the collect
    could tell, student and lesson. Folders whose files are listed themselves are not
    problems; empty folders are. Unreadable ledger lines appear as one problem each. For
    the class report, so that every file offered is either graded or listed.
    """
    problems = []
    for run in collect_history(root):
        if run.get("status") == "unreadable":
            problems.append(
                {
                    "run": None,
                    "source": str(ledger_path(root)),
                    "member": f"line {run['line']}",
                    "kind": "ledger",
                    "outcome": "skipped",
                    "reason": "this line of the collect ledger is not valid JSON",
                }
            )
    for run in current_runs(root):
        for entry in run.get("entries", []):
            if entry.get("outcome") in ("imported", "folder"):
                continue
            problems.append({"run": run.get("run"), "source": run.get("source"), **entry})
    return problems
