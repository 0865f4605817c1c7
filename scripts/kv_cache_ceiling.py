"""How large can the KV cache's speed-up be in eager PyTorch on this machine?

`make bench` compares generating with and without the cache for the `cpu` preset model. A cached
step of that model is ~1 MFLOP of arithmetic spread over ~100 kernel calls, so its time is the
calls' fixed cost, not arithmetic. This script times, with the same weights and in one process:

- a hand-flattened one-token step: no modules, no checks, the fewest kernels I could write;
- the reference model's own cached step;
- a full forward pass over 272 tokens (the mean length while generating 512 tokens after a
  16-token prompt), which is what each step costs without the cache.

The ratio of the last to the first is a ceiling for the cache's speed-up with eager kernels.

    .venv/bin/python scripts/kv_cache_ceiling.py [--preset cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.nn.functional as F

from course.lm.presets import get_preset
from solutions.kernels.model import TransformerLM

PROMPT, NEW = 16, 512
MEAN_LENGTH = PROMPT + NEW // 2


def flattened_step(model: TransformerLM, keys: list, values: list, freqs: torch.Tensor):
    """A cached one-token step over `model`'s weights (RMSNorm, SwiGLU, interleaved RoPE)."""
    c = model.config
    H, hd, D = c.n_heads, c.head_dim, c.d_model
    layers = [
        (b.norm1.weight, b.attn.W_qkv.weight, b.attn.W_o.weight, b.norm2.weight)
        + (b.ffn.W_gate.weight, b.ffn.W_up.weight, b.ffn.W_down.weight)
        for b in model.blocks
    ]
    emb, norm_f = model.tok_emb.weight, model.norm_f.weight

    def step(token: torch.Tensor, pos: int) -> torch.Tensor:
        x = F.embedding(token, emb)
        for i, (n1, w_qkv, w_o, n2, w_gate, w_up, w_down) in enumerate(layers):
            qkv = F.linear(F.rms_norm(x, (D,), n1, c.norm_eps), w_qkv).view(1, 3 * H, 1, hd)
            pairs = torch.view_as_complex(qkv[:, : 2 * H].unflatten(-1, (-1, 2)))
            qk = torch.view_as_real(pairs * freqs[pos]).flatten(-2)
            keys[i][:, :, pos : pos + 1] = qk[:, H:]
            values[i][:, :, pos : pos + 1] = qkv[:, 2 * H :]
            k, v = keys[i][:, :, : pos + 1], values[i][:, :, : pos + 1]
            x = x + F.linear(F.scaled_dot_product_attention(qk[:, :H], k, v).view(1, 1, D), w_o)
            h = F.rms_norm(x, (D,), n2, c.norm_eps)
            x = x + F.linear(F.silu(F.linear(h, w_gate)) * F.linear(h, w_up), w_down)
        return F.linear(F.rms_norm(x, (D,), norm_f, c.norm_eps), emb)

    return step


def best_time_us(fn, calls: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    preset_name = parser.parse_args().preset
    preset = get_preset(preset_name)
    length = PROMPT + NEW
    config = dataclasses.replace(preset.model, context_length=length)
    model = TransformerLM(config, seed=0).eval()
    c = model.config
    shape = (1, c.n_heads, length, c.head_dim)
    keys = [torch.zeros(shape) for _ in model.blocks]
    values = [torch.zeros(shape) for _ in model.blocks]
    freqs = torch.complex(model.rope_cos, model.rope_sin)
    flat = flattened_step(model, keys, values, freqs)

    # The flattened step must compute what the model computes, or its time means nothing.
    tokens = torch.randint(256, (1, 8), generator=torch.Generator().manual_seed(0))
    for pos in range(tokens.shape[1]):
        logits = flat(tokens[:, pos : pos + 1], pos)
    torch.testing.assert_close(logits[:, -1], model(tokens)[:, -1], atol=1e-5, rtol=1e-5)

    token, past = torch.tensor([[5]]), MEAN_LENGTH - 1
    cache = model.new_cache(1, length)
    model(torch.randint(256, (1, past)), cache=cache)

    def model_step():
        model(token, cache=cache)
        cache.length = past

    full = torch.randint(256, (1, MEAN_LENGTH))
    flat_us = best_time_us(lambda: flat(token, past), 300)
    model_us = best_time_us(model_step, 300)
    full_us = best_time_us(lambda: model(full), 10)
    print(f"threads: {torch.get_num_threads()}, preset {preset_name}")
    print(f"hand-flattened cached step   {flat_us:8.0f} us")
    print(f"the model's cached step      {model_us:8.0f} us")
    print(f"full pass over {MEAN_LENGTH} tokens     {full_us:8.0f} us")
    print(f"ceiling for the speed-up     {full_us / flat_us:8.1f}x  (forward passes only)")
    print(f"the model's speed-up         {full_us / model_us:8.1f}x")


if __name__ == "__main__":
    main()
