"""The variance kernels of lesson 02 against sympy.stats, and the Monte Carlo error bar."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch
from sympy import stats

from solutions.kernels.variance import (
    D_K,
    SIGMA_K,
    SIGMA_Q,
    dot_product_kurtosis,
    dot_product_variance,
    expectation,
    logit_variances,
    monte_carlo_relative_se,
    monte_carlo_variance,
    variance,
)


def test_expectation_applies_linearity_independence_and_moments():
    q, k, c = sp.symbols("q k c")
    pair = {q: SIGMA_Q**2, k: SIGMA_K**2}
    assert expectation(q * k, pair) == 0
    assert expectation(3 * c * q**2 * k**2 + q, pair) == 3 * c * SIGMA_Q**2 * SIGMA_K**2
    with pytest.raises(ValueError, match="q\\*\\*4"):
        expectation(q**4, pair)


def test_one_product_agrees_with_sympy_stats_integration():
    # sympy.stats integrates over two Gaussian densities: it knows nothing of our rules.
    Q, K = stats.Normal("Q", 0, SIGMA_Q), stats.Normal("K", 0, SIGMA_K)
    assert sp.simplify(stats.variance(Q * K) - dot_product_variance(1)) == 0


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_dot_product_variance_is_n_sigma_q2_sigma_k2(n):
    assert sp.simplify(dot_product_variance(n) - n * SIGMA_Q**2 * SIGMA_K**2) == 0


@pytest.mark.parametrize("bad", [D_K, 2.0, 0, True])
def test_dot_product_variance_refuses_anything_but_a_positive_int(bad):
    with pytest.raises(TypeError, match="positive int"):
        dot_product_variance(bad)


def test_logit_variances_follow_var_cx_equals_c2_var_x():
    raw, sqrt_scaled, d_scaled = logit_variances()
    c = sp.Symbol("c", positive=True)
    q, k = sp.symbols("q k")
    one_pair = {q: SIGMA_Q**2, k: SIGMA_K**2}
    assert sp.simplify(variance(c * q * k, one_pair) - c**2 * SIGMA_Q**2 * SIGMA_K**2) == 0
    assert sp.simplify(raw.subs(D_K, 7) - dot_product_variance(7)) == 0
    assert sp.simplify(sqrt_scaled - (1 / sp.sqrt(D_K)) ** 2 * raw) == 0
    assert sp.simplify(d_scaled - raw / D_K**2) == 0
    assert sp.diff(sqrt_scaled, D_K) == 0 and sp.limit(d_scaled, D_K, sp.oo) == 0


def test_monte_carlo_estimate_is_a_float_near_the_formula():
    got = monte_carlo_variance(16, 40_000, 1.5, 0.5, seed=3)
    want = 16 * 1.5**2 * 0.5**2
    assert isinstance(got, float)
    assert abs(got / want - 1) < 5 * monte_carlo_relative_se(16, 40_000)
    assert monte_carlo_variance(4, 100, seed=1) == monte_carlo_variance(4, 100, seed=1)


@pytest.mark.parametrize("d_k", [1, 4])
def test_kurtosis_and_standard_error_match_a_simulation(d_k):
    g = torch.Generator().manual_seed(d_k)
    s = (
        torch.randn(400_000, d_k, generator=g, dtype=torch.float64)
        * torch.randn(400_000, d_k, generator=g, dtype=torch.float64)
    ).sum(-1)
    kurtosis = float((s**4).mean() / (s**2).mean() ** 2)
    assert kurtosis == pytest.approx(dot_product_kurtosis(d_k), rel=0.05)
    # 400 estimates from n = 1000 samples each: their spread is the standard error.
    n = 1000
    estimates = s.reshape(400, n).var(dim=-1) / d_k
    assert float(estimates.std()) == pytest.approx(monte_carlo_relative_se(d_k, n), rel=0.15)


def test_the_issues_numbers_for_the_band():
    # d_k = 1, n = 20,000: a 5 % band is only about 2.5 standard errors.
    assert 0.05 / monte_carlo_relative_se(1, 20_000) == pytest.approx(2.5, rel=0.01)
    assert monte_carlo_relative_se(1, 20_000) == pytest.approx(math.sqrt(8 / 20_000))
