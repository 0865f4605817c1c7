"""Lesson 05 (positions), declared once: exercises, references, probes, points, known mistakes.

Judged against `solutions/kernels/positions.py`: tables whose angles are formed in float64 and
only then rounded to the requested dtype; RoPE with explicit `positions` (offsets and gaps, never
only `arange`) and the `(cos, sin)` pair every attention entry point takes; ALiBi slopes by the
paper's rule for any head count, and its bias from positions, not column indices.
"""

from __future__ import annotations

import torch

from course.lesson import Exercise, Lesson, Mistake, Probe, randn, seeded
from solutions.kernels import positions as P

FLOAT64_HINT = (
    "float64 is judged at atol 1e-10, rtol 1e-8: form the angles in float64 "
    "(positions.to(torch.float64) and float64 frequencies) and round only the finished result"
)
OTHER_LAYOUT = (
    "this is the {got} layout, the exercise asks for {want}: {want_pairs}. The two layouts are a "
    "permutation of each other, but on the same input they differ by O(1) everywhere except at "
    "position 0"
)
INTERLEAVED_PAIRS = "pairs are dims (2i, 2i + 1), x[..., 0::2] and x[..., 1::2]"
HALF_PAIRS = "pairs are dims (i, i + d/2), the two halves x[..., :d/2] and x[..., d/2:]"


def tables(positions, head_dim: int, theta: float = 10000.0, dtype=torch.float32):
    """RoPE's (cos, sin) from the reference, for probes."""
    return P.rope_cos_sin(torch.as_tensor(positions), head_dim, theta, dtype=dtype)


# ---------------------------------------------------------------- sinusoidal table

SINUSOIDAL_MISTAKES = [
    Mistake(
        id="sin-cos-swapped",
        hint="even dims hold sin(p w_i) and odd dims cos(p w_i) (Vaswani et al. 2017, 3.5): "
        "row 0 is (0, 1, 0, 1, ...), not (1, 0, 1, 0, ...)",
        source="""
def sinusoidal_table(n_positions, d_model, dtype=torch.float32):
    pos = torch.arange(n_positions, dtype=torch.float64)
    inv_freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    angles = pos[:, None] * inv_freq[None, :]
    return torch.stack((angles.cos(), angles.sin()), dim=-1).flatten(-2).to(dtype)
""",
    ),
    Mistake(
        id="sin-exponent-i-over-d",
        hint="the exponent is 2i/d_model for pair i (torch.arange(0, d_model, 2) / d_model), not "
        "i/d_model: with i/d the slowest pair turns at 10000^-0.5, not 10000^-(d-2)/d",
        source="""
def sinusoidal_table(n_positions, d_model, dtype=torch.float32):
    pos = torch.arange(n_positions, dtype=torch.float64)
    inv_freq = 10000.0 ** (-torch.arange(d_model // 2, dtype=torch.float64) / d_model)
    angles = pos[:, None] * inv_freq[None, :]
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2).to(dtype)
""",
    ),
    Mistake(
        id="sin-frequencies-from-pair-1",
        hint="pair 0 turns at w_0 = 10000^0 = 1 radian per position: the exponents are "
        "0, 2/d, 4/d, ..., (d-2)/d (torch.arange(0, d_model, 2)), not 2/d ... d/d",
        source="""
def sinusoidal_table(n_positions, d_model, dtype=torch.float32):
    pos = torch.arange(n_positions, dtype=torch.float64)
    inv_freq = 10000.0 ** (-torch.arange(2, d_model + 2, 2, dtype=torch.float64) / d_model)
    angles = pos[:, None] * inv_freq[None, :]
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2).to(dtype)
""",
    ),
    Mistake(
        id="sin-concatenated-halves",
        hint="this table puts all sines first and all cosines after (torch.cat): a permutation of "
        "the interleaved table asked for here. Interleave them: torch.stack((sin, cos), dim=-1)"
        ".flatten(-2)",
        source="""
def sinusoidal_table(n_positions, d_model, dtype=torch.float32):
    pos = torch.arange(n_positions, dtype=torch.float64)
    inv_freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    angles = pos[:, None] * inv_freq[None, :]
    return torch.cat((angles.sin(), angles.cos()), dim=-1).to(dtype)
""",
    ),
    Mistake(
        id="sin-positions-from-1",
        hint="positions start at 0: row 0 is sin(0) = 0, cos(0) = 1 (torch.arange(n_positions))",
        source="""
def sinusoidal_table(n_positions, d_model, dtype=torch.float32):
    pos = torch.arange(1, n_positions + 1, dtype=torch.float64)
    inv_freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    angles = pos[:, None] * inv_freq[None, :]
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2).to(dtype)
""",
    ),
    Mistake(
        id="sin-float32-angles",
        hint=FLOAT64_HINT,
        source="""
def sinusoidal_table(n_positions, d_model, dtype=torch.float32):
    pos = torch.arange(n_positions, dtype=torch.float32)
    inv_freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
    angles = pos[:, None] * inv_freq[None, :]
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2).to(dtype)
""",
    ),
    Mistake(
        id="sin-angles-in-output-dtype",
        hint="the angles were formed in the output dtype: bfloat16 holds only 8 significant bits, "
        "so positions near 1000 are rounded to multiples of 4 and their sines are noise. Form "
        "the angles in float64 and cast only the finished table with .to(dtype)",
        source="""
def sinusoidal_table(n_positions, d_model, dtype=torch.float32):
    pos = torch.arange(n_positions, dtype=dtype)
    inv_freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=dtype) / d_model)
    angles = pos[:, None] * inv_freq[None, :]
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)
""",
    ),
]


SINUSOIDAL_MISTAKES += [
    Mistake(
        id="sin-exponent-sign",
        hint="the frequencies fall with the pair index: w_i = 10000^(-2i/d_model), with a minus "
        "in the exponent. With +2i/d the columns of pair i >= 1 (dims 2i, 2i + 1) turn faster "
        "than 1 radian per position, and only pair 0 (w_0 = 1) is right",
        source="""
def sinusoidal_table(n_positions, d_model, dtype=torch.float32):
    pos = torch.arange(n_positions, dtype=torch.float64)
    inv_freq = 10000.0 ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    angles = pos[:, None] * inv_freq[None, :]
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2).to(dtype)
""",
    ),
    Mistake(
        id="sin-exponent-doubled",
        hint="the exponent is doubled: torch.arange(0, d_model, 2) already holds 2i (0, 2, 4, ...),"
        " so the exponent is that / d_model, not 2 * that / d_model. In w_i = 10000^(-2i/d) the "
        "i counts pairs (0, 1, 2, ...). Only pair 0 (dims 0, 1) comes out right",
        source="""
def sinusoidal_table(n_positions, d_model, dtype=torch.float32):
    pos = torch.arange(n_positions, dtype=torch.float64)
    i = torch.arange(0, d_model, 2, dtype=torch.float64)
    inv_freq = 10000.0 ** (-2 * i / d_model)
    angles = pos[:, None] * inv_freq[None, :]
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2).to(dtype)
""",
    ),
    Mistake(
        id="sin-float32-angles-below-float64",
        hint="the angles were formed in float32 (only the float64 table in float64): at positions "
        "near 4000 float32 angles are off by about 2e-5 radians, beyond float32's own tolerance "
        "(atol 1e-5). Form positions, frequencies and angles in float64 for every dtype and "
        "round only the finished table with .to(dtype)",
        source="""
def sinusoidal_table(n_positions, d_model, dtype=torch.float32):
    wd = torch.float64 if dtype == torch.float64 else torch.float32
    pos = torch.arange(n_positions, dtype=wd)
    inv_freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=wd) / d_model)
    angles = pos[:, None] * inv_freq[None, :]
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2).to(dtype)
""",
    ),
    Mistake(
        id="sin-float32-angles-exp",
        hint="the angles were formed in float32 (only the float64 table in float64): at positions "
        "near 4000 float32 angles are off by about 2e-5 radians, beyond float32's own tolerance "
        "(atol 1e-5). Form positions, frequencies and angles in float64 for every dtype and "
        "round only the finished table with .to(dtype)",
        source="""
def sinusoidal_table(n_positions, d_model, dtype=torch.float32):
    wd = torch.float64 if dtype == torch.float64 else torch.float32
    pos = torch.arange(n_positions).to(wd)
    inv_freq = torch.exp(torch.arange(0, d_model, 2).to(wd) * (-math.log(10000.0) / d_model))
    angles = pos[:, None] * inv_freq[None, :]
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2).to(dtype)
""",
    ),
]


