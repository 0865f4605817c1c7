"""The training loop: learning, checkpoints and resumption, logs, callbacks."""

import json

import pytest
import torch
from lm_tinymodel import InfGradLM, NaNLossLM, NaNValLM, TinyLM

from course.lm.checkpoint import load_checkpoint, save_checkpoint
from course.lm.errors import CheckpointError, PresetError, TrainingDiverged
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


# -- a run that diverges stops, says so in one line, and keeps the last good checkpoint -----


def _fault_config(tiny_config):
    tiny_config.steps, tiny_config.eval_interval, tiny_config.log_interval = 20, 3, 5
    return tiny_config


@pytest.mark.parametrize(
    ("model_cls", "bad_step", "what"),
    [
        (NaNLossLM, 8, "the training loss is nan"),
        (InfGradLM, 8, "the gradient norm is inf"),  # finite loss, clipping on (grad_clip 1.0)
        (NaNValLM, 9, "the validation loss is nan"),  # the first evaluation after step 8
    ],
)
@pytest.mark.parametrize("check_every_step", [True, False], ids=["cpu-checks", "gpu-checks"])
def test_divergence_stops_with_one_line_and_keeps_the_last_good_checkpoint(
    tiny_config, small_corpus, tmp_path, monkeypatch, model_cls, bad_step, what, check_every_step
):
    from course.lm.train import Trainer

    setup = Trainer._setup

    def setup_with(self, *args):
        setup(self, *args)
        self.check_every_step = check_every_step  # False: read at log steps, as on a GPU

    monkeypatch.setattr(Trainer, "_setup", setup_with)
    model_cls.fault_step = 8
    config = _fault_config(tiny_config)
    with pytest.raises(TrainingDiverged) as info:
        train(model_cls, config, small_corpus, out_dir=tmp_path, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert f"training diverged at step {bad_step}: {what}" in message
    ckpt_path = tmp_path / "ckpt.pt"
    assert f"the last good checkpoint is {ckpt_path} (step 6)" in message
    ckpt = load_checkpoint(ckpt_path)  # loads: every weight is finite
    assert ckpt["step"] == 6
    assert json.loads((tmp_path / "log.json").read_text())["step"] == 6


def test_divergence_before_any_save_says_nothing_was_saved(tiny_config, small_corpus, tmp_path):
    tiny_config.lr, tiny_config.steps = 100.0, 40  # nan gradients from step 14 (cpu-tiny)
    with pytest.raises(TrainingDiverged, match=r"at step \d+: .* no checkpoint was saved"):
        train(TinyLM, tiny_config, small_corpus, out_dir=tmp_path, progress=False)
    assert not (tmp_path / "ckpt.pt").exists()


def test_resuming_a_good_checkpoint_with_a_diverging_lr_leaves_it_untouched(
    tiny_config, small_corpus, tmp_path
):
    tiny_config.steps = 30
    train(TinyLM, tiny_config, small_corpus, out_dir=tmp_path, until_step=10, progress=False)
    before = (tmp_path / "ckpt.pt").read_bytes()
    tiny_config.lr = 100.0
    with pytest.raises(TrainingDiverged) as info:
        train(TinyLM, tiny_config, small_corpus, out_dir=tmp_path,
              resume=tmp_path / "ckpt.pt", progress=False)  # fmt: skip
    assert f"the last good checkpoint is {tmp_path / 'ckpt.pt'} (step 10)" in str(info.value)
    assert (tmp_path / "ckpt.pt").read_bytes() == before


@pytest.mark.parametrize(
    ("field", "value"),
    [("lr", float("nan")), ("lr", 0.0), ("lr", float("inf")), ("steps", 0), ("grad_clip", -1.0)],
)
def test_settings_that_cannot_train_are_refused(tiny_config, small_corpus, field, value):
    setattr(tiny_config, field, value)
    with pytest.raises(PresetError, match=field):
        train(TinyLM, tiny_config, small_corpus, progress=False)


def test_a_checkpoint_of_non_finite_weights_is_refused(tiny_config, small_corpus, tmp_path):
    tiny_config.steps = 2
    train(TinyLM, tiny_config, small_corpus, out_dir=tmp_path, progress=False)
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    ckpt["model"]["blocks.0.qkv.weight"][0, 0] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", {k: v for k, v in ckpt.items() if k != "format"})
    with pytest.raises(CheckpointError, match=r"non-finite weights \(blocks.0.qkv.weight"):
        load_checkpoint(tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="non-finite"):
        train(TinyLM, tiny_config, small_corpus, resume=tmp_path / "nan.pt", progress=False)
