"""Sampling filters and generation with and without the KV cache."""

import pytest
import torch
from lm_tinymodel import NoCacheLM, TinyLM

from course.lm.config import ModelConfig
from course.lm.sample import filter_logits, generate, next_token, sample_text


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    out = filter_logits(logits, top_k=2)
    assert torch.isfinite(out).tolist() == [[False, True, False, True, False]]
    assert torch.equal(out[torch.isfinite(out)], torch.tensor([5.0, 4.0]))
    assert torch.equal(filter_logits(logits, top_k=10), logits)


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.05, 0.5, 0.3, 0.15]])
    logits = probs.log()
    kept = lambda p: torch.isfinite(filter_logits(logits, top_p=p))[0].tolist()  # noqa: E731
    assert kept(0.5) == [False, True, False, False]  # 0.5 alone reaches 0.5
    assert kept(0.6) == [False, True, True, False]
    assert kept(0.8) == [False, True, True, False]  # 0.5 + 0.3 reaches 0.8
    assert kept(0.81) == [False, True, True, True]
    assert kept(0.01) == [False, True, False, False]  # the top token always survives
    assert kept(1.0) == [True, True, True, True]


def test_top_k_then_top_p_work_per_row():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]])
    out = filter_logits(logits, top_k=3, top_p=0.5)
    assert torch.isfinite(out).tolist() == [
        [False, False, False, True],
        [True, False, False, False],
    ]


def test_temperature_zero_is_greedy_and_sampling_follows_the_filter():
    logits = torch.tensor([[0.1, 2.0, 1.9], [3.0, -1.0, 0.0]])
    assert next_token(logits, temperature=0).tolist() == [1, 0]
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([next_token(logits, 1.0, top_k=2, generator=g) for _ in range(200)])
    assert set(draws[:, 0].tolist()) == {1, 2}
    assert set(draws[:, 1].tolist()) == {0, 2}


def _model(context_length=64):
    torch.manual_seed(0)
    config = ModelConfig(context_length=context_length, d_model=32, n_layers=2, n_heads=2)
    return TinyLM(config).eval()


def test_cached_greedy_generation_equals_full_recompute():
    model = _model()
    prompt = torch.tensor([[10, 20, 30, 40], [1, 2, 3, 4]])
    fast = generate(model, prompt, 40, temperature=0, use_cache=True)
    slow = generate(model, prompt, 40, temperature=0, use_cache=False)
    assert fast.shape == (2, 44)
    assert torch.equal(fast[:, :4], prompt)
    assert torch.equal(fast, slow)


def test_cached_sampling_with_a_seed_equals_full_recompute():
    model = _model()
    kw = dict(temperature=1.0, top_k=50, top_p=0.9, seed=3)
    assert torch.equal(
        generate(model, [5, 6, 7], 30, **kw), generate(model, [5, 6, 7], 30, use_cache=False, **kw)
    )


def test_generation_slides_past_the_context_length():
    model = _model(context_length=16)
    for use_cache in (True, False):
        out = generate(model, list(range(20)), 50, temperature=0.8, seed=1, use_cache=use_cache)
        assert out.shape == (70,)
        assert torch.equal(out[:20], torch.arange(20))


def test_model_without_cache_falls_back_to_recompute():
    torch.manual_seed(0)
    config = ModelConfig(context_length=32, d_model=32, n_layers=1, n_heads=2)
    plain = NoCacheLM(config).eval()
    out = generate(plain, [1, 2, 3], 10, temperature=0)
    assert out.shape == (13,)


def test_sample_text_round_trips_the_prompt_and_is_reproducible():
    model = _model()
    a = sample_text(model, "def f(", 20, seed=7)
    assert a.startswith("def f(") and a == sample_text(model, "def f(", 20, seed=7)
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [], 3)


def test_a_stub_cache_falls_back_to_recompute_with_a_warning():
    class StubCache(TinyLM):
        def new_cache(self, batch_size, max_len):
            raise NotImplementedError("write the KV cache in lesson 07")

    torch.manual_seed(0)
    model = StubCache(ModelConfig(context_length=32, d_model=32, n_layers=1, n_heads=2)).eval()
    with pytest.warns(UserWarning, match="KV cache unusable"):
        out = generate(model, [1, 2, 3], 10, seed=0)
    assert torch.equal(out, generate(model, [1, 2, 3], 10, seed=0, use_cache=False))
