"""Train short, test long: how four position encodings fare past the training length.

For each of NoPE (`none`), sinusoidal, RoPE and ALiBi, trains the reference `TransformerLM`
(byte-level, 2 layers x 64 wide, 4 heads) on windows of `--train-len` tokens of a text corpus,
then evaluates it on validation windows four times as long and reports the mean loss (nats per
byte) in the bands of positions [0, L), [L, 2L) and [2L, 4L). Same seed, data order and
hyper-parameters for every encoding; only `positional` changes. The sinusoidal table is built
for 4L positions (its rows past L are never trained on, but they are the formula's) and scaled by
`--sinusoidal-scale` (default 1/sqrt(d_model)): the reference model adds it to token embeddings
initialised at std 0.02, and an unscaled table (entries of size 1) drowns them, so that the model
barely trains in 300 steps. Vaswani et al. (section 3.4) keep the two comparable the other way
round, multiplying the embeddings by sqrt(d_model).

    .venv/bin/python scripts/train_short_test_long.py --corpus ../shared/data/tinyshakespeare.txt \
        [--steps 300] [--train-len 64] [--out assets/05-positions/train_short_test_long.png]

The corpus is read by path (first 90% trains, last 10% validates) and never copied. The figure
of lesson 05 was made with the defaults; the lesson states the numbers this script printed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from course.lm.config import ModelConfig
from course.lm.corpus import text_file_corpus
from course.lm.data import random_windows
from solutions.kernels.model import TransformerLM

ENCODINGS = ("none", "sinusoidal", "rope", "alibi")
LABELS = {"none": "NoPE", "sinusoidal": "sinusoidal", "rope": "RoPE", "alibi": "ALiBi"}


def train(config: ModelConfig, data: torch.Tensor, args) -> TransformerLM:
    """AdamW with a linear warm-up, then constant; seeded weights and batches."""
    model = TransformerLM(config, seed=args.seed)
    if config.positional == "sinusoidal":
        scale = args.sinusoidal_scale or config.d_model**-0.5
        model.pos_table.mul_(scale)  # a buffer, kept as long as the model is not moved
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    batches = torch.Generator().manual_seed(args.seed)
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / 30)
        x, y = random_windows(data, args.batch_size, args.train_len, batches)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return model


@torch.no_grad()
def loss_per_position(model: TransformerLM, data: torch.Tensor, length: int, args) -> torch.Tensor:
    """Mean cross-entropy at each position 0 .. length - 1 over `--eval-windows` windows."""
    gen = torch.Generator().manual_seed(args.seed + 1)
    x, y = random_windows(data, args.eval_windows, length, gen)
    logits = model(x)
    return F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="path of a text file")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--train-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-windows", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sinusoidal-scale", type=float, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="where to save the figure (PNG)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corpus = text_file_corpus(args.corpus)
    L, long = args.train_len, 4 * args.train_len
    bands = {f"{a}-{b - 1}": (a, b) for a, b in ((0, L), (L, 2 * L), (2 * L, long))}
    results, curves = {}, {}
    for encoding in ENCODINGS:
        config = ModelConfig(
            context_length=long, d_model=64, n_layers=2, n_heads=4, positional=encoding
        )
        start = time.perf_counter()
        model = train(config, corpus.train, args)
        per_position = loss_per_position(model, corpus.val, long, args)
        curves[encoding] = per_position
        results[encoding] = {
            k: round(per_position[a:b].mean().item(), 3) for k, (a, b) in bands.items()
        }
        seconds = time.perf_counter() - start
        print(
            f"{LABELS[encoding]:>10}: "
            + "  ".join(f"{k}: {v:.3f}" for k, v in results[encoding].items())
            + f"   ({seconds:.0f} s)",
            flush=True,
        )
    print(json.dumps({"args": vars(args), "loss_per_band": results}, indent=1))
    if args.out:
        save_figure(curves, L, Path(args.out), args)


def save_figure(curves: dict, train_len: int, out: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.4))
    kernel = torch.ones(1, 1, 9) / 9  # a 9-position moving average, for legibility only
    for encoding, curve in curves.items():
        smooth = F.conv1d(curve[None, None], kernel, padding=4)[0, 0]
        smooth[:4], smooth[-4:] = curve[:4], curve[-4:]
        ax.plot(smooth, label=LABELS[encoding])
    for x in (train_len, 2 * train_len):
        ax.axvline(x, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"position (trained on {train_len} tokens)")
    ax.set_ylabel("validation loss (nats/byte)")
    ax.set_title(f"train short, test long: 2 layers x 64, {args.steps} steps, bytes")
    ax.legend()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, bbox_inches="tight")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
