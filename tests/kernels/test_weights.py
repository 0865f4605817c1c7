"""Weight layouts (fused, per-head interleaved, per-head tensors, Conv1D) and parameter counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course.lm.config import ModelConfig
from solutions.kernels.blocks import GELUFeedForward, SwiGLUFeedForward
from solutions.kernels.heads import (
    MultiHeadAttention,
    fused_multi_head_attention,
    merge_heads,
    multi_head_attention,
    split_heads,
)
from solutions.kernels.model import TransformerLM
from solutions.kernels.weights import (
    attention_parameter_count,
    conv1d_to_linear,
    ffn_parameter_count,
    from_per_head,
    fuse_qkv,
    fused_to_per_head_interleaved,
    gpt2_parameter_count,
    output_from_per_head,
    output_to_per_head,
    per_head_interleaved_to_fused,
    to_per_head,
    unfuse_qkv,
)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_fuse_and_unfuse_are_inverse_and_match_nn_multihead_attention():
    ref = nn.MultiheadAttention(16, 4, batch_first=True)
    W_q, W_k, W_v = unfuse_qkv(ref.in_proj_weight, 4)
    assert torch.equal(fuse_qkv(W_q, W_k, W_v), ref.in_proj_weight)
    x = randn(2, 5, 16, seed=1)
    with torch.no_grad():
        ref.in_proj_bias.normal_()
        expected, _ = ref(x, x, x)
    b_q, b_k, b_v = unfuse_qkv(ref.in_proj_bias, 4)
    ours = multi_head_attention(
        x, W_q, W_k, W_v, ref.out_proj.weight, 4, b_q=b_q, b_k=b_k, b_v=b_v,
        b_o=ref.out_proj.bias, is_causal=False,
    )  # fmt: skip
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("n_heads", "n_kv_heads"), [(4, 4), (6, 2), (4, 1)])
def test_per_head_interleaved_layout_groups_each_kv_head_with_its_queries(n_heads, n_kv_heads):
    d, d_model = 3, 12
    W_qkv = randn((n_heads + 2 * n_kv_heads) * d, d_model, seed=2)
    W = fused_to_per_head_interleaved(W_qkv, n_heads, n_kv_heads)
    assert torch.equal(per_head_interleaved_to_fused(W, n_heads, n_kv_heads), W_qkv)
    W_q, W_k, W_v = unfuse_qkv(W_qkv, n_heads, n_kv_heads)
    rep = n_heads // n_kv_heads
    groups = W.reshape(n_kv_heads, (rep + 2) * d, d_model)
    for g in range(n_kv_heads):
        # [q rows of the group's query heads | k_g | v_g], as GPT-NeoX's query_key_value.
        torch.testing.assert_close(groups[g, : rep * d], W_q[g * rep * d : (g + 1) * rep * d])
        torch.testing.assert_close(groups[g, rep * d : (rep + 1) * d], W_k[g * d : (g + 1) * d])
        torch.testing.assert_close(groups[g, (rep + 1) * d :], W_v[g * d : (g + 1) * d])
    if n_heads == n_kv_heads:  # MHA: [q_0 | k_0 | v_0 | q_1 | ...]
        assert torch.equal(W[: 3 * d], torch.cat([W_q[:d], W_k[:d], W_v[:d]]))
    bias = randn(W_qkv.shape[0], seed=3)  # biases convert along the same dimension
    b = fused_to_per_head_interleaved(bias, n_heads, n_kv_heads)
    assert torch.equal(per_head_interleaved_to_fused(b, n_heads, n_kv_heads), bias)
    with pytest.raises(ValueError):
        fused_to_per_head_interleaved(W_qkv[1:], n_heads, n_kv_heads)


def test_per_head_tensors_compute_each_head_and_sum_the_outputs():
    H, d, d_model = 4, 5, 20
    W_q, W_o = randn(H * d, d_model, seed=4), randn(d_model, H * d, seed=5)
    x, z = randn(2, 7, d_model, seed=6), randn(2, H, 7, d, seed=7)
    W_Q, W_O = to_per_head(W_q, H), output_to_per_head(W_o, H)
    assert W_Q.shape == (H, d_model, d) and W_O.shape == (H, d, d_model)
    per_head = split_heads(F.linear(x, W_q), H)
    for h in range(H):
        torch.testing.assert_close(x @ W_Q[h], per_head[:, h])
    summed = sum(z[:, h] @ W_O[h] for h in range(H))
    torch.testing.assert_close(summed, F.linear(merge_heads(z), W_o), atol=1e-5, rtol=1e-5)
    assert torch.equal(from_per_head(W_Q), W_q) and torch.equal(output_from_per_head(W_O), W_o)


def test_conv1d_layout_is_the_transpose():
    W, b, x = randn(8, 24, seed=8), randn(24, seed=9), randn(3, 8, seed=10)
    torch.testing.assert_close(F.linear(x, conv1d_to_linear(W), b), x @ W + b)


def test_fused_layout_drives_the_fused_kernel():
    x = randn(2, 4, 12, seed=11)
    W_q, W_k, W_v, W_o = (randn(12, 12, seed=s) for s in range(12, 16))
    separate = multi_head_attention(x, W_q, W_k, W_v, W_o, 3)
    fused = fused_multi_head_attention(x, fuse_qkv(W_q, W_k, W_v), W_o, 3)
    torch.testing.assert_close(fused, separate)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n_kv_heads", [8, 2, 1])
def test_attention_parameter_count(bias, n_kv_heads):
    d = 64
    module = MultiHeadAttention(d, 8, n_kv_heads, bias=bias)
    assert attention_parameter_count(d, 8, n_kv_heads, bias=bias) == sum(
        p.numel() for p in module.parameters()
    )
    if n_kv_heads == 8:
        assert attention_parameter_count(d, 8, bias=bias) == 4 * d * d + (4 * d if bias else 0)
        torch_mha = nn.MultiheadAttention(d, 8, bias=bias)
        assert attention_parameter_count(d, 8, bias=bias) == sum(
            p.numel() for p in torch_mha.parameters()
        )


def test_ffn_parameter_count():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert ffn_parameter_count(32, 128, "gelu") == count(GELUFeedForward(32, 128, bias=True))
    assert ffn_parameter_count(32, 128, "gelu", bias=False) == count(GELUFeedForward(32, 128))
    assert ffn_parameter_count(32, 96, "swiglu") == count(SwiGLUFeedForward(32, 96))
    with pytest.raises(ValueError):
        ffn_parameter_count(32, 96, "relu")


def test_gpt2_small_parameter_count_from_its_config():
    # GPT-2 small's config: vocab 50257, 1024 positions, 768 wide, 12 layers; biases everywhere.
    assert gpt2_parameter_count() == 124_439_808
    # Without any bias vector (nanoGPT's bias=False): 12 * 11 + 1 = 133 vectors of 768 fewer.
    assert gpt2_parameter_count(bias=False) == 124_337_664 == 124_439_808 - 133 * 768


def test_gpt2_count_formula_equals_a_gpt2_shaped_model():
    config = ModelConfig(
        vocab_size=300, context_length=40, d_model=48, n_layers=3, n_heads=4, ffn="gelu",
        norm="layernorm", bias=True, positional="learned", gelu_approximate="tanh",
    )  # fmt: skip
    model = TransformerLM(config)
    assert model.num_parameters() == gpt2_parameter_count(300, 40, 48, 3)
