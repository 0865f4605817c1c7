"""Lessons 02 and 03's explorers build and update headless, run the learner's functions, and hide
when grading."""

from __future__ import annotations

import math

import pytest
import torch
from matplotlib.figure import Figure

from course.widgets import attention_explorer, masking_explorer
from course.widgets.attention import SCORE_LIMIT
from solutions.kernels import attention as A
from solutions.kernels import masks as M
from solutions.kernels.causality import leaks_future


def weights(q, k, mask=None, scale=None):
    return A.masked_softmax(A.attention_scores(q, k, scale), mask)


def attention(q, k, v, mask=None):
    return A.scaled_dot_product_attention(q, k, v, mask=mask)


def padding(lengths, max_len=None):
    return M.padding_mask(lengths, max_len)


def explorer(**overrides):
    fns = dict(
        attention_fn=attention,
        causal_fn=M.causal_mask,
        padding_fn=padding,
        window_fn=M.sliding_window_mask,
        combine_fn=M.combine_masks,
    )
    fns.update(overrides)
    return masking_explorer(**fns)


# ---------------------------------------------------------------- lesson 02


def test_attention_explorer_runs_the_learners_functions_on_every_control():
    calls = []

    def spy(q, k, mask=None, scale=None):
        calls.append((q.shape[-1], scale))
        return weights(q, k, mask, scale)

    w = attention_explorer(spy, A.attention_entropy)
    first = w.image.value
    assert bytes(first).startswith(b"\x89PNG") and w.error is None
    w.width.value = 1024
    # every update runs the learner's function with each of the three scales
    assert {(1024, 1.0), (1024, 1 / 32), (1024, 1 / 1024)} <= set(calls)
    assert w.image.value != first
    w.scale_by.value = "1"
    assert w.state["scale"] == 1.0 and w.state["scale_name"] == "1"
    before = w.image.value
    w.row.value = 5
    assert w.image.value != before and w.state["row_index"] == 5
    assert w.updates == 4


@pytest.mark.parametrize("d_k", [1, 16, 256, 1024])
def test_scaling_by_sqrt_d_k_keeps_the_score_spread_near_one(d_k):
    w = attention_explorer(weights, A.attention_entropy)
    w.width.value = d_k
    assert w.state["theory_std"] == pytest.approx(1.0)
    assert 0.7 < w.state["score_std"] < 1.3
    unscaled = w.state["per_scale"]["1"]
    assert unscaled["theory_std"] == pytest.approx(math.sqrt(d_k))
    assert 0.7 < unscaled["score_std"] / math.sqrt(d_k) < 1.3
    assert w.state["warning"] is None and not w.state["ignores_scale"]


def drawn(w):
    fig = Figure(figsize=w.figsize)
    w.draw(fig, w.state)
    return fig


def test_the_histograms_share_one_fixed_axis_and_the_numbers_are_in_the_picture():
    w = attention_explorer(weights, A.attention_entropy)
    limits = set()
    for d_k in (1, 1024):
        w.width.value = d_k
        for name in ("1", "√d_k", "d_k"):
            w.scale_by.value = name
            histograms, row = drawn(w).axes
            limits.add(histograms.get_xlim())
            text = histograms.texts[0].get_text()
            assert text.count("std") == 3 and "theory" in text
            assert "entropy" in row.texts[0].get_text()
    assert limits == {(-SCORE_LIMIT, SCORE_LIMIT)}
    # at d_k = 1024 the three spreads differ by a factor 32 each, on the same axis
    stds = [s["score_std"] for s in w.state["per_scale"].values()]
    assert stds[0] > 25 and 0.7 < stds[1] < 1.3 and stds[2] < 0.05
    assert "beyond ±12" in drawn(w).axes[0].texts[0].get_text()


def test_unscaled_wide_heads_saturate_and_d_k_scaling_flattens():
    w = attention_explorer(weights, A.attention_entropy)
    w.width.value, w.scale_by.value = 1024, "1"
    assert w.state["mean_entropy"] < 0.5 and w.state["max_grad"] < 0.05
    w.scale_by.value = "d_k"
    assert w.state["mean_entropy"] > 0.99 * math.log(16)
    w.scale_by.value = "√d_k"
    assert 0.5 < w.state["mean_entropy"] < 0.97 * math.log(16)


