"""The class grader against a hostile, broken and real-world class (lesson 01), in one run.

Run as root when the suite runs as root (as CI does), and unprivileged otherwise. What must
hold: no attack gains a point and every attack is reported with a finding; one student's
submission never stops the batch and every submission is accounted for; nothing outside the
grading root changes; no secret of the grader's environment reaches a kernel (or the feedback).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import socket
import threading
from pathlib import Path

import nbformat
import pytest

from autograder import grading, reports, sandbox
from tests import attacks as A
from tests.notebooks import REPO, load, save, with_cell

LESSON, NB = "01-softmax", "softmax"
pytestmark = pytest.mark.slow
SOLUTION = load("solutions", LESSON, NB)
BLANK = load("course", LESSON, NB)
FULL = {
    c.metadata["nbgrader"]["grade_id"]: float(c.metadata["nbgrader"]["points"])
    for c in SOLUTION.cells
    if c.metadata.get("nbgrader", {}).get("grade")
}
SOFTMAX_CELLS = {"test-softmax-basic", "test-softmax-stable"}
SECRET_NAME, SECRET = "INSTRUCTOR_SECRET_TOKEN", "s3cr3t-do-not-leak-4242"
OTHER_CHECKOUT = Path("/var/tmp/course-other-checkout")
SOCKET_PATH = "/var/tmp/course-grader-test.sock"
KIND1 = {
    "k1-disable-modes": A.DISABLE_MODES,
    "k1-disable-dispatch": A.DISABLE_DISPATCH,
    "k1-thread-escape": A.THREAD_ESCAPE,
    "k1-baked-scalars": A.BAKED_SCALARS,
    "k1-settrace": A.SETTRACE,
    "k1-setprofile": A.SETPROFILE,
    "k1-import-hook": A.IMPORT_HOOK,
    "k1-patch-recorder": A.PATCH_RECORDER,
    "k1-thread-publisher": A.THREAD_PUBLISHER,
}


def _index(nb, grade_id: str) -> int:
    return next(
        i
        for i, c in enumerate(nb.cells)
        if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id
    )


def added(nb, source: str, after: str | None = "softmax", metadata: dict | None = None):
    """`nb` with a learner cell inserted after the cell `after` (None: at the end)."""
    nb = nbformat.from_dict(copy.deepcopy(nb))
    cell = nbformat.v4.new_code_cell(source)
    if metadata:
        cell.metadata = metadata
    at = len(nb.cells) if after is None else _index(nb, after) + 1
    nb.cells.insert(at, cell)
    return nb


def split_cell(nb, grade_id: str, first: str, second: str):
    """JupyterLab's Split Cell: two cells, both with the answer cell's metadata."""
    nb = nbformat.from_dict(copy.deepcopy(nb))
    i = _index(nb, grade_id)
    a, b = copy.deepcopy(nb.cells[i]), copy.deepcopy(nb.cells[i])
    a.source, b.source = first, second
    b.id = a.id + "x"
    nb.cells[i : i + 1] = [a, b]
    return nb


def as_v3(nb) -> bytes:
    return nbformat.writes(nbformat.convert(copy.deepcopy(nb), 3)).encode()


def with_big_output(nb) -> bytes:
    data = json.loads(nbformat.writes(nb))
    for cell in data["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = [
                {"output_type": "stream", "name": "stdout", "text": "x" * (27 * 2**20)}
            ]
            break
    return json.dumps(data).encode()


def with_list_metadata(nb) -> bytes:
    data = json.loads(nbformat.writes(nb))
    data["cells"][3]["metadata"] = ["not", "a", "dict"]
    return json.dumps(data).encode()


def class_submissions(root: Path) -> dict[str, object]:
    """student id -> notebook, raw bytes, or a callable that builds the folder itself."""
    fmt = dict(
        checks=REPO / "course" / "checks.py",
        gradebook=root / "gradebook.db",
        solutions=REPO / "solutions",
        other=OTHER_CHECKOUT,
        repo=REPO,
        root=root,
        secret_name=SECRET_NAME,
        socket_path=SOCKET_PATH,
    )
    subs: dict[str, object] = {
        "solution": SOLUTION,
        "blank": BLANK,
        "warnings": with_cell(SOLUTION, "softmax", A.WARNINGS),
        "naive": with_cell(SOLUTION, "softmax", A.NAIVE),
        "liar": with_cell(SOLUTION, "softmax", A.LIAR),
        **{name: with_cell(SOLUTION, "softmax", src) for name, src in KIND1.items()},
        "k1-publish-late": added(with_cell(SOLUTION, "softmax", A.NAIVE), A.PUBLISH_LATE, None),
        "k2-results-bomb": with_cell(SOLUTION, "softmax", A.RESULTS_BOMB),
        "k2-links-and-pipes": added(SOLUTION, A.LINKS_AND_PIPES.format(**fmt)),
        "k2-big-file": added(SOLUTION, A.BIG_FILE),
        "k3-root-tricks": added(
            with_cell(SOLUTION, "softmax", A.NAIVE), A.ROOT_TRICKS.format(**fmt)
        ),
        "k4-env-leak": added(SOLUTION, A.ENV_LEAK.format(**fmt)),
        "k4-unix-socket": added(SOLUTION, A.UNIX_SOCKET.format(**fmt)),
        "k4-network": added(SOLUTION, A.NETWORK),
        "k5-fork-memory": added(SOLUTION, A.FORK_MEMORY),
        "k5-fork-bomb": added(SOLUTION, A.FORK_BOMB),
        "k5-tmp-fill": added(SOLUTION, A.TMP_FILL),
        "k5-memory-bomb": added(SOLUTION, A.MEMORY_BOMB),
        "k5-flood": added(SOLUTION, A.FLOOD),
        "k5-exit": added(SOLUTION, A.EXIT, after="test-logsumexp"),
        "k6-list-metadata": with_list_metadata(SOLUTION),
        "k6-malformed": b'{"cells": [ this is not json',
        "k6-not-a-notebook": b'{"hello": "world"}',
        "k6-binary": bytes(range(256)) * 10,
        "k7-swallowing-loop": added(SOLUTION, A.SWALLOWING_LOOP, after="entropy"),
        "k7-last-cell": added(SOLUTION, A.LAST_CELL, None),
        "k7-input": with_cell(SOLUTION, "softmax", A.INPUT_IN_ANSWER),
        "r-split-cell": split_cell(
            SOLUTION, "softmax", "# my softmax, below", _source(SOLUTION, "softmax")
        ),
        "r-pasted-cell": added(
            with_cell(SOLUTION, "logsumexp", A.NAIVE_LOGSUMEXP),
            _source(SOLUTION, "logsumexp"),
            after="logsumexp",
            metadata=copy.deepcopy(SOLUTION.cells[_index(SOLUTION, "logsumexp")].metadata),
        ),
        "r-nbformat-3": as_v3(SOLUTION),
        "r-big-outputs": with_big_output(SOLUTION),
        "josé": SOLUTION,
    }
    return subs


def _source(nb, grade_id: str) -> str:
    return nb.cells[_index(nb, grade_id)].source


def _write(root: Path, student: str, item) -> None:
    path = root / "submitted" / student / LESSON / f"{NB}.ipynb"
    if isinstance(item, bytes):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(item)
    else:
        save(item, path)


def _fingerprint(paths: list[Path]) -> dict[str, str]:
    out = {}
    for path in paths:
        if path.is_file():
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


class _Listener:
    """A Unix socket in /var/tmp that records whether anyone connected."""

    def __init__(self, path: str):
        self.path, self.reached = path, False
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o777)
        self.sock.listen(4)
        self.sock.settimeout(0.5)
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
                self.reached = True
                conn.close()
            except OSError:
                continue

    def close(self):
        self.stop = True
        self.thread.join(timeout=2)
        self.sock.close()
        os.unlink(self.path)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("grading")
    for student, item in class_submissions(root).items():
        _write(root, student, item)
    (root / "submitted" / "wrongname" / LESSON).mkdir(parents=True)
    save(SOLUTION, root / "submitted" / "wrongname" / LESSON / "Softmax (1).ipynb")
    (root / "submitted" / "missing" / LESSON).mkdir(parents=True)
    (root / "submitted" / "k6-dir-notebook" / LESSON / f"{NB}.ipynb").mkdir(parents=True)
    shutil.copytree(
        REPO / "solutions" / "kernels", OTHER_CHECKOUT / "solutions" / "kernels", dirs_exist_ok=True
    )
    (OTHER_CHECKOUT / "solutions" / "__init__.py").write_text("")
    watched = [
        REPO / "course" / "checks.py",
        *sorted((REPO / "solutions").rglob("*.py")),
        *sorted((REPO / "autograder").glob("*.py")),
    ]
    before = _fingerprint(watched)
    var_tmp_before = set(os.listdir("/var/tmp"))
    listener = _Listener(SOCKET_PATH)
    os.environ[SECRET_NAME] = SECRET
    try:
        limits = sandbox.Limits(cell_timeout_s=30, notebook_timeout_s=400)
        settings = grading.Settings(root=root, limits=limits, seed=1234)
        results = grading.grade(root, [LESSON], workers=2, settings=settings)
    finally:
        os.environ.pop(SECRET_NAME, None)
        listener.close()
        shutil.rmtree(OTHER_CHECKOUT, ignore_errors=True)
    outside = {
        "changed": {p for p, h in _fingerprint(watched).items() if before.get(p) != h},
        # Less what tests/test_sandbox.py's listeners make there while running beside this one
        # (`make test` runs test files in parallel); no attack here uses that prefix.
        "var_tmp_new": {
            name
            for name in set(os.listdir("/var/tmp")) - var_tmp_before - {Path(SOCKET_PATH).name}
            if not name.startswith("autograder-test-")
        },
        "socket_reached": listener.reached,
        "planted": (REPO / "planted.txt").exists(),
    }
    return root, {r.student: r for r in results}, outside


def scores(result) -> dict[str, float]:
    return {gid: cell.points for gid, cell in result.cells.items()}


def kinds(result) -> set[str]:
    return {f.kind for f in result.findings}


def high(result) -> list:
    return [f for f in result.findings if f.severity == "high"]


# ---------------------------------------------------------------- the batch


def test_every_submission_is_accounted_for(graded):
    root, results, _ = graded
    students = {p.name for p in (root / "submitted").iterdir()}
    assert set(results) == students
    for result in results.values():
        assert result.status in ("graded", "unreadable", "missing"), (result.student, result.reason)
        assert set(result.cells) == set(FULL)


def test_solution_full_blank_zero_warnings_free(graded):
    _, results, _ = graded
    assert scores(results["solution"]) == FULL
    assert not high(results["solution"])
    assert results["blank"].score == 0 and results["blank"].status == "graded"
    assert scores(results["warnings"]) == FULL
    assert any("DeprecationWarning" in w for w in results["warnings"].warnings)


def test_naive_softmax_loses_only_the_stability_points(graded):
    _, results, _ = graded
    assert scores(results["naive"]) == {**FULL, "test-softmax-stable": 0.0}


# ---------------------------------------------------------------- kind 1: verdicts


@pytest.mark.parametrize("student", [*KIND1, "liar"])
def test_no_way_around_the_watch_gains_a_point(graded, student):
    _, results, _ = graded
    result = results[student]
    got = scores(result)
    assert all(got[c] == 0 for c in SOFTMAX_CELLS), (student, got)
    others = {k: v for k, v in got.items() if k not in SOFTMAX_CELLS}
    assert sum(others.values()) <= sum(v for k, v in FULL.items() if k not in SOFTMAX_CELLS)
    assert high(result), f"{student}: no high-severity finding: {result.findings}"


def test_results_published_from_a_learner_cell_cost_what_they_claim_and_are_reported(graded):
    """A learner cell that sends results in the grader's format never adds a point: the
    exercises it claimed lose theirs (tampering costs what it protects), the rest stand."""
    _, results, _ = graded
    result = results["k1-publish-late"]
    claimed = {"test-softmax-basic": 0.0, "test-softmax-stable": 0.0}
    assert scores(result) == {**FULL, **claimed}
    assert "published grader results" in kinds(result)
    assert high(result)


def test_replaced_recorder_is_said_in_words(graded):
    _, results, _ = graded
    messages = json.dumps(
        [e.to_dict() for c in results["k1-import-hook"].cells.values() for e in c.exercises]
    )
    assert "could not be verified" in messages or "recorder" in messages


# ---------------------------------------------------------------- kind 2: job folder


def test_nothing_outside_the_grading_root_changed(graded):
    root, results, outside = graded
    assert not outside["changed"], outside["changed"]
    assert not outside["var_tmp_new"], outside["var_tmp_new"]
    assert not outside["planted"]
    assert not list((root / "results").glob("99*"))
    assert scores(results["k2-links-and-pipes"]) == FULL


def test_job_folders_are_cleaned_and_big_files_stopped(graded):
    root, results, _ = graded
    assert (
        not any(p.is_file() for p in (root / "work").rglob("*"))
        if (root / "work").exists()
        else True
    )
    assert scores(results["k2-big-file"]) == FULL


def test_a_results_bomb_costs_only_the_attacker(graded):
    _, results, _ = graded
    result = results["k2-results-bomb"]
    assert scores(result)["test-softmax-basic"] == 0
    assert high(result)


# ---------------------------------------------------------------- kinds 3 and 4: the sandbox


@pytest.mark.skipif(sandbox.bwrap_path() is None, reason="bubblewrap is not installed")
def test_root_in_the_sandbox_reads_and_writes_nothing(graded):
    _, results, outside = graded
    result = results["k3-root-tricks"]
    assert result.isolation == "bubblewrap"
    assert scores(result) == {**FULL, "test-softmax-stable": 0.0}
    assert not outside["planted"]


def test_no_grader_secret_reaches_a_kernel_or_its_feedback(graded):
    root, results, _ = graded
    result = results["k4-env-leak"]
    assert scores(result) == FULL
    text = result.to_json()
    assert SECRET not in text and SECRET_NAME not in text
    reports.write_feedback(root, [LESSON])
    page = (root / "feedback" / "k4-env-leak" / LESSON / "feedback.html").read_text()
    assert SECRET not in page and "bwrap" not in page and str(root) not in page


def test_host_sockets_and_network_are_unreachable(graded):
    _, results, outside = graded
    assert not outside["socket_reached"]
    assert scores(results["k4-unix-socket"]) == FULL
    assert scores(results["k4-network"]) == FULL


# ---------------------------------------------------------------- kind 5: resources


@pytest.mark.parametrize(
    "student", ["k5-fork-memory", "k5-fork-bomb", "k5-tmp-fill", "k5-memory-bomb", "k5-flood"]
)
def test_resource_attacks_are_stopped_and_reported_as_the_students(graded, student):
    _, results, _ = graded
    result = results[student]
    assert "hit a limit" in kinds(result) or result.execution.get("errors"), result.execution
    assert result.status == "graded"


def test_kernel_exit_scores_what_ran_before(graded):
    _, results, _ = graded
    result = results["k5-exit"]
    got = scores(result)
    assert got["test-softmax-basic"] == 2 and got["test-logsumexp"] == 2
    assert got["test-online-softmax"] == 0
    assert result.execution["kernel_died"]


# ---------------------------------------------------------------- kind 6: malformed input


@pytest.mark.parametrize(
    "student, words",
    [
        ("k6-malformed", "not valid JSON"),
        ("k6-not-a-notebook", "not a notebook"),
        ("k6-binary", "not UTF-8"),
        ("k6-dir-notebook", "softmax.ipynb"),
    ],
)
def test_malformed_input_fails_only_its_student_with_a_reason(graded, student, words):
    _, results, _ = graded
    result = results[student]
    assert result.status in ("unreadable", "missing") and result.score == 0
    assert words in (result.reason + " ".join(result.notes)), (result.reason, result.notes)


def test_a_cell_with_list_metadata_is_still_graded(graded):
    _, results, _ = graded
    assert results["k6-list-metadata"].status == "graded"


def test_wrong_name_and_missing_get_clear_results(graded):
    _, results, _ = graded
    assert scores(results["wrongname"]) == FULL
    assert "wrong file name" in " ".join(results["wrongname"].notes)
    assert results["missing"].status == "missing"


# ---------------------------------------------------------------- kind 7: records


def test_the_learners_last_cell_runs_and_is_kept(graded):
    root, results, _ = graded
    executed = nbformat.read(root / "autograded" / "k7-last-cell" / LESSON / f"{NB}.ipynb", 4)
    assert "the learner's last cell ran" in json.dumps(executed.cells[-1].get("outputs", []))
    assert scores(results["k7-last-cell"]) == FULL


def test_a_loop_that_swallows_interrupts_is_reported_as_hung_and_the_rest_graded(graded):
    _, results, _ = graded
    result = results["k7-swallowing-loop"]
    assert scores(result) == FULL
    assert result.execution["restarts"] == 1 and not result.execution["kernel_died"]


def test_input_in_an_answer_cell_is_explained(graded):
    root, results, _ = graded
    result = results["k7-input"]
    assert "input()" in json.dumps(result.execution["first_error"])
    reports.write_feedback(root, [LESSON])
    page = (root / "feedback" / "k7-input" / LESSON / "feedback.html").read_text()
    assert "input() cannot be answered during grading" in page


def test_feedback_never_shows_hidden_sources_or_expected_values(graded):
    root, _, _ = graded
    pages = reports.write_feedback(root, [LESSON])
    naive = (root / "feedback" / "naive" / LESSON / "feedback.html").read_text()
    assert "huge logits" in naive and "✘" in naive and "✔" in naive
    for page in pages:
        text = page.read_text()
        assert "judge(" not in text and "BEGIN HIDDEN" not in text and "<script" not in text
        assert "expected " not in text, page


def test_results_are_the_truth_and_the_gradebook_agrees(graded):
    from autograder import coursedir

    root, results, _ = graded
    book = coursedir.scores(coursedir.CourseDir(root), LESSON)
    assert {s: sum(v.values()) for s, v in book.items()} == {s: r.score for s, r in results.items()}


def test_integrity_report_groups_by_student_with_severity(graded):
    root, results, _ = graded
    summary = reports.summarise(reports.load_results(root, [LESSON]), root)
    groups = {g["student"]: g for g in summary["integrity"]}
    for student in KIND1:
        assert groups[student]["severity"] == "high"
    assert "solution" not in groups or groups["solution"]["severity"] != "high"
    html = reports.write_report(root, [LESSON]).read_text()
    assert "k1-disable-modes" in html and "high" in html


# ---------------------------------------------------------------- real-world submissions


@pytest.mark.parametrize(
    "student", ["r-split-cell", "r-pasted-cell", "r-nbformat-3", "r-big-outputs", "josé"]
)
def test_real_world_shapes_score_full_marks(graded, student):
    _, results, _ = graded
    result = results[student]
    assert scores(result) == FULL, (result.reason, result.notes)


def test_split_and_pasted_cells_are_noted(graded):
    _, results, _ = graded
    for student in ("r-split-cell", "r-pasted-cell"):
        assert "more than once" in " ".join(results[student].notes)


# ---------------------------------------------------------------- runs


def test_second_concurrent_run_is_refused(graded):
    root, _, _ = graded
    with grading.grade_lock(root):
        with pytest.raises(grading.GradeLocked, match="in progress"):
            grading.grade(root, [LESSON])


def test_rerun_is_cached(graded):
    root, results, _ = graded
    settings = grading.Settings(
        root=root, limits=sandbox.Limits(cell_timeout_s=30, notebook_timeout_s=400)
    )
    again = grading.grade(root, [LESSON], workers=2, settings=settings)
    assert all(r.cached for r in again)
    assert {r.student: r.score for r in again} == {s: r.score for s, r in results.items()}


def test_a_changed_tolerance_regrades_a_cached_submission(tmp_path, monkeypatch):
    from course import compare

    save(SOLUTION, tmp_path / "submitted" / "a" / LESSON / f"{NB}.ipynb")
    first = grading.grade(tmp_path, [LESSON])
    assert not first[0].cached and first[0].score == sum(FULL.values())
    assert grading.grade(tmp_path, [LESSON])[0].cached
    monkeypatch.setitem(compare.TOLERANCES, "float32", compare.Tolerance(2e-5, 2e-4))
    third = grading.grade(tmp_path, [LESSON])
    assert not third[0].cached and third[0].score == sum(FULL.values())
