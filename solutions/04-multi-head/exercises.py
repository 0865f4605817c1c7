"""Lesson 04 (multi-head attention, GQA and MQA), declared once: exercises, references, probes,
points, known mistakes.

Graded against `solutions/kernels/heads.py` (split and merge, the GQA head mapping, the layer)
and `solutions/kernels/weights.py` (weight layouts, parameter counts). The stride exercise is
judged against what PyTorch itself does on a tensor of that shape (`heads.merge_trace`).
The known mistakes include the ones every multi-head implementation meets: a view without the
transpose, a missing `contiguous`, query head h reading key/value head h % n_kv_heads, a repeat
along the wrong dimension, a missing mask, heads merged in the wrong order.
"""

from __future__ import annotations

import torch

from course.calling import SDPA_ATEN_OPS
from course.lesson import Exercise, Lesson, Mistake, Probe, inspected_by, randn, seeded
from solutions.kernels import heads as H
from solutions.kernels import masks as M
from solutions.kernels import weights as W

# The reshapes move no numbers where moving none is possible (course/probe_layers.py): the
# split is always a view of x, the merge is one when T == 1 or H == 1 (section 3).
SPLIT_VIEW = "course.probe_layers:inspect_split_view"
MERGE_VIEW = "course.probe_layers:inspect_merge_view"


# ---------------------------------------------------------------- split_heads


def one_token(B: int, T: int, D: int, t: int, dtype=torch.float32) -> torch.Tensor:
    """x (B, T, D) that is zero except token t, which holds 1, 2, ..., D (each batch element
    offset by 100): splitting it is the perturbation test, since a split is linear."""
    x = torch.zeros(B, T, D, dtype=dtype)
    x[:, t, :] = torch.arange(1, D + 1, dtype=dtype) + 100 * torch.arange(B, dtype=dtype)[:, None]
    return x


SPLIT_ORDER_HINT = (
    "a view or reshape to (B, n_heads, T, d_head) straight from memory order (x.view(B, "
    "n_heads, T, d_head), or .reshape(B, n_heads, T, d_head) of the (B, T, n_heads, d_head) "
    "view) has the right shape but never moves a number: each head takes a block of T * d_head "
    "consecutive numbers, which spans several tokens (in the first check, token 2's features "
    "landed in tokens 0 and 1 of head 1). Only transpose/permute reorders dimensions: "
    "view(B, T, n_heads, d_head), then transpose(1, 2)"
)

SPLIT_MISTAKES = [
    Mistake(
        id="split-copies",
        hint="split_heads must return a view of x: torch.stack of x.chunk(...) (or torch.cat, "
        ".contiguous(), .clone()) gives the right numbers in new memory, a copy of every "
        "activation in every layer. view(B, T, n_heads, d_head).transpose(1, 2) only changes "
        "sizes and strides",
        source="""
def split_heads(x, n_heads):
    return torch.stack(x.chunk(n_heads, dim=-1), dim=1)
""",
    ),
    Mistake(
        id="split-view-without-transpose",
        hint=SPLIT_ORDER_HINT,
        source="""
def split_heads(x, n_heads):
    B, T, D = x.shape
    return x.view(B, n_heads, T, D // n_heads)
""",
    ),
    Mistake(
        id="split-reshape-instead-of-transpose",
        hint=SPLIT_ORDER_HINT,
        source="""
def split_heads(x, n_heads):
    B, T, D = x.shape
    return x.view(B, T, n_heads, D // n_heads).reshape(B, n_heads, T, D // n_heads)
""",
    ),
    Mistake(
        id="split-batch-and-tokens-swapped",
        hint="x is (B, T, D), batch first: reading it as (T, B, ...) and permuting back mixes "
        "the samples of the batch (token t of sample b comes from another sample's memory). It "
        "goes unnoticed when B == 1: view(B, T, n_heads, d_head), then transpose(1, 2)",
        source="""
def split_heads(x, n_heads):
    B, T, D = x.shape
    return x.reshape(T, B, n_heads, D // n_heads).permute(1, 2, 0, 3)
""",
    ),
    Mistake(
        id="split-without-transpose",
        hint="view(B, T, n_heads, d_head) is half of it: attention wants the heads before the "
        "tokens, (B, n_heads, T, d_head), so that each head's (T, d_head) matrix is one batch "
        "entry of the matmul: add .transpose(1, 2)",
        source="""
def split_heads(x, n_heads):
    B, T, D = x.shape
    return x.view(B, T, n_heads, D // n_heads)
""",
    ),
    Mistake(
        id="split-heads-strided",
        hint="view(B, T, d_head, n_heads) gives head h the features h, h + n_heads, h + 2 n_heads,"
        " ... (strided), but head h owns the consecutive features h * d_head .. (h + 1) * d_head "
        "- 1, the rows of W_q that belong to it: view(B, T, n_heads, d_head)",
        source="""
def split_heads(x, n_heads):
    B, T, D = x.shape
    return x.view(B, T, D // n_heads, n_heads).permute(0, 3, 1, 2)
""",
    ),
    Mistake(
        id="split-count-and-width-swapped",
        hint="n_heads is the number of heads and d_head = D // n_heads the width of each: "
        "view(B, T, n_heads, D // n_heads), not view(B, T, D // n_heads, n_heads)",
        source="""
def split_heads(x, n_heads):
    B, T, D = x.shape
    return x.view(B, T, D // n_heads, n_heads).transpose(1, 2)
""",
    ),
]


@inspected_by(SPLIT_VIEW)
def split_visible() -> list[Probe]:
    g = seeded(401)
    return [
        Probe(
            name="perturb token 2 only (x is zero elsewhere): only token 2's rows may change, in "
            "every head (B=1, T=4, D=6, 2 heads)",
            args=(one_token(1, 4, 6, 2), 2),
        ),
        Probe(name="B=2, T=5, D=12, 3 heads", args=(randn(g, 2, 5, 12), 3)),
        Probe(name="one head: just a new axis", args=(randn(g, 2, 3, 4), 1)),
        Probe(name="one token (T=1), 4 heads", args=(randn(g, 2, 1, 8), 4)),
    ]


@inspected_by(SPLIT_VIEW)
def split_hidden(g: torch.Generator) -> list[Probe]:
    T = int(torch.randint(2, 9, (1,), generator=g))
    t = int(torch.randint(0, T, (1,), generator=g))
    return [
        Probe(name=f"perturb token {t} of {T} (3 heads)", args=(one_token(2, T, 12, t), 3)),
        Probe(name="perturb the last token (T=5, 4 heads)", args=(one_token(1, 5, 8, 4), 4)),
        Probe(name="B=3, T=7, D=16, 4 heads", args=(randn(g, 3, 7, 16), 4)),
        Probe(name="T = n_heads = d_head = 4", args=(randn(g, 2, 4, 16), 4)),
        Probe(name="8 heads of width 2", args=(randn(g, 1, 6, 16), 8)),
        Probe(name="one head", args=(randn(g, 2, 5, 6), 1)),
        Probe(name="one token (T=1)", args=(randn(g, 3, 1, 12), 6)),
        Probe(name="float64", args=(randn(g, 2, 5, 12, dtype=torch.float64), 2)),
        Probe(name="float16", args=(randn(g, 2, 5, 12, dtype=torch.float16), 3)),
        Probe(
            name="gradient (float64) with respect to x",
            args=(randn(g, 2, 5, 12, dtype=torch.float64), 3),
            mode="grad",
            grad_seed=41,
        ),
    ]


# ---------------------------------------------------------------- merge_heads

