"""Lesson 06's explorer runs the learner's norm and blocks at the chosen depth, shows the laws the
lesson derives on their output (averaged over several draws of the weights), and names the cause
when a stream misbehaves: the norm, the block, or DeepNorm's constants."""

from __future__ import annotations

import math

import torch

from course.widgets import normalization_explorer
from course.widgets.normalization import D_MODEL, DRAWS, N_TOKENS
from solutions.kernels import depth as D
from solutions.kernels import norms as N


def explorer(norm=N.layer_norm, pre=D.pre_ln_block, post=D.post_ln_block, constants=None, depth=6):
    # A shallow stack keeps these tests quick; the laws' test slides it deeper.
    return normalization_explorer(norm, pre, post, constants or D.deepnorm_alpha_beta, depth=depth)


def test_every_kind_draws_and_the_depth_slider_sets_the_stack():
    w = explorer()
    pictures = set()
    for kind in ("pre-LN", "post-LN", "DeepNorm"):
        w.kind.value = kind
        assert w.error is None, w.error
        assert bytes(w.image.value).startswith(b"\x89PNG")
        pictures.add(bytes(w.image.value))
        assert w.state["grads"].shape == (6,) and w.state["stream"].shape == (7,)
    assert len(pictures) == 3
    w.depth.value = 5
    assert w.state["grads"].shape == (5,) and w.state["stream"].shape == (6,)
    # The seed picks the drawn stack; the readout's numbers average DRAWS draws from it.
    before = bytes(w.image.value)
    w.seed.value = 7
    assert w.error is None and bytes(w.image.value) != before
    assert f"mean of {DRAWS} draws" in w.readout.value and "seed 7" not in w.readout.value


def test_tokens_and_width_differ_so_a_norm_without_keepdim_fails_visibly():
    assert N_TOKENS != D_MODEL

    def no_keepdim(x, weight=None, bias=None, eps=1e-5):
        mean = x.mean(-1)
        return (x - mean) / torch.sqrt(((x - mean) ** 2).mean(-1) + eps)

    w = explorer(norm=no_keepdim)
    assert w.error.startswith("✘ your layer_norm raised RuntimeError") and "keepdim" in w.error


def test_the_laws_are_measured_on_the_learners_functions():
    w = explorer(depth=12)
    assert abs(w.state["pre_slope"] - 0.5) < 0.1
    assert w.state["law_ratio"] == math.sqrt((1 + 12 / 2) / 1.25)
    # The ratio is the mean over DRAWS draws of the stack, seeds 0 to DRAWS - 1.
    ratios = []
    for seed in range(DRAWS):
        x, weights, r = w._inputs(12, seed)
        post = D.layer_grad_norms(x, weights, r, "post")[-1]
        ratios.append((post / D.layer_grad_norms(x, weights, r, "pre")[-1]).item())
    assert math.isclose(w.state["ratio"], sum(ratios) / DRAWS, rel_tol=1e-9)
    assert f"{min(ratios):.2f} to {max(ratios):.2f}" in w.readout.value
    assert "✘" not in w.readout.value
    # Pre-LN gradients fall with depth; DeepNorm's are nearly flat.
    pre_spread = w.state["spread"]
    w.kind.value = "DeepNorm"
    assert w.state["spread"] < 1.3 < pre_spread
    assert w.state["constants"] == D.deepnorm_alpha_beta(12)
    assert "alpha = 2.213" in w.readout.value  # (2 * 12) ** 0.25
    torch.testing.assert_close(
        w.state["stream"][1:], torch.ones(12, dtype=torch.float64), atol=1e-4, rtol=0
    )


def test_a_pre_ln_block_that_normalises_the_stream_is_flagged():
    def normalised_residual(x, attn, ffn, norm1, norm2):
        h = norm1(x)
        x = h + attn(h)
        h = norm2(x)
        return h + ffn(h)

    w = explorer(pre=normalised_residual, depth=2)
    assert w.state["pre_slope"] < 0.2
    assert "your pre_ln_block does not carry x itself forward" in w.readout.value


