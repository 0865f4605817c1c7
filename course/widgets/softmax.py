"""Lesson 01's explorer: the learner's softmax under temperature, a logit offset and dtypes."""

from __future__ import annotations

import math

import ipywidgets as W
import torch
from matplotlib.figure import Figure

from course.widgets.base import Explorer, call_quietly, slider

DTYPES = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}
BASE_LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0, -3.0], dtype=torch.float64)


def _entropy(p: torch.Tensor) -> float:
    p = p.to(torch.float64)
    return float(-(torch.special.xlogy(p, p)).sum())


def _largest_gradient(fn, z: torch.Tensor) -> tuple[float, str]:
    """max |d p_i / d z_j| of the learner's function, by autograd when it is differentiable."""
    try:
        jac = torch.autograd.functional.jacobian(lambda t: fn(t), z.clone())
        if isinstance(jac, torch.Tensor) and torch.isfinite(jac).all():
            return float(jac.abs().max()), "autograd through your function"
        if isinstance(jac, torch.Tensor):
            return float("nan"), "autograd through your function (not finite)"
    except Exception:  # noqa: BLE001 - e.g. a numpy detour breaks autograd; use the formula
        pass
    p = fn(z).detach().to(torch.float64)
    jac = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    return float(jac.abs().max()), "diag(p) - p pᵀ from your output"


class SoftmaxExplorer(Explorer):
    """Probabilities, entropy and the largest gradient of `softmax_fn(logits / T + offset)`."""

    def __init__(self, softmax_fn, logits: torch.Tensor | None = None):
        self.fn = softmax_fn
        self.base = (BASE_LOGITS if logits is None else logits).to(torch.float64)
        super().__init__()

    def controls(self):
        self.temperature = slider("temperature T", 1.0, -1.5, 1.5, 0.05, log=True)
        self.offset = slider("logit offset", 0.0, 0.0, 1e4, 10.0)
        self.dtype = W.ToggleButtons(
            options=list(DTYPES), value="float32", style={"button_width": "70px"}
        )
        # ipywidgets gives HTML a 28px line height (one control row): too airy for prose.
        help_text = W.HTML(
            "<div style='line-height:1.4;margin-top:4px'><small>Your softmax "
            "sees <code>logits / T + offset</code>. Grey bars: torch.softmax "
            "on the same input.</small></div>"
        )
        return [self.temperature, self.offset, self.dtype, help_text]

    def logits(self) -> torch.Tensor:
        dtype = DTYPES[self.dtype.value]
        return (self.base / self.temperature.value + self.offset.value).to(dtype)

    def compute(self) -> dict:
        z = self.logits()
        p = call_quietly(self.fn, z.clone())
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"softmax returned a {type(p).__name__}, expected a torch.Tensor")
        if p.shape != z.shape:
            raise ValueError(f"softmax returned shape {tuple(p.shape)}, expected {tuple(z.shape)}")
        reference = torch.softmax(z.to(torch.float64), -1)
        bad = ~torch.isfinite(p.detach().to(torch.float64))
        state = {
            "logits": z.detach().to(torch.float64),
            "probs": p.detach().to(torch.float64),
            "reference": reference,
            "entropy": _entropy(p.detach()) if not bad.any() else float("nan"),
            "max_entropy": math.log(z.numel()),
            "warning": None,
        }
        if bad.any() and torch.isfinite(reference).all():
            state["warning"] = (
                f"Your softmax returned {int(bad.sum())} inf/NaN value(s) where "
                "the reference is finite: overflow in exp? Try subtracting the max."
            )
            state["max_grad"], state["grad_source"] = float("nan"), "not finite"
        else:
            state["max_grad"], state["grad_source"] = _largest_gradient(
                self.fn, z.to(torch.float64)
            )
        return state

    def draw(self, fig: Figure, state: dict) -> None:
        ax = fig.add_subplot(1, 1, 1)
        n = len(state["probs"])
        xs = torch.arange(n).numpy()
        ax.bar(
            xs - 0.2, state["reference"].numpy(), width=0.4, color="#bbbbbb", label="torch.softmax"
        )
        probs = torch.nan_to_num(state["probs"], nan=0.0, posinf=1.0, neginf=0.0).numpy()
        ax.bar(xs + 0.2, probs, width=0.4, color="#1f77b4", label="your softmax")
        for i in torch.nonzero(~torch.isfinite(state["probs"])).flatten().tolist():
            ax.text(
                xs[i] + 0.2,
                0.02,
                "NaN" if state["probs"][i].isnan() else "inf",
                color="#b00020",
                ha="center",
                rotation=90,
                fontsize=8,
            )
        ax.set_ylim(0, 1.05)
        ax.set_xticks(xs, [f"z{i}" for i in range(n)])
        ax.set_ylabel("probability")
        ax.set_title(
            f"T = {self.temperature.value:.2f}, offset = {self.offset.value:g}, {self.dtype.value}"
        )
        ax.legend(loc="upper right", fontsize=8)

    def readout_html(self, state: dict) -> str:
        rows = [
            f"entropy: <b>{state['entropy']:.4f}</b> nats (max log n = {state['max_entropy']:.3f})",
            f"largest |∂pᵢ/∂zⱼ|: <b>{state['max_grad']:.4g}</b> ({state['grad_source']})",
        ]
        if state["warning"]:
            rows.append(f"<span style='color:#b00020'>⚠ {state['warning']}</span>")
        return "<div style='line-height:1.6'>" + "<br>".join(rows) + "</div>"


def softmax_explorer(softmax_fn, logits: torch.Tensor | None = None):
    """Build the lesson-01 explorer for the learner's `softmax_fn` and return it for display."""
    return SoftmaxExplorer(softmax_fn, logits)
