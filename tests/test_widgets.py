"""Widgets build and update without a display, run the learner's function, and hide when grading."""

from __future__ import annotations

import math

import torch

from course.widgets import softmax_explorer
from solutions.kernels.softmax import softmax as reference_softmax


def naive(x):
    e = torch.exp(x)
    return e / e.sum(-1, keepdim=True)


def test_explorer_runs_the_learners_function_and_updates_on_every_control():
    calls = []

    def spy(x):
        calls.append(x.dtype)
        return reference_softmax(x)

    w = softmax_explorer(spy)
    first = w.image.value
    assert bytes(first).startswith(b"\x89PNG") and w.state["warning"] is None
    w.temperature.value = 0.2
    assert w.image.value != first and w.state["entropy"] < math.log(8)
    w.dtype.value = "float16"
    assert torch.float16 in calls
    before = w.image.value
    w.offset.value = 5000.0
    assert w.image.value != before
    assert w.updates == 4


def test_entropy_and_gradient_readouts_match_theory():
    w = softmax_explorer(reference_softmax, logits=torch.zeros(4))
    assert abs(w.state["entropy"] - math.log(4)) < 1e-6
    # uniform p: the largest |J_ij| is on the diagonal, p(1 - p) = 3/16
    assert abs(w.state["max_grad"] - 3 / 16) < 1e-6
    assert "0.1875" in w.readout.value


def test_warns_when_the_learners_softmax_overflows_but_the_reference_does_not():
    w = softmax_explorer(naive)
    assert w.state["warning"] is None
    w.offset.value = 1000.0
    assert "inf/NaN" in w.state["warning"] and "inf/NaN" in w.readout.value
    w.offset.value = 0.0
    w.dtype.value = "float16"
    w.temperature.value = 0.1
    assert w.state["warning"] is not None


def test_learner_errors_are_shown_not_raised():
    def broken(x):
        raise ValueError("oops")

    w = softmax_explorer(broken)
    assert "ValueError: oops" in w.readout.value and w.image.value == b""

    def unwritten(x):
        raise NotImplementedError()

    assert "not written yet" in softmax_explorer(unwritten).readout.value


def test_wrong_shape_is_reported():
    w = softmax_explorer(lambda x: x.sum())
    assert "shape" in w.error


def test_nothing_renders_under_nbgrader(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    w = softmax_explorer(reference_softmax)
    bundle = w._repr_mimebundle_()
    assert list(bundle) == ["text/plain"] and w.show() is None
    monkeypatch.delenv("NBGRADER_EXECUTION")
    assert "application/vnd.jupyter.widget-view+json" in w._repr_mimebundle_()
