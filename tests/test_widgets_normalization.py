"""Lesson 06's explorer runs the learner's norm and blocks at the chosen depth, shows the laws the
lesson derives on their output, and names a pre-LN block that normalises the residual stream."""

from __future__ import annotations

import math

import torch

from course.widgets import normalization_explorer
from solutions.kernels import depth as D
from solutions.kernels import norms as N


def explorer(norm=N.layer_norm, pre=D.pre_ln_block, post=D.post_ln_block, constants=None):
    return normalization_explorer(norm, pre, post, constants or D.deepnorm_alpha_beta)


def test_every_kind_draws_and_the_depth_slider_sets_the_stack():
    w = explorer()
    pictures = set()
    for kind in ("pre-LN", "post-LN", "DeepNorm"):
        w.kind.value = kind
        assert w.error is None, w.error
        assert bytes(w.image.value).startswith(b"\x89PNG")
        pictures.add(bytes(w.image.value))
        assert w.state["grads"].shape == (12,) and w.state["stream"].shape == (13,)
    assert len(pictures) == 3
    w.depth.value = 5
    assert w.state["grads"].shape == (5,) and w.state["stream"].shape == (6,)


def test_the_laws_are_measured_on_the_learners_functions():
    w = explorer()
    w.depth.value = 24
    assert abs(w.state["pre_slope"] - 0.5) < 0.1
    assert w.state["law_ratio"] == math.sqrt((1 + 24 / 2) / 1.25)
    assert 1.5 < w.state["ratio"] < 5.0
    assert "✘" not in w.readout.value
    # Pre-LN gradients fall with depth; DeepNorm's are nearly flat.
    pre_spread = w.state["spread"]
    w.kind.value = "DeepNorm"
    assert w.state["spread"] < 1.3 < pre_spread
    assert w.state["constants"] == D.deepnorm_alpha_beta(24)
    assert "alpha = 2.632" in w.readout.value  # (2 * 24) ** 0.25
    torch.testing.assert_close(
        w.state["stream"][1:], torch.ones(24, dtype=torch.float64), atol=1e-4, rtol=0
    )


def test_a_pre_ln_block_that_normalises_the_stream_is_flagged():
    def normalised_residual(x, attn, ffn, norm1, norm2):
        h = norm1(x)
        x = h + attn(h)
        h = norm2(x)
        return h + ffn(h)

    w = explorer(pre=normalised_residual)
    assert w.state["pre_slope"] < 0.2
    assert "normalised x" in w.readout.value


def test_a_post_ln_block_without_its_norms_is_flagged():
    def no_norms(x, attn, ffn, norm1, norm2, alpha=1.0):
        x = alpha * x + attn(x)
        return alpha * x + ffn(x)

    w = explorer(post=no_norms)
    w.kind.value = "post-LN"
    assert "normalised after the add" in w.readout.value


def test_unwritten_functions_show_a_message_not_a_traceback():
    def unwritten(*args, **kwargs):
        raise NotImplementedError

    w = normalization_explorer(unwritten, unwritten, unwritten, unwritten)
    assert "not written yet" in w.readout.value and not w.image.value


def test_results_the_explorer_cannot_use_are_named():
    def nan_norm(x, weight=None, bias=None, eps=1e-5):
        return N.layer_norm(x) * float("nan")

    w = explorer(norm=nan_norm)
    assert "NaN" in w.error and "raised" not in w.error

    w = explorer(constants=lambda n: 2.0)
    w.kind.value = "DeepNorm"
    assert "(alpha, beta)" in w.error


def test_nothing_is_shown_while_grading(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert explorer().show() is None
