"""Lesson 01 (softmax), declared once: exercises, references, probes, points, known mistakes."""

from __future__ import annotations

import math

import torch

from course.compare import Tolerance
from course.lesson import Exercise, Lesson, Mistake, Probe, randn, seeded
from solutions.kernels import softmax as K

# The ATen operators behind torch.softmax, F.softmax, Tensor.softmax, torch.log_softmax,
# torch.logsumexp and F.cross_entropy, whatever Python name the learner reached them by.
SOFTMAX_OPS = {
    "_softmax": "softmax (torch.softmax / F.softmax / Tensor.softmax)",
    "softmax": "softmax (torch.softmax / F.softmax / Tensor.softmax)",
    "_safe_softmax": "softmax (torch.softmax / F.softmax)",
    "_log_softmax": "log_softmax (torch.log_softmax / F.log_softmax)",
    "log_softmax": "log_softmax (torch.log_softmax / F.log_softmax)",
    "logsumexp": "logsumexp (torch.logsumexp / Tensor.logsumexp)",
}
# F.cross_entropy is a composite: the first forbidden operator it reaches is _log_softmax, so
# the log_softmax names say that F.cross_entropy may be what was called.
_VIA_CE = "log_softmax (torch.log_softmax / F.log_softmax, or F.cross_entropy, which calls it)"
LOSS_OPS = {
    **SOFTMAX_OPS,
    "_log_softmax": _VIA_CE,
    "log_softmax": _VIA_CE,
    "nll_loss": "nll_loss (F.nll_loss / F.cross_entropy)",
    "nll_loss_nd": "nll_loss (F.nll_loss / F.cross_entropy)",
    "nll_loss2d": "nll_loss (F.nll_loss / F.cross_entropy)",
    "cross_entropy_loss": "cross_entropy (F.cross_entropy)",
    # On the CPU, F.nll_loss reaches only nll_loss_forward (and 4-d inputs nll_loss2d_forward),
    # so the loss built-ins are also forbidden by their Python names (course.calling).
    "nll_loss_forward": "nll_loss (F.nll_loss / F.cross_entropy)",
    "nll_loss2d_forward": "nll_loss (F.nll_loss / F.cross_entropy)",
    "torch.nn.functional:nll_loss": "F.nll_loss",
    "torch.nn.functional:cross_entropy": "F.cross_entropy",
    "torch.nn:NLLLoss": "nn.NLLLoss",
    "torch.nn:CrossEntropyLoss": "nn.CrossEntropyLoss",
}
HINT = "Build it from torch.exp, torch.log, max and sum (and your own functions above)."
# The hint of every "computed in float32 whatever the input" mistake: float64 is judged at
# course.compare.TOLERANCES["float64"] (atol 1e-10, rtol 1e-8), which float32 (about 7
# significant digits) cannot meet.
FLOAT64_HINT = (
    "float64 inputs are judged at atol 1e-10, rtol 1e-8, and a computation done in float32 is "
    "right to only about 1e-7: upcast float16/bfloat16 to float32, but compute float64 in float64"
)
NEG_INF = float("-inf")
# A loss over logits of size 1e4 is itself about 1e4: float32 rounds it to ~1e-3.
HUGE_LOSS = Tolerance(1e-3, 1e-4, "logits of size 1e4 give losses whose float32 spacing is 1e-3")
HUGE_LOG = Tolerance(5e-3, 1e-4, "log-probabilities near -1e4 are spaced 1e-3 apart in float32")


def _with_neg_inf(x: torch.Tensor, g: torch.Generator, fraction: float = 0.3) -> torch.Tensor:
    """Some -inf entries, keeping the first entry of every row finite."""
    drop = torch.rand(x.shape, generator=g) < fraction
    drop[..., 0] = False
    return x.masked_fill(drop, NEG_INF)


def _spread_rows(g: torch.Generator) -> torch.Tensor:
    """Rows at very different heights: row 0 near 0, row 1 near 1e4, row 2 near -1e4."""
    x = randn(g, 3, 6, scale=3)
    return x + torch.tensor([[0.0], [1e4], [-1e4]])


# ---------------------------------------------------------------- softmax

SOFTMAX_STABLE_MISTAKES = [
    Mistake(
        id="softmax-no-max-subtraction",
        hint="exp overflows for large logits (exp(89) is inf in float32): subtract each row's "
        "max before exponentiating; the result is mathematically the same",
        source="""
def softmax(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)
""",
    ),
    Mistake(
        id="softmax-global-max",
        hint="subtract each row's own max (x.amax(dim, keepdim=True)), not the max of the whole "
        "tensor: a row far below the global max underflows to 0/0",
        source="""
def softmax(x, dim=-1):
    e = torch.exp(x - x.max())
    return e / e.sum(dim=dim, keepdim=True)
""",
    ),
    Mistake(
        id="softmax-nan-to-num-repair",
        hint="replacing NaN afterwards (nan_to_num) hides the overflow instead of avoiding it: the "
        "rows' largest logits get probability 0. Subtract each row's max before exponentiating",
        source="""
def softmax(x, dim=-1):
    e = torch.exp(x)
    return torch.nan_to_num(e / e.sum(dim=dim, keepdim=True))
""",
    ),
    Mistake(
        id="softmax-subtracts-mean",
        hint="subtract the row's max, not its mean or min: only the max makes every exponent "
        "<= 0 (no overflow) and keeps the largest term at exp(0) = 1 (no 0/0); with -inf "
        "entries the mean is -inf itself",
        source="""
def softmax(x, dim=-1):
    e = torch.exp(x - x.mean(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)
""",
    ),
    Mistake(
        id="softmax-loses-float16",
        hint="a float16 input must give a float16 output: compute in float32 if you like, then "
        "cast back with .to(x.dtype)",
        source="""
def softmax(x, dim=-1):
    if x.dtype == torch.float16:
        x = x.float()  # computes in float32 but forgets to cast back
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)
""",
    ),
]

SOFTMAX_MISTAKES = [
    Mistake(
        id="softmax-ignores-dim",
        hint="the max and the sum must run along the `dim` argument, not always along -1",
        source="""
def softmax(x, dim=-1):
    e = torch.exp(x - x.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)
""",
    ),
    Mistake(
        id="softmax-max-without-keepdim",
        hint="x.amax(dim) drops the dimension, so it no longer lines up with x: use "
        "keepdim=True so that the max broadcasts back along `dim`",
        source="""
def softmax(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim))
    return e / e.sum(dim=dim, keepdim=True)
""",
    ),
    Mistake(
        id="softmax-calls-torch-softmax",
        hint="calling the built-in softmax is what this exercise asks you not to do: write it "
        "from torch.exp, max and sum",
        source="""
def softmax(x, dim=-1):
    return torch.softmax(x, dim)
""",
    ),
    Mistake(
        id="softmax-via-functional-alias",
        hint="F.softmax under another name is still the built-in: write it from torch.exp, max "
        "and sum",
        source="""
from torch.nn.functional import softmax as _sm
def softmax(x, dim=-1):
    return _sm(x, dim=dim)
""",
    ),
    Mistake(
        id="softmax-via-log-softmax",
        hint="exp(log_softmax(x)) (or exp(x - logsumexp(x))) still calls a built-in: write it "
        "from torch.exp, max and sum",
        source="""
def softmax(x, dim=-1):
    return torch.exp(torch.log_softmax(x, dim))
""",
    ),
    Mistake(
        id="softmax-sums-whole-tensor",
        hint="e.sum() adds up the whole tensor, so no row sums to 1: sum along `dim` with "
        "keepdim=True",
        source="""
def softmax(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum()
""",
    ),
    Mistake(
        id="softmax-float32-for-float64",
        hint=FLOAT64_HINT,
        source="""
def softmax(x, dim=-1):
    xc = x.float()
    e = torch.exp(xc - xc.amax(dim=dim, keepdim=True))
    return (e / e.sum(dim=dim, keepdim=True)).to(x.dtype)
""",
    ),
    Mistake(
        id="softmax-breaks-autograd",
        hint="NumPy, .item()/.tolist() or a detached input cut the autograd graph: no gradient "
        "flows, and a model could not learn through this softmax. Use torch operations throughout",
        source="""
def softmax(x, dim=-1):
    import numpy as np
    a = x.detach().numpy()
    e = np.exp(a - a.max(axis=dim, keepdims=True))
    return torch.from_numpy(e / e.sum(axis=dim, keepdims=True))
""",
    ),
]


