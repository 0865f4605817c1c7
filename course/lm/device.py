"""Which device to run on, which speed-ups it supports, and how close to its peak we run (MFU)."""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

from course.lm.errors import LMError

Precision = Literal["auto", "fp32", "bf16"]

# Dense (no 2:4 sparsity) bf16 tensor-core FLOP/s from the vendors' data sheets. T4 and V100
# have no bf16, so their fp16 figure stands in. Order matters: the first substring that
# occurs in the device name wins ("H100 PCIe" before "H100", "L40S" before "L4").
PEAK_BF16_FLOPS: list[tuple[str, float]] = [
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("A40", 150e12),
    ("A6000", 155e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("RTX 4090", 165e12),
    ("RTX 4080", 97e12),
    ("RTX 3090", 71e12),
    ("V100", 125e12),
    ("T4", 65e12),
]


def pick_device(name: str | None = None) -> torch.device:
    """CUDA if present, else Apple's MPS, else CPU; an explicit name must actually be usable."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise LMError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LMError(f"device {name!r} asked for, but this PyTorch sees no CUDA GPU")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LMError(f"device {name!r} asked for, but MPS is not available here")
    return device


def supports_bf16(device: torch.device) -> bool:
    """Native bf16 (Ampere or newer); emulated bf16 on older GPUs such as the T4 is slower than
    float32, so it does not count."""
    if device.type != "cuda":
        return False
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older PyTorch: no emulation flag, and no emulation either
        return torch.cuda.is_bf16_supported()


def resolve_precision(device: torch.device, precision: Precision = "auto") -> torch.dtype:
    """The autocast dtype: bf16 where the GPU has it (auto), float32 otherwise."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise LMError(f"unknown precision {precision!r} (use auto, fp32 or bf16)")
    return torch.bfloat16 if supports_bf16(device) else torch.float32


def resolve_compile(device: torch.device, compile: bool | None) -> bool:
    """torch.compile pays off on CUDA; on CPU/MPS the compile time outweighs it for small models."""
    return device.type == "cuda" if compile is None else compile


def autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def peak_flops(device: torch.device) -> float | None:
    """bf16 dense peak of this GPU, or None where we have no number (CPU, unknown GPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_BF16_FLOPS:
        if key in name:
            return flops
    return None


def flops_per_token(n_params: int, n_layers: int, context_length: int, d_model: int) -> float:
    """Training FLOPs per token: 6N for the weights (forward 2N, backward 4N) plus 12·L·T·d
    for attention's QK^T and AV, which have no weights (PaLM appendix B, as in nanoGPT)."""
    return 6 * n_params + 12 * n_layers * context_length * d_model


def mfu(tokens_per_s: float, flops_per_tok: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the hardware's peak (None if unknown)."""
    if not peak:
        return None
    return tokens_per_s * flops_per_tok / peak


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
