"""Sampling: temperature, top-k and top-p (nucleus) filtering, with the KV cache when the model has
one (`model.new_cache`, see protocol.py) and full recomputation of the window otherwise.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from course.lm.tokenizer import ByteTokenizer


def filter_logits(
    logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """Set to -inf every logit outside the top k, and outside the smallest set of tokens whose
    probabilities sum to at least top_p (the most likely token always survives)."""
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the tokens ranked above it already reach top_p.
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row of `logits` (batch, vocab); temperature 0 is greedy (argmax)."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    probs = logits.softmax(-1)
    # Draw on the CPU: a CPU generator works for every device and keeps runs reproducible.
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)


def has_cache(model: nn.Module) -> bool:
    return callable(getattr(model, "new_cache", None))


def _context_length(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    return int(getattr(config, "context_length", 0)) or 1 << 30


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.inference_mode()  # like no_grad, minus autograd's version bookkeeping: cheaper per op
def generate(
    model: nn.Module,
    prompt: torch.Tensor | Sequence[int],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Continue `prompt` (ids of shape (T,) or (batch, T)) by `max_new_tokens` tokens.

    Returns (batch, T + max_new_tokens) ids (or (T + new,) for a 1-D prompt). With the KV cache
    each step feeds one token; without it each step recomputes the whole window. Past the
    model's context length the window slides: the cache is refilled from the last half-context,
    so a step never attends to more than context_length tokens either way.
    """
    idx = torch.as_tensor(prompt, dtype=torch.long)
    squeeze = idx.dim() == 1
    idx = (idx[None] if squeeze else idx).to(_model_device(model))
    if idx.size(1) == 0:
        raise ValueError("the prompt must hold at least one token")
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    sampling = (temperature, top_k, top_p, generator)
    start_state = generator.get_state() if generator is not None else None
    try:
        if use_cache and has_cache(model):
            try:
                out = _cached_steps(model, idx, max_new_tokens, sampling)
            except (NotImplementedError, TypeError) as exc:
                # An unfinished cache (a stub, or a forward without `cache=`) should not stop
                # sampling: say why, rewind the random stream, and recompute instead.
                message = f"KV cache unusable ({type(exc).__name__}: {exc}); recomputing"
                warnings.warn(message, stacklevel=3)
                if start_state is not None:
                    generator.set_state(start_state)
                out = _recompute_steps(model, idx, max_new_tokens, sampling)
        else:
            out = _recompute_steps(model, idx, max_new_tokens, sampling)
    finally:
        model.train(was_training)
    return out[0] if squeeze else out


def _recompute_steps(model, idx, max_new_tokens, sampling) -> torch.Tensor:
    window = _context_length(model)
    for _ in range(max_new_tokens):
        logits = model(idx[:, -window:])[:, -1]
        idx = torch.cat([idx, next_token(logits, *sampling)[:, None]], dim=1)
    return idx


def _cached_steps(model, idx, max_new_tokens, sampling) -> torch.Tensor:
    window = _context_length(model)
    total = idx.size(1) + max_new_tokens
    cache_len = min(total, window)
    cache, pending = None, idx
    for _ in range(max_new_tokens):
        if cache is None or cache.length + pending.size(1) > cache_len:
            # (Re)fill: the whole prompt at first, then the last half window once the cache is
            # full, so that refills happen every window/2 tokens rather than every token.
            keep = idx.size(1) if cache is None else max(1, window // 2)
            cache = model.new_cache(idx.size(0), cache_len)
            pending = idx[:, -min(keep, window) :]
        logits = model(pending, cache=cache)[:, -1]
        token = next_token(logits, *sampling)[:, None]
        idx = torch.cat([idx, token], dim=1)
        pending = token
    return idx


def sample_text(
    model: nn.Module,
    prompt: str = "\n",
    max_new_tokens: int = 300,
    *,
    tokenizer: ByteTokenizer | None = None,
    **kwargs,
) -> str:
    """A decoded continuation of `prompt` (the prompt included), e.g. for a look in a notebook."""
    tokenizer = tokenizer or ByteTokenizer()
    ids = generate(model, tokenizer.encode(prompt or "\n"), max_new_tokens, **kwargs)
    return tokenizer.decode(ids)