def sinusoidal_visible() -> list[Probe]:
    return [
        Probe(name="4 positions, d_model 6", args=(4, 6)),
        Probe(
            name="10 positions, d_model 8, float64", args=(10, 8), kwargs={"dtype": torch.float64}
        ),
        Probe(name="1 position, d_model 2: row 0 is (sin 0, cos 0) = (0, 1)", args=(1, 2)),
        Probe(
            name="1200 positions, d_model 4, bfloat16 (angles near 1000 need more than 8 bits)",
            args=(1200, 4),
            kwargs={"dtype": torch.bfloat16},
        ),
        Probe(
            name="4096 positions, d_model 6, float32 (float32 angles drift by 2e-5 near 4000)",
            args=(4096, 6),
        ),
    ]


def sinusoidal_hidden(g: torch.Generator) -> list[Probe]:
    n = int(torch.randint(3, 40, (1,), generator=g))
    d = 2 * int(torch.randint(1, 20, (1,), generator=g))
    return [
        Probe(name="5 positions, d_model 8", args=(5, 8)),
        Probe(name="64 positions, d_model 32", args=(64, 32)),
        Probe(name=f"{n} positions, d_model {d}", args=(n, d)),
        Probe(
            name="300 positions, d_model 12, float64",
            args=(300, 12),
            kwargs={"dtype": torch.float64},
        ),
        Probe(
            name="2048 positions, d_model 64, float64",
            args=(2048, 64),
            kwargs={"dtype": torch.float64},
        ),
        Probe(
            name="2048 positions, d_model 8, bfloat16",
            args=(2048, 8),
            kwargs={"dtype": torch.bfloat16},
        ),
        Probe(
            name="100 positions, d_model 10, float16",
            args=(100, 10),
            kwargs={"dtype": torch.float16},
        ),
        Probe(name="8192 positions, d_model 6, float32", args=(8192, 6)),
    ]


# ---------------------------------------------------------------- the shift map

SHIFT_MISTAKES = [
    Mistake(
        id="shift-transposed",
        hint="this is M(-delta) = M(delta)^T, a shift backwards: from sin(a + b) = sin a cos b + "
        "cos a sin b, row 2i (the new sine) is (cos, +sin) and row 2i + 1 (the new cosine) is "
        "(-sin, cos)",
        source="""
def shift_matrix(delta, d_model, dtype=torch.float32):
    w = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    c, s = torch.cos(delta * w), torch.sin(delta * w)
    M = torch.zeros(d_model, d_model, dtype=torch.float64)
    i = torch.arange(0, d_model, 2)
    M[i, i], M[i, i + 1], M[i + 1, i], M[i + 1, i + 1] = c, -s, s, c
    return M.to(dtype)
""",
    ),
    Mistake(
        id="shift-exponent-i-over-d",
        hint="the frequencies are the table's: w_i = 10000^(-2i/d_model), exponent "
        "torch.arange(0, d_model, 2) / d_model, not i/d_model",
        source="""
def shift_matrix(delta, d_model, dtype=torch.float32):
    w = 10000.0 ** (-torch.arange(d_model // 2, dtype=torch.float64) / d_model)
    c, s = torch.cos(delta * w), torch.sin(delta * w)
    M = torch.zeros(d_model, d_model, dtype=torch.float64)
    i = torch.arange(0, d_model, 2)
    M[i, i], M[i, i + 1], M[i + 1, i], M[i + 1, i + 1] = c, s, -s, c
    return M.to(dtype)
""",
    ),
    Mistake(
        id="shift-half-split-blocks",
        hint="each 2x2 block acts on the pair (2i, 2i + 1) of the interleaved table, not on "
        "(i, i + d/2)",
        source="""
def shift_matrix(delta, d_model, dtype=torch.float32):
    w = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    c, s = torch.cos(delta * w), torch.sin(delta * w)
    M = torch.zeros(d_model, d_model, dtype=torch.float64)
    i = torch.arange(d_model // 2)
    h = d_model // 2
    M[i, i], M[i, i + h], M[i + h, i], M[i + h, i + h] = c, s, -s, c
    return M.to(dtype)
""",
    ),
    Mistake(
        id="shift-float32",
        hint=FLOAT64_HINT,
        source="""
def shift_matrix(delta, d_model, dtype=torch.float32):
    w = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
    c, s = torch.cos(delta * w).double(), torch.sin(delta * w).double()
    M = torch.zeros(d_model, d_model, dtype=torch.float64)
    i = torch.arange(0, d_model, 2)
    M[i, i], M[i, i + 1], M[i + 1, i], M[i + 1, i + 1] = c, s, -s, c
    return M.to(dtype)
""",
    ),
    Mistake(
        id="shift-cos-sin-swapped",
        hint="the diagonal of each block is cos(delta w_i) (a shift by 0 is the identity), the "
        "off-diagonal +-sin(delta w_i)",
        source="""
def shift_matrix(delta, d_model, dtype=torch.float32):
    w = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    c, s = torch.cos(delta * w), torch.sin(delta * w)
    M = torch.zeros(d_model, d_model, dtype=torch.float64)
    i = torch.arange(0, d_model, 2)
    M[i, i], M[i, i + 1], M[i + 1, i], M[i + 1, i + 1] = s, c, -c, s
    return M.to(dtype)
""",
    ),
]

SHIFT_MISTAKES += [
    Mistake(
        id="shift-abs-delta",
        hint="delta may be negative and its sign matters: M(-2) = M(2)^T shifts back by 2. Use "
        "delta as given (no abs())",
        source="""
def shift_matrix(delta, d_model, dtype=torch.float32):
    w = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    c, s = torch.cos(abs(delta) * w), torch.sin(abs(delta) * w)
    M = torch.zeros(d_model, d_model, dtype=torch.float64)
    i = torch.arange(0, d_model, 2)
    M[i, i], M[i, i + 1], M[i + 1, i], M[i + 1, i + 1] = c, s, -s, c
    return M.to(dtype)
""",
    ),
    Mistake(
        id="shift-exponent-doubled",
        hint="the exponent is doubled: torch.arange(0, d_model, 2) already holds 2i, so "
        "w_i = 10000^(-that / d_model), not 10000^(-2 * that / d_model). The frequencies (pairs, "
        "blocks) after pair 0 come out wrong, block 0 is right",
        source="""
def shift_matrix(delta, d_model, dtype=torch.float32):
    w = 10000.0 ** (-2 * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    c, s = torch.cos(delta * w), torch.sin(delta * w)
    M = torch.zeros(d_model, d_model, dtype=torch.float64)
    i = torch.arange(0, d_model, 2)
    M[i, i], M[i, i + 1], M[i + 1, i], M[i + 1, i + 1] = c, s, -s, c
    return M.to(dtype)
""",
    ),
    Mistake(
        id="shift-exponent-sign",
        hint="the frequencies are the table's, w_i = 10000^(-2i/d_model), with a minus in the "
        "exponent: with +2i/d every block after block 0 turns by the wrong angle",
        source="""
def shift_matrix(delta, d_model, dtype=torch.float32):
    w = 10000.0 ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    c, s = torch.cos(delta * w), torch.sin(delta * w)
    M = torch.zeros(d_model, d_model, dtype=torch.float64)
    i = torch.arange(0, d_model, 2)
    M[i, i], M[i, i + 1], M[i + 1, i], M[i + 1, i + 1] = c, s, -s, c
    return M.to(dtype)
""",
    ),
    Mistake(
        id="shift-float32-below-float64",
        hint="the angles delta * w_i were formed in float32 (only float64 matrices in float64): "
        "at delta 100000, d_model 10 they are off by up to 3e-4 radians, far beyond float32's "
        "atol 1e-5. Form them in float64 for every dtype and round only the finished matrix",
        source="""
def shift_matrix(delta, d_model, dtype=torch.float32):
    wd = torch.float64 if dtype == torch.float64 else torch.float32
    w = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=wd) / d_model)
    c, s = torch.cos(delta * w), torch.sin(delta * w)
    M = torch.zeros(d_model, d_model, dtype=wd)
    i = torch.arange(0, d_model, 2)
    M[i, i], M[i, i + 1], M[i + 1, i], M[i + 1, i + 1] = c, s, -s, c
    return M.to(dtype)
""",
    ),
]


