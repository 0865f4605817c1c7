"""Lesson 03 (causal masking), declared once: exercises, references, probes, points, known mistakes.

Masks are judged exactly (dtype bool, shape, every entry). The masked softmax and attention are
judged against `solutions/kernels/attention.py`, whose rows that may attend to nothing are all
zeros in every dtype, with zero (not NaN) gradients with respect to every input. The leak test
runs on layers from `course/probe_layers.py`, some causal and some leaking on purpose.
"""

from __future__ import annotations

import torch

from course.calling import FnRef
from course.lesson import Exercise, Lesson, Mistake, Probe, randn, seeded
from solutions.kernels import attention as A
from solutions.kernels import causality as C
from solutions.kernels import masks as M

# The ATen operators behind F.scaled_dot_product_attention (every backend), whatever Python name
# reached them: it computes the masked softmax and the attention this lesson asks for.
SDPA = "F.scaled_dot_product_attention"
SDPA_OPS = {
    "scaled_dot_product_attention": SDPA,
    "_scaled_dot_product_attention_math": SDPA,
    "_scaled_dot_product_attention_math_for_mps": SDPA,
    "_scaled_dot_product_flash_attention": SDPA,
    "_scaled_dot_product_flash_attention_for_cpu": SDPA,
    "_scaled_dot_product_efficient_attention": SDPA,
    "_scaled_dot_product_cudnn_attention": SDPA,
    "_scaled_dot_product_fused_attention_overrideable": SDPA,
    "_safe_softmax": "torch._safe_softmax (the masked softmax inside " + SDPA + ")",
}
SOFTMAX_HINT = "Write it with masked_fill and torch.softmax (both allowed)."
ATTENTION_HINT = "Write it as matmul -> scale -> your masked_softmax -> matmul."

CAUSAL_LAYERS = ("causal_self_attention", "causal_running_mean", "position_wise_mlp")
LEAKY_LAYERS = (
    "bidirectional_self_attention",
    "peeking_self_attention",
    "sequence_normalised_attention",
    "last_token_broadcast",
    "peek_two_ahead",
    "odd_sequences_leak",
)

# causal_mask is written by comparing positions; the tril version is exercise 1.
TRIL_OPS = {"tril": "torch.tril", "tril_": "torch.tril_", "triu": "torch.triu", "triu_": "torch.triu_"}
CAUSAL_HINT = (
    "Compare positions instead: torch.arange for the query and key positions, [:, None] / "
    "[None, :] and <=."
)


def layer(name: str) -> FnRef:
    return FnRef(f"course.probe_layers:{name}")


def random_mask(g: torch.Generator, *shape: int, p: float = 0.6) -> torch.Tensor:
    """A random boolean mask in which every query (row) may see at least key 0."""
    mask = torch.rand(*shape, generator=g) < p
    mask[..., 0] = True
    return mask


