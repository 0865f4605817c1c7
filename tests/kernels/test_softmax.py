"""The reference softmax kernels against PyTorch's own, over shapes, dims, dtypes and magnitudes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from solutions.kernels import softmax as K

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
TOL = {
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1e-2, rtol=1e-2),
    torch.float32: dict(atol=1e-6, rtol=1e-5),
    torch.float64: dict(atol=1e-12, rtol=1e-10),
}


@st.composite
def logits(draw, min_dims=1, allow_neg_inf=True):
    """A tensor of logits with a scale up to 1e4, some -inf entries, and a chosen `dim`."""
    shape = draw(st.lists(st.integers(1, 6), min_size=min_dims, max_size=4))
    dtype = draw(st.sampled_from(DTYPES))
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0, 1e3, 1e4]))
    offset = draw(st.sampled_from([0.0, -1e4, 1e4]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale + offset
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    if allow_neg_inf and draw(st.booleans()):
        drop = torch.rand(shape, generator=g) < 0.3
        # keep one finite entry in every row along `dim`: an all -inf row has no softmax
        first = torch.zeros(shape, dtype=torch.bool).movedim(dim, -1)
        first[..., 0] = True
        drop &= ~first.movedim(-1, dim)
        x = x.masked_fill(drop, float("-inf"))
    if dtype is torch.float16:
        x = x.clamp(min=-6e4, max=6e4)  # float16 overflows past 65504: those inputs do not exist
    return x.to(dtype), dim


def assert_close(got, want, dtype):
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, **TOL[dtype], equal_nan=True)


@settings(max_examples=150, deadline=None)
@given(logits())
def test_softmax_matches_torch(case):
    x, dim = case
    assert_close(K.softmax(x, dim), torch.softmax(x, dim), x.dtype)


@settings(max_examples=150, deadline=None)
@given(logits())
def test_log_softmax_matches_torch(case):
    x, dim = case
    assert_close(K.log_softmax(x, dim), torch.log_softmax(x, dim), x.dtype)


@settings(max_examples=150, deadline=None)
@given(logits(), st.booleans())
def test_logsumexp_matches_torch(case, keepdim):
    x, dim = case
    want = torch.logsumexp(
        x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, dim, keepdim
    )
    assert_close(K.logsumexp(x, dim, keepdim), want.to(x.dtype), x.dtype)


@settings(max_examples=100, deadline=None)
@given(logits(), st.sampled_from([1, 2, 3, 7, 128]))
def test_online_softmax_matches_torch(case, block_size):
    x, dim = case
    assert_close(K.online_softmax(x, dim, block_size=block_size), torch.softmax(x, dim), x.dtype)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 5),
    st.integers(1, 4),
    st.integers(2, 9),
    st.sampled_from([torch.float32, torch.float64]),
    st.sampled_from([1.0, 1e3, 1e4]),
    st.sampled_from([None, -100, 0]),
    st.integers(0, 2**31 - 1),
)
def test_cross_entropy_matches_torch(b, t, c, dtype, scale, ignore, seed):
    g = torch.Generator().manual_seed(seed)
    logits_ = (torch.randn(b, t, c, generator=g, dtype=torch.float64) * scale).to(dtype)
    targets = torch.randint(0, c, (b, t), generator=g)
    if ignore is not None:
        targets[0, 0] = ignore  # at least one ignored position whatever the draw
        kwargs = dict(ignore_index=ignore)
    else:
        kwargs = dict(ignore_index=None)
    want = F.cross_entropy(
        logits_.reshape(-1, c), targets.reshape(-1), ignore_index=-100 if ignore is None else ignore
    )
    got = K.cross_entropy(logits_, targets, **kwargs)
    assert_close(got, want, dtype)


def test_cross_entropy_rejects_mismatched_targets():
    with pytest.raises(ValueError, match="targets of shape"):
        K.cross_entropy(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))


def test_huge_logits_give_finite_probabilities_where_naive_overflows():
    x = torch.tensor([[1e4, 1e4 - 1.0, -1e4]], dtype=torch.float32)
    naive = torch.exp(x) / torch.exp(x).sum(-1, keepdim=True)
    assert torch.isnan(naive).any()
    p = K.softmax(x)
    assert torch.isfinite(p).all()
    torch.testing.assert_close(p, torch.softmax(x, -1))


def test_all_neg_inf_row_behaves_like_torch():
    x = torch.full((2, 4), float("-inf"))
    x[1, 2] = 0.0
    assert torch.isnan(K.softmax(x)[0]).all() and torch.isnan(torch.softmax(x, -1)[0]).all()
    assert torch.equal(K.softmax(x)[1], torch.tensor([0.0, 0.0, 1.0, 0.0]))
    assert K.logsumexp(x)[0] == float("-inf")
    assert torch.isnan(K.online_softmax(x)[0]).all()


@pytest.mark.parametrize("fn", [K.softmax, K.log_softmax, K.logsumexp, K.online_softmax])
def test_gradients_match_autograd_of_torch(fn):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 5, generator=g, dtype=torch.float64) * 50).requires_grad_()
    torch.autograd.gradcheck(lambda t: fn(t, dim=-1), (x,))
    ref = {
        K.softmax: lambda t: torch.softmax(t, -1),
        K.log_softmax: lambda t: torch.log_softmax(t, -1),
        K.logsumexp: lambda t: torch.logsumexp(t, -1),
        K.online_softmax: lambda t: torch.softmax(t, -1),
    }[fn]
    w = torch.randn(fn(x, dim=-1).shape, generator=g, dtype=torch.float64)
    (got,) = torch.autograd.grad((fn(x, dim=-1) * w).sum(), x)
    (want,) = torch.autograd.grad((ref(x) * w).sum(), x)
    torch.testing.assert_close(got, want)


def test_cross_entropy_gradient_matches_torch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 7, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, -100, 6])
    (got,) = torch.autograd.grad(K.cross_entropy(x, y), x)
    (want,) = torch.autograd.grad(F.cross_entropy(x, y), x)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("n", [1, 3, 8])
def test_jacobian_matches_autograd(n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(2, n, generator=g, dtype=torch.float64)
    p = torch.softmax(x, -1)
    jac = K.softmax_jacobian(p)
    for row in range(2):
        want = torch.autograd.functional.jacobian(lambda t: torch.softmax(t, -1), x[row])
        torch.testing.assert_close(jac[row], want)
    # every row of the Jacobian sums to 0: shifting all logits changes nothing
    torch.testing.assert_close(jac.sum(-1), torch.zeros(2, n, dtype=torch.float64))


def test_online_stats_are_max_and_shifted_sum():
    x = torch.tensor([[3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0]])
    m, s = K.online_softmax_stats(x, block_size=3)
    assert m.item() == 9.0
    torch.testing.assert_close(s, torch.exp(x - 9.0).sum(-1, keepdim=True))
    with pytest.raises(ValueError):
        K.online_softmax_stats(x, block_size=0)


def test_entropy_handles_zero_probabilities():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.25, 0.25, 0.5]])
    want = torch.tensor([0.0, math.log(2), 1.5 * math.log(2)])
    torch.testing.assert_close(K.entropy(p), want)
    torch.testing.assert_close(K.entropy(p.T, dim=0), want)


def test_online_update_matches_two_block_formula():
    a, b = torch.tensor([[1.0, 5.0]]), torch.tensor([[7.0, -2.0, 0.5]])
    m0 = torch.full((1, 1), float("-inf"))
    m1, s1 = K.online_softmax_update(m0, torch.zeros(1, 1), a)
    m2, s2 = K.online_softmax_update(m1, s1, b)
    full = torch.cat([a, b], -1)
    assert m2.item() == 7.0
    torch.testing.assert_close(s2, torch.exp(full - 7.0).sum(-1, keepdim=True))
