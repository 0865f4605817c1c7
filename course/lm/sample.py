"""Sampling: temperature, top-k and top-p (nucleus) filtering, with the KV cache when the model has
one (`model.new_cache`, see protocol.py) and full recomputation of the window otherwise.

One generation loop for the whole course: the reference model's `generate` calls this one.

Past the context. Once the text is longer than the model's `context_length` W, the model sees a
window of the latest tokens: when the window is full, it restarts from the last W // 2 tokens
and grows again (so each step sees between W // 2 and W tokens). With the cache this costs one
refill every W // 2 tokens instead of a full pass every token (a cache cannot drop its first
position: every later key was computed attending to it, and RoPE/learned positions would shift).
The recomputing path uses the very same windows, so `use_cache` changes the speed, not the text.

Randomness. `seed` seeds a CPU `torch.Generator`, and draws are made on the CPU, so a seed gives
the same text on every device. A `generator` may be a CPU one (any model) or one on the model's
own device (draws are then made there, without a copy to the CPU; the text then follows that
device's random stream). Any other generator is a `SamplingError`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from course.lm.errors import SamplingError
from course.lm.tokenizer import ByteTokenizer


def check_sampling_options(
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    *,
    names: tuple[str, str, str] = ("temperature", "top_k", "top_p"),
) -> None:
    """Raise `SamplingError` (a ValueError) naming the argument unless `temperature` is a finite
    number >= 0, `top_k` None or an integer >= 1, and `top_p` None or a number in [0, 1].

    `names` are what the message calls the three (the command line passes its flags).
    """
    if not _is_real(temperature) or not math.isfinite(temperature) or temperature < 0:
        raise SamplingError(f"{names[0]} must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        raise SamplingError(f"{names[1]} must be an integer >= 1, got {top_k!r}")
    if top_p is not None and (not _is_real(top_p) or not 0 <= top_p <= 1):
        raise SamplingError(f"{names[2]} must be a number in [0, 1], got {top_p!r}")


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def filter_logits(
    logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """`logits` `(..., vocab)` with -inf outside the `top_k` largest and outside the smallest set
    of most likely tokens whose probabilities reach `top_p` (Holtzman et al. 2020).

    The most likely token always survives: `top_p=0` keeps it alone (greedy), `top_p=1` and
    `top_k >= vocab` keep everything. Ties at the k-th logit are all kept. Raises
    `SamplingError` (a ValueError) for out-of-range values.
    """
    check_sampling_options(1.0, top_k, top_p)
    return _filter(logits, top_k, top_p)


def _filter(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        # Stable: among equal logits the lowest id ranks first, as it does for argmax.
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens ranked above it already reach top_p; never the first.
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop_sorted[..., 0] = False
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
    """One token id per row of `logits` `(batch, vocab)`, int64 `(batch,)`.

    Temperature 0 is greedy (argmax, the lowest id among ties). Raises `SamplingError` for
    out-of-range options or a generator on another device (see the module docstring).
    """
    check_sampling_options(temperature, top_k, top_p)
    check_generator(generator, logits.device)
    return _next_token(logits, temperature, top_k, top_p, generator)


def _next_token(logits, temperature, top_k, top_p, generator) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    probs = _filter(logits.float() / temperature, top_k, top_p).softmax(-1)
    if generator is None or generator.device.type == "cpu":
        # Draw on the CPU: a CPU generator works for every device and keeps runs reproducible.
        return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    """Raise `SamplingError` unless `generator` is None, a CPU generator, or one on `device`."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise SamplingError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    where = generator.device
    same = where.type == device.type and (
        where.index is None or device.index is None or where.index == device.index
    )
    if where.type != "cpu" and not same:
        raise SamplingError(
            f"generator is on {where} but the model is on {device}: pass a CPU generator "
            f"(works for any model) or one on the model's device"
        )


def has_cache(model: nn.Module) -> bool:
    return callable(getattr(model, "new_cache", None))