def softmax_basic_visible() -> list[Probe]:
    g = seeded(101)
    return [
        Probe(name="random logits, float32, shape (4, 10)", args=(randn(g, 4, 10),)),
        Probe(name="one row, shape (7,)", args=(randn(g, 7),)),
        Probe(name="dim=0 (columns), shape (6, 3)", args=(randn(g, 6, 3),), kwargs={"dim": 0}),
        Probe(
            name="float64, shape (2, 5, 4), dim=1",
            args=(randn(g, 2, 5, 4, dtype=torch.float64),),
            kwargs={"dim": 1},
        ),
        Probe(
            name="gradient (float64), compared with autograd through the reference",
            args=(randn(g, 3, 5, dtype=torch.float64),),
            mode="grad",
            grad_seed=1,
        ),
    ]


def softmax_basic_hidden(g: torch.Generator) -> list[Probe]:
    return [
        Probe(name="random logits, float32, shape (4, 10)", args=(randn(g, 4, 10),)),
        Probe(name="a single row, shape (7,)", args=(randn(g, 7),)),
        Probe(
            name="float64, shape (3, 5, 6), dim=1",
            args=(randn(g, 3, 5, 6, dtype=torch.float64),),
            kwargs={"dim": 1},
        ),
        Probe(name="dim=0 (columns), shape (6, 3)", args=(randn(g, 6, 3),), kwargs={"dim": 0}),
        Probe(name="dim=-2 of a 3-D tensor", args=(randn(g, 2, 4, 3),), kwargs={"dim": -2}),
        Probe(
            name="gradient matches autograd of the reference",
            args=(randn(g, 3, 8, dtype=torch.float64),),
            mode="grad",
            grad_seed=1,
        ),
    ]


def softmax_stable_visible() -> list[Probe]:
    g = seeded(102)
    return [
        Probe(name="huge logits (around +1e4)", args=(randn(g, 2, 6, scale=30) + 1e4,)),
        Probe(name="very negative logits (around -1e4)", args=(randn(g, 2, 6, scale=30) - 1e4,)),
        Probe(name="rows at very different heights (0, 1e4, -1e4)", args=(_spread_rows(g),)),
        Probe(name="rows containing -inf", args=(_with_neg_inf(randn(g, 3, 6), g),)),
        Probe(
            name="float16 logits around 100 (exp overflows float16)",
            args=((randn(g, 2, 8, scale=4) + 100).half(),),
        ),
        Probe(
            name="bfloat16 logits around 300 keep bfloat16",
            args=((randn(g, 2, 6, scale=4) + 300).bfloat16(),),
        ),
        Probe(
            name="gradient through rows containing -inf (float64): finite, no NaN",
            args=(_with_neg_inf(randn(g, 3, 6, dtype=torch.float64), g),),
            mode="grad",
            grad_seed=5,
        ),
    ]


def softmax_stable_hidden(g: torch.Generator) -> list[Probe]:
    return [
        Probe(name="huge logits (around +1e4), float32", args=(randn(g, 4, 9, scale=50) + 1e4,)),
        Probe(
            name="very negative logits (around -1e4), float32",
            args=(randn(g, 3, 6, scale=50) - 1e4,),
        ),
        Probe(
            name="logits spread over [-1e4, 1e4]",
            args=(randn(g, 5, 7, scale=5e3).clamp(-1e4, 1e4),),
        ),
        Probe(name="rows at very different heights", args=(_spread_rows(g),)),
        Probe(name="rows containing -inf", args=(_with_neg_inf(randn(g, 4, 8, scale=3), g),)),
        Probe(
            name="float16 logits around 100 (exp overflows float16)",
            args=((randn(g, 4, 12, scale=5) + 100).half(),),
        ),
        Probe(
            name="bfloat16 logits around 300",
            args=((randn(g, 3, 7, scale=5) + 300).bfloat16(),),
        ),
        Probe(
            name="huge logits along dim=0",
            args=(randn(g, 6, 4, scale=1e3) + 5e3,),
            kwargs={"dim": 0},
        ),
        Probe(
            name="float64 logits around -1e4 (rows far below -100)",
            args=(randn(g, 3, 6, scale=10, dtype=torch.float64) - 1e4,),
        ),
        Probe(
            name="gradient through rows containing -inf, huge logits (float64)",
            args=(_with_neg_inf(randn(g, 4, 7, scale=100, dtype=torch.float64) + 1e4, g),),
            mode="grad",
            grad_seed=6,
        ),
    ]


# ---------------------------------------------------------------- logsumexp

LOGSUMEXP_MISTAKES = [
    Mistake(
        id="logsumexp-no-shift",
        hint="log(sum(exp(x))) overflows for large x: compute m + log(sum(exp(x - m))) with m "
        "the row max",
        source="""
def logsumexp(x, dim=-1):
    return torch.log(torch.exp(x).sum(dim=dim))
""",
    ),
    Mistake(
        id="logsumexp-nan-on-all-neg-inf",
        hint="a row that is all -inf has max -inf, and x - m is then -inf - (-inf) = NaN: shift "
        "such rows by 0 instead (their log-sum-exp is -inf)",
        source="""
def logsumexp(x, dim=-1):
    m = x.amax(dim=dim, keepdim=True)
    return (m + torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))).squeeze(dim)
""",
    ),
    Mistake(
        id="logsumexp-forgets-to-add-max",
        hint="after shifting by m, add it back: LSE(x) = m + log(sum(exp(x - m)))",
        source="""
def logsumexp(x, dim=-1):
    m = x.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return torch.log(torch.exp(x - m).sum(dim=dim))
""",
    ),
    Mistake(
        id="logsumexp-max-without-keepdim",
        hint="x.amax(dim) drops the dimension, so it no longer lines up with x along `dim`: take "
        "the max with keepdim=True and squeeze at the end",
        source="""
def logsumexp(x, dim=-1):
    m = x.amax(dim=dim)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m + torch.log(torch.exp(x - m.unsqueeze(-1)).sum(dim=dim))
""",
    ),
    Mistake(
        id="logsumexp-float32-for-float64",
        hint=FLOAT64_HINT,
        source="""
def logsumexp(x, dim=-1):
    xc = x.float()
    m = xc.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return (m + torch.log(torch.exp(xc - m).sum(dim=dim, keepdim=True))).squeeze(dim).to(x.dtype)
""",
    ),
    Mistake(
        id="logsumexp-ignores-dim",
        hint="the max and the sum must run along the `dim` argument, not always along -1 "
        "(with dim=0 a (5, 3) input gives shape (3,))",
        source="""
def logsumexp(x, dim=-1):
    m = x.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m.squeeze(-1) + torch.log(torch.exp(x - m).sum(dim=-1))
""",
    ),
    Mistake(
        id="logsumexp-keeps-dim",
        hint="log-sum-exp reduces `dim` away: a (4, 10) input gives shape (4,), like "
        "torch.logsumexp (squeeze the kept dimension)",
        source="""
def logsumexp(x, dim=-1):
    m = x.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m + torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))
""",
    ),
]


