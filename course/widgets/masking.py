"""Lesson 03's explorer: an attention heatmap under mask toggles, and a token-perturbation probe.

It runs the learner's own `causal_mask`, `padding_mask`, `sliding_window_mask`,
`combine_masks` and `masked_attention`. The heatmap shows the weights their attention
computes: with the identity matrix as values, `attention(q, k, I, mask)` returns the weights
themselves. The probe adds 1 to every feature of one token and marks which output positions
moved; any position *before* that token that moves is a leak.
"""

from __future__ import annotations

import html
import math

import ipywidgets as W
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from course.widgets.base import CONTROL_STYLE, Explorer, call_quietly, int_slider

N_TOKENS, WIDTH = 10, 8
CHANGED_ATOL = 1e-6


def _as_mask(value, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} returned a {type(value).__name__}, expected a torch.Tensor")
    if value.dtype != torch.bool:
        raise TypeError(f"{what} returned dtype {value.dtype}, expected torch.bool")
    return value


class MaskingExplorer(Explorer):
    """The learner's attention weights on a random sequence under their masks; a leak probe."""

    figsize = (9.5, 3.6)

    def __init__(self, attention_fn, causal_fn, padding_fn, window_fn, combine_fn, seed: int = 0):
        self.attention_fn, self.causal_fn, self.padding_fn = attention_fn, causal_fn, padding_fn
        self.window_fn, self.combine_fn = window_fn, combine_fn
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(1, N_TOKENS, WIDTH, generator=g)
        # Fixed projections q, k, v = x W^T, scaled so the weights are neither flat nor one-hot.
        self.w = torch.randn(3, WIDTH, WIDTH, generator=g) / math.sqrt(WIDTH) * 1.5
        super().__init__()

    def controls(self):
        self.causal = W.Checkbox(value=True, description="causal", style=CONTROL_STYLE)
        self.padding = W.Checkbox(value=False, description="padding", style=CONTROL_STYLE)
        self.length = int_slider("real tokens", 7, 1, N_TOKENS)
        self.window = W.Checkbox(value=False, description="sliding window", style=CONTROL_STYLE)
        self.window_size = int_slider("window", 3, 1, N_TOKENS)
        self.token = int_slider("perturb token", 5, 0, N_TOKENS - 1)
        help_text = W.HTML(
            "<small>Grey cells are masked (False). The sliding window is causal "
            "by itself. The probe adds 1 to the chosen token and marks the "
            "outputs that moved: red ones lie <i>before</i> it (a leak).</small>"
        )
        return [
            self.causal,
            self.padding,
            self.length,
            self.window,
            self.window_size,
            self.token,
            help_text,
        ]

    def describe_mask(self) -> str:
        parts = []
        if self.causal.value:
            parts.append("causal")
        if self.padding.value:
            parts.append(f"padding ({self.length.value} real tokens)")
        if self.window.value:
            parts.append(f"window {self.window_size.value}")
        return " + ".join(parts) or "no mask"

    def build_mask(self) -> torch.Tensor | None:
        masks = []
        if self.causal.value:
            masks.append(_as_mask(self.causal_fn(N_TOKENS), "causal_mask"))
        if self.padding.value:
            masks.append(_as_mask(self.padding_fn([self.length.value], N_TOKENS), "padding_mask"))
        if self.window.value:
            masks.append(
                _as_mask(self.window_fn(N_TOKENS, self.window_size.value), "sliding_window_mask")
            )
        if not masks:
            return None
        return _as_mask(self.combine_fn(*masks), "combine_masks")

    def _attend(self, x: torch.Tensor, v: torch.Tensor | None, mask) -> torch.Tensor:
        q, k, v_x = (x @ self.w[i].T for i in range(3))
        q, k = q.unsqueeze(1), k.unsqueeze(1)  # (batch, heads = 1, T, d)
        out = call_quietly(self.attention_fn, q, k, v_x.unsqueeze(1) if v is None else v, mask)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"masked_attention returned a {type(out).__name__}, expected a tensor")
        return out.detach()

    def compute(self) -> dict:
        mask = self.build_mask()
        if mask is None:
            allowed = torch.ones(N_TOKENS, N_TOKENS, dtype=torch.bool)
        else:
            try:
                allowed = torch.broadcast_to(mask, (1, 1, N_TOKENS, N_TOKENS))[0, 0]
            except RuntimeError as exc:
                raise ValueError(
                    f"the combined mask of shape {tuple(mask.shape)} does not "
                    f"broadcast to (1, 1, {N_TOKENS}, {N_TOKENS})"
                ) from exc
        eye = torch.eye(N_TOKENS).expand(1, 1, N_TOKENS, N_TOKENS)
        weights = self._attend(self.x, eye, mask)
        if weights.numel() != N_TOKENS * N_TOKENS:
            raise ValueError(
                f"masked_attention returned shape {tuple(weights.shape)}, "
                f"expected (1, 1, {N_TOKENS}, {N_TOKENS})"
            )
        weights = weights.reshape(N_TOKENS, N_TOKENS).to(torch.float64)
        t = self.token.value
        perturbed = self.x.clone()
        perturbed[:, t, :] += 1.0
        base, moved = self._attend(self.x, None, mask), self._attend(perturbed, None, mask)
        diff = (moved - base).abs().to(torch.float64)
        diff = torch.nan_to_num(diff, nan=math.inf).reshape(N_TOKENS, -1).amax(-1)
        changed = diff > CHANGED_ATOL
        empty = ~allowed.any(-1)
        nan_rows = torch.isnan(weights).any(-1)
        return {
            "mask": allowed,
            "weights": weights,
            "token": t,
            "diff": diff,
            "changed": changed,
            "leak": bool(changed[:t].any()),
            "empty_rows": empty.nonzero().flatten().tolist(),
            "nan_rows": nan_rows.nonzero().flatten().tolist(),
            "empty_rows_zero": bool((weights[empty].nan_to_num(nan=1.0) == 0).all()),
            "description": self.describe_mask(),
        }

    def draw(self, fig: Figure, state: dict) -> None:
        left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        weights = state["weights"].nan_to_num(nan=0.0).numpy()
        left.imshow(weights, cmap="Blues", vmin=0, vmax=1)
        shade = np.zeros((N_TOKENS, N_TOKENS, 4))
        shade[~state["mask"].numpy()] = (0.6, 0.6, 0.6, 0.85)
        shade[np.array(state["nan_rows"], dtype=int)] = (0.8, 0.0, 0.1, 0.6)
        left.imshow(shade)
        t = state["token"]
        left.add_patch(Rectangle((t - 0.5, -0.5), 1, N_TOKENS, fill=False, ec="#d62728", lw=1.5))
        for row in state["empty_rows"]:  # queries that may attend to nothing, marked on the right
            left.text(
                N_TOKENS - 0.3,
                row,
                "∅",
                ha="left",
                va="center",
                color="#b00020",
                fontsize=9,
                clip_on=False,
            )
        left.set_xlabel("key position")
        left.set_ylabel("query position")
        left.set_xticks(range(N_TOKENS))
        left.set_yticks(range(N_TOKENS))
        left.set_title(f"your attention weights: {state['description']}", fontsize=9)

        positions = np.arange(N_TOKENS)
        changed = state["changed"].numpy()
        colours = [
            "#d62728" if c and p < t else "#ff7f0e" if c else "#bbbbbb"
            for p, c in zip(positions, changed, strict=True)
        ]
        heights = np.minimum(state["diff"].numpy(), 10.0)
        right.bar(positions, np.where(changed, np.maximum(heights, 0.02), heights), color=colours)
        right.axvline(t, ls="--", c="#d62728", lw=1)
        right.set_ylim(0, max(1.0, float(heights.max()) * 1.1))
        right.set_xticks(range(N_TOKENS))
        right.set_xlabel("output position")
        right.set_ylabel("max |Δ output|")
        verdict = "LEAK: earlier outputs moved" if state["leak"] else "no output before it moved"
        right.set_title(
            f"perturb token {t}: {verdict}",
            fontsize=9,
            color="#b00020" if state["leak"] else "black",
        )

    def readout_html(self, state: dict) -> str:
        moved = [int(p) for p in state["changed"].nonzero().flatten()]
        rows = [
            f"mask: <b>{html.escape(state['description'])}</b>",
            f"outputs that moved when token {state['token']} changed: <b>{moved}</b>",
        ]
        if state["leak"]:
            early = [p for p in moved if p < state["token"]]
            rows.append(
                f"<span style='color:#b00020'>⚠ leak: positions {early} saw a later token</span>"
            )
        if state["empty_rows"]:
            status = (
                "all-zero weights ✔"
                if state["empty_rows_zero"]
                else "<span style='color:#b00020'>not all zeros ✘</span>"
            )
            rows.append(f"queries that may attend to nothing: {state['empty_rows']} ({status})")
        if state["nan_rows"]:
            rows.append(
                f"<span style='color:#b00020'>⚠ NaN weights in rows {state['nan_rows']}: "
                "the NaN trap</span>"
            )
        return "<br>".join(rows)


def masking_explorer(
    attention_fn, causal_fn, padding_fn, window_fn, combine_fn, seed: int = 0
) -> MaskingExplorer:
    """Build the lesson-03 explorer from the learner's attention and mask functions."""
    return MaskingExplorer(attention_fn, causal_fn, padding_fn, window_fn, combine_fn, seed)
