"""Why attention divides by sqrt(d_k): the variance of a dot product, derived and sampled.

For a query q and a key k with independent, zero-mean entries of variances sigma_q^2 and
sigma_k^2 (Vaswani et al. 2017, "Attention Is All You Need", section 3.2.1 and its footnote, with
unit variances):

    Var(q . k) = d_k sigma_q^2 sigma_k^2,    Var(c X) = c^2 Var(X).

`expectation` does the algebra with three rules (linearity, independence, the first two
moments), `dot_product_variance` and `logit_variances` apply it, and `monte_carlo_variance`
estimates the same variance by sampling. `monte_carlo_relative_se` is the standard error of
that estimate, which sets the tolerance it is judged at.

The symbols are lesson 02's: `SIGMA_Q`, `SIGMA_K` (positive) and `D_K` (a positive integer).
sympy treats a symbol made with other assumptions (e.g. `Symbol("d_k")`) as a different symbol.
"""

from __future__ import annotations

import math

import sympy as sp
import torch

__all__ = [
    "SIGMA_Q",
    "SIGMA_K",
    "D_K",
    "expectation",
    "variance",
    "dot_product_variance",
    "logit_variances",
    "monte_carlo_variance",
    "dot_product_kurtosis",
    "monte_carlo_relative_se",
]

SIGMA_Q, SIGMA_K = sp.symbols("sigma_q sigma_k", positive=True)
D_K = sp.Symbol("d_k", positive=True, integer=True)


def expectation(expr: sp.Expr, variances: dict) -> sp.Expr:
    """E[expr] for a polynomial `expr` in independent, zero-mean random symbols.

    `variances` maps each random symbol to its variance; every other symbol is a constant.
    Raises ValueError for a third or higher power of a random symbol (its moment is not
    determined by the mean and the variance).
    """
    total = sp.Integer(0)
    for term in sp.Add.make_args(sp.expand(expr)):  # linearity: one term at a time
        coeff, factors = term.as_coeff_mul()
        value = coeff
        for factor in factors:  # independence: factor by factor
            base, power = factor.as_base_exp()
            if base not in variances:
                value *= factor
            elif power == 1:
                value = sp.Integer(0)
            elif power == 2:
                value *= variances[base]
            else:
                raise ValueError(f"E[{base}**{power}] is not determined by mean and variance")
        total += value
    return sp.expand(total)


def variance(expr: sp.Expr, variances: dict) -> sp.Expr:
    """Var(expr) = E[expr^2] - E[expr]^2, by `expectation`."""
    return sp.expand(expectation(expr**2, variances) - expectation(expr, variances) ** 2)


def dot_product_variance(n: int) -> sp.Expr:
    """Var(q0 k0 + ... + q{n-1} k{n-1}) = n sigma_q^2 sigma_k^2, for a Python int n >= 1.

    Raises TypeError for anything but an int: `sp.symbols(f"q0:{d_k}")` with the symbol d_k
    would quietly make symbols named q0a_k, q0b_k, ... instead.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise TypeError(f"n must be a positive int (the number of terms), got {n!r}")
    qs, ks = sp.symbols(f"q0:{n}"), sp.symbols(f"k0:{n}")
    variances = {**{s: SIGMA_Q**2 for s in qs}, **{s: SIGMA_K**2 for s in ks}}
    dot = sum(a * b for a, b in zip(qs, ks, strict=True))
    return sp.simplify(variance(dot, variances))


def logit_variances(sigma_q=SIGMA_Q, sigma_k=SIGMA_K) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """(Var(q.k), Var(q.k / sqrt(d_k)), Var(q.k / d_k)) for width `D_K`, as sympy expressions.

    `sigma_q`, `sigma_k`: the standard deviations, symbols (by default) or numbers. Var(cX) =
    c^2 Var(X) gives d_k s^2, s^2 and s^2 / d_k with s^2 = sigma_q^2 sigma_k^2.
    """
    raw = D_K * sigma_q**2 * sigma_k**2
    return raw, sp.simplify(raw / D_K), sp.simplify(raw / D_K**2)


def monte_carlo_variance(
    d_k: int, n_samples: int, sigma_q: float = 1.0, sigma_k: float = 1.0, seed: int = 0
) -> float:
    """Sample variance of q.k over `n_samples` independent pairs of N(0, sigma^2) vectors.

    q and k are `(n_samples, d_k)` float64 draws from one generator seeded with `seed` (queries
    first); the dot products are row-wise, never an n_samples x n_samples matrix. Returns a
    Python float near d_k sigma_q^2 sigma_k^2 (relative standard error
    `monte_carlo_relative_se(d_k, n_samples)`).
    """
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n_samples, d_k, generator=g, dtype=torch.float64) * sigma_q
    k = torch.randn(n_samples, d_k, generator=g, dtype=torch.float64) * sigma_k
    return float((q * k).sum(dim=-1).var())


def dot_product_kurtosis(d_k: int) -> float:
    """Kurtosis E[s^4] / E[s^2]^2 of s = q.k for Gaussian entries: 3 + 6 / d_k.

    One product of independent N(0, 1) variables has E[(qk)^4] = E[q^4] E[k^4] = 9, so its
    excess kurtosis is 6 (MathWorld, "Normal Product Distribution"); excess kurtosis, a ratio
    of cumulants, is divided by d_k in a sum of d_k independent copies.
    """
    return 3.0 + 6.0 / d_k


def monte_carlo_relative_se(d_k: int, n_samples: int) -> float:
    """Relative standard error of a sample variance of q.k: sqrt((kurtosis - 1) / n).

    The variance of a sample variance from n draws is sigma^4 (kurtosis - (n - 3)/(n - 1)) / n
    (MathWorld, "Sample Variance Distribution", after Kenney and Keeping 1951, p. 164), so its
    standard error relative to sigma^2 is sqrt((kurtosis - 1) / n) up to O(1/n):
    sqrt((2 + 6/d_k) / n).
    """
    return math.sqrt((dot_product_kurtosis(d_k) - 1.0) / n_samples)
