"""Batches of random windows from a token stream (nanoGPT's sampler, seeded)."""

from __future__ import annotations

import torch


def random_windows(
    data: torch.Tensor,
    batch_size: int,
    context_length: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_size` windows of `context_length + 1` tokens at random offsets, as (inputs, targets).

    Targets are the inputs shifted left by one: position t is trained to predict token t + 1.
    """
    if len(data) <= context_length:
        raise ValueError(
            f"a split of {len(data)} tokens is too short for windows of {context_length + 1}"
        )
    starts = torch.randint(len(data) - context_length, (batch_size,), generator=generator)
    offsets = torch.arange(context_length + 1)
    windows = data[starts[:, None] + offsets].long()
    x, y = windows[:, :-1], windows[:, 1:]
    device = torch.device(device)
    if device.type == "cuda":
        # Pinned host memory lets the copy overlap with the previous step's kernels.
        return (
            x.pin_memory().to(device, non_blocking=True),
            y.pin_memory().to(device, non_blocking=True),
        )
    return x.to(device), y.to(device)
