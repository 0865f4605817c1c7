"""`python -m course.lm train|sample|bench|ladder`: train, sample, benchmark, climb the ladder.

Mistakes in the input (an unknown preset, a missing corpus file, a corrupt checkpoint, a model
class with the wrong interface) print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from course.lm.errors import LMError, SamplingError
from course.lm.protocol import InterfaceError

EXIT_USAGE = 2
DEFAULT_OUT = os.path.join("runs", "train")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and still exit status 2)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="MODULE:CLASS of the model (default: the reference model)")
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda…")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model and print a sample")
    _add_common(p)
    p.add_argument("--preset", help="cpu-tiny, cpu or gpu (default: the device's)")
    p.add_argument("--corpus", default="stdlib", help="stdlib (default), shakespeare, or a path")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"run directory (default {DEFAULT_OUT})")
    p.add_argument("--steps", type=int, help="override the preset's number of steps")
    p.add_argument("--lr", type=float, help="override the preset's peak learning rate")
    p.add_argument("--resume", help="continue from this checkpoint")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force torch.compile on or off (default: on for CUDA)",
    )
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="autocast dtype")
    p.add_argument("--target-loss", type=float, help="stop once validation reaches this")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's, one per core)")
    p.add_argument("--sample-tokens", type=int, default=400, help="sample length after training")


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="sample text from a checkpoint")
    _add_common(p)
    p.add_argument("--checkpoint", default=os.path.join(DEFAULT_OUT, "ckpt.pt"))
    p.add_argument("--prompt", help="text to continue (default: 'def ' for stdlib runs)")
    p.add_argument("--tokens", type=int, default=500, help="how many bytes to generate")
    p.add_argument("--temperature", type=float, default=0.6, help="0 is greedy")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cache", action="store_true", help="recompute the window every step")


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="speed, memory and time-to-loss benchmarks")
    _add_common(p)
    p.add_argument("--preset", help="cpu or gpu (default: the device's)")
    p.add_argument(
        "--corpus",
        default=os.environ.get("BENCH_CORPUS"),
        help="Tiny Shakespeare text for the time-to-loss run (default: $BENCH_CORPUS)",
    )
    p.add_argument("--out", default="runs", help="directory for the JSON results")
    p.add_argument("--only", help="comma-separated subset of: train,generate,memory,loss")


def _add_ladder(sub) -> None:
    p = sub.add_parser(
        "ladder",
        help="train the component ladder (bigram ... + RoPE) with one budget, print the losses",
    )
    p.add_argument("--steps", type=int, help="optimizer steps per rung (default: 400)")
    p.add_argument("--preset", help="model size and optimizer: cpu (default), cpu-tiny or gpu")
    p.add_argument("--corpus", default="stdlib", help="stdlib (default), shakespeare, or a path")
    p.add_argument("--rungs", help="comma-separated subset, e.g. 'bigram,one head' (default: all)")
    p.add_argument("--seed", type=int, help="override the preset's seed")
    p.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's, one per core)")
    p.add_argument("--device", default="cpu", help="cpu (default), auto, cuda…")
    p.add_argument(
        "--rope",
        help="module holding the RoPE rung's rope_cos_sin and rotate_pairs (default: the "
        "reference kernels, solutions.kernels.positions; without them that rung is skipped)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m course.lm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(
        dest="command", metavar="{train,sample,bench,ladder}", parser_class=OneLineParser
    )
    _add_train(sub)
    _add_sample(sub)
    _add_bench(sub)
    _add_ladder(sub)
    return parser


def default_prompt(corpus_name: str) -> str:
    return "def " if corpus_name == "stdlib" else "\n"


def cmd_train(args) -> int:
    from course.lm.checkpoint import load_checkpoint
    from course.lm.device import pick_device
    from course.lm.models import load_model_class
    from course.lm.presets import TrainConfig, default_preset_name, get_preset
    from course.lm.sample import sample_text
    from course.lm.train import train

    device = pick_device(args.device)
    ckpt = load_checkpoint(args.resume) if args.resume else None
    model_spec = args.model or (ckpt or {}).get("model_class")
    if ckpt is not None and not args.preset and "train_config" in ckpt:
        config = TrainConfig.from_dict(ckpt["train_config"])
    else:
        config = get_preset(args.preset or default_preset_name(device))
    if args.steps is not None:
        config = config.with_steps(args.steps)
    overrides = {
        "compile": args.compile,
        "precision": args.precision,
        "target_val_loss": args.target_loss,
        "seed": args.seed,
        "num_threads": args.threads,
        "lr": args.lr,
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    model_cls = load_model_class(model_spec)
    result = train(
        model_cls,
        config,
        args.corpus,
        device=device,
        out_dir=args.out,
        resume=args.resume,
        verbose=True,
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(result.summary())
    print(f"saved {os.path.join(args.out, 'ckpt.pt')}, log.json and loss.png")
    if args.sample_tokens > 0:
        prompt = default_prompt(result.corpus)
        text = sample_text(result.model, prompt, args.sample_tokens, temperature=0.6, seed=0)
        print(f"--- sample (temperature 0.6) ---\n{text}\n---")
    return 0


def cmd_sample(args) -> int:
    from course.lm.checkpoint import load_checkpoint, load_weights
    from course.lm.device import pick_device
    from course.lm.models import load_model_class
    from course.lm.protocol import check_model_interface
    from course.lm.sample import check_sampling_options, sample_text

    if args.tokens < 0:
        raise SamplingError(f"--tokens must be >= 0, got {args.tokens}")
    # Options first: a typo should not wait for a checkpoint to load.
    flags = ("--temperature", "--top-k", "--top-p")
    check_sampling_options(args.temperature, args.top_k, args.top_p, names=flags)
    ckpt = load_checkpoint(args.checkpoint)
    model_cls = load_model_class(args.model or ckpt.get("model_class"))
    model = check_model_interface(model_cls, ckpt["model_config"])
    load_weights(model, ckpt, args.checkpoint)
    model.to(pick_device(args.device))
    prompt = args.prompt if args.prompt is not None else default_prompt(ckpt.get("corpus", ""))
    text = sample_text(
        model,
        prompt,
        args.tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        use_cache=not args.no_cache,
    )
    print(text)
    return 0


def cmd_bench(args) -> int:
    from course.lm.bench import run_bench

    only = set(args.only.split(",")) if args.only else None
    run_bench(
        args.model,
        device=args.device,
        preset=args.preset,
        corpus=args.corpus,
        out_dir=args.out,
        only=only,
    )
    return 0


def cmd_ladder(args) -> int:
    from course.lm import ladder
    from course.lm.corpus import load_corpus
    from course.lm.device import pick_device
    from course.lm.errors import PresetError
    from course.lm.models import DEFAULT_ROPE

    steps = ladder.DEFAULT_STEPS if args.steps is None else args.steps
    preset = args.preset or ladder.DEFAULT_PRESET
    if args.threads is not None and args.threads < 1:
        raise PresetError(f"--threads must be >= 1, got {args.threads}")
    # Every mistake in the input fails here, in one line, before any training.
    ladder.ladder_budget(steps, preset)
    rungs = args.rungs.split(",") if args.rungs is not None else None
    chosen = ladder.find_rungs(rungs)
    rope = args.rope or DEFAULT_ROPE
    if ladder.RoPELM in chosen:
        ladder.resolve_rope(rope)
    device = pick_device(args.device)
    corpus = load_corpus(args.corpus)
    print(ladder.table_header(), flush=True)
    result = ladder.train_ladder(
        steps,
        corpus,
        preset=preset,
        seed=args.seed,
        device=device,
        rungs=rungs,
        num_threads=args.threads,
        on_rung=lambda r: print(ladder.table_row(r), flush=True),
        rope=rope,
    )
    print(result.footer())
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "bench": cmd_bench, "ladder": cmd_ladder}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except (LMError, InterfaceError) as exc:
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130
