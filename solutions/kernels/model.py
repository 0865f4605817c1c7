"""A decoder-only Transformer language model assembled from the reference kernels.

    idx -> token embedding (+ learned or sinusoidal positions) -> dropout
        -> n_layers x TransformerBlock (causal self-attention with RoPE / ALiBi / nothing, FFN)
        -> final norm (pre-LN) -> linear head (tied to the embedding) -> logits

Everything is chosen by a `course.lm.ModelConfig`, and every choice reaches every layer (norm
and `norm_eps`, `rope_layout`, `ffn` and `gelu_approximate`, `bias`, `n_kv_heads`...). With a KV
cache (`new_cache`), `forward` takes only the new tokens; they sit at absolute positions
`cache.length ..`, which is where their positional information (RoPE angles, ALiBi distances,
embedding rows) comes from. `generate` is the harness's sampler, `course.lm.sample.generate`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from course.lm.config import ModelConfig
from course.lm.sample import generate as harness_generate
from course.lm.sample import next_token
from solutions.kernels.blocks import Dropout, TransformerBlock
from solutions.kernels.decode_floor import flattened_step
from solutions.kernels.kv_cache import KVCache
from solutions.kernels.module import Embedding, Linear, Module
from solutions.kernels.norms import LayerNorm, RMSNorm, make_norm
from solutions.kernels.positions import alibi_bias, rope_cos_sin, sinusoidal_table

# Parameters that write into the residual stream; GPT-2 scales their init by 1/sqrt(2 n_layers)
# so that the stream's variance does not grow with depth.
RESIDUAL_PROJECTIONS = ("attn.W_o.weight", "ffn.W_out.weight", "ffn.W_down.weight")


class TransformerLM(Module):
    """The course's language model: `TransformerLM(config)(idx) -> logits`.

    Implements the harness protocol of `course.lm.protocol` (`new_cache`, `forward(idx, cache)`)
    and `generate`. `seed` makes the initial weights reproducible. Position tables (RoPE's
    cos/sin, the sinusoidal table) are buffers in the model's dtype and device, recomputed from
    the formula whenever the model moves (`.to`, `.double()`...), never rounded through float32.
    """

    def __init__(self, config: ModelConfig, *, seed: int | None = None) -> None:
        super().__init__()
        self.config = c = config
        if c.positional not in ("rope", "sinusoidal", "learned", "alibi", "none"):
            raise ValueError(f"unknown positional scheme {c.positional!r}")
        self.tok_emb = Embedding(c.vocab_size, c.d_model)
        if c.positional == "learned":
            self.pos_emb = Embedding(c.context_length, c.d_model)
        self.adds_positions = c.positional in ("learned", "sinusoidal")
        self.drop = Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                c.d_model,
                c.n_heads,
                c.d_ff,
                n_kv_heads=c.n_kv_heads,
                ffn=c.ffn,
                gelu_approximate=c.gelu_approximate,
                norm=c.norm,
                norm_eps=c.norm_eps,
                norm_position=c.norm_position,
                rope_layout=c.rope_layout,
                dropout=c.dropout,
                bias=c.bias,
                backend=c.attention,
            )
            for _ in range(c.n_layers)
        )
        # A post-LN block already ends in a norm; only pre-LN needs one before the head.
        self.norm_f = None
        if c.norm_position == "pre":
            self.norm_f = make_norm(c.norm, c.d_model, eps=c.norm_eps, bias=c.bias)
        self.lm_head = Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self._make_position_tables(self.tok_emb.weight.dtype, self.tok_emb.weight.device)
        self.init_weights(seed)

    def _make_position_tables(self, dtype: torch.dtype, device, n_positions: int = 0) -> None:
        """The tables every position's encoding is read from, computed once (for at least
        `n_positions`, at least `context_length`): a cached decoding step then slices a row
        instead of redoing the trigonometry.

        RoPE's tables also exist as one complex tensor `rope_cis = cos + i sin` (float32 and
        float64 only; else None), a plain attribute rebuilt with them: evaluation passes its rows
        to every layer, whose rotation is then one complex multiplication (`rotate_complex`)."""
        c = self.config
        if c.positional == "sinusoidal":
            table = sinusoidal_table(c.context_length, c.d_model, device=device, dtype=dtype)
            self.register_buffer("pos_table", table, persistent=False)
        elif c.positional == "rope":
            positions = torch.arange(max(n_positions, c.context_length), device=device)
            cos, sin = rope_cos_sin(positions, c.head_dim, c.rope_theta, dtype=dtype)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
            complex_dtype = dtype in (torch.float32, torch.float64)
            self.rope_cis = torch.complex(cos, sin) if complex_dtype else None

    def _apply(self, fn, recurse=True):
        # `.to(torch.float64)` would otherwise widen float32 tables (angles off by ~1e-6 at
        # position 100) instead of computing float64 ones: recompute them in the new dtype.
        super()._apply(fn, recurse)
        table = getattr(self, "rope_cos", None)
        if table is None:
            table = getattr(self, "pos_table", None)
        if table is not None and table.is_floating_point():
            self._make_position_tables(table.dtype, table.device, table.shape[0])
        return self

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """GPT-2 init: weights N(0, 0.02), residual projections N(0, 0.02 / sqrt(2 n_layers)),
        biases 0, norms 1. The same `seed` gives the same model (None: the global generator)."""
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, 0.02, generator=gen)
            if isinstance(module, (LayerNorm, RMSNorm)):
                nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if name.endswith(RESIDUAL_PROJECTIONS):
                nn.init.normal_(p, 0.0, residual_std, generator=gen)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Parameter count (a tied head counts once); optionally without position/token tables."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.tok_emb.weight.numel()
            if self.config.positional == "learned":
                n -= self.pos_emb.weight.numel()
        return n

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits `(batch, T, vocab_size)` for token ids `idx` `(batch, T)`.

        With `cache`, `idx` continues the cached tokens: their keys/values are appended, the
        cache advances by `T`, and the logits are for these `T` tokens only.
        """
        T = idx.shape[1]
        past = 0 if cache is None else cache.length
        x = F.embedding(idx, self.tok_emb.weight)
        if self.adds_positions:
            x = x + self.position_vectors(past, past + T).to(x.dtype)
        x = self.drop(x)
        rope, attn_bias = self.attention_inputs(past, past + T, x)
        for layer, block in enumerate(self.blocks):
            x = block(x, rope=rope, attn_bias=attn_bias, cache=cache, layer=layer)
        if cache is not None:
            cache.advance(T)
        if self.norm_f is not None:
            x = self.norm_f(x)
        return F.linear(x, self.lm_head.weight)

    def position_vectors(self, start: int, end: int) -> torch.Tensor:
        """Learned or sinusoidal vectors `(end - start, d_model)` for positions `start .. end -
        1`; both exist only below context_length (ValueError past it)."""
        if end > self.config.context_length:
            raise ValueError(
                f"position {end - 1} is beyond context_length={self.config.context_length}"
            )
        if self.config.positional == "learned":
            return self.pos_emb.weight[start:end]
        return self.pos_table[start:end]

    def attention_inputs(self, start: int, end: int, x: torch.Tensor):
        """What every layer's attention needs for queries at positions `start .. end - 1`,
        computed once per forward pass: `(rope, attn_bias)`, each None where unused.

        The causal mask is the blocks' own (`is_causal`): aligned to the last key, it is right
        for a cache prefix too, and SDPA applies it without materialising it. Without a gradient
        `rope` is the complex `(end - start, head_dim / 2)` rows of `rope_cis`, else the `(cos,
        sin)` pair of `rope_tables`: the same rotation either way.
        """
        c = self.config
        if c.positional == "rope":
            if self.rope_cis is None or torch.is_grad_enabled():
                return self.rope_tables(start, end), None  # `rotate`, hand-written backward
            self._cover_positions(end)
            return self.rope_cis[start:end], None  # (end - start, head_dim / 2) complex
        if c.positional == "alibi":
            bias = alibi_bias(c.n_heads, end - start, start, device=x.device, dtype=x.dtype)
            return None, bias
        return None, None

    def rope_tables(self, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE's `(cos, sin)`, each `(end - start, head_dim / 2)`, for positions `start .. end -
        1`: rows of the precomputed tables. A cache may be longer than `context_length`: past
        the tables' end they are recomputed once, at least twice as long, so that each later
        cached step still slices a row instead of redoing the trigonometry."""
        self._cover_positions(end)
        return self.rope_cos[start:end], self.rope_sin[start:end]

    def _cover_positions(self, end: int) -> None:
        """Grow RoPE's tables (to at least twice their length) if they end before `end`."""
        cos = self.rope_cos
        if end > cos.shape[0]:
            self._make_position_tables(cos.dtype, cos.device, max(end, 2 * cos.shape[0]))

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        """An empty KV cache for `max_len` positions, on this model's device and dtype."""
        c, p = self.config, self.tok_emb.weight
        return KVCache(
            c.n_layers,
            batch_size,
            c.n_kv_heads,
            max_len,
            c.head_dim,
            dtype=p.dtype,
            device=p.device,
        )

    def decode_floor(self, max_len: int):
        """The hand-flattened twin of a cached one-token step, for benchmarks only:
        `solutions.kernels.decode_floor.flattened_step` over this model's weights. Raises
        ValueError for an architecture it does not cover."""
        return flattened_step(self, max_len)

    def generate(
        self,
        idx: torch.Tensor,
        n: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Append `n` sampled tokens to `idx` `(batch, T)` and return the whole `(batch, T + n)`.

        The harness's loop, `course.lm.sample.generate` (see it for the sampling options, the
        accepted generators and what happens past `context_length`), so both give the same
        tokens for the same generator. Raises ValueError (`SamplingError`) for bad options.
        """
        return harness_generate(
            self,
            idx,
            n,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
            use_cache=use_cache,
        )


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row of `logits` `(batch, vocab)`, as `(batch, 1)`: the harness's
    `course.lm.sample.next_token` (temperature, top-k, top-p), shaped for `torch.cat`."""
    return next_token(logits, temperature, top_k, top_p, generator)[:, None]
