"""The runner behind every visible check in the course.

A check is a list of named cases. Each case calls the learner's function lazily, so one
that raises, returns the wrong type or the wrong shape fails *that case* with a message
instead of a traceback from deep inside a comparison. The first failing case is reported
with its input (abbreviated), what was expected, what came back, and a hint; a check that
passes says so in one line.

It needs nothing but Python, numpy and torch, so it works the same in a notebook, in a
plain script and under `nbgrader autograde` (a failed check raises `CheckFailed`, an
`AssertionError`, which is what nbgrader counts as a failed test cell).

Graded exercises are checked with one line, `check("01-softmax/softmax-basic", softmax)`: the
cases, the tolerances and the known mistakes come from the lesson's declaration (baked into
`course/fixtures/<lesson>.json` by `make release`), and a failure names the mistake it looks
like. Comparisons go through `course.compare`, the same comparator the grader uses.

    from course import checks
    checks.run("softmax", [
        checks.close("sums to one", lambda: softmax(x).sum(-1), torch.ones(3)),
        checks.true("no NaN for huge logits", lambda: not softmax(big).isnan().any(),
                    hint="subtract the row max before exponentiating"),
    ])
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from course.calling import Call, FnRef, Watch, call_function
from course.compare import Tolerance, compare, decode, describe, to_plain, tolerance_for
from course.diagnose import diagnose, known_mistake
from course.wire import load_value

__all__ = [
    "CheckFailed",
    "Case",
    "check",
    "close",
    "equal",
    "true",
    "raises",
    "run",
    "abbrev",
]

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
    """A short, readable description of a tensor, array, number or container: at most about
    `max_chars` characters whatever it holds (a tuple of six big tensors included)."""
    if isinstance(value, torch.Tensor):
        body = _short_repr(value.detach().cpu(), max_chars)
        return f"{body}  ({str(value.dtype).replace('torch.', '')}, shape {tuple(value.shape)})"
    if isinstance(value, np.ndarray):
        return f"{_short_repr(value, max_chars)}  ({value.dtype}, shape {value.shape})"
    if isinstance(value, tuple | list) and value:
        share = max(24, max_chars // min(len(value), 8))
        shown = [abbrev(v, share) for v in value[:8]]
        more = [f"... {len(value) - 8} more"] if len(value) > 8 else []
        return _cut("(" + ", ".join(shown + more) + ")", max_chars + 60)
    if isinstance(value, dict) and value:
        # A dict of weights: names with dtype and shape, not every value.
        items = [f"{k!r}: {_brief(v)}" for k, v in list(value.items())[:4]]
        more = f", ... ({len(value)} entries)" if len(value) > 4 else ""
        return _cut("{" + ", ".join(items) + more + "}", max_chars)
    return _cut(" ".join(repr(value).split()), max_chars)


def _brief(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).replace('torch.', '')} {tuple(value.shape)}"
    return abbrev(value, 40)


def _cut(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def _short_repr(array, max_chars: int = _MAX_CHARS) -> str:
    if isinstance(array, torch.Tensor):
        half = array.dtype in (torch.float16, torch.bfloat16)
        array = (array.float() if half else array).numpy()
    with np.printoptions(precision=4, threshold=12, edgeitems=3, linewidth=100):
        text = str(np.asarray(array))
    return _cut(" ".join(text.split()), max_chars)


def _plain(value: Any) -> Any:
    """Plain data for the comparator; numpy arrays and numbers are accepted as expected values."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if isinstance(value, np.floating | np.integer):
        value = value.item()
    return to_plain(value)


def _compare_close(
    got: Any, expected: Any, atol: float, rtol: float, check_dtype: bool
) -> str | None:
    """The shared comparator (`course.compare`) with an explicit tolerance."""
    try:
        have = _plain(got)
    except TypeError:
        return f"expected a tensor, got a {type(got).__name__}: {abbrev(got)}"
    want = _plain(expected)
    if not check_dtype and isinstance(want, dict) and isinstance(have, dict) and "array" in have:
        have = {**have, "dtype": want.get("dtype")}
    mismatch = compare(want, have, Tolerance(atol, rtol))
    return None if mismatch is None else str(mismatch)


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


