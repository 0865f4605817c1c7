"""Feed-forward layers and the Transformer block.

    GELU FFN:    W_out gelu(W_in x + b_in) + b_out                    (GPT-2, BERT)
    SwiGLU FFN:  W_down (silu(W_gate x) * (W_up x))                   (PaLM, Llama)

    pre-LN block:   x = x + attn(norm1(x));   x = x + ffn(norm2(x))    (GPT-2 onwards)
    post-LN block:  x = norm1(x + attn(x));   x = norm2(x + ffn(x))    (the 2017 Transformer)

Pre-LN leaves an identity path from the output back to the embeddings, so gradients reach the
first layers at their size; post-LN divides them by every norm on the way and needs warm-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from solutions.kernels.heads import Backend, MultiHeadAttention
from solutions.kernels.norms import make_norm

NormPosition = Literal["pre", "post"]
Activation = Callable[[torch.Tensor], torch.Tensor]


def gelu(x: torch.Tensor) -> torch.Tensor:
    """x * Phi(x) with Phi the standard normal CDF, written with erf (exact, as `F.gelu`)."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def silu(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(x), also called swish."""
    return x * torch.sigmoid(x)


def gelu_ffn(
    x: torch.Tensor,
    W_in: torch.Tensor,
    W_out: torch.Tensor,
    b_in: torch.Tensor | None = None,
    b_out: torch.Tensor | None = None,
    activation: Activation = gelu,
) -> torch.Tensor:
    """`gelu(x @ W_in.T + b_in) @ W_out.T + b_out`; `W_in` is `(d_ff, d_model)`."""
    return F.linear(activation(F.linear(x, W_in, b_in)), W_out, b_out)


def swiglu_ffn(
    x: torch.Tensor,
    W_gate: torch.Tensor,
    W_up: torch.Tensor,
    W_down: torch.Tensor,
    activation: Activation = silu,
) -> torch.Tensor:
    """`(silu(x @ W_gate.T) * (x @ W_up.T)) @ W_down.T`: a gated linear unit with a SiLU gate."""
    return F.linear(activation(F.linear(x, W_gate)) * F.linear(x, W_up), W_down)


def residual_block(
    x: torch.Tensor,
    attn: Callable[[torch.Tensor], torch.Tensor],
    ffn: Callable[[torch.Tensor], torch.Tensor],
    norm1: Callable[[torch.Tensor], torch.Tensor],
    norm2: Callable[[torch.Tensor], torch.Tensor],
    norm_position: NormPosition = "pre",
) -> torch.Tensor:
    """One Transformer block from its four parts, the norms before or after the residual add."""
    if norm_position == "pre":
        x = x + attn(norm1(x))
        return x + ffn(norm2(x))
    if norm_position == "post":
        x = norm1(x + attn(x))
        return norm2(x + ffn(x))
    raise ValueError(f"norm_position must be 'pre' or 'post', got {norm_position!r}")


class GELUFeedForward(nn.Module):
    """`gelu_ffn` with weights `W_in` `(d_ff, d_model)` and `W_out` `(d_model, d_ff)`.

    `fused=True` (the default) uses `F.gelu`, the same function in one pass over memory (the
    tests check they agree); `fused=False` uses the explicit `gelu`.
    """

    def __init__(self, d_model: int, d_ff: int, *, bias: bool = False, fused: bool = True):
        super().__init__()
        self.activation = F.gelu if fused else gelu
        self.W_in = nn.Linear(d_model, d_ff, bias=bias)
        self.W_out = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        W_in, W_out = self.W_in, self.W_out
        return gelu_ffn(x, W_in.weight, W_out.weight, W_in.bias, W_out.bias, self.activation)


class SwiGLUFeedForward(nn.Module):
    """`swiglu_ffn` with `W_gate`, `W_up` `(d_ff, d_model)` and `W_down` `(d_model, d_ff)`.

    `fused` as in `GELUFeedForward`, with `F.silu`.
    """

    def __init__(self, d_model: int, d_ff: int, *, fused: bool = True) -> None:
        super().__init__()
        self.activation = F.silu if fused else silu
        self.W_gate = nn.Linear(d_model, d_ff, bias=False)
        self.W_up = nn.Linear(d_model, d_ff, bias=False)
        self.W_down = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.W_gate.weight, self.W_up.weight, self.W_down.weight
        return swiglu_ffn(x, *weights, self.activation)


def make_ffn(
    kind: str, d_model: int, d_ff: int, *, bias: bool = False, fused: bool = True
) -> nn.Module:
    """`SwiGLUFeedForward` for `"swiglu"` (bias-free, as in Llama), else `GELUFeedForward`."""
    if kind == "swiglu":
        return SwiGLUFeedForward(d_model, d_ff, fused=fused)
    if kind == "gelu":
        return GELUFeedForward(d_model, d_ff, bias=bias, fused=fused)
    raise ValueError(f"ffn must be 'swiglu' or 'gelu', got {kind!r}")


class Dropout(nn.Dropout):
    """`nn.Dropout` that returns its input untouched, without even a no-op kernel call, when it
    is off (evaluation, or p = 0): a cached decoding step is short enough for that to show."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) if self.training and self.p > 0 else x


class TransformerBlock(nn.Module):
    """Attention and feed-forward sublayers, each with a residual connection and a norm.

    `attn_kwargs` given to `forward` (mask, is_causal, rope, attn_bias, cache, layer) go to
    `MultiHeadAttention`. Dropout applies to each sublayer's output before the residual add.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        *,
        n_kv_heads: int | None = None,
        ffn: str = "swiglu",
        norm: str = "rmsnorm",
        norm_position: NormPosition = "pre",
        dropout: float = 0.0,
        bias: bool = False,
        backend: Backend = "reference",
    ) -> None:
        super().__init__()
        if norm_position not in ("pre", "post"):
            raise ValueError(f"norm_position must be 'pre' or 'post', got {norm_position!r}")
        self.norm_position = norm_position
        self.norm1 = make_norm(norm, d_model, bias=bias)
        self.attn = MultiHeadAttention(
            d_model, n_heads, n_kv_heads, bias=bias, dropout=dropout, backend=backend
        )
        self.norm2 = make_norm(norm, d_model, bias=bias)
        self.ffn = make_ffn(ffn, d_model, d_ff, bias=bias)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, **attn_kwargs) -> torch.Tensor:
        return residual_block(
            x,
            lambda h: self.dropout(self.attn(h, **attn_kwargs)),
            lambda h: self.dropout(self.ffn(h)),
            self.norm1,
            self.norm2,
            self.norm_position,
        )
