"""Attention weight layouts, converted both ways, and parameter counts.

The same multi-head projection is stored in several layouts; each converter below is exact (a
reshape or a permutation, never arithmetic) and has an inverse. With `d = head_dim`,
`H = n_heads`, `G = n_kv_heads`:

    ours       W_q (H d, d_model), W_k and W_v (G d, d_model), W_o (d_model, H d);
               y = x @ W.T as in nn.Linear, head h owns rows h d .. (h + 1) d - 1
    fused      W_qkv = cat([W_q, W_k, W_v]) ((H + 2G) d, d_model): nn.MultiheadAttention's
               in_proj_weight (H = G), nanoGPT's c_attn, this course's MultiHeadAttention
    per-head interleaved
               per kv group g: [the q rows of its H/G query heads | k_g | v_g], so with H = G
               [q_0 | k_0 | v_0 | q_1 | k_1 | v_1 | ...]: GPT-NeoX's and Megatron-LM's fused
               query_key_value
    per-head   W_Q (H, d_model, d) with q_h = x @ W_Q[h]; W_O (H, d, d_model) with
               out = sum_h z_h @ W_O[h]: the per-head tensors of TransformerLens
    Conv1D     (d_in, d_out), y = x @ W + b: Hugging Face's GPT-2; transpose it for ours

All converters act on dimension 0 of `(rows, d_model)` weights, so they convert bias vectors
`(rows,)` the same way (except the per-head ones, which are for matrices).
"""

from __future__ import annotations

import torch

from solutions.kernels.heads import _check_groups


def fuse_qkv(W_q: torch.Tensor, W_k: torch.Tensor, W_v: torch.Tensor) -> torch.Tensor:
    """`cat([W_q, W_k, W_v])`: `((H + 2G) d, d_model)` from ours (or biases `((H + 2G) d,)`)."""
    return torch.cat([W_q, W_k, W_v])


