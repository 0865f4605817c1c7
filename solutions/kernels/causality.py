"""The perturbation leak test: does any output of a sequence layer see a later token?

A layer `x (batch, seq, d) -> (batch, seq, d')` is causal if and only if, for every position t,
changing token t changes no output at a position before t. These two functions test exactly
that, on one input, treating the layer as a black box (attention or not). The test is the one
lesson 03 teaches; `solutions/kernels/masks.py` builds the masks that make attention causal.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["PERTURBATION", "CHANGED_ATOL", "changed_positions", "leaks_future"]

# How much every feature of the probed token is moved, and how far an output must move to
# count as changed: far above float32 rounding of the layers tested (about 1e-7), far below
# the change any real dependence makes.
PERTURBATION = 1.0
CHANGED_ATOL = 1e-6

Layer = Callable[[torch.Tensor], torch.Tensor]


def changed_positions(layer: Layer, x: torch.Tensor, t: int) -> torch.Tensor:
    """Which output positions move when token `t` of `x` is perturbed.

    Args:
        layer: a function `(batch, seq, d) -> (batch, seq, d')`, called twice.
        x: the input, float tensor `(batch, seq, d)`; not modified (a copy is perturbed).
        t: the position perturbed, `0 <= t < seq`: every feature of token t gets
            `PERTURBATION` added.

    Returns:
        bool tensor `(seq,)`: True where some output (any batch element, any feature) moved by
        more than `CHANGED_ATOL`.

    Raises:
        IndexError: `t` is not a position of `x`.
    """
    perturbed = x.clone()
    perturbed[..., t, :] += PERTURBATION
    moved = (layer(perturbed) - layer(x)).abs().amax(dim=-1)  # (batch, seq)
    return moved.reshape(-1, x.shape[-2]).amax(dim=0) > CHANGED_ATOL


def leaks_future(layer: Layer, x: torch.Tensor) -> bool:
    """True when, for some token t, an output at a position before t moves as t is perturbed.

    Every token is tried, the last one included (a layer that reads only the final token
    everywhere is caught by nothing else); position t itself may change. `x`: `(batch, seq, d)`.
    Returns a Python bool.
    """
    return any(bool(changed_positions(layer, x, t)[:t].any()) for t in range(x.shape[-2]))