def test_a_function_that_ignores_the_scale_is_flagged_in_the_picture():
    def default_only(q, k, mask=None, scale=None):
        return weights(q, k, mask)

    w = attention_explorer(default_only, A.attention_entropy)
    assert w.state["ignores_scale"] and "ignores `scale`" in w.state["warning"]
    assert "unscaled" in w.state["warning"] and "÷ d_k" in w.state["warning"]
    assert any("ignores `scale`" in t.get_text() for t in drawn(w).texts)
    assert "⚠" in w.readout.value


def test_weights_that_differ_from_the_softmax_are_flagged():
    def over_d_k(q, k, mask=None, scale=None):
        return weights(q, k, mask, 1.0 / q.shape[-1] if scale is not None else None)

    w = attention_explorer(over_d_k, A.attention_entropy)
    assert not w.state["ignores_scale"]
    assert "differ from softmax" in w.state["warning"]


def test_largest_gradient_is_autograd_through_the_learners_weights():
    w = attention_explorer(weights, A.attention_entropy)
    p = w.state["row"]
    # max_ij |d p_i / d z_j| is on the diagonal, p_i (1 - p_i), at the largest p_i
    assert w.state["max_grad"] == pytest.approx(float((p * (1 - p)).max()), rel=1e-4)
    assert "autograd" in w.state["grad_source"]
    assert "largest softmax gradient" in w.readout.value


def test_attention_explorer_warns_when_rows_do_not_sum_to_one():
    def after_softmax(q, k, mask=None, scale=None):
        return weights(q, k, mask, scale) * 0.5

    w = attention_explorer(after_softmax, A.attention_entropy)
    assert "sum to" in w.state["warning"] and "⚠" in w.readout.value


def test_attention_explorer_shows_learner_errors():
    def unwritten(*args, **kwargs):
        raise NotImplementedError()

    assert "not written yet" in attention_explorer(unwritten, A.attention_entropy).readout.value
    assert "not written yet" in attention_explorer(weights, unwritten).readout.value
    w = attention_explorer(lambda q, k, mask=None, scale=None: q @ k.T, A.attention_entropy)
    assert w.error is None and w.state["warning"]  # wrong values are shown and flagged
    w = attention_explorer(lambda q, k, mask=None, scale=None: q, A.attention_entropy)
    assert "shape" in w.error and w.image.value == b""


# ---------------------------------------------------------------- lesson 03


def test_masking_explorer_causal_mask_has_no_leak():
    w = explorer()
    assert w.error is None and bytes(w.image.value).startswith(b"\x89PNG")
    t = w.state["token"]
    assert w.state["changed"].tolist() == [p >= t for p in range(10)]
    assert not w.state["leak"] and "leak" not in w.readout.value
    assert torch.equal(w.state["mask"], M.causal_mask(10))


def test_masking_explorer_without_the_causal_mask_leaks():
    w = explorer()
    first = w.image.value
    w.causal.value = False
    assert w.state["leak"] and "⚠ leak" in w.readout.value
    assert w.image.value != first


def test_masking_explorer_weights_are_the_learners_attention_weights():
    w = explorer()
    w.window.value, w.window_size.value = True, 3
    got = w.state["weights"]
    assert torch.allclose(got.sum(-1), torch.ones(10, dtype=got.dtype))
    assert (got[~M.sliding_window_mask(10, 3)] == 0).all()


def test_padding_and_window_create_empty_rows_shown_as_zeros():
    w = explorer()
    w.padding.value, w.length.value = True, 3
    w.window.value, w.window_size.value = True, 2
    assert w.state["empty_rows"] == [4, 5, 6, 7, 8, 9]
    assert w.state["empty_rows_zero"] and w.state["nan_rows"] == []
    assert "may attend to nothing" in w.readout.value


def test_the_nan_trap_is_shown():
    def minus_inf(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, -1) @ v

    w = explorer(attention_fn=minus_inf)
    w.padding.value, w.length.value = True, 3
    w.window.value, w.window_size.value = True, 2
    assert w.state["nan_rows"] == [4, 5, 6, 7, 8, 9]
    assert "NaN" in w.readout.value


def test_an_off_by_one_causal_mask_shows_as_a_leak():
    w = explorer(causal_fn=lambda n, past=0: torch.ones(n, n, dtype=torch.bool).tril(1))
    assert w.state["leak"] and w.state["changed"][w.state["token"] - 1]


def test_masking_explorer_reports_bad_masks():
    w = explorer(causal_fn=lambda n, past=0: M.causal_mask(n).float())
    assert "torch.bool" in w.error
    w = explorer(combine_fn=lambda *m: torch.ones(3, 3, dtype=torch.bool))
    assert "broadcast" in w.error