MERGE_MISTAKES = [
    Mistake(
        id="merge-always-copies",
        hint="with one token (T = 1, every step of generation) or one head, merging needs no "
        "copy, and torch.cat (or .clone()) copies anyway: transpose(1, 2).contiguous().view(...) "
        "or .reshape(...) copy only when a view is impossible",
        source="""
def merge_heads(x):
    return torch.cat(x.unbind(dim=1), dim=-1)
""",
    ),
    Mistake(
        id="merge-missing-contiguous",
        hint="after transpose(1, 2) the tensor is not contiguous: the features of one token are "
        "no longer side by side in memory, so .view(B, T, H * d) raises. Call .contiguous() "
        "before the view (or use .reshape, which copies when it must)",
        source="""
def merge_heads(x):
    B, H, T, d = x.shape
    return x.transpose(1, 2).view(B, T, H * d)
""",
    ),
    Mistake(
        id="merge-without-transpose",
        hint="reshape(B, T, H * d) straight from (B, H, T, d) has the right shape but mixes "
        "tokens: it cuts head 0's (T, d) block into pieces and calls them tokens. Undo the "
        "split in reverse order: transpose(1, 2) back to (B, T, H, d), then flatten the last two",
        source="""
def merge_heads(x):
    B, H, T, d = x.shape
    return x.reshape(B, T, H * d)
""",
    ),
    Mistake(
        id="merge-heads-innermost",
        hint="permute(0, 2, 3, 1) puts the head axis last, so the merged features come out "
        "interleaved (feature i * H + h): head h's output must fill the consecutive features "
        "h * d .. (h + 1) * d - 1, which W_o's columns expect. Use transpose(1, 2)",
        source="""
def merge_heads(x):
    B, H, T, d = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, T, H * d)
""",
    ),
    Mistake(
        id="merge-casts-float32",
        hint="the merge must keep the input's dtype (float64 in, float64 out): a reshape never "
        "needs .float() or .to(torch.float32)",
        source="""
def merge_heads(x):
    B, H, T, d = x.shape
    return x.transpose(1, 2).reshape(B, T, H * d).to(torch.float32)
""",
    ),
    Mistake(
        id="merge-detaches",
        hint=".detach() cuts the merge out of autograd: the layer's weights would get no "
        "gradient through it. Reshapes are differentiable as they are: drop the .detach()",
        source="""
def merge_heads(x):
    B, H, T, d = x.shape
    return x.transpose(1, 2).reshape(B, T, H * d).detach()
""",
    ),
    Mistake(
        id="merge-keeps-heads",
        hint="transpose(1, 2) gives (B, T, H, d): flatten the last two dimensions into one of "
        "width H * d, e.g. .reshape(B, T, H * d)",
        source="""
def merge_heads(x):
    return x.transpose(1, 2).contiguous()
""",
    ),
]


@inspected_by(MERGE_VIEW)
def merge_visible() -> list[Probe]:
    g = seeded(402)
    return [
        Probe(name="B=2, 3 heads, T=4, d=2", args=(randn(g, 2, 3, 4, 2),)),
        Probe(name="1 head, T=5, d=3", args=(randn(g, 1, 1, 5, 3),)),
        Probe(name="4 heads, one token (T=1, as when generating)", args=(randn(g, 2, 4, 1, 3),)),
        Probe(name="2 heads, T=6, d=4", args=(randn(g, 1, 2, 6, 4),)),
        Probe(name="float64 stays float64", args=(randn(g, 2, 3, 2, 2, dtype=torch.float64),)),
        Probe(
            name="gradient (float64): the merge passes gradients back unchanged",
            args=(randn(g, 1, 2, 3, 2, dtype=torch.float64),),
            mode="grad",
            grad_seed=47,
        ),
    ]


@inspected_by(MERGE_VIEW)
def merge_hidden(g: torch.Generator) -> list[Probe]:
    return [
        Probe(name="B=3, 4 heads, T=7, d=4", args=(randn(g, 3, 4, 7, 4),)),
        Probe(name="T = H = d = 3", args=(randn(g, 2, 3, 3, 3),)),
        Probe(name="8 heads of width 2", args=(randn(g, 1, 8, 5, 2),)),
        Probe(name="one token (T=1)", args=(randn(g, 2, 6, 1, 4),)),
        Probe(name="one head", args=(randn(g, 2, 1, 5, 6),)),
        Probe(name="float64", args=(randn(g, 2, 3, 4, 5, dtype=torch.float64),)),
        Probe(name="bfloat16", args=(randn(g, 2, 3, 4, 5, dtype=torch.bfloat16),)),
        Probe(
            name="gradient (float64)",
            args=(randn(g, 2, 3, 4, 5, dtype=torch.float64),),
            mode="grad",
            grad_seed=42,
        ),
    ]


# ---------------------------------------------------------------- strides


TRACE_MISTAKES = [
    Mistake(
        id="trace-transpose-restrides",
        hint="transpose copies nothing: it swaps the two strides (and sizes) and keeps the same "
        "memory, so the strides of out.transpose(1, 2) are out's strides with entries 1 and 2 "
        "swapped, (H T d, d, T d, 1), not the strides of a fresh (B, T, H, d) tensor",
        source="""
def merge_trace(B, H, T, d):
    return (H * T * d, T * d, d, 1), (T * H * d, H * d, d, 1), False
""",
    ),
    Mistake(
        id="trace-strides-reversed",
        hint="PyTorch is row-major: the last dimension has stride 1 and each stride is the "
        "product of the sizes after it, so a contiguous (B, H, T, d) has strides (H T d, T d, d, 1)",
        source="""
def merge_trace(B, H, T, d):
    return (1, B, B * H, B * H * T), (1, B * H, B, B * H * T), False
""",
    ),
    Mistake(
        id="trace-view-always-raises",
        hint="the view fails only when merging H and d needs two strides that do not fit: with "
        "one token (T = 1, as when generating one token at a time) or one head, H and d are "
        "adjacent in memory and .view works, which is why a missing .contiguous() can hide "
        "until the first training batch",
        source="""
def merge_trace(B, H, T, d):
    return (H * T * d, T * d, d, 1), (H * T * d, d, T * d, 1), False
""",
    ),
    Mistake(
        id="trace-view-batch-one",
        hint="B == 1 does not help: the view merges H and d inside one sample, where the "
        "strides (T d and 1) still need T == 1 (or H == 1) to fit; one sequence of several "
        "tokens (a prompt) raises as a batch does",
        source="""
def merge_trace(B, H, T, d):
    return (H * T * d, T * d, d, 1), (H * T * d, d, T * d, 1), T == 1 or H == 1 or B == 1
""",
    ),
    Mistake(
        id="trace-view-forgets-one-head",
        hint="with one head (H == 1) the head dimension has size 1 and is never stepped along, so "
        "merging it with d imposes nothing: .view works for H == 1 as for T == 1",
        source="""
def merge_trace(B, H, T, d):
    return (H * T * d, T * d, d, 1), (H * T * d, d, T * d, 1), T == 1
""",
    ),
    Mistake(
        id="trace-transpose-keeps-strides",
        hint="transpose(1, 2) swaps the strides of dimensions 1 and 2 along with their sizes: "
        "out.transpose(1, 2) has strides (H T d, d, T d, 1), not out's own",
        source="""
def merge_trace(B, H, T, d):
    s = (H * T * d, T * d, d, 1)
    return s, s, T == 1 or H == 1
""",
    ),
    Mistake(
        id="trace-batch-stride",
        hint="the batch stride skips one whole sample, H * T * d numbers (the product of all the "
        "sizes after it); a transpose of dimensions 1 and 2 leaves it alone",
        source="""
def merge_trace(B, H, T, d):
    return (T * d, T * d, d, 1), (T * d, d, T * d, 1), T == 1 or H == 1
""",
    ),
    Mistake(
        id="trace-view-always-works",
        hint="merging dimensions H (stride T d) and d (stride 1) into one needs stride(H) == "
        "d * stride(d): true only when T == 1 (or H == 1), so for a real batch .view raises",
        source="""
def merge_trace(B, H, T, d):
    return (H * T * d, T * d, d, 1), (H * T * d, d, T * d, 1), True
""",
    ),
]


def trace_visible() -> list[Probe]:
    return [
        Probe(name="B=2, H=3, T=4, d=5", args=(2, 3, 4, 5)),
        Probe(name="one new token (T=1): B=1, H=4, T=1, d=8", args=(1, 4, 1, 8)),
        Probe(name="one head: B=2, H=1, T=6, d=4", args=(2, 1, 6, 4)),
        Probe(name="one sequence of 4 tokens (B=1): B=1, H=3, T=4, d=5", args=(1, 3, 4, 5)),
        Probe(name="GPT-2 small's heads: B=8, H=12, T=1024, d=64", args=(8, 12, 1024, 64)),
    ]