F64 = {"dtype": torch.float64}


def shift_visible() -> list[Probe]:
    return [
        Probe(name="delta 1, d_model 4, float64", args=(1, 4), kwargs=F64),
        Probe(name="delta 3, d_model 6, float64", args=(3, 6), kwargs=F64),
        Probe(name="delta -2 (a shift back), d_model 8, float64", args=(-2, 8), kwargs=F64),
        Probe(name="delta 0 is the identity, d_model 4", args=(0, 4)),
        Probe(name="delta 2, d_model 6 (float32, the default)", args=(2, 6)),
        Probe(
            name="delta 100000, d_model 10, float32 (angles up to 1e5 radians)", args=(100000, 10)
        ),
    ]


def shift_hidden(g: torch.Generator) -> list[Probe]:
    delta = int(torch.randint(-50, 50, (1,), generator=g))
    return [
        Probe(name="delta 1, d_model 2", args=(1, 2)),
        Probe(name="delta 5, d_model 16, float64", args=(5, 16), kwargs=F64),
        Probe(name="delta -7, d_model 10, float64", args=(-7, 10), kwargs=F64),
        Probe(name="delta 1000, d_model 32, float64", args=(1000, 32), kwargs=F64),
        Probe(name=f"delta {delta}, d_model 12, float64", args=(delta, 12), kwargs=F64),
        Probe(name="delta 0, d_model 8", args=(0, 8)),
        Probe(name="delta 9, d_model 8, float32", args=(9, 8)),
        Probe(name="delta -1000003, d_model 12, float32", args=(-1000003, 12)),
    ]


# ---------------------------------------------------------------- RoPE tables

COS_SIN_MISTAKES = [
    Mistake(
        id="rope-ignores-positions",
        hint="the angles come from the positions you are given, not from torch.arange: behind a "
        "KV cache the new tokens sit at past, past + 1, ..., and packed or padded sequences have "
        "offsets and gaps. Use positions[..., None] * inv_freq",
        source="""
def rope_cos_sin(positions, head_dim, theta=10000.0, dtype=torch.float32):
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    pos = torch.arange(positions.shape[-1], dtype=torch.float64).expand(positions.shape)
    angles = pos[..., None] * inv_freq
    return angles.cos().to(dtype), angles.sin().to(dtype)
""",
    ),
    Mistake(
        id="rope-angles-in-bf16",
        hint="the angles were formed in bfloat16: it has 8 significant bits, so position 8193 is "
        "stored as 8192 and the angle of pair 0 is off by whole radians. Form the angles in "
        "float64 (positions.to(torch.float64)) and round only cos and sin to dtype",
        source="""
def rope_cos_sin(positions, head_dim, theta=10000.0, dtype=torch.float32):
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=dtype) / head_dim)
    angles = positions.to(dtype)[..., None] * inv_freq
    return angles.cos(), angles.sin()
""",
    ),
    Mistake(
        id="rope-float32-angles",
        hint=FLOAT64_HINT + " (float32 angles are fine for bfloat16 tables, not for float64 ones: "
        "at position 4005, head_dim 8, theta 500000 they are already off by about 2e-6 radians)",
        source="""
def rope_cos_sin(positions, head_dim, theta=10000.0, dtype=torch.float32):
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = positions.to(torch.float32)[..., None] * inv_freq
    return angles.cos().to(dtype), angles.sin().to(dtype)
""",
    ),
    Mistake(
        id="rope-exponent-i-over-d",
        hint="pair i turns at theta^(-2i/head_dim): the exponent is torch.arange(0, head_dim, 2) "
        "/ head_dim, not torch.arange(head_dim // 2) / head_dim",
        source="""
def rope_cos_sin(positions, head_dim, theta=10000.0, dtype=torch.float32):
    inv_freq = theta ** (-torch.arange(head_dim // 2, dtype=torch.float64) / head_dim)
    angles = positions.to(torch.float64)[..., None] * inv_freq
    return angles.cos().to(dtype), angles.sin().to(dtype)
""",
    ),
    Mistake(
        id="rope-frequencies-from-pair-1",
        hint="pair 0 turns at theta^0 = 1 radian per position: the exponents are 0, 2/d, ..., "
        "(d-2)/d (torch.arange(0, head_dim, 2)), not 2/d ... d/d",
        source="""
def rope_cos_sin(positions, head_dim, theta=10000.0, dtype=torch.float32):
    inv_freq = theta ** (-torch.arange(2, head_dim + 2, 2, dtype=torch.float64) / head_dim)
    angles = positions.to(torch.float64)[..., None] * inv_freq
    return angles.cos().to(dtype), angles.sin().to(dtype)
""",
    ),
    Mistake(
        id="rope-theta-ignored",
        hint="use the theta you are given (Llama 3 uses 500,000): 10000 is only the default",
        source="""
def rope_cos_sin(positions, head_dim, theta=10000.0, dtype=torch.float32):
    inv_freq = 10000.0 ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = positions.to(torch.float64)[..., None] * inv_freq
    return angles.cos().to(dtype), angles.sin().to(dtype)
""",
    ),
    Mistake(
        id="rope-returns-sin-cos",
        hint="return the pair in the order (cos, sin)",
        source="""
def rope_cos_sin(positions, head_dim, theta=10000.0, dtype=torch.float32):
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = positions.to(torch.float64)[..., None] * inv_freq
    return angles.sin().to(dtype), angles.cos().to(dtype)
""",
    ),
]


