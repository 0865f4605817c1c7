"""Lesson 08's notebook helpers: the checks of the parts a learner brings from lessons 04-06, and
one clear message (never a traceback) when a demo, the training run or the sampling cell meets
a function of the learner's that is not written yet or does not work.

The lesson assembles a model from many of the learner's functions. A cell that trains or samples
calls all of them, so an error there would surface deep inside the harness (`course.lm`), far
from its cause. Such cells first call `ready(what, namespace, names)`, which runs the checks of
the functions they need, quietly, and stops at the first that fails with a `CheckFailed` naming
the function, its exercise and the check's own hint; the rest of the cell then runs inside
`running(what)`, which turns any remaining exception into one such message too, naming the
learner's function it came from.

The part checks compare with the formulas the lesson's prose states (RoPE's angles
`position * theta^(-2i / head_dim)`, the rotation `(a cos - b sin, a sin + b cos)`, RMSNorm with
eps inside the root) and with PyTorch's built-ins.
"""

from __future__ import annotations

import math
import os
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from course import checks
from course.checks import CheckFailed, NotWrittenYet

__all__ = [
    "check_lesson04_parts",
    "check_lesson05_parts",
    "check_rms_norm",
    "check_count_and_plan",
    "ready",
    "running",
    "trained",
    "WHERE",
]

LESSON = "08-language-model"

# Where each function the lesson uses is written, and which check judges it.
WHERE: dict[str, str] = {
    "split_heads": "section 1, your lesson 04 parts",
    "merge_heads": "section 1, your lesson 04 parts",
    "repeat_kv": "section 1, your lesson 04 parts",
    "rope_cos_sin": "section 1, your lesson 05 parts",
    "rotate_pairs": "section 1, your lesson 05 parts",
    "rms_norm": "section 1, your RMSNorm",
    "lm_parameter_count": "Exercise 1",
    "init_plan": "Exercise 2",
    "lm_loss": "Exercise 3",
    "block_forward": "Exercise 4",
    "lm_forward": "Exercise 5",
    "cached_logits": "Exercise 6",
    "sample_next": "Exercise 7",
}
_EXERCISES = {
    "lm_parameter_count": "parameter-count",
    "init_plan": "init-plan",
    "lm_loss": "lm-loss",
    "block_forward": "block-forward",
    "lm_forward": "lm-forward",
    "cached_logits": "cached-decoding",
    "sample_next": "sampling",
}


# ---------------------------------------------------------------- the parts' checks


def check_lesson04_parts(split_heads, merge_heads, repeat_kv, quiet: bool = False) -> None:
    """Lesson 04's reshapes: heads are contiguous feature blocks, merge undoes split, and query
    head h reads kv head h // n_rep. Raises CheckFailed at the first case that fails."""
    x = torch.arange(24.0).view(1, 2, 12)  # 1 sequence of 2 tokens, 3 heads of width 4
    kv = torch.arange(32.0).view(1, 2, 2, 8)  # 2 kv heads
    checks.run(
        "your lesson 04 parts",
        [
            checks.close(
                "merge_heads(split_heads(x, 3)) == x",
                lambda: merge_heads(split_heads(x, 3)),
                x,
                hint="merge_heads must undo split_heads: transpose back, then reshape",
            ),
            checks.close(
                "head 1 of token 0 holds features 4..7",
                lambda: split_heads(x, 3)[0, 1, 0],
                x[0, 0, 4:8],
                hint="head h holds the contiguous features h*d_head .. (h+1)*d_head - 1: view as "
                "(B, T, n_heads, d_head), then transpose(1, 2)",
            ),
            checks.close(
                "repeat_kv(kv, 2): query heads 0, 1 read kv head 0; 2, 3 read kv head 1",
                lambda: repeat_kv(kv, 2),
                kv[:, [0, 0, 1, 1]],
                hint="query head h reads kv head h // n_rep: repeat_interleave on dim 1, not "
                "repeat (which tiles the kv heads)",
            ),
        ],
        quiet=quiet,
    )


