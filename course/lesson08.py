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

The parts are judged by their own lessons' visible checks (`checks.check("05-positions/...")`),
whose expected outputs were computed at release: this public module holds none of those
lessons' answers.
"""

from __future__ import annotations

import math
import os
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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


# Each part is judged by its own lesson's visible check: the same cases (expected outputs baked
# into course/fixtures/NN-topic.json at release), the same tolerances and the same hints naming
# that lesson's known mistakes. No formula of those lessons is written out here.
_PART_EXERCISES: dict[str, str] = {
    "split_heads": "04-multi-head/split-heads",
    "merge_heads": "04-multi-head/merge-heads",
    "repeat_kv": "04-multi-head/repeat-kv",
    "rope_cos_sin": "05-positions/rope-cos-sin",
    "rotate_pairs": "05-positions/rotate-pairs",
    "rms_norm": "06-normalization/rms-norm",
}


def _check_parts(title: str, parts: dict[str, Callable], quiet: bool) -> None:
    """Run each part's own lesson check; print one line for all of them when they pass."""
    for name, fn in parts.items():
        checks.check(_PART_EXERCISES[name], fn, quiet=True)
    if not quiet:
        print(f"✔ {title}: {', '.join(parts)} pass their lessons' checks")


def check_lesson04_parts(split_heads, merge_heads, repeat_kv, quiet: bool = False) -> None:
    """Lesson 04's reshapes, each judged by lesson 04's own check (`04-multi-head/split-heads`,
    `merge-heads`, `repeat-kv`): every head, merge undoing split, query head h reading kv head
    h // n_rep, float64 and gradients. Raises CheckFailed (NotWrittenYet) at the first failure."""
    parts = dict(split_heads=split_heads, merge_heads=merge_heads, repeat_kv=repeat_kv)
    _check_parts("your lesson 04 parts", parts, quiet)


def check_lesson05_parts(rope_cos_sin, rotate_pairs, quiet: bool = False) -> None:
    """Lesson 05's RoPE, judged by lesson 05's own checks (`05-positions/rope-cos-sin`,
    `rotate-pairs`): every pair at offset and gapped positions, float32, float64 and bfloat16
    tables, both layouts and the rotation's sign. Raises CheckFailed at the first failure."""
    parts = dict(rope_cos_sin=rope_cos_sin, rotate_pairs=rotate_pairs)
    _check_parts("your lesson 05 parts", parts, quiet)


def check_rms_norm(rms_norm, quiet: bool = False) -> None:
    """RMSNorm (Zhang & Sennrich 2019), judged by lesson 06's own check
    (`06-normalization/rms-norm`): eps inside the root on tiny rows, a weight or none, float16
    inputs whose squares overflow, gradients. Raises CheckFailed at the first failure."""
    _check_parts("your RMSNorm", dict(rms_norm=rms_norm), quiet)


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


# A cell that names one part of a lesson needs all of that lesson's parts.
_PART_GROUPS: tuple[tuple[str, ...], ...] = (
    ("split_heads", "merge_heads", "repeat_kv"),
    ("rope_cos_sin", "rotate_pairs"),
    ("rms_norm",),
)
_GROUP_OF = {name: group for group in _PART_GROUPS for name in group}


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
    wanted = [part for name in names for part in _GROUP_OF.get(name, (name,))]
    for name in dict.fromkeys(wanted):
        if name not in namespace:
            raise CheckFailed(
                f"✘ {what} needs your `{name}` ({WHERE.get(name, 'above')}), which is not "
                "defined yet: run its cell first."
            )
        exercise = _PART_EXERCISES.get(name) or f"{LESSON}/{_EXERCISES[name]}"
        target = "sample_frequencies" if name == "sample_next" else name
        try:
            checks.check(exercise, namespace[target], quiet=True)
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
