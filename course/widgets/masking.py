"""Lesson 03's explorer: an attention heatmap under mask toggles, and a token-perturbation probe.

It runs the learner's own `causal_mask`, `padding_mask`, `sliding_window_mask`,
`combine_masks`, `masked_attention` and (optionally) `leaks_future`. The heatmap shows the
weights their attention computes: with the identity matrix as values, `attention(q, k, I, mask)`
returns the weights themselves. The probe adds 1 to every feature of one token and marks which
output positions moved; any position *before* that token that moves is a leak. "Scan every
token" perturbs each token in turn (a map of token x output position) and asks the learner's
`leaks_future` for its verdict on the same layer, so that the two can be compared.

The learner's padding mask is checked by a property, not against a reference: for `L` real
tokens it must admit exactly `L` columns (`<=` instead of `<` admits one more).
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

    def __init__(
        self, attention_fn, causal_fn, padding_fn, window_fn, combine_fn, leaks_fn=None, seed=0
    ):
        self.attention_fn, self.causal_fn, self.padding_fn = attention_fn, causal_fn, padding_fn
        self.window_fn, self.combine_fn, self.leaks_fn = window_fn, combine_fn, leaks_fn
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(1, N_TOKENS, WIDTH, generator=g)
        # Fixed projections q, k, v = x W^T, scaled so the weights are neither flat nor one-hot.
        self.w = torch.randn(3, WIDTH, WIDTH, generator=g) / math.sqrt(WIDTH) * 1.5
        super().__init__()

    def controls(self):
        self.causal = W.Checkbox(value=True, description="causal", style=CONTROL_STYLE)
        self.padding = W.Checkbox(value=False, description="padding", style=CONTROL_STYLE)
        self.length = int_slider("real tokens", 7, 0, N_TOKENS)
        self.window = W.Checkbox(value=False, description="sliding window", style=CONTROL_STYLE)
        self.window_size = int_slider("window", 3, 1, N_TOKENS)
        self.token = int_slider("perturb token", 5, 0, N_TOKENS - 1)
        self.scan = W.Checkbox(value=False, description="scan every token", style=CONTROL_STYLE)
        help_text = W.HTML(
            "<small>Grey cells are masked (False). The sliding window is causal "
            "by itself. The probe adds 1 to the chosen token and marks the "
            "outputs that moved: red ones lie <i>before</i> it (a leak). "
            "<i>Scan every token</i> does it for each token in turn and asks "
            "your <code>leaks_future</code> for the verdict.</small>"
        )
        return [
            self.causal,
            self.padding,
            self.length,
            self.window,
            self.window_size,
            self.token,
            self.scan,
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
            padding = _as_mask(self.padding_fn([self.length.value], N_TOKENS), "padding_mask")
            self._check_padding(padding, self.length.value)
            masks.append(padding)
        if self.window.value:
            window = _as_mask(
                self.window_fn(N_TOKENS, self.window_size.value), "sliding_window_mask"
            )
            self._check_window(window, self.window_size.value)
            masks.append(window)
        if not masks:
            return None
        return _as_mask(self.combine_fn(*masks), "combine_masks")

    def _check_padding(self, padding: torch.Tensor, length: int) -> None:
        """Warn when the learner's padding mask admits other than `length` columns."""
        try:
            row = torch.broadcast_to(padding, (1, 1, 1, N_TOKENS))[0, 0, 0]
        except RuntimeError:
            return  # the combined mask's broadcast check reports the shape
        admitted = int(row.sum())
        if admitted == length:
            return
        why = (
            ": one padding column too many (position j is real when j < length, not <=)"
            if admitted == length + 1
            else ""
        )
        self.warnings.append(
            f"your padding_mask([{length}], {N_TOKENS}) admits {admitted} key columns for "
            f"{length} real tokens{why}"
        )

    def _check_window(self, window: torch.Tensor, size: int) -> None:
        """Warn when the learner's window lets the last query see other than `size` keys."""
        try:
            row = torch.broadcast_to(window, (N_TOKENS, N_TOKENS))[-1]
        except RuntimeError:
            return  # the combined mask's broadcast check reports the shape
        admitted, expected = int(row.sum()), min(size, N_TOKENS)
        if admitted == expected:
            return
        why = {
            expected + 1: ": one key too many (distance < window, not <= window)",
            expected - 1: ": one key too few (distance < window, not < window - 1)",
        }.get(admitted, "")
        self.warnings.append(
            f"your sliding_window_mask({N_TOKENS}, {size}) lets the last query see {admitted} "
            f"keys; a window of {size} is {expected}{why}"
        )

    def _layer(self, mask):
        """The learner's attention under `mask` as a sequence layer (batch, seq, d) -> same."""

        def layer(x: torch.Tensor) -> torch.Tensor:
            return self._attend(x, None, mask).squeeze(1)

        return layer

    def _scan(self, mask) -> dict:
        """Perturb every token: which outputs move, and the learner's leaks_future verdict."""
        base = self._attend(self.x, None, mask)
        moved = torch.zeros(N_TOKENS, N_TOKENS, dtype=torch.bool)  # [perturbed token, output]
        for t in range(N_TOKENS):
            perturbed = self.x.clone()
            perturbed[:, t, :] += 1.0
            diff = (self._attend(perturbed, None, mask) - base).abs().to(torch.float64)
            # A NaN output (the NaN trap) is reported as such, not counted as a moved output.
            moved[t] = torch.nan_to_num(diff, nan=0.0).reshape(N_TOKENS, -1).amax(-1) > (
                CHANGED_ATOL
            )
        before = torch.ones(N_TOKENS, N_TOKENS, dtype=torch.bool).tril(-1)  # output p < token t
        scan_leaks = [t for t in range(N_TOKENS) if bool((moved & before)[t].any())]
        verdict = None
        if self.leaks_fn is not None:
            try:
                verdict = call_quietly(self.leaks_fn, self._layer(mask), self.x.clone())
                if isinstance(verdict, torch.Tensor) and verdict.numel() == 1:
                    verdict = bool(verdict)
            except NotImplementedError:
                verdict = "is not written yet"
            except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything
                verdict = f"raised {type(exc).__name__}: {exc}"
        return {"moved": moved, "leaky_tokens": scan_leaks, "verdict": verdict}

    def _attend(self, x: torch.Tensor, v: torch.Tensor | None, mask) -> torch.Tensor:
        q, k, v_x = (x @ self.w[i].T for i in range(3))
        q, k = q.unsqueeze(1), k.unsqueeze(1)  # (batch, heads = 1, T, d)
        out = call_quietly(self.attention_fn, q, k, v_x.unsqueeze(1) if v is None else v, mask)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"masked_attention returned a {type(out).__name__}, expected a tensor")
        return out.detach()

    def compute(self) -> dict:
        self.warnings: list[str] = []
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
        diff = (moved - base).abs().to(torch.float64).reshape(N_TOKENS, -1)
        nan_outputs = torch.isnan(diff).any(-1)
        # NaN outputs are the NaN trap, reported on their own: they did not "move".
        diff = torch.nan_to_num(diff, nan=0.0).amax(-1)
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
            "nan_outputs": nan_outputs.nonzero().flatten().tolist(),
            "empty_rows_zero": bool((weights[empty].nan_to_num(nan=1.0) == 0).all()),
            "description": self.describe_mask(),
            "warnings": list(self.warnings),
            "scan": self._scan(mask) if self.scan.value else None,
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

        if state["scan"] is not None:
            self._draw_scan(right, state["scan"])
            return
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

    def _draw_scan(self, ax, scan: dict) -> None:
        moved = scan["moved"].numpy()
        before = np.tril(np.ones((N_TOKENS, N_TOKENS), dtype=bool), -1)
        picture = np.ones((N_TOKENS, N_TOKENS, 3)) * 0.92
        picture[moved & ~before] = (1.0, 0.5, 0.05)  # allowed: at or after the token
        picture[moved & before] = (0.84, 0.15, 0.16)  # a leak: before the token
        ax.imshow(picture)
        ax.set_xlabel("output position")
        ax.set_ylabel("perturbed token")
        ax.set_xticks(range(N_TOKENS))
        ax.set_yticks(range(N_TOKENS))
        verdict = scan["verdict"]
        said = (
            "your leaks_future: " + ("LEAK" if verdict else "no leak")
            if isinstance(verdict, bool)
            else "scan of every token"
        )
        leak = bool(scan["leaky_tokens"])
        ax.set_title(
            f"{said} (red: an earlier output moved)",
            fontsize=9,
            color="#b00020" if leak else "black",
        )

    def _scan_readout(self, scan: dict) -> list[str]:
        tokens = scan["leaky_tokens"]
        rows = [
            "scan of every token: "
            + (
                f"<span style='color:#b00020'>earlier outputs moved for tokens {tokens}</span>"
                if tokens
                else "no output before a perturbed token moved"
            )
        ]
        verdict = scan["verdict"]
        if verdict is None:
            rows.append("pass your <code>leaks_future</code> to the explorer to see its verdict")
        elif isinstance(verdict, str):
            rows.append(
                f"<span style='color:#b00020'>your leaks_future {html.escape(verdict)}</span>"
            )
        elif not isinstance(verdict, bool):
            rows.append(
                f"<span style='color:#b00020'>your leaks_future returned a "
                f"{html.escape(type(verdict).__name__)}, expected True or False</span>"
            )
        elif verdict == bool(tokens):
            rows.append(f"your leaks_future says <b>{verdict}</b> ✔ (agrees with the scan)")
        else:
            rows.append(
                f"<span style='color:#b00020'>⚠ your leaks_future says {verdict}, but the scan "
                f"{'found' if tokens else 'found no'} leak</span>"
            )
        return rows

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
        if state["nan_outputs"]:
            rows.append(
                f"<span style='color:#b00020'>⚠ the outputs at positions {state['nan_outputs']} "
                "are NaN (the NaN trap, not a leak): queries that may attend to nothing must "
                "output zeros</span>"
            )
        for warning in state["warnings"]:
            rows.append(f"<span style='color:#b00020'>⚠ {html.escape(warning)}</span>")
        if state["scan"] is not None:
            rows.extend(self._scan_readout(state["scan"]))
        return "<br>".join(rows)


def masking_explorer(
    attention_fn, causal_fn, padding_fn, window_fn, combine_fn, leaks_fn=None, seed: int = 0
) -> MaskingExplorer:
    """Build the lesson-03 explorer from the learner's attention, mask and leak-test functions."""
    return MaskingExplorer(
        attention_fn, causal_fn, padding_fn, window_fn, combine_fn, leaks_fn, seed
    )
