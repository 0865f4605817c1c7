"""Lesson 08's training explorer: it is the harness's callback, draws the loss curve with its
anchors, asks the learner's model for a sample on schedule, and survives a sampler that raises."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from course.lm import train
from course.widgets.training import TrainingExplorer, training_explorer, unigram_bigram_entropy
from solutions.kernels.model import TransformerLM


def test_it_is_the_callback_of_a_real_run_and_samples_on_schedule(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 400)
    seen = []

    def sample(model):
        seen.append(model.training)
        return "sampled text"

    w = training_explorer(anchors={"uniform": math.log(256)}, sample_fn=sample, sample_every=10)
    result = train(TransformerLM, "cpu-tiny", text, callback=w, progress=False)
    w.finish()
    assert [s for s, _ in w.train] == [e["step"] for e in result.history if "loss" in e]
    assert w.val and w.val[-1][1] == result.val_loss
    assert [step for step, _ in w.samples] == [10, 20, 30]
    assert seen == [False, False, False], "samples are drawn in eval mode"
    assert w.error is None and bytes(w.image.value).startswith(b"\x89PNG")
    assert "sampled text" in w.readout.value and "sample at step 30" in w.readout.value
    assert w.state["passed"]["uniform"] == w.val[0][0]  # a trained model is below ln 256


def test_controls_change_the_picture_and_anchors_are_reported_when_passed():
    w = TrainingExplorer(anchors={"unigram": 3.0, "bigram": 2.0}, target=1.5, min_redraw_s=1e9)
    for step, loss in enumerate([5.5, 4.0, 3.2, 2.6, 2.4, 2.3], start=1):
        w({"step": step * 10, "loss": loss, "tokens_per_s": 1234.0})
    w({"step": 60, "val_loss": 2.5})
    assert w.state["passed"] == {"unigram": 60, "bigram": None}
    assert "passed unigram at step 60" in w.readout.value and "1,234 tokens/s" in w.readout.value
    before = bytes(w.image.value)
    w.log_scale.value = True
    assert bytes(w.image.value) != before
    linear_smoothed = list(w.state["train"])
    w.smoothing.value = 3
    assert w.state["train"] != linear_smoothed
    # Centred: each point is the mean of itself and its neighbours; at the ends the window
    # shrinks on both sides, so the end points are their own values.
    assert w.state["train"][2] == sum([4.0, 3.2, 2.6]) / 3
    assert w.state["train"][-1] == 2.3
    assert w.state["train"][0] == 5.5
    # A window wider than a short run does not flatten it into one mean (a falling curve
    # still falls).
    w.smoothing.value = 19
    assert w.state["train"] == sorted(w.state["train"], reverse=True)
    assert w.state["train"][2] == sum([5.5, 4.0, 3.2, 2.6, 2.4]) / 5


def test_a_sampler_that_raises_is_shown_not_raised():
    def broken(model):
        raise RuntimeError("shape mismatch in your lm_forward")

    w = TrainingExplorer(sample_fn=broken, sample_every=1, min_redraw_s=0)
    w({"step": 1, "loss": 5.0, "model": torch.nn.Linear(1, 1)})
    assert "sampling failed: RuntimeError: shape mismatch" in w.samples[-1][1]
    assert w.error is None


def test_entropies_of_a_known_text():
    # "abab...": one byte each half the time (ln 2), and each byte fixes the next (0).
    h1, h2 = unigram_bigram_entropy(torch.tensor(list(b"ab" * 500), dtype=torch.uint8))
    assert abs(h1 - math.log(2)) < 1e-12 and abs(h2) < 1e-12
    # This file's own bytes: English and Python, far from uniform.
    text = torch.tensor(list(Path(__file__).read_bytes()))
    h1, h2 = unigram_bigram_entropy(text.to(torch.uint8))
    assert 0 < h2 < h1 < math.log(256)


def test_a_step_0_validation_is_drawn_but_does_not_count_as_passing_an_anchor():
    w = TrainingExplorer(anchors={"uniform": math.log(256)}, min_redraw_s=1e9)
    w({"step": 0, "val_loss": math.log(256) - 0.01})  # the untrained model, just below by chance
    w({"step": 50, "val_loss": 3.0})
    assert w.val[0] == (0, math.log(256) - 0.01)
    assert w.state["passed"] == {"uniform": 50}