def trace_hidden(g: torch.Generator) -> list[Probe]:
    B, H, T, d = (int(v) for v in torch.randint(2, 10, (4,), generator=g))
    cases = [(B, H, T, d), (3, 2, 7, 4), (1, 8, 3, 16), (4, 6, 1, 2), (2, 1, 9, 3), (1, 32, 1, 128)]
    cases += [(16, 32, 4096, 128), (1, 2, 2, 2), (1, 12, 7, 64)]
    return [Probe(name=f"B={b}, H={h}, T={t}, d={e}", args=(b, h, t, e)) for b, h, t, e in cases]


# ---------------------------------------------------------------- repeat_kv


def distinct_kv(B: int, G: int, T: int, d: int, dtype=torch.float32) -> torch.Tensor:
    """(B, G, T, d) whose kv head g holds numbers near 10 g: a wrong mapping shows which head
    ended up where."""
    g = torch.arange(G, dtype=torch.float64)[None, :, None, None] * 10
    noise = torch.arange(B * G * T * d, dtype=torch.float64).reshape(B, G, T, d) % 7 / 10
    return (g + noise).to(dtype)


REPEAT_MISTAKES = [
    Mistake(
        id="kv-modulo",
        hint="query head h reads key/value head h // n_rep: consecutive query heads share one "
        "kv head (GQA's groups, Llama's repeat_kv), not h % n_kv_heads. With 4 query heads on 2 "
        "kv heads, h % 2 swaps heads 1 and 2 (head 1 gets kv head 1, head 2 gets kv head 0)",
        source="""
def repeat_kv(x, n_rep):
    G = x.shape[1]
    return x[:, torch.arange(G * n_rep) % G]
""",
    ),
    Mistake(
        id="kv-repeat-tiles",
        hint="x.repeat(1, n_rep, 1, 1) tiles the heads (kv 0, 1, 0, 1: query head h reads kv "
        "head h % n_kv_heads); each kv head must be repeated in place (0, 0, 1, 1): "
        "x.repeat_interleave(n_rep, dim=1)",
        source="""
def repeat_kv(x, n_rep):
    return x.repeat(1, n_rep, 1, 1)
""",
    ),
    Mistake(
        id="kv-groups-reversed",
        hint="the groups are in reverse order (query head 0 reads the last kv head): query head "
        "h reads kv head h // n_rep, so heads 0 .. n_rep - 1 read kv head 0",
        source="""
def repeat_kv(x, n_rep):
    return x.flip(1).repeat_interleave(n_rep, dim=1)
""",
    ),
    Mistake(
        id="kv-casts-float32",
        hint="repeat_kv must keep the input's dtype (float64 in, float64 out): copying heads "
        "never needs .float() or .to(torch.float32)",
        source="""
def repeat_kv(x, n_rep):
    return x.repeat_interleave(n_rep, dim=1).float()
""",
    ),
    Mistake(
        id="kv-detaches",
        hint=".detach() cuts the copies out of autograd: W_k and W_v would get no gradient. "
        "Each kv head must collect the gradients of its whole group: drop the .detach()",
        source="""
def repeat_kv(x, n_rep):
    return x.repeat_interleave(n_rep, dim=1).detach()
""",
    ),
    Mistake(
        id="kv-repeat-tokens",
        hint="repeat_interleave(n_rep, dim=2) repeats the tokens (T * n_rep of them); the heads "
        "are dimension 1 of (B, n_kv_heads, T, d)",
        source="""
def repeat_kv(x, n_rep):
    return x.repeat_interleave(n_rep, dim=2)
""",
    ),
    Mistake(
        id="kv-repeat-batch",
        hint="repeat_interleave without dim=1 (or with dim=0) repeats along the batch or "
        "flattens: repeat along the heads, dimension 1 of (B, n_kv_heads, T, d)",
        source="""
def repeat_kv(x, n_rep):
    return x.repeat_interleave(n_rep, dim=0)
""",
    ),
]


# F.scaled_dot_product_attention(enable_gqa=True) shares the kv heads inside attention: with
# one-hot rows it returns the repeated values (the stand-in for a learner's repeat_kv does that).
REPEAT_FORBIDDEN = {
    name: "F.scaled_dot_product_attention"
    for name in ("torch.nn.functional:scaled_dot_product_attention", *SDPA_ATEN_OPS)
}
REPEAT_FORBIDDEN_HINT = (
    "With enable_gqa=True it shares the kv heads inside attention, without repeating them: the "
    "exercise is to repeat them yourself, with repeat_interleave on dimension 1 (or expand and "
    "reshape)."
)


def repeat_visible() -> list[Probe]:
    return [
        Probe(
            name="4 query heads on 2 distinguishable kv heads (n_rep = 2)",
            args=(distinct_kv(1, 2, 3, 2), 2),
        ),
        Probe(name="MQA: 1 kv head for 4 query heads", args=(distinct_kv(2, 1, 3, 2), 4)),
        Probe(name="MHA: n_rep = 1 changes nothing", args=(distinct_kv(1, 3, 2, 2), 1)),
        Probe(name="8 query heads on 2 kv heads (n_rep = 4)", args=(distinct_kv(1, 2, 2, 2), 4)),
        Probe(
            name="float64 stays float64 (3 kv heads, n_rep = 2)",
            args=(distinct_kv(1, 3, 2, 2, torch.float64), 2),
        ),
        Probe(
            name="gradient (float64): each kv head collects the gradients of its group",
            args=(distinct_kv(1, 2, 2, 2, torch.float64), 2),
            mode="grad",
            grad_seed=48,
        ),
    ]


def repeat_hidden(g: torch.Generator) -> list[Probe]:
    return [
        Probe(name="2 kv heads, n_rep = 2", args=(distinct_kv(2, 2, 4, 3), 2)),
        Probe(name="4 kv heads, n_rep = 2", args=(distinct_kv(1, 4, 3, 2), 2)),
        Probe(name="3 kv heads, n_rep = 3", args=(randn(g, 2, 3, 4, 2), 3)),
        Probe(
            name="8 kv heads, n_rep = 8 (Llama-2-70B's grouping)", args=(randn(g, 1, 8, 2, 4), 8)
        ),
        Probe(name="MQA: 1 kv head, n_rep = 6", args=(randn(g, 2, 1, 5, 4), 6)),
        Probe(name="MHA: n_rep = 1", args=(randn(g, 2, 4, 3, 2), 1)),
        Probe(name="float64", args=(randn(g, 2, 2, 3, 4, dtype=torch.float64), 3)),
        Probe(
            name="gradient (float64): each kv head collects the gradients of its group",
            args=(randn(g, 2, 2, 3, 4, dtype=torch.float64), 2),
            mode="grad",
            grad_seed=43,
        ),
    ]


# ---------------------------------------------------------------- the layer


def projections(g, D: int, n_heads: int, n_kv: int, dtype=torch.float32, d: int = 0) -> tuple:
    """W_q, W_k, W_v, W_o for heads of width d (D // n_heads unless given)."""
    d = d or D // n_heads
    scale = D**-0.5
    return (
        randn(g, n_heads * d, D, scale=scale, dtype=dtype),
        randn(g, n_kv * d, D, scale=scale, dtype=dtype),
        randn(g, n_kv * d, D, scale=scale, dtype=dtype),
        randn(g, D, n_heads * d, scale=scale, dtype=dtype),
    )


def shared_query_weights(g, D: int, n_heads: int, n_kv: int) -> tuple:
    """Every query head with the same W_q rows, distinct kv heads, W_o the identity: the output's
    block h is then attention with kv head map(h) alone, so a wrong mapping moves whole blocks."""
    d = D // n_heads
    W_q = randn(g, d, D, scale=D**-0.5).repeat(n_heads, 1)
    W_k = randn(g, n_kv * d, D, scale=2 * D**-0.5)
    W_v = randn(g, n_kv * d, D, scale=D**-0.5) + torch.arange(n_kv).repeat_interleave(d)[:, None]
    return W_q, W_k, W_v, torch.eye(D)


def right_padding(lengths: list[int], T: int) -> torch.Tensor:
    return M.padding_mask(lengths, T)


