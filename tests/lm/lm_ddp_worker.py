"""One rank of the data-parallel test: train a few steps, then dump this rank's weights."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from lm_tinymodel import TinyLM

from course.lm.corpus import split_bytes
from course.lm.presets import get_preset
from course.lm.train import train


def main(out: Path) -> None:
    config = get_preset("cpu-tiny")
    config.steps, config.eval_interval = 20, 10
    text = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(400)).encode()
    result = train(
        TinyLM,
        config,
        split_bytes(text, "small"),
        device="cpu",
        progress=False,
        out_dir=out / "run",
    )
    rank = int(__import__("os").environ["RANK"])
    assert not dist.is_initialized()  # train() tears down the group it created
    torch.save(
        {"state": result.model.state_dict(), "history": result.history}, out / f"rank{rank}.pt"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