# ---------------------------------------------------------------- declared exercises


_FIXTURES = Path(__file__).resolve().parent / "fixtures"


@functools.cache
def _fixture(lesson: str) -> dict:
    path = _FIXTURES / f"{lesson}.json"
    if not path.exists():
        raise CheckFailed(f"✘ no checks found for lesson {lesson!r} ({path} is missing)")
    return json.loads(path.read_text())


def _case_call(case: dict) -> Call:
    args = load_value(case["args"])
    return Call(
        case["name"],
        tuple(args),
        load_value(case["kwargs"]),
        case["mode"],
        case["grad_seed"],
        {str(k): int(v) for k, v in case.get("min_calls", {}).items()},
        str(case.get("inspect", "")),
    )


def _watch(spec: dict) -> Watch:
    return Watch(
        forbidden=spec["forbidden"],
        forbidden_hint=spec["forbidden_hint"],
        must_call=tuple(spec["must_call"]),
        must_not_call=tuple(spec.get("must_not_call", ())),
        stand_ins={k: FnRef(v).resolve() for k, v in spec["stand_ins"].items()},
        mutates=tuple(spec["mutates"]),
        time_limit_s=spec["time_limit_s"],
    )


def _tolerance(case: dict) -> Tolerance | None:
    tol = case.get("tolerance")
    return None if tol is None else Tolerance(tol[0], tol[1], tol[2] if len(tol) > 2 else "")


def _passed_case(case: dict, mistake_id: str) -> bool:
    record = case["mistakes"].get(mistake_id, {})
    if "out" not in record:
        return False
    return compare(decode(case["expected"]), decode(record["out"]), _tolerance(case)) is None


def _looks_like(spec: dict, case: dict, plain, error: str | None, earlier: list[dict]) -> list[str]:
    """Hints of the known mistakes that behave like the learner: right on every earlier case
    (which the learner passed) and the same outcome on this one."""
    mistakes = {
        mid: decode_outcome(o)
        for mid, o in case["mistakes"].items()
        if all(_passed_case(e, mid) for e in earlier)
    }
    hints = []
    while True:
        found = known_mistake(plain, error, mistakes, _tolerance(case))
        if found is None or len(hints) >= 2:
            return hints
        # Mistakes that behave alike may share a hint (one explanation, several spellings).
        if spec["mistakes"][found] not in hints:
            hints.append(spec["mistakes"][found])
        mistakes.pop(found)


def decode_outcome(record: dict) -> dict:
    return {"out": decode(record["out"])} if "out" in record else {"error": record["error"]}


def _precisions(cases: list[dict]) -> str:
    seen: dict[str, list[Tolerance]] = {}
    for case in cases:
        tol = _tolerance(case)
        dtypes = _dtypes(decode(case["expected"]))
        for dtype in dtypes:
            found = seen.setdefault(dtype, [])
            used = tol or tolerance_for(dtype)
            if all((t.atol, t.rtol) != (used.atol, used.rtol) for t in found):
                found.append(used)
    parts = [
        f"{d} at {t[0]}" if len(t) == 1 else f"{d} at one tolerance per case: {_listed(t)}"
        for d, t in sorted(seen.items())
        if d.startswith(("float", "bfloat"))
    ]
    return f" ({'; '.join(parts)})" if parts else ""


def _listed(tolerances: list[Tolerance]) -> str:
    return "; ".join(map(str, tolerances))


def _dtypes(plain) -> list[str]:
    if isinstance(plain, list):
        return [d for p in plain for d in _dtypes(p)]
    return [plain["dtype"]] if isinstance(plain, dict) and "array" in plain else []