def logsumexp_visible() -> list[Probe]:
    g = seeded(103)
    all_neg_inf = randn(g, 3, 5)
    all_neg_inf[1] = NEG_INF
    return [
        Probe(name="random logits, shape (4, 10)", args=(randn(g, 4, 10),)),
        Probe(name="huge logits (around +1e4)", args=(randn(g, 2, 6, scale=10) + 1e4,)),
        Probe(name="a row that is entirely -inf gives -inf", args=(all_neg_inf,)),
        Probe(
            name="dim=0, float64", args=(randn(g, 5, 3, dtype=torch.float64),), kwargs={"dim": 0}
        ),
    ]


def logsumexp_hidden(g: torch.Generator) -> list[Probe]:
    all_neg_inf = randn(g, 3, 5)
    all_neg_inf[1] = NEG_INF
    return [
        Probe(name="random logits, shape (4, 10)", args=(randn(g, 4, 10),)),
        Probe(name="huge logits (around +1e4)", args=(randn(g, 4, 6, scale=10) + 1e4,)),
        Probe(name="very negative logits (around -1e4)", args=(randn(g, 4, 6, scale=10) - 1e4,)),
        Probe(name="rows containing -inf", args=(_with_neg_inf(randn(g, 5, 6), g),)),
        Probe(name="a row that is entirely -inf gives -inf", args=(all_neg_inf,)),
        Probe(
            name="dim=0, float64",
            args=(randn(g, 5, 3, scale=100, dtype=torch.float64),),
            kwargs={"dim": 0},
        ),
        Probe(
            name="gradient matches autograd",
            args=(randn(g, 3, 6, dtype=torch.float64),),
            mode="grad",
            grad_seed=2,
        ),
    ]


# ---------------------------------------------------------------- log_softmax

LOG_SOFTMAX_MISTAKES = [
    Mistake(
        id="log-softmax-as-log-of-softmax",
        hint="log(softmax(x)) is -inf where a probability underflowed to 0: stay in log space, "
        "(x - m) - log(sum(exp(x - m)))",
        source="""
def log_softmax(x, dim=-1):
    m = x.amax(dim=dim, keepdim=True)
    e = torch.exp(x - m)
    return torch.log(e / e.sum(dim=dim, keepdim=True))
""",
    ),
    Mistake(
        id="log-softmax-float32-for-float16",
        hint="a float16 input must give a float16 output: compute in float32 if you like, then "
        "cast back with .to(x.dtype)",
        source="""
def log_softmax(x, dim=-1):
    xc = x.float()
    m = xc.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return (xc - m) - torch.log(torch.exp(xc - m).sum(dim=dim, keepdim=True))
""",
    ),
    Mistake(
        id="log-softmax-x-minus-logsumexp",
        hint="x - LSE(x) subtracts two large, nearly equal numbers and keeps only their rounding "
        "(float16's spacing is 0.0625 at 100): subtract the max first, "
        "(x - m) - log(sum(exp(x - m)))",
        source="""
def log_softmax(x, dim=-1):
    return x - logsumexp(x, dim).unsqueeze(dim)
""",
    ),
    Mistake(
        id="log-softmax-float32-for-float64",
        hint=FLOAT64_HINT,
        source="""
def log_softmax(x, dim=-1):
    xc = x.float()
    m = xc.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return ((xc - m) - torch.log(torch.exp(xc - m).sum(dim=dim, keepdim=True))).to(x.dtype)
""",
    ),
    Mistake(
        id="log-softmax-x-minus-lse-unshifted",
        hint="x - log(sum(exp(x))) overflows for large logits: shift by the row max first",
        source="""
def log_softmax(x, dim=-1):
    return x - torch.log(torch.exp(x).sum(dim=dim, keepdim=True))
""",
    ),
]


LOG_SOFTMAX_MISTAKES.append(
    Mistake(
        id="log-softmax-ignores-dim",
        hint="the max and the log-sum-exp must run along the `dim` argument, not always along -1",
        source="""
def log_softmax(x, dim=-1):
    m = x.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return x - m - torch.log(torch.exp(x - m).sum(dim=-1, keepdim=True))
""",
    )
)


def log_softmax_visible() -> list[Probe]:
    g = seeded(104)
    far = torch.tensor([[0.0, -1e4, 3.0], [1e4, 0.0, -1e4]])
    return [
        Probe(name="random logits, shape (3, 6)", args=(randn(g, 3, 6),)),
        Probe(name="probabilities that underflow to 0 still get finite logs", args=(far,)),
        Probe(name="float16 logits around 100 keep float16", args=((randn(g, 2, 5) + 100).half(),)),
        Probe(
            name="dim=0, float64", args=(randn(g, 4, 3, dtype=torch.float64),), kwargs={"dim": 0}
        ),
    ]


def log_softmax_hidden(g: torch.Generator) -> list[Probe]:
    far = torch.tensor([[0.0, -1e4, 3.0], [1e4, 0.0, -1e4]])
    return [
        Probe(name="random logits, shape (4, 10)", args=(randn(g, 4, 10),)),
        Probe(name="probabilities that underflow to 0 still get finite logs", args=(far,)),
        Probe(
            name="huge logits (around +1e4)",
            args=(randn(g, 3, 7, scale=20) + 1e4,),
            tolerance=HUGE_LOG,
        ),
        Probe(
            name="rows containing -inf keep -inf there",
            args=(_with_neg_inf(randn(g, 4, 6), g),),
        ),
        Probe(name="float16 logits around 100", args=((randn(g, 3, 9, scale=4) + 100).half(),)),
        Probe(
            name="bfloat16 logits around 300", args=((randn(g, 2, 7, scale=4) + 300).bfloat16(),)
        ),
        Probe(
            name="very negative logits (around -1e4)",
            args=(randn(g, 3, 5, scale=20) - 1e4,),
            tolerance=HUGE_LOG,
        ),
        Probe(
            name="dim=1 of a 3-D tensor, float64",
            args=(randn(g, 2, 5, 4, dtype=torch.float64),),
            kwargs={"dim": 1},
        ),
        Probe(
            name="gradient matches autograd",
            args=(randn(g, 3, 6, dtype=torch.float64),),
            mode="grad",
            grad_seed=3,
        ),
    ]


# ---------------------------------------------------------------- cross_entropy

