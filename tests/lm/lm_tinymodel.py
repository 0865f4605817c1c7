"""A small causal language model that follows course/lm/protocol.py, for testing the harness.

It is deliberately independent of `solutions` (the harness must work with any model class):
pre-norm blocks with RoPE attention (the SDPA kernel or written out, per `config.attention`),
a SwiGLU or GELU feed-forward layer, RMSNorm or LayerNorm, tied embeddings and a KV cache.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from course.lm.config import ModelConfig


class KVCache:
    def __init__(self, n_layers, batch_size, n_heads, max_len, head_dim, device, dtype):
        shape = (n_layers, batch_size, n_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0


def rope_tables(context_length, head_dim, theta):
    inv = theta ** -(torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.arange(context_length, dtype=torch.float32)[:, None] * inv[None, :]
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    # Pairs (2i, 2i+1), as the course's convention says.
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        norm = nn.LayerNorm if config.norm == "layernorm" else nn.RMSNorm
        d, h, d_ff = config.d_model, config.n_heads, config.d_ff
        self.n_heads, self.backend, self.ffn_type = h, config.attention, config.ffn
        self.norm1, self.norm2 = norm(d), norm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=config.bias)
        self.proj = nn.Linear(d, d, bias=config.bias)
        self.up = nn.Linear(d, 2 * d_ff if config.ffn == "swiglu" else d_ff, bias=config.bias)
        self.down = nn.Linear(d_ff, d, bias=config.bias)

    def attend(self, x, cos, sin, cache, layer):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        start = 0
        if cache is not None:
            start = cache.length
            cache.k[layer, :b, :, start : start + t] = k
            cache.v[layer, :b, :, start : start + t] = v
            k, v = cache.k[layer, :b, :, : start + t], cache.v[layer, :b, :, : start + t]
        mask = torch.ones(t, start + t, dtype=torch.bool, device=x.device).tril(start)
        if self.backend == "sdpa":
            causal = start == 0
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=None if causal else mask, is_causal=causal
            )
        else:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            out = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, t, d))

    def forward(self, x, cos, sin, cache=None, layer=0):
        x = x + self.attend(self.norm1(x), cos, sin, cache, layer)
        h = self.up(self.norm2(x))
        if self.ffn_type == "swiglu":
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        else:
            h = F.gelu(h)
        return x + self.down(h)


class TinyLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        norm = nn.LayerNorm if config.norm == "layernorm" else nn.RMSNorm
        self.norm = norm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.head.weight = self.embed.weight
        cos, sin = rope_tables(config.context_length, config.head_dim, config.rope_theta)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def new_cache(self, batch_size, max_len):
        c = self.config
        p = self.embed.weight
        return KVCache(c.n_layers, batch_size, c.n_heads, max_len, c.head_dim, p.device, p.dtype)

    def forward(self, idx, cache=None):
        start = cache.length if cache is not None else 0
        t = idx.shape[1]
        cos, sin = self.cos[start : start + t], self.sin[start : start + t]
        x = self.embed(idx)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, i)
        if cache is not None:
            cache.length += t
        return self.head(self.norm(x))


class NoCacheLM(TinyLM):
    """The same model without `new_cache`: sampling must fall back to full recompute."""

    new_cache = None


class _InfGrad(torch.autograd.Function):
    """Identity forward; an infinite gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("inf"))


class FaultyLM(TinyLM):
    """TinyLM that goes wrong on purpose from its `fault_step`-th training forward pass on:
    `fault` is "nan_loss" (nan logits), "inf_grad" (finite loss, one infinite gradient) or
    "nan_val" (nan logits in evaluation only)."""

    fault, fault_step = "nan_loss", 5

    def __init__(self, config):
        super().__init__(config)
        self.training_calls = 0
        self.bump = nn.Parameter(torch.zeros(()))  # the one weight "inf_grad" breaks

    def forward(self, idx, cache=None):
        logits = super().forward(idx, cache)
        if self.training and torch.is_grad_enabled():  # training steps, not interface checks
            self.training_calls += 1
            if self.training_calls >= self.fault_step:
                if self.fault == "nan_loss":
                    return logits * float("nan")
                if self.fault == "inf_grad":
                    return logits + _InfGrad.apply(self.bump)
        elif self.fault == "nan_val" and self.training_calls >= self.fault_step:
            return logits * float("nan")
        return logits


class NaNLossLM(FaultyLM):
    fault = "nan_loss"


class InfGradLM(FaultyLM):
    fault = "inf_grad"


class NaNValLM(FaultyLM):
    fault = "nan_val"