def test_nothing_renders_under_nbgrader(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    for w in (attention_explorer(weights, A.attention_entropy), explorer()):
        assert list(w._repr_mimebundle_()) == ["text/plain"] and w.show() is None
    monkeypatch.delenv("NBGRADER_EXECUTION")
    assert "application/vnd.jupyter.widget-view+json" in explorer()._repr_mimebundle_()


def test_padding_with_zero_real_tokens_gives_empty_rows_of_zeros():
    w = explorer()
    assert w.length.min == 0
    w.padding.value, w.length.value = True, 0
    assert w.error is None and w.state["empty_rows"] == list(range(10))
    assert w.state["empty_rows_zero"] and w.state["nan_rows"] == []
    assert not w.state["leak"] and w.state["warnings"] == []


def test_a_padding_mask_that_admits_one_extra_column_is_flagged():
    def off_by_one(lengths, max_len=None):
        lengths = torch.as_tensor(lengths)
        return (torch.arange(max_len)[None, :] <= lengths[:, None])[:, None, None, :]

    w = explorer(padding_fn=off_by_one)
    w.padding.value, w.length.value = True, 4
    assert "admits 5 key columns for 4 real tokens" in w.readout.value
    assert "j &lt; length" in w.readout.value  # escaped HTML
    w.padding.value = False
    assert w.state["warnings"] == []
    assert "admits" not in explorer().readout.value


def test_scan_every_token_asks_the_learners_leaks_future():
    verdicts = []

    def spy(layer, x):
        out = leaks_future(layer, x)
        verdicts.append(out)
        return out

    w = explorer(leaks_fn=spy)
    w.scan.value = True
    scan = w.state["scan"]
    assert scan["leaky_tokens"] == [] and scan["verdict"] is False and verdicts == [False]
    assert torch.equal(scan["moved"], ~torch.ones(10, 10, dtype=torch.bool).tril(-1))
    assert "agrees with the scan" in w.readout.value
    w.causal.value = False
    assert w.state["scan"]["verdict"] is True and w.state["scan"]["leaky_tokens"] == list(
        range(1, 10)
    )
    assert "agrees with the scan" in w.readout.value


def test_scan_shows_when_the_learners_leaks_future_disagrees():
    def never(layer, x):
        return False

    w = explorer(leaks_fn=never)
    w.scan.value, w.causal.value = True, False
    assert "⚠ your leaks_future says False, but the scan found leak" in w.readout.value
    w = explorer(leaks_fn=lambda layer, x: (_ for _ in ()).throw(NotImplementedError()))
    w.scan.value = True
    assert "not written yet" in w.readout.value
    w = explorer()
    w.scan.value = True
    assert "pass your <code>leaks_future</code>" in w.readout.value


def test_scan_catches_a_leak_only_the_last_token_reveals():
    def peek_last(q, k, v, mask=None):
        out = attention(q, k, v, mask)
        return out + 0.1 * v[..., -1:, :]

    w = explorer(attention_fn=peek_last, leaks_fn=leaks_future)
    w.token.value = 5
    assert not w.state["leak"]  # perturbing token 5 does not show it
    w.scan.value = True
    assert w.state["scan"]["leaky_tokens"] == [9] and w.state["scan"]["verdict"] is True


def test_nan_outputs_are_the_nan_trap_not_a_leak():
    def minus_inf(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, -1) @ v

    w = explorer(attention_fn=minus_inf)
    w.padding.value, w.length.value = True, 0  # every query may attend to nothing
    assert w.state["nan_outputs"] == list(range(10))
    assert not w.state["leak"] and "⚠ leak" not in w.readout.value
    assert "NaN trap, not a leak" in w.readout.value


def test_a_sliding_window_one_too_wide_or_narrow_is_flagged():
    def band(extra):
        def window(n, size, past=0):
            d = torch.arange(past, past + n)[:, None] - torch.arange(past + n)[None, :]
            return (d >= 0) & (d < size + extra)

        return window

    for extra, words in ((1, "one key too many"), (-1, "one key too few")):
        w = explorer(window_fn=band(extra))
        w.window.value, w.window_size.value = True, 3
        assert words in w.readout.value
    w = explorer(window_fn=band(0))
    w.window.value, w.window_size.value = True, 3
    assert w.state["warnings"] == []
