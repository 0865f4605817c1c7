"""Multi-head attention: splitting and merging heads, MHA / GQA / MQA, fused QKV, RoPE.

One API in three forms, every argument named the same way in each:

    multi_head_attention(x, W_q, W_k, W_v, W_o, n_heads, n_kv_heads, *, b_q, b_k, b_v, b_o, ...)
    fused_multi_head_attention(x, W_qkv, W_o, n_heads, n_kv_heads, *, b_qkv, b_o, ...)
    MultiHeadAttention(d_model, n_heads, n_kv_heads, *, bias, ...)(x, ...)

and the keyword arguments `...` they share:

    rope=(cos, sin)   RoPE tables for the positions of `x` (`positions.rope_cos_sin(positions,
                      head_dim)`), or None for no rotation; `rope_layout` "interleaved" | "half"
                      (the module also takes them as one complex tensor `cos + i sin`)
    attn_mask         boolean, True = may attend, broadcast to (batch, n_heads, q_len, k_len)
    attn_bias         float, added to the scores (ALiBi: `positions.alibi_bias`), same broadcast
    is_causal         True by default: a decoder's self-attention (False for an encoder)

`bias` only ever means the linear layers' bias vectors (`b_q`... in the functions, a bool in the
module, as in `nn.Linear`); the additive score bias is always `attn_bias`.

Shapes: activations are `(batch, seq, d_model)`; inside attention `(batch, heads, seq,
head_dim)`. Weights follow `nn.Linear`: `(d_out, d_in)` with `y = x @ W.T (+ b)`; `W_q` is
`(n_heads * head_dim, d_model)`, `W_k` and `W_v` `(n_kv_heads * head_dim, d_model)`, `W_o`
`(d_model, n_heads * head_dim)`, `W_qkv = cat([W_q, W_k, W_v])` (see `weights.py` for other
layouts).

Grouped-query attention (GQA, Ainslie et al. 2023) gives `n_kv_heads` key/value heads to
`n_heads` query heads (`n_heads % n_kv_heads == 0`): query head `h` uses key/value head
`h // (n_heads // n_kv_heads)` (`kv_head_index`), the grouping of `repeat_kv` and of Llama.
`n_kv_heads == n_heads` is plain multi-head attention (Vaswani et al. 2017), `n_kv_heads == 1`
multi-query attention (MQA, Shazeer 2019).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from solutions.kernels.attention import scaled_dot_product_attention
from solutions.kernels.masks import causal_mask, combine_masks
from solutions.kernels.module import Linear, Module
from solutions.kernels.positions import RopeLayout, check_rope_layout, rotate, rotate_complex

Backend = Literal["reference", "sdpa"]
Rope = tuple[torch.Tensor, torch.Tensor]


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """`(..., seq, n_heads * head_dim)` -> `(..., n_heads, seq, head_dim)`, a view (no copy).

    Head `h` owns features `h * head_dim .. (h + 1) * head_dim - 1`.
    """
    return x.unflatten(-1, (n_heads, -1)).transpose(-3, -2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """`(..., n_heads, seq, head_dim)` -> `(..., seq, n_heads * head_dim)`: undoes `split_heads`.

    The transpose makes the tensor non-contiguous, so the final flatten copies it once.
    """
    return x.transpose(-3, -2).flatten(-2)


def kv_head_index(n_heads: int, n_kv_heads: int) -> torch.Tensor:
    """`(n_heads,)` int64: the key/value head each query head reads, `h // (n_heads //
    n_kv_heads)` (GQA's grouping of consecutive query heads, Ainslie et al. 2023).

    Raises ValueError unless `n_kv_heads` divides `n_heads`.
    """
    _check_groups(n_heads, n_kv_heads)
    return torch.arange(n_heads) // (n_heads // n_kv_heads)


def _check_groups(n_heads: int, n_kv_heads: int) -> None:
    if n_kv_heads < 1 or n_heads % n_kv_heads:
        raise ValueError(f"{n_heads} query heads cannot share {n_kv_heads} key/value heads")


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """`(..., n_kv_heads, seq, d)` -> `(..., n_kv_heads * n_rep, seq, d)`, each head `n_rep` times.

    Turns GQA keys/values into ordinary multi-head ones: head `h` gets kv head `h // n_rep`,
    i.e. `x[..., kv_head_index(n_kv_heads * n_rep, n_kv_heads), :, :]`.
    """
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=-3)


def grouped_query_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    attn_mask: torch.Tensor | None = None,
    attn_bias: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: Backend = "reference",
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention of `q` `(..., n_heads, q_len, d)` over `k`, `v` `(..., n_kv_heads, k_len, d)`.

    The attention kernel under the multi-head layers, like `F.scaled_dot_product_attention`
    (and like it not causal unless asked). `attn_mask` (bool, True = may attend) and `attn_bias`
    (float, e.g. ALiBi) broadcast to `(..., n_heads, q_len, k_len)`. `is_causal` adds a causal
    mask aligned to the bottom-right corner: the queries are the last `q_len` of the `k_len`
    positions (what a KV cache needs). `backend="reference"` runs the explicit kernel; `"sdpa"`
    calls `F.scaled_dot_product_attention` (no weights returned; fully-masked rows give zeros
    there too). Returns `(..., n_heads, q_len, d)`, plus the weights `(..., n_heads, q_len,
    k_len)` if `return_weights`. Raises ValueError for heads that do not group, an unknown
    backend, or weights asked of "sdpa".
    """
    n_heads, n_kv_heads = q.shape[-3], k.shape[-3]
    if n_heads % n_kv_heads:
        _check_groups(n_heads, n_kv_heads)
    q_len, k_len = q.shape[-2], k.shape[-2]
    if is_causal and q_len == 1:
        is_causal = False  # the one query is the last position: it may see every key
    if is_causal and (
        q_len != k_len or attn_mask is not None or attn_bias is not None or backend != "sdpa"
    ):
        # SDPA's own is_causal aligns to the top-left corner, so it only serves square scores.
        attn_mask = combine_masks(attn_mask, causal_mask(q_len, k_len - q_len, device=q.device))
        is_causal = False
    if backend == "sdpa":
        if return_weights:
            raise ValueError("the 'sdpa' backend does not return attention weights")
        if attn_bias is not None:
            # SDPA takes one mask; a float one is added to the scores: fold the boolean one in.
            fill = float("-inf")
            bias = attn_bias if attn_mask is None else attn_bias.masked_fill(~attn_mask, fill)
            attn_mask = bias.to(q.dtype)
        if scale is None and n_heads == n_kv_heads:  # positional: no keyword parsing per call
            return F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal)
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=dropout_p,
            is_causal=is_causal,
            scale=scale,
            enable_gqa=n_heads != n_kv_heads,
        )
    if backend != "reference":
        raise ValueError(f"backend must be 'reference' or 'sdpa', got {backend!r}")
    n_rep = n_heads // n_kv_heads
    if n_rep == 1:
        return scaled_dot_product_attention(
            q, k, v, attn_mask, scale, return_weights, attn_bias=attn_bias, dropout_p=dropout_p
        )
    # Fold the n_rep query heads that share a kv head into the query axis: one kv head then serves
    # n_rep * q_len queries, and k and v are used as they are, without copies.
    fold = _fold_group(n_kv_heads, n_rep, q_len)
    result = scaled_dot_product_attention(
        fold(q),
        k,
        v,
        fold(attn_mask),
        scale,
        return_weights,
        attn_bias=fold(attn_bias),
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


def _rope_tables(rope: Rope) -> Rope:
    """`(seq, d/2)` tables broadcast against `(batch, heads, seq, d/2)` as they are; batched
    `(batch, seq, d/2)` ones need a heads axis."""
    cos, sin = rope
    if cos.dim() == 3:
        return cos[:, None], sin[:, None]
    return cos, sin


def _attend(q, k, v, W_o, b_o, rope, rope_layout, attn_kwargs: dict):
    """Rotate q and k, attend, merge heads and project: the part every entry point shares."""
    if rope is not None:
        cos, sin = _rope_tables(rope)
        q, k = rotate(q, cos, sin, rope_layout), rotate(k, cos, sin, rope_layout)
    result = grouped_query_attention(q, k, v, **attn_kwargs)
    if isinstance(result, tuple):
        out, weights = result
        return F.linear(merge_heads(out), W_o, b_o), weights
    return F.linear(merge_heads(result), W_o, b_o)


def multi_head_attention(
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
    rope: Rope | None = None,
    rope_layout: RopeLayout = "interleaved",
    attn_mask: torch.Tensor | None = None,
    attn_bias: torch.Tensor | None = None,
    is_causal: bool = True,
    dropout_p: float = 0.0,
    backend: Backend = "reference",
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Multi-head self-attention of `x` `(batch, seq, d_model)` with separate projections
    (Vaswani et al. 2017, section 3.2.2; GQA when `n_kv_heads < n_heads`).

    Weights and the shared keyword arguments are described in the module docstring;
    `n_kv_heads` defaults to what `W_k`'s shape says. Queries and keys (never values) are
    rotated by `rope`. Returns `(batch, seq, d_model)`, plus the `(batch, n_heads, seq, seq)`
    weights if `return_weights`. Raises ValueError as `grouped_query_attention` does.
    """
    head_dim = W_q.shape[0] // n_heads
    n_kv_heads = n_kv_heads or W_k.shape[0] // head_dim
    q = split_heads(F.linear(x, W_q, b_q), n_heads)
    k = split_heads(F.linear(x, W_k, b_k), n_kv_heads)
    v = split_heads(F.linear(x, W_v, b_v), n_kv_heads)
    kwargs = dict(
        attn_mask=attn_mask,
        attn_bias=attn_bias,
        is_causal=is_causal,
        dropout_p=dropout_p,
        backend=backend,
        return_weights=return_weights,
    )
    return _attend(q, k, v, W_o, b_o, rope, rope_layout, kwargs)


def split_qkv(
    qkv: torch.Tensor, n_heads: int, n_kv_heads: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut a fused projection `(..., seq, (n_heads + 2 n_kv_heads) * head_dim)` into q
    `(..., n_heads, seq, head_dim)` and k, v `(..., n_kv_heads, seq, head_dim)` (views)."""
    head_dim = qkv.shape[-1] // (n_heads + 2 * n_kv_heads)
    sizes = [n_heads * head_dim, n_kv_heads * head_dim, n_kv_heads * head_dim]
    q, k, v = qkv.split(sizes, dim=-1)
    return split_heads(q, n_heads), split_heads(k, n_kv_heads), split_heads(v, n_kv_heads)


def fused_multi_head_attention(
    x: torch.Tensor,
    W_qkv: torch.Tensor,
    W_o: torch.Tensor,
    n_heads: int,
    n_kv_heads: int | None = None,
    *,
    b_qkv: torch.Tensor | None = None,
    b_o: torch.Tensor | None = None,
    rope: Rope | None = None,
    rope_layout: RopeLayout = "interleaved",
    attn_mask: torch.Tensor | None = None,
    attn_bias: torch.Tensor | None = None,
    is_causal: bool = True,
    dropout_p: float = 0.0,
    backend: Backend = "reference",
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """`multi_head_attention` with one matmul for q, k and v: `W_qkv = cat([W_q, W_k, W_v])`
    `((n_heads + 2 n_kv_heads) * head_dim, d_model)`, `b_qkv = cat([b_q, b_k, b_v])`.

    One matmul reads `x` once instead of three times, which is why real implementations fuse
    them. `n_kv_heads` defaults to what the shapes say (`W_o` is `(d_model, n_heads *
    head_dim)`). Same result, shapes and errors as `multi_head_attention`.
    """
    head_dim = W_o.shape[1] // n_heads
    n_kv_heads = n_kv_heads or (W_qkv.shape[0] // head_dim - n_heads) // 2
    q, k, v = split_qkv(F.linear(x, W_qkv, b_qkv), n_heads, n_kv_heads)
    kwargs = dict(
        attn_mask=attn_mask,
        attn_bias=attn_bias,
        is_causal=is_causal,
        dropout_p=dropout_p,
        backend=backend,
        return_weights=return_weights,
    )
    return _attend(q, k, v, W_o, b_o, rope, rope_layout, kwargs)


class MultiHeadAttention(Module):
    """`fused_multi_head_attention` as a module, with a KV cache.

    Parameters: `W_qkv.weight` `((n_heads + 2 n_kv_heads) * head_dim, d_model)` is
    `cat([W_q, W_k, W_v])` and `W_o.weight` `(d_model, d_model)` the output projection, with
    bias vectors when `bias=True`; the functions above can be fed them. `is_causal` (default
    True: a decoder) and `rope_layout` are fixed at construction; `forward` takes what the
    surrounding model computes once per pass for all layers: `rope=(cos, sin)`, an `attn_mask`
    or `attn_bias`, and a KV cache with this layer's index (new keys and values are written to
    the cache, and attention runs over all of it).

    Raises ValueError if `n_heads` does not divide `d_model`, `n_kv_heads` does not divide
    `n_heads`, or the layout is unknown.
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
        is_causal: bool = True,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        _check_groups(n_heads, n_kv_heads or n_heads)
        check_rope_layout(rope_layout)
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads or n_heads
        self.head_dim = d_model // n_heads
        self.dropout, self.backend = dropout, backend
        self.rope_layout, self.is_causal = rope_layout, is_causal
        qkv_dim = (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
        self.W_qkv = Linear(d_model, qkv_dim, bias=bias)
        self.W_o = Linear(d_model, d_model, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        *,
        rope: Rope | torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        attn_bias: torch.Tensor | None = None,
        cache=None,
        layer: int = 0,
    ) -> torch.Tensor:
        """`(batch, seq, d_model)` -> `(batch, seq, d_model)`; with `cache`, `x` holds the tokens
        after the cached ones and `rope` must be the tables of their positions. `rope` may also
        be the tables as one complex tensor `cos + i sin` (`positions.rotate_complex`), which a
        model can form once per forward pass instead of once per layer."""
        B, T, _ = x.shape
        H, H_kv = self.n_heads, self.n_kv_heads
        W_qkv, W_o = self.W_qkv, self.W_o
        qkv = F.linear(x, W_qkv.weight, W_qkv.bias)
        heads = qkv.view(B, T, H + 2 * H_kv, self.head_dim).transpose(1, 2)  # (B, heads, T, d)
        if rope is None:
            q, k = heads[:, :H], heads[:, H : H + H_kv]
        else:  # queries and keys sit side by side: rotate them in one go
            qk = heads[:, : H + H_kv]
            if isinstance(rope, torch.Tensor):  # cos + i sin, formed once for all layers
                cis = rope[:, None] if rope.dim() == 3 else rope  # per-sequence: a heads axis
                qk = rotate_complex(qk, cis, self.rope_layout)
            else:
                cos, sin = _rope_tables(rope)
                qk = rotate(qk, cos, sin, self.rope_layout)
            q, k = qk.split_with_sizes([H, H_kv], dim=1)
        v = heads[:, H + H_kv :]
        if cache is not None:
            k, v = cache.update(layer, k, v)
        out = grouped_query_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            attn_bias=attn_bias,
            is_causal=self.is_causal,
            dropout_p=self.dropout if self.training else 0.0,
            backend=self.backend,
        )
        return F.linear(merge_heads(out), W_o.weight, W_o.bias)


def merge_trace(B: int, H: int, T: int, d: int) -> tuple[tuple[int, ...], tuple[int, ...], bool]:
    """What `merge_heads` meets, as PyTorch computes it for an attention output `(B, H, T, d)`:
    its strides, the strides of `.transpose(1, 2)`, and whether `.transpose(1, 2).view(B, T,
    H * d)` works without `contiguous()` (only when T == 1 or H == 1, for d >= 2).

    Uses the meta device (shapes and strides, no memory), so any sizes are cheap. Raises
    RuntimeError for sizes torch rejects (negative).
    """
    out = torch.empty(B, H, T, d, device="meta")
    moved = out.transpose(1, 2)
    try:
        moved.view(B, T, H * d)
        view_ok = True
    except RuntimeError:
        view_ok = False
    return tuple(out.stride()), tuple(moved.stride()), view_ok
