"""Lesson 08 (the language model assembled from the learner's parts), declared once.

Judged against `solutions/kernels/assembled.py`, whose forward functions run the reference
`TransformerLM` with the learner's probe weights loaded: the weight oracle. The model is the
reference's default architecture (pre-LN, RMSNorm, RoPE interleaved, SwiGLU, tied head, no
biases); the weights are a dict named as `TransformerLM.named_parameters()` names them.
The known mistakes include the issue's list: positions not passed to RoPE, the residual added
to the normalised stream, an untied head when tied is asked, init std 1, a missing final norm,
logits shifted by one against the targets, a cache not used or not advanced.
"""

from __future__ import annotations

import torch

from course.compare import Tolerance
from course.lesson import Exercise, Lesson, Mistake, Probe, randn, seeded
from solutions.kernels import assembled as A
from solutions.kernels.positions import rope_cos_sin


# The parts of lessons 04 and 06 are replaced by PyTorch's own while a block, the model or the
# cached decoding is judged (each is graded in its own lesson); RoPE has no built-in, so the
# learner's rope_cos_sin and rotate_pairs are used in all three alike.
PARTS_STAND_INS = {
    "split_heads": "course.stand_ins:split_heads",
    "merge_heads": "course.stand_ins:merge_heads",
    "repeat_kv": "course.stand_ins:repeat_kv",
    "rms_norm": "course.stand_ins:rms_norm",
}


def weights(g, vocab, d, L, H, H_kv, d_ff, tied=True, dtype=torch.float32) -> dict:
    """Probe weights: unit-scale matrices (so that every mistake moves the logits by far more
    than float32's tolerance) and norm weights scattered around 1 (so that swapping norms shows)."""
    out = {}
    for name, shape, mean, _ in A.init_plan(vocab, d, L, H, H_kv, d_ff, tied):
        if mean == 1.0:
            w = 1.0 + 0.3 * randn(g, *shape, dtype=torch.float64)
        elif name in ("tok_emb.weight", "lm_head.weight"):
            w = randn(g, *shape, dtype=torch.float64)
        else:
            w = randn(g, *shape, scale=shape[1] ** -0.5, dtype=torch.float64)
        out[name] = w.to(dtype)
    return out


def tokens(g, vocab, B, T) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=g)


def sources(template: str, *changes: tuple[str, str]) -> str:
    """`template` with each (old, new) replaced: one typical mistake."""
    for old, new in changes:
        assert old in template, old
        template = template.replace(old, new)
    return template


# ---------------------------------------------------------------- parameter count

COUNT_SOURCE = """
def lm_parameter_count(vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_ff, tied=True):
    head_dim = d_model // n_heads
    attention = (n_heads + 2 * n_kv_heads) * head_dim * d_model + d_model * d_model
    block = 2 * d_model + attention + 3 * d_ff * d_model
    head = 0 if tied else vocab_size * d_model
    return vocab_size * d_model + n_layers * block + d_model + head
"""

COUNT_MISTAKES = [
    Mistake(
        id="count-head-when-tied",
        hint="a tied head IS the embedding matrix (lm_head.weight = tok_emb.weight): it adds no "
        "parameters when tied=True; count vocab_size * d_model a second time only when untied",
        source=sources(
            COUNT_SOURCE, ("0 if tied else vocab_size * d_model", "vocab_size * d_model")
        ),
    ),
    Mistake(
        id="count-no-final-norm",
        hint="pre-LN models end with a final norm before the head (norm_f): d_model more weights",
        source=sources(
            COUNT_SOURCE, ("n_layers * block + d_model + head", "n_layers * block + head")
        ),
    ),
    Mistake(
        id="count-gqa-ignored",
        hint="with grouped-query attention W_qkv has (n_heads + 2 n_kv_heads) head_dim rows: keys "
        "and values have only n_kv_heads heads each, not n_heads (3 d_model^2 is MHA only)",
        source=sources(COUNT_SOURCE, ("(n_heads + 2 * n_kv_heads)", "3 * n_heads")),
    ),
    Mistake(
        id="count-block-norms",
        hint="each pre-LN block has two RMSNorms (before attention, before the feed-forward), "
        "d_model weights each (RMSNorm has no bias)",
        source=sources(COUNT_SOURCE, ("block = 2 * d_model +", "block =")),
    ),
    Mistake(
        id="count-one-norm-per-block",
        hint="each pre-LN block has TWO RMSNorms, norm1 before attention and norm2 before the "
        "feed-forward: 2 d_model weights per block, not d_model",
        source=sources(COUNT_SOURCE, ("block = 2 * d_model +", "block = d_model +")),
    ),
    Mistake(
        id="count-biases",
        hint="this model has no biases (every nn.Linear is bias=False, as in Llama; RMSNorm has "
        "none either): count the weight matrices and the norm weights only",
        source=sources(
            COUNT_SOURCE,
            (
                "block = 2 * d_model + attention + 3 * d_ff * d_model",
                "biases = (n_heads + 2 * n_kv_heads) * head_dim + d_model + 2 * d_ff + d_model\n"
                "    block = 2 * d_model + attention + 3 * d_ff * d_model + biases",
            ),
        ),
    ),
    Mistake(
        id="count-float",
        hint="a count of parameters is a Python int: / makes a float (use // for head_dim), "
        "and a tensor's numel() sum must be int(...)",
        source=sources(
            COUNT_SOURCE, ("head_dim = d_model // n_heads", "head_dim = d_model / n_heads")
        ),
    ),
    Mistake(
        id="count-ffn-two-matrices",
        hint="SwiGLU has three matrices (W_gate, W_up: d_ff x d_model; W_down: d_model x d_ff), "
        "not GELU's two: 3 d_ff d_model",
        source=sources(COUNT_SOURCE, ("3 * d_ff * d_model", "2 * d_ff * d_model")),
    ),
]


INT_COUNT = "course.probe_layers:inspect_python_int"


def count_visible() -> list[Probe]:
    return [
        Probe(
            name="the cpu preset: 256, 96, 3 layers, 4 heads, d_ff 256",
            args=(256, 96, 3, 4, 4, 256),
            inspect=INT_COUNT,
        ),
        Probe(name="GQA: 4 query heads share 2 kv heads", args=(256, 64, 2, 4, 2, 192)),
        Probe(name="untied head", args=(256, 64, 2, 4, 4, 192), kwargs={"tied": False}),
    ]


def count_hidden(g: torch.Generator) -> list[Probe]:
    L = int(torch.randint(1, 13, (1,), generator=g))
    return [
        Probe(
            name="the gpu preset: 384, 6 layers, 6 heads",
            args=(256, 384, 6, 6, 6, 1024),
            inspect=INT_COUNT,
        ),
        Probe(name=f"{L} layers, MQA", args=(1000, 128, L, 8, 1, 352)),
        Probe(
            name="Llama-like GQA, untied",
            args=(32000, 4096, 32, 32, 8, 14336),
            kwargs={"tied": False},
        ),
        Probe(name="one layer, one head", args=(50, 16, 1, 1, 1, 64)),
    ]


# ---------------------------------------------------------------- init plan

PLAN_SOURCE = """
def init_plan(vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_ff, tied=True):
    head_dim = d_model // n_heads
    # GPT-2's residual scaling; with no blocks (n_layers = 0) there is nothing to scale.
    std, residual_std = 0.02, 0.02 / math.sqrt(2 * n_layers) if n_layers else 0.02
    plan = [("tok_emb.weight", (vocab_size, d_model), 0.0, std)]
    for i in range(n_layers):
        p = f"blocks.{i}."
        plan += [
            (p + "norm1.weight", (d_model,), 1.0, 0.0),
            (p + "attn.W_qkv.weight", ((n_heads + 2 * n_kv_heads) * head_dim, d_model), 0.0, std),
            (p + "attn.W_o.weight", (d_model, d_model), 0.0, residual_std),
            (p + "norm2.weight", (d_model,), 1.0, 0.0),
            (p + "ffn.W_gate.weight", (d_ff, d_model), 0.0, std),
            (p + "ffn.W_up.weight", (d_ff, d_model), 0.0, std),
            (p + "ffn.W_down.weight", (d_model, d_ff), 0.0, residual_std),
        ]
    plan.append(("norm_f.weight", (d_model,), 1.0, 0.0))
    if not tied:
        plan.append(("lm_head.weight", (vocab_size, d_model), 0.0, std))
    return plan
"""

