"""Lesson 01's explorer: the learner's softmax under temperature, a logit offset and dtypes.

The learner's function sees x = z / T + offset, rounded to the chosen dtype. The picture shows
its output next to torch.softmax on the same x (the reference) and the exact softmax of z / T
(no rounding at all), so that the two ways a softmax goes wrong stay apart: a bug in the
function (it differs from the reference), and rounding of the input before any softmax runs
(the reference itself differs from the exact answer: float16's spacing near 1e4 is 8).
"""

from __future__ import annotations

import math

import ipywidgets as W
import numpy as np
import torch
from matplotlib.figure import Figure

from course.compare import tolerance_for
from course.widgets.base import Explorer, call_quietly, slider

DTYPES = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}
_NUMPY = {"float16": np.float16, "float32": np.float32, "float64": np.float64}
BASE_LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0, -3.0], dtype=torch.float64)
OFFSET_RANGE = 1e4
NO_GRADIENT = (
    "no gradient flows through your softmax: NumPy, .item()/.tolist() or a detached input cut "
    "the autograd graph, so a model could not learn through it"
)


def _entropy(p: torch.Tensor) -> float:
    p = p.to(torch.float64)
    return float(-(torch.special.xlogy(p, p)).sum())


def spacing(value: float, dtype: str) -> float:
    """The gap between |value| (rounded to `dtype`) and the next larger number of `dtype`."""
    return float(np.spacing(_NUMPY[dtype](abs(value))))


def _largest_gradient(fn, x: torch.Tensor) -> tuple[float, str]:
    """max |dp_i/dx_j| of the learner's function at x (float64), by autograd; NaN and the reason
    when no gradient flows or it is not finite."""
    leaf = x.detach().clone().requires_grad_(True)
    try:
        out = call_quietly(fn, leaf)
    except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything
        return float("nan"), f"your softmax raised {type(exc).__name__} on a float64 input"
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        return float("nan"), NO_GRADIENT
    try:
        jac = torch.autograd.functional.jacobian(lambda t: fn(t), x.detach().clone())
    except Exception as exc:  # noqa: BLE001
        return float("nan"), f"autograd through your softmax raised {type(exc).__name__}"
    if not torch.isfinite(jac).all():
        return float("nan"), "autograd through your softmax gives inf/NaN"
    return float(jac.abs().max()), "autograd through your softmax, in float64"


