"""LayerNorm and RMSNorm over the last dimension.

    LayerNorm(x) = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias     (biased variance)
    RMSNorm(x)   = x / sqrt(mean(x^2) + eps) * weight

eps sits inside the square root (as in PyTorch, and in Llama's RMSNorm). Statistics of a half
precision input are computed in float32 and the result cast back: a sum of squares of d_model
float16 numbers overflows or loses most of its digits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_HALF = (torch.float16, torch.bfloat16)


def _upcast(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in _HALF else x


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Normalise the last dim to mean 0 and variance 1, then scale by `weight` and add `bias`."""
    xf = _upcast(x)
    var, mean = torch.var_mean(xf, dim=-1, keepdim=True, correction=0)
    y = (xf - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.to(x.dtype)


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """Divide the last dim by its root mean square (no centring, no bias), then scale."""
    xf = _upcast(x)
    y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight
    return y.to(x.dtype)


class LayerNorm(nn.Module):
    """`layer_norm` with a learned `weight` (ones) and optional `bias` (zeros).

    `fused=True` (the default) runs `F.layer_norm`, the same function in one pass over memory
    instead of about six (the tests check the two agree); `fused=False` runs `layer_norm`.
    """

    def __init__(self, d_model: int, eps: float = 1e-5, bias: bool = True, fused: bool = True):
        super().__init__()
        self.eps, self.fused = eps, fused
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
        return layer_norm(x, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """`rms_norm` with a learned `weight` (ones); `fused` as in `LayerNorm`, with `F.rms_norm`."""

    def __init__(self, d_model: int, eps: float = 1e-6, fused: bool = True) -> None:
        super().__init__()
        self.eps, self.fused = eps, fused
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        return rms_norm(x, self.weight, self.eps)


def make_norm(kind: str, d_model: int, *, bias: bool = True, fused: bool = True) -> nn.Module:
    """`LayerNorm` for `"layernorm"`, `RMSNorm` for `"rmsnorm"`."""
    if kind == "layernorm":
        return LayerNorm(d_model, bias=bias, fused=fused)
    if kind == "rmsnorm":
        return RMSNorm(d_model, fused=fused)
    raise ValueError(f"norm must be 'layernorm' or 'rmsnorm', got {kind!r}")
