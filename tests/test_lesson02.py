"""What is particular to lesson 02 (the invariants every lesson gets are in tests/test_lessons.py):
symbolic answers judged by equivalence, the Monte Carlo band, PyTorch's attention named when it is
used, one mistake costing one exercise, and sympy cells that no later cell can break."""

from __future__ import annotations

import ast
import contextlib
import io

import nbformat
import pytest
import sympy as sp
import torch

from autograder.judge import grade
from autograder.lesson import lesson_namespace, load_lesson, mistake_function, notebook_path
from course import checks
from solutions.kernels import variance as V

LESSON = "02-scaled-attention"


@pytest.fixture(scope="module")
def lesson():
    return load_lesson(LESSON)


def test_symbolic_answers_are_compared_by_equivalence_not_text():
    d, sq, sk = V.D_K, V.SIGMA_Q, V.SIGMA_K

    def rewritten(sigma_q=sq, sigma_k=sk):
        return (
            sp.expand((sigma_q * sigma_k) ** 2 * d),
            sp.sqrt(sigma_q**4 * sigma_k**4),
            (sigma_q * sigma_k) ** 2 * d / d**2,
        )

    assert grade(f"{LESSON}/closed-forms", rewritten, seed=1).passed
    # the same names with other assumptions are other symbols: refused, and the reason says so
    plain = sp.Symbol("sigma_q") ** 2 * sp.Symbol("sigma_k") ** 2
    verdict = grade(f"{LESSON}/dot-variance", lambda n: n * plain, seed=1)
    assert not verdict.passed and "assumptions" in verdict.probes[0].message


def test_a_number_instead_of_an_expression_is_refused_with_a_reason():
    verdict = grade(f"{LESSON}/dot-variance", lambda n: float(n), seed=1)
    assert not verdict.passed and "sympy" in verdict.probes[0].message


def test_the_monte_carlo_band_accepts_any_correct_sampler_and_refuses_a_bias():
    def uniform(d_k, n_samples, sigma_q=1.0, sigma_k=1.0, seed=0):
        g = torch.Generator().manual_seed(seed + 1)
        half_width = 3**0.5  # uniform on [-sqrt(3), sqrt(3)] has variance 1
        q = (torch.rand(n_samples, d_k, generator=g) * 2 - 1) * half_width * sigma_q
        k = (torch.rand(n_samples, d_k, generator=g) * 2 - 1) * half_width * sigma_k
        return float((q * k).sum(-1).var())

    assert grade(f"{LESSON}/monte-carlo", uniform, seed=2).passed

    def biased(*args, **kwargs):
        return 1.08 * uniform(*args, **kwargs)

    assert not grade(f"{LESSON}/monte-carlo", biased, seed=2).passed


def test_every_monte_carlo_band_is_five_standard_errors(lesson):
    exercise = lesson.exercise("monte-carlo")
    for probe in [*exercise.visible(), *exercise.hidden_probes(3)]:
        d, n, sq, sk, _ = probe.args
        assert sq**2 * sk**2 != pytest.approx(sq**4 * sk**4) or (sq, sk) == (1.0, 1.0)
        assert probe.tolerance.rtol == pytest.approx(5 * V.monte_carlo_relative_se(d, n))
    # at least one case tells sigma^2 from sigma^4 by far more than its band
    assert any(
        abs(p.args[2] ** 2 * p.args[3] ** 2 / (p.args[2] ** 4 * p.args[3] ** 4) - 1)
        > 3 * p.tolerance.rtol
        for p in exercise.visible()
    )


