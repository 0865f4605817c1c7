"""Multi-head attention: splitting and merging heads, MHA / GQA / MQA, fused QKV, optional RoPE.

Shapes: activations are `(batch, seq, d_model)`; inside attention `(batch, heads, seq, head_dim)`.
Weights follow `nn.Linear`: `(d_out, d_in)` with `y = x @ W.T (+ b)`.

Grouped-query attention (GQA) gives `n_kv_heads` key/value heads to `n_heads` query heads
(`n_heads % n_kv_heads == 0`): query head `h` uses key/value head `h // (n_heads // n_kv_heads)`,
the same grouping as `repeat_kv` (and Llama). `n_kv_heads == n_heads` is plain multi-head
attention, `n_kv_heads == 1` is multi-query attention (MQA).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from solutions.kernels.attention import scaled_dot_product_attention
from solutions.kernels.masks import causal_mask, combine_masks
from solutions.kernels.positions import RopeLayout, apply_rope, rotate

Backend = Literal["reference", "sdpa"]


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """`(..., seq, n_heads * head_dim)` -> `(..., n_heads, seq, head_dim)`, a view (no copy)."""
    return x.unflatten(-1, (n_heads, -1)).transpose(-3, -2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """`(..., n_heads, seq, head_dim)` -> `(..., seq, n_heads * head_dim)`: undoes `split_heads`.

    The transpose makes the tensor non-contiguous, so the final reshape copies it once.
    """
    return x.transpose(-3, -2).flatten(-2)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """`(..., n_kv_heads, seq, d)` -> `(..., n_kv_heads * n_rep, seq, d)`, each head `n_rep` times.

    Turns GQA keys/values into ordinary multi-head ones (head `h` gets kv head `h // n_rep`).
    """
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=-3)


def grouped_query_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: Backend = "reference",
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention of `q` `(..., n_heads, q_len, d)` over `k`, `v` `(..., n_kv_heads, k_len, d)`.

    `mask` (bool, True = may attend) and `bias` (float, e.g. ALiBi) broadcast to
    `(..., n_heads, q_len, k_len)`. `is_causal` adds a causal mask aligned to the bottom-right
    corner: the queries are the last `q_len` of the `k_len` positions (what a KV cache needs).
    `backend="reference"` runs the explicit kernel; `"sdpa"` calls
    `F.scaled_dot_product_attention` (no weights returned; fully-masked rows give zeros there too).
    """
    n_heads, n_kv_heads = q.shape[-3], k.shape[-3]
    if n_heads % n_kv_heads:
        raise ValueError(f"{n_heads} query heads cannot share {n_kv_heads} key/value heads")
    q_len, k_len = q.shape[-2], k.shape[-2]
    if is_causal and q_len == 1:
        is_causal = False  # the one query is the last position: it may see every key
    if is_causal and (q_len != k_len or mask is not None or bias is not None or backend != "sdpa"):
        # SDPA's own is_causal aligns to the top-left corner, so it only serves square scores.
        mask = combine_masks(mask, causal_mask(q_len, k_len - q_len, device=q.device))
        is_causal = False
    if backend == "sdpa":
        if return_weights:
            raise ValueError("the 'sdpa' backend does not return attention weights")
        return _sdpa(q, k, v, mask, bias, is_causal, scale, dropout_p)
    if backend != "reference":
        raise ValueError(f"backend must be 'reference' or 'sdpa', got {backend!r}")
    n_rep = n_heads // n_kv_heads
    if n_rep == 1:
        return scaled_dot_product_attention(
            q, k, v, mask, scale, return_weights, bias=bias, dropout_p=dropout_p
        )
    # Fold the n_rep query heads that share a kv head into the query axis: one kv head then serves
    # n_rep * q_len queries, and k and v are used as they are, without copies.
    fold = _fold_group(n_kv_heads, n_rep, q_len)
    result = scaled_dot_product_attention(
        fold(q),
        k,
        v,
        fold(mask),
        scale,
        return_weights,
        bias=fold(bias),
        dropout_p=dropout_p,
    )
    unfold = _unfold_group(n_rep, q_len)
    if return_weights:
        return unfold(result[0]), unfold(result[1])
    return unfold(result)


