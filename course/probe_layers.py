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

import math

import torch
import torch.nn.functional as F

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


# ---------------------------------------------------------------- lesson 07: a model to decode


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


class ToyLM:
    """A tiny decoder-only language model with fixed weights: the subject lesson 07's decoding
    functions are run on (not an exercise's answer: it computes attention with PyTorch's SDPA).

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

    def _rope(self, x: torch.Tensor, start: int) -> torch.Tensor:
        T, hd = x.shape[-2], x.shape[-1]
        positions = torch.arange(start, start + T, dtype=torch.float64)
        freqs = 10000.0 ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        angles = positions[:, None] * freqs
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack((even * cos - odd * sin, even * sin + odd * cos), -1).flatten(-2)

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
        H, H_kv, hd = self.n_heads, self.n_kv_heads, self.head_dim
        x = self.embedding[idx]
        for layer, w in enumerate(self.layers):
            h = F.rms_norm(x, (self.d_model,))
            q = (h @ w["W_q"].T).view(B, T, H, hd).transpose(1, 2)
            k = (h @ w["W_k"].T).view(B, T, H_kv, hd).transpose(1, 2)
            v = (h @ w["W_v"].T).view(B, T, H_kv, hd).transpose(1, 2)
            q, k = self._rope(q, past), self._rope(k, past)
            if cache is not None:
                k, v = cache.update(layer, k, v)
                if k.shape[1] != H_kv or v.shape[1] != H_kv:
                    raise ValueError(
                        f"the cache returned {k.shape[1]} key heads for a model with {H_kv} "
                        "key/value heads: cache the n_kv_heads heads as they come"
                    )
            S = k.shape[2]
            mask = torch.arange(S)[None, :] <= torch.arange(S - T, S)[:, None]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=H != H_kv)
            x = x + out.transpose(1, 2).reshape(B, T, self.d_model) @ w["W_o"].T
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
