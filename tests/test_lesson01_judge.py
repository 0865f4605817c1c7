"""Every hidden test of lesson 01 passes on the reference and fails on each known mistake."""

from __future__ import annotations

import pytest
import torch

from autograder.exercises import get_exercise, lesson_exercises
from autograder.judge import JudgeFailed, grade, judge
from solutions.kernels import softmax as K
from tests.mutants.lesson01 import MUTANTS

EXERCISES = lesson_exercises("01-softmax")

# The reference kernels, under the names the notebook's exercises use: a student
# namespace in which every exercise is solved correctly.
CORRECT = {
    "softmax": K.softmax,
    "logsumexp": K.logsumexp,
    "log_softmax": K.log_softmax,
    "cross_entropy": K.cross_entropy,
    "entropy": K.entropy,
    "softmax_jacobian": K.softmax_jacobian,
    "online_update": K.online_softmax_update,
    "online_softmax": lambda x, block_size: K.online_softmax(x, block_size=block_size),
}


def namespace_with(source: str) -> dict:
    ns = {"torch": torch, **CORRECT}
    exec(compile(source, "<mutant>", "exec"), ns)  # noqa: S102 - test fixtures, not input
    return ns


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.id)
def test_reference_passes_every_hidden_test(exercise):
    verdict = grade(exercise.id, CORRECT[exercise.function])
    assert verdict.passed, verdict.report()
    assert len(verdict.probes) >= 5


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_each_mutant_fails_exactly_the_tests_it_should(name):
    _, function, must_fail, source = MUTANTS[name]
    fn = namespace_with(source)[function]
    for exercise in EXERCISES:
        if exercise.function != function:
            continue
        verdict = grade(exercise.id, fn)
        if exercise.id in must_fail:
            assert not verdict.passed, f"{name} should fail {exercise.id}"
        else:
            assert verdict.passed, f"{name} should keep {exercise.id}:\n{verdict.report()}"


def test_every_exercise_is_covered_by_a_mutant():
    covered = set().union(*(m[2] for m in MUTANTS.values()))
    assert covered == {e.id for e in EXERCISES}


def test_judge_raises_with_the_failing_case_named():
    fn = namespace_with(MUTANTS["softmax-no-max-subtraction"][3])["softmax"]
    with pytest.raises(JudgeFailed, match="huge logits"):
        judge("01-softmax/softmax-stable", fn)


def test_judge_passes_silently_returning_none(capsys):
    assert judge("01-softmax/softmax-basic", K.softmax) is None
    assert "5/5 hidden checks passed" in capsys.readouterr().out


def test_forbidden_call_is_named_in_the_verdict():
    verdict = grade("01-softmax/softmax-basic", lambda x, dim=-1: x.softmax(dim))
    assert not verdict.passed
    assert "torch.softmax" in verdict.probes[0].message


@pytest.mark.parametrize(
    "result, message",
    [
        (lambda x, dim=-1: None, "returned a builtins.NoneType"),
        (lambda x, dim=-1: x.numpy(), "returned a numpy.ndarray"),
        (lambda x, dim=-1: [1.0], "expected a tensor"),
        (lambda x, dim=-1: torch.zeros(3), "shape"),
        (lambda x, dim=-1: 1 / 0, "raised ZeroDivisionError"),
    ],
)
def test_wrong_results_get_specific_messages(result, message):
    verdict = grade("01-softmax/softmax-basic", result)
    assert not verdict.passed
    assert message in verdict.probes[0].message


def test_tensor_subclass_with_lying_eq_is_rejected():
    class Liar(torch.Tensor):
        def __eq__(self, other):
            return True

        def __bool__(self):
            return True

    verdict = grade(
        "01-softmax/softmax-basic", lambda x, dim=-1: torch.zeros_like(x).as_subclass(Liar)
    )
    assert not verdict.passed
    assert "Liar" in verdict.probes[0].message


def test_a_slow_function_is_cut_off(monkeypatch):
    exercise = get_exercise("01-softmax/entropy")
    monkeypatch.setattr(exercise, "time_limit_s", 0.2)

    def forever(p, dim=-1):
        while True:
            pass

    from autograder.judge import run_probe

    result = run_probe(forever, exercise.make_probes()[0], exercise)
    assert "timed out" in result["error"]


def test_inputs_are_reproducible_and_fresh_per_exercise():
    a = get_exercise("01-softmax/softmax-basic").make_probes()
    b = get_exercise("01-softmax/softmax-basic").make_probes()
    c = get_exercise("01-softmax/softmax-basic").make_probes(seed=1)
    assert torch.equal(a[0].args[0], b[0].args[0])
    assert not torch.equal(a[0].args[0], c[0].args[0])


def test_the_learners_inputs_cannot_corrupt_the_reference():
    def mutating(x, dim=-1):
        x.fill_(0.0)
        return K.softmax(x, dim)

    verdict = grade("01-softmax/softmax-basic", mutating)
    assert not verdict.passed  # it computed softmax of zeros, which the reference did not
