"""Scaled dot-product attention against PyTorch's, and the fully-masked-row guarantees."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from solutions.kernels.attention import (
    attention_entropy,
    masked_softmax,
    scaled_dot_product_attention,
)


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def random_mask(*shape, seed=0, p=0.5):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) < p


@settings(max_examples=40, deadline=None)
@given(
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=3),
    q_len=st.integers(1, 7),
    k_len=st.integers(1, 7),
    d=st.integers(1, 9),
    d_v=st.integers(1, 9),
    use_mask=st.booleans(),
    scale=st.one_of(st.none(), st.floats(0.05, 2.0)),
    seed=st.integers(0, 2**16),
)
def test_matches_torch_sdpa(batch, q_len, k_len, d, d_v, use_mask, scale, seed):
    q = randn(*batch, q_len, d, seed=seed)
    k = randn(*batch, k_len, d, seed=seed + 1)
    v = randn(*batch, k_len, d_v, seed=seed + 2)
    # Some rows end up fully masked: PyTorch 2.5+ also returns zeros there.
    mask = random_mask(*batch, q_len, k_len, seed=seed + 3, p=0.6) if use_mask else None
    out = scaled_dot_product_attention(q, k, v, mask=mask, scale=scale)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    assert out.shape == (*batch, q_len, d_v)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_default_scale_is_inverse_sqrt_head_dim():
    q, k, v = randn(2, 5, 16, seed=1), randn(2, 6, 16, seed=2), randn(2, 6, 3, seed=3)
    explicit = scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(16))
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v), explicit)
    assert not torch.allclose(scaled_dot_product_attention(q, k, v, scale=1.0), explicit)


def test_weights_are_a_masked_distribution_and_reproduce_the_output():
    q, k, v = randn(2, 3, 5, 8, seed=1), randn(2, 3, 7, 8, seed=2), randn(2, 3, 7, 4, seed=3)
    mask = random_mask(5, 7, seed=4)
    mask[:, 2] = True
    out, w = scaled_dot_product_attention(q, k, v, mask=mask, return_weights=True)
    assert w.shape == (2, 3, 5, 7)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 5))
    assert (w[..., ~mask] == 0).all()
    torch.testing.assert_close(out, w @ v)


def test_additive_bias_matches_float_mask_of_torch_sdpa():
    q, k, v = randn(2, 4, 6, 8, seed=1), randn(2, 4, 6, 8, seed=2), randn(2, 4, 6, 8, seed=3)
    bias = randn(4, 6, 6, seed=4)
    mask = torch.ones(6, 6, dtype=torch.bool).tril()
    out = scaled_dot_product_attention(q, k, v, mask=mask, attn_bias=bias)
    float_mask = bias.masked_fill(~mask, float("-inf"))
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=float_mask)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_rejects_non_boolean_mask():
    q = randn(3, 4)
    with pytest.raises(TypeError, match="boolean"):
        scaled_dot_product_attention(q, q, q, mask=torch.ones(3, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_fully_masked_rows_give_zeros_and_finite_grads(dtype):
    q = randn(2, 2, 4, 8, seed=1, dtype=dtype).requires_grad_()
    k = randn(2, 2, 5, 8, seed=2, dtype=dtype).requires_grad_()
    v = randn(2, 2, 5, 8, seed=3, dtype=dtype).requires_grad_()
    mask = torch.ones(2, 2, 4, 5, dtype=torch.bool)
    mask[0, 1, 2] = False  # one query of one head sees nothing
    mask[1, :, 0] = False  # query 0 of every head of batch 1 sees nothing
    out, w = scaled_dot_product_attention(q, k, v, mask=mask, return_weights=True)
    assert out.dtype == dtype
    assert torch.isfinite(out).all() and torch.isfinite(w).all()
    assert (out[0, 1, 2] == 0).all() and (out[1, :, 0] == 0).all()
    assert (w[0, 1, 2] == 0).all() and (w[1, :, 0] == 0).all()
    # The rows that do see keys are unaffected by the dead rows.
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    tol = 1e-2 if dtype == torch.float16 else 1e-5
    torch.testing.assert_close(out[0, 0].double(), ref[0, 0], atol=tol, rtol=tol)
    out.float().square().sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    # A dead query row influences nothing, so its gradient is exactly zero.
    assert (q.grad[0, 1, 2] == 0).all() and (q.grad[1, :, 0] == 0).all()


def test_all_rows_masked_is_all_zeros_in_float16():
    q = randn(3, 4, dtype=torch.float16)
    out = scaled_dot_product_attention(q, q, q, mask=torch.zeros(3, 3, dtype=torch.bool))
    assert torch.equal(out, torch.zeros_like(out))


def test_float16_large_scores_stay_finite_and_match_float32():
    # Scores near 1e4 overflow exp() in float16 without the max shift.
    q, k, v = randn(2, 6, 16, seed=1) * 30, randn(2, 6, 16, seed=2) * 30, randn(2, 6, 16, seed=3)
    mask = torch.ones(6, 6, dtype=torch.bool).tril()
    out16 = scaled_dot_product_attention(q.half(), k.half(), v.half(), mask=mask)
    out32 = scaled_dot_product_attention(q, k, v, mask=mask)
    assert torch.isfinite(out16).all()
    torch.testing.assert_close(out16.float(), out32, atol=5e-2, rtol=5e-2)


def test_gradcheck_with_masked_and_fully_masked_rows():
    q = randn(1, 2, 3, 4, seed=1, dtype=torch.float64).requires_grad_()
    k = randn(1, 2, 5, 4, seed=2, dtype=torch.float64).requires_grad_()
    v = randn(1, 2, 5, 3, seed=3, dtype=torch.float64).requires_grad_()
    bias = randn(2, 3, 5, seed=4, dtype=torch.float64).requires_grad_()
    mask = random_mask(1, 2, 3, 5, seed=5)
    mask[0, 0, 1] = False
    mask[0, 1, 0] = True

    def f(q, k, v, bias):
        return scaled_dot_product_attention(q, k, v, mask=mask, attn_bias=bias)

    assert torch.autograd.gradcheck(f, (q, k, v, bias))


def test_masked_softmax_without_mask_is_softmax():
    x = randn(3, 5, seed=7)
    torch.testing.assert_close(masked_softmax(x), torch.softmax(x, -1))


def test_dropout_keeps_expected_value_and_returns_undropped_weights():
    # 2000 copies of one problem in a batch: their average estimates the expected output.
    q, k = randn(1, 4, 8, seed=1).expand(2000, 4, 8), randn(1, 6, 8, seed=2).expand(2000, 6, 8)
    v = torch.ones(2000, 6, 1)
    torch.manual_seed(0)
    out, w = scaled_dot_product_attention(q, k, v, dropout_p=0.5, return_weights=True)
    # With values all 1 the output is the kept weight mass / (1 - p): 1 on average.
    assert out.std().item() > 0.1  # dropout did happen
    torch.testing.assert_close(out.mean(0), torch.ones(4, 1), atol=0.05, rtol=0)
    torch.testing.assert_close(w.sum(-1), torch.ones(2000, 4))


def test_attention_entropy_bounds():
    w = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(attention_entropy(w), torch.tensor([0.0, math.log(4), 0.0]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_the_masked_softmax_stand_in_agrees_with_the_kernel(dtype):
    # course.stand_ins.masked_softmax replaces a learner's masked_softmax while lesson 03 judges
    # masked_attention: it must be this kernel, empty rows and gradients included.
    from course.stand_ins import masked_softmax as stand_in

    g = torch.Generator().manual_seed(3)
    scores = (torch.randn(2, 5, 6, generator=g, dtype=torch.float64) * 4).to(dtype)
    mask = torch.rand(5, 6, generator=g) < 0.6
    mask[1] = False
    tol = {"atol": 2e-3, "rtol": 1e-2} if dtype in (torch.float16, torch.bfloat16) else {}
    torch.testing.assert_close(stand_in(scores, mask), masked_softmax(scores, mask), **tol)
    if dtype == torch.float64:
        a = scores.clone().requires_grad_(True)
        b = scores.clone().requires_grad_(True)
        w = torch.randn(2, 5, 6, generator=g, dtype=dtype)
        with torch.autograd.detect_anomaly():
            (stand_in(a, mask) * w).sum().backward()
        (masked_softmax(b, mask) * w).sum().backward()
        torch.testing.assert_close(a.grad, b.grad)
    keys = torch.tensor([True, False, True, True, False, True])  # (k_len,), broadcast
    four_d = scores.reshape(1, 2, 5, 6)
    torch.testing.assert_close(stand_in(four_d, keys), masked_softmax(four_d, keys), **tol)
    padded = torch.tensor([[True] * 6, [True] * 3 + [False] * 3]).reshape(2, 1, 1, 6)
    torch.testing.assert_close(
        stand_in(scores[0], padded), masked_softmax(scores[0], padded), **tol
    )
    with pytest.raises(TypeError, match="boolean mask"):
        stand_in(scores, None)
    with pytest.raises(TypeError, match="boolean mask"):
        stand_in(scores, mask.float())


# ---------------------------------------------------------------- lesson 02's signatures


def test_attention_weights_match_torch_sdpa_with_identity_values():
    from solutions.kernels.attention import attention_weights

    q, k = randn(2, 3, 5, 8, seed=1), randn(2, 3, 7, 8, seed=2)
    mask = random_mask(5, 7, seed=3, p=0.6)
    mask[:, 0] = True
    eye = torch.eye(7).expand(2, 3, 7, 7)
    for scale in (None, 0.0, 0.3):
        got = attention_weights(q, k, mask, scale)
        want = F.scaled_dot_product_attention(q, k, eye, attn_mask=mask, scale=scale)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    uniform = attention_weights(q, k, scale=0.0)
    torch.testing.assert_close(uniform, torch.full_like(uniform, 1 / 7))


def test_scaling_experiment_limits():
    from solutions.kernels.attention import scaling_experiment

    q, k = randn(32, 16, seed=1), randn(10, 16, seed=2)
    uniform = scaling_experiment(q, k, 0.0)
    torch.testing.assert_close(
        uniform, torch.tensor([0.1, math.log(10), math.sqrt(9) / 10]), atol=1e-6, rtol=1e-6
    )
    saturated = scaling_experiment(q, k, 100.0)
    assert saturated[0] > 0.99 and saturated[1] < 0.05 and saturated[2] < 0.05
    assert scaling_experiment(q.double(), k.double(), 0.25).dtype == torch.float64
