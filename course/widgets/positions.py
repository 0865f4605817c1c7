"""Lesson 05's explorer: the learner's position encodings, four views.

It runs the learner's own `sinusoidal_table`, `rope_cos_sin`, `rotate_pairs`, `alibi_slopes` and
`alibi_bias`:

* *table*: the sinusoidal heatmap (position x dimension), the chosen position's row marked;
* *pair*: one dimension pair of a fixed query rotated by the learner's RoPE at every position
  up to the chosen one, with its angle and norm (a rotation keeps the norm);
* *score*: `<R_m q, R_n k>` against the distance `m - n` for fixed random `q`, `k`, computed at
  two absolute offsets (0 and the chosen one): RoPE makes the two curves coincide;
* *alibi*: the learner's bias for the chosen number of heads, one row per head, one query
  looking back over 64 keys.

Nothing is compared with a reference; the readout states the properties the picture shows
(largest norm change, largest difference between the two offsets) measured on the learner's
output.
"""

from __future__ import annotations

import html

import ipywidgets as W
import torch
from matplotlib.figure import Figure

from course.widgets.base import CONTROL_STYLE, Explorer, choice_slider, int_slider

D_MODEL, N_POSITIONS, HEAD_DIM, MAX_DISTANCE, ALIBI_KEYS = 64, 128, 64, 256, 64
VIEWS = ("table", "pair", "score", "alibi")


def _tensor(value, what: str, shape: tuple | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} returned a {type(value).__name__}, expected a torch.Tensor")
    if shape is not None and tuple(value.shape) != shape:
        raise ValueError(f"{what} returned shape {tuple(value.shape)}, expected {shape}")
    return value.detach().to(torch.float64)


def _pair(value, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(value, tuple | list) and len(value) == 2):
        raise TypeError(f"{what} must return the pair (cos, sin)")
    return value[0], value[1]


