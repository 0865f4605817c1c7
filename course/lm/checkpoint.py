"""Checkpoints: everything needed to resume training exactly where it stopped.

A checkpoint holds the model's class path and config (so `sample` can rebuild it), its weights,
the optimizer's moments, the step, the wall time so far, the history and every random state.
It is loaded with `weights_only=True`: only tensors and plain containers, never pickled code.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from course.lm.config import ModelConfig
from course.lm.errors import CheckpointError

FORMAT = "course.lm checkpoint v1"
REQUIRED = ("format", "model_config", "model", "step")


def class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write atomically: a crash mid-save leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **payload}, tmp)
    os.replace(tmp, path)
    return path


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read and validate a checkpoint, or raise CheckpointError with a one-line reason: missing,
    corrupt, not ours, incomplete, a bad model config, or weights that are not finite."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file can fail in many ways
        raise CheckpointError(
            f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a course.lm checkpoint (no '{FORMAT}' marker)")
    missing = [key for key in REQUIRED if key not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete (missing: {', '.join(missing)})")
    try:
        ckpt["model_config"] = ModelConfig.from_dict(ckpt["model_config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} has a bad model config: {exc}") from exc
    _check_finite_weights(ckpt["model"], path)
    return ckpt


def _check_finite_weights(state: dict, path: Path) -> None:
    """A checkpoint of nan or inf weights can only produce garbage: refuse it by name."""
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} is incomplete (its 'model' is not a state dict)")
    for name, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            if not bool(torch.isfinite(tensor).all()):
                raise CheckpointError(
                    f"checkpoint {path} holds non-finite weights ({name} has nan or inf): the "
                    f"run that saved it had diverged; use an earlier checkpoint"
                )


def load_weights(
    model: torch.nn.Module, ckpt: dict, path: str | os.PathLike = "checkpoint"
) -> None:
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{path} does not fit {type(model).__name__}: {_first_line(exc)}"
        ) from exc