def test_a_post_ln_block_in_the_pre_ln_slot_is_named_as_such():
    def post_ln(x, attn, ffn, norm1, norm2):
        x = norm1(x + attn(x))
        return norm2(x + ffn(x))

    w = explorer(pre=post_ln, depth=2)
    assert "your pre_ln_block normalises after the add, like a post-LN block" in w.readout.value
    assert "carry x itself" not in w.readout.value


def test_an_in_place_norm_is_blamed_not_the_block():
    def in_place(x, weight=None, bias=None, eps=1e-5):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        x -= mean
        x /= torch.sqrt(var + eps)
        return x

    w = explorer(norm=in_place, depth=2)
    assert "your layer_norm writes into its input" in w.readout.value
    assert "pre_ln_block" not in w.readout.value


def test_deepnorm_constants_are_judged_by_lesson_06s_own_check():
    # The hints are that check's known mistakes (course/fixtures/06-normalization.json).
    w = explorer(constants=lambda n: ((8 * n) ** -0.25, (2 * n) ** 0.25), depth=2)
    w.kind.value = "DeepNorm"
    assert w.error is None and "alpha = 0.500" in w.readout.value  # the curves use the learner's
    assert "fails lesson 06&#x27;s check" in w.readout.value
    assert "return (alpha, beta) in that order" in w.readout.value
    w = explorer(constants=lambda n: ((2 * n) ** 0.5, (8 * n) ** -0.5), depth=2)
    w.kind.value = "DeepNorm"
    assert "not square roots" in w.readout.value and "in that order" not in w.readout.value
    w = explorer(depth=2)
    w.kind.value = "DeepNorm"
    assert w.constants_problem is None and "✘" not in w.readout.value


def test_without_the_learners_constants_deepnorm_is_left_out_with_a_note():
    def unwritten(n_layers):
        raise NotImplementedError

    for constants, why in ((None, "pass it as the fourth argument"), (unwritten, "not written")):
        w = normalization_explorer(N.layer_norm, D.pre_ln_block, D.post_ln_block, constants)
        assert tuple(w.kind.options) == ("pre-LN", "post-LN")
        notes = [c.value for c in w.controls_box.children if "DeepNorm needs" in str(c.value)]
        assert len(notes) == 1 and why in notes[0] and "Traceback" not in notes[0]
        w.kind.value = "post-LN"
        assert w.error is None and bytes(w.image.value).startswith(b"\x89PNG")


def test_a_post_ln_block_without_its_norms_is_flagged():
    def no_norms(x, attn, ffn, norm1, norm2, alpha=1.0):
        x = alpha * x + attn(x)
        return alpha * x + ffn(x)

    w = explorer(post=no_norms, depth=2)
    w.kind.value = "post-LN"
    assert "your post_ln_block does not end with a norm" in w.readout.value


def test_unwritten_functions_show_a_message_not_a_traceback():
    def unwritten(*args, **kwargs):
        raise NotImplementedError

    w = normalization_explorer(unwritten, unwritten, unwritten, unwritten)
    assert "not written yet" in w.readout.value and not w.image.value
    assert "DeepNorm" not in w.kind.options


def test_results_the_explorer_cannot_use_are_named():
    def nan_norm(x, weight=None, bias=None, eps=1e-5):
        return N.layer_norm(x) * float("nan")

    w = explorer(norm=nan_norm, depth=2)
    assert "NaN" in w.error and "raised" not in w.error

    def via_numpy(x, weight=None, bias=None, eps=1e-5):
        return torch.from_numpy(N.layer_norm(x).numpy())

    # Fine on the input itself, which needs no gradient; not on a sum of the post-LN stack.
    w = explorer(norm=via_numpy, depth=2)
    assert w.error.startswith("✘ your layer_norm raised RuntimeError") and ".numpy()" in w.error

    w = explorer(constants=lambda n: 2.0, depth=2)
    w.kind.value = "DeepNorm"
    assert "(alpha, beta)" in w.error


def test_nothing_is_shown_while_grading(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert explorer(depth=2).show() is None