@pytest.mark.parametrize("exercise_id", ["attention-weights", "sdpa-shapes", "sdpa-mask"])
def test_pytorchs_attention_is_named_when_used(exercise_id):
    def weights(q, k, mask=None, scale=None):
        eye = torch.eye(k.shape[-2], dtype=q.dtype).expand(*k.shape[:-1], k.shape[-2])
        return torch.nn.functional.scaled_dot_product_attention(q, k, eye, attn_mask=mask)

    def sdpa(q, k, v, mask=None, scale=None):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    fn = weights if exercise_id == "attention-weights" else sdpa
    verdict = grade(f"{LESSON}/{exercise_id}", fn, seed=4)
    message = verdict.probes[0].message
    assert not verdict.passed and "F.scaled_dot_product_attention" in message
    assert message.startswith("uses F.scaled_dot_product_attention")  # not "uses softmax"
    with pytest.raises(checks.CheckFailed, match="uses F.scaled_dot_product_attention"):
        with contextlib.redirect_stdout(io.StringIO()):
            checks.check(f"{LESSON}/{exercise_id}", fn)


def test_a_wrong_attention_weights_costs_only_its_own_exercise(lesson):
    wrong = lesson.exercise("attention-weights").mistake("weights-scale-by-d_k")
    fn = mistake_function(lesson, lesson.exercise("attention-weights"), wrong)
    ns = dict(fn.__globals__)
    assert not grade(f"{LESSON}/attention-weights", fn, seed=5).passed
    for later in ("sdpa-shapes", "sdpa-mask", "scaling-experiment"):
        function = lesson.exercise(later).function
        assert grade(f"{LESSON}/{later}", ns[function], seed=5).passed, later
        with contextlib.redirect_stdout(io.StringIO()):
            checks.check(f"{LESSON}/{later}", ns[function])


def test_no_cell_reassigns_the_names_the_sympy_cells_use(lesson):
    """Re-running a sympy cell after any other cell gives the same result: only the setup and
    the expectation cell bind these names at the top level."""
    shared = {"q_i", "k_i", "one_pair", "sigma_q", "sigma_k", "d_k", "expectation", "sp"}
    owners = {"setup", "expectation", "sympy-stats"}
    nb = nbformat.read(notebook_path(lesson), as_version=4)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.cell_type != "code" or gid in owners:
            continue
        for node in ast.parse(cell.source).body:
            targets = []
            if isinstance(node, ast.Assign):
                targets = [
                    n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)
                ]
            elif isinstance(node, ast.FunctionDef | ast.Import | ast.ImportFrom):
                targets = [getattr(node, "name", "")] + [
                    (a.asname or a.name) for a in getattr(node, "names", [])
                ]
            assert not shared & set(targets), f"cell {gid} rebinds {shared & set(targets)}"


def test_the_sympy_cell_still_works_after_every_exercise_ran(lesson):
    ns = lesson_namespace(lesson)
    cell = next(
        c
        for c in nbformat.read(notebook_path(lesson), as_version=4).cells
        if c.metadata.get("nbgrader", {}).get("grade_id") == "expectation"
    )
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(cell.source, "expectation", "exec"), ns)  # noqa: S102
    assert "Var(q_i k_i)   = sigma_k**2*sigma_q**2" in out.getvalue()


def test_the_sympy_time_limit_counts_the_comparison_not_the_child_start():
    from autograder.verdict import compare_sympy_isolated
    from course.compare import encode, to_plain

    x, y, z = sp.symbols("x y z")
    easy = {"want": encode(to_plain(x * y)), "got": encode(to_plain(y * x))}
    # a time limit below the child's start-up on a busy machine (Python, sympy, torch) still
    # leaves the comparison itself its time
    assert compare_sympy_isolated([easy], timeout=5.0) == [None]
    # simplifying this difference to 0 takes seconds (16 s on a busy 2-core machine)
    compact = (sp.sin(x) + sp.cos(y) + sp.tan(z) + 1) ** 14
    slow = {"want": encode(to_plain(compact)), "got": encode(to_plain(sp.expand(compact)))}
    (answer,) = compare_sympy_isolated([slow], timeout=1.0)
    assert answer is not None and "longer than 1 s" in answer
