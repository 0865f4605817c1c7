"""Lesson 02 (scaled dot-product attention), declared once: exercises, references, probes,
points, known mistakes.

The symbolic exercises are compared by sympy for equivalence (any equal form passes; symbols
with the setup cell's names but other assumptions are told apart), the Monte Carlo estimate
against d_k sigma_q^2 sigma_k^2 within five of its standard errors, the attention functions
against the reference kernels at the shared tolerances.
"""

from __future__ import annotations

import torch

from course.calling import SDPA_ATEN_OPS
from course.compare import Tolerance
from course.lesson import Exercise, Lesson, Mistake, Probe, randn, seeded
from solutions.kernels import attention as A
from solutions.kernels import variance as V

# Every ATen operator PyTorch's fused attention reaches, on every backend. Under the checks'
# watch F.scaled_dot_product_attention takes its "math" path, which ends in `_safe_softmax`,
# an internal operator that torch.softmax never reaches (torch.softmax stays allowed).
SDPA_NAME = "F.scaled_dot_product_attention (PyTorch's fused attention)"
SDPA_OPS = {name: SDPA_NAME for name in SDPA_ATEN_OPS}
SDPA_HINT = (
    "Write it as matmul -> scale -> mask -> softmax (torch.softmax is allowed here); "
    "PyTorch's fused attention is what the checks compare against."
)
CALLS_SDPA_HINT = (
    "F.scaled_dot_product_attention is the answer the checks compare against, so it cannot be "
    "the answer: compute the scores q @ k.transpose(-2, -1), scale, mask, torch.softmax"
)
# The learner's earlier functions are replaced by PyTorch's own while a later exercise is judged:
# a mistake in attention_weights costs attention_weights' points, not three exercises'.
WEIGHTS_STAND_IN = {"attention_weights": "course.stand_ins:attention_weights"}
FIVE_SE = 5.0  # the Monte Carlo band, in standard errors


def _mask(g: torch.Generator, *shape: int, p: float = 0.6) -> torch.Tensor:
    """A random boolean mask (True = may attend) in which every query may see some key."""
    mask = torch.rand(*shape, generator=g) < p
    keep = torch.randint(0, shape[-1], shape[:-1], generator=g)
    return mask | torch.nn.functional.one_hot(keep, shape[-1]).bool()


def _f64(g: torch.Generator, *shape: int) -> torch.Tensor:
    return randn(g, *shape, dtype=torch.float64)


# ---------------------------------------------------------------- dot_product_variance

DOT_VARIANCE_MISTAKES = [
    Mistake(
        id="dot-variance-one-product-only",
        hint="that is the variance of one product q*k, whatever n is: build all n products "
        "q_i*k_i with sp.symbols(f'q0:{n}') and sp.symbols(f'k0:{n}') and take the variance of "
        "their sum",
        source="""
def dot_product_variance(n):
    q, k = sp.symbols("q k")
    return variance(q * k, {q: sigma_q**2, k: sigma_k**2})
""",
    ),
    Mistake(
        id="dot-variance-sigma-as-variance",
        hint="`variances` maps each symbol to its variance, sigma_q**2 and sigma_k**2, not to "
        "its standard deviation sigma_q",
        source="""
def dot_product_variance(n):
    qs, ks = sp.symbols(f"q0:{n}"), sp.symbols(f"k0:{n}")
    variances = {**{s: sigma_q for s in qs}, **{s: sigma_k for s in ks}}
    return sp.simplify(variance(sum(a * b for a, b in zip(qs, ks)), variances))
""",
    ),
    Mistake(
        id="dot-variance-symbols-without-assumptions",
        hint="the assumptions differ: sigma_q and sigma_k were made again without positive=True, "
        "and sympy treats them as other symbols that only share the names. Use the setup "
        "cell's sigma_q and sigma_k",
        source="""
def dot_product_variance(n):
    sq, sk = sp.symbols("sigma_q sigma_k")
    qs, ks = sp.symbols(f"q0:{n}"), sp.symbols(f"k0:{n}")
    variances = {**{s: sq**2 for s in qs}, **{s: sk**2 for s in ks}}
    return sp.simplify(variance(sum(a * b for a, b in zip(qs, ks)), variances))
""",
    ),
    Mistake(
        id="dot-variance-one-term-short",
        hint="sp.symbols(f'q0:{n}') already gives the n symbols q0 ... q{n-1} (the end is "
        "excluded, like range): f'q0:{n - 1}' has one too few",
        source="""
def dot_product_variance(n):
    qs, ks = sp.symbols(f"q0:{n - 1}"), sp.symbols(f"k0:{n - 1}")
    variances = {**{s: sigma_q**2 for s in qs}, **{s: sigma_k**2 for s in ks}}
    return sp.simplify(variance(sum(a * b for a, b in zip(qs, ks)), variances))
""",
    ),
    Mistake(
        id="dot-variance-returns-the-mean",
        hint="E[X] is the mean of the dot product, 0 here; the variance is E[X^2] - E[X]^2 "
        "(your `variance`)",
        source="""
def dot_product_variance(n):
    qs, ks = sp.symbols(f"q0:{n}"), sp.symbols(f"k0:{n}")
    variances = {**{s: sigma_q**2 for s in qs}, **{s: sigma_k**2 for s in ks}}
    return sp.simplify(expectation(sum(a * b for a, b in zip(qs, ks)), variances))
""",
    ),
    Mistake(
        id="dot-variance-keys-are-the-queries",
        hint="the keys must be symbols of their own (k0, k1, ...): with the same symbols for "
        "queries and keys the dot product is a sum of squares x_i**2, whose variance needs "
        "E[x^4], which mean and variance do not determine",
        source="""
def dot_product_variance(n):
    xs = sp.symbols(f"x0:{n}")
    variances = {s: sigma_q**2 for s in xs}
    return sp.simplify(variance(sum(x * x for x in xs), variances))
""",
    ),
]


def dot_variance_visible() -> list[Probe]:
    return [Probe(name=f"n = {n}: Var(q.k) for {n} term(s)", args=(n,)) for n in (3, 1, 2, 8)]


def dot_variance_hidden(g: torch.Generator) -> list[Probe]:
    ns = [1, 2] + sorted({int(n) for n in torch.randint(3, 12, (3,), generator=g)})
    return [Probe(name=f"n = {n}: Var(q.k) for {n} term(s)", args=(n,)) for n in ns]


# ---------------------------------------------------------------- logit_variances