CROSS_ENTROPY_MISTAKES = [
    Mistake(
        id="cross-entropy-sum-not-mean",
        hint="return the mean over the non-ignored positions, not their sum",
        source="""
def cross_entropy(logits, targets, ignore_index=-100):
    logp = log_softmax(logits, dim=-1)
    keep = targets != ignore_index
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    return -(logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1) * keep).sum()
""",
    ),
    Mistake(
        id="cross-entropy-mean-includes-ignored",
        hint="ignored positions must not count in the mean either: divide by the number of "
        "kept positions (keep.sum()), not by all of them",
        source="""
def cross_entropy(logits, targets, ignore_index=-100):
    logp = log_softmax(logits, dim=-1)
    keep = targets != ignore_index
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    return -(logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1) * keep).mean()
""",
    ),
    Mistake(
        id="cross-entropy-gathers-ignore-index",
        hint="an ignored target such as -100 is not a valid class index: replace ignored "
        "targets by any valid class (torch.where) before gathering, then mask them out",
        source="""
def cross_entropy(logits, targets, ignore_index=-100):
    logp = log_softmax(logits, dim=-1)
    keep = targets != ignore_index
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return -(picked * keep).sum() / keep.sum()
""",
    ),
    Mistake(
        id="cross-entropy-log-of-softmax",
        hint="log(softmax(...)) is -inf where the target's probability underflows, giving an "
        "infinite loss: use your log_softmax",
        source="""
def cross_entropy(logits, targets, ignore_index=-100):
    logp = torch.log(softmax(logits, dim=-1))
    keep = targets != ignore_index
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    return -(logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1) * keep).sum() / keep.sum()
""",
    ),
    Mistake(
        id="cross-entropy-no-ignore-mask",
        hint="positions whose target is ignore_index count neither in the sum nor in the mean: "
        "mask them out (keep = targets != ignore_index) and divide by keep.sum()",
        source="""
def cross_entropy(logits, targets, ignore_index=-100):
    logp = log_softmax(logits, dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -picked.mean()
""",
    ),
    Mistake(
        id="cross-entropy-missing-minus",
        hint="the loss is the *negative* mean log-probability of the targets: log p is <= 0, "
        "the loss >= 0",
        source="""
def cross_entropy(logits, targets, ignore_index=-100):
    logp = log_softmax(logits, dim=-1)
    keep = targets != ignore_index
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    return (logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1) * keep).sum() / keep.sum()
""",
    ),
    Mistake(
        id="cross-entropy-returns-python-number",
        hint="return a 0-d tensor, not a Python number (.item(), float()): no gradient can flow "
        "through a number, and training needs one",
        source="""
def cross_entropy(logits, targets, ignore_index=-100):
    logp = log_softmax(logits, dim=-1)
    keep = targets != ignore_index
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    return (-(logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1) * keep).sum() / keep.sum()).item()
""",
    ),
    Mistake(
        id="cross-entropy-float32-for-float64",
        hint=FLOAT64_HINT,
        source="""
def cross_entropy(logits, targets, ignore_index=-100):
    logp = log_softmax(logits.float(), dim=-1)
    keep = targets != ignore_index
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    loss = -(logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1) * keep).sum() / keep.sum()
    return loss.to(logits.dtype)
""",
    ),
    Mistake(
        id="cross-entropy-own-log-softmax-then-nll-loss",
        hint="F.nll_loss is the built-in half of F.cross_entropy: after your own log_softmax, "
        "pick each target's log-probability yourself (gather), mask the ignored positions and "
        "average",
        source="""
import torch.nn.functional as F
def cross_entropy(logits, targets, ignore_index=-100):
    logp = log_softmax(logits, dim=-1)
    flat = logp.reshape(-1, logp.shape[-1])
    return F.nll_loss(flat, targets.reshape(-1), ignore_index=ignore_index)
""",
    ),
    Mistake(
        id="cross-entropy-calls-nn-cross-entropy-loss",
        hint="nn.CrossEntropyLoss is the built-in this exercise asks you to write: log_softmax "
        "(yours), then each target's log-probability, masked and averaged",
        source="""
def cross_entropy(logits, targets, ignore_index=-100):
    loss = torch.nn.CrossEntropyLoss(ignore_index=ignore_index)
    return loss(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
""",
    ),
    Mistake(
        id="cross-entropy-hardcodes-minus-100",
        hint="use the ignore_index argument: a caller may ignore another class than -100",
        source="""
def cross_entropy(logits, targets, ignore_index=-100):
    logp = log_softmax(logits, dim=-1)
    keep = targets != -100
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    return -(logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1) * keep).sum() / keep.sum()
""",
    ),
]


def _targets(g: torch.Generator, shape: tuple, classes: int) -> torch.Tensor:
    return torch.randint(0, classes, shape, generator=g)


def cross_entropy_visible() -> list[Probe]:
    g = seeded(105)
    ignored = torch.tensor([[1, 6, 0], [3, -100, 2]])
    custom = torch.tensor([0, 3, 1, 0, 2])
    return [
        Probe(name="logits (N, C) = (5, 4)", args=(randn(g, 5, 4), _targets(g, (5,), 4))),
        Probe(
            name="(B, T, V) = (2, 3, 7) with an ignored position", args=(randn(g, 2, 3, 7), ignored)
        ),
        Probe(
            name="extreme logits (scale 1e4): the loss stays finite",
            args=(randn(g, 4, 3, scale=1e4), _targets(g, (4,), 3)),
            tolerance=HUGE_LOSS,
        ),
        Probe(
            name="ignore_index=0",
            args=(randn(g, 5, 4), custom),
            kwargs={"ignore_index": 0},
        ),
        Probe(
            name="float64 logits give a float64 loss",
            args=(randn(g, 6, 5, dtype=torch.float64), _targets(g, (6,), 5)),
        ),
    ]


def cross_entropy_hidden(g: torch.Generator) -> list[Probe]:
    t_ignored = _targets(g, (2, 6), 11)
    t_ignored[0, :3] = -100
    t_custom = _targets(g, (8,), 5)
    t_custom[::3] = 0
    return [
        Probe(name="logits (N, C) = (8, 5)", args=(randn(g, 8, 5), _targets(g, (8,), 5))),
        Probe(
            name="language-model layout (B, T, V) = (3, 4, 17)",
            args=(randn(g, 3, 4, 17), _targets(g, (3, 4), 17)),
        ),
        Probe(
            name="huge logits (scale 1e4)",
            args=(randn(g, 6, 4, scale=1e4), _targets(g, (6,), 4)),
            tolerance=HUGE_LOSS,
        ),
        Probe(
            name="ignore_index=-100 positions count neither in the sum nor the mean",
            args=(randn(g, 2, 6, 11), t_ignored),
        ),
        Probe(
            name="a custom ignore_index",
            args=(randn(g, 8, 5), t_custom),
            kwargs={"ignore_index": 0},
        ),
        Probe(
            name="float64 logits, (B, T, V) = (2, 5, 9)",
            args=(randn(g, 2, 5, 9, scale=3, dtype=torch.float64), _targets(g, (2, 5), 9)),
        ),
        Probe(
            name="gradient matches autograd",
            args=(randn(g, 5, 7, dtype=torch.float64), _targets(g, (5,), 7)),
            mode="grad",
            grad_seed=4,
        ),
    ]


# ---------------------------------------------------------------- entropy

