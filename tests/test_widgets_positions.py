"""Lesson 05's explorer runs the learner's position functions in every view, states the
properties it shows on their output, and flags a RoPE whose score depends on absolute positions."""

from __future__ import annotations

import torch

from course.widgets import positions_explorer
from solutions.kernels import positions as P


def explorer(cos_sin=P.rope_cos_sin, rotate=P.rotate_pairs):
    return positions_explorer(
        P.sinusoidal_table, cos_sin, rotate, P.alibi_slopes, P.alibi_bias_from_slopes
    )


def test_every_view_draws_the_learners_functions():
    w = explorer()
    pictures = set()
    for view in ("table", "pair", "score", "alibi"):
        w.view.value = view
        assert w.error is None, w.error
        assert bytes(w.image.value).startswith(b"\x89PNG")
        pictures.add(bytes(w.image.value))
    assert len(pictures) == 4
    torch.testing.assert_close(w.state["slopes"], P.alibi_slopes(12, dtype=torch.float64))
    assert "0.5, 0.25" in w.readout.value


def test_score_view_shows_that_rope_depends_on_the_distance_only():
    w = explorer()
    for layout in ("interleaved", "half"):
        w.layout.value = layout
        w.position.value = 3000
        assert w.state["gap"] < 1e-8
        assert "depends on the distance only" in w.readout.value and "✘" not in w.readout.value


def test_a_rope_that_ignores_positions_is_flagged():
    def arange_positions(positions, head_dim, theta=10000.0, dtype=torch.float32):
        return P.rope_cos_sin(torch.arange(positions.shape[-1]), head_dim, theta, dtype=dtype)

    w = explorer(cos_sin=arange_positions)
    w.position.value = 500
    assert w.state["gap"] > 1e-3
    assert "absolute position" in w.readout.value


def test_pair_view_reports_the_norm_and_follows_the_layout():
    w = explorer()
    w.view.value = "pair"
    w.pair_index.value = 3
    assert w.state["dims"] == (6, 7) and w.state["norm_change"] < 1e-9
    w.layout.value = "half"
    assert w.state["dims"] == (3, 35)

    def stretching(x, cos, sin, layout="interleaved"):
        return 1.1 * P.rotate_pairs(x, cos, sin, layout)

    w = explorer(rotate=stretching)
    w.view.value = "pair"
    assert w.state["norm_change"] > 0.1 and "keeps the norm" in w.readout.value


def test_unwritten_functions_show_a_message_not_a_traceback():
    def unwritten(*args, **kwargs):
        raise NotImplementedError

    w = positions_explorer(unwritten, unwritten, unwritten, unwritten, unwritten)
    assert "not written yet" in w.readout.value
    w.view.value = "table"
    assert "not written yet" in w.readout.value and not w.image.value


def test_nothing_is_shown_while_grading(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert explorer().show() is None


def test_pair_view_at_position_0_draws_position_0_only():
    w = explorer()
    w.view.value = "pair"
    w.position.value = 0
    assert w.state["positions"].tolist() == [0]


def test_precision_layout_and_theta_mistakes_are_named():
    def bf16_angles(positions, head_dim, theta=10000.0, dtype=torch.float32):
        inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.bfloat16) / head_dim)
        angles = positions.to(torch.bfloat16)[..., None] * inv_freq
        return angles.cos().to(dtype), angles.sin().to(dtype)

    w = explorer(cos_sin=bf16_angles)
    assert "lose precision" in w.readout.value and "float64" in w.readout.value

    def theta_ignored(positions, head_dim, theta=10000.0, dtype=torch.float32):
        return P.rope_cos_sin(positions, head_dim, 10000.0, dtype=dtype)

    w = explorer(cos_sin=theta_ignored)
    assert "theta is ignored" in w.readout.value
    assert "theta is ignored" not in explorer().readout.value

    def layout_ignored(x, cos, sin, layout="interleaved"):
        return P.rotate_pairs(x, cos, sin)

    w = explorer(rotate=layout_ignored)
    w.view.value = "pair"
    w.layout.value = "half"
    assert "layout argument is ignored" in w.readout.value
    assert "leave their circle" in w.readout.value
    w = explorer()
    w.view.value = "pair"
    w.layout.value = "half"
    assert "✘" not in w.readout.value


def test_results_the_explorer_cannot_use_are_named_not_blamed_on_the_learner():
    def nan_rotation(x, cos, sin, layout="interleaved"):
        return P.rotate_pairs(x, cos, sin, layout) * float("nan")

    w = explorer(rotate=nan_rotation)
    assert "NaN" in w.readout.value and "absolute position" not in w.readout.value

    def only_cos(positions, head_dim, theta=10000.0, dtype=torch.float32):
        return P.rope_cos_sin(positions, head_dim, theta, dtype=dtype)[0]

    w = explorer(cos_sin=only_cos)
    assert "needs the pair (cos, sin)" in w.error and "raised" not in w.error


def test_alibi_view_checks_slopes_against_the_papers_rule():
    w = explorer()
    w.view.value = "alibi"
    assert "✔ the paper's rule" in w.readout.value and "✘" not in w.readout.value

    def powers_of_two_only(n):
        return torch.tensor([2.0 ** (-8.0 * (h + 1) / n) for h in range(n)])

    def positive(slopes, q, k):
        return -P.alibi_bias_from_slopes(slopes, q, k)

    w = positions_explorer(
        P.sinusoidal_table, P.rope_cos_sin, P.rotate_pairs, powers_of_two_only, positive
    )
    w.view.value = "alibi"
    assert "the paper&#x27;s rule gives 0.5, 0.25" in w.readout.value
    assert "bias is not" in w.readout.value
