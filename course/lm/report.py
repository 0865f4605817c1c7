"""A training run's JSON log and loss-curve figure.

Figures are drawn on a bare `matplotlib.figure.Figure` with the Agg canvas rather than through
pyplot, so saving a PNG from a notebook never switches the notebook's own plotting backend.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def loss_figure(history: list[dict], title: str = "loss"):
    """Train and validation loss against step, as a matplotlib Figure (display it or save it)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), layout="tight")
    ax = fig.add_subplot()
    train = [(h["step"], h["loss"]) for h in history if h.get("loss") is not None]
    val = [(h["step"], h["val_loss"]) for h in history if h.get("val_loss") is not None]
    if train:
        ax.plot(*zip(*train, strict=True), label="train", lw=1)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation", ms=4)
    ax.set(xlabel="step", ylabel="cross-entropy (nats/token)", title=title)
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend()
    return fig


def save_loss_plot(history: list[dict], path: str | os.PathLike, title: str = "loss") -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = loss_figure(history, title)
    FigureCanvasAgg(fig)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def save_json(data: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path