PLAN_MISTAKES = [
    Mistake(
        id="init-std-one",
        hint="std 1 (torch.randn as it comes) makes the logits of size sqrt(d_model) and the loss "
        "at initialisation far above ln(vocab_size): GPT-2 draws every matrix from N(0, 0.02)",
        source=sources(
            PLAN_SOURCE, ("std, residual_std = 0.02, 0.02 /", "std, residual_std = 1.0, 1.0 /")
        ),
    ),
    Mistake(
        id="init-residual-not-scaled",
        hint="the projections that write into the residual stream (attn.W_o, ffn.W_down) are "
        "drawn with std 0.02 / sqrt(2 n_layers), not 0.02: the stream adds 2 n_layers of them",
        source=sources(PLAN_SOURCE, ("0.02 / math.sqrt(2 * n_layers)", "0.02")),
    ),
    Mistake(
        id="init-residual-sqrt-layers",
        hint="the residual scale is 1/sqrt(2 n_layers), not 1/sqrt(n_layers): each block adds two "
        "residual branches (attention and feed-forward)",
        source=sources(PLAN_SOURCE, ("math.sqrt(2 * n_layers)", "math.sqrt(n_layers)")),
    ),
    Mistake(
        id="init-untied-head-when-tied",
        hint="tied=True asks for a tied head: the logits use tok_emb.weight itself, so there is no "
        "lm_head.weight entry (it appears only when tied=False)",
        source=sources(PLAN_SOURCE, ("    if not tied:\n", "    if True:\n")),
    ),
    Mistake(
        id="init-no-final-norm",
        hint="a pre-LN model needs a final norm (norm_f.weight, ones) between the last block and "
        "the head: the last block's output is an unnormalised residual stream",
        source=sources(
            PLAN_SOURCE, ('    plan.append(("norm_f.weight", (d_model,), 1.0, 0.0))\n', "")
        ),
    ),
    Mistake(
        id="init-norms-random",
        hint="norm weights start at exactly 1 (mean 1.0, std 0.0): the norm begins as a plain "
        "normalisation, not a random rescaling",
        source=sources(
            PLAN_SOURCE,
            ('"norm1.weight", (d_model,), 1.0, 0.0', '"norm1.weight", (d_model,), 0.0, std'),
            ('"norm2.weight", (d_model,), 1.0, 0.0', '"norm2.weight", (d_model,), 0.0, std'),
        ),
    ),
    Mistake(
        id="init-shapes-lists",
        hint="shapes are tuples of ints, (d_out, d_in) as nn.Linear's weight.shape gives, not "
        "lists [d_out, d_in]",
        source=sources(
            PLAN_SOURCE,
            (
                '(p + "attn.W_o.weight", (d_model, d_model)',
                '(p + "attn.W_o.weight", [d_model, d_model]',
            ),
        ),
    ),
    Mistake(
        id="init-int-mean",
        hint="mean and std are Python floats: norm weights are (1.0, 0.0), not (1, 0)",
        source=sources(
            PLAN_SOURCE,
            ('"norm1.weight", (d_model,), 1.0, 0.0', '"norm1.weight", (d_model,), 1, 0'),
            ('"norm2.weight", (d_model,), 1.0, 0.0', '"norm2.weight", (d_model,), 1, 0'),
        ),
    ),
    Mistake(
        id="init-gqa-ignored",
        hint="W_qkv has (n_heads + 2 n_kv_heads) head_dim rows: with GQA the keys and values have "
        "n_kv_heads heads, not n_heads",
        source=sources(PLAN_SOURCE, ("(n_heads + 2 * n_kv_heads) * head_dim", "3 * d_model")),
    ),
]


PLAN_TYPES = "course.probe_layers:inspect_init_plan"


def plan_visible() -> list[Probe]:
    return [
        Probe(
            name="2 layers, 4 heads, 2 kv heads, tied",
            args=(256, 16, 2, 4, 2, 48),
            inspect=PLAN_TYPES,
        ),
        Probe(name="1 layer, untied", args=(11, 8, 1, 2, 2, 32), kwargs={"tied": False}),
        Probe(
            name="no blocks (n_layers = 0): embeddings, final norm, tied head",
            args=(11, 8, 0, 2, 2, 32),
        ),
    ]


def plan_hidden(g: torch.Generator) -> list[Probe]:
    L = int(torch.randint(1, 9, (1,), generator=g))
    return [
        Probe(
            name=f"{L} layers, 6 heads, tied", args=(256, 384, L, 6, 6, 1024), inspect=PLAN_TYPES
        ),
        Probe(name="8 layers, MQA, untied", args=(100, 64, 8, 4, 1, 192), kwargs={"tied": False}),
        Probe(name="3 layers, GQA", args=(256, 96, 3, 4, 2, 256)),
    ]


# ---------------------------------------------------------------- one block

BLOCK_SOURCE = """
def block_forward(x, params, layer, n_heads, n_kv_heads, cos, sin, cache=None):
    p = f"blocks.{layer}."
    B, T, D = x.shape
    hd = D // n_heads
    h = rms_norm(x, params[p + "norm1.weight"])
    qkv = h @ params[p + "attn.W_qkv.weight"].T
    q, k, v = qkv.split([n_heads * hd, n_kv_heads * hd, n_kv_heads * hd], dim=-1)
    q = rotate_pairs(split_heads(q, n_heads), cos, sin)
    k = rotate_pairs(split_heads(k, n_kv_heads), cos, sin)
    v = split_heads(v, n_kv_heads)
    if cache is not None:
        if cache[layer] is not None:
            k = torch.cat([cache[layer][0], k], dim=2)
            v = torch.cat([cache[layer][1], v], dim=2)
        cache[layer] = (k, v)
    S = k.shape[2]
    mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
    n_rep = n_heads // n_kv_heads
    att = F.scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), attn_mask=mask)
    x = x + merge_heads(att) @ params[p + "attn.W_o.weight"].T
    h = rms_norm(x, params[p + "norm2.weight"])
    gate, up = h @ params[p + "ffn.W_gate.weight"].T, h @ params[p + "ffn.W_up.weight"].T
    return x + (F.silu(gate) * up) @ params[p + "ffn.W_down.weight"].T
"""

MASK_WRONG_SIGN = (
    "the mask's diagonal is S - T (the number of cached keys), not T - S: torch.ones(T, "
    "S).tril(S - T) lets query i see keys 0 .. S - T + i. With tril(T - S) a new token behind a "
    "cache sees no key at all (or too few)"
)
MASK_TOP_LEFT = (
    "with cached keys the causal mask is aligned to the LAST key: query i (position past + i) "
    "sees keys 0 .. past + i, torch.ones(T, S).tril(S - T). SDPA's is_causal=True aligns it to "
    "the first key (tril(0)), so a single new token would see only token 0"
)

