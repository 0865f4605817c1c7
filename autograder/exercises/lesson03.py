"""Hidden tests of lesson 03 (causal masking), as data.

Masks are judged exactly (dtype bool, shape, every entry); the masked softmax and attention
against the reference kernels, whose rows that may attend to nothing are all zeros in every
dtype, with zero (not NaN) gradients; the learner's leak test on layers from
`autograder.probe_helpers`, passed by name, some causal and some leaking on purpose.
"""

from __future__ import annotations

import torch

from autograder.exercises.inputs import randn
from autograder.exercises.lesson02 import SDPA_HINT, SDPA_OPS
from autograder.judge import Exercise, Fn, Probe
from solutions.kernels import attention as A
from solutions.kernels import masks as M

LESSON = "03-causal-masking"

F16 = dict(atol=2e-3, rtol=1e-2)
F32 = dict(atol=1e-5, rtol=1e-4)
F64 = dict(atol=1e-10, rtol=1e-8)
EXACT = dict(atol=0.0, rtol=0.0)

# How the leak test perturbs a token, and when an output counts as changed (the notebook
# states both; any perturbation that really changes the token finds the same positions).
PERTURBATION = 1.0
CHANGED_ATOL = 1e-6

CAUSAL_LAYERS = ["causal_self_attention", "causal_running_mean", "position_wise_mlp"]
LEAKY_LAYERS = [
    "bidirectional_self_attention",
    "peeking_self_attention",
    "sequence_normalised_attention",
    "last_token_broadcast",
]


def _layer(name: str) -> Fn:
    return Fn(f"autograder.probe_helpers:{name}")


def _mask(g: torch.Generator, *shape: int, p: float = 0.6) -> torch.Tensor:
    return torch.rand(*shape, generator=g) < p


# ---------------------------------------------------------------- masks


def causal_tril_probes(g: torch.Generator) -> list[Probe]:
    return [Probe(f"seq_len = {t}", (t,), **EXACT) for t in (1, 2, 5, 16)]


def causal_probes(g: torch.Generator) -> list[Probe]:
    cases = [(4, 0), (7, 0), (1, 5), (3, 5), (4, 2), (6, 10)]
    return [
        Probe(
            f"seq_len = {t}, past = {p}: shape ({t}, {p + t})"
            + (", the diagonal included" if p == 0 else f", queries at positions {p}..{p + t - 1}"),
            (t,),
            {"past": p} if p else {},
            **EXACT,
        )
        for t, p in cases
    ]


def sliding_probes(g: torch.Generator) -> list[Probe]:
    cases = [(6, 3, 0), (5, 1, 0), (4, 10, 0), (8, 4, 0), (3, 2, 4), (2, 3, 6)]
    return [
        Probe(
            f"seq_len = {t}, window = {w}, past = {p}"
            + (" (wider than the sequence: plain causal)" if w >= t + p else ""),
            (t, w),
            {"past": p} if p else {},
            **EXACT,
        )
        for t, w, p in cases
    ]


def padding_probes(g: torch.Generator) -> list[Probe]:
    return [
        Probe("lengths [3, 5, 1] (a list), max_len from the longest", ([3, 5, 1],), **EXACT),
        Probe(
            "lengths tensor([2, 4]), max_len = 6", (torch.tensor([2, 4]),), {"max_len": 6}, **EXACT
        ),
        Probe("one full-length sequence", (torch.tensor([4]),), {"max_len": 4}, **EXACT),
        Probe("an empty sequence (length 0) among others", (torch.tensor([0, 2, 3]),), **EXACT),
        Probe(
            "8 random lengths, max_len = 10",
            (torch.randint(1, 11, (8,), generator=g),),
            {"max_len": 10},
            **EXACT,
        ),
    ]


def combine_probes(g: torch.Generator) -> list[Probe]:
    causal = M.causal_mask(5)
    padding = M.padding_mask(torch.tensor([5, 3]), 5)
    return [
        Probe("causal (5, 5) and padding (2, 1, 1, 5) -> (2, 1, 5, 5)", (causal, padding), **EXACT),
        Probe("None means no restriction", (causal, None, padding), **EXACT),
        Probe("a single mask comes back unchanged", (_mask(g, 3, 4),), **EXACT),
        Probe("three random masks", (_mask(g, 2, 4, 4), _mask(g, 4, 4), _mask(g, 1, 4)), **EXACT),
        Probe("None first", (None, _mask(g, 3, 3)), **EXACT),
    ]


# ---------------------------------------------------------------- the NaN trap


def _with_empty_rows(mask: torch.Tensor, rows: list[int]) -> torch.Tensor:
    mask = mask.clone()
    mask[..., rows, :] = False
    return mask


def masked_softmax_probes(g: torch.Generator) -> list[Probe]:
    some = _mask(g, 2, 5, 6)
    some[..., 0] = True
    return [
        Probe("float32, every row may see something", (randn(g, 2, 5, 6, scale=3), some), **F32),
        Probe(
            "float32 with rows that may attend to nothing: all zeros, no NaN",
            (randn(g, 6, 7), _with_empty_rows(_mask(g, 6, 7), [1, 4])),
            **F32,
        ),
        Probe(
            "float16 with rows that may attend to nothing (keep float16)",
            (
                randn(g, 2, 5, 8, scale=4, dtype=torch.float16),
                _with_empty_rows(_mask(g, 5, 8), [0, 3]),
            ),
            **F16,
        ),
        Probe(
            "float16 scores around -3e4: a fill of -1e4 is not 'minus infinity' there",
            (
                (randn(g, 4, 6, scale=1e3) - 3e4).half(),
                _with_empty_rows(_mask(g, 4, 6) | torch.eye(4, 6, dtype=torch.bool), [2]),
            ),
            **F16,
        ),
        Probe("everything masked", (randn(g, 3, 4), torch.zeros(3, 4, dtype=torch.bool)), **F32),
        Probe(
            "mask (T_k,) broadcast over the rows",
            (randn(g, 3, 5), torch.tensor([True, False, True, True, False])),
            **F32,
        ),
        Probe(
            "gradient is finite (zero) for rows that may attend to nothing",
            (randn(g, 4, 5, dtype=torch.float64), _with_empty_rows(_mask(g, 4, 5), [2])),
            call="grad",
            grad_weight_seed=8,
            **F64,
        ),
    ]