LOGIT_VARIANCE_MISTAKES = [
    Mistake(
        id="closed-forms-variance-scales-linearly",
        hint="a constant factor enters a variance squared, Var(cX) = c^2 Var(X) (ask your "
        "variance(c * q_i * k_i, one_pair)): dividing by sqrt(d_k) divides the variance by d_k",
        source="""
def logit_variances(sigma_q=sigma_q, sigma_k=sigma_k):
    raw = d_k * sigma_q**2 * sigma_k**2
    return raw, raw / sp.sqrt(d_k), raw / d_k
""",
    ),
    Mistake(
        id="closed-forms-unit-variances-and-limits",
        hint="give the exact expressions in d_k, sigma_q, sigma_k: Var(q.k/sqrt(d_k)) is "
        "sigma_q**2 * sigma_k**2 (1 only for unit variances), and Var(q.k/d_k) tends to 0 but "
        "is not 0",
        source="""
def logit_variances(sigma_q=sigma_q, sigma_k=sigma_k):
    return d_k * sigma_q**2 * sigma_k**2, sp.Integer(1), sp.Integer(0)
""",
    ),
    Mistake(
        id="closed-forms-third-divides-the-wrong-variance",
        hint="Var(q.k/d_k) = (1/d_k)^2 * Var(q.k) = (1/d_k)^2 * d_k sigma_q^2 sigma_k^2: the d_k "
        "of Var(q.k) cancels one of the two, leaving sigma_q^2 sigma_k^2 / d_k",
        source="""
def logit_variances(sigma_q=sigma_q, sigma_k=sigma_k):
    unit = sigma_q**2 * sigma_k**2
    return d_k * unit, unit, unit / d_k**2
""",
    ),
    Mistake(
        id="closed-forms-raw-without-d_k",
        hint="Var(q.k) for width d_k is d_k sigma_q^2 sigma_k^2 (exercise 1 gave n sigma_q^2 "
        "sigma_k^2 for n terms), not the variance of one product",
        source="""
def logit_variances(sigma_q=sigma_q, sigma_k=sigma_k):
    raw = sigma_q**2 * sigma_k**2
    return raw, raw / d_k, raw / d_k**2
""",
    ),
    Mistake(
        id="closed-forms-calls-dot-product-variance-with-the-symbol",
        hint="dot_product_variance(n) makes n symbols from a number: given the symbol d_k, "
        "sp.symbols('q0:d_k') reads 'a:d' as a range of letters and makes q0a_k ... q0d_k, four "
        "terms. Write Var(q.k) = d_k * sigma_q**2 * sigma_k**2 with the symbol d_k directly",
        source="""
def logit_variances(sigma_q=sigma_q, sigma_k=sigma_k):
    raw = dot_product_variance(d_k)
    return raw, raw / d_k, raw / d_k**2
""",
    ),
    Mistake(
        id="closed-forms-d_k-without-assumptions",
        hint="the assumptions differ: d_k was made again as sp.Symbol('d_k'), without "
        "positive=True, integer=True, and sympy treats it as another symbol with the same "
        "name. Use the setup cell's d_k",
        source="""
def logit_variances(sigma_q=sigma_q, sigma_k=sigma_k):
    d = sp.Symbol("d_k")
    raw = d * sigma_q**2 * sigma_k**2
    return raw, raw / d, raw / d**2
""",
    ),
]


LOGIT_VARIANCE_MISTAKES += [
    Mistake(
        id="closed-forms-factor-squared-twice",
        hint="Var(cX) = c^2 Var(X) with c = 1/sqrt(d_k) gives c^2 = 1/d_k, not 1/d_k^2 "
        "(the square root is squared once): Var(q.k/sqrt(d_k)) = Var(q.k)/d_k, "
        "Var(q.k/d_k) = Var(q.k)/d_k^2",
        source="""
def logit_variances(sigma_q=sigma_q, sigma_k=sigma_k):
    raw = d_k * sigma_q**2 * sigma_k**2
    return raw, raw / d_k**2, raw / d_k**4
""",
    ),
    Mistake(
        id="closed-forms-sigma-not-squared",
        hint="sigma_q and sigma_k are standard deviations: the variances are sigma_q**2 and "
        "sigma_k**2, so Var(q.k) = d_k sigma_q^2 sigma_k^2 (logit_variances(2, 3)[0] is 36 d_k)",
        source="""
def logit_variances(sigma_q=sigma_q, sigma_k=sigma_k):
    raw = d_k * sigma_q * sigma_k
    return raw, raw / d_k, raw / d_k**2
""",
    ),
    Mistake(
        id="closed-forms-third-not-squared",
        hint="dividing by d_k divides the variance by d_k^2 (Var(cX) = c^2 Var(X)): the third "
        "entry is Var(q.k)/d_k^2, not Var(q.k)/d_k",
        source="""
def logit_variances(sigma_q=sigma_q, sigma_k=sigma_k):
    raw = d_k * sigma_q**2 * sigma_k**2
    return raw, raw / d_k, raw / d_k
""",
    ),
    Mistake(
        id="closed-forms-ignores-the-arguments",
        hint="use the arguments sigma_q and sigma_k you are given (they may be numbers, e.g. "
        "logit_variances(2, 3) gives (36 d_k, 36, 36/d_k)), not the setup cell's symbols",
        source="""
def logit_variances(sigma_q_=sigma_q, sigma_k_=sigma_k):
    raw = d_k * sigma_q**2 * sigma_k**2
    return raw, raw / d_k, raw / d_k**2
""",
    ),
]


def logit_variances_visible() -> list[Probe]:
    return [
        Probe(name="in the symbols d_k, sigma_q, sigma_k (the defaults)", args=()),
        Probe(name="sigma_q = 2, sigma_k = 3: expressions in d_k", args=(2, 3)),
        Probe(name="sigma_q = 0.5, sigma_k = 4.0 (Python floats)", args=(0.5, 4.0)),
    ]


def logit_variances_hidden(g: torch.Generator) -> list[Probe]:
    a, b = (int(x) for x in torch.randint(2, 9, (2,), generator=g))
    return [
        Probe(name="in the symbols d_k, sigma_q, sigma_k", args=()),
        Probe(name=f"sigma_q = {a}, sigma_k = {b}", args=(a, b)),
        Probe(name="unit variances, sigma_q = sigma_k = 1", args=(1, 1)),
        Probe(name="sigma_q = 0.25, sigma_k = 2.0", args=(0.25, 2.0)),
    ]


# ---------------------------------------------------------------- monte_carlo_variance

