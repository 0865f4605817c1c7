"""Lesson 06 (normalisation), declared once: exercises, references, probes, points, mistakes."""

from __future__ import annotations

import math

import torch

from course.calling import FnRef
from course.compare import Tolerance
from course.lesson import Exercise, Lesson, Mistake, Probe, inspected, randn, seeded
from solutions.kernels import depth as D
from solutions.kernels import norms as N

# Forbidden built-ins, by ATen operator (whatever Python name reached it) and, for those that
# reach no operator of their own on the CPU, by Python name ("module:attr", caught by
# course.calling.ForbiddenFunctions): F.rms_norm, torch.rms_norm and nn.RMSNorm decompose into
# pow, mean and rsqrt there, and F.batch_norm / F.instance_norm reach only native_batch_norm,
# which normalises a transposed x exactly like a LayerNorm. The Python names are checked first,
# so a message names the very function that was called.
_LN = "layer_norm (F.layer_norm / nn.LayerNorm / torch.layer_norm)"
_GN = "group_norm (F.group_norm / nn.GroupNorm)"
_BN = "batch_norm (F.batch_norm / nn.BatchNorm1d, a LayerNorm of the transposed x)"
_IN = "instance_norm (F.instance_norm / nn.InstanceNorm1d, a LayerNorm of a reshaped x)"
LN_OPS = {
    "native_layer_norm": _LN,
    "layer_norm": _LN,
    "group_norm": _GN,
    "native_group_norm": _GN,
    "batch_norm": _BN,
    "native_batch_norm": _BN,
    "_native_batch_norm_legit": _BN,
    "_native_batch_norm_legit_no_training": _BN,
    "_batch_norm_with_update": _BN,
    "instance_norm": _IN,
    "torch.nn.functional:layer_norm": "F.layer_norm",
    "torch:layer_norm": "torch.layer_norm",
    "torch.nn:LayerNorm": "nn.LayerNorm",
    "torch.nn.functional:group_norm": "F.group_norm",
    "torch:group_norm": "torch.group_norm",
    "torch.nn:GroupNorm": "nn.GroupNorm",
    "torch.nn.functional:batch_norm": "F.batch_norm",
    "torch:batch_norm": "torch.batch_norm",
    "torch.nn.functional:instance_norm": "F.instance_norm",
    "torch:instance_norm": "torch.instance_norm",
}
_RMS = "rms_norm (F.rms_norm / torch.rms_norm / nn.RMSNorm)"
RMS_OPS = {
    **LN_OPS,
    "rms_norm": _RMS,
    "_fused_rms_norm": _RMS,
    "torch.nn.functional:rms_norm": "F.rms_norm",
    "torch:rms_norm": "torch.rms_norm",
    "torch.nn:RMSNorm": "nn.RMSNorm",
}
HINT = "Build it from mean, sum, sqrt or rsqrt and arithmetic."

# What a value probe checks besides the value (course/probe_layers.py): a tensor result, named
# when it is a list or an array; DeepNorm's pair of Python floats; the caller's tensors left as
# they were given (not switched to requires_grad).
TENSOR_RESULT = "course.probe_layers:inspect_tensor_result"
FLOAT_PAIR = "course.probe_layers:inspect_float_pair"
CALLER_TENSORS = "course.probe_layers:inspect_caller_tensors"


# The sublayers and norms a block exercise is called with (course/probe_layers.py): four
# different functions, so a block that calls the wrong one shows.
ATTN = FnRef("course.probe_layers:mixing_sublayer")
FFN = FnRef("course.probe_layers:mlp_sublayer")
NORM1 = FnRef("course.probe_layers:unit_layer_norm")
NORM2 = FnRef("course.probe_layers:doubled_rms_norm")
PARTS = (ATTN, FFN, NORM1, NORM2)

# The scaling law is a statement about a random draw of weights, and how far one draw strays
# from it depends on the setting: over 500 draws each at the two law probes' own settings (64
# tokens of width 48 through 4 blocks, float32; 128 tokens of width 64 through 8 blocks,
# float64), the reference's largest relative deviation from 1 + l/2 was 0.146 and 0.156; it
# grows with depth and with fewer tokens (200 draws of 64 tokens of width 48 through 12 blocks:
# 0.210; 16 tokens: 0.278). The band is about twice the probes' figure.
LAW_BAND = Tolerance(
    0.0,
    0.3,
    "a law at initialisation, measured on one random draw of weights: at this probe's setting "
    "the reference itself deviated from 1 + l/2 by up to 16% over 500 draws",
)


def _toy_weights(g: torch.Generator, n_layers: int, d: int, sigma: float = 0.5, dtype=None):
    """(n_layers, 2, d, d) matrices with entries N(0, sigma^2 / d)."""
    return randn(g, n_layers, 2, d, d, scale=sigma / math.sqrt(d), dtype=dtype or torch.float64)


# ---------------------------------------------------------------- layer_norm

LN_MISTAKES = [
    Mistake(
        id="ln-unbiased-variance",
        hint="use the biased variance, dividing by d and not d - 1 (x.var(dim=-1, "
        "correction=0), or ((x - mean)**2).mean(-1)): with the unbiased one, [1, 0, 0, 0] "
        "gives [1.5, -0.5, -0.5, -0.5] instead of [1.732, -0.577, -0.577, -0.577]",
        source="""
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    mean = xf.mean(dim=-1, keepdim=True)
    var = xf.var(dim=-1, keepdim=True)
    y = (xf - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.to(x.dtype)
""",
    ),
    Mistake(
        id="ln-std-plus-eps",
        hint="(x - mean) / (x.std() + eps) is two mistakes: x.std() divides by d - 1 (unbiased) "
        "and eps sits outside the root; on [1, 0, 0, 0] it gives [1.5, -0.5, ...] instead of "
        "[1.732, -0.577, ...]. LayerNorm is (x - mean) / sqrt(biased variance + eps)",
        source="""
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    mean = xf.mean(dim=-1, keepdim=True)
    y = (xf - mean) / (xf.std(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.to(x.dtype)
""",
    ),
    Mistake(
        id="ln-eps-outside-root",
        hint="eps goes inside the square root, sqrt(var + eps), not sqrt(var) + eps: the two "
        "differ wherever the variance is comparable to eps (a row of nearly equal entries, or a "
        "large eps)",
        source="""
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    mean = xf.mean(dim=-1, keepdim=True)
    var = ((xf - mean) ** 2).mean(dim=-1, keepdim=True)
    y = (xf - mean) / (torch.sqrt(var) + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.to(x.dtype)
""",
    ),
    Mistake(
        id="ln-in-place",
        hint="the norm is written into its input (x -= mean, x /= ...): the caller's tensor, "
        "the residual stream itself, changes too. Compute a new tensor, y = (x - mean) / ...",
        source="""
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    x -= mean
    x /= torch.sqrt(var + eps)
    if weight is not None:
        x *= weight
    if bias is not None:
        x += bias
    return x
""",
    ),
    Mistake(
        id="ln-float16-sum-of-squares",
        hint="in float16, (x - mean)**2 overflows to inf once |x - mean| > 256 (65504 is its "
        "largest number), and the output collapses to 0: compute the statistics of a float16 "
        "or bfloat16 input in float32 (x.float()) and cast the result back with .to(x.dtype)",
        source="""
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y
""",
    ),
    Mistake(
        id="ln-not-cast-back",
        hint="a float16 input must give a float16 output: compute in float32, then cast back "
        "with .to(x.dtype)",
        source="""
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    mean = xf.mean(dim=-1, keepdim=True)
    var = ((xf - mean) ** 2).mean(dim=-1, keepdim=True)
    y = (xf - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y
""",
    ),
    Mistake(
        id="ln-no-keepdim",
        hint="x.mean(dim=-1) drops the last dimension, so it no longer lines up with x: use "
        "keepdim=True so that the mean and variance broadcast back over each row",
        source="""
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    mean = xf.mean(dim=-1)
    var = ((xf - mean) ** 2).mean(dim=-1)
    y = (xf - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.to(x.dtype)
""",
    ),
    Mistake(
        id="ln-wrong-dim",
        hint="LayerNorm normalises each token over its features, the *last* dimension "
        "(dim=-1); dim=0 mixes different tokens (or batch elements) together",
        source="""
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    mean = xf.mean(dim=0, keepdim=True)
    var = ((xf - mean) ** 2).mean(dim=0, keepdim=True)
    y = (xf - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.to(x.dtype)
""",
    ),
    Mistake(
        id="ln-mean-over-batch",
        hint="the statistics are per token, over its d features only: x.mean() or a mean over "
        "(batch, feature) dims mixes tokens (that is closer to BatchNorm), and a token's output "
        "then depends on the others",
        source="""
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    mean = xf.mean()
    var = ((xf - mean) ** 2).mean()
    y = (xf - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.to(x.dtype)
""",
    ),
    Mistake(
        id="ln-forgets-weight-and-bias",
        hint="after normalising, scale by `weight` and add `bias` (each (d,), when given): "
        "y * weight + bias",
        source="""
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    mean = xf.mean(dim=-1, keepdim=True)
    var = ((xf - mean) ** 2).mean(dim=-1, keepdim=True)
    return ((xf - mean) / torch.sqrt(var + eps)).to(x.dtype)
""",
    ),
    Mistake(
        id="ln-bias-before-weight",
        hint="scale first, then shift: y * weight + bias, not (y + bias) * weight",
        source="""
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    mean = xf.mean(dim=-1, keepdim=True)
    var = ((xf - mean) ** 2).mean(dim=-1, keepdim=True)
    y = (xf - mean) / torch.sqrt(var + eps)
    if bias is not None:
        y = y + bias
    if weight is not None:
        y = y * weight
    return y.to(x.dtype)
""",
    ),
    Mistake(
        id="ln-calls-builtin",
        hint="calling F.layer_norm is what this exercise asks you not to do: write it from "
        "mean, sqrt and arithmetic",
        source="""
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], weight, bias, eps)
""",
    ),
    Mistake(
        id="ln-bfloat16-not-upcast",
        hint="bfloat16 must be computed in float32 too, like float16: bfloat16 keeps only 8 bits "
        "of mantissa, so on rows around 1000 its mean and variance lose the row's spread. "
        "Upcast both half types (x.float() when x.dtype is float16 or bfloat16), cast back",
        source="""
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    xf = x.float() if x.dtype == torch.float16 else x
    mean = xf.mean(dim=-1, keepdim=True)
    var = ((xf - mean) ** 2).mean(dim=-1, keepdim=True)
    y = (xf - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.to(x.dtype)
""",
    ),
    Mistake(
        id="ln-weight-only-with-bias",
        hint="weight and bias are independent: apply the weight whenever it is given, even "
        "when bias is None (and the bias whenever it is given)",
        source="""
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    mean = xf.mean(dim=-1, keepdim=True)
    var = ((xf - mean) ** 2).mean(dim=-1, keepdim=True)
    y = (xf - mean) / torch.sqrt(var + eps)
    if weight is not None and bias is not None:
        y = y * weight + bias
    return y.to(x.dtype)
""",
    ),
]