def attention_probes(g: torch.Generator) -> list[Probe]:
    def qkv(*shape: int, dtype=torch.float32):
        return tuple(randn(g, *shape, dtype=dtype) for _ in range(3))

    left_padded = M.combine_masks(M.causal_mask(6), M.padding_mask([6, 4, 2], 6, side="left"))
    return [
        Probe("no mask", qkv(2, 2, 5, 8), **F32),
        Probe("causal mask (6, 6), 4-D inputs", qkv(2, 3, 6, 8), {"mask": M.causal_mask(6)}, **F32),
        Probe(
            "causal + left padding: padded queries may attend to nothing -> zero rows",
            qkv(3, 2, 6, 8),
            {"mask": left_padded},
            **F32,
        ),
        Probe(
            "float16, causal + left padding",
            qkv(3, 2, 6, 8, dtype=torch.float16),
            {"mask": left_padded},
            **F16,
        ),
        Probe(
            "two new queries after four cached keys (offset causal mask)",
            (randn(g, 1, 2, 2, 8), randn(g, 1, 2, 6, 8), randn(g, 1, 2, 6, 4)),
            {"mask": M.causal_mask(2, past=4)},
            **F32,
        ),
        Probe(
            "3-D inputs, random mask with empty rows",
            qkv(2, 5, 4),
            {"mask": _with_empty_rows(_mask(g, 2, 5, 5), [3])},
            **F32,
        ),
        Probe(
            "gradient with respect to q with empty rows is finite",
            qkv(3, 1, 6, 4, dtype=torch.float64),
            {"mask": left_padded},
            call="grad",
            grad_weight_seed=9,
            **F64,
        ),
    ]


# ---------------------------------------------------------------- the leak test


def changed_positions(layer, x, t):
    """Which output positions move when token t of x is perturbed: bool (seq,)."""
    perturbed = x.clone()
    perturbed[..., t, :] += PERTURBATION
    diff = (layer(perturbed) - layer(x)).abs()
    return diff.amax(dim=-1).reshape(-1, x.shape[-2]).amax(dim=0) > CHANGED_ATOL


def leaks_future(layer, x):
    """True when some output before position t changes as token t is perturbed, for some t."""
    return any(bool(changed_positions(layer, x, t)[:t].any()) for t in range(x.shape[-2]))


def changed_positions_probes(g: torch.Generator) -> list[Probe]:
    cases = [
        ("causal_self_attention", 3),
        ("causal_self_attention", 0),
        ("causal_running_mean", 6),
        ("position_wise_mlp", 2),
        ("bidirectional_self_attention", 4),
        ("peeking_self_attention", 2),
        ("sequence_normalised_attention", 5),
        ("last_token_broadcast", 6),
    ]
    return [
        Probe(f"{name}, perturbing token {t} of 7", (_layer(name), randn(g, 2, 7, 8), t), **EXACT)
        for name, t in cases
    ]


def leak_probes(g: torch.Generator) -> list[Probe]:
    return [
        Probe(
            f"{name} ({'leaks' if name in LEAKY_LAYERS else 'causal'})",
            (_layer(name), randn(g, 2, 6, 8)),
            **EXACT,
        )
        for name in CAUSAL_LAYERS + LEAKY_LAYERS
    ]


EXERCISES = [
    Exercise(
        f"{LESSON}/causal-tril",
        "causal mask with torch.tril",
        "causal_mask_tril",
        lambda seq_len: M.causal_mask(seq_len),
        causal_tril_probes,
    ),
    Exercise(
        f"{LESSON}/causal-mask",
        "causal mask by position comparison, with an offset",
        "causal_mask",
        lambda seq_len, past=0: M.causal_mask(seq_len, past),
        causal_probes,
    ),
    Exercise(
        f"{LESSON}/sliding-window",
        "sliding-window causal mask",
        "sliding_window_mask",
        lambda seq_len, window, past=0: M.sliding_window_mask(seq_len, window, past),
        sliding_probes,
    ),
    Exercise(
        f"{LESSON}/padding-mask",
        "padding mask from sequence lengths",
        "padding_mask",
        lambda lengths, max_len=None: M.padding_mask(lengths, max_len),
        padding_probes,
    ),
    Exercise(
        f"{LESSON}/combine-masks",
        "combining masks",
        "combine_masks",
        M.combine_masks,
        combine_probes,
    ),
    Exercise(
        f"{LESSON}/masked-softmax",
        "masked softmax without the NaN trap",
        "masked_softmax",
        A.masked_softmax,
        masked_softmax_probes,
    ),
    Exercise(
        f"{LESSON}/attention",
        "masked attention with zero rows for empty masks",
        "masked_attention",
        lambda q, k, v, mask=None: A.scaled_dot_product_attention(q, k, v, mask=mask),
        attention_probes,
        SDPA_OPS,
        SDPA_HINT,
    ),
    Exercise(
        f"{LESSON}/changed-positions",
        "which outputs move when a token is perturbed",
        "changed_positions",
        changed_positions,
        changed_positions_probes,
    ),
    Exercise(
        f"{LESSON}/leak-test", "the future must not leak", "leaks_future", leaks_future, leak_probes
    ),
]