LAYER_SOURCE = """
def multi_head_attention(x, W_q, W_k, W_v, W_o, n_heads, n_kv_heads=None, attn_mask=None,
                         is_causal=True):
    n_kv_heads = n_kv_heads or n_heads
    T = x.shape[1]
    q = split_heads(x @ W_q.T, n_heads)
    k = repeat_kv(split_heads(x @ W_k.T, n_kv_heads), n_heads // n_kv_heads)
    v = repeat_kv(split_heads(x @ W_v.T, n_kv_heads), n_heads // n_kv_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    mask = torch.ones(T, T, dtype=torch.bool).tril() if is_causal else torch.ones(T, T, dtype=torch.bool)
    if attn_mask is not None:
        mask = mask & attn_mask
    scores = scores.masked_fill(~mask, float("-inf"))
    return merge_heads(torch.softmax(scores, dim=-1) @ v) @ W_o.T
"""


def layer_source(*changes: tuple[str, str]) -> str:
    """The right layer with each (old, new) text replaced: one typical mistake."""
    source = LAYER_SOURCE
    for old, new in changes:
        assert old in source, old
        source = source.replace(old, new)
    return source


D_HEAD_HINT = (
    "d_head is the width of one head, W_q.shape[0] // n_heads (= q.shape[-1] after the split), "
    "not x.shape[-1] // n_heads: the two agree only when n_heads * d_head == d_model"
)

LAYER_MISTAKES = [
    Mistake(
        id="layer-no-scale",
        hint="the scores are not scaled: divide q @ k^T by sqrt(d_head) (lesson 02), or the "
        "softmax saturates as d_head grows",
        source=layer_source((" / math.sqrt(q.shape[-1])", "")),
    ),
    Mistake(
        id="layer-scale-without-sqrt",
        hint="divide the scores by sqrt(d_head), not by d_head: the dot product of two d_head-wide"
        " vectors has variance d_head, so its standard deviation is sqrt(d_head) (lesson 02)",
        source=layer_source(("math.sqrt(q.shape[-1])", "q.shape[-1]")),
    ),
    Mistake(
        id="layer-scale-n-heads",
        hint="the scale is 1/sqrt(d_head), the width of one head's dot product (q.shape[-1]), "
        "not 1/sqrt(n_heads)",
        source=layer_source(("math.sqrt(q.shape[-1])", "math.sqrt(n_heads)")),
    ),
    Mistake(
        id="layer-d-head-from-x",
        hint=D_HEAD_HINT,
        source=layer_source(("math.sqrt(q.shape[-1])", "math.sqrt(x.shape[-1] // n_heads)")),
    ),
    Mistake(
        id="layer-d-head-from-x-in-view",
        hint=D_HEAD_HINT,
        source=layer_source(
            (
                "q = split_heads(x @ W_q.T, n_heads)",
                "q = (x @ W_q.T).view(x.shape[0], T, n_heads, x.shape[-1] // n_heads)"
                ".transpose(1, 2)",
            )
        ),
    ),
    Mistake(
        id="layer-causal-shifted-up",
        hint="tril(1) keeps one diagonal above the main one: query i also sees key i + 1, one "
        "token of the future. The causal mask is tril() (diagonal 0): keys 0..i",
        source=layer_source((".tril()", ".tril(1)")),
    ),
    Mistake(
        id="layer-causal-without-diagonal",
        hint="tril(-1) drops the diagonal: query i may not see its own token, and query 0 sees "
        "nothing at all (a row of -inf, NaN after the softmax). The causal mask is tril(): keys "
        "0..i, the query's own included",
        source=layer_source((".tril()", ".tril(-1)")),
    ),
    Mistake(
        id="layer-mask-inverted",
        hint="the mask is inverted: here True = may attend (lesson 03), so fill -inf where the "
        "mask is False, masked_fill(~mask, -inf). (nn.MultiheadAttention's boolean attn_mask "
        "means the opposite, True = blocked)",
        source=layer_source(("masked_fill(~mask,", "masked_fill(mask,")),
    ),
    Mistake(
        id="layer-masks-or",
        hint="causal | attn_mask lets a query attend where EITHER mask allows (padded keys "
        "through the causal part, future keys through the padding part): combine them with &, "
        "may attend only where both allow",
        source=layer_source(("mask & attn_mask", "mask | attn_mask")),
    ),
    Mistake(
        id="layer-attn-mask-replaces-causal",
        hint="attn_mask replaced the causal mask, so with a padding mask the queries see the "
        "future: combine the two, mask = causal & attn_mask",
        source=layer_source(("mask = mask & attn_mask", "mask = attn_mask")),
    ),
    Mistake(
        id="layer-projections-not-transposed",
        hint="weights are (d_out, d_in) as in nn.Linear: project with x @ W_q.T (and W_k.T, "
        "W_v.T); x @ W_q only runs because W_q is square here",
        source=layer_source(
            ("x @ W_q.T", "x @ W_q"), ("x @ W_k.T", "x @ W_k"), ("x @ W_v.T", "x @ W_v")
        ),
    ),
    Mistake(
        id="layer-values-tiled",
        hint="the values are repeated the h % n_kv_heads way (.repeat tiles them) while the keys "
        "use h // n_rep: query head h scores kv head h // n_rep's keys but averages another kv "
        "head's values. Repeat both with repeat_kv",
        source=layer_source(
            (
                "v = repeat_kv(split_heads(x @ W_v.T, n_kv_heads), n_heads // n_kv_heads)",
                "v = split_heads(x @ W_v.T, n_kv_heads).repeat(1, n_heads // n_kv_heads, 1, 1)",
            )
        ),
    ),
    Mistake(
        id="layer-kv-split-into-query-heads",
        hint="under GQA, k and v have n_kv_heads heads (W_k has n_kv_heads * d_head rows): split "
        "them into n_kv_heads heads, then repeat_kv them by n_heads // n_kv_heads",
        source=layer_source(
            (
                "k = repeat_kv(split_heads(x @ W_k.T, n_kv_heads), n_heads // n_kv_heads)",
                "k = split_heads(x @ W_k.T, n_heads)",
            ),
            (
                "v = repeat_kv(split_heads(x @ W_v.T, n_kv_heads), n_heads // n_kv_heads)",
                "v = split_heads(x @ W_v.T, n_heads)",
            ),
        ),
    ),
    Mistake(
        id="layer-output-float32",
        hint="the output must keep x's dtype (float64 in, float64 out): no .float() or "
        ".to(torch.float32) on the way",
        source=layer_source(("@ W_o.T\n", "@ W_o.T).float()\n"), ("return merge", "return (merge")),
    ),
    Mistake(
        id="layer-no-causal-mask",
        hint="only the last position is right (the last query may see every key anyway): the "
        "causal mask is missing. With is_causal=True, query i may see keys 0..i only",
        source="""
def multi_head_attention(x, W_q, W_k, W_v, W_o, n_heads, n_kv_heads=None, attn_mask=None,
                         is_causal=True):
    n_kv_heads = n_kv_heads or n_heads
    q = split_heads(x @ W_q.T, n_heads)
    k = repeat_kv(split_heads(x @ W_k.T, n_kv_heads), n_heads // n_kv_heads)
    v = repeat_kv(split_heads(x @ W_v.T, n_kv_heads), n_heads // n_kv_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return merge_heads(torch.softmax(scores, dim=-1) @ v) @ W_o.T
""",
    ),
    Mistake(
        id="layer-scale-d-model",
        hint="scale the scores by 1/sqrt(d_head), the width of one head's dot products "
        "(q.shape[-1]), not 1/sqrt(d_model)",
        source="""
def multi_head_attention(x, W_q, W_k, W_v, W_o, n_heads, n_kv_heads=None, attn_mask=None,
                         is_causal=True):
    n_kv_heads = n_kv_heads or n_heads
    T = x.shape[1]
    q = split_heads(x @ W_q.T, n_heads)
    k = repeat_kv(split_heads(x @ W_k.T, n_kv_heads), n_heads // n_kv_heads)
    v = repeat_kv(split_heads(x @ W_v.T, n_kv_heads), n_heads // n_kv_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(x.shape[-1])
    mask = torch.ones(T, T, dtype=torch.bool).tril() if is_causal else torch.ones(T, T, dtype=torch.bool)
    if attn_mask is not None:
        mask = mask & attn_mask
    scores = scores.masked_fill(~mask, float("-inf"))
    return merge_heads(torch.softmax(scores, dim=-1) @ v) @ W_o.T
""",
    ),
    Mistake(
        id="layer-kv-tiled",
        hint="k.repeat(1, n_rep, 1, 1) tiles the kv heads, so query head h reads kv head "
        "h % n_kv_heads; GQA groups consecutive query heads: head h reads kv head h // n_rep "
        "(your repeat_kv)",
        source="""
def multi_head_attention(x, W_q, W_k, W_v, W_o, n_heads, n_kv_heads=None, attn_mask=None,
                         is_causal=True):
    n_kv_heads = n_kv_heads or n_heads
    T = x.shape[1]
    q = split_heads(x @ W_q.T, n_heads)
    k = split_heads(x @ W_k.T, n_kv_heads).repeat(1, n_heads // n_kv_heads, 1, 1)
    v = split_heads(x @ W_v.T, n_kv_heads).repeat(1, n_heads // n_kv_heads, 1, 1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    mask = torch.ones(T, T, dtype=torch.bool).tril() if is_causal else torch.ones(T, T, dtype=torch.bool)
    if attn_mask is not None:
        mask = mask & attn_mask
    scores = scores.masked_fill(~mask, float("-inf"))
    return merge_heads(torch.softmax(scores, dim=-1) @ v) @ W_o.T
""",
    ),
    Mistake(
        id="layer-output-projection-transposed",
        hint="weights are (d_out, d_in) as in nn.Linear: the output projection is "
        "merged @ W_o.T; merged @ W_o only has the right shape because W_o is square",
        source="""
def multi_head_attention(x, W_q, W_k, W_v, W_o, n_heads, n_kv_heads=None, attn_mask=None,
                         is_causal=True):
    n_kv_heads = n_kv_heads or n_heads
    T = x.shape[1]
    q = split_heads(x @ W_q.T, n_heads)
    k = repeat_kv(split_heads(x @ W_k.T, n_kv_heads), n_heads // n_kv_heads)
    v = repeat_kv(split_heads(x @ W_v.T, n_kv_heads), n_heads // n_kv_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    mask = torch.ones(T, T, dtype=torch.bool).tril() if is_causal else torch.ones(T, T, dtype=torch.bool)
    if attn_mask is not None:
        mask = mask & attn_mask
    scores = scores.masked_fill(~mask, float("-inf"))
    return merge_heads(torch.softmax(scores, dim=-1) @ v) @ W_o
""",
    ),
    Mistake(
        id="layer-ignores-attn-mask",
        hint="attn_mask (True = may attend, e.g. a padding mask (B, 1, 1, T)) must be combined "
        "with the causal mask (&): padded keys are visible here",
        source="""
def multi_head_attention(x, W_q, W_k, W_v, W_o, n_heads, n_kv_heads=None, attn_mask=None,
                         is_causal=True):
    n_kv_heads = n_kv_heads or n_heads
    T = x.shape[1]
    q = split_heads(x @ W_q.T, n_heads)
    k = repeat_kv(split_heads(x @ W_k.T, n_kv_heads), n_heads // n_kv_heads)
    v = repeat_kv(split_heads(x @ W_v.T, n_kv_heads), n_heads // n_kv_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    mask = torch.ones(T, T, dtype=torch.bool).tril() if is_causal else torch.ones(T, T, dtype=torch.bool)
    scores = scores.masked_fill(~mask, float("-inf"))
    return merge_heads(torch.softmax(scores, dim=-1) @ v) @ W_o.T
""",
    ),
    Mistake(
        id="layer-softmax-over-queries",
        hint="the softmax runs over the keys, the last dimension (dim=-1): each query's weights "
        "sum to 1",
        source="""
def multi_head_attention(x, W_q, W_k, W_v, W_o, n_heads, n_kv_heads=None, attn_mask=None,
                         is_causal=True):
    n_kv_heads = n_kv_heads or n_heads
    T = x.shape[1]
    q = split_heads(x @ W_q.T, n_heads)
    k = repeat_kv(split_heads(x @ W_k.T, n_kv_heads), n_heads // n_kv_heads)
    v = repeat_kv(split_heads(x @ W_v.T, n_kv_heads), n_heads // n_kv_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    mask = torch.ones(T, T, dtype=torch.bool).tril() if is_causal else torch.ones(T, T, dtype=torch.bool)
    if attn_mask is not None:
        mask = mask & attn_mask
    scores = scores.masked_fill(~mask, float("-inf"))
    return merge_heads(torch.softmax(scores, dim=-2) @ v) @ W_o.T
""",
    ),
    Mistake(
        id="layer-merge-without-transpose",
        hint="(B, H, T, d) -> (B, T, H d) needs the transpose back before flattening (your "
        "merge_heads): reshape(B, T, -1) alone mixes tokens and heads, so the error sits in some "
        "heads' features and not in others",
        source="""
def multi_head_attention(x, W_q, W_k, W_v, W_o, n_heads, n_kv_heads=None, attn_mask=None,
                         is_causal=True):
    n_kv_heads = n_kv_heads or n_heads
    B, T, _ = x.shape
    q = split_heads(x @ W_q.T, n_heads)
    k = repeat_kv(split_heads(x @ W_k.T, n_kv_heads), n_heads // n_kv_heads)
    v = repeat_kv(split_heads(x @ W_v.T, n_kv_heads), n_heads // n_kv_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    mask = torch.ones(T, T, dtype=torch.bool).tril() if is_causal else torch.ones(T, T, dtype=torch.bool)
    if attn_mask is not None:
        mask = mask & attn_mask
    scores = scores.masked_fill(~mask, float("-inf"))
    return (torch.softmax(scores, dim=-1) @ v).reshape(B, T, -1) @ W_o.T
""",
    ),
    Mistake(
        id="layer-always-causal",
        hint="is_causal=False is an encoder's attention (and nn.MultiheadAttention's default): "
        "every query sees every key, so apply the causal mask only when is_causal is True",
        source="""
def multi_head_attention(x, W_q, W_k, W_v, W_o, n_heads, n_kv_heads=None, attn_mask=None,
                         is_causal=True):
    n_kv_heads = n_kv_heads or n_heads
    T = x.shape[1]
    q = split_heads(x @ W_q.T, n_heads)
    k = repeat_kv(split_heads(x @ W_k.T, n_kv_heads), n_heads // n_kv_heads)
    v = repeat_kv(split_heads(x @ W_v.T, n_kv_heads), n_heads // n_kv_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    if attn_mask is not None:
        mask = mask & attn_mask
    scores = scores.masked_fill(~mask, float("-inf"))
    return merge_heads(torch.softmax(scores, dim=-1) @ v) @ W_o.T
""",
    ),
]


