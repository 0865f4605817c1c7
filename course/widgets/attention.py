"""Lesson 02's explorer: how d_k and the choice of scale shape the scores and one attention row.

Everything attention-specific runs the learner's own functions, for each of the three scales
(1, 1/sqrt(d_k), 1/d_k): the weights come from their `attention_weights(q, k, scale=s)`, the
entropy from their `attention_entropy`, and the largest softmax gradient from autograd *through*
their `attention_weights` (with the keys set to the identity, q @ I^T = q, so a query row of
logits goes straight to the softmax). Their weights are compared with softmax(q k^T * s), so a
function that ignores `scale` (or gets the weights wrong otherwise) is flagged in the picture.

The score histograms of the three scales share one fixed axis, so the spread of each is seen
against the others instead of being rescaled away; the numbers are drawn into the picture.
"""

from __future__ import annotations

import math

import ipywidgets as W
import numpy as np
import torch
from matplotlib.figure import Figure

from course.widgets.base import Explorer, call_quietly, choice_slider, int_slider

WIDTHS = [2**i for i in range(11)]  # d_k = 1 .. 1024
SCALES = {"1": lambda d: 1.0, "√d_k": lambda d: 1.0 / math.sqrt(d), "d_k": lambda d: 1.0 / d}
COLOURS = {"1": "#d62728", "√d_k": "#1f77b4", "d_k": "#2ca02c"}
N_QUERIES, N_KEYS, MAX_WIDTH = 64, 16, max(WIDTHS)
# The histograms' fixed axis: wide enough for a spread of a few units, so that scores scaled by
# 1/sqrt(d_k) fill it at every width; scores beyond it are counted into the edge bins.
SCORE_LIMIT = 12.0
# Learner weights further than this from softmax(q k^T * scale) are reported as wrong.
WEIGHT_TOLERANCE = 1e-4


def _check_tensor(value, shape: tuple, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} returned a {type(value).__name__}, expected a torch.Tensor")
    if tuple(value.shape) != shape:
        raise ValueError(f"{what} returned shape {tuple(value.shape)}, expected {shape}")
    return value.detach().to(torch.float64)


def _label(name: str) -> str:
    return "unscaled" if name == "1" else f"÷ {name}"


