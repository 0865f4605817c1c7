"""Reference softmax kernels: stable softmax, log-softmax, log-sum-exp, cross-entropy,
the softmax Jacobian, and the streaming ("online") softmax that FlashAttention builds on.

Every function works for float16, bfloat16, float32 and float64 and any `dim`. Half
precision inputs are computed in float32 and cast back, as PyTorch's own kernels do: the
exponentials are harmless in float16 after the max shift, but a long row's sum is not.

Rows that contain -inf are handled (those entries get probability 0). A row that is
*entirely* -inf has no defined softmax; like `torch.softmax` these functions return NaN
there (log-sum-exp returns -inf). Attention masks avoid that case on purpose (lesson 03).
"""

from __future__ import annotations

import torch

_HALF = (torch.float16, torch.bfloat16)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in _HALF else x.dtype


def _row_max(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The max along `dim` (kept), with -inf rows shifted by 0 so that -inf - -inf never happens.

    The max is detached: the shift cancels exactly in every formula below, so it carries
    no gradient, and leaving it out of the graph saves the backward pass some work.
    """
    m = x.detach().amax(dim=dim, keepdim=True)
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def logsumexp(x: torch.Tensor, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    """log(sum(exp(x))) along `dim`, computed as m + log(sum(exp(x - m))) with m the row max."""
    xc = x.to(_compute_dtype(x))
    m = _row_max(xc, dim)
    out = m + torch.log(torch.exp(xc - m).sum(dim=dim, keepdim=True))
    if not keepdim:
        out = out.squeeze(dim)
    return out.to(x.dtype)


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """exp(x - m) / sum(exp(x - m)) along `dim`: the max shift m keeps every exponent <= 0."""
    xc = x.to(_compute_dtype(x))
    e = torch.exp(xc - _row_max(xc, dim))
    return (e / e.sum(dim=dim, keepdim=True)).to(x.dtype)


def log_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """(x - m) - log(sum(exp(x - m))): never takes the log of a probability that underflowed.

    Subtracting the shift first matters at large magnitudes: x - logsumexp(x) would
    subtract two numbers near 1e4 whose float32 spacing is already 1e-3.
    """
    xc = x.to(_compute_dtype(x))
    shifted = xc - _row_max(xc, dim)
    return (shifted - torch.log(torch.exp(shifted).sum(dim=dim, keepdim=True))).to(x.dtype)


def cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int | None = -100
) -> torch.Tensor:
    """Mean negative log-likelihood of `targets` under softmax(`logits`).

    `logits` has the classes in its last dimension, `(..., C)`, and `targets` holds class
    indices of shape `(...)` (the language-model layout: `(B, T, V)` logits, `(B, T)`
    targets). Positions whose target equals `ignore_index` count neither in the sum nor in
    the mean; if every position is ignored the mean is 0/0 = NaN, as in PyTorch.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} need targets of shape {tuple(logits.shape[:-1])}, "
            f"got {tuple(targets.shape)}"
        )
    logp = log_softmax(logits.to(_compute_dtype(logits)), dim=-1)
    keep = torch.ones_like(targets, dtype=torch.bool)
    if ignore_index is not None:
        keep = targets != ignore_index
    safe_targets = torch.where(keep, targets, torch.zeros_like(targets))
    picked = logp.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
    nll = -(picked * keep).sum() / keep.sum()
    return nll.to(logits.dtype)


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy -sum(p log p) in nats along `dim`, with 0 log 0 = 0 (its limit)."""
    return -torch.special.xlogy(p, p).sum(dim=dim)


def softmax_jacobian(p: torch.Tensor) -> torch.Tensor:
    """d softmax_i / d x_j = p_i (delta_ij - p_j), i.e. diag(p) - p p^T, for every row of `p`.

    Takes the probabilities (the softmax output), shape `(..., n)`; returns `(..., n, n)`.
    """
    return torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)


def online_softmax_stats(
    x: torch.Tensor, block_size: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """One streaming pass over blocks of the last dimension: the running max m and the sum
    s = sum(exp(x - m)), updated per block as

        m' = max(m, max(block)),   s' = s * exp(m - m') + sum(exp(block - m')).

    Returns `(m, s)` with the last dimension kept (size 1). Rows that are all -inf so far
    keep m = -inf and s = 0 (the rescale factor is defined as 0 there, not exp(nan)).
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    xc = x.to(_compute_dtype(x))
    shape = (*xc.shape[:-1], 1)
    m = torch.full(shape, float("-inf"), dtype=xc.dtype, device=xc.device)
    s = torch.zeros(shape, dtype=xc.dtype, device=xc.device)
    for start in range(0, xc.shape[-1], block_size):
        m, s = online_softmax_update(m, s, xc[..., start : start + block_size])
    return m, s


def online_softmax_update(
    m: torch.Tensor, s: torch.Tensor, block: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the streaming softmax: fold `block` (..., b) into the running max `m` and
    running sum `s` (both (..., 1)) and return the new pair.

    The old sum was taken relative to the old max, so it is rescaled by exp(m - m');
    when everything so far is -inf the shift is 0 and the sum stays 0.
    """
    m_new = torch.maximum(m, block.amax(dim=-1, keepdim=True))
    shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
    s_new = s * torch.exp(m - shift) + torch.exp(block - shift).sum(dim=-1, keepdim=True)
    return m_new, s_new


def online_softmax(x: torch.Tensor, dim: int = -1, block_size: int = 128) -> torch.Tensor:
    """Softmax computed from streamed statistics (one pass for m and s, one to normalise).

    Equal to `softmax(x, dim)` up to rounding: this is the recurrence FlashAttention uses
    to never hold a whole attention row at once.
    """
    moved = x.movedim(dim, -1)
    m, s = online_softmax_stats(moved, block_size)
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    out = torch.exp(moved.to(m.dtype) - shift) / s
    return out.to(x.dtype).movedim(-1, dim)
