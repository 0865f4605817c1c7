"""How large can the KV cache's speed-up be in eager PyTorch on this machine?

`make bench` compares generating with and without the cache for the `cpu` preset model. A cached
step of that model is ~1 MFLOP of arithmetic spread over ~100 kernel calls, so its time is the
calls' fixed cost, not arithmetic. This script times, with the same weights and in one process:

- the hand-flattened one-token step of `solutions/kernels/decode_floor.py`: no modules, no checks;
- the reference model's own cached step (the two alternate, and each keeps its best round);
- a full forward pass over 272 tokens (the mean length while generating 512 tokens after a
  16-token prompt), which is what each step costs without the cache.

The ratio of the last to the first is a ceiling for the cache's speed-up with eager kernels, and
the model's step over the flattened one is what the module structure costs (target <= 1.3x).

    .venv/bin/python scripts/kv_cache_ceiling.py [--preset cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from course.lm.bench import FLOOR_TARGET, cached_step_times
from course.lm.presets import get_preset
from solutions.kernels.model import TransformerLM

PROMPT, NEW = 16, 512
MEAN_LENGTH = PROMPT + NEW // 2


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
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: PyTorch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    config = dataclasses.replace(preset.model, context_length=PROMPT + NEW)
    model = TransformerLM(config, seed=0).eval()
    steps = cached_step_times(model, MEAN_LENGTH - 1)
    full = torch.randint(256, (1, MEAN_LENGTH))
    full_us = best_time_us(lambda: model(full), 10)
    flat_us, model_us = 1e6 * steps["floor_s"], 1e6 * steps["model_s"]
    print(f"threads: {torch.get_num_threads()}, preset {args.preset}")
    print(f"hand-flattened cached step   {flat_us:8.0f} us")
    print(f"the model's cached step      {model_us:8.0f} us   ({steps['ratio']:.2f}x the floor, "
          f"target <= {FLOOR_TARGET}x)")  # fmt: skip
    print(f"full pass over {MEAN_LENGTH} tokens     {full_us:8.0f} us")
    print(f"ceiling for the speed-up     {full_us / flat_us:8.1f}x  (forward passes only)")
    print(f"the model's speed-up         {full_us / model_us:8.1f}x")


if __name__ == "__main__":
    main()
