"""Lesson 07's explorer runs the learner's KV cache and byte formula: the speed view decodes
with the cache and with recompute and says whether the logits agree; the calculator gives the
published configurations' cache sizes through the learner's formula."""

from __future__ import annotations

from dataclasses import astuple

import pytest

from course.probe_layers import GrowingCache
from course.widgets import kv_cache_explorer
from course.widgets.kv_cache import MODELS
from solutions.kernels.kv_cache import KVCache, kv_cache_bytes_for

KiB = 1024


def explorer(cache_class=KVCache, bytes_fn=kv_cache_bytes_for):
    return kv_cache_explorer(cache_class, bytes_fn, tokens=16)  # enough for every property


def test_speed_view_decodes_with_the_learners_cache_and_finds_it_exact():
    w = explorer()
    assert w.error is None, w.error
    assert bytes(w.image.value).startswith(b"\x89PNG")
    state = w.state
    assert state["gap"] <= 1e-4 and "✔ cached logits equal" in w.readout.value
    assert len(state["cached_s"]) == 16 and len(state["recompute_s"]) == len(state["positions"])
    # A preallocated cache holds the same memory at every step: all of max_len, from the start.
    assert len(set(state["memory"])) == 1
    assert state["memory"][0] == state["formula"][-1]


def test_a_cache_whose_pointer_never_moves_is_flagged():
    class Stuck(KVCache):
        def advance(self, n):
            pass

    w = explorer(cache_class=Stuck)
    assert w.error is None, w.error
    assert w.state["gap"] > 1e-3
    assert "✘" in w.readout.value and "not exact" in w.readout.value


def test_a_concatenating_cache_grows_with_the_sequence():
    class Concatenating(GrowingCache):
        def __init__(self, n_layers, batch_size, n_kv_heads, max_len, head_dim, dtype=None):
            super().__init__(n_layers)

    w = explorer(cache_class=Concatenating)
    memory = w.state["memory"]
    assert w.state["gap"] <= 1e-4
    assert all(b > a for a, b in zip(memory, memory[1:], strict=False))
    assert memory == w.state["formula"]  # it holds exactly the filled positions


def test_the_kv_heads_switch_changes_the_cache():
    w = explorer()
    w.kv_heads.value = 4
    mha = w.state["memory"][0]
    w.kv_heads.value = 1
    assert w.state["memory"][0] * 4 == mha


@pytest.fixture(scope="module")
def calculator():
    w = explorer()
    w.view.value = "calculator"
    return w


@pytest.mark.parametrize(
    "model, dtype, kib",
    [
        ("GPT-2 small", "float32 (4 bytes)", 72),
        ("Llama-2-7B", "bfloat16 / float16 (2 bytes)", 512),
        ("Llama-2-70B (GQA-8)", "bfloat16 / float16 (2 bytes)", 320),
        ("Llama-3-8B (GQA-8)", "bfloat16 / float16 (2 bytes)", 128),
        ("Falcon-7B (MQA)", "bfloat16 / float16 (2 bytes)", 8),
        ("DeepSeek-V2 (MLA)", "bfloat16 / float16 (2 bytes)", 67.5),
    ],
)
def test_calculator_gives_the_published_configurations_sizes(calculator, model, dtype, kib):
    w = calculator
    w.dtype.value = dtype
    w.model.value = model
    assert w.error is None, w.error
    assert w.state["per_token"][model] == kib * KiB
    assert MODELS[model].source.split()[0] in w.readout.value
    assert w.model.disabled is False and w.length.disabled is True


def test_calculator_runs_the_learners_formula():
    w = explorer(
        bytes_fn=lambda c, t, b, n: 2 * c["n_layers"] * b * c["n_heads"] * t * c["head_dim"] * n
    )
    w.view.value = "calculator"
    w.model.value = "Llama-2-70B (GQA-8)"
    # A formula with n_heads instead of n_kv_heads loses GQA's factor 8.
    assert w.state["per_token"]["Llama-2-70B (GQA-8)"] == 8 * 320 * KiB
    w.model.value = "Llama-2-7B"
    assert w.state["at_context"] == 2 * 1024**3
    assert "2 GiB at its 4,096-token context" in w.readout.value


def test_an_unwritten_cache_is_reported_not_raised():
    class Unwritten:
        def __init__(self, *args, **kwargs):
            raise NotImplementedError

    w = explorer(cache_class=Unwritten)
    assert w.error and "KVCache is not written yet" in w.error


def test_an_unwritten_byte_formula_is_named_in_the_calculator():
    def unwritten(config, seq_len, batch_size=1, bytes_per_element=2):
        raise NotImplementedError

    w = explorer(bytes_fn=unwritten)
    assert w.error is None, w.error  # the speed view needs only the cache
    w.view.value = "calculator"
    assert w.error and "kv_cache_bytes is not written yet" in w.error


def test_the_exactness_verdict_uses_the_notebooks_bound():
    from course.compare_plain import tolerance_for
    from course.widgets.kv_cache import EXACT

    assert (EXACT.atol, EXACT.rtol) == (1e-5, 1e-4) == astuple(tolerance_for("float32"))[:2]
    w = explorer()
    assert w.state["exact"] and w.state["gap"] <= 1e-4 and "✔" in w.readout.value
