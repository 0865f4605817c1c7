"""Widgets build and update without a display, run the learner's function, and hide when grading."""

from __future__ import annotations

import math

import numpy as np
import torch

from course.widgets import softmax_explorer
from course.widgets.softmax import BASE_LOGITS as BASE
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


def test_negative_offsets_show_the_underflow_of_the_naive_formula():
    w = softmax_explorer(naive)
    assert w.offset.min <= -1e4
    w.offset.value = -1000.0
    assert "underflowed" in w.state["warning"] and w.state["reference"].isfinite().all()
    assert "not comparable" in w.readout.value
    w = softmax_explorer(reference_softmax)
    w.offset.value = -1000.0
    assert w.state["warning"] is None and w.state["difference"] < 1e-6


def test_a_float16_input_returned_as_float32_is_flagged():
    def upcasting(x):
        return reference_softmax(x.float())

    w = softmax_explorer(upcasting)
    assert w.state["warning"] is None  # float32 in, float32 out
    w.dtype.value = "float16"
    assert "returned float32 for a float16 input" in w.state["warning"]
    assert "float32 for a float16 input" in w.readout.value


def test_a_non_differentiable_softmax_is_told_no_gradient_flows():
    def through_numpy(x):
        a = x.detach().numpy()
        e = np.exp(a - a.max(-1, keepdims=True))
        return torch.from_numpy(e / e.sum(-1, keepdims=True))

    w = softmax_explorer(through_numpy)
    assert math.isnan(w.state["max_grad"]) and "no gradient flows" in w.readout.value
    assert "no gradient flows" not in softmax_explorer(reference_softmax).readout.value


def test_the_difference_from_torch_softmax_is_shown():
    w = softmax_explorer(reference_softmax)
    assert w.state["difference"] < 1e-6 and "torch.softmax" in w.readout.value
    halved = softmax_explorer(lambda x: reference_softmax(x / 2))
    expected = (torch.softmax(BASE / 2, -1) - torch.softmax(BASE, -1)).abs().max().item()
    assert abs(halved.state["difference"] - expected) < 1e-6
    assert f"{expected:.2g}" in halved.readout.value


def test_float16_spacing_near_1e4_is_8_and_collapses_the_logits():
    w = softmax_explorer(reference_softmax)
    w.offset.value = 1e4
    assert abs(w.state["spacing"] - 2**-10) < 1e-12  # float32 near 1e4
    assert w.state["distinct"] == len(BASE)
    w.dtype.value = "float16"
    assert w.state["spacing"] == 8.0 and w.state["distinct"] == 1
    # A correct softmax of eight equal numbers is uniform: the lesson is the rounding.
    assert torch.allclose(w.state["probs"], torch.full((8,), 1 / 8, dtype=torch.float64), atol=1e-3)
    assert "only <b>1</b> distinct" in w.readout.value and "<b>8</b>" in w.readout.value
    w.temperature.value = 0.05  # logits now span 100: the bars separate again
    assert w.state["distinct"] > 1


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


class _Handle:
    def __init__(self):
        self.updates = []

    def update(self, bundle, raw=False):
        self.updates.append(bundle)


def test_displayed_with_a_static_copy_that_the_live_widget_hides(monkeypatch):
    import IPython.display

    from course.widgets.base import WIDGET_MIME

    shown, handle = [], _Handle()

    def fake_display(bundle, raw=False, display_id=None):
        shown.append((bundle, display_id))
        return handle if display_id else None

    monkeypatch.setattr(IPython.display, "display", fake_display)
    w = softmax_explorer(reference_softmax)
    w._ipython_display_()
    (live, _), (static, display_id) = shown
    assert WIDGET_MIME in live and display_id is True
    html = static["text/html"]
    assert "run this cell again" in html and "data:image/png;base64," in html
    assert w.fallback_class in html and "temperature T = 1, logit offset = 0" in html
    # The live widget carries the style that hides exactly this static copy.
    styles = [c.value for c in w.widget.children if "style" in getattr(c, "value", "")]
    assert any(f".{w.fallback_class} {{ display: none" in s for s in styles)
    # The copy follows the widget: a new picture after each change.
    w.temperature.value = 0.2
    assert handle.updates and handle.updates[-1]["text/html"] != html
    assert "temperature T = 0.2" in handle.updates[-1]["text/html"]


def test_no_static_copy_under_nbgrader(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(
        IPython.display, "display", lambda b, raw=False, display_id=None: shown.append(b)
    )
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    softmax_explorer(reference_softmax)._ipython_display_()
    assert shown == [{"text/plain": "<SoftmaxExplorer: not shown while grading>"}]