COS_SIN_MISTAKES += [
    Mistake(
        id="rope-dtype-ignored",
        hint="the tables come back in float32 whatever dtype asks for: the positions are integers, "
        "so the dtype to return is the `dtype` argument. Round the finished cos and sin with "
        ".to(dtype)",
        source="""
def rope_cos_sin(positions, head_dim, theta=10000.0, dtype=torch.float32):
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = positions.to(torch.float64)[..., None] * inv_freq
    return angles.cos().float(), angles.sin().float()
""",
    ),
    Mistake(
        id="rope-duplicated-to-head-dim",
        hint="each table has one column per pair, head_dim // 2 of them. Hugging Face's Llama "
        "port repeats the angles to head_dim (torch.cat((freqs, freqs), dim=-1)) for its "
        "rotate_half; this exercise does not",
        source="""
def rope_cos_sin(positions, head_dim, theta=10000.0, dtype=torch.float32):
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = positions.to(torch.float64)[..., None] * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)
""",
    ),
    Mistake(
        id="rope-positions-relative-to-first",
        hint="the positions are absolute: a token at position 3 is turned by 3 w_i even when it "
        "is the first one in the tensor (behind a cache, or after an offset). Do not subtract "
        "positions[0]; RoPE makes the scores relative by itself",
        source="""
def rope_cos_sin(positions, head_dim, theta=10000.0, dtype=torch.float32):
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = (positions - positions[..., :1]).to(torch.float64)[..., None] * inv_freq
    return angles.cos().to(dtype), angles.sin().to(dtype)
""",
    ),
    Mistake(
        id="rope-exponent-sign",
        hint="the frequencies fall with the pair index: w_i = theta^(-2i/head_dim), with a minus "
        "in the exponent. With +2i/d every pair after pair 0 (columns 1, 2, ... of the tables) "
        "turns faster than 1 radian per position",
        source="""
def rope_cos_sin(positions, head_dim, theta=10000.0, dtype=torch.float32):
    inv_freq = theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = positions.to(torch.float64)[..., None] * inv_freq
    return angles.cos().to(dtype), angles.sin().to(dtype)
""",
    ),
    Mistake(
        id="rope-exponent-doubled",
        hint="the exponent is doubled: torch.arange(0, head_dim, 2) already holds 2i, so "
        "w_i = theta^(-that / head_dim), not theta^(-2 * that / head_dim). Columns (pairs) 1, 2, "
        "... of the tables come out wrong, column 0 right",
        source="""
def rope_cos_sin(positions, head_dim, theta=10000.0, dtype=torch.float32):
    inv_freq = theta ** (-2 * torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = positions.to(torch.float64)[..., None] * inv_freq
    return angles.cos().to(dtype), angles.sin().to(dtype)
""",
    ),
    Mistake(
        id="rope-outer-1d-only",
        hint="torch.outer takes 1-D tensors only, and positions may be (batch, seq): broadcast "
        "instead, positions[..., None] * inv_freq",
        source="""
def rope_cos_sin(positions, head_dim, theta=10000.0, dtype=torch.float32):
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(positions.to(torch.float64), inv_freq)
    return angles.cos().to(dtype), angles.sin().to(dtype)
""",
    ),
    Mistake(
        id="rope-float32-angles-below-float64",
        hint="the angles were formed in float32 (only float64 tables in float64): at position "
        "100000 float32 angles are off by up to 7e-4 radians, far beyond float32's own "
        "tolerance (atol 1e-5). Form the angles in float64 for every dtype "
        "(positions.to(torch.float64)) and round only cos and sin to dtype",
        source="""
def rope_cos_sin(positions, head_dim, theta=10000.0, dtype=torch.float32):
    wd = torch.float64 if dtype == torch.float64 else torch.float32
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=wd) / head_dim)
    angles = positions.to(wd)[..., None] * inv_freq
    return angles.cos().to(dtype), angles.sin().to(dtype)
""",
    ),
]


def cos_sin_visible() -> list[Probe]:
    return [
        Probe(name="positions 0..3, head_dim 4", args=(torch.arange(4), 4)),
        Probe(
            name="positions [3, 4, 5, 9] (an offset and a gap), head_dim 6",
            args=(torch.tensor([3, 4, 5, 9]), 6),
        ),
        Probe(
            name="bfloat16 tables at positions [0, 1, 8192, 8193, 8195], head_dim 8",
            args=(torch.tensor([0, 1, 8192, 8193, 8195]), 8),
            kwargs={"dtype": torch.bfloat16},
        ),
        Probe(
            name="float64 tables at positions [2, 5, 119, 4005], head_dim 8, theta 500000",
            args=(torch.tensor([2, 5, 119, 4005]), 8),
            kwargs={"theta": 500000.0, "dtype": torch.float64},
        ),
        Probe(
            name="per-sequence positions (batch 2, seq 3): [[0, 1, 2], [4, 5, 6]]",
            args=(torch.tensor([[0, 1, 2], [4, 5, 6]]), 4),
        ),
        Probe(
            name="float32 tables at positions [0, 1, 8191, 40000, 100000], head_dim 16 "
            "(float32 angles drift there)",
            args=(torch.tensor([0, 1, 8191, 40000, 100000]), 16),
        ),
    ]


def cos_sin_hidden(g: torch.Generator) -> list[Probe]:
    past = int(torch.randint(1, 100, (1,), generator=g))
    gaps = torch.randint(1, 4, (7,), generator=g).cumsum(0) + past
    return [
        Probe(name="positions 0..7, head_dim 8", args=(torch.arange(8), 8)),
        Probe(
            name=f"positions {past}..{past + 4} (a KV cache), head_dim 16",
            args=(torch.arange(past, past + 5), 16),
        ),
        Probe(name="positions with gaps, head_dim 6", args=(gaps, 6)),
        Probe(
            name="bfloat16 at positions 8190..8200, head_dim 16",
            args=(torch.arange(8190, 8201), 16),
            kwargs={"dtype": torch.bfloat16},
        ),
        Probe(
            name="float64 at positions [5, 2, 105, 102, 4005, 4002], head_dim 32",
            args=(torch.tensor([5, 2, 105, 102, 4005, 4002]), 32),
            kwargs={"dtype": torch.float64},
        ),
        Probe(
            name="theta 500000, float64, positions with gaps",
            args=(gaps, 8),
            kwargs={"theta": 500000.0, "dtype": torch.float64},
        ),
        Probe(
            name="(batch 2, seq 4) positions with different offsets",
            args=(torch.stack((torch.arange(4), torch.arange(10, 14))), 8),
        ),
        Probe(
            name="float16 at positions 0..20, head_dim 4",
            args=(torch.arange(21), 4),
            kwargs={"dtype": torch.float16},
        ),
        Probe(
            name="float32 at positions 60000..60010, head_dim 32",
            args=(torch.arange(60000, 60011), 32),
        ),
    ]


# ---------------------------------------------------------------- rotating pairs

ROTATE_MISTAKES = [
    Mistake(
        id="rotate-half-for-interleaved",
        hint=OTHER_LAYOUT.format(
            got="half-split", want="'interleaved'", want_pairs=INTERLEAVED_PAIRS
        ),
        source="""
def rotate_pairs(x, cos, sin, layout="interleaved"):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)
""",
    ),
    Mistake(
        id="rotate-layout-ignored",
        hint=OTHER_LAYOUT.format(got="interleaved", want="'half'", want_pairs=HALF_PAIRS)
        + " (the layout argument was ignored)",
        source="""
def rotate_pairs(x, cos, sin, layout="interleaved"):
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
""",
    ),
    Mistake(
        id="rotate-half-written-interleaved",
        hint="for layout='half' the rotated pairs go back where they came from: the first "
        "halves' results in dims :d/2 and the second's in d/2: (torch.cat), not interleaved",
        source="""
def rotate_pairs(x, cos, sin, layout="interleaved"):
    if layout == "interleaved":
        a, b = x[..., 0::2], x[..., 1::2]
    else:
        a, b = x.chunk(2, dim=-1)
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
""",
    ),
    Mistake(
        id="rotate-backwards",
        hint="this rotates by -angle: a rotation by t maps (a, b) to (a cos t - b sin t, "
        "a sin t + b cos t)",
        source="""
def rotate_pairs(x, cos, sin, layout="interleaved"):
    if layout == "interleaved":
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack((a * cos + b * sin, -a * sin + b * cos), dim=-1).flatten(-2)
    a, b = x.chunk(2, dim=-1)
    return torch.cat((a * cos + b * sin, -a * sin + b * cos), dim=-1)
""",
    ),
    Mistake(
        id="rotate-cos-sin-swapped",
        hint="cos multiplies the pair's own component and sin the other one: (a cos - b sin, "
        "a sin + b cos); at angle 0 the pair must not move",
        source="""
def rotate_pairs(x, cos, sin, layout="interleaved"):
    if layout == "interleaved":
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack((a * sin - b * cos, a * cos + b * sin), dim=-1).flatten(-2)
    a, b = x.chunk(2, dim=-1)
    return torch.cat((a * sin - b * cos, a * cos + b * sin), dim=-1)
""",
    ),
]


