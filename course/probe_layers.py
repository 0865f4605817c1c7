"""Non-secret callables that hidden tests hand to a learner's function, named by `judge.Fn`.

Nothing here answers an exercise. These are the *subjects* of tests a learner writes: lesson
03's leak test receives a sequence layer `x (batch, seq, d) -> (batch, seq, d)` and must say
whether any output can see a later token. Some layers below are correct causal layers, the
others leak on purpose, each in a way real code has leaked.

Every layer is deterministic: its projection weights come from a fixed seed and the width.
Lesson 07's decoding functions are run on `ToyLM` instances, tiny language models with fixed
weights that take a key/value cache.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from course.stand_ins import merge_heads, split_heads

__all__ = [
    "causal_self_attention",
    "causal_running_mean",
    "position_wise_mlp",
    "bidirectional_self_attention",
    "peeking_self_attention",
    "sequence_normalised_attention",
    "last_token_broadcast",
    "peek_two_ahead",
    "odd_sequences_leak",
    "ignores_feature_zero",
    "GrowingCache",
    "ToyLM",
    "WatchingLM",
    "ChunkWatchingLM",
    "inspect_cache_write",
    "inspect_cached_attention",
    "inspect_int_bytes",
    "inspect_tensor_result",
    "inspect_float_pair",
    "inspect_caller_tensors",
    "inspect_python_int",
    "inspect_init_plan",
    "inspect_lm_forward",
    "inspect_cached_rope",
    "inspect_split_view",
    "inspect_merge_view",
    "llama_rope",
    "toy_lm",
    "toy_lm_mqa",
    "toy_lm_mha",
    "toy_lm_float64",
]


def _projections(x: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """q, k, v = x W^T for three fixed random (d, d) matrices."""
    d = x.shape[-1]
    g = torch.Generator().manual_seed(1000 + 7 * d + seed)
    w = torch.randn(3, d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    return tuple(x @ w[i].to(x.dtype).T for i in range(3))


def _attend(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    q, k, v = _projections(x)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def causal_self_attention(x: torch.Tensor) -> torch.Tensor:
    """A correct causal self-attention layer (PyTorch's SDPA with `is_causal=True`)."""
    q, k, v = _projections(x)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def causal_running_mean(x: torch.Tensor) -> torch.Tensor:
    """Position t outputs the mean of tokens 0..t: causal without being attention."""
    counts = torch.arange(1, x.shape[-2] + 1, dtype=x.dtype).unsqueeze(-1)
    return x.cumsum(dim=-2) / counts


def position_wise_mlp(x: torch.Tensor) -> torch.Tensor:
    """Each position on its own (a feed-forward block): nothing can leak."""
    hidden, _, _ = _projections(x, seed=1)
    return torch.tanh(hidden) * 2.0


def bidirectional_self_attention(x: torch.Tensor) -> torch.Tensor:
    """Leaks everything: an encoder's attention with the causal mask forgotten."""
    return _attend(x, None)


def peeking_self_attention(x: torch.Tensor) -> torch.Tensor:
    """Leaks one step: the causal mask built with its diagonal one too high (tril(diagonal=1))."""
    t = x.shape[-2]
    return _attend(x, torch.ones(t, t, dtype=torch.bool).tril(diagonal=1))


def sequence_normalised_attention(x: torch.Tensor) -> torch.Tensor:
    """Causal attention after normalising over the *sequence* axis: the mean and spread of
    every token, future ones included, reach every position (a BatchNorm-over-time bug)."""
    mean = x.mean(dim=-2, keepdim=True)
    std = x.std(dim=-2, keepdim=True) + 1e-5
    return causal_self_attention((x - mean) / std)


def last_token_broadcast(x: torch.Tensor) -> torch.Tensor:
    """Causal attention plus a 'summary' read from the final token (e.g. a pooled classifier
    token added back to every position): only perturbing the *last* token reveals it."""
    return causal_self_attention(x) + 0.5 * x[..., -1:, :]


def peek_two_ahead(x: torch.Tensor) -> torch.Tensor:
    """Leaks two steps: position i adds token i + 2 (a target shifted by two instead of one).
    Perturbing token t moves position t - 2, never t - 1: a test that looks only one position
    back misses it."""
    ahead = F.pad(x[..., 2:, :], (0, 0, 0, 2))
    return causal_running_mean(x) + 0.5 * ahead


def odd_sequences_leak(x: torch.Tensor) -> torch.Tensor:
    """Leaks in batch elements 1, 3, ... only (a bug that depends on which sequence it sees,
    e.g. on its padding): batch element 0 alone looks causal. `x`: (batch, seq, d)."""
    odd = (torch.arange(x.shape[0]) % 2 == 1).to(x.dtype)[:, None, None]
    return causal_self_attention(x) + 0.5 * odd * x[..., -1:, :]


def ignores_feature_zero(x: torch.Tensor) -> torch.Tensor:
    """A causal running mean of features 1.. only: input feature 0 is ignored and output
    feature 0 is always 0, so perturbing (or watching) feature 0 alone sees nothing move."""
    keep = torch.ones(x.shape[-1], dtype=x.dtype)
    keep[0] = 0
    return causal_running_mean(x * keep)


# Lesson 06: sublayers and norms handed to a learner's residual blocks. Each is a different
# function, so that a block which calls the wrong one (norm1 twice, ffn before attn) shows.


def mixing_sublayer(x: torch.Tensor) -> torch.Tensor:
    """An 'attention' stand-in for a residual block: each token plus the mean of the tokens up
    to it (a causal running mean), projected by a fixed matrix. `x`: (..., seq, d)."""
    q, _, _ = _projections(x, seed=2)
    return 0.5 * q + 0.5 * causal_running_mean(q)


def mlp_sublayer(x: torch.Tensor) -> torch.Tensor:
    """A feed-forward stand-in: tanh of a fixed projection, per token. `x`: (..., d)."""
    _, hidden, _ = _projections(x, seed=3)
    return torch.tanh(hidden)


def unit_layer_norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last dimension without weight or bias (PyTorch's built-in)."""
    return F.layer_norm(x, x.shape[-1:])


def doubled_rms_norm(x: torch.Tensor) -> torch.Tensor:
    """RMSNorm over the last dimension with every weight 2 (PyTorch's built-in): a second norm
    that differs from `unit_layer_norm` on every input."""
    return 2.0 * F.rms_norm(x, x.shape[-1:])


# Lesson 06: inspectors (`course.lesson.Probe.inspect`): fn(learner_fn, args, kwargs, out).


def _returned(out) -> str:
    """What a learner returned, in words, with the call that usually produces it."""
    kind = type(out)
    if kind is torch.Tensor:
        return f"a {str(out.dtype).removeprefix('torch.')} tensor of shape {tuple(out.shape)}"
    if kind is list:
        return "a list (what .tolist() gives)"
    if kind is tuple:
        return f"a tuple of {len(out)} values"
    if kind.__module__ == "numpy":
        how = ".numpy()" if kind.__name__ == "ndarray" else "a NumPy operation"
        return f"a numpy.{kind.__name__} (what {how} gives)"
    if kind in (int, float):
        return f"a Python {kind.__name__} (what .item() gives)"
    return f"a {kind.__module__}.{kind.__qualname__}"


def inspect_tensor_result(fn, args, kwargs, out) -> str | None:
    """The result must be a torch.Tensor (a .tolist() or .numpy() result is named as such)."""
    if type(out) is torch.Tensor:
        return None
    return (
        f"returned {_returned(out)} where a torch.Tensor is expected: keep the result a tensor "
        "(no .tolist(), .numpy() or .item() at the end)"
    )


def inspect_float_pair(fn, args, kwargs, out) -> str | None:
    """The result must be a tuple of two Python floats, `(alpha, beta)`."""
    if type(out) is tuple and len(out) == 2 and all(type(v) is float for v in out):
        return None
    if type(out) is list:
        return (
            "returned a list, where the contract is a tuple (alpha, beta): return alpha, beta "
            "(a comma makes a tuple), not [alpha, beta]"
        )
    if type(out) is tuple and len(out) == 2:
        kinds = ", ".join(
            "float" if type(v) is float else f"{type(v).__module__}.{type(v).__qualname__}"
            for v in out
        )
        return (
            f"returned a tuple ({kinds}), where the contract is two Python floats: wrap each in "
            "float(...), or compute with ** on Python numbers"
        )
    return (
        f"returned {_returned(out)}, where the contract is a tuple (alpha, beta) of two Python "
        "floats: return alpha, beta"
    )


def inspect_caller_tensors(fn, args, kwargs, out) -> str | None:
    """`inspect_tensor_result`, and the caller's tensors must come back as they were given:
    not switched to requires_grad, no .grad left on them (make leaves of your own copies)."""
    problem = inspect_tensor_result(fn, args, kwargs, out)
    if problem:
        return problem
    names = ("x", "weights", "readout")
    for i, arg in enumerate(args):
        if type(arg) is not torch.Tensor:
            continue
        name = names[i] if i < len(names) else f"argument {i}"
        if arg.requires_grad or arg.grad is not None:
            return (
                f"changed the caller's `{name}` (argument {i}): it now "
                + ("requires grad" if arg.requires_grad else "holds a .grad")
                + ". Make leaves of copies, W = [w.clone().requires_grad_(True) for w in "
                "weights], instead of calling requires_grad_ (or .backward()) on the tensor "
                "you were given"
            )
    return None


# Lesson 04: the reshapes must move no numbers where moving none is possible.


def _shares_memory(out, x) -> bool:
    return (
        type(out) is torch.Tensor
        and type(x) is torch.Tensor
        and out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    )


def inspect_split_view(fn, args, kwargs, out) -> str | None:
    """split_heads(x, n_heads) must return a view of x (x's memory, new sizes and strides): the
    split moves no numbers. None when it does, or when the result is not a tensor (the value
    comparison names that)."""
    if type(out) is not torch.Tensor or _shares_memory(out, args[0]):
        return None
    return (
        "the result lives in new memory: split_heads copied x (torch.stack, torch.cat, "
        ".contiguous() and .clone() copy every number), where a split only relabels x's memory: "
        "view(B, T, n_heads, d_head).transpose(1, 2) changes sizes and strides, no number moves"
    )


def inspect_merge_view(fn, args, kwargs, out) -> str | None:
    """merge_heads(x) of x (B, H, T, d) with T == 1 or H == 1 must return a view of x: merging
    H and d then needs no copy (the size-1 dimension imposes no stride), and `.contiguous()`
    and `.reshape` copy only when they must. Other shapes, or a non-tensor result: None."""
    x = args[0]
    if type(out) is not torch.Tensor or type(x) is not torch.Tensor or x.dim() != 4:
        return None
    if 1 not in (x.shape[1], x.shape[2]) or _shares_memory(out, x):
        return None
    what = "one token (T = 1)" if x.shape[2] == 1 else "one head (H = 1)"
    return (
        f"with {what} the merge can be a view of x, and merge_heads copied anyway: "
        ".contiguous() returns the tensor itself when it already is contiguous, and .reshape "
        "copies only when a view is impossible (section 3), while torch.cat, torch.stack and "
        ".clone() copy every time, on every token a decoder generates"
    )


# ---------------------------------------------------------------- lesson 07: a model to decode


class CacheHeadsMismatch(ValueError):
    """A cache holds (or hands back) another number of key/value heads than the model's."""


class GrowingCache:
    """The simplest key/value cache: each step concatenates the new keys and values onto the
    old ones (`torch.cat`, a fresh allocation per layer and step). Correct, and what lesson 07
    measures a preallocated cache against. Same interface as the lesson's `KVCache`: `length`,
    `update(layer, k, v) -> (keys, values)` of positions `0 .. length + new - 1`, `advance(n)`,
    `reset()`."""

    def __init__(self, n_layers: int) -> None:
        self.n_layers = n_layers
        self.reset()

    def reset(self) -> None:
        self.keys: list = [None] * self.n_layers
        self.values: list = [None] * self.n_layers
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def advance(self, n: int) -> None:
        self.length += n


# Positions a table covers at first (Llama precomputes max_seq_len * 2 of them).
ROPE_TABLE_POSITIONS = 4096


@functools.lru_cache(maxsize=16)
def _rope_table(head_dim: int, theta: float, positions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of t theta^(-2j/head_dim) for t < positions, each float32 `(positions,
    head_dim // 2)`: angles in float32, as Meta's `precompute_freqs_cis` forms them."""
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(positions, dtype=torch.float32), freqs)
    return angles.cos(), angles.sin()


def llama_rope(x: torch.Tensor, start: int, theta: float = 10000.0) -> torch.Tensor:
    """Interleaved RoPE of x `(..., T, head_dim)` at positions `start .. start + T - 1`, with the
    angles of Meta's Llama code (`precompute_freqs_cis` in github.com/meta-llama/llama,
    model.py): one table of float32 angles, computed once. x's shape and dtype. Not lesson 07's
    `rope_at`, whose check rejects it: that exercise forms its angles in float64, and float32
    angles drift at large positions.

    A position's rotation must not depend on how many tokens a call holds, or cached decoding
    would differ from recomputation (by about 1e-5 in ToyLM's logits). So every call reads rows
    of the same table, and each pair (2i, 2i + 1) is turned with real multiplications and
    additions, which round alike in every call; Llama's complex multiply (`apply_rotary_emb`)
    rounds differently in a one-token step than inside a long call."""
    T, hd = x.shape[-2], x.shape[-1]
    positions = ROPE_TABLE_POSITIONS
    while positions < start + T:
        positions *= 2
    cos, sin = (t[start : start + T] for t in _rope_table(hd, float(theta), positions))
    wide = torch.float64 if x.dtype == torch.float64 else torch.float32  # half types: float32
    cos, sin = cos.to(wide), sin.to(wide)  # each (T, hd / 2)
    pairs = x.to(wide).unflatten(-1, (-1, 2))  # (..., T, hd / 2, 2): features 2i and 2i + 1
    first, second = pairs[..., 0], pairs[..., 1]
    turned = (first * cos - second * sin, first * sin + second * cos)
    return torch.stack(turned, dim=-1).flatten(-2).to(x.dtype)


class ToyLM:
    """A tiny decoder-only language model with fixed weights: the subject lesson 07's decoding
    functions are run on (not an exercise's answer: it splits and merges heads with the course's
    stand-ins, rotates with `llama_rope` and attends with PyTorch's SDPA).

    `model(idx, cache=None) -> logits (batch, T, vocab_size)` for token ids `idx` `(batch, T)`.
    Pre-norm blocks (RMSNorm without weights), attention with interleaved RoPE and grouped
    key/value heads (`n_kv_heads` of them), a tanh MLP, and an output head tied to the
    embedding. With `cache`, `idx` holds the tokens after the `cache.length` cached ones: their
    RoPE positions start at `cache.length`, each layer calls `cache.update(layer, k, v)` with
    `k`, `v` `(batch, n_kv_heads, T, head_dim)` and attends over what it returns, and the model
    calls `cache.advance(T)` at the end. Raises ValueError if the cache hands back keys with
    another number of heads than `n_kv_heads` (a cache must keep GQA's heads un-repeated).
    `new_cache(batch_size, max_len)` returns a `GrowingCache`.
    """

    def __init__(
        self,
        *,
        n_layers: int = 2,
        n_heads: int = 4,
        n_kv_heads: int = 2,
        head_dim: int = 4,
        vocab_size: int = 24,
        dtype: torch.dtype = torch.float32,
        seed: int = 7,
    ) -> None:
        self.n_layers, self.n_heads, self.n_kv_heads = n_layers, n_heads, n_kv_heads
        self.head_dim, self.vocab_size, self.dtype = head_dim, vocab_size, dtype
        d = self.d_model = n_heads * head_dim
        g = torch.Generator().manual_seed(seed)

        def weight(rows: int, cols: int, gain: float = 1.0) -> torch.Tensor:
            w = torch.randn(rows, cols, generator=g, dtype=torch.float64) * gain / math.sqrt(cols)
            return w.to(dtype)

        self.embedding = (torch.randn(vocab_size, d, generator=g, dtype=torch.float64)).to(dtype)
        kv = n_kv_heads * head_dim
        self.layers = [
            dict(
                W_q=weight(d, d, 2.0),
                W_k=weight(kv, d, 2.0),
                W_v=weight(kv, d),
                W_o=weight(d, d),
                W_1=weight(2 * d, d),
                W_2=weight(d, 2 * d),
            )
            for _ in range(n_layers)
        ]

    def __repr__(self) -> str:
        return (
            f"ToyLM(n_layers={self.n_layers}, n_heads={self.n_heads}, n_kv_heads="
            f"{self.n_kv_heads}, head_dim={self.head_dim}, vocab_size={self.vocab_size}, "
            f"dtype={self.dtype})"
        )

    def new_cache(self, batch_size: int, max_len: int) -> GrowingCache:
        return GrowingCache(self.n_layers)

    def __call__(self, idx: torch.Tensor, cache=None) -> torch.Tensor:
        # One thread: these tensors are tiny, and a second thread costs more than it saves (far
        # more on a busy machine, where OpenMP threads wait for each other on every small op).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._forward(idx, cache)
        finally:
            torch.set_num_threads(threads)

    def _forward(self, idx: torch.Tensor, cache) -> torch.Tensor:
        B, T = idx.shape
        past = 0 if cache is None else int(cache.length)
        H, H_kv = self.n_heads, self.n_kv_heads
        x = self.embedding[idx]
        for layer, w in enumerate(self.layers):
            h = F.rms_norm(x, (self.d_model,))
            q = split_heads(h @ w["W_q"].T, H)  # (B, H, T, hd)
            k = split_heads(h @ w["W_k"].T, H_kv)
            v = split_heads(h @ w["W_v"].T, H_kv)
            q, k = llama_rope(q, past), llama_rope(k, past)
            if cache is not None:
                k, v = cache.update(layer, k, v)
                if k.shape[1] != H_kv or v.shape[1] != H_kv:
                    raise CacheHeadsMismatch(
                        f"the cache returned {k.shape[1]} key heads for a model with {H_kv} "
                        "key/value heads: cache the n_kv_heads heads as they come"
                    )
            S = k.shape[2]
            mask = torch.arange(S)[None, :] <= torch.arange(S - T, S)[:, None]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=H != H_kv)
            x = x + merge_heads(out) @ w["W_o"].T
            h = F.rms_norm(x, (self.d_model,))
            x = x + torch.tanh(h @ w["W_1"].T) @ w["W_2"].T
        if cache is not None:
            cache.advance(T)
        # Halved: softer logits, so that greedy decoding does not lock onto one token at once.
        return 0.5 * F.rms_norm(x, (self.d_model,)) @ self.embedding.T


# The models lesson 07's probes decode with (FnRef("course.probe_layers:toy_lm")...).
toy_lm = ToyLM()
toy_lm_mqa = ToyLM(n_heads=4, n_kv_heads=1, head_dim=4, seed=8)
toy_lm_mha = ToyLM(n_layers=3, n_heads=2, n_kv_heads=2, head_dim=6, seed=9)
toy_lm_float64 = ToyLM(dtype=torch.float64, seed=10)

_TOY_CONFIGS = {
    "toy_lm": {},
    "toy_lm_mqa": dict(n_heads=4, n_kv_heads=1, head_dim=4, seed=8),
    "toy_lm_mha": dict(n_layers=3, n_heads=2, n_kv_heads=2, head_dim=6, seed=9),
    "toy_lm_float64": dict(dtype=torch.float64, seed=10),
    "toy_lm_bfloat16": dict(dtype=torch.bfloat16, seed=12),
}


# ---------------------------------------------------------------- lesson 07: watching a cache
#
# The value of decoded logits cannot show *how* they were computed: a decoder that recomputes
# every prefix, or uses the model's own `GrowingCache`, returns the same numbers as one that
# uses the learner's `KVCache`. The models below are `ToyLM`s that watch how they are called
# and raise, with an exception named after what they saw, when the protocol of the lesson is
# broken. Each `FnRef` resolution makes a fresh one (module `__getattr__` below), so what one
# watches is one call of the learner's function.


class CacheProtocolError(Exception):
    """Base of the errors a watching model raises."""


class ModelCalledWithoutCache(CacheProtocolError):
    pass


class NotYourKVCache(CacheProtocolError):
    pass


class CacheLayoutError(CacheProtocolError):
    pass


class CacheDtypeMismatch(CacheProtocolError):
    pass


class SharedLayerBuffers(CacheProtocolError):
    pass


class NoOverflowError(CacheProtocolError):
    pass


class NewCachePerPrompt(CacheProtocolError):
    pass


class ResetReallocated(CacheProtocolError):
    pass


class BuffersReplaced(CacheProtocolError):
    pass


class CacheNotReset(CacheProtocolError):
    pass


class WholeSequenceFed(CacheProtocolError):
    pass


class TokenShapeError(CacheProtocolError):
    pass


class UnexpectedToken(CacheProtocolError):
    pass


class PointerOutOfStep(CacheProtocolError):
    pass


class CacheTooShort(CacheProtocolError):
    pass


class UpdateRefusedAFit(CacheProtocolError):
    pass


class UpdateMovedPointer(CacheProtocolError):
    pass


class UpdateWroteElsewhere(CacheProtocolError):
    pass


class UpdateReturnedWrongSpan(CacheProtocolError):
    pass


class AdvanceWrong(CacheProtocolError):
    pass


class ChunkTooLong(CacheProtocolError):
    pass


class ChunkShortBeforeEnd(CacheProtocolError):
    pass


class FreshCachePerChunk(CacheProtocolError):
    pass


def _buffers(cache) -> tuple[list, list]:
    keys, values = getattr(cache, "keys", None), getattr(cache, "values", None)
    ok = all(
        isinstance(b, list | tuple) and b and all(type(t) is torch.Tensor for t in b)
        for b in (keys, values)
    )
    if not ok:
        raise CacheLayoutError(
            f"your {type(cache).__name__} has no lists `keys` and `values` of tensors, one "
            "(batch, n_kv_heads, max_len, head_dim) tensor per layer: allocate them in __init__ "
            "as self.keys and self.values"
        )
    return list(keys), list(values)


class _WatchedCache:
    """What the model hands its layers instead of the learner's cache: the same protocol,
    checked at every call (update writes at `length` and leaves it alone, advance adds n)."""

    def __init__(self, cache, model: WatchingLM) -> None:
        self._cache, self._model = cache, model

    @property
    def length(self) -> int:
        return self._cache.length

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        cache, past, T = self._cache, int(self._cache.length), k.shape[2]
        keys, values = _buffers(cache)
        max_len = keys[layer].shape[2]
        try:
            got_k, got_v = cache.update(layer, k, v)
        except ValueError as exc:
            if past + T > max_len:
                raise CacheTooShort(
                    f"the cache is full: {past} cached + {T} new positions > its max_len "
                    f"{max_len} (your update raised: {exc}). decode_greedy must size it for the "
                    "prompt and every new token, T + n_new positions"
                ) from None
            raise UpdateRefusedAFit(
                f"update() raised ValueError ({exc}) for {T} new positions behind {past}, which "
                f"fit in max_len {max_len}: refuse only when length + T > max_len (filling the "
                "cache exactly is allowed)"
            ) from None
        if int(cache.length) != past:
            raise UpdateMovedPointer(
                f"update() moved cache.length from {past} to {cache.length}: update writes only, "
                "and the model calls advance(T) once after the last layer (else layer 1 writes "
                "T positions after layer 0)"
            )
        end = past + T
        if not (
            torch.equal(keys[layer][:, :, past:end], k)
            and torch.equal(values[layer][:, :, past:end], v)
        ):
            raise UpdateWroteElsewhere(
                f"after update(layer={layer}, k, v) with length {past}, positions {past} .. "
                f"{end - 1} of cache.keys[{layer}] do not hold k: write the new keys and values "
                "at positions length .. length + T - 1 of that layer's buffers, in place"
            )
        if got_k.shape[2] != end or got_v.shape[2] != end:
            raise UpdateReturnedWrongSpan(
                f"update() returned {got_k.shape[2]} positions after writing {T} behind {past}: "
                f"it returns the filled positions 0 .. length + T - 1, {end} of them"
            )
        return got_k, got_v

    def advance(self, n: int) -> None:
        before = int(self._cache.length)
        self._cache.advance(n)
        if int(self._cache.length) != before + n:
            raise AdvanceWrong(
                f"advance({n}) moved cache.length from {before} to {self._cache.length}: it must "
                f"add exactly n (self.length += n), to {before + n}"
            )


class WatchingLM(ToyLM):
    """A `ToyLM` that checks, at every call, how lesson 07's `decode_greedy` uses it: always
    with one cache of the learner's own (preallocated `keys`/`values` lists, the model's dtype
    and n_kv_heads, one buffer per layer, ValueError past max_len), reset between prompts
    without reallocating, the prompt first and then one argmax token `(B, 1)` per step."""

    def __init__(self, **config) -> None:
        super().__init__(**config)
        self._cache = None
        self._buffers: list = []
        self._history: torch.Tensor | None = None
        self._next: torch.Tensor | None = None

    def __call__(self, idx: torch.Tensor, cache=None) -> torch.Tensor:
        if type(idx) is not torch.Tensor or idx.dim() != 2:
            shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise TokenShapeError(
                f"model(idx, cache) takes token ids of shape (batch, T), got {shape}: feed the "
                "argmax back as logits[:, -1].argmax(-1, keepdim=True), shape (batch, 1)"
            )
        if cache is None:
            raise ModelCalledWithoutCache(
                "the model was called without a cache (model(idx)): that recomputes the whole "
                "sequence at every step. Make one KVCache and pass it: model(tokens, cache)"
            )
        if isinstance(cache, GrowingCache):
            raise NotYourKVCache(
                "the model got model.new_cache(...), a GrowingCache (torch.cat at every step): "
                "decode_greedy must use your preallocated KVCache"
            )
        keys, values = _buffers(cache)
        self._check_layout(cache, keys, values, idx.shape[0])
        past = int(cache.length)
        if past == 0:
            self._new_prompt(cache, keys, values)
        else:
            self._continuing(cache, keys, values, idx, past)
        logits = super().__call__(idx, _WatchedCache(cache, self))
        tokens = idx if past == 0 else torch.cat([self._history, idx], dim=1)
        self._history, self._next = tokens, logits[:, -1].argmax(-1, keepdim=True)
        return logits

    def _check_layout(self, cache, keys: list, values: list, batch: int) -> None:
        if len(keys) != self.n_layers or len(values) != self.n_layers:
            raise CacheLayoutError(
                f"the cache has {len(keys)} key buffers for a model of {self.n_layers} layers: "
                "one keys and one values tensor per layer"
            )
        buffers = keys + values
        if len({t.data_ptr() for t in buffers}) != len(buffers):
            raise SharedLayerBuffers(
                "two layers (or keys and values) share one buffer: [torch.zeros(shape)] * "
                "n_layers repeats one tensor. Allocate a separate tensor for every layer's keys "
                "and values (a list comprehension)"
            )
        for t in buffers:
            if t.shape[1] != self.n_kv_heads:
                raise CacheHeadsMismatch(
                    f"the cache buffers hold {t.shape[1]} heads for a model with "
                    f"{self.n_kv_heads} key/value heads: size them with model.n_kv_heads (GQA "
                    "caches the kv heads un-repeated)"
                )
            if t.dtype != self.dtype:
                raise CacheDtypeMismatch(
                    f"the cache buffers are {t.dtype} for a {self.dtype} model: allocate them "
                    "with dtype=dtype (torch.zeros(shape, dtype=dtype)), and pass "
                    "dtype=model.dtype"
                )
            if t.dim() != 4 or t.shape[0] != batch or t.shape[3] != self.head_dim:
                raise CacheLayoutError(
                    f"a cache buffer has shape {tuple(t.shape)}: expected (batch_size={batch}, "
                    f"n_kv_heads={self.n_kv_heads}, max_len, head_dim={self.head_dim})"
                )

    def _new_prompt(self, cache, keys: list, values: list) -> None:
        if self._cache is None:
            self._cache, self._buffers = cache, keys + values
            self._check_overflow(cache, keys[0])
            return
        if cache is not self._cache:
            raise NewCachePerPrompt(
                "a new cache was made for a later prompt: make one cache before the loop and "
                "reset() it before each prompt (the memory is reused)"
            )
        if any(a is not b for a, b in zip(keys + values, self._buffers, strict=True)):
            raise ResetReallocated(
                "reset() replaced the buffers with new tensors: it must keep the memory and "
                "only set the position pointer back to 0 (self.length = 0)"
            )

    def _continuing(self, cache, keys: list, values: list, idx, past: int) -> None:
        if cache is not self._cache:
            raise NewCachePerPrompt(
                "the model got another cache than the one the prompt was fed into: use one "
                "cache for the whole of decode_greedy"
            )
        if any(a is not b for a, b in zip(keys + values, self._buffers, strict=True)):
            raise BuffersReplaced(
                "the cache's buffers were replaced by new tensors between two steps: allocate "
                "them once in __init__ and write into them in place"
            )
        fed = 0 if self._history is None else self._history.shape[1]
        T = idx.shape[1]
        if T > 1 and T > past and torch.equal(idx[:, :fed], self._history):
            raise WholeSequenceFed(
                f"the whole sequence so far ({T} tokens) was fed again into a cache holding "
                f"{past}: after the prompt, feed only the new token, shape (batch, 1)"
            )
        if T > 1 or not torch.equal(idx, self._next):
            if T > 1 or past != fed:
                raise CacheNotReset(
                    f"a new prompt ({T} tokens) was fed into a cache still holding {past} "
                    "positions: call cache.reset() before each prompt, and make reset() set "
                    "the position pointer back to 0 (self.length = 0)"
                )
            raise UnexpectedToken(
                "the token fed back is not the argmax of the last position's logits: "
                "logits[:, -1].argmax(-1, keepdim=True), shape (batch, 1)"
            )
        if past != fed:
            raise PointerOutOfStep(
                f"cache.length is {past} after {fed} tokens were fed: only the model moves the "
                "pointer (it calls advance(T) once per call); decode_greedy does not"
            )

    def _check_overflow(self, cache, keys: torch.Tensor) -> None:
        """Ask the empty cache to write its last position (it must accept) and one position
        past max_len (it must refuse with a ValueError); the pointer is put back to 0. Nothing
        the decoding reads is touched: positions at or past length are never read."""
        B, H, max_len, d = keys.shape
        one = torch.zeros(B, H, 1, d, dtype=keys.dtype)
        cache.length = max_len - 1  # the last free position: it fits and must be accepted
        try:
            cache.update(0, one, one)
        except ValueError as exc:
            raise UpdateRefusedAFit(
                f"KVCache.update at length = max_len - 1 = {max_len - 1} with one token raised "
                f"ValueError ({exc}): that token fits, the cache may be filled exactly. Refuse "
                "only when length + T > max_len"
            ) from None
        finally:
            cache.length = 0
        cache.length = max_len
        try:
            cache.update(0, one, one)
        except ValueError:
            return
        except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything
            raise NoOverflowError(
                f"KVCache.update past max_len raised {type(exc).__name__} ({exc}): it must "
                "raise a ValueError that says the cache is full (check length + T > max_len "
                "first)"
            ) from None
        finally:
            cache.length = 0
        raise NoOverflowError(
            f"KVCache.update at length = max_len = {max_len} with one more token did not "
            "raise: it must raise a ValueError when length + T > max_len"
        )


class ChunkWatchingLM(ToyLM):
    """A `ToyLM` that checks how lesson 07's `chunked_prefill` feeds it, for a given
    `chunk_size`: every call with one and the same cache, `chunk_size` tokens per call (the
    last call may be shorter)."""

    def __init__(self, chunk_size: int, **config) -> None:
        super().__init__(**config)
        self.chunk_size = chunk_size
        self._cache = None
        self._short = False

    def __call__(self, idx: torch.Tensor, cache=None) -> torch.Tensor:
        if cache is None:
            raise ModelCalledWithoutCache(
                "the model was called without a cache (model(idx)): chunked prefill feeds every "
                "chunk into one cache, model(chunk, cache), so that each chunk sees the ones "
                "before it"
            )
        T = idx.shape[-1]
        if T > self.chunk_size:
            raise ChunkTooLong(
                f"the model got {T} tokens in one call where chunk_size is {self.chunk_size}: "
                "feed the prompt chunk_size tokens at a time (idx.split(chunk_size, dim=1))"
            )
        if self._cache is not None and cache is not self._cache:
            raise FreshCachePerChunk(
                "a later chunk was fed into another cache: make one cache, model.new_cache(B, "
                "T), before the loop and feed every chunk into it"
            )
        if self._short:
            raise ChunkShortBeforeEnd(
                f"a chunk shorter than chunk_size {self.chunk_size} came before the last one: "
                "every chunk but the last holds exactly chunk_size tokens"
            )
        self._cache, self._short = cache, T < self.chunk_size
        return super().__call__(idx, cache)


def __getattr__(name: str):
    """`watching_<toy model>` and `chunk_watching_<toy model>_<chunk size>`: a fresh watching
    model each time the name is looked up (each probe call resolves its FnRef anew)."""
    if name.startswith("watching_") and name[9:] in _TOY_CONFIGS:
        return WatchingLM(**_TOY_CONFIGS[name[9:]])
    if name.startswith("chunk_watching_"):
        base, _, size = name[15:].rpartition("_")
        if base in _TOY_CONFIGS and size.isdigit():
            return ChunkWatchingLM(int(size), **_TOY_CONFIGS[base])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------- lesson 07: inspectors
# Run after a value call (`course.lesson.Probe.inspect`): fn(learner_fn, args, kwargs, out).


def inspect_cache_write(fn, args, kwargs, out) -> str | None:
    """cache_write must write into the buffers it was given, return views of them, and raise
    ValueError past max_len. Silent when the returned values are wrong (the comparison then
    says how)."""
    keys, values, length, k_new, v_new = args
    end = length + k_new.shape[2]
    ok = (
        isinstance(out, tuple | list)
        and len(out) == 2
        and all(type(t) is torch.Tensor and t.shape[2:3] == (end,) for t in out)
        and torch.equal(out[0][:, :, length:], k_new)
        and torch.equal(out[1][:, :, length:], v_new)
    )
    if not ok:
        return None
    written = torch.equal(keys[:, :, length:end], k_new)
    if not (written and torch.equal(values[:, :, length:end], v_new)):
        return (
            "the buffers were not written in place: after the call keys[:, :, length:length + T] "
            "does not hold k_new. Write into the tensors you were given (keys[:, :, length:"
            "length + T] = k_new), don't build new ones (torch.cat)"
        )
    for got, buffer in zip(out, (keys, values), strict=True):
        if got.untyped_storage().data_ptr() != buffer.untyped_storage().data_ptr():
            return (
                "the result is a copy, not a view of the buffers: return keys[:, :, :length + T] "
                "(slicing makes no copy; no .clone(), no torch.cat)"
            )
    over = keys.shape[2] - k_new.shape[2] + 1
    try:
        fn(keys, values, over, k_new, v_new)
    except ValueError:
        return None
    except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything
        return (
            f"no ValueError past max_len: with length {over} the {k_new.shape[2]} new tokens "
            f"end past max_len {keys.shape[2]}, and it raised {type(exc).__name__} ({exc}). "
            "Check length + T > max_len first and raise ValueError"
        )
    return (
        f"no ValueError past max_len: with length {over} the {k_new.shape[2]} new tokens end "
        f"past max_len {keys.shape[2]}, and it returned. Check length + T > max_len first and "
        "raise ValueError"
    )


def inspect_cached_attention(fn, args, kwargs, out) -> str | None:
    """cached_attention must leave the new keys and values in the cache's buffers."""
    _, k_new, v_new, keys, values, length = args
    end = length + k_new.shape[2]
    if torch.equal(keys[:, :, length:end], k_new) and torch.equal(values[:, :, length:end], v_new):
        return None
    return (
        "the cache buffers were not written: after the call keys[:, :, length:length + T] does "
        "not hold k_new. Store the new keys and values with cache_write(keys, values, length, "
        "k_new, v_new), into the buffers themselves, and attend over what it returns (no "
        "torch.cat, no enlarged copy of the buffers)"
    )


def inspect_int_bytes(fn, args, kwargs, out) -> str | None:
    """A byte count is an int: a float with the right value is reported as such."""
    if type(out) is not float:
        return None
    config, seq_len, *rest = args
    batch = rest[0] if rest else kwargs.get("batch_size", 1)
    per = rest[1] if len(rest) > 1 else kwargs.get("bytes_per_element", 2)
    c = config
    want = 2 * c["n_layers"] * batch * c["n_kv_heads"] * seq_len * c["head_dim"] * per
    if out != want:
        return None
    return (
        f"returned a float, not an int: {out!r} bytes, where a number of bytes is a whole "
        "number. Multiply integers only (no /, no float(), no math.pow)"
    )


# ---------------------------------------------------------------- lesson 08: inspectors


def inspect_python_int(fn, args, kwargs, out) -> str | None:
    """A parameter count is a Python int (not a float from `/`, not a 0-d tensor)."""
    if type(out) is int:
        return None
    how = "a float (what / or math.pow gives)" if type(out) is float else _returned(out)
    return (
        f"returned {how}, where a count of parameters is a Python int: multiply and add "
        "integers only (// for the head width), and int(...) a tensor's .numel()"
    )


def inspect_init_plan(fn, args, kwargs, out) -> str | None:
    """init_plan's result is a list of (name: str, shape: tuple of ints, mean: float, std:
    float); a problem names the entry's parameter and the field."""
    if type(out) is not list:
        return (
            f"returned {_returned(out)}, where the contract is a list of (name, shape, mean, std)"
        )
    for i, entry in enumerate(out):
        if type(entry) is not tuple or len(entry) != 4:
            return (
                f"entry {i} is {_returned(entry) if type(entry) is not tuple else entry!r}: each "
                "entry is a tuple (name, shape, mean, std) of four values"
            )
        name, shape, mean, std = entry
        label = f"entry {i} ({name!r})" if type(name) is str else f"entry {i}"
        if type(name) is not str:
            return f"{label}: the name is a {type(name).__name__}, where a str is expected"
        if type(shape) is not tuple or not all(type(n) is int for n in shape):
            kind = type(shape).__name__
            inner = (
                ", ".join(sorted({type(n).__name__ for n in shape}))
                if kind in ("list", "tuple")
                else ""
            )
            what = f"a {kind}" + (f" of {inner}" if inner else "")
            return (
                f"{label}: the shape is {what} ({shape!r}), where a tuple of Python ints is "
                "expected, as nn.Linear's weight.shape gives: write (d_out, d_in), not "
                "[d_out, d_in]"
            )
        for field, value in (("mean", mean), ("std", std)):
            if type(value) is not float:
                return (
                    f"{label}: the {field} is a {type(value).__name__} ({value!r}), where a Python "
                    "float is expected (write 1.0 and 0.0, not 1 and 0)"
                )
    return None


def _same(a, b) -> bool:
    if type(a) is torch.Tensor and type(b) is torch.Tensor:
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if type(a) in (list, tuple) and type(b) in (list, tuple) and len(a) == len(b):
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    return False


def inspect_lm_forward(fn, args, kwargs, out) -> str | None:
    """Blame what lm_forward's stages cannot show: a block that writes into its input (an
    in-place residual rewrites the stage stored before it), RoPE tables asked for in another
    dtype than the weights', and a `rope_cos_sin` part that fails lesson 05's own check (the
    block check is handed tables, so only the model meets the part)."""
    from course.calling import copy_args, swapped_globals

    emb = args[1]["tok_emb.weight"]
    namespace = getattr(fn, "__globals__", {}) or {}
    block = namespace.get("block_forward")
    if kwargs.get("return_stages") and callable(block):
        written: list[int] = []

        def watching(x, *a, **k):
            before = x.clone() if type(x) is torch.Tensor else None
            result = block(x, *a, **k)
            if before is not None and not torch.equal(x, before):
                written.append(a[1] if len(a) > 1 else k.get("layer", -1))
            return result

        with swapped_globals(fn, {"block_forward": watching}):
            fn(*copy_args(args), **copy_args(kwargs))
        if written:
            return (
                f"block_forward wrote into the stream it was given (layer {written[0]}): an "
                "in-place residual add (x += ..., x.add_(...)) changes the tensor lm_forward "
                "already stored as the previous stage, so that stage (item 0, the embeddings, "
                "for block 0) looks wrong. Write x = x + ... (a new tensor)"
            )
    rope = namespace.get("rope_cos_sin")
    if not callable(rope):
        return None
    asked: list = []

    def recording(*a, **k):
        asked.append(k.get("dtype", a[3] if len(a) > 3 else torch.float32))
        return rope(*a, **k)

    with swapped_globals(fn, {"rope_cos_sin": recording}):
        fn(*copy_args(args), **copy_args(kwargs))
    wrong = [d for d in asked if d != emb.dtype]
    if wrong:
        return (
            f"lm_forward asks rope_cos_sin for {str(wrong[0]).removeprefix('torch.')} tables in "
            f"a {str(emb.dtype).removeprefix('torch.')} model: pass dtype=the weights' dtype "
            "(params['tok_emb.weight'].dtype), or float64 weights are rotated with float32 angles"
        )
    if not asked:
        return None
    return _rope_part_problem(fn, "item 1")


def inspect_cached_rope(fn, args, kwargs, out) -> str | None:
    """cached_logits runs lm_forward: a wrong `rope_cos_sin` part is named as such."""
    return _rope_part_problem(fn, "every position")


def _rope_part_problem(fn, where: str) -> str | None:
    """A message when the learner's `rope_cos_sin` (from fn's notebook) fails lesson 05's own
    check (`05-positions/rope-cos-sin`, expected tables baked at release): fn builds every
    block's RoPE from it, so the part is to blame. None when it passes or is not there."""
    from course import checks

    rope = (getattr(fn, "__globals__", {}) or {}).get("rope_cos_sin")
    if not callable(rope):
        return None
    try:
        checks.check("05-positions/rope-cos-sin", rope, quiet=True)
    except checks.CheckFailed as exc:
        first = str(exc).splitlines()[0].removeprefix("✘ ")
        return (
            "your rope_cos_sin (the lesson 05 part in section 1) fails lesson 05's check "
            f"({first}): {fn.__name__} builds every block's RoPE from it, so {where} differs "
            "although block_forward passes its own check. Fix rope_cos_sin: its check in "
            "section 1 names the problem"
        )
    return None
