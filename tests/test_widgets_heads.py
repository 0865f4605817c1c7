"""Lesson 04's explorer and tools build headless, run the learner's functions, name wrong head
mappings and leaking splits, and hide when grading."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import pytest
import torch

from course.widgets import heads_explorer
from course.widgets.heads import KV_CHOICES, perturbation_report, trace_ops, trace_rows
from solutions.kernels import heads as H


def layer(x, W_q, W_k, W_v, W_o, n_heads, n_kv_heads=None, attn_mask=None, is_causal=True):
    return H.multi_head_attention(
        x, W_q, W_k, W_v, W_o, n_heads, n_kv_heads, attn_mask=attn_mask, is_causal=is_causal
    )


def tiled_layer(x, W_q, W_k, W_v, W_o, n_heads, n_kv_heads=None, attn_mask=None, is_causal=True):
    """The h % n_kv_heads mapping: kv heads tiled instead of repeated in place."""
    n_kv_heads = n_kv_heads or n_heads
    q = H.split_heads(x @ W_q.T, n_heads)
    k = H.split_heads(x @ W_k.T, n_kv_heads).repeat(1, n_heads // n_kv_heads, 1, 1)
    v = H.split_heads(x @ W_v.T, n_kv_heads).repeat(1, n_heads // n_kv_heads, 1, 1)
    out = H.grouped_query_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
    return H.merge_heads(out) @ W_o.T


def wrong_split(x, n_heads):
    B, T, D = x.shape
    return x.view(B, n_heads, T, D // n_heads)


@pytest.mark.parametrize("choice", list(KV_CHOICES))
def test_every_query_head_reads_its_group_and_the_maps_are_attention(choice):
    e = heads_explorer(layer, H.split_heads, H.merge_heads)
    e.kv.value = choice
    assert e.error is None
    assert e.state["tags"] == pytest.approx(e.state["expected"], abs=1e-5)
    maps = e.state["maps"]
    assert torch.allclose(maps.sum(-1), torch.ones(4, 6), atol=1e-5)
    assert torch.equal(maps.argmax(-1)[1], torch.arange(6))  # head 1 attends to itself
    assert (maps[:, 0, 1:] < 1e-6).all()  # causal: query 0 sees key 0 only
    assert e.image.value and "✔" in e.readout.value


def test_a_tiled_mapping_is_named_per_head():
    e = heads_explorer(tiled_layer, H.split_heads, H.merge_heads)
    e.kv.value = "GQA: 2 kv heads"
    assert e.state["tags"] == pytest.approx([0, 1, 0, 1], abs=1e-5)
    assert "query head 1 reads kv head 1 (should read 0)" in e.readout.value
    assert "query head 2 reads kv head 0 (should read 1)" in e.readout.value


def test_not_causal_makes_the_uniform_head_see_everything():
    e = heads_explorer(layer)
    e.causal.value = False
    assert torch.allclose(e.state["maps"][3], torch.full((6, 6), 1 / 6), atol=1e-6)


def test_perturbation_report_names_token_and_head():
    assert perturbation_report(H.split_heads) is None
    report = perturbation_report(wrong_split, n_heads=2, t=2, batch=1, seq=4, head_dim=3)
    assert report.startswith("token 2's change leaked into token 0 in head 1")
    assert "shape" in perturbation_report(lambda x, n: x, n_heads=2)


def test_tracer_shows_views_copies_and_the_failing_view():
    rows = trace_rows(H.split_heads, torch.randn(2, 3, 8), 2)
    assert rows[-1]["shape"] == (2, 2, 3, 4) and rows[-1]["memory"] == "view"
    assert rows[-1]["contiguous"] is False

    def no_contiguous(x):
        B, Hh, T, d = x.shape
        return x.transpose(1, 2).view(B, T, Hh * d)

    out = io.StringIO()
    with redirect_stdout(out):
        trace_ops(no_contiguous, torch.randn(2, 3, 4, 5))
    assert "raised" in out.getvalue() and "view size is not compatible" in out.getvalue()


def test_a_broken_layer_is_shown_not_raised():
    def broken(*args, **kwargs):
        raise RuntimeError("shape mismatch in my layer")

    e = heads_explorer(broken, H.split_heads, H.merge_heads)
    assert "shape mismatch in my layer" in e.error


def test_hidden_while_grading(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert heads_explorer(layer).show() is None


def strided_split(x, n_heads):
    """Head h gets the features h, h + n_heads, ...: every row stays with its token."""
    B, T, D = x.shape
    return x.view(B, T, D // n_heads, n_heads).permute(0, 3, 1, 2)


def test_perturbation_report_names_a_feature_order_bug_within_a_token():
    for t in range(5):
        for n in (1, 2, 4):
            assert perturbation_report(H.split_heads, n_heads=n, t=t) is None
    report = perturbation_report(strided_split, n_heads=2, t=2)
    assert report.startswith("feature 1 of token 2 landed in head 1 feature 0")
    assert "consecutive features" in report
    e = heads_explorer(layer, strided_split, H.merge_heads)
    assert "feature 1 of token 2 landed in head 1" in e.readout.value


def test_a_merge_without_transpose_gets_a_verdict():
    def reshaped(x):
        B, Hh, T, d = x.shape
        return x.reshape(B, T, Hh * d)

    e = heads_explorer(layer, H.split_heads, reshaped)
    assert "features misplaced" in e.readout.value
    assert "the heads side by side, head 0 first ✔" not in e.readout.value
    good = heads_explorer(layer, H.split_heads, H.merge_heads)
    assert "the heads side by side, head 0 first ✔" in good.readout.value


def test_a_layer_that_ignores_is_causal_is_named_per_head():
    def never_causal(x, W_q, W_k, W_v, W_o, n_heads, n_kv_heads=None, is_causal=True):
        return layer(x, W_q, W_k, W_v, W_o, n_heads, n_kv_heads, is_causal=False)

    def always_causal(x, W_q, W_k, W_v, W_o, n_heads, n_kv_heads=None, is_causal=True):
        return layer(x, W_q, W_k, W_v, W_o, n_heads, n_kv_heads, is_causal=True)

    e = heads_explorer(never_causal)
    assert "head 3: query 0 attends to later keys although" in e.readout.value
    e = heads_explorer(always_causal)
    e.causal.value = False
    assert "stays causal although" in e.readout.value
    ok = heads_explorer(layer)
    ok.causal.value = False
    assert "with the mask ✔" in ok.readout.value
