"""Built-in equivalents of earlier exercises, used while judging a later one on its own.

When an exercise calls a learner function from an earlier exercise (lesson 02's
`scaled_dot_product_attention` calls `attention_weights`, lesson 03's `masked_attention`
calls `masked_softmax`), the checks replace that function by one of these for the duration
of the call (`Exercise.stand_ins`, see `course.calling`), so that a mistake costs its own
exercise's points and not those of every exercise built on it.

Nothing here is an answer, and a test holds every function to it
(tests/test_public_not_answers.py submits each one to the visible check of every exercise that
computes the same thing, and requires the check to fail). Public code may compute what an
exercise computes only in a form that the exercise's own check rejects: a built-in the exercise
forbids (`forbidden=`, with a hint saying why), or a form the lesson's prose rules out with a
stated reason (a copy where the exercise must return a view); or by calling the learner's own
function, passed in. A built-in that the prose merely shows is not enough: pasted into the
exercise, it would pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "masked_softmax",
    "attention_weights",
    "attention_entropy",
    "split_heads",
    "merge_heads",
    "repeat_kv",
    "layer_norm",
    "cache_write",
    "rms_norm",
]


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PyTorch's attention as a masked softmax over the last dim (lesson 03's convention).

    With keys and values the identity and a scale of 1, `softmax(S I^T) I` is the softmax of
    the scores `S` themselves; `F.scaled_dot_product_attention` gives rows that may attend to
    nothing all-zero weights (PyTorch pull request #131060, `_safe_softmax`).

    scores: float `(..., q_len, k_len)`; mask: bool, True = may attend, broadcastable to scores.
    Returns the weights, shape and dtype of `scores`. Raises TypeError when `mask` is not a
    boolean tensor (None included: the exercise's `masked_softmax` takes a mask).
    """
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = "None" if mask is None else getattr(mask, "dtype", type(mask).__name__)
        raise TypeError(f"masked_softmax needs a boolean mask (True = may attend), got {got}")
    # SDPA wants a mask of at least (q_len, k_len): broadcast both first, as masked_fill would.
    shape = torch.broadcast_shapes(mask.shape, scores.shape)
    scores, mask = scores.expand(shape), mask.expand(shape)
    eye = torch.eye(scores.shape[-1], dtype=scores.dtype).expand(*scores.shape[:-2], -1, -1)
    return F.scaled_dot_product_attention(scores, eye, eye, attn_mask=mask, scale=1.0)


def attention_weights(q, k, mask=None, scale=None):
    """softmax(q k^T * scale, masked) `(..., T_q, T_k)`, from PyTorch's fused attention.

    With the identity as the values, attention returns its weights: A I = A.
    """
    eye = torch.eye(k.shape[-2], dtype=q.dtype).expand(*k.shape[:-1], k.shape[-2])
    return F.scaled_dot_product_attention(q, k, eye, attn_mask=mask, scale=scale)


def attention_entropy(weights):
    """-sum(p log p) over the last dimension, with 0 log 0 = 0 (`torch.special.entr`, which
    lessons 01 and 02 forbid in their entropy exercises: it is the whole exercise in one call)."""
    return torch.special.entr(weights).sum(dim=-1)


# Lesson 04: the reshapes of multi-head attention, what the layer exercise runs instead of the
# learner's own. The split and the merge copy every number (torch.stack, torch.cat), where the
# lesson's recipe copies none (the split, always a view of x) or only when it must (the merge:
# a view for one token or one head): the checks of both exercises reject the copies.


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, n_heads * d) -> (B, n_heads, T, d): head h holds features h d .. (h + 1) d - 1.
    A copy (`torch.stack` of chunks), never a view of x."""
    return torch.stack(x.chunk(n_heads, dim=-1), dim=-3)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, n_heads, T, d) -> (B, T, n_heads * d): the heads side by side, head 0 first.
    A copy (`torch.cat`), even where a view would do (T == 1 or n_heads == 1)."""
    return torch.cat(x.unbind(dim=-3), dim=-1)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, n_kv, T, d) -> (B, n_kv * n_rep, T, d): query head h reads kv head h // n_rep.

    By PyTorch's grouped-query attention (`F.scaled_dot_product_attention(enable_gqa=True)`,
    which lesson 04's `repeat_kv` forbids): queries and keys of width 1, all zero, and a mask
    that lets position t see key t alone make every attention row one-hot, so each head's
    output is, exactly, the values of its kv head, x itself."""
    B, n_kv, T, _ = x.shape
    q, k = x.new_zeros(B, n_kv * n_rep, T, 1), x.new_zeros(B, n_kv, T, 1)
    only_itself = torch.eye(T, dtype=torch.bool, device=x.device)
    return F.scaled_dot_product_attention(q, k, x, attn_mask=only_itself, enable_gqa=True)


# Lesson 06: the norm the depth exercises build their stacks from.


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """LayerNorm over the last dimension (`F.layer_norm`, biased variance, eps inside the root)."""
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)


# Lesson 07: the cache write, what `cached_attention` runs instead of the learner's own.


def cache_write(keys, values, length, k_new, v_new):
    """Write `k_new`, `v_new` `(B, n_kv, T, d)` at positions `length ..` of the buffers `(B, n_kv,
    max_len, d)` (`index_copy_`, which lesson 07's `cache_write` forbids: it writes at a tensor
    of indices, the tool for scattered positions, where the lesson writes a slice), in place;
    return positions `0 .. length + T - 1` of each. Raises ValueError past `max_len`."""
    if length + k_new.shape[-2] > keys.shape[-2]:
        raise ValueError(f"KV cache full: {length} + {k_new.shape[-2]} > {keys.shape[-2]}")
    index = torch.arange(length, length + k_new.shape[-2], device=keys.device)
    keys.index_copy_(2, index, k_new)
    values.index_copy_(2, index, v_new)
    return keys[:, :, : length + k_new.shape[-2]], values[:, :, : length + k_new.shape[-2]]


# Lesson 08: the parts a block is built from, while the block or the model is judged.


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """RMSNorm over the last dim (Zhang & Sennrich 2019) by PyTorch's `F.rms_norm` (which lesson
    06's `rms_norm` forbids), with that exercise's signature `rms_norm(x, weight=None,
    eps=1e-5)`; x's shape and dtype."""
    return F.rms_norm(x, (x.shape[-1],), weight, eps)
