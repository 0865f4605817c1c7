"""Lesson 06's explorer: a toy stack built from the learner's norm and blocks, at any depth.

It runs the learner's own `layer_norm`, `pre_ln_block` and `post_ln_block` (and
`deepnorm_constants` when given) on the lesson's toy stack: block l has two sublayers that are
random linear maps `y -> y A_l^T` and `y -> y B_l^T` with entries N(0, 1/(4 d)) (sigma = 1/2),
and the norms are the learner's LayerNorm without weight or bias. The input is N_TOKENS tokens
of width D_MODEL (two different sizes, so that a statistic taken over the wrong dimension, or
without keepdim, fails instead of broadcasting silently). For the chosen depth L and block kind
(pre-LN, post-LN, DeepNorm: post-LN with alpha = (2L)^(1/4) and the weights shrunk by
beta = (8L)^(-1/4), Wang et al. 2022) it shows

* the gradient norm of each block's weights for the loss `mean_t(out_t . r)` (a final
  LayerNorm before the readout in pre-LN), and
* the residual stream's mean square `||x_l||^2 / d` after each block, with the pre-LN law
  `1 + l/2` drawn for comparison,

both for one draw of the weights (the "weights seed" control picks which). The readout states
what the lesson derives, measured on the learner's functions and averaged over DRAWS draws
(that seed and the next ones), since one draw scatters widely: the fitted slope of the pre-LN
stream (law 1/2), and the ratio of the last layer's gradient norms post-LN / pre-LN (law
sqrt((1 + L/2) / 1.25)), with the range of the single draws. When a stream does not behave, it
names the cause found by calling the learner's functions on small inputs: a layer_norm that
writes into its input or does not normalise, a pre-LN block that does not carry x forward (or
normalises after the add), a post-LN block that does not normalise the sum. DeepNorm's
constants are the learner's own `deepnorm_constants`, judged by lesson 06's own check
(`06-normalization/deepnorm-constants`, whose hints name the known mistakes, swapped constants
among them); the explorer holds no formula of its own. Without that function, or while it is
not written yet, the DeepNorm choice is left out and a note says why.
"""

from __future__ import annotations

import html
import math
import os
import traceback

import ipywidgets as W
import torch
from matplotlib.figure import Figure

from course import checks
from course.widgets.base import CONTROL_STYLE, BadResult, Explorer, int_slider
from course.widgets.base import checked_tensor as _checked

D_MODEL, N_TOKENS, SIGMA = 64, 32, 0.5
DRAWS = 3  # draws of the weights the readout averages over
KINDS = ("pre-LN", "post-LN", "DeepNorm")
CONSTANTS_CHECK = "06-normalization/deepnorm-constants"