class PositionsExplorer(Explorer):
    """Sinusoidal heatmap, one rotating pair, q.k against distance, ALiBi bias per head."""

    figsize = (9.0, 3.4)

    def __init__(
        self, table_fn, cos_sin_fn, rotate_fn, slopes_fn=None, bias_fn=None, seed: int = 0
    ):
        self.table_fn, self.cos_sin_fn, self.rotate_fn = table_fn, cos_sin_fn, rotate_fn
        self.slopes_fn, self.bias_fn = slopes_fn, bias_fn
        g = torch.Generator().manual_seed(seed)
        self.q, self.k = torch.randn(2, HEAD_DIM, generator=g, dtype=torch.float64)
        super().__init__()

    def controls(self):
        self.view = W.ToggleButtons(
            options=list(VIEWS), value="score", description="view", style=CONTROL_STYLE
        )
        self.position = int_slider("position / offset", 40, 0, 4096)
        self.pair_index = int_slider("pair i", 0, 0, HEAD_DIM // 2 - 1)
        self.theta = choice_slider("theta", [100, 1000, 10000, 500000], 10000)
        self.layout = W.ToggleButtons(
            options=["interleaved", "half"],
            value="interleaved",
            description="layout",
            style=CONTROL_STYLE,
        )
        self.heads = int_slider("ALiBi heads", 12, 1, 32)
        help_text = W.HTML(
            "<small><i>table</i>: your sinusoidal table. <i>pair</i>: pair i of a query turned by "
            "your RoPE at positions 0..position. <i>score</i>: q·k against the distance, at offset "
            "0 and at the chosen offset (RoPE: the curves coincide). <i>alibi</i>: your bias per "
            "head for one query.</small>"
        )
        return [
            self.view,
            self.position,
            self.pair_index,
            self.theta,
            self.layout,
            self.heads,
            help_text,
        ]

    # ---------------------------------------------------------------- compute

    def compute(self) -> dict:
        view = self.view.value
        state: dict = {"view": view}
        if view == "table":
            state.update(self._table())
        elif view == "pair":
            state.update(self._rotating_pair())
        elif view == "score":
            state.update(self._scores())
        else:
            state.update(self._alibi())
        return state

    def _table(self) -> dict:
        table = _tensor(
            self.table_fn(N_POSITIONS, D_MODEL), "sinusoidal_table", (N_POSITIONS, D_MODEL)
        )
        return {"table": table, "row": min(self.position.value, N_POSITIONS - 1)}

    def _rotated(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The learner's RoPE of `x` `(len(positions), HEAD_DIM)` at `positions`."""
        cos, sin = _pair(
            self.cos_sin_fn(positions, HEAD_DIM, float(self.theta.value), dtype=torch.float64),
            "rope_cos_sin",
        )
        out = self.rotate_fn(x, cos, sin, self.layout.value)
        return _tensor(out, "rotate_pairs", tuple(x.shape))

    def _pair_dims(self) -> tuple[int, int]:
        i = self.pair_index.value
        return (2 * i, 2 * i + 1) if self.layout.value == "interleaved" else (i, i + HEAD_DIM // 2)

    def _rotating_pair(self) -> dict:
        end = max(self.position.value, 1)
        positions = torch.linspace(0, end, min(end + 1, 200)).round().long().unique()
        x = self.q.expand(len(positions), HEAD_DIM)
        rotated = self._rotated(x, positions)
        a, b = self._pair_dims()
        norm_change = (rotated.norm(dim=-1) - x.norm(dim=-1)).abs().max().item()
        return {
            "points": rotated[:, [a, b]],
            "start": x[0, [a, b]],
            "positions": positions,
            "dims": (a, b),
            "norm_change": norm_change,
        }

    def _scores(self) -> dict:
        """q.k against the distance, twice: key at 0 and queries at 0 .. 255 in one call (key
        last), then key at `offset` and queries at offset .. offset + 255 (key first). A RoPE
        that reads only the row index instead of the positions sees other positions in the two
        calls, so its curves part."""
        distance = torch.arange(MAX_DISTANCE)
        offset = self.position.value
        qs = self.q.expand(MAX_DISTANCE, HEAD_DIM)
        first = self._rotated(torch.cat((qs, self.k[None])), torch.cat((distance, distance[:1])))
        second = self._rotated(
            torch.cat((self.k[None], qs)), torch.cat((distance[:1], distance)) + offset
        )
        curves = [(first[:-1] * first[-1]).sum(-1), (second[1:] * second[0]).sum(-1)]
        return {
            "distance": distance,
            "curves": curves,
            "offset": offset,
            "gap": (curves[0] - curves[1]).abs().max().item(),
        }

    def _alibi(self) -> dict:
        if self.slopes_fn is None or self.bias_fn is None:
            raise ValueError("pass your alibi_slopes and alibi_bias to see this view")
        n = self.heads.value
        slopes = self.slopes_fn(n)
        _tensor(slopes, "alibi_slopes", (n,))
        query = torch.tensor([ALIBI_KEYS - 1])
        bias = self.bias_fn(slopes, query, torch.arange(ALIBI_KEYS))
        bias = _tensor(bias, "alibi_bias", (n, 1, ALIBI_KEYS))[:, 0]
        return {"slopes": _tensor(slopes, "alibi_slopes"), "bias": bias}

    # ---------------------------------------------------------------- draw

    def draw(self, fig: Figure, state: dict) -> None:
        ax = fig.add_subplot(1, 1, 1)
        getattr(self, f"_draw_{state['view']}")(fig, ax, state)

    @staticmethod
    def _draw_table(fig, ax, state) -> None:
        image = ax.imshow(state["table"].T, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1)
        ax.axvline(state["row"], color="k", lw=1)
        ax.set(xlabel="position p", ylabel="dimension", title="your sinusoidal_table(128, 64)")
        fig.colorbar(image, ax=ax)

    @staticmethod
    def _draw_pair(fig, ax, state) -> None:
        points, (a, b) = state["points"], state["dims"]
        colours = state["positions"].double()
        ax.scatter(points[:, 0], points[:, 1], c=colours, cmap="viridis", s=8)
        ax.plot(*state["start"], "k+", ms=12, label="position 0")
        ax.plot(*points[-1], "ro", ms=6, label=f"position {int(state['positions'][-1])}")
        ax.set_aspect("equal")
        ax.set(xlabel=f"dim {a}", ylabel=f"dim {b}", title=f"pair ({a}, {b}) under your RoPE")
        ax.legend(fontsize=8, loc="upper right")

    @staticmethod
    def _draw_score(fig, ax, state) -> None:
        dist = state["distance"]
        ax.plot(dist, state["curves"][0], lw=2, label="key at position 0")
        ax.plot(dist, state["curves"][1], "--", lw=1.2, label=f"key at position {state['offset']}")
        ax.set(
            xlabel="distance (query position - key position)",
            ylabel="q · k",
            title="your RoPE: the score against the distance",
        )
        ax.legend(fontsize=8)

    @staticmethod
    def _draw_alibi(fig, ax, state) -> None:
        image = ax.imshow(state["bias"], aspect="auto", cmap="magma")
        ax.set(
            xlabel=f"key position (query at {ALIBI_KEYS - 1})",
            ylabel="head",
            title="your ALiBi bias, one row per head",
        )
        fig.colorbar(image, ax=ax)

    def readout_html(self, state: dict) -> str:
        view = state.get("view")
        if view == "pair":
            ok = state["norm_change"] < 1e-9
            mark = "✔" if ok else "<span style='color:#b00020'>✘ a rotation keeps the norm</span>"
            return f"largest change of the query's norm: {state['norm_change']:.1e} {mark}"
        if view == "score":
            ok = state["gap"] < 1e-8
            mark = (
                "✔ the score depends on the distance only"
                if ok
                else "<span style='color:#b00020'>✘ the curves differ: the score depends on the "
                "absolute position (positions ignored? the keys rotated the other way?)</span>"
            )
            return f"largest difference between the two offsets: {state['gap']:.1e} {mark}"
        if view == "alibi":
            slopes = ", ".join(f"{s:.4g}" for s in state["slopes"].tolist())
            return f"your slopes: {html.escape(slopes)}"
        return ""


def positions_explorer(
    table_fn, cos_sin_fn, rotate_fn, slopes_fn=None, bias_fn=None, seed: int = 0
) -> PositionsExplorer:
    """Build the lesson-05 explorer from the learner's position functions."""
    return PositionsExplorer(table_fn, cos_sin_fn, rotate_fn, slopes_fn, bias_fn, seed)
