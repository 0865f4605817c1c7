"""Sampling filters and generation with and without the KV cache."""

import pytest
import torch
from lm_tinymodel import NoCacheLM, TinyLM

from course.lm.config import ModelConfig
from course.lm.errors import SamplingError
from course.lm.sample import (
    check_generator,
    check_sampling_options,
    filter_logits,
    generate,
    next_token,
    sample_text,
)


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


# -- sampling options: out of range is a ValueError naming the argument ------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_k": -5}, "top_k"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"top_p": -1.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": float("nan")}, "top_p"),
    ],
)
def test_out_of_range_options_are_value_errors_naming_the_argument(kwargs, name):
    model = _model()
    for call in (
        lambda: generate(model, [1, 2], 3, **kwargs),
        lambda: next_token(torch.zeros(1, 256), **kwargs),
        lambda: check_sampling_options(**kwargs),
    ):
        with pytest.raises(ValueError, match=f"^{name} must be") as info:
            call()
        assert isinstance(info.value, SamplingError)
    if "temperature" not in kwargs:
        with pytest.raises(SamplingError, match=name):
            filter_logits(torch.zeros(1, 4), **kwargs)


def test_bad_lengths_and_prompts_are_value_errors():
    model = _model()
    with pytest.raises(SamplingError, match="max_new_tokens"):
        generate(model, [1, 2], -1)
    with pytest.raises(SamplingError, match=r"prompt ids must be in \[0, 256\)"):
        generate(model, [1, 300], 2)
    with pytest.raises(SamplingError, match="integer token ids"):
        generate(model, torch.tensor([0.5, 1.0]), 2)
    assert torch.equal(generate(model, [1, 2], 0), torch.tensor([1, 2]))


def test_top_p_zero_keeps_only_the_most_likely_token():
    logits = torch.tensor([[0.3, 2.0, 2.0, -1.0], [5.0, 1.0, 0.0, 5.0]])  # ties at the top
    kept = torch.isfinite(filter_logits(logits, top_p=0.0))
    assert kept.tolist() == [[False, True, False, False], [True, False, False, False]]
    assert kept.float().argmax(-1).tolist() == logits.argmax(-1).tolist()  # argmax's choice
    model = _model()
    greedy = generate(model, [5, 6, 7], 40, temperature=0)
    for use_cache in (True, False):
        nucleus = generate(model, [5, 6, 7], 40, top_p=0.0, seed=3, use_cache=use_cache)
        assert torch.equal(nucleus, greedy)
    top1 = generate(model, [5, 6, 7], 40, top_k=1, seed=3)
    assert torch.equal(top1, greedy)


def test_cached_and_recomputed_sampling_agree_past_the_context():
    model = _model(context_length=16)
    kw = dict(temperature=1.0, top_k=40, top_p=0.95, seed=5)
    cached = generate(model, list(range(10)), 48, **kw)
    assert torch.equal(cached, generate(model, list(range(10)), 48, use_cache=False, **kw))


def test_a_model_with_non_finite_logits_is_refused():
    model = _model()
    with torch.no_grad():
        model.embed.weight[3, 0] = float("nan")
    for temperature in (0.0, 1.0):
        with pytest.raises(SamplingError, match="not finite"):
            generate(model, [3, 4], 5, temperature=temperature)


def test_generators_cpu_for_any_model_or_on_the_models_device():
    model = _model()
    g = torch.Generator().manual_seed(9)
    a = generate(model, [1, 2], 10, generator=g)
    assert torch.equal(a, generate(model, [1, 2], 10, seed=9))  # seed = a CPU generator
    check_generator(torch.Generator(), torch.device("cuda"))  # a CPU one serves any device
    with pytest.raises(SamplingError, match="torch.Generator"):
        generate(model, [1, 2], 3, generator=9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_generator_draws_on_the_cuda_model_and_is_refused_for_a_cpu_one():
    model = _model()
    gen = torch.Generator(device="cuda").manual_seed(1)
    with pytest.raises(SamplingError, match="generator is on cuda"):
        generate(model, [1, 2], 3, generator=gen)
    model = model.cuda()
    out = generate(model, [1, 2], 8, generator=torch.Generator(device="cuda").manual_seed(1))
    again = generate(model, [1, 2], 8, generator=torch.Generator(device="cuda").manual_seed(1))
    assert out.device.type == "cuda" and torch.equal(out, again)