class NormalizationExplorer(Explorer):
    """Per-layer gradient norms and the residual stream of a toy stack, pre / post / DeepNorm."""

    figsize = (9.0, 3.2)

    def __init__(
        self,
        norm_fn,
        pre_block_fn,
        post_block_fn,
        constants_fn=None,
        seed: int = 0,
        depth: int = 12,
    ):
        self.norm_fn, self.pre_block_fn, self.post_block_fn = norm_fn, pre_block_fn, post_block_fn
        self.constants_fn = constants_fn
        # Judged once: the learner's functions do not change while the widget lives.
        self.deepnorm_note, self.constants_problem = _judge_constants(constants_fn)
        self.first_seed, self.first_depth = seed, depth
        # (kind, depth, seed) -> (stream, grads): the readout compares kinds and draws, and the
        # learner's functions do not change while the widget lives (rerunning the cell builds
        # a new one).
        self._runs: dict[tuple[str, int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        super().__init__()

    def controls(self):
        self.depth = int_slider("depth L", self.first_depth, 2, 48)
        kinds = [k for k in KINDS if k != "DeepNorm" or self.deepnorm_note is None]
        self.kind = W.ToggleButtons(
            options=kinds, value="pre-LN", description="blocks", style=CONTROL_STYLE
        )
        self.seed = int_slider("weights seed", self.first_seed, 0, 50)
        help_text = W.HTML(
            f"<small>A stack of L toy blocks (random linear sublayers; {N_TOKENS} tokens of "
            f"width {D_MODEL}) built from <b>your</b> layer_norm and blocks. Left: the gradient "
            "norm reaching each block's weights. Right: the residual stream's mean square after "
            "each block, with the pre-LN law 1 + l/2. Both pictures show one draw of the "
            f"weights (the seed); the numbers below are means over {DRAWS} draws (that seed and "
            f"the next {DRAWS - 1}).</small>"
        )
        controls = [self.depth, self.kind, self.seed, help_text]
        if self.deepnorm_note is not None:
            controls.insert(2, W.HTML(f"<small>{html.escape(self.deepnorm_note)}</small>"))
        return controls

    # ---------------------------------------------------------------- calling the learner

    def _call(self, what: str, fn, *args):
        """`fn(*args)`; anything the learner's function raises becomes a message naming it."""
        try:
            return fn(*args)
        except (NotImplementedError, BadResult):
            raise
        except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything
            raise BadResult(_raised(what, exc)) from None

    def _norm(self, h: torch.Tensor) -> torch.Tensor:
        return _checked(self._call("layer_norm", self.norm_fn, h), "layer_norm", tuple(h.shape))

    # ---------------------------------------------------------------- compute

    def _inputs(self, n_layers: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(N_TOKENS, D_MODEL, generator=g, dtype=torch.float64)
        r = torch.randn(D_MODEL, generator=g, dtype=torch.float64)
        scale = SIGMA / math.sqrt(D_MODEL)
        weights = torch.randn(n_layers, 2, D_MODEL, D_MODEL, generator=g, dtype=torch.float64)
        return x, weights * scale, r

    def _constants(self, n_layers: int) -> tuple[float, float]:
        if self.deepnorm_note is not None:
            raise BadResult(self.deepnorm_note)
        pair = self._call("deepnorm_constants", self.constants_fn, n_layers)
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise BadResult("your deepnorm_constants must return the pair (alpha, beta)")
        try:
            return float(pair[0]), float(pair[1])
        except (TypeError, ValueError):
            raise BadResult(
                "your deepnorm_constants must return two numbers (alpha, beta)"
            ) from None

    def _run(self, kind: str, n_layers: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(stream mean squares (L + 1,), gradient norms (L,)) of the learner's stack."""
        key = (kind, n_layers, seed)
        if key not in self._runs:
            # Tensors this small run several times faster on one thread (no synchronisation
            # between threads, which a busy machine makes expensive).
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                self._runs[key] = self._measure(kind, n_layers, seed)
            finally:
                torch.set_num_threads(threads)
        return self._runs[key]

    def _measure(self, kind: str, n_layers: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, weights, r = self._inputs(n_layers, seed)
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
                what = "pre_ln_block"
                h = self._call(what, self.pre_block_fn, h, attn, ffn, self._norm, self._norm)
            else:
                what = "post_ln_block"
                h = self._call(
                    what, self.post_block_fn, h, attn, ffn, self._norm, self._norm, alpha
                )
            h = _checked(h, what, (N_TOKENS, D_MODEL))
            stream.append(h.detach().pow(2).mean())
        out = self._norm(h) if kind == "pre-LN" else h
        if not out.requires_grad:
            raise BadResult(
                f"no gradient reaches the weights through your {what} and layer_norm: compute "
                "with torch operations (no .numpy(), .item() or .tolist() on the way)"
            )
        grads = torch.autograd.grad((out @ r).mean(), leaves)
        return torch.stack(stream), torch.stack([g.norm() for g in grads]).detach()

    def compute(self) -> dict:
        n_layers, kind, seed = self.depth.value, self.kind.value, self.seed.value
        seeds = range(seed, seed + DRAWS)
        stream, grads = self._run(kind, n_layers, seed)
        pre = [self._run("pre-LN", n_layers, s) for s in seeds]
        post = [self._run("post-LN", n_layers, s) for s in seeds]
        ratios = torch.stack([p[1][-1] / q[1][-1] for p, q in zip(post, pre, strict=True)])
        pre_stream = torch.stack([p[0] for p in pre]).mean(0)
        layers = torch.arange(n_layers + 1, dtype=torch.float64)
        slope = (((pre_stream - pre_stream[0]) * layers).sum() / (layers**2).sum()).item()
        state = {
            "kind": kind,
            "n_layers": n_layers,
            "seed": seed,
            "stream": stream,
            "grads": grads,
            "pre_slope": slope,
            "ratio": ratios.mean().item(),
            "ratios": ratios,
            "law_ratio": math.sqrt((1 + n_layers / 2) / (1 + SIGMA**2)),
            "spread": (grads.max() / grads.min()).item(),
            "post_last": torch.stack([q[0][-1] for q in post]).mean().item(),
        }
        if kind == "DeepNorm":
            state["constants"] = self._constants(n_layers)
            state["deep_last"] = stream[-1].item()
        if abs(slope - 0.5) >= 0.15:
            state["pre_cause"] = self._pre_cause()
        if abs(state["post_last"] - 1) > 0.2 or abs(state.get("deep_last", 1.0) - 1) > 0.2:
            state["post_cause"] = self._post_cause()
        return state

    # ---------------------------------------------------------------- finding the cause

    def _probe_x(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(12345)
        return torch.randn(4, 6, generator=g, dtype=torch.float64) * 3 + 1

    def _norm_cause(self) -> str | None:
        """What is wrong with the learner's layer_norm itself, if anything."""
        x = self._probe_x()
        before = x.clone()
        y = self._norm(x)
        if not torch.equal(x, before):
            return (
                "your layer_norm writes into its input (x -= mean, x /= ...): the stream it is "
                "given becomes its normalised copy. Compute a new tensor, y = (x - mean) / ..."
            )
        y = y.detach()
        if y.mean(-1).abs().max() > 1e-6 or (y.pow(2).mean(-1) - 1).abs().max() > 1e-3:
            return (
                "your layer_norm's rows do not come out with mean 0 and mean square 1 (check "
                "exercise 1)"
            )
        return None

    def _pre_cause(self) -> str:
        found = self._norm_cause()
        if found:
            return found
        x = self._probe_x()
        silent = self._call(
            "pre_ln_block", self.pre_block_fn, x, _silent, _silent, self._norm, self._norm
        )
        if isinstance(silent, torch.Tensor) and not torch.allclose(silent.detach(), x):
            out = self._call(
                "pre_ln_block", self.pre_block_fn, x, _identity, _identity, self._norm, self._norm
            )
            if isinstance(out, torch.Tensor) and _normalised(out.detach()):
                return (
                    "your pre_ln_block normalises after the add, like a post-LN block "
                    "(norm1(x + attn(x))): pre-LN normalises only the sublayer's input, "
                    "x + attn(norm1(x))"
                )
            return (
                "your pre_ln_block does not carry x itself forward: with silent sublayers "
                "(attn = ffn = 0) it should return x unchanged, and it does not. Add each "
                "sublayer to x, x = x + attn(norm1(x)), not to the normalised x"
            )
        return (
            "your pre-LN stream does not grow at the law's rate, although your layer_norm and "
            "pre_ln_block pass the explorer's quick checks: run the exercises' checks"
        )

    def _post_cause(self) -> str:
        found = self._norm_cause()
        if found:
            return found
        x = self._probe_x()
        out = self._call(
            "post_ln_block", self.post_block_fn, x, _silent, _silent, self._norm, self._norm, 1.0
        )
        if isinstance(out, torch.Tensor) and not _normalised(out.detach()):
            return (
                "your post_ln_block does not end with a norm: each sum must be normalised after "
                "the add, x = norm1(alpha * x + attn(x)), then norm2(alpha * x + ffn(x))"
            )
        return (
            "your post-LN stream does not stay at mean square 1, although your layer_norm and "
            "post_ln_block pass the explorer's quick checks: run the exercises' checks"
        )

    # ---------------------------------------------------------------- draw

    def draw(self, fig: Figure, state: dict) -> None:
        left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        n = state["n_layers"]
        left.plot(range(n), state["grads"], "o-", ms=3)
        left.set(
            xlabel="layer l",
            ylabel="||grad of block l||",
            title=f"{state['kind']}: gradient per layer (seed {state['seed']})",
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
        lines.append(
            f"pre-LN stream: fitted slope of E||x_l||²/d against l = {slope:.3f}, mean of "
            f"{DRAWS} draws {mark}"
        )
        if "pre_cause" in state:
            lines.append(_bad(state["pre_cause"]))
        ratios = state["ratios"]
        lines.append(
            f"last layer's gradient, post-LN / pre-LN: {state['ratio']:.2f}, mean of {DRAWS} "
            f"draws (single draws {ratios.min().item():.2f} to {ratios.max().item():.2f}); "
            f"law √((1 + L/2)/1.25) = {state['law_ratio']:.2f}, a law about averages (section 4 "
            "compares it with the means of many draws)"
        )
        if "post_cause" in state:
            lines.append(
                _bad(
                    f"post-LN streams end at mean square {state['post_last']:.2f} (mean of "
                    f"{DRAWS} draws), not about 1: {state['post_cause']}"
                )
            )
        if state["kind"] == "DeepNorm":
            alpha, beta = state["constants"]
            lines.append(f"DeepNorm with your constants: alpha = {alpha:.3f}, beta = {beta:.3f}")
            if self.constants_problem:
                lines.append(_bad(self.constants_problem))
        lines.append(
            f"largest / smallest gradient across layers (this draw): {state['spread']:.2f}"
        )
        return "<br>".join(lines)


def normalization_explorer(
    norm_fn, pre_block_fn, post_block_fn, constants_fn=None, seed: int = 0, depth: int = 12
) -> NormalizationExplorer:
    """Build the lesson-06 explorer from the learner's norm, blocks and DeepNorm constants,
    showing the stack of `depth` blocks drawn with `seed` first (both are controls)."""
    return NormalizationExplorer(norm_fn, pre_block_fn, post_block_fn, constants_fn, seed, depth)


def _judge_constants(constants_fn) -> tuple[str | None, str | None]:
    """(why DeepNorm is left out, or None; what lesson 06's check says is wrong with the
    learner's `deepnorm_constants`, or None), its check run once, quietly."""
    if constants_fn is None:
        return (
            "DeepNorm needs your deepnorm_constants (Exercise 5): pass it as the fourth "
            "argument, normalization_explorer(layer_norm, pre_ln_block, post_ln_block, "
            "deepnorm_constants).",
            None,
        )
    try:
        checks.check(CONSTANTS_CHECK, constants_fn, quiet=True)
    except checks.NotWrittenYet:
        return (
            "DeepNorm needs your deepnorm_constants, which is not written yet (Exercise 5): "
            "write it, then run this cell again.",
            None,
        )
    except checks.CheckFailed as exc:
        return None, _condensed(str(exc))
    return None, None


def _condensed(failure: str) -> str:
    """A check's failure in one line: which case failed, then its hints (or its problem)."""
    lines = [line.strip() for line in failure.splitlines()]
    hints = [line.removeprefix("hint:").strip() for line in lines if line.startswith("hint:")]
    problems = [
        line.removeprefix("problem:").strip() for line in lines if line.startswith("problem:")
    ]
    head = lines[0].removeprefix("✘").strip() if lines else "its check failed"
    detail = "; ".join(hints or problems)
    return (
        f"your deepnorm_constants fails lesson 06's check ({head}){': ' + detail if detail else ''}"
        ". The DeepNorm curves above use your constants (run Exercise 5's check)"
    )


def _silent(h: torch.Tensor) -> torch.Tensor:
    """A sublayer that adds nothing: what a block then returns shows how it uses x."""
    return torch.zeros_like(h)


def _identity(h: torch.Tensor) -> torch.Tensor:
    return h


def _normalised(y: torch.Tensor) -> bool:
    return bool(y.mean(-1).abs().max() < 1e-6 and (y.pow(2).mean(-1) - 1).abs().max() < 1e-3)


def _raised(what: str, exc: Exception) -> str:
    """`what` raised `exc`: the message, a likely cause when there is one, and the line."""
    text = str(exc)
    advice = ""
    if "numpy()" in text:
        advice = (
            " It calls .numpy() on a tensor that requires grad: in a stack whose gradients are "
            "measured, compute with torch operations only (no .numpy(), .tolist() or .item())."
        )
    elif "must match the size" in text:
        advice = (
            f" A mean or variance taken without keepdim=True (or over the wrong dimension) no "
            f"longer lines up with x: here x has {N_TOKENS} tokens of width {D_MODEL}."
        )
    where = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if "course/widgets" not in frame.filename.replace(os.sep, "/"):
            where = f" (at line {frame.lineno}: {frame.line})"
            break
    return f"your {what} raised {type(exc).__name__}: {text.rstrip('.')}{where}.{advice}"


def _bad(text: str) -> str:
    return f"<span style='color:#b00020'>✘ {html.escape(text)}</span>"