LN_MISTAKES += [
    Mistake(
        id="ln-uncentred-variance",
        hint="the variance is the mean of the *centred* squares, ((x - mean)**2).mean(-1); "
        "(x**2).mean(-1) is the mean square, which equals the variance only when the mean is 0: "
        "on [1, 1, 0, 0] it gives [0.707, 0.707, -0.707, -0.707] instead of [1, 1, -1, -1]",
        source="""
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    mean = xf.mean(dim=-1, keepdim=True)
    var = (xf**2).mean(dim=-1, keepdim=True)
    y = (xf - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.to(x.dtype)
""",
    ),
    Mistake(
        id="ln-calls-torch-layer-norm",
        hint="torch.layer_norm is the built-in this exercise asks you to write (the same "
        "function as F.layer_norm): write it from mean, sqrt and arithmetic",
        source="""
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    return torch.layer_norm(x, x.shape[-1:], weight, bias, eps)
""",
    ),
    Mistake(
        id="ln-calls-nn-layernorm",
        hint="nn.LayerNorm is the built-in this exercise asks you to write (its forward calls "
        "F.layer_norm): write it from mean, sqrt and arithmetic",
        source="""
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    norm = torch.nn.LayerNorm(x.shape[-1], eps=eps, elementwise_affine=False)
    y = norm(x)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y
""",
    ),
    Mistake(
        id="ln-via-batch-norm",
        hint="F.batch_norm of the transposed x normalises each token over its features: it is "
        "PyTorch's built-in LayerNorm arithmetic under another name, which this exercise asks "
        "you to write from mean, sqrt and arithmetic",
        source="""
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    rows = xf.reshape(-1, xf.shape[-1]).T
    y = torch.nn.functional.batch_norm(rows, None, None, training=True, eps=eps)
    y = y.T.reshape(xf.shape)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.to(x.dtype)
""",
    ),
    Mistake(
        id="ln-returns-list",
        hint="return the tensor itself: .tolist() turns it into nested Python lists, which "
        "have no dtype, no gradient and no place in the next layer",
        source="""
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    mean = xf.mean(dim=-1, keepdim=True)
    var = ((xf - mean) ** 2).mean(dim=-1, keepdim=True)
    y = (xf - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.to(x.dtype).tolist()
""",
    ),
    Mistake(
        id="ln-float32-for-float64",
        hint="float64 inputs are judged at atol 1e-10, rtol 1e-8, which a computation done in "
        "float32 (about 7 digits) cannot meet: upcast only float16 and bfloat16",
        source="""
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    xf = x.float()
    mean = xf.mean(dim=-1, keepdim=True)
    var = ((xf - mean) ** 2).mean(dim=-1, keepdim=True)
    y = (xf - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.to(x.dtype)
""",
    ),
]


def _one_hot_row() -> torch.Tensor:
    return torch.tensor([[1.0, 0.0, 0.0, 0.0]])


def _worked_rows() -> torch.Tensor:
    """Section 1's [1, 0, 0, 0] and a row whose mean square is not its variance, in float64:
    the unbiased variance, x.std() + eps and the uncentred (x**2).mean() each give another
    result here (on [1, 0, 0, 0] alone all three give [1.5, -0.5, -0.5, -0.5])."""
    return torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)


def ln_visible() -> list[Probe]:
    return inspected(_ln_visible(), TENSOR_RESULT)


def _ln_visible() -> list[Probe]:
    g = seeded(601)
    d = 6
    return [
        Probe(
            name="x = [1, 0, 0, 0] and [1, 1, 0, 0], float64: [1.732, -0.577, -0.577, -0.577] "
            "and [1, 1, -1, -1]",
            args=(_worked_rows(),),
        ),
        Probe(name="random rows, float32, shape (3, 8)", args=(randn(g, 3, 8, scale=3) + 2,)),
        Probe(
            name="with weight and bias, float64, shape (2, 3, 6)",
            args=(
                randn(g, 2, 3, d, dtype=torch.float64),
                randn(g, d, dtype=torch.float64) + 1,
                randn(g, d, dtype=torch.float64),
            ),
        ),
        Probe(
            name="rows of nearly equal entries (variance 1e-6, comparable to eps), float64",
            args=(randn(g, 2, 8, scale=1e-3, dtype=torch.float64) + 5,),
        ),
        Probe(
            name="eps = 0.5, float64",
            args=(randn(g, 2, 5, dtype=torch.float64),),
            kwargs={"eps": 0.5},
        ),
        Probe(
            name="float16 rows spread around 0 by +-200 (their squares overflow float16)",
            args=(randn(g, 2, 16, scale=200).half(),),
        ),
        Probe(
            name="bfloat16 rows around 1000, spread +-20 (bfloat16's own arithmetic loses it)",
            args=((randn(g, 2, 64, scale=20) + 1000).bfloat16(),),
        ),
        Probe(
            name="weight without bias, float64",
            args=(randn(g, 2, d, dtype=torch.float64), randn(g, d, dtype=torch.float64) + 1),
        ),
        Probe(
            name="float16 x spread by +-200 with float16 weight and bias (x's dtype)",
            args=(
                randn(g, 2, 16, scale=200).half(),
                (randn(g, 16) + 1).half(),
                randn(g, 16).half(),
            ),
        ),
        Probe(
            name="gradient (float64) with respect to x, weight and bias",
            args=(
                randn(g, 3, d, dtype=torch.float64),
                randn(g, d, dtype=torch.float64),
                randn(g, d, dtype=torch.float64),
            ),
            mode="grad",
            grad_seed=1,
        ),
    ]


