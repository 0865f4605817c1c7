"""The key/value cache for incremental decoding.

Generating token t+1 needs the keys and values of tokens 0..t at every layer. They do not change
once computed (a causal model's token s never sees later tokens), so keep them: each step then
projects only the new token and attends over the stored keys, instead of recomputing the prefix.

Layout: per layer, one preallocated keys tensor and one values tensor of shape
`(batch, n_kv_heads, max_len, head_dim)`; positions `0 .. length - 1` are filled, and `length`
is the position pointer where the next tokens go. Memory:

    bytes = 2 (keys and values) * n_layers * batch * n_kv_heads * max_len * head_dim * bytes/elem

which is why GQA/MQA (fewer kv heads) matter for serving long contexts: see `MODEL_CONFIGS`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from solutions.kernels.heads import Backend, grouped_query_attention
from solutions.kernels.positions import rope_cos_sin, rotate


def kv_cache_bytes(
    n_layers: int,
    batch_size: int,
    n_kv_heads: int,
    max_len: int,
    head_dim: int,
    bytes_per_element: int | torch.dtype = 2,
) -> int:
    """KV cache size in bytes: `2 * n_layers * batch * n_kv_heads * max_len * head_dim *
    bytes_per_element`.

    `bytes_per_element` is 2 for float16/bfloat16 (the default, as served), 4 for float32;
    a `torch.dtype` is accepted too.
    """
    if isinstance(bytes_per_element, torch.dtype):
        bytes_per_element = bytes_per_element.itemsize
    return 2 * n_layers * batch_size * n_kv_heads * max_len * head_dim * bytes_per_element


def kv_cache_bytes_per_token(
    n_layers: int, n_kv_heads: int, head_dim: int, bytes_per_element: int | torch.dtype = 2
) -> int:
    """Bytes one more token adds to one sequence's cache: `2 * n_layers * n_kv_heads * head_dim
    * bytes_per_element` (`kv_cache_bytes` with batch 1 and one position)."""
    return kv_cache_bytes(n_layers, 1, n_kv_heads, 1, head_dim, bytes_per_element)


class AttentionShape(NamedTuple):
    """What a KV cache's size depends on, from a model's published config."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    context_length: int
    source: str

    def bytes_per_token(self, bytes_per_element: int | torch.dtype = 2) -> int:
        return kv_cache_bytes_per_token(
            self.n_layers, self.n_kv_heads, self.head_dim, bytes_per_element
        )


# From each model's Hugging Face config.json (num_hidden_layers, num_attention_heads,
# num_key_value_heads, hidden_size / num_attention_heads, max_position_embeddings).
MODEL_CONFIGS: dict[str, AttentionShape] = {
    "gpt2": AttentionShape(12, 12, 12, 64, 1024, "openai-community/gpt2 config.json"),
    "llama-2-7b": AttentionShape(32, 32, 32, 128, 4096, "meta-llama/Llama-2-7b-hf config.json"),
    "llama-2-70b": AttentionShape(80, 64, 8, 128, 4096, "meta-llama/Llama-2-70b-hf config.json"),
    "mistral-7b": AttentionShape(32, 32, 8, 128, 32768, "mistralai/Mistral-7B-v0.1 config.json"),
    "llama-3-8b": AttentionShape(32, 32, 8, 128, 8192, "meta-llama/Meta-Llama-3-8B config.json"),
}


class KVCache:
    """Preallocated keys and values for `n_layers` layers, filled up to `.length` positions.

    `keys[layer]` and `values[layer]` are `(batch_size, n_kv_heads, max_len, head_dim)` tensors
    of `dtype` on `device`, allocated once. `update(layer, k, v)` writes new keys/values at
    positions `length ..` of one layer and returns that layer's filled prefix; after every layer
    has done so, `advance(n)` moves `.length` on. (Splitting the two lets all layers of one
    forward pass write at the same offset.) `reset()` empties it without freeing memory.
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        shape = (batch_size, n_kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.batch_size, self.max_len = batch_size, max_len
        self.length = 0

    @property
    def nbytes(self) -> int:
        """Bytes actually held by the key and value tensors."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store `k`, `v` `(batch, n_kv_heads, new, head_dim)` at positions `length .. length +
        new - 1` of `layer`, in place.

        Returns the keys and values of positions `0 .. length + new - 1` (views, no copy).
        Raises ValueError if they would run past `max_len` or the batch size differs.
        """
        start, end = self.length, self.length + k.shape[-2]
        if end > self.max_len:
            raise ValueError(
                f"KV cache full: {start} cached + {k.shape[-2]} new positions > "
                f"max_len={self.max_len} (make a longer cache, or reset() it)"
            )
        if k.shape[0] != self.batch_size:
            raise ValueError(
                f"batch size {k.shape[0]} does not match the cache's {self.batch_size}"
            )
        keys, values = self.keys[layer], self.values[layer]
        keys.narrow(2, start, end - start).copy_(k)  # in place: the memory was allocated once
        values.narrow(2, start, end - start).copy_(v)
        return keys.narrow(2, 0, end), values.narrow(2, 0, end)

    def advance(self, n: int) -> None:
        """Mark `n` more positions as filled (call once per forward pass, after all layers)."""
        self.length += n

    def reset(self) -> None:
        """Forget everything (the memory stays allocated)."""
        self.length = 0


def cached_attention_step(
    q: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    cache: KVCache,
    layer: int = 0,
    *,
    attn_bias: torch.Tensor | None = None,
    backend: Backend = "reference",
) -> torch.Tensor:
    """Attention for `T` new tokens given the cache: store their keys/values, attend over all.

    `q` is `(batch, n_heads, T, head_dim)` for positions `past .. past + T - 1` (`past =
    cache.length`), `k_new`, `v_new` are `(batch, n_kv_heads, T, head_dim)`. Query `i` sees keys
    `0 .. past + i`: `masks.causal_mask(T, past)`, which is what `is_causal` means for fewer
    queries than keys (a single new token sees everything). Returns `(batch, n_heads, T,
    head_dim)`. The caller advances the cache once all layers have run.
    """
    k, v = cache.update(layer, k_new, v_new)
    return grouped_query_attention(q, k, v, attn_bias=attn_bias, is_causal=True, backend=backend)


@torch.no_grad()
def chunked_prefill(model, idx: torch.Tensor, cache, chunk_size: int) -> torch.Tensor:
    """Feed a prompt `idx` `(batch, T)` into `cache` `chunk_size` tokens at a time; return the
    logits `(batch, T, vocab)` of all of them.

    Each chunk attends to the cached ones and to itself causally, so the logits equal one pass
    over the whole prompt, while the largest score matrix is `chunk_size x T` instead of `T x T`
    (what serving systems do to bound a long prompt's memory and latency). `model` follows
    `course.lm.protocol` (`model(idx, cache=cache)`). Raises ValueError for `chunk_size < 1`.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    pieces = [model(chunk, cache=cache) for chunk in idx.split(chunk_size, dim=1)]
    return torch.cat(pieces, dim=1)


# ---------------------------------------------------------------- functional forms (lesson 07)


def cache_write(
    keys: torch.Tensor, values: torch.Tensor, length: int, k_new: torch.Tensor, v_new: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`KVCache.update` for one layer's buffers: write `k_new`, `v_new` `(batch, n_kv_heads, T,
    head_dim)` into the preallocated `keys`, `values` `(batch, n_kv_heads, max_len, head_dim)`
    at positions `length .. length + T - 1`, in place, and return the views of positions `0 ..
    length + T - 1`. Raises ValueError past `max_len`."""
    end = length + k_new.shape[-2]
    if end > keys.shape[-2]:
        raise ValueError(f"KV cache full: {length} cached + {k_new.shape[-2]} new > max_len")
    keys.narrow(2, length, end - length).copy_(k_new)
    values.narrow(2, length, end - length).copy_(v_new)
    return keys.narrow(2, 0, end), values.narrow(2, 0, end)


def rope_at(x: torch.Tensor, start: int, theta: float = 10000.0) -> torch.Tensor:
    """Interleaved RoPE of `x` `(..., T, head_dim)` for the positions `start .. start + T - 1`
    (behind a cache of `start` tokens), angles formed in float64; `x`'s shape and dtype."""
    positions = torch.arange(start, start + x.shape[-2])
    cos, sin = rope_cos_sin(positions, x.shape[-1], theta, dtype=x.dtype)
    return rotate(x, cos, sin, "interleaved")


def cached_attention(
    q: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    length: int,
) -> torch.Tensor:
    """Attention of `T` new queries `q` `(batch, n_heads, T, head_dim)` at positions `length ..`
    over the cached keys and their own: `cache_write` then causal attention aligned to the
    last key (query `i` sees keys `0 .. length + i`), GQA grouping at attention time (the
    buffers keep `n_kv_heads`). Returns `(batch, n_heads, T, head_dim)`."""
    k, v = cache_write(keys, values, length, k_new, v_new)
    return grouped_query_attention(q, k, v, is_causal=True)


@torch.no_grad()
def decode_greedy(model, prompts: torch.Tensor, n_new: int) -> torch.Tensor:
    """Greedy decoding of each prompt in `prompts` `(n_prompts, batch, T)` with one `KVCache`
    reset between prompts: prefill the prompt, then feed back the argmax token `n_new - 1`
    times. Returns the logits each new token was chosen from, `(n_prompts, batch, n_new,
    vocab)`. `model` follows lesson 07's `ToyLM` (`n_layers`, `n_kv_heads`, `head_dim`,
    `dtype`, `model(idx, cache)`)."""
    P, B, T = prompts.shape
    cache = KVCache(
        model.n_layers, B, model.n_kv_heads, T + n_new, model.head_dim, dtype=model.dtype
    )
    results = []
    for prompt in prompts:
        cache.reset()
        logits = model(prompt, cache)[:, -1]
        steps = [logits]
        for _ in range(n_new - 1):
            logits = model(logits.argmax(-1, keepdim=True), cache)[:, -1]
            steps.append(logits)
        results.append(torch.stack(steps, dim=1))
    return torch.stack(results)


def prefill_in_chunks(model, idx: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """`chunked_prefill` into a fresh `model.new_cache(batch, T)`: the logits `(batch, T,
    vocab)` of the prompt `idx` `(batch, T)`, fed `chunk_size` tokens at a time."""
    B, T = idx.shape
    return chunked_prefill(model, idx, model.new_cache(B, T), chunk_size)


def kv_cache_bytes_for(
    config: dict, seq_len: int, batch_size: int = 1, bytes_per_element: int = 2
) -> int:
    """`kv_cache_bytes` from a config dict with `n_layers`, `n_heads`, `n_kv_heads`,
    `head_dim` (and `d_model`): keys and values of every layer, `n_kv_heads` heads each."""
    c = config
    return kv_cache_bytes(
        c["n_layers"], batch_size, c["n_kv_heads"], seq_len, c["head_dim"], bytes_per_element
    )