def _context_length(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    return int(getattr(config, "context_length", 0)) or 1 << 30


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _prompt_ids(model: nn.Module, prompt) -> tuple[torch.Tensor, bool]:
    idx = torch.as_tensor(prompt)
    if idx.numel() == 0:
        raise SamplingError("the prompt must hold at least one token")
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise SamplingError(f"the prompt must be integer token ids, got {idx.dtype}")
    if idx.dim() not in (1, 2):
        raise SamplingError(
            f"the prompt must be (T,) or (batch, T) ids, got shape {tuple(idx.shape)}"
        )
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    low, high = int(idx.min()), int(idx.max())
    if low < 0 or (vocab is not None and high >= vocab):
        raise SamplingError(f"prompt ids must be in [0, {vocab}), got ids from {low} to {high}")
    squeeze = idx.dim() == 1
    return (idx[None] if squeeze else idx).to(_model_device(model), torch.long), squeeze


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

    Returns int64 `(batch, T + max_new_tokens)` ids (or `(T + new,)` for a 1-D prompt). With the
    KV cache each step feeds one token; without it each step recomputes the window; both see the
    same windows past the context (module docstring). `temperature` 0 is greedy; `top_k`,
    `top_p` filter as in `filter_logits`. Raises `SamplingError` (a ValueError) for an option out
    of range, an empty or out-of-vocabulary prompt, a generator on another device, or a model
    whose logits are not finite (corrupt weights).
    """
    if not _is_int(max_new_tokens) or max_new_tokens < 0:
        raise SamplingError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    check_sampling_options(temperature, top_k, top_p)
    idx, squeeze = _prompt_ids(model, prompt)
    check_generator(generator, idx.device)
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


def _check_finite(logits: torch.Tensor) -> None:
    if not torch.isfinite(logits).all():
        raise SamplingError(
            "the model's logits are not finite (nan or inf): its weights are probably corrupt"
        )


def _recompute_steps(model, idx, max_new_tokens, sampling) -> torch.Tensor:
    window = _context_length(model)
    keep = max(1, window // 2)
    start = max(0, idx.size(1) - window)
    for step in range(max_new_tokens):
        if idx.size(1) - start > window:
            start = idx.size(1) - keep  # the same windows as the cache's refills below
        logits = model(idx[:, start:])[:, -1]
        if step == 0:
            _check_finite(logits)
        idx = torch.cat([idx, _next_token(logits, *sampling)[:, None]], dim=1)
    return idx


def _cached_steps(model, idx, max_new_tokens, sampling) -> torch.Tensor:
    window = _context_length(model)
    keep = max(1, window // 2)
    cache_len = min(idx.size(1) + max_new_tokens, window)
    cache, pending = None, idx
    for step in range(max_new_tokens):
        if cache is None or cache.length + pending.size(1) > cache_len:
            # (Re)fill: the prompt's last window at first, then the last half window once the
            # cache is full, so that refills happen every window/2 tokens rather than every token.
            pending = idx[:, -min(idx.size(1), window) :] if cache is None else idx[:, -keep:]
            cache = model.new_cache(idx.size(0), cache_len)
        logits = model(pending, cache=cache)[:, -1]
        if step == 0:
            _check_finite(logits)
        pending = _next_token(logits, *sampling)[:, None]
        idx = torch.cat([idx, pending], dim=1)
    return idx


def sample_text(
    model: nn.Module,
    prompt: str = "\n",
    max_new_tokens: int = 300,
    *,
    tokenizer: ByteTokenizer | None = None,
    **kwargs,
) -> str:
    """A decoded continuation of `prompt` (the prompt included), e.g. for a look in a notebook.

    `kwargs` are `generate`'s (temperature, top_k, top_p, seed, generator, use_cache).
    """
    tokenizer = tokenizer or ByteTokenizer()
    ids = generate(model, tokenizer.encode(prompt or "\n"), max_new_tokens, **kwargs)
    return tokenizer.decode(ids)