def layer_visible() -> list[Probe]:
    g = seeded(404)
    x = randn(g, 2, 5, 8)
    return [
        Probe(name="MHA: 2 heads, d_model 8, causal", args=(x, *projections(g, 8, 2, 2), 2)),
        Probe(
            name="GQA: 4 query heads sharing one W_q, 2 distinguishable kv heads, W_o = I",
            args=(x, *shared_query_weights(g, 8, 4, 2), 4, 2),
        ),
        Probe(name="MQA: 4 query heads, 1 kv head", args=(x, *projections(g, 8, 4, 1), 4, 1)),
        Probe(
            name="right padding (lengths 5 and 3) with the causal mask",
            args=(x, *projections(g, 8, 2, 2), 2),
            kwargs={"attn_mask": right_padding([5, 3], 5)},
        ),
        Probe(
            name="is_causal=False (an encoder: every query sees every key)",
            args=(x, *projections(g, 8, 2, 2), 2),
            kwargs={"is_causal": False},
        ),
        Probe(
            name="float64 stays float64 (MHA, 2 heads)",
            args=(x.double(), *projections(g, 8, 2, 2, torch.float64), 2),
        ),
        Probe(
            name="heads wider than d_model / n_heads: d_model 8, 2 heads of width 6 (W_q is 12 x 8)",
            args=(x, *projections(g, 8, 2, 2, d=6), 2),
        ),
        Probe(
            name="gradient (float64) with respect to x and every weight, GQA 4/2",
            args=(randn(g, 1, 4, 8, dtype=torch.float64), *projections(g, 8, 4, 2, torch.float64)),
            kwargs={"n_heads": 4, "n_kv_heads": 2},
            mode="grad",
            grad_seed=44,
        ),
    ]