MONTE_CARLO_MISTAKES = [
    Mistake(
        id="monte-carlo-sigma-squared",
        hint="multiply the N(0, 1) samples by the standard deviation sigma, not by the variance "
        "sigma**2: scaling by sigma**2 gives a variance d_k sigma_q^4 sigma_k^4",
        source="""
def monte_carlo_variance(d_k, n_samples, sigma_q=1.0, sigma_k=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n_samples, d_k, generator=g) * sigma_q**2
    k = torch.randn(n_samples, d_k, generator=g) * sigma_k**2
    return (q * k).sum(-1).var().item()
""",
    ),
    Mistake(
        id="monte-carlo-keys-equal-queries",
        hint="draw the keys independently of the queries (a second torch.randn call): with "
        "k made from the same samples as q, q.k is a sum of squares and its variance is larger",
        source="""
def monte_carlo_variance(d_k, n_samples, sigma_q=1.0, sigma_k=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_samples, d_k, generator=g)
    return ((x * sigma_q) * (x * sigma_k)).sum(-1).var().item()
""",
    ),
    Mistake(
        id="monte-carlo-standard-deviation",
        hint="return the variance of the dot products (.var()), not their standard deviation "
        "(.std())",
        source="""
def monte_carlo_variance(d_k, n_samples, sigma_q=1.0, sigma_k=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n_samples, d_k, generator=g) * sigma_q
    k = torch.randn(n_samples, d_k, generator=g) * sigma_k
    return (q * k).sum(-1).std().item()
""",
    ),
    Mistake(
        id="monte-carlo-mean",
        hint="the mean of the dot products is 0: the exercise asks for their variance (.var())",
        source="""
def monte_carlo_variance(d_k, n_samples, sigma_q=1.0, sigma_k=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n_samples, d_k, generator=g) * sigma_q
    k = torch.randn(n_samples, d_k, generator=g) * sigma_k
    return (q * k).sum(-1).mean().item()
""",
    ),
    Mistake(
        id="monte-carlo-returns-a-tensor",
        hint="return a Python float: .item() turns the 0-d tensor into one",
        source="""
def monte_carlo_variance(d_k, n_samples, sigma_q=1.0, sigma_k=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n_samples, d_k, generator=g) * sigma_q
    k = torch.randn(n_samples, d_k, generator=g) * sigma_k
    return (q * k).sum(-1).var()
""",
    ),
]


MONTE_CARLO_MISTAKES.append(
    Mistake(
        id="monte-carlo-all-pairs-matrix",
        hint="q @ k.T builds the n_samples x n_samples matrix of every (query, key) pair (20 GB "
        "at 50,000 samples): the n_samples dot products are (q * k).sum(dim=-1), one per row",
        source="""
def monte_carlo_variance(d_k, n_samples, sigma_q=1.0, sigma_k=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n_samples, d_k, generator=g) * sigma_q
    k = torch.randn(n_samples, d_k, generator=g) * sigma_k
    return (q @ k.T).diagonal().var().item()
""",
    )
)
# q @ k.T of two (n_samples, d_k) matrices is aten.mm: refused before the n x n matrix exists.
PAIRS_MATRIX = {"mm": "q @ k.T (a matrix of every query-key pair)"}
PAIRS_HINT = (
    "The n_samples dot products are (q * k).sum(dim=-1): one per row, no n_samples x n_samples "
    "matrix."
)


def _monte_carlo_probe(d: int, n: int, sq: float, sk: float, seed: int) -> Probe:
    se = V.monte_carlo_relative_se(d, n)
    want = d * sq**2 * sk**2
    return Probe(
        name=f"d_k = {d}, {n:,} samples, sigma_q = {sq}, sigma_k = {sk}: within "
        f"{FIVE_SE * se:.1%} of d_k sigma_q^2 sigma_k^2 = {want:g}",
        args=(d, n, sq, sk, seed),
        expected=float(want),
        tolerance=Tolerance(
            0.0,
            FIVE_SE * se,
            f"five standard errors of a variance estimated from {n} samples, "
            f"sqrt((2 + 6/d_k) / n) = {se:.2%} each",
        ),
    )


def monte_carlo_visible() -> list[Probe]:
    return [
        _monte_carlo_probe(8, 50_000, 1.0, 1.0, 1),
        _monte_carlo_probe(3, 50_000, 2.0, 1.5, 2),
        _monte_carlo_probe(1, 200_000, 0.5, 3.0, 3),
        _monte_carlo_probe(64, 20_000, 1.5, 0.8, 4),
    ]


def monte_carlo_hidden(g: torch.Generator) -> list[Probe]:
    cases = [
        (1, 200_000, 0.5, 3.0),
        (4, 100_000, 2.0, 1.5),
        (16, 50_000, 1.0, 1.0),
        (64, 20_000, 1.5, 0.8),
        (128, 20_000, 0.7, 1.3),
    ]
    return [
        _monte_carlo_probe(d, n, sq, sk, int(torch.randint(0, 2**31 - 1, (), generator=g)))
        for d, n, sq, sk in cases
    ]


# ---------------------------------------------------------------- attention_weights

_WEIGHTS = "def attention_weights(q, k, mask=None, scale=None):\n"
_SCORES = """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scores = (q @ k.transpose(-2, -1)) * scale
"""

