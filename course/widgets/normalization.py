"""Lesson 06's explorer: a toy stack built from the learner's norm and blocks, at any depth.

It runs the learner's own `layer_norm`, `pre_ln_block` and `post_ln_block` (and
`deepnorm_constants` when given) on the lesson's toy stack: block l has two sublayers that are
random linear maps `y -> y A_l^T` and `y -> y B_l^T` with entries N(0, 1/(4 d)) (sigma = 1/2),
and the norms are the learner's LayerNorm without weight or bias. For the chosen depth L and
block kind (pre-LN, post-LN, DeepNorm: post-LN with alpha = (2L)^(1/4) and the weights shrunk by
beta = (8L)^(-1/4), Wang et al. 2022) it shows

* the gradient norm of each block's weights for the loss `mean_t(out_t . r)` (a final
  LayerNorm before the readout in pre-LN), and
* the residual stream's mean square `||x_l||^2 / d` after each block, with the pre-LN law
  `1 + l/2` drawn for comparison.

The readout states what the lesson derives, measured on the learner's functions: the fitted
slope of the pre-LN stream (law 1/2), and the ratio of the last layer's gradient norms post-LN
/ pre-LN (law sqrt((1 + L/2) / 1.25)). It names the likely cause when a pre-LN stream does not
grow (the residual added to the normalised x) or a post-LN one does (no norm after the add).
"""

from __future__ import annotations

import html
import math

import ipywidgets as W
import torch
from matplotlib.figure import Figure

from course.widgets.base import CONTROL_STYLE, BadResult, Explorer, int_slider
from course.widgets.base import checked_tensor as _checked

D_MODEL, N_TOKENS, SIGMA = 64, 64, 0.5
KINDS = ("pre-LN", "post-LN", "DeepNorm")