def ln_hidden(g: torch.Generator) -> list[Probe]:
    return inspected(_ln_hidden(g), TENSOR_RESULT)


def _ln_hidden(g: torch.Generator) -> list[Probe]:
    d = 12
    return [
        Probe(name="x = [1, 0, 0, 0]", args=(_one_hot_row(),)),
        Probe(name="x = [1, 0, 0, 0] and [1, 1, 0, 0], float64", args=(_worked_rows(),)),
        Probe(name="random rows, float32, shape (4, 16)", args=(randn(g, 4, 16, scale=2) - 3,)),
        Probe(name="a 3-D input, shape (2, 5, 7)", args=(randn(g, 2, 5, 7),)),
        Probe(
            name="weight and bias, float64",
            args=(
                randn(g, 3, 4, d, dtype=torch.float64),
                randn(g, d, dtype=torch.float64),
                randn(g, d, dtype=torch.float64),
            ),
        ),
        Probe(
            name="weight only, float64",
            args=(randn(g, 3, d, dtype=torch.float64), randn(g, d, dtype=torch.float64)),
        ),
        Probe(
            name="rows of nearly equal entries, float64",
            args=(randn(g, 3, 9, scale=1e-3, dtype=torch.float64) - 7,),
        ),
        Probe(
            name="eps = 1.0, float64",
            args=(randn(g, 2, 6, dtype=torch.float64),),
            kwargs={"eps": 1.0},
        ),
        Probe(name="float16 rows spread by +-200", args=(randn(g, 3, 32, scale=200).half(),)),
        Probe(name="bfloat16 rows around 300", args=((randn(g, 2, 16, scale=4) + 300).bfloat16(),)),
        Probe(
            name="bfloat16 x with bfloat16 weight and bias",
            args=(
                (randn(g, 3, 16, scale=4) + 300).bfloat16(),
                (randn(g, 16) + 1).bfloat16(),
                randn(g, 16).bfloat16(),
            ),
        ),
        Probe(
            name="gradient (float64) with respect to x, weight and bias",
            args=(
                randn(g, 2, 3, d, dtype=torch.float64),
                randn(g, d, dtype=torch.float64),
                randn(g, d, dtype=torch.float64),
            ),
            mode="grad",
            grad_seed=2,
        ),
    ]


# ---------------------------------------------------------------- rms_norm

RMS_MISTAKES = [
    Mistake(
        id="rms-float16-sum-of-squares",
        hint="in float16, x**2 overflows to inf once |x| > 256 (65504 is its largest number): "
        "300**2 is inf, and the output collapses to 0. Compute the mean of squares of a "
        "float16 or bfloat16 input in float32 (x.float()) and cast the result back with "
        ".to(x.dtype)",
        source="""
def rms_norm(x, weight=None, eps=1e-5):
    y = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight
    return y
""",
    ),
    Mistake(
        id="rms-not-cast-back",
        hint="a float16 input must give a float16 output: compute in float32, then cast back "
        "with .to(x.dtype)",
        source="""
def rms_norm(x, weight=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight
    return y
""",
    ),
    Mistake(
        id="rms-float32-for-float64",
        hint="float64 inputs are judged at atol 1e-10, rtol 1e-8, which a computation done in "
        "float32 (about 7 digits) cannot meet: upcast only float16 and bfloat16",
        source="""
def rms_norm(x, weight=None, eps=1e-5):
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight
    return y.to(x.dtype)
""",
    ),
    Mistake(
        id="rms-subtracts-mean",
        hint="RMSNorm does not centre: divide x itself by sqrt(mean(x**2) + eps). Subtracting "
        "the mean first makes it LayerNorm",
        source="""
def rms_norm(x, weight=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    xc = xf - xf.mean(dim=-1, keepdim=True)
    y = xc * torch.rsqrt(xc.pow(2).mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight
    return y.to(x.dtype)
""",
    ),
    Mistake(
        id="rms-eps-outside-root",
        hint="eps goes inside the square root, sqrt(mean(x**2) + eps), not sqrt(mean(x**2)) + "
        "eps: they differ wherever mean(x**2) is comparable to eps",
        source="""
def rms_norm(x, weight=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    y = xf / (torch.sqrt(xf.pow(2).mean(dim=-1, keepdim=True)) + eps)
    if weight is not None:
        y = y * weight
    return y.to(x.dtype)
""",
    ),
    Mistake(
        id="rms-sum-not-mean",
        hint="the root *mean* square: mean(x**2) over the d features, not their sum (which is "
        "the squared norm, d times larger: the output comes out sqrt(d) too small)",
        source="""
def rms_norm(x, weight=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    y = xf * torch.rsqrt(xf.pow(2).sum(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight
    return y.to(x.dtype)
""",
    ),
    Mistake(
        id="rms-no-keepdim",
        hint="mean(dim=-1) drops the last dimension, so it no longer lines up with x: use "
        "keepdim=True",
        source="""
def rms_norm(x, weight=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1) + eps)
    if weight is not None:
        y = y * weight
    return y.to(x.dtype)
""",
    ),
    Mistake(
        id="rms-forgets-weight",
        hint="after dividing by the root mean square, multiply by `weight` ((d,), when given)",
        source="""
def rms_norm(x, weight=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    return (xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)).to(x.dtype)
""",
    ),
    Mistake(
        id="rms-one-plus-weight",
        hint="this lesson's RMSNorm multiplies by `weight` itself (Llama's convention); "
        "(1 + weight) is the convention of Gemma's checkpoints (see Going further)",
        source="""
def rms_norm(x, weight=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * (1 + weight)
    return y.to(x.dtype)
""",
    ),
]


_STD_HINT = (
    "RMSNorm divides by the root mean square, sqrt(mean(x**2) + eps), not by the standard "
    "deviation (x.var() and x.std() measure the spread around the mean): on [3, 4] the RMS is "
    "3.54 and the standard deviation 0.71 (unbiased) or 0.5"
)
RMS_MISTAKES += [
    Mistake(
        id="rms-divides-by-std",
        hint=_STD_HINT,
        source="""
def rms_norm(x, weight=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    y = xf / torch.sqrt(xf.var(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight
    return y.to(x.dtype)
""",
    ),
    Mistake(
        id="rms-divides-by-biased-std",
        hint=_STD_HINT,
        source="""
def rms_norm(x, weight=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    y = xf / torch.sqrt(xf.var(dim=-1, keepdim=True, correction=0) + eps)
    if weight is not None:
        y = y * weight
    return y.to(x.dtype)
""",
    ),
    Mistake(
        id="rms-mean-abs-squared",
        hint="the mean of the squares, mean(x**2), is not the square of the mean absolute "
        "value, mean(|x|)**2: on [3, 4] they are 12.5 and 12.25. Square first, then average",
        source="""
def rms_norm(x, weight=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    y = xf / torch.sqrt(xf.abs().mean(dim=-1, keepdim=True) ** 2 + eps)
    if weight is not None:
        y = y * weight
    return y.to(x.dtype)
""",
    ),
    Mistake(
        id="rms-square-of-mean",
        hint="the mean of the squares, mean(x**2), is not the square of the mean, mean(x)**2: "
        "on [3, -4] they are 12.5 and 0.25. Square first, then average",
        source="""
def rms_norm(x, weight=None, eps=1e-5):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    y = xf / torch.sqrt(xf.mean(dim=-1, keepdim=True) ** 2 + eps)
    if weight is not None:
        y = y * weight
    return y.to(x.dtype)
""",
    ),
    Mistake(
        id="rms-calls-f-rms-norm",
        hint="F.rms_norm is the built-in this exercise asks you to write (on the CPU it runs as "
        "pow, mean and rsqrt, so only its name gives it away): write x * rsqrt(mean(x**2) + "
        "eps) yourself",
        source="""
def rms_norm(x, weight=None, eps=1e-5):
    return torch.nn.functional.rms_norm(x, x.shape[-1:], weight, eps)
""",
    ),
    Mistake(
        id="rms-calls-torch-rms-norm",
        hint="torch.rms_norm is the built-in this exercise asks you to write (the function "
        "behind F.rms_norm): write x * rsqrt(mean(x**2) + eps) yourself",
        source="""
def rms_norm(x, weight=None, eps=1e-5):
    return torch.rms_norm(x, x.shape[-1:], weight, eps)
""",
    ),
    Mistake(
        id="rms-calls-nn-rmsnorm",
        hint="nn.RMSNorm is the built-in this exercise asks you to write (its forward calls "
        "F.rms_norm): write x * rsqrt(mean(x**2) + eps) yourself",
        source="""
def rms_norm(x, weight=None, eps=1e-5):
    norm = torch.nn.RMSNorm(x.shape[-1], eps=eps, elementwise_affine=False)
    y = norm(x)
    return y * weight if weight is not None else y
""",
    ),
]