ENTROPY_MISTAKES = [
    Mistake(
        id="entropy-nan-at-zero",
        hint="0 * log(0) is NaN in floating point, but its limit is 0: use torch.special.xlogy(p, "
        "p) or torch.where(p > 0, ...)",
        source="""
def entropy(p, dim=-1):
    return -(p * torch.log(p)).sum(dim=dim)
""",
    ),
    Mistake(
        id="entropy-in-bits",
        hint="the entropy here is in nats: use the natural log (torch.log), not log2",
        source="""
def entropy(p, dim=-1):
    return -torch.special.xlogy(p, p).sum(dim=dim) / torch.log(torch.tensor(2.0))
""",
    ),
    Mistake(
        id="entropy-mean-instead-of-sum",
        hint="H = -sum_i p_i log p_i: a sum over the distribution, not a mean",
        source="""
def entropy(p, dim=-1):
    return -torch.special.xlogy(p, p).mean(dim=dim)
""",
    ),
    Mistake(
        id="entropy-ignores-dim",
        hint="sum along the `dim` argument, not always along -1",
        source="""
def entropy(p, dim=-1):
    return -torch.special.xlogy(p, p).sum(dim=-1)
""",
    ),
]


# torch.special.entr is -p log p with 0 log 0 = 0, the whole exercise in one call (and the
# stand-in for a learner's attention_entropy in lesson 02).
ENTR_FORBIDDEN = {"special_entr": "torch.special.entr"}
ENTR_HINT = (
    "It computes -p log p with 0 log 0 = 0 for you, which is the exercise: use "
    "torch.special.xlogy or torch.where."
)


def entropy_visible() -> list[Probe]:
    g = seeded(106)
    return [
        Probe(name="uniform over 8: log 8", args=(torch.full((3, 8), 1 / 8),)),
        Probe(name="one-hot rows: exactly 0 (0 log 0 = 0)", args=(torch.eye(4),)),
        Probe(
            name="some zero probabilities", args=(torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.0, 0.8]]),)
        ),
        Probe(
            name="dim=0, float64",
            args=(torch.softmax(randn(g, 5, 3, dtype=torch.float64), 0),),
            kwargs={"dim": 0},
        ),
        Probe(
            name="gradient (float64, no zero probabilities)",
            args=(torch.softmax(randn(g, 3, 6, dtype=torch.float64), -1),),
            mode="grad",
            grad_seed=7,
        ),
    ]


def entropy_hidden(g: torch.Generator) -> list[Probe]:
    one_hot = torch.zeros(3, 5)
    one_hot[torch.arange(3), torch.tensor([0, 4, 2])] = 1.0
    with_zeros = torch.softmax(_with_neg_inf(randn(g, 4, 6), g), dim=-1)
    return [
        Probe(
            name="random distributions, shape (4, 10)", args=(torch.softmax(randn(g, 4, 10), -1),)
        ),
        Probe(name="one-hot rows have entropy exactly 0 (0 log 0 = 0)", args=(one_hot,)),
        Probe(name="distributions with some zero probabilities", args=(with_zeros,)),
        Probe(name="uniform rows have entropy log n", args=(torch.full((2, 8), 1 / 8),)),
        Probe(
            name="dim=0, float64",
            args=(torch.softmax(randn(g, 6, 3, dtype=torch.float64), 0),),
            kwargs={"dim": 0},
        ),
        Probe(
            name="gradient matches autograd (positive probabilities)",
            args=(torch.softmax(randn(g, 4, 5, dtype=torch.float64), -1),),
            mode="grad",
            grad_seed=8,
        ),
    ]


# ---------------------------------------------------------------- softmax_jacobian

JACOBIAN_MISTAKES = [
    Mistake(
        id="jacobian-missing-diagonal",
        hint="J = diag(p) - p p^T: the diagonal term diag(p) (torch.diag_embed) is missing",
        source="""
def softmax_jacobian(p):
    return -p.unsqueeze(-1) * p.unsqueeze(-2)
""",
    ),
    Mistake(
        id="jacobian-diagonal-only",
        hint="J = diag(p) - p p^T: the outer product p p^T (p.unsqueeze(-1) * p.unsqueeze(-2)) "
        "is missing",
        source="""
def softmax_jacobian(p):
    return torch.diag_embed(p)
""",
    ),
    Mistake(
        id="jacobian-diagonal-p-one-minus-p",
        hint="p_i (1 - p_i) is only the diagonal: off the diagonal dp_i/dz_j = -p_i p_j, so "
        "J = diag(p) - p p^T",
        source="""
def softmax_jacobian(p):
    return torch.diag_embed(p * (1 - p))
""",
    ),
    Mistake(
        id="jacobian-inner-product",
        hint="p p^T is the *outer* product, an (n, n) matrix with entries p_i p_j "
        "(p.unsqueeze(-1) * p.unsqueeze(-2)); (p * p).sum() is the inner product, one number",
        source="""
def softmax_jacobian(p):
    return torch.diag_embed(p) - (p * p).sum(-1, keepdim=True).unsqueeze(-1)
""",
    ),
    Mistake(
        id="jacobian-diag-embed-minus-outer",
        hint="p has shape (..., n): torch.outer only takes 1-D vectors; the batched outer "
        "product is p.unsqueeze(-1) * p.unsqueeze(-2)",
        source="""
def softmax_jacobian(p):
    return torch.diag_embed(p) - torch.outer(p, p)
""",
    ),
    Mistake(
        id="jacobian-no-batch",
        hint="p has shape (..., n): torch.diag(p) and p @ p.T only work for one row; use "
        "torch.diag_embed(p) and p.unsqueeze(-1) * p.unsqueeze(-2)",
        source="""
def softmax_jacobian(p):
    return torch.diag(p) - torch.outer(p, p)
""",
    ),
]


def _probabilities(g: torch.Generator, *shape: int, dtype=torch.float64) -> torch.Tensor:
    return torch.softmax(randn(g, *shape, dtype=torch.float64), -1).to(dtype)


def jacobian_visible() -> list[Probe]:
    g = seeded(107)
    return [
        Probe(name="one row, n = 4, float64", args=(_probabilities(g, 4),)),
        Probe(name="a batch (2, 3, 5)", args=(_probabilities(g, 2, 3, 5, dtype=torch.float32),)),
    ]


def jacobian_hidden(g: torch.Generator) -> list[Probe]:
    return [
        Probe(name="n = 3", args=(_probabilities(g, 3),)),
        Probe(name="n = 1 (the Jacobian is [[0]])", args=(_probabilities(g, 1),)),
        Probe(name="a batch of rows, shape (4, 6)", args=(_probabilities(g, 4, 6),)),
        Probe(name="two batch dimensions, shape (2, 3, 5)", args=(_probabilities(g, 2, 3, 5),)),
        Probe(name="float32 keeps float32", args=(_probabilities(g, 2, 4, dtype=torch.float32),)),
        Probe(
            name="gradient matches autograd",
            args=(_probabilities(g, 3, 4),),
            mode="grad",
            grad_seed=9,
        ),
    ]


# ---------------------------------------------------------------- online_update

