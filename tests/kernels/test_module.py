"""`Module`'s fast attribute reads must never disagree with nn.Module's own bookkeeping."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
from torch import nn

from course.lm.config import ModelConfig
from solutions.kernels.model import TransformerLM
from solutions.kernels.module import Linear, Module
from solutions.kernels.norms import LayerNorm


class Pair(Module):
    def __init__(self):
        super().__init__()
        self.first = Linear(3, 4)
        self.second = Linear(4, 2, bias=False)
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x):
        return self.second(self.first(x)) * self.scale


def test_reads_go_through_the_descriptor_and_match_the_dicts():
    m = Pair()
    assert "first" not in m.__dict__ and "weight" not in m.first.__dict__
    assert m.first is m._modules["first"] and m.first.weight is m.first._parameters["weight"]
    assert m.second.bias is None and m.scale is m._buffers["scale"]
    assert isinstance(m.first, nn.Linear)
    assert set(m.state_dict()) == {"first.weight", "first.bias", "second.weight", "scale"}
    with pytest.raises(AttributeError, match="no attribute 'third'"):
        m.third  # noqa: B018


def test_reassignment_deletion_and_assign_loading_are_seen():
    m = Pair()
    new = Linear(3, 4)
    m.first = new
    assert m.first is new
    m.first.weight = nn.Parameter(torch.ones(4, 3))
    assert torch.equal(m.first.weight, torch.ones(4, 3))
    state = {k: torch.full_like(v, 7.0) for k, v in m.state_dict().items()}
    m.load_state_dict(state, assign=True)
    assert (m.first.weight == 7).all() and m.first.weight is m.first._parameters["weight"]
    del m.first
    with pytest.raises(AttributeError):
        m.first  # noqa: B018
    norm = LayerNorm(4, bias=False)
    assert norm.bias is None and LayerNorm(4).bias is not None  # same class, both kinds


def test_functional_call_and_conversions_use_the_live_tensors():
    m = Pair()
    x = torch.randn(5, 3)
    zeros = {k: torch.zeros_like(v) for k, v in m.named_parameters()}
    out = torch.func.functional_call(m, zeros, (x,))
    assert torch.equal(out, torch.zeros(5, 2))  # the swapped-in tensors, not stale ones
    assert not torch.equal(m(x), out)
    m64 = copy.deepcopy(m).double()
    assert m64.first.weight.dtype == torch.float64
    torch.testing.assert_close(m64(x.double()).float(), m(x), atol=1e-6, rtol=1e-5)
    restored = pickle.loads(pickle.dumps(m))
    torch.testing.assert_close(restored(x), m(x))


def test_compiled_model_agrees_with_eager():
    config = ModelConfig(vocab_size=50, context_length=16, d_model=32, n_layers=2, n_heads=4)
    model = TransformerLM(config, seed=0).eval()
    idx = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(idx), model(idx))


def test_hooks_tracing_and_compiled_modules_still_take_nn_modules_call():
    # Module.__call__ skips nn.Module's machinery only while there is nothing for it to do.
    m = Pair()
    x = torch.randn(5, 3)
    plain = m(x)
    pre = m.first.register_forward_pre_hook(lambda mod, args: (args[0] * 0,))
    post = m.register_forward_hook(lambda mod, args, out: out + 1)
    torch.testing.assert_close(m(x), m.second(m.first.bias.expand(5, 4)) * 2 + 1)
    pre.remove(), post.remove()
    assert torch.equal(m(x), plain)
    seen = []
    handle = nn.modules.module.register_module_forward_hook(lambda mod, a, o: seen.append(mod))
    try:
        m(x)
    finally:
        handle.remove()
    assert seen == [m.first, m.second, m]
    m(x)
    assert len(seen) == 3  # removed: the fast path again
    with warnings.catch_warnings():  # torch.jit.trace is deprecated, but still traces modules
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(m, x)
    assert "first" in str(traced.graph) and torch.equal(traced(x), plain)
    m.compile(backend="eager")
    assert m._compiled_call_impl is not None
    torch.testing.assert_close(m(x), plain)
