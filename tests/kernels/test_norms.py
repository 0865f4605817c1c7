"""LayerNorm and RMSNorm against PyTorch's, in float32 and half precision."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from solutions.kernels.norms import LayerNorm, RMSNorm, layer_norm, make_norm, rms_norm


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("shape", [(7,), (3, 16), (2, 5, 64)])
def test_layer_norm_matches_torch(shape):
    x = randn(*shape, seed=1) * 3 + 2
    w, b = randn(shape[-1], seed=2), randn(shape[-1], seed=3)
    expected = F.layer_norm(x, shape[-1:], w, b, eps=1e-5)
    torch.testing.assert_close(layer_norm(x, w, b, eps=1e-5), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer_norm(x), F.layer_norm(x, shape[-1:]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_rms_norm_matches_torch(eps):
    x = randn(4, 6, 32, seed=4) * 5
    ref = nn.RMSNorm(32, eps=eps)
    with torch.no_grad():
        ref.weight.copy_(randn(32, seed=5))
    torch.testing.assert_close(rms_norm(x, ref.weight, eps), ref(x), atol=1e-5, rtol=1e-5)


def test_eps_sits_inside_the_square_root():
    x = torch.full((1, 4), 0.1)
    # mean(x^2) = 0.01; with eps = 0.03 inside the root the divisor is sqrt(0.04) = 0.2.
    torch.testing.assert_close(rms_norm(x, eps=0.03), torch.full((1, 4), 0.5))
    # LayerNorm of a constant row is 0 whatever eps; of [-1, 1] with eps=3 it is +-1/2.
    torch.testing.assert_close(
        layer_norm(torch.tensor([[-1.0, 1.0]]), eps=3.0), torch.tensor([[-0.5, 0.5]])
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype):
    # Large values: the float16 sum of squares would overflow (> 65504).
    x = (randn(3, 256, seed=6) * 300).to(dtype)
    w = randn(256, seed=7).to(dtype)
    for ours, in_float32 in (
        (rms_norm(x, w), rms_norm(x.float(), w.float())),
        (layer_norm(x, w), layer_norm(x.float(), w.float())),
    ):
        assert ours.dtype == dtype and torch.isfinite(ours).all()
        torch.testing.assert_close(ours, in_float32.to(dtype))


def test_normalized_statistics():
    x = randn(10, 128, seed=8) * 4 + 7
    y = layer_norm(x)
    torch.testing.assert_close(y.mean(-1), torch.zeros(10), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, correction=0), torch.ones(10), atol=1e-4, rtol=0)
    r = rms_norm(x)
    torch.testing.assert_close(r.square().mean(-1), torch.ones(10), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
def test_fused_and_explicit_modules_agree_in_value_and_gradient(kind):
    x = randn(3, 5, 24, seed=9)
    fused, explicit = make_norm(kind, 24), make_norm(kind, 24, fused=False)
    with torch.no_grad():
        for a, b in zip(fused.parameters(), explicit.parameters(), strict=True):
            a.normal_()
            b.copy_(a)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    outs = [fused(xs[0]), explicit(xs[1])]
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    for out in outs:
        out.sin().sum().backward()
    torch.testing.assert_close(xs[0].grad, xs[1].grad, atol=1e-5, rtol=1e-5)
    for a, b in zip(fused.parameters(), explicit.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)


def test_module_shapes_and_options():
    assert isinstance(make_norm("layernorm", 8), LayerNorm)
    assert isinstance(make_norm("rmsnorm", 8), RMSNorm)
    assert make_norm("layernorm", 8, bias=False).bias is None
    assert len(list(RMSNorm(8).parameters())) == 1
    with pytest.raises(ValueError):
        make_norm("batchnorm", 8)


def test_gradcheck_float64():
    x = randn(2, 3, 6, seed=10, dtype=torch.float64).requires_grad_()
    w = randn(6, seed=11, dtype=torch.float64).requires_grad_()
    b = randn(6, seed=12, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w, b: layer_norm(x, w, b), (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w: rms_norm(x, w), (x, w))


def test_default_eps_is_1e_5_and_make_norm_passes_it_on():
    x = torch.full((1, 4), 1e-3)
    # mean(x^2) = 1e-6, comparable to eps: the two defaults give visibly different outputs.
    torch.testing.assert_close(rms_norm(x), x / torch.sqrt(torch.tensor(1e-6 + 1e-5)))
    assert RMSNorm(8).eps == LayerNorm(8).eps == 1e-5
    for kind in ("rmsnorm", "layernorm"):
        norm = make_norm(kind, 4, eps=0.25)
        assert norm.eps == 0.25
        expected = (
            F.rms_norm(x, (4,), eps=0.25)
            if kind == "rmsnorm"
            else F.layer_norm(x + torch.arange(4.0), (4,), eps=0.25)
        )
        got = norm(x) if kind == "rmsnorm" else norm(x + torch.arange(4.0))
        torch.testing.assert_close(got, expected)