ROTATE_MISTAKES += [
    Mistake(
        id="rotate-complex-bfloat16",
        hint="torch.view_as_complex supports float16, float32 and float64 only, not bfloat16 (the "
        "dtype most models run in). Compute in float32 (x.float(), cos.float(), sin.float()) and "
        "cast the result back with .to(x.dtype), or rotate with real arithmetic: "
        "(a cos - b sin, a sin + b cos)",
        source="""
def rotate_pairs(x, cos, sin, layout="interleaved"):
    if layout == "interleaved":
        pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())
        return torch.view_as_real(pairs * torch.complex(cos, sin)).flatten(-2).to(x.dtype)
    a, b = x.chunk(2, dim=-1)
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)
""",
    ),
    Mistake(
        id="rotate-interleaved-written-as-halves",
        hint="for layout='interleaved' the rotated pairs go back where they came from: "
        "a' to the even dims and b' to the odd ones (torch.stack((a', b'), dim=-1).flatten(-2)), "
        "not torch.cat((a', b'), dim=-1), which writes them back as halves",
        source="""
def rotate_pairs(x, cos, sin, layout="interleaved"):
    if layout == "interleaved":
        a, b = x[..., 0::2], x[..., 1::2]
    else:
        a, b = x.chunk(2, dim=-1)
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)
""",
    ),
    Mistake(
        id="rotate-half-written-swapped",
        hint="for layout='half' the first half takes the rotated first member of each pair, "
        "a cos - b sin, and the second half a sin + b cos: this wrote them the other way round",
        source="""
def rotate_pairs(x, cos, sin, layout="interleaved"):
    if layout == "interleaved":
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
    a, b = x.chunk(2, dim=-1)
    return torch.cat((a * sin + b * cos, a * cos - b * sin), dim=-1)
""",
    ),
]


def rope_x(g: torch.Generator, *shape: int, dtype=torch.float32) -> torch.Tensor:
    return randn(g, *shape, dtype=dtype)


def rotate_visible() -> list[Probe]:
    g = seeded(501)
    offsets = torch.tensor([3, 4, 5, 9])
    return [
        Probe(
            name="interleaved, (4, 4) at positions [3, 4, 5, 9]",
            args=(rope_x(g, 4, 4), *tables(offsets, 4)),
        ),
        Probe(
            name="half-split, (4, 4) at positions [3, 4, 5, 9]",
            args=(rope_x(g, 4, 4), *tables(offsets, 4)),
            kwargs={"layout": "half"},
        ),
        Probe(
            name="interleaved, (batch 2, heads 3, seq 5, head_dim 8) at positions 10..14",
            args=(rope_x(g, 2, 3, 5, 8), *tables(torch.arange(10, 15), 8)),
        ),
        Probe(
            name="half-split, float64, (2, 6, 6) at positions 0..5",
            args=(
                rope_x(g, 2, 6, 6, dtype=torch.float64),
                *tables(torch.arange(6), 6, dtype=torch.float64),
            ),
            kwargs={"layout": "half"},
        ),
        Probe(
            name="interleaved, bfloat16, (2, 4, 8) at positions 8190..8193 (the dtype models "
            "run in)",
            args=(
                rope_x(g, 2, 4, 8, dtype=torch.bfloat16),
                *tables(torch.arange(8190, 8194), 8, dtype=torch.bfloat16),
            ),
        ),
    ]


def rotate_hidden(g: torch.Generator) -> list[Probe]:
    past = int(torch.randint(1, 50, (1,), generator=g))
    pos = torch.arange(past, past + 6)
    gaps = torch.randint(1, 5, (6,), generator=g).cumsum(0)
    probes = []
    for layout in ("interleaved", "half"):
        kw = {"layout": layout}
        probes += [
            Probe(
                name=f"{layout}, (6, 8) at positions {past}..{past + 5}",
                args=(rope_x(g, 6, 8), *tables(pos, 8)),
                kwargs=kw,
            ),
            Probe(
                name=f"{layout}, (2, 4, 6, 16) at positions with gaps",
                args=(rope_x(g, 2, 4, 6, 16), *tables(gaps, 16)),
                kwargs=kw,
            ),
            Probe(
                name=f"{layout}, bfloat16 at positions 8190..8195",
                args=(
                    rope_x(g, 2, 6, 8, dtype=torch.bfloat16),
                    *tables(torch.arange(8190, 8196), 8, dtype=torch.bfloat16),
                ),
                kwargs=kw,
            ),
            Probe(
                name=f"{layout}, float64 at positions [5, 2, 105, 102, 4005, 4002]",
                args=(
                    rope_x(g, 6, 4, dtype=torch.float64),
                    *tables([5, 2, 105, 102, 4005, 4002], 4, dtype=torch.float64),
                ),
                kwargs=kw,
            ),
            Probe(
                name=f"{layout}, gradient (float64) w.r.t. x, cos and sin",
                args=(
                    rope_x(g, 2, 5, 6, dtype=torch.float64),
                    *tables(torch.arange(3, 8), 6, dtype=torch.float64),
                ),
                kwargs=kw,
                mode="grad",
                grad_seed=5,
            ),
        ]
    probes.append(
        Probe(
            name="interleaved, default layout argument, float16",
            args=(
                rope_x(g, 3, 4, dtype=torch.float16),
                *tables([0, 7, 30], 4, dtype=torch.float16),
            ),
        )
    )
    return probes


# ---------------------------------------------------------------- RoPE attention

ATTENTION_MISTAKES = [
    Mistake(
        id="rope-on-v",
        hint="RoPE rotates the queries and keys only: the values are what attention averages, "
        "and rotating them makes each output depend on its value's absolute position",
        source="""
def rope_attention(q, k, v, cos, sin, layout="interleaved"):
    q, k, v = (rotate_pairs(t, cos, sin, layout) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=-1) @ v
""",
    ),
    Mistake(
        id="rope-only-q",
        hint="rotate the keys too: the score depends on n - m only because q is turned by m w_i "
        "and k by n w_i, and the dot product sees the difference",
        source="""
def rope_attention(q, k, v, cos, sin, layout="interleaved"):
    q = rotate_pairs(q, cos, sin, layout)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=-1) @ v
""",
    ),
    Mistake(
        id="rope-k-rotated-backwards",
        hint="queries and keys turn the same way (cos, sin for both): turning the keys by -n w_i "
        "makes the score depend on m + n, an absolute position",
        source="""
def rope_attention(q, k, v, cos, sin, layout="interleaved"):
    q = rotate_pairs(q, cos, sin, layout)
    k = rotate_pairs(k, cos, -sin, layout)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=-1) @ v
""",
    ),
    Mistake(
        id="rope-attention-layout-dropped",
        hint="pass the layout on to rotate_pairs: with layout='half' this rotated the interleaved "
        "pairs, the other layout",
        source="""
def rope_attention(q, k, v, cos, sin, layout="interleaved"):
    q, k = rotate_pairs(q, cos, sin), rotate_pairs(k, cos, sin)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=-1) @ v
""",
    ),
]