def rms_visible() -> list[Probe]:
    return inspected(_rms_visible(), TENSOR_RESULT)


def _rms_visible() -> list[Probe]:
    g = seeded(602)
    d = 8
    return [
        Probe(
            name="x = [3, 4] and [3, -4]: RMS 3.54, results [0.849, 1.131] and [0.849, -1.131]",
            args=(torch.tensor([[3.0, 4.0], [3.0, -4.0]]),),
        ),
        Probe(name="random rows, float32, shape (3, 8)", args=(randn(g, 3, d, scale=2) + 1,)),
        Probe(
            name="with weight, float64, shape (2, 3, 8)",
            args=(randn(g, 2, 3, d, dtype=torch.float64), randn(g, d, dtype=torch.float64)),
        ),
        Probe(
            name="tiny rows (mean square 1e-6, comparable to eps), float64",
            args=(randn(g, 2, d, scale=1e-3, dtype=torch.float64),),
        ),
        Probe(
            name="float16 inputs around 300 (300**2 overflows float16)",
            args=((randn(g, 2, 16, scale=5) + 300).half(),),
        ),
        Probe(
            name="float16 inputs around 300 with a float16 weight (x's dtype)",
            args=((randn(g, 2, 16, scale=5) + 300).half(), (randn(g, 16) + 1).half()),
        ),
        Probe(
            name="gradient (float64) with respect to x and weight",
            args=(randn(g, 3, d, dtype=torch.float64), randn(g, d, dtype=torch.float64)),
            mode="grad",
            grad_seed=3,
        ),
    ]


def rms_hidden(g: torch.Generator) -> list[Probe]:
    return inspected(_rms_hidden(g), TENSOR_RESULT)


def _rms_hidden(g: torch.Generator) -> list[Probe]:
    d = 10
    return [
        Probe(name="random rows, float32, shape (4, 16)", args=(randn(g, 4, 16, scale=3),)),
        Probe(name="a 3-D input, shape (2, 5, 7)", args=(randn(g, 2, 5, 7) + 1,)),
        Probe(
            name="with weight, float64",
            args=(randn(g, 3, 2, d, dtype=torch.float64), randn(g, d, dtype=torch.float64)),
        ),
        Probe(
            name="tiny rows, float64",
            args=(randn(g, 3, d, scale=1e-3, dtype=torch.float64),),
        ),
        Probe(
            name="eps = 1.0, float64",
            args=(randn(g, 2, 6, dtype=torch.float64),),
            kwargs={"eps": 1.0},
        ),
        Probe(name="float16 around 300", args=((randn(g, 3, 32, scale=5) + 300).half(),)),
        Probe(name="float16 around -1000", args=((randn(g, 2, 8, scale=20) - 1000).half(),)),
        Probe(name="bfloat16 around 300", args=((randn(g, 2, 16, scale=5) + 300).bfloat16(),)),
        Probe(
            name="bfloat16 around 300 with a bfloat16 weight",
            args=((randn(g, 2, 16, scale=5) + 300).bfloat16(), (randn(g, 16) + 1).bfloat16()),
        ),
        Probe(
            name="gradient (float64) with respect to x and weight",
            args=(randn(g, 2, 3, d, dtype=torch.float64), randn(g, d, dtype=torch.float64)),
            mode="grad",
            grad_seed=4,
        ),
    ]


# ---------------------------------------------------------------- pre-LN block

PRE_MISTAKES = [
    Mistake(
        id="pre-residual-from-normalised-x",
        hint="the residual stream carries x itself: x = x + attn(norm1(x)). Adding the "
        "sublayer to the *normalised* x (h = norm1(x); x = h + attn(h)) replaces the stream by "
        "its normalised copy at every block, and the identity path that pre-LN is for is gone",
        source="""
def pre_ln_block(x, attn, ffn, norm1, norm2):
    h = norm1(x)
    x = h + attn(h)
    h = norm2(x)
    return h + ffn(h)
""",
    ),
    Mistake(
        id="pre-norm-after-add",
        hint="this is a post-LN block (norm after the add). Pre-LN normalises only the "
        "sublayer's input: x = x + attn(norm1(x)), then x = x + ffn(norm2(x))",
        source="""
def pre_ln_block(x, attn, ffn, norm1, norm2):
    x = norm1(x + attn(x))
    return norm2(x + ffn(x))
""",
    ),
    Mistake(
        id="pre-one-norm-twice",
        hint="each sublayer has its own norm: norm1 before attn, norm2 before ffn",
        source="""
def pre_ln_block(x, attn, ffn, norm1, norm2):
    x = x + attn(norm1(x))
    return x + ffn(norm1(x))
""",
    ),
    Mistake(
        id="pre-parallel-sublayers",
        hint="the feed-forward sublayer reads the stream *after* the attention update: x = x + "
        "attn(norm1(x)) first, then x + ffn(norm2(x)) of that new x (reading the old x is the "
        "'parallel' block of GPT-J and PaLM, a different architecture)",
        source="""
def pre_ln_block(x, attn, ffn, norm1, norm2):
    return x + attn(norm1(x)) + ffn(norm2(x))
""",
    ),
    Mistake(
        id="pre-drops-second-residual",
        hint="both sublayers are residual: return x + ffn(norm2(x)), not ffn(norm2(x)) alone",
        source="""
def pre_ln_block(x, attn, ffn, norm1, norm2):
    x = x + attn(norm1(x))
    return ffn(norm2(x))
""",
    ),
    Mistake(
        id="pre-ffn-first",
        hint="attention comes first, then the feed-forward sublayer (norm1 with attn, norm2 "
        "with ffn)",
        source="""
def pre_ln_block(x, attn, ffn, norm1, norm2):
    x = x + ffn(norm1(x))
    return x + attn(norm2(x))
""",
    ),
]


def _block_args(g, *shape, dtype=torch.float64):
    return (randn(g, *shape, dtype=dtype), *PARTS)


def pre_visible() -> list[Probe]:
    return inspected(_pre_visible(), TENSOR_RESULT)


def _pre_visible() -> list[Probe]:
    g = seeded(603)
    return [
        Probe(name="x (2, 5, 8), float64", args=_block_args(g, 2, 5, 8)),
        Probe(
            name="x (1, 3, 6) far from unit scale, float64",
            args=(randn(g, 1, 3, 6, scale=10, dtype=torch.float64), *PARTS),
        ),
        Probe(name="float32, (3, 4, 8)", args=_block_args(g, 3, 4, 8, dtype=torch.float32)),
        Probe(
            name="gradient (float64) with respect to x",
            args=_block_args(g, 2, 4, 8),
            mode="grad",
            grad_seed=5,
        ),
    ]


def pre_hidden(g: torch.Generator) -> list[Probe]:
    return inspected(_pre_hidden(g), TENSOR_RESULT)


def _pre_hidden(g: torch.Generator) -> list[Probe]:
    return [
        Probe(name="x (2, 6, 16), float64", args=_block_args(g, 2, 6, 16)),
        Probe(
            name="x (1, 9, 8) at scale 30, float64",
            args=(randn(g, 1, 9, 8, scale=30, dtype=torch.float64), *PARTS),
        ),
        Probe(name="float32, (4, 5, 12)", args=_block_args(g, 4, 5, 12, dtype=torch.float32)),
        Probe(name="one token, (3, 1, 8)", args=_block_args(g, 3, 1, 8)),
        Probe(
            name="gradient (float64) with respect to x",
            args=_block_args(g, 2, 5, 8),
            mode="grad",
            grad_seed=6,
        ),
    ]


