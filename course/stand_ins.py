"""Built-in equivalents of learner functions, used while judging a *later* exercise.

When an exercise calls a function the learner wrote earlier, the checks swap that function for
one of these (`Exercise.stand_ins`), so that the exercise is judged on its own: a mistake in
the earlier function costs that function's points, not every exercise built on it. Nothing here
answers an exercise: each is PyTorch's own operation, which the exercise it stands in for asks
the learner not to call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["attention_weights", "attention_entropy"]


def attention_weights(q, k, mask=None, scale=None):
    """softmax(q k^T * scale, masked) `(..., T_q, T_k)`, from PyTorch's fused attention.

    With the identity as the values, attention returns its weights: A I = A.
    """
    eye = torch.eye(k.shape[-2], dtype=q.dtype).expand(*k.shape[:-1], k.shape[-2])
    return F.scaled_dot_product_attention(q, k, eye, attn_mask=mask, scale=scale)


def attention_entropy(weights):
    """-sum(p log p) over the last dimension, with 0 log 0 = 0 (`torch.special.entr`)."""
    return torch.special.entr(weights).sum(dim=-1)