def _rope_formula(positions: torch.Tensor, head_dim: int, dtype=torch.float32):
    i = torch.arange(0, head_dim, 2, dtype=torch.float64)
    angles = positions.to(torch.float64)[..., None] * 10000.0 ** (-i / head_dim)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotated(x: torch.Tensor, cos, sin, layout: str) -> torch.Tensor:
    """The rotation written out pair by pair: (a, b) -> (a cos - b sin, a sin + b cos)."""
    d = x.shape[-1]
    pairs = [(2 * i, 2 * i + 1) for i in range(d // 2)]
    if layout == "half":
        pairs = [(i, i + d // 2) for i in range(d // 2)]
    out = x.clone()
    for i, (j, k) in enumerate(pairs):
        a, b = x[..., j], x[..., k]
        out[..., j] = a * cos[..., i] - b * sin[..., i]
        out[..., k] = a * sin[..., i] + b * cos[..., i]
    return out


def check_lesson05_parts(rope_cos_sin, rotate_pairs, quiet: bool = False) -> None:
    """Lesson 05's RoPE: every pair's angle at every position, in float32 and float64, the
    rotation's direction (sign), the default interleaved layout and the half-split one."""
    positions = torch.arange(3, 7)
    q = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(0))
    cos, sin = _rope_formula(positions, 8)
    quarter = torch.zeros(1, 4), torch.ones(1, 4)  # every pair turned by +90 degrees
    unit = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    checks.run(
        "your lesson 05 parts",
        [
            checks.close(
                "cos and sin of every pair at positions 3..6 (head_dim 8)",
                lambda: torch.stack(rope_cos_sin(positions, 8)),
                torch.stack((cos, sin)),
                hint="pair i turns by position * theta^(-2i/head_dim), i = 0 .. head_dim/2 - 1: "
                "the exponents are torch.arange(0, head_dim, 2) / head_dim",
            ),
            checks.close(
                "the tables in float64 when dtype=torch.float64",
                lambda: torch.stack(rope_cos_sin(positions, 8, dtype=torch.float64)),
                torch.stack(_rope_formula(positions, 8, torch.float64)),
                atol=1e-12,
                rtol=1e-10,
                hint="form the angles in float64 and cast the tables to `dtype` at the end",
            ),
            checks.close(
                "a +90 degree turn takes (1, 0) to (0, 1)",
                lambda: rotate_pairs(unit, *quarter, layout="interleaved"),
                torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]),
                hint="(a, b) turns to (a cos - b sin, a sin + b cos): with the signs swapped it "
                "turns the other way",
            ),
            checks.close(
                "the default layout rotates the interleaved pairs (0, 1), (2, 3), ...",
                lambda: rotate_pairs(q, cos, sin),
                _rotated(q, cos, sin, "interleaved"),
                hint="layout='interleaved' is the default: pair i is dimensions (2i, 2i + 1), "
                "x[..., 0::2] and x[..., 1::2]",
            ),
            checks.close(
                "layout='half' rotates the pairs (i, i + d/2)",
                lambda: rotate_pairs(q, cos, sin, layout="half"),
                _rotated(q, cos, sin, "half"),
                hint="layout='half' pairs dimension i with i + d/2: x.chunk(2, dim=-1)",
            ),
        ],
        quiet=quiet,
    )


def check_rms_norm(rms_norm, quiet: bool = False) -> None:
    """RMSNorm (Zhang & Sennrich 2019) against `F.rms_norm`, on ordinary inputs and on tiny
    ones, where eps decides (eps inside the square root)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, generator=g)
    w = torch.linspace(0.5, 1.5, 8)
    tiny = 1e-3 * torch.randn(2, 3, 8, generator=g)
    eps_hint = (
        "eps goes inside the square root: x / sqrt(mean(x^2) + eps), not "
        "x / (sqrt(mean(x^2)) + eps)"
    )
    checks.run(
        "your RMSNorm",
        [
            checks.close(
                "rms_norm(x, w) == F.rms_norm(x, (8,), w, 1e-5)",
                lambda: rms_norm(x, w),
                F.rms_norm(x, (8,), w, 1e-5),
                hint="divide by the root of the mean of x^2 over the last dim, then times w",
            ),
            checks.close(
                "tiny inputs (|x| ~ 1e-3, where eps matters)",
                lambda: rms_norm(tiny, w),
                F.rms_norm(tiny, (8,), w, 1e-5),
                hint=eps_hint,
            ),
        ],
        quiet=quiet,
    )


def check_count_and_plan(lm_parameter_count, init_plan, size: dict) -> int:
    """Your count and your plan agree on `size`; returns the count. Neither is the reference:
    a disagreement means one of the two is wrong (the checks of Exercises 1 and 2 say which)."""
    plan = init_plan(**size)
    count = lm_parameter_count(**size)

    def agree() -> str | bool:
        summed = sum(math.prod(shape) for _, shape, _, _ in plan)
        if type(count) is not int:
            return (
                f"lm_parameter_count returned a {type(count).__name__} ({count!r}): return a "
                "Python int"
            )
        if summed != count:
            return (
                f"your lm_parameter_count says {count:,} but your init_plan's shapes add up to "
                f"{summed:,}: one of them is wrong (their checks above say which)"
            )
        return True

    checks.run("your count and your plan agree", [checks.true("count == plan", agree)])
    return count


# ---------------------------------------------------------------- running the learner's code


_PART_CHECKS: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "split_heads": (check_lesson04_parts, ("split_heads", "merge_heads", "repeat_kv")),
    "rope_cos_sin": (check_lesson05_parts, ("rope_cos_sin", "rotate_pairs")),
    "rms_norm": (check_rms_norm, ("rms_norm",)),
}
_PART_OF = {name: key for key, (_, names) in _PART_CHECKS.items() for name in names}


def _first_problem(text: str) -> list[str]:
    """The failing case and its hint, from a check's message."""
    lines = [line.strip() for line in text.splitlines()]
    case = lines[0].removeprefix("✘ ") if lines else ""
    keep = [line for line in lines[1:] if line.startswith(("problem:", "hint:"))]
    return [case] + keep[:2]


def ready(what: str, namespace: dict, names: tuple[str, ...] | list[str]) -> None:
    """Run, quietly, the checks of the learner's functions `names` (from `namespace`, a
    notebook's globals()) that `what` needs; raise CheckFailed (NotWrittenYet for an unwritten
    one) naming the first that fails, where it is written, and the check's own hint."""
    done: set[str] = set()
    for name in names:
        key = _PART_OF.get(name, name)
        if key in done:
            continue
        done.add(key)
        missing = [n for n in _PART_CHECKS.get(key, (None, (key,)))[1] if n not in namespace]
        if missing:
            raise CheckFailed(
                f"✘ {what} needs your `{missing[0]}` ({WHERE.get(missing[0], 'above')}), which "
                "is not defined yet: run its cell first."
            )
        try:
            if key in _PART_CHECKS:
                fn, args = _PART_CHECKS[key]
                fn(*(namespace[n] for n in args), quiet=True)
            else:
                target = "sample_frequencies" if key == "sample_next" else key
                checks.check(f"{LESSON}/{_EXERCISES[key]}", namespace[target], quiet=True)
        except NotWrittenYet:
            raise NotWrittenYet(
                f"✘ {what} needs your `{name}` ({WHERE[name]}), which is not written yet: "
                "replace `raise NotImplementedError()` in its cell with your code, run it and "
                "its check, then run this cell again."
            ) from None
        except CheckFailed as exc:
            detail = "\n".join("  " + line for line in _first_problem(str(exc)))
            raise CheckFailed(
                f"✘ {what} needs your `{name}` ({WHERE[name]}), which does not pass its check "
                f"yet: fix it, run its cell and its check, then run this cell again.\n{detail}"
            ) from None


def _learner_frame(tb: types.TracebackType | None) -> str | None:
    """The name of the innermost function of the traceback that the learner defined in a
    notebook cell (a code object whose file is not a real file on disk)."""
    found = None
    while tb is not None:
        code = tb.tb_frame.f_code
        in_cell = code.co_filename.startswith("<") or not os.path.isfile(code.co_filename)
        if "ipykernel_" in code.co_filename:
            in_cell = True
        if in_cell and code.co_name in WHERE:
            found = code.co_name
        tb = tb.tb_next
    return found


def _root(exc: BaseException) -> BaseException:
    """The original error behind the harness's wrappers (InterfaceError from ... ), if any."""
    seen = 0
    while exc.__cause__ is not None and seen < 5:
        exc, seen = exc.__cause__, seen + 1
    return exc


@contextmanager
def running(what: str) -> Iterator[None]:
    """Turn an exception raised while `what` runs into one CheckFailed line naming the learner's
    function it came from (NotWrittenYet for a NotImplementedError). Check failures pass as
    they are; KeyboardInterrupt too."""
    try:
        yield
    except CheckFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - anything the learner's code raises
        root = _root(exc)
        name = _learner_frame(root.__traceback__) or _learner_frame(exc.__traceback__)
        text = " ".join(str(root).split())
        text = text if len(text) <= 200 else text[:197] + "..."
        where = f"your `{name}` ({WHERE[name]})" if name else "this cell"
        error = f"{type(root).__name__}" + (f": {text}" if text else "")
        if isinstance(root, NotImplementedError):
            raise NotWrittenYet(
                f"✘ {what} stopped: {where} is not written yet (raises NotImplementedError): "
                "replace `raise NotImplementedError()` with your code, run its check, then run "
                "this cell again."
            ) from None
        raise CheckFailed(
            f"✘ {what} stopped: {where} raised {error}. Fix it (its check above should fail too: "
            "run it), then run this cell again."
        ) from None


def trained(result) -> object:
    """The training cell's result, or a CheckFailed saying that the training cell must run
    (and finish) first."""
    if result is None or not hasattr(result, "model"):
        raise CheckFailed(
            "✘ there is no trained model yet: the training cell above did not run or did not "
            "finish. Run it (fix what it reports first), then this cell."
        )
    return result