def _fold_group(n_kv_heads: int, n_rep: int, q_len: int):
    """`(..., n_heads | 1, q_len | 1, last)` -> `(..., n_kv_heads | 1, n_rep * q_len, last)`."""

    def fold(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        if t.dim() >= 3 and t.shape[-3] != 1:
            t = t.unflatten(-3, (n_kv_heads, n_rep))
        else:
            t = t.unsqueeze(-3)
        t = t.expand(*t.shape[:-3], n_rep, q_len, t.shape[-1])
        return t.flatten(-3, -2)

    return fold


def _unfold_group(n_rep: int, q_len: int):
    """`(..., n_kv_heads, n_rep * q_len, last)` -> `(..., n_heads, q_len, last)`."""
    return lambda t: t.unflatten(-2, (n_rep, q_len)).flatten(-4, -3)


def _sdpa(q, k, v, mask, bias, is_causal, scale, dropout_p) -> torch.Tensor:
    attn_mask = mask
    if bias is not None:
        # SDPA takes one mask; a float mask is added to the scores, so fold the boolean one in.
        attn_mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
        attn_mask = attn_mask.to(q.dtype)
    return F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=attn_mask,
        dropout_p=dropout_p,
        is_causal=is_causal,
        scale=scale,
        enable_gqa=q.shape[-3] != k.shape[-3],
    )


def _project_out(result, W_o: torch.Tensor, b_o: torch.Tensor | None):
    """Merge heads and apply the output projection, passing attention weights through."""
    if isinstance(result, tuple):
        out, weights = result
        return F.linear(merge_heads(out), W_o, b_o), weights
    return F.linear(merge_heads(result), W_o, b_o)


