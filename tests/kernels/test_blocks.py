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
    deepnorm_constants,
    deepnorm_init_,
    gelu,
    gelu_ffn,
    make_ffn,
    residual_block,
    silu,
    swiglu_ffn,
)
from solutions.kernels.norms import LayerNorm, RMSNorm, layer_norm
from solutions.kernels.positions import rope_cos_sin


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


def test_tanh_gelu_is_gpt2s_approximation():
    x = torch.linspace(-6, 6, 1201)
    tanh = gelu(x, "tanh")
    torch.testing.assert_close(tanh, F.gelu(x, approximate="tanh"), atol=1e-6, rtol=1e-6)
    gap = (tanh - gelu(x)).abs().max().item()
    assert 1e-5 < gap < 1e-3  # close to the exact GELU, but a different function
    with pytest.raises(ValueError, match="gelu_approximate"):
        gelu(x, "sigmoid")
    with pytest.raises(ValueError, match="gelu_approximate"):
        GELUFeedForward(8, 16, approximate="fast")


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_ffn_variants_fused_and_explicit(approximate):
    torch.manual_seed(0)
    fused = GELUFeedForward(16, 48, bias=True, approximate=approximate)
    explicit = GELUFeedForward(16, 48, bias=True, approximate=approximate, fused=False)
    explicit.load_state_dict(fused.state_dict())
    x = randn(2, 3, 16, seed=6) * 3
    expected = gelu_ffn(x, fused.W_in.weight, fused.W_out.weight, fused.W_in.bias,
                        fused.W_out.bias, approximate)  # fmt: skip
    torch.testing.assert_close(fused(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(explicit(x), expected, atol=1e-5, rtol=1e-5)


def test_deepnorm_constants_and_residual():
    # Wang et al. 2022, decoder-only: alpha = (2N)^(1/4), beta = (8N)^(-1/4).
    alpha, beta = deepnorm_constants(6)
    assert alpha == pytest.approx(12**0.25) and beta == pytest.approx(48**-0.25)
    assert deepnorm_constants(1000).alpha == pytest.approx(2000**0.25)
    with pytest.raises(ValueError):
        deepnorm_constants(0)
    x = randn(2, 4, 8, seed=7)

    def double(h):
        return 2 * h

    x1 = layer_norm(alpha * x + 2 * x)
    expected = layer_norm(alpha * x1 + 2 * x1)
    out = residual_block(x, double, double, layer_norm, layer_norm, "post", alpha=alpha)
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="post-LN"):
        residual_block(x, double, double, layer_norm, layer_norm, "pre", alpha=alpha)


@pytest.mark.parametrize("ffn", ["gelu", "swiglu"])
def test_deepnorm_init_scales_value_output_and_ffn_by_beta(ffn):
    block = TransformerBlock(256, 4, 512, n_kv_heads=2, ffn=ffn, norm="layernorm",
                             norm_position="post", bias=True)  # fmt: skip
    beta = deepnorm_constants(64).beta
    deepnorm_init_(block, beta, torch.Generator().manual_seed(0))
    attn = block.attn
    W_q, W_k, W_v = attn.W_qkv.weight.split([256, 128, 128])

    def xavier_std(w, gain):
        return gain * (2.0 / sum(w.shape)) ** 0.5

    for w, gain in [(W_q, 1.0), (W_k, 1.0), (W_v, beta), (attn.W_o.weight, beta)]:
        assert w.std().item() == pytest.approx(xavier_std(w, gain), rel=0.05)
    for name, p in block.ffn.named_parameters():
        if name.endswith("weight"):
            assert p.std().item() == pytest.approx(xavier_std(p, beta), rel=0.05), name
        else:
            assert (p == 0).all(), name
    assert (block.norm1.weight == 1).all()  # norms keep their own init


def test_block_is_causal_by_default_and_an_encoder_block_is_not():
    torch.manual_seed(0)
    decoder = TransformerBlock(16, 4, 32)
    encoder = TransformerBlock(16, 4, 32, is_causal=False)
    encoder.load_state_dict(decoder.state_dict())
    x = randn(1, 6, 16, seed=10)
    x2 = x.clone()
    x2[:, 5] += 1.0
    torch.testing.assert_close(decoder(x)[:, :5], decoder(x2)[:, :5])
    assert not torch.allclose(encoder(x)[:, :5], encoder(x2)[:, :5])


def test_block_choices_reach_its_layers():
    block = TransformerBlock(
        16, 4, 32, norm="layernorm", norm_eps=0.3, ffn="gelu", gelu_approximate="tanh",
        rope_layout="half", bias=True,
    )  # fmt: skip
    assert isinstance(block.norm1, LayerNorm) and isinstance(block.norm2, LayerNorm)
    assert block.norm1.eps == block.norm2.eps == 0.3
    assert block.norm1.bias is not None and block.attn.W_qkv.bias is not None
    assert block.ffn.approximate == "tanh" and block.attn.rope_layout == "half"
    assert isinstance(TransformerBlock(16, 4, 32).norm1, RMSNorm)
    # The layout changes what the block computes when it is given RoPE tables.
    x = randn(1, 5, 16, seed=11)
    rope = rope_cos_sin(torch.arange(5), 4)
    interleaved = TransformerBlock(16, 4, 32, norm="layernorm", norm_eps=0.3, ffn="gelu",
                                   gelu_approximate="tanh", bias=True)  # fmt: skip
    interleaved.load_state_dict(block.state_dict())
    assert not torch.allclose(block(x, rope=rope), interleaved(x, rope=rope))
    torch.testing.assert_close(block(x), interleaved(x))  # no RoPE: no difference