def layer_hidden(g: torch.Generator) -> list[Probe]:
    x = randn(g, 2, 6, 16)
    x64 = randn(g, 2, 5, 12, dtype=torch.float64)
    return [
        Probe(name="MHA, 4 heads, d_model 16", args=(x, *projections(g, 16, 4, 4), 4)),
        Probe(name="GQA 8 query heads / 2 kv heads", args=(x, *projections(g, 16, 8, 2), 8, 2)),
        Probe(
            name="GQA 8/4 with one shared W_q and distinguishable kv heads",
            args=(x, *shared_query_weights(g, 16, 8, 4), 8, 4),
        ),
        Probe(name="MQA 8/1", args=(x, *projections(g, 16, 8, 1), 8, 1)),
        Probe(name="one head", args=(x, *projections(g, 16, 1, 1), 1)),
        Probe(name="one token", args=(randn(g, 3, 1, 16), *projections(g, 16, 4, 2), 4, 2)),
        Probe(
            name="right padding (lengths 6 and 2), GQA 4/2",
            args=(x, *projections(g, 16, 4, 2), 4, 2),
            kwargs={"attn_mask": right_padding([6, 2], 6)},
        ),
        Probe(
            name="encoder (is_causal=False) with padding",
            args=(x, *projections(g, 16, 4, 4), 4),
            kwargs={"attn_mask": right_padding([4, 6], 6), "is_causal": False},
        ),
        Probe(name="float64, GQA 6/3", args=(x64, *projections(g, 12, 6, 3, torch.float64), 6, 3)),
        Probe(
            name="4 heads of width 8 on d_model 16, GQA 4/2",
            args=(x, *projections(g, 16, 4, 2, d=8), 4, 2),
        ),
        Probe(
            name="gradient (float64), MHA with padding",
            args=(x64, *projections(g, 12, 3, 3, torch.float64), 3),
            kwargs={"attn_mask": right_padding([5, 4], 5)},
            mode="grad",
            grad_seed=45,
        ),
        Probe(
            name="gradient (float64), MQA 6/1",
            args=(x64, *projections(g, 12, 6, 1, torch.float64), 6, 1),
            mode="grad",
            grad_seed=46,
        ),
    ]


# ---------------------------------------------------------------- weight layouts

LAYOUT_MISTAKES = [
    Mistake(
        id="layout-rows-interleaved",
        hint="interleave whole heads, not single rows: [q_0 | k_0 | v_0 | q_1 | ...] where q_h is "
        "head h's block of d_head rows (view the rows as (3, n_heads, d_head, ...), not "
        "(3, n_heads * d_head, ...))",
        source="""
def fused_to_per_head_interleaved(W_qkv, n_heads):
    rows = W_qkv.shape[0] // 3
    return W_qkv.reshape(3, rows, *W_qkv.shape[1:]).transpose(0, 1).reshape(W_qkv.shape)
""",
    ),
    Mistake(
        id="layout-wrong-direction",
        hint="this reads the fused rows as if they were already per head (the inverse "
        "conversion): the fused rows are [Q | K | V], so view them as (3, n_heads, d_head, ...) "
        "and swap the first two axes",
        source="""
def fused_to_per_head_interleaved(W_qkv, n_heads):
    d = W_qkv.shape[0] // (3 * n_heads)
    rest = W_qkv.shape[1:]
    return W_qkv.reshape(n_heads, 3, d, *rest).transpose(0, 1).reshape(W_qkv.shape)
""",
    ),
    Mistake(
        id="layout-order-kqv",
        hint="each head's block is [q_h | k_h | v_h], in that order",
        source="""
def fused_to_per_head_interleaved(W_qkv, n_heads):
    d = W_qkv.shape[0] // (3 * n_heads)
    rest = W_qkv.shape[1:]
    q, k, v = W_qkv.reshape(3, n_heads, d, *rest)
    return torch.stack([k, q, v], dim=1).reshape(W_qkv.shape)
""",
    ),
    Mistake(
        id="layout-matrix-only",
        hint="W_qkv may be a bias vector (3 n_heads d_head,) with no second dimension: keep "
        "whatever follows the rows as it is, e.g. reshape(3, n_heads, d_head, *W_qkv.shape[1:])",
        source="""
def fused_to_per_head_interleaved(W_qkv, n_heads):
    d = W_qkv.shape[0] // (3 * n_heads)
    return W_qkv.reshape(3, n_heads, d, W_qkv.shape[1]).transpose(0, 1).reshape(W_qkv.shape)
""",
    ),
    Mistake(
        id="layout-view-after-transpose",
        hint="after transpose(0, 1) the rows are not contiguous, so .view(W_qkv.shape) raises: "
        "use .reshape (which copies when it must), or .contiguous().view",
        source="""
def fused_to_per_head_interleaved(W_qkv, n_heads):
    d = W_qkv.shape[0] // (3 * n_heads)
    rest = W_qkv.shape[1:]
    return W_qkv.reshape(3, n_heads, d, *rest).transpose(0, 1).view(W_qkv.shape)
""",
    ),
    Mistake(
        id="layout-detaches",
        hint=".detach() cuts the conversion out of autograd: a converted weight must still be "
        "trainable. Moving rows is differentiable as it is: drop the .detach()",
        source="""
def fused_to_per_head_interleaved(W_qkv, n_heads):
    d = W_qkv.shape[0] // (3 * n_heads)
    rest = W_qkv.shape[1:]
    return W_qkv.reshape(3, n_heads, d, *rest).transpose(0, 1).reshape(W_qkv.shape).detach()
""",
    ),
    Mistake(
        id="layout-unchanged",
        hint="the rows must be reordered: [Q | K | V] -> [q_0 | k_0 | v_0 | q_1 | k_1 | v_1 | ...]",
        source="""
def fused_to_per_head_interleaved(W_qkv, n_heads):
    return W_qkv.clone()
""",
    ),
]


def labelled_qkv(n_heads: int, d: int, D: int) -> torch.Tensor:
    """Fused rows labelled by what they are: 100 * (0 q, 1 k, 2 v) + 10 * head + row in head."""
    which = torch.arange(3)[:, None, None] * 100
    head = torch.arange(n_heads)[None, :, None] * 10
    row = torch.arange(d)[None, None, :]
    label = (which + head + row).reshape(-1, 1).to(torch.float32)
    return label + torch.arange(D, dtype=torch.float32) / 100


def layout_visible() -> list[Probe]:
    g = seeded(405)
    return [
        Probe(
            name="2 heads of 2 rows, labelled rows (100 * qkv + 10 * head + row)",
            args=(labelled_qkv(2, 2, 3), 2),
        ),
        Probe(name="3 heads, d_model 6", args=(randn(g, 18, 6), 3)),
        Probe(name="a bias vector (3 * d_model,), 2 heads", args=(randn(g, 12), 2)),
        Probe(name="one head: nothing moves", args=(randn(g, 12, 4), 1)),
        Probe(
            name="gradient (float64): the rows' gradients move back with them",
            args=(randn(g, 12, 3, dtype=torch.float64), 2),
            mode="grad",
            grad_seed=49,
        ),
    ]


def layout_hidden(g: torch.Generator) -> list[Probe]:
    return [
        Probe(name="4 heads, labelled rows", args=(labelled_qkv(4, 3, 12), 4)),
        Probe(name="3 heads, d_model 12", args=(randn(g, 36, 12), 3)),
        Probe(name="6 heads of width 2", args=(randn(g, 36, 12), 6)),
        Probe(name="12 heads of width 1", args=(randn(g, 36, 12), 12)),
        Probe(name="bias vector, 4 heads", args=(randn(g, 24), 4)),
        Probe(name="float64", args=(randn(g, 24, 8, dtype=torch.float64), 2)),
        Probe(
            name="gradient (float64), 3 heads",
            args=(randn(g, 18, 4, dtype=torch.float64), 3),
            mode="grad",
            grad_seed=50,
        ),
    ]


# ---------------------------------------------------------------- parameter counts

