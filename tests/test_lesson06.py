"""Lesson 06's checks: built-ins that reach no ATen operator of their own are still caught, each
known mistake is told its own hint (and no other's), and the result-type contracts hold."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autograder.lesson import load_lesson, mistake_function
from course import checks
from course.calling import Call, FnRef, Watch, call_function
from course.probe_layers import inspect_caller_tensors, inspect_float_pair, inspect_tensor_result

LESSON = load_lesson("06-normalization")
RMS_OPS = dict(LESSON.exercise("rms-norm").forbidden)
X = torch.tensor([[3.0, 4.0], [1.0, -2.0]])


def _rms_by(name: str):
    def by_f(x):
        return F.rms_norm(x, x.shape[-1:])

    def by_torch(x):
        return torch.rms_norm(x, x.shape[-1:])

    def by_module(x):
        return torch.nn.RMSNorm(x.shape[-1], elementwise_affine=False)(x)

    def by_aten(x):
        return torch.ops.aten.rms_norm(x, [x.shape[-1]])

    def by_alias(x):
        from torch.nn.functional import rms_norm as renamed

        return renamed(x, x.shape[-1:])

    return {"F": by_f, "torch": by_torch, "nn": by_module, "aten": by_aten, "alias": by_alias}[name]


@pytest.mark.parametrize("mode", ["value", "grad"])
@pytest.mark.parametrize(
    "name, shown",
    [
        ("F", "F.rms_norm"),
        ("alias", "F.rms_norm"),
        ("torch", "torch.rms_norm"),
        ("nn", "nn.RMSNorm"),
        ("aten", "rms_norm (F.rms_norm"),
    ],
)
def test_a_python_level_builtin_is_caught_whatever_it_decomposes_into(name, shown, mode):
    # On the CPU these decompose into pow, mean and rsqrt: the ATen watch alone sees nothing.
    outcome = call_function(_rms_by(name), Call("x", (X,), mode=mode), Watch(forbidden=RMS_OPS))
    assert outcome.error is not None and outcome.error.startswith(f"uses {shown}")
    assert outcome.forbidden


def test_the_guard_leaves_everything_as_it_was():
    forward = torch.nn.RMSNorm.forward
    call_function(_rms_by("nn"), Call("x", (X,)), Watch(forbidden=RMS_OPS))
    assert torch.nn.RMSNorm.forward is forward
    # BatchNorm1d inherits its forward: the guard must not leave one of its own behind.
    before = torch.nn.BatchNorm1d.__dict__.get("forward")
    ops = {"torch.nn:BatchNorm1d": "nn.BatchNorm1d"}

    def by_batch_norm(x):
        return torch.nn.BatchNorm1d(x.shape[-1])(x)

    outcome = call_function(by_batch_norm, Call("x", (X,)), Watch(forbidden=ops))
    assert outcome.error.startswith("uses nn.BatchNorm1d")
    assert torch.nn.BatchNorm1d.__dict__.get("forward") is before
    # Outside a watched call the built-ins work as ever.
    torch.testing.assert_close(torch.nn.RMSNorm(2)(X), F.rms_norm(X, (2,)), rtol=0, atol=0)


def test_own_arithmetic_and_the_graders_stand_ins_are_not_forbidden():
    def own(x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)

    assert call_function(own, Call("x", (X,)), Watch(forbidden=RMS_OPS)).ok
    # A stand-in (the grader's F.layer_norm) runs inside the learner's call, unwatched.
    namespace = {}
    exec("def uses_helper(x):\n    return layer_norm(x) * 2\n", namespace)  # noqa: S102
    stand_in = FnRef("course.stand_ins:layer_norm").resolve()
    watch = Watch(forbidden=RMS_OPS, stand_ins={"layer_norm": stand_in})
    outcome = call_function(namespace["uses_helper"], Call("x", (X,)), watch)
    assert outcome.ok, outcome.error


def test_python_level_names_must_be_torchs_and_missing_ones_are_skipped():
    outcome = call_function(lambda x: x, Call("x", (X,)), Watch(forbidden={"os:system": "os"}))
    assert "must be in a torch module, not os" in outcome.error
    watch = Watch(forbidden={"torch.nn.functional:not_in_this_build": "F.nothing"})
    assert call_function(lambda x: x + 1, Call("x", (X,)), watch).ok


def _visible_hints(exercise, fn) -> tuple[str, list[str]]:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            checks.check(exercise.full_id, fn)
    except checks.CheckFailed as exc:
        message = str(exc)
        hints = [
            line.strip().removeprefix("hint:").strip()
            for line in message.splitlines()
            if line.strip().startswith("hint:")
        ]
        return message, hints
    return "", []


@pytest.mark.parametrize("exercise", LESSON.exercises, ids=lambda e: e.id)
def test_each_known_mistake_is_told_its_own_hint_and_no_other(exercise):
    checks._fixture.cache_clear()
    for mistake in exercise.mistakes:
        message, hints = _visible_hints(exercise, mistake_function(LESSON, exercise, mistake))
        assert mistake.hint in hints, f"{mistake.id}: {message}"
        foreign = [
            other.id
            for other in exercise.mistakes
            if other.hint != mistake.hint and other.hint in hints
        ]
        assert not foreign, f"{mistake.id} is also told the hints of {foreign}"


def test_result_types_are_named_with_what_was_expected():
    assert inspect_tensor_result(None, (), {}, torch.zeros(2)) is None
    assert "a list (what .tolist() gives)" in inspect_tensor_result(None, (), {}, [[1.0]])
    assert "numpy.ndarray (what .numpy() gives)" in inspect_tensor_result(None, (), {}, np.ones(2))
    assert inspect_float_pair(None, (), {}, (1.5, 0.5)) is None
    assert "returned a list, where the contract is a tuple" in inspect_float_pair(
        None, (), {}, [1.5, 0.5]
    )
    pair = (np.float64(1.5), np.float64(0.5))
    assert "(numpy.float64, numpy.float64), where the contract is two Python floats" in (
        inspect_float_pair(None, (), {}, pair)
    )
    weights = torch.zeros(2, 2, 3, 3).requires_grad_(True)
    problem = inspect_caller_tensors(None, (torch.zeros(3), weights), {}, torch.zeros(2))
    assert "changed the caller's `weights` (argument 1): it now requires grad" in problem
