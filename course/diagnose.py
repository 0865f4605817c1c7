"""Name the mistake a wrong result looks like.

Used by visible checks and by the grader's feedback alike. First the exercise's own table of
known mistakes: a learner whose output equals what a known mistake outputs on the same input is
told that mistake's hint. Then structural facts that hold for any exercise: a dtype not kept, a
transposed or dimension-dropping shape, NaN next to -inf inputs (the -inf trap), overflow, a
result normalised along another axis, transposed, off by a constant factor, right only at the
last position (a mask missing), or right except for some heads (head mapping, split/merge); a
head split whose one perturbed token leaked into other tokens' rows (which token, which head);
key/value heads repeated for the wrong query heads (which query head read which kv head).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from course.compare import Mismatch, Tolerance, compare, tolerance_for

__all__ = ["diagnose", "known_mistake"]


def known_mistake(
    got: Any, error: str | None, mistakes: dict[str, dict], tolerance: Tolerance | None
) -> str | None:
    """The id of the first mistake whose recorded outcome on this input equals the learner's.

    `mistakes`: {id: {"out": plain} or {"error": message}}.
    """
    for mistake_id, outcome in mistakes.items():
        if error is not None:
            if outcome.get("error") and _same_error(error, outcome["error"]):
                return mistake_id
        elif "out" in outcome and compare(outcome["out"], got, tolerance) is None:
            return mistake_id
    return None


def _same_error(a: str, b: str) -> bool:
    """The same kind of error: the text before the first colon ("raised ValueError"), and for a
    KeyError the same missing key too (the key names what was looked up: a weight that a tied
    model does not have and a layer past the last are different mistakes)."""
    kind = a.split(":")[0].strip()
    if kind != b.split(":")[0].strip():
        return False
    if kind == "raised KeyError":
        return a.partition(":")[2].strip() == b.partition(":")[2].strip()
    return True


def diagnose(
    want: Any, got: Any, mismatch: Mismatch, inputs: Any = None, dim: int | None = None
) -> str | None:
    """A structural explanation of `mismatch` between plain `want` and `got`, or None."""
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        for w, g in zip(want, got, strict=True):
            problem = compare(w, g)
            if problem:
                return diagnose(w, g, problem, inputs, dim)
        return None
    if not (
        isinstance(want, dict) and isinstance(got, dict) and "array" in want and "array" in got
    ):
        return None
    for rule in (_dtype, _shape, _nan, _inf, _values):
        found = rule(want, got, mismatch, inputs, dim)
        if found:
            return found
    return None


def _dtype(want, got, mismatch, inputs, dim) -> str | None:
    if mismatch.kind != "dtype":
        return None
    w, g = want["dtype"], got["dtype"]
    if w in ("float16", "bfloat16") and g in ("float32", "float64"):
        return (
            f"returns {g} for a {w} input: compute in float32 if you like, but cast the result "
            "back to the input's dtype (`.to(x.dtype)`)"
        )
    if w == "bool":
        return f"a mask must be boolean (True = may attend), not {g}"
    if w.startswith("float") and g.startswith(("int", "uint", "bool")):
        return f"returns {g}: an integer or boolean tensor where numbers of dtype {w} are expected"
    return f"returns dtype {g}, expected {w}"


def _shape(want, got, mismatch, inputs, dim) -> str | None:
    if mismatch.kind != "shape":
        return None
    ws, gs = tuple(want["array"].shape), tuple(got["array"].shape)
    if len(ws) >= 2 and gs == ws[:-2] + (ws[-1], ws[-2]):
        return "the last two dimensions are swapped: a transpose too many, or one missing"
    if len(gs) == len(ws) - 1:
        return "one dimension is missing: a reduction without keepdim=True, or a squeeze too many?"
    if len(gs) == len(ws) + 1:
        return "one dimension too many: keepdim=True where the result should drop it?"
    if sorted(gs) == sorted(ws):
        return "the right sizes in the wrong order: check each view/transpose/permute"
    return None


def _inputs_have_neg_inf(inputs) -> bool:
    return any(np.isneginf(a).any() for a in _arrays(inputs))


def _arrays(value) -> list[np.ndarray]:
    import torch

    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return [value.detach().float().numpy()]
    if isinstance(value, tuple | list):
        return [a for v in value for a in _arrays(v)]
    return []


def _nan(want, got, mismatch, inputs, dim) -> str | None:
    if mismatch.kind != "nan":
        return None
    if _inputs_have_neg_inf(inputs):
        return (
            "NaN next to -inf inputs: the -inf trap. A row (or block) whose entries are all -inf "
            "has max -inf, and exp(-inf - (-inf)) = exp(nan): guard that case"
        )
    if any(np.abs(a[np.isfinite(a)]).max(initial=0) > 80 for a in _arrays(inputs)):
        return "NaN from inf / inf: exp overflowed on large inputs; subtract the max first"
    return "NaN appears: an inf - inf, 0 * inf or 0 / 0 somewhere in the computation"


def _inf(want, got, mismatch, inputs, dim) -> str | None:
    if mismatch.kind != "inf":
        return None
    g = got["array"].astype(np.float64)
    if np.isinf(g).any() and any(
        np.abs(a[np.isfinite(a)]).max(initial=0) > 10 for a in _arrays(inputs)
    ):
        return "overflow: exp of a large value is inf in this dtype; subtract the max first"
    if np.isneginf(want["array"].astype(np.float64)).any():
        return "-inf expected where it stays -inf (a log of 0 or a masked entry); got a number"
    return None


def _close(a: np.ndarray, b: np.ndarray, tol: Tolerance) -> bool:
    with np.errstate(invalid="ignore"):
        return bool(np.allclose(a, b, atol=tol.atol * 10, rtol=tol.rtol * 10, equal_nan=True))


def _values(want, got, mismatch, inputs, dim) -> str | None:
    if mismatch.kind != "values":
        return None
    w = want["array"].astype(np.float64)
    g = got["array"].astype(np.float64)
    tol = tolerance_for(want["dtype"])
    if w.ndim == 0 or not np.isfinite(w).all() or not np.isfinite(g).all():
        return _scale(w, g, tol)
    rules = (_other_axis, _transposed, _last_only, _heads, _scale)
    found = _kv_mapping(w, g, inputs, tol)
    if found:
        return found
    t = _one_token(w, inputs)
    if t is not None:
        found = _token_leak(g, t)
        if found:
            return found
        rules = (_transposed, _scale, _heads)  # rows of zeros make _last_only meaningless here
    for rule in rules:
        found = rule(w, g, tol)
        if found:
            return found
    return None


def _one_token(w, inputs) -> int | None:
    """t, if the first input is (B, T, D), zero except token t, and the result (B, H, T, d)."""
    arrays = _arrays(inputs)
    if w.ndim != 4 or not arrays or arrays[0].ndim != 3 or arrays[0].shape[1] != w.shape[2]:
        return None
    live = np.flatnonzero(np.abs(arrays[0]).sum(axis=(0, 2)) > 0)
    return int(live[0]) if len(live) == 1 else None


def _token_leak(g, t: int) -> str | None:
    """A head split probed with one non-zero token t (the perturbation test: a split is linear):
    name each (head, row) of the (B, H, T, d) result that moved although it is not row t."""
    moved = np.abs(g).sum(axis=(0, 3)) > 0  # (heads, tokens)
    leaks = [
        f"token {t}'s change leaked into token {u} in head {h}"
        for h in range(moved.shape[0])
        for u in range(moved.shape[1])
        if u != t and moved[h, u]
    ]
    if not leaks:
        return None
    more = f" (and {len(leaks) - 3} more)" if len(leaks) > 3 else ""
    return "; ".join(leaks[:3]) + more + ": check the order of the view and the transpose"


def _kv_mapping(w, g, inputs, tol) -> str | None:
    """Key/value heads repeated for query heads (GQA): the first input is (B, n_kv, T, d) and
    the result (B, n_kv * n_rep, T, d). Name the kv head each query head read, where it is not
    h // n_rep (a head-to-head "holds" is confusing when several query heads share one)."""
    arrays = _arrays(inputs)
    if w.ndim != 4 or not arrays or arrays[0].ndim != 4:
        return None
    x = arrays[0].astype(np.float64)
    n_kv, n = x.shape[1], w.shape[1]
    if n <= n_kv or n % n_kv or x.shape[::2] != w.shape[::2] or x.shape[3] != w.shape[3]:
        return None
    n_rep = n // n_kv
    read = {}
    for h in range(n):
        found = [k for k in range(n_kv) if _close(x[:, k], g[:, h], tol)]
        if not found:
            return None
        read[h] = found[0]
    wrong = [
        f"query head {h} reads kv head {k} (should read {h // n_rep})"
        for h, k in read.items()
        if k != h // n_rep
    ]
    if not wrong:
        return None
    more = f" (and {len(wrong) - 4} more)" if len(wrong) > 4 else ""
    return (
        "; ".join(wrong[:4]) + more + f": with n_rep = {n_rep}, query head h reads kv head "
        "h // n_rep (consecutive query heads share one kv head)"
    )


