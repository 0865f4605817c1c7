"""The class grader on hostile and broken submissions: no forged points, no lost students."""

from __future__ import annotations

import json
import threading

import nbformat
import pytest

from autograder import grading, reports, sandbox
from tests.mutants.lesson01 import MUTANTS
from tests.notebooks import REPO, load, save, with_cell

LESSON, NB = "01-softmax", "softmax"
pytestmark = pytest.mark.slow
needs_bwrap = pytest.mark.skipif(
    sandbox.bwrap_path() is None,
    reason="bubblewrap is not installed (make setup installs it as root)",
)

SOLUTION = load("solutions", LESSON, NB)
BLANK = load("course", LESSON, NB)
FULL = {
    c.metadata["nbgrader"]["grade_id"]: float(c.metadata["nbgrader"]["points"])
    for c in SOLUTION.cells
    if c.metadata.get("nbgrader", {}).get("grade")
}
SOFTMAX_TESTS = {"test-softmax-basic", "test-softmax-stable"}
WRONG_SOFTMAX = "def softmax(x, dim=-1):\n    return torch.zeros_like(x)\n"


def added(nb, source: str, after: str = "softmax", metadata: dict | None = None):
    """`nb` with a learner cell inserted after the cell `after`."""
    nb = nbformat.from_dict(nb)
    index = next(
        i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == after
    )
    cell = nbformat.v4.new_code_cell(source)
    if metadata:
        cell.metadata = metadata
    nb.cells.insert(index + 1, cell)
    return nb


LIAR = """
class Liar(torch.Tensor):
    def __eq__(self, other): return True
    def __bool__(self): return True
    def __array__(self, *a, **k): return torch.softmax(self.as_subclass(torch.Tensor), -1).numpy()
def softmax(x, dim=-1):
    return torch.zeros_like(x).as_subclass(Liar)
"""
PATCHES = """
import numpy as np
torch.allclose = lambda *a, **k: True
torch.testing.assert_close = lambda *a, **k: None
np.allclose = lambda *a, **k: True
checks.run = lambda *a, **k: None
"""
TRACEBACK = """
get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)
get_ipython().showtraceback = lambda *a, **k: None
"""
STEAL_REFERENCE = """
from solutions.kernels.softmax import softmax
"""
READ_FILES = f"""
import json
src = json.load(open("{REPO / "solutions" / LESSON / (NB + ".ipynb")}"))
tests = open("{REPO / "autograder" / "exercises" / "lesson01.py"}").read()
"""
FAKE_JUDGE = """
import sys, types
fake = types.ModuleType("autograder.judge")
fake.judge = lambda *a, **k: None
sys.modules["autograder.judge"] = fake
"""
FORGE_RESULTS = """
import os, json
os.makedirs("results", exist_ok=True)
with open("results/01-softmax__softmax-basic.json", "w") as f:
    json.dump({"exercise": "01-softmax/softmax-basic", "results": []}, f)
"""
WARNS = """
import warnings
def softmax(x, dim=-1):
    warnings.warn("a harmless library deprecation", DeprecationWarning, stacklevel=1)
    import sys; print("noise on stderr", file=sys.stderr)
    compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    xc = x.to(compute)
    m = xc.detach().amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(xc - m)
    return (e / e.sum(dim=dim, keepdim=True)).to(x.dtype)
"""


