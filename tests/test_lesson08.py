"""Lesson 08's notebook around the graded exercises: the checks of the parts a learner brings
from lessons 04-06 name each typical mistake, and the cells that run the assembled model (the
model checks, the overfit demo, training, sampling) stop with one clear message naming the
learner's function to fix, never a traceback from inside the harness."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch

from autograder.lesson import load_lesson, mistake_function
from course import lesson08
from course.checks import CheckFailed, NotWrittenYet, check
from course.lm import ModelConfig
from course.lm.protocol import InterfaceError
from course.probe_lm import inspect_sampler
from tests.notebooks import load, notebook_namespace

LESSON, NAME = "08-language-model", "language_model"
SOLUTION = load("solutions", LESSON, NAME)
CELLS = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in SOLUTION.cells}


def namespace(**replace: str) -> dict:
    """The solution notebook's functions (some cells replaced) and the locked cells the demos
    need: the weights' initialisation and the model wrapper."""
    ns = notebook_namespace(LESSON, NAME, ("setup",), replace)
    for gid in ("init-params", "model-wrapper"):
        run_cell(ns, gid)
    return ns


def run_cell(ns: dict, gid: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(CELLS[gid], f"<{gid}>", "exec"), ns)  # noqa: S102 - the course's own cells
    return out.getvalue()


def message_of(ns: dict, gid: str, kind=CheckFailed) -> str:
    with pytest.raises(kind) as info:
        run_cell(ns, gid)
    text = str(info.value)
    assert "Traceback" not in text and len(text.splitlines()) <= 8, text
    return text


# ---------------------------------------------------------------- the parts' checks
# Each part is judged by its own lesson's check, so the hints are those lessons' hints.

PARTS = {
    "rope θ^(-i/d)": (
        "parts-05",
        "rope_cos_sin",
        "theta ** (-torch.arange(0, head_dim, 2",
        "theta ** (-torch.arange(0, head_dim // 2",
        "the exponent is torch.arange(0, head_dim, 2) / head_dim",
    ),
    "rope tables in float32": (
        "parts-05",
        "rope_cos_sin",
        "dtype=torch.float64, device=positions.device)",
        "dtype=torch.float32, device=positions.device)",
        "float64 tables at positions [2, 5, 119, 4005]",
    ),
    "rotation sign flipped": (
        "parts-05",
        "rotate_pairs",
        "torch.stack((a * cos - b * sin, a * sin + b * cos)",
        "torch.stack((a * cos + b * sin, -a * sin + b * cos)",
        "this rotates by -angle",
    ),
    "half layout by default": (
        "parts-05",
        "rotate_pairs",
        'layout="interleaved"):',
        'layout="half"):',
        "the exercise asks for 'interleaved'",
    ),
    "eps outside the root": (
        "parts-06",
        "rms_norm",
        "torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)",
        "1 / (xf.pow(2).mean(dim=-1, keepdim=True).sqrt() + eps)",
        "eps goes inside the square root",
    ),
    "kv heads tiled": (
        "parts-04",
        "repeat_kv",
        "x.repeat_interleave(n_rep, dim=1)",
        "x.repeat(1, n_rep, 1, 1)",
        "x.repeat_interleave(n_rep, dim=1)",
    ),
}


@pytest.mark.parametrize("mistake", PARTS)
def test_each_broken_part_fails_its_check_with_a_hint_that_names_it(mistake):
    cell, _, old, new, hint = PARTS[mistake]
    assert old in CELLS[cell]
    ns = namespace(**{cell: CELLS[cell].replace(old, new)})
    text = message_of(ns, "check-" + cell)
    assert hint in text


def test_the_solution_parts_pass_their_checks():
    ns = namespace()
    for gid in ("check-parts-04", "check-parts-05", "check-parts-06", "init-params"):
        assert "✔" in run_cell(ns, gid)


def test_count_and_plan_disagreeing_names_both_without_calling_either_the_reference():
    count = CELLS["lm_parameter_count"].replace("block = 2 * d_model +", "block = d_model +")
    ns = notebook_namespace(LESSON, NAME, ("setup",), {"lm_parameter_count": count})
    text = message_of(ns, "init-params")
    assert "356,736" in text and "357,024" in text and "expected" not in text


# ---------------------------------------------------------------- cells that run the model

BROKEN = {
    "n_kv_heads=None not handled": (
        "lm_forward",
        "    n_kv_heads = n_kv_heads or n_heads\n",
        "",
        "demo-model-checks",
        "`lm_forward` (Exercise 5)",
    ),
    "W_down transposed": (
        "block_forward",
        '@ params[p + "ffn.W_down.weight"].T',
        '@ params[p + "ffn.W_down.weight"]',
        "demo-overfit",
        "`block_forward` (Exercise 4)",
    ),
    "loss returned as a float": (
        "lm_loss",
        "idx[:, 1:].reshape(-1))",
        "idx[:, 1:].reshape(-1)).item()",
        "demo-overfit",
        "`lm_loss` (Exercise 3)",
    ),
    "a broken lesson 04 part": (
        "parts-04",
        "x.repeat_interleave(n_rep, dim=1)",
        "x.repeat(1, n_rep, 1, 1)",
        "train",
        "`repeat_kv` (section 1, your lesson 04 parts)",
    ),
    "sampler ignores its generator": (
        "sample_next",
        ", 1, generator=generator)",
        ", 1)",
        "train",
        "`sample_next` (Exercise 7)",
    ),
}


