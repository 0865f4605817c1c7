"""Position information: sinusoidal tables, rotary embeddings (RoPE) and ALiBi biases.

Frequencies. Dimension pair `i` (of `d/2` pairs) turns at angular frequency
`w_i = theta^(-2i/d)` (theta = 10000): pair 0 once per position, the last pair very slowly.

Sinusoidal (Vaswani et al. 2017, section 3.5), interleaved: `PE[p, 2i] = sin(p w_i)`,
`PE[p, 2i+1] = cos(p w_i)`. Shifting by `k` positions is a fixed linear map, a rotation of each
pair by the angle `k w_i`:

    PE[p + k] = PE[p] @ M_k^T,    M_k = blockdiag([[cos k w_i, sin k w_i], [-sin k w_i, cos k w_i]])

(`M_k` acts like a linear layer's weight, `y = x @ W.T`). `M_k` does not depend on `p`, which is
why attention can learn relative offsets from absolute sinusoidal encodings.

RoPE (Su et al. 2021, RoFormer) rotates each pair of a query or key at position `p` by `p w_i`.
The default *interleaved* layout pairs dims `(2i, 2i + 1)` (RoFormer, Meta's Llama code); the
*half-split* layout, `"half"`, pairs `(i, i + d/2)` (GPT-NeoX, Hugging Face Llama). Half-split is
interleaved applied to permuted dims: `rope(x[..., perm], "half") == rope(x, "interleaved")[...,
perm]` with `perm = interleaved_to_half_split(d)`. Since rotations compose, `rope(q, m) .
rope(k, n)` depends only on the distance `n - m`.

ALiBi (Press et al. 2022) adds `-slope_h * |i - j|` to head `h`'s scores, slopes a geometric
sequence per head.

Precision: every angle is formed in float64 (float32 on Apple's MPS, which has no float64) and
only the finished `cos`/`sin` are rounded to the requested dtype. A float32 angle at position
`p` is already off by about `p * 2^-24` radians before any rounding of the result.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from solutions.kernels.attention import scaled_dot_product_attention
from solutions.kernels.module import Module

RopeLayout = Literal["interleaved", "half"]
ROPE_LAYOUTS = ("interleaved", "half")


def _angle_dtype(device) -> torch.dtype:
    """float64 for angles, except on MPS, which has no float64."""
    return torch.float32 if torch.device(device or "cpu").type == "mps" else torch.float64


def check_rope_layout(layout: str) -> None:
    """Raise ValueError unless `layout` is `"interleaved"` or `"half"`."""
    if layout not in ROPE_LAYOUTS:
        raise ValueError(f"rope_layout must be 'interleaved' or 'half', got {layout!r}")


def inverse_frequencies(
    dim: int, theta: float = 10000.0, *, device=None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """`(dim // 2,)` angular frequencies `w_i = theta^(-2i/dim)` in `dtype`.

    Raises ValueError for an odd `dim` (dimensions are rotated in pairs).
    """
    if dim % 2:
        raise ValueError(f"the dimension must be even, got {dim}")
    exponent = torch.arange(0, dim, 2, device=device, dtype=dtype) / dim
    return theta**-exponent


def sinusoidal_table(
    n_positions: int,
    d_model: int,
    theta: float = 10000.0,
    *,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """`(n_positions, d_model)` table with `sin(p w_i)` at dim `2i` and `cos(p w_i)` at `2i + 1`.

    Vaswani et al. 2017, section 3.5 (interleaved rather than concatenated sin/cos halves).
    Angles in float64, the result in `dtype`. Raises ValueError for an odd `d_model`.
    """
    angle_dtype = _angle_dtype(device)
    pos = torch.arange(n_positions, device=device, dtype=angle_dtype)
    inv_freq = inverse_frequencies(d_model, theta, device=device, dtype=angle_dtype)
    angles = pos[:, None] * inv_freq[None, :]
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2).to(dtype)


def sinusoidal_shift_matrix(
    k: int, d_model: int, theta: float = 10000.0, *, device=None, dtype=torch.float32
) -> torch.Tensor:
    """The `(d_model, d_model)` matrix `M_k` with `PE[p + k] = PE[p] @ M_k^T` for every `p`.

    From sin(a + b) = sin a cos b + cos a sin b and cos(a + b) = cos a cos b - sin a sin b,
    each (sin, cos) pair is multiplied by `[[cos k w, sin k w], [-sin k w, cos k w]]`.
    `k` may be negative (a shift back). Computed in float64, returned in `dtype`.
    """
    angle = k * inverse_frequencies(d_model, theta, device=device, dtype=torch.float64)
    c, s = angle.cos(), angle.sin()
    blocks = torch.stack((torch.stack((c, s), -1), torch.stack((-s, c), -1)), -2)
    return torch.block_diag(*blocks).to(dtype)


def rope_cos_sin(
    positions: torch.Tensor,
    head_dim: int,
    theta: float = 10000.0,
    *,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE's tables: `cos` and `sin` of `positions[..., None] * w_i`, each
    `(*positions.shape, head_dim / 2)` in `dtype`, on `positions`' device.

    `positions` holds absolute integer positions, e.g. `arange(seq)`, `past + arange(T)` behind a
    KV cache, or `(batch, seq)` for per-sequence offsets. The angles are formed in float64
    (see the module docstring), so a float64 model gets tables good to ~1e-16, not float32 ones.
    This `(cos, sin)` pair is what every attention entry point takes as `rope=`.
    Raises ValueError for an odd `head_dim`.
    """
    angle_dtype = _angle_dtype(positions.device)
    inv_freq = inverse_frequencies(head_dim, theta, device=positions.device, dtype=angle_dtype)
    angles = positions.to(angle_dtype)[..., None] * inv_freq
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_pairs(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: RopeLayout = "interleaved"
) -> torch.Tensor:
    """Rotate each dimension pair `(a, b)` of `x` `(..., head_dim)` to `(a cos - b sin,
    a sin + b cos)`: the plain formula, the reference the faster paths are tested against.

    Pairs are `(2i, 2i + 1)` for `layout="interleaved"` and `(i, i + d/2)` for `"half"`;
    `cos` and `sin` hold one angle per pair and broadcast against `x[..., : d/2]`.
    Raises ValueError for an unknown layout.
    """
    if layout == "interleaved":
        pairs = x.unflatten(-1, (-1, 2))
        a, b = pairs[..., 0], pairs[..., 1]
        return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
    if layout == "half":
        a, b = x.chunk(2, dim=-1)
        return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)
    check_rope_layout(layout)
    raise AssertionError("unreachable")