ATTENTION_WEIGHTS_MISTAKES = [
    Mistake(
        id="weights-scale-by-key-count",
        hint="d_k is the width of the queries and keys, q.shape[-1], not a sequence length "
        "(k.shape[-2] is the number of keys T_k)",
        source=_WEIGHTS
        + """
    if scale is None:
        scale = 1.0 / math.sqrt(k.shape[-2])
    scores = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)
""",
    ),
    Mistake(
        id="weights-float32-for-float64",
        hint="float64 inputs are judged at atol 1e-10, rtol 1e-8, and a computation done in "
        "float32 is right to only about 1e-7: compute float64 in float64 (no .float())",
        source=_WEIGHTS
        + """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scores = (q.float() @ k.float().transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1).to(q.dtype)
""",
    ),
    Mistake(
        id="weights-scale-by-d_k",
        hint="the default scale is 1/sqrt(d_k), not 1/d_k: 1/d_k shrinks the scores' variance "
        "to sigma^2/d_k and the rows towards uniform",
        source=_WEIGHTS
        + """
    if scale is None:
        scale = 1.0 / q.shape[-1]
    scores = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)
""",
    ),
    Mistake(
        id="weights-no-default-scale",
        hint="scale=None means 1/sqrt(d_k) with d_k = q.shape[-1]: the scores must be scaled "
        "even when no scale is given",
        source=_WEIGHTS
        + """
    scores = q @ k.transpose(-2, -1)
    if scale is not None:
        scores = scores * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)
""",
    ),
    Mistake(
        id="weights-scale-by-sqrt-d_model",
        hint="d_k is the width of one head, q.shape[-1], not the model width (heads x head "
        "width): with 4-D inputs (batch, heads, T, d_head) the scale is 1/sqrt(d_head)",
        source=_WEIGHTS
        + """
    if scale is None:
        heads = q.shape[-3] if q.dim() == 4 else 1
        scale = 1.0 / math.sqrt(heads * q.shape[-1])
    scores = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)
""",
    ),
    Mistake(
        id="weights-ignore-the-scale-argument",
        hint="an explicit `scale` replaces 1/sqrt(d_k): use the one you are given, and fall "
        "back to 1/sqrt(q.shape[-1]) only when scale is None",
        source=_WEIGHTS
        + """
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)
""",
    ),
    Mistake(
        id="weights-scale-zero-read-as-default",
        hint="scale=0.0 is a real scale (every row uniform), but `scale or default` treats 0.0 "
        "as missing: test `if scale is None`",
        source=_WEIGHTS
        + """
    scale = scale or 1.0 / math.sqrt(q.shape[-1])
    scores = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)
""",
    ),
    Mistake(
        id="weights-k-T",
        hint="k.T reverses *every* dimension of a batched k (and PyTorch warns it is "
        "deprecated): use k.transpose(-2, -1), which swaps only the last two",
        source=_WEIGHTS
        + """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scores = (q @ k.T) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)
""",
    ),
    Mistake(
        id="weights-softmax-over-queries",
        hint="the softmax runs over the keys, the last dimension (dim=-1): over dim=-2 each "
        "*column* sums to 1, a distribution over the queries",
        source=_WEIGHTS
        + _SCORES
        + """
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-2)
""",
    ),
    Mistake(
        id="weights-mask-after-softmax",
        hint="mask the scores before the softmax (masked_fill with -inf): zeroing weights after "
        "it leaves rows that no longer sum to 1",
        source=_WEIGHTS
        + _SCORES
        + """
    weights = torch.softmax(scores, dim=-1)
    return weights if mask is None else weights * mask
""",
    ),
    Mistake(
        id="weights-inverted-mask",
        hint="True means 'may attend': fill with -inf where the mask is False, "
        "scores.masked_fill(~mask, float('-inf'))",
        source=_WEIGHTS
        + _SCORES
        + """
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    return torch.softmax(scores, dim=-1)
""",
    ),
    Mistake(
        id="weights-mask-ignored",
        hint="the mask is not applied: set the scores to -inf where it is False, before the "
        "softmax",
        source=_WEIGHTS
        + _SCORES
        + """
    return torch.softmax(scores, dim=-1)
""",
    ),
    Mistake(
        id="weights-mask-filled-with-zero",
        hint="a masked score of 0 still gets weight exp(0) > 0: fill with float('-inf'), whose "
        "exp is exactly 0",
        source=_WEIGHTS
        + _SCORES
        + """
    if mask is not None:
        scores = scores.masked_fill(~mask, 0.0)
    return torch.softmax(scores, dim=-1)
""",
    ),
    Mistake(
        id="weights-call-pytorch-attention",
        hint=CALLS_SDPA_HINT,
        source=_WEIGHTS
        + """
    eye = torch.eye(k.shape[-2], dtype=q.dtype).expand(*k.shape[:-1], k.shape[-2])
    return F.scaled_dot_product_attention(q, k, eye, attn_mask=mask, scale=scale)
""",
    ),
]


def attention_weights_visible() -> list[Probe]:
    g = seeded(201)
    mask = torch.rand(3, 7, generator=g) < 0.6
    mask[:, 0] = True  # every query may see key 0
    padding = torch.tensor([True] * 7 + [True] * 4 + [False] * 3).reshape(2, 1, 1, 7)
    q3, k3 = randn(g, 2, 5, 8), randn(g, 2, 5, 8)
    q4, k4 = randn(g, 2, 4, 3, 16), randn(g, 2, 4, 7, 16)
    return [
        Probe(name="3-D (batch, T, d) = (2, 5, 8), default scale 1/sqrt(8)", args=(q3, k3)),
        Probe(
            name="4-D (batch, heads, T, d_head): 3 queries, 7 keys, d_head = 16",
            args=(q4, k4),
        ),
        Probe(name="explicit scale=0.5 replaces 1/sqrt(d_k)", args=(q3, k3), kwargs={"scale": 0.5}),
        Probe(
            name="scale=0.0 is a real scale: every row uniform",
            args=(q3, k3),
            kwargs={"scale": 0.0},
        ),
        Probe(
            name="a (3, 7) mask broadcast over batch and heads",
            args=(q4, k4),
            kwargs={"mask": mask},
        ),
        Probe(
            name="padding-style mask (batch, 1, 1, T_k)", args=(q4, k4), kwargs={"mask": padding}
        ),
        Probe(
            name="gradients with respect to q and k (float64), with a mask",
            args=(_f64(g, 2, 3, 6), _f64(g, 2, 7, 6)),
            kwargs={"mask": mask},
            mode="grad",
            grad_seed=21,
        ),
    ]


