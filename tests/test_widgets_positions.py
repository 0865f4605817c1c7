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
        assert "depends on the distance only" in w.readout.value


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
