"""Lesson 08's inspectors: what the checks of the assembled language model look at besides the
values a learner's function returns (`course.calling.Call.inspect`).

A KV cache and a sampler can return the right values while doing the wrong thing: decoding
that ignores the cache and recomputes the prefix gives exactly the logits of decoding with it,
a cache that stores the keys after `repeat_kv` gives the same attention with n_heads / n_kv_heads
times the memory, and a sampler that draws every row from row 0 gives the right frequencies when
every row is the same. These inspectors watch the protocol instead: how many tokens each call of
`lm_forward` is fed and with which cache, the shape of what the cache holds, one draw per row
from that row's own logits, the generator, and the caller's logits left untouched (even an
in-place edit that is undone afterwards bumps the tensor's version counter).

Each returns None or a one-line problem whose text before the first colon names the fault (the
checks match a known mistake by that text).
"""

from __future__ import annotations

from typing import Any

import torch

from course.calling import copy_args, swapped_globals
from course.probe_layers import _returned, inspect_cached_rope

__all__ = ["inspect_block_cache", "inspect_cached_decoding", "inspect_sampler"]


def _pair(entry: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    if type(entry) in (tuple, list) and len(entry) == 2:
        if all(type(t) is torch.Tensor and t.dim() == 4 for t in entry):
            return entry[0], entry[1]
    return None


def _cache_shape_problem(
    entry: Any, layer: int, want: tuple[int, int, int, int], n_heads: int, past: int
) -> str | None:
    """What is wrong with one layer's cache entry, which should hold `want` = (B, n_kv_heads,
    S, head_dim) keys and values; None when it does."""
    pair = _pair(entry)
    if pair is None:
        what = "None" if entry is None else _returned(entry)
        return (
            f"the cache holds no (keys, values) pair for layer {layer}: cache[{layer}] is {what} "
            "after the call. Store the concatenated keys and values back, cache[layer] = (k, v), "
            "two tensors (B, n_kv_heads, S, head_dim)"
        )
    k, v = pair
    B, n_kv, S, d = want
    if k.shape != v.shape:
        return (
            f"the cache's keys and values differ in shape: layer {layer} holds keys "
            f"{tuple(k.shape)} and values {tuple(v.shape)}, where both are {want}"
        )
    if tuple(k.shape) == want:
        return None
    if k.shape[1] == n_heads != n_kv and (k.shape[0], k.shape[2], k.shape[3]) == (B, S, d):
        return (
            f"the cache stores the repeated keys and values: layer {layer} holds "
            f"{tuple(k.shape)}, n_heads = {n_heads} heads, where the cache keeps the n_kv_heads "
            f"= {n_kv} heads of keys and values, {want}. Store k, v before repeat_kv (repeat "
            "them only for the attention): grouped-query attention's memory saving is the cache"
        )
    if k.shape[2] == S - past and past:
        return (
            f"the cache keeps only this call's keys and values: layer {layer} holds "
            f"{tuple(k.shape)} after a call of {S - past} tokens behind {past} cached ones, "
            f"where it should hold all {S}, {want}. Store the concatenation, cache[layer] = "
            "(torch.cat([past_k, k], dim=2), ...)"
        )
    if k.shape[2] == past and past:
        return (
            f"the cache did not grow: layer {layer} still holds {tuple(k.shape)} after a call "
            f"of {S - past} new tokens, where it should hold {want}. Store the concatenated keys "
            "and values back, cache[layer] = (k, v)"
        )
    return (
        f"the cache holds keys and values of the wrong shape: layer {layer} holds "
        f"{tuple(k.shape)}, where (B, n_kv_heads, S, head_dim) = {want} is expected"
    )


# ---------------------------------------------------------------- block_forward with a cache


def inspect_block_cache(fn, args, kwargs, out) -> str | None:
    """After block_forward(x, params, layer, n_heads, n_kv_heads, cos, sin, cache), cache[layer]
    holds the keys and values of every position so far, (B, n_kv_heads, past + T, head_dim).
    The probe's cache has an entry for every layer (as in a real decoding, all of the same
    length `past`); the other layers' entries tell the inspector what `past` was."""
    x, _params, layer, n_heads, n_kv_heads = args[:5]
    cache = args[7] if len(args) > 7 else kwargs.get("cache")
    if not isinstance(cache, list):
        return None
    others = [_pair(e) for i, e in enumerate(cache) if i != layer]
    past = next((p[0].shape[2] for p in others if p is not None), 0)
    B, T, D = x.shape
    want = (B, n_kv_heads, past + T, D // n_heads)
    return _cache_shape_problem(cache[layer], layer, want, n_heads, past)


# ---------------------------------------------------------------- cached_logits


def inspect_cached_decoding(fn, args, kwargs, out) -> str | None:
    """cached_logits(idx, params, n_heads, n_kv_heads, n_prompt) must decode through the
    learner's lm_forward as the exercise says: one call with the first n_prompt tokens (the
    prefill), then one call per later token, all with the same cache, a list of one entry per
    layer that holds (B, n_kv_heads, S, head_dim) keys and values after each call. Equal logits
    alone cannot tell this from recomputing the prefix at every step, or from no cache at all.
    A learner rope_cos_sin that fails lesson 05's check is named first (course.probe_layers)."""
    problem = inspect_cached_rope(fn, args, kwargs, out)
    if problem:
        return problem
    namespace = getattr(fn, "__globals__", {}) or {}
    forward = namespace.get("lm_forward")
    if not callable(forward):
        return None
    idx, params, n_heads, n_kv_heads, n_prompt = args[:5]
    n_kv_heads = n_kv_heads or n_heads
    n_layers = sum(1 for name in params if name.endswith(".norm1.weight"))
    B, T = idx.shape
    head_dim = params["tok_emb.weight"].shape[1] // n_heads
    calls: list[tuple[int, Any, str | None]] = []

    def watching(tokens, *a, **k):
        cache = k.get("cache", a[3] if len(a) > 3 else None)
        result = forward(tokens, *a, **k)
        fed = tokens.shape[1] if type(tokens) is torch.Tensor and tokens.dim() == 2 else -1
        seen = sum(c[0] for c in calls) + fed
        shape = None
        if isinstance(cache, list) and len(cache) == n_layers:
            want = (B, n_kv_heads, seen, head_dim)
            shape = next(
                (
                    p
                    for layer, entry in enumerate(cache)
                    if (p := _cache_shape_problem(entry, layer, want, n_heads, seen - fed))
                ),
                None,
            )
        calls.append((fed, cache, shape))
        return result

    with swapped_globals(fn, {"lm_forward": watching}):
        fn(*copy_args(args), **copy_args(kwargs))
    return _decoding_problem(calls, n_prompt, T, n_layers)


def _decoding_problem(calls: list, n_prompt: int, T: int, n_layers: int) -> str | None:
    fed = [c[0] for c in calls]
    if not calls:
        return (
            "cached_logits never calls your lm_forward: decode through it, "
            "lm_forward(idx[:, :n_prompt], ..., cache=cache), then one call per later token"
        )
    for i, (n, cache, _) in enumerate(calls, start=1):
        if cache is None:
            return (
                f"cached_logits calls lm_forward without the cache: call {i} of {len(calls)} "
                f"({n} tokens) has cache=None. Every call gets the same cache "
                "(lm_forward(..., cache=cache)): it is what lets a new token see the earlier ones "
                "without recomputing them"
            )
    if any(c[1] is not calls[0][1] for c in calls):
        return (
            "cached_logits passes a new cache to a later call: make one cache before the "
            "prefill and pass that same list to every call, so that it grows token by token"
        )
    cache = calls[0][1]
    if not isinstance(cache, list) or len(cache) != n_layers:
        what = f"{len(cache)} entries" if isinstance(cache, list) else _returned(cache)
        return (
            f"cached_logits's cache is not one entry per layer: it has {what} for a model of "
            f"{n_layers} layers. Make it [None] * n_layers (n_layers: the number of "
            "'.norm1.weight' entries; not n_heads)"
        )
    if fed[0] != n_prompt:
        return (
            f"cached_logits does not feed the prompt in one call: its first lm_forward call gets "
            f"{fed[0]} token(s) where the prompt has n_prompt = {n_prompt}. The prefill is one "
            "call with idx[:, :n_prompt] (calls fed: " + ", ".join(map(str, fed[:8])) + ")"
        )
    if fed[1:] != [1] * (T - n_prompt):
        return (
            f"cached_logits does not decode one token per call after the prompt: its calls fed "
            f"{', '.join(map(str, fed[:8]))} token(s) for a prompt of {n_prompt} and "
            f"{T - n_prompt} more tokens. After the prefill each call gets the new token alone, "
            "idx[:, t:t + 1]: the cache holds everything before it"
        )
    return next((c[2] for c in calls if c[2]), None)


# ---------------------------------------------------------------- sample_next


def inspect_sampler(fn, args, kwargs, out) -> str | None:
    """sample_frequencies' own `sample_next` (from the notebook) must return int64 (B,) token
    ids as a tensor, draw each row from its own logits, leave the logits untouched (not even
    changed and changed back: the version counter sees it), draw at random (not the argmax at
    temperature 1), and with the generator it is given: the same seed the same tokens."""
    sample_next = (getattr(fn, "__globals__", {}) or {}).get("sample_next")
    if not callable(sample_next):
        return None
    logits, temperature, top_p = args[0], args[1], args[2]
    rows = logits.repeat(64, 1)
    given, version = rows.clone(), rows._version
    first = sample_next(rows, temperature, top_p, generator=torch.Generator().manual_seed(0))
    if type(first) is not torch.Tensor:
        return (
            f"sample_next returned {_returned(first)}, where a torch.Tensor of token ids is "
            "expected: keep it a tensor (no .numpy(), .tolist() or .item())"
        )
    if rows._version != version or not torch.equal(rows, given):
        return (
            "sample_next changed the logits it was given (an in-place operation such as "
            "logits.div_(t), logits /= t or masked_fill_, even one undone afterwards): the "
            "caller's tensor must stay as it was. Compute a new tensor, logits / temperature"
        )
    if tuple(first.shape) != (64,):
        hint = (
            " (squeeze the last dim: multinomial returns (B, 1))" if first.shape == (64, 1) else ""
        )
        return (
            f"sample_next returned shape {tuple(first.shape)} for 64 rows of logits, where "
            f"one id per row, (B,) = (64,), is expected{hint}"
        )
    if first.dtype != torch.int64:
        return (
            f"sample_next returned {str(first.dtype).removeprefix('torch.')} token ids, where "
            "int64 (torch.long, what argmax and multinomial give) is expected: drop the .to(...)"
        )
    return _own_rows_problem(sample_next, logits.shape[-1], temperature, top_p) or _random_problem(
        sample_next, rows
    )


def _own_rows_problem(sample_next, V: int, temperature, top_p) -> str | None:
    """Rows that differ: row i puts (almost) all its probability on token i % V, at any
    temperature and top_p of the probe (a gap of 50 in the logits)."""
    peaks = torch.arange(64) % V
    rows = torch.nn.functional.one_hot(peaks, V).to(torch.float32) * 50.0
    got = sample_next(rows, temperature, top_p, generator=torch.Generator().manual_seed(0))
    if type(got) is not torch.Tensor or got.shape != peaks.shape:
        return None
    if not torch.equal(got.long(), peaks):
        row = int((got.long() != peaks).nonzero()[0])
        return (
            "sample_next does not draw each row from its own logits: row "
            f"{row}, whose logits put all the probability on token {int(peaks[row])}, got token "
            f"{int(got[row])}. Draw one token per row from that row's probabilities, "
            "torch.multinomial(probs, 1, generator=generator) on the whole (B, V) tensor, "
            "not from probs[0]"
        )
    return None


def _random_problem(sample_next, rows: torch.Tensor) -> str | None:
    """On uniform logits at temperature 1 (every token possible) the draws must vary, repeat
    with the same seed and change with another."""
    uniform = torch.zeros_like(rows)
    draws = [
        sample_next(uniform.clone(), 1.0, 1.0, generator=torch.Generator().manual_seed(s))
        for s in (0, 0, 1)
    ]
    if not all(type(d) is torch.Tensor and d.shape == (rows.shape[0],) for d in draws):
        return None
    if all(bool((d == d[0]).all()) for d in draws) and torch.equal(draws[0], draws[2]):
        return (
            f"sample_next does not sample: on uniform logits at temperature 1 and top_p 1 it "
            f"returned token {int(draws[0][0])} for all {rows.shape[0]} rows, with any seed. "
            "Draw from the distribution, torch.multinomial(probs, 1, generator=generator); "
            "argmax is only for temperature 0 or top_p 0"
        )
    if not torch.equal(draws[0], draws[1]) or torch.equal(draws[0], draws[2]):
        return (
            "sample_next ignores the generator it is given: the same seed must give the same "
            "tokens and another seed other tokens. Pass it on: torch.multinomial(probs, 1, "
            "generator=generator)"
        )
    return None
