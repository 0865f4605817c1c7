"""Lesson 02's explorer: how d_k and the choice of scale shape the scores and one attention row.

Everything attention-specific runs the learner's own functions: the weights come from their
`attention_weights(q, k, mask=None, scale=None)`, the entropy from their `attention_entropy`,
and the largest softmax gradient from autograd *through* their `attention_weights` (with the
keys set to the identity, q @ I^T = q, so a query row of logits goes straight to the softmax).
"""

from __future__ import annotations

import math

import ipywidgets as W
import torch
from matplotlib.figure import Figure

from course.widgets.base import Explorer, call_quietly, choice_slider, int_slider

WIDTHS = [2**i for i in range(11)]  # d_k = 1 .. 1024
SCALES = {"1": lambda d: 1.0, "√d_k": lambda d: 1.0 / math.sqrt(d), "d_k": lambda d: 1.0 / d}
N_QUERIES, N_KEYS, MAX_WIDTH = 64, 16, max(WIDTHS)


def _check_tensor(value, shape: tuple, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} returned a {type(value).__name__}, expected a torch.Tensor")
    if tuple(value.shape) != shape:
        raise ValueError(f"{what} returned shape {tuple(value.shape)}, expected {shape}")
    return value.detach().to(torch.float64)


class AttentionExplorer(Explorer):
    """Scores histogram and one attention row for `weights_fn(q[:, :d_k], k[:, :d_k], scale=s)`."""

    figsize = (9.0, 3.2)

    def __init__(self, weights_fn, entropy_fn, seed: int = 0):
        self.weights_fn, self.entropy_fn = weights_fn, entropy_fn
        # One wide random matrix each, sliced to d_k columns: moving the slider adds
        # dimensions to the same queries and keys instead of drawing new ones.
        g = torch.Generator().manual_seed(seed)
        self.q_all = torch.randn(N_QUERIES, MAX_WIDTH, generator=g)
        self.k_all = torch.randn(N_KEYS, MAX_WIDTH, generator=g)
        super().__init__()

    def controls(self):
        self.width = choice_slider("d_k", WIDTHS, 64)
        self.scale_by = W.ToggleButtons(
            options=list(SCALES),
            value="√d_k",
            description="divide by",
            style={"button_width": "60px"},
        )
        self.row = int_slider("query row", 0, 0, N_QUERIES - 1)
        help_text = W.HTML(
            "<small>Scores are q·k × scale for 64 random queries against 16 "
            "keys, entries N(0, 1). The weights, entropy and gradient come from "
            "<b>your</b> functions.</small>"
        )
        return [self.width, self.scale_by, self.row, help_text]

    def compute(self) -> dict:
        d = self.width.value
        scale = SCALES[self.scale_by.value](d)
        q, k = self.q_all[:, :d].clone(), self.k_all[:, :d].clone()
        scores = (q @ k.T).to(torch.float64) * scale
        raw = call_quietly(self.weights_fn, q, k, scale=scale)
        weights = _check_tensor(raw, (N_QUERIES, N_KEYS), "attention_weights")
        entropy = _check_tensor(
            call_quietly(self.entropy_fn, raw.detach()), (N_QUERIES,), "attention_entropy"
        )
        row = self.row.value
        state = {
            "d_k": d,
            "scale": scale,
            "scores": scores,
            "score_std": float(scores.std()),
            "theory_std": math.sqrt(d) * scale,
            "weights": weights,
            "row": weights[row],
            "row_index": row,
            "entropy": float(entropy[row]),
            "mean_entropy": float(entropy.mean()),
            "max_entropy": math.log(N_KEYS),
            "max_weight": float(weights[row].max()),
            "warning": None,
        }
        sums = weights.sum(-1)
        if not torch.isfinite(weights).all():
            state["warning"] = "your weights contain inf/NaN"
        elif (sums - 1).abs().max() > 1e-4:
            state["warning"] = (
                f"rows of your weights sum to {float(sums.min()):.3f}.."
                f"{float(sums.max()):.3f}, not 1"
            )
        state["max_grad"], state["grad_source"] = self._largest_gradient(scores[row])
        return state

    def _largest_gradient(self, logits: torch.Tensor) -> tuple[float, str]:
        """max |dp_i/dz_j| of the learner's softmax at these logits, by autograd if possible."""
        eye = torch.eye(len(logits), dtype=torch.float64)

        def softmax_of(z):
            return self.weights_fn(z.unsqueeze(0), eye, scale=1.0).squeeze(0)

        try:
            jac = torch.autograd.functional.jacobian(softmax_of, logits.clone())
            if isinstance(jac, torch.Tensor) and torch.isfinite(jac).all():
                return float(jac.abs().max()), "autograd through your attention_weights"
        except Exception:  # noqa: BLE001 - e.g. a numpy detour breaks autograd; use the formula
            pass
        p = torch.softmax(logits, -1)
        return float((p * (1 - p)).max()), "formula p(1 - p) (autograd did not work)"

    def draw(self, fig: Figure, state: dict) -> None:
        left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        scores = state["scores"].flatten().numpy()
        spread = max(4 * state["theory_std"], float(abs(scores).max()), 1e-3)
        left.hist(scores, bins=40, range=(-spread, spread), color="#1f77b4")
        for sign in (-1, 1):
            left.axvline(sign * state["theory_std"], ls="--", c="grey", lw=1)
        left.set_title(
            f"scores, d_k = {state['d_k']}, scale = {state['scale']:.3g}: "
            f"std {state['score_std']:.2f}",
            fontsize=9,
        )
        left.set_xlabel("q·k × scale")
        xs = range(N_KEYS)
        row = torch.nan_to_num(state["row"], nan=0.0).numpy()
        right.bar(xs, row, color="#ff7f0e")
        right.axhline(1 / N_KEYS, ls="--", c="grey", lw=1, label="uniform 1/T")
        right.set_ylim(0, 1.05)
        right.set_xticks(range(0, N_KEYS, 3))
        right.set_xlabel("key")
        right.set_title(
            f"attention row of query {state['row_index']}: entropy {state['entropy']:.2f} nats",
            fontsize=9,
        )
        right.legend(loc="upper right", fontsize=8)

    def readout_html(self, state: dict) -> str:
        rows = [
            f"score std: <b>{state['score_std']:.3f}</b> (theory √d_k × scale = "
            f"{state['theory_std']:.3f})",
            f"entropy of this row: <b>{state['entropy']:.3f}</b> nats; mean over rows "
            f"{state['mean_entropy']:.3f} (uniform: log 16 = {state['max_entropy']:.3f})",
            f"largest weight: <b>{state['max_weight']:.3f}</b>",
            f"largest softmax gradient |∂pᵢ/∂zⱼ|: <b>{state['max_grad']:.4g}</b> "
            f"({state['grad_source']})",
        ]
        if state["warning"]:
            rows.append(f"<span style='color:#b00020'>⚠ {state['warning']}</span>")
        return "<br>".join(rows)


def attention_explorer(weights_fn, entropy_fn, seed: int = 0) -> AttentionExplorer:
    """The lesson-02 explorer for the learner's `attention_weights` and `attention_entropy`."""
    return AttentionExplorer(weights_fn, entropy_fn, seed)