ONLINE_UPDATE_MISTAKES = [
    Mistake(
        id="online-update-no-rescale",
        hint="the old sum was taken relative to the old max: rescale it by exp(m - m_new) "
        "when the max grows",
        source="""
def online_update(m, s, block):
    m_new = torch.maximum(m, block.amax(dim=-1, keepdim=True))
    return m_new, s + torch.exp(block - m_new).sum(dim=-1, keepdim=True)
""",
    ),
    Mistake(
        id="online-update-inverted-rescale",
        hint="the rescale factor is exp(m - m_new) (at most 1), not exp(m_new - m)",
        source="""
def online_update(m, s, block):
    m_new = torch.maximum(m, block.amax(dim=-1, keepdim=True))
    shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
    return m_new, s * torch.exp(shift - m) + torch.exp(block - shift).sum(dim=-1, keepdim=True)
""",
    ),
    Mistake(
        id="online-update-inverted-rescale-guarded",
        hint="the rescale factor is exp(m - m_new) (at most 1), not exp(m_new - m)",
        source="""
def online_update(m, s, block):
    m_new = torch.maximum(m, block.amax(dim=-1, keepdim=True))
    shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
    old = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m_new, s * torch.exp(shift - old) + torch.exp(block - shift).sum(dim=-1, keepdim=True)
""",
    ),
    Mistake(
        id="online-update-no-neg-inf-guard",
        hint="when everything seen so far is -inf, m_new is -inf and exp(-inf - (-inf)) is NaN: "
        "shift by 0 in that case (torch.where(torch.isfinite(m_new), m_new, 0))",
        source="""
def online_update(m, s, block):
    m_new = torch.maximum(m, block.amax(dim=-1, keepdim=True))
    return m_new, s * torch.exp(m - m_new) + torch.exp(block - m_new).sum(dim=-1, keepdim=True)
""",
    ),
    Mistake(
        id="online-update-forgets-running-max",
        hint="the new max is max(m, max(block)): taking only the block's max loses the larger "
        "values seen before",
        source="""
def online_update(m, s, block):
    m_new = block.amax(dim=-1, keepdim=True)
    shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
    return m_new, s * torch.exp(m - shift) + torch.exp(block - shift).sum(dim=-1, keepdim=True)
""",
    ),
    Mistake(
        id="online-update-sum-without-keepdim",
        hint="sum the block with keepdim=True: s keeps shape (..., 1), like m",
        source="""
def online_update(m, s, block):
    m_new = torch.maximum(m, block.amax(dim=-1, keepdim=True))
    shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
    return m_new, s * torch.exp(m - shift) + torch.exp(block - shift).sum(dim=-1)
""",
    ),
    Mistake(
        id="online-update-returns-s-then-m",
        hint="return the pair in the order it came in: (m_new, s_new)",
        source="""
def online_update(m, s, block):
    m_new = torch.maximum(m, block.amax(dim=-1, keepdim=True))
    shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
    return s * torch.exp(m - shift) + torch.exp(block - shift).sum(dim=-1, keepdim=True), m_new
""",
    ),
    Mistake(
        id="online-update-shifts-by-old-max",
        hint="shift the block by the *new* max m_new, not the old m: with the old one, a "
        "larger block overflows, and the sums are relative to different maxima",
        source="""
def online_update(m, s, block):
    m_new = torch.maximum(m, block.amax(dim=-1, keepdim=True))
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m_new, s + torch.exp(block - shift).sum(dim=-1, keepdim=True)
""",
    ),
]


def _state(*shape: int, m: float | None = None, s: float = 0.0):
    m_t = torch.full((*shape, 1), NEG_INF if m is None else m)
    return m_t, torch.full((*shape, 1), s)


def online_update_visible() -> list[Probe]:
    g = seeded(108)
    return [
        Probe(name="first block from (m = -inf, s = 0)", args=(*_state(2), randn(g, 2, 3))),
        Probe(
            name="a block with a larger max: the old sum is rescaled",
            args=(*_state(1, m=0.0, s=2.0), torch.tensor([[1.0, 3.0]])),
        ),
        Probe(
            name="a block with a smaller max: the max stays, the sum grows",
            args=(*_state(1, m=100.0, s=1.0), torch.tensor([[0.0, -1.0]])),
        ),
        Probe(
            name="a first block that is all -inf: still (-inf, 0), no NaN",
            args=(*_state(2), torch.full((2, 3), NEG_INF)),
        ),
        Probe(
            name="a much larger block (around 1e4) after a small max",
            args=(*_state(1, m=0.0, s=1.0), torch.tensor([[1e4, 1e4 - 1.0]])),
        ),
        Probe(
            name="float64 state and block",
            args=(
                torch.tensor([[0.5], [-1.0]], dtype=torch.float64),
                torch.tensor([[2.0], [1.0]], dtype=torch.float64),
                randn(g, 2, 4, dtype=torch.float64),
            ),
        ),
    ]


def online_update_hidden(g: torch.Generator) -> list[Probe]:
    m_run, s_run = randn(g, 4, 1, scale=3), torch.rand(4, 1, generator=g) * 5 + 1
    return [
        Probe(name="first block (m = -inf, s = 0)", args=(*_state(3), randn(g, 3, 4))),
        Probe(
            name="a block whose max is larger: the old sum is rescaled",
            args=(*_state(2, m=0.0, s=2.5), randn(g, 2, 5) + 3),
        ),
        Probe(
            name="a block whose max is smaller",
            args=(*_state(2, m=5.0, s=1.5), randn(g, 2, 3) - 2),
        ),
        Probe(name="running state of several rows", args=(m_run, s_run, randn(g, 4, 6, scale=3))),
        Probe(
            name="a block that is all -inf changes nothing",
            args=(*_state(2, m=1.0, s=3.0), torch.full((2, 4), NEG_INF)),
        ),
        Probe(
            name="a first block that is all -inf (m = -inf, s = 0)",
            args=(*_state(2), torch.full((2, 4), NEG_INF)),
        ),
        Probe(
            name="rows in different states: all -inf so far, and running",
            args=(
                torch.tensor([[NEG_INF], [2.0]]),
                torch.tensor([[0.0], [1.5]]),
                torch.tensor([[NEG_INF, NEG_INF], [1.0, 5.0]]),
            ),
        ),
        Probe(
            name="huge logits (around 1e4)",
            args=(*_state(2, m=1e4, s=1.0), randn(g, 2, 4) + 1e4),
        ),
        Probe(
            name="a block 1e4 above the running max",
            args=(*_state(2, m=0.0, s=2.0), randn(g, 2, 3) + 1e4),
        ),
        Probe(
            name="float64 state and block",
            args=(
                randn(g, 3, 1, dtype=torch.float64),
                torch.rand(3, 1, generator=g, dtype=torch.float64) * 4 + 1,
                randn(g, 3, 5, scale=2, dtype=torch.float64),
            ),
        ),
    ]


# ---------------------------------------------------------------- online_softmax

