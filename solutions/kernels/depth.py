"""Norms and residual blocks at depth: the references of lesson 06's block and scaling exercises.

    pre-LN block:   x = x + attn(norm1(x));          x = x + ffn(norm2(x))        (GPT-2 onwards)
    post-LN block:  x = norm1(alpha x + attn(x));    x = norm2(alpha x + ffn(x))  (Vaswani 2017;
                    alpha > 1 is DeepNorm, Wang et al. 2022)

The scaling measurements run a *toy stack* whose sublayers are random linear maps: block l has
two matrices `weights[l] = (A, B)`, both `(d, d)`, and `attn(y) = y A^T`, `ffn(y) = y B^T`
(attention over a one-token sequence is exactly such a map: its value and output projections).
The norms are LayerNorm without weight or bias (`norms.layer_norm`). With entries of A and B
drawn N(0, sigma^2 / d), each sublayer of a pre-LN block adds sigma^2 to the mean square of the
residual stream at initialisation (the norm's output has mean square 1, and the update is
uncorrelated with the stream), so `E||x_l||^2 / d = E||x_0||^2 / d + 2 sigma^2 l`.

Shapes: `x` is `(tokens, d)` (or any `(..., d)`), `weights` `(n_layers, 2, d, d)`, `readout`
`(d,)`.
"""

from __future__ import annotations

import torch

from solutions.kernels.blocks import Sublayer, deepnorm_constants, residual_block
from solutions.kernels.norms import layer_norm


def pre_ln_block(
    x: torch.Tensor, attn: Sublayer, ffn: Sublayer, norm1: Sublayer, norm2: Sublayer
) -> torch.Tensor:
    """One pre-LN block, `residual_block(..., "pre")`: the residual stream `x` itself is carried
    forward, only the sublayers' inputs are normalised. Shape and dtype of `x`."""
    return residual_block(x, attn, ffn, norm1, norm2, "pre")


def post_ln_block(
    x: torch.Tensor,
    attn: Sublayer,
    ffn: Sublayer,
    norm1: Sublayer,
    norm2: Sublayer,
    alpha: float = 1.0,
) -> torch.Tensor:
    """One post-LN block, `residual_block(..., "post", alpha)`: each sum `alpha x + sublayer(x)`
    is normalised (alpha = 1: Vaswani et al. 2017; DeepNorm's alpha: Wang et al. 2022)."""
    return residual_block(x, attn, ffn, norm1, norm2, "post", alpha)


def deepnorm_alpha_beta(n_layers: int) -> tuple[float, float]:
    """`(alpha, beta) = ((2N)^(1/4), (8N)^(-1/4))` for a decoder-only stack of N blocks, as a
    plain tuple of floats (`blocks.deepnorm_constants`; Wang et al. 2022, arXiv:2203.00555).
    Raises ValueError for `n_layers < 1`."""
    alpha, beta = deepnorm_constants(n_layers)
    return (alpha, beta)


def _unit_norm(h: torch.Tensor) -> torch.Tensor:
    return layer_norm(h)


def _toy_block(
    x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, norm_position: str, alpha: float
) -> torch.Tensor:
    def attn(h):
        return h @ A.T

    def ffn(h):
        return h @ B.T

    if norm_position == "pre":
        return pre_ln_block(x, attn, ffn, _unit_norm, _unit_norm)
    return post_ln_block(x, attn, ffn, _unit_norm, _unit_norm, alpha)


def stream_norms(
    x: torch.Tensor, weights: torch.Tensor, norm_position: str = "pre", alpha: float = 1.0
) -> torch.Tensor:
    """The residual stream's mean square `||x_l||^2 / d`, averaged over tokens, at the input
    (l = 0) and after each block of the toy stack (module docstring): shape `(n_layers + 1,)`,
    dtype of `x`. `norm_position` is "pre" or "post" (`alpha` weights post-LN residuals)."""
    norms = [x.pow(2).mean()]
    for A, B in weights:
        x = _toy_block(x, A, B, norm_position, alpha)
        norms.append(x.pow(2).mean())
    return torch.stack(norms)


def layer_grad_norms(
    x: torch.Tensor,
    weights: torch.Tensor,
    readout: torch.Tensor,
    norm_position: str = "pre",
    alpha: float = 1.0,
) -> torch.Tensor:
    """Per block, the Frobenius norm of the gradient of `loss = mean over tokens of (out .
    readout)` with respect to that block's two matrices together: shape `(n_layers,)`, dtype of
    `weights`. `out` is the toy stack's output, passed through a final LayerNorm in a pre-LN
    stack (as GPT-2's `ln_f`; a post-LN stack ends in a norm already). Xiong et al. 2020
    ("On Layer Normalization in the Transformer Architecture") analyse these gradients."""
    # One leaf per block: indexing a single (L, 2, d, d) leaf would make every block's backward
    # write a gradient of the whole stack's size.
    W = [w.detach().clone().requires_grad_(True) for w in weights]
    h = x
    for A, B in W:
        h = _toy_block(h, A, B, norm_position, alpha)
    if norm_position == "pre":
        h = layer_norm(h)
    loss = (h @ readout).mean()
    grads = torch.autograd.grad(loss, W)
    return torch.stack([g.norm() for g in grads])
