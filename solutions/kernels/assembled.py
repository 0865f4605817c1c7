"""Lesson 08's reference: the course's language model as plain functions over a weight dict.

The weights are `dict(TransformerLM(config).named_parameters())`: names such as
`tok_emb.weight` `(vocab_size, d_model)`, `blocks.{i}.norm1.weight`, `blocks.{i}.attn.W_qkv.weight`
`((n_heads + 2 n_kv_heads) head_dim, d_model)`, `blocks.{i}.attn.W_o.weight`,
`blocks.{i}.norm2.weight`, `blocks.{i}.ffn.W_gate.weight`, `.W_up.weight`, `.W_down.weight`,
`norm_f.weight`, and `lm_head.weight` only when the head is not tied to the embedding (a tied
parameter is listed once). The architecture is the reference model's defaults (`ModelConfig`):
pre-LN blocks, RMSNorm (eps 1e-5), RoPE (interleaved pairs, theta 10000), SwiGLU, no biases.

Every forward function here runs the reference `TransformerLM` (solutions/kernels/model.py)
with those weights loaded: it is the "weight oracle" a learner's functional model is judged
against. Initialisation follows GPT-2 (Radford et al. 2019, section 2.3, and nanoGPT's
`_init_weights`): N(0, 0.02), residual projections N(0, 0.02 / sqrt(2 n_layers)), norms 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from course.lm.config import ModelConfig
from course.lm.sample import filter_logits
from solutions.kernels.kv_cache import KVCache
from solutions.kernels.model import RESIDUAL_PROJECTIONS, TransformerLM

__all__ = [
    "lm_parameter_count",
    "init_plan",
    "init_params",
    "config_from_params",
    "reference_model",
    "block_forward",
    "lm_forward",
    "lm_loss",
    "cached_logits",
    "sample_frequencies",
]


def _d_ff(d_model: int) -> int:
    return ModelConfig(d_model=d_model, n_heads=1).d_ff


def init_plan(
    vocab_size: int,
    d_model: int,
    n_layers: int,
    n_heads: int,
    n_kv_heads: int,
    d_ff: int,
    tied: bool = True,
) -> list[tuple[str, tuple[int, ...], float, float]]:
    """`(name, shape, mean, std)` of every parameter, in `named_parameters()` order.

    Norm weights are `(mean 1.0, std 0.0)`; matrices N(0, 0.02), except the two residual
    projections of each block (`attn.W_o`, `ffn.W_down`), N(0, 0.02 / sqrt(2 n_layers))
    (GPT-2). A tied head is not a parameter of its own.
    """
    head_dim = d_model // n_heads
    # No blocks (n_layers = 0): no residual projection exists, so there is nothing to scale.
    residual_std = 0.02 / math.sqrt(2 * n_layers) if n_layers else 0.02
    plan = [("tok_emb.weight", (vocab_size, d_model), 0.0, 0.02)]
    for i in range(n_layers):
        p = f"blocks.{i}."
        plan += [
            (p + "norm1.weight", (d_model,), 1.0, 0.0),
            (p + "attn.W_qkv.weight", ((n_heads + 2 * n_kv_heads) * head_dim, d_model), 0.0, 0.02),
            (p + "attn.W_o.weight", (d_model, d_model), 0.0, residual_std),
            (p + "norm2.weight", (d_model,), 1.0, 0.0),
            (p + "ffn.W_gate.weight", (d_ff, d_model), 0.0, 0.02),
            (p + "ffn.W_up.weight", (d_ff, d_model), 0.0, 0.02),
            (p + "ffn.W_down.weight", (d_model, d_ff), 0.0, residual_std),
        ]
    plan.append(("norm_f.weight", (d_model,), 1.0, 0.0))
    if not tied:
        plan.append(("lm_head.weight", (vocab_size, d_model), 0.0, 0.02))
    assert all(not n.endswith(RESIDUAL_PROJECTIONS) or s == residual_std for n, _, _, s in plan)
    return plan


def lm_parameter_count(
    vocab_size: int,
    d_model: int,
    n_layers: int,
    n_heads: int,
    n_kv_heads: int,
    d_ff: int,
    tied: bool = True,
) -> int:
    """Number of parameters (a tied head counted once), as `TransformerLM.num_parameters()`."""
    head_dim = d_model // n_heads
    attn = (n_heads + 2 * n_kv_heads) * head_dim * d_model + d_model * d_model
    block = 2 * d_model + attn + 3 * d_ff * d_model
    head = 0 if tied else vocab_size * d_model
    return vocab_size * d_model + n_layers * block + d_model + head


def init_params(plan, seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Weights drawn as `plan` says (`mean + std * N(0, 1)`), from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return {
        name: (mean + std * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)
        for name, shape, mean, std in plan
    }


def config_from_params(params: dict, n_heads: int, n_kv_heads: int | None = None, **kw):
    """The `ModelConfig` whose `TransformerLM` has exactly these weights."""
    vocab_size, d_model = params["tok_emb.weight"].shape
    n_layers = sum(1 for name in params if name.endswith(".norm1.weight"))
    return ModelConfig(
        vocab_size=vocab_size,
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads or n_heads,
        d_ff=params["blocks.0.ffn.W_gate.weight"].shape[0],
        tie_embeddings="lm_head.weight" not in params,
        attention="reference",
        context_length=kw.pop("context_length", 64),
        **kw,
    )


def reference_model(params: dict, n_heads: int, n_kv_heads: int | None = None) -> TransformerLM:
    """`TransformerLM` holding `params` (in their dtype), in eval mode."""
    config = config_from_params(params, n_heads, n_kv_heads)
    dtype = params["tok_emb.weight"].dtype
    model = TransformerLM(config, seed=0).to(dtype).eval()
    state = dict(params)
    if config.tie_embeddings:
        state["lm_head.weight"] = state["tok_emb.weight"]
    model.load_state_dict(state, strict=True)
    return model


@torch.no_grad()
def block_forward(x, params, layer, n_heads, n_kv_heads, cos, sin, cache=None):
    """Block `layer` of the model on `x` `(batch, seq, d_model)` whose tokens sit at the
    positions `cos`, `sin` `(seq, head_dim / 2)` describe; returns `(batch, seq, d_model)`.

    `cache`: None, or a list with one entry per layer, each None or the pair `(keys, values)`
    `(batch, n_kv_heads, past, head_dim)` of the positions before these: the block then attends
    over `past + seq` keys, query i seeing keys `0 .. past + i`, and stores all `past + seq` of
    them back in `cache[layer]` (what a learner's block stores there is judged by an inspector,
    `course.probe_lm.inspect_block_cache`)."""
    n_kv_heads = n_kv_heads or n_heads
    prefix = f"blocks.{layer}."
    model = reference_model(
        {
            "tok_emb.weight": torch.zeros(1, x.shape[-1], dtype=x.dtype),
            **{
                "blocks.0." + k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)
            },
            "norm_f.weight": torch.ones(x.shape[-1], dtype=x.dtype),
        },
        n_heads,
        n_kv_heads,
    )
    if cache is None:
        return model.blocks[0](x, rope=(cos, sin))
    B, T, d_model = x.shape
    head_dim = d_model // n_heads
    P = 0 if cache[layer] is None else cache[layer][0].shape[2]
    kv = KVCache(1, B, n_kv_heads, P + T, head_dim, dtype=x.dtype, device=x.device)
    if P:
        kv.update(0, *cache[layer])
        kv.advance(P)
    out = model.blocks[0](x, rope=(cos, sin), cache=kv, layer=0)
    cache[layer] = (kv.keys[0], kv.values[0])
    return out


@torch.no_grad()
def lm_forward(idx, params, n_heads, n_kv_heads=None, cache=None, return_stages=False):
    """Logits `(batch, T, vocab_size)` for token ids `idx` `(batch, T)`.

    With `return_stages=True`, the list of every stage: the embeddings, the output of each
    block, the final norm's output, the logits (each `(batch, T, ...)`), so that a learner's
    first differing stage can be named. `cache` must be None here.
    """
    if cache is not None:
        raise ValueError("the reference lm_forward is judged without a cache")
    model = reference_model(params, n_heads, n_kv_heads)
    T = idx.shape[1]
    stages = [F.embedding(idx, model.tok_emb.weight)]
    rope = model.rope_tables(0, T)
    for layer, block in enumerate(model.blocks):
        stages.append(block(stages[-1], rope=rope, layer=layer))
    stages.append(model.norm_f(stages[-1]))
    stages.append(F.linear(stages[-1], model.lm_head.weight))
    logits = model(idx)
    assert torch.equal(logits, stages[-1])
    return stages if return_stages else logits


def lm_loss(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting token t + 1 from the logits at position t.

    logits `(batch, T, vocab)`, idx int64 `(batch, T)`; a 0-d tensor in logits' dtype. The last
    position has no target and the first token is never a target.
    """
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), idx[:, 1:].reshape(-1))


@torch.no_grad()
def cached_logits(idx, params, n_heads, n_kv_heads, n_prompt):
    """What decoding `idx` `(batch, T)` with a KV cache must give: the prompt's first
    `n_prompt` tokens in one pass, then one token at a time. Equal to recomputing the whole
    sequence, which is what this returns: `(batch, T, vocab_size)`."""
    del n_prompt
    return lm_forward(idx, params, n_heads, n_kv_heads)


def sample_frequencies(logits, temperature, top_p, n_samples, seed):
    """The probabilities each token is drawn with from one row of `logits` `(vocab,)`
    (float64 `(vocab,)`): softmax(logits / temperature) restricted to the top-p nucleus
    (Holtzman et al. 2020) and renormalised; temperature 0 or top_p 0 is a one-hot at the
    argmax. A learner's empirical frequencies over `n_samples` draws approach this."""
    del n_samples, seed
    logits = logits.to(torch.float64)
    if temperature == 0 or top_p == 0:
        return F.one_hot(logits.argmax(), logits.shape[-1]).to(torch.float64)
    return filter_logits(logits / temperature, top_p=top_p).softmax(-1)
