"""The floor under a cached decoding step: the same arithmetic with no modules and no checks.

A cached step of a small model is a few MFLOP spread over ~100 kernel calls, so its time is the
calls' fixed cost and the Python around them, not arithmetic. `flattened_step` is one token's
step over a `TransformerLM`'s own weights written as the fewest eager kernels: no modules, no
argument checks, no helper functions. The model offers it as `TransformerLM.decode_floor`, and
`make bench` (`course.lm.bench.cached_step_times`) times it against the model's cached step: the
ratio says what the module structure costs (target <= 1.3x).

It covers the presets' architecture (pre-LN, RMSNorm, SwiGLU, interleaved RoPE, no biases,
n_kv_heads == n_heads) and raises ValueError for anything else.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def check_flattenable(model) -> None:
    """Raise ValueError unless `flattened_step` covers `model`'s architecture."""
    c = model.config
    wanted = {
        "norm_position": "pre",
        "norm": "rmsnorm",
        "ffn": "swiglu",
        "positional": "rope",
        "rope_layout": "interleaved",
        "bias": False,
        "n_kv_heads": c.n_heads,
    }
    other = {k: getattr(c, k) for k, v in wanted.items() if getattr(c, k) != v}
    if other:
        raise ValueError(f"the flattened step covers the presets' architecture, not {other}")


def flattened_step(model, max_len: int) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """`step(token, pos) -> logits (1, 1, vocab)`: the model's cached step for one token
    `(1, 1)` at position `pos < max_len`, with its own keys and values `(1, n_heads, max_len,
    head_dim)` per layer (positions before `pos` must have been stepped through first).
    Raises ValueError for an architecture it does not cover."""
    check_flattenable(model)
    c = model.config
    like = model.tok_emb.weight
    shape = (1, c.n_heads, max_len, c.head_dim)
    keys = [like.new_zeros(shape) for _ in model.blocks]
    values = [like.new_zeros(shape) for _ in model.blocks]
    H, hd, D, eps = c.n_heads, c.head_dim, c.d_model, c.norm_eps
    layers = [
        (b.norm1.weight, b.attn.W_qkv.weight, b.attn.W_o.weight, b.norm2.weight)
        + (b.ffn.W_gate.weight, b.ffn.W_up.weight, b.ffn.W_down.weight)
        for b in model.blocks
    ]
    emb, head, norm_f = model.tok_emb.weight, model.lm_head.weight, model.norm_f.weight
    freqs = torch.complex(model.rope_cos, model.rope_sin)

    def step(token: torch.Tensor, pos: int) -> torch.Tensor:
        x = F.embedding(token, emb)
        for i, (n1, w_qkv, w_o, n2, w_gate, w_up, w_down) in enumerate(layers):
            qkv = F.linear(F.rms_norm(x, (D,), n1, eps), w_qkv).view(1, 3 * H, 1, hd)
            pairs = torch.view_as_complex(qkv[:, : 2 * H].unflatten(-1, (-1, 2)))
            qk = torch.view_as_real(pairs * freqs[pos]).flatten(-2)
            keys[i][:, :, pos : pos + 1] = qk[:, H:]
            values[i][:, :, pos : pos + 1] = qkv[:, 2 * H :]
            k, v = keys[i][:, :, : pos + 1], values[i][:, :, : pos + 1]
            x = x + F.linear(F.scaled_dot_product_attention(qk[:, :H], k, v).view(1, 1, D), w_o)
            h = F.rms_norm(x, (D,), n2, eps)
            x = x + F.linear(F.silu(F.linear(h, w_gate)) * F.linear(h, w_up), w_down)
        return F.linear(F.rms_norm(x, (D,), norm_f, eps), head)

    return step
