"""Head splitting, multi-head attention against nn.MultiheadAttention, fused QKV, GQA/MQA, RoPE,
and one API across the functional, fused and module forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from solutions.kernels.attention import scaled_dot_product_attention
from solutions.kernels.heads import (
    MultiHeadAttention,
    fused_multi_head_attention,
    grouped_query_attention,
    kv_head_index,
    merge_heads,
    multi_head_attention,
    repeat_kv,
    split_heads,
)
from solutions.kernels.masks import causal_mask, padding_mask
from solutions.kernels.positions import alibi_bias, rope_cos_sin


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_split_heads_layout_and_roundtrip():
    x = randn(2, 5, 12)
    h = split_heads(x, 3)
    assert h.shape == (2, 3, 5, 4)
    assert h.data_ptr() == x.data_ptr()  # a view, not a copy
    # Head 1 owns feature columns 4..7.
    torch.testing.assert_close(h[:, 1], x[..., 4:8])
    assert torch.equal(merge_heads(h), x)


def test_repeat_kv_groups_consecutive_query_heads():
    kv = randn(2, 2, 3, 4)
    rep = repeat_kv(kv, 3)
    assert rep.shape == (2, 6, 3, 4)
    for h in range(6):
        assert torch.equal(rep[:, h], kv[:, h // 3])
    assert repeat_kv(kv, 1) is kv
    assert torch.equal(rep, kv[:, kv_head_index(6, 2)])


@pytest.mark.parametrize(
    ("n_heads", "n_kv_heads", "expected"),
    [(8, 8, list(range(8))), (8, 2, [0, 0, 0, 0, 1, 1, 1, 1]), (6, 3, [0, 0, 1, 1, 2, 2])],
)
def test_kv_head_index_is_h_over_group_size(n_heads, n_kv_heads, expected):
    assert kv_head_index(n_heads, n_kv_heads).tolist() == expected
    assert kv_head_index(n_heads, 1).tolist() == [0] * n_heads  # MQA
    with pytest.raises(ValueError, match="cannot share"):
        kv_head_index(8, 3)


def mha_weights(d_model, n_heads, n_kv_heads=None, seed=0, bias=False):
    n_kv_heads = n_kv_heads or n_heads
    hd = d_model // n_heads
    g = torch.Generator().manual_seed(seed)
    w = {
        "W_q": torch.randn(n_heads * hd, d_model, generator=g) / d_model**0.5,
        "W_k": torch.randn(n_kv_heads * hd, d_model, generator=g) / d_model**0.5,
        "W_v": torch.randn(n_kv_heads * hd, d_model, generator=g) / d_model**0.5,
        "W_o": torch.randn(d_model, n_heads * hd, generator=g) / d_model**0.5,
    }
    if bias:
        w |= {
            "b_q": torch.randn(n_heads * hd, generator=g),
            "b_k": torch.randn(n_kv_heads * hd, generator=g),
            "b_v": torch.randn(n_kv_heads * hd, generator=g),
            "b_o": torch.randn(d_model, generator=g),
        }
    return w


@pytest.mark.parametrize("use_mask", [False, True])
def test_matches_nn_multihead_attention(use_mask):
    d_model, n_heads = 16, 4
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(d_model, n_heads, bias=True, batch_first=True)
    with torch.no_grad():  # non-zero biases so that their mapping is tested too
        ref.in_proj_bias.normal_()
        ref.out_proj.bias.normal_()
    W_q, W_k, W_v = ref.in_proj_weight.chunk(3)
    b_q, b_k, b_v = ref.in_proj_bias.chunk(3)
    x = randn(3, 7, d_model, seed=1)
    mask = causal_mask(7) if use_mask else None
    ours, ours_w = multi_head_attention(
        x,
        W_q,
        W_k,
        W_v,
        ref.out_proj.weight,
        n_heads,
        b_q=b_q,
        b_k=b_k,
        b_v=b_v,
        b_o=ref.out_proj.bias,
        attn_mask=mask,
        is_causal=False,  # an encoder's attention: only the mask, if any, restricts it
        return_weights=True,
    )
    # nn.MultiheadAttention's boolean mask means the opposite: True = may NOT attend.
    attn_mask = ~mask if use_mask else None
    expected, expected_w = ref(x, x, x, attn_mask=attn_mask, average_attn_weights=False)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_w, expected_w, atol=1e-6, rtol=1e-5)


def rope_for(seq, head_dim, start=0):
    return rope_cos_sin(torch.arange(start, start + seq), head_dim)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_fused_equals_separate_projections(layout):
    w = mha_weights(24, 6, 2, bias=True)
    x = randn(2, 5, 24, seed=3)
    weights = [w["W_q"], w["W_k"], w["W_v"], w["W_o"]]
    biases = {name: w[name] for name in ("b_q", "b_k", "b_v", "b_o")}
    shared = dict(rope=rope_for(5, 4), rope_layout=layout)
    separate = multi_head_attention(x, *weights, 6, **biases, **shared)
    W_qkv = torch.cat([w["W_q"], w["W_k"], w["W_v"]])
    b_qkv = torch.cat([w["b_q"], w["b_k"], w["b_v"]])
    # n_kv_heads = 2 is read off the shapes.
    fused = fused_multi_head_attention(x, W_qkv, w["W_o"], 6, b_qkv=b_qkv, b_o=w["b_o"], **shared)
    torch.testing.assert_close(fused, separate)


@pytest.mark.parametrize("n_kv_heads", [1, 2, 3])
@pytest.mark.parametrize("backend", ["reference", "sdpa"])
def test_gqa_equals_mha_with_repeated_kv_heads(n_kv_heads, backend):
    d_model, n_heads = 24, 6
    w = mha_weights(d_model, n_heads, n_kv_heads, seed=n_kv_heads)
    x = randn(2, 7, d_model, seed=5)
    gqa = multi_head_attention(x, w["W_q"], w["W_k"], w["W_v"], w["W_o"], n_heads, backend=backend)
    # Repeat each kv head's rows of W_k, W_v so that plain MHA has the same keys and values.
    rep = n_heads // n_kv_heads
    hd = d_model // n_heads
    W_k = w["W_k"].unflatten(0, (n_kv_heads, hd)).repeat_interleave(rep, 0).flatten(0, 1)
    W_v = w["W_v"].unflatten(0, (n_kv_heads, hd)).repeat_interleave(rep, 0).flatten(0, 1)
    mha = multi_head_attention(x, w["W_q"], W_k, W_v, w["W_o"], n_heads, n_kv_heads=n_heads)
    torch.testing.assert_close(gqa, mha, atol=1e-5, rtol=1e-5)


def test_grouped_attention_with_per_head_bias_padding_and_weights():
    q = randn(2, 6, 5, 4, seed=1)
    k, v = randn(2, 2, 8, 4, seed=2), randn(2, 2, 8, 4, seed=3)
    bias = alibi_bias(6, 5, past=3)
    mask = causal_mask(5, past=3) & padding_mask([8, 6], 8)
    out, w = grouped_query_attention(q, k, v, attn_mask=mask, attn_bias=bias, return_weights=True)
    ref_out, ref_w = scaled_dot_product_attention(
        q, repeat_kv(k, 3), repeat_kv(v, 3), mask=mask, attn_bias=bias, return_weights=True
    )
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(w, ref_w)
    sdpa = grouped_query_attention(q, k, v, attn_mask=mask, attn_bias=bias, backend="sdpa")
    torch.testing.assert_close(sdpa, ref_out, atol=1e-5, rtol=1e-5)


def test_is_causal_is_bottom_right_aligned_for_shorter_queries():
    q, k, v = randn(1, 2, 3, 4, seed=1), randn(1, 2, 7, 4, seed=2), randn(1, 2, 7, 4, seed=3)
    expected = scaled_dot_product_attention(q, k, v, mask=causal_mask(3, past=4))
    for backend in ("reference", "sdpa"):
        out = grouped_query_attention(q, k, v, is_causal=True, backend=backend)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_sdpa_backend_refuses_to_return_weights():
    q = randn(1, 1, 2, 4)
    with pytest.raises(ValueError, match="weights"):
        grouped_query_attention(q, q, q, backend="sdpa", return_weights=True)
    with pytest.raises(ValueError, match="share"):
        grouped_query_attention(randn(1, 3, 2, 4), randn(1, 2, 2, 4), randn(1, 2, 2, 4))


def test_rope_touches_queries_and_keys_only():
    w = mha_weights(16, 2, seed=7)
    x = randn(1, 6, 16, seed=8)
    args = (x, w["W_q"], w["W_k"], w["W_v"], w["W_o"], 2)
    rope = rope_for(6, 8)
    _, weights = multi_head_attention(*args, rope=rope, return_weights=True)
    out = multi_head_attention(*args, rope=rope)
    # Values are not rotated: the output is the weights applied to the plain value projection.
    v = split_heads(F.linear(x, w["W_v"]), 2)
    torch.testing.assert_close(out, F.linear(merge_heads(weights @ v), w["W_o"]))
    # Rotating queries and keys by the same shift of positions leaves attention unchanged.
    shifted = multi_head_attention(*args, rope=rope_for(6, 8, start=11))
    torch.testing.assert_close(shifted, out, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(multi_head_attention(*args), out, atol=1e-3)


def test_per_sequence_positions_through_batched_rope_tables():
    w = mha_weights(16, 2, seed=7)
    x = randn(2, 5, 16, seed=8)
    args = (w["W_q"], w["W_k"], w["W_v"], w["W_o"], 2)
    positions = torch.tensor([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])
    cos, sin = rope_cos_sin(positions, 8)  # (batch, seq, head_dim / 2)
    both = multi_head_attention(x, *args, rope=(cos, sin), rope_layout="half")
    for b in range(2):
        one = multi_head_attention(x[b : b + 1], *args, rope=(cos[b], sin[b]), rope_layout="half")
        torch.testing.assert_close(both[b : b + 1], one)


def test_attention_is_causal_by_default_and_bidirectional_on_request():
    w = mha_weights(16, 4, 2, seed=3)
    args = (w["W_q"], w["W_k"], w["W_v"], w["W_o"], 4)
    x = randn(1, 6, 16, seed=4)
    changed = x.clone()
    changed[:, 4] += 1.0
    causal = multi_head_attention(x, *args), multi_head_attention(changed, *args)
    torch.testing.assert_close(causal[0][:, :4], causal[1][:, :4])  # the future cannot leak
    both_ways = [multi_head_attention(t, *args, is_causal=False) for t in (x, changed)]
    assert not torch.allclose(both_ways[0][:, :4], both_ways[1][:, :4])
    module = MultiHeadAttention(16, 4, 2)
    encoder = MultiHeadAttention(16, 4, 2, is_causal=False)
    encoder.load_state_dict(module.state_dict())
    assert module.is_causal and not encoder.is_causal
    torch.testing.assert_close(module(x)[:, :4], module(changed)[:, :4])
    assert not torch.allclose(encoder(x)[:, :4], encoder(changed)[:, :4])


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_module_equals_functional_with_its_weights(backend, layout):
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4, 2, bias=True, backend=backend, rope_layout=layout)
    x = randn(2, 5, 16, seed=9)
    rope = rope_for(5, m.head_dim)
    out = m(x, rope=rope)
    expected = fused_multi_head_attention(
        x,
        m.W_qkv.weight,
        m.W_o.weight,
        4,
        2,
        b_qkv=m.W_qkv.bias,
        b_o=m.W_o.bias,
        rope=rope,
        rope_layout=layout,
    )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_the_three_forms_share_argument_names():
    import inspect

    shared = {"rope", "rope_layout", "attn_mask", "attn_bias", "is_causal", "backend"}
    for fn in (multi_head_attention, fused_multi_head_attention):
        params = inspect.signature(fn).parameters
        assert shared | {"n_heads", "n_kv_heads", "W_o", "b_o", "dropout_p"} <= set(params)
        assert params["is_causal"].default is True
        assert "bias" not in params and "mask" not in params
    init = inspect.signature(MultiHeadAttention).parameters
    forward = inspect.signature(MultiHeadAttention.forward).parameters
    assert {"rope_layout", "is_causal", "backend", "n_heads", "n_kv_heads"} <= set(init)
    assert {"rope", "attn_mask", "attn_bias"} <= set(forward)
    assert init["is_causal"].default is True and init["bias"].default is False
    with pytest.raises(ValueError, match="rope_layout"):
        MultiHeadAttention(16, 4, rope_layout="halves")
    with pytest.raises(ValueError, match="cannot share"):
        MultiHeadAttention(16, 4, 3)


def test_module_parameter_count_shrinks_with_fewer_kv_heads():
    def count(n_kv):
        return sum(p.numel() for p in MultiHeadAttention(64, 8, n_kv).parameters())

    head_dim = 8
    assert count(8) == 4 * 64 * 64
    assert count(2) == 2 * 64 * 64 + 2 * 64 * 2 * head_dim
    assert count(1) == 2 * 64 * 64 + 2 * 64 * head_dim


def test_gradients_flow_to_every_weight():
    w = {k: t.requires_grad_() for k, t in mha_weights(12, 3, 1, bias=True).items()}
    x = randn(2, 4, 12, seed=4)
    args = (x, w["W_q"], w["W_k"], w["W_v"], w["W_o"], 3)
    out = multi_head_attention(
        *args, b_q=w["b_q"], b_k=w["b_k"], b_v=w["b_v"], b_o=w["b_o"], rope=rope_for(4, 4)
    )
    out.square().sum().backward()
    for name, t in w.items():
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0, name


@pytest.mark.parametrize("B,H,T,d", [(2, 3, 4, 5), (1, 4, 1, 8), (2, 1, 6, 4), (3, 2, 5, 2)])
def test_merge_trace_matches_real_tensors(B, H, T, d):
    from solutions.kernels.heads import merge_trace

    out = torch.zeros(B, H, T, d)
    moved = out.transpose(1, 2)
    try:
        moved.view(B, T, H * d)
        view_ok = True
    except RuntimeError:
        view_ok = False
    assert merge_trace(B, H, T, d) == (out.stride(), moved.stride(), view_ok)
    assert view_ok == (T == 1 or H == 1)
