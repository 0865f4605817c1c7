"""Lesson 04's explorer and tools: per-head attention maps of the learner's own layer, and a
tracer of the learner's split/merge (shape, strides, contiguity, view or copy at every step).

The attention maps come from a hand-built example (no checkpoint needed): 6 tokens whose
features are their one-hot positions, 4 query heads of width 8, each with its own query
pattern (previous token, itself, the first token, uniform), keys and values that are the
one-hot positions again, and W_o the identity. The layer's output for query t in head h's
block of features is then that head's attention row itself, and feature 6 of the block, a tag
carried by the values, says which key/value head the layer made query head h read.

`perturbation_report` is the structural check of a split: perturb one token and name every
(head, row) that moved although it belongs to another token; then perturb one feature of that
token at a time and name any that lands in the wrong head or at the wrong place in its head.
The explorer also compares each head's map with the attention it must produce (naming a mask
that is missing or ignored), and the learner's merge with the heads side by side.
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
    changes, and moves feature `f` of that token to feature `f % head_dim` of head
    `f // head_dim` (the head's own, consecutive features); else a sentence naming the tokens,
    heads and features the change leaked into (or missed).

    x is `(batch, seq, n_heads * head_dim)` from a fixed seed; the split must return
    `(batch, n_heads, seq, head_dim)`. Raises nothing: a wrong shape is reported as text.
    """
    g = torch.Generator().manual_seed(4)
    x = torch.randn(batch, seq, n_heads * head_dim, generator=g)
    before = split_fn(x, n_heads)
    want = (batch, n_heads, seq, head_dim)
    if tuple(before.shape) != want:
        return f"split returned shape {tuple(before.shape)}, expected {want}"
    problems = _token_problems(split_fn, x, before, n_heads, t) or _feature_problems(
        split_fn, x, before, n_heads, t, head_dim
    )
    if not problems:
        return None
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    why = ""
    if problems[0].startswith("feature"):
        why = ": head h owns the consecutive features h * d_head .. (h + 1) * d_head - 1, in order"
    return "; ".join(problems[:3]) + more + why


def _moved(split_fn, x, before, n_heads: int, t: int, feature: slice | int) -> torch.Tensor:
    """(heads, seq, head_dim) bool: what moved when token t's `feature` of x changed."""
    moved_x = x.clone()
    moved_x[:, t, feature] += 1.0
    after = split_fn(moved_x, n_heads)
    return ((after - before).abs() > 1e-6).any(dim=0)


def _token_problems(split_fn, x, before, n_heads: int, t: int) -> list[str]:
    """Perturb the whole token t: only row t of each head may move, and every head's must."""
    moved = _moved(split_fn, x, before, n_heads, t, slice(None)).any(dim=-1)  # (heads, seq)
    problems = [
        f"token {t}'s change leaked into token {u} in head {h}"
        for h in range(n_heads)
        for u in range(moved.shape[1])
        if u != t and moved[h, u]
    ]
    return problems + [
        f"token {t}'s change did not reach head {h}" for h in range(n_heads) if not moved[h, t]
    ]


def _feature_problems(split_fn, x, before, n_heads: int, t: int, head_dim: int) -> list[str]:
    """Perturb one feature f of token t at a time: it must land in head f // head_dim, at
    feature f % head_dim of row t (a strided or permuted split passes the token test)."""
    problems = []
    for f in range(n_heads * head_dim):
        where = _moved(split_fn, x, before, n_heads, t, f).nonzero().tolist()
        h, j = divmod(f, head_dim)
        if where != [[h, t, j]]:
            got = ", ".join(f"head {a} feature {c}" for a, _, c in where[:2]) or "nowhere"
            problems.append(
                f"feature {f} of token {t} landed in {got}, not in head {h} feature {j}"
            )
    return problems


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


