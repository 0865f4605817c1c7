"""A live view of a training run: the loss curve, its anchors, and a sample now and then.

`TrainingExplorer` is the `callback` of `course.lm.train`: each event (a training loss every
`log_interval` steps, a validation loss at each evaluation) is added to the curve, and every
`sample_every` steps the learner's own model writes a short sample (through `sample_fn(model)
-> str`, typically `course.lm.sample_text` with the KV cache). Horizontal lines mark the
anchors the run should pass: the loss of a uniform guess, ln(vocab), and the corpus's unigram
and bigram entropies (what a model ignoring all context, or all but the last token, can reach),
and the target of the preset. Redrawing is throttled (`min_redraw_s`) so that the plot never
slows training down much.

Under `nbgrader` nothing is displayed (`Explorer.show`), but the explorer still records the run.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable

import ipywidgets as W
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter

# Counted with the corpus (course.lm.corpus); imported here too, where lesson 08 finds it.
from course.lm.corpus import unigram_bigram_entropy  # noqa: F401
from course.widgets.base import Explorer

__all__ = ["TrainingExplorer", "training_explorer"]


class TrainingExplorer(Explorer):
    """Loss curve (train and validation, nats per token) with anchors, and the latest samples.

    anchors: {label: loss} drawn as horizontal lines (e.g. unigram and bigram entropies);
    target: the preset's target validation loss, or None; sample_fn: `model -> str`, called
    every `sample_every` steps (None: no samples). Controls: a log-scale toggle and a smoothing
    slider for the training curve, a centred mean of k points (both only change the picture).
    """

    figsize = (8.0, 3.4)

    def __init__(
        self,
        anchors: dict[str, float] | None = None,
        target: float | None = None,
        sample_fn: Callable | None = None,
        sample_every: int = 200,
        min_redraw_s: float = 0.5,
    ) -> None:
        self.anchors = dict(anchors or {})
        self.target = target
        self.sample_fn = sample_fn
        self.sample_every = max(1, int(sample_every))
        self.min_redraw_s = min_redraw_s
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []
        self.samples: list[tuple[int, str]] = []
        self.tokens_per_s: float | None = None
        self._last_sample_step = 0
        self._last_draw = 0.0
        super().__init__()

    def controls(self) -> list[W.Widget]:
        self.log_scale = W.Checkbox(value=False, description="log scale")
        self.smoothing = W.IntSlider(
            value=1,
            min=1,
            max=25,
            step=2,
            description="smooth (points)",
            continuous_update=False,
            style={"description_width": "initial"},  # the whole label, not 80 px of it
        )
        return [self.log_scale, self.smoothing]

    # ------------------------------------------------------------ the training callback

    def __call__(self, event: dict) -> None:
        step = int(event.get("step", 0))
        if "val_loss" in event:
            self.val.append((step, float(event["val_loss"])))
        elif "loss" in event:
            self.train.append((step, float(event["loss"])))
            if event.get("tokens_per_s"):
                self.tokens_per_s = float(event["tokens_per_s"])
        model = event.get("model")
        due = step - self._last_sample_step >= self.sample_every
        if self.sample_fn is not None and model is not None and due:
            self._last_sample_step = step
            self.add_sample(step, model)
        now = time.perf_counter()
        if "val_loss" in event or now - self._last_draw >= self.min_redraw_s:
            self._last_draw = now
            self.update()

    def add_sample(self, step: int, model) -> None:
        """Ask `sample_fn` for a sample (an error is recorded as the sample, never raised)."""
        was_training = getattr(model, "training", False)
        try:
            model.eval()
            text = str(self.sample_fn(model))
        except Exception as exc:  # noqa: BLE001 - the learner's model may raise anything
            text = f"(sampling failed: {type(exc).__name__}: {exc})"
        finally:
            if was_training:
                model.train()
        self.samples.append((step, text))

    def finish(self) -> None:
        """Draw the final state (call after training)."""
        self.update()

    # ------------------------------------------------------------ the explorer

    def compute(self) -> dict:
        half = int(self.smoothing.value) // 2
        steps = [s for s, _ in self.train]
        losses = [v for _, v in self.train]
        # A centred mean (k = 2 half + 1 points): a trailing one would lag behind a falling curve
        # and draw it above the validation points. Near the ends the window shrinks on both
        # sides alike, so it stays centred and a short run is not flattened into its mean.
        n = len(losses)
        reach = [min(half, i, n - 1 - i) for i in range(n)]
        windows = [losses[i - r : i + r + 1] for i, r in zip(range(n), reach, strict=True)]
        smoothed = [sum(w) / len(w) for w in windows]
        # Passed by training: a step-0 validation of the untrained model does not count (it
        # sits on the uniform anchor, ln V, on either side by chance).
        passed = {
            label: next((s for s, v in self.val if s > 0 and v <= value), None)
            for label, value in self.anchors.items()
        }
        return {
            "steps": steps,
            "train": smoothed,
            "val": list(self.val),
            "log": bool(self.log_scale.value),
            "passed": passed,
            "sample": self.samples[-1] if self.samples else None,
            "tokens_per_s": self.tokens_per_s,
        }

    def draw(self, fig: Figure, state: dict) -> None:
        ax = fig.add_subplot(1, 1, 1)
        if state["steps"]:
            ax.plot(state["steps"], state["train"], color="tab:blue", lw=1.2, label="train")
        if state["val"]:
            vs, vl = zip(*state["val"], strict=True)
            ax.plot(vs, vl, "o-", color="tab:orange", ms=4, label="validation")
        colors = ["tab:gray", "tab:green", "tab:purple", "tab:brown"]
        for (label, value), color in zip(self.anchors.items(), colors * 3, strict=False):
            ax.axhline(value, color=color, ls="--", lw=0.9, label=f"{label} {value:.2f}")
        if self.target is not None:
            ax.axhline(self.target, color="tab:red", ls=":", lw=1.2, label=f"target {self.target}")
        if state["log"]:
            ax.set_yscale("log")
            # Losses span about one decade: plain numbers (2, 3, 4) on every tick, not 2x10^0.
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats per byte)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper right")
        ax.set_title("training run" if state["steps"] else "waiting for the first step")

    def readout_html(self, state: dict) -> str:
        parts = []
        if state["val"]:
            step, val = state["val"][-1]
            parts.append(f"validation loss {val:.3f} at step {step}")
        if state["tokens_per_s"]:
            parts.append(f"{state['tokens_per_s']:,.0f} tokens/s")
        for label, step in state["passed"].items():
            if step is not None:
                parts.append(f"passed {html.escape(label)} at step {step}")
        text = " · ".join(parts)
        if state["sample"] is not None:
            step, sample = state["sample"]
            text += f"<br><b>sample at step {step}:</b><pre>{html.escape(sample[-600:])}</pre>"
        return text


def training_explorer(**kwargs) -> TrainingExplorer:
    """A `TrainingExplorer` (see it for the arguments): display it, then pass it to
    `course.lm.train(..., callback=explorer)`."""
    return TrainingExplorer(**kwargs)