def attention_weights_hidden(g: torch.Generator) -> list[Probe]:
    one_key = torch.nn.functional.one_hot(torch.randint(0, 6, (4,), generator=g), 6).bool()
    return [
        Probe(
            name="3-D (batch, T, d) = (2, 5, 8), default scale",
            args=(randn(g, 2, 5, 8), randn(g, 2, 5, 8)),
        ),
        Probe(
            name="4-D (batch, heads, T, d_head) = (2, 4, 6, 16): the scale is 1/sqrt(d_head)",
            args=(randn(g, 2, 4, 6, 16), randn(g, 2, 4, 6, 16)),
        ),
        Probe(
            name="3 queries, 7 keys: weights of shape (..., 3, 7)",
            args=(randn(g, 1, 2, 3, 32), randn(g, 1, 2, 7, 32)),
        ),
        Probe(name="one query, no batch dimension", args=(randn(g, 1, 4), randn(g, 5, 4))),
        Probe(
            name="explicit scale=0.3",
            args=(randn(g, 2, 4, 8), randn(g, 2, 6, 8)),
            kwargs={"scale": 0.3},
        ),
        Probe(
            name="scale=0.0: uniform rows",
            args=(randn(g, 2, 4, 8), randn(g, 2, 6, 8)),
            kwargs={"scale": 0.0},
        ),
        Probe(
            name="d_k = 256 unscaled (scale=1.0): saturated rows",
            args=(randn(g, 3, 256), randn(g, 5, 256)),
            kwargs={"scale": 1.0},
        ),
        Probe(
            name="mask (T_q, T_k) broadcast over batch and heads",
            args=(randn(g, 2, 3, 5, 16), randn(g, 2, 3, 6, 16)),
            kwargs={"mask": _mask(g, 5, 6)},
        ),
        Probe(
            name="padding-style mask (batch, 1, 1, T_k)",
            args=(randn(g, 2, 2, 4, 8), randn(g, 2, 2, 5, 8)),
            kwargs={"mask": _mask(g, 2, 1, 1, 5)},
        ),
        Probe(
            name="each query may see one key only: a one-hot row",
            args=(randn(g, 2, 4, 8), randn(g, 2, 6, 8)),
            kwargs={"mask": one_key},
        ),
        Probe(
            name="float64, d_k = 256",
            args=(_f64(g, 6, 256), _f64(g, 9, 256)),
        ),
        Probe(
            name="gradients with respect to q and k, with a mask",
            args=(_f64(g, 2, 4, 8), _f64(g, 2, 5, 8)),
            kwargs={"mask": _mask(g, 4, 5)},
            mode="grad",
            grad_seed=5,
        ),
    ]


# ---------------------------------------------------------------- scaled_dot_product_attention

_SDPA = "def scaled_dot_product_attention(q, k, v, mask=None, scale=None):\n"


def _calls_pytorch(mistake_id: str) -> Mistake:
    return Mistake(
        id=mistake_id,
        hint=CALLS_SDPA_HINT,
        source=_SDPA
        + """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
""",
    )


def _arguments_swapped(mistake_id: str) -> Mistake:
    return Mistake(
        id=mistake_id,
        hint="attention_weights takes (q, k, mask, scale) in that order: "
        "attention_weights(q, k, scale, mask) hands the scale over as the mask. Pass them by "
        "name, attention_weights(q, k, mask=mask, scale=scale)",
        source=_SDPA
        + """
    return attention_weights(q, k, scale, mask) @ v
""",
    )


def _without_weights(mistake_id: str) -> Mistake:
    return Mistake(
        id=mistake_id,
        hint="build on your attention_weights (it already scales, masks and normalises): "
        "return attention_weights(q, k, mask=mask, scale=scale) @ v",
        source=_SDPA
        + """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scores = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
""",
    )


SDPA_SHAPES_MISTAKES = [
    _without_weights("sdpa-without-attention-weights"),
    _calls_pytorch("sdpa-call-pytorch-attention"),
    Mistake(
        id="sdpa-transposed-weights",
        hint="the output is A @ v with A of shape (..., T_q, T_k) as it comes: row i of A "
        "averages the values for query i, no transpose",
        source=_SDPA
        + """
    return attention_weights(q, k, mask, scale).transpose(-2, -1) @ v
""",
    ),
    Mistake(
        id="sdpa-drops-the-scale",
        hint="pass `scale` on to attention_weights: an explicit scale must reach the scores",
        source=_SDPA
        + """
    return attention_weights(q, k, mask) @ v
""",
    ),
    _arguments_swapped("sdpa-scale-passed-as-mask"),
]

SDPA_MASK_MISTAKES = [
    _without_weights("sdpa-mask-without-attention-weights"),
    Mistake(
        id="sdpa-drops-the-mask",
        hint="pass `mask` on to attention_weights: without it every query attends to every key",
        source=_SDPA
        + """
    return attention_weights(q, k, scale=scale) @ v
""",
    ),
    _arguments_swapped("sdpa-mask-passed-as-scale"),
    _calls_pytorch("sdpa-mask-call-pytorch-attention"),
]


def _qkv(g, *lead: int, tq: int, tk: int, d: int, dv: int, dtype=torch.float32):
    return (
        randn(g, *lead, tq, d, dtype=dtype),
        randn(g, *lead, tk, d, dtype=dtype),
        randn(g, *lead, tk, dv, dtype=dtype),
    )


def sdpa_shapes_visible() -> list[Probe]:
    g = seeded(202)
    return [
        Probe(name="3-D (batch, T, d) = (2, 6, 8)", args=_qkv(g, 2, tq=6, tk=6, d=8, dv=8)),
        Probe(
            name="4-D, T_q = 3, T_k = 9, d_v = 5: output (2, 4, 3, 5)",
            args=_qkv(g, 2, 4, tq=3, tk=9, d=16, dv=5),
        ),
        Probe(name="no batch dimension: (T, d)", args=_qkv(g, tq=4, tk=6, d=8, dv=3)),
        Probe(
            name="explicit scale=1.0",
            args=_qkv(g, 2, tq=6, tk=6, d=8, dv=8),
            kwargs={"scale": 1.0},
        ),
        Probe(
            name="gradients with respect to q, k and v (float64)",
            args=_qkv(g, 2, tq=3, tk=5, d=4, dv=2, dtype=torch.float64),
            mode="grad",
            grad_seed=22,
        ),
    ]


def sdpa_shapes_hidden(g: torch.Generator) -> list[Probe]:
    return [
        Probe(name="3-D inputs (batch, T, d) = (2, 6, 8)", args=_qkv(g, 2, tq=6, tk=6, d=8, dv=8)),
        Probe(
            name="4-D inputs (batch, heads, T, d_head) = (2, 4, 5, 16)",
            args=_qkv(g, 2, 4, tq=5, tk=5, d=16, dv=16),
        ),
        Probe(
            name="4 queries, 9 keys, d_v = 3 != d_k = 8: output (..., 4, 3)",
            args=_qkv(g, 3, 2, tq=4, tk=9, d=8, dv=3),
        ),
        Probe(name="no batch dimension: (T, d)", args=_qkv(g, tq=7, tk=5, d=12, dv=6)),
        Probe(
            name="explicit scale=1.0",
            args=_qkv(g, 2, tq=3, tk=4, d=16, dv=5),
            kwargs={"scale": 1.0},
        ),
        Probe(
            name="d_k = 128 in float64",
            args=_qkv(g, 2, tq=4, tk=6, d=128, dv=4, dtype=torch.float64),
        ),
        Probe(
            name="gradients with respect to q, k and v",
            args=_qkv(g, 2, 2, tq=3, tk=5, d=8, dv=4, dtype=torch.float64),
            mode="grad",
            grad_seed=6,
        ),
    ]


