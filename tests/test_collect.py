"""Collecting submissions: LMS layouts, merged ids, Unicode ids, zip safety, the ledger.

Every test builds tiny exports from the lesson's blank release and its solution notebook;
no kernel runs, so the whole file takes seconds.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import unicodedata
import warnings
import zipfile
from pathlib import Path

import nbformat
import pytest

from autograder import collect as collect_module
from autograder import submissions
from autograder.__main__ import COLLECT_LAYOUTS, main
from autograder.collect import LAYOUTS, CollectStopped, collect
from tests.notebooks import REPO, load, with_cell

LESSON, NB = "01-softmax", "softmax.ipynb"
BLANK = (REPO / "course" / LESSON / NB).read_bytes()
WORKED = (REPO / "solutions" / LESSON / NB).read_bytes()
# One answer typed into the release: a different worked notebook, told apart by its bytes.
PARTIAL = nbformat.writes(
    with_cell(load("course", LESSON, "softmax"), "softmax", "def softmax(x, dim=-1):\n    return x")
).encode()


def stripped(data: bytes) -> bytes:
    """The notebook as Colab saves it: every cell's nbgrader metadata gone."""
    nb = nbformat.reads(data.decode(), as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("nbgrader", None)
    return nbformat.writes(nb).encode()


def make_zip(path: Path, members: dict[str, bytes | None]) -> Path:
    """A zip of {name: content}; None makes a directory entry."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            if data is None:
                archive.writestr(zipfile.ZipInfo(name), b"")
            else:
                archive.writestr(name, data)
    return path


def make_folder(path: Path, members: dict[str, bytes | None]) -> Path:
    for name, data in members.items():
        target = path / name
        if data is None:
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return path


def graded(root: Path, student: str) -> bytes:
    return (root / "submitted" / student / LESSON / NB).read_bytes()


def entry(report, member: str) -> dict:
    return next(e for e in report.entries if e["member"] == member)


def ledger(root: Path) -> list[dict]:
    return [json.loads(line) for line in submissions.ledger_path(root).read_text().splitlines()]


# ---------------------------------------------------------------- which notebook is graded


def test_answers_are_counted_against_the_release_even_without_nbgrader_metadata():
    def answers(data: bytes) -> int:
        nb = nbformat.reads(data.decode(), as_version=4)
        return submissions.count_answers(nb, LESSON, NB)

    assert answers(BLANK) == 0 and answers(stripped(BLANK)) == 0
    assert answers(WORKED) == 8  # the lesson's eight answer cells
    assert answers(PARTIAL) == 1
    assert answers(stripped(PARTIAL)) == 1  # found by its `def softmax`
    comment_only = with_cell(load("course", LESSON, "softmax"), "softmax", "# thinking...\npass")
    assert answers(nbformat.writes(comment_only).encode()) == 0


def test_the_worked_notebook_beside_the_untouched_release_is_graded(tmp_path):
    folder = make_folder(tmp_path, {NB: BLANK, "softmax_final.ipynb": PARTIAL})
    os.utime(folder / NB, (2e9, 2e9))  # the blank one is even the newest
    choice = submissions.choose_notebook(folder, NB, LESSON)
    assert choice.path == folder / "softmax_final.ipynb"
    assert choice.ignored == [(NB, "no answers in it (same as the blank release)")]
    assert "graded softmax_final.ipynb as softmax.ipynb" in choice.note
    assert "ignored softmax.ipynb: no answers" in choice.note


def test_grading_discovery_uses_the_same_choice(tmp_path):
    from autograder import grading  # imports torch: only this test needs it

    make_folder(tmp_path / "submitted" / "ann" / LESSON, {NB: BLANK, "softmax_final.ipynb": WORKED})
    make_folder(tmp_path / "submitted" / "bob" / LESSON, {"Softmax (1).ipynb": WORKED})
    make_folder(tmp_path / "submitted" / "cid" / LESSON, {"notes.txt": b"hi"})
    jobs = {job.student: job for job in grading.discover(tmp_path, [LESSON])}
    assert jobs["ann"].submission.name == "softmax_final.ipynb"
    assert "ignored softmax.ipynb" in jobs["ann"].note
    assert jobs["bob"].submission.name == "Softmax (1).ipynb"
    assert "wrong file name" in jobs["bob"].note
    assert jobs["cid"].submission is None
    assert "no notebook softmax.ipynb" in jobs["cid"].note and "notes.txt" in jobs["cid"].note


def test_ranking_answers_then_expected_name_then_newest(tmp_path):
    both = make_folder(tmp_path / "a", {NB: PARTIAL, "final.ipynb": WORKED})
    os.utime(both / "final.ipynb", (2e9, 2e9))
    choice = submissions.choose_notebook(both, NB, LESSON)
    assert choice.path.name == NB
    assert choice.ignored == [("final.ipynb", "not named softmax.ipynb (which is graded)")]
    newest = make_folder(tmp_path / "b", {"v1.ipynb": WORKED, "v2.ipynb": PARTIAL})
    os.utime(newest / "v1.ipynb", (1e9, 1e9))
    assert submissions.choose_notebook(newest, NB, LESSON).path.name == "v2.ipynb"
    colab = make_folder(tmp_path / "c", {NB: BLANK, "colab.ipynb": stripped(PARTIAL)})
    assert submissions.choose_notebook(colab, NB, LESSON).path.name == "colab.ipynb"


def test_files_that_are_never_candidates_are_named_with_a_reason(tmp_path):
    folder = make_folder(
        tmp_path,
        {
            NB: WORKED,
            ".ipynb_checkpoints/softmax-checkpoint.ipynb": WORKED,
            "softmax-checkpoint.ipynb": WORKED,
            ".hidden.ipynb": WORKED,
            "notes.txt": b"x",
            "dir.ipynb": None,
            "broken.ipynb": b"{not json",
        },
    )
    (folder / "link.ipynb").symlink_to(folder / NB)
    choice = submissions.choose_notebook(folder, NB, LESSON)
    assert choice.path == folder / NB
    reasons = dict(choice.ignored)
    assert set(reasons) == {
        ".ipynb_checkpoints",
        "softmax-checkpoint.ipynb",
        ".hidden.ipynb",
        "notes.txt",
        "dir.ipynb",
        "broken.ipynb",
        "link.ipynb",
    }
    assert "autosave" in reasons[".ipynb_checkpoints"]
    assert "symbolic link" in reasons["link.ipynb"]
    assert "not valid JSON" in reasons["broken.ipynb"]
    assert "folder named like a notebook" in reasons["dir.ipynb"]
    for name in reasons:
        assert name in choice.note


def test_an_unreadable_notebook_is_graded_only_when_nothing_else_is_readable(tmp_path):
    folder = make_folder(tmp_path / "a", {NB: b"{not json", "other.txt": b""})
    choice = submissions.choose_notebook(folder, NB, LESSON)
    assert choice.path == folder / NB and "no readable notebook" in choice.note
    empty = make_folder(tmp_path / "b", {"x": None})
    assert submissions.choose_notebook(empty, NB, LESSON).path is None
    assert submissions.choose_notebook(tmp_path / "absent", NB, LESSON).path is None


# ---------------------------------------------------------------- layouts


def test_a_folder_with_the_release_and_the_worked_copy_imports_the_worked_one(tmp_path):
    source = make_folder(tmp_path / "src", {f"ann/{LESSON}/{NB}": BLANK})
    make_folder(source, {f"ann/{LESSON}/softmax_final.ipynb": WORKED})
    report = collect(source, tmp_path / "root", [LESSON])
    assert report.layout == "folder"
    assert graded(tmp_path / "root", "ann") == WORKED
    skipped = entry(report, f"ann/{LESSON}/{NB}")
    assert skipped["outcome"] == "skipped" and "no answers" in skipped["reason"]
    imported = entry(report, f"ann/{LESSON}/softmax_final.ipynb")
    assert "ignored softmax.ipynb" in imported["note"]


@pytest.mark.parametrize(
    ("layout", "members", "expected"),
    [
        (
            "canvas",
            {
                "smithanna_4321_900_softmax.ipynb": BLANK,
                "smithanna_4321_901_softmax-1.ipynb": WORKED,
                "jonesbob_late_77_902_softmax.ipynb": PARTIAL,
            },
            {"smithanna_4321": WORKED, "jonesbob_77": PARTIAL},
        ),
        (
            "moodle",
            {
                "Anna Smith_11_assignsubmission_file_softmax.ipynb": WORKED,
                "Anna Jones_12_assignsubmission_file_/softmax.ipynb": BLANK,
                "Anna Jones_12_assignsubmission_file_/softmax_v2.ipynb": PARTIAL,
                "Anna Jones_12_assignsubmission_onlinetext_onlinetext.html": b"<p>",
            },
            {"Anna Smith": WORKED, "Anna Jones": PARTIAL},
        ),
        (
            "blackboard",
            {
                "Lab 1_asmith_attempt_2024-03-01-10-15-00_softmax.ipynb": WORKED,
                "Lab 1_asmith_attempt_2024-03-01-10-15-00.txt": b"receipt",
                "Lab 1_asmith_attempt_2024-03-02-09-00-00_softmax.ipynb": PARTIAL,
                "Lab 1_asmith_attempt_2024-03-02-09-00-00.txt": b"receipt",
                "Lab 1_bjones_attempt_2024-03-01-11-00-00_my softmax.ipynb": WORKED,
            },
            {"asmith": PARTIAL, "bjones": WORKED},
        ),
        (
            "brightspace",
            {
                "13394-80551 - Smith, Anna - Mar 29, 2024 905 AM - softmax.ipynb": WORKED,
                "13394-80552 - Smith, Anna - Mar 29, 2024 1205 PM - softmax.ipynb": PARTIAL,
                "13395-80553 - Jones, Bob - Mar 28, 2024 1105 PM - softmax.ipynb": BLANK,
                "index.html": b"<html>",
            },
            {"Smith, Anna": PARTIAL, "Jones, Bob": BLANK},
        ),
    ],
)
def test_lms_exports_are_recognised_from_their_names(tmp_path, layout, members, expected):
    for kind, source in (
        ("zip", make_zip(tmp_path / "export.zip", members)),
        ("folder", make_folder(tmp_path / "unzipped" / "export", members).parent),  # wrapped
    ):
        root = tmp_path / kind
        report = collect(source, root, [LESSON], lesson=LESSON)
        assert report.layout == layout and report.detected, kind
        assert {s for s, _ in submissions.current_submissions(root)} == set(expected)
        for student, data in expected.items():
            assert graded(root, student) == data, (kind, student)
        offered = {e["member"].split("/")[-1] for e in report.entries if e["kind"] == "file"}
        assert offered == {name.split("/")[-1] for name in members}


def test_resubmissions_keep_the_newest_and_list_the_older(tmp_path):
    report = collect(
        make_zip(
            tmp_path / "bb.zip",
            {
                "Lab_asmith_attempt_2024-03-01-10-15-00_softmax.ipynb": WORKED,
                "Lab_asmith_attempt_2024-03-02-09-00-00_softmax.ipynb": PARTIAL,
            },
        ),
        tmp_path / "root",
        [LESSON],
        lesson=LESSON,
    )
    older = entry(report, "Lab_asmith_attempt_2024-03-01-10-15-00_softmax.ipynb")
    assert "older attempt (2024-03-01-10-15-00" in older["reason"]
    assert report.problems == [older]
    canvas = collect(
        make_zip(
            tmp_path / "canvas.zip",
            {"ann_5_10_softmax.ipynb": WORKED, "ann_5_10_softmax-1.ipynb": PARTIAL},
        ),
        tmp_path / "root2",
        [LESSON],
        lesson=LESSON,
    )
    assert graded(tmp_path / "root2", "ann_5") == PARTIAL
    assert "older copy of softmax.ipynb" in entry(canvas, "ann_5_10_softmax.ipynb")["reason"]


def test_gradescope_export_reads_ids_from_its_metadata(tmp_path):
    metadata = """\
submission_101:
  :submitters:
  - :name: Anna Smith
    :sid: '2001'
    :email: anna@example.edu
  :created_at: 2024-03-01 10:00:00.000000000 -08:00
submission_102:
  :submitters:
  - :name: Bob Jones
    :sid: '2002'
  - :name: Cy Lee
    :sid:
    :email: cy@example.edu
  :created_at: 2024-03-01 11:00:00.000000000 -08:00
"""
    source = make_zip(
        tmp_path / "gs.zip",
        {
            "assignment_9_export/submission_metadata.yml": metadata.encode(),
            "assignment_9_export/submission_101/softmax.ipynb": WORKED,
            "assignment_9_export/submission_102/work/softmax.ipynb": PARTIAL,
            "assignment_9_export/submission_103/softmax.ipynb": BLANK,
        },
    )
    report = collect(source, tmp_path / "root", [LESSON], lesson=LESSON)
    assert report.layout == "gradescope"
    root = tmp_path / "root"
    assert graded(root, "2001") == WORKED
    assert graded(root, "2002") == PARTIAL and graded(root, "cy@example.edu") == PARTIAL
    assert (
        "not listed" in entry(report, "assignment_9_export/submission_103/softmax.ipynb")["reason"]
    )
    assert (
        "Gradescope's list"
        in entry(report, "assignment_9_export/submission_metadata.yml")["reason"]
    )


def test_generic_names_keep_spaces_and_layout_can_be_forced(tmp_path):
    source = make_zip(
        tmp_path / "x.zip",
        {"an na_softmax.ipynb": WORKED, "bob-softmax (2).ipynb": PARTIAL},
    )
    report = collect(source, tmp_path / "root", [LESSON], lesson=LESSON)
    assert report.layout == "generic"
    assert {s for s, _ in submissions.current_submissions(tmp_path / "root")} == {"an na", "bob"}
    forced = collect(source, tmp_path / "root2", [LESSON], lesson=LESSON, layout="canvas")
    assert forced.imported == []
    assert all("does not fit the canvas layout" in p["reason"] for p in forced.problems)


def test_an_lms_export_needs_the_lesson(tmp_path):
    source = make_zip(tmp_path / "c.zip", {"ann_5_10_softmax.ipynb": WORKED})
    with pytest.raises(ValueError, match="canvas export holds one lesson.*--lesson"):
        collect(source, tmp_path / "root", [LESSON])
    unknown = make_zip(tmp_path / "u.zip", {"ann_softmax.ipynb": WORKED})
    report = collect(unknown, tmp_path / "root", [LESSON])
    assert report.imported == [] and "needs --lesson" in report.problems[0]["reason"]


# ---------------------------------------------------------------- merged ids


def test_two_students_with_one_name_stop_the_collect_with_a_pattern_that_separates_them(
    tmp_path,
):
    source = make_zip(
        tmp_path / "moodle.zip",
        {
            "Anna Smith_11_assignsubmission_file_softmax.ipynb": WORKED,
            "Anna Smith_12_assignsubmission_file_softmax.ipynb": PARTIAL,
            "Bob Ray_13_assignsubmission_file_softmax.ipynb": BLANK,
        },
    )
    root = tmp_path / "root"
    with pytest.raises(CollectStopped) as stop:
        collect(source, root, [LESSON], lesson=LESSON)
    message = str(stop.value)
    assert "\n" not in message and "Anna Smith_11" in message and "Anna Smith_12" in message
    pattern = message.split("--id-pattern '")[1].split("'")[0]
    assert not (root / "submitted").exists()  # nothing written
    assert ledger(root)[-1]["status"] == "stopped"
    report = collect(source, root, [LESSON], lesson=LESSON, id_pattern=pattern)
    assert {e["student"] for e in report.imported} == {
        "Anna Smith_11",
        "Anna Smith_12",
        "Bob Ray_13",
    }
    assert graded(root, "Anna Smith_12") == PARTIAL


def test_moodle_blind_marking_keeps_the_participant_numbers(tmp_path):
    source = make_zip(
        tmp_path / "blind.zip",
        {
            "Participant_101_assignsubmission_file_softmax.ipynb": WORKED,
            "Participant_102_assignsubmission_file_softmax.ipynb": PARTIAL,
        },
    )
    collect(source, tmp_path / "root", [LESSON], lesson=LESSON)
    assert graded(tmp_path / "root", "Participant_102") == PARTIAL
    assert {s for s, _ in submissions.current_submissions(tmp_path / "root")} == {
        "Participant_101",
        "Participant_102",
    }


def test_generic_first_fields_that_merge_people_stop_too(tmp_path):
    source = make_zip(
        tmp_path / "x.zip",
        {"anne-marie_softmax.ipynb": WORKED, "anne-sophie_softmax.ipynb": PARTIAL},
    )
    with pytest.raises(CollectStopped, match="'anne'") as stop:
        collect(source, tmp_path / "root", [LESSON], lesson=LESSON)
    pattern = str(stop.value).split("--id-pattern '")[1].split("'")[0]
    report = collect(source, tmp_path / "root", [LESSON], lesson=LESSON, id_pattern=pattern)
    assert {e["student"] for e in report.imported} == {"anne-marie", "anne-sophie"}


def test_the_cli_stops_with_exit_2_and_one_line(tmp_path, capsys):
    source = make_zip(
        tmp_path / "m.zip",
        {
            "Anna Smith_11_assignsubmission_file_softmax.ipynb": WORKED,
            "Anna Smith_12_assignsubmission_file_softmax.ipynb": WORKED,
        },
    )
    args = ["--root", str(tmp_path / "root"), "collect", str(source), "--lesson", LESSON]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "--id-pattern" in err


def test_the_cli_summary_lists_every_problem(tmp_path, capsys):
    source = make_zip(
        tmp_path / "c.zip",
        {"ann_5_10_softmax.ipynb": WORKED, "README.txt": b"hi", "empty/": None},
    )
    args = ["--root", str(tmp_path / "root"), "collect", str(source), "--lesson", LESSON]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "layout canvas" in out and "imported 1 notebook(s)" in out
    assert "README.txt: not a notebook" in out and "empty: an empty folder" in out
    assert "collect-ledger.jsonl" in out
    assert set(LAYOUTS) == set(COLLECT_LAYOUTS)


# ---------------------------------------------------------------- student ids


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        ("..", "names a folder"),
        (".anna", "starts with '.'"),
        ("-rf", "starts with '-'"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("a\x00b", "control character U+0000"),
        ("a\x1bb", "control character U+001B"),
        ("anna\u202egpj", "invisible formatting character U+202E"),
        (" anna", "white space"),
        ("a" * 101, "101 characters"),
        ("\U0001f600" * 60, "UTF-8 bytes"),
    ],
)
def test_unsafe_ids_are_refused_with_the_reason(raw, why):
    assert why in submissions.student_id_problem(raw)


@pytest.mark.parametrize("raw", ["josé", "李雷", "Anna Smith", "o'brien", "anna.smith@uni.edu"])
def test_unicode_ids_are_accepted(raw):
    assert submissions.student_id_problem(raw) is None


def test_unicode_student_folders_are_collected_and_near_duplicates_reported(tmp_path):
    nfd = unicodedata.normalize("NFD", "rené")
    source = make_folder(
        tmp_path / "src",
        {
            f"josé/{LESSON}/{NB}": WORKED,
            f"{nfd}/{LESSON}/{NB}": WORKED,
            f"René/{LESSON}/{NB}": PARTIAL,
            f"Ann/{LESSON}/{NB}": WORKED,
            f"ann/{LESSON}/{NB}": PARTIAL,
            f"-rf/{LESSON}/{NB}": WORKED,
        },
    )
    root = tmp_path / "root"
    report = collect(source, root, [LESSON])
    assert submissions.current_submissions(root) == {("josé", LESSON)}
    assert "starts with '-'" in entry(report, f"-rf/{LESSON}/{NB}")["reason"]
    for name in ("Ann", "ann", "René"):
        assert (
            "only by case or Unicode normalisation"
            in entry(report, f"{name}/{LESSON}/{NB}")["reason"]
        )
    nfd_entry = entry(report, f"{nfd}/{LESSON}/{NB}")
    assert "only by case or Unicode normalisation" in nfd_entry["reason"]


def test_an_nfd_folder_name_is_stored_in_nfc(tmp_path):
    nfd = unicodedata.normalize("NFD", "josé")
    source = make_folder(tmp_path / "src", {f"{nfd}/{LESSON}/{NB}": WORKED})
    collect(source, tmp_path / "root", [LESSON])
    assert submissions.current_submissions(tmp_path / "root") == {("josé", LESSON)}


# ---------------------------------------------------------------- nothing is dropped silently


def test_empty_folders_and_directory_entries_are_listed(tmp_path):
    source = make_folder(
        tmp_path / "src",
        {f"ann/{LESSON}/{NB}": WORKED, f"bob/{LESSON}": None, "cid": None},
    )
    report = collect(source, tmp_path / "root", [LESSON])
    problems = {p["member"]: p["reason"] for p in report.problems}
    assert "empty folder" in problems[f"bob/{LESSON}"] and "empty folder" in problems["cid"]
    assert entry(report, "ann")["outcome"] == "folder"  # its files are listed themselves
    zipped = make_zip(
        tmp_path / "m.zip",
        {
            "Anna Smith_11_assignsubmission_file_/": None,
            "Anna Smith_11_assignsubmission_file_/softmax.ipynb": WORKED,
            "Bob Ray_12_assignsubmission_file_/": None,
        },
    )
    report = collect(zipped, tmp_path / "root2", [LESSON], lesson=LESSON)
    assert entry(report, "Anna Smith_11_assignsubmission_file_")["outcome"] == "folder"
    assert "empty folder" in entry(report, "Bob Ray_12_assignsubmission_file_")["reason"]


def test_oversized_members_are_listed(tmp_path, monkeypatch):
    monkeypatch.setattr(collect_module, "MAX_MEMBER_BYTES", len(WORKED) - 1)
    source = make_zip(tmp_path / "c.zip", {"ann_5_10_softmax.ipynb": WORKED})
    report = collect(source, tmp_path / "root", [LESSON], lesson=LESSON)
    assert report.imported == []
    assert "larger than 50 MiB" in entry(report, "ann_5_10_softmax.ipynb")["reason"]


def test_the_total_read_is_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(collect_module, "MAX_TOTAL_BYTES", len(WORKED) + len(BLANK) // 2)
    source = make_zip(
        tmp_path / "c.zip", {"ann_5_10_softmax.ipynb": WORKED, "bob_6_11_softmax.ipynb": BLANK}
    )
    report = collect(source, tmp_path / "root", [LESSON], lesson=LESSON)
    assert len(report.imported) == 1
    assert "2 GiB cap" in report.problems[0]["reason"]


def _symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def test_unsafe_zip_members_are_listed_and_never_written(tmp_path):
    source = tmp_path / "evil.zip"
    with zipfile.ZipFile(source, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        archive.writestr("../../escaped_1_2_softmax.ipynb", WORKED)
        archive.writestr("/abs_3_4_softmax.ipynb", WORKED)
        archive.writestr(_symlink_info("link_5_6_softmax.ipynb"), "/etc/passwd")
        archive.writestr("dup_7_8_softmax.ipynb", BLANK)
        archive.writestr("dup_7_8_softmax.ipynb", WORKED)
        archive.writestr("ok_9_10_softmax.ipynb", PARTIAL)
    root = tmp_path / "root"
    report = collect(source, root, [LESSON], lesson=LESSON)
    reasons = [(p["member"], p["reason"]) for p in report.problems]
    assert any("zip slip" in r for m, r in reasons if m.startswith("../"))
    assert any("absolute path" in r for m, r in reasons if m.startswith("/abs"))
    assert any("symbolic link" in r for m, r in reasons if m.startswith("link"))
    assert any("2 members named so" in r for m, r in reasons if m.startswith("dup"))
    assert submissions.current_submissions(root) == {("ok_9", LESSON), ("dup_7", LESSON)}
    assert graded(root, "dup_7") == WORKED  # the last of the duplicates, as unzip would
    assert not (tmp_path / "escaped_1").exists() and not list(tmp_path.rglob("escaped*"))


def _patch(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 2  # the local header and the central directory
    return data.replace(old, new)


def test_names_not_in_utf8_are_listed_and_utf8_without_the_flag_is_read(tmp_path):
    plain = make_zip(tmp_path / "p.zip", {"jXse_1_2_softmax.ipynb": WORKED}).read_bytes()
    cp437 = tmp_path / "cp437.zip"
    cp437.write_bytes(_patch(plain, b"jXse", b"j\x82se"))  # a one-byte legacy code page
    report = collect(cp437, tmp_path / "root", [LESSON], lesson=LESSON)
    assert report.imported == [] and "not UTF-8" in report.problems[0]["reason"]
    plain = make_zip(tmp_path / "q.zip", {"josXX_1_2_softmax.ipynb": WORKED}).read_bytes()
    unflagged = tmp_path / "utf8.zip"
    unflagged.write_bytes(_patch(plain, b"josXX", "josé".encode()))
    collect(unflagged, tmp_path / "root2", [LESSON], lesson=LESSON)
    assert submissions.current_submissions(tmp_path / "root2") == {("josé_1", LESSON)}


def test_a_member_whose_real_size_differs_from_the_declared_one_is_listed(tmp_path):
    data = make_zip(tmp_path / "a.zip", {"ann_5_10_softmax.ipynb": WORKED}).read_bytes()
    size = struct.pack("<I", len(WORKED))
    lie = struct.pack("<I", 1000)
    liar = tmp_path / "liar.zip"
    liar.write_bytes(data.replace(size, lie))  # the uncompressed size, in both headers
    report = collect(liar, tmp_path / "root", [LESSON], lesson=LESSON)
    assert report.imported == []
    assert "zip bomb" in report.problems[0]["reason"]


def test_a_corrupt_zip_or_a_missing_source_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(ValueError, match="neither a folder nor a zip|not a readable zip"):
        collect(bad, tmp_path / "root", [LESSON], lesson=LESSON)
    with pytest.raises(FileNotFoundError):
        collect(tmp_path / "nope.zip", tmp_path / "root", [LESSON], lesson=LESSON)
    with pytest.raises(ValueError, match="no \\(\\?P<student>"):
        collect(bad, tmp_path / "root", [LESSON], lesson=LESSON, id_pattern="^(.*)_")


# ---------------------------------------------------------------- the ledger and --replace


def test_the_ledger_keeps_every_collect(tmp_path):
    root = tmp_path / "root"
    folder = make_folder(tmp_path / "src", {f"ann/{LESSON}/{NB}": WORKED, "notes.txt": b"x"})
    collect(folder, root, [LESSON])
    zipped = make_zip(tmp_path / "c.zip", {"bob_6_11_softmax.ipynb": WORKED, "x.pdf": b"%PDF"})
    collect(zipped, root, [LESSON], lesson=LESSON)
    runs = ledger(root)
    assert [r["run"] for r in runs] == [1, 2]
    problems = {(p["run"], p["member"]) for p in submissions.collect_problems(root)}
    assert problems == {(1, "notes.txt"), (2, "x.pdf")}
    assert submissions.current_submissions(root) == {("ann", LESSON), ("bob_6", LESSON)}


def test_replace_leaves_exactly_the_new_set_and_records_who_was_removed(tmp_path):
    root = tmp_path / "root"
    wrong = make_zip(
        tmp_path / "wrong.zip",
        {"ann_softmax.ipynb": WORKED, "bob_softmax.ipynb": WORKED, "notes.txt": b"x"},
    )
    collect(wrong, root, [LESSON], lesson=LESSON)
    right = make_zip(
        tmp_path / "right.zip",
        {"ann_1_9_softmax.ipynb": WORKED, "bob_2_9_softmax.ipynb": PARTIAL},
    )
    report = collect(right, root, [LESSON], lesson=LESSON, replace=True)
    assert submissions.current_submissions(root) == {("ann_1", LESSON), ("bob_2", LESSON)}
    assert report.removed == [
        {"student": "ann", "lesson": LESSON},
        {"student": "bob", "lesson": LESSON},
    ]
    assert ledger(root)[-1]["removed"] == report.removed
    assert submissions.collect_problems(root) == []  # the first collect no longer counts
    assert len(submissions.collect_history(root)) == 2  # but its record stays


def test_a_stopped_replace_leaves_submitted_untouched(tmp_path):
    root = tmp_path / "root"
    collect(make_zip(tmp_path / "a.zip", {"ann_1_9_softmax.ipynb": WORKED}), root, [LESSON], LESSON)
    clash = make_zip(
        tmp_path / "b.zip",
        {
            "Anna Smith_11_assignsubmission_file_softmax.ipynb": WORKED,
            "Anna Smith_12_assignsubmission_file_softmax.ipynb": WORKED,
        },
    )
    with pytest.raises(CollectStopped):
        collect(clash, root, [LESSON], lesson=LESSON, replace=True)
    assert submissions.current_submissions(root) == {("ann_1", LESSON)}
    assert [r["status"] for r in ledger(root)] == ["done", "stopped"]


def test_collecting_a_student_again_replaces_their_earlier_files(tmp_path):
    root = tmp_path / "root"
    make_folder(root / "submitted" / "ann" / LESSON, {"old_copy.ipynb": WORKED})
    source = make_folder(tmp_path / "src", {f"ann/{LESSON}/{NB}": PARTIAL})
    report = collect(source, root, [LESSON])
    assert sorted(p.name for p in (root / "submitted" / "ann" / LESSON).iterdir()) == [NB]
    assert report.imported[0]["replaced_earlier"] is True


def test_an_unreadable_ledger_line_is_reported(tmp_path):
    root = tmp_path / "root"
    collect(make_folder(tmp_path / "src", {f"ann/{LESSON}/{NB}": WORKED}), root, [LESSON])
    with open(submissions.ledger_path(root), "a") as handle:
        handle.write("{broken\n")
    problems = submissions.collect_problems(root)
    assert [p["kind"] for p in problems] == ["ledger"]


def test_collecting_from_inside_submitted_is_refused(tmp_path):
    root = tmp_path / "root"
    make_folder(root / "submitted" / "ann" / LESSON, {NB: WORKED})
    with pytest.raises(ValueError, match="inside"):
        collect(root / "submitted", root, [LESSON])
    with pytest.raises(ValueError, match="holds the grading folder"):
        collect(tmp_path, root, [LESSON])


def test_collect_from_an_lms_zip_and_a_folder(tmp_path):
    """Moved from test_grading.py: the generic layout, resubmissions and the folder layout."""
    archive = make_zip(
        tmp_path / "export.zip",
        {
            "alice_1234_softmax.ipynb": WORKED,
            "bob-softmax (2).ipynb": PARTIAL,
            "bob-softmax (1).ipynb": BLANK,
            "carol_broken.ipynb": b"{not json",
            "README.txt": b"instructions",
            "___.ipynb": b"{}",
        },
    )
    root = tmp_path / "root"
    report = collect(archive, root, [LESSON], lesson=LESSON)
    assert report.layout == "generic"
    assert {i["student"] for i in report.imported} == {"alice", "bob", "carol"}
    assert graded(root, "alice") == WORKED and graded(root, "bob") == PARTIAL
    assert "older copy" in entry(report, "bob-softmax (1).ipynb")["reason"]
    assert "not a notebook" in entry(report, "README.txt")["reason"]
    assert "no student id" in entry(report, "___.ipynb")["reason"]
    assert "not valid JSON" in entry(report, "carol_broken.ipynb")["unreadable"]
    saved = json.loads((root / "reports" / "collect.json").read_text())
    assert len([e for e in saved["entries"] if e["outcome"] == "skipped"]) == 3
    folder = make_folder(
        tmp_path / "folder",
        {f"dave/{LESSON}/whatever.ipynb": WORKED, f"erin/99-nope/{NB}": WORKED},
    )
    report = collect(folder, root, [LESSON])
    assert (
        "graded whatever.ipynb as softmax.ipynb"
        in entry(report, f"dave/{LESSON}/whatever.ipynb")["note"]
    )
    assert "known lesson" in entry(report, f"erin/99-nope/{NB}")["reason"]
