"""`python -m autograder leaderboard` on a class with correct, broken and hostile checkpoints.

Every checkpoint is evaluated in the grading sandbox; a student's failure is one line of the
page and never stops the others; nothing a checkpoint holds is executed (weights_only=True).
"""

from __future__ import annotations

import csv
import json
import math
import os

import pytest
import torch

from autograder import sandbox
from autograder.__main__ import main as cli
from autograder.leaderboard import LESSON, leaderboard
from course.lm import ModelConfig, train
from course.lm.checkpoint import save_checkpoint
from solutions.kernels.model import TransformerLM

TINY = ModelConfig(context_length=32, d_model=32, n_layers=1, n_heads=2)
TEXT = (
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
    "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles. "
)


class Hostile:
    """A pickle that runs a shell command when loaded without weights_only."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def folder(root, student):
    path = root / "submitted" / student / LESSON
    path.mkdir(parents=True)
    return path


def save(path, config, state, **extra):
    save_checkpoint(
        path / "ckpt.pt", {"model_config": config.to_dict(), "model": state, "step": 1, **extra}
    )


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    text = root / "train.txt"
    text.write_text(TEXT * 60)
    heldout = root / "heldout.txt"
    heldout.write_text(TEXT[::-1] * 4 + TEXT * 4)
    marker = root / "pwned"

    # alice: a short real run (checkpoint and log written by the harness)
    train(TransformerLM, "cpu-tiny", text, out_dir=folder(root, "alice"), progress=False)
    # bob: lesson 08's AssembledLM names (weights.blocks__0__...), untrained: ln 256 nats
    state = TransformerLM(TINY, seed=0).state_dict()
    assembled = {
        "weights." + k.replace(".", "__"): v for k, v in state.items() if k != "lm_head.weight"
    }
    bob = folder(root, "bob")
    save(bob, TINY, assembled)
    (bob / "log.json").write_text(json.dumps({"tokens_per_s": 12345.0, "mfu": 0.42}))
    # carol: the notebook but no checkpoint
    (folder(root, "carol") / "language_model.ipynb").write_text("{}")
    # dave: weights of another width than the config says
    save(
        folder(root, "dave"),
        TINY,
        TransformerLM(
            ModelConfig(context_length=32, d_model=16, n_layers=1, n_heads=2)
        ).state_dict(),
    )
    # eve: a pickle that would run code if loaded without weights_only
    torch.save(
        {"format": 1, "model_config": TINY.to_dict(), "model": {}, "step": Hostile(marker)},
        folder(root, "eve") / "ckpt.pt",
    )
    # frank: over the size cap
    (folder(root, "frank") / "ckpt.pt").write_bytes(b"\0" * (2 * 2**20))
    # grace: NaN weights; a run log that lies in every way it can
    nan_state = {k: v.clone() for k, v in state.items()}
    nan_state["tok_emb.weight"][0, 0] = float("nan")
    grace = folder(root, "grace")
    save(grace, TINY, nan_state)
    (grace / "log.json").write_text('{"tokens_per_s": "<script>alert(1)</script>", "mfu": 1e999}')
    # mallory: a config asking for a model far too large to allocate, and a name for a formula
    huge = ModelConfig(context_length=32, d_model=8192, n_layers=64, n_heads=64)
    save(folder(root, "=mallory"), huge, {"tok_emb.weight": torch.zeros(1)})

    rows = leaderboard(
        root,
        heldout,
        max_mb=1.0,
        limits=sandbox.Limits(memory_bytes=3 * 2**30, notebook_timeout_s=120),
        allow_unsandboxed=sandbox.unavailable_reason() is not None,
    )
    return root, rows, marker


def by_name(rows):
    return {r.student: r for r in rows}


def test_correct_checkpoints_are_ranked_by_bits_per_byte(board):
    root, rows, _ = board
    r = by_name(rows)
    assert [row.student for row in rows[:2]] == ["alice", "bob"]
    assert (r["alice"].rank, r["bob"].rank) == (1, 2)
    # bob is untrained: his loss is ln 256 nats = 8 bits per byte, give or take the init's
    # spread (lesson 08's check: within 0.1 nats, 0.144 bits)
    assert abs(r["bob"].bpb - 8.0) < 0.144, r["bob"]
    assert r["alice"].bpb < r["bob"].bpb
    assert r["bob"].params == TransformerLM(TINY).num_parameters()
    assert (r["bob"].tokens_per_s, r["bob"].mfu) == (12345.0, 0.42)
    assert r["alice"].tokens_per_s and r["alice"].tokens_per_s > 0  # from the harness's log


def test_every_failure_is_one_line_for_its_student(board):
    _, rows, marker = board
    r = by_name(rows)
    assert "no checkpoint" in r["carol"].problem
    assert "do not match the config" in r["dave"].problem and "(16, 16)" in r["dave"].problem
    assert "over the 1 MB cap" in r["frank"].problem
    assert "not finite" in r["grace"].problem or "nan" in r["grace"].problem.lower()
    assert "limit" in r["=mallory"].problem and "parameters" in r["=mallory"].problem
    assert "Weights only load failed" in r["eve"].problem and "probes/" not in r["eve"].problem
    assert not marker.exists(), "a checkpoint's pickle ran code"
    for name in ("carol", "dave", "eve", "frank", "grace", "=mallory"):
        assert r[name].bpb is None and r[name].rank is None
        assert "\n" not in r[name].problem and "Traceback" not in r[name].problem
    assert (r["grace"].tokens_per_s, r["grace"].mfu) == (None, None)


def test_the_page_and_the_csv(board):
    root, rows, _ = board
    page = (root / "leaderboard" / "leaderboard.html").read_text()
    assert "<script>" not in page and "reported" in page
    assert "2 of 8 checkpoints scored" in page
    with (root / "leaderboard" / "leaderboard.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [t["student"] for t in table][:2] == ["alice", "bob"]
    assert table[0]["rank"] == "1" and math.isclose(
        float(table[1]["val_bpb"]), by_name(rows)["bob"].bpb, abs_tol=1e-4
    )
    assert "'=mallory" in [t["student"] for t in table], "a name that is a formula is quoted"


def test_the_command_line_needs_held_out_text(tmp_path, capsys):
    assert (
        cli(["--root", str(tmp_path), "leaderboard", "--heldout", str(tmp_path / "none.txt")]) == 2
    )
    assert "no held-out text" in capsys.readouterr().err