ATTN_COUNT_MISTAKES = [
    Mistake(
        id="count-ignores-gqa",
        hint="W_k and W_v have n_kv_heads * d_head rows, not d_model: with GQA they shrink by "
        "n_heads / n_kv_heads (d_head = d_model // n_heads)",
        source="""
def attention_parameter_count(d_model, n_heads, n_kv_heads, bias=True):
    return 4 * d_model * d_model + (4 * d_model if bias else 0)
""",
    ),
    Mistake(
        id="count-no-output-projection",
        hint="four matrices: W_q, W_k, W_v and the output projection W_o (d_model x d_model)",
        source="""
def attention_parameter_count(d_model, n_heads, n_kv_heads, bias=True):
    kv = n_kv_heads * (d_model // n_heads)
    return d_model * d_model + 2 * kv * d_model + ((d_model + 2 * kv) if bias else 0)
""",
    ),
    Mistake(
        id="count-kv-without-head-dim",
        hint="a kv head has d_head = d_model // n_heads features, so W_k has n_kv_heads * d_head "
        "rows (not n_kv_heads rows)",
        source="""
def attention_parameter_count(d_model, n_heads, n_kv_heads, bias=True):
    kv = n_kv_heads
    return 2 * d_model * d_model + 2 * kv * d_model + ((2 * d_model + 2 * kv) if bias else 0)
""",
    ),
    Mistake(
        id="count-kv-bias-d-model",
        hint="with GQA the K and V biases shrink with their matrices: n_kv_heads * d_head each, "
        "not d_model (the biases are d_model + 2 n_kv_heads d_head + d_model)",
        source="""
def attention_parameter_count(d_model, n_heads, n_kv_heads, bias=True):
    kv = n_kv_heads * (d_model // n_heads)
    return 2 * d_model * d_model + 2 * kv * d_model + (4 * d_model if bias else 0)
""",
    ),
    Mistake(
        id="count-kv-rows-times-d-model",
        hint="W_k has n_kv_heads * d_head rows (d_head = d_model // n_heads), not n_kv_heads * "
        "d_model: each kv head is as wide as one query head",
        source="""
def attention_parameter_count(d_model, n_heads, n_kv_heads, bias=True):
    kv = n_kv_heads * d_model
    return 2 * d_model * d_model + 2 * kv * d_model + ((2 * d_model + 2 * kv) if bias else 0)
""",
    ),
    Mistake(
        id="count-no-output-bias",
        hint="the output projection W_o has a bias vector of d_model too when bias is True: four "
        "bias vectors (q, k, v, o)",
        source="""
def attention_parameter_count(d_model, n_heads, n_kv_heads, bias=True):
    kv = n_kv_heads * (d_model // n_heads)
    return 2 * d_model * d_model + 2 * kv * d_model + ((d_model + 2 * kv) if bias else 0)
""",
    ),
    Mistake(
        id="count-only-w-k-shrinks",
        hint="GQA shrinks W_v as well as W_k: both have n_kv_heads * d_head rows (and their biases "
        "n_kv_heads * d_head entries)",
        source="""
def attention_parameter_count(d_model, n_heads, n_kv_heads, bias=True):
    kv = n_kv_heads * (d_model // n_heads)
    return 3 * d_model * d_model + kv * d_model + ((3 * d_model + kv) if bias else 0)
""",
    ),
    Mistake(
        id="count-ignores-bias-flag",
        hint="bias=False (Llama, Mistral) means no bias vectors at all: count them only when bias "
        "is True",
        source="""
def attention_parameter_count(d_model, n_heads, n_kv_heads, bias=True):
    kv = n_kv_heads * (d_model // n_heads)
    return 2 * d_model * d_model + 2 * kv * d_model + 2 * d_model + 2 * kv
""",
    ),
]


def attn_count_visible() -> list[Probe]:
    return [
        Probe(name="MHA, d_model 8, 2 heads, with biases: 4 d^2 + 4 d", args=(8, 2, 2)),
        Probe(name="GPT-2 small's attention (768, 12 heads)", args=(768, 12, 12)),
        Probe(name="GQA 4/2, d_model 8, no biases", args=(8, 4, 2), kwargs={"bias": False}),
        Probe(
            name="Llama-2-70B's attention (8192, 64 heads, 8 kv heads, no biases)",
            args=(8192, 64, 8),
            kwargs={"bias": False},
        ),
        Probe(name="GQA 4/2 with biases, d_model 8", args=(8, 4, 2), kwargs={"bias": True}),
    ]


def attn_count_hidden(g: torch.Generator) -> list[Probe]:
    cases = [
        (16, 4, 4, True),
        (16, 4, 1, True),
        (4096, 32, 32, False),
        (4096, 32, 8, False),
        (4544, 71, 1, False),
        (12, 6, 3, True),
        (1024, 16, 16, True),
    ]
    return [
        Probe(
            name=f"d_model {d}, {h} heads, {k} kv heads, bias={b}",
            args=(d, h, k),
            kwargs={"bias": b},
        )
        for d, h, k, b in cases
    ]


GPT2_MISTAKES = [
    Mistake(
        id="gpt2-head-counted-twice",
        hint="the output head is tied to the token embedding (the same matrix): count it once",
        source="""
def gpt2_parameter_count(vocab_size, n_positions, n_embd, n_layer, bias=True):
    d = n_embd
    norm = 2 * d if bias else d
    layer = 2 * norm + 4 * d * d + (4 * d if bias else 0)
    layer += 8 * d * d + ((4 * d + d) if bias else 0)
    return 2 * vocab_size * d + n_positions * d + n_layer * layer + norm
""",
    ),
    Mistake(
        id="gpt2-no-position-table",
        hint="GPT-2 learns a position embedding table too: n_positions x n_embd parameters",
        source="""
def gpt2_parameter_count(vocab_size, n_positions, n_embd, n_layer, bias=True):
    d = n_embd
    norm = 2 * d if bias else d
    layer = 2 * norm + 4 * d * d + (4 * d if bias else 0)
    layer += 8 * d * d + ((4 * d + d) if bias else 0)
    return vocab_size * d + n_layer * layer + norm
""",
    ),
    Mistake(
        id="gpt2-mlp-width-d",
        hint="GPT-2's MLP is 4 n_embd wide (its config has no n_inner; GPT2Config's None means 4 n_embd): "
        "two matrices of d x 4d, biases 4d and d",
        source="""
def gpt2_parameter_count(vocab_size, n_positions, n_embd, n_layer, bias=True):
    d = n_embd
    norm = 2 * d if bias else d
    layer = 2 * norm + 4 * d * d + (4 * d if bias else 0)
    layer += 2 * d * d + ((d + d) if bias else 0)
    return vocab_size * d + n_positions * d + n_layer * layer + norm
""",
    ),
    Mistake(
        id="gpt2-no-layernorms",
        hint="each block has two LayerNorms (ln_1, ln_2) and the model a final one (ln_f), each "
        "with a weight and (when bias=True) a bias of n_embd",
        source="""
def gpt2_parameter_count(vocab_size, n_positions, n_embd, n_layer, bias=True):
    d = n_embd
    layer = 4 * d * d + (4 * d if bias else 0)
    layer += 8 * d * d + ((4 * d + d) if bias else 0)
    return vocab_size * d + n_positions * d + n_layer * layer
""",
    ),
    Mistake(
        id="gpt2-no-final-layernorm",
        hint="after the last block comes one more LayerNorm, ln_f (n_embd weights, and biases "
        "when bias=True)",
        source="""
def gpt2_parameter_count(vocab_size, n_positions, n_embd, n_layer, bias=True):
    d = n_embd
    norm = 2 * d if bias else d
    layer = 2 * norm + 4 * d * d + (4 * d if bias else 0)
    layer += 8 * d * d + ((4 * d + d) if bias else 0)
    return vocab_size * d + n_positions * d + n_layer * layer
""",
    ),
    Mistake(
        id="gpt2-one-layernorm-per-block",
        hint="each block has two LayerNorms, ln_1 before the attention and ln_2 before the MLP "
        "(pre-LN), plus ln_f once after the last block",
        source="""
def gpt2_parameter_count(vocab_size, n_positions, n_embd, n_layer, bias=True):
    d = n_embd
    norm = 2 * d if bias else d
    layer = norm + 4 * d * d + (4 * d if bias else 0)
    layer += 8 * d * d + ((4 * d + d) if bias else 0)
    return vocab_size * d + n_positions * d + n_layer * layer + norm
""",
    ),
    Mistake(
        id="gpt2-c-attn-bias-d",
        hint="c_attn is the fused [Q|K|V] projection: its bias has 3 n_embd entries (and c_proj's "
        "n_embd), 4 n_embd per block in all",
        source="""
def gpt2_parameter_count(vocab_size, n_positions, n_embd, n_layer, bias=True):
    d = n_embd
    norm = 2 * d if bias else d
    layer = 2 * norm + 4 * d * d + (2 * d if bias else 0)
    layer += 8 * d * d + ((4 * d + d) if bias else 0)
    return vocab_size * d + n_positions * d + n_layer * layer + norm
""",
    ),
    Mistake(
        id="gpt2-c-fc-bias-d",
        hint="c_fc maps n_embd to 4 n_embd, so its bias has 4 n_embd entries (c_proj's, back to "
        "n_embd, has n_embd)",
        source="""
def gpt2_parameter_count(vocab_size, n_positions, n_embd, n_layer, bias=True):
    d = n_embd
    norm = 2 * d if bias else d
    layer = 2 * norm + 4 * d * d + (4 * d if bias else 0)
    layer += 8 * d * d + ((d + d) if bias else 0)
    return vocab_size * d + n_positions * d + n_layer * layer + norm
""",
    ),
    Mistake(
        id="gpt2-bias-false-drops-layernorm-weights",
        hint="bias=False removes bias vectors only: every LayerNorm keeps its weight (n_embd "
        "each: 2 per block and ln_f)",
        source="""
def gpt2_parameter_count(vocab_size, n_positions, n_embd, n_layer, bias=True):
    d = n_embd
    norm = 2 * d if bias else 0
    layer = 2 * norm + 4 * d * d + (4 * d if bias else 0)
    layer += 8 * d * d + ((4 * d + d) if bias else 0)
    return vocab_size * d + n_positions * d + n_layer * layer + norm
""",
    ),
    Mistake(
        id="gpt2-bias-flag-only-linears",
        hint="bias=False (nanoGPT's option) removes the LayerNorms' bias vectors too, not only "
        "the linear layers'",
        source="""
def gpt2_parameter_count(vocab_size, n_positions, n_embd, n_layer, bias=True):
    d = n_embd
    norm = 2 * d
    layer = 2 * norm + 4 * d * d + (4 * d if bias else 0)
    layer += 8 * d * d + ((4 * d + d) if bias else 0)
    return vocab_size * d + n_positions * d + n_layer * layer + norm
""",
    ),
]