BLOCK_MISTAKES = [
    Mistake(
        id="block-residual-on-normalised",
        hint="the residual adds to the stream x itself, not to the normalised copy: x = x + "
        "attn(norm1(x)). Writing h = norm1(x); x = h + attn(h) renormalises the stream at every "
        "sublayer and loses pre-LN's identity path",
        source=sources(
            BLOCK_SOURCE,
            ("    x = x + merge_heads", "    x = h + merge_heads"),
            ("    return x + (F.silu", "    return h + (F.silu"),
        ),
    ),
    Mistake(
        id="block-post-ln",
        hint="this is a post-LN block (norm after the residual add); the model is pre-LN: "
        "x = x + attn(norm1(x)), then x = x + ffn(norm2(x)), no norm on the residual path",
        source="""
def block_forward(x, params, layer, n_heads, n_kv_heads, cos, sin, cache=None):
    p = f"blocks.{layer}."
    B, T, D = x.shape
    hd = D // n_heads
    qkv = x @ params[p + "attn.W_qkv.weight"].T
    q, k, v = qkv.split([n_heads * hd, n_kv_heads * hd, n_kv_heads * hd], dim=-1)
    q = rotate_pairs(split_heads(q, n_heads), cos, sin)
    k = rotate_pairs(split_heads(k, n_kv_heads), cos, sin)
    v = split_heads(v, n_kv_heads)
    n_rep = n_heads // n_kv_heads
    att = F.scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), is_causal=True)
    x = rms_norm(x + merge_heads(att) @ params[p + "attn.W_o.weight"].T, params[p + "norm1.weight"])
    gate, up = x @ params[p + "ffn.W_gate.weight"].T, x @ params[p + "ffn.W_up.weight"].T
    return rms_norm(x + (F.silu(gate) * up) @ params[p + "ffn.W_down.weight"].T, params[p + "norm2.weight"])
""",
    ),
    Mistake(
        id="block-no-causal-mask",
        hint="the attention is not causal: token t reads tokens after it (a language model that "
        "sees the answer). Mask with torch.ones(T, S).tril(S - T) (True = may attend)",
        source=sources(BLOCK_SOURCE, (", attn_mask=mask)", ")")),
    ),
    Mistake(
        id="block-rope-not-applied",
        hint="queries and keys must be rotated by their positions (rotate_pairs with cos, sin) "
        "before the scores: without RoPE the model cannot tell token order apart",
        source=sources(
            BLOCK_SOURCE,
            ("q = rotate_pairs(split_heads(q, n_heads), cos, sin)", "q = split_heads(q, n_heads)"),
            (
                "k = rotate_pairs(split_heads(k, n_kv_heads), cos, sin)",
                "k = split_heads(k, n_kv_heads)",
            ),
        ),
    ),
    Mistake(
        id="block-rope-on-values",
        hint="RoPE rotates queries and keys only (their dot product then depends on the distance); "
        "values are not rotated",
        source=sources(
            BLOCK_SOURCE,
            (
                "v = split_heads(v, n_kv_heads)",
                "v = rotate_pairs(split_heads(v, n_kv_heads), cos, sin)",
            ),
        ),
    ),
    Mistake(
        id="block-kv-heads-tiled",
        hint="query head h reads kv head h // n_rep (repeat_kv, repeat_interleave on dim 1), not "
        "h % n_kv_heads (k.repeat(1, n_rep, 1, 1) tiles the kv heads)",
        source=sources(
            BLOCK_SOURCE,
            (
                "repeat_kv(k, n_rep), repeat_kv(v, n_rep)",
                "k.repeat(1, n_rep, 1, 1), v.repeat(1, n_rep, 1, 1)",
            ),
        ),
    ),
    Mistake(
        id="block-one-norm",
        hint="each sublayer has its own norm: norm1.weight before attention, norm2.weight before "
        "the feed-forward",
        source=sources(
            BLOCK_SOURCE,
            (
                'h = rms_norm(x, params[p + "norm2.weight"])',
                'h = rms_norm(x, params[p + "norm1.weight"])',
            ),
        ),
    ),
    Mistake(
        id="block-no-scale",
        hint="the attention scores are q k^T / sqrt(head_dim): without the 1/sqrt(d) scale the "
        "softmax saturates (SDPA applies it by default; scale=1.0 removes it)",
        source=sources(BLOCK_SOURCE, ("attn_mask=mask)", "attn_mask=mask, scale=1.0)")),
    ),
    Mistake(
        id="block-gelu",
        hint="SwiGLU gates with SiLU (x * sigmoid(x), F.silu), not GELU: "
        "silu(h W_gate^T) * (h W_up^T)",
        source=sources(BLOCK_SOURCE, ("(F.silu(gate) * up)", "(F.gelu(gate) * up)")),
    ),
    Mistake(
        id="block-qkv-split-order",
        hint="W_qkv's rows are queries first, then keys, then values: q, k, v = "
        "qkv.split([n_heads * hd, n_kv_heads * hd, n_kv_heads * hd], dim=-1), in that order",
        source=sources(BLOCK_SOURCE, ("    q, k, v = qkv.split(", "    q, v, k = qkv.split(")),
    ),
    Mistake(
        id="block-rope-half-layout",
        hint="this model's RoPE rotates interleaved pairs (2i, 2i + 1), rotate_pairs' default "
        "layout, not the half-split pairs (i, i + d/2) of layout='half'",
        source=sources(
            BLOCK_SOURCE,
            (
                "q = rotate_pairs(split_heads(q, n_heads), cos, sin)",
                "q = rotate_pairs(split_heads(q, n_heads), cos, sin, layout='half')",
            ),
            (
                "k = rotate_pairs(split_heads(k, n_kv_heads), cos, sin)",
                "k = rotate_pairs(split_heads(k, n_kv_heads), cos, sin, layout='half')",
            ),
        ),
    ),
    Mistake(
        id="block-in-place-residual",
        hint="x += ... writes into the tensor you were given (the caller's residual stream, "
        "and in lm_forward the stage already stored): write x = x + ... for each residual add",
        source=sources(
            BLOCK_SOURCE,
            ("    x = x + merge_heads(att)", "    x += merge_heads(att)"),
        ),
    ),
    Mistake(
        id="block-gate-up-swapped",
        hint="SwiGLU puts SiLU on the gate: silu(h W_gate^T) * (h W_up^T), not silu(h W_up^T) * "
        "(h W_gate^T)",
        source=sources(BLOCK_SOURCE, ("(F.silu(gate) * up)", "(F.silu(up) * gate)")),
    ),
]


BLOCK_MISTAKES += [
    Mistake(
        id="block-cache-mask-top-left",
        hint=MASK_TOP_LEFT,
        source=sources(BLOCK_SOURCE, ("tril(diagonal=S - T)", "tril(diagonal=0)")),
    ),
    Mistake(
        id="block-cache-mask-wrong-sign",
        hint=MASK_WRONG_SIGN,
        source=sources(BLOCK_SOURCE, ("tril(diagonal=S - T)", "tril(diagonal=T - S)")),
    ),
    Mistake(
        id="block-head-dim-from-kv-heads",
        hint="every head, query or key/value, has the same width head_dim = d_model // n_heads; "
        "n_kv_heads says how many key/value heads there are, not how wide they are: split qkv "
        "into [n_heads * hd, n_kv_heads * hd, n_kv_heads * hd] with hd = d_model // n_heads "
        "(d_model // n_kv_heads makes the split sizes add up to more than W_qkv's rows)",
        source=sources(BLOCK_SOURCE, ("hd = D // n_heads", "hd = D // n_kv_heads")),
    ),
    Mistake(
        id="block-norm-without-weight",
        hint="each norm has its own learned weight: rms_norm(x, params[p + 'norm1.weight']) and "
        "rms_norm(x, params[p + 'norm2.weight']). rms_norm(x) alone normalises without the "
        "weight (weight=None is a plain normalisation)",
        source=sources(
            BLOCK_SOURCE,
            ('h = rms_norm(x, params[p + "norm2.weight"])', "h = rms_norm(x)"),
        ),
    ),
    Mistake(
        id="block-chunk-mask-ignores-past",
        hint="a chunk of T > 1 new tokens behind a cache is causal too: query i (position past + "
        "i) sees keys 0 .. past + i, not every key. One mask covers every case, "
        "torch.ones(T, S, dtype=torch.bool).tril(S - T): without a cache S = T (the causal mask), "
        "for one new token it is all True",
        source=sources(
            BLOCK_SOURCE,
            (
                "mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)",
                "mask = torch.ones(T, S, dtype=torch.bool).tril() if S == T else "
                "torch.ones(T, S, dtype=torch.bool)",
            ),
        ),
    ),
    Mistake(
        id="block-cache-stores-repeated-kv",
        hint="the cache keeps the n_kv_heads heads of keys and values, (B, n_kv_heads, S, "
        "head_dim): store k, v before repeat_kv and repeat them only for the attention. A cache "
        "of repeated heads gives the same logits with n_heads / n_kv_heads times the memory, "
        "which is grouped-query attention's whole saving",
        source=sources(
            BLOCK_SOURCE,
            (
                "    v = split_heads(v, n_kv_heads)\n",
                "    v = split_heads(v, n_kv_heads)\n"
                "    k, v = repeat_kv(k, n_heads // n_kv_heads), repeat_kv(v, n_heads // n_kv_heads)\n"
                "    n_kv_heads = n_heads\n",
            ),
        ),
    ),
    Mistake(
        id="block-cache-not-stored",
        hint="with a cache, store the concatenated keys and values back, cache[layer] = (k, v): "
        "that is what makes the cache grow (the next call reads them as its past)",
        source=sources(BLOCK_SOURCE, ("        cache[layer] = (k, v)\n", "")),
    ),
    Mistake(
        id="block-cache-stores-new-only",
        hint="store the concatenation of the cached and the new keys and values, not only this "
        "call's: cache[layer] must hold every position so far, (B, n_kv_heads, past + T, "
        "head_dim)",
        source=sources(
            BLOCK_SOURCE,
            (
                "    if cache is not None:\n        if cache[layer] is not None:",
                "    if cache is not None:\n        new = (k, v)\n        if cache[layer] is not None:",
            ),
            ("        cache[layer] = (k, v)\n", "        cache[layer] = new\n"),
        ),
    ),
]


