"""Lesson 05's explorer: the learner's position encodings, four views.

It runs the learner's own `sinusoidal_table`, `rope_cos_sin`, `rotate_pairs`, `alibi_slopes` and
`alibi_bias`:

* *table*: the sinusoidal heatmap (position x dimension), the chosen position's row marked;
* *pair*: one dimension pair of a fixed query rotated by the learner's RoPE at every position
  up to the chosen one, with its angle and norm (a rotation keeps the norm);
* *score*: `<R_m q, R_n k>` against the distance `n - m` (key position minus query position,
  the lesson's convention) for fixed random `q`, `k`, with the query at two absolute offsets (0
  and the chosen one): RoPE makes the two curves coincide;
* *alibi*: the learner's bias for the chosen number of heads, one row per head, one query
  looking back over 64 keys.

Only the ALiBi view compares with a rule (the paper's slopes, Press et al. 2022, and
-slope * distance); the other readouts state properties measured on the learner's own output
(largest norm change, largest difference between the two offsets, a pair that leaves its
circle, tables that ignore `theta` or the layout, angles that drift at large positions) and
name the likely cause.
"""

from __future__ import annotations

import html

import ipywidgets as W
import torch
from matplotlib.figure import Figure

from course.widgets.base import (
    CONTROL_STYLE,
    BadResult,
    Explorer,
    checked_tensor,
    choice_slider,
    int_slider,
)

D_MODEL, N_POSITIONS, HEAD_DIM, MAX_DISTANCE, ALIBI_KEYS = 64, 128, 64, 256, 64
SHIFT = 1000  # the least shift at which the tables are compared with those near 0
GAP_OK = 1e-8  # float64 scores at the two offsets agree to this when RoPE is relative
VIEWS = ("table", "pair", "score", "alibi")


def _tensor(value, what: str, shape: tuple | None = None) -> torch.Tensor:
    return checked_tensor(value, what, shape).detach().to(torch.float64)


def _pair(value, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(value, tuple | list) and len(value) == 2):
        raise BadResult(
            f"your {what} returned a {type(value).__name__}; this explorer needs the pair "
            "(cos, sin)"
        )
    return value[0], value[1]


