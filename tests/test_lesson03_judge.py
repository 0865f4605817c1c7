"""Every hidden test of lesson 03 passes on the reference and fails on each known mistake.

Mutants are run the way a submission is: the solution notebook's setup and solution cells are
executed in one namespace with one cell replaced, so a mistake in `masked_softmax` reaches
`masked_attention` (which calls it) exactly as it would in the notebook.
"""

from __future__ import annotations

import pytest
import torch

from autograder.exercises import get_exercise, lesson_exercises
from autograder.judge import JudgeFailed, grade, judge
from tests import notebooks
from tests.mutants.lesson03 import MUTANTS

LESSON, NB = "03-causal-masking", "causal_masking"
EXERCISES = lesson_exercises(LESSON)
# Locked cells the solution cells depend on (imports).
CONTEXT_CELLS = ("setup",)


def notebook_namespace(replace: dict[str, str] | None = None) -> dict:
    return notebooks.notebook_namespace(LESSON, NB, CONTEXT_CELLS, replace)


@pytest.fixture(scope="module")
def solution_ns():
    return notebook_namespace()


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.id)
def test_reference_passes_every_hidden_test(exercise):
    verdict = grade(exercise.id, exercise.reference)
    assert verdict.passed, verdict.report()


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.id)
def test_solution_notebook_passes_every_hidden_test(exercise, solution_ns):
    verdict = grade(exercise.id, solution_ns[exercise.function])
    assert verdict.passed, verdict.report()


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_each_mutant_fails_exactly_the_tests_it_should(name):
    cell, _, must_fail, source = MUTANTS[name]
    ns = notebook_namespace({cell: source})
    # Exercises whose functions never run the replaced cell keep the solution's verdict
    # (tested above), so only the reached ones are graded again.
    reached = [e for e in EXERCISES if e.function in notebooks.reached_by(ns, source)]
    failed = {e.id for e in reached if not grade(e.id, ns[e.function]).passed}
    assert failed == must_fail


def test_every_exercise_is_covered_by_a_mutant():
    covered = set().union(*(m[2] for m in MUTANTS.values()))
    assert covered == {e.id for e in EXERCISES}


def test_the_mistakes_the_issue_names_are_in_the_table():
    for name in [
        "causal-off-by-one-diagonal",
        "minus-inf-fill-nan-rows",
        "mask-after-softmax",
        "inverted-mask",
    ]:
        assert name in MUTANTS


def test_leak_test_subjects_are_passed_by_name_and_split_into_causal_and_leaky():
    from autograder import probe_helpers
    from autograder.exercises.lesson03 import CAUSAL_LAYERS, LEAKY_LAYERS, leaks_future

    x = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(0))
    assert sorted(CAUSAL_LAYERS + LEAKY_LAYERS) == sorted(probe_helpers.__all__)
    for name in CAUSAL_LAYERS:
        assert leaks_future(getattr(probe_helpers, name), x) is False, name
    for name in LEAKY_LAYERS:
        assert leaks_future(getattr(probe_helpers, name), x) is True, name
    probe = get_exercise(f"{LESSON}/leak-test").make_probes()[0]
    assert probe.args[0].ref.startswith("autograder.probe_helpers:")


def test_empty_rows_are_zero_in_the_reference_and_nan_in_the_naive_fill():
    verdict = grade(
        f"{LESSON}/masked-softmax", lambda s, m: torch.softmax(s.masked_fill(~m, float("-inf")), -1)
    )
    assert not verdict.passed
    assert any("NaN" in p.message for p in verdict.probes if not p.passed)


def test_judge_raises_with_the_failing_case_named(solution_ns):
    ns = notebook_namespace({"causal_mask": MUTANTS["causal-off-by-one-diagonal"][3]})
    with pytest.raises(JudgeFailed, match="diagonal included"):
        judge(f"{LESSON}/causal-mask", ns["causal_mask"])
    assert judge(f"{LESSON}/causal-mask", solution_ns["causal_mask"]) is None


def test_probe_inputs_are_plain_data():
    from autograder.judge import Fn

    allowed = (torch.Tensor, int, float, bool, str, type(None), list, tuple, Fn)
    for exercise in EXERCISES:
        for probe in get_exercise(exercise.id).make_probes():
            for value in [*probe.args, *probe.kwargs.values()]:
                assert isinstance(value, allowed), (exercise.id, probe.name, type(value))