# ---------------------------------------------------------------- post-LN block

POST_MISTAKES = [
    Mistake(
        id="post-alpha-on-sublayer",
        hint="DeepNorm weights the *residual*: norm1(alpha * x + attn(x)). norm1(x + alpha * "
        "attn(x)) scales the sublayer up instead, the opposite of what DeepNorm is for",
        source="""
def post_ln_block(x, attn, ffn, norm1, norm2, alpha=1.0):
    x = norm1(x + alpha * attn(x))
    return norm2(x + alpha * ffn(x))
""",
    ),
    Mistake(
        id="post-alpha-ignored",
        hint="multiply the residual by `alpha` before adding the sublayer: norm1(alpha * x + "
        "attn(x)) (alpha = 1 is the 2017 block, alpha > 1 DeepNorm)",
        source="""
def post_ln_block(x, attn, ffn, norm1, norm2, alpha=1.0):
    x = norm1(x + attn(x))
    return norm2(x + ffn(x))
""",
    ),
    Mistake(
        id="post-normalises-sublayer-input",
        hint="in a post-LN block the sublayer reads x as it is (already the output of a norm); "
        "the norm comes *after* the add: norm1(alpha * x + attn(x))",
        source="""
def post_ln_block(x, attn, ffn, norm1, norm2, alpha=1.0):
    x = norm1(alpha * x + attn(norm1(x)))
    return norm2(alpha * x + ffn(norm2(x)))
""",
    ),
    Mistake(
        id="post-is-pre-ln",
        hint="this is a pre-LN block. Post-LN normalises the sum: x = norm1(alpha * x + "
        "attn(x)), then norm2(alpha * x + ffn(x))",
        source="""
def post_ln_block(x, attn, ffn, norm1, norm2, alpha=1.0):
    x = alpha * x + attn(norm1(x))
    return alpha * x + ffn(norm2(x))
""",
    ),
    Mistake(
        id="post-one-norm-at-the-end",
        hint="each sublayer's sum is normalised: norm1 after the attention add, norm2 after "
        "the feed-forward add",
        source="""
def post_ln_block(x, attn, ffn, norm1, norm2, alpha=1.0):
    x = alpha * x + attn(x)
    return norm2(alpha * x + ffn(x))
""",
    ),
    Mistake(
        id="post-norms-swapped",
        hint="norm1 belongs to the attention sublayer and norm2 to the feed-forward one",
        source="""
def post_ln_block(x, attn, ffn, norm1, norm2, alpha=1.0):
    x = norm2(alpha * x + attn(x))
    return norm1(alpha * x + ffn(x))
""",
    ),
]


def post_visible() -> list[Probe]:
    return inspected(_post_visible(), TENSOR_RESULT)


def _post_visible() -> list[Probe]:
    g = seeded(604)
    return [
        Probe(name="x (2, 5, 8), float64, alpha = 1", args=_block_args(g, 2, 5, 8)),
        Probe(
            name="DeepNorm's alpha = 2.21 (12 layers), float64",
            args=_block_args(g, 2, 4, 8),
            kwargs={"alpha": (2 * 12) ** 0.25},
        ),
        Probe(name="float32, (3, 4, 8)", args=_block_args(g, 3, 4, 8, dtype=torch.float32)),
        Probe(
            name="gradient (float64) with respect to x, alpha = 1.5",
            args=_block_args(g, 2, 4, 8),
            kwargs={"alpha": 1.5},
            mode="grad",
            grad_seed=7,
        ),
    ]


def post_hidden(g: torch.Generator) -> list[Probe]:
    return inspected(_post_hidden(g), TENSOR_RESULT)


def _post_hidden(g: torch.Generator) -> list[Probe]:
    alpha = float(1 + 3 * torch.rand((), generator=g, dtype=torch.float64))
    return [
        Probe(name="x (2, 6, 16), float64", args=_block_args(g, 2, 6, 16)),
        Probe(
            name=f"alpha = {alpha:.3f}, float64",
            args=_block_args(g, 2, 5, 8),
            kwargs={"alpha": alpha},
        ),
        Probe(
            name="x at scale 30, alpha = 2, float64",
            args=(randn(g, 1, 9, 8, scale=30, dtype=torch.float64), *PARTS),
            kwargs={"alpha": 2.0},
        ),
        Probe(name="float32, (4, 5, 12)", args=_block_args(g, 4, 5, 12, dtype=torch.float32)),
        Probe(
            name="gradient (float64) with respect to x, alpha = 3",
            args=_block_args(g, 2, 5, 8),
            kwargs={"alpha": 3.0},
            mode="grad",
            grad_seed=8,
        ),
    ]


# ---------------------------------------------------------------- DeepNorm's constants

DEEPNORM_MISTAKES = [
    Mistake(
        id="deepnorm-swapped",
        hint="alpha (the residual's weight, > 1) is (2N)^(1/4) and beta (the initial weights' "
        "gain, < 1) is (8N)^(-1/4): return (alpha, beta) in that order",
        source="""
def deepnorm_constants(n_layers):
    return (8 * n_layers) ** -0.25, (2 * n_layers) ** 0.25
""",
    ),
    Mistake(
        id="deepnorm-beta-exponent-sign",
        hint="beta shrinks the initial weights: (8N)^(-1/4), a negative exponent (beta < 1)",
        source="""
def deepnorm_constants(n_layers):
    return (2 * n_layers) ** 0.25, (8 * n_layers) ** 0.25
""",
    ),
    Mistake(
        id="deepnorm-encoder-decoder-constants",
        hint="(3M)^(1/4) and (12M)^(-1/4) are the decoder's constants of an encoder-decoder "
        "model; a decoder-only (or encoder-only) stack of N layers uses (2N)^(1/4) and "
        "(8N)^(-1/4)",
        source="""
def deepnorm_constants(n_layers):
    return (3 * n_layers) ** 0.25, (12 * n_layers) ** -0.25
""",
    ),
    Mistake(
        id="deepnorm-counts-sublayers",
        hint="N is the number of layers (blocks), not of sublayers: (2N)^(1/4) with N = n_layers",
        source="""
def deepnorm_constants(n_layers):
    return (4 * n_layers) ** 0.25, (16 * n_layers) ** -0.25
""",
    ),
    Mistake(
        id="deepnorm-square-root",
        hint="the exponents are fourth roots, 1/4 and -1/4, not square roots",
        source="""
def deepnorm_constants(n_layers):
    return (2 * n_layers) ** 0.5, (8 * n_layers) ** -0.5
""",
    ),
]


DEEPNORM_MISTAKES += [
    Mistake(
        id="deepnorm-returns-list",
        hint="return the pair as a tuple, return alpha, beta (the comma makes the tuple); "
        "[alpha, beta] is a list",
        source="""
def deepnorm_constants(n_layers):
    return [(2 * n_layers) ** 0.25, (8 * n_layers) ** -0.25]
""",
    ),
    Mistake(
        id="deepnorm-numpy-floats",
        hint="numpy.float64 values are not the Python floats the contract asks for: compute "
        "with ** on the Python int n_layers, or wrap each value in float(...)",
        source="""
import numpy as np


def deepnorm_constants(n_layers):
    n = np.float64(n_layers)
    return (2 * n) ** 0.25, (8 * n) ** -0.25
""",
    ),
    Mistake(
        id="deepnorm-tensors",
        hint="0-d tensors are not the Python floats the contract asks for: compute with ** on "
        "the Python int n_layers, or take .item() of each",
        source="""
def deepnorm_constants(n_layers):
    n = torch.tensor(float(n_layers), dtype=torch.float64)
    return (2 * n) ** 0.25, (8 * n) ** -0.25
""",
    ),
]


def deepnorm_visible() -> list[Probe]:
    return inspected(_deepnorm_visible(), FLOAT_PAIR)


def _deepnorm_visible() -> list[Probe]:
    return [Probe(name=f"n_layers = {n}", args=(n,)) for n in (1, 6, 12, 100)]


def deepnorm_hidden(g: torch.Generator) -> list[Probe]:
    return inspected(_deepnorm_hidden(g), FLOAT_PAIR)