def sdpa_mask_visible() -> list[Probe]:
    g = seeded(203)
    q, k, v = _qkv(g, 2, 3, tq=5, tk=7, d=8, dv=4)
    square = torch.rand(5, 7, generator=g) < 0.5
    square[:, 2] = True
    padding = torch.tensor([True] * 7 + [True] * 4 + [False] * 3).reshape(2, 1, 1, 7)
    full = _mask(g, 2, 3, 5, 7)
    return [
        Probe(
            name="mask (T_q, T_k) broadcast over batch and heads",
            args=(q, k, v),
            kwargs={"mask": square},
        ),
        Probe(
            name="padding-style mask (batch, 1, 1, T_k)", args=(q, k, v), kwargs={"mask": padding}
        ),
        Probe(
            name="one allowed key per query: the output is that key's value",
            args=(q, k, v),
            kwargs={"mask": torch.eye(5, 7, dtype=torch.bool)},
        ),
        Probe(name="a full mask (batch, heads, T_q, T_k)", args=(q, k, v), kwargs={"mask": full}),
        Probe(
            name="gradients with respect to q, k and v (float64), with a mask",
            args=_qkv(g, 2, tq=4, tk=6, d=4, dv=3, dtype=torch.float64),
            kwargs={"mask": _mask(g, 4, 6)},
            mode="grad",
            grad_seed=23,
        ),
    ]


def sdpa_mask_hidden(g: torch.Generator) -> list[Probe]:
    q, k, v = _qkv(g, 2, 3, tq=5, tk=7, d=8, dv=4)
    one_key = torch.nn.functional.one_hot(torch.randint(0, 7, (5,), generator=g), 7).bool()
    return [
        Probe(
            name="mask (T_q, T_k) = (5, 7) broadcast over batch and heads",
            args=(q, k, v),
            kwargs={"mask": _mask(g, 5, 7)},
        ),
        Probe(
            name="padding-style mask (batch, 1, 1, T_k)",
            args=(q, k, v),
            kwargs={"mask": _mask(g, 2, 1, 1, 7)},
        ),
        Probe(
            name="a full mask (batch, heads, T_q, T_k)",
            args=(q, k, v),
            kwargs={"mask": _mask(g, 2, 3, 5, 7)},
        ),
        Probe(
            name="each query may see one key only: its output is that key's value",
            args=(q, k, v),
            kwargs={"mask": one_key},
        ),
        Probe(
            name="an all-True mask changes nothing",
            args=(q, k, v),
            kwargs={"mask": torch.ones(5, 7, dtype=torch.bool)},
        ),
        Probe(
            name="3-D inputs with a (batch, T_q, T_k) mask",
            args=_qkv(g, 2, tq=4, tk=6, d=6, dv=6),
            kwargs={"mask": _mask(g, 2, 4, 6)},
        ),
        Probe(
            name="gradients with respect to q, k and v, with a mask",
            args=_qkv(g, 2, tq=4, tk=6, d=8, dv=3, dtype=torch.float64),
            kwargs={"mask": _mask(g, 4, 6)},
            mode="grad",
            grad_seed=7,
        ),
    ]


# ---------------------------------------------------------------- attention_entropy

ENTROPY_MISTAKES = [
    Mistake(
        id="entropy-nan-at-zero",
        hint="0 * log(0) is NaN in floating point, but its limit is 0: use "
        "torch.special.xlogy(p, p), which is exactly 0 there",
        source="""
def attention_entropy(weights):
    return -(weights * torch.log(weights)).sum(dim=-1)
""",
    ),
    Mistake(
        id="entropy-in-bits",
        hint="the entropy here is in nats: natural log (torch.log, xlogy), not log2",
        source="""
def attention_entropy(weights):
    return -(torch.special.xlogy(weights, weights) / math.log(2)).sum(dim=-1)
""",
    ),
    Mistake(
        id="entropy-sign",
        hint="H(p) = -sum p log p: the minus sign makes it positive (log p <= 0)",
        source="""
def attention_entropy(weights):
    return torch.special.xlogy(weights, weights).sum(dim=-1)
""",
    ),
    Mistake(
        id="entropy-sums-over-the-first-dimension",
        hint="sum over the last dimension, the keys (dim=-1): one entropy per row, shape (...,)",
        source="""
def attention_entropy(weights):
    return -torch.special.xlogy(weights, weights).sum(dim=0)
""",
    ),
    Mistake(
        id="entropy-mean-instead-of-sum",
        hint="the entropy is a *sum* over the keys, -sum_j p_j log p_j: .mean(dim=-1) divides "
        "it by the number of keys T_k",
        source="""
def attention_entropy(weights):
    return -torch.special.xlogy(weights, weights).mean(dim=-1)
""",
    ),
    Mistake(
        id="entropy-keeps-the-dimension",
        hint="the result has shape (...,), one number per row: sum without keepdim=True",
        source="""
def attention_entropy(weights):
    return -torch.special.xlogy(weights, weights).sum(dim=-1, keepdim=True)
""",
    ),
]


def _rows(g: torch.Generator, *shape: int, dtype=torch.float32) -> torch.Tensor:
    return torch.softmax(randn(g, *shape, scale=2.0, dtype=torch.float64), -1).to(dtype)


# torch.special.entr is -p log p with 0 log 0 = 0, the whole exercise in one call (and the
# stand-in for a learner's attention_entropy in lesson 02).
ENTR_FORBIDDEN = {"special_entr": "torch.special.entr"}
ENTR_HINT = (
    "It computes -p log p with 0 log 0 = 0 for you, which is the exercise: use "
    "torch.special.xlogy or torch.where."
)


def entropy_visible() -> list[Probe]:
    g = seeded(206)
    return [
        Probe(name="uniform over 16 keys: log 16", args=(torch.full((2, 3, 16), 1 / 16),)),
        Probe(name="one-hot rows: exactly 0 (0 log 0 = 0)", args=(torch.eye(5),)),
        Probe(
            name="masked keys (weight 0) contribute nothing",
            args=(torch.tensor([[0.5, 0.0, 0.5, 0.0]]),),
        ),
        Probe(name="4-D weights (batch, heads, T_q, T_k)", args=(_rows(g, 2, 3, 4, 5),)),
        Probe(
            name="gradient (float64), rows without zeros",
            args=(_rows(g, 3, 6, dtype=torch.float64),),
            mode="grad",
            grad_seed=26,
        ),
    ]