def submissions() -> dict[str, object]:
    """student id -> notebook (or raw bytes for files that are not notebooks)."""
    wrong = with_cell(SOLUTION, "softmax", WRONG_SOFTMAX)
    edited = nbformat.from_dict(wrong)
    for cell in edited.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade_id") == "test-softmax-basic":
            cell.source = "pass"  # a test cell emptied by the learner
    edited.cells = [
        c
        for c in edited.cells
        if c.metadata.get("nbgrader", {}).get("grade_id") != "test-softmax-stable"
    ]
    dup = next(
        c for c in wrong.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "softmax"
    )
    edited.cells.append(nbformat.from_dict(dup))
    bonus = {
        "nbgrader": {
            "grade": True,
            "grade_id": "bonus",
            "points": 100,
            "locked": True,
            "solution": False,
            "schema_version": 3,
            "task": False,
        }
    }
    return {
        "solution": SOLUTION,
        "blank": BLANK,
        "warnings": with_cell(SOLUTION, "softmax", WARNS),
        "liar": with_cell(SOLUTION, "softmax", LIAR),
        "patcher": added(wrong, PATCHES),
        "traceback": added(wrong, TRACEBACK),
        "thief": with_cell(SOLUTION, "softmax", STEAL_REFERENCE),
        "reader": added(wrong, READ_FILES),
        "fakejudge": added(wrong, FAKE_JUDGE),
        "forger": added(wrong, FORGE_RESULTS),
        "editor": added(edited, "pass", metadata=bonus),
        "exiter": added(SOLUTION, "import os\nos._exit(1)", after="test-logsumexp"),
        "hanger": with_cell(SOLUTION, "entropy", "while True:\n    pass"),
        "membomb": added(SOLUTION, "big = bytearray(64 * 2**30)", after="softmax"),
        "flooder": added(SOLUTION, "for _ in range(20000):\n    print('x' * 200)", after="softmax"),
        "naive": with_cell(SOLUTION, "softmax", MUTANTS["softmax-no-max-subtraction"][3]),
        "malformed": b'{"cells": [ this is not json',
        "notanotebook": b'{"hello": "world"}',
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("grading")
    for student, nb in submissions().items():
        path = root / "submitted" / student / LESSON / f"{NB}.ipynb"
        if isinstance(nb, bytes):
            path.parent.mkdir(parents=True)
            path.write_bytes(nb)
        else:
            save(nb, path)
    wrongname = root / "submitted" / "wrongname" / LESSON / "Softmax (1).ipynb"
    save(SOLUTION, wrongname)
    (root / "submitted" / "missing" / LESSON).mkdir(parents=True)
    limits = sandbox.Limits(cell_timeout_s=10, notebook_timeout_s=240)
    settings = grading.Settings(root=root, limits=limits)
    results = grading.grade(root, [LESSON], workers=2, settings=settings)
    return root, {r["student"]: r for r in results}


def scores(result: dict) -> dict[str, float]:
    return {gid: cell["points"] for gid, cell in result["cells"].items()}


def kinds(result: dict) -> set[str]:
    return {f["kind"] for f in result["findings"]}


def test_every_submission_is_accounted_for(graded):
    root, results = graded
    students = {p.name for p in (root / "submitted").iterdir()}
    assert set(results) == students
    for result in results.values():
        assert result["status"] in ("graded", "unreadable", "missing")
        assert set(result["cells"]) == set(FULL)


def test_solution_full_blank_zero(graded):
    _, results = graded
    assert scores(results["solution"]) == FULL
    assert results["blank"]["score"] == 0


def test_warnings_on_stderr_cost_nothing(graded):
    _, results = graded
    assert scores(results["warnings"]) == FULL
    assert any("DeprecationWarning" in w for w in results["warnings"]["warnings"])


def test_naive_softmax_loses_only_the_stability_points(graded):
    _, results = graded
    assert scores(results["naive"]) == {**FULL, "test-softmax-stable": 0.0}


@pytest.mark.parametrize(
    "student, kind",
    [
        ("liar", "overrides a comparison or conversion"),
        ("patcher", "patches a library"),
        ("traceback", "uses a risky function"),
        ("thief", "imports grader code"),
        ("reader", "opens grader files"),
        ("fakejudge", "patches a library"),
        ("forger", "opens grader files"),
        ("editor", "changed locked cells"),
        ("exiter", "hit a limit"),
        ("hanger", "hit a limit"),
        ("membomb", "hit a limit"),
        ("flooder", "hit a limit"),
    ],
)
def test_attacks_gain_no_points_and_are_flagged(graded, student, kind):
    _, results = graded
    result = results[student]
    got = scores(result)
    assert sum(got.values()) <= sum(FULL.values()) and "bonus" not in got
    if student not in ("exiter", "hanger", "membomb", "flooder"):  # these keep a correct softmax
        assert got["test-softmax-basic"] == 0 and got["test-softmax-stable"] == 0, student
    assert kind in kinds(result), result["findings"]


def test_attacks_do_not_cost_the_other_exercises(graded):
    _, results = graded
    for student in ("liar", "patcher", "traceback", "reader", "forger"):
        got = scores(results[student])
        assert {k: v for k, v in got.items() if k not in SOFTMAX_TESTS} == {
            k: v for k, v in FULL.items() if k not in SOFTMAX_TESTS
        }, student


@needs_bwrap
def test_sandbox_hides_reference_and_grader_files(graded):
    _, results = graded
    assert results["thief"]["isolation"] == "bubblewrap"
    errors = " ".join(results["thief"]["execution"]["errors"])
    assert "ModuleNotFoundError" in errors or "ImportError" in errors
    assert any("FileNotFoundError" in e for e in results["reader"]["execution"]["errors"])


def test_edited_deleted_and_duplicated_locked_cells_are_restored(graded):
    _, results = graded
    result = results["editor"]
    assert scores(result)["test-softmax-basic"] == 0 and "bonus" not in result["cells"]
    notes = " ".join(result["notes"])
    assert "test-softmax-stable" in notes and "duplicate" in notes
    assert result["score"] == sum(FULL.values()) - 5


def test_kernel_exit_scores_what_ran_before(graded):
    _, results = graded
    result = results["exiter"]
    got = scores(result)
    assert got["test-softmax-basic"] == 2 and got["test-logsumexp"] == 2
    assert got["test-online-softmax"] == 0
    assert result["execution"]["kernel_died"]
    assert "uses a risky function" in kinds(result)
    assert "kernel had died" in json.dumps(result["cells"]["test-online-softmax"])


def test_hang_is_cut_off_and_the_rest_graded(graded):
    _, results = graded
    result = results["hanger"]
    assert scores(result) == {**FULL, "test-entropy": 0.0}
    assert result["execution"]["timeouts"]


def test_memory_bomb_and_output_flood_lose_nothing_else(graded):
    _, results = graded
    assert scores(results["membomb"]) == FULL
    assert any("MemoryError" in e for e in results["membomb"]["execution"]["errors"])
    assert scores(results["flooder"]) == FULL
    assert results["flooder"]["execution"]["truncated"]


def test_malformed_wrong_name_and_missing_get_clear_results(graded):
    _, results = graded
    assert results["malformed"]["status"] == "unreadable"
    assert "not valid JSON" in results["malformed"]["reason"]
    assert "not a notebook" in results["notanotebook"]["reason"]
    assert scores(results["wrongname"]) == FULL
    assert "wrong file name" in " ".join(results["wrongname"]["notes"])
    assert results["missing"]["status"] == "missing"


def test_feedback_shows_verdicts_but_never_hidden_test_source(graded):
    root, _ = graded
    pages = reports.write_feedback(root, [LESSON])
    assert len(pages) == len(list((root / "submitted").iterdir()))
    page = (root / "feedback" / "naive" / LESSON / "feedback.html").read_text()
    assert "huge logits" in page and "✘" in page and "✔" in page
    for page_path in pages:
        text = page_path.read_text()
        assert "judge(" not in text and "BEGIN HIDDEN" not in text and "<script" not in text


def test_report_and_exports(graded):
    root, results = graded
    html = reports.write_report(root, [LESSON]).read_text()
    assert "malformed" in html and "patches a library" in html
    assert (root / "reports" / "histogram.png").stat().st_size > 1000
    nbgrader_csv, lms_csv = reports.export(root, [LESSON])
    rows = lms_csv.read_text().splitlines()
    assert rows[0].startswith("Student ID,01-softmax (20 pts)")
    assert any(r.startswith("solution,20,20,20") for r in rows)
    assert "solution" in nbgrader_csv.read_text()


def test_gradebook_holds_the_same_scores(graded):
    from autograder import coursedir

    root, results = graded
    book = coursedir.scores(coursedir.CourseDir(root), LESSON)
    assert {s: sum(v.values()) for s, v in book.items()} == {
        s: r["score"] for s, r in results.items()
    }


def test_second_concurrent_run_is_refused(graded):
    root, _ = graded
    with grading.grade_lock(root):
        with pytest.raises(grading.GradeLocked, match="in progress"):
            grading.grade(root, [LESSON])


def test_rerun_is_idempotent_and_cached(graded):
    root, results = graded
    again = grading.grade(
        root,
        [LESSON],
        workers=2,
        settings=grading.Settings(root=root, limits=sandbox.Limits(10, 240)),
    )
    assert all(r.get("cached") for r in again)
    assert {r["student"]: r["score"] for r in again} == {s: r["score"] for s, r in results.items()}


def test_parallel_equals_sequential_and_concurrent_runs_stay_consistent(tmp_path):
    batch = {
        "a": SOLUTION,
        "b": with_cell(SOLUTION, "softmax", MUTANTS["softmax-ignores-dim"][3]),
        "c": with_cell(SOLUTION, "cross_entropy", MUTANTS["cross-entropy-sum-not-mean"][3]),
    }
    outcomes = {}
    for workers in (1, 2):
        root = tmp_path / f"w{workers}"
        for student, nb in batch.items():
            save(nb, root / "submitted" / student / LESSON / f"{NB}.ipynb")
        outcomes[workers] = {
            r["student"]: scores(r) for r in grading.grade(root, [LESSON], workers=workers)
        }
    assert outcomes[1] == outcomes[2]
    assert (
        outcomes[1]["b"]["test-softmax-basic"] == 0 and outcomes[1]["c"]["test-cross-entropy"] == 0
    )
    # two runs at once on one folder: one grades (all cached now), the other is refused
    root = tmp_path / "w2"
    errors: list[BaseException] = []

    def run():
        try:
            grading.grade(root, [LESSON], workers=1)
        except grading.GradeLocked as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    from autograder import coursedir

    book = coursedir.scores(coursedir.CourseDir(root), LESSON)
    assert {s: v for s, v in book.items()} == outcomes[2]
    assert len(errors) <= 1