def _deepnorm_hidden(g: torch.Generator) -> list[Probe]:
    ns = [1, 2, 1000] + torch.randint(3, 500, (3,), generator=g).tolist()
    return [Probe(name=f"n_layers = {n}", args=(n,)) for n in ns]


# ---------------------------------------------------------------- stream norms

STREAM_MISTAKES = [
    Mistake(
        id="stream-forgets-input",
        hint="the first value is the input's, l = 0: return n_layers + 1 values, the input's "
        "mean square and then one after each block",
        source="""
def stream_norms(x, weights, norm_position="pre", alpha=1.0):
    out = []
    for A, B in weights:
        attn = lambda h: h @ A.T
        ffn = lambda h: h @ B.T
        if norm_position == "pre":
            x = pre_ln_block(x, attn, ffn, layer_norm, layer_norm)
        else:
            x = post_ln_block(x, attn, ffn, layer_norm, layer_norm, alpha)
        out.append(x.pow(2).mean())
    return torch.stack(out)
""",
    ),
    Mistake(
        id="stream-root-mean-square",
        hint="the law is about the mean *square*, ||x||^2 / d: x.pow(2).mean(), without a "
        "square root",
        source="""
def stream_norms(x, weights, norm_position="pre", alpha=1.0):
    out = [x.pow(2).mean().sqrt()]
    for A, B in weights:
        attn = lambda h: h @ A.T
        ffn = lambda h: h @ B.T
        if norm_position == "pre":
            x = pre_ln_block(x, attn, ffn, layer_norm, layer_norm)
        else:
            x = post_ln_block(x, attn, ffn, layer_norm, layer_norm, alpha)
        out.append(x.pow(2).mean().sqrt())
    return torch.stack(out)
""",
    ),
    Mistake(
        id="stream-squared-norm-not-divided",
        hint="divide the squared norm by d: ||x||^2 / d, averaged over tokens, is "
        "x.pow(2).mean() (a token's squared norm alone grows with the width)",
        source="""
def stream_norms(x, weights, norm_position="pre", alpha=1.0):
    out = [x.pow(2).sum(-1).mean()]
    for A, B in weights:
        attn = lambda h: h @ A.T
        ffn = lambda h: h @ B.T
        if norm_position == "pre":
            x = pre_ln_block(x, attn, ffn, layer_norm, layer_norm)
        else:
            x = post_ln_block(x, attn, ffn, layer_norm, layer_norm, alpha)
        out.append(x.pow(2).sum(-1).mean())
    return torch.stack(out)
""",
    ),
    Mistake(
        id="stream-measures-normalised-stream",
        hint="measure the residual stream x itself, not layer_norm(x): the norm's output has "
        "mean square 1 whatever the depth, which hides the growth",
        source="""
def stream_norms(x, weights, norm_position="pre", alpha=1.0):
    out = [layer_norm(x).pow(2).mean()]
    for A, B in weights:
        attn = lambda h: h @ A.T
        ffn = lambda h: h @ B.T
        if norm_position == "pre":
            x = pre_ln_block(x, attn, ffn, layer_norm, layer_norm)
        else:
            x = post_ln_block(x, attn, ffn, layer_norm, layer_norm, alpha)
        out.append(layer_norm(x).pow(2).mean())
    return torch.stack(out)
""",
    ),
    Mistake(
        id="stream-ignores-norm-position",
        hint="build post-LN blocks (your post_ln_block, with alpha) when norm_position is 'post'",
        source="""
def stream_norms(x, weights, norm_position="pre", alpha=1.0):
    out = [x.pow(2).mean()]
    for A, B in weights:
        attn = lambda h: h @ A.T
        ffn = lambda h: h @ B.T
        x = pre_ln_block(x, attn, ffn, layer_norm, layer_norm)
        out.append(x.pow(2).mean())
    return torch.stack(out)
""",
    ),
    Mistake(
        id="stream-weights-not-transposed",
        hint="the sublayers are linear layers, y -> y @ A.T (weights are (d_out, d_in), as in "
        "nn.Linear), not y @ A",
        source="""
def stream_norms(x, weights, norm_position="pre", alpha=1.0):
    out = [x.pow(2).mean()]
    for A, B in weights:
        attn = lambda h: h @ A
        ffn = lambda h: h @ B
        if norm_position == "pre":
            x = pre_ln_block(x, attn, ffn, layer_norm, layer_norm)
        else:
            x = post_ln_block(x, attn, ffn, layer_norm, layer_norm, alpha)
        out.append(x.pow(2).mean())
    return torch.stack(out)
""",
    ),
]


STREAM_MISTAKES += [
    Mistake(
        id="stream-sums-over-tokens",
        hint="average over the tokens too: x.pow(2).mean() over every entry. Summing the "
        "tokens' mean squares (x.pow(2).mean(-1).sum()) makes each value n_tokens times larger "
        "(6 in the first case)",
        source="""
def stream_norms(x, weights, norm_position="pre", alpha=1.0):
    out = [x.pow(2).mean(-1).sum()]
    for A, B in weights:
        attn = lambda h: h @ A.T
        ffn = lambda h: h @ B.T
        if norm_position == "pre":
            x = pre_ln_block(x, attn, ffn, layer_norm, layer_norm)
        else:
            x = post_ln_block(x, attn, ffn, layer_norm, layer_norm, alpha)
        out.append(x.pow(2).mean(-1).sum())
    return torch.stack(out)
""",
    ),
    Mistake(
        id="stream-alpha-ignored",
        hint="pass alpha on to your post_ln_block, post_ln_block(x, attn, ffn, layer_norm, "
        "layer_norm, alpha): a post-LN stream is a norm's output, of mean square 1 whatever "
        "alpha, so a forgotten alpha shows only as a small difference (through eps)",
        source="""
def stream_norms(x, weights, norm_position="pre", alpha=1.0):
    out = [x.pow(2).mean()]
    for A, B in weights:
        attn = lambda h: h @ A.T
        ffn = lambda h: h @ B.T
        if norm_position == "pre":
            x = pre_ln_block(x, attn, ffn, layer_norm, layer_norm)
        else:
            x = post_ln_block(x, attn, ffn, layer_norm, layer_norm)
        out.append(x.pow(2).mean())
    return torch.stack(out)
""",
    ),
    Mistake(
        id="stream-returns-list",
        hint="return the (L + 1,) tensor itself, torch.stack(values): .tolist() makes it a "
        "list of Python floats",
        source="""
def stream_norms(x, weights, norm_position="pre", alpha=1.0):
    out = [x.pow(2).mean()]
    for A, B in weights:
        attn = lambda h: h @ A.T
        ffn = lambda h: h @ B.T
        if norm_position == "pre":
            x = pre_ln_block(x, attn, ffn, layer_norm, layer_norm)
        else:
            x = post_ln_block(x, attn, ffn, layer_norm, layer_norm, alpha)
        out.append(x.pow(2).mean())
    return torch.stack(out).tolist()
""",
    ),
]


def _law(n_layers: int, dtype) -> torch.Tensor:
    return (1 + torch.arange(n_layers + 1, dtype=torch.float64) / 2).to(dtype)


def stream_visible() -> list[Probe]:
    return inspected(_stream_visible(), TENSOR_RESULT)


def _stream_visible() -> list[Probe]:
    g = seeded(606)
    d = 8
    w = _toy_weights(g, 3, d)
    law_x, law_w = (
        randn(g, 64, 48, dtype=torch.float32),
        _toy_weights(g, 4, 48, dtype=torch.float32),
    )
    return [
        Probe(
            name="pre-LN, 3 blocks, 6 tokens of width 8, float64",
            args=(randn(g, 6, d, dtype=torch.float64), w),
        ),
        Probe(
            name="post-LN, same weights",
            args=(randn(g, 6, d, dtype=torch.float64), w),
            kwargs={"norm_position": "post"},
        ),
        Probe(
            name="post-LN with alpha = 1.5",
            args=(randn(g, 6, d, dtype=torch.float64), w),
            kwargs={"norm_position": "post", "alpha": 1.5},
        ),
        Probe(
            name="the law: pre-LN, 64 tokens of width 48 through 4 blocks with sigma = 1/2, is "
            "1 + l/2 within 30%",
            args=(law_x, law_w),
            expected=_law(4, torch.float32),
            tolerance=LAW_BAND,
        ),
    ]