ONLINE_SOFTMAX_MISTAKES = [
    Mistake(
        id="online-softmax-skips-last-block",
        hint="range(0, n - block_size, block_size) stops one block early: "
        "range(0, n, block_size) covers the short last block too",
        source="""
def online_softmax(x, block_size):
    m = torch.full((*x.shape[:-1], 1), float("-inf"), dtype=x.dtype)
    s = torch.zeros((*x.shape[:-1], 1), dtype=x.dtype)
    for start in range(0, x.shape[-1] - block_size, block_size):
        m, s = online_update(m, s, x[..., start:start + block_size])
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return torch.exp(x - shift) / s
""",
    ),
    Mistake(
        id="online-softmax-normalises-per-block",
        hint="normalise once, at the end, with the final m and s: normalising each block with "
        "its own statistics gives every block a total of 1",
        source="""
def online_softmax(x, block_size):
    out = []
    for start in range(0, x.shape[-1], block_size):
        block = x[..., start:start + block_size]
        m0 = torch.full((*x.shape[:-1], 1), float("-inf"), dtype=x.dtype)
        m, s = online_update(m0, torch.zeros_like(m0), block)
        out.append(torch.exp(block - m) / s)
    return torch.cat(out, dim=-1)
""",
    ),
    Mistake(
        id="online-softmax-without-online-update",
        hint="this exercise is the streaming algorithm: loop over the blocks with your "
        "online_update, rather than calling softmax on the whole row",
        source="""
def online_softmax(x, block_size):
    return softmax(x, dim=-1)
""",
    ),
    Mistake(
        id="online-softmax-one-update-for-the-whole-row",
        hint="fold the row in block by block: one online_update per block of `block_size` "
        "entries (the last one may be shorter), not one call on the whole row",
        source="""
def online_softmax(x, block_size):
    m0 = torch.full((*x.shape[:-1], 1), float("-inf"), dtype=x.dtype)
    m, s = online_update(m0, torch.zeros_like(m0), x)
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return torch.exp(x - shift) / s
""",
    ),
    Mistake(
        id="online-softmax-softmax-after-the-loop",
        hint="normalise with the streamed statistics, exp(x - m) / s: calling softmax on the "
        "whole row after the loop throws the algorithm away",
        source="""
def online_softmax(x, block_size):
    m = torch.full((*x.shape[:-1], 1), float("-inf"), dtype=x.dtype)
    s = torch.zeros((*x.shape[:-1], 1), dtype=x.dtype)
    for start in range(0, x.shape[-1], block_size):
        m, s = online_update(m, s, x[..., start:start + block_size])
    return softmax(x, dim=-1)
""",
    ),
    Mistake(
        id="online-softmax-normalises-with-first-max",
        hint="normalise with the final running max m (and its sum s), not with a max taken "
        "before the loop ends",
        source="""
def online_softmax(x, block_size):
    m = torch.full((*x.shape[:-1], 1), float("-inf"), dtype=x.dtype)
    s = torch.zeros((*x.shape[:-1], 1), dtype=x.dtype)
    first = None
    for start in range(0, x.shape[-1], block_size):
        m, s = online_update(m, s, x[..., start:start + block_size])
        first = m if first is None else first
    return torch.exp(x - first) / s
""",
    ),
    Mistake(
        id="online-softmax-over-a-nan-to-num-update",
        hint="your online_update repairs NaN with nan_to_num: that fixes the forward pass only. "
        "The NaN of exp(-inf - (-inf)) is still in the graph, and the gradient through an all "
        "-inf block is NaN. In online_update, shift by 0 when m_new is -inf "
        "(torch.where(torch.isfinite(m_new), m_new, 0)) so that no NaN is ever made",
        source="""
def online_update(m, s, block):
    m_new = torch.maximum(m, block.amax(dim=-1, keepdim=True))
    s_new = s * torch.exp(m - m_new) + torch.exp(block - m_new).sum(dim=-1, keepdim=True)
    return m_new, torch.nan_to_num(s_new, nan=0.0)

def online_softmax(x, block_size):
    m = torch.full((*x.shape[:-1], 1), float("-inf"), dtype=x.dtype)
    s = torch.zeros((*x.shape[:-1], 1), dtype=x.dtype)
    for start in range(0, x.shape[-1], block_size):
        m, s = online_update(m, s, x[..., start:start + block_size])
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return torch.exp(x - shift) / s
""",
    ),
    Mistake(
        id="online-softmax-over-an-update-that-forgets-the-max",
        hint="your online_update takes the new max from the block alone: after a large block "
        "and a much smaller one, the final m is too small and exp(x - m) overflows. The new "
        "max is max(m, max(block))",
        source="""
def online_update(m, s, block):
    m_new = block.amax(dim=-1, keepdim=True)
    shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
    return m_new, s * torch.exp(m - shift) + torch.exp(block - shift).sum(dim=-1, keepdim=True)

def online_softmax(x, block_size):
    m = torch.full((*x.shape[:-1], 1), float("-inf"), dtype=x.dtype)
    s = torch.zeros((*x.shape[:-1], 1), dtype=x.dtype)
    for start in range(0, x.shape[-1], block_size):
        m, s = online_update(m, s, x[..., start:start + block_size])
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return torch.exp(x - shift) / s
""",
    ),
]


def _neg_inf_blocks(x: torch.Tensor, block_size: int, blocks: list[int]) -> torch.Tensor:
    """`x` with the listed blocks (of the last dimension) entirely -inf."""
    x = x.clone()
    for b in blocks:
        x[..., b * block_size : (b + 1) * block_size] = NEG_INF
    return x


def _one_update_per_block(probes: list[Probe]) -> list[Probe]:
    """The streaming algorithm calls online_update once per block: ceil(n / block_size)."""
    for probe in probes:
        n, size = probe.args[0].shape[-1], probe.kwargs["block_size"]
        probe.min_calls = {"online_update": math.ceil(n / size)}
    return probes


def online_softmax_visible() -> list[Probe]:
    g = seeded(109)
    x = randn(g, 3, 10, scale=4)
    last_big = torch.cat([randn(g, 2, 9), torch.full((2, 1), 50.0)], -1)
    return _one_update_per_block(
        [
            Probe(
                name="blocks of 3 over length 10 (a short last block)",
                args=(x,),
                kwargs={"block_size": 3},
            ),
            Probe(name="blocks of 1", args=(x,), kwargs={"block_size": 1}),
            Probe(name="one block longer than the row", args=(x,), kwargs={"block_size": 64}),
            Probe(
                name="the largest logit in the last block",
                args=(last_big,),
                kwargs={"block_size": 3},
            ),
            Probe(
                name="a first block that is all -inf (masked), blocks of 2",
                args=(_neg_inf_blocks(randn(g, 2, 8), 2, [0]),),
                kwargs={"block_size": 2},
            ),
            Probe(
                name="float64, blocks of 4",
                args=(randn(g, 2, 9, scale=3, dtype=torch.float64),),
                kwargs={"block_size": 4},
            ),
            Probe(
                name="a large block before a much smaller one: [100, 0 | -100, -90], blocks of 2",
                args=(torch.tensor([[100.0, 0.0, -100.0, -90.0]]),),
                kwargs={"block_size": 2},
            ),
            Probe(
                name="gradient (float64) with an all -inf first block, blocks of 2: no NaN",
                args=(
                    torch.tensor([[NEG_INF, NEG_INF, 1.0, 2.0], [0.5, -1.0, 2.0, 0.0]]).double(),
                ),
                kwargs={"block_size": 2},
                mode="grad",
                grad_seed=12,
            ),
        ]
    )