def _other_axis(w, g, tol) -> str | None:
    if w.ndim < 2 or (w < -tol.atol).any():
        return None
    for axis in range(w.ndim):
        if _close(w.sum(axis=axis), np.ones_like(w.sum(axis=axis)), tol):
            for other in range(g.ndim):
                ones = np.ones_like(g.sum(axis=other))
                if other != axis and _close(g.sum(axis=other), ones, tol):
                    return (
                        f"normalises along dimension {other - g.ndim} instead of "
                        f"{axis - w.ndim}: the reductions (max, sum) must use the `dim` asked for"
                    )
            return None
    return None


def _transposed(w, g, tol) -> str | None:
    if w.ndim >= 2 and w.shape[-1] == w.shape[-2] and _close(np.swapaxes(w, -1, -2), g, tol):
        return "the result is the transpose of the expected one (k.T vs k.transpose(-2, -1)?)"
    return None


def _last_only(w, g, tol) -> str | None:
    if w.ndim < 2 or w.shape[-2] < 3:
        return None
    rows = [_close(w[..., t, :], g[..., t, :], tol) for t in range(w.shape[-2])]
    if rows[-1] and not any(rows[:-1]):
        return (
            "only the last position is right (the last query may see every key anyway): the "
            "mask is missing or not applied"
        )
    wrong = [t for t, ok in enumerate(rows) if not ok]
    if 0 < len(wrong) <= 3 and len(rows) >= 4:
        return f"positions {', '.join(map(str, wrong))} (dimension -2) are wrong, the others right"
    return None


