"""Hidden tests of lesson 02 (scaled dot-product attention), as data.

The symbolic exercises are judged against fixed sympy expressions (`Probe.expected`), compared
for equivalence by sympy, not as text; the Monte Carlo estimate against the theoretical
variance within a stated tolerance; the attention functions against the reference kernels.
"""

from __future__ import annotations

import sympy as sp
import torch

from autograder.exercises.inputs import randn
from autograder.judge import Exercise, Probe
from solutions.kernels import attention as K

LESSON = "02-scaled-attention"

# The notebook's setup cell defines exactly these symbols (same names, same assumptions):
# a learner's expression built from them is equal to these, symbol for symbol.
SIGMA_Q, SIGMA_K = sp.symbols("sigma_q sigma_k", positive=True)
D_K = sp.Symbol("d_k", positive=True, integer=True)

# The ATen operators PyTorch's fused attention reaches, on every backend. Its "math" fallback
# (taken on CPU e.g. when d_v != d_k) decomposes into ordinary matmuls and `_safe_softmax`, an
# internal operator that `torch.softmax` never reaches, so that one gives the fallback away.
SDPA_OPS = frozenset(
    {
        "_safe_softmax",
        "scaled_dot_product_attention",
        "_scaled_dot_product_attention_math",
        "_scaled_dot_product_attention_math_for_mps",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_fused_attention_overrideable",
    }
)
SDPA_HINT = (
    "Write it as matmul -> scale -> mask -> softmax -> matmul; "
    "F.scaled_dot_product_attention is what the checks compare against."
)

F32 = dict(atol=1e-5, rtol=1e-4)
F64 = dict(atol=1e-10, rtol=1e-8)
# Relative tolerance of the Monte Carlo probes. For Gaussian entries q.k has kurtosis 3 + 6/d_k,
# so an n-sample variance estimate has relative standard error sqrt((2 + 6/d_k) / n): at most
# 1.02 % for the probes below, which makes 5 % a five-sigma band.
MC_TOLERANCE = 0.05


def _mask(g: torch.Generator, *shape: int, p: float = 0.6) -> torch.Tensor:
    """A random boolean mask (True = may attend) in which every query may see some key."""
    mask = torch.rand(*shape, generator=g) < p
    keep = torch.randint(0, shape[-1], shape[:-1], generator=g)
    return mask | torch.nn.functional.one_hot(keep, shape[-1]).bool()


# ---------------------------------------------------------------- the variance derivation


def expectation(expr, variances: dict):
    """E[expr] for a polynomial in independent zero-mean random symbols (the notebook's helper)."""
    total = sp.Integer(0)
    for term in sp.Add.make_args(sp.expand(expr)):
        coeff, factors = term.as_coeff_mul()
        value = coeff
        for factor in factors:
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


def dot_product_variance(n: int):
    """Var(sum_i q_i k_i) for n terms, by expectation algebra: n sigma_q^2 sigma_k^2."""
    q, k = sp.symbols(f"q0:{n}"), sp.symbols(f"k0:{n}")
    variances = {**{s: SIGMA_Q**2 for s in q}, **{s: SIGMA_K**2 for s in k}}
    dot = sum(a * b for a, b in zip(q, k, strict=True))
    return sp.simplify(expectation(dot**2, variances) - expectation(dot, variances) ** 2)


def logit_variances():
    """Var(q.k), Var(q.k / sqrt(d_k)), Var(q.k / d_k) for d_k terms: Var(cX) = c^2 Var(X)."""
    raw = D_K * SIGMA_Q**2 * SIGMA_K**2
    return raw, raw / D_K, raw / D_K**2


def dot_variance_probes(g: torch.Generator) -> list[Probe]:
    return [
        Probe(f"n = {n}: Var(q.k) for {n} term(s)", (n,), expected=n * SIGMA_Q**2 * SIGMA_K**2)
        for n in (1, 2, 3, 5, 8)
    ]


