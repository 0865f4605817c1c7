"""The training loop: learning, checkpoints and resumption, logs, callbacks."""

import json

import pytest
import torch
from lm_tinymodel import TinyLM

from course.lm.checkpoint import load_checkpoint, save_checkpoint
from course.lm.errors import CheckpointError
from course.lm.protocol import InterfaceError
from course.lm.train import StopTraining, evaluate, train


def test_cpu_tiny_training_makes_the_loss_fall(tiny_config, small_corpus):
    result = train(TinyLM, tiny_config, small_corpus, progress=False)
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert result.step == tiny_config.steps
    assert losses[-1] < losses[0] - 1.0, losses
    assert result.val_loss is not None and result.val_loss < losses[0]
    assert result.tokens_per_s > 0 and result.elapsed_s > 0


def test_training_on_the_default_stdlib_corpus(tiny_config):
    tiny_config.steps = 10
    result = train(TinyLM, tiny_config, progress=False)
    assert result.corpus == "stdlib" and result.step == 10


def test_out_dir_gets_checkpoint_json_log_and_plot(tiny_config, small_corpus, tmp_path):
    result = train(TinyLM, tiny_config, small_corpus, out_dir=tmp_path, progress=False)
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["step"] == result.step and log["config"]["steps"] == tiny_config.steps
    assert any("val_loss" in h for h in log["history"])
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    assert ckpt["step"] == result.step
    assert ckpt["model_class"] == "lm_tinymodel:TinyLM"


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_continues_exactly_as_an_uninterrupted_run(tiny_config, small_corpus, tmp_path):
    tiny_config.steps, tiny_config.eval_interval = 12, 4
    straight = train(TinyLM, tiny_config, small_corpus, out_dir=tmp_path / "a", progress=False)

    first = train(
        TinyLM, tiny_config, small_corpus, out_dir=tmp_path / "b", until_step=6, progress=False
    )
    assert first.step == 6
    resumed = train(
        TinyLM,
        tiny_config,
        small_corpus,
        out_dir=tmp_path / "b",
        resume=tmp_path / "b" / "ckpt.pt",
        progress=False,
    )
    assert resumed.step == 12
    a, b = _state(straight.model), _state(resumed.model)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The same validation losses at the same steps. (Logged training losses are means over
    # a window of steps, and the split run's window restarts at the resume point.)
    val = {h["step"]: h["val_loss"] for h in resumed.history if h.get("val_loss") is not None}
    straight_val = [h for h in straight.history if h.get("val_loss") is not None]
    assert straight_val
    for h in straight_val:
        assert val[h["step"]] == h["val_loss"]


def test_resume_with_config_none_takes_the_checkpoints(tiny_config, small_corpus, tmp_path):
    tiny_config.steps = 8
    train(TinyLM, tiny_config, small_corpus, out_dir=tmp_path, until_step=4, progress=False)
    resumed = train(TinyLM, None, small_corpus, resume=tmp_path / "ckpt.pt", progress=False)
    assert resumed.step == 8 and resumed.config.model == tiny_config.model


@pytest.mark.parametrize(
    "content",
    [b"", b"not a checkpoint at all", b"PK\x03\x04 truncated zip"],
    ids=["empty", "garbage", "truncated-zip"],
)
def test_corrupt_checkpoint_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_truncated_real_checkpoint_and_foreign_file_are_rejected(
    tiny_config, small_corpus, tmp_path
):
    tiny_config.steps = 2
    train(TinyLM, tiny_config, small_corpus, out_dir=tmp_path, progress=False)
    data = (tmp_path / "ckpt.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a course.lm checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_that_does_not_fit_the_model_is_rejected(tiny_config, small_corpus, tmp_path):
    tiny_config.steps = 2
    train(TinyLM, tiny_config, small_corpus, out_dir=tmp_path, progress=False)
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    ckpt["model"].pop("embed.weight")
    save_checkpoint(tmp_path / "bad.pt", {k: v for k, v in ckpt.items() if k != "format"})
    with pytest.raises(CheckpointError, match="does not fit"):
        train(TinyLM, tiny_config, small_corpus, resume=tmp_path / "bad.pt", progress=False)


def test_callback_sees_events_and_can_stop_training(tiny_config, small_corpus):
    seen = []

    def callback(event):
        seen.append(event)
        if event["step"] >= 10:
            raise StopTraining

    result = train(TinyLM, tiny_config, small_corpus, callback=callback, progress=False)
    assert result.step == 10 and not result.interrupted
    assert all(isinstance(e["model"], torch.nn.Module) for e in seen)
    assert {"step", "loss", "lr", "tokens_per_s", "elapsed_s"} <= set(seen[0])


def test_target_val_loss_stops_early(tiny_config, small_corpus):
    tiny_config.steps, tiny_config.eval_interval, tiny_config.target_val_loss = 30, 5, 100.0
    result = train(TinyLM, tiny_config, small_corpus, progress=False)
    assert result.step == 5 and result.target_reached_s is not None


def test_training_an_already_built_model(tiny_config, small_corpus):
    model = TinyLM(tiny_config.model)
    tiny_config.steps = 3
    result = train(model, tiny_config, small_corpus, progress=False)
    assert result.model is model and result.step == 3


def test_wrong_interface_is_reported(tiny_config, small_corpus):
    class Broken(torch.nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config

        def forward(self, idx):
            return idx.float()

    with pytest.raises(InterfaceError, match="logits of shape"):
        train(Broken, tiny_config, small_corpus, progress=False)


def test_evaluate_is_deterministic_and_restores_training_mode(tiny_config, small_corpus):
    model = TinyLM(tiny_config.model).train()
    kw = dict(batch_size=4, context_length=32, batches=3, seed=5)
    a = evaluate(model, small_corpus.val, **kw)
    b = evaluate(model, small_corpus.val, **kw)
    assert a == b and model.training
    assert a == pytest.approx(5.545, abs=0.3)  # about ln 256 at initialisation


def test_progress_bar_only_on_a_terminal_outside_the_grader(monkeypatch):
    import io
    import sys

    from course.lm.train import progress_enabled

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert progress_enabled() is True
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert progress_enabled() is False
    monkeypatch.delenv("NBGRADER_EXECUTION")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress_enabled() is False
    assert progress_enabled(True) is True


def test_presets_are_fresh_copies_and_steps_stretch_the_eval_schedule():
    from course.lm.errors import PresetError
    from course.lm.presets import PRESETS, TrainConfig, default_preset_name, get_preset

    a = get_preset("cpu")
    a.lr = 1.0
    assert get_preset("cpu").lr != 1.0
    assert default_preset_name("cpu") == "cpu" and default_preset_name("cuda") == "gpu"
    with pytest.raises(PresetError, match="unknown preset"):
        get_preset("tpu")
    longer = get_preset("cpu").with_steps(2 * PRESETS["cpu"].steps)
    assert longer.first_eval_step == 2 * PRESETS["cpu"].first_eval_step
    assert longer.eval_interval == 2 * PRESETS["cpu"].eval_interval
    assert TrainConfig.from_dict(longer.to_dict()) == longer