# The complex dtype whose real and imaginary parts are a real dtype (PyTorch has no others).
_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def _turn_pairs(x: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
    """Interleaved pairs of `x` `(..., d)` as complex numbers, times `cis` `(..., d/2)`."""
    pairs = x.unflatten(-1, (-1, 2))
    try:
        z = torch.view_as_complex(pairs)
    except RuntimeError:  # a view whose strides or offset do not fit complex numbers
        z = torch.view_as_complex(pairs.contiguous())
    return torch.view_as_real(z * cis).flatten(-2)


def _rotate_pairs_fast(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: RopeLayout
) -> torch.Tensor:
    """`rotate_pairs` in fewer kernels where possible: an interleaved pair `(a, b)` is the complex
    number `a + ib`, and turning it by an angle is one multiplication by `cos + i sin`.

    PyTorch has complex numbers for float32 and float64 only; other dtypes, and the half-split
    layout, take the general path.
    """
    if layout != "interleaved" or x.dtype not in _COMPLEX:
        return rotate_pairs(x, cos, sin, layout)
    return _turn_pairs(x, torch.complex(cos, sin))


class _Rotate(torch.autograd.Function):
    """`rotate_pairs` with its backward written by hand: a rotation's gradient is the inverse
    rotation of the incoming gradient. Autograd would instead keep `x` alive and run a dozen
    small kernels; this keeps only the angle tables."""

    @staticmethod
    def forward(ctx, x, cos, sin, layout):
        ctx.save_for_backward(cos, sin)
        ctx.layout = layout
        return _rotate_pairs_fast(x, cos, sin, layout)

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        return _rotate_pairs_fast(grad, cos, -sin, ctx.layout), None, None, None


def apply_rope(
    x: torch.Tensor,
    positions: torch.Tensor | None = None,
    *,
    theta: float = 10000.0,
    layout: RopeLayout = "interleaved",
    rope: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Rotate each dimension pair of `x` `(..., seq, head_dim)` by `position * w_i` (RoFormer).

    `positions` is `(seq,)` (default `arange(seq)`), or `(batch, seq)` for `x` of shape
    `(batch, heads, seq, head_dim)`. Or pass `rope=(cos, sin)` from `rope_cos_sin` to skip the
    trigonometry (then `positions` and `theta` are not used). Returns a tensor like `x`;
    gradients flow to `x` only, not to the tables. Raises ValueError for an unknown layout.
    """
    check_rope_layout(layout)
    if rope is None:
        if positions is None:
            positions = torch.arange(x.shape[-2], device=x.device)
        rope = rope_cos_sin(positions, x.shape[-1], theta, dtype=x.dtype)
    cos, sin = rope
    if cos.dim() == 3 and x.dim() == 4:  # (batch, seq, d/2) against (batch, heads, seq, d)
        cos, sin = cos[:, None], sin[:, None]
    return rotate(x, cos, sin, layout)


def rotate(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: RopeLayout = "interleaved"
) -> torch.Tensor:
    """`rotate_pairs` in `x`'s dtype, through the hand-written backward only when a gradient
    is wanted.

    Under autocast `x` may be bfloat16 while the tables are float32. Without a gradient
    (sampling, evaluation) the autograd.Function would be pure overhead, and generating with a
    KV cache calls this once per layer per token.
    """
    if cos.dtype != x.dtype:
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    if torch.is_grad_enabled() and x.requires_grad:
        return _Rotate.apply(x, cos, sin, layout)
    return _rotate_pairs_fast(x, cos, sin, layout)


def rotate_complex(x: torch.Tensor, cis: torch.Tensor, layout: RopeLayout = "interleaved"):
    """`rotate(x, cis.real, cis.imag, layout)`: the tables given as one complex tensor `cis =
    cos + i sin` `(..., head_dim / 2)`, like Meta's Llama code (`freqs_cis`). Same shape and
    dtype as `x`, and the same numbers.

    Why. `rotate` builds `cos + i sin` from the two tables at every call; a model that forms
    `cis` once per forward pass saves that kernel in every layer (it shows in a cached decoding
    step, one token through tiny tensors). The interleaved layout in `cis`'s own precision, with
    no gradient wanted, is then a single complex multiplication; everything else goes through
    `rotate` with `cis.real` and `cis.imag` (views: nothing is rounded).
    """
    fast = layout == "interleaved" and _COMPLEX.get(x.dtype) == cis.dtype
    if fast and not (torch.is_grad_enabled() and x.requires_grad):
        return _turn_pairs(x, cis)
    return rotate(x, cis.real, cis.imag, layout)


def interleaved_to_half_split(head_dim: int) -> torch.Tensor:
    """Permutation `perm` `(head_dim,)` int64 with `x_half = x[..., perm]`: even dims, then odd.

    Pair `(2i, 2i + 1)` of the interleaved layout lands on `(i, i + d/2)` of the half-split one.
    Converting a checkpoint between layouts permutes each head's rows of `W_q` and `W_k` this way.
    """
    return torch.cat((torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)))


def rope_weights_to_half_split(W: torch.Tensor, n_heads: int) -> torch.Tensor:
    """A query or key projection `W` `(n_heads * head_dim, d_in)` trained with interleaved RoPE,
    with each head's rows permuted by `interleaved_to_half_split(head_dim)`, so that half-split
    RoPE computes the same attention scores (what converting Meta's Llama checkpoints to
    Hugging Face's layout does to `W_q` and `W_k`; `W_v` and `W_o` are unchanged).

    Raises ValueError when the rows do not split into `n_heads` heads of even width.
    """
    d_out, d_in = W.shape
    if n_heads < 1 or d_out % n_heads or (d_out // n_heads) % 2:
        raise ValueError(f"{d_out} rows do not split into {n_heads} heads of even width")
    head_dim = d_out // n_heads
    perm = interleaved_to_half_split(head_dim).to(W.device)
    return W.reshape(n_heads, head_dim, d_in)[:, perm, :].reshape(d_out, d_in)


def rope_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    layout: RopeLayout = "interleaved",
) -> torch.Tensor:
    """`softmax(rot(q) rot(k)^T / sqrt(head_dim)) v`: attention whose queries and keys (never
    the values) are rotated by `rotate_pairs` with the tables `(cos, sin)` `(seq, head_dim/2)`.

    q, k: `(..., seq, head_dim)`; v: `(..., seq, d_v)`. Returns `(..., seq, d_v)` in q's dtype.
    No mask: the lesson's probes attend both ways, so every pair of positions counts.
    """
    check_rope_layout(layout)
    q, k = rotate_pairs(q, cos, sin, layout), rotate_pairs(k, cos, sin, layout)
    return scaled_dot_product_attention(q, k, v)


def alibi_slopes(n_heads: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """ALiBi head slopes `(n_heads,)` (Press et al. 2022, section 3 and the paper's code,
    `get_slopes` in github.com/ofirpress/attention_with_linear_biases).

    For `n` a power of two the slopes are `2^(-8/n), 2^(-16/n), ..., 2^(-8)`. Otherwise take the
    `m` slopes of the largest power of two `m < n`, then every other slope of the `2m`-head
    sequence for the remaining `n - m` heads (12 heads: the 8-head slopes, then `2^-0.5,
    2^-1.5, 2^-2.5, 2^-3.5`). Raises ValueError for `n_heads < 1`.
    """

    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]

    if n_heads < 1:
        raise ValueError(f"n_heads must be positive, got {n_heads}")
    m = 2 ** math.floor(math.log2(n_heads))
    slopes = power_of_two(m) + power_of_two(2 * m)[0::2][: n_heads - m]
    return torch.tensor(slopes, dtype=dtype)


def alibi_bias_from_positions(
    n_heads: int,
    q_positions: torch.Tensor,
    k_positions: torch.Tensor,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """`(n_heads, q_len, k_len)` additive bias `-slope_h * |q_positions[i] - k_positions[j]|`.

    Positions are absolute integer positions `(q_len,)` and `(k_len,)`. With a causal mask only
    `j <= i` is ever used, where this is the paper's `slope_h * (j - i)`. Give it to attention
    as `attn_bias=` (it broadcasts over the batch).
    """
    slopes = alibi_slopes(n_heads, dtype=torch.float64).to(q_positions.device)
    return alibi_bias_from_slopes(slopes, q_positions, k_positions).to(dtype)


def alibi_bias_from_slopes(
    slopes: torch.Tensor, q_positions: torch.Tensor, k_positions: torch.Tensor
) -> torch.Tensor:
    """`(n_heads, q_len, k_len)` bias `-slopes[h] * |q_positions[i] - k_positions[j]|` in
    `slopes`' dtype, from slopes `(n_heads,)` and integer positions `(q_len,)`, `(k_len,)`."""
    distance = (q_positions[:, None] - k_positions[None, :]).abs()
    return -slopes[:, None, None] * distance.to(slopes.dtype)


def alibi_bias(
    n_heads: int, seq_len: int, past: int = 0, *, device=None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """`alibi_bias_from_positions` for `seq_len` queries at `past .. past + seq_len - 1` and keys
    at `0 .. past + seq_len - 1` (as in `masks.causal_mask`): `(n_heads, seq_len, past +
    seq_len)`."""
    q_pos = torch.arange(past, past + seq_len, device=device)
    k_pos = torch.arange(past + seq_len, device=device)
    return alibi_bias_from_positions(n_heads, q_pos, k_pos, dtype=dtype)


class SinusoidalPositionalEncoding(Module):
    """Adds `sinusoidal_table` rows to `(batch, seq, d_model)` inputs (a buffer, no weights)."""

    def __init__(self, d_model: int, max_len: int, theta: float = 10000.0) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_len, d_model, theta), persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        if positions is None:
            positions = torch.arange(x.shape[-2], device=x.device)
        return x + self.table[positions].to(x.dtype)


class RotaryEmbedding(Module):
    """`apply_rope` with a fixed head dimension, theta and layout (no weights)."""

    def __init__(
        self, head_dim: int, theta: float = 10000.0, layout: RopeLayout = "interleaved"
    ) -> None:
        super().__init__()
        check_rope_layout(layout)
        self.head_dim, self.theta, self.layout = head_dim, theta, layout

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        return apply_rope(x, positions, theta=self.theta, layout=self.layout)