def closed_form_probes(g: torch.Generator) -> list[Probe]:
    raw = D_K * SIGMA_Q**2 * SIGMA_K**2
    return [
        Probe(
            "(Var(q.k), Var(q.k/sqrt(d_k)), Var(q.k/d_k)) in d_k, sigma_q, sigma_k",
            (),
            expected=(raw, SIGMA_Q**2 * SIGMA_K**2, SIGMA_Q**2 * SIGMA_K**2 / D_K),
        ),
    ]


def monte_carlo_variance(
    d_k: int, n_samples: int, sigma_q: float = 1.0, sigma_k: float = 1.0, seed: int = 0
) -> float:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n_samples, d_k, generator=g, dtype=torch.float64) * sigma_q
    k = torch.randn(n_samples, d_k, generator=g, dtype=torch.float64) * sigma_k
    return float((q * k).sum(-1).var())


def monte_carlo_probes(g: torch.Generator) -> list[Probe]:
    cases = [
        (1, 200_000, 1.0, 1.0),
        (4, 100_000, 2.0, 1.5),
        (16, 50_000, 1.0, 1.0),
        (64, 20_000, 0.5, 3.0),
        (128, 20_000, 1.0, 1.0),
    ]
    probes = []
    for d, n, sq, sk in cases:
        seed = int(torch.randint(0, 2**31 - 1, (), generator=g))
        probes.append(
            Probe(
                f"d_k = {d}, {n} samples, sigma_q = {sq}, sigma_k = {sk}: within "
                f"{MC_TOLERANCE:.0%} of d_k sigma_q^2 sigma_k^2 = {d * sq**2 * sk**2:g}",
                (d, n, sq, sk, seed),
                expected=float(d * sq**2 * sk**2),
                atol=0.0,
                rtol=MC_TOLERANCE,
                check_dtype=False,
            )
        )
    return probes


# ---------------------------------------------------------------- attention


def attention_weights(q, k, mask=None, scale=None):
    return K.masked_softmax(K.attention_scores(q, k, scale), mask)


def attention_weights_probes(g: torch.Generator) -> list[Probe]:
    return [
        Probe(
            "3-D (batch, T, d) = (2, 5, 8), default scale 1/sqrt(8)",
            (randn(g, 2, 5, 8), randn(g, 2, 5, 8)),
            **F32,
        ),
        Probe(
            "4-D (batch, heads, T, d_head) = (2, 4, 6, 16): the scale is 1/sqrt(d_head)",
            (randn(g, 2, 4, 6, 16), randn(g, 2, 4, 6, 16)),
            **F32,
        ),
        Probe(
            "3 queries, 7 keys: weights of shape (..., 3, 7)",
            (randn(g, 1, 2, 3, 32), randn(g, 1, 2, 7, 32)),
            **F32,
        ),
        Probe(
            "explicit scale=0.3 replaces 1/sqrt(d_k)",
            (randn(g, 2, 4, 8), randn(g, 2, 6, 8)),
            {"scale": 0.3},
            **F32,
        ),
        Probe(
            "mask (T_q, T_k) broadcast over batch and heads: rows still sum to 1",
            (randn(g, 2, 3, 5, 16), randn(g, 2, 3, 6, 16)),
            {"mask": _mask(g, 5, 6)},
            **F32,
        ),
        Probe(
            "padding-style mask (batch, 1, 1, T_k)",
            (randn(g, 2, 2, 4, 8), randn(g, 2, 2, 5, 8)),
            {"mask": _mask(g, 2, 1, 1, 5)},
            **F32,
        ),
        Probe(
            "float64, d_k = 256 (large logits)",
            (randn(g, 6, 256, dtype=torch.float64), randn(g, 9, 256, dtype=torch.float64)),
            **F64,
        ),
        Probe(
            "gradient with respect to q, with a mask",
            (randn(g, 2, 4, 8, dtype=torch.float64), randn(g, 2, 5, 8, dtype=torch.float64)),
            {"mask": _mask(g, 4, 5)},
            call="grad",
            grad_weight_seed=5,
            **F64,
        ),
    ]


