"""`python -m course.lm bench`: what the speed-ups buy, measured side by side on this device.

1. training tokens/s: the written-out ("reference") attention against PyTorch's fused SDPA
   kernel, and on CUDA also eager against torch.compile and float32 against bf16 autocast;
2. generation tokens/s with and without the KV cache (16-token prompt, 512 new tokens) for the
   `cpu` preset's model and the `gpu` preset's, side by side, and, for a model that offers a
   hand-flattened twin of its cached step (`decode_floor`, as the reference model does), the
   cached step's time against the twin's;
3. peak memory of one forward pass at sequence length 2048, reference against SDPA;
4. wall time to a validation loss on Tiny Shakespeare (path from $BENCH_CORPUS or --corpus).

Training speeds are medians of timed steps after warm-up steps, generation speeds the best of up
to three runs; the weights are random except in 4.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

from course.lm.config import ModelConfig
from course.lm.data import random_windows
from course.lm.device import (
    autocast,
    flops_per_token,
    mfu,
    peak_flops,
    pick_device,
    supports_bf16,
    synchronize,
)
from course.lm.models import load_model_class
from course.lm.presets import TrainConfig, default_preset_name, get_preset
from course.lm.protocol import check_model_interface
from course.lm.sample import generate, has_cache
from course.lm.train import lm_loss, make_optimizer, train

# Time-to-loss targets: (validation loss, seconds) per preset, on Tiny Shakespeare.
LOSS_TARGETS = {"cpu": (1.88, 37.0), "gpu": (1.47, 60.0), "cpu-tiny": (2.5, 60.0)}
KV_CACHE_TARGET = 10.0  # generation speed-up from the cache, cpu preset model, 512 new tokens
FLOOR_TARGET = 1.3  # the reference model's cached step over the hand-flattened floor
SECTIONS = ("train", "generate", "memory", "loss")
PROMPT_TOKENS, NEW_TOKENS, MEMORY_SEQ_LEN = 16, 512, 2048


def _build(model_cls, config: ModelConfig, device: torch.device, seed: int = 0):
    torch.manual_seed(seed)
    return check_model_interface(model_cls, config).to(device)


def _variants(device: torch.device) -> list[tuple[str, bool, str]]:
    compiles = [False, True] if device.type == "cuda" else [False]
    precisions = ["fp32", "bf16"] if supports_bf16(device) else ["fp32"]
    return [(a, c, p) for a in ("reference", "sdpa") for c in compiles for p in precisions]


def train_throughput(
    model_cls,
    preset: TrainConfig,
    device,
    attention,
    compiled,
    precision,
    warmup: int = 3,
    steps: int = 10,
) -> dict:
    """Median training tokens/s of the preset's model with one attention backend."""
    config = dataclasses.replace(preset.model, attention=attention)
    model = _build(model_cls, config, device)
    optimizer = make_optimizer(model, preset, device)
    if compiled:
        # A fresh compile cache per variant: otherwise each new model is a recompile, and past
        # dynamo's recompile limit the "compiled" variants would silently run eagerly.
        torch._dynamo.reset()
    run = torch.compile(model) if compiled else model
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    data = torch.randint(256, (1 << 16,), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(warmup + steps):
        x, y = random_windows(data, preset.batch_size, config.context_length, gen, device)
        synchronize(device)
        t0 = time.perf_counter()
        with autocast(device, dtype):
            loss = lm_loss(run, x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    tokens_per_s = preset.tokens_per_step / statistics.median(times)
    n_params = sum(p.numel() for p in model.parameters())
    fpt = flops_per_token(n_params, config.n_layers, config.context_length, config.d_model)
    return {
        "attention": attention,
        "compile": compiled,
        "precision": precision,
        "tokens_per_s": tokens_per_s,
        "mfu": mfu(tokens_per_s, fpt, peak_flops(device)),
    }


def generation_speed(
    model_cls, preset: TrainConfig, device, preset_name: str = "", repeats: int = 3
) -> dict:
    """Tokens/s generating NEW_TOKENS after a PROMPT_TOKENS prompt, with and without the cache.

    The preset's model gets a context of prompt + new tokens, so neither path slides its window:
    without the cache, step t recomputes all t tokens; with it, step t feeds one token. The two
    runs alternate, and each keeps its best time, so that a noisy moment on the machine does not
    favour one of them.
    """
    length = PROMPT_TOKENS + NEW_TOKENS
    config = dataclasses.replace(
        preset.model, context_length=max(preset.model.context_length, length)
    )
    model = _build(model_cls, config, device).eval()
    prompt = torch.randint(256, (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(0))
    n_params = sum(p.numel() for p in model.parameters())
    modes = [True, False] if has_cache(model) else [False]
    times: dict[bool, list[float]] = {mode: [] for mode in modes}
    generate(model, prompt, 8, seed=0, use_cache=modes[0])  # warm-up: first calls allocate
    while min(len(t) for t in times.values()) < repeats and sum(times[False]) < 20:
        for use_cache in modes:
            synchronize(device)
            t0 = time.perf_counter()
            generate(model, prompt, NEW_TOKENS, temperature=1.0, seed=0, use_cache=use_cache)
            synchronize(device)
            times[use_cache].append(time.perf_counter() - t0)
    row = {
        "preset": preset_name,
        "n_params": n_params,
        "cached_tokens_per_s": NEW_TOKENS / min(times[True]) if True in times else None,
        "recompute_tokens_per_s": NEW_TOKENS / min(times[False]),
        "runs": len(times[False]),
    }
    row.update(_floor_ratio(model, PROMPT_TOKENS + NEW_TOKENS // 2 - 1))
    return row


def _floor_ratio(model, past: int) -> dict:
    """`cached_step_times` for a model that offers `decode_floor`, else a note why not."""
    if not callable(getattr(model, "decode_floor", None)):
        return {"floor_note": "the model has no decode_floor"}
    try:
        return cached_step_times(model, past)
    except ValueError as exc:
        return {"floor_note": str(exc)}


@torch.inference_mode()
def cached_step_times(model, past: int, *, calls: int = 20, rounds: int = 40) -> dict:
    """Seconds per cached one-token step after `past` cached positions: the model's own, and
    that of its hand-flattened twin `model.decode_floor(max_len)` (an optional hook: the same
    arithmetic with no modules and no checks), each the best of `rounds` alternating rounds of
    `calls` steps (the best round is the one least disturbed by other work on the machine).

    The floor is first checked to give the model's logits. Returns `{"model_s", "floor_s",
    "ratio"}`; raises ValueError if the model's `decode_floor` refuses its architecture and
    AssertionError if the floor disagrees with the model.
    """
    model = model.eval()
    device = next(model.parameters()).device
    max_len = past + 1
    floor = model.decode_floor(max_len)
    tokens = torch.randint(model.config.vocab_size, (1, max_len), device=device)
    for pos in range(max_len):
        logits = floor(tokens[:, pos : pos + 1], pos)
    cache = model.new_cache(1, max_len)
    model(tokens[:, :past], cache=cache)
    expected = model(tokens[:, past:], cache=cache)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    token = tokens[:, past:]

    def model_step():
        cache.length = past
        model(token, cache=cache)

    runs = {"model_s": model_step, "floor_s": lambda: floor(token, past)}
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            synchronize(device)
            t0 = time.perf_counter()
            for _ in range(calls):
                run()
            synchronize(device)
            best[name] = min(best[name], (time.perf_counter() - t0) / calls)
    return {**best, "ratio": best["model_s"] / best["floor_s"]}


def _memory_probe_code(model_spec: str, config: dict, attention: str) -> str:
    return f"""
import json, torch
from course.lm.bench import _build, _rss_peak_reset, _rss_peak_bytes
from course.lm.config import ModelConfig
from course.lm.models import load_model_class
torch.set_num_threads(1)
cfg = ModelConfig.from_dict({config!r}); cfg.attention = {attention!r}
model = _build(load_model_class({model_spec!r}), cfg, torch.device("cpu")).eval()
idx = torch.randint(256, (1, {MEMORY_SEQ_LEN}))
with torch.no_grad():
    model(idx[:, :64])  # load kernels and allocator pools before the baseline
    before = _rss_peak_reset()
    model(idx)
    after = _rss_peak_bytes()
print(json.dumps({{"peak_bytes": after - before}}))
"""


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def _rss_peak_reset() -> int:
    """Reset the kernel's peak-RSS mark (Linux: clear_refs 5) and return current RSS in bytes.

    Without the reset, a peak reached earlier (while importing, building the model) would hide
    any smaller peak of the forward pass.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmRSS") * 1024
    except OSError:  # not Linux: ru_maxrss (bytes on macOS) is the best we have
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rss_peak_bytes() -> int:
    try:
        return _status_kib("VmHWM") * 1024
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def forward_memory(model_spec: str, model_cls, preset: TrainConfig, device, attention) -> dict:
    """Extra memory one no-grad forward of (1, 2048) tokens needs.

    CUDA: torch.cuda.max_memory_allocated above what was allocated before the call. CPU: in a
    fresh process, the peak resident set size during the call (VmHWM, its mark reset just
    before) minus the resident size before it; a fresh process so that this one's allocator
    caches neither hide nor inflate it.
    """
    config = dataclasses.replace(preset.model, context_length=MEMORY_SEQ_LEN, attention=attention)
    if device.type == "cuda":
        model = _build(model_cls, config, device).eval()
        idx = torch.randint(256, (1, MEMORY_SEQ_LEN), device=device)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with torch.no_grad():
            model(idx)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del model
        torch.cuda.empty_cache()
        return {"attention": attention, "peak_bytes": peak, "method": "cuda max_memory_allocated"}
    code = _memory_probe_code(model_spec, config.to_dict(), attention)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if out.returncode != 0:
        # Out of memory, or no way to read a peak on this OS: say so rather than stop the bench.
        reason = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"attention": attention, "peak_bytes": None, "method": f"failed: {reason}"}
    peak = json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]
    return {
        "attention": attention,
        "peak_bytes": peak,
        "method": "peak RSS growth in a fresh process",
    }


def time_to_loss(model_cls, preset_name: str, preset: TrainConfig, corpus, device) -> dict:
    target, budget = LOSS_TARGETS.get(preset_name, (None, None))
    config = copy.deepcopy(preset)
    config.target_val_loss = target
    torch._dynamo.reset()  # the clock includes compiling, as it would in a fresh process
    t0 = time.perf_counter()
    result = train(model_cls, config, corpus, device=device, verbose=True)
    wall_s = time.perf_counter() - t0  # also building the model and optimizer, saving at the end
    return {
        "wall_s": wall_s,
        "preset": preset_name,
        "target_val_loss": target,
        "budget_s": budget,
        "reached_s": result.target_reached_s,
        "val_loss": result.val_loss,
        "steps": result.step,
        "elapsed_s": result.elapsed_s,
        "tokens_per_s": result.tokens_per_s,
        "mfu": result.mfu,
    }


def run_bench(
    model_spec=None, *, device=None, preset=None, corpus=None, out_dir="runs", only=None
) -> dict:
    from course.lm.models import DEFAULT_MODEL

    device = pick_device(device)
    preset_name = preset or default_preset_name(device)
    config = get_preset(preset_name)
    model_spec = model_spec or DEFAULT_MODEL
    model_cls = load_model_class(model_spec)
    sections = set(only or SECTIONS)
    if unknown := sections - set(SECTIONS):
        from course.lm.errors import LMError

        raise LMError(
            f"unknown bench section(s) {', '.join(sorted(unknown))} "
            f"(choose from {', '.join(SECTIONS)})"
        )
    if "loss" in sections and corpus:
        from course.lm.corpus import load_corpus

        corpus = load_corpus(corpus)  # a bad path fails now, not after minutes of benchmarks
    results = {
        "device": _device_name(device),
        "preset": preset_name,
        "model": model_spec,
        "threads": torch.get_num_threads(),
        "date": datetime.now().isoformat(),
    }
    if "train" in sections:
        results["train"] = [
            train_throughput(model_cls, config, device, *v) for v in _variants(device)
        ]
        _print_train(results["train"])
    if "generate" in sections:
        # Both presets' models on whatever device: the cache saves more, the larger the model,
        # because a cached step there is more arithmetic and less per-op overhead.
        names = [preset_name]
        if preset_name in ("cpu", "gpu"):
            names += [n for n in ("cpu", "gpu") if n != preset_name]
        results["generate"] = [
            generation_speed(model_cls, get_preset(name), device, name) for name in names
        ]
        _print_generate(results["generate"])
    if "memory" in sections:
        results["memory"] = [
            forward_memory(model_spec, model_cls, config, device, a) for a in ("reference", "sdpa")
        ]
        _print_memory(results["memory"])
    if "loss" in sections:
        if corpus:
            results["loss"] = time_to_loss(model_cls, preset_name, config, corpus, device)
            _print_loss(results["loss"])
        else:
            print(
                "\n4. time to loss: skipped (set BENCH_CORPUS or pass --corpus PATH to "
                "Tiny Shakespeare)"
            )
    path = _save(results, out_dir)
    print(f"\nresults: {path}")
    return results


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({os.cpu_count()} cores)"


def _save(results: dict, out_dir) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def _print_train(rows: list[dict]) -> None:
    print("\n1. training throughput")
    print(f"   {'attention':<10} {'compile':<8} {'precision':<9} {'tokens/s':>12} {'MFU':>7}")
    base = rows[0]["tokens_per_s"]
    for r in rows:
        m = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        speed = f"{r['tokens_per_s']:,.0f}"
        ratio = r["tokens_per_s"] / base
        print(
            f"   {r['attention']:<10} {str(r['compile']):<8} {r['precision']:<9} {speed:>12} "
            f"{m:>7}  ({ratio:.2f}x)"
        )


def _print_generate(rows: list[dict]) -> None:
    print(
        f"\n2. generation, batch 1, {PROMPT_TOKENS}-token prompt, {NEW_TOKENS} new tokens "
        f"(KV-cache speed-up target >= {KV_CACHE_TARGET:.0f}x for the cpu preset; cached step "
        f"target <= {FLOOR_TARGET}x the hand-flattened floor)"
    )
    print(
        f"   {'model':<11} {'params':>8} {'cached':>10} {'recompute':>10} {'speed-up':>9}"
        f" {'cached step':>12} {'floor step':>11} {'step/floor':>11}"
    )
    for r in rows:
        cached = r["cached_tokens_per_s"]
        speedup = f"{cached / r['recompute_tokens_per_s']:.1f}x" if cached else "n/a"
        line = (
            f"   {r['preset'] + ' preset':<11} {r['n_params'] / 1e6:>7.2f}M "
            f"{_tok_s(cached):>10} {_tok_s(r['recompute_tokens_per_s']):>10} {speedup:>9}"
        )
        if "ratio" in r:
            line += (
                f" {1e6 * r['model_s']:>9.0f} us {1e6 * r['floor_s']:>8.0f} us {r['ratio']:>10.2f}x"
            )
        else:
            line += f"  (floor: {r.get('floor_note', 'n/a')})"
        print(line)
    cpu = next((r for r in rows if r["preset"] == "cpu" and r["cached_tokens_per_s"]), None)
    if cpu is not None:
        speedup = cpu["cached_tokens_per_s"] / cpu["recompute_tokens_per_s"]
        verdicts = [
            f"speed-up {speedup:.1f}x: {'met' if speedup >= KV_CACHE_TARGET else 'not met'}"
        ]
        if "ratio" in cpu:
            met = "met" if cpu["ratio"] <= FLOOR_TARGET else "not met"
            verdicts.append(f"step/floor {cpu['ratio']:.2f}x: {met}")
        print(f"   cpu preset targets: {'; '.join(verdicts)}")


def _tok_s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}/s"


def _print_memory(rows: list[dict]) -> None:
    methods = ", ".join(sorted({r["method"] for r in rows}))
    print(f"\n3. peak memory of one forward pass, batch 1, length {MEMORY_SEQ_LEN} ({methods})")
    for r in rows:
        size = f"{r['peak_bytes'] / 2**20:>10.1f} MiB" if r["peak_bytes"] is not None else "n/a"
        print(f"   {r['attention']:<10} {size}")


def _print_loss(r: dict) -> None:
    print(f"\n4. time to validation loss {r['target_val_loss']} ({r['preset']} preset)")
    if r["reached_s"] is not None:
        verdict = "within" if r["reached_s"] <= r["budget_s"] else "over"
        print(
            f"   reached {r['val_loss']:.4f} at step {r['steps']} after {r['reached_s']:.1f} s "
            f"({verdict} the {r['budget_s']:.0f} s budget), {r['tokens_per_s']:,.0f} tokens/s"
        )
        print(f"   the whole run, model construction to final save: {r['wall_s']:.1f} s")
    else:
        print(
            f"   not reached: val {r['val_loss']:.4f} after {r['steps']} steps, "
            f"{r['elapsed_s']:.1f} s"
        )
    if r["mfu"] is not None:
        print(f"   MFU {100 * r['mfu']:.1f}%")
