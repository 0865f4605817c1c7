"""Lesson 04's explorer and tools: per-head attention maps of the learner's own layer, and a
tracer of the learner's split/merge (shape, strides, contiguity, view or copy at every step).

The attention maps come from a hand-built example (no checkpoint needed): 6 tokens whose
features are their one-hot positions, 4 query heads of width 8, each with its own query
pattern (previous token, itself, the first token, uniform), keys and values that are the
one-hot positions again, and W_o the identity. The layer's output for query t in head h's
block of features is then that head's attention row itself, and feature 6 of the block, a tag
carried by the values, says which key/value head the layer made query head h read.

`perturbation_report` is the structural check of a split: perturb one token and name every
(head, row) that moved although it belongs to another token.
"""

from __future__ import annotations

import html

import ipywidgets as W
import torch
from matplotlib.figure import Figure
from torch.overrides import TorchFunctionMode

from course.widgets.base import CONTROL_STYLE, Explorer

N_TOKENS, N_HEADS, HEAD_DIM = 6, 4, 8
D_MODEL = N_HEADS * HEAD_DIM
TAG = N_TOKENS  # feature of x that is always 1; the values copy it, times (kv head + 1)
PATTERNS = ("previous token", "itself", "first token", "uniform")
STRENGTH = 14.0
KV_CHOICES = {"MHA: 4 kv heads": 4, "GQA: 2 kv heads": 2, "MQA: 1 kv head": 1}


# ---------------------------------------------------------------- the perturbation test


def perturbation_report(
    split_fn, n_heads: int = 2, t: int = 2, batch: int = 2, seq: int = 5, head_dim: int = 3
) -> str | None:
    """None if `split_fn(x, n_heads)` moves only row `t` of every head when token `t` of `x`
    changes; else a sentence naming the tokens and heads the change leaked into (or missed).

    x is `(batch, seq, n_heads * head_dim)` from a fixed seed; the split must return
    `(batch, n_heads, seq, head_dim)`. Raises nothing: a wrong shape is reported as text.
    """
    g = torch.Generator().manual_seed(4)
    x = torch.randn(batch, seq, n_heads * head_dim, generator=g)
    moved_x = x.clone()
    moved_x[:, t, :] += 1.0
    before, after = split_fn(x, n_heads), split_fn(moved_x, n_heads)
    want = (batch, n_heads, seq, head_dim)
    if tuple(after.shape) != want:
        return f"split returned shape {tuple(after.shape)}, expected {want}"
    moved = ((after - before).abs() > 1e-6).any(dim=-1).any(dim=0)  # (heads, seq)
    problems = [
        f"token {t}'s change leaked into token {u} in head {h}"
        for h in range(n_heads)
        for u in range(seq)
        if u != t and moved[h, u]
    ]
    problems += [
        f"token {t}'s change did not reach head {h}" for h in range(n_heads) if not moved[h, t]
    ]
    if not problems:
        return None
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


# ---------------------------------------------------------------- the tracer