class AttentionExplorer(Explorer):
    """Score histograms and one attention row for `weights_fn(q[:, :d_k], k[:, :d_k], scale=s)`."""

    figsize = (10.0, 3.6)

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
            "<small>Scores are q·k × scale for 64 random queries against 16 keys, entries "
            "N(0, 1), drawn for all three scales on one fixed axis. The weights, entropies and "
            "gradient come from <b>your</b> functions, run with each scale.</small>"
        )
        return [self.width, self.scale_by, self.row, help_text]

    # ------------------------------------------------------------ computing

    def _learner_weights(self, q: torch.Tensor, k: torch.Tensor, scale: float):
        raw = call_quietly(self.weights_fn, q.clone(), k.clone(), scale=scale)
        return raw, _check_tensor(raw, (N_QUERIES, N_KEYS), "attention_weights")

    def _per_scale(self, d: int, q: torch.Tensor, k: torch.Tensor) -> dict:
        dots = (q @ k.T).to(torch.float64)
        default = torch.softmax(dots / math.sqrt(d), -1)
        found = {}
        for name, scale_of in SCALES.items():
            scale = scale_of(d)
            raw, weights = self._learner_weights(q, k, scale)
            entropy = _check_tensor(
                call_quietly(self.entropy_fn, raw.detach()), (N_QUERIES,), "attention_entropy"
            )
            expected = torch.softmax(dots * scale, -1)
            error = float((weights - expected).abs().nan_to_num(nan=float("inf")).max())
            found[name] = {
                "scale": scale,
                "scores": dots * scale,
                "score_std": float((dots * scale).std()),
                "theory_std": math.sqrt(d) * scale,
                "weights": weights,
                "entropy": entropy,
                "mean_entropy": float(entropy.mean()),
                "error": error,
                "default_like": error > WEIGHT_TOLERANCE
                and float((weights - default).abs().max()) <= WEIGHT_TOLERANCE,
            }
        return found

    def compute(self) -> dict:
        d = self.width.value
        q, k = self.q_all[:, :d], self.k_all[:, :d]
        per_scale = self._per_scale(d, q, k)
        chosen = per_scale[self.scale_by.value]
        row, weights = self.row.value, chosen["weights"]
        state = {
            "d_k": d,
            "scale_name": self.scale_by.value,
            "scale": chosen["scale"],
            "per_scale": per_scale,
            "scores": chosen["scores"],
            "score_std": chosen["score_std"],
            "theory_std": chosen["theory_std"],
            "weights": weights,
            "row": weights[row],
            "row_index": row,
            "entropy": float(chosen["entropy"][row]),
            "mean_entropy": chosen["mean_entropy"],
            "max_entropy": math.log(N_KEYS),
            "max_weight": float(weights[row].max()),
            "ignores_scale": any(s["default_like"] for s in per_scale.values()),
            "warning": self._warning(per_scale, weights),
        }
        state["max_grad"], state["grad_source"] = self._largest_gradient(chosen["scores"][row])
        return state

    @staticmethod
    def _warning(per_scale: dict, weights: torch.Tensor) -> str | None:
        sums = weights.sum(-1)
        if not torch.isfinite(weights).all():
            return "your weights contain inf/NaN"
        if (sums - 1).abs().max() > 1e-4:
            low, high = float(sums.min()), float(sums.max())
            return f"rows of your weights sum to {low:.3f}..{high:.3f}, not 1"
        ignored = [_label(n) for n, s in per_scale.items() if s["default_like"]]
        if ignored:
            return (
                "your attention_weights ignores `scale`: with "
                f"{', '.join(ignored)} it returns the default 1/√d_k weights"
            )
        wrong = [(n, s["error"]) for n, s in per_scale.items() if s["error"] > WEIGHT_TOLERANCE]
        if wrong:
            name, error = max(wrong, key=lambda item: item[1])
            return (
                f"your weights differ from softmax(q·k × scale) by up to {error:.2g} "
                f"({_label(name)})"
            )
        return None

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

    # ------------------------------------------------------------ drawing

    def draw(self, fig: Figure, state: dict) -> None:
        left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        self._draw_histograms(left, state)
        self._draw_row(right, state)
        if state["warning"]:
            fig.text(
                0.5,
                -0.02,
                f"⚠ {state['warning']}",
                ha="center",
                va="top",
                color="#b00020",
                fontsize=9,
            )

    @staticmethod
    def _draw_histograms(ax, state: dict) -> None:
        bins = np.linspace(-SCORE_LIMIT, SCORE_LIMIT, 49)
        lines = []
        for name, s in state["per_scale"].items():
            scores = s["scores"].flatten().numpy()
            clipped = np.clip(scores, -SCORE_LIMIT, SCORE_LIMIT)
            chosen = name == state["scale_name"]
            ax.hist(
                clipped,
                bins=bins,
                histtype="stepfilled" if chosen else "step",
                alpha=0.35 if chosen else 1.0,
                color=COLOURS[name],
                lw=1.5,
                label=_label(name),
            )
            outside = float((np.abs(scores) > SCORE_LIMIT).mean())
            lines.append(
                f"{_label(name):9s} std {s['score_std']:7.3f}  (theory {s['theory_std']:.3g})"
                + (f", {outside:.0%} beyond ±{SCORE_LIMIT:g}" if outside else "")
            )
        ax.set_xlim(-SCORE_LIMIT, SCORE_LIMIT)
        ax.set_yscale("log")
        ax.set_ylim(0.8, N_QUERIES * N_KEYS * 2)
        ax.set_xlabel("score q·k × scale (edge bins hold everything beyond)")
        ax.set_title(f"scores at d_k = {state['d_k']}, three scales, one axis", fontsize=9)
        ax.legend(loc="upper right", fontsize=7)
        ax.text(
            0.02,
            0.97,
            "\n".join(lines),
            transform=ax.transAxes,
            va="top",
            ha="left",
            fontsize=6.5,
            family="monospace",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )

    @staticmethod
    def _draw_row(ax, state: dict) -> None:
        row = torch.nan_to_num(state["row"], nan=0.0).numpy()
        ax.bar(range(N_KEYS), row, color=COLOURS[state["scale_name"]])
        ax.axhline(1 / N_KEYS, ls="--", c="grey", lw=1, label="uniform 1/T")
        ax.set_ylim(0, 1.05)
        ax.set_xticks(range(0, N_KEYS, 3))
        ax.set_xlabel("key")
        ax.set_title(
            f"your weights, query {state['row_index']}, {_label(state['scale_name'])}",
            fontsize=9,
        )
        ax.legend(loc="upper right", fontsize=7)
        entropies = ", ".join(
            f"{_label(n)} {s['mean_entropy']:.2f}" for n, s in state["per_scale"].items()
        )
        text = (
            f"this row: entropy {state['entropy']:.3f} nats, max weight {state['max_weight']:.3f}\n"
            f"largest softmax gradient |∂pᵢ/∂zⱼ| {state['max_grad']:.3g}\n"
            f"mean entropy: {entropies}\n(uniform: log 16 = {state['max_entropy']:.2f})"
        )
        ax.text(
            0.02,
            0.97,
            text,
            transform=ax.transAxes,
            va="top",
            ha="left",
            fontsize=6.5,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )

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
