"""The key/value cache for incremental decoding.

Generating token t+1 needs the keys and values of tokens 0..t at every layer. They do not change
once computed (a causal model's token s never sees later tokens), so keep them: each step then
projects only the new token and attends over the stored keys, instead of recomputing the prefix.

Layout: per layer, one preallocated keys tensor and one values tensor of shape
`(batch, kv_heads, max_len, head_dim)`; positions `0 .. length - 1` are filled. Memory:

    bytes = 2 (keys and values) * layers * batch * kv_heads * max_len * head_dim * bytes_per_element

which is why GQA/MQA (fewer kv_heads) matter for serving long contexts.
"""

from __future__ import annotations

import torch

from solutions.kernels.heads import Backend, grouped_query_attention


def kv_cache_bytes(
    n_layers: int,
    batch_size: int,
    n_kv_heads: int,
    max_len: int,
    head_dim: int,
    bytes_per_element: int | torch.dtype = 2,
) -> int:
    """KV cache size: `2 * layers * batch * kv_heads * max_len * head_dim * bytes_per_element`.

    `bytes_per_element` is 2 for float16/bfloat16 (the default, as served), 4 for float32;
    a `torch.dtype` is accepted too.
    """
    if isinstance(bytes_per_element, torch.dtype):
        bytes_per_element = bytes_per_element.itemsize
    return 2 * n_layers * batch_size * n_kv_heads * max_len * head_dim * bytes_per_element


class KVCache:
    """Preallocated keys and values for `n_layers` layers, filled up to `.length` positions.

    `update(layer, k, v)` writes new keys/values at positions `length ..` of one layer and returns
    that layer's filled prefix; after every layer has done so, `advance(n)` moves `.length` on.
    (Splitting the two lets all layers of one forward pass write at the same offset.)
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
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[-2]

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes actually held by the key and value tensors."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store `k`, `v` `(batch, kv_heads, new, head_dim)` after the cached positions.

        Returns the keys and values of positions `0 .. length + new - 1` (views, no copy).
        """
        start, end = self.length, self.length + k.shape[-2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {start} + {k.shape[-2]} positions > {self.max_len}")
        if k.shape[0] != self.batch_size:
            raise ValueError(
                f"batch size {k.shape[0]} does not match the cache's {self.batch_size}"
            )
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

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
    bias: torch.Tensor | None = None,
    backend: Backend = "reference",
) -> torch.Tensor:
    """Attention for `T` new tokens given the cache: store their keys/values, attend over all.

    `q` is `(batch, n_heads, T, head_dim)` for positions `past .. past + T - 1` (`past =
    cache.length`), `k_new`, `v_new` are `(batch, kv_heads, T, head_dim)`. Query `i` sees keys
    `0 .. past + i`: `masks.causal_mask(T, past)`, which is what `is_causal` means for fewer
    queries than keys (a single new token sees everything). The caller advances the cache once
    all layers have run.
    """
    k, v = cache.update(layer, k_new, v_new)
    return grouped_query_attention(q, k, v, bias=bias, is_causal=True, backend=backend)