def stream_hidden(g: torch.Generator) -> list[Probe]:
    return inspected(_stream_hidden(g), TENSOR_RESULT)


def _stream_hidden(g: torch.Generator) -> list[Probe]:
    d = 12
    w = _toy_weights(g, 5, d)
    return [
        Probe(name="pre-LN, 5 blocks of width 12", args=(randn(g, 7, d, dtype=torch.float64), w)),
        Probe(
            name="post-LN",
            args=(randn(g, 7, d, dtype=torch.float64), w),
            kwargs={"norm_position": "post"},
        ),
        Probe(
            name="post-LN with alpha = 2.5",
            args=(randn(g, 2, 7, d, dtype=torch.float64), w),
            kwargs={"norm_position": "post", "alpha": 2.5},
        ),
        Probe(
            name="pre-LN with sigma = 1, input at scale 3",
            args=(randn(g, 5, d, scale=3, dtype=torch.float64), _toy_weights(g, 3, d, 1.0)),
        ),
        Probe(
            name="the law: pre-LN, 128 tokens of width 64 through 8 blocks with sigma = 1/2, is "
            "1 + l/2 within 30%",
            args=(randn(g, 128, 64, dtype=torch.float64), _toy_weights(g, 8, 64)),
            expected=_law(8, torch.float64),
            tolerance=LAW_BAND,
        ),
    ]


# ---------------------------------------------------------------- gradient norms per layer

GRAD_MISTAKES = [
    Mistake(
        id="grads-no-final-norm",
        hint="a pre-LN stack ends with a final norm (GPT-2's ln_f) before the readout: "
        "without it the output grows with depth and the gradients do not fall as they should",
        source="""
def layer_grad_norms(x, weights, readout, norm_position="pre", alpha=1.0):
    W = [w.clone().requires_grad_(True) for w in weights]
    h = x
    for A, B in W:
        attn = lambda y, A=A: y @ A.T
        ffn = lambda y, B=B: y @ B.T
        if norm_position == "pre":
            h = pre_ln_block(h, attn, ffn, layer_norm, layer_norm)
        else:
            h = post_ln_block(h, attn, ffn, layer_norm, layer_norm, alpha)
    loss = (h @ readout).mean()
    grads = torch.autograd.grad(loss, W)
    return torch.stack([g.norm() for g in grads])
""",
    ),
    Mistake(
        id="grads-summed-loss",
        hint="the loss is the *mean* over tokens of out . readout: a sum makes every gradient "
        "n_tokens times larger",
        source="""
def layer_grad_norms(x, weights, readout, norm_position="pre", alpha=1.0):
    W = [w.clone().requires_grad_(True) for w in weights]
    h = x
    for A, B in W:
        attn = lambda y, A=A: y @ A.T
        ffn = lambda y, B=B: y @ B.T
        if norm_position == "pre":
            h = pre_ln_block(h, attn, ffn, layer_norm, layer_norm)
        else:
            h = post_ln_block(h, attn, ffn, layer_norm, layer_norm, alpha)
    if norm_position == "pre":
        h = layer_norm(h)
    loss = (h @ readout).sum()
    grads = torch.autograd.grad(loss, W)
    return torch.stack([g.norm() for g in grads])
""",
    ),
    Mistake(
        id="grads-squared-norms",
        hint="return the norms themselves (the root of the sum of squares, .norm()), not their "
        "squares",
        source="""
def layer_grad_norms(x, weights, readout, norm_position="pre", alpha=1.0):
    W = [w.clone().requires_grad_(True) for w in weights]
    h = x
    for A, B in W:
        attn = lambda y, A=A: y @ A.T
        ffn = lambda y, B=B: y @ B.T
        if norm_position == "pre":
            h = pre_ln_block(h, attn, ffn, layer_norm, layer_norm)
        else:
            h = post_ln_block(h, attn, ffn, layer_norm, layer_norm, alpha)
    if norm_position == "pre":
        h = layer_norm(h)
    loss = (h @ readout).mean()
    grads = torch.autograd.grad(loss, W)
    return torch.stack([g.pow(2).sum() for g in grads])
""",
    ),
    Mistake(
        id="grads-attention-matrix-only",
        hint="each block's gradient norm covers both of its matrices, A and B together: "
        "the norm of the whole (2, d, d) gradient of block l",
        source="""
def layer_grad_norms(x, weights, readout, norm_position="pre", alpha=1.0):
    W = [w.clone().requires_grad_(True) for w in weights]
    h = x
    for A, B in W:
        attn = lambda y, A=A: y @ A.T
        ffn = lambda y, B=B: y @ B.T
        if norm_position == "pre":
            h = pre_ln_block(h, attn, ffn, layer_norm, layer_norm)
        else:
            h = post_ln_block(h, attn, ffn, layer_norm, layer_norm, alpha)
    if norm_position == "pre":
        h = layer_norm(h)
    loss = (h @ readout).mean()
    grads = torch.autograd.grad(loss, W)
    return torch.stack([g[0].norm() for g in grads])
""",
    ),
    Mistake(
        id="grads-reversed",
        hint="value l is block l's gradient, counted from the input (block 0 first)",
        source="""
def layer_grad_norms(x, weights, readout, norm_position="pre", alpha=1.0):
    W = [w.clone().requires_grad_(True) for w in weights]
    h = x
    for A, B in W:
        attn = lambda y, A=A: y @ A.T
        ffn = lambda y, B=B: y @ B.T
        if norm_position == "pre":
            h = pre_ln_block(h, attn, ffn, layer_norm, layer_norm)
        else:
            h = post_ln_block(h, attn, ffn, layer_norm, layer_norm, alpha)
    if norm_position == "pre":
        h = layer_norm(h)
    loss = (h @ readout).mean()
    grads = torch.autograd.grad(loss, W)
    return torch.stack([g.norm() for g in grads]).flip(0)
""",
    ),
    Mistake(
        id="grads-with-respect-to-stream",
        hint="the gradient is with respect to each block's *weights* (torch.autograd.grad(loss, "
        "W) with W requiring grad), not with respect to the residual stream between blocks",
        source="""
def layer_grad_norms(x, weights, readout, norm_position="pre", alpha=1.0):
    hs = []
    h = x.clone().requires_grad_(True)
    for A, B in weights:
        hs.append(h)
        attn = lambda y, A=A: y @ A.T
        ffn = lambda y, B=B: y @ B.T
        if norm_position == "pre":
            h = pre_ln_block(h, attn, ffn, layer_norm, layer_norm)
        else:
            h = post_ln_block(h, attn, ffn, layer_norm, layer_norm, alpha)
    if norm_position == "pre":
        h = layer_norm(h)
    loss = (h @ readout).mean()
    grads = torch.autograd.grad(loss, hs)
    return torch.stack([g.norm() for g in grads])
""",
    ),
]


def _grads_source(setup: str, end: str, post_call: str = "alpha", final: str = "pre") -> str:
    """A layer_grad_norms whose leaves are made by `setup`, whose post-LN blocks are called
    with `post_call` as alpha, whose final norm applies when norm_position is `final` ("any":
    always), and whose last line is `end`."""
    final_line = (
        "    h = layer_norm(h)\n"
        if final == "any"
        else "    if norm_position == 'pre':\n        h = layer_norm(h)\n"
    )
    return (
        "def layer_grad_norms(x, weights, readout, norm_position='pre', alpha=1.0):\n"
        f"{setup}"
        "    h = x\n"
        "    for A, B in W:\n"
        "        attn = lambda y, A=A: y @ A.T\n"
        "        ffn = lambda y, B=B: y @ B.T\n"
        "        if norm_position == 'pre':\n"
        "            h = pre_ln_block(h, attn, ffn, layer_norm, layer_norm)\n"
        "        else:\n"
        f"            h = post_ln_block(h, attn, ffn, layer_norm, layer_norm, {post_call})\n"
        f"{final_line}"
        "    loss = (h @ readout).mean()\n"
        f"{end}"
    )