def paper_slopes(n_heads: int) -> list[float]:
    """ALiBi's slopes by the rule of Press et al. (2022), `get_slopes` in their code: the
    geometric sequence of the largest power of two m <= n, then every other slope of 2m."""
    m = 2 ** (n_heads.bit_length() - 1)
    base = [2.0 ** (-8.0 * (h + 1) / m) for h in range(m)]
    extra = [2.0 ** (-8.0 * (h + 1) / (2 * m)) for h in range(0, 2 * m, 2)]
    return base + extra[: n_heads - m]


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

    # Which controls each view reads; the others are disabled while it shows (a control that
    # changes nothing would look broken).
    USES = {
        "table": {"position"},
        "pair": {"position", "pair_index", "theta", "layout"},
        "score": {"position", "theta", "layout"},
        "alibi": {"heads"},
    }

    def update(self) -> None:
        """As the base class, with the controls the current view does not read disabled."""
        used = self.USES.get(self.view.value, set(self.USES["pair"]) | {"heads"})
        for name in ("position", "pair_index", "theta", "layout", "heads"):
            getattr(self, name).disabled = name not in used
        super().update()

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
            "your RoPE at positions 0..position. <i>score</i>: q·k against the distance n − m "
            "(key position − query position), with the query at 0 and at the chosen offset "
            "(RoPE: the curves coincide). <i>alibi</i>: your bias per "
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

    def _tables(self, positions: torch.Tensor, theta: float | None = None):
        """The learner's float64 `(cos, sin)`, each checked to be `(len(positions), HEAD_DIM/2)`."""
        theta = float(self.theta.value) if theta is None else theta
        cos, sin = _pair(
            self.cos_sin_fn(positions, HEAD_DIM, theta, dtype=torch.float64), "rope_cos_sin"
        )
        shape = (len(positions), HEAD_DIM // 2)
        return _tensor(cos, "rope_cos_sin (cos)", shape), _tensor(sin, "rope_cos_sin (sin)", shape)

    def _rotated(self, x: torch.Tensor, positions: torch.Tensor, layout: str | None = None):
        """The learner's RoPE of `x` `(len(positions), HEAD_DIM)` at `positions`."""
        cos, sin = self._tables(positions)
        out = self.rotate_fn(x, cos, sin, layout or self.layout.value)
        return _tensor(out, "rotate_pairs", tuple(x.shape))

    def _suspects(self, positions: torch.Tensor) -> list[str]:
        """Properties of the learner's RoPE at `positions` (some beyond 0) that explain a wrong
        picture: the layout or theta ignored."""
        found = []
        x = self.q.expand(len(positions), HEAD_DIM)
        other = "half" if self.layout.value == "interleaved" else "interleaved"
        if torch.equal(self._rotated(x, positions), self._rotated(x, positions, other)):
            found.append(
                "your rotate_pairs gives the same result for layout='interleaved' and 'half': "
                "the layout argument is ignored"
            )
        theta = float(self.theta.value)
        if all(
            torch.equal(a, b)
            for a, b in zip(
                self._tables(positions), self._tables(positions, theta * 7.0), strict=True
            )
        ):
            found.append(
                "your rope_cos_sin returns the same tables for another theta: theta is ignored"
            )
        return found

    def _pair_dims(self) -> tuple[int, int]:
        i = self.pair_index.value
        return (2 * i, 2 * i + 1) if self.layout.value == "interleaved" else (i, i + HEAD_DIM // 2)

    def _rotating_pair(self) -> dict:
        end = self.position.value
        positions = torch.linspace(0, end, min(end + 1, 200)).round().long().unique()
        x = self.q.expand(len(positions), HEAD_DIM)
        rotated = self._rotated(x, positions)
        a, b = self._pair_dims()
        norm_change = (rotated.norm(dim=-1) - x.norm(dim=-1)).abs().max().item()
        radius = rotated[:, [a, b]].norm(dim=-1)
        return {
            "points": rotated[:, [a, b]],
            "start": x[0, [a, b]],
            "positions": positions,
            "dims": (a, b),
            "norm_change": norm_change,
            "radius_change": (radius - x[0, [a, b]].norm()).abs().max().item(),
            "suspects": self._suspects(torch.tensor([0, 1, 7, 300])),
        }

    def _scores(self) -> dict:
        """q.k against the distance n - m, twice: query at 0 and keys at 0 .. 255 in one call
        (query last), then query at `offset` and keys at offset .. offset + 255 (query first).
        A RoPE that reads only the row index instead of the positions sees other positions in
        the two calls, so its curves part."""
        distance = torch.arange(MAX_DISTANCE)
        offset = self.position.value
        ks = self.k.expand(MAX_DISTANCE, HEAD_DIM)
        first_pos = torch.cat((distance, distance[:1]))
        second_pos = torch.cat((distance[:1], distance)) + offset
        first = self._rotated(torch.cat((ks, self.q[None])), first_pos)
        second = self._rotated(torch.cat((self.q[None], ks)), second_pos)
        curves = [(first[:-1] * first[-1]).sum(-1), (second[1:] * second[0]).sum(-1)]
        state = {
            "distance": distance,
            "curves": curves,
            "offset": offset,
            "gap": (curves[0] - curves[1]).abs().max().item(),
        }
        suspects = self._suspects(torch.tensor([0, 1, 7, 300]))
        if state["gap"] >= GAP_OK:
            suspects = self._score_causes(distance) + suspects
            if not suspects:
                suspects = [
                    "your tables look right, so look at rotate_pairs: does it turn each pair "
                    "(a cos - b sin, a sin + b cos) with the same pairing for every vector?"
                ]
        state["suspects"] = suspects
        return state

    def _score_causes(self, distance: torch.Tensor) -> list[str]:
        """Why the two curves part, from the learner's own tables: positions ignored, or angles
        that drift at large positions (rounded)."""
        shift = max(self.position.value, SHIFT)
        near, far = self._tables(distance), self._tables(distance + shift)
        if all(torch.equal(a, b) for a, b in zip(near, far, strict=True)):
            return [
                f"your rope_cos_sin returns the same tables for positions shifted by {shift}: "
                "it ignores the positions (torch.arange instead?)"
            ]

        def steps(cos, sin):  # cos of the angle turned from one position to the next
            return cos[:-1] * cos[1:] + sin[:-1] * sin[1:]

        drift = (steps(*near) - steps(*far)).abs().max().item()
        if drift > 1e-9:
            return [
                f"your tables do not turn by the same angle per position near {shift} as near 0 "
                f"(the cosine of one step differs by up to {drift:.1e}): the angles lose "
                "precision at large positions. Form them in float64 (positions.to(torch.float64))"
                ", not in bfloat16, float16 or float32, and round only cos and sin"
            ]
        return []

    def _alibi(self) -> dict:
        if self.slopes_fn is None or self.bias_fn is None:
            raise BadResult("pass your alibi_slopes and alibi_bias to see this view")
        n = self.heads.value
        slopes = self.slopes_fn(n)
        _tensor(slopes, "alibi_slopes", (n,))
        query = torch.tensor([ALIBI_KEYS - 1])
        bias = self.bias_fn(slopes, query, torch.arange(ALIBI_KEYS))
        bias = _tensor(bias, "alibi_bias", (n, 1, ALIBI_KEYS))[:, 0]
        slopes = _tensor(slopes, "alibi_slopes")
        distance = (query - torch.arange(ALIBI_KEYS)).abs().double()
        rule = torch.tensor(paper_slopes(n), dtype=torch.float64)
        return {
            "slopes": slopes,
            "bias": bias,
            "slopes_ok": torch.allclose(slopes, rule, rtol=1e-5, atol=1e-7),
            "rule": rule,
            "bias_ok": torch.allclose(bias, -slopes[:, None] * distance, rtol=1e-5, atol=1e-6),
        }

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
        ax.plot(dist, state["curves"][0], lw=2, label="query at position 0")
        ax.plot(
            dist, state["curves"][1], "--", lw=1.2, label=f"query at position {state['offset']}"
        )
        ax.set(
            xlabel="distance n − m (key position − query position)",
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
            mark = "✔" if ok else _bad("a rotation keeps the norm")
            lines = [f"largest change of the query's norm: {state['norm_change']:.1e} {mark}"]
            a, b = state["dims"]
            if state["radius_change"] > 1e-9:
                lines.append(
                    _bad(
                        f"dims ({a}, {b}) leave their circle (radius changes by up to "
                        f"{state['radius_change']:.2g}): your RoPE does not turn them as one pair"
                    )
                )
            lines += [_bad(s) for s in state["suspects"]]
            return "<br>".join(lines)
        if view == "score":
            if state["gap"] < GAP_OK:
                mark = "✔ the score depends on the distance only"
            else:
                mark = _bad("the curves differ: the score depends on the absolute position")
            lines = [f"largest difference between the two offsets: {state['gap']:.1e} {mark}"]
            lines += [_bad(c) for c in state["suspects"]]
            return "<br>".join(lines)
        if view == "alibi":
            slopes = ", ".join(f"{s:.4g}" for s in state["slopes"].tolist())
            lines = [f"your slopes: {html.escape(slopes)}"]
            if state["slopes_ok"]:
                lines.append("✔ the paper's rule (Press et al. 2022)")
            else:
                rule = ", ".join(f"{s:.4g}" for s in state["rule"].tolist())
                lines.append(_bad(f"the paper's rule gives {rule}"))
            if state["bias_ok"]:
                lines.append("✔ bias = −slope · |query − key|")
            else:
                lines.append(_bad("the bias is not −slope · |query − key| for your slopes"))
            return "<br>".join(lines)
        return ""


def positions_explorer(
    table_fn, cos_sin_fn, rotate_fn, slopes_fn=None, bias_fn=None, seed: int = 0
) -> PositionsExplorer:
    """Build the lesson-05 explorer from the learner's position functions."""
    return PositionsExplorer(table_fn, cos_sin_fn, rotate_fn, slopes_fn, bias_fn, seed)


def _bad(text: str) -> str:
    return f"<span style='color:#b00020'>✘ {html.escape(text)}</span>"
