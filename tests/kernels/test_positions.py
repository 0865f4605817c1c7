"""Sinusoidal encodings and their shift map, RoPE (interleaved and half-split), ALiBi."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from solutions.kernels.positions import (
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    alibi_bias,
    alibi_bias_from_positions,
    alibi_slopes,
    apply_rope,
    interleaved_to_half_split,
    inverse_frequencies,
    rope_cos_sin,
    rotate,
    rotate_complex,
    rotate_pairs,
    sinusoidal_shift_matrix,
    sinusoidal_table,
)


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_sinusoidal_table_entries_by_the_formula():
    pe = sinusoidal_table(50, 16)
    assert pe.shape == (50, 16)
    for p in (0, 1, 7, 49):
        for i in range(8):
            w = 10000 ** (-2 * i / 16)
            assert pe[p, 2 * i].item() == pytest.approx(math.sin(p * w), abs=1e-5)
            assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(p * w), abs=1e-5)


@pytest.mark.parametrize("k", [0, 1, 3, 17, -5])
def test_shift_matrix_moves_every_position_by_k(k):
    d = 32
    pe = sinusoidal_table(100, d).double()
    M = sinusoidal_shift_matrix(k, d).double()
    p = torch.arange(max(0, -k), min(100, 100 - k))
    torch.testing.assert_close(pe[p] @ M.T, pe[p + k], atol=1e-5, rtol=0)


def test_shift_matrix_is_block_diagonal_rotation_and_composes():
    d = 8
    M = sinusoidal_shift_matrix(4, d)
    torch.testing.assert_close(M @ M.T, torch.eye(d), atol=1e-6, rtol=0)  # orthogonal
    off_block = torch.ones(d, d, dtype=torch.bool)
    for i in range(d // 2):
        off_block[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = False
    assert (M[off_block] == 0).all()
    torch.testing.assert_close(
        sinusoidal_shift_matrix(3, d) @ sinusoidal_shift_matrix(4, d),
        sinusoidal_shift_matrix(7, d),
        atol=1e-6,
        rtol=0,
    )


def rope_by_complex_numbers(x: torch.Tensor, positions: torch.Tensor, theta=10000.0):
    """Independent formula: pair (2i, 2i+1) as x_2i + j x_2i+1, times exp(j * pos * w_i)."""
    d = x.shape[-1]
    z = torch.complex(x[..., 0::2].double(), x[..., 1::2].double())
    w = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    rotated = z * torch.polar(torch.ones_like(w), positions.double()[:, None] * w)
    return torch.stack((rotated.real, rotated.imag), dim=-1).flatten(-2).to(x.dtype)


@pytest.mark.parametrize("head_dim", [2, 8, 64])
def test_rope_matches_complex_formula(head_dim):
    x = randn(2, 3, 11, head_dim, seed=head_dim, dtype=torch.float64)
    positions = torch.tensor([0, 1, 2, 5, 9, 100, 101, 1000, 4095, 7, 3])
    expected = rope_by_complex_numbers(x, positions)
    torch.testing.assert_close(apply_rope(x, positions), expected, atol=1e-10, rtol=1e-10)
    # float32 angles are good to about position * 2^-24 radians.
    x32 = x.float()
    torch.testing.assert_close(apply_rope(x32, positions), expected.float(), atol=2e-3, rtol=0)
    default = rope_by_complex_numbers(x, torch.arange(11))  # positions default to arange
    torch.testing.assert_close(apply_rope(x), default, atol=1e-10, rtol=1e-10)


def test_rope_is_a_rotation_and_position_zero_is_identity():
    x = randn(4, 16, 32, seed=1)
    rotated = apply_rope(x, torch.arange(16) * 37)
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(apply_rope(x, torch.zeros(16, dtype=torch.long)), x)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(0, 2000), n=st.integers(0, 2000), shift=st.integers(-500, 500))
def test_rope_scores_depend_only_on_relative_position(m, n, shift):
    q, k = randn(1, 1, 16, seed=m % 7).double(), randn(1, 1, 16, seed=100 + n % 5).double()
    if m + shift < 0 or n + shift < 0:
        shift = -min(m, n)

    def score(a, b):
        qa = apply_rope(q, torch.tensor([a]))
        kb = apply_rope(k, torch.tensor([b]))
        return (qa * kb).sum().item()

    assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=1e-9)


def test_half_split_is_a_permutation_of_interleaved():
    d = 16
    perm = interleaved_to_half_split(d)
    assert sorted(perm.tolist()) == list(range(d))
    x = randn(2, 4, 9, d, seed=3)
    positions = torch.arange(9) * 3
    interleaved = apply_rope(x, positions)
    half = apply_rope(x[..., perm], positions, layout="half")
    torch.testing.assert_close(half, interleaved[..., perm])
    # ... and genuinely different layouts when applied to the same tensor.
    assert not torch.allclose(apply_rope(x, positions, layout="half"), interleaved)
    with pytest.raises(ValueError):
        apply_rope(x, layout="diagonal")


def test_rope_with_batched_positions_and_precomputed_tables():
    x = randn(2, 3, 5, 8, seed=4)
    positions = torch.tensor([[0, 1, 2, 3, 4], [10, 11, 12, 13, 14]])
    out = apply_rope(x, positions)
    torch.testing.assert_close(out[0], apply_rope(x[0], positions[0]))
    torch.testing.assert_close(out[1], apply_rope(x[1], positions[1]))
    cos_sin = rope_cos_sin(positions[1], 8)
    torch.testing.assert_close(apply_rope(x, rope=cos_sin), apply_rope(x, positions[1]))
    torch.testing.assert_close(RotaryEmbedding(8)(x, positions[1]), apply_rope(x, positions[1]))


def test_rope_theta_changes_the_frequencies():
    torch.testing.assert_close(inverse_frequencies(4, 100.0), torch.tensor([1.0, 0.1]))
    x = randn(3, 4, seed=5)
    assert not torch.allclose(apply_rope(x, theta=100.0), apply_rope(x))


def test_alibi_slopes_power_of_two_and_not():
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    torch.testing.assert_close(
        alibi_slopes(4), torch.tensor([2.0 ** -(2 * (i + 1)) for i in range(4)])
    )
    # 6 heads: the 4-head slopes, then slopes 1 and 3 of the 8-head sequence (paper's code).
    expected6 = [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]
    torch.testing.assert_close(alibi_slopes(6), torch.tensor(expected6))
    # 12 heads: 8-head slopes, then every other of the 16-head sequence.
    expected12 = [2 ** -(i + 1) for i in range(8)] + [2 ** (-0.5 * k) for k in (1, 3, 5, 7)]
    torch.testing.assert_close(alibi_slopes(12), torch.tensor(expected12))
    assert alibi_slopes(1).tolist() == [2**-8]
    for n in range(1, 40):
        slopes = alibi_slopes(n)
        assert len(set(slopes.tolist())) == n and (slopes > 0).all() and (slopes < 1).all()


def test_alibi_bias_values_and_cache_offset():
    bias = alibi_bias(4, 5)
    slopes = alibi_slopes(4)
    assert bias.shape == (4, 5, 5)
    for h in range(4):
        for i in range(5):
            for j in range(5):
                assert bias[h, i, j].item() == pytest.approx(-slopes[h].item() * abs(i - j))
    torch.testing.assert_close(alibi_bias(4, 2, past=3), bias[:, 3:])


def test_sinusoidal_module_adds_the_table():
    module = SinusoidalPositionalEncoding(8, 20)
    x = torch.zeros(2, 6, 8)
    torch.testing.assert_close(module(x), sinusoidal_table(6, 8).expand(2, 6, 8))
    torch.testing.assert_close(
        module(x, torch.arange(4, 10)), sinusoidal_table(10, 8)[4:].expand(2, 6, 8)
    )
    assert list(module.parameters()) == []


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_rope_hand_written_backward_matches_autograd(layout):
    x = randn(2, 3, 5, 8, seed=13, dtype=torch.float64).requires_grad_()
    positions = torch.tensor([[0, 3, 4, 9, 100], [7, 1, 2, 2, 50]])
    assert torch.autograd.gradcheck(lambda x: apply_rope(x, positions, layout=layout), (x,))
    # ... and equals autograd through the plain formula.
    cos, sin = rope_cos_sin(positions, 8, dtype=torch.float64)
    grad_out = randn(2, 3, 5, 8, seed=14, dtype=torch.float64)
    (ours,) = torch.autograd.grad(apply_rope(x, positions, layout=layout), x, grad_out)
    plain = rotate_pairs(x, cos[:, None], sin[:, None], layout)
    (expected,) = torch.autograd.grad(plain, x, grad_out)
    torch.testing.assert_close(ours, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("layout", ["interleaved", "half"])
@pytest.mark.parametrize("grad", [False, True])
def test_rope_fast_paths_equal_the_plain_rotation(dtype, layout, grad):
    # The complex-number path (float32/64, interleaved) and the autograd.Function must give
    # exactly what rotate_pairs gives, also for a view whose strides are not contiguous (the
    # query/key part of a fused qkv projection, and a transposed one).
    fused = randn(2, 5, 3 * 4 * 8, seed=21).to(dtype)
    views = {
        "qk slice": fused[..., : 2 * 4 * 8].unflatten(-1, (8, 8)),
        "transposed": fused[..., :32].unflatten(-1, (4, 8)).transpose(1, 2),
        "odd offset": fused[..., 1:33].unflatten(-1, (4, 8)),
    }
    cos, sin = rope_cos_sin(torch.arange(3, 8), 8, dtype=dtype)
    for name, x in views.items():
        x = x.detach().requires_grad_(grad)
        c, s = (t[:, None] if name != "transposed" else t for t in (cos, sin))
        tol = {"atol": 1e-2, "rtol": 1e-2} if dtype == torch.bfloat16 else {}
        expected = rotate_pairs(x.detach(), c, s, layout)
        with torch.set_grad_enabled(grad):
            got = rotate(x, c, s, layout)
        torch.testing.assert_close(got, expected, **tol, msg=lambda m, name=name: f"{name}: {m}")
        assert got.requires_grad == grad
        # The same tables as one complex tensor (bfloat16 has none: float32 ones, rounded at use).
        cis = (
            torch.complex(c.float(), s.float()) if dtype == torch.bfloat16 else torch.complex(c, s)
        )
        with torch.set_grad_enabled(grad):
            got_cis = rotate_complex(x, cis, layout)
        assert got_cis.requires_grad == grad and got_cis.dtype == dtype
        if dtype == torch.bfloat16:
            torch.testing.assert_close(got_cis, expected, **tol)
        else:
            assert torch.equal(got_cis, got), name


def test_float64_tables_are_float64_accurate():
    # Position 119, the last pair of head_dim 32: float32 angles are off by ~1e-6 there.
    positions = torch.arange(120)
    cos, sin = rope_cos_sin(positions, 32, dtype=torch.float64)
    w = 10000.0 ** (-torch.arange(0, 32, 2, dtype=torch.float64) / 32)
    exact = 119 * w
    assert (cos[119] - torch.cos(exact)).abs().max().item() < 1e-12
    assert (sin[119] - torch.sin(exact)).abs().max().item() < 1e-12
    # float32 tables are the float64 ones rounded once: within one float32 rounding.
    cos32, _ = rope_cos_sin(positions, 32)
    assert cos32.dtype == torch.float32
    assert (cos32.double() - cos).abs().max().item() < 1e-7
    table = sinusoidal_table(120, 32, dtype=torch.float64)
    assert table.dtype == torch.float64
    assert (table[119, 0::2] - torch.sin(exact)).abs().max().item() < 1e-12


def test_alibi_bias_from_arbitrary_positions():
    q_pos, k_pos = torch.tensor([5, 9]), torch.tensor([0, 3, 9, 12])
    bias = alibi_bias_from_positions(12, q_pos, k_pos)
    slopes = alibi_slopes(12)
    assert bias.shape == (12, 2, 4)
    expected = -slopes[:, None, None] * (q_pos[:, None] - k_pos[None, :]).abs()
    torch.testing.assert_close(bias, expected)
    torch.testing.assert_close(
        alibi_bias(4, 3, past=2), alibi_bias_from_positions(4, torch.arange(2, 5), torch.arange(5))
    )
    assert alibi_slopes(12, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError):
        alibi_slopes(0)


def test_unknown_layout_is_refused_everywhere():
    x = randn(1, 2, 4, 8)
    cos, sin = rope_cos_sin(torch.arange(4), 8)
    for call in (
        lambda: apply_rope(x, layout="halves"),
        lambda: rotate_pairs(x, cos, sin, "halves"),
        lambda: RotaryEmbedding(8, layout="halves"),
    ):
        with pytest.raises(ValueError, match="rope_layout"):
            call()


# ---------------------------------------------------------------- lesson 05's references


def test_converted_weights_give_half_split_rope_the_same_scores():
    """Permuting each head's rows of W_q and W_k makes half-split RoPE reproduce interleaved."""
    from solutions.kernels.positions import rope_weights_to_half_split

    n_heads, head_dim, d_model, T = 3, 8, 12, 5
    x = randn(T, d_model, seed=1, dtype=torch.float64)
    W_q, W_k = randn(2, n_heads * head_dim, d_model, seed=2, dtype=torch.float64)
    cos, sin = rope_cos_sin(torch.arange(7, 7 + T), head_dim, dtype=torch.float64)

    def scores(W_q, W_k, layout):
        q, k = ((x @ W.T).view(T, n_heads, head_dim).transpose(0, 1) for W in (W_q, W_k))
        q, k = rotate_pairs(q, cos, sin, layout), rotate_pairs(k, cos, sin, layout)
        return q @ k.transpose(-2, -1)

    converted = (rope_weights_to_half_split(W, n_heads) for W in (W_q, W_k))
    torch.testing.assert_close(scores(*converted, "half"), scores(W_q, W_k, "interleaved"))
    assert (scores(W_q, W_k, "half") - scores(W_q, W_k, "interleaved")).abs().max() > 1.0
    with pytest.raises(ValueError, match="heads of even width"):
        rope_weights_to_half_split(W_q, 5)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_rope_attention_is_sdpa_on_rotated_queries_and_keys(layout):
    from solutions.kernels.positions import rope_attention

    q, k, v = randn(3, 2, 6, 8, seed=3, dtype=torch.float64)
    cos, sin = rope_cos_sin(torch.tensor([0, 1, 4, 5, 9, 10]), 8, dtype=torch.float64)
    want = torch.nn.functional.scaled_dot_product_attention(
        rotate_pairs(q, cos, sin, layout), rotate_pairs(k, cos, sin, layout), v
    )
    torch.testing.assert_close(rope_attention(q, k, v, cos, sin, layout), want)
    shifted = rope_cos_sin(torch.tensor([0, 1, 4, 5, 9, 10]) + 1000, 8, dtype=torch.float64)
    torch.testing.assert_close(rope_attention(q, k, v, *shifted, layout), want)


def test_alibi_bias_from_slopes_matches_the_per_head_count_version():
    from solutions.kernels.positions import alibi_bias_from_slopes

    q_pos, k_pos = torch.tensor([5, 6]), torch.arange(7)
    slopes = alibi_slopes(12, dtype=torch.float64)
    torch.testing.assert_close(
        alibi_bias_from_slopes(slopes, q_pos, k_pos),
        alibi_bias_from_positions(12, q_pos, k_pos, dtype=torch.float64),
    )
