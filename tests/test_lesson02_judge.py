"""Every hidden test of lesson 02 passes on the reference and fails on each known mistake.

Mutants are run the way a submission is: the solution notebook's setup and solution cells are
executed in one namespace with one cell replaced, so a mistake in `attention_weights` reaches
`scaled_dot_product_attention` (which calls it) exactly as it would in the notebook.
"""

from __future__ import annotations

import pytest
import sympy as sp
import torch

from autograder.exercises import get_exercise, lesson_exercises
from autograder.exercises import lesson02 as L02
from autograder.judge import JudgeFailed, grade, judge
from tests import notebooks
from tests.mutants.lesson02 import MUTANTS

LESSON, NB = "02-scaled-attention", "scaled_attention"
EXERCISES = lesson_exercises(LESSON)
# Locked cells the solution cells depend on (imports and symbols; the expectation helper).
CONTEXT_CELLS = ("setup", "expectation")


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
    for name in ["scale-by-d_k", "scale-by-sqrt-d_model", "mask-after-softmax", "inverted-mask"]:
        assert name in MUTANTS


def test_symbolic_answers_are_compared_by_equivalence_not_text():
    d, sq, sk = L02.D_K, L02.SIGMA_Q, L02.SIGMA_K
    rewritten = (sp.expand((sq * sk) ** 2 * d), sp.sqrt(sq**4 * sk**4), (sq * sk) ** 2 * d / d**2)
    assert grade(f"{LESSON}/closed-forms", lambda: rewritten).passed
    # the same names with other assumptions are other symbols: not accepted
    plain = sp.Symbol("d_k") * sp.Symbol("sigma_q") ** 2 * sp.Symbol("sigma_k") ** 2
    assert not grade(f"{LESSON}/dot-variance", lambda n: n * plain / sp.Symbol("d_k")).passed


def test_a_number_instead_of_an_expression_is_rejected_with_a_reason():
    verdict = grade(f"{LESSON}/dot-variance", lambda n: float(n))
    assert not verdict.passed
    assert "sympy" in verdict.probes[0].message


def test_monte_carlo_tolerance_accepts_any_correct_sampler_and_rejects_bias():
    def uniform(d_k, n_samples, sigma_q=1.0, sigma_k=1.0, seed=0):
        g = torch.Generator().manual_seed(seed + 1)
        half_width = 3**0.5  # uniform on [-sqrt(3), sqrt(3)] has variance 1
        q = (torch.rand(n_samples, d_k, generator=g) * 2 - 1) * half_width * sigma_q
        k = (torch.rand(n_samples, d_k, generator=g) * 2 - 1) * half_width * sigma_k
        return float((q * k).sum(-1).var())

    assert grade(f"{LESSON}/monte-carlo", uniform).passed

    def biased(*args, **kwargs):
        return 1.08 * uniform(*args, **kwargs)

    assert not grade(f"{LESSON}/monte-carlo", biased).passed


def test_judge_names_pytorchs_attention_as_forbidden():
    verdict = grade(f"{LESSON}/sdpa-shapes", torch.nn.functional.scaled_dot_product_attention)
    assert not verdict.passed
    assert "scaled_dot_product" in verdict.probes[0].message


def test_judge_raises_with_the_failing_case_named(solution_ns):
    ns = notebook_namespace({"attention_weights": MUTANTS["scale-by-sqrt-d_model"][3]})
    with pytest.raises(JudgeFailed, match="1/sqrt\\(d_head\\)"):
        judge(f"{LESSON}/attention-weights", ns["attention_weights"])
    assert judge(f"{LESSON}/entropy", solution_ns["attention_entropy"]) is None


def test_probe_inputs_are_plain_data():
    allowed = (torch.Tensor, int, float, bool, str, type(None))
    for exercise in EXERCISES:
        for probe in get_exercise(exercise.id).make_probes():
            for value in [*probe.args, *probe.kwargs.values()]:
                assert isinstance(value, allowed), (exercise.id, probe.name, type(value))