def unfuse_qkv(
    W_qkv: torch.Tensor, n_heads: int, n_kv_heads: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of `fuse_qkv`: `(W_q, W_k, W_v)`, views of `W_qkv`'s rows.

    Raises ValueError if the rows do not split into `n_heads + 2 n_kv_heads` equal heads.
    """
    G = n_kv_heads or n_heads
    d = _head_rows(W_qkv.shape[0], n_heads + 2 * G)
    return tuple(W_qkv.split([n_heads * d, G * d, G * d]))


def fused_to_per_head_interleaved(
    W_qkv: torch.Tensor, n_heads: int, n_kv_heads: int | None = None
) -> torch.Tensor:
    """`[Q | K | V]` rows -> per kv group `[q heads of the group | k_g | v_g]` (GPT-NeoX's
    `query_key_value`; with `n_kv_heads == n_heads`, `[q_h | k_h | v_h]` per head).

    Same shape as `W_qkv`; raises ValueError for heads that do not fit the rows or the groups.
    """
    G = n_kv_heads or n_heads
    _check_groups(n_heads, G)
    d = _head_rows(W_qkv.shape[0], n_heads + 2 * G)
    W_q, W_k, W_v = unfuse_qkv(W_qkv, n_heads, G)
    rest = W_qkv.shape[1:]
    q = W_q.reshape(G, (n_heads // G) * d, *rest)
    k, v = W_k.reshape(G, d, *rest), W_v.reshape(G, d, *rest)
    return torch.cat([q, k, v], dim=1).reshape(W_qkv.shape)


def per_head_interleaved_to_fused(
    W: torch.Tensor, n_heads: int, n_kv_heads: int | None = None
) -> torch.Tensor:
    """Inverse of `fused_to_per_head_interleaved`: back to `[Q | K | V]` rows."""
    G = n_kv_heads or n_heads
    _check_groups(n_heads, G)
    d = _head_rows(W.shape[0], n_heads + 2 * G)
    rest = W.shape[1:]
    groups = W.reshape(G, (n_heads // G + 2) * d, *rest)
    q, k, v = groups.split([(n_heads // G) * d, d, d], dim=1)
    return torch.cat([t.reshape(-1, *rest) for t in (q, k, v)])


def to_per_head(W: torch.Tensor, n_heads: int) -> torch.Tensor:
    """An input projection `(n_heads d, d_model)` (W_q, W_k or W_v) -> `(n_heads, d_model, d)`,
    with `x @ result[h]` the projection of head `h` (TransformerLens's W_Q layout)."""
    d = _head_rows(W.shape[0], n_heads)
    return W.reshape(n_heads, d, W.shape[1]).transpose(1, 2)


def from_per_head(W_heads: torch.Tensor) -> torch.Tensor:
    """Inverse of `to_per_head`: `(n_heads, d_model, d)` -> `(n_heads d, d_model)`."""
    return W_heads.transpose(1, 2).reshape(-1, W_heads.shape[1])


def output_to_per_head(W_o: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The output projection `(d_model, n_heads d)` -> `(n_heads, d, d_model)`, with
    `sum_h z_h @ result[h]` equal to `merge_heads(z) @ W_o.T` (TransformerLens's W_O)."""
    d = _head_rows(W_o.shape[1], n_heads)
    return W_o.T.reshape(n_heads, d, W_o.shape[0])


def output_from_per_head(W_O: torch.Tensor) -> torch.Tensor:
    """Inverse of `output_to_per_head`: `(n_heads, d, d_model)` -> `(d_model, n_heads d)`."""
    return W_O.reshape(-1, W_O.shape[-1]).T


def conv1d_to_linear(W: torch.Tensor) -> torch.Tensor:
    """Hugging Face GPT-2's `Conv1D` weight `(d_in, d_out)` -> ours `(d_out, d_in)`."""
    return W.T


def _head_rows(rows: int, n_heads: int) -> int:
    if n_heads < 1 or rows % n_heads:
        raise ValueError(f"{rows} rows do not split into {n_heads} equal heads")
    return rows // n_heads


# -- parameter counts ---------------------------------------------------------------------------


def attention_parameter_count(
    d_model: int, n_heads: int, n_kv_heads: int | None = None, *, bias: bool = True
) -> int:
    """Parameters of one attention layer: `W_q`, `W_o` `d_model^2` each, `W_k`, `W_v`
    `d_model * n_kv_heads * head_dim` each, plus their biases. Multi-head attention
    (`n_kv_heads == n_heads`) has `4 d^2 + 4 d`; GQA and MQA shrink only the K and V parts."""
    G = n_kv_heads or n_heads
    _check_groups(n_heads, G)
    kv = G * (d_model // n_heads)
    weights = 2 * d_model * d_model + 2 * d_model * kv
    return weights + (2 * d_model + 2 * kv if bias else 0)


def ffn_parameter_count(d_model: int, d_ff: int, kind: str = "gelu", *, bias: bool = True) -> int:
    """Parameters of one feed-forward layer: GELU `2 d d_ff (+ d_ff + d)`, SwiGLU `3 d d_ff`
    (bias-free). Raises ValueError for another kind."""
    if kind == "gelu":
        return 2 * d_model * d_ff + (d_ff + d_model if bias else 0)
    if kind == "swiglu":
        return 3 * d_model * d_ff
    raise ValueError(f"ffn must be 'swiglu' or 'gelu', got {kind!r}")


def gpt2_parameter_count(
    vocab_size: int = 50257,
    n_positions: int = 1024,
    n_embd: int = 768,
    n_layer: int = 12,
    n_inner: int | None = None,
    *,
    bias: bool = True,
) -> int:
    """Parameters of a GPT-2 model from its Hugging Face config fields (defaults: GPT-2 small,
    whose config.json has vocab_size 50257, n_positions 1024, n_embd 768, n_layer 12, n_inner
    null = 4 n_embd).

    Token and position tables, per layer two LayerNorms (weight and bias), attention (MHA:
    `4 d^2 + 4 d`) and a GELU MLP, a final LayerNorm, and a head tied to the token table (counted
    once). GPT-2 small: 124,439,808 with `bias=True`, as released (every linear and LayerNorm
    of GPT-2 has a bias); 124,337,664 with `bias=False` (nanoGPT's `bias=False` option: 133
    bias vectors of 768 fewer).
    """
    d, d_ff = n_embd, n_inner or 4 * n_embd
    norm = 2 * d if bias else d
    layer = 2 * norm + attention_parameter_count(d, 1, bias=bias)
    layer += ffn_parameter_count(d, d_ff, "gelu", bias=bias)
    return vocab_size * d + n_positions * d + n_layer * layer + norm
