"""The KV cache: its memory formula, the cached attention step, and equality with recomputation."""

from __future__ import annotations

import pytest
import torch

from course.lm.config import ModelConfig
from solutions.kernels.heads import grouped_query_attention
from solutions.kernels.kv_cache import (
    MODEL_CONFIGS,
    KVCache,
    cached_attention_step,
    chunked_prefill,
    kv_cache_bytes,
    kv_cache_bytes_per_token,
)
from solutions.kernels.model import TransformerLM


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize(
    ("layers", "batch", "kv_heads", "max_len", "head_dim", "dtype"),
    [
        (2, 1, 4, 16, 8, torch.float32),
        (3, 2, 1, 10, 16, torch.float16),
        (1, 3, 2, 7, 4, torch.bfloat16),
        (4, 2, 8, 5, 2, torch.float64),
    ],
)
def test_memory_formula_equals_allocated_bytes(layers, batch, kv_heads, max_len, head_dim, dtype):
    cache = KVCache(layers, batch, kv_heads, max_len, head_dim, dtype=dtype)
    allocated = sum(t.untyped_storage().nbytes() for t in cache.keys + cache.values)
    expected = 2 * layers * batch * kv_heads * max_len * head_dim * dtype.itemsize
    assert kv_cache_bytes(layers, batch, kv_heads, max_len, head_dim, dtype.itemsize) == expected
    assert kv_cache_bytes(layers, batch, kv_heads, max_len, head_dim, dtype) == expected
    assert allocated == cache.nbytes == expected
    assert cache.keys[0].shape == (batch, kv_heads, max_len, head_dim)


def test_memory_formula_for_a_real_model():
    # Llama-2-7B: 32 layers, 32 kv heads of 128 dims, 4096 tokens, float16: 2 GiB per sequence.
    assert kv_cache_bytes(32, 1, 32, 4096, 128, 2) == 2 * 1024**3
    # GQA with 8 kv heads (Llama-2-70B style) needs a quarter of that per layer.
    assert kv_cache_bytes(32, 1, 8, 4096, 128, 2) == 2 * 1024**3 // 4


def test_update_appends_and_refuses_overflow():
    cache = KVCache(2, 1, 2, 4, 3)
    k1, v1 = randn(1, 2, 3, 3, seed=1), randn(1, 2, 3, 3, seed=2)
    keys, values = cache.update(0, k1, v1)
    assert cache.length == 0  # the model advances once all layers have written
    assert torch.equal(keys, k1) and torch.equal(values, v1)
    cache.advance(3)
    k2 = randn(1, 2, 1, 3, seed=3)
    keys, _ = cache.update(0, k2, k2)
    assert torch.equal(keys, torch.cat([k1, k2], dim=-2))
    assert (cache.keys[1] == 0).all()  # other layers untouched
    cache.advance(1)
    with pytest.raises(ValueError, match="full"):
        cache.update(0, k2, k2)
    cache.reset()
    assert cache.length == 0
    with pytest.raises(ValueError, match="batch"):
        cache.update(0, randn(2, 2, 1, 3), randn(2, 2, 1, 3))


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
@pytest.mark.parametrize("chunks", [[6], [1, 1, 1, 1, 1, 1], [3, 1, 2]])
def test_cached_step_equals_full_causal_attention(n_kv_heads, chunks):
    T = sum(chunks)
    q = randn(2, 4, T, 8, seed=1)
    k, v = randn(2, n_kv_heads, T, 8, seed=2), randn(2, n_kv_heads, T, 8, seed=3)
    full = grouped_query_attention(q, k, v, is_causal=True)
    cache = KVCache(1, 2, n_kv_heads, 8, 8)
    outs, start = [], 0
    for n in chunks:
        s = slice(start, start + n)
        outs.append(cached_attention_step(q[:, :, s], k[:, :, s], v[:, :, s], cache))
        cache.advance(n)
        start += n
    torch.testing.assert_close(torch.cat(outs, dim=-2), full, atol=1e-6, rtol=1e-5)


def tiny_lm(positional="rope", **overrides):
    settings = dict(vocab_size=61, context_length=256, d_model=32, n_layers=2, n_heads=4)
    config = ModelConfig(**(settings | {"positional": positional} | overrides))
    model = TransformerLM(config, seed=0).eval()
    with torch.no_grad():  # livelier than the 0.02 init, so that greedy choices are clear-cut
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    return model


