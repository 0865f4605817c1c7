"""LayerNorm and RMSNorm over the last dimension.

    LayerNorm(x) = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias     (biased variance)
    RMSNorm(x)   = x / sqrt(mean(x^2) + eps) * weight

LayerNorm: Ba et al. 2016; RMSNorm: Zhang & Sennrich 2019. eps sits inside the square root (as in
PyTorch, and in Llama's RMSNorm); its default, 1e-5, is PyTorch's LayerNorm default, Llama 2's
`rms_norm_eps` (its Hugging Face config.json) and CS336's. Statistics of a half precision input
are computed in float32 and the result cast back to the input's dtype: a sum of squares of
d_model float16 numbers overflows or loses most of its digits.

Shapes: any `(..., d_model)`; `weight` and `bias` are `(d_model,)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from solutions.kernels.module import Module

_HALF = (torch.float16, torch.bfloat16)


def _upcast(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in _HALF else x


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Normalise the last dim to mean 0 and (biased) variance 1, then scale by `weight` and add
    `bias`. Same shape and dtype as `x`; half precision is computed in float32."""
    xf = _upcast(x)
    var, mean = torch.var_mean(xf, dim=-1, keepdim=True, correction=0)
    y = (xf - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.to(x.dtype)


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """Divide the last dim by its root mean square `sqrt(mean(x^2) + eps)` (no centring, no
    bias), then scale by `weight`. Same shape and dtype as `x`; half precision in float32."""
    xf = _upcast(x)
    y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight
    return y.to(x.dtype)


class LayerNorm(Module):
    """`layer_norm` with a learned `weight` (ones) and optional `bias` (zeros).

    `fused=True` (the default) runs `F.layer_norm`, the same function in one pass over memory
    instead of about six (the tests check the two agree); `fused=False` runs `layer_norm`.
    """

    def __init__(self, d_model: int, eps: float = 1e-5, bias: bool = True, fused: bool = True):
        super().__init__()
        self.eps, self.fused, self.normalized_shape = eps, fused, (d_model,)
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return layer_norm(x, self.weight, self.bias, self.eps)


class RMSNorm(Module):
    """`rms_norm` with a learned `weight` (ones); `fused` as in `LayerNorm`, with `F.rms_norm`."""

    def __init__(self, d_model: int, eps: float = 1e-5, fused: bool = True) -> None:
        super().__init__()
        self.eps, self.fused, self.normalized_shape = eps, fused, (d_model,)
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)
        return rms_norm(x, self.weight, self.eps)


def make_norm(
    kind: str, d_model: int, *, eps: float = 1e-5, bias: bool = True, fused: bool = True
) -> nn.Module:
    """`LayerNorm` for `"layernorm"` (with a bias if `bias`), `RMSNorm` for `"rmsnorm"` (never a
    bias). Raises ValueError for another kind."""
    if kind == "layernorm":
        return LayerNorm(d_model, eps, bias=bias, fused=fused)
    if kind == "rmsnorm":
        return RMSNorm(d_model, eps, fused=fused)
    raise ValueError(f"norm must be 'layernorm' or 'rmsnorm', got {kind!r}")