class _Recorder(TorchFunctionMode):
    """Records every torch function that returns a tensor: name, shape, strides, contiguity,
    and whether the result shares memory with the tensor it was called on (a view)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", str(func))
        if isinstance(out, torch.Tensor) and not name.startswith("__"):
            source = next((a for a in args if isinstance(a, torch.Tensor)), None)
            shares = source is not None and _storage(out) == _storage(source)
            self.rows.append(
                {
                    "op": name,
                    "shape": tuple(out.shape),
                    "strides": tuple(out.stride()),
                    "contiguous": out.is_contiguous(),
                    "memory": "view" if shares else "new memory (copy)",
                }
            )
        return out


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def trace_rows(fn, *args) -> list[dict]:
    """Call `fn(*args)` and return one row per tensor operation it performed, the input first."""
    first = next(a for a in args if isinstance(a, torch.Tensor))
    rows = [
        {
            "op": "input",
            "shape": tuple(first.shape),
            "strides": tuple(first.stride()),
            "contiguous": first.is_contiguous(),
            "memory": "",
        }
    ]
    recorder = _Recorder()
    with recorder:
        fn(*args)
    return rows + recorder.rows


def trace_ops(fn, *args) -> None:
    """Print the trace of `fn(*args)`: every operation with shape, strides, contiguity, view/copy.

    An operation that raises is reported as the last line (e.g. a `view` that the strides do
    not allow) instead of a traceback.
    """
    try:
        rows = trace_rows(fn, *args)
        error = None
    except NotImplementedError:
        print("not written yet (raises NotImplementedError)")
        return
    except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything
        rows, error = [], f"{type(exc).__name__}: {exc}"
    for row in rows:
        print(
            f"{row['op']:>14}  shape {str(row['shape']):16} strides {str(row['strides']):18} "
            f"contiguous {str(row['contiguous']):5}  {row['memory']}"
        )
    if error:
        print(f"{'raised':>14}  {error}")


# ---------------------------------------------------------------- the example


def example_inputs(n_kv_heads: int) -> tuple[torch.Tensor, ...]:
    """x (1, 6, 32) and W_q, W_k, W_v, W_o of the hand-built example (see the module doc)."""
    x = torch.zeros(1, N_TOKENS, D_MODEL)
    x[0, torch.arange(N_TOKENS), torch.arange(N_TOKENS)] = 1.0
    x[0, :, TAG] = 1.0
    W_q = torch.zeros(N_HEADS * HEAD_DIM, D_MODEL)
    for h in range(N_HEADS):
        pattern = _pattern(h)
        # q_t[j] = pattern[t, j], so that q_t . k_s = pattern[t, s] with k_s the one-hot of s
        W_q[h * HEAD_DIM : h * HEAD_DIM + N_TOKENS, :N_TOKENS] = pattern.T
    W_k = torch.zeros(n_kv_heads * HEAD_DIM, D_MODEL)
    W_v = torch.zeros(n_kv_heads * HEAD_DIM, D_MODEL)
    for g in range(n_kv_heads):
        rows = slice(g * HEAD_DIM, g * HEAD_DIM + N_TOKENS)
        W_k[rows, :N_TOKENS] = torch.eye(N_TOKENS)
        W_v[rows, :N_TOKENS] = torch.eye(N_TOKENS)
        W_v[g * HEAD_DIM + TAG, TAG] = g + 1.0
    return x, W_q, W_k, W_v, torch.eye(D_MODEL)


def _pattern(h: int) -> torch.Tensor:
    """(T, T) query-key scores (before the 1/sqrt(8) scale) of head h."""
    t = torch.arange(N_TOKENS)
    scores = torch.zeros(N_TOKENS, N_TOKENS)
    if h == 0:
        scores[t[1:], t[1:] - 1] = STRENGTH
    elif h == 1:
        scores[t, t] = STRENGTH
    elif h == 2:
        scores[:, 0] = STRENGTH
    return scores


def head_maps(attention_fn, n_kv_heads: int, is_causal: bool) -> tuple[torch.Tensor, list[float]]:
    """The learner's layer on the example: (heads, T, T) attention maps and, per query head, the
    kv head it read (the tag, minus one; not an integer if the layer mixed kv heads)."""
    x, W_q, W_k, W_v, W_o = example_inputs(n_kv_heads)
    out = attention_fn(x, W_q, W_k, W_v, W_o, N_HEADS, n_kv_heads, is_causal=is_causal)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, N_TOKENS, D_MODEL):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"multi_head_attention returned {got}, expected (1, 6, 32)")
    blocks = out[0].detach().float().view(N_TOKENS, N_HEADS, HEAD_DIM).transpose(0, 1)
    tags = [float(blocks[h, :, TAG].mean()) - 1 for h in range(N_HEADS)]
    return blocks[:, :, :N_TOKENS], tags


# ---------------------------------------------------------------- the widget


class HeadsExplorer(Explorer):
    """Per-head attention maps of the learner's layer; their split/merge traced."""

    figsize = (11.0, 3.2)

    def __init__(self, attention_fn, split_fn=None, merge_fn=None):
        self.attention_fn, self.split_fn, self.merge_fn = attention_fn, split_fn, merge_fn
        super().__init__()

    def controls(self):
        self.kv = W.Dropdown(
            options=list(KV_CHOICES),
            value="MHA: 4 kv heads",
            description="sharing",
            style=CONTROL_STYLE,
        )
        self.causal = W.Checkbox(value=True, description="causal", style=CONTROL_STYLE)
        return [self.kv, self.causal]

    def compute(self) -> dict:
        n_kv = KV_CHOICES[self.kv.value]
        maps, tags = head_maps(self.attention_fn, n_kv, self.causal.value)
        expected = [h // (N_HEADS // n_kv) for h in range(N_HEADS)]
        return {
            "maps": maps,
            "tags": tags,
            "expected": expected,
            "n_kv": n_kv,
            "split": _safe_trace(self.split_fn, torch.randn(2, 3, 8), 2),
            "merge": _safe_trace(self.merge_fn, torch.randn(2, 2, 3, 4)),
            "perturbation": _safe_perturbation(self.split_fn),
        }

    def draw(self, fig: Figure, state: dict) -> None:
        axes = fig.subplots(1, N_HEADS)
        for h, ax in enumerate(axes):
            ax.imshow(state["maps"][h].numpy(), cmap="Blues", vmin=0, vmax=1)
            read, want = state["tags"][h], state["expected"][h]
            wrong = abs(read - want) > 1e-3
            ax.set_title(
                f"head {h}: {PATTERNS[h]}\nreads kv head {read:.3g}"
                + (f" (not {want})" if wrong else ""),
                fontsize=9,
                color="#b00020" if wrong else "black",
            )
            ax.set_xlabel("key position")
            if h == 0:
                ax.set_ylabel("query position")

    def readout_html(self, state: dict) -> str:
        wrong = [h for h in range(N_HEADS) if abs(state["tags"][h] - state["expected"][h]) > 1e-3]
        if wrong:
            which = "; ".join(
                f"query head {h} reads kv head {state['tags'][h]:.3g} (should read "
                f"{state['expected'][h]})"
                for h in wrong
            )
            mapping = (
                f"<b style='color:#b00020'>{which}</b>: query head h must read kv head "
                "h // (n_heads / n_kv_heads)"
            )
        else:
            mapping = "every query head reads kv head h // (n_heads / n_kv_heads) ✔"
        parts = [f"<p>{mapping}</p>"]
        for title, rows in (
            ("split_heads(x (2, 3, 8), 2)", state["split"]),
            ("merge_heads(out (2, 2, 3, 4))", state["merge"]),
        ):
            parts.append(f"<p style='margin:6px 0 2px 0'><b>{html.escape(title)}</b></p>{rows}")
        verdict = state["perturbation"] or "only token 2's rows move, in every head ✔"
        parts.append(f"<p>perturbation test of your split: {html.escape(verdict)}</p>")
        return "".join(parts)


def _safe_trace(fn, *args) -> str:
    if fn is None:
        return "<i>not given</i>"
    try:
        rows = trace_rows(fn, *args)
    except NotImplementedError:
        return "<i>not written yet</i>"
    except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything
        return (
            f"<pre style='color:#b00020'>{html.escape(type(exc).__name__ + ': ' + str(exc))}</pre>"
        )
    cells = "".join(
        f"<tr><td>{html.escape(r['op'])}</td><td>{r['shape']}</td><td>{r['strides']}</td>"
        f"<td>{r['contiguous']}</td><td>{r['memory']}</td></tr>"
        for r in rows
    )
    head = "<tr><th>op</th><th>shape</th><th>strides</th><th>contiguous</th><th>memory</th></tr>"
    return f"<table style='font-size:12px'>{head}{cells}</table>"


def _safe_perturbation(fn) -> str | None:
    if fn is None:
        return "not given"
    try:
        return perturbation_report(fn)
    except NotImplementedError:
        return "not written yet"
    except Exception as exc:  # noqa: BLE001
        return f"raised {type(exc).__name__}: {exc}"


def heads_explorer(attention_fn, split_fn=None, merge_fn=None) -> HeadsExplorer:
    """Build the lesson-04 explorer from the learner's layer, split_heads and merge_heads."""
    return HeadsExplorer(attention_fn, split_fn, merge_fn)
