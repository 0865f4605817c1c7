"""The depth kernels of lesson 06 against PyTorch's built-ins and independent spellings."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from solutions.kernels import depth as D


def _toy(seed: int, n_layers: int = 4, d: int = 16, tokens: int = 10):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, d, generator=g, dtype=torch.float64)
    w = torch.randn(n_layers, 2, d, d, generator=g, dtype=torch.float64) * 0.5 / math.sqrt(d)
    r = torch.randn(d, generator=g, dtype=torch.float64)
    return x, w, r


def _builtin_stack(x, w, position, alpha=1.0):
    """The toy stack written with F.layer_norm, one leaf of the whole (L, 2, d, d) tensor."""
    ln = lambda h: F.layer_norm(h, h.shape[-1:])  # noqa: E731
    for A, B in w:
        if position == "pre":
            x = x + ln(x) @ A.T
            x = x + ln(x) @ B.T
        else:
            x = ln(alpha * x + x @ A.T)
            x = ln(alpha * x + x @ B.T)
    return x


@pytest.mark.parametrize("position, alpha", [("pre", 1.0), ("post", 1.0), ("post", 2.0)])
def test_stream_norms_and_gradients_match_the_builtin_stack(position, alpha):
    x, w, r = _toy(0)
    expected = [x.pow(2).mean()]
    for layer in range(w.shape[0]):
        expected.append(_builtin_stack(x, w[: layer + 1], position, alpha).pow(2).mean())
    torch.testing.assert_close(D.stream_norms(x, w, position, alpha), torch.stack(expected))

    leaf = w.clone().requires_grad_(True)
    out = _builtin_stack(x, leaf, position, alpha)
    if position == "pre":
        out = F.layer_norm(out, out.shape[-1:])
    (grad,) = torch.autograd.grad((out @ r).mean(), leaf)
    torch.testing.assert_close(
        D.layer_grad_norms(x, w, r, position, alpha), grad.reshape(w.shape[0], -1).norm(dim=-1)
    )


def test_post_ln_stream_stays_normalised_and_pre_ln_grows():
    x, w, _ = _toy(1, n_layers=8, d=64, tokens=128)
    post = D.stream_norms(x, w, "post")
    torch.testing.assert_close(post[1:], torch.ones(8, dtype=torch.float64), atol=1e-4, rtol=0)
    pre = D.stream_norms(x, w, "pre")
    assert (pre[1:] > pre[:-1]).all()


def test_deepnorm_constants_as_floats():
    alpha, beta = D.deepnorm_alpha_beta(12)
    assert type(alpha) is float and type(beta) is float
    assert alpha == pytest.approx(24**0.25) and beta == pytest.approx(96**-0.25)
    with pytest.raises(ValueError):
        D.deepnorm_alpha_beta(0)