class NormalizationExplorer(Explorer):
    """Per-layer gradient norms and the residual stream of a toy stack, pre / post / DeepNorm."""

    figsize = (9.0, 3.2)

    def __init__(self, norm_fn, pre_block_fn, post_block_fn, constants_fn=None, seed: int = 0):
        self.norm_fn, self.pre_block_fn, self.post_block_fn = norm_fn, pre_block_fn, post_block_fn
        self.constants_fn = constants_fn
        self.seed = seed
        # (kind, depth) -> (stream, grads): the readout compares kinds, and the learner's
        # functions do not change while the widget lives (rerunning the cell builds a new one).
        self._runs: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
        super().__init__()

    def controls(self):
        self.depth = int_slider("depth L", 12, 2, 48)
        self.kind = W.ToggleButtons(
            options=list(KINDS), value="pre-LN", description="blocks", style=CONTROL_STYLE
        )
        help_text = W.HTML(
            "<small>A stack of L toy blocks (random linear sublayers, width 64) built from "
            "<b>your</b> layer_norm and blocks. Left: the gradient norm reaching each block's "
            "weights. Right: the residual stream's mean square after each block, with the "
            "pre-LN law 1 + l/2.</small>"
        )
        return [self.depth, self.kind, help_text]

    # ---------------------------------------------------------------- compute

    def _inputs(self, n_layers: int):
        g = torch.Generator().manual_seed(self.seed)
        x = torch.randn(N_TOKENS, D_MODEL, generator=g, dtype=torch.float64)
        r = torch.randn(D_MODEL, generator=g, dtype=torch.float64)
        scale = SIGMA / math.sqrt(D_MODEL)
        weights = torch.randn(n_layers, 2, D_MODEL, D_MODEL, generator=g, dtype=torch.float64)
        return x, weights * scale, r

    def _constants(self, n_layers: int) -> tuple[float, float]:
        if self.constants_fn is None:
            return (2 * n_layers) ** 0.25, (8 * n_layers) ** -0.25
        pair = self.constants_fn(n_layers)
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise BadResult("your deepnorm_constants must return the pair (alpha, beta)")
        return float(pair[0]), float(pair[1])

    def _norm(self, h: torch.Tensor) -> torch.Tensor:
        return _checked(self.norm_fn(h), "layer_norm", tuple(h.shape))

    def _run(self, kind: str, n_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(stream mean squares (L + 1,), gradient norms (L,)) of the learner's stack."""
        key = (kind, n_layers)
        if key not in self._runs:
            # Tensors this small run several times faster on one thread (no synchronisation
            # between threads, which a busy machine makes expensive).
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                self._runs[key] = self._measure(kind, n_layers)
            finally:
                torch.set_num_threads(threads)
        return self._runs[key]

    def _measure(self, kind: str, n_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, weights, r = self._inputs(n_layers)
        alpha = 1.0
        if kind == "DeepNorm":
            alpha, beta = self._constants(n_layers)
            weights = weights * beta
        # One leaf per block: indexing one big leaf makes each backward step stack-sized.
        leaves = [w.clone().requires_grad_(True) for w in weights]
        stream, h = [x.pow(2).mean()], x
        for A, B in leaves:

            def attn(y, A=A):
                return y @ A.T

            def ffn(y, B=B):
                return y @ B.T

            if kind == "pre-LN":
                h = self.pre_block_fn(h, attn, ffn, self._norm, self._norm)
                what = "pre_ln_block"
            else:
                h = self.post_block_fn(h, attn, ffn, self._norm, self._norm, alpha)
                what = "post_ln_block"
            h = _checked(h, what, (N_TOKENS, D_MODEL))
            stream.append(h.detach().pow(2).mean())
        out = self._norm(h) if kind == "pre-LN" else h
        if not out.requires_grad:
            raise BadResult("no gradient reaches the weights: compute with torch operations")
        grads = torch.autograd.grad((out @ r).mean(), leaves)
        return torch.stack(stream), torch.stack([g.norm() for g in grads]).detach()

    def compute(self) -> dict:
        n_layers, kind = self.depth.value, self.kind.value
        stream, grads = self._run(kind, n_layers)
        pre_stream, pre_grads = self._run("pre-LN", n_layers)
        post_grads = self._run("post-LN", n_layers)[1]
        layers = torch.arange(n_layers + 1, dtype=torch.float64)
        slope = (((pre_stream - pre_stream[0]) * layers).sum() / (layers**2).sum()).item()
        state = {
            "kind": kind,
            "n_layers": n_layers,
            "stream": stream,
            "grads": grads,
            "pre_slope": slope,
            "ratio": (post_grads[-1] / pre_grads[-1]).item(),
            "law_ratio": math.sqrt((1 + n_layers / 2) / (1 + SIGMA**2)),
            "spread": (grads.max() / grads.min()).item(),
        }
        if kind == "DeepNorm":
            state["constants"] = self._constants(n_layers)
        return state

    # ---------------------------------------------------------------- draw

    def draw(self, fig: Figure, state: dict) -> None:
        left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        n = state["n_layers"]
        left.plot(range(n), state["grads"], "o-", ms=3)
        left.set(
            xlabel="layer l",
            ylabel="||grad of block l||",
            title=f"{state['kind']}: gradient per layer",
            ylim=(0, None),
        )
        layers = torch.arange(n + 1)
        right.plot(layers, state["stream"], "o-", ms=3, label=state["kind"])
        right.plot(layers, 1 + layers / 2, "k--", lw=1, label="1 + l/2 (pre-LN law)")
        right.set(xlabel="layer l", ylabel="E||x_l||² / d", title="the residual stream")
        right.legend(fontsize=8)
        fig.tight_layout()

    def readout_html(self, state: dict) -> str:
        lines = []
        slope = state["pre_slope"]
        mark = "✔" if abs(slope - 0.5) < 0.15 else _bad("the law says 0.5")
        lines.append(f"pre-LN stream: fitted slope of E||x_l||²/d against l = {slope:.3f} {mark}")
        if slope < 0.2:
            lines.append(
                _bad(
                    "your pre-LN stream hardly grows: is the sublayer added to the normalised x "
                    "(h = norm1(x); x = h + attn(h)) instead of to x itself?"
                )
            )
        lines.append(
            f"last layer's gradient, post-LN / pre-LN: {state['ratio']:.2f} (law "
            f"√((1 + L/2)/1.25) = {state['law_ratio']:.2f}; one draw, so expect scatter)"
        )
        if state["kind"] != "pre-LN":
            last = state["stream"][-1].item()
            if abs(last - 1) > 0.2:
                lines.append(
                    _bad(
                        f"your post-LN stream ends at mean square {last:.2f}, not about 1: is "
                        "each sum normalised after the add?"
                    )
                )
        if state["kind"] == "DeepNorm":
            alpha, beta = state["constants"]
            lines.append(f"DeepNorm with your constants: alpha = {alpha:.3f}, beta = {beta:.3f}")
        lines.append(f"largest / smallest gradient across layers: {state['spread']:.2f}")
        return "<br>".join(lines)


def normalization_explorer(
    norm_fn, pre_block_fn, post_block_fn, constants_fn=None, seed: int = 0
) -> NormalizationExplorer:
    """Build the lesson-06 explorer from the learner's norm, blocks and DeepNorm constants."""
    return NormalizationExplorer(norm_fn, pre_block_fn, post_block_fn, constants_fn, seed)


def _bad(text: str) -> str:
    return f"<span style='color:#b00020'>✘ {html.escape(text)}</span>"