@pytest.mark.parametrize("mistake", BROKEN)
def test_a_cell_that_runs_a_broken_function_says_which_one_to_fix(mistake):
    cell, old, new, gid, named = BROKEN[mistake]
    assert old in CELLS[cell]
    ns = namespace(**{cell: CELLS[cell].replace(old, new)})
    if gid == "train":
        ns.update(anchors={}, target=None, config=None, display=print, SAMPLE_BYTES=10)
    text = message_of(ns, gid)
    assert named in text and "does not pass its check yet" in text


def test_an_unwritten_function_is_named_as_not_written_yet():
    stub = CELLS["lm_loss"].split("    ### BEGIN SOLUTION")[0] + "    raise NotImplementedError()\n"
    ns = namespace(lm_loss=stub)
    text = message_of(ns, "demo-model-checks", NotWrittenYet)
    assert "`lm_loss` (Exercise 3), which is not written yet" in text


def test_an_error_inside_the_harness_is_traced_back_to_the_learners_function():
    ns = namespace()
    source = "def lm_forward(idx, params, n_heads, n_kv_heads=None, cache=None):\n    raise {}\n"
    for raised, kind, said in [
        ("NotImplementedError()", NotWrittenYet, "is not written yet"),
        ("RuntimeError('shape mismatch')", CheckFailed, "raised RuntimeError: shape mismatch"),
    ]:
        exec(compile(source.format(raised), "<lm_forward>", "exec"), ns)  # noqa: S102
        with pytest.raises(kind) as info, lesson08.running("training"):
            try:
                ns["lm_forward"](None, None, 1)
            except Exception as exc:  # what course.lm.protocol does with a failing model
                raise InterfaceError(f"AssembledLM(config) failed: {exc}") from exc
        assert f"your `lm_forward` (Exercise 5) {said}" in str(info.value)


def test_the_sample_cell_without_a_trained_model_says_to_run_the_training_cell():
    ns = namespace()
    ns["SAMPLE_BYTES"] = 10
    assert "there is no trained model yet" in message_of(ns, "sample")


# ---------------------------------------------------------------- the given wrapper


def test_an_empty_cache_has_length_zero_and_is_read_as_no_cache():
    # What a model without blocks (n_layers=0, Going further) gets from new_cache.
    ns = namespace()
    assert ns["ListCache"](0).length == 0
    model = ns["AssembledLM"](ModelConfig(context_length=8, d_model=16, n_layers=1, n_heads=2))
    idx = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(model(idx, cache=ns["ListCache"](0)), model(idx))


def test_a_negative_temperature_is_refused_with_a_value_error():
    ns = namespace()
    model = ns["AssembledLM"](ModelConfig(context_length=8, d_model=16, n_layers=1, n_heads=2))
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        ns["generate_text"](model, "ab", 5, temperature=-1.0)
    first = ns["generate_text"](model, "ab", 12, seed=3)
    assert first == ns["generate_text"](model, "ab", 12, seed=3)
    assert torch.is_tensor(ns["sample_next"](torch.zeros(2, 5)))


# ---------------------------------------------------------------- hints and inspectors

DECLARED = load_lesson(LESSON)


@pytest.mark.parametrize("exercise", DECLARED.exercises, ids=lambda e: e.id)
def test_each_known_mistake_is_told_its_own_hint_and_no_other(exercise):
    """A misleading hint is worse than none: every known mistake's visible failure shows its own
    hint and no hint of another mistake (mistakes that behave alike share one hint text)."""
    for mistake in exercise.mistakes:
        fn = mistake_function(DECLARED, exercise, mistake)
        with pytest.raises(CheckFailed) as failed, contextlib.redirect_stdout(io.StringIO()):
            check(exercise.full_id, fn)
        lines = [line.strip() for line in str(failed.value).splitlines()]
        hints = [line.removeprefix("hint:").strip() for line in lines if line.startswith("hint:")]
        assert mistake.hint in hints, f"{mistake.id}: {failed.value}"
        foreign = [o.id for o in exercise.mistakes if o.hint != mistake.hint and o.hint in hints]
        assert not foreign, f"{mistake.id} is also told the hints of {foreign}"


def _sample_next_source(body: str) -> dict:
    ns = {"torch": torch}
    exec(  # noqa: S102 - the test's own code
        "def sample_next(logits, temperature=1.0, top_p=1.0, generator=None):\n" + body, ns
    )
    exec(  # noqa: S102 - the test's own code
        "def sample_frequencies(logits, temperature, top_p, n_samples, seed):\n"
        "    return sample_next(logits[None], temperature, top_p)\n",
        ns,
    )
    return ns


def test_the_sampler_inspector_sees_an_in_place_edit_undone_at_an_exact_temperature():
    """div_ then mul_ by 0.5 restores the logits bit for bit; the version counter still moves."""
    draw = "    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]\n"
    undone = _sample_next_source(
        "    logits.div_(temperature)\n    logits.mul_(temperature)\n" + draw
    )
    clean = _sample_next_source("    logits = logits / temperature\n" + draw)
    args = (torch.tensor([2.0, 1.0, 0.5]), 0.5, 1.0)
    assert "changed the logits it was given" in inspect_sampler(
        undone["sample_frequencies"], args, {}, None
    )
    assert inspect_sampler(clean["sample_frequencies"], args, {}, None) is None