def block_cache_case(g, B, past, T, D, H, H_kv, d_ff, layer=0, L=2, dtype=torch.float32):
    """A block behind a cache of `past` positions in every one of `L` layers (as mid-decoding):
    x holds T new tokens at positions past .. past + T - 1."""
    x, params, layer, H, H_kv, cos, sin = block_case(
        g, B, T, D, H, H_kv, d_ff, start=past, dtype=dtype, layer=layer, L=L
    )
    shape = (B, H_kv, past, D // H)
    cache = [(randn(g, *shape, dtype=dtype), randn(g, *shape, dtype=dtype)) for _ in range(L)]
    return (x, params, layer, H, H_kv, cos, sin, cache)


BLOCK_CACHE = "course.probe_lm:inspect_block_cache"


def block_case(g, B, T, D, H, H_kv, d_ff, start=0, dtype=torch.float32, layer=0, L=1):
    params = weights(g, 7, D, L, H, H_kv, d_ff, dtype=dtype)
    params = {k: v for k, v in params.items() if k.startswith(f"blocks.{layer}.")}
    cos, sin = rope_cos_sin(torch.arange(start, start + T), D // H, dtype=dtype)
    x = randn(g, B, T, D, dtype=dtype)
    return (x, params, layer, H, H_kv, cos, sin)


def block_visible() -> list[Probe]:
    g = seeded(801)
    return [
        Probe(
            name="B=2, T=5, d_model 16, 4 heads sharing 2 kv heads",
            args=block_case(g, 2, 5, 16, 4, 2, 32),
        ),
        Probe(
            name="positions 7..10 (RoPE with explicit positions)",
            args=block_case(g, 1, 4, 8, 2, 2, 16, start=7),
        ),
        Probe(
            name="layer 1 of a 2-layer model", args=block_case(g, 1, 3, 8, 2, 1, 16, layer=1, L=2)
        ),
        Probe(
            name="a chunk of 3 tokens behind a cache of 4 (positions 4..6; 4 heads, 2 kv heads): "
            "query i sees keys 0..4 + i, and cache[layer] then holds all 7",
            args=block_cache_case(g, 2, 4, 3, 16, 4, 2, 32, layer=1),
            inspect=BLOCK_CACHE,
        ),
        Probe(
            name="one token behind a cache of 5 (MQA)",
            args=block_cache_case(g, 1, 5, 1, 8, 2, 1, 16, layer=0),
            inspect=BLOCK_CACHE,
        ),
    ]


def block_hidden(g: torch.Generator) -> list[Probe]:
    T = int(torch.randint(2, 9, (1,), generator=g))
    past = int(torch.randint(1, 6, (1,), generator=g))
    return [
        Probe(name=f"T={T}, 4 heads, 2 kv heads", args=block_case(g, 2, T, 16, 4, 2, 48)),
        Probe(name="MQA, 4 heads, 1 kv head", args=block_case(g, 2, 6, 16, 4, 1, 32)),
        Probe(name="positions 100..104", args=block_case(g, 1, 5, 12, 3, 3, 32, start=100)),
        Probe(name="layer 2 of 3", args=block_case(g, 2, 4, 8, 2, 2, 16, layer=2, L=3)),
        Probe(name="float64", args=block_case(g, 2, 5, 16, 4, 2, 32, dtype=torch.float64)),
        Probe(
            name=f"a chunk of {T} behind a cache of {past}",
            args=block_cache_case(g, 2, past, T, 16, 4, 1, 32, layer=0, L=3),
            inspect=BLOCK_CACHE,
        ),
        Probe(
            name="a chunk of 2 behind a cache of 3, float64, GQA",
            args=block_cache_case(g, 1, 3, 2, 12, 6, 2, 24, layer=1, dtype=torch.float64),
            inspect=BLOCK_CACHE,
        ),
    ]


# ---------------------------------------------------------------- the whole model

FORWARD_SOURCE = """
def lm_forward(idx, params, n_heads, n_kv_heads=None, cache=None, return_stages=False):
    n_kv_heads = n_kv_heads or n_heads
    emb = params["tok_emb.weight"]
    n_layers = sum(name.endswith(".norm1.weight") for name in params)
    past = 0 if cache is None or cache[0] is None else cache[0][0].shape[2]
    T = idx.shape[1]
    positions = torch.arange(past, past + T, device=idx.device)
    cos, sin = rope_cos_sin(positions, emb.shape[1] // n_heads, dtype=emb.dtype)
    x = emb[idx]
    stages = [x]
    for layer in range(n_layers):
        x = block_forward(x, params, layer, n_heads, n_kv_heads, cos, sin, cache)
        stages.append(x)
    x = rms_norm(x, params["norm_f.weight"])
    stages.append(x)
    logits = x @ params.get("lm_head.weight", emb).T
    stages.append(logits)
    return stages if return_stages else logits
"""

STAGES = (
    "With return_stages=True the check compares every stage, so 'item k' names the first one that "
    "differs: item 0 the embeddings, items 1..n_layers the blocks, then the final norm, then the "
    "logits"
)

HEAD_WIDTH = (
    "every head, query or key/value, has the width head_dim = d_model // n_heads: RoPE's tables "
    "have head_dim / 2 columns, rope_cos_sin(positions, d_model // n_heads, ...), and "
    "block_forward splits q, k, v into heads of that width. Not d_model, and not d_model // "
    "n_kv_heads (n_kv_heads is how many key/value heads there are, not how wide)"
)

FORWARD_MISTAKES = [
    Mistake(
        id="forward-no-final-norm",
        hint="the last block's output goes through the final norm (norm_f.weight) before the "
        "head. " + STAGES,
        source=sources(FORWARD_SOURCE, ('x = rms_norm(x, params["norm_f.weight"])', "pass")),
    ),
    Mistake(
        id="forward-untied-head-when-tied",
        hint="the weights have no lm_head.weight: the head is tied, logits = x @ "
        "tok_emb.weight.T (use params.get('lm_head.weight', tok_emb) for both kinds)",
        source=sources(
            FORWARD_SOURCE, ('params.get("lm_head.weight", emb)', 'params["lm_head.weight"]')
        ),
    ),
    Mistake(
        id="forward-untied-head-ignored",
        hint="when the weights hold an lm_head.weight (an untied model), the logits use it, not "
        "the embedding",
        source=sources(FORWARD_SOURCE, ('params.get("lm_head.weight", emb)', "emb")),
    ),
    Mistake(
        id="forward-embedding-scaled",
        hint="this model does not multiply the embeddings by sqrt(d_model) (the 2017 Transformer "
        "did, with a separate scale on its sinusoidal positions): x = tok_emb.weight[idx]",
        source=sources(FORWARD_SOURCE, ("x = emb[idx]", "x = emb[idx] * math.sqrt(emb.shape[1])")),
    ),
    Mistake(
        id="forward-rope-float32",
        hint="RoPE's tables must be in the weights' dtype: rope_cos_sin(positions, head_dim, "
        "dtype=params['tok_emb.weight'].dtype). Float32 tables in a float64 model are off by "
        "about 1e-5, far beyond float64's tolerance",
        source=sources(
            FORWARD_SOURCE,
            ("emb.shape[1] // n_heads, dtype=emb.dtype)", "emb.shape[1] // n_heads)"),
        ),
    ),
    Mistake(
        id="forward-kv-heads-none",
        hint="n_kv_heads=None means n_heads (plain multi-head attention): start with "
        "n_kv_heads = n_kv_heads or n_heads",
        source=sources(FORWARD_SOURCE, ("    n_kv_heads = n_kv_heads or n_heads\n", "")),
    ),
    Mistake(
        id="forward-in-place-residual",
        hint="x += ... in the block writes into the tensor lm_forward already stored as a stage "
        "(item 0, the embeddings): write x = x + ... for each residual add",
        source=FORWARD_SOURCE
        + sources(BLOCK_SOURCE, ("    x = x + merge_heads(att)", "    x += merge_heads(att)")),
    ),
    Mistake(
        id="forward-head-dim-is-d-model",
        hint=HEAD_WIDTH,
        source=sources(FORWARD_SOURCE, ("emb.shape[1] // n_heads, dtype", "emb.shape[1], dtype")),
    ),
    Mistake(
        id="forward-head-dim-from-kv-heads",
        hint=HEAD_WIDTH,
        source=FORWARD_SOURCE
        + sources(BLOCK_SOURCE, ("hd = D // n_heads", "hd = D // n_kv_heads")),
    ),
    Mistake(
        id="forward-layers-count-final-norm",
        hint="the number of layers is the number of blocks, the '.norm1.weight' entries (one per "
        "block): counting every name with 'norm' in it also counts norm2 and the final norm_f, so "
        "the loop asks for weights of blocks that do not exist (the KeyError's name)",
        source=sources(
            FORWARD_SOURCE,
            (
                'n_layers = sum(name.endswith(".norm1.weight") for name in params)',
                'n_layers = sum(1 for name in params if "norm" in name)',
            ),
        ),
    ),
]


def forward_case(g, vocab, B, T, D, L, H, H_kv, d_ff, tied=True, dtype=torch.float32):
    return (tokens(g, vocab, B, T), weights(g, vocab, D, L, H, H_kv, d_ff, tied, dtype), H, H_kv)


FORWARD_INSPECT = "course.probe_layers:inspect_lm_forward"


def forward_visible() -> list[Probe]:
    g = seeded(802)
    return [
        Probe(
            name="every stage, 2 layers, tied (item 0 embeddings, 1-2 blocks, 3 final norm, 4 logits)",
            args=forward_case(g, 11, 2, 5, 8, 2, 2, 1, 16),
            kwargs={"return_stages": True},
            inspect=FORWARD_INSPECT,
        ),
        Probe(
            name="logits, 1 layer, untied head",
            args=forward_case(g, 11, 1, 4, 8, 1, 2, 2, 16, tied=False),
        ),
        Probe(
            name="logits, 2 layers, 4 heads, 2 kv heads",
            args=forward_case(g, 13, 2, 6, 16, 2, 4, 2, 32),
        ),
        Probe(
            name="n_kv_heads not given (None: as many kv heads as heads)",
            args=forward_case(g, 11, 1, 4, 8, 1, 2, 2, 16)[:3],
        ),
        Probe(
            name="float64 weights: every stage in float64",
            args=forward_case(g, 11, 2, 5, 8, 2, 2, 1, 16, dtype=torch.float64),
            kwargs={"return_stages": True},
            inspect=FORWARD_INSPECT,
        ),
    ]


def forward_hidden(g: torch.Generator) -> list[Probe]:
    T = int(torch.randint(2, 10, (1,), generator=g))
    return [
        Probe(name=f"T={T}, 2 layers", args=forward_case(g, 17, 2, T, 16, 2, 4, 2, 32)),
        Probe(
            name="every stage, 3 layers, untied",
            args=forward_case(g, 9, 1, 5, 8, 3, 2, 2, 16, tied=False),
            kwargs={"return_stages": True},
        ),
        Probe(name="one token", args=forward_case(g, 11, 3, 1, 8, 1, 2, 1, 16)),
        Probe(name="n_kv_heads=None", args=forward_case(g, 13, 2, 5, 12, 2, 3, 3, 32)[:3]),
        Probe(name="float64", args=forward_case(g, 11, 2, 6, 12, 2, 3, 1, 32, dtype=torch.float64)),
    ]


# ---------------------------------------------------------------- the loss

LOSS_SOURCE = """
def lm_loss(logits, idx):
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), idx[:, 1:].reshape(-1))
"""

LOSS_MISTAKES = [
    Mistake(
        id="loss-not-shifted",
        hint="the logits at position t predict token t + 1: compare logits[:, :-1] with idx[:, 1:]. "
        "Against idx itself the model is asked to copy the token it already sees",
        source="""
def lm_loss(logits, idx):
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), idx.reshape(-1))
""",
    ),
    Mistake(
        id="loss-shifted-wrong-way",
        hint="logits shifted by one against the targets, the wrong way: logits[:, 1:] against "
        "idx[:, :-1] predicts the previous token. Position t predicts t + 1: logits[:, :-1] "
        "against idx[:, 1:]",
        source=sources(
            LOSS_SOURCE, ("logits[:, :-1]", "logits[:, 1:]"), ("idx[:, 1:]", "idx[:, :-1]")
        ),
    ),
    Mistake(
        id="loss-summed",
        hint="the loss is the mean over every predicted token (batch and positions), not the sum: "
        "its value should not depend on the batch size or the context length",
        source=sources(LOSS_SOURCE, ("reshape(-1))", "reshape(-1), reduction='sum')")),
    ),
    Mistake(
        id="loss-over-all-positions",
        hint="there are B (T - 1) predictions, not B T: the last position has no target. Take "
        "the mean of the shifted cross-entropy (F.cross_entropy's default), do not divide a sum "
        "by B * T",
        source="""
def lm_loss(logits, idx):
    B, T, V = logits.shape
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), idx[:, 1:].reshape(-1), reduction="sum") / (B * T)
""",
    ),
    Mistake(
        id="loss-float32",
        hint="the loss keeps the logits' dtype: float64 logits give a float64 loss. Do not "
        "convert with .float() (or compute through a float32 tensor)",
        source=sources(
            LOSS_SOURCE,
            ("F.cross_entropy(logits[:, :-1]", "F.cross_entropy(logits[:, :-1].float()"),
        ),
    ),
    Mistake(
        id="loss-python-float",
        hint="return the loss as a 0-d tensor (training calls .backward() on it): no .item()",
        source=sources(LOSS_SOURCE, ("idx[:, 1:].reshape(-1))", "idx[:, 1:].reshape(-1)).item()")),
    ),
    Mistake(
        id="loss-per-sequence",
        hint="the loss is one number, the mean over all B (T - 1) predictions at once: a mean per "
        "sequence (reduction='none', then .mean(1)) has shape (B,). Use F.cross_entropy's default "
        "mean over the flattened (B (T - 1), V) logits",
        source="""
def lm_loss(logits, idx):
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), idx[:, 1:], reduction="none").mean(1)
""",
    ),
    Mistake(
        id="loss-mean-over-batch-only",
        hint="average over all B (T - 1) predictions, not per sequence summed over positions",
        source="""
def lm_loss(logits, idx):
    V = logits.shape[-1]
    B = logits.shape[0]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), idx[:, 1:].reshape(-1), reduction="sum") / B
""",
    ),
]


def loss_visible() -> list[Probe]:
    g = seeded(803)
    return [
        Probe(name="B=2, T=5, vocab 7", args=(randn(g, 2, 5, 7, scale=2), tokens(g, 7, 2, 5))),
        Probe(
            name="T=2: one prediction per sequence", args=(randn(g, 3, 2, 5), tokens(g, 5, 3, 2))
        ),
        Probe(
            name="float64 logits: a float64 loss",
            args=(randn(g, 2, 4, 6, dtype=torch.float64), tokens(g, 6, 2, 4)),
        ),
        Probe(
            name="gradient with respect to the logits (the last position gets none)",
            args=(randn(g, 2, 4, 6, dtype=torch.float64), tokens(g, 6, 2, 4)),
            mode="grad",
            grad_seed=8,
        ),
    ]


def loss_hidden(g: torch.Generator) -> list[Probe]:
    T = int(torch.randint(2, 20, (1,), generator=g))
    return [
        Probe(
            name=f"B=3, T={T}, vocab 256", args=(randn(g, 3, T, 256, scale=3), tokens(g, 256, 3, T))
        ),
        Probe(name="float64", args=(randn(g, 2, 7, 11, dtype=torch.float64), tokens(g, 11, 2, 7))),
        Probe(name="one sequence", args=(randn(g, 1, 9, 5), tokens(g, 5, 1, 9))),
        Probe(
            name="gradient (float64)",
            args=(randn(g, 2, 6, 9, dtype=torch.float64), tokens(g, 9, 2, 6)),
            mode="grad",
            grad_seed=9,
        ),
    ]


# ---------------------------------------------------------------- cached decoding

CACHED_SOURCE = """
def cached_logits(idx, params, n_heads, n_kv_heads, n_prompt):
    n_layers = sum(name.endswith(".norm1.weight") for name in params)
    cache = [None] * n_layers
    pieces = [lm_forward(idx[:, :n_prompt], params, n_heads, n_kv_heads, cache=cache)]
    for t in range(n_prompt, idx.shape[1]):
        pieces.append(lm_forward(idx[:, t : t + 1], params, n_heads, n_kv_heads, cache=cache))
    return torch.cat(pieces, dim=1)
"""

CACHE_EVERY_CALL = (
    "pass the same cache to every call of lm_forward, the prefill and each new token alone "
    "(lm_forward(idx[:, t:t + 1], ..., cache=cache)): the keys and values of everything before "
    "the new token are read from it. Without it a token sees nothing before it; recomputing the "
    "whole prefix instead gives the right logits, but that is the work the cache exists to save"
)
PREFILL = (
    "the prompt goes in ONE call, lm_forward(idx[:, :n_prompt], ..., cache=cache) (the prefill: "
    "T > 1 tokens at once, which is what block_forward's mask tril(S - T) is for), then each "
    "later token in a call of its own"
)

CACHED_MISTAKES = [
    Mistake(
        id="cache-not-used",
        hint=CACHE_EVERY_CALL,
        source=sources(
            CACHED_SOURCE,
            ("params, n_heads, n_kv_heads, cache=cache))", "params, n_heads, n_kv_heads))"),
        ),
    ),
    Mistake(
        id="cache-ignored-one-pass",
        hint=CACHE_EVERY_CALL,
        source="""
def cached_logits(idx, params, n_heads, n_kv_heads, n_prompt):
    return lm_forward(idx, params, n_heads, n_kv_heads)
""",
    ),
    Mistake(
        id="cache-recomputes-prefix",
        hint=CACHE_EVERY_CALL,
        source=sources(
            CACHED_SOURCE,
            (
                "lm_forward(idx[:, t : t + 1], params, n_heads, n_kv_heads, cache=cache)",
                "lm_forward(idx[:, : t + 1], params, n_heads, n_kv_heads)[:, -1:]",
            ),
        ),
    ),
    Mistake(
        id="cache-new-per-call",
        hint="make the cache once, before the prefill, and pass that same list to every call: a "
        "new [None] * n_layers for a later token forgets the prompt",
        source=sources(
            CACHED_SOURCE,
            (
                "lm_forward(idx[:, t : t + 1], params, n_heads, n_kv_heads, cache=cache)",
                "lm_forward(idx[:, t : t + 1], params, n_heads, n_kv_heads, cache=[None] * n_layers)",
            ),
        ),
    ),
    Mistake(
        id="cache-one-entry-per-head",
        hint="the cache has one entry per LAYER, [None] * n_layers (n_layers: the number of "
        "'.norm1.weight' entries), not one per head: with more layers than heads the last blocks "
        "have no slot (IndexError), with fewer the extra slots are never used",
        source=sources(CACHED_SOURCE, ("cache = [None] * n_layers", "cache = [None] * n_heads")),
    ),
    Mistake(
        id="cache-prompt-token-by-token",
        hint=PREFILL,
        source=sources(
            CACHED_SOURCE,
            (
                "    pieces = [lm_forward(idx[:, :n_prompt], params, n_heads, n_kv_heads, "
                "cache=cache)]\n    for t in range(n_prompt, idx.shape[1]):",
                "    pieces = []\n    for t in range(idx.shape[1]):",
            ),
        ),
    ),
    Mistake(
        id="cache-prefill-one-short",
        hint=PREFILL,
        source=sources(
            CACHED_SOURCE,
            ("idx[:, :n_prompt]", "idx[:, : n_prompt - 1]"),
            ("range(n_prompt, idx.shape[1])", "range(n_prompt - 1, idx.shape[1])"),
        ),
    ),
    Mistake(
        id="cache-not-advanced",
        hint="the cache must grow with every token: store the concatenated keys and values back "
        "(cache[layer] = (k, v)) at every step, not only at the prefill; its length is the "
        "position of the next token, so a cache that does not advance also repeats a position",
        source=CACHED_SOURCE
        + FORWARD_SOURCE
        + sources(
            BLOCK_SOURCE,
            (
                "        cache[layer] = (k, v)\n",
                "        if cache[layer] is None:\n            cache[layer] = (k, v)\n"
                "        else:\n            cache[layer] = cache[layer]\n",
            ),
        ),
    ),
    Mistake(
        id="positions-not-passed-to-rope",
        hint="the new tokens sit at positions cache length .. cache length + T - 1: RoPE's tables "
        "must come from those positions (torch.arange(past, past + T)), not from "
        "torch.arange(T), which puts every decoded token at position 0",
        source=CACHED_SOURCE
        + sources(FORWARD_SOURCE, ("torch.arange(past, past + T,", "torch.arange(T,")),
    ),
    Mistake(
        id="cache-mask-wrong-sign",
        hint=MASK_WRONG_SIGN,
        source=CACHED_SOURCE
        + FORWARD_SOURCE
        + sources(BLOCK_SOURCE, ("tril(diagonal=S - T)", "tril(diagonal=T - S)")),
    ),
    Mistake(
        id="cache-mask-top-left",
        hint=MASK_TOP_LEFT,
        source=CACHED_SOURCE
        + FORWARD_SOURCE
        + sources(BLOCK_SOURCE, ("tril(diagonal=S - T)", "tril(diagonal=0)")),
    ),
]


def cached_case(g, vocab, B, T, D, L, H, H_kv, d_ff, n_prompt, dtype=torch.float32):
    return (
        tokens(g, vocab, B, T),
        weights(g, vocab, D, L, H, H_kv, d_ff, dtype=dtype),
        H,
        H_kv,
        n_prompt,
    )


CACHED_INSPECT = "course.probe_lm:inspect_cached_decoding"


def cached_visible() -> list[Probe]:
    g = seeded(804)
    return [
        Probe(
            name="prompt of 3, then 3 tokens one at a time (2 layers, 2 heads, 1 kv head)",
            args=cached_case(g, 11, 2, 6, 8, 2, 2, 1, 16, 3),
            inspect=CACHED_INSPECT,
        ),
        Probe(
            name="prompt of 1, then 4 tokens (1 layer, 2 heads)",
            args=cached_case(g, 11, 1, 5, 8, 1, 2, 2, 16, 1),
            inspect=CACHED_INSPECT,
        ),
        Probe(
            name="3 layers, 2 heads (more layers than heads), prompt of 2",
            args=cached_case(g, 11, 2, 5, 8, 3, 2, 2, 16, 2),
            inspect=CACHED_INSPECT,
        ),
    ]


def cached_hidden(g: torch.Generator) -> list[Probe]:
    n = int(torch.randint(1, 5, (1,), generator=g))
    return [
        Probe(
            name=f"prompt of {n}, then 4 tokens",
            args=cached_case(g, 13, 2, n + 4, 16, 2, 4, 2, 32, n),
            inspect=CACHED_INSPECT,
        ),
        Probe(
            name="MQA, 3 layers",
            args=cached_case(g, 9, 1, 7, 8, 3, 2, 1, 16, 2),
            inspect=CACHED_INSPECT,
        ),
        Probe(
            name="float64",
            args=cached_case(g, 11, 2, 6, 8, 1, 2, 2, 16, 2, dtype=torch.float64),
            inspect=CACHED_INSPECT,
        ),
        Probe(
            name="4 layers, 2 heads, 1 kv head",
            args=cached_case(g, 11, 1, 6, 8, 4, 2, 1, 16, 3),
            inspect=CACHED_INSPECT,
        ),
    ]


# ---------------------------------------------------------------- sampling

SAMPLE_SOURCE = """
def sample_next(logits, temperature=1.0, top_p=1.0, generator=None):
    if temperature == 0 or top_p == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)
    drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
    choice = torch.multinomial(sorted_probs.masked_fill(drop, 0.0), 1, generator=generator)
    return order.gather(-1, choice).squeeze(-1)
"""

FREQUENCIES = """

def sample_frequencies(logits, temperature, top_p, n_samples, seed):
    g = torch.Generator().manual_seed(seed)
    tokens = sample_next(logits.repeat(n_samples, 1), temperature, top_p, generator=g)
    # Counted whatever came back; the check then says what is wrong with it.
    tokens = torch.as_tensor(tokens).reshape(-1).long()
    return torch.bincount(tokens, minlength=logits.shape[-1]).to(torch.float64) / n_samples
"""

TOP_P_ON_PROBABILITIES = (
    "top-p adds up probabilities, not logits: softmax(logits / temperature) first, then sort and "
    "cumsum those, and draw from the kept probabilities renormalised (a cumulative sum of logits, "
    "which may be negative, has nothing to do with top_p, and logits are not probabilities)"
)
IN_PLACE_LOGITS = (
    "logits.div_(temperature) (or logits /= temperature, masked_fill_...) changes the caller's "
    "logits, and so does an in-place edit undone afterwards (div_ then mul_: the tensor changes "
    "meanwhile, and t * (x / t) is not always x in floating point): compute a new tensor, "
    "logits / temperature"
)

SAMPLE_MISTAKES = [
    Mistake(
        id="top-p-before-temperature",
        hint="apply the temperature first, then take the nucleus of the tempered distribution: "
        "a flatter distribution (T > 1) needs more tokens to reach top_p",
        source="""
def sample_next(logits, temperature=1.0, top_p=1.0, generator=None):
    if temperature == 0 or top_p == 0:
        return logits.argmax(-1)
    plain = torch.softmax(logits, dim=-1)
    sorted_plain, order = plain.sort(dim=-1, descending=True, stable=True)
    drop = sorted_plain.cumsum(-1) - sorted_plain >= top_p
    probs = torch.softmax(logits / temperature, dim=-1).gather(-1, order)
    choice = torch.multinomial(probs.masked_fill(drop, 0.0), 1, generator=generator)
    return order.gather(-1, choice).squeeze(-1)
"""
        + FREQUENCIES,
    ),
    Mistake(
        id="temperature-multiplies",
        hint="temperature divides the logits (softmax(logits / T)): a small T sharpens the "
        "distribution toward the argmax, a large T flattens it",
        source=sources(SAMPLE_SOURCE, ("logits / temperature", "logits * temperature"))
        + FREQUENCIES,
    ),
    Mistake(
        id="top-p-drops-crossing-token",
        hint="the nucleus is the smallest set whose probability reaches top_p: keep the token "
        "that crosses top_p (drop a token only when the ones ranked above it already reach "
        "top_p: cumsum - p >= top_p)",
        source=sources(
            SAMPLE_SOURCE,
            ("sorted_probs.cumsum(-1) - sorted_probs >= top_p", "sorted_probs.cumsum(-1) > top_p"),
        )
        + FREQUENCIES,
    ),
    Mistake(
        id="top-p-unsorted",
        hint="the nucleus is taken over tokens sorted by probability, most likely first: sort "
        "before the cumulative sum",
        source="""
def sample_next(logits, temperature=1.0, top_p=1.0, generator=None):
    if temperature == 0 or top_p == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    drop = probs.cumsum(-1) - probs >= top_p
    return torch.multinomial(probs.masked_fill(drop, 0.0), 1, generator=generator).squeeze(-1)
"""
        + FREQUENCIES,
    ),
    Mistake(
        id="temperature-zero-divides",
        hint="temperature 0 means greedy decoding: return logits.argmax(-1) (dividing by 0 gives "
        "inf and NaN probabilities)",
        source=sources(SAMPLE_SOURCE, ("if temperature == 0 or top_p == 0:", "if top_p == 0:"))
        + FREQUENCIES,
    ),
    Mistake(
        id="top-p-zero-keeps-nothing",
        hint="top_p = 0 keeps only the most likely token (the nucleus always holds at least one "
        "token): it equals argmax",
        source=sources(
            SAMPLE_SOURCE, ("if temperature == 0 or top_p == 0:", "if temperature == 0:")
        )
        + FREQUENCIES,
    ),
    Mistake(
        id="sampler-ignores-generator",
        hint="draw with the generator you are given, torch.multinomial(probs, 1, "
        "generator=generator): the same seed must give the same text",
        source=sources(SAMPLE_SOURCE, (", 1, generator=generator)", ", 1)")) + FREQUENCIES,
    ),
    Mistake(
        id="sampler-int32",
        hint="token ids are int64 (torch.long), what argmax and multinomial return: no "
        ".int() or .to(torch.int32)",
        source=sources(SAMPLE_SOURCE, (".squeeze(-1)", ".squeeze(-1).to(torch.int32)"))
        + FREQUENCIES,
    ),
    Mistake(
        id="sampler-keeps-sample-dim",
        hint="one id per row, shape (B,): multinomial returns (B, 1), so squeeze its last dim",
        source=sources(SAMPLE_SOURCE, (".squeeze(-1)", "")) + FREQUENCIES,
    ),
    Mistake(
        id="sampler-returns-numpy",
        hint="return a torch tensor of token ids, not a NumPy array (no .numpy() or .tolist())",
        source=sources(SAMPLE_SOURCE, (".squeeze(-1)", ".squeeze(-1).numpy()")) + FREQUENCIES,
    ),
    Mistake(
        id="sampler-divides-in-place",
        hint=IN_PLACE_LOGITS,
        source=sources(SAMPLE_SOURCE, ("logits / temperature", "logits.div_(temperature)"))
        + FREQUENCIES,
    ),
    Mistake(
        id="sampler-first-row-only",
        hint="one token per row, each drawn from ITS row's probabilities: torch.multinomial on "
        "the whole (B, V) tensor draws one per row. Drawing B tokens from probs[0] gives every "
        "row row 0's distribution",
        source=sources(
            SAMPLE_SOURCE,
            (
                "choice = torch.multinomial(sorted_probs.masked_fill(drop, 0.0), 1, "
                "generator=generator)",
                "choice = torch.multinomial(sorted_probs.masked_fill(drop, 0.0)[0], "
                "logits.shape[0], replacement=True, generator=generator)[:, None]\n"
                "    order = order[:1].expand_as(order)",
            ),
        )
        + FREQUENCIES,
    ),
    Mistake(
        id="top-p-strict",
        hint="drop a token when the tokens ranked above it ALREADY reach top_p: cumsum - p >= "
        "top_p, not >. When they sum to top_p exactly (four tokens of 0.25 and top_p 0.5) the "
        "nucleus is complete without the next token",
        source=sources(SAMPLE_SOURCE, ("- sorted_probs >= top_p", "- sorted_probs > top_p"))
        + FREQUENCIES,
    ),
    Mistake(
        id="top-p-keeps-ties",
        hint="tokens of equal probability are ranked by token id, lowest first (a stable sort, "
        "sort(..., descending=True, stable=True)), and the nucleus is cut by rank: a tied token "
        "ranked after the cut is dropped like any other, not kept because its probability equals "
        "a kept one's",
        source=sources(
            SAMPLE_SOURCE,
            (
                "    choice = torch.multinomial(",
                "    kept = sorted_probs.masked_fill(drop, float('inf')).min(-1, keepdim=True).values\n"
                "    drop = sorted_probs < kept\n"
                "    choice = torch.multinomial(",
            ),
        )
        + FREQUENCIES,
    ),
    Mistake(
        id="top-p-on-logits",
        hint=TOP_P_ON_PROBABILITIES,
        source=sources(
            SAMPLE_SOURCE,
            (
                "    sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)\n"
                "    drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p\n",
                "    sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)\n"
                "    sorted_logits = logits.gather(-1, order)\n"
                "    drop = sorted_logits.cumsum(-1) - sorted_logits >= top_p\n",
            ),
        )
        + FREQUENCIES,
    ),
    Mistake(
        id="top-p-on-logits-as-weights",
        hint=TOP_P_ON_PROBABILITIES,
        source="""
def sample_next(logits, temperature=1.0, top_p=1.0, generator=None):
    if temperature == 0 or top_p == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True, stable=True)
        kept = sorted_logits.masked_fill(sorted_logits.cumsum(-1) - sorted_logits >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, kept)
    probs = probs / probs.sum(-1, keepdim=True)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
"""
        + FREQUENCIES,
    ),
    Mistake(
        id="top-p-ignored",
        hint="top_p < 1 restricts the draw to the nucleus: sort the probabilities, drop every token "
        "whose higher-ranked tokens already reach top_p, renormalise the rest and draw from them "
        "(top_p = 1 keeps every token)",
        source=sources(SAMPLE_SOURCE, ("- sorted_probs >= top_p", "- sorted_probs > 1.0"))
        + FREQUENCIES,
    ),
    Mistake(
        id="sampler-in-place-undone",
        hint=IN_PLACE_LOGITS,
        source=sources(
            SAMPLE_SOURCE,
            (
                "    probs = torch.softmax(logits / temperature, dim=-1)\n",
                "    probs = torch.softmax(logits.div_(temperature), dim=-1)\n"
                "    logits.mul_(temperature)\n",
            ),
        )
        + FREQUENCIES,
    ),
    Mistake(
        id="always-greedy",
        hint="sampling draws from the distribution (torch.multinomial with the generator); argmax "
        "is only temperature 0 or top_p 0",
        source="""
def sample_next(logits, temperature=1.0, top_p=1.0, generator=None):
    return logits.argmax(-1)
"""
        + FREQUENCIES,
    ),
]

FREQ_TOL = Tolerance(
    0.02, 0.0, "frequencies of 20000 draws: each has a standard deviation below 0.0036"
)


def sample_probe(name, logits, temperature, top_p, seed) -> Probe:
    return Probe(
        name=name,
        args=(logits, temperature, top_p, 20000, seed),
        tolerance=FREQ_TOL,
        inspect="course.probe_lm:inspect_sampler",
    )


def sample_visible() -> list[Probe]:
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    return [
        sample_probe("temperature 1, no top-p", logits, 1.0, 1.0, 1),
        sample_probe("temperature 0.5 (sharper)", logits, 0.5, 1.0, 2),
        sample_probe("temperature 0 is argmax", logits, 0.0, 1.0, 3),
        sample_probe(
            "top_p 0.7 on the same logits minus 5 (all negative; the same probabilities): the two "
            "most likely tokens",
            logits - 5.0,
            1.0,
            0.7,
            8,
        ),
        sample_probe(
            "top_p 0.7: the two most likely tokens (0.56 < 0.7 <= 0.56 + 0.21)", logits, 1.0, 0.7, 4
        ),
        sample_probe("top_p 0 is argmax", logits, 1.0, 0.0, 5),
        sample_probe(
            "temperature 2 then top_p 0.7: three tokens of the flatter distribution",
            logits,
            2.0,
            0.7,
            7,
        ),
        sample_probe(
            "top_p 0.7, logits not sorted: tokens 2 and 4 (0.56 + 0.21)",
            torch.tensor([0.0, 0.5, 2.0, -1.0, 1.0]),
            1.0,
            0.7,
            6,
        ),
        sample_probe(
            "ties on the boundary: four equal logits, top_p 0.5 keeps tokens 0 and 1 (ranked by "
            "id; 0.25 + 0.25 reaches 0.5 exactly)",
            torch.zeros(4),
            1.0,
            0.5,
            9,
        ),
    ]


def sample_hidden(g: torch.Generator) -> list[Probe]:
    logits = randn(g, 8, scale=1.5)
    shuffled = torch.tensor([-1.0, 0.5, 3.0, 0.0, 2.0, 1.0])
    return [
        sample_probe("random logits, temperature 1", logits, 1.0, 1.0, 11),
        sample_probe("temperature 2 (flatter)", logits, 2.0, 1.0, 12),
        sample_probe("top_p 0.8, logits not sorted", shuffled, 1.0, 0.8, 13),
        sample_probe("top_p 0.5, temperature 0.7", shuffled, 0.7, 0.5, 14),
        sample_probe("top_p 0.7, temperature 2", shuffled, 2.0, 0.7, 17),
        sample_probe("temperature 0", logits, 0.0, 0.9, 15),
        sample_probe("top_p 0", shuffled, 1.3, 0.0, 16),
        sample_probe("ties: eight equal logits, top_p 0.75", torch.zeros(8), 1.0, 0.75, 18),
        sample_probe("top_p 0.6, logits below zero", shuffled - 10.0, 1.0, 0.6, 19),
    ]


# ---------------------------------------------------------------- the lesson

LESSON = Lesson(
    folder="08-language-model",
    notebook="language_model",
    context_cells=("setup",),
    exercises=[
        Exercise(
            id="parameter-count",
            title="predict the parameter count",
            function="lm_parameter_count",
            signature="lm_parameter_count(vocab_size, d_model, n_layers, n_heads, n_kv_heads, "
            "d_ff, tied=True) -> int",
            reference=A.lm_parameter_count,
            answer_cell="lm_parameter_count",
            test_cell="test-parameter-count",
            points=2,
            visible=count_visible,
            hidden=count_hidden,
            mistakes=COUNT_MISTAKES,
        ),
        Exercise(
            id="init-plan",
            title="every parameter, its shape and its initialisation",
            function="init_plan",
            signature="init_plan(vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_ff, "
            "tied=True) -> list of (name, shape, mean, std)",
            reference=A.init_plan,
            answer_cell="init_plan",
            test_cell="test-init-plan",
            points=2,
            visible=plan_visible,
            hidden=plan_hidden,
            mistakes=PLAN_MISTAKES,
        ),
        Exercise(
            id="block-forward",
            title="one pre-LN block from your parts",
            function="block_forward",
            signature="block_forward(x: (B, T, d_model), params, layer, n_heads, n_kv_heads, cos, "
            "sin: (T, head_dim / 2), cache=None) -> (B, T, d_model)",
            reference=A.block_forward,
            answer_cell="block_forward",
            test_cell="test-block-forward",
            points=3,
            visible=block_visible,
            hidden=block_hidden,
            mistakes=BLOCK_MISTAKES,
            stand_ins=PARTS_STAND_INS,
            uses=("rotate_pairs", "rms_norm", "split_heads", "merge_heads", "repeat_kv"),
        ),
        Exercise(
            id="lm-forward",
            title="the whole model: the weight oracle",
            function="lm_forward",
            signature="lm_forward(idx: int64 (B, T), params, n_heads, n_kv_heads=None, "
            "cache=None, return_stages=False) -> logits (B, T, vocab_size) or the list of stages",
            reference=A.lm_forward,
            answer_cell="lm_forward",
            test_cell="test-lm-forward",
            points=3,
            visible=forward_visible,
            hidden=forward_hidden,
            mistakes=FORWARD_MISTAKES,
            stand_ins=PARTS_STAND_INS,
            uses=("block_forward", "rope_cos_sin", "rotate_pairs"),
        ),
        Exercise(
            id="lm-loss",
            title="the language-modelling loss, shifted by one",
            function="lm_loss",
            signature="lm_loss(logits: (B, T, V), idx: int64 (B, T)) -> 0-d tensor",
            reference=A.lm_loss,
            answer_cell="lm_loss",
            test_cell="test-lm-loss",
            points=2,
            visible=loss_visible,
            hidden=loss_hidden,
            mistakes=LOSS_MISTAKES,
        ),
        Exercise(
            id="cached-decoding",
            title="decoding with the KV cache equals recomputation",
            function="cached_logits",
            signature="cached_logits(idx: int64 (B, T), params, n_heads, n_kv_heads, n_prompt) -> "
            "(B, T, vocab_size)",
            reference=A.cached_logits,
            answer_cell="cached_logits",
            test_cell="test-cached-decoding",
            points=3,
            visible=cached_visible,
            hidden=cached_hidden,
            mistakes=CACHED_MISTAKES,
            stand_ins=PARTS_STAND_INS,
            uses=("lm_forward", "block_forward"),
        ),
        Exercise(
            id="sampling",
            title="temperature and top-p sampling",
            function="sample_frequencies",
            signature="sample_next(logits: (B, V), temperature=1.0, top_p=1.0, generator=None) -> "
            "int64 (B,); judged through sample_frequencies(logits (V,), temperature, top_p, "
            "n_samples, seed) -> float64 (V,)",
            reference=A.sample_frequencies,
            answer_cell="sample_next",
            test_cell="test-sampling",
            points=2,
            visible=sample_visible,
            hidden=sample_hidden,
            mistakes=SAMPLE_MISTAKES,
            must_call=("sample_next",),
        ),
    ],
)