def gpt2_visible() -> list[Probe]:
    return [
        Probe(name="a toy config: vocab 10, 8 positions, width 4, 2 layers", args=(10, 8, 4, 2)),
        Probe(name="GPT-2 small as released (config.json)", args=(50257, 1024, 768, 12)),
        Probe(name="GPT-2 small, bias=False", args=(50257, 1024, 768, 12), kwargs={"bias": False}),
    ]


def gpt2_hidden(g: torch.Generator) -> list[Probe]:
    v, p, d, n = (int(x) for x in torch.randint(2, 40, (4,), generator=g))
    cases = [
        (50257, 1024, 768, 12, True),
        (50257, 1024, 768, 12, False),
        (50257, 1024, 1024, 24, True),
        (50257, 1024, 1600, 48, True),
        (65, 256, 64, 2, False),
        (v, p, 4 * d, n, True),
        (v, p, 4 * d, n, False),
    ]
    return [
        Probe(
            name=f"vocab {a}, {b} positions, width {c}, {e} layers, bias={f}",
            args=(a, b, c, e),
            kwargs={"bias": f},
        )
        for a, b, c, e, f in cases
    ]


# ---------------------------------------------------------------- the lesson

LESSON = Lesson(
    folder="04-multi-head",
    notebook="multi_head",
    context_cells=("setup",),
    exercises=[
        Exercise(
            id="split-heads",
            title="split the features into heads",
            function="split_heads",
            signature="split_heads(x: float (B, T, n_heads * d_head), n_heads: int) -> "
            "(B, n_heads, T, d_head), x's dtype",
            reference=H.split_heads,
            answer_cell="split_heads",
            test_cell="test-split-heads",
            points=2,
            visible=split_visible,
            hidden=split_hidden,
            mistakes=SPLIT_MISTAKES,
        ),
        Exercise(
            id="merge-heads",
            title="merge the heads back",
            function="merge_heads",
            signature="merge_heads(x: float (B, n_heads, T, d_head)) -> (B, T, n_heads * d_head)",
            reference=H.merge_heads,
            answer_cell="merge_heads",
            test_cell="test-merge-heads",
            points=2,
            visible=merge_visible,
            hidden=merge_hidden,
            mistakes=MERGE_MISTAKES,
        ),
        Exercise(
            id="merge-trace",
            title="strides through the merge, and when view raises",
            function="merge_trace",
            signature="merge_trace(B, H, T, d: int) -> (tuple of 4 ints, tuple of 4 ints, bool)",
            reference=H.merge_trace,
            answer_cell="merge_trace",
            test_cell="test-merge-trace",
            points=2,
            visible=trace_visible,
            hidden=trace_hidden,
            mistakes=TRACE_MISTAKES,
        ),
        Exercise(
            id="repeat-kv",
            title="GQA: each kv head serves a group of query heads",
            function="repeat_kv",
            signature="repeat_kv(x: float (B, n_kv_heads, T, d), n_rep: int) -> "
            "(B, n_kv_heads * n_rep, T, d)",
            reference=H.repeat_kv,
            answer_cell="repeat_kv",
            test_cell="test-repeat-kv",
            points=2,
            visible=repeat_visible,
            hidden=repeat_hidden,
            mistakes=REPEAT_MISTAKES,
            forbidden=REPEAT_FORBIDDEN,
            forbidden_hint=REPEAT_FORBIDDEN_HINT,
        ),
        Exercise(
            id="attention-layer",
            title="multi-head attention with GQA, MQA, masks",
            function="multi_head_attention",
            signature="multi_head_attention(x: (B, T, d_model), W_q, W_k, W_v, W_o, n_heads, "
            "n_kv_heads=None, attn_mask: bool | None = None, is_causal=True) -> (B, T, d_model)",
            reference=H.multi_head_attention,
            answer_cell="multi_head_attention",
            test_cell="test-attention-layer",
            points=4,
            visible=layer_visible,
            hidden=layer_hidden,
            mistakes=LAYER_MISTAKES,
            stand_ins={
                "split_heads": "course.stand_ins:split_heads",
                "merge_heads": "course.stand_ins:merge_heads",
                "repeat_kv": "course.stand_ins:repeat_kv",
            },
            uses=("split_heads", "merge_heads", "repeat_kv"),
        ),
        Exercise(
            id="weight-layout",
            title="fused [Q|K|V] rows to per-head [q_h|k_h|v_h]",
            function="fused_to_per_head_interleaved",
            signature="fused_to_per_head_interleaved(W_qkv: (3 n_heads d_head, ...), n_heads) -> "
            "same shape, rows reordered",
            reference=W.fused_to_per_head_interleaved,
            answer_cell="fused_to_per_head_interleaved",
            test_cell="test-weight-layout",
            points=2,
            visible=layout_visible,
            hidden=layout_hidden,
            mistakes=LAYOUT_MISTAKES,
        ),
        Exercise(
            id="attention-parameters",
            title="parameters of one attention layer (MHA, GQA, MQA)",
            function="attention_parameter_count",
            signature="attention_parameter_count(d_model, n_heads, n_kv_heads, bias=True) -> int",
            reference=W.attention_parameter_count,
            answer_cell="attention_parameter_count",
            test_cell="test-attention-parameters",
            points=1,
            visible=attn_count_visible,
            hidden=attn_count_hidden,
            mistakes=ATTN_COUNT_MISTAKES,
        ),
        Exercise(
            id="gpt2-parameters",
            title="GPT-2's parameters from its config",
            function="gpt2_parameter_count",
            signature="gpt2_parameter_count(vocab_size, n_positions, n_embd, n_layer, bias=True) "
            "-> int",
            reference=W.gpt2_parameter_count,
            answer_cell="gpt2_parameter_count",
            test_cell="test-gpt2-parameters",
            points=2,
            visible=gpt2_visible,
            hidden=gpt2_hidden,
            mistakes=GPT2_MISTAKES,
        ),
    ],
)
