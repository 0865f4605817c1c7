"""What the training and sampling harness needs from a model class.

Any class works with `python -m course.lm --model MODULE:CLASS` when:

- `CLASS(config)` builds it from a `course.lm.ModelConfig` and keeps it as `.config`;
- `model(idx)` maps a LongTensor `(batch, T)` of token ids to logits `(batch, T, vocab_size)`;
- optionally, for KV-cached sampling, `model.new_cache(batch_size, max_len)` returns a cache
  (on the model's device and dtype) with an integer `.length` (positions filled so far), and
  `model(idx, cache=cache)` treats `idx` as the tokens that follow the cached ones, appends
  their keys and values, advances `cache.length`, and returns logits for those tokens only.
  A model without `new_cache` is sampled by recomputing the whole window every step.
- optionally, for `bench` only, `model.decode_floor(max_len)` returns `step(token, pos) ->
  logits`, the same one-token cached step written without modules or checks; `bench` then
  prints how much slower the model's own cached step is (the reference model has one).
"""

from __future__ import annotations

import torch
from torch import nn

from course.lm.config import ModelConfig


class InterfaceError(TypeError):
    """A model class does not have the interface the harness needs."""


def check_model_interface(model_cls, config: ModelConfig) -> nn.Module:
    """Build `model_cls(config)` and check one tiny forward pass, with a one-line error if wrong."""
    name = getattr(model_cls, "__qualname__", repr(model_cls))
    try:
        model = model_cls(config)
    except Exception as exc:  # noqa: BLE001 - any failure here is the model's interface
        raise InterfaceError(f"{name}(config) failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise InterfaceError(
            f"{name}(config) returned {type(model).__name__}, not a torch.nn.Module"
        )
    idx = torch.zeros(2, 3, dtype=torch.long)
    try:
        with torch.no_grad():
            logits = model(idx)
    except Exception as exc:  # noqa: BLE001
        raise InterfaceError(
            f"{name}: model(idx) with idx of shape (2, 3) failed: {type(exc).__name__}: {exc}"
        ) from exc
    expected = (2, 3, config.vocab_size)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InterfaceError(
            f"{name}: model(idx) must return logits of shape {expected}, got {got}"
        )
    return model
