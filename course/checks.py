"""The runner behind every visible check in the course.

A check is a list of named cases. Each case calls the learner's function lazily, so one
that raises, returns the wrong type or the wrong shape fails *that case* with a message
instead of a traceback from deep inside a comparison. The first failing case is reported
with its input (abbreviated), what was expected, what came back, and a hint; a check that
passes says so in one line.

It needs nothing but Python, numpy and torch, so it works the same in a notebook, in a
plain script and under `nbgrader autograde` (a failed check raises `CheckFailed`, an
`AssertionError`, which is what nbgrader counts as a failed test cell).

    from course import checks
    checks.run("softmax", [
        checks.close("sums to one", lambda: softmax(x).sum(-1), torch.ones(3)),
        checks.true("no NaN for huge logits", lambda: not softmax(big).isnan().any(),
                    hint="subtract the row max before exponentiating"),
    ])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["CheckFailed", "Case", "close", "equal", "true", "raises", "run", "abbrev"]

_MAX_CHARS = 300


class CheckFailed(AssertionError):
    """A visible check failed; the message says which case, with what input, and why."""

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback: the message already names the case, the
        # input, what was expected and what came back; frames inside `run` add only noise.
        return str(self).split("\n")


class NotWrittenYet(CheckFailed):
    """The exercise still raises NotImplementedError."""


@dataclass
class Case:
    """One named case: `evaluate()` returns None when it passes, else a failure description."""

    name: str
    evaluate: Callable[[], str | None]
    hint: str | None = None
    inputs: Any = None


def abbrev(value: Any, max_chars: int = _MAX_CHARS) -> str:
    """A short, readable description of a tensor, array, number or container."""
    if isinstance(value, torch.Tensor):
        body = _short_repr(value.detach().cpu())
        return f"{body}  ({str(value.dtype).replace('torch.', '')}, shape {tuple(value.shape)})"
    if isinstance(value, np.ndarray):
        return f"{_short_repr(value)}  ({value.dtype}, shape {value.shape})"
    if isinstance(value, tuple | list) and value and len(value) <= 6:
        return "(" + ", ".join(abbrev(v, max_chars // 2) for v in value) + ")"
    text = repr(value)
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def _short_repr(array) -> str:
    with np.printoptions(precision=4, threshold=12, edgeitems=3, linewidth=100):
        text = str(np.asarray(array.float() if isinstance(array, torch.Tensor) else array))
    text = " ".join(text.split())
    return text if len(text) <= _MAX_CHARS else text[: _MAX_CHARS - 3] + "..."


def _as_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray | float | int | np.floating | np.integer):
        return torch.as_tensor(value)
    return None


def _compare_close(
    got: Any, expected: Any, atol: float, rtol: float, check_dtype: bool
) -> str | None:
    want = _as_tensor(expected)
    have = _as_tensor(got)
    if have is None:
        return f"expected a tensor, got a {type(got).__name__}: {abbrev(got)}"
    if have.shape != want.shape:
        return f"wrong shape: expected {tuple(want.shape)}, got {tuple(have.shape)}"
    if check_dtype and isinstance(expected, torch.Tensor) and have.dtype != want.dtype:
        return f"wrong dtype: expected {want.dtype}, got {have.dtype}"
    have64, want64 = have.to(torch.float64), want.to(torch.float64)
    bad_nan = torch.isnan(have64) & ~torch.isnan(want64)
    if bad_nan.any():
        return f"{int(bad_nan.sum())} NaN value(s) where a number was expected"
    if not torch.allclose(have64, want64, atol=atol, rtol=rtol, equal_nan=True):
        diff = (have64 - want64).abs().nan_to_num(nan=math.inf)
        largest = diff.max().item()
        return f"values differ: largest |difference| {largest:.3g} (atol={atol}, rtol={rtol})"
    return None


def _call(thunk: Callable[[], Any]) -> tuple[Any, str | None]:
    try:
        return thunk(), None
    except NotImplementedError:
        raise
    except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything
        return None, f"raised {type(exc).__name__}: {exc}"


def close(
    name: str,
    compute: Callable[[], Any],
    expected: Any,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    check_dtype: bool = True,
    hint: str | None = None,
    inputs: Any = None,
) -> Case:
    """`compute()` must return a tensor equal to `expected` within atol + rtol * |expected|."""

    def evaluate() -> str | None:
        got, error = _call(compute)
        if error:
            return error
        problem = _compare_close(got, expected, atol, rtol, check_dtype)
        if problem:
            return f"{problem}\n  expected: {abbrev(expected)}\n  got:      {abbrev(got)}"
        return None

    return Case(name, evaluate, hint, inputs)


def equal(
    name: str, compute: Callable[[], Any], expected: Any, *, hint: str | None = None, inputs=None
) -> Case:
    """`compute()` must equal `expected` exactly (tensors: same shape, dtype and values)."""

    def evaluate() -> str | None:
        got, error = _call(compute)
        if error:
            return error
        if isinstance(expected, torch.Tensor):
            if not isinstance(got, torch.Tensor):
                return f"expected a tensor, got a {type(got).__name__}: {abbrev(got)}"
            same = (
                got.shape == expected.shape
                and got.dtype == expected.dtype
                and bool(torch.equal(got.detach().cpu(), expected.cpu()))
            )
        else:
            same = bool(got == expected)
        if not same:
            return f"not equal\n  expected: {abbrev(expected)}\n  got:      {abbrev(got)}"
        return None

    return Case(name, evaluate, hint, inputs)


def true(
    name: str,
    predicate: Callable[[], Any],
    *,
    message: str = "the property does not hold",
    hint: str | None = None,
    inputs: Any = None,
) -> Case:
    """`predicate()` must return something truthy; a string return is a failure description."""

    def evaluate() -> str | None:
        got, error = _call(predicate)
        if error:
            return error
        if isinstance(got, str):
            return got or None
        if isinstance(got, torch.Tensor):
            got = bool(got.all())
        return None if got else message

    return Case(name, evaluate, hint, inputs)


def raises(
    name: str,
    compute: Callable[[], Any],
    exception: type[BaseException],
    *,
    hint: str | None = None,
    inputs: Any = None,
) -> Case:
    """`compute()` must raise `exception` (a clear error for bad input is part of the job)."""

    def evaluate() -> str | None:
        try:
            got = compute()
        except NotImplementedError:
            raise
        except exception:
            return None
        except Exception as exc:  # noqa: BLE001
            return f"raised {type(exc).__name__} instead of {exception.__name__}: {exc}"
        return f"expected {exception.__name__}, but it returned {abbrev(got)}"

    return Case(name, evaluate, hint, inputs)


def _failure_message(title: str, case: Case, problem: str, index: int, total: int) -> str:
    lines = [f"✘ {title}: case {index}/{total} '{case.name}' failed"]
    if case.inputs is not None:
        lines.append(f"  input:    {abbrev(case.inputs)}")
    lines.extend("  " + line if i == 0 else line for i, line in enumerate(problem.split("\n")))
    if case.hint:
        lines.append(f"  hint:     {case.hint}")
    return "\n".join(lines)


def run(title: str, cases: Sequence[Case], *, quiet: bool = False) -> None:
    """Run `cases` in order; print one line if all pass, raise `CheckFailed` at the first failure.

    Returns None on purpose: nbgrader reads a number left as a test cell's last value as
    partial credit, and a visible check must never award points.
    """
    for index, case in enumerate(cases, start=1):
        try:
            problem = case.evaluate()
        except NotImplementedError:
            raise NotWrittenYet(
                f"✘ {title}: not written yet. Replace `raise NotImplementedError()` in the "
                "exercise cell above with your code, run that cell, then run this check again."
            ) from None
        if problem:
            raise CheckFailed(_failure_message(title, case, problem, index, len(cases))) from None
    if not quiet:
        print(f"✔ {title}: all {len(cases)} checks passed")