def expected_maps(is_causal: bool) -> torch.Tensor:
    """(heads, T, T): the attention each head of the example must produce, softmax of its
    pattern scaled by 1/sqrt(HEAD_DIM) (q . k is the pattern), under the causal mask if asked."""
    scores = torch.stack([_pattern(h) for h in range(N_HEADS)]) / HEAD_DIM**0.5
    if is_causal:
        future = torch.ones(N_TOKENS, N_TOKENS, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    return torch.softmax(scores, dim=-1)


def map_problems(maps: torch.Tensor, is_causal: bool) -> list[str]:
    """Sentences naming each head whose attention map differs from `expected_maps`."""
    want = expected_maps(is_causal)
    problems = []
    for h in range(N_HEADS):
        bad = ((maps[h] - want[h]).abs() > 1e-3).any(dim=-1).nonzero().flatten().tolist()
        if not bad:
            continue
        t = bad[0]
        if is_causal and bool((maps[h, t, t + 1 :].abs() > 1e-3).any()):
            why = f"query {t} attends to later keys although 'causal' is ticked"
        elif (
            not is_causal
            and maps[h][~torch.ones(N_TOKENS, N_TOKENS, dtype=torch.bool).tril()].abs().max() < 1e-6
        ):
            why = "it stays causal although 'causal' is unticked (is_causal=False)"
        else:
            row = ", ".join(f"{w:.2f}" for w in maps[h, t].tolist())
            good = ", ".join(f"{w:.2f}" for w in want[h, t].tolist())
            why = f"query {t}'s weights are [{row}], expected [{good}] (scale? mask?)"
        problems.append(f"head {h}: {why}")
    return problems


def merge_report(merge_fn, heads: torch.Tensor) -> str | None:
    """None if `merge_fn(heads)` puts each token's heads side by side, head 0 first; else where
    the first wrong feature is and what it holds."""
    want = torch.cat(heads.unbind(dim=1), dim=-1)  # (B, T, H d)
    got = merge_fn(heads)
    if tuple(got.shape) != tuple(want.shape):
        return f"merge returned shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    bad = ((got - want).abs() > 1e-6).nonzero().tolist()
    if not bad:
        return None
    b, t, f = bad[0]
    d = heads.shape[-1]
    return (
        f"{len(bad)} of {want.numel()} features misplaced; token {t}'s feature {f} should hold "
        f"head {f // d}'s feature {f % d} of token {t}: transpose(1, 2) back, then flatten"
    )


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
            "merge_check": _safe_call(merge_report, self.merge_fn, _MERGE_INPUT),
            "perturbation": _safe_call(perturbation_report, self.split_fn),
            "map_problems": map_problems(maps, self.causal.value),
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
        if state["map_problems"]:
            problems = html.escape("; ".join(state["map_problems"]))
            parts.append(f"<p><b style='color:#b00020'>attention maps: {problems}</b></p>")
        else:
            parts.append("<p>every head's map is softmax(q k / sqrt(d_head)) with the mask ✔</p>")
        for title, rows in (
            ("split_heads(x (2, 3, 8), 2)", state["split"]),
            ("merge_heads(out (2, 2, 3, 4))", state["merge"]),
        ):
            parts.append(f"<p style='margin:6px 0 2px 0'><b>{html.escape(title)}</b></p>{rows}")
        merged = state["merge_check"] or "the heads side by side, head 0 first ✔"
        parts.append(f"<p>your merge: {html.escape(merged)}</p>")
        verdict = state["perturbation"] or (
            "only token 2's rows move, in every head, each feature in its own head ✔"
        )
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


_MERGE_INPUT = torch.arange(2 * 3 * 4 * 2, dtype=torch.float32).reshape(2, 3, 4, 2)


def _safe_call(report, fn, *args) -> str | None:
    """`report(fn, *args)`, with the learner's errors as text instead of a traceback."""
    if fn is None:
        return "not given"
    try:
        return report(fn, *args)
    except NotImplementedError:
        return "not written yet"
    except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything
        return f"raised {type(exc).__name__}: {exc}"


def heads_explorer(attention_fn, split_fn=None, merge_fn=None) -> HeadsExplorer:
    """Build the lesson-04 explorer from the learner's layer, split_heads and merge_heads."""
    return HeadsExplorer(attention_fn, split_fn, merge_fn)