@pytest.mark.parametrize("positional", ["rope", "sinusoidal", "learned", "alibi", "none"])
@pytest.mark.parametrize("attention", ["reference", "sdpa"])
def test_cached_logits_equal_full_recomputation(positional, attention):
    model = tiny_lm(positional, attention=attention, n_kv_heads=2)
    idx = torch.randint(0, 61, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(2, 40)
        pieces = [model(idx[:, :9], cache=cache)]  # a prompt, then one token at a time
        pieces += [model(idx[:, t : t + 1], cache=cache) for t in range(9, 40)]
    assert cache.length == 40
    assert (torch.cat(pieces, dim=1) - full).abs().max().item() <= 1e-5


def test_cached_greedy_generation_equals_recomputation_for_200_steps():
    model = tiny_lm("rope", n_kv_heads=2)
    prompt = torch.randint(0, 61, (2, 5), generator=torch.Generator().manual_seed(2))
    assert prompt.shape[1] + 200 <= model.config.context_length  # the cache is used throughout
    cached = model.generate(prompt, 200, temperature=0, use_cache=True)
    recomputed = model.generate(prompt, 200, temperature=0, use_cache=False)
    assert cached.shape == (2, 205)
    assert torch.equal(cached, recomputed)
    assert len(set(cached[0, 5:].tolist())) > 1  # not a degenerate constant sequence


def test_generation_past_the_context_window_does_not_depend_on_the_cache():
    model = tiny_lm("learned", context_length=12)
    prompt = torch.randint(0, 61, (1, 4), generator=torch.Generator().manual_seed(3))
    cached = model.generate(prompt, 30, temperature=0, use_cache=True)
    assert torch.equal(cached, model.generate(prompt, 30, temperature=0, use_cache=False))
    assert cached.shape == (1, 34)


def test_new_cache_follows_the_model_dtype_and_shape():
    model = tiny_lm(n_kv_heads=1).to(torch.float64)
    cache = model.new_cache(3, 17)
    assert cache.keys[0].dtype == torch.float64
    assert len(cache.keys) == 2 and cache.keys[0].shape == (3, 1, 17, 8)
    assert cache.nbytes == kv_cache_bytes(2, 3, 1, 17, 8, torch.float64)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 40])
def test_chunked_prefill_equals_one_pass_and_decoding_continues(chunk_size):
    model = tiny_lm("rope", n_kv_heads=2)
    idx = torch.randint(0, 61, (2, 40), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(2, 41)
        chunked = chunked_prefill(model, idx[:, :39], cache, chunk_size)
        assert cache.length == 39
        last = model(idx[:, 39:], cache=cache)
    torch.testing.assert_close(chunked, full[:, :39], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last, full[:, 39:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_prefill(model, idx, model.new_cache(2, 40), 0)


def test_overflow_is_a_clear_error_that_writes_nothing_and_reset_starts_over():
    model = tiny_lm("rope")
    idx = torch.randint(0, 61, (1, 6), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        cache = model.new_cache(1, 5)
        first = model(idx[:, :4], cache=cache)
        before = [t.clone() for t in cache.keys]
        with pytest.raises(ValueError, match=r"KV cache full: 4 cached \+ 2 new positions"):
            model(idx[:, 4:], cache=cache)
        assert cache.length == 4
        assert all(torch.equal(a, b) for a, b in zip(before, cache.keys, strict=True))
        cache.reset()
        assert cache.length == 0
        torch.testing.assert_close(model(idx[:, :4], cache=cache), first)


def test_bytes_per_token_for_real_model_configs():
    # 2 (k and v) * layers * kv heads * head_dim * 2 bytes (float16), from each config.json.
    expected = {
        "gpt2": 2 * 12 * 12 * 64 * 2,  # 36 KiB
        "llama-2-7b": 2 * 32 * 32 * 128 * 2,  # 512 KiB: 2 GiB for its 4096-token context
        "llama-2-70b": 2 * 80 * 8 * 128 * 2,  # GQA: 8 kv heads for 64 query heads
        "mistral-7b": 2 * 32 * 8 * 128 * 2,
        "llama-3-8b": 2 * 32 * 8 * 128 * 2,
    }
    for name, shape in MODEL_CONFIGS.items():
        assert shape.bytes_per_token() == expected[name], name
        assert shape.n_heads % shape.n_kv_heads == 0
        assert shape.bytes_per_token(torch.float32) == 2 * expected[name]
        whole = kv_cache_bytes(shape.n_layers, 1, shape.n_kv_heads, shape.context_length,
                               shape.head_dim)  # fmt: skip
        assert whole == shape.context_length * expected[name]
    assert MODEL_CONFIGS["llama-2-7b"].bytes_per_token() == 512 * 1024
    assert kv_cache_bytes_per_token(32, 32, 128) == 2 * 32 * 32 * 128 * 2
    mha, gqa = MODEL_CONFIGS["llama-2-7b"], MODEL_CONFIGS["mistral-7b"]
    assert mha.bytes_per_token() == 4 * gqa.bytes_per_token()  # 32 kv heads against 8


def test_the_flattened_floor_computes_what_the_model_computes():
    model = tiny_lm("rope")
    floor = model.decode_floor(12)
    idx = torch.randint(0, 61, (1, 12), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        steps = torch.cat([floor(idx[:, t : t + 1], t) for t in range(12)], dim=1)
        torch.testing.assert_close(steps, model(idx), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="presets' architecture"):
        tiny_lm("learned").decode_floor(12)
