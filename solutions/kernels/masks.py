"""Boolean attention masks: True means "this query may attend to this key" (PyTorch's SDPA meaning).

Every mask here is shaped to broadcast against attention scores of shape
`(batch, heads, q_len, k_len)`:

- `causal_mask` and `sliding_window_mask` are `(q_len, past + q_len)`; with a KV cache the
  `q_len` new queries sit at absolute positions `past .. past + q_len - 1` and the keys at
  `0 .. past + q_len - 1`, so the mask is aligned to the bottom-right corner of the scores;
- `padding_mask` is `(batch, 1, 1, k_len)`: it hides padded *keys* from every query;
- `combine_masks` takes the logical and of any of them, broadcasting.
"""

from __future__ import annotations

import torch


def causal_mask(seq_len: int, past: int = 0, *, device=None) -> torch.Tensor:
    """`(seq_len, past + seq_len)` mask with True where key position <= query position.

    Query row `i` is absolute position `past + i`, so it sees keys `0 .. past + i`.
    """
    q_pos = torch.arange(past, past + seq_len, device=device)
    k_pos = torch.arange(past + seq_len, device=device)
    return k_pos[None, :] <= q_pos[:, None]


def sliding_window_mask(seq_len: int, window: int, past: int = 0, *, device=None) -> torch.Tensor:
    """Causal mask that also hides keys `window` or more positions back.

    Each query sees at most `window` keys: itself and the `window - 1` before it
    (Mistral's convention). `window >= past + seq_len` gives back `causal_mask`.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    q_pos = torch.arange(past, past + seq_len, device=device)
    k_pos = torch.arange(past + seq_len, device=device)
    distance = q_pos[:, None] - k_pos[None, :]
    return (distance >= 0) & (distance < window)


def padding_mask(
    lengths: torch.Tensor | list[int], max_len: int | None = None, *, side: str = "right"
) -> torch.Tensor:
    """`(batch, 1, 1, max_len)` mask that is True on the real tokens of each sequence.

    `lengths[b]` tokens of sequence `b` are real; the rest is padding, at the end
    (`side="right"`, the default) or at the start (`side="left"`, usual for batched generation).
    """
    lengths = torch.as_tensor(lengths)
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    pos = torch.arange(max_len, device=lengths.device)
    if side == "right":
        real = pos[None, :] < lengths[:, None]
    elif side == "left":
        real = pos[None, :] >= (max_len - lengths)[:, None]
    else:
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    return real[:, None, None, :]


def combine_masks(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Logical and of the given masks, broadcasting; `None` entries mean "no restriction"."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    out = present[0]
    for m in present[1:]:
        out = out & m
    return out