def multi_head_self_attention(
    x: torch.Tensor,
    W_q: torch.Tensor,
    W_k: torch.Tensor,
    W_v: torch.Tensor,
    W_o: torch.Tensor,
    n_heads: int,
    n_kv_heads: int | None = None,
    *,
    b_q: torch.Tensor | None = None,
    b_k: torch.Tensor | None = None,
    b_v: torch.Tensor | None = None,
    b_o: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    is_causal: bool = False,
    rope: bool = False,
    positions: torch.Tensor | None = None,
    rope_theta: float = 10000.0,
    rope_layout: RopeLayout = "interleaved",
    backend: Backend = "reference",
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Self-attention of `x` `(batch, seq, d_model)` with separate projection weights.

    `W_q` is `(n_heads * head_dim, d_model)`, `W_k` and `W_v` are `(n_kv_heads * head_dim, d_model)`
    (`n_kv_heads` defaults to what their shape says), `W_o` is `(d_model, n_heads * head_dim)`.
    With `rope`, queries and keys (never values) are rotated at `positions` (default `arange`).
    Returns `(batch, seq, d_model)`, plus the `(batch, n_heads, seq, seq)` weights on request.
    """
    head_dim = W_q.shape[0] // n_heads
    n_kv_heads = n_kv_heads or W_k.shape[0] // head_dim
    q = split_heads(F.linear(x, W_q, b_q), n_heads)
    k = split_heads(F.linear(x, W_k, b_k), n_kv_heads)
    v = split_heads(F.linear(x, W_v, b_v), n_kv_heads)
    if rope:
        q, k = (apply_rope(t, positions, theta=rope_theta, layout=rope_layout) for t in (q, k))
    result = grouped_query_attention(
        q, k, v, mask=mask, is_causal=is_causal, backend=backend, return_weights=return_weights
    )
    return _project_out(result, W_o, b_o)


def split_qkv(
    qkv: torch.Tensor, n_heads: int, n_kv_heads: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut a fused projection `(..., seq, (n_heads + 2 n_kv_heads) * head_dim)` into q, k, v."""
    head_dim = qkv.shape[-1] // (n_heads + 2 * n_kv_heads)
    sizes = [n_heads * head_dim, n_kv_heads * head_dim, n_kv_heads * head_dim]
    q, k, v = qkv.split(sizes, dim=-1)
    return split_heads(q, n_heads), split_heads(k, n_kv_heads), split_heads(v, n_kv_heads)


def fused_multi_head_self_attention(
    x: torch.Tensor,
    W_qkv: torch.Tensor,
    W_o: torch.Tensor,
    n_heads: int,
    n_kv_heads: int | None = None,
    *,
    b_qkv: torch.Tensor | None = None,
    b_o: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    is_causal: bool = False,
    rope: bool = False,
    positions: torch.Tensor | None = None,
    rope_theta: float = 10000.0,
    rope_layout: RopeLayout = "interleaved",
    backend: Backend = "reference",
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """`multi_head_self_attention` with one matmul for q, k and v: `W_qkv = cat([W_q, W_k, W_v])`.

    One `(d_model -> (n_heads + 2 n_kv_heads) * head_dim)` matmul reads `x` once instead of three
    times, which is why real implementations fuse them. `n_kv_heads` defaults to what the
    shapes say (`W_o` is `(d_model, n_heads * head_dim)`).
    """
    head_dim = W_o.shape[1] // n_heads
    n_kv_heads = n_kv_heads or (W_qkv.shape[0] // head_dim - n_heads) // 2
    q, k, v = split_qkv(F.linear(x, W_qkv, b_qkv), n_heads, n_kv_heads)
    if rope:
        q, k = (apply_rope(t, positions, theta=rope_theta, layout=rope_layout) for t in (q, k))
    result = grouped_query_attention(
        q, k, v, mask=mask, is_causal=is_causal, backend=backend, return_weights=return_weights
    )
    return _project_out(result, W_o, b_o)


class MultiHeadAttention(nn.Module):
    """Fused-QKV multi-head self-attention (GQA when `n_kv_heads < n_heads`) as a module.

    `W_qkv.weight` is `cat([W_q, W_k, W_v])` and `W_o.weight` the output projection, so the
    functional kernels above can be fed its weights. `forward` takes what the surrounding model
    computes once per pass: RoPE's `(cos, sin)`, a mask or ALiBi bias, and a KV cache with its
    layer index (new keys and values are written to the cache and attention runs over all of it).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        *,
        bias: bool = False,
        dropout: float = 0.0,
        backend: Backend = "reference",
        rope_layout: RopeLayout = "interleaved",
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads or n_heads
        self.head_dim = d_model // n_heads
        self.dropout, self.backend, self.rope_layout = dropout, backend, rope_layout
        qkv_dim = (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
        self.W_qkv = nn.Linear(d_model, qkv_dim, bias=bias)
        self.W_o = nn.Linear(d_model, d_model, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        attn_bias: torch.Tensor | None = None,
        cache=None,
        layer: int = 0,
    ) -> torch.Tensor:
        qkv = self.W_qkv(x)
        if rope is None:
            q, k, v = split_qkv(qkv, self.n_heads, self.n_kv_heads)
        else:
            q, k, v = self._rotated_qkv(qkv, rope)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        out = grouped_query_attention(
            q,
            k,
            v,
            mask=mask,
            bias=attn_bias,
            is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
            backend=self.backend,
        )
        return self.W_o(merge_heads(out))

    def _rotated_qkv(
        self, qkv: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`split_qkv` with RoPE applied to queries and keys in one rotation of both together.

        `rope` is `(cos, sin)` of shape `(seq, head_dim / 2)` or `(batch, seq, head_dim / 2)`.
        """
        heads = self.n_heads + self.n_kv_heads
        qk, v = qkv.split([heads * self.head_dim, self.n_kv_heads * self.head_dim], dim=-1)
        cos, sin = (t.unsqueeze(-2) for t in rope)  # broadcast over the heads
        qk = rotate(qk.unflatten(-1, (heads, self.head_dim)), cos, sin, self.rope_layout)
        qk = qk.transpose(-3, -2)  # (batch, heads, seq, head_dim)
        q, k = qk.split([self.n_heads, self.n_kv_heads], dim=-3)
        return q, k, split_heads(v, self.n_kv_heads)
