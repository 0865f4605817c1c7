"""Feed-forward layers and the Transformer block.

    GELU FFN:    W_out gelu(W_in x + b_in) + b_out                    (GPT-2, BERT)
    SwiGLU FFN:  W_down (silu(W_gate x) * (W_up x))                   (Shazeer 2020; PaLM, Llama)

    pre-LN block:   x = x + attn(norm1(x));           x = x + ffn(norm2(x))      (GPT-2 onwards)
    post-LN block:  x = norm1(x + attn(x));           x = norm2(x + ffn(x))      (Vaswani 2017)
    DeepNorm:       x = norm1(alpha x + attn(x));     x = norm2(alpha x + ffn(x))  (Wang 2022)

Pre-LN leaves an identity path from the output back to the embeddings, so gradients reach the
first layers at their size; post-LN divides them by every norm on the way and needs warm-up.
DeepNorm keeps post-LN but weights the residual by `alpha > 1` and shrinks the initial weights of
the sublayers by `beta < 1` (`deepnorm_constants`, `deepnorm_init_`), which bounds the update of
every layer and trains post-LN stacks hundreds of layers deep.

Shapes: `(batch, seq, d_model)` in and out; weights `(d_out, d_in)` as in `nn.Linear`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from solutions.kernels.heads import Backend, MultiHeadAttention
from solutions.kernels.module import Linear, Module
from solutions.kernels.norms import make_norm
from solutions.kernels.positions import RopeLayout

NormPosition = Literal["pre", "post"]
GeluApproximate = Literal["none", "tanh"]
Sublayer = Callable[[torch.Tensor], torch.Tensor]


def gelu(x: torch.Tensor, approximate: GeluApproximate = "none") -> torch.Tensor:
    """GELU (Hendrycks & Gimpel 2016): `x * Phi(x)`, Phi the standard normal CDF.

    `approximate="none"` is exact, written with erf (as `F.gelu`); `"tanh"` is the paper's
    approximation `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, the one GPT-2 was trained
    with (`gelu_new` in Hugging Face's GPT-2, `F.gelu(approximate="tanh")`). The two differ by
    less than 1e-3. Same shape and dtype as `x`; raises ValueError for another `approximate`.
    """
    if approximate == "none":
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if approximate == "tanh":
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    raise ValueError(f"gelu_approximate must be 'none' or 'tanh', got {approximate!r}")


def silu(x: torch.Tensor) -> torch.Tensor:
    """`x * sigmoid(x)`, also called swish (Ramachandran et al. 2017)."""
    return x * torch.sigmoid(x)


def gelu_ffn(
    x: torch.Tensor,
    W_in: torch.Tensor,
    W_out: torch.Tensor,
    b_in: torch.Tensor | None = None,
    b_out: torch.Tensor | None = None,
    approximate: GeluApproximate = "none",
) -> torch.Tensor:
    """`gelu(x @ W_in.T + b_in) @ W_out.T + b_out` for `x` `(..., d_model)`.

    `W_in` is `(d_ff, d_model)`, `W_out` `(d_model, d_ff)`, biases `(d_ff,)` and `(d_model,)`.
    """
    return F.linear(gelu(F.linear(x, W_in, b_in), approximate), W_out, b_out)


def swiglu_ffn(
    x: torch.Tensor, W_gate: torch.Tensor, W_up: torch.Tensor, W_down: torch.Tensor
) -> torch.Tensor:
    """`(silu(x @ W_gate.T) * (x @ W_up.T)) @ W_down.T`: a gated linear unit with a SiLU gate
    (Shazeer 2020). `W_gate`, `W_up` are `(d_ff, d_model)`, `W_down` `(d_model, d_ff)`."""
    return F.linear(silu(F.linear(x, W_gate)) * F.linear(x, W_up), W_down)


def residual_block(
    x: torch.Tensor,
    attn: Sublayer,
    ffn: Sublayer,
    norm1: Sublayer,
    norm2: Sublayer,
    norm_position: NormPosition = "pre",
    alpha: float = 1.0,
) -> torch.Tensor:
    """One Transformer block from its four parts, the norms before (`"pre"`) or after (`"post"`)
    the residual add. `alpha` weights the residual of a post-LN block: 1 is the 2017 block,
    `deepnorm_constants(n_layers).alpha` is DeepNorm. Raises ValueError for another
    `norm_position`, or `alpha != 1` with pre-LN (where DeepNorm is not defined)."""
    if norm_position == "pre":
        if alpha != 1.0:
            raise ValueError("alpha (DeepNorm) weights the residual of post-LN blocks only")
        x = x + attn(norm1(x))
        return x + ffn(norm2(x))
    if norm_position == "post":
        x = norm1(alpha * x + attn(x))
        return norm2(alpha * x + ffn(x))
    raise ValueError(f"norm_position must be 'pre' or 'post', got {norm_position!r}")


class DeepNormConstants(NamedTuple):
    alpha: float  # weight of the residual inside the norm
    beta: float  # gain of the initial value, output and feed-forward weights


def deepnorm_constants(n_layers: int) -> DeepNormConstants:
    """DeepNorm's `alpha = (2N)^(1/4)` and `beta = (8N)^(-1/4)` for a decoder-only (or
    encoder-only) stack of `N = n_layers` blocks (Wang et al. 2022, "DeepNet: Scaling
    Transformers to 1,000 Layers", arXiv:2203.00555, the table of constants; encoder-decoder
    models use other values). Raises ValueError for `n_layers < 1`."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be positive, got {n_layers}")
    return DeepNormConstants((2 * n_layers) ** 0.25, (8 * n_layers) ** -0.25)


@torch.no_grad()
def deepnorm_init_(
    block: TransformerBlock, beta: float, generator: torch.Generator | None = None
) -> None:
    """DeepNorm's initialisation of a `TransformerBlock`, in place (Wang et al. 2022): Xavier
    normal with gain `beta` for the value and output projections and every feed-forward matrix,
    gain 1 for the query and key projections. Biases are set to zero."""
    attn = block.attn
    q_rows = attn.n_heads * attn.head_dim
    kv_rows = attn.n_kv_heads * attn.head_dim
    W_q, W_k, W_v = attn.W_qkv.weight.split([q_rows, kv_rows, kv_rows])
    for weight, gain in [(W_q, 1.0), (W_k, 1.0), (W_v, beta), (attn.W_o.weight, beta)]:
        _xavier_normal_(weight, gain, generator)
    for name, p in block.ffn.named_parameters():
        if name.endswith("weight"):
            _xavier_normal_(p, beta, generator)
    for name, p in block.named_parameters():
        if name.endswith("bias") and not name.startswith("norm"):
            p.zero_()


def _xavier_normal_(weight: torch.Tensor, gain: float, generator) -> None:
    fan_out, fan_in = weight.shape
    weight.normal_(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator=generator)


class GELUFeedForward(Module):
    """`gelu_ffn` with weights `W_in` `(d_ff, d_model)` and `W_out` `(d_model, d_ff)`.

    `approximate` picks exact (`"none"`) or tanh GELU (`"tanh"`, GPT-2's). `fused=True` (the
    default) uses `F.gelu`, the same function in one pass over memory (the tests check they
    agree); `fused=False` uses the explicit `gelu`.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        *,
        bias: bool = False,
        approximate: GeluApproximate = "none",
        fused: bool = True,
    ) -> None:
        super().__init__()
        gelu(torch.zeros(()), approximate)  # a bad value fails here, not at the first forward
        self.approximate, self.fused = approximate, fused
        self.W_in = Linear(d_model, d_ff, bias=bias)
        self.W_out = Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(x, self.W_in.weight, self.W_in.bias)
        h = F.gelu(h, approximate=self.approximate) if self.fused else gelu(h, self.approximate)
        return F.linear(h, self.W_out.weight, self.W_out.bias)


class SwiGLUFeedForward(Module):
    """`swiglu_ffn` with `W_gate`, `W_up` `(d_ff, d_model)` and `W_down` `(d_model, d_ff)`.

    `fused` as in `GELUFeedForward`, with `F.silu`.
    """

    def __init__(self, d_model: int, d_ff: int, *, fused: bool = True) -> None:
        super().__init__()
        self.activation = F.silu if fused else silu
        self.W_gate = Linear(d_model, d_ff, bias=False)
        self.W_up = Linear(d_model, d_ff, bias=False)
        self.W_down = Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.activation(F.linear(x, self.W_gate.weight))
        return F.linear(gate * F.linear(x, self.W_up.weight), self.W_down.weight)


def make_ffn(
    kind: str,
    d_model: int,
    d_ff: int,
    *,
    bias: bool = False,
    gelu_approximate: GeluApproximate = "none",
    fused: bool = True,
) -> nn.Module:
    """`SwiGLUFeedForward` for `"swiglu"` (bias-free, as in Llama), `GELUFeedForward` for
    `"gelu"`. Raises ValueError for another kind."""
    if kind == "swiglu":
        return SwiGLUFeedForward(d_model, d_ff, fused=fused)
    if kind == "gelu":
        return GELUFeedForward(d_model, d_ff, bias=bias, approximate=gelu_approximate, fused=fused)
    raise ValueError(f"ffn must be 'swiglu' or 'gelu', got {kind!r}")


class Dropout(nn.Dropout):
    """`nn.Dropout` that, when it is off (evaluation, or p = 0), returns its input at once: not
    even the module-call machinery runs (so no hooks either), since a cached decoding step is
    short enough for seven no-op module calls per token to show. On, it is `nn.Dropout`."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return super().__call__(x) if self.training and self.p > 0 else x


class TransformerBlock(Module):
    """Attention and feed-forward sublayers, each with a residual connection and a norm.

    A decoder block: causal unless built with `is_causal=False` (an encoder block). Each choice
    is a constructor argument named like its `ModelConfig` field: `norm` and `norm_eps`,
    `norm_position`, `ffn` and `gelu_approximate`, `rope_layout`, `bias` (linear and norm
    biases), `n_kv_heads`, `backend`. Dropout applies to each sublayer's output before the
    residual add.

    `forward(x, *, rope, attn_mask, attn_bias, cache, layer)` passes everything after `x` to
    `MultiHeadAttention.forward`; `x` is `(batch, seq, d_model)` and so is the result.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        *,
        n_kv_heads: int | None = None,
        ffn: str = "swiglu",
        gelu_approximate: GeluApproximate = "none",
        norm: str = "rmsnorm",
        norm_eps: float = 1e-5,
        norm_position: NormPosition = "pre",
        rope_layout: RopeLayout = "interleaved",
        is_causal: bool = True,
        dropout: float = 0.0,
        bias: bool = False,
        backend: Backend = "reference",
    ) -> None:
        super().__init__()
        if norm_position not in ("pre", "post"):
            raise ValueError(f"norm_position must be 'pre' or 'post', got {norm_position!r}")
        self.pre_norm = norm_position == "pre"
        self.norm_position = norm_position
        self.norm1 = make_norm(norm, d_model, eps=norm_eps, bias=bias)
        self.attn = MultiHeadAttention(
            d_model,
            n_heads,
            n_kv_heads,
            bias=bias,
            dropout=dropout,
            backend=backend,
            rope_layout=rope_layout,
            is_causal=is_causal,
        )
        self.norm2 = make_norm(norm, d_model, eps=norm_eps, bias=bias)
        self.ffn = make_ffn(ffn, d_model, d_ff, bias=bias, gelu_approximate=gelu_approximate)
        self.dropout = Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        *,
        rope: tuple[torch.Tensor, torch.Tensor] | torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        attn_bias: torch.Tensor | None = None,
        cache=None,
        layer: int = 0,
    ) -> torch.Tensor:
        # `residual_block` written out: the same computation without two closures per call,
        # which a cached decoding step (one token, tiny tensors) would notice. For the same
        # reason residual dropout runs in training only: evaluation skips even the call.
        train = self.training
        h = self.norm1(x) if self.pre_norm else x
        h = self.attn(
            h, rope=rope, attn_mask=attn_mask, attn_bias=attn_bias, cache=cache, layer=layer
        )
        if train:
            h = self.dropout(h)
        if self.pre_norm:
            x = x + h
            h = self.ffn(self.norm2(x))
            return x + (self.dropout(h) if train else h)
        x = self.norm1(x + h)
        h = self.ffn(x)
        return self.norm2(x + (self.dropout(h) if train else h))