class SoftmaxExplorer(Explorer):
    """Probabilities, entropy and the largest gradient of `softmax_fn(logits / T + offset)`."""

    def __init__(self, softmax_fn, logits: torch.Tensor | None = None):
        self.fn = softmax_fn
        self.base = (BASE_LOGITS if logits is None else logits).to(torch.float64)
        super().__init__()

    def controls(self):
        self.temperature = slider("temperature T", 1.0, -1.5, 1.5, 0.05, log=True)
        # Negative offsets show the underflow failure (every exp rounds to 0), positive ones
        # the overflow; in float16 both ends show rounding (spacing 8 near 1e4).
        self.offset = slider("logit offset", 0.0, -OFFSET_RANGE, OFFSET_RANGE, 10.0)
        self.dtype = W.ToggleButtons(
            options=list(DTYPES), value="float32", style={"button_width": "70px"}
        )
        # ipywidgets gives HTML a 28px line height (one control row): too airy for prose.
        help_text = W.HTML(
            "<div style='line-height:1.4;margin-top:4px'><small>Your softmax sees "
            "<code>x = z / T + offset</code> in the chosen dtype. Grey bars: torch.softmax on "
            "the same x; black marks: the exact softmax of z / T, before any rounding."
            "</small></div>"
        )
        return [self.temperature, self.offset, self.dtype, help_text]

    def logits(self) -> torch.Tensor:
        dtype = DTYPES[self.dtype.value]
        return (self.base / self.temperature.value + self.offset.value).to(dtype)

    def compute(self) -> dict:
        x = self.logits()
        p = call_quietly(self.fn, x.clone())
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"softmax returned a {type(p).__name__}, expected a torch.Tensor")
        if p.shape != x.shape:
            raise ValueError(f"softmax returned shape {tuple(p.shape)}, expected {tuple(x.shape)}")
        seen = x.detach().to(torch.float64)
        probs = p.detach().to(torch.float64)
        reference = torch.softmax(seen, -1)
        bad = ~torch.isfinite(probs)
        largest = float(seen.abs().max())
        state = {
            "logits": seen,
            "probs": probs,
            "reference": reference,
            "exact": torch.softmax(self.base / self.temperature.value, -1),
            "dtype": self.dtype.value,
            "returned_dtype": str(p.dtype).removeprefix("torch."),
            "difference": float((probs - reference).abs().max()) if not bad.any() else math.nan,
            "spacing": spacing(largest, self.dtype.value),
            "largest_logit": largest,
            "distinct": int(torch.unique(seen).numel()),
            "entropy": _entropy(probs) if not bad.any() else math.nan,
            "max_entropy": math.log(x.numel()),
        }
        warnings = []
        if p.dtype != x.dtype:
            warnings.append(
                f"Your softmax returned {state['returned_dtype']} for a {state['dtype']} input: "
                "compute in float32 if you like, then cast back with .to(x.dtype)."
            )
        if bad.any() and torch.isfinite(reference).all():
            warnings.append(
                f"Your softmax returned {int(bad.sum())} inf/NaN value(s) where torch.softmax is "
                "finite: exp overflowed (large x) or underflowed to 0/0 (very negative x). "
                "Subtract each row's max before exponentiating."
            )
            state["max_grad"], state["grad_source"] = math.nan, "not computed (inf/NaN output)"
        else:
            state["max_grad"], state["grad_source"] = _largest_gradient(self.fn, seen)
        state["warning"] = " ".join(warnings) or None
        return state

    def draw(self, fig: Figure, state: dict) -> None:
        ax = fig.add_subplot(1, 1, 1)
        n = len(state["probs"])
        xs = np.arange(n)
        ax.bar(
            xs - 0.2, state["reference"].numpy(), width=0.4, color="#bbbbbb", label="torch.softmax"
        )
        probs = torch.nan_to_num(state["probs"], nan=0.0, posinf=1.0, neginf=0.0).numpy()
        ax.bar(xs + 0.2, probs, width=0.4, color="#1f77b4", label="your softmax")
        ax.scatter(
            xs, state["exact"].numpy(), marker="_", s=260, color="black", zorder=3,
            label="exact, no rounding",
        )  # fmt: skip
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
            f"T = {self.temperature.value:.2f}, offset = {self.offset.value:g}, {state['dtype']}: "
            f"spacing {state['spacing']:.3g} near |x| = {state['largest_logit']:.3g}",
            fontsize=10,
        )
        ax.legend(loc="upper right", fontsize=8)

    def readout_html(self, state: dict) -> str:
        tol = tolerance_for(state["dtype"])
        if math.isnan(state["difference"]):
            difference = "not comparable (your softmax returned inf/NaN)"
        else:
            difference = (
                f"<b>{state['difference']:.2g}</b> ({state['dtype']} is judged at atol "
                f"{tol.atol:g}, rtol {tol.rtol:g})"
            )
        collapsed = (
            f"; your {len(state['logits'])} logits hold only <b>{state['distinct']}</b> distinct "
            "value(s): rounding merged the rest before any softmax ran"
            if state["distinct"] < len(state["logits"])
            else ""
        )
        if math.isnan(state["max_grad"]):
            gradient = state["grad_source"]
        else:
            gradient = f"<b>{state['max_grad']:.4g}</b> ({state['grad_source']})"
        rows = [
            f"largest |your p − torch.softmax|: {difference}",
            f"{state['dtype']} spacing near |x| = {state['largest_logit']:.4g}: "
            f"<b>{state['spacing']:.3g}</b>{collapsed}",
            f"entropy: <b>{state['entropy']:.4f}</b> nats (max log n = {state['max_entropy']:.3f})",
            f"largest |∂pᵢ/∂xⱼ| (x = z/T + offset, your softmax's input): {gradient}",
        ]
        if state["warning"]:
            rows.append(f"<span style='color:#b00020'>⚠ {state['warning']}</span>")
        return "<div style='line-height:1.6'>" + "<br>".join(rows) + "</div>"


def softmax_explorer(softmax_fn, logits: torch.Tensor | None = None):
    """Build the lesson-01 explorer for the learner's `softmax_fn` and return it for display."""
    return SoftmaxExplorer(softmax_fn, logits)