ATTENTION_MISTAKES += [
    Mistake(
        id="rope-scale-d-v",
        hint="the scores are scaled by 1/sqrt(head_dim), the width of q and k (q.shape[-1]), "
        "not by the width of the values v.shape[-1]: d_v may differ from head_dim",
        source="""
def rope_attention(q, k, v, cos, sin, layout="interleaved"):
    q = rotate_pairs(q, cos, sin, layout)
    k = rotate_pairs(k, cos, sin, layout)
    scores = q @ k.transpose(-2, -1) / math.sqrt(v.shape[-1])
    return torch.softmax(scores, dim=-1) @ v
""",
    ),
    Mistake(
        id="rope-no-scale",
        hint="scale the scores by 1/sqrt(head_dim) before the softmax (scaled dot-product "
        "attention, lesson 02): without it the softmax is too peaked",
        source="""
def rope_attention(q, k, v, cos, sin, layout="interleaved"):
    q = rotate_pairs(q, cos, sin, layout)
    k = rotate_pairs(k, cos, sin, layout)
    scores = q @ k.transpose(-2, -1)
    return torch.softmax(scores, dim=-1) @ v
""",
    ),
    Mistake(
        id="rope-softmax-over-queries",
        hint="the softmax runs over the keys, the last dimension (dim=-1): each query's weights "
        "sum to 1. dim=-2 normalises over the queries",
        source="""
def rope_attention(q, k, v, cos, sin, layout="interleaved"):
    q = rotate_pairs(q, cos, sin, layout)
    k = rotate_pairs(k, cos, sin, layout)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=-2) @ v
""",
    ),
    Mistake(
        id="rope-causal-mask-added",
        hint="this exercise asks for attention with *no* mask: every query sees every key. A "
        "causal mask belongs to the decoder block (lesson 03), not to rope_attention",
        source="""
def rope_attention(q, k, v, cos, sin, layout="interleaved"):
    q = rotate_pairs(q, cos, sin, layout)
    k = rotate_pairs(k, cos, sin, layout)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    T = scores.shape[-1]
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    scores = scores.masked_fill(future, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
""",
    ),
    Mistake(
        id="rope-q-layout-dropped",
        hint="pass the layout on to *both* rotate_pairs calls: here the queries were rotated in "
        "the default interleaved layout and the keys in the one asked for, so the scores mix "
        "two pairings",
        source="""
def rope_attention(q, k, v, cos, sin, layout="interleaved"):
    q = rotate_pairs(q, cos, sin)
    k = rotate_pairs(k, cos, sin, layout)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=-1) @ v
""",
    ),
]


def qkv(g: torch.Generator, *shape: int, dtype=torch.float32) -> tuple[torch.Tensor, ...]:
    return tuple(randn(g, *shape, dtype=dtype) for _ in range(3))


def attention_visible() -> list[Probe]:
    g = seeded(502)
    return [
        Probe(
            name="interleaved, (2, 5, 8) at positions [2, 3, 4, 10, 11]",
            args=(*qkv(g, 2, 5, 8), *tables([2, 3, 4, 10, 11], 8)),
        ),
        Probe(
            name="half-split, (1, 2, 4, 8) at positions 6..9",
            args=(*qkv(g, 1, 2, 4, 8), *tables(torch.arange(6, 10), 8)),
            kwargs={"layout": "half"},
        ),
        Probe(
            name="float64, interleaved, (3, 6) at positions 100..102",
            args=(
                *qkv(g, 3, 6, dtype=torch.float64),
                *tables([100, 101, 102], 6, dtype=torch.float64),
            ),
        ),
        Probe(
            name="interleaved, q and k (2, 4, 8) but v (2, 4, 3): d_v differs from head_dim",
            args=(*qkv(g, 2, 4, 8)[:2], randn(g, 2, 4, 3), *tables([0, 1, 2, 7], 8)),
        ),
    ]


def attention_hidden(g: torch.Generator) -> list[Probe]:
    gaps = torch.randint(1, 6, (6,), generator=g).cumsum(0)
    probes = []
    for layout in ("interleaved", "half"):
        kw = {"layout": layout}
        probes += [
            Probe(
                name=f"{layout}, (2, 3, 6, 8) at positions with gaps",
                args=(*qkv(g, 2, 3, 6, 8), *tables(gaps, 8)),
                kwargs=kw,
            ),
            Probe(
                name=f"{layout}, float64, (4, 8) at positions 4002..4005",
                args=(
                    *qkv(g, 4, 8, dtype=torch.float64),
                    *tables(torch.arange(4002, 4006), 8, dtype=torch.float64),
                ),
                kwargs=kw,
            ),
            Probe(
                name=f"{layout}, v of width 5, q and k of head_dim 8",
                args=(*qkv(g, 2, 5, 8)[:2], randn(g, 2, 5, 5), *tables(gaps[:5], 8)),
                kwargs=kw,
            ),
            Probe(
                name=f"{layout}, gradient (float64) w.r.t. q, k, v, cos and sin",
                args=(
                    *qkv(g, 2, 4, 6, dtype=torch.float64),
                    *tables([1, 2, 5, 9], 6, dtype=torch.float64),
                ),
                kwargs=kw,
                mode="grad",
                grad_seed=7,
            ),
        ]
    return probes


# ---------------------------------------------------------------- ALiBi slopes

SLOPES_MISTAKES = [
    Mistake(
        id="slopes-power-of-two-rule-only",
        hint="2^(-8(h+1)/n) is the rule for n a power of two only. For 12 heads the paper takes "
        "the 8 slopes of 8 heads, then every other slope of the 16-head sequence "
        "(2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5)",
        source="""
def alibi_slopes(n_heads):
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / n_heads) for h in range(n_heads)])
""",
    ),
    Mistake(
        id="slopes-start-at-one",
        hint="head h (from 0) has slope 2^(-8(h+1)/n): the first slope is 2^(-8/n), not 2^0 = 1, "
        "and the last is 2^-8",
        source="""
def alibi_slopes(n_heads):
    def geometric(n):
        return [2.0 ** (-8.0 * h / n) for h in range(n)]
    m = 2 ** math.floor(math.log2(n_heads))
    return torch.tensor(geometric(m) + geometric(2 * m)[0::2][: n_heads - m])
""",
    ),
    Mistake(
        id="slopes-extra-heads-not-interleaved",
        hint="the extra heads take *every other* slope of the 2m-head sequence ([0::2]), "
        "the ones that fall between the m-head slopes, not its first n - m",
        source="""
def alibi_slopes(n_heads):
    def geometric(n):
        return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]
    m = 2 ** math.floor(math.log2(n_heads))
    return torch.tensor(geometric(m) + geometric(2 * m)[: n_heads - m])
""",
    ),
    Mistake(
        id="slopes-extra-heads-odd-entries",
        hint="the odd entries of the 2m-head sequence ([1::2]) are the m-head slopes again: the "
        "extra heads take the even entries, [0::2]",
        source="""
def alibi_slopes(n_heads):
    def geometric(n):
        return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]
    m = 2 ** math.floor(math.log2(n_heads))
    return torch.tensor(geometric(m) + geometric(2 * m)[1::2][: n_heads - m])
""",
    ),
    Mistake(
        id="slopes-next-power-truncated",
        hint="rounding the head count up to a power of two and cutting (the first 12 of 16 "
        "slopes) drops the gentlest slopes; the paper rounds *down* (m = 8) and interleaves",
        source="""
def alibi_slopes(n_heads):
    m = 2 ** math.ceil(math.log2(n_heads))
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / m) for h in range(m)][:n_heads])
""",
    ),
    Mistake(
        id="slopes-reversed",
        hint="the slopes decrease with the head index: head 0 has the steepest slope 2^(-8/n)",
        source="""
def alibi_slopes(n_heads):
    def geometric(n):
        return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]
    m = 2 ** math.floor(math.log2(n_heads))
    return torch.tensor(geometric(m) + geometric(2 * m)[0::2][: n_heads - m]).flip(0)
""",
    ),
]


SLOPES_MISTAKES += [
    Mistake(
        id="slopes-sorted",
        hint="keep the paper's order, do not sort: the m power-of-two slopes come first (heads "
        "0..m-1), then the interleaved ones (for 12 heads, head 8 has 2^-0.5, steeper than head "
        "7's 2^-8)",
        source="""
def alibi_slopes(n_heads):
    def geometric(n):
        return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]
    m = 2 ** math.floor(math.log2(n_heads))
    slopes = geometric(m) + geometric(2 * m)[0::2][: n_heads - m]
    return torch.tensor(sorted(slopes, reverse=True))
""",
    ),
]


