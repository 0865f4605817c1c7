"""Learning-rate schedule: linear warm-up, then a cosine decay to a floor."""

from __future__ import annotations

import math


def lr_at(step: int, *, max_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """The learning rate for optimizer step `step` (0-based).

    Warm-up ramps from max_lr/warmup to max_lr over `warmup_steps` steps (Adam's second-moment
    estimates are poor at first, so full-size steps early on can wreck the initialisation);
    then half a cosine from max_lr at `warmup_steps` down to min_lr at `total_steps`.
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))