_LEAVES = "    W = [w.clone().requires_grad_(True) for w in weights]\n"
_GRADS = "    grads = torch.autograd.grad(loss, W)\n"
GRAD_MISTAKES += [
    Mistake(
        id="grads-per-matrix-norms",
        hint="one norm per block: the Frobenius norm of block l's whole (2, d, d) gradient, "
        "g.norm(); g.norm(dim=(-2, -1)) gives one norm per matrix, (L, 2)",
        source=_grads_source(
            _LEAVES, _GRADS + "    return torch.stack([g.norm(dim=(-2, -1)) for g in grads])\n"
        ),
    ),
    Mistake(
        id="grads-sum-of-matrix-norms",
        hint="the norm of both matrices together is sqrt(||grad A||^2 + ||grad B||^2), "
        "g.norm() of the (2, d, d) gradient, not ||grad A|| + ||grad B||",
        source=_grads_source(
            _LEAVES, _GRADS + "    return torch.stack([g[0].norm() + g[1].norm() for g in grads])\n"
        ),
    ),
    Mistake(
        id="grads-final-norm-in-post",
        hint="a post-LN stack ends in a norm already (the last block's norm2): apply the final "
        "layer_norm only when norm_position is 'pre'. Normalising twice changes the gradients "
        "only through eps, so the difference is small but real",
        source=_grads_source(
            _LEAVES, _GRADS + "    return torch.stack([g.norm() for g in grads])\n", final="any"
        ),
    ),
    Mistake(
        id="grads-alpha-ignored",
        hint="pass alpha on to your post_ln_block when norm_position is 'post': the residual's "
        "weight changes every gradient (DeepNorm's alpha is what flattens them)",
        source=_grads_source(
            _LEAVES, _GRADS + "    return torch.stack([g.norm() for g in grads])\n", "1.0"
        ),
    ),
    Mistake(
        id="grads-requires-grad-on-caller",
        hint="weights.requires_grad_(True) switches the caller's own tensor to requires_grad "
        "(it stays so after your function returns): make leaves of copies, W = "
        "[w.clone().requires_grad_(True) for w in weights]",
        source=_grads_source(
            "    weights.requires_grad_(True)\n    W = weights\n",
            "    (g,) = torch.autograd.grad(loss, [weights])\n"
            "    return torch.stack([gl.norm() for gl in g])\n",
        ),
    ),
]


def grad_visible() -> list[Probe]:
    return inspected(_grad_visible(), CALLER_TENSORS)


def _grad_visible() -> list[Probe]:
    g = seeded(607)
    d = 8
    w = _toy_weights(g, 3, d)
    r = randn(g, d, dtype=torch.float64)
    return [
        Probe(
            name="pre-LN, 3 blocks, 6 tokens of width 8",
            args=(randn(g, 6, d, dtype=torch.float64), w, r),
        ),
        Probe(
            name="post-LN, same weights",
            args=(randn(g, 6, d, dtype=torch.float64), w, r),
            kwargs={"norm_position": "post"},
        ),
        Probe(
            name="post-LN with alpha = 1.5",
            args=(randn(g, 6, d, dtype=torch.float64), w, r),
            kwargs={"norm_position": "post", "alpha": 1.5},
        ),
    ]


def grad_hidden(g: torch.Generator) -> list[Probe]:
    return inspected(_grad_hidden(g), CALLER_TENSORS)


def _grad_hidden(g: torch.Generator) -> list[Probe]:
    d = 12
    w = _toy_weights(g, 6, d)
    r = randn(g, d, dtype=torch.float64)
    return [
        Probe(
            name="pre-LN, 6 blocks of width 12", args=(randn(g, 9, d, dtype=torch.float64), w, r)
        ),
        Probe(
            name="post-LN",
            args=(randn(g, 9, d, dtype=torch.float64), w, r),
            kwargs={"norm_position": "post"},
        ),
        Probe(
            name="DeepNorm: post-LN, alpha and beta for 6 layers",
            args=(randn(g, 9, d, dtype=torch.float64), w * (8 * 6) ** -0.25, r),
            kwargs={"norm_position": "post", "alpha": (2 * 6) ** 0.25},
        ),
        Probe(
            name="pre-LN, batch of sequences (2, 5, 12)",
            args=(randn(g, 2, 5, d, dtype=torch.float64), w[:3], r),
        ),
    ]


# ---------------------------------------------------------------- the lesson

_DEPTH = dict(
    stand_ins={"layer_norm": "course.stand_ins:layer_norm"},
    uses=("pre_ln_block", "post_ln_block"),
)

LESSON = Lesson(
    folder="06-normalization",
    notebook="normalization",
    context_cells=("setup",),
    exercises=[
        Exercise(
            id="layer-norm",
            title="LayerNorm from scratch",
            function="layer_norm",
            signature="layer_norm(x: (..., d) float, weight: (d,) | None = None, bias: (d,) | "
            "None = None, eps: float = 1e-5) -> x's shape and dtype",
            reference=N.layer_norm,
            answer_cell="layer_norm",
            test_cell="test-layer-norm",
            points=3,
            visible=ln_visible,
            hidden=ln_hidden,
            mistakes=LN_MISTAKES,
            forbidden=LN_OPS,
            forbidden_hint=HINT,
        ),
        Exercise(
            id="rms-norm",
            title="RMSNorm in float32, cast back",
            function="rms_norm",
            signature="rms_norm(x: (..., d) float, weight: (d,) | None = None, eps: float = "
            "1e-5) -> x's shape and dtype",
            reference=N.rms_norm,
            answer_cell="rms_norm",
            test_cell="test-rms-norm",
            points=3,
            visible=rms_visible,
            hidden=rms_hidden,
            mistakes=RMS_MISTAKES,
            forbidden=RMS_OPS,
            forbidden_hint=HINT,
        ),
        Exercise(
            id="pre-ln-block",
            title="the pre-LN block",
            function="pre_ln_block",
            signature="pre_ln_block(x: (B, T, d), attn, ffn, norm1, norm2: functions (..., d) -> "
            "(..., d)) -> (B, T, d)",
            reference=D.pre_ln_block,
            answer_cell="pre_ln_block",
            test_cell="test-pre-ln-block",
            points=2,
            visible=pre_visible,
            hidden=pre_hidden,
            mistakes=PRE_MISTAKES,
        ),
        Exercise(
            id="post-ln-block",
            title="the post-LN block, with DeepNorm's alpha",
            function="post_ln_block",
            signature="post_ln_block(x: (B, T, d), attn, ffn, norm1, norm2, alpha: float = 1.0) "
            "-> (B, T, d)",
            reference=D.post_ln_block,
            answer_cell="post_ln_block",
            test_cell="test-post-ln-block",
            points=2,
            visible=post_visible,
            hidden=post_hidden,
            mistakes=POST_MISTAKES,
        ),
        Exercise(
            id="deepnorm-constants",
            title="DeepNorm's alpha and beta",
            function="deepnorm_constants",
            signature="deepnorm_constants(n_layers: int) -> (alpha: float, beta: float)",
            reference=D.deepnorm_alpha_beta,
            answer_cell="deepnorm_constants",
            test_cell="test-deepnorm-constants",
            points=1,
            visible=deepnorm_visible,
            hidden=deepnorm_hidden,
            mistakes=DEEPNORM_MISTAKES,
        ),
        Exercise(
            id="stream-norms",
            title="the residual stream's growth with depth",
            function="stream_norms",
            signature="stream_norms(x: (..., d), weights: (L, 2, d, d), norm_position='pre', "
            "alpha=1.0) -> (L + 1,) in x's dtype",
            reference=D.stream_norms,
            answer_cell="stream_norms",
            test_cell="test-stream-norms",
            points=2,
            visible=stream_visible,
            hidden=stream_hidden,
            mistakes=STREAM_MISTAKES,
            **_DEPTH,
        ),
        Exercise(
            id="layer-grad-norms",
            title="gradient norms per layer",
            function="layer_grad_norms",
            signature="layer_grad_norms(x: (..., d), weights: (L, 2, d, d), readout: (d,), "
            "norm_position='pre', alpha=1.0) -> (L,)",
            reference=D.layer_grad_norms,
            answer_cell="layer_grad_norms",
            test_cell="test-layer-grad-norms",
            points=2,
            visible=grad_visible,
            hidden=grad_hidden,
            mistakes=GRAD_MISTAKES,
            **_DEPTH,
        ),
    ],
)