def online_softmax_hidden(g: torch.Generator) -> list[Probe]:
    return _one_update_per_block(
        [
            Probe(
                name="length 10 in blocks of 3 (the last block is short)",
                args=(randn(g, 4, 10),),
                kwargs={"block_size": 3},
            ),
            Probe(name="blocks of 1", args=(randn(g, 2, 7),), kwargs={"block_size": 1}),
            Probe(
                name="one block larger than the row",
                args=(randn(g, 3, 5),),
                kwargs={"block_size": 64},
            ),
            Probe(
                name="length 12 in blocks of 4",
                args=(randn(g, 2, 3, 12),),
                kwargs={"block_size": 4},
            ),
            Probe(
                name="huge logits (around 1e4) in blocks of 4",
                args=(randn(g, 3, 11, scale=30) + 1e4,),
                kwargs={"block_size": 4},
            ),
            Probe(
                name="rows containing -inf, blocks of 2",
                args=(_with_neg_inf(randn(g, 4, 9), g),),
                kwargs={"block_size": 2},
            ),
            Probe(
                name="the largest logit in the last block",
                args=(torch.cat([randn(g, 2, 9), torch.full((2, 1), 50.0)], -1),),
                kwargs={"block_size": 3},
            ),
            Probe(
                name="an all -inf block first, in the middle and last (blocks of 3)",
                args=(
                    torch.stack(
                        [
                            _neg_inf_blocks(randn(g, 12), 3, [0]),
                            _neg_inf_blocks(randn(g, 12), 3, [1, 2]),
                            _neg_inf_blocks(randn(g, 12), 3, [3]),
                        ]
                    ),
                ),
                kwargs={"block_size": 3},
            ),
            Probe(
                name="float64, length 13 in blocks of 5",
                args=(randn(g, 3, 13, scale=4, dtype=torch.float64),),
                kwargs={"block_size": 5},
            ),
            Probe(
                name="gradient matches autograd of the softmax (float64)",
                args=(randn(g, 2, 7, dtype=torch.float64),),
                kwargs={"block_size": 3},
                mode="grad",
                grad_seed=10,
            ),
            Probe(
                name="a large block before much smaller ones, blocks of 3",
                args=(torch.cat([randn(g, 2, 3) + 80, randn(g, 2, 6) - 80], -1),),
                kwargs={"block_size": 3},
            ),
            Probe(
                name="gradient (float64) with all -inf blocks first and in the middle: no NaN",
                args=(
                    torch.stack(
                        [
                            _neg_inf_blocks(randn(g, 9, dtype=torch.float64), 3, [0]),
                            _neg_inf_blocks(randn(g, 9, dtype=torch.float64), 3, [1]),
                        ]
                    ),
                ),
                kwargs={"block_size": 3},
                mode="grad",
                grad_seed=13,
            ),
        ]
    )


# ---------------------------------------------------------------- the lesson

_COMMON = dict(forbidden=SOFTMAX_OPS, forbidden_hint=HINT)

LESSON = Lesson(
    folder="01-softmax",
    notebook="softmax",
    exercises=[
        Exercise(
            id="softmax-basic",
            title="softmax on ordinary logits and any dim",
            function="softmax",
            signature="softmax(x: (..., n, ...) float tensor, dim: int = -1) -> same shape and dtype",
            reference=K.softmax,
            answer_cell="softmax",
            test_cell="test-softmax-basic",
            points=2,
            visible=softmax_basic_visible,
            hidden=softmax_basic_hidden,
            mistakes=SOFTMAX_MISTAKES,
            **_COMMON,
        ),
        Exercise(
            id="softmax-stable",
            title="softmax that never overflows",
            function="softmax",
            signature="softmax(x: (..., n, ...) float tensor, dim: int = -1) -> same shape and dtype",
            reference=K.softmax,
            answer_cell="softmax",
            test_cell="test-softmax-stable",
            points=3,
            visible=softmax_stable_visible,
            hidden=softmax_stable_hidden,
            mistakes=SOFTMAX_STABLE_MISTAKES,
            **_COMMON,
        ),
        Exercise(
            id="logsumexp",
            title="stable log-sum-exp",
            function="logsumexp",
            signature="logsumexp(x: (..., n, ...) float tensor, dim: int = -1) -> x without `dim`",
            reference=K.logsumexp,
            answer_cell="logsumexp",
            test_cell="test-logsumexp",
            points=2,
            visible=logsumexp_visible,
            hidden=logsumexp_hidden,
            mistakes=LOGSUMEXP_MISTAKES,
            **_COMMON,
        ),
        Exercise(
            id="log-softmax",
            title="stable log-softmax",
            function="log_softmax",
            signature="log_softmax(x: (..., n, ...) float tensor, dim: int = -1) -> same shape, dtype",
            reference=K.log_softmax,
            answer_cell="log_softmax",
            test_cell="test-log-softmax",
            points=2,
            visible=log_softmax_visible,
            hidden=log_softmax_hidden,
            mistakes=LOG_SOFTMAX_MISTAKES,
            **_COMMON,
        ),
        Exercise(
            id="cross-entropy",
            title="mean cross-entropy with ignore_index",
            function="cross_entropy",
            signature="cross_entropy(logits: (..., C) float, targets: (...) int64, "
            "ignore_index: int = -100) -> 0-d tensor, logits' dtype",
            reference=K.cross_entropy,
            answer_cell="cross_entropy",
            test_cell="test-cross-entropy",
            points=3,
            visible=cross_entropy_visible,
            hidden=cross_entropy_hidden,
            mistakes=CROSS_ENTROPY_MISTAKES,
            forbidden=LOSS_OPS,
            forbidden_hint=HINT,
            stand_ins={"log_softmax": "torch:log_softmax", "softmax": "torch:softmax"},
            uses=("log_softmax",),
        ),
        Exercise(
            id="entropy",
            title="entropy of a distribution",
            function="entropy",
            signature="entropy(p: (..., n, ...) probabilities, dim: int = -1) -> p without `dim`",
            reference=K.entropy,
            answer_cell="entropy",
            test_cell="test-entropy",
            points=2,
            visible=entropy_visible,
            hidden=entropy_hidden,
            mistakes=ENTROPY_MISTAKES,
            forbidden=ENTR_FORBIDDEN,
            forbidden_hint=ENTR_HINT,
        ),
        Exercise(
            id="jacobian",
            title="the softmax Jacobian diag(p) - p p^T",
            function="softmax_jacobian",
            signature="softmax_jacobian(p: (..., n) probabilities) -> (..., n, n), p's dtype",
            reference=K.softmax_jacobian,
            answer_cell="softmax_jacobian",
            test_cell="test-jacobian",
            points=2,
            visible=jacobian_visible,
            hidden=jacobian_hidden,
            mistakes=JACOBIAN_MISTAKES,
        ),
        Exercise(
            id="online-update",
            title="one step of the streaming softmax",
            function="online_update",
            signature="online_update(m: (..., 1), s: (..., 1), block: (..., b)) -> (m_new, s_new)",
            reference=K.online_softmax_update,
            answer_cell="online_update",
            test_cell="test-online-update",
            points=2,
            visible=online_update_visible,
            hidden=online_update_hidden,
            mistakes=ONLINE_UPDATE_MISTAKES,
            **_COMMON,
        ),
        Exercise(
            id="online-softmax",
            title="softmax streamed over blocks",
            function="online_softmax",
            signature="online_softmax(x: (..., n) float, block_size: int) -> same shape and dtype",
            reference=K.online_softmax,
            answer_cell="online_softmax",
            test_cell="test-online-softmax",
            points=2,
            visible=online_softmax_visible,
            hidden=online_softmax_hidden,
            mistakes=ONLINE_SOFTMAX_MISTAKES,
            must_call=("online_update",),
            must_not_call=("softmax",),
            uses=("online_update",),
            **_COMMON,
        ),
    ],
)