def sdpa_reference(q, k, v, mask=None, scale=None):
    """The notebook's signature: (q, k, v, mask, scale), returning the output only."""
    return K.scaled_dot_product_attention(q, k, v, mask=mask, scale=scale)


def sdpa_probes(g: torch.Generator) -> list[Probe]:
    def qkv(*lead: int, tq: int, tk: int, d: int, dv: int, dtype=torch.float32):
        return (
            randn(g, *lead, tq, d, dtype=dtype),
            randn(g, *lead, tk, d, dtype=dtype),
            randn(g, *lead, tk, dv, dtype=dtype),
        )

    return [
        Probe("3-D inputs (batch, T, d) = (2, 6, 8)", qkv(2, tq=6, tk=6, d=8, dv=8), **F32),
        Probe(
            "4-D inputs (batch, heads, T, d_head) = (2, 4, 5, 16)",
            qkv(2, 4, tq=5, tk=5, d=16, dv=16),
            **F32,
        ),
        Probe(
            "4 queries, 9 keys, d_v = 3 != d_k = 8: output (..., 4, 3)",
            qkv(3, 2, tq=4, tk=9, d=8, dv=3),
            **F32,
        ),
        Probe("no batch dimension: (T, d)", qkv(tq=7, tk=5, d=12, dv=6), **F32),
        Probe("explicit scale=1.0", qkv(2, tq=3, tk=4, d=16, dv=5), {"scale": 1.0}, **F32),
        Probe("d_k = 128 in float64", qkv(2, tq=4, tk=6, d=128, dv=4, dtype=torch.float64), **F64),
        Probe(
            "gradient with respect to q",
            qkv(2, 2, tq=3, tk=5, d=8, dv=4, dtype=torch.float64),
            call="grad",
            grad_weight_seed=6,
            **F64,
        ),
    ]


def sdpa_mask_probes(g: torch.Generator) -> list[Probe]:
    q, k, v = randn(g, 2, 3, 5, 8), randn(g, 2, 3, 7, 8), randn(g, 2, 3, 7, 4)
    one_key = torch.nn.functional.one_hot(torch.randint(0, 7, (5,), generator=g), 7).bool()
    return [
        Probe(
            "mask (T_q, T_k) = (5, 7) broadcast over batch and heads",
            (q, k, v),
            {"mask": _mask(g, 5, 7)},
            **F32,
        ),
        Probe(
            "padding-style mask (batch, 1, 1, T_k)",
            (q, k, v),
            {"mask": _mask(g, 2, 1, 1, 7)},
            **F32,
        ),
        Probe(
            "a full mask (batch, heads, T_q, T_k)", (q, k, v), {"mask": _mask(g, 2, 3, 5, 7)}, **F32
        ),
        Probe(
            "each query may see one key only: its output is that key's value",
            (q, k, v),
            {"mask": one_key},
            **F32,
        ),
        Probe(
            "an all-True mask changes nothing",
            (q, k, v),
            {"mask": torch.ones(5, 7, dtype=torch.bool)},
            **F32,
        ),
        Probe(
            "3-D inputs with a mask and scale=0.5",
            (randn(g, 2, 4, 6), randn(g, 2, 6, 6), randn(g, 2, 6, 6)),
            {"mask": _mask(g, 2, 4, 6), "scale": 0.5},
            **F32,
        ),
        Probe(
            "gradient with respect to q, with a mask",
            (
                randn(g, 2, 4, 8, dtype=torch.float64),
                randn(g, 2, 6, 8, dtype=torch.float64),
                randn(g, 2, 6, 3, dtype=torch.float64),
            ),
            {"mask": _mask(g, 4, 6)},
            call="grad",
            grad_weight_seed=7,
            **F64,
        ),
    ]


# ---------------------------------------------------------------- why sqrt(d_k)