def entropy_hidden(g: torch.Generator) -> list[Probe]:
    with_zeros = A.masked_softmax(randn(g, 4, 6), _mask(g, 4, 6, p=0.5))
    one_hot = torch.nn.functional.one_hot(torch.tensor([2, 0, 4]), 5).float()
    return [
        Probe(name="attention rows, shape (4, 10)", args=(_rows(g, 4, 10),)),
        Probe(name="rows with masked (exactly 0) weights: 0 log 0 = 0", args=(with_zeros,)),
        Probe(name="one-hot rows have entropy 0", args=(one_hot,)),
        Probe(
            name="uniform rows over 16 keys have entropy log 16",
            args=(torch.full((3, 16), 1 / 16),),
        ),
        Probe(
            name="4-D weights (batch, heads, T_q, T_k) = (2, 3, 4, 5)", args=(_rows(g, 2, 3, 4, 5),)
        ),
        Probe(name="float64", args=(_rows(g, 3, 7, dtype=torch.float64),)),
        Probe(
            name="gradient, rows without zeros",
            args=(_rows(g, 2, 5, dtype=torch.float64),),
            mode="grad",
            grad_seed=8,
        ),
    ]


# ---------------------------------------------------------------- scaling_experiment

_EXPERIMENT = "def scaling_experiment(q, k, scale):\n"
_STACK = """
    return torch.stack([p.amax(dim=-1).mean(), attention_entropy(p).mean(),
                        torch.linalg.matrix_norm(jacobian).mean()])
"""
_JACOBIAN = "    jacobian = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)\n"

EXPERIMENT_MISTAKES = [
    Mistake(
        id="experiment-ignores-the-scale",
        hint="pass the scale under study on: attention_weights(q, k, scale=scale). Without it "
        "every experiment runs at the default 1/sqrt(d_k)",
        source=_EXPERIMENT + "    p = attention_weights(q, k)\n" + _JACOBIAN + _STACK,
    ),
    Mistake(
        id="experiment-jacobian-without-diagonal",
        hint="the softmax Jacobian is diag(p) - p p^T: torch.diag_embed(p) minus the outer "
        "products; the diagonal term is missing",
        source=_EXPERIMENT
        + "    p = attention_weights(q, k, scale=scale)\n"
        + "    jacobian = -p.unsqueeze(-1) * p.unsqueeze(-2)\n"
        + _STACK,
    ),
    Mistake(
        id="experiment-softmax-over-queries",
        hint="each row is one query's distribution over the keys: use your "
        "attention_weights(q, k, scale=scale), whose rows (not columns) sum to 1",
        source=_EXPERIMENT
        + "    p = torch.softmax((q @ k.T) * scale, dim=0).T\n"
        + _JACOBIAN
        + _STACK,
    ),
    Mistake(
        id="experiment-max-over-queries",
        hint="saturation is each row's largest weight, p.amax(dim=-1), then the mean over the "
        "rows; p.amax(dim=0) takes a maximum over the queries",
        source=_EXPERIMENT
        + "    p = attention_weights(q, k, scale=scale)\n"
        + _JACOBIAN
        + """
    return torch.stack([p.amax(dim=0).mean(), attention_entropy(p).mean(),
                        torch.linalg.matrix_norm(jacobian).mean()])
""",
    ),
    Mistake(
        id="experiment-sums-over-rows",
        hint="each of the three numbers is a mean over the N rows (.mean()), not a sum",
        source=_EXPERIMENT
        + "    p = attention_weights(q, k, scale=scale)\n"
        + _JACOBIAN
        + """
    return torch.stack([p.amax(dim=-1).sum(), attention_entropy(p).sum(),
                        torch.linalg.matrix_norm(jacobian).sum()])
""",
    ),
    Mistake(
        id="experiment-spectral-norm",
        hint="the gradient size is the Frobenius norm, sqrt(sum J_ij^2): "
        "torch.linalg.matrix_norm's default, not ord=2 (the largest singular value)",
        source=_EXPERIMENT
        + "    p = attention_weights(q, k, scale=scale)\n"
        + _JACOBIAN
        + """
    return torch.stack([p.amax(dim=-1).mean(), attention_entropy(p).mean(),
                        torch.linalg.matrix_norm(jacobian, ord=2).mean()])
""",
    ),
    Mistake(
        id="experiment-norm-over-the-whole-batch",
        hint="the gradient size is the mean over the rows of each row's Frobenius norm, "
        "torch.linalg.matrix_norm(jacobian).mean(): torch.linalg.norm(jacobian) is one norm "
        "of all the rows' Jacobians together",
        source=_EXPERIMENT
        + "    p = attention_weights(q, k, scale=scale)\n"
        + _JACOBIAN
        + """
    return torch.stack([p.amax(dim=-1).mean(), attention_entropy(p).mean(),
                        torch.linalg.norm(jacobian)])
""",
    ),
    Mistake(
        id="experiment-jacobian-diagonal-only",
        hint="the softmax Jacobian is diag(p) - p p^T: the outer products "
        "p.unsqueeze(-1) * p.unsqueeze(-2) are missing",
        source=_EXPERIMENT
        + "    p = attention_weights(q, k, scale=scale)\n"
        + "    jacobian = torch.diag_embed(p)\n"
        + _STACK,
    ),
    Mistake(
        id="experiment-returns-a-tuple",
        hint="return one tensor of shape (3,): torch.stack([saturation, entropy, gradient_size])",
        source=_EXPERIMENT
        + "    p = attention_weights(q, k, scale=scale)\n"
        + _JACOBIAN
        + """
    return (p.amax(dim=-1).mean(), attention_entropy(p).mean(),
            torch.linalg.matrix_norm(jacobian).mean())
""",
    ),
]


def _qk(g: torch.Generator, n: int, t: int, d: int, dtype=torch.float32):
    return randn(g, n, d, dtype=dtype), randn(g, t, d, dtype=dtype)


def experiment_visible() -> list[Probe]:
    g = seeded(207)
    q, k = _qk(g, 32, 10, 16)
    return [
        Probe(name="d_k = 16, scale 1/sqrt(d_k) = 0.25", args=(q, k, 0.25)),
        Probe(name="scale 0: uniform rows give (1/T, log T, sqrt(T-1)/T)", args=(q, k, 0.0)),
        Probe(name="a huge scale (100) saturates: (~1, ~0, ~0)", args=(q, k, 100.0)),
        Probe(name="d_k = 64 unscaled (scale 1)", args=(*_qk(g, 24, 16, 64), 1.0)),
        Probe(
            name="float64, d_k = 64, scale 1/8", args=(*_qk(g, 16, 12, 64, torch.float64), 0.125)
        ),
    ]


