"""Lesson 07's explorer: what the learner's KV cache buys, in time and in memory.

*speed*: greedy decoding on a `course.probe_layers.ToyLM` (sized by the controls), timed step by
step, with the learner's `KVCache` (one new token per step) and without a cache (the whole
sequence again at every step). The time per token of recompute grows with the position, the
cached one stays nearly flat; the readout gives tokens/s of both and says whether the cached
logits equal the recomputed ones (they must, to float32 rounding). Memory against the sequence
length: the bytes the learner's cache holds (a preallocated cache is flat at max_len, one that
concatenates grows) next to what the formula says the filled positions need.

*calculator*: the learner's `kv_cache_bytes(config, seq_len, batch_size, bytes_per_element)`
for real models' published configurations (`MODELS`, each with its source), against the sequence
length, with a model picker; DeepSeek-V2's MLA, which caches one latent vector per token and
layer instead of keys and values, is computed from its own formula.
"""

from __future__ import annotations

import html
import time
from typing import NamedTuple

import ipywidgets as W
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from course.compare_plain import tolerance_for
from course.probe_layers import ToyLM
from course.widgets.base import CONTROL_STYLE, Explorer, int_slider, is_grading

KiB, GiB = 1024, 1024**3
# Cached and recomputed float32 logits agree to rounding: the bound every float32 result of the
# course is judged by (|cached - recomputed| <= atol + rtol * |recomputed|, the notebook's
# "Precision" paragraph). Rounding alone differs by about 1e-5 in these logits: the two paths
# add the same numbers in other orders.
EXACT = tolerance_for("float32")


