"""A component ladder: seven language models, each one component more than the one before.

    from course.lm.ladder import train_ladder
    result = train_ladder(steps=400)      # about 220 s of CPU time on one thread
    print(result.table())

or `python -m course.lm ladder --steps 400`. The rungs, bottom to top:

    bigram        token embedding -> linear head: the next byte from the current byte alone
    one head      + causal self-attention, one head as wide as the model, in every layer
    multi-head    + the same width split into n_heads heads (no new parameters)
    feed-forward  + a feed-forward layer after each attention layer
    residual      + residual connections around both (no new parameters)
    pre-LN norms  + a norm before each sub-layer and before the head (pre-LN)
    RoPE          + rotary position embeddings on queries and keys (no new parameters)

The ladder is built from parts taken from outside, so that this public module holds no
lesson's answer. The attention splits and merges its heads with lesson 04's `split_heads` and
`merge_heads`, and the norms are lesson 06's `rms_norm`: `LadderParts`, the learner's own in
lesson 08's notebook (`train_ladder(..., parts=LadderParts(split_heads, merge_heads,
rms_norm))`), by default `course.stand_ins`' (copies and `F.rms_norm`, forms those lessons'
checks reject). The RoPE rung rotates with lesson 05's `rope_cos_sin` and `rotate_pairs`: the
learner's own (`rope=(rope_cos_sin, rotate_pairs)`, as lesson 08's notebook does), or those of
a module named by `rope=` / `--rope` (default: the reference kernels, imported by name only,
since a student bundle does not ship them; without them that rung is skipped, its row saying
why).

The top rung is the course's reference architecture (pre-LN, RoPE multi-head attention, the
config's feed-forward and norm) except that its head is untied. Every rung is trained by
`course.lm.train` unchanged, with one shared budget: the same model size, corpus, steps,
batch, context, optimizer, schedule and seed, so the same batches in the same order. Each is a
class that follows `course/lm/protocol.py`, so `python -m course.lm train --model
course.lm.ladder:FeedForwardLM` trains one rung alone.

Two choices keep the comparison about the components:

* **A scale-keeping initialisation** in every rung: each linear layer N(0, 1/d_in) (LeCun et al.
  1998, "Efficient BackProp"), so a matrix keeps the scale of the vector it multiplies, and
  `nn.Embedding`'s N(0, 1). PyTorch's default (uniform in +-1/sqrt(d_in)) shrinks the scale by
  1/sqrt(3) at each matrix, and SwiGLU multiplies two projections, so its output goes with the
  square of its input: on the feed-forward rung, with neither residuals nor norms, the signal
  fell from 0.1 to 1e-14 in three layers, the gradients sank below AdamW's eps and the rung
  stayed at ln 256. With residual connections, the squares compound the other way (the
  unnormalised stream grew to a logit std of about 20 at initialisation), so on those rungs
  the projections that write into the stream (W_o, W_down) are scaled by a further
  1/sqrt(number of residual branches), GPT-2's scaling (Radford et al. 2019, section 2.3).
* **An untied head** in every rung. A tied head gives the bigram rung a symmetric logit table,
  logits[a, b] = e_a . e_b, so "u" after "q" would be as likely as "q" after "u".

The validation losses are the harness's: mean cross-entropy in nats per token, and a token is
a byte, so nats per byte. They are compared with two numbers of the same corpus: the unigram
entropy (what the best model that ignores context reaches) and the bigram entropy (the best a
model that sees only the previous byte can do), both counted on the training split.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from course import stand_ins
from course.lm.config import ModelConfig
from course.lm.corpus import Corpus, load_corpus, unigram_bigram_entropy
from course.lm.errors import ModelSpecError, PresetError, TrainingDiverged
from course.lm.models import DEFAULT_ROPE, ReferenceUnavailable, load_rope_functions
from course.lm.presets import TrainConfig, get_preset
from course.lm.train import train

COMPONENTS = ("attention", "multi_head", "ffn", "residual", "norm", "rope")
DEFAULT_STEPS = 400
DEFAULT_PRESET = "cpu"


# -- the parts ---------------------------------------------------------------------------------


RopeFunctions = tuple[Callable, Callable]  # (rope_cos_sin, rotate_pairs), lesson 05's parts


@dataclass(frozen=True)
class LadderParts:
    """The functions every rung's attention and norms are built from (lesson 08's notebook passes
    the learner's own): `split_heads(x (B, T, H d), H) -> (B, H, T, d)` and `merge_heads(x (B, H,
    T, d)) -> (B, T, H d)` (lesson 04), `rms_norm(x (..., d), weight (d,), eps) -> x's shape and
    dtype` (lesson 06; used when config.norm is "rmsnorm"). The defaults are
    `course.stand_ins`', which give the same values (and `F.rms_norm` exactly nn.RMSNorm's)."""

    split_heads: Callable = stand_ins.split_heads
    merge_heads: Callable = stand_ins.merge_heads
    rms_norm: Callable = stand_ins.rms_norm


def apply_rope(x: torch.Tensor, theta: float, functions: RopeFunctions) -> torch.Tensor:
    """Rotate each pair (2i, 2i+1) of the last dim of x (B, H, T, head_dim) by the angle
    t * theta^(-2i/head_dim) at position t (RoFormer, Su et al. 2021; the course's interleaved
    layout), with the given `(rope_cos_sin, rotate_pairs)` (see `load_rope_functions`).
    Same shape and dtype as x; head_dim must be even."""
    rope_cos_sin, rotate_pairs = functions
    positions = torch.arange(x.shape[-2], device=x.device)
    cos, sin = rope_cos_sin(positions, x.shape[-1], theta, dtype=x.dtype)  # each (T, head_dim/2)
    return rotate_pairs(x, cos, sin, "interleaved")


class CausalSelfAttention(nn.Module):
    """Causal self-attention with `n_heads` heads of width d_model / n_heads.

    x (B, T, d_model) float -> (B, T, d_model), same dtype. Parameters: a fused W_qkv
    (3 d_model x d_model) and W_o (d_model x d_model), whatever the number of heads. Position
    t attends to positions 0..t only; with `rope` = (rope_cos_sin, rotate_pairs), queries and
    keys are rotated (theta = rope_theta). The heads are split and merged by `parts`.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        bias: bool,
        rope_theta: float,
        rope: RopeFunctions | None = None,
        parts: LadderParts = LadderParts(),
    ):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.rope_theta, self.rope = n_heads, rope_theta, rope
        self.split_heads, self.merge_heads = parts.split_heads, parts.merge_heads
        self.W_qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.W_o = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        C = x.shape[-1]
        q, k, v = self.W_qkv(x).split(C, dim=-1)  # each (B, T, C)
        q, k, v = (self.split_heads(t, self.n_heads) for t in (q, k, v))  # (B, H, T, C/H)
        if self.rope is not None:
            q, k = (apply_rope(t, self.rope_theta, self.rope) for t in (q, k))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, C/H)
        return self.W_o(self.merge_heads(y))  # heads side by side again: (B, T, C)


class FeedForward(nn.Module):
    """The position-wise feed-forward layer, x (B, T, d_model) -> (B, T, d_model).

    `swiglu`: W_down(silu(W_gate x) * W_up x), three d_ff x d_model matrices (Shazeer 2020);
    `gelu`: W_down(gelu(W_up x)), two (Vaswani et al. 2017 with GPT-2's GELU).
    """

    def __init__(self, d_model: int, d_ff: int, kind: str, bias: bool):
        super().__init__()
        self.kind = kind
        if kind == "swiglu":
            self.W_gate = nn.Linear(d_model, d_ff, bias=bias)
        self.W_up = nn.Linear(d_model, d_ff, bias=bias)
        self.W_down = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            return self.W_down(F.silu(self.W_gate(x)) * self.W_up(x))  # (B, T, d_ff) inside
        return self.W_down(F.gelu(self.W_up(x)))


class RMSNorm(nn.Module):
    """RMSNorm over the last dim (Zhang & Sennrich 2019) by a given `rms_norm(x, weight, eps)`
    function, with a learned weight (d_model,) initialised to ones: nn.RMSNorm's parameter and
    state dict. x (..., d_model) -> x's shape and dtype."""

    def __init__(self, d_model: int, eps: float, rms_norm: Callable):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))
        self.eps, self.rms_norm = eps, rms_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rms_norm(x, self.weight, self.eps)


def make_norm(config: ModelConfig, parts: LadderParts = LadderParts()) -> nn.Module:
    """RMSNorm (by `parts.rms_norm`) or nn.LayerNorm over d_model, as `config.norm` says, with
    `config.norm_eps`."""
    if config.norm == "rmsnorm":
        return RMSNorm(config.d_model, config.norm_eps, parts.rms_norm)
    return nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)


class LadderBlock(nn.Module):
    """One layer of a rung: attention, then (with `ffn`) a feed-forward layer.

    x (B, T, d_model) -> (B, T, d_model). Each sub-layer f maps x to f(x) on the rungs below
    `residual`, to x + f(x) from `residual` on, and to x + f(norm(x)) from `norm` on (pre-LN).
    """

    def __init__(
        self,
        config: ModelConfig,
        components: frozenset[str],
        rope: RopeFunctions | None = None,
        parts: LadderParts = LadderParts(),
    ):
        super().__init__()
        n_heads = config.n_heads if "multi_head" in components else 1
        self.residual = "residual" in components
        self.attn = CausalSelfAttention(
            config.d_model, n_heads, config.bias, config.rope_theta, rope, parts
        )
        self.ffn = None
        if "ffn" in components:
            self.ffn = FeedForward(config.d_model, config.d_ff, config.ffn, config.bias)
        self.norm1 = self.norm2 = None
        if "norm" in components:
            self.norm1 = make_norm(config, parts)
            self.norm2 = make_norm(config, parts) if self.ffn is not None else None

    def sublayer(self, f: nn.Module, norm: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
        out = f(x if norm is None else norm(x))
        return x + out if self.residual else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sublayer(self.attn, self.norm1, x)
        if self.ffn is not None:
            x = self.sublayer(self.ffn, self.norm2, x)
        return x


# -- the rungs ---------------------------------------------------------------------------------


class LadderLM(nn.Module):
    """A decoder-only language model with the components in `components` (see COMPONENTS).

    `LadderLM(config)` follows course/lm/protocol.py: `model(idx)` maps token ids idx
    (B, T) int64 to logits (B, T, vocab_size) float32 (bf16 under autocast). No KV cache: the
    harness samples by recomputing the window. From the ModelConfig it reads vocab_size,
    d_model, n_layers, n_heads, d_ff, ffn, norm, norm_eps, rope_theta and bias; the rest
    (n_kv_heads, dropout, tie_embeddings, positional, ...) is the ladder's own: full multi-head
    attention, no dropout, an untied head, RoPE only on the `rope` rung.
    Subclasses are the rungs; each sets `components`, `adds` and `rung`. With `rope` among the
    components, `rope_functions` = (rope_cos_sin, rotate_pairs) rotate queries and keys (see
    `with_rope`); left None, they are the reference kernels, imported by name (`DEFAULT_ROPE`),
    and a ModelSpecError (one line) says so where the `solutions` package is not installed.
    `parts` (a LadderParts, see `with_parts`) split and merge the heads and normalise.
    """

    components: frozenset[str] = frozenset(COMPONENTS)
    adds = "every component"
    rung = "custom"
    rope_functions: RopeFunctions | None = None
    parts: LadderParts = LadderParts()

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        unknown = self.components - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown components {sorted(unknown)}; known: {COMPONENTS}")
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        layers = config.n_layers if "attention" in self.components else 0
        rope = None
        if "rope" in self.components and layers:
            rope = self.rope_functions or load_rope_functions(DEFAULT_ROPE)
        self.blocks = nn.ModuleList(
            LadderBlock(config, self.components, rope, self.parts) for _ in range(layers)
        )
        self.norm_f = make_norm(config, self.parts) if "norm" in self.components else None
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.init_weights()

    def init_weights(self) -> None:
        """Every nn.Linear weight N(0, 1/d_in) (LeCun et al. 1998), biases zero; with residual
        connections, W_o and W_down (what each sub-layer writes into the stream) get a further
        1/sqrt(n_branches), n_branches = n_layers sub-layers per kind (GPT-2's 1/sqrt(N), Radford
        et al. 2019). Embeddings keep nn.Embedding's N(0, 1), norms their ones. In place."""
        n_branches = self.config.n_layers * (2 if "ffn" in self.components else 1)
        residual_scale = n_branches**-0.5 if "residual" in self.components else 1.0
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = module.in_features**-0.5
                if name.endswith((".W_o", ".W_down")):
                    std *= residual_scale
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(idx)  # (B, T) -> (B, T, d_model)
        for block in self.blocks:
            x = block(x)  # (B, T, d_model)
        if self.norm_f is not None:
            x = self.norm_f(x)
        return self.lm_head(x)  # (B, T, vocab_size)


class BigramLM(LadderLM):
    """Token embedding and linear head only: the logits at t depend on idx[t] alone, a bigram
    table of rank d_model. 2 * vocab_size * d_model parameters."""

    rung, adds, components = "bigram", "embedding + head", frozenset()


class OneHeadLM(LadderLM):
    """+ n_layers causal self-attention layers of one head as wide as d_model (4 d_model^2
    parameters each), stacked without residuals or norms. Without positions, only the causal
    mask tells a position how far back it is."""

    rung, adds, components = "one head", "causal attention, 1 head", frozenset(COMPONENTS[:1])


class MultiHeadLM(LadderLM):
    """+ the width split into n_heads heads of d_model / n_heads: the same parameters, n_heads
    attention patterns per layer."""

    rung, adds, components = "multi-head", "n_heads heads", frozenset(COMPONENTS[:2])


class FeedForwardLM(LadderLM):
    """+ a feed-forward layer (config.ffn, width config.d_ff) after each attention layer."""

    rung, adds, components = "feed-forward", "feed-forward layers", frozenset(COMPONENTS[:3])


class ResidualLM(LadderLM):
    """+ residual connections: x + f(x) around every sub-layer (no new parameters)."""

    rung, adds, components = "residual", "residual connections", frozenset(COMPONENTS[:4])


class PreNormLM(LadderLM):
    """+ a norm (config.norm) before each sub-layer and before the head, pre-LN: x + f(norm(x));
    d_model weights each (and d_model biases for a LayerNorm with config.bias)."""

    rung, adds, components = "pre-LN norms", "norms (pre-LN)", frozenset(COMPONENTS[:5])


class RoPELM(LadderLM):
    """+ rotary position embeddings on queries and keys (no new parameters): the course's
    architecture with an untied head."""

    rung, adds, components = "RoPE", "rotary positions", frozenset(COMPONENTS[:6])


def _rung_with(cls: type[LadderLM], **attributes) -> type[LadderLM]:
    """A subclass of the rung `cls`, of the same name and docstring, with `attributes` set."""
    return type(cls.__name__, (cls,), {"__doc__": cls.__doc__, **attributes})


def with_rope(rope_cos_sin: Callable, rotate_pairs: Callable) -> type[RoPELM]:
    """The RoPE rung rotating with these functions (lesson 05's signatures: see
    `course.lm.models.load_rope_functions`), a subclass of RoPELM of the same name."""
    return _rung_with(RoPELM, rope_functions=(rope_cos_sin, rotate_pairs))


def with_parts(cls: type[LadderLM], parts: LadderParts) -> type[LadderLM]:
    """The rung `cls` built from `parts` (see LadderParts), a subclass of the same name."""
    return _rung_with(cls, parts=parts)


RUNGS: tuple[type[LadderLM], ...] = (
    BigramLM,
    OneHeadLM,
    MultiHeadLM,
    FeedForwardLM,
    ResidualLM,
    PreNormLM,
    RoPELM,
)


def find_rungs(names: list[str] | None) -> list[type[LadderLM]]:
    """The rung classes named (by `rung`, e.g. "one head", or class name, any case), in ladder
    order; None means all. Raises PresetError (one line) for an unknown name or none at all."""
    if names is None:
        return list(RUNGS)
    names = [n.strip().lower() for n in names if n.strip()]
    known = ", ".join(cls.rung for cls in RUNGS)
    if not names:
        raise PresetError(f"no rung named (choose from: {known})")
    by_name = {key.lower(): cls for cls in RUNGS for key in (cls.rung, cls.__name__)}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise PresetError(f"unknown rung {unknown[0]!r} (choose from: {known})")
    wanted = {by_name[n] for n in names}
    return [cls for cls in RUNGS if cls in wanted]


# -- the budget and the run --------------------------------------------------------------------


def ladder_budget(
    steps: int = DEFAULT_STEPS, preset: str | TrainConfig = DEFAULT_PRESET, seed: int | None = None
) -> TrainConfig:
    """The one TrainConfig every rung trains with: `preset`'s model size and optimizer (the
    `cpu` preset: d_model 96, 3 layers, 4 heads, context 64, batch 16, AdamW lr 4e-3 with
    warm-up and cosine decay), `steps` steps (the warm-up: the preset's, at most a fifth of
    them), and a single validation at the end, over the preset's `eval_batches` windows.
    Raises PresetError (one line) for steps < 1 or an unknown preset."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise PresetError(f"steps must be a whole number >= 1, got {steps!r}")
    base = get_preset(preset) if isinstance(preset, str) else copy.deepcopy(preset)
    config = base.with_steps(steps)
    config.warmup_steps = min(config.warmup_steps, steps // 5)
    config.eval_interval = config.first_eval_step = steps
    config.log_interval = max(1, min(config.log_interval, steps))
    config.target_val_loss = None
    if seed is not None:
        config.seed = seed
    return config


@dataclass
class RungResult:
    """One trained rung: its name and class, what it adds, its size and its losses."""

    rung: str  # the rung's name, e.g. "one head"
    model: str  # its class, e.g. "OneHeadLM"
    adds: str  # what it adds to the rung below
    n_params: int
    val_loss: float  # nats per byte; nan when training diverged
    train_loss: float  # the last logged training loss (mean over its log interval), nats per byte
    elapsed_s: float
    diverged: str | None = None  # the harness's message when training diverged
    skipped: str | None = None  # why the rung was not trained (val_loss nan, n_params 0)


@dataclass
class LadderResult:
    """A climbed ladder: every rung's result, the corpus's two entropies, the shared budget."""

    rungs: list[RungResult]
    unigram_entropy: float  # nats per byte, of the training split
    bigram_entropy: float  # nats per byte, of the training split
    corpus: str
    config: TrainConfig
    device: str
    elapsed_s: float = 0.0
    budget: str = field(default="")

    def table(self) -> str:
        """The results as a plain-text table (rung, what it adds, parameters, validation loss),
        then `footer()`."""
        return "\n".join([table_header(), *map(table_row, self.rungs), self.footer()])

    def footer(self) -> str:
        """The two entropies as rows of the table, then the budget and the wall time."""
        return "\n".join(
            [
                f"{'unigram entropy':<14} {'(no context)':<26} {'':>8} "
                f"{self.unigram_entropy:>8.3f}",
                f"{'bigram entropy':<14} {'(previous byte only)':<26} {'':>8} "
                f"{self.bigram_entropy:>8.3f}",
                f"budget: {self.budget}",
                f"losses in nats per byte; entropies counted on the training split; "
                f"{self.elapsed_s:.0f} s in all on {self.device}",
            ]
        )


def table_header() -> str:
    """The table's two header lines (column names and a rule)."""
    return f"{'rung':<14} {'adds':<26} {'params':>8} {'val loss':>8}\n" + "-" * 59


def table_row(r: RungResult) -> str:
    """One rung as a row of the table; a diverged rung says so instead of a loss, a skipped one
    says why instead of its size and loss."""
    if r.skipped:
        return f"{r.rung:<14} skipped: {r.skipped}"
    loss = "diverged" if r.diverged else f"{r.val_loss:.3f}"
    return f"{r.rung:<14} {r.adds:<26} {r.n_params:>8,} {loss:>8}"


def describe_budget(config: TrainConfig, corpus: Corpus) -> str:
    """The shared budget in one line: steps, batch, context, tokens, size, lr, seed, corpus."""
    m = config.model
    return (
        f"{config.steps} steps x batch {config.batch_size} x context {m.context_length} "
        f"({config.steps * config.tokens_per_step:,} tokens), d_model {m.d_model}, "
        f"{m.n_layers} layer{'s' * (m.n_layers != 1)}, {m.n_heads} heads, lr {config.lr:g}, "
        f"seed {config.seed}, corpus {corpus.name}"
    )


def resolve_rope(
    rope: RopeFunctions | str | None,
) -> tuple[RopeFunctions | None, str | None]:
    """The RoPE rung's `(rope_cos_sin, rotate_pairs)` and None, or None and why the rung is
    skipped: `rope` is the pair itself (a learner's own, lesson 05's parts), a module name
    holding both (`load_rope_functions`; DEFAULT_ROPE names the reference kernels), or None.

    A module that cannot be imported, or a pair that fails on a small input, raises
    ModelSpecError (one line); only the default module's absence (a student bundle, without
    the `solutions` package) or None skips the rung."""
    if rope is None:
        return None, "no RoPE functions given (rope=(rope_cos_sin, rotate_pairs))"
    if isinstance(rope, str):
        try:
            rope = load_rope_functions(rope)
        except ReferenceUnavailable:
            return None, (
                f"no RoPE functions (the default, {rope}, is instructor-side and not installed "
                "here): pass rope=(rope_cos_sin, rotate_pairs), or --rope MODULE"
            )
    if not (isinstance(rope, tuple | list) and len(rope) == 2 and all(map(callable, rope))):
        raise ModelSpecError("rope must be the pair (rope_cos_sin, rotate_pairs) of functions")
    _try_rope(tuple(rope))
    return (rope[0], rope[1]), None


def _try_part(
    name: str, run: Callable[[], object], x: torch.Tensor, shape: tuple, same_dtype: bool = False
) -> None:
    """Call `run()` once on a small input: an unwritten or failing part (`name`, a function or
    two of the learner's) is named in one line (ModelSpecError) before any rung trains, and so
    is a result that is not a tensor of `shape` (and of x's dtype, with `same_dtype`)."""
    try:
        out = run()
    except NotImplementedError:
        raise ModelSpecError(f"your {name} is not written yet (NotImplementedError)") from None
    except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything
        raise ModelSpecError(
            f"{name} failed on a small input of shape {tuple(x.shape)}: {type(exc).__name__}: {exc}"
        ) from None
    tensor = isinstance(out, torch.Tensor)
    if not tensor or tuple(out.shape) != shape or (same_dtype and out.dtype != x.dtype):
        got = f"{tuple(out.shape)} {out.dtype}" if tensor else type(out).__name__
        raise ModelSpecError(
            f"{name} returned {got} on a small input of shape {tuple(x.shape)} float32, not a "
            f"tensor of shape {shape}" + (" float32" if same_dtype else "")
        )


def _try_rope(functions: RopeFunctions) -> None:
    """The RoPE pair once on x (B 1, H 1, T 4, head_dim 8)."""
    x = torch.ones(1, 1, 4, 8)
    _try_part(
        "rope_cos_sin or rotate_pairs",
        lambda: apply_rope(x, 10000.0, functions),
        x,
        tuple(x.shape),
        same_dtype=True,
    )


def _try_parts(parts: LadderParts) -> None:
    """Each part once on a small input (B 1, T 3, 2 heads of 4)."""
    if not isinstance(parts, LadderParts):
        raise ModelSpecError("parts must be a LadderParts(split_heads, merge_heads, rms_norm)")
    x, heads = torch.ones(1, 3, 8), torch.ones(1, 2, 3, 4)
    _try_part("split_heads", lambda: parts.split_heads(x, 2), x, (1, 2, 3, 4))
    _try_part("merge_heads", lambda: parts.merge_heads(heads), heads, (1, 3, 8))
    _try_part("rms_norm", lambda: parts.rms_norm(x, torch.ones(8), 1e-5), x, (1, 3, 8))


def skipped_rung(cls: type[LadderLM], why: str) -> RungResult:
    """A rung that was not trained: no size, no losses, and why."""
    return RungResult(cls.rung, cls.__name__, cls.adds, 0, math.nan, math.nan, 0.0, None, why)


def train_rung(
    cls: type[LadderLM], config: TrainConfig, corpus: Corpus, device: str | torch.device
) -> RungResult:
    """Train one rung with `course.lm.train` and the given budget; a divergence is recorded
    (val_loss nan, `diverged` says why), not raised."""
    last = {"loss": math.nan}

    def remember(event: dict) -> None:
        if "loss" in event:
            last["loss"] = event["loss"]

    start = time.perf_counter()
    n_params = sum(p.numel() for p in cls(config.model).parameters())
    try:
        result = train(cls, config, corpus, device=device, callback=remember, progress=False)
        val, diverged = result.val_loss, None
    except TrainingDiverged as exc:
        val, diverged = math.nan, str(exc)
    return RungResult(
        cls.rung,
        cls.__name__,
        cls.adds,
        n_params,
        float(val),
        float(last["loss"]),
        time.perf_counter() - start,
        diverged,
    )


def train_ladder(
    steps: int = DEFAULT_STEPS,
    corpus: Corpus | str | os.PathLike = "stdlib",
    *,
    preset: str | TrainConfig = DEFAULT_PRESET,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    rungs: list[str] | None = None,
    num_threads: int | None = None,
    on_rung: Callable[[RungResult], None] | None = None,
    rope: RopeFunctions | str | None = DEFAULT_ROPE,
    parts: LadderParts | None = None,
) -> LadderResult:
    """Train every rung (or the `rungs` named) on `corpus` with one shared budget.

    steps: optimizer steps per rung (the schedule spans them); preset: the model size and
    optimizer (a preset name or a TrainConfig); seed: overrides the preset's (weights and
    batches); num_threads: CPU threads while training (PyTorch's setting is restored after);
    on_rung: called with each RungResult as it finishes; rope: the RoPE rung's
    (rope_cos_sin, rotate_pairs), or a module holding them (default: the reference kernels,
    DEFAULT_ROPE), or None (see `resolve_rope`): without them that rung is skipped, its row
    saying why; parts: the split, merge and norm functions of every rung (a LadderParts; None
    means LadderParts(), `course.stand_ins`').
    Returns a LadderResult: per rung the parameter count and the validation loss in nats per
    byte (`course.lm.train`'s mean cross-entropy over `eval_batches` windows of the validation
    split), and the unigram and bigram entropies of the training split.
    Raises PresetError, CorpusError, ModelSpecError (one line each) for bad steps, preset,
    rung, corpus, RoPE functions or parts.
    """
    config = ladder_budget(steps, preset, seed)
    if num_threads is not None:
        config.num_threads = num_threads
    chosen = find_rungs(rungs)
    rope_functions, skip = resolve_rope(rope) if RoPELM in chosen else (None, None)
    if parts is not None:
        _try_parts(parts)
    corpus = load_corpus(corpus)
    h1, h2 = unigram_bigram_entropy(corpus.train)
    start = time.perf_counter()
    results = []
    threads = torch.get_num_threads()
    try:
        for cls in chosen:
            if cls is RoPELM and skip:
                results.append(skipped_rung(cls, skip))
            else:
                if cls is RoPELM:
                    cls = with_rope(*rope_functions)
                if parts is not None:
                    cls = with_parts(cls, parts)
                results.append(train_rung(cls, config, corpus, device))
            if on_rung is not None:
                on_rung(results[-1])
    finally:
        torch.set_num_threads(threads)  # the harness sets num_threads for the whole process
    return LadderResult(
        results,
        h1,
        h2,
        corpus.name,
        config,
        str(device),
        time.perf_counter() - start,
        describe_budget(config, corpus),
    )
