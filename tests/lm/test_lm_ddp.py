"""Two CPU processes (gloo) train data-parallel: the loss falls and the replicas stay identical."""

import json
import subprocess
import sys
from pathlib import Path

import torch
from conftest import subprocess_env

HERE = Path(__file__).resolve().parent


def test_two_process_gloo_training(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(HERE / "lm_ddp_worker.py"),
        str(tmp_path),
    ]
    proc = subprocess.run(
        cmd, env=subprocess_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key, value in r0["state"].items():
        assert torch.equal(value, r1["state"][key]), key
    losses = [h["loss"] for h in r0["history"] if "loss" in h]
    assert losses[-1] < losses[0] - 1.0, losses
    assert r1["history"] == []  # only rank 0 logs
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert log["world_size"] == 2
    # Two processes, each its own batches: the logged throughput counts both.
    assert log["tokens_per_s"] > 0