def experiment_hidden(g: torch.Generator) -> list[Probe]:
    return [
        Probe(name="d_k = 16, scale 1/sqrt(d_k)", args=(*_qk(g, 32, 20, 16), 0.25)),
        Probe(name="d_k = 64, unscaled (scale 1): saturated rows", args=(*_qk(g, 24, 16, 64), 1.0)),
        Probe(
            name="d_k = 64, scale 1/d_k: nearly uniform rows", args=(*_qk(g, 24, 16, 64), 1 / 64)
        ),
        Probe(name="scale 0: exactly uniform rows", args=(*_qk(g, 8, 10, 4), 0.0)),
        Probe(
            name="d_k = 256 in float64, scale 1/sqrt(d_k)",
            args=(*_qk(g, 16, 12, 256, torch.float64), 1 / 16),
        ),
        Probe(name="d_k = 2, scale 3.0", args=(*_qk(g, 40, 30, 2), 3.0)),
    ]


# ---------------------------------------------------------------- the lesson

_ATTENTION = dict(forbidden=SDPA_OPS, forbidden_hint=SDPA_HINT)

LESSON = Lesson(
    folder="02-scaled-attention",
    notebook="scaled_attention",
    context_cells=("setup", "expectation"),
    exercises=[
        Exercise(
            id="dot-variance",
            title="Var(q.k) for n terms, by expectation algebra",
            function="dot_product_variance",
            signature="dot_product_variance(n: int) -> sympy expression in sigma_q, sigma_k",
            reference=V.dot_product_variance,
            answer_cell="dot_product_variance",
            test_cell="test-dot-variance",
            points=2,
            visible=dot_variance_visible,
            hidden=dot_variance_hidden,
            mistakes=DOT_VARIANCE_MISTAKES,
        ),
        Exercise(
            id="closed-forms",
            title="the variance of raw and scaled logits",
            function="logit_variances",
            signature="logit_variances(sigma_q=sigma_q, sigma_k=sigma_k) -> (Var(q.k), "
            "Var(q.k/sqrt(d_k)), Var(q.k/d_k)), sympy expressions in d_k",
            reference=V.logit_variances,
            answer_cell="logit_variances",
            test_cell="test-closed-forms",
            points=2,
            visible=logit_variances_visible,
            hidden=logit_variances_hidden,
            mistakes=LOGIT_VARIANCE_MISTAKES,
        ),
        Exercise(
            id="monte-carlo",
            title="Monte Carlo estimate of Var(q.k)",
            function="monte_carlo_variance",
            signature="monte_carlo_variance(d_k: int, n_samples: int, sigma_q=1.0, sigma_k=1.0, "
            "seed=0) -> Python float",
            reference=V.monte_carlo_variance,
            answer_cell="monte_carlo_variance",
            test_cell="test-monte-carlo",
            points=2,
            visible=monte_carlo_visible,
            hidden=monte_carlo_hidden,
            mistakes=MONTE_CARLO_MISTAKES,
            forbidden=PAIRS_MATRIX,
            forbidden_hint=PAIRS_HINT,
        ),
        Exercise(
            id="attention-weights",
            title="attention weights (rows sum to 1, with a mask)",
            function="attention_weights",
            signature="attention_weights(q: (..., T_q, d_k), k: (..., T_k, d_k), mask: bool "
            "broadcasting to (..., T_q, T_k) = None, scale: float = None) -> (..., T_q, T_k)",
            reference=A.attention_weights,
            answer_cell="attention_weights",
            test_cell="test-attention-weights",
            points=3,
            visible=attention_weights_visible,
            hidden=attention_weights_hidden,
            mistakes=ATTENTION_WEIGHTS_MISTAKES,
            **_ATTENTION,
        ),
        Exercise(
            id="sdpa-shapes",
            title="scaled dot-product attention: 3-D, 4-D, T_q != T_k, d_v != d_k",
            function="scaled_dot_product_attention",
            signature="scaled_dot_product_attention(q: (..., T_q, d_k), k: (..., T_k, d_k), "
            "v: (..., T_k, d_v), mask=None, scale=None) -> (..., T_q, d_v)",
            reference=A.scaled_dot_product_attention,
            answer_cell="scaled_dot_product_attention",
            test_cell="test-sdpa-shapes",
            points=2,
            visible=sdpa_shapes_visible,
            hidden=sdpa_shapes_hidden,
            mistakes=SDPA_SHAPES_MISTAKES,
            stand_ins=WEIGHTS_STAND_IN,
            must_call=("attention_weights",),
            uses=("attention_weights",),
            **_ATTENTION,
        ),
        Exercise(
            id="sdpa-mask",
            title="scaled dot-product attention with a boolean mask",
            function="scaled_dot_product_attention",
            signature="scaled_dot_product_attention(q, k, v, mask: bool (True = may attend), "
            "scale=None) -> (..., T_q, d_v)",
            reference=A.scaled_dot_product_attention,
            answer_cell="scaled_dot_product_attention",
            test_cell="test-sdpa-mask",
            points=2,
            visible=sdpa_mask_visible,
            hidden=sdpa_mask_hidden,
            mistakes=SDPA_MASK_MISTAKES,
            stand_ins=WEIGHTS_STAND_IN,
            must_call=("attention_weights",),
            uses=("attention_weights",),
            **_ATTENTION,
        ),
        Exercise(
            id="entropy",
            title="entropy of attention rows",
            function="attention_entropy",
            signature="attention_entropy(weights: (..., T_k) probabilities) -> (...,) nats",
            reference=A.attention_entropy,
            answer_cell="attention_entropy",
            test_cell="test-entropy",
            points=2,
            visible=entropy_visible,
            hidden=entropy_hidden,
            mistakes=ENTROPY_MISTAKES,
            forbidden=ENTR_FORBIDDEN,
            forbidden_hint=ENTR_HINT,
        ),
        Exercise(
            id="scaling-experiment",
            title="saturation, entropy and gradient size",
            function="scaling_experiment",
            signature="scaling_experiment(q: (N, d_k), k: (T, d_k), scale: float) -> (3,) tensor",
            reference=A.scaling_experiment,
            answer_cell="scaling_experiment",
            test_cell="test-scaling-experiment",
            points=3,
            visible=experiment_visible,
            hidden=experiment_hidden,
            mistakes=EXPERIMENT_MISTAKES,
            stand_ins={
                "attention_weights": "course.stand_ins:attention_weights",
                "attention_entropy": "course.stand_ins:attention_entropy",
            },
            uses=("attention_weights", "attention_entropy"),
            **_ATTENTION,
        ),
    ],
)