def entropy_probes(g: torch.Generator) -> list[Probe]:
    soft = lambda *s, dtype=torch.float32: torch.softmax(randn(g, *s, scale=2.0, dtype=dtype), -1)  # noqa: E731
    with_zeros = K.masked_softmax(randn(g, 4, 6), _mask(g, 4, 6, p=0.5))
    one_hot = torch.nn.functional.one_hot(torch.tensor([2, 0, 4]), 5).float()
    return [
        Probe("attention rows, shape (4, 10)", (soft(4, 10),), **F32),
        Probe("rows with masked (exactly 0) weights: 0 log 0 = 0", (with_zeros,), **F32),
        Probe("one-hot rows have entropy 0", (one_hot,), **F32),
        Probe(
            "uniform rows over 16 keys have entropy log 16", (torch.full((3, 16), 1 / 16),), **F32
        ),
        Probe("4-D weights (batch, heads, T_q, T_k) = (2, 3, 4, 5)", (soft(2, 3, 4, 5),), **F32),
        Probe("float64", (soft(3, 7, dtype=torch.float64),), **F64),
    ]


def scaling_experiment(q, k, scale):
    p = K.masked_softmax((q @ k.transpose(-2, -1)) * scale)
    jacobian = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    return torch.stack(
        [
            p.amax(-1).mean(),
            K.attention_entropy(p).mean(),
            torch.linalg.matrix_norm(jacobian).mean(),
        ]
    )


def scaling_probes(g: torch.Generator) -> list[Probe]:
    def qk(n: int, t: int, d: int, dtype=torch.float32):
        return randn(g, n, d, dtype=dtype), randn(g, t, d, dtype=dtype)

    return [
        Probe("d_k = 16, scale 1/sqrt(d_k)", (*qk(32, 20, 16), 0.25), **F32),
        Probe("d_k = 64, unscaled (scale 1): saturated rows", (*qk(24, 16, 64), 1.0), **F32),
        Probe("d_k = 64, scale 1/d_k: nearly uniform rows", (*qk(24, 16, 64), 1 / 64), **F32),
        Probe("scale 0: exactly uniform rows", (*qk(8, 10, 4), 0.0), **F32),
        Probe(
            "d_k = 256 in float64, scale 1/sqrt(d_k)",
            (*qk(16, 12, 256, dtype=torch.float64), 1 / 16),
            **F64,
        ),
        Probe("d_k = 2, scale 3.0", (*qk(40, 30, 2), 3.0), **F32),
    ]


EXERCISES = [
    Exercise(
        f"{LESSON}/dot-variance",
        "Var(q.k) for n terms, by expectation algebra",
        "dot_product_variance",
        dot_product_variance,
        dot_variance_probes,
    ),
    Exercise(
        f"{LESSON}/closed-forms",
        "the variance of raw and scaled logits",
        "logit_variances",
        logit_variances,
        closed_form_probes,
    ),
    Exercise(
        f"{LESSON}/monte-carlo",
        "Monte Carlo estimate of Var(q.k)",
        "monte_carlo_variance",
        monte_carlo_variance,
        monte_carlo_probes,
    ),
    Exercise(
        f"{LESSON}/attention-weights",
        "attention weights (rows sum to 1, with a mask)",
        "attention_weights",
        attention_weights,
        attention_weights_probes,
        SDPA_OPS,
        SDPA_HINT,
    ),
    Exercise(
        f"{LESSON}/sdpa-shapes",
        "scaled dot-product attention: 3-D, 4-D, T_q != T_k",
        "scaled_dot_product_attention",
        sdpa_reference,
        sdpa_probes,
        SDPA_OPS,
        SDPA_HINT,
    ),
    Exercise(
        f"{LESSON}/sdpa-mask",
        "scaled dot-product attention with a boolean mask",
        "scaled_dot_product_attention",
        sdpa_reference,
        sdpa_mask_probes,
        SDPA_OPS,
        SDPA_HINT,
    ),
    Exercise(
        f"{LESSON}/entropy",
        "entropy of attention rows",
        "attention_entropy",
        K.attention_entropy,
        entropy_probes,
    ),
    Exercise(
        f"{LESSON}/scaling-experiment",
        "saturation, entropy and gradient size",
        "scaling_experiment",
        scaling_experiment,
        scaling_probes,
        SDPA_OPS,
        SDPA_HINT,
    ),
]
