"""Random probe inputs shared by the lessons' exercises."""

from __future__ import annotations

import torch


def randn(g: torch.Generator, *shape: int, scale: float = 1.0, dtype=torch.float32):
    """Normal entries times `scale`, drawn in float64 and then cast: the same draw in every
    dtype, so a float16 probe holds the float32 probe's values, rounded."""
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)