def slopes_visible() -> list[Probe]:
    return [
        Probe(name="8 heads: 2^-1 ... 2^-8", args=(8,)),
        Probe(name="12 heads: the paper's interleaving rule", args=(12,)),
        Probe(name="1 head", args=(1,)),
        Probe(name="6 heads", args=(6,)),
    ]


def slopes_hidden(g: torch.Generator) -> list[Probe]:
    n = int(torch.randint(2, 40, (1,), generator=g))
    return [Probe(name=f"{h} heads", args=(h,)) for h in (1, 2, 3, 4, 5, 12, 16, 20, 32, 96, n)]


# ---------------------------------------------------------------- ALiBi bias

BIAS_MISTAKES = [
    Mistake(
        id="bias-column-indices",
        hint="the distance is between *positions*, not row and column indices: with a KV cache "
        "the queries sit at past, past + 1, ..., and padding or packing leaves gaps. Use "
        "q_positions[:, None] - k_positions[None, :]",
        source="""
def alibi_bias(slopes, q_positions, k_positions):
    i = torch.arange(len(q_positions))
    j = torch.arange(len(k_positions))
    distance = (i[:, None] - j[None, :]).abs()
    return -slopes[:, None, None] * distance.to(slopes.dtype)
""",
    ),
    Mistake(
        id="bias-positive",
        hint="the bias is a penalty, -slope * distance: far keys must score *lower*",
        source="""
def alibi_bias(slopes, q_positions, k_positions):
    distance = (q_positions[:, None] - k_positions[None, :]).abs()
    return slopes[:, None, None] * distance.to(slopes.dtype)
""",
    ),
    Mistake(
        id="bias-signed-distance",
        hint="use the absolute distance |i - j|: with a signed one, keys after the query (an "
        "encoder, or a probe without a causal mask) get a growing *bonus*",
        source="""
def alibi_bias(slopes, q_positions, k_positions):
    distance = q_positions[:, None] - k_positions[None, :]
    return -slopes[:, None, None] * distance.to(slopes.dtype)
""",
    ),
    Mistake(
        id="bias-query-index-only",
        hint="the queries too sit at their positions (past + i behind a cache): use q_positions, "
        "not torch.arange(len(q_positions))",
        source="""
def alibi_bias(slopes, q_positions, k_positions):
    i = torch.arange(len(q_positions))
    distance = (i[:, None] - k_positions[None, :]).abs()
    return -slopes[:, None, None] * distance.to(slopes.dtype)
""",
    ),
]


BIAS_MISTAKES += [
    Mistake(
        id="bias-signed-other-way",
        hint="use the absolute distance |q - k|: -slope * (k - q) gives keys behind the query "
        "(k < q) a growing *bonus* instead of a penalty. ALiBi's penalty is -slope * |q - k| "
        "on both sides",
        source="""
def alibi_bias(slopes, q_positions, k_positions):
    distance = k_positions[None, :] - q_positions[:, None]
    return -slopes[:, None, None] * distance.to(slopes.dtype)
""",
    ),
    Mistake(
        id="bias-keys-behind-only",
        hint="alibi_bias has no mask: penalise keys on both sides by the absolute distance "
        "|q - k|. Clamping the distance at 0 leaves keys after the query unpenalised (an "
        "encoder, or a probe without a causal mask, sees them)",
        source="""
def alibi_bias(slopes, q_positions, k_positions):
    distance = (q_positions[:, None] - k_positions[None, :]).clamp(min=0)
    return -slopes[:, None, None] * distance.to(slopes.dtype)
""",
    ),
    Mistake(
        id="bias-key-index-only",
        hint="the keys too sit at their positions (gaps after padding or packing): use "
        "k_positions, not torch.arange(len(k_positions))",
        source="""
def alibi_bias(slopes, q_positions, k_positions):
    j = torch.arange(len(k_positions))
    distance = (q_positions[:, None] - j[None, :]).abs()
    return -slopes[:, None, None] * distance.to(slopes.dtype)
""",
    ),
    Mistake(
        id="bias-assumes-cache-layout",
        hint="use the positions you are given: assuming the keys are 0..k_len-1 and the queries "
        "the last q_len of them (past = k_len - q_len) is right behind a plain KV cache but not "
        "with gaps (padding, packing)",
        source="""
def alibi_bias(slopes, q_positions, k_positions):
    past = len(k_positions) - len(q_positions)
    i = torch.arange(past, past + len(q_positions))
    j = torch.arange(len(k_positions))
    distance = (i[:, None] - j[None, :]).abs()
    return -slopes[:, None, None] * distance.to(slopes.dtype)
""",
    ),
]


def slopes_for(n: int, dtype=torch.float32) -> torch.Tensor:
    return P.alibi_slopes(n, dtype=dtype)


def bias_visible() -> list[Probe]:
    return [
        Probe(
            name="2 heads, 4 queries and keys at positions 0..3",
            args=(slopes_for(2), torch.arange(4), torch.arange(4)),
        ),
        Probe(
            name="4 heads, 2 new queries at positions 5, 6 after 5 cached keys (keys 0..6)",
            args=(slopes_for(4), torch.tensor([5, 6]), torch.arange(7)),
        ),
        Probe(
            name="1 head, positions with a gap [0, 1, 4, 5] (packed or padded)",
            args=(slopes_for(1), torch.tensor([0, 1, 4, 5]), torch.tensor([0, 1, 4, 5])),
        ),
        Probe(
            name="3 heads, float64 slopes",
            args=(slopes_for(3, torch.float64), torch.arange(3), torch.arange(3)),
        ),
    ]


def bias_hidden(g: torch.Generator) -> list[Probe]:
    past = int(torch.randint(1, 30, (1,), generator=g))
    gaps = torch.randint(1, 4, (5,), generator=g).cumsum(0)
    return [
        Probe(
            name="8 heads, positions 0..5", args=(slopes_for(8), torch.arange(6), torch.arange(6))
        ),
        Probe(
            name=f"12 heads, 3 queries after {past} cached keys",
            args=(slopes_for(12), torch.arange(past, past + 3), torch.arange(past + 3)),
        ),
        Probe(
            name="4 heads, one new token at position 40 against keys 0..40",
            args=(slopes_for(4), torch.tensor([40]), torch.arange(41)),
        ),
        Probe(name="3 heads, positions with gaps", args=(slopes_for(3), gaps, gaps)),
        Probe(
            name="2 heads, float64, queries before some keys (no causal mask)",
            args=(slopes_for(2, torch.float64), torch.tensor([0, 3]), torch.arange(6)),
        ),
        Probe(
            name="gradient (float64) with respect to the slopes, 3 queries after 4 cached keys",
            args=(slopes_for(6, torch.float64), torch.arange(4, 7), torch.arange(7)),
            mode="grad",
            grad_seed=11,
        ),
    ]


# ---------------------------------------------------------------- converting a checkpoint