def _heads(w, g, tol) -> str | None:
    if w.ndim != 4 or w.shape[1] < 2:
        return None
    n = w.shape[1]
    wrong = [h for h in range(n) if not _close(w[:, h], g[:, h], tol)]
    if not wrong or len(wrong) == n:
        # Every head wrong is a permutation or nothing head-specific ("the others right" is false).
        return _head_permutation(w, g, tol)
    matches = {h: [k for k in range(n) if _close(w[:, k], g[:, h], tol)] for h in wrong}
    if all(matches[h] for h in wrong):
        pairs = ", ".join(f"head {h} holds head {matches[h][0]}" for h in wrong)
        return f"heads are mixed up ({pairs}): check the head mapping or the split/merge"
    return f"heads {', '.join(map(str, wrong))} are wrong, the others right"


def _head_permutation(w, g, tol) -> str | None:
    n = w.shape[1]
    mapping = {}
    for h in range(n):
        found = [k for k in range(n) if _close(w[:, k], g[:, h], tol)]
        if not found:
            return None
        mapping[h] = found[0]
    moved = [f"head {h} holds head {k}" for h, k in mapping.items() if h != k]
    return f"heads are permuted ({', '.join(moved)}): check the head mapping" if moved else None


def _scale(w, g, tol) -> str | None:
    finite = np.isfinite(w) & np.isfinite(g) & (np.abs(w) > 1e-6)
    if finite.sum() < 2:
        return None
    ratio = g[finite] / w[finite]
    c = float(np.median(ratio))
    if not np.isfinite(c) or abs(c) < 1e-3:
        return None  # a result of (nearly) zeros is not a scale mistake
    if abs(c - 1) > 1e-3 and np.allclose(ratio, c, rtol=1e-3, atol=0):
        if abs(c + 1) < 1e-3:
            return "the sign is flipped"
        return f"off by a constant factor of {c:.4g} everywhere: a scale missing or applied twice?"
    return None