class ModelShape(NamedTuple):
    """What a model's KV cache size depends on (Hugging Face config names in the sources)."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    context: int
    source: str
    mla_elements: int = 0  # per token and layer, for MLA (kv_lora_rank + qk_rope_head_dim)

    def config(self) -> dict:
        return {
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "d_model": self.n_heads * self.head_dim,
        }


# Checked against each model's published configuration (config.json on the Hugging Face hub, or
# the printed module shapes of the released checkpoint), as named in `source`.
MODELS: dict[str, ModelShape] = {
    "GPT-2 small": ModelShape(
        12, 12, 12, 64, 1024, "openai-community/gpt2 config.json: n_layer 12, n_head 12, n_embd 768"
    ),
    "Llama-2-7B": ModelShape(
        32, 32, 32, 128, 4096, "meta-llama/Llama-2-7b-hf config.json: 32 layers, 32 heads, 4096"
    ),
    "Llama-2-70B (GQA-8)": ModelShape(
        80, 64, 8, 128, 4096, "meta-llama/Llama-2-70b-hf config.json: 80 layers, 64 heads, 8 kv"
    ),
    "Llama-3-8B (GQA-8)": ModelShape(
        32, 32, 8, 128, 8192, "meta-llama/Meta-Llama-3-8B config.json: 32 layers, 32 heads, 8 kv"
    ),
    "Falcon-7B (MQA)": ModelShape(
        32, 71, 1, 64, 2048, "tiiuae/falcon-7b: 32 layers, 71 heads of 64, one kv head (MQA)"
    ),
    # The context is the 128K tokens DeepSeek-V2 is released for (its model card and paper);
    # config.json's max_position_embeddings, 163,840, is larger than that and is not used.
    "DeepSeek-V2 (MLA)": ModelShape(
        60,
        128,
        128,
        128,
        131072,
        "deepseek-ai/DeepSeek-V2 config.json: 60 layers, kv_lora_rank 512, qk_rope_head_dim 64; "
        "context 128K tokens (131,072) as released, not config.json's max_position_embeddings "
        "163,840",
        mla_elements=512 + 64,
    ),
}
DTYPES = {"float32 (4 bytes)": 4, "bfloat16 / float16 (2 bytes)": 2, "int8 / fp8 (1 byte)": 1}
VIEWS = ("speed", "calculator")


def model_bytes(bytes_fn, shape: ModelShape, seq_len: int, batch: int, nbytes: int) -> int:
    """The learner's formula for a KV cache; MLA's latent cache from its own formula."""
    if shape.mla_elements:
        return shape.mla_elements * shape.n_layers * seq_len * batch * nbytes
    return int(bytes_fn(shape.config(), seq_len, batch, nbytes))


class KVCacheExplorer(Explorer):
    figsize = (8.4, 3.3)

    def __init__(self, cache_class, bytes_fn, tokens: int = 512) -> None:
        self.cache_class, self.bytes_fn = cache_class, bytes_fn
        # Nothing is shown while grading: decode only a few tokens there.
        self.tokens = 16 if is_grading() else tokens
        super().__init__()

    def controls(self):
        self.view = W.ToggleButtons(
            options=list(VIEWS), value="speed", description="view", style=CONTROL_STYLE
        )
        self.length = int_slider("tokens", self.tokens, 16, 1024)
        self.kv_heads = W.ToggleButtons(
            options=[("MHA", 4), ("GQA", 2), ("MQA", 1)],
            value=2,
            description="kv heads",
            style=CONTROL_STYLE,
        )
        self.model = W.Dropdown(
            options=list(MODELS), value="Llama-2-7B", description="model", style=CONTROL_STYLE
        )
        self.dtype = W.Dropdown(
            options=list(DTYPES),
            value="bfloat16 / float16 (2 bytes)",
            description="dtype",
            style=CONTROL_STYLE,
        )
        self.batch = int_slider("batch", 1, 1, 64)
        self.note = W.HTML()
        return [
            self.view,
            self.length,
            self.kv_heads,
            self.model,
            self.dtype,
            self.batch,
            self.note,
        ]

    def compute(self) -> dict:
        speed = self.view.value == "speed"
        for control in (self.length, self.kv_heads):
            control.disabled = not speed
        for control in (self.model, self.dtype, self.batch):
            control.disabled = speed
        return self._speed() if speed else self._calculator()

    def not_written_message(self) -> str:
        # The speed view runs KVCache, the calculator kv_cache_bytes: name the one missing.
        name = "KVCache" if self.view.value == "speed" else "kv_cache_bytes"
        return (
            f"Your {name} is not written yet (it raises NotImplementedError): write it, run "
            "its cell, then run this cell again."
        )

    # ------------------------------------------------------------ speed

    @torch.no_grad()
    def _speed(self) -> dict:
        n = self.length.value
        model = ToyLM(n_layers=2, n_heads=4, n_kv_heads=self.kv_heads.value, head_dim=8, seed=3)
        prompt = torch.tensor([[1, 2, 3, 4]])
        cache = self.cache_class(
            model.n_layers, 1, model.n_kv_heads, prompt.shape[1] + n, model.head_dim
        )
        # Warm-up, untimed: the first call of each path pays for allocations and dispatch
        # caches, which would otherwise show as a slow first cached step.
        spare = self.cache_class(
            model.n_layers, 1, model.n_kv_heads, prompt.shape[1] + 2, model.head_dim
        )
        model(prompt[:, -1:], spare), model(prompt[:, -1:], spare), model(prompt)
        logits = model(prompt, cache)[:, -1:]
        seq, cached_s, memory, cached_logits = prompt, [], [], [logits]
        for _ in range(n):
            token = logits.argmax(-1)
            seq = torch.cat([seq, token], dim=1)
            t0 = time.perf_counter()
            logits = model(token, cache)[:, -1:]
            cached_s.append(time.perf_counter() - t0)
            cached_logits.append(logits)
            memory.append(_held_bytes(cache))
        every = max(1, n // 12)
        positions = list(range(0, n, every))
        recompute_s, gap, within = [], 0.0, True
        for p in positions:
            t0 = time.perf_counter()
            full = model(seq[:, : prompt.shape[1] + p + 1])[:, -1:]
            recompute_s.append(time.perf_counter() - t0)
            gap = max(gap, float((full - cached_logits[p + 1]).abs().max()))
            within &= torch.allclose(cached_logits[p + 1], full, rtol=EXACT.rtol, atol=EXACT.atol)
        formula = [
            2 * model.n_layers * model.n_kv_heads * model.head_dim * 4 * (prompt.shape[1] + i + 1)
            for i in range(n)
        ]
        return {
            "view": "speed",
            "cached_s": cached_s,
            "positions": positions,
            "recompute_s": recompute_s,
            "memory": memory,
            "formula": formula,
            "gap": gap,
            "exact": within,
            "cached_tok_s": len(cached_s) / sum(cached_s),
            "recompute_tok_s": len(recompute_s) / sum(recompute_s),
        }

    # ------------------------------------------------------------ calculator

    def _calculator(self) -> dict:
        nbytes, batch = DTYPES[self.dtype.value], self.batch.value
        shape = MODELS[self.model.value]
        lengths = [2**k for k in range(7, 18) if 2**k <= max(shape.context, 128)]
        curve = [model_bytes(self.bytes_fn, shape, t, batch, nbytes) for t in lengths]
        per_token = {
            name: model_bytes(self.bytes_fn, s, 1, 1, nbytes) for name, s in MODELS.items()
        }
        return {
            "view": "calculator",
            "lengths": lengths,
            "curve": curve,
            "per_token": per_token,
            "at_context": model_bytes(self.bytes_fn, shape, shape.context, batch, nbytes),
            "model": self.model.value,
            "context": shape.context,
            "source": shape.source,
        }

    # ------------------------------------------------------------ drawing

    def draw(self, fig: Figure, state: dict) -> None:
        left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        if state["view"] == "speed":
            steps = range(1, len(state["cached_s"]) + 1)
            left.plot(steps, [1e3 * s for s in state["cached_s"]], label="your cache", lw=1)
            left.plot(
                [p + 1 for p in state["positions"]],
                [1e3 * s for s in state["recompute_s"]],
                "o-",
                label="recompute",
            )
            left.set(xlabel="new token", ylabel="ms per token", title="time per token")
            left.legend(fontsize=8)
            right.plot(steps, [m / KiB for m in state["memory"]], label="your cache holds")
            right.plot(steps, [m / KiB for m in state["formula"]], "--", label="filled positions")
            right.set(xlabel="new token", ylabel="KiB", title="cache memory")
            right.legend(fontsize=8)
        else:
            left.plot(state["lengths"], [c / GiB for c in state["curve"]], "o-")
            # Plain tick labels: log axes' default 10^k labels go through mathtext (slow).
            left.set_xscale("log", base=2)
            left.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
            left.tick_params(axis="x", labelsize=7, labelrotation=45)
            left.set(xlabel="sequence length", ylabel="GiB", title=state["model"])
            names = list(state["per_token"])
            right.barh(names, [state["per_token"][n] / KiB for n in names])
            right.set(xlabel="KiB per token (batch 1)", title="per token")
            right.tick_params(axis="y", labelsize=7)
        fig.tight_layout()

    def readout_html(self, state: dict) -> str:
        if state.get("view") == "speed":
            same = state["exact"]
            verdict = (
                "✔ cached logits equal the recomputed ones"
                if same
                else f"✘ cached and recomputed logits differ by {state['gap']:.2g}: the cache is "
                "not exact (position pointer? offset mask? reset?)"
            )
            return (
                f"{verdict} (largest difference {state['gap']:.1e}).<br>"
                f"with your cache: {state['cached_tok_s']:.0f} tokens/s · recompute: "
                f"{state['recompute_tok_s']:.0f} tokens/s (mean over the sampled positions)"
            )
        if state.get("view") == "calculator":
            per = state["per_token"][state["model"]]
            return (
                f"{html.escape(state['model'])}: {per / KiB:.4g} KiB per token and sequence; "
                f"{state['at_context'] / GiB:.4g} GiB at its {state['context']:,}-token context "
                f"with this batch<br><small>source: {html.escape(state['source'])}</small>"
            )
        return ""


def _held_bytes(cache) -> int:
    """Bytes of every tensor the cache object holds (in attributes, lists or tuples)."""
    seen, total = set(), 0
    for value in vars(cache).values():
        items = value if isinstance(value, (list, tuple)) else [value]
        for t in items:
            if isinstance(t, torch.Tensor) and id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


def kv_cache_explorer(cache_class, bytes_fn, tokens: int = 512) -> KVCacheExplorer:
    """Build the lesson-07 explorer from the learner's `KVCache` class (constructed as
    `KVCache(n_layers, batch_size, n_kv_heads, max_len, head_dim)`) and `kv_cache_bytes(config,
    seq_len, batch_size, bytes_per_element)`; `tokens` is the speed view's first length."""
    return KVCacheExplorer(cache_class, bytes_fn, tokens)
