"""Public code computes an exercise's result only in a form that exercise's own check rejects.

The student bundle ships every course/*.py module from lesson 01 on. Some of them must compute
what a later exercise computes: the stand-ins (`course.stand_ins`) replace a learner's earlier
function while a later exercise is judged, and the probe models (`course.probe_layers.ToyLM`)
need heads and positions. The policy (course/stand_ins.py's docstring, README's "How to add a
lesson"): such code may use only a form the exercise's own visible check rejects (a built-in the
exercise forbids, or a form its prose rules out with a stated reason, such as a copy where the
lesson requires a view), or call the learner's own function, passed in (course/lm/ladder.py's
`LadderParts`). The test below submits each one, as a learner would paste it, to that check.

tests/test_student_bundle.py keeps the cheaper test that no public module holds a solution line
verbatim.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from course import checks, probe_layers, stand_ins

FIXTURES = Path(__file__).resolve().parent.parent / "course" / "fixtures"


def _with_dim(fn: Callable) -> Callable:
    """`fn` over the last dim, given lesson 01's `entropy(p, dim=-1)` signature: what a learner
    would paste there (a rejection for a signature mismatch would prove nothing)."""

    def entropy(p, dim=-1):
        return fn(p.movedim(dim, -1))

    entropy.__wrapped__ = fn
    return entropy


# (exercise id, public function): every function of course.stand_ins (against the exercise it
# stands in for, and any other exercise computing the same) and every public re-implementation
# of an exercise that remains (the probe models' helpers).
PUBLIC_COMPUTATIONS: list[tuple[str, Callable]] = [
    ("02-scaled-attention/attention-weights", stand_ins.attention_weights),
    ("02-scaled-attention/entropy", stand_ins.attention_entropy),
    ("01-softmax/entropy", _with_dim(stand_ins.attention_entropy)),
    ("03-causal-masking/masked-softmax", stand_ins.masked_softmax),
    ("04-multi-head/split-heads", stand_ins.split_heads),
    ("04-multi-head/merge-heads", stand_ins.merge_heads),
    ("04-multi-head/repeat-kv", stand_ins.repeat_kv),
    ("06-normalization/layer-norm", stand_ins.layer_norm),
    ("06-normalization/rms-norm", stand_ins.rms_norm),
    ("07-kv-cache/cache-write", stand_ins.cache_write),
    ("07-kv-cache/rope-at", probe_layers.llama_rope),
]


def _unwrapped(fn: Callable) -> Callable:
    return getattr(fn, "__wrapped__", fn)


def _ids() -> list[str]:
    return [f"{ex}:{_unwrapped(fn).__name__}" for ex, fn in PUBLIC_COMPUTATIONS]


@pytest.mark.parametrize(("exercise", "fn"), PUBLIC_COMPUTATIONS, ids=_ids())
def test_the_exercises_own_check_rejects_the_public_computation(exercise, fn):
    with pytest.raises(checks.CheckFailed) as failed:
        checks.check(exercise, fn, quiet=True)
    message = str(failed.value)
    # Rejected for what it computes or how, not because the check could not run it at all.
    assert "no exercise" not in message and "no checks found" not in message, message
    assert "not written yet" not in message, message
    assert "required positional argument" not in message, message
    assert "unexpected keyword argument" not in message, message


def test_every_stand_in_is_in_the_table():
    listed = {_unwrapped(fn) for _, fn in PUBLIC_COMPUTATIONS}
    missing = [name for name in stand_ins.__all__ if getattr(stand_ins, name) not in listed]
    assert not missing, f"add to PUBLIC_COMPUTATIONS with the exercise each computes: {missing}"


def test_every_stand_in_is_judged_by_the_exercise_it_stands_in_for():
    """Each `stand_ins={"fn": "course.stand_ins:x"}` of a declared exercise replaces the
    learner's `fn`: the table must submit x to the exercise whose function is `fn`."""
    functions = {}  # exercise id -> the learner function it declares
    used = set()  # (learner function name, stand-in)
    for path in sorted(FIXTURES.glob("*.json")):
        for short, spec in json.loads(path.read_text())["exercises"].items():
            functions[f"{path.stem}/{short}"] = spec["function"]
            for name, ref in spec["stand_ins"].items():
                if ref.startswith("course.stand_ins:"):
                    used.add((name, getattr(stand_ins, ref.partition(":")[2])))
    assert used, "no stand-ins found: did the fixtures' layout change?"
    judged = {(functions.get(ex), _unwrapped(fn)) for ex, fn in PUBLIC_COMPUTATIONS}
    missing = sorted(f"{name} <- {fn.__name__}" for name, fn in used - judged)
    assert not missing, f"a stand-in not judged by the exercise it replaces: {missing}"
