"""Scaled dot-product attention, written out as matmul -> softmax -> matmul.

    Attention(Q, K, V) = softmax(Q K^T * scale + attn_bias, masked) V,   scale = 1 / sqrt(head_dim)

(Vaswani et al. 2017, section 3.2.1.) Shapes: `q` is `(..., q_len, d)`, `k` is `(..., k_len, d)`,
`v` is `(..., k_len, d_v)` with any number of leading batch dimensions (usually `(batch,
heads)`); `q_len` and `k_len` may differ. The boolean `mask` (True = may attend; lesson 02's
name for it, `attn_mask` in the multi-head layers) and the additive float `attn_bias` (e.g. ALiBi)
broadcast to `(..., q_len, k_len)`.

A query whose mask allows no key at all has no defined softmax (every score is -inf, and
-inf - (-inf) is NaN). Here such a row gets zero weights and a zero output, in every dtype, and
its gradients are zero rather than NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_HALF = (torch.float16, torch.bfloat16)


def attention_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    scale: float | None = None,
    attn_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """`q @ k^T * scale (+ attn_bias)`, shape `(..., q_len, k_len)`, in `q`'s dtype."""
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    # Scaling q (q_len x d) is cheaper than scaling the scores (q_len x k_len).
    scores = (q * scale) @ k.transpose(-2, -1)
    if attn_bias is not None:
        scores = scores + attn_bias
    return scores


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the last dim that gives weight 0 to masked keys and all-zero fully-masked rows.

    Masked scores are set to the dtype's most negative finite number rather than -inf: a row
    with something allowed still gives those keys exactly 0 (exp underflows), and a fully-masked
    row becomes a harmless uniform softmax, whose gradient is finite, before it is zeroed.
    Half-precision scores are normalised in float32, like PyTorch's own kernels.
    """
    if mask is None:
        return _softmax(scores)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be boolean (True = may attend), got {mask.dtype}")
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    # Multiplying by the mask zeroes the fully-masked rows (and is a no-op elsewhere).
    return _softmax(filled) * mask


def _softmax(scores: torch.Tensor) -> torch.Tensor:
    if scores.dtype in _HALF:
        return torch.softmax(scores, dim=-1, dtype=torch.float32).to(scores.dtype)
    return torch.softmax(scores, dim=-1)


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    return_weights: bool = False,
    *,
    attn_bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scale + attn_bias, masked) @ v `(..., q_len, d_v)`, and the weights
    `(..., q_len, k_len)` if `return_weights`.

    `mask` is boolean (True = may attend; TypeError otherwise); `attn_bias` is an additive float
    tensor (ALiBi) and must be finite. `dropout_p` drops attention weights (using the global
    RNG, like `F.dropout`); the returned weights are the ones before dropout.
    """
    weights = masked_softmax(attention_scores(q, k, scale, attn_bias), mask)
    dropped = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    out = dropped @ v
    return (out, weights) if return_weights else out


def attention_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each attention row, with 0 log 0 = 0; a fully-masked row has entropy 0."""
    logw = torch.log(weights.clamp_min(torch.finfo(weights.dtype).tiny))
    return -(weights * logw).sum(-1)


def attention_weights(
    q: torch.Tensor,
    k: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale, masked) over the keys: shape `(..., q_len, k_len)`, q's dtype.

    Lesson 02's signature. `scale=None` means 1 / sqrt(q.shape[-1]) (the head width, Vaswani
    et al. 2017, section 3.2.1); `scale=0.0` is a real scale (uniform rows). `mask` is boolean
    (True = may attend; TypeError otherwise) and broadcasts to the scores.
    """
    return masked_softmax(attention_scores(q, k, scale), mask)


def scaling_experiment(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean over the rows of `softmax(q k^T * scale)` of (max weight, entropy, ||J||_F).

    `q` is `(N, d_k)`, `k` is `(T, d_k)`; J = diag(p) - p p^T is the softmax Jacobian of a row
    (Frobenius norm). Returns a tensor of shape `(3,)` in q's dtype: saturation in [1/T, 1],
    entropy in [0, log T] nats, and the gradient size (0 for a one-hot row, sqrt(T - 1)/T for
    a uniform one).
    """
    p = attention_weights(q, k, scale=scale)
    jacobian = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    return torch.stack(
        [
            p.amax(dim=-1).mean(),
            attention_entropy(p).mean(),
            torch.linalg.matrix_norm(jacobian).mean(),
        ]
    )
