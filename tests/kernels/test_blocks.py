"""Activations, feed-forward layers and the pre-/post-LN Transformer block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from solutions.kernels.blocks import (
    GELUFeedForward,
    SwiGLUFeedForward,
    TransformerBlock,
    gelu,
    gelu_ffn,
    make_ffn,
    residual_block,
    silu,
    swiglu_ffn,
)
from solutions.kernels.norms import layer_norm


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_activations_match_torch():
    x = torch.linspace(-12, 12, 2001)
    torch.testing.assert_close(gelu(x), F.gelu(x), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(silu(x), F.silu(x), atol=1e-6, rtol=1e-6)
    xd = randn(20, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(gelu, (xd,))
    assert torch.autograd.gradcheck(silu, (xd,))


def test_gelu_ffn_matches_an_nn_sequential():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16))
    x = randn(2, 5, 16, seed=1)
    out = gelu_ffn(x, mlp[0].weight, mlp[2].weight, mlp[0].bias, mlp[2].bias)
    torch.testing.assert_close(out, mlp(x), atol=1e-6, rtol=1e-5)


def test_swiglu_ffn_by_its_formula():
    x = randn(3, 16, seed=2)
    Wg, Wu, Wd = randn(40, 16, seed=3), randn(40, 16, seed=4), randn(16, 40, seed=5)
    expected = (F.silu(x @ Wg.T) * (x @ Wu.T)) @ Wd.T
    torch.testing.assert_close(swiglu_ffn(x, Wg, Wu, Wd), expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("kind", ["gelu", "swiglu"])
def test_fused_and_explicit_ffn_modules_agree(kind):
    torch.manual_seed(0)
    fused = make_ffn(kind, 16, 48, bias=True)
    explicit = make_ffn(kind, 16, 48, bias=True, fused=False)
    explicit.load_state_dict(fused.state_dict())
    x = randn(2, 3, 16, seed=6)
    torch.testing.assert_close(fused(x), explicit(x), atol=1e-6, rtol=1e-5)
    assert isinstance(fused, GELUFeedForward if kind == "gelu" else SwiGLUFeedForward)


def test_residual_block_pre_and_post():
    x = randn(2, 4, 8, seed=7)

    def zero(h):
        return torch.zeros_like(h)

    def double(h):
        return 2 * h

    # Pre-LN with sublayers that output zero is the identity: the residual path is untouched.
    torch.testing.assert_close(residual_block(x, zero, zero, layer_norm, layer_norm, "pre"), x)
    # Post-LN ends in a norm: every output row is normalised whatever the sublayers do.
    post = residual_block(x, double, double, layer_norm, layer_norm, "post")
    torch.testing.assert_close(post, layer_norm(post), atol=1e-5, rtol=1e-5)
    # Pre-LN by hand: x1 = x + 2 ln(x); out = x1 + 2 ln(x1).
    x1 = x + 2 * layer_norm(x)
    expected = x1 + 2 * layer_norm(x1)
    pre = residual_block(x, double, double, layer_norm, layer_norm, "pre")
    torch.testing.assert_close(pre, expected)
    with pytest.raises(ValueError):
        residual_block(x, zero, zero, layer_norm, layer_norm, "middle")


@pytest.mark.parametrize("norm_position", ["pre", "post"])
@pytest.mark.parametrize("ffn", ["gelu", "swiglu"])
def test_block_is_causal_and_keeps_shape(norm_position, ffn):
    torch.manual_seed(0)
    block = TransformerBlock(16, 4, 32, n_kv_heads=2, ffn=ffn, norm_position=norm_position)
    x = randn(2, 6, 16, seed=8)
    out = block(x)
    assert out.shape == x.shape
    x2 = x.clone()
    x2[:, 4] += 1.0
    out2 = block(x2)
    torch.testing.assert_close(out2[:, :4], out[:, :4])
    assert not torch.allclose(out2[:, 4], out[:, 4])


def test_block_with_zeroed_output_projections_is_identity_in_pre_ln():
    block = TransformerBlock(16, 4, 32, norm="layernorm", bias=True)
    with torch.no_grad():
        block.attn.W_o.weight.zero_()
        block.attn.W_o.bias.zero_()
        block.ffn.W_down.weight.zero_()
    x = randn(2, 5, 16, seed=9)
    torch.testing.assert_close(block(x), x)