def check(exercise_id: str, fn: Callable, *, quiet: bool = False) -> None:
    """Run the visible cases of a declared exercise on the learner's `fn`.

    Prints one line when every case passes (with the precision each dtype was judged at);
    otherwise raises `CheckFailed` naming the case, its input, what was expected and what came
    back, why they differ, and the known mistake (or structural fact) it looks like.
    """
    lesson, _, short = exercise_id.partition("/")
    spec = _fixture(lesson)["exercises"].get(short)
    if spec is None:
        raise CheckFailed(f"✘ no exercise {exercise_id!r} in this course's checks")
    watch = _watch(spec)
    title = f"{spec['function']} ({spec['title']})"
    cases = spec["cases"]
    for index, case in enumerate(cases, start=1):
        call = _case_call(case)
        outcome = call_function(fn, call, watch)
        problem = _case_problem(spec, case, call, outcome, cases[: index - 1])
        if problem:
            if outcome.error and outcome.error.startswith("not written yet"):
                raise NotWrittenYet(
                    f"✘ {spec['function']}: not written yet. Replace `raise NotImplementedError()` "
                    "in the exercise cell above with your code, run that cell, then run this "
                    "check again."
                )
            lines = [f"✘ {title}: case {index}/{len(cases)} '{case['name']}' failed"]
            lines.append(
                f"  input:    {abbrev(call.args if len(call.args) != 1 else call.args[0])}"
            )
            if call.kwargs:
                lines.append(
                    f"            {', '.join(f'{k}={abbrev(v)}' for k, v in call.kwargs.items())}"
                )
            lines.extend(problem)
            raise CheckFailed("\n".join(lines))
    if not quiet:
        print(f"✔ {spec['function']}: all {len(cases)} checks passed{_precisions(cases)}")


def _case_problem(spec: dict, case: dict, call: Call, outcome, earlier) -> list[str] | None:
    if outcome.error:
        hints = _looks_like(spec, case, None, outcome.error, earlier)
        return [f"  problem:  {outcome.error}"] + [f"  hint:     {h}" for h in hints]
    expected = decode(case["expected"])
    mismatch = compare(expected, outcome.plain, _tolerance(case))
    if mismatch is None:
        return None
    what = "gradient" if case["mode"] == "grad" else "result"
    record = _record(expected, outcome.plain, mismatch, spec.get("signature", ""))
    if record is not None:
        lines = record
    else:
        lines = [
            f"  expected: {describe(expected)}  ({_summary(expected)})",
            f"  got:      {describe(outcome.plain)}  ({_summary(outcome.plain)})",
            f"  problem:  the {what} differs: {mismatch}",
        ]
    hints = _looks_like(spec, case, outcome.plain, None, earlier)
    if not hints:
        found = diagnose(expected, outcome.plain, mismatch, call.args)
        hints = [found] if found else []
    return lines + [f"  hint:     {h}" for h in hints]


def _record(expected, got, mismatch, signature: str) -> list[str] | None:
    """For a list of named records (e.g. (name, shape, mean, std) tuples) whose item i differs:
    the expected and the returned record i alone, labelled with its name, instead of both whole
    lists. The fields are named as the signature's "list of (a, b, ...)" names them."""
    head, _, rest = mismatch.path.partition(",")
    if not (isinstance(expected, list) and isinstance(got, list) and head.startswith("item ")):
        return None
    try:
        i = int(head.removeprefix("item "))
        want = expected[i]
    except (ValueError, IndexError):
        return None
    if not (isinstance(want, list) and want and isinstance(want[0], dict)):
        return None
    if want[0].get("dtype") != "str":
        return None
    have = got[i] if i < len(got) else None
    shown = "nothing" if have is None else describe(have)
    field = rest.strip().replace("item", "field") or "it"
    named = re.search(r"list of \(([^)]*)\)", signature)
    if named and field.startswith("field "):
        names = [n.strip() for n in named.group(1).split(",")]
        j = field.removeprefix("field ").split(",")[0].strip()
        if j.isdigit() and int(j) < len(names):
            field = f"its {names[int(j)]}" + field[len(f"field {j}") :]
    return [
        f"  expected: {describe(want)}  (entry {i})",
        f"  got:      {shown}",
        f"  problem:  entry {i} ({want[0]['text']!r}) differs, {field}: {mismatch.message}",
    ]


def _summary(plain) -> str:
    if isinstance(plain, list):
        return f"a tuple of {len(plain)}"
    if isinstance(plain, dict) and "array" in plain:
        return f"{plain['dtype']}, shape {tuple(plain['array'].shape)}"
    return plain.get("dtype", "?") if isinstance(plain, dict) else "?"