def with_empty_rows(mask: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """`mask` with the given query rows (dimension -2) allowed nothing."""
    mask = mask.clone()
    mask[..., rows, :] = False
    return mask


def causal_left_padded(lengths: list[int], seq_len: int) -> torch.Tensor:
    """Causal and left padding, (batch, 1, seq, seq): padded queries may attend to nothing."""
    return M.combine_masks(M.causal_mask(seq_len), M.padding_mask(lengths, seq_len, side="left"))


def causal_right_padded(lengths: list[int], seq_len: int) -> torch.Tensor:
    """Causal and right padding, (batch, 1, seq, seq): every query sees key 0 (if length > 0)."""
    return M.combine_masks(M.causal_mask(seq_len), M.padding_mask(lengths, seq_len))


# ---------------------------------------------------------------- the causal mask, two ways

DTYPE_HINT = (
    "the dtype is wrong: masks are boolean (True = may attend), and {what} makes {dtype} 1/0 "
    "numbers; {fix}"
)

TRIL_MISTAKES = [
    Mistake(
        id="tril-diagonal-excluded",
        hint="the diagonal belongs to the mask (a token may attend to itself): keep torch.tril's "
        "default diagonal=0, not diagonal=-1",
        source="""
def causal_mask_tril(seq_len):
    return torch.tril(torch.ones(seq_len, seq_len, dtype=torch.bool), diagonal=-1)
""",
    ),
    Mistake(
        id="tril-diagonal-one-too-high",
        hint="diagonal=1 lets every token see the next one: the future leaks one step. Keep "
        "torch.tril's default diagonal=0",
        source="""
def causal_mask_tril(seq_len):
    return torch.tril(torch.ones(seq_len, seq_len, dtype=torch.bool), diagonal=1)
""",
    ),
    Mistake(
        id="tril-upper-triangle",
        hint="torch.triu keeps the keys at and *after* each query (the future): the causal mask "
        "is the lower triangle, torch.tril",
        source="""
def causal_mask_tril(seq_len):
    return torch.triu(torch.ones(seq_len, seq_len, dtype=torch.bool))
""",
    ),
    Mistake(
        id="tril-float-mask",
        hint=DTYPE_HINT.format(
            what="torch.ones(seq_len, seq_len)",
            dtype="float32",
            fix="pass dtype=torch.bool to torch.ones",
        ),
        source="""
def causal_mask_tril(seq_len):
    return torch.tril(torch.ones(seq_len, seq_len))
""",
    ),
    Mistake(
        id="tril-uint8-mask",
        hint=DTYPE_HINT.format(
            what="dtype=torch.uint8 (the old PyTorch mask type, still in GPT-2's port)",
            dtype="uint8",
            fix="use dtype=torch.bool",
        ),
        source="""
def causal_mask_tril(seq_len):
    return torch.tril(torch.ones(seq_len, seq_len, dtype=torch.uint8))
""",
    ),
]


def causal_tril_visible() -> list[Probe]:
    return [
        Probe(name="seq_len = 3", args=(3,)),
        Probe(name="seq_len = 6", args=(6,)),
        Probe(name="seq_len = 1: a single token sees itself", args=(1,)),
    ]


def causal_tril_hidden(g: torch.Generator) -> list[Probe]:
    n = int(torch.randint(3, 13, (1,), generator=g))
    return [Probe(name=f"seq_len = {t}", args=(t,)) for t in (1, 2, 5, 16, n)]


CAUSAL_MISTAKES = [
    Mistake(
        id="causal-off-by-one-diagonal",
        hint="key position <= query position: the diagonal is allowed (a token sees itself), "
        "and < hides it",
        source="""
def causal_mask(seq_len, past=0):
    q_pos = torch.arange(past, past + seq_len)
    k_pos = torch.arange(past + seq_len)
    return k_pos[None, :] < q_pos[:, None]
""",
    ),
    Mistake(
        id="causal-comparison-reversed",
        hint="compare key <= query (keys at or before the query); key >= query selects the future",
        source="""
def causal_mask(seq_len, past=0):
    q_pos = torch.arange(past, past + seq_len)
    k_pos = torch.arange(past + seq_len)
    return k_pos[None, :] >= q_pos[:, None]
""",
    ),
    Mistake(
        id="causal-aligned-top-left",
        hint="the new queries sit at absolute positions past .. past + seq_len - 1, not "
        "0 .. seq_len - 1: the mask is aligned to the bottom-right corner (is_causal and a tril "
        "of the (seq_len, past + seq_len) matrix align it top-left)",
        source="""
def causal_mask(seq_len, past=0):
    q_pos = torch.arange(seq_len)
    k_pos = torch.arange(past + seq_len)
    return k_pos[None, :] <= q_pos[:, None]
""",
    ),
    Mistake(
        id="causal-ignores-past",
        hint="with a KV cache the keys are all past + seq_len tokens (the cache and the new "
        "ones): the mask has shape (seq_len, past + seq_len), and query i sits at position "
        "past + i",
        source="""
def causal_mask(seq_len, past=0):
    pos = torch.arange(seq_len)
    return pos[None, :] <= pos[:, None]
""",
    ),
    Mistake(
        id="causal-uses-tril",
        hint="no tril in this exercise (exercise 1 was the tril version): compare positions, "
        "k_pos[None, :] <= q_pos[:, None] with q_pos = torch.arange(past, past + seq_len) and "
        "k_pos = torch.arange(past + seq_len)",
        source="""
def causal_mask(seq_len, past=0):
    return torch.ones(seq_len, past + seq_len, dtype=torch.bool).tril(diagonal=past)
""",
    ),
    Mistake(
        id="causal-float-mask",
        hint=DTYPE_HINT.format(
            what=".float()", dtype="float32", fix="the comparison <= already gives booleans"
        ),
        source="""
def causal_mask(seq_len, past=0):
    q_pos = torch.arange(past, past + seq_len)
    k_pos = torch.arange(past + seq_len)
    return (k_pos[None, :] <= q_pos[:, None]).float()
""",
    ),
]


def causal_visible() -> list[Probe]:
    return [
        Probe(name="seq_len = 4, past = 0: the diagonal included", args=(4,)),
        Probe(
            name="3 new queries after 5 cached tokens: shape (3, 8)", args=(3,), kwargs={"past": 5}
        ),
        Probe(
            name="one new token after 4 cached ones sees them all", args=(1,), kwargs={"past": 4}
        ),
        Probe(name="2 new queries after 7 cached tokens", args=(2,), kwargs={"past": 7}),
    ]


def causal_hidden(g: torch.Generator) -> list[Probe]:
    t, p = (int(v) for v in torch.randint(1, 9, (2,), generator=g))
    cases = [(4, 0), (7, 0), (1, 5), (3, 5), (4, 2), (6, 10), (t, p)]
    return [
        Probe(
            name=f"seq_len = {t}, past = {p}: shape ({t}, {p + t})",
            args=(t,),
            kwargs={"past": p} if p else {},
        )
        for t, p in cases
    ]


# ---------------------------------------------------------------- sliding window

WINDOW_MISTAKES = [
    Mistake(
        id="window-one-too-wide",
        hint="a window of `window` keys is the query itself and the window - 1 keys before it: "
        "distance < window, not <= window",
        source="""
def sliding_window_mask(seq_len, window, past=0):
    q_pos = torch.arange(past, past + seq_len)
    k_pos = torch.arange(past + seq_len)
    distance = q_pos[:, None] - k_pos[None, :]
    return (distance >= 0) & (distance <= window)
""",
    ),
    Mistake(
        id="window-one-too-narrow",
        hint="a window of `window` keys is the query itself and the window - 1 keys before it: "
        "distance < window keeps them all; distance < window - 1 keeps one key too few (and a "
        "window of 1 nothing at all)",
        source="""
def sliding_window_mask(seq_len, window, past=0):
    q_pos = torch.arange(past, past + seq_len)
    k_pos = torch.arange(past + seq_len)
    distance = q_pos[:, None] - k_pos[None, :]
    return (distance >= 0) & (distance < window - 1)
""",
    ),
    Mistake(
        id="window-excludes-itself",
        hint="the query itself is in its window (a window of 1 is the diagonal): "
        "0 <= distance < window",
        source="""
def sliding_window_mask(seq_len, window, past=0):
    q_pos = torch.arange(past, past + seq_len)
    k_pos = torch.arange(past + seq_len)
    distance = q_pos[:, None] - k_pos[None, :]
    return (distance > 0) & (distance <= window)
""",
    ),
    Mistake(
        id="window-not-causal",
        hint="the window is causal: keys after the query stay hidden (distance >= 0), only keys "
        "too far back are hidden in addition",
        source="""
def sliding_window_mask(seq_len, window, past=0):
    q_pos = torch.arange(past, past + seq_len)
    k_pos = torch.arange(past + seq_len)
    return (q_pos[:, None] - k_pos[None, :]).abs() < window
""",
    ),
    Mistake(
        id="window-ignores-past",
        hint="the new queries sit at absolute positions past .. past + seq_len - 1: start the "
        "query positions at past, as in causal_mask",
        source="""
def sliding_window_mask(seq_len, window, past=0):
    q_pos = torch.arange(seq_len)
    k_pos = torch.arange(past + seq_len)
    distance = q_pos[:, None] - k_pos[None, :]
    return (distance >= 0) & (distance < window)
""",
    ),
    Mistake(
        id="window-float-mask",
        hint=DTYPE_HINT.format(
            what="multiplying the two conditions", dtype="int64", fix="combine them with &"
        ),
        source="""
def sliding_window_mask(seq_len, window, past=0):
    q_pos = torch.arange(past, past + seq_len)
    k_pos = torch.arange(past + seq_len)
    distance = q_pos[:, None] - k_pos[None, :]
    return (distance >= 0).long() * (distance < window).long()
""",
    ),
]


def window_visible() -> list[Probe]:
    return [
        Probe(name="seq_len 6, window 3", args=(6, 3)),
        Probe(name="window 1: only the diagonal", args=(4, 1)),
        Probe(name="with an offset: seq_len 3, window 2, past 4", args=(3, 2), kwargs={"past": 4}),
        Probe(name="a window wider than the sequence is plain causal", args=(5, 10)),
    ]


def window_hidden(g: torch.Generator) -> list[Probe]:
    t, w, p = (int(v) for v in torch.randint(1, 8, (3,), generator=g))
    cases = [
        (6, 3, 0),
        (5, 1, 0),
        (4, 10, 0),
        (8, 4, 0),
        (3, 2, 4),
        (2, 3, 6),
        (1, 4, 9),
        (t, w, p),
    ]
    return [
        Probe(
            name=f"seq_len = {t}, window = {w}, past = {p}"
            + (" (wider than the sequence: plain causal)" if w >= t + p else ""),
            args=(t, w),
            kwargs={"past": p} if p else {},
        )
        for t, w, p in cases
    ]


# ---------------------------------------------------------------- padding and combining

PADDING_MISTAKES = [
    Mistake(
        id="padding-max-len-is-batch-size",
        hint="max_len defaults to the longest sequence, max(lengths), not to the number of "
        "sequences len(lengths)",
        source="""
def padding_mask(lengths, max_len=None):
    lengths = torch.as_tensor(lengths)
    if max_len is None:
        max_len = len(lengths)
    return (torch.arange(max_len)[None, :] < lengths[:, None])[:, None, None, :]
""",
    ),
    Mistake(
        id="padding-off-by-one",
        hint="position j is real when j < length (positions 0 .. length - 1): <= admits one "
        "padding column",
        source="""
def padding_mask(lengths, max_len=None):
    lengths = torch.as_tensor(lengths)
    if max_len is None:
        max_len = int(lengths.max())
    return (torch.arange(max_len)[None, :] <= lengths[:, None])[:, None, None, :]
""",
    ),
    Mistake(
        id="padding-without-broadcast-dims",
        hint="shape (batch, max_len) does not broadcast against scores (batch, heads, T_q, T_k): "
        "return real[:, None, None, :], shape (batch, 1, 1, max_len)",
        source="""
def padding_mask(lengths, max_len=None):
    lengths = torch.as_tensor(lengths)
    if max_len is None:
        max_len = int(lengths.max())
    return torch.arange(max_len)[None, :] < lengths[:, None]
""",
    ),
    Mistake(
        id="padding-masks-queries",
        hint="the padding mask hides padded *keys*, the last dimension: shape (batch, 1, 1, "
        "max_len), not (batch, 1, max_len, 1), which hides padded queries",
        source="""
def padding_mask(lengths, max_len=None):
    lengths = torch.as_tensor(lengths)
    if max_len is None:
        max_len = int(lengths.max())
    return (torch.arange(max_len)[None, :] < lengths[:, None])[:, None, :, None]
""",
    ),
    Mistake(
        id="padding-ignores-max-len",
        hint="use max_len when it is given: the mask is as wide as the padded batch (max_len "
        "columns), which can be wider than the longest sequence",
        source="""
def padding_mask(lengths, max_len=None):
    lengths = torch.as_tensor(lengths)
    max_len = int(lengths.max())
    return (torch.arange(max_len)[None, :] < lengths[:, None])[:, None, None, :]
""",
    ),
    Mistake(
        id="padding-on-the-left",
        hint="here the padding is at the end (right padding): the first lengths[b] positions are "
        "real",
        source="""
def padding_mask(lengths, max_len=None):
    lengths = torch.as_tensor(lengths)
    if max_len is None:
        max_len = int(lengths.max())
    return (torch.arange(max_len)[None, :] >= max_len - lengths[:, None])[:, None, None, :]
""",
    ),
    Mistake(
        id="padding-list-input",
        hint="lengths may be a Python list: convert it with torch.as_tensor(lengths) before "
        "indexing it with [:, None]",
        source="""
def padding_mask(lengths, max_len=None):
    if max_len is None:
        max_len = int(max(lengths))
    return (torch.arange(max_len)[None, :] < lengths[:, None])[:, None, None, :]
""",
    ),
    Mistake(
        id="padding-float-mask",
        hint=DTYPE_HINT.format(
            what=".float()", dtype="float32", fix="the comparison < already gives booleans"
        ),
        source="""
def padding_mask(lengths, max_len=None):
    lengths = torch.as_tensor(lengths)
    if max_len is None:
        max_len = int(lengths.max())
    return (torch.arange(max_len)[None, :] < lengths[:, None]).float()[:, None, None, :]
""",
    ),
]


def padding_visible() -> list[Probe]:
    return [
        Probe(name="lengths [2, 4] (a Python list)", args=([2, 4],)),
        Probe(name="lengths tensor([3, 1, 6])", args=(torch.tensor([3, 1, 6]),)),
        Probe(
            name="max_len = 6, longer than every sequence",
            args=(torch.tensor([2, 4]),),
            kwargs={"max_len": 6},
        ),
        Probe(
            name="a sequence of length 0 has no real token", args=([0, 2],), kwargs={"max_len": 2}
        ),
    ]


def padding_hidden(g: torch.Generator) -> list[Probe]:
    return [
        Probe(name="lengths [3, 5, 1] (a list), max_len from the longest", args=([3, 5, 1],)),
        Probe(
            name="lengths tensor([2, 4]), max_len = 6",
            args=(torch.tensor([2, 4]),),
            kwargs={"max_len": 6},
        ),
        Probe(name="one full-length sequence", args=(torch.tensor([4]),), kwargs={"max_len": 4}),
        Probe(name="an empty sequence (length 0) among others", args=(torch.tensor([0, 2, 3]),)),
        Probe(
            name="8 random lengths (0 included), max_len = 10",
            args=(torch.cat([torch.tensor([0]), torch.randint(1, 11, (7,), generator=g)]),),
            kwargs={"max_len": 10},
        ),
    ]


COMBINE_MISTAKES = [
    Mistake(
        id="combine-with-or",
        hint="a key is allowed only if *every* mask allows it: logical and (&), not or (|)",
        source="""
def combine_masks(*masks):
    present = [m for m in masks if m is not None]
    out = present[0]
    for m in present[1:]:
        out = out | m
    return out
""",
    ),
    Mistake(
        id="combine-none-not-skipped",
        hint="None means 'no restriction': skip it ([m for m in masks if m is not None])",
        source="""
def combine_masks(*masks):
    out = masks[0]
    for m in masks[1:]:
        out = out & m
    return out
""",
    ),
    Mistake(
        id="combine-only-first-two",
        hint="combine every mask that is given, not only the first two: loop over all of them",
        source="""
def combine_masks(*masks):
    present = [m for m in masks if m is not None]
    return present[0] & present[1]
""",
    ),
    Mistake(
        id="combine-in-place",
        hint="out &= m writes into the first mask, which belongs to the caller: use out = out & m",
        source="""
def combine_masks(*masks):
    present = [m for m in masks if m is not None]
    out = present[0]
    for m in present[1:]:
        out &= m
    return out
""",
    ),
    Mistake(
        id="combine-stack",
        hint="masks of different shapes must broadcast: & broadcasts them, torch.stack needs "
        "equal shapes",
        source="""
def combine_masks(*masks):
    present = [m for m in masks if m is not None]
    return torch.stack(present).all(dim=0)
""",
    ),
    Mistake(
        id="combine-multiplies-floats",
        hint=DTYPE_HINT.format(
            what="multiplying .float() masks", dtype="float32", fix="combine them with &"
        ),
        source="""
def combine_masks(*masks):
    present = [m for m in masks if m is not None]
    out = present[0].float()
    for m in present[1:]:
        out = out * m
    return out
""",
    ),
]


def combine_visible() -> list[Probe]:
    g = seeded(305)
    square = torch.rand(5, 5, generator=g) < 0.5
    return [
        Probe(
            name="causal (5, 5) and padding (2, 1, 1, 5) give (2, 1, 5, 5)",
            args=(M.causal_mask(5), M.padding_mask([5, 3], 5)),
        ),
        Probe(name="None is skipped", args=(None, square, None)),
        Probe(
            name="three masks of shapes (2, 4, 4), (4, 4), (1, 4)",
            args=(
                torch.rand(2, 4, 4, generator=g) < 0.7,
                M.causal_mask(4),
                torch.tensor([[True, True, False, True]]),
            ),
        ),
        Probe(name="a single mask comes back unchanged", args=(square,)),
    ]


def combine_hidden(g: torch.Generator) -> list[Probe]:
    def mask(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g) < 0.6

    return [
        Probe(
            name="causal (5, 5) and padding (2, 1, 1, 5) -> (2, 1, 5, 5)",
            args=(M.causal_mask(5), M.padding_mask(torch.tensor([5, 3]), 5)),
        ),
        Probe(name="None means no restriction", args=(M.causal_mask(5), None, mask(2, 1, 1, 5))),
        Probe(name="a single mask comes back unchanged", args=(mask(3, 4),)),
        Probe(name="three random masks", args=(mask(2, 4, 4), mask(4, 4), mask(1, 4))),
        Probe(name="None first", args=(None, mask(3, 3))),
        Probe(
            name="causal, window and left padding with an offset",
            args=(
                M.causal_mask(3, past=4),
                M.sliding_window_mask(3, 3, past=4),
                M.padding_mask([7, 5], 7, side="left"),
            ),
        ),
    ]


# ---------------------------------------------------------------- the NaN trap

REPAIR_HINT = (
    "filling with -inf and repairing the NaN afterwards (nan_to_num, torch.where) fixes only the "
    "forward pass: the backward pass still runs through the NaN softmax, which autograd's anomaly "
    "detection flags (the checks run gradients under it), and whether the NaN reaches the "
    "gradient of the scores is an accident of masked_fill's backward (an additive -inf mask lets "
    "it through). Fill with a finite number, torch.finfo(scores.dtype).min, before the softmax"
)

MASKED_SOFTMAX_MISTAKES = [
    Mistake(
        id="minus-inf-fill-nan-rows",
        hint="filling with -inf turns a row that may attend to nothing into NaN (-inf - (-inf) "
        "inside the softmax): fill with a finite number, torch.finfo(scores.dtype).min, then "
        "zero those rows",
        source="""
def masked_softmax(scores, mask):
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
""",
    ),
    Mistake(
        id="minus-inf-then-nan-to-num",
        hint=REPAIR_HINT,
        source="""
def masked_softmax(scores, mask):
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.nan_to_num(weights, nan=0.0)
""",
    ),
    Mistake(
        id="minus-inf-then-where",
        hint=REPAIR_HINT,
        source="""
def masked_softmax(scores, mask):
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.where(torch.isnan(weights), torch.zeros_like(weights), weights)
""",
    ),
    Mistake(
        id="additive-minus-inf-then-nan-to-num",
        hint=REPAIR_HINT,
        source="""
def masked_softmax(scores, mask):
    bias = torch.zeros_like(scores).masked_fill(~mask, float("-inf"))
    return torch.softmax(scores + bias, dim=-1).nan_to_num(0.0)
""",
    ),
    Mistake(
        id="large-negative-fill",
        hint="-1e9 is not 'minus infinity' in every dtype: float16 cannot hold it (its largest "
        "magnitude is 65504), and a row that may attend to nothing comes out uniform instead of "
        "zero. Fill with torch.finfo(scores.dtype).min and zero the empty rows",
        source="""
def masked_softmax(scores, mask):
    return torch.softmax(scores.masked_fill(~mask, -1e9), dim=-1)
""",
    ),
    Mistake(
        id="finfo-min-without-zeroing",
        hint="a row that may attend to nothing comes out uniform: it averages keys it must not "
        "see. Zero those rows after the softmax (multiply the weights by the mask)",
        source="""
def masked_softmax(scores, mask):
    compute = torch.float32 if scores.dtype in (torch.float16, torch.bfloat16) else scores.dtype
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled.to(compute), dim=-1).to(scores.dtype)
""",
    ),
    Mistake(
        id="minus-1e4-fill",
        hint="-1e4 is not small enough: scores can lie far below it (large activations, additive "
        "biases), and then the masked keys take the weight. Fill with "
        "torch.finfo(scores.dtype).min",
        source="""
def masked_softmax(scores, mask):
    compute = torch.float32 if scores.dtype in (torch.float16, torch.bfloat16) else scores.dtype
    weights = torch.softmax(scores.masked_fill(~mask, -1e4).to(compute), dim=-1)
    return (weights * mask).to(scores.dtype)
""",
    ),
    Mistake(
        id="minus-1e4-fill-without-zeroing",
        hint="two problems: -1e4 is not small enough (scores can lie far below it, and then the "
        "masked keys take the weight), and a row that may attend to nothing comes out uniform "
        "instead of zero. Fill with torch.finfo(scores.dtype).min and zero the empty rows "
        "(multiply the weights by the mask)",
        source="""
def masked_softmax(scores, mask):
    return torch.softmax(scores.masked_fill(~mask, -1e4), dim=-1)
""",
    ),
    Mistake(
        id="mask-after-softmax",
        hint="multiplying the softmax by the mask zeroes the masked keys but leaves the rest "
        "unnormalised (the rows no longer sum to 1): mask the scores before the softmax",
        source="""
def masked_softmax(scores, mask):
    return torch.softmax(scores, dim=-1) * mask
""",
    ),
    Mistake(
        id="renormalises-after-masking",
        hint="renormalising softmax(scores) * mask divides 0 by 0 when the allowed keys' weights "
        "underflowed (a masked key scores far above them) and in rows that may attend to "
        "nothing: mask the scores before the softmax",
        source="""
def masked_softmax(scores, mask):
    weights = torch.softmax(scores, dim=-1) * mask
    return weights / weights.sum(dim=-1, keepdim=True)
""",
    ),
    Mistake(
        id="exp-without-max-shift",
        hint="exp(scores) without subtracting the row max underflows to 0 for scores far below 0 "
        "(and overflows far above), and 0/0 is NaN: use torch.softmax on the filled scores (it "
        "subtracts the max), as in lesson 01",
        source="""
def masked_softmax(scores, mask):
    e = torch.exp(scores) * mask
    return e / e.sum(dim=-1, keepdim=True)
""",
    ),
    Mistake(
        id="computes-in-float32",
        hint="float64 scores are judged at atol 1e-10: computing in float32 and casting back "
        "loses about 1e-8. Compute in the scores' own dtype (float32 only for float16/bfloat16)",
        source="""
def masked_softmax(scores, mask):
    filled = scores.float().masked_fill(~mask, torch.finfo(torch.float32).min)
    return (torch.softmax(filled, dim=-1) * mask).to(scores.dtype)
""",
    ),
    Mistake(
        id="float16-returns-float32",
        hint="float16 scores must give float16 weights: compute in float32 if you like, then "
        "cast back with .to(scores.dtype)",
        source="""
def masked_softmax(scores, mask):
    compute = torch.float32 if scores.dtype in (torch.float16, torch.bfloat16) else scores.dtype
    filled = scores.to(compute).masked_fill(~mask, torch.finfo(compute).min)
    return torch.softmax(filled, dim=-1) * mask
""",
    ),
    Mistake(
        id="inverted-mask",
        hint="True means *may attend*: fill where the mask is False (~mask), not where it is True",
        source="""
def masked_softmax(scores, mask):
    filled = scores.masked_fill(mask, torch.finfo(scores.dtype).min)
    compute = torch.float32 if scores.dtype in (torch.float16, torch.bfloat16) else scores.dtype
    return (torch.softmax(filled.to(compute), dim=-1) * ~mask).to(scores.dtype)
""",
    ),
    Mistake(
        id="multiplies-scores-by-mask",
        hint="multiplying the scores by the mask sets the masked scores to 0, and e^0 still gets "
        "weight: replace them (masked_fill) by a very negative number instead",
        source="""
def masked_softmax(scores, mask):
    return torch.softmax(scores * mask, dim=-1) * mask
""",
    ),
    Mistake(
        id="masked-fill-in-place",
        hint="masked_fill_ (with the underscore) writes into the caller's scores: use "
        "masked_fill, which returns a new tensor",
        source="""
def masked_softmax(scores, mask):
    scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
    compute = torch.float32 if scores.dtype in (torch.float16, torch.bfloat16) else scores.dtype
    return (torch.softmax(scores.to(compute), dim=-1) * mask).to(scores.dtype)
""",
    ),
    Mistake(
        id="softmax-over-queries",
        hint="the softmax runs over the keys, the last dimension (dim=-1): each query's weights "
        "sum to 1",
        source="""
def masked_softmax(scores, mask):
    compute = torch.float32 if scores.dtype in (torch.float16, torch.bfloat16) else scores.dtype
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return (torch.softmax(filled.to(compute), dim=-2) * mask).to(scores.dtype)
""",
    ),
    Mistake(
        id="masked-softmax-via-sdpa",
        hint="F.scaled_dot_product_attention computes the masked softmax for you (the checks "
        "compare against it): write it with masked_fill and torch.softmax",
        source="""
def masked_softmax(scores, mask):
    eye = torch.eye(scores.shape[-1], dtype=scores.dtype).expand(*scores.shape[:-2], -1, -1)
    return F.scaled_dot_product_attention(scores, eye, eye, attn_mask=mask, scale=1.0)
""",
    ),
]


def masked_softmax_visible() -> list[Probe]:
    g = seeded(306)
    far_above = torch.tensor([[0.0, 1.0, 200.0, 0.5], [2.0, 300.0, 1.0, -1.0]])
    above_mask = torch.tensor([[True, True, False, True], [True, False, True, True]])
    return [
        Probe(
            name="float32, every query may see some key",
            args=(randn(g, 2, 5, 6, scale=3), random_mask(g, 5, 6)),
        ),
        Probe(
            name="float64 (judged at atol 1e-10, rtol 1e-8)",
            args=(randn(g, 4, 6, scale=3, dtype=torch.float64), random_mask(g, 4, 6)),
        ),
        Probe(
            name="float16 in, float16 out",
            args=(randn(g, 4, 6, scale=4, dtype=torch.float16), random_mask(g, 4, 6)),
        ),
        Probe(
            name="scores far below -100 (around -1000)",
            args=(randn(g, 3, 6, scale=30) - 1000, random_mask(g, 3, 6)),
        ),
        Probe(name="a masked key scores 200 above the allowed ones", args=(far_above, above_mask)),
        Probe(
            name="scores around -3e4: masked keys must still get 0",
            args=(randn(g, 3, 5, scale=100) - 3e4, random_mask(g, 3, 5)),
        ),
        Probe(
            name="queries 1 and 4 may attend to nothing: all-zero rows, no NaN",
            args=(randn(g, 2, 6, 7, scale=3), with_empty_rows(random_mask(g, 6, 7), [1, 4])),
        ),
        Probe(
            name="float16 with a query that may attend to nothing",
            args=(
                randn(g, 4, 6, scale=4, dtype=torch.float16),
                with_empty_rows(torch.eye(4, 6, dtype=torch.bool), [2]),
            ),
        ),
        Probe(
            name="a mask of shape (T_k,) broadcast over the queries",
            args=(randn(g, 3, 5), torch.tensor([True, False, True, True, False])),
        ),
        Probe(
            name="gradient (float64) with a query that may attend to nothing: zero, not NaN",
            args=(
                randn(g, 4, 6, scale=3, dtype=torch.float64),
                with_empty_rows(random_mask(g, 4, 6), [3]),
            ),
            mode="grad",
            grad_seed=31,
        ),
    ]


def masked_softmax_hidden(g: torch.Generator) -> list[Probe]:
    t = 6
    left = causal_left_padded([6, 4, 1], t)
    right = causal_right_padded([6, 3, 0], t)
    offset = M.causal_mask(2, past=4)
    return [
        Probe(
            name="float32, every query may see some key",
            args=(randn(g, 2, 5, 6, scale=3), random_mask(g, 2, 5, 6)),
        ),
        Probe(
            name="float64, 4-D scores",
            args=(randn(g, 2, 3, 4, 5, scale=3, dtype=torch.float64), random_mask(g, 4, 5)),
        ),
        Probe(
            name="bfloat16 in, bfloat16 out",
            args=(randn(g, 3, 7, scale=4, dtype=torch.bfloat16), random_mask(g, 3, 7)),
        ),
        Probe(
            name="scores far below -100 (around -1000)",
            args=(randn(g, 4, 6, scale=50) - 1000, random_mask(g, 4, 6)),
        ),
        Probe(
            name="scores far above 100 (around +1000)",
            args=(randn(g, 4, 6, scale=50) + 1000, random_mask(g, 4, 6)),
        ),
        Probe(
            name="masked keys scoring far above the allowed ones",
            args=(
                randn(g, 3, 6) + 300 * (torch.arange(6) % 2),
                torch.tensor([True, False, True, False, True, False]),
            ),
        ),
        Probe(
            name="float16 scores around -3e4: a fill of -1e4 is not 'minus infinity' there",
            args=(
                (randn(g, 4, 6, scale=1e3) - 3e4).half(),
                with_empty_rows(random_mask(g, 4, 6), [2]),
            ),
        ),
        Probe(
            name="float32: the first, a middle and the last query may attend to nothing",
            args=(randn(g, 6, 7, scale=3), with_empty_rows(random_mask(g, 6, 7), [0, 3, 5])),
        ),
        Probe(
            name="float64 rows that may attend to nothing",
            args=(
                randn(g, 2, 5, 6, dtype=torch.float64),
                with_empty_rows(random_mask(g, 5, 6), [1, 4]),
            ),
        ),
        Probe(
            name="float16 rows that may attend to nothing",
            args=(
                randn(g, 2, 5, 8, scale=4, dtype=torch.float16),
                with_empty_rows(random_mask(g, 5, 8), [0, 3]),
            ),
        ),
        Probe(
            name="bfloat16 rows that may attend to nothing",
            args=(
                randn(g, 4, 5, scale=4, dtype=torch.bfloat16),
                with_empty_rows(random_mask(g, 4, 5), [3]),
            ),
        ),
        Probe(name="everything masked", args=(randn(g, 3, 4), torch.zeros(3, 4, dtype=torch.bool))),
        Probe(
            name="mask (T_k,) broadcast over the rows",
            args=(randn(g, 3, 5), torch.tensor([True, False, True, True, False])),
        ),
        Probe(
            name="causal + left padding (lengths 6, 4, 1): padded queries may attend to nothing",
            args=(randn(g, 3, 2, t, t, scale=3), left),
        ),
        Probe(
            name="causal + right padding (lengths 6, 3, 0)",
            args=(randn(g, 3, 2, t, t, scale=3), right),
        ),
        Probe(
            name="two queries after four cached keys (causal_mask(2, past=4))",
            args=(randn(g, 2, 2, 6, scale=3), offset),
        ),
        Probe(
            name="gradient (float64) with rows that may attend to nothing",
            args=(
                randn(g, 5, 6, scale=3, dtype=torch.float64),
                with_empty_rows(random_mask(g, 5, 6), [0, 2]),
            ),
            mode="grad",
            grad_seed=8,
        ),
        Probe(
            name="gradient (float64), causal + left padding",
            args=(randn(g, 3, 1, t, t, scale=3, dtype=torch.float64), left),
            mode="grad",
            grad_seed=9,
        ),
        Probe(
            name="gradient (float32), every query may see some key",
            args=(randn(g, 3, 6, scale=3), random_mask(g, 3, 6)),
            mode="grad",
            grad_seed=10,
        ),
    ]


ATTENTION_MISTAKES = [
    Mistake(
        id="attention-forgets-the-scale",
        hint="divide the scores by sqrt(d_k) = sqrt(q.shape[-1]) before the softmax",
        source="""
def masked_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)
    if mask is None:
        mask = torch.ones(scores.shape[-1], dtype=torch.bool)
    return masked_softmax(scores, mask) @ v
""",
    ),
    Mistake(
        id="attention-scales-by-d-k",
        hint="the scale is 1/sqrt(d_k), not 1/d_k",
        source="""
def masked_attention(q, k, v, mask=None):
    scores = (q @ k.transpose(-2, -1)) / q.shape[-1]
    if mask is None:
        mask = torch.ones(scores.shape[-1], dtype=torch.bool)
    return masked_softmax(scores, mask) @ v
""",
    ),
    Mistake(
        id="attention-scales-by-seq-len",
        hint="d_k is the head dimension q.shape[-1], not a sequence length (the number of "
        "queries q.shape[-2] or of keys k.shape[-2])",
        source="""
def masked_attention(q, k, v, mask=None):
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-2])
    if mask is None:
        mask = torch.ones(scores.shape[-1], dtype=torch.bool)
    return masked_softmax(scores, mask) @ v
""",
    ),
    Mistake(
        id="attention-scales-by-key-count",
        hint="d_k is the head dimension q.shape[-1], not a sequence length (the number of "
        "queries q.shape[-2] or of keys k.shape[-2])",
        source="""
def masked_attention(q, k, v, mask=None):
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-2])
    if mask is None:
        mask = torch.ones(scores.shape[-1], dtype=torch.bool)
    return masked_softmax(scores, mask) @ v
""",
    ),
    Mistake(
        id="attention-scales-the-output",
        hint="the 1/sqrt(d_k) scale belongs on the scores, before the softmax (it sets how "
        "peaked the weights are); dividing the output afterwards only shrinks it",
        source="""
def masked_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)
    if mask is None:
        mask = torch.ones(scores.shape[-1], dtype=torch.bool)
    return (masked_softmax(scores, mask) @ v) / math.sqrt(q.shape[-1])
""",
    ),
    Mistake(
        id="attention-k-dot-T",
        hint="k.T reverses *every* dimension of a 4-D tensor: transpose only the last two, "
        "k.transpose(-2, -1)",
        source="""
def masked_attention(q, k, v, mask=None):
    scores = (q @ k.T) / math.sqrt(q.shape[-1])
    if mask is None:
        mask = torch.ones(scores.shape[-1], dtype=torch.bool)
    return masked_softmax(scores, mask) @ v
""",
    ),
    Mistake(
        id="attention-ignores-mask",
        hint="pass the mask to masked_softmax: without it every query sees every key, the future "
        "and the padding included",
        source="""
def masked_attention(q, k, v, mask=None):
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    return masked_softmax(scores, torch.ones(scores.shape[-1], dtype=torch.bool)) @ v
""",
    ),
    Mistake(
        id="attention-passes-none-mask",
        hint="with mask=None every key is allowed: give masked_softmax an all-True mask (it "
        "needs a boolean mask), e.g. torch.ones(scores.shape[-1], dtype=torch.bool)",
        source="""
def masked_attention(q, k, v, mask=None):
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    return masked_softmax(scores, mask) @ v
""",
    ),
    Mistake(
        id="attention-minus-inf-softmax",
        hint="filling with -inf makes the rows of queries that may attend to nothing NaN: use "
        "your masked_softmax (finite fill, empty rows zeroed)",
        source="""
def masked_attention(q, k, v, mask=None):
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
""",
    ),
    Mistake(
        id="attention-nan-to-num-output",
        hint="nan_to_num on the output hides the NaN of the -inf rows only in the forward pass: "
        "the gradient with respect to v (and q, k) is still NaN, and the checks differentiate "
        "with respect to every input. Use your masked_softmax, which never makes a NaN",
        source="""
def masked_attention(q, k, v, mask=None):
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (torch.softmax(scores, dim=-1) @ v).nan_to_num(0.0)
""",
    ),
    Mistake(
        id="attention-returns-weights",
        hint="the output is the weights times the values, masked_softmax(...) @ v, of shape "
        "(..., q_len, d_v)",
        source="""
def masked_attention(q, k, v, mask=None):
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is None:
        mask = torch.ones(scores.shape[-1], dtype=torch.bool)
    return masked_softmax(scores, mask)
""",
    ),
    Mistake(
        id="attention-calls-pytorch",
        hint="F.scaled_dot_product_attention is the attention you are asked to write (the checks "
        "compare against it): matmul, scale, your masked_softmax, matmul",
        source="""
def masked_attention(q, k, v, mask=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
""",
    ),
]


def qkv(g: torch.Generator, *shape: int, dtype=torch.float32) -> tuple[torch.Tensor, ...]:
    return tuple(randn(g, *shape, dtype=dtype) for _ in range(3))


def attention_visible() -> list[Probe]:
    g = seeded(307)
    left = causal_left_padded([6, 4, 2], 6)
    return [
        Probe(
            name="causal mask (6, 6), 4-D inputs",
            args=qkv(g, 3, 2, 6, 8),
            kwargs={"mask": M.causal_mask(6)},
        ),
        Probe(name="no mask", args=qkv(g, 2, 2, 5, 8)),
        Probe(
            name="causal + left padding (lengths 6, 4, 2): padded queries output zeros",
            args=qkv(g, 3, 2, 6, 8),
            kwargs={"mask": left},
        ),
        Probe(
            name="two new queries after four cached keys: causal_mask(2, past=4)",
            args=(randn(g, 1, 2, 2, 8), randn(g, 1, 2, 6, 8), randn(g, 1, 2, 6, 4)),
            kwargs={"mask": M.causal_mask(2, past=4)},
        ),
        Probe(
            name="float64 (judged at atol 1e-10, rtol 1e-8)",
            args=qkv(g, 2, 1, 5, 4, dtype=torch.float64),
            kwargs={"mask": M.causal_mask(5)},
        ),
        Probe(
            name="float16, causal + right padding",
            args=qkv(g, 2, 2, 5, 8, dtype=torch.float16),
            kwargs={"mask": causal_right_padded([5, 3], 5)},
        ),
        Probe(
            name="gradient (float64) with respect to q, k and v, with left padding",
            args=qkv(g, 3, 1, 6, 4, dtype=torch.float64),
            kwargs={"mask": left},
            mode="grad",
            grad_seed=32,
        ),
    ]


def attention_hidden(g: torch.Generator) -> list[Probe]:
    left = causal_left_padded([6, 4, 1], 6)
    right = causal_right_padded([6, 2, 0], 6)
    return [
        Probe(name="no mask", args=qkv(g, 2, 2, 5, 8)),
        Probe(
            name="causal mask (6, 6), 4-D inputs",
            args=qkv(g, 2, 3, 6, 8),
            kwargs={"mask": M.causal_mask(6)},
        ),
        Probe(
            name="causal + left padding: padded queries may attend to nothing -> zero rows",
            args=qkv(g, 3, 2, 6, 8),
            kwargs={"mask": left},
        ),
        Probe(
            name="causal + right padding, a sequence of length 0",
            args=qkv(g, 3, 2, 6, 8),
            kwargs={"mask": right},
        ),
        Probe(
            name="float16, causal + left padding",
            args=qkv(g, 3, 2, 6, 8, dtype=torch.float16),
            kwargs={"mask": left},
        ),
        Probe(
            name="bfloat16, sliding window of 2 over right padding",
            args=qkv(g, 3, 1, 6, 8, dtype=torch.bfloat16),
            kwargs={"mask": M.combine_masks(right, M.sliding_window_mask(6, 2))},
        ),
        Probe(
            name="float64, causal",
            args=qkv(g, 2, 2, 5, 4, dtype=torch.float64),
            kwargs={"mask": M.causal_mask(5)},
        ),
        Probe(
            name="two new queries after four cached keys (offset causal mask)",
            args=(randn(g, 1, 2, 2, 8), randn(g, 1, 2, 6, 8), randn(g, 1, 2, 6, 4)),
            kwargs={"mask": M.causal_mask(2, past=4)},
        ),
        Probe(
            name="3-D inputs, random mask with an empty row",
            args=qkv(g, 2, 5, 4),
            kwargs={"mask": with_empty_rows(random_mask(g, 2, 5, 5), [3])},
        ),
        Probe(
            name="gradient (float64) with respect to q, k and v, left padding",
            args=qkv(g, 3, 1, 6, 4, dtype=torch.float64),
            kwargs={"mask": left},
            mode="grad",
            grad_seed=9,
        ),
        Probe(
            name="gradient (float64) with respect to q, k and v, right padding with length 0",
            args=qkv(g, 3, 1, 6, 4, dtype=torch.float64),
            kwargs={"mask": right},
            mode="grad",
            grad_seed=11,
        ),
    ]


# ---------------------------------------------------------------- the leak test

CHANGED_MISTAKES = [
    Mistake(
        id="perturbs-x-in-place",
        hint="perturb a copy (x.clone()): writing into x changes the caller's tensor, and "
        "'before' and 'after' are then the same tensor, so nothing ever moves",
        source="""
def changed_positions(layer, x, t):
    perturbed = x
    perturbed[:, t, :] += 1.0
    return (layer(perturbed) - layer(x)).abs().amax(dim=-1).amax(dim=0) > 1e-6
""",
    ),
    Mistake(
        id="reports-unchanged-positions",
        hint="return True where the output *moved* (|after - before| > 1e-6), not where it stayed",
        source="""
def changed_positions(layer, x, t):
    perturbed = x.clone()
    perturbed[:, t, :] += 1.0
    return (layer(perturbed) - layer(x)).abs().amax(dim=-1).amax(dim=0) <= 1e-6
""",
    ),
    Mistake(
        id="perturbs-feature-t",
        hint="x is (batch, seq, d): token t is x[:, t, :] (dimension 1); x[:, :, t] is feature t "
        "of every token",
        source="""
def changed_positions(layer, x, t):
    perturbed = x.clone()
    perturbed[:, :, t] += 1.0
    return (layer(perturbed) - layer(x)).abs().amax(dim=-1).amax(dim=0) > 1e-6
""",
    ),
    Mistake(
        id="keeps-the-batch",
        hint="reduce over the batch too (a position moved if it moved in any batch element): "
        "the result has shape (seq,)",
        source="""
def changed_positions(layer, x, t):
    perturbed = x.clone()
    perturbed[:, t, :] += 1.0
    return (layer(perturbed) - layer(x)).abs().amax(dim=-1) > 1e-6
""",
    ),
    Mistake(
        id="looks-at-batch-element-0-only",
        hint="a position moved if it moved in *any* batch element: reduce over the batch "
        "(.amax(dim=0) or .any(dim=0)) instead of looking at element 0 only",
        source="""
def changed_positions(layer, x, t):
    perturbed = x.clone()
    perturbed[:, t, :] += 1.0
    return (layer(perturbed) - layer(x))[0].abs().amax(dim=-1) > 1e-6
""",
    ),
    Mistake(
        id="perturbs-feature-0-only",
        hint="perturb *all* the features of token t (x[:, t, :] += 1.0), not feature 0 alone: "
        "a layer may ignore any one feature",
        source="""
def changed_positions(layer, x, t):
    perturbed = x.clone()
    perturbed[:, t, 0] += 1.0
    return (layer(perturbed) - layer(x)).abs().amax(dim=-1).amax(dim=0) > 1e-6
""",
    ),
    Mistake(
        id="compares-feature-0-only",
        hint="an output moved if *any* of its features moved: reduce over the last dimension "
        "(.amax(dim=-1)) instead of comparing feature 0 only",
        source="""
def changed_positions(layer, x, t):
    perturbed = x.clone()
    perturbed[:, t, :] += 1.0
    return (layer(perturbed) - layer(x))[..., 0].abs().amax(dim=0) > 1e-6
""",
    ),
    Mistake(
        id="returns-the-amounts",
        hint="return booleans (moved > 1e-6), not the amounts each position moved",
        source="""
def changed_positions(layer, x, t):
    perturbed = x.clone()
    perturbed[:, t, :] += 1.0
    return (layer(perturbed) - layer(x)).abs().amax(dim=-1).amax(dim=0)
""",
    ),
]


def changed_visible() -> list[Probe]:
    g = seeded(308)
    x = randn(g, 2, 6, 8)
    return [
        Probe(
            name="causal attention, token 2 of 6: positions 2..5 move",
            args=(layer("causal_self_attention"), x, 2),
        ),
        Probe(
            name="bidirectional attention, token 4: every position moves",
            args=(layer("bidirectional_self_attention"), x, 4),
        ),
        Probe(
            name="running mean, token 0: every position moves",
            args=(layer("causal_running_mean"), x, 0),
        ),
        Probe(
            name="position-wise MLP, token 3: only position 3 moves",
            args=(layer("position_wise_mlp"), x, 3),
        ),
        Probe(
            name="last-token broadcast, token 5 (the last): every position moves",
            args=(layer("last_token_broadcast"), x, 5),
        ),
        Probe(
            name="a leak only batch element 1 shows, token 5: every position moves",
            args=(layer("odd_sequences_leak"), x, 5),
        ),
        Probe(
            name="a running mean that ignores feature 0, token 2: positions 2..5 move",
            args=(layer("ignores_feature_zero"), x, 2),
        ),
    ]


def changed_hidden(g: torch.Generator) -> list[Probe]:
    cases = [
        ("causal_self_attention", 3, 2),
        ("causal_self_attention", 0, 1),
        ("causal_running_mean", 6, 3),
        ("position_wise_mlp", 2, 2),
        ("bidirectional_self_attention", 4, 2),
        ("peeking_self_attention", 2, 1),
        ("sequence_normalised_attention", 5, 2),
        ("last_token_broadcast", 6, 3),
        ("odd_sequences_leak", 6, 2),
        ("odd_sequences_leak", 4, 3),
        ("ignores_feature_zero", 3, 2),
        ("peek_two_ahead", 4, 2),
    ]
    return [
        Probe(
            name=f"{name}, perturbing token {t} of 7 (batch {b})",
            args=(layer(name), randn(g, b, 7, 8), t),
        )
        for name, t, b in cases
    ]


LEAK_MISTAKES = [
    Mistake(
        id="leak-test-skips-the-last-token",
        hint="try every token, the last one included (range(seq)): a layer that reads the final "
        "token everywhere is caught by nothing else",
        source="""
def leaks_future(layer, x):
    for t in range(x.shape[-2] - 1):
        if changed_positions(layer, x, t)[:t].any():
            return True
    return False
""",
    ),
    Mistake(
        id="leak-test-counts-position-t",
        hint="position t itself may change (it sees token t): look strictly before t, [:t], "
        "not [:t + 1]",
        source="""
def leaks_future(layer, x):
    for t in range(x.shape[-2]):
        if changed_positions(layer, x, t)[:t + 1].any():
            return True
    return False
""",
    ),
    Mistake(
        id="leak-test-looks-after-t",
        hint="a leak is an output *before* t that moves: look at positions [:t]; the positions "
        "after t are allowed to see token t",
        source="""
def leaks_future(layer, x):
    for t in range(x.shape[-2]):
        if changed_positions(layer, x, t)[t + 1:].any():
            return True
    return False
""",
    ),
    Mistake(
        id="leak-test-looks-one-back-only",
        hint="a leak may reach any position before t, not only t - 1: look at all of "
        "changed_positions(layer, x, t)[:t]",
        source="""
def leaks_future(layer, x):
    for t in range(1, x.shape[-2]):
        if changed_positions(layer, x, t)[t - 1]:
            return True
    return False
""",
    ),
    Mistake(
        id="leak-test-returns-a-tensor",
        hint="return a Python bool (True/False), not a 0-d tensor: bool(...) converts it, and "
        "`if leaks_future(...)` then never depends on how a tensor is truth-tested",
        source="""
def leaks_future(layer, x):
    leaked = torch.tensor(False)
    for t in range(x.shape[-2]):
        leaked = leaked | changed_positions(layer, x, t)[:t].any()
    return leaked
""",
    ),
    Mistake(
        id="leak-test-returns-inside-loop",
        hint="return False only after every token was tried: a return inside the loop stops at "
        "the first token",
        source="""
def leaks_future(layer, x):
    for t in range(x.shape[-2]):
        return bool(changed_positions(layer, x, t)[:t].any())
""",
    ),
]


def leak_visible() -> list[Probe]:
    g = seeded(309)
    x = randn(g, 2, 6, 8)
    names = {
        "causal_self_attention": "causal self-attention does not leak",
        "causal_running_mean": "the running mean does not leak",
        "position_wise_mlp": "a position-wise MLP does not leak",
        "bidirectional_self_attention": "bidirectional attention leaks",
        "peeking_self_attention": "the off-by-one diagonal (tril(diagonal=1)) leaks",
        "sequence_normalised_attention": "normalising over the sequence axis leaks",
        "last_token_broadcast": "reading the last token everywhere leaks (only the last token "
        "shows it)",
        "peek_two_ahead": "reading the token two ahead leaks (position t - 2 moves, t - 1 does "
        "not)",
    }
    return [Probe(name=text, args=(layer(name), x)) for name, text in names.items()]


def leak_hidden(g: torch.Generator) -> list[Probe]:
    return [
        Probe(
            name=f"{name} ({'leaks' if name in LEAKY_LAYERS else 'causal'})",
            args=(layer(name), randn(g, 2, 6, 8)),
        )
        for name in CAUSAL_LAYERS + LEAKY_LAYERS
    ] + [
        Probe(
            name="last_token_broadcast on one sequence of 9 tokens",
            args=(layer("last_token_broadcast"), randn(g, 1, 9, 4)),
        )
    ]


# ---------------------------------------------------------------- the lesson

LESSON = Lesson(
    folder="03-causal-masking",
    notebook="causal_masking",
    context_cells=("setup",),
    exercises=[
        Exercise(
            id="causal-tril",
            title="causal mask with torch.tril",
            function="causal_mask_tril",
            signature="causal_mask_tril(seq_len: int) -> bool (seq_len, seq_len)",
            reference=M.causal_mask,
            answer_cell="causal_mask_tril",
            test_cell="test-causal-tril",
            points=1,
            visible=causal_tril_visible,
            hidden=causal_tril_hidden,
            mistakes=TRIL_MISTAKES,
        ),
        Exercise(
            id="causal-mask",
            title="causal mask by position comparison, with an offset",
            function="causal_mask",
            signature="causal_mask(seq_len: int, past: int = 0) -> bool (seq_len, past + seq_len)",
            reference=M.causal_mask,
            answer_cell="causal_mask",
            test_cell="test-causal-mask",
            points=2,
            visible=causal_visible,
            hidden=causal_hidden,
            mistakes=CAUSAL_MISTAKES,
            forbidden=TRIL_OPS,
            forbidden_hint=CAUSAL_HINT,
        ),
        Exercise(
            id="sliding-window",
            title="sliding-window causal mask",
            function="sliding_window_mask",
            signature="sliding_window_mask(seq_len: int, window: int, past: int = 0) -> bool "
            "(seq_len, past + seq_len)",
            reference=M.sliding_window_mask,
            answer_cell="sliding_window_mask",
            test_cell="test-sliding-window",
            points=2,
            visible=window_visible,
            hidden=window_hidden,
            mistakes=WINDOW_MISTAKES,
        ),
        Exercise(
            id="padding-mask",
            title="padding mask from sequence lengths",
            function="padding_mask",
            signature="padding_mask(lengths: list[int] | int64 (batch,), max_len: int | None = "
            "None) -> bool (batch, 1, 1, max_len)",
            reference=M.padding_mask,
            answer_cell="padding_mask",
            test_cell="test-padding-mask",
            points=2,
            visible=padding_visible,
            hidden=padding_hidden,
            mistakes=PADDING_MISTAKES,
        ),
        Exercise(
            id="combine-masks",
            title="combining masks",
            function="combine_masks",
            signature="combine_masks(*masks: bool tensor | None) -> bool tensor (broadcast shape)",
            reference=M.combine_masks,
            answer_cell="combine_masks",
            test_cell="test-combine-masks",
            points=1,
            visible=combine_visible,
            hidden=combine_hidden,
            mistakes=COMBINE_MISTAKES,
        ),
        Exercise(
            id="masked-softmax",
            title="masked softmax without the NaN trap",
            function="masked_softmax",
            signature="masked_softmax(scores: float (..., q_len, k_len), mask: bool broadcastable "
            "to scores) -> scores' shape and dtype",
            reference=A.masked_softmax,
            answer_cell="masked_softmax",
            test_cell="test-masked-softmax",
            points=3,
            visible=masked_softmax_visible,
            hidden=masked_softmax_hidden,
            mistakes=MASKED_SOFTMAX_MISTAKES,
            forbidden=SDPA_OPS,
            forbidden_hint=SOFTMAX_HINT,
        ),
        Exercise(
            id="attention",
            title="masked attention with zero rows for empty masks",
            function="masked_attention",
            signature="masked_attention(q: (..., q_len, d), k: (..., k_len, d), v: (..., k_len, "
            "d_v), mask: bool | None = None) -> (..., q_len, d_v), q's dtype",
            reference=A.scaled_dot_product_attention,
            answer_cell="masked_attention",
            test_cell="test-attention",
            points=2,
            visible=attention_visible,
            hidden=attention_hidden,
            mistakes=ATTENTION_MISTAKES,
            forbidden=SDPA_OPS,
            forbidden_hint=ATTENTION_HINT,
            stand_ins={"masked_softmax": "course.stand_ins:masked_softmax"},
            uses=("masked_softmax",),
        ),
        Exercise(
            id="changed-positions",
            title="which outputs move when a token is perturbed",
            function="changed_positions",
            signature="changed_positions(layer, x: float (batch, seq, d), t: int) -> bool (seq,)",
            reference=C.changed_positions,
            answer_cell="changed_positions",
            test_cell="test-changed-positions",
            points=2,
            visible=changed_visible,
            hidden=changed_hidden,
            mistakes=CHANGED_MISTAKES,
        ),
        Exercise(
            id="leak-test",
            title="the future must not leak",
            function="leaks_future",
            signature="leaks_future(layer, x: float (batch, seq, d)) -> bool",
            reference=C.leaks_future,
            answer_cell="leaks_future",
            test_cell="test-leak-test",
            points=2,
            visible=leak_visible,
            hidden=leak_hidden,
            mistakes=LEAK_MISTAKES,
            uses=("changed_positions",),
        ),
    ],
)