CONVERT_MISTAKES = [
    Mistake(
        id="convert-whole-matrix",
        hint="permute each head's rows on their own: the rows are n_heads blocks of head_dim, "
        "and the permutation of one head is even dims then odd dims *within* the block "
        "(reshape to (n_heads, head_dim, d_in) first)",
        source="""
def to_half_split(W, n_heads):
    d_out = W.shape[0]
    perm = torch.cat((torch.arange(0, d_out, 2), torch.arange(1, d_out, 2)))
    return W[perm]
""",
    ),
    Mistake(
        id="convert-columns",
        hint="permute the *rows* (the output dims, which are q's and k's dims); the columns are "
        "the model's input features and stay where they are",
        source="""
def to_half_split(W, n_heads):
    d_in = W.shape[1]
    perm = torch.cat((torch.arange(0, d_in, 2), torch.arange(1, d_in, 2)))
    return W[:, perm]
""",
    ),
    Mistake(
        id="convert-inverse-permutation",
        hint="this is the inverse permutation (half-split to interleaved): row i of the new head "
        "is old row perm[i] with perm = [0, 2, 4, ..., 1, 3, 5, ...], i.e. W[perm], not "
        "W[perm.argsort()]",
        source="""
def to_half_split(W, n_heads):
    d_out, d_in = W.shape
    head_dim = d_out // n_heads
    perm = torch.cat((torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)))
    return W.reshape(n_heads, head_dim, d_in)[:, perm.argsort(), :].reshape(d_out, d_in)
""",
    ),
    Mistake(
        id="convert-odd-first",
        hint="the first half of a half-split head holds the *first* member of each pair, the "
        "even dims 0, 2, 4, ...; the odd dims go to the second half",
        source="""
def to_half_split(W, n_heads):
    d_out, d_in = W.shape
    head_dim = d_out // n_heads
    perm = torch.cat((torch.arange(1, head_dim, 2), torch.arange(0, head_dim, 2)))
    return W.reshape(n_heads, head_dim, d_in)[:, perm, :].reshape(d_out, d_in)
""",
    ),
]


CONVERT_MISTAKES += [
    Mistake(
        id="convert-heads-split-wrong-way",
        hint="the rows are n_heads blocks of head_dim, head after head: reshape(n_heads, "
        "head_dim, d_in), not reshape(head_dim, n_heads, d_in), which deals rows out to heads "
        "like cards",
        source="""
def to_half_split(W, n_heads):
    d_out, d_in = W.shape
    head_dim = d_out // n_heads
    perm = torch.cat((torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)))
    return W.reshape(head_dim, n_heads, d_in)[perm].reshape(d_out, d_in)
""",
    ),
]


def convert_visible() -> list[Probe]:
    g = seeded(503)
    return [
        Probe(
            name="rows 0..7 as a column: 1 head of head_dim 8",
            args=(torch.arange(8.0)[:, None], 1),
        ),
        Probe(
            name="rows 0..15 as a column: 2 heads of head_dim 8",
            args=(torch.arange(16.0)[:, None], 2),
        ),
        Probe(name="W (24, 12), 2 heads of head_dim 12", args=(randn(g, 24, 12), 2)),
    ]


def convert_hidden(g: torch.Generator) -> list[Probe]:
    return [
        Probe(name="W (32, 16), 4 heads of head_dim 8", args=(randn(g, 32, 16), 4)),
        Probe(name="W (48, 20), 3 heads of head_dim 16", args=(randn(g, 48, 20), 3)),
        Probe(name="W (16, 16), 1 head of head_dim 16", args=(randn(g, 16, 16), 1)),
        Probe(
            name="W (12, 7), 1 head of head_dim 12, float64",
            args=(randn(g, 12, 7, dtype=torch.float64), 1),
        ),
        Probe(name="rows 0..23, 2 heads of head_dim 12", args=(torch.arange(24.0)[:, None], 2)),
        Probe(
            name="gradient (float64) with respect to W (32, 8), 2 heads",
            args=(randn(g, 32, 8, dtype=torch.float64), 2),
            mode="grad",
            grad_seed=13,
        ),
    ]


# ---------------------------------------------------------------- the lesson

LESSON = Lesson(
    folder="05-positions",
    notebook="positions",
    context_cells=("setup",),
    exercises=[
        Exercise(
            id="sinusoidal-table",
            title="the sinusoidal table, interleaved",
            function="sinusoidal_table",
            signature="sinusoidal_table(n_positions: int, d_model: int, dtype=torch.float32) -> "
            "(n_positions, d_model) in dtype",
            reference=P.sinusoidal_table,
            answer_cell="sinusoidal_table",
            test_cell="test-sinusoidal-table",
            points=2,
            visible=sinusoidal_visible,
            hidden=sinusoidal_hidden,
            mistakes=SINUSOIDAL_MISTAKES,
        ),
        Exercise(
            id="shift-matrix",
            title="the shift map M(delta)",
            function="shift_matrix",
            signature="shift_matrix(delta: int, d_model: int, dtype=torch.float32) -> "
            "(d_model, d_model) in dtype",
            reference=P.sinusoidal_shift_matrix,
            answer_cell="shift_matrix",
            test_cell="test-shift-matrix",
            points=2,
            visible=shift_visible,
            hidden=shift_hidden,
            mistakes=SHIFT_MISTAKES,
        ),
        Exercise(
            id="rope-cos-sin",
            title="RoPE's tables from explicit positions",
            function="rope_cos_sin",
            signature="rope_cos_sin(positions: int64 (..., seq), head_dim: int, theta=10000.0, "
            "dtype=torch.float32) -> (cos, sin), each (..., seq, head_dim // 2) in dtype",
            reference=P.rope_cos_sin,
            answer_cell="rope_cos_sin",
            test_cell="test-rope-cos-sin",
            points=2,
            visible=cos_sin_visible,
            hidden=cos_sin_hidden,
            mistakes=COS_SIN_MISTAKES,
        ),
        Exercise(
            id="rotate-pairs",
            title="rotating pairs, interleaved and half-split",
            function="rotate_pairs",
            signature="rotate_pairs(x: (..., seq, d), cos: (seq, d/2), sin: (seq, d/2), "
            "layout='interleaved' | 'half') -> x's shape and dtype",
            reference=P.rotate_pairs,
            answer_cell="rotate_pairs",
            test_cell="test-rotate-pairs",
            points=3,
            visible=rotate_visible,
            hidden=rotate_hidden,
            mistakes=ROTATE_MISTAKES,
        ),
        Exercise(
            id="rope-attention",
            title="attention with RoPE on queries and keys",
            function="rope_attention",
            signature="rope_attention(q, k: (..., seq, d), v: (..., seq, d_v), cos, sin: "
            "(seq, d/2), layout='interleaved') -> (..., seq, d_v)",
            reference=P.rope_attention,
            answer_cell="rope_attention",
            test_cell="test-rope-attention",
            points=2,
            visible=attention_visible,
            hidden=attention_hidden,
            mistakes=ATTENTION_MISTAKES,
            uses=("rotate_pairs",),
        ),
        Exercise(
            id="alibi-slopes",
            title="ALiBi slopes for any number of heads",
            function="alibi_slopes",
            signature="alibi_slopes(n_heads: int) -> float32 (n_heads,)",
            reference=P.alibi_slopes,
            answer_cell="alibi_slopes",
            test_cell="test-alibi-slopes",
            points=2,
            visible=slopes_visible,
            hidden=slopes_hidden,
            mistakes=SLOPES_MISTAKES,
        ),
        Exercise(
            id="alibi-bias",
            title="the ALiBi bias from positions",
            function="alibi_bias",
            signature="alibi_bias(slopes: (n_heads,), q_positions: int64 (q_len,), k_positions: "
            "int64 (k_len,)) -> (n_heads, q_len, k_len) in slopes' dtype",
            reference=P.alibi_bias_from_slopes,
            answer_cell="alibi_bias",
            test_cell="test-alibi-bias",
            points=2,
            visible=bias_visible,
            hidden=bias_hidden,
            mistakes=BIAS_MISTAKES,
        ),
        Exercise(
            id="to-half-split",
            title="loading a checkpoint trained in the other layout",
            function="to_half_split",
            signature="to_half_split(W: (n_heads * head_dim, d_in), n_heads: int) -> W's shape "
            "and dtype, each head's rows permuted",
            reference=P.rope_weights_to_half_split,
            answer_cell="to_half_split",
            test_cell="test-to-half-split",
            points=2,
            visible=convert_visible,
            hidden=convert_hidden,
            mistakes=CONVERT_MISTAKES,
        ),
    ],
)
