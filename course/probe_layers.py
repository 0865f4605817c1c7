"""Non-secret callables that hidden tests hand to a learner's function, named by `judge.Fn`.

Nothing here answers an exercise. These are the *subjects* of tests a learner writes: lesson
03's leak test receives a sequence layer `x (batch, seq, d) -> (batch, seq, d)` and must say
whether any output can see a later token. Some layers below are correct causal layers, the
others leak on purpose, each in a way real code has leaked.

Every layer is deterministic: its projection weights come from a fixed seed and the width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "causal_self_attention",
    "causal_running_mean",
    "position_wise_mlp",
    "bidirectional_self_attention",
    "peeking_self_attention",
    "sequence_normalised_attention",
    "last_token_broadcast",
    "peek_two_ahead",
    "odd_sequences_leak",
    "ignores_feature_zero",
]


def _projections(x: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """q, k, v = x W^T for three fixed random (d, d) matrices."""
    d = x.shape[-1]
    g = torch.Generator().manual_seed(1000 + 7 * d + seed)
    w = torch.randn(3, d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    return tuple(x @ w[i].to(x.dtype).T for i in range(3))


def _attend(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    q, k, v = _projections(x)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def causal_self_attention(x: torch.Tensor) -> torch.Tensor:
    """A correct causal self-attention layer (PyTorch's SDPA with `is_causal=True`)."""
    q, k, v = _projections(x)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def causal_running_mean(x: torch.Tensor) -> torch.Tensor:
    """Position t outputs the mean of tokens 0..t: causal without being attention."""
    counts = torch.arange(1, x.shape[-2] + 1, dtype=x.dtype).unsqueeze(-1)
    return x.cumsum(dim=-2) / counts


def position_wise_mlp(x: torch.Tensor) -> torch.Tensor:
    """Each position on its own (a feed-forward block): nothing can leak."""
    hidden, _, _ = _projections(x, seed=1)
    return torch.tanh(hidden) * 2.0


def bidirectional_self_attention(x: torch.Tensor) -> torch.Tensor:
    """Leaks everything: an encoder's attention with the causal mask forgotten."""
    return _attend(x, None)


def peeking_self_attention(x: torch.Tensor) -> torch.Tensor:
    """Leaks one step: the causal mask built with its diagonal one too high (tril(diagonal=1))."""
    t = x.shape[-2]
    return _attend(x, torch.ones(t, t, dtype=torch.bool).tril(diagonal=1))


def sequence_normalised_attention(x: torch.Tensor) -> torch.Tensor:
    """Causal attention after normalising over the *sequence* axis: the mean and spread of
    every token, future ones included, reach every position (a BatchNorm-over-time bug)."""
    mean = x.mean(dim=-2, keepdim=True)
    std = x.std(dim=-2, keepdim=True) + 1e-5
    return causal_self_attention((x - mean) / std)


def last_token_broadcast(x: torch.Tensor) -> torch.Tensor:
    """Causal attention plus a 'summary' read from the final token (e.g. a pooled classifier
    token added back to every position): only perturbing the *last* token reveals it."""
    return causal_self_attention(x) + 0.5 * x[..., -1:, :]


def peek_two_ahead(x: torch.Tensor) -> torch.Tensor:
    """Leaks two steps: position i adds token i + 2 (a target shifted by two instead of one).
    Perturbing token t moves position t - 2, never t - 1: a test that looks only one position
    back misses it."""
    ahead = F.pad(x[..., 2:, :], (0, 0, 0, 2))
    return causal_running_mean(x) + 0.5 * ahead


def odd_sequences_leak(x: torch.Tensor) -> torch.Tensor:
    """Leaks in batch elements 1, 3, ... only (a bug that depends on which sequence it sees,
    e.g. on its padding): batch element 0 alone looks causal. `x`: (batch, seq, d)."""
    odd = (torch.arange(x.shape[0]) % 2 == 1).to(x.dtype)[:, None, None]
    return causal_self_attention(x) + 0.5 * odd * x[..., -1:, :]


def ignores_feature_zero(x: torch.Tensor) -> torch.Tensor:
    """A causal running mean of features 1.. only: input feature 0 is ignored and output
    feature 0 is always 0, so perturbing (or watching) feature 0 alone sees nothing move."""
    keep = torch.ones(x.shape[-1], dtype=x.dtype)
    keep[0] = 0
    return causal_running_mean(x * keep)


# Lesson 06: sublayers and norms handed to a learner's residual blocks. Each is a different
# function, so that a block which calls the wrong one (norm1 twice, ffn before attn) shows.


def mixing_sublayer(x: torch.Tensor) -> torch.Tensor:
    """An 'attention' stand-in for a residual block: each token plus the mean of the tokens up
    to it (a causal running mean), projected by a fixed matrix. `x`: (..., seq, d)."""
    q, _, _ = _projections(x, seed=2)
    return 0.5 * q + 0.5 * causal_running_mean(q)


def mlp_sublayer(x: torch.Tensor) -> torch.Tensor:
    """A feed-forward stand-in: tanh of a fixed projection, per token. `x`: (..., d)."""
    _, hidden, _ = _projections(x, seed=3)
    return torch.tanh(hidden)


def unit_layer_norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last dimension without weight or bias (PyTorch's built-in)."""
    return F.layer_norm(x, x.shape[-1:])


def doubled_rms_norm(x: torch.Tensor) -> torch.Tensor:
    """RMSNorm over the last dimension with every weight 2 (PyTorch's built-in): a second norm
    that differs from `unit_layer_norm` on every input."""
    return 2.0 * F.rms_norm(x, x.shape[-1:])
