"""A synthetic class of 200 lesson-01 submissions, every one accounted for.

The class mixes correct, partly wrong, blank, malformed and hostile notebooks. Partly
wrong ones combine one to three mistakes from the mutation table (six combinations, each
handed in by about a dozen students).
Submissions that are identical after sanitizing share one execution, as many blanks and
full solutions would in a real class; the test checks every student still gets a result.
"""

from __future__ import annotations

import random

import nbformat
import pytest

from autograder import grading, sandbox
from autograder.lesson import load_lesson
from tests.notebooks import load, save, with_cell

LESSON, NB = "01-softmax", "softmax"
# name -> (answer cell, source) for every graded known mistake of the lesson.
MUTANTS = {
    m.id: (e.answer_cell, m.source)
    for e in load_lesson(LESSON).exercises
    for m in e.mistakes
    if m.graded
}
pytestmark = pytest.mark.slow
SOLUTION = load("solutions", LESSON, NB)
BLANK = load("course", LESSON, NB)
HOSTILE = [
    "import os\nos._exit(0)",
    "torch.allclose = lambda *a, **k: True",
    "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)",
    "from solutions.kernels.softmax import softmax",
    "print('x' * 3_000_000)",
]


def mistake_combinations(rng: random.Random, count: int = 6) -> list[list[str]]:
    """Six typical ways of getting one to three exercises wrong."""
    combos = []
    while len(combos) < count:
        names = rng.sample(sorted(MUTANTS), rng.randint(1, 3))
        if len({MUTANTS[n][0] for n in names}) == len(names):  # one mistake per answer cell
            combos.append(names)
    return combos


def partly_wrong(names: list[str]):
    nb = SOLUTION
    for name in names:
        grade_id, source = MUTANTS[name]
        nb = with_cell(nb, grade_id, source)
    return nb


def hostile(attack: int):
    """The solution with attack number `attack` in a cell of its own, at a place of its own
    (students who hand in the same attack share one execution, as copies do)."""
    nb = nbformat.from_dict(SOLUTION)
    where = 3 + (attack * 7) % (len(nb.cells) - 3)
    nb.cells.insert(where, nbformat.v4.new_code_cell(HOSTILE[attack]))
    return nb


def build_class(root, rng: random.Random) -> dict[str, str]:
    """Writes 200 submissions; returns student -> the kind of submission."""
    kinds: dict[str, str] = {}
    combinations = mistake_combinations(rng)
    plan = (
        ["correct"] * 50
        + ["partly-wrong"] * 70
        + ["blank"] * 40
        + ["malformed"] * 20
        + ["hostile"] * 10
        + ["wrong-name"] * 5
        + ["missing"] * 5
    )
    rng.shuffle(plan)
    for i, kind in enumerate(plan):
        student = f"s{i:03d}"
        kinds[student] = kind
        folder = root / "submitted" / student / LESSON
        folder.mkdir(parents=True)
        if kind == "correct":
            save(SOLUTION, folder / f"{NB}.ipynb")
        elif kind == "partly-wrong":
            save(partly_wrong(rng.choice(combinations)), folder / f"{NB}.ipynb")
        elif kind == "blank":
            save(BLANK, folder / f"{NB}.ipynb")
        elif kind == "malformed":
            junk = rng.choice([b"", b"\x00\xff\xfe", b'{"cells": [', b"[1, 2, 3]", b"null"])
            (folder / f"{NB}.ipynb").write_bytes(junk)
        elif kind == "hostile":
            attack = rng.randrange(len(HOSTILE))
            kinds[student] = f"hostile-{attack}"
            save(hostile(attack), folder / f"{NB}.ipynb")
        elif kind == "wrong-name":
            save(SOLUTION, folder / f"my_{NB}_final.ipynb")
    return kinds


def test_a_class_of_200_is_fully_accounted_for(tmp_path):
    kinds = build_class(tmp_path, random.Random(2026))
    settings = grading.Settings(
        root=tmp_path, limits=sandbox.Limits(cell_timeout_s=15, notebook_timeout_s=240)
    )
    results = {
        r.student: r for r in grading.grade(tmp_path, [LESSON], workers=2, settings=settings)
    }
    assert set(results) == set(kinds)
    full = results[next(s for s, k in kinds.items() if k == "correct")].max_score
    for student, kind in kinds.items():
        result = results[student]
        if kind in ("correct", "wrong-name", "hostile-1", "hostile-4"):
            assert result.score == full, (student, result)
        elif kind == "blank":
            assert result.score == 0
        elif kind == "partly-wrong":
            assert result.status == "graded" and 0 <= result.score < full
        elif kind == "malformed":
            assert result.status == "unreadable" and result.reason
        elif kind == "missing":
            assert result.status == "missing" and result.reason
        elif kind.startswith("hostile"):
            assert result.status == "graded"
            if not HOSTILE[int(kind.split("-")[1])].startswith("print"):
                assert result.findings, result
    executed = sum(1 for r in results.values() if r.status == "graded" and not r.shared_run)
    print(f"\n200 submissions, {executed} distinct executions")
